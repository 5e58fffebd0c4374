// ops.mjs: operating a live cluster with tandemctl: real processes on loopback (a
// coordinator, one prefill and two decode workers), driven by the official OpenAI
// npm client and the tandemctl binary.
//
// usage: node ops.mjs TANDEM TANDEMCTL MODEL_DIR
// Checks:
//   - every worker comes up `ready` (tandemctl status / get workers / describe, table
//     within 100 columns and -o json), tandem_worker_state exported;
//   - `tandemctl cordon decode-0`: state cordoned (tandemctl, metric, one log line with
//     the reason); requests sent right after reach only decode-1 and all succeed;
//     `uncordon` puts it back and requests reach it again;
//   - `tandemctl drain decode-1 --wait` while 4 seeded streams run: it prints progress
//     until drained, every stream completes (the same text as the same request run
//     afterwards), the coordinator counts 0 errors, the drained worker holds 0 KV blocks;
//   - exit status 1 and one line on stderr for an unknown worker id, a bad command or
//     missing argument; 2 for an unreachable coordinator (flag and $TANDEM_COORDINATOR);
//   - `--help` of every command exits 0 and shows its options.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { basename } from "node:path";
import OpenAI from "openai";
import { tandemctlAt } from "./tandemctl.mjs";
import { startCoordinator, startWorker, freePort, waitFor, get, metricValue, check, checksPassed } from "../deploy/lib.mjs";

const [tandem, tandemctl, model] = process.argv.slice(2);
const t0 = Date.now();
const modelName = basename(model.replace(/\/+$/, ""));

const HEARTBEAT_MS = 200;
const coord = await startCoordinator(tandem, ["--model", model, "--heartbeat-ms", String(HEARTBEAT_MS)]);
const coordAddr = coord.http, rpcAddr = coord.rpc;
const client = new OpenAI({ baseURL: `http://${coordAddr}/v1`, apiKey: "unused", maxRetries: 0, timeout: 120000 });

async function worker(role, id) {
  const p = await startWorker(tandem, ["--role", role, "--id", id, "--model", model,
    "--threads", "1", "--kv-blocks", "256", "--coordinator", rpcAddr], id);
  p.id = id;
  return p;
}
const workers = [await worker("prefill", "prefill-0"), await worker("decode", "decode-0"), await worker("decode", "decode-1")];
const [, d0, d1] = workers;

const { ctl, ctlOk, workersJson } = tandemctlAt(tandemctl, rpcAddr);
const stateOf = (id) => workersJson().find((w) => w.id === id)?.state;
const tokensOn = async (w) => metricValue((await get(w.metrics, "/metrics")).text, "tandem_generation_tokens_total") || 0;
const complete = (i) => client.completions.create({ model: modelName, prompt: `Request number ${i} says`, max_tokens: 6,
  temperature: 0 });

await check("every worker ready: status, get workers, describe, -o json, tandem_worker_state", async () => {
  await waitFor("3 ready workers", () => { try { return workersJson().filter((w) => w.state === "ready").length === 3; }
    catch { return false; } }, 120000, 200);
  const st = JSON.parse(ctlOk("status", "-o", "json"));
  assert.equal(st.model, modelName);
  assert.deepEqual(st.workers.map((w) => w.id).sort(), ["decode-0", "decode-1", "prefill-0"]);
  const table = ctlOk("status");
  assert.match(table, /decode\s+2: 2 ready/);
  assert.match(table, /WORKER\s+ROLE\s+ADDRESS\s+STATE/);
  for (const out of [table, ctlOk("get", "workers"), ctlOk("describe", "worker", "decode-0")])
    for (const line of out.split("\n")) assert.ok(line.length <= 100, `wider than 100 columns: ${line}`);
  assert.match(ctlOk("describe", "worker", "decode-0"), /^state\s+ready$/m);
  assert.equal(JSON.parse(ctlOk("describe", "worker", "decode-0", "--json")).role, "decode");
  const m = (await get(coordAddr, "/metrics")).text;
  assert.equal(metricValue(m, "tandem_worker_state", { worker: "decode-0", state: "ready" }), 1);
  assert.equal(metricValue(m, "tandem_worker_state", { worker: "decode-0", state: "cordoned" }), 0);
});

await check("cordon: no new request reaches the worker; uncordon: they reach it again", async () => {
  const before0 = await tokensOn(d0), before1 = await tokensOn(d1);
  assert.match(ctlOk("cordon", "decode-0"), /worker decode-0 cordoned \(state cordoned\)/);
  // At once, not a heartbeat later: the router reads the registry on every pick.
  const rs = await Promise.all(Array.from({ length: 6 }, (_, i) => complete(i)));
  for (const r of rs) assert.equal(r.choices[0].finish_reason, "length");
  assert.equal(await tokensOn(d0), before0, "a request reached the cordoned worker");
  assert.ok(await tokensOn(d1) > before1, "the other decode worker served them");
  assert.equal(stateOf("decode-0"), "cordoned");
  const m = (await get(coordAddr, "/metrics")).text;
  assert.equal(metricValue(m, "tandem_worker_state", { worker: "decode-0", state: "cordoned" }), 1);
  assert.equal(metricValue(m, "tandem_worker_state", { worker: "decode-0", state: "ready" }), 0);
  assert.match(ctlOk("status"), /decode\s+2: 1 ready 1 cordoned/);
  // Still cordoned after several heartbeats (a heartbeat does not undo it).
  await new Promise((r) => setTimeout(r, 3 * HEARTBEAT_MS));
  assert.equal(stateOf("decode-0"), "cordoned");

  assert.match(ctlOk("uncordon", "decode-0"), /worker decode-0 uncordoned \(state ready\)/);
  await waitFor("a request on the uncordoned worker", async () => {
    await Promise.all(Array.from({ length: 4 }, (_, i) => complete(i)));
    return (await tokensOn(d0)) > before0;
  }, 60000, 0);
  const log = coord.err;
  assert.equal(log.match(/worker decode-0 \(decode, [^)]*\): ready -> cordoned: cordoned by an operator/g)?.length, 1, log);
  assert.equal(log.match(/worker decode-0 \(decode, [^)]*\): cordoned -> ready: uncordoned by an operator/g)?.length, 1, log);
});

await check("drain --wait under 4 seeded streams: every stream completes as undisturbed, 0 errors, 0 KV left", async () => {
  const errors = async () => metricValue((await get(coordAddr, "/metrics")).text, "tandem_requests_total",
    { role: "coordinator", outcome: "error" }) || 0;
  const errorsBefore = await errors();
  // The router spreads a burst by the load it sees: wait until the previous case's
  // requests have left its view of both decode workers, or all 4 streams may land on
  // decode-0 and the drain finds nothing running.
  await waitFor("both decode workers idle in the coordinator's view", () =>
    workersJson().filter((w) => w.role === "decode" && w.state === "ready" && w.running === 0 && w.queued === 0)
      .length === 2, 30000, 100);
  const N = 4, TOKENS = 120;
  const params = (i) => ({ model: modelName, prompt: `Stream ${i} begins`, max_tokens: TOKENS, temperature: 0.8,
    seed: 100 + i });
  let started = 0, drainer = null;
  const drained = new Promise((resolve) => { drainer = resolve; });
  const streams = Array.from({ length: N }, async (_, i) => {
    const st = await client.completions.create({ ...params(i), stream: true });
    let text = "", finish = null, first = true;
    for await (const ch of st) {
      const c = ch.choices[0];
      if (!c) continue;
      text += c.text;
      if (c.finish_reason) finish = c.finish_reason;
      if (first && (first = false, ++started === N)) drainer();
    }
    return { text, finish };
  });
  await drained; // every stream runs: some on decode-1
  const p = spawn(tandemctl, ["drain", "decode-1", "--wait", "--coordinator", rpcAddr]);
  let out = "", err = "";
  p.stdout.on("data", (d) => { out += d; });
  p.stderr.on("data", (d) => { err += d; });
  const code = await new Promise((r) => p.on("exit", r));
  console.log(out.replace(/^/gm, "   "));
  assert.equal(code, 0, `tandemctl drain: ${err}`);
  assert.match(out, /^worker decode-1 draining$/m);
  assert.match(out, /^worker decode-1 draining: [1-9]\d* running/m, `no stream ran on decode-1:\n${out}`);
  assert.match(out, /^worker decode-1 drained: 0 running, 0 queued, KV 0\/\d+$/m);
  const got = await Promise.all(streams);
  for (const g of got) assert.equal(g.finish, "length");
  assert.equal(await errors(), errorsBefore, "failed requests during the drain");
  const w = workersJson().find((x) => x.id === "decode-1");
  assert.equal(w.state, "drained");
  assert.equal(w.kv_blocks_used, 0);
  assert.equal((await get(d1.metrics, "/readyz")).status, 503);
  // The same requests on the undisturbed worker: the same text.
  for (let i = 0; i < N; i++)
    assert.equal((await client.completions.create(params(i))).choices[0].text, got[i].text, `stream ${i}`);
  assert.match(coord.err, /worker decode-1 \(decode, [^)]*\): ready -> cordoned: cordoned by an operator/);
  assert.match(coord.err, /worker decode-1 \(decode, [^)]*\): \w+ -> drained/);
  const r = ctl(["drain", "nope", "--coordinator", rpcAddr]);
  assert.equal(r.code, 1);
  assert.match(r.err, /no worker 'nope'/);
});

await check("exit status: 1 for an unknown id or bad arguments, 2 for an unreachable coordinator", async () => {
  for (const args of [["cordon", "nope"], ["uncordon", "nope"], ["describe", "worker", "nope"]]) {
    const r = ctl([...args, "--coordinator", rpcAddr]);
    assert.equal(r.code, 1, `${args.join(" ")}: ${r.out}${r.err}`);
    assert.equal(r.err.trim().split("\n").length, 1, r.err);
    assert.match(r.err, /no worker 'nope'/);
  }
  for (const args of [["frobnicate"], ["cordon"], ["get", "pods"], ["status", "-o", "yaml"], []]) {
    const r = ctl([...args, "--coordinator", rpcAddr]);
    assert.equal(r.code, 1, `${args.join(" ")}: ${r.err}`);
    assert.equal(r.err.trim().split("\n").length, 1, r.err);
  }
  const dead = `127.0.0.1:${await freePort()}`;
  let r = ctl(["status", "--coordinator", dead, "--timeout", "2"]); // unreachable: reported after --timeout
  assert.equal(r.code, 2, r.err);
  assert.match(r.err, /unreachable/);
  r = ctl(["cordon", "decode-0", "--timeout", "2"], { TANDEM_COORDINATOR: dead });
  assert.equal(r.code, 2, r.err);
  r = ctl(["get", "workers"], { TANDEM_COORDINATOR: rpcAddr });
  assert.equal(r.code, 0, r.err);
  r = ctl(["--coordinator", rpcAddr, "-o", "json", "get", "workers"]); // options before the command
  assert.equal(r.code, 0, r.err);
  assert.equal(JSON.parse(r.out).length, 3);
});

await check("--help for every command", async () => {
  for (const c of [[], ["status"], ["get"], ["describe"], ["cordon"], ["uncordon"], ["drain"], ["cancel"]]) {
    const r = ctl([...c, "--help"]);
    assert.equal(r.code, 0, `${c} --help: ${r.err}`);
    assert.match(r.out, /--coordinator HOST:PORT/);
    assert.match(r.out, /-o table\|json/);
  }
});

console.log(`ok ops: ${checksPassed()} checks (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
process.exit(0);
