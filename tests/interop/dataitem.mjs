// ANS-104 data items through arbundles, for tests/permaweb/test_dataitem_interop.py.
//
// stdin:  {"cases": [case, ...]}      stdout: {"results": [result, ...]}  (same order)
//
// Cases (all binary fields are unpadded base64url, tags are [[name, value], ...]):
//   {op: "sign", jwk, data_b64, tags, target, anchor, anchor_b64}
//   {op: "sign_ed25519", seed_b64, data_b64, tags, target, anchor, anchor_b64}
//       target: base64url string or null; anchor: a string passed as-is to arbundles
//       (it applies Buffer.from(string), i.e. UTF-8), or anchor_b64: raw bytes.
//       -> {raw_b64, id, signature_data_b64}
//   {op: "verify", raw_b64}
//       -> {valid, id, signature_type, owner, target, anchor, tags, data_b64,
//           raw_tags_b64, signature_data_b64}   (fields read with arbundles' getters)
//   {op: "serialize_tags", tags} -> {raw_b64}
//   {op: "deserialize_tags", raw_b64} -> {tags}
// A case that throws yields {error: message}; the batch goes on.
import { ArweaveSigner, Curve25519, DataItem, createData, deserializeTags, serializeTags } from "arbundles";
import base64url from "base64url";
import { createPrivateKey, createPublicKey } from "node:crypto";

const ED25519_SEED_BYTES = 32;
// DER prefix of a PKCS#8 Ed25519 private key; the 32-byte seed follows it.
const PKCS8_ED25519_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");

function ed25519PublicKey(seed) {
  const key = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]), format: "der", type: "pkcs8" });
  return Buffer.from(createPublicKey(key).export({ format: "jwk" }).x, "base64url");
}

// arbundles exports Curve25519 (signature type 2) with an abstract `key` getter;
// its concrete Ed25519 signers take Solana/NEAR key encodings, so give it the seed directly.
class SeedEd25519Signer extends Curve25519 {
  constructor(seed) {
    if (seed.length !== ED25519_SEED_BYTES) throw new Error(`seed must be ${ED25519_SEED_BYTES} bytes`);
    super(seed, ed25519PublicKey(seed));
    this.seed = seed;
  }
  get key() {
    return this.seed;
  }
  get publicKey() {
    return this.pk;
  }
}

const b64 = (bytes) => base64url.encode(Buffer.from(bytes));
const unb64 = (text) => base64url.toBuffer(text);
const toPairs = (tags) => tags.map((t) => [t.name, t.value]);
const fromPairs = (pairs) => pairs.map(([name, value]) => ({ name, value }));

async function sign(signer, c) {
  const opts = { tags: fromPairs(c.tags ?? []) };
  if (c.target != null) opts.target = c.target;
  if (c.anchor_b64 != null) opts.anchor = unb64(c.anchor_b64);
  else if (c.anchor != null) opts.anchor = c.anchor;
  const item = createData(unb64(c.data_b64 ?? ""), signer, opts);
  await item.sign(signer);
  return { raw_b64: b64(item.getRaw()), id: item.id, signature_data_b64: b64(await item.getSignatureData()) };
}

async function verify(c) {
  const raw = unb64(c.raw_b64);
  const valid = await DataItem.verify(raw);
  const item = new DataItem(raw);
  const out = { valid };
  // The getters throw on some malformed input (e.g. unknown signature type); report what they can.
  try {
    Object.assign(out, {
      id: item.id,
      signature_type: item.signatureType,
      owner: item.owner,
      target: item.target,
      anchor: item.anchor,
      tags: toPairs(item.tags),
      data_b64: item.data,
      raw_tags_b64: b64(item.rawTags),
      signature_data_b64: b64(await item.getSignatureData()),
    });
  } catch (e) {
    out.read_error = String(e?.message ?? e);
  }
  return out;
}

async function run(c) {
  switch (c.op) {
    case "sign":
      return sign(new ArweaveSigner(c.jwk), c);
    case "sign_ed25519":
      return sign(new SeedEd25519Signer(unb64(c.seed_b64)), c);
    case "verify":
      return verify(c);
    case "serialize_tags":
      return { raw_b64: b64(serializeTags(fromPairs(c.tags))) };
    case "deserialize_tags":
      return { tags: toPairs(deserializeTags(unb64(c.raw_b64))) };
    default:
      throw new Error(`unknown op ${c.op}`);
  }
}

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const request = JSON.parse(Buffer.concat(chunks).toString("utf8"));
const results = [];
for (const c of request.cases) {
  try {
    results.push(await run(c));
  } catch (e) {
    results.push({ error: String(e?.message ?? e) });
  }
}
process.stdout.write(JSON.stringify({ results }));
