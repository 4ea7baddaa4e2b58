// An AO client session through @permaweb/aoconnect in legacy mode, for tests/ao/test_aoconnect.py.
//
// stdin:  {mu_url, cu_url, gateway_url, jwk, address, module, scheduler, ticker, quantity}
//   mu_url, cu_url, gateway_url: the unit base URLs handed to connect({MODE: "legacy", ...});
//   jwk: the Arweave wallet that signs (createDataItemSigner); address: its address;
//   module: a published Type=Module transaction; scheduler: the SU's address.
// stdout: {scheduler_valid, process_id, located, process_node, mint_id, mint_result,
//          balance_message, balance_result, last_slot, results_before_dryrun,
//          dryrun_by_recipient, dryrun_by_owner, results_after_dryrun, external_requests}
// Steps run in order; the first failure exits non-zero with the error on stderr.
//
// No request leaves the machine: fetch only reaches the app under test. aoconnect's own
// scheduler lookup (locate) asks the public testnet SU router first, and scheduler-utils'
// getProcess a public HyperBEAM cache; those requests are answered 404 here, as for a process
// they do not know, so both fall back to the gateway's GraphQL (locate: the process's Scheduler
// tag, then that scheduler's Scheduler-Location). Any other outside request fails the run.

const PUBLIC_AO_SERVICES = new Set(["su-router.ao-testnet.xyz", "cache.forward.computer"]);

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

function step(name, promise) {
  return Promise.resolve(promise).catch((err) => {
    throw new Error(`${name}: ${err?.stack ?? err}`);
  });
}

const input = await readStdin();
const appOrigin = new URL(input.mu_url).origin;
const graphqlUrl = new URL("graphql", input.gateway_url).toString();
const externalRequests = [];
const realFetch = globalThis.fetch;
globalThis.fetch = async (resource, options) => {
  const url = new URL(resource instanceof Request ? resource.url : String(resource));
  if (url.origin === appOrigin) return realFetch(resource, options);
  externalRequests.push(url.host);
  if (PUBLIC_AO_SERVICES.has(url.host)) return new Response("process not found", { status: 404 });
  throw new Error(`blocked a request outside the app under test: ${url}`);
};
// aoconnect's module-level locate() reads GRAPHQL_URL when it is first imported.
process.env.GRAPHQL_URL = graphqlUrl;
const { connect, createDataItemSigner } = await import("@permaweb/aoconnect");
const { connect: schedulerUtils } = await import("@permaweb/ao-scheduler-utils");

const ao = connect({ MODE: "legacy", MU_URL: input.mu_url, CU_URL: input.cu_url, GATEWAY_URL: input.gateway_url });
if (ao.MODE !== "legacy") throw new Error(`aoconnect answered in mode ${ao.MODE}`);
const signer = createDataItemSigner(input.jwk);
// The resolver aoconnect uses, as a client checks a scheduler before spawning on it.
const su = schedulerUtils({ GRAPHQL_URL: graphqlUrl });

const out = {};
out.scheduler_valid = await step("validate scheduler", su.validate(input.scheduler));
out.process_id = await step(
  "spawn",
  ao.spawn({
    module: input.module,
    scheduler: input.scheduler,
    signer,
    tags: [
      { name: "Name", value: "Interop Token" },
      { name: "Ticker", value: input.ticker },
    ],
  }),
);
out.located = await step("locate", su.locate(out.process_id));
out.process_node = await step("getProcess", su.getProcess(out.process_id));
out.mint_id = await step(
  "message",
  ao.message({
    process: out.process_id,
    signer,
    tags: [
      { name: "Action", value: "Mint" },
      { name: "Quantity", value: input.quantity },
    ],
  }),
);
out.mint_result = await step("result", ao.result({ process: out.process_id, message: out.mint_id }));
// A message whose slot aoconnect reads back from the scheduler it locates.
out.balance_message = await step(
  "message (returnAssignmentSlot)",
  ao.message({
    process: out.process_id,
    signer,
    tags: [{ name: "Action", value: "Balance" }],
    returnAssignmentSlot: true,
    returnMessageId: true,
  }),
);
out.balance_result = await step("result", ao.result({ process: out.process_id, message: out.balance_message.id }));
out.last_slot = await step("getLastSlot", ao.getLastSlot({ processId: out.process_id }));
out.results_before_dryrun = await step("results", ao.results({ process: out.process_id, sort: "ASC", limit: 25 }));
out.dryrun_by_recipient = await step(
  "dryrun (Recipient)",
  ao.dryrun({
    process: out.process_id,
    tags: [
      { name: "Action", value: "Balance" },
      { name: "Recipient", value: input.address },
    ],
  }),
);
out.dryrun_by_owner = await step(
  "dryrun (Owner)",
  ao.dryrun({ process: out.process_id, Owner: input.address, tags: [{ name: "Action", value: "Balance" }] }),
);
out.results_after_dryrun = await step("results", ao.results({ process: out.process_id, sort: "ASC", limit: 25 }));
out.external_requests = externalRequests;
process.stdout.write(JSON.stringify(out));
