// lease.mjs: a request must not fail because it waited in a prefill queue, and a
// reservation that nobody fills is still freed in bounded time. Real processes on
// loopback: a coordinator, one prefill worker (one thread, no prefix cache: every prompt
// computes in full) and one decode worker with a 1 s KV lease (--lease-ms).
//   1. t1: the TTFT of one 2048-token prompt at a time;
//   2. enough such prompts at once that the last one waits in the prefill queue for more
//      than 2 leases: every one completes (the prefill worker renews each reservation
//      with Decode.KvRenew while it holds the request), and afterwards the decode
//      worker's pool has 0 blocks in use (nothing leaked);
//   3. abandoned reservations: prompts are queued, then the prefill worker is stopped
//      (SIGSTOP: alive, silent, its Prefill.Run calls still open at the coordinator).
//      Within a few leases the decode worker frees every block; once it runs again
//      (SIGCONT) the cluster serves a new request and ends with 0 blocks in use.
//
// usage: node lease.mjs TANDEM MODEL_DIR
import assert from "node:assert/strict";
import { basename } from "node:path";
import { timedCompletion, tokenPrompts } from "../../bench/completion.mjs";
import { start, startCoordinator, startWorker, waitFor, get, metricValue, check, checksPassed } from "../deploy/lib.mjs";

const [tandem, model] = process.argv.slice(2);
const modelName = basename(model.replace(/\/+$/, ""));
const LEASE_MS = 1000;
const coord = await startCoordinator(tandem, ["--model", model, "--heartbeat-ms", "100"]);
const prefill = start(tandem, ["worker", "--role", "prefill", "--id", "prefill-0", "--model", model, "--threads", "1",
  "--kv-blocks", "4096", "--no-prefix-cache", "--coordinator", coord.rpc], "prefill-0");
const decode = await startWorker(tandem, ["--role", "decode", "--id", "decode-0", "--model", model, "--threads", "1",
  "--kv-blocks", "4096", "--lease-ms", String(LEASE_MS), "--coordinator", coord.rpc], "decode-0");
const routable = async () => (await get(coord.http, "/health")).status === 200;
await waitFor("a route", routable, 120000, 100);

const prompts = tokenPrompts(1);
const request = () => timedCompletion(`http://${coord.http}`, modelName, prompts(2048), { timeoutMs: 240000 });
const blocksInUse = async () => metricValue((await get(decode.metrics, "/metrics")).text,
  "tandem_kv_blocks_used");

let t1 = 0;
await check("TTFT of one 2048-token prompt at a time", async () => {
  const times = [];
  for (let i = 0; i < 3; i++) {
    const r = await request();
    assert.equal(r.status, 200, r.body);
    times.push(r.ttft);
  }
  t1 = times.sort((a, b) => a - b)[0]; // the fastest: more prompts, a queue surely long enough
  console.log(`   one at a time: ${times.map((t) => t.toFixed(0)).join(" ")} ms`);
});

const n = Math.min(64, Math.max(4, Math.ceil((4 * LEASE_MS) / t1) + 2));
await check(`${n} prompts at once, the last queued > 2 leases of ${LEASE_MS} ms: all complete, 0 blocks leaked`,
  async () => {
    const rs = await Promise.all(Array.from({ length: n }, request));
    const slowest = Math.max(...rs.map((r) => r.ttft));
    console.log(`   slowest ${slowest.toFixed(0)} ms; statuses ${[...new Set(rs.map((r) => r.status))]}`);
    for (const r of rs) assert.ok(r.status === 200 && r.complete, r.body);
    assert.ok(slowest > 2 * LEASE_MS, `the queue was not longer than 2 leases (${slowest.toFixed(0)} ms)`);
    await waitFor("the decode pool empty", async () => (await blocksInUse()) === 0, 10000, 50);
  });

await check("a stopped prefill worker's reservations are freed within a few leases; then it serves again",
  async () => {
    const pending = Array.from({ length: 4 }, request);
    await waitFor("reservations", async () => (await blocksInUse()) > 0, 30000, 20);
    prefill.kill("SIGSTOP");
    const t0 = performance.now();
    await waitFor("the decode pool empty while the prefill worker is stopped",
      async () => (await blocksInUse()) === 0, 10 * LEASE_MS, 50);
    console.log(`   decode pool empty ${(performance.now() - t0).toFixed(0)} ms after SIGSTOP`);
    prefill.kill("SIGCONT");
    await Promise.all(pending); // their renewals are refused: the coordinator tries them again
    await waitFor("a route again", routable, 30000);
    const r = await request();
    assert.ok(r.status === 200 && r.complete, r.body);
    await waitFor("the decode pool empty at the end", async () => (await blocksInUse()) === 0, 10000, 50);
  });
console.log(`${checksPassed()} checks passed`);
process.exit(0);
