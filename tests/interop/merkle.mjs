// Reference chunking and Merkle proofs from arweave-js for the Python tests.
// stdin:  {"seed": "<hex>", "sizes": [int, ...]}
// stdout: [{size, data_root, leaves: [{min, max, data_hash}], chunks: [...], proofs: [{offset, proof}], valid: [bool]}]
// Data of each size is regenerated here as sha256(seed || u64be(counter)) blocks,
// the same stream tests/permaweb/test_merkle_interop.py makes.
import { createHash } from "node:crypto";
import merkle from "arweave/node/lib/merkle.js";

const readStdin = async () => {
  const parts = [];
  for await (const part of process.stdin) parts.push(part);
  return JSON.parse(Buffer.concat(parts).toString("utf8"));
};

const b64url = (bytes) => Buffer.from(bytes).toString("base64url");

const deterministicBytes = (seed, size) => {
  const out = Buffer.alloc(size);
  const counter = Buffer.alloc(8);
  for (let filled = 0, i = 0n; filled < size; i += 1n) {
    counter.writeBigUInt64BE(i);
    const block = createHash("sha256").update(seed).update(counter).digest();
    block.copy(out, filled, 0, Math.min(block.length, size - filled));
    filled += block.length;
  }
  return out;
};

const describe = (chunk) => ({ min: chunk.minByteRange, max: chunk.maxByteRange, data_hash: b64url(chunk.dataHash) });

const main = async () => {
  const { seed, sizes } = await readStdin();
  const seedBytes = Buffer.from(seed, "hex");
  const results = [];
  for (const size of sizes) {
    const data = new Uint8Array(deterministicBytes(seedBytes, size));
    const leaves = await merkle.chunkData(data);
    const tx = await merkle.generateTransactionChunks(data);
    const valid = [];
    for (const proof of tx.proofs) {
      valid.push(Boolean(await merkle.validatePath(tx.data_root, proof.offset, 0, size, proof.proof)));
    }
    results.push({
      size,
      data_root: b64url(tx.data_root),
      root_hash: b64url(await merkle.computeRootHash(data)),
      leaves: leaves.map(describe),
      chunks: tx.chunks.map(describe),
      proofs: tx.proofs.map((p) => ({ offset: p.offset, proof: b64url(p.proof) })),
      valid,
    });
  }
  process.stdout.write(JSON.stringify(results));
};

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err));
  process.exit(1);
});
