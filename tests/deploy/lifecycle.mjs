// lifecycle.mjs: the health probes and the SIGTERM drain of real Tandem processes
// (a coordinator, one prefill and two decode workers, each its own process on
// loopback), driven by the official OpenAI npm client.
//
// usage: node lifecycle.mjs TANDEM TANDEMCTL MODEL_DIR
// Checks:
//   - the coordinator: /livez and /startupz 200 at once, /readyz 503 until a prefill
//     and a decode worker are in rotation, then 200;
//   - a worker whose weights are still loading (its config.json is a FIFO the test
//     holds back, as a slow volume would) answers /livez 200, /startupz and /readyz 503
//     "loading the model"; once loaded and registered, 200;
//   - SIGTERM to the decode worker that serves a streamed request: its /readyz turns
//     503, `tandemctl status` shows it draining, new requests go to the other decode
//     worker, the stream completes with every token, the worker exits 0 by itself;
//     the coordinator counts 0 failed requests;
//   - SIGTERM then a second SIGTERM: the worker stops at once (exit 0) and the stream
//     it served still completes (rerun on the other decode worker);
//   - SIGTERM to the coordinator during a stream: /readyz 503, a new request gets 503,
//     the stream completes, the coordinator exits 0.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, copyFileSync, readFileSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, basename } from "node:path";
import OpenAI from "openai";
import { startCoordinator, startWorker, waitFor, get, metricValue, check, checksPassed, sleep } from "./lib.mjs";

const [tandem, tandemctl, modelSrc] = process.argv.slice(2);
const t0 = Date.now();

// A copy of the model folder, except config.json: a FIFO, so the test decides
// when the first worker's load may go on. Same folder name: same served model.
const tmp = mkdtempSync(join(tmpdir(), "tandem-lifecycle-"));
process.on("exit", () => rmSync(tmp, { recursive: true, force: true }));
const modelName = basename(modelSrc.replace(/\/+$/, ""));
const slowModel = join(tmp, modelName);
execFileSync("mkdir", ["-p", slowModel]);
for (const f of readdirSync(modelSrc)) if (f !== "config.json") copyFileSync(join(modelSrc, f), join(slowModel, f));
execFileSync("mkfifo", [join(slowModel, "config.json")]);

const coord = await startCoordinator(tandem, ["--model", modelSrc, "--heartbeat-ms", "200"]);
const coordAddr = coord.http;
const common = ["--model", modelSrc, "--threads", "1", "--kv-blocks", "512", "--coordinator", coord.rpc];
const client = new OpenAI({ baseURL: `http://${coordAddr}/v1`, apiKey: "unused", maxRetries: 0, timeout: 60000 });

async function worker(role, name, model = modelSrc) {
  const args = ["--role", role, "--id", name, ...common];
  args[args.indexOf("--model") + 1] = model;
  const p = await startWorker(tandem, args, name);
  p.id = name;
  return p;
}
const ready = async (addr) => (await get(addr, "/readyz")).status === 200;

await check("coordinator probes: live and started at once, not ready without workers", async () => {
  await waitFor("the coordinator's /livez", async () => (await get(coordAddr, "/livez")).status === 200);
  assert.equal((await get(coordAddr, "/startupz")).status, 200);
  const r = await get(coordAddr, "/readyz");
  assert.equal(r.status, 503);
  assert.match(r.text, /no route/);
});

const prefill = await worker("prefill", "prefill-0");
const decodes = [await worker("decode", "decode-0", slowModel)];

await check("a loading worker: /livez 200, /startupz and /readyz 503 until loaded, then 200", async () => {
  const d = decodes[0];
  await waitFor("the loading worker's /livez", async () => (await get(d.metrics, "/livez")).status === 200);
  await sleep(300); // still blocked on config.json: nothing has fed the FIFO
  for (const probe of ["/startupz", "/readyz"]) {
    const r = await get(d.metrics, probe);
    assert.equal(r.status, 503, `${probe} while loading`);
    assert.match(r.text, /loading the model/);
  }
  writeFileSync(join(slowModel, "config.json"), readFileSync(join(modelSrc, "config.json")));
  await waitFor("the loaded worker's /readyz", () => ready(d.metrics), 60000);
  assert.equal((await get(d.metrics, "/startupz")).status, 200);
});

decodes.push(await worker("decode", "decode-1"));
await check("every worker ready; the coordinator ready once prefill + decode are in rotation", async () => {
  for (const w of [prefill, ...decodes]) await waitFor(`${w.metrics} /readyz`, () => ready(w.metrics), 60000);
  await waitFor("the coordinator's /readyz", () => ready(coordAddr), 10000);
});

// A streamed completion long enough to outlive a signal; resolves with its text,
// token count and finish reason. onFirst runs once the first chunk arrived.
async function stream(onFirst) {
  const s = await client.completions.create({ model: modelName, prompt: "The weather in", max_tokens: 400,
    temperature: 0, logprobs: 0, stream: true });
  let text = "", tokens = 0, finish = null, first = true;
  for await (const ch of s) {
    const c = ch.choices[0];
    if (!c) continue;
    text += c.text;
    tokens += c.logprobs ? c.logprobs.token_logprobs.length : 0;
    if (c.finish_reason) finish = c.finish_reason;
    if (first) { first = false; await onFirst(); }
  }
  return { text, tokens, finish };
}

// The decode worker running a request now (by its own /metrics).
async function busyDecode() {
  return waitFor("a decode worker running the stream", async () => {
    for (const d of decodes) {
      if (d.exitCode !== null) continue;
      const m = await get(d.metrics, "/metrics");
      if (metricValue(m.text, "tandem_num_requests_running") > 0) return d;
    }
    return null;
  }, 10000, 20);
}
const coordErrors = async () =>
  metricValue((await get(coordAddr, "/metrics")).text, "tandem_requests_total", { role: "coordinator", outcome: "error" });

const reference = await stream(async () => {});
assert.equal(reference.finish, "length");
assert.equal(reference.tokens, 400);

await check("SIGTERM drains a decode worker: the stream completes, new requests go elsewhere, exit 0", async () => {
  let drained;
  const during = [];
  const got = await stream(async () => {
    drained = await busyDecode();
    drained.kill("SIGTERM");
    await waitFor("/readyz 503 on the draining worker", async () => (await get(drained.metrics, "/readyz")).status === 503, 5000, 10);
    assert.match((await get(drained.metrics, "/readyz")).text, /draining/);
    const st = JSON.parse(execFileSync(tandemctl, ["status", "--coordinator", coord.rpc, "--json"], { encoding: "utf8" }));
    assert.equal(st.workers.find((w) => w.id === drained.id).state, "draining");
    // the coordinator heard at once: new requests meet the other decode worker only
    await sleep(100);
    for (let i = 0; i < 3; i++)
      during.push(client.completions.create({ model: modelName, prompt: `request ${i}`, max_tokens: 8 }));
  });
  assert.equal(got.finish, "length");
  assert.equal(got.tokens, 400, "every token of the stream arrived");
  assert.equal(got.text, reference.text, "the drained stream is the undisturbed one");
  for (const r of await Promise.all(during)) assert.equal(r.choices[0].finish_reason, "length");
  const { code, signal } = await drained.exited;
  assert.equal(signal, null);
  assert.equal(code, 0, drained.err);
  assert.match(drained.err, /drained, stopping/);
  assert.equal(await coordErrors(), 0, "no failed request on the coordinator");
  decodes.splice(decodes.indexOf(drained), 1);
});

decodes.push(await worker("decode", "decode-2"));
await check("a second SIGTERM stops at once; the stream completes on the other decode worker", async () => {
  for (const d of decodes) await waitFor(`${d.metrics} /readyz`, () => ready(d.metrics), 60000);
  let victim, t, exitedAt;
  const got = await stream(async () => {
    victim = await busyDecode();
    victim.exited.then(() => { exitedAt = Date.now(); });
    victim.kill("SIGTERM");
    await waitFor("the worker draining", async () => /draining/.test(victim.err), 5000, 10);
    t = Date.now();
    victim.kill("SIGTERM");
  });
  const { code } = await victim.exited;
  assert.equal(code, 0, victim.err);
  assert.match(victim.err, /second signal, stopping/);
  assert.ok(exitedAt - t < 10000, `stopped ${exitedAt - t} ms after the second SIGTERM`);
  assert.equal(got.finish, "length");
  assert.equal(got.text, reference.text, "rerun elsewhere, same tokens");
});

await check("SIGTERM drains the coordinator: /readyz 503, new requests 503, the stream completes, exit 0", async () => {
  const got = await stream(async () => {
    coord.kill("SIGTERM");
    await waitFor("coordinator /readyz 503", async () => (await get(coordAddr, "/readyz")).status === 503, 5000, 10);
    assert.match((await get(coordAddr, "/readyz")).text, /draining/);
    await assert.rejects(client.completions.create({ model: modelName, prompt: "late", max_tokens: 4 }),
      (e) => e.status === 503);
  });
  assert.equal(got.finish, "length");
  assert.equal(got.text, reference.text);
  const { code } = await coord.exited;
  assert.equal(code, 0, coord.err);
  assert.match(coord.err, /drained, stopping/);
});

for (const w of [prefill, ...decodes]) w.kill("SIGINT");
for (const w of [prefill, ...decodes]) assert.equal((await w.exited).code, 0);
console.log(`lifecycle: ${checksPassed()} checks passed in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
