// Reference format-2 transactions from arweave-js for the Python tests (offline: no gateway calls).
// stdin:  {"jwk": {...}, "sign": [{data, tags: [[name, value]], target, quantity, reward, last_tx}],
//          "verify": [header, ...]}
//         (data is base64url; tag names and values are UTF-8 strings)
// stdout: {"signed": [{header, verified}], "verified": [bool, ...]}
import Arweave from "arweave";
import Transaction from "arweave/node/lib/transaction.js";

const readStdin = async () => {
  const parts = [];
  for await (const part of process.stdin) parts.push(part);
  return JSON.parse(Buffer.concat(parts).toString("utf8"));
};

// No host: every field a network call would fill (last_tx, reward) is given.
const arweave = Arweave.init({});
const TransactionClass = Transaction.default || Transaction;

const signOne = async (jwk, spec) => {
  const attributes = {
    data: new Uint8Array(Buffer.from(spec.data || "", "base64url")),
    last_tx: spec.last_tx || "",
    reward: spec.reward || "0",
  };
  if (spec.target) attributes.target = spec.target;
  if (spec.quantity) attributes.quantity = spec.quantity;
  const tx = await arweave.createTransaction(attributes, jwk);
  for (const [name, value] of spec.tags || []) tx.addTag(name, value);
  await arweave.transactions.sign(tx, jwk);
  const verified = await arweave.transactions.verify(tx);
  const header = tx.toJSON();
  header.data_tree = [];
  return { header, verified };
};

const verifyOne = async (header) => {
  try {
    return await arweave.transactions.verify(new TransactionClass(header));
  } catch (err) {
    return false;
  }
};

const main = async () => {
  const { jwk, sign = [], verify = [] } = await readStdin();
  const signed = [];
  for (const spec of sign) signed.push(await signOne(jwk, spec));
  const verified = [];
  for (const header of verify) verified.push(await verifyOne(header));
  process.stdout.write(JSON.stringify({ signed, verified }));
};

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err));
  process.exit(1);
});
