// ctl.mjs: tandemctl's run-time controls on real processes on loopback (a coordinator,
// two prefill and two decode workers), driven by the official OpenAI npm client and
// the tandemctl binary.
//
// usage: node ctl.mjs TANDEM TANDEMCTL MODEL_DIR
// Checks:
//   - `config`: the coordinator's and a worker's effective settings; a warning names
//     the setting the decode pool disagrees on (decode-2 runs --max-batch-tokens 1024);
//   - `get requests` / `describe request ID` while streams run: prompt length, tokens,
//     worker pair, timings; tables within 100 columns, -o json;
//   - `role prefill-2 decode` under continuous seeded load: 0 failed requests, every
//     stream identical to the same request rerun; afterwards 1 prefill + 3 decode
//     workers, and new requests decode on prefill-2 and prefill only on prefill-1;
//   - `drain decode-1 --deadline 1s --wait` under 4 long streams on it: done within
//     seconds, what was left migrated (the coordinator says so, `get requests` counts it),
//     every stream complete and identical to an undisturbed run;
//   - `log-level`: debug on one worker shows its debug lines; --all names every process;
//   - a table of bad input: one line on stderr, exit 1; an unreachable coordinator: 2;
//     --help of every new command.
import assert from "node:assert/strict";
import { basename } from "node:path";
import OpenAI from "openai";
import { tandemctlAt } from "./tandemctl.mjs";
import { startCoordinator, startWorker, freePort, waitFor, get, metricValue, check, checksPassed } from "../deploy/lib.mjs";

const [tandem, tandemctl, model] = process.argv.slice(2);
const t0 = Date.now();
const modelName = basename(model.replace(/\/+$/, ""));

const coord = await startCoordinator(tandem, ["--model", model, "--heartbeat-ms", "200"]);
const coordAddr = coord.http, rpcAddr = coord.rpc;
const client = new OpenAI({ baseURL: `http://${coordAddr}/v1`, apiKey: "unused", maxRetries: 0, timeout: 120000 });

async function worker(role, id, extra = []) {
  return startWorker(tandem, ["--role", role, "--id", id, "--model", model,
    "--threads", "1", "--kv-blocks", "512", "--coordinator", rpcAddr, ...extra], id);
}
const [, p2, , d2] = [await worker("prefill", "prefill-1"), await worker("prefill", "prefill-2"),
  await worker("decode", "decode-1"), await worker("decode", "decode-2", ["--max-batch-tokens", "1024"])];

const { ctl, ctlOk, workersJson } = tandemctlAt(tandemctl, rpcAddr);
const narrow = (out) => { for (const l of out.split("\n")) assert.ok(l.length <= 100, `wider than 100 columns: ${l}`); };
const errors = async () => metricValue((await get(coordAddr, "/metrics")).text, "tandem_requests_total",
  { role: "coordinator", outcome: "error" }) || 0;
const counter = async (w, name) => metricValue((await get(w.metrics, "/metrics")).text, name) || 0;

// A seeded stream: its text and finish reason.
const params = (i, tokens) => ({ model: modelName, prompt: `Stream ${i} goes`, max_tokens: tokens, temperature: 0.8,
  seed: 300 + i });
async function stream(i, tokens, onToken = () => {}) {
  const st = await client.completions.create({ ...params(i, tokens), stream: true });
  let text = "", finish = null;
  for await (const ch of st) {
    const c = ch.choices[0];
    if (!c) continue;
    text += c.text;
    if (c.finish_reason) finish = c.finish_reason;
    onToken();
  }
  return { i, tokens, text, finish };
}
// Each stream again on the undisturbed cluster: the same text.
async function sameAsUndisturbed(got) {
  for (const g of got) assert.equal(g.finish, "length", `stream ${g.i}`);
  const again = await Promise.all(got.map((g) => client.completions.create(params(g.i, g.tokens))));
  got.forEach((g, k) => assert.equal(again[k].choices[0].text, g.text, `stream ${g.i}`));
}

await check("config: effective settings, and a warning where the decode pool disagrees", async () => {
  await waitFor("4 ready workers", () => { try { return workersJson().filter((w) => w.state === "ready").length === 4; }
    catch { return false; } }, 120000, 200);
  const c = ctlOk("config");
  narrow(c);
  assert.match(c, /^id\s+coordinator$/m);
  assert.match(c, new RegExp(`^grpc\\s+${rpcAddr}$`, "m"));
  assert.match(c, /^mode\s+disaggregated$/m);
  const d1 = ctlOk("config", "decode-1");
  narrow(d1);
  assert.match(d1, /^role\s+decode$/m);
  assert.match(d1, /^kv_layout\s+bf16 bs16 /m);
  assert.match(d1, /^kv_transport\s+tcp/m);
  assert.match(d1, /^warning: the pool disagrees on max_batch_tokens: decode-2 has 1024, decode-1 has 2048$/m);
  const j = JSON.parse(ctlOk("config", "prefill-1", "-o", "json"));
  assert.equal(j.id, "prefill-1");
  assert.equal(j.settings.max_batch_tokens, "2048");
  assert.deepEqual(j.warnings, []);
});

await check("get requests / describe request while streams run", async () => {
  let tokens = 0;
  const streams = Array.from({ length: 3 }, (_, i) => stream(i, 200, () => { tokens++; }));
  await waitFor("tokens streaming", () => tokens >= 6, 60000, 20);
  const table = ctlOk("get", "requests");
  narrow(table);
  assert.match(table, /^REQUEST\s+STATE\s+PROMPT\s+TOKENS\s+DECODE\s+PREFILL\s+AGE$/m);
  const list = JSON.parse(ctlOk("get", "requests", "-o", "json"));
  assert.ok(list.length >= 3, JSON.stringify(list));
  const r = list.find((x) => x.tokens > 0);
  assert.ok(r, JSON.stringify(list));
  assert.match(r.decode_worker, /^decode-\d$/);
  assert.match(r.prefill_worker, /^prefill-\d$/);
  assert.equal(r.max_tokens, 200);
  assert.ok(r.prompt_tokens > 0 && r.ttft_s > 0 && r.age_s >= r.ttft_s, JSON.stringify(r));
  const d = ctlOk("describe", "request", r.id);
  narrow(d);
  assert.match(d, new RegExp(`^id\\s+${r.id}$`, "m"));
  assert.match(d, new RegExp(`^decode_worker\\s+${r.decode_worker}$`, "m"));
  assert.match(d, /^failovers\s+0$/m);
  assert.match(d, /^ttft_s\s+\d+\.\d+$/m);
  await Promise.all(streams);
  assert.equal(JSON.parse(ctlOk("get", "requests", "-o", "json")).length, 0);
});

await check("role prefill-2 decode under load: 0 failed, 1 prefill + 3 decode, routed accordingly", async () => {
  const errorsBefore = await errors();
  let stop = false, n = 0, tokens = 0;
  const got = [];
  // Two clients sending seeded streams one after the other until the change is done.
  const loops = [0, 1].map(async (k) => {
    while (!stop) got.push(await stream(100 + k * 1000 + n++, 40, () => { tokens++; }));
  });
  await waitFor("load running", () => tokens >= 10, 60000, 20);
  const r = ctl(["role", "prefill-2", "decode", "--coordinator", rpcAddr]);
  console.log(r.out.replace(/^/gm, "   "));
  assert.equal(r.code, 0, `tandemctl role: ${r.err}`);
  assert.match(r.out, /^worker prefill-2 draining, then becoming decode$/m);
  assert.match(r.out, /^worker prefill-2 \(decode\) ready: /m);
  const mid = got.length;
  await waitFor("requests after the change", () => got.length >= mid + 4, 120000, 50);
  stop = true;
  await Promise.all(loops);
  assert.equal(await errors(), errorsBefore, "failed requests during the role change");
  await sameAsUndisturbed(got);
  const st = ctlOk("status");
  assert.match(st, /^ {2}prefill +1: 1 ready$/m);
  assert.match(st, /^ {2}decode +3: 3 ready$/m);
  assert.equal(workersJson().find((w) => w.id === "prefill-2").role, "decode");
  assert.match(coord.err, /re-registered worker prefill-2 \(decode\)/);
  const m = (await get(coordAddr, "/metrics")).text;
  assert.equal(metricValue(m, "tandem_worker_state", { role: "decode", worker: "prefill-2", state: "ready" }), 1);
  assert.ok(Number.isNaN(metricValue(m, "tandem_worker_state", { role: "prefill", worker: "prefill-2" })),
    "series under the old role left behind");
  assert.match(p2.err, /role prefill -> decode, registering again/);
  // Routes: new requests decode on prefill-2 too, and never prefill there.
  const promptBefore = await counter(p2, "tandem_prompt_tokens_total");
  const genBefore = await counter(p2, "tandem_generation_tokens_total");
  await waitFor("a stream decoded on prefill-2", async () => {
    const list = await Promise.all(Array.from({ length: 6 }, (_, i) => client.completions.create(
      { model: modelName, prompt: `After the change ${i}`, max_tokens: 4, temperature: 0 })));
    for (const c of list) assert.equal(c.choices[0].finish_reason, "length");
    return (await counter(p2, "tandem_generation_tokens_total")) > genBefore;
  }, 60000, 0);
  assert.equal(await counter(p2, "tandem_prompt_tokens_total"), promptBefore, "prefill-2 still ran a prefill");
});

await check("drain --deadline 1s: what is left moves elsewhere, every stream complete", async () => {
  const errorsBefore = await errors();
  // Every stream on decode-1 (the other decode workers cordoned until they run), so
  // that the deadline leaves some there; then the others take what it leaves.
  ctlOk("cordon", "decode-2");
  ctlOk("cordon", "prefill-2");
  const all = Array.from({ length: 4 }, (_, i) => stream(200 + i, 1000));
  await waitFor("streams on decode-1", () => JSON.parse(ctlOk("get", "requests", "-o", "json")).filter(
    (q) => q.decode_worker === "decode-1" && q.tokens > 0).length === 4, 60000, 20);
  ctlOk("uncordon", "decode-2");
  ctlOk("uncordon", "prefill-2");
  const t = Date.now();
  const r = ctl(["drain", "decode-1", "--deadline", "1s", "--wait", "--coordinator", rpcAddr]);
  console.log(r.out.replace(/^/gm, "   "));
  assert.equal(r.code, 0, `tandemctl drain: ${r.err}`);
  assert.ok(Date.now() - t < 30000, `drain took ${Date.now() - t} ms`);
  assert.match(r.out, /^worker decode-1 draining: [1-9]\d* running/m);
  assert.match(r.out, /^worker decode-1 drained: 0 running, 0 queued, KV 0\/\d+$/m);
  // The streams go on elsewhere, and `get requests` counts the move.
  const moved = JSON.parse(ctlOk("get", "requests", "-o", "json"));
  assert.ok(moved.some((q) => q.migrations >= 1 && q.decode_worker !== "decode-1"), JSON.stringify(moved));
  const got = await Promise.all(all);
  assert.equal(await errors(), errorsBefore, "failed requests during the drain");
  assert.match(coord.err, /attempt \d+ failed \(decode-1: the worker's drain deadline passed/);
  await sameAsUndisturbed(got);
});

await check("log-level: one worker to debug, then every process", async () => {
  assert.equal(ctlOk("log-level", "debug", "decode-2"), "decode-2: log level debug\n");
  const from = d2.err.length;
  await waitFor("a debug line from decode-2", async () => {
    await client.completions.create({ model: modelName, prompt: "debug me", max_tokens: 2, temperature: 0 });
    return /DEBUG +decode decode-2: req \S+: KvReady transfer/.test(d2.err.slice(from));
  }, 60000, 0);
  assert.match(ctlOk("config", "decode-2"), /^log_level\s+debug$/m);
  const all = JSON.parse(ctlOk("log-level", "info", "--all", "-o", "json"));
  assert.deepEqual(all.changed.sort(), ["coordinator", "decode-1", "decode-2", "prefill-1", "prefill-2"]);
  assert.deepEqual(all.failed, []);
  assert.match(ctlOk("config", "decode-2"), /^log_level\s+info$/m);
  assert.equal(ctlOk("log-level", "warn"), "coordinator: log level warn\n");
  assert.match(ctlOk("config", "coordinator"), /^log_level\s+warn$/m);
});

await check("bad input: one line, exit 1; unreachable: exit 2; --help", async () => {
  const bad = [
    [["role"], /needs a worker ID/],
    [["role", "decode-1"], /the new role must be prefill, decode or both/],
    [["role", "decode-1", "mixer"], /the new role must be prefill, decode or both/],
    [["role", "nope", "decode"], /no worker 'nope'/],
    [["role", "decode-2", "decode"], /worker decode-2 is decode already/],
    [["drain", "decode-2", "--deadline", "soon"], /--deadline must be a duration/],
    [["drain", "decode-2", "--deadline", "0s"], /--deadline must be a duration/],
    [["drain", "decode-2", "--deadline", "8d"], /--deadline must be a duration/],
    [["log-level"], /the level must be error, warn, info or debug/],
    [["log-level", "loud"], /the level must be error, warn, info or debug/],
    [["log-level", "info", "nope"], /no worker 'nope'/],
    [["log-level", "info", "decode-1", "--all"], /an ID or --all, not both/],
    [["config", "nope"], /no worker 'nope'/],
    [["describe", "request", "nope"], /no request 'nope' in flight/],
    [["describe", "request"], /describe what\?/],
    [["get", "requestz"], /get what\?/],
    [["status", "--timeout", "0"], /--timeout/],
    [["status", "--timeout", "soon"], /--timeout/],
  ];
  for (const [args, re] of bad) {
    const r = ctl([...args, "--coordinator", rpcAddr]);
    assert.equal(r.code, 1, `${args.join(" ")}: ${r.out}${r.err}`);
    assert.equal(r.err.trim().split("\n").length, 1, `${args.join(" ")}: ${r.err}`);
    assert.match(r.err, re, args.join(" "));
  }
  assert.equal(workersJson().find((w) => w.id === "decode-2").state, "ready", "bad input changed something");
  const dead = `127.0.0.1:${await freePort()}`;
  for (const args of [["config"], ["get", "requests"], ["role", "decode-2", "prefill"], ["log-level", "info"]]) {
    const r = ctl([...args, "--coordinator", dead, "--timeout", "2"]);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.err}`);
    assert.match(r.err, /unreachable/);
  }
  for (const c of [["role"], ["log-level"], ["config"], ["get"], ["describe"], ["drain"]]) {
    const r = ctl([...c, "--help"]);
    assert.equal(r.code, 0, `${c} --help: ${r.err}`);
    assert.match(r.out, /--timeout S/);
  }
  assert.match(ctl(["drain", "--help"]).out, /--deadline DURATION/);
  assert.match(ctl(["role", "--help"]).out, /--deadline DURATION/);
  assert.match(ctl(["log-level", "--help"]).out, /--all/);
});

console.log(`ok ctl: ${checksPassed()} checks (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
process.exit(0);
