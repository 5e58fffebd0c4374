// cluster.mjs: a real Tandem cluster (`tandem serve`: coordinator + worker processes on
// loopback) driven by the official OpenAI npm client, as a user would.
//
// usage: node cluster.mjs TANDEM TANDEMCTL MODEL_DIR MODE [PROMTOOL]
//   MODE disagg  --prefill-workers 2 --decode-workers 2, every check below (needs PROMTOOL)
//        colocated  --colocated --decode-workers 2: tokens, streaming, chat, drain
//        tokens     --prefill-workers 2 --decode-workers 2: tokens and chat only (e.g. MoE)
//        tokens_colocated  the same, colocated
//        tokens_mmbf16  tokens with --matmul-dtype bf16 on the cluster and on `tandem generate`
// Checks (disagg):
//   - chat and text completions, streaming and not; a streamed greedy answer equals
//     the non-streamed one;
//   - greedy and seeded completions with token-id prompts give exactly the tokens of
//     `tandem generate --raw --json` (text and every logprob);
//   - 32 concurrent streaming requests, prompts of 16..1500 tokens, all complete;
//     three of them are checked against `tandem generate`; the decode workers ran
//     batches of more than one (tandemctl and their /metrics); afterwards every
//     worker has 0 KV blocks in use;
//   - a client that disconnects mid-stream: blocks freed within a second (the sample
//     that saw them free finished within it), counted as cancelled on the coordinator;
//   - bad inputs get 4xx OpenAI errors and the server keeps serving;
//   - a decode worker SIGKILLed mid-request: the coordinator's log shows requests that
//     failed on it; every non-streamed request completes with the right tokens (rerun
//     elsewhere), every streamed one either completes with the right tokens or ends
//     with an error event naming the failure (not a broken connection), the worker
//     shows as failed, requests keep being served, and the same `tandem worker`
//     command brings it back into rotation (it then serves requests);
//   - a prefill worker SIGKILLed: requests routed to it (the coordinator's log shows
//     them failing there) complete on the other one with the right tokens;
//   - `promtool check metrics` on the coordinator's and a worker's /metrics;
//   - SIGTERM stops the whole cluster with exit status 0.
// Every process started here is killed when the script exits, whatever happens.
import { spawn, spawnSync, execFileSync } from "node:child_process";
import { once } from "node:events";
import { readFileSync, readdirSync } from "node:fs";
import assert from "node:assert/strict";
import {
  referenceGenerator, referenceRequest, sameTokens, streamCompletion as streamReference, GREEDY, SEEDED, promptOf,
} from "../common/reference.mjs";
import OpenAI from "openai";
import { metricValue, check, checksPassed, sleep } from "../deploy/lib.mjs";

const [tandem, tandemctl, modelDir, mode = "disagg", promtool] = process.argv.slice(2);
if (mode === "disagg" && !promtool) {
  console.error("usage: node cluster.mjs TANDEM TANDEMCTL MODEL_DIR disagg PROMTOOL");
  process.exit(2);
}
const colocated = mode === "colocated" || mode === "tokens_colocated";
const matmulArgs = mode === "tokens_mmbf16" ? ["--matmul-dtype", "bf16"] : [];
const modelName = modelDir.replace(/\/+$/, "").split("/").pop();
const procs = [];
process.on("exit", () => {
  for (const p of procs) {
    try { process.kill(-p.pid, "SIGKILL"); } catch {}
    try { p.kill("SIGKILL"); } catch {}
  }
});
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => process.exit(1));
const t0 = Date.now();

// ------------------------------------------------------------------ the cluster

const serveArgs = ["serve", "--model", modelDir, "--port", "0", "--threads-per-worker", "1",
  "--kv-blocks", "2048", "--heartbeat-ms", "200", "--rpc-port", "0"];
if (colocated) serveArgs.push("--colocated", "--decode-workers", "2");
else serveArgs.push("--prefill-workers", "2", "--decode-workers", "2");
serveArgs.push(...matmulArgs);
const serve = spawn(tandem, serveArgs, { stdio: ["ignore", "pipe", "pipe"], detached: true });
procs.push(serve);
let serveErr = "";
serve.stderr.setEncoding("utf8");
serve.stderr.on("data", (d) => { serveErr += d; if (process.env.TANDEM_TEST_VERBOSE) process.stderr.write(d); });
let serveOut = "";
serve.stdout.setEncoding("utf8");
serve.stdout.on("data", (d) => { serveOut += d; });
{
  const deadline = Date.now() + 120000;
  while (!/tandem: serving .* at (\S+)\/v1 .*gRPC ([\d.:]+)\)/.test(serveOut)) {
    if (serve.exitCode !== null || Date.now() > deadline) {
      console.error(serveErr);
      assert.fail(`tandem serve did not come up: ${serveOut}`);
    }
    await sleep(50);
  }
}
const [, baseUrl, rpcAddr] = /tandem: serving .* at (\S+)\/v1 .*gRPC ([\d.:]+)\)/.exec(serveOut);
const health = await fetch(`${baseUrl}/health`);
assert.equal(health.status, 200);
const client = new OpenAI({ baseURL: `${baseUrl}/v1`, apiKey: "unused", maxRetries: 0, timeout: 120000 });
console.log(`cluster up at ${baseUrl} (gRPC ${rpcAddr}) in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

function status() {
  const out = execFileSync(tandemctl, ["status", "--coordinator", rpcAddr, "--json"], { encoding: "utf8" });
  return JSON.parse(out);
}

async function metricsText(addr) {
  const r = await fetch(`http://${addr}/metrics`);
  assert.equal(r.status, 200);
  return r.text();
}


// KV blocks in use on every worker right now, from their own /metrics.
async function blocksInUse() {
  const s = status();
  let used = 0;
  for (const w of s.workers) {
    if (w.state !== "ready" || !w.metrics_address) continue;
    used += metricValue(await metricsText(w.metrics_address), "tandem_kv_blocks_used");
  }
  return used;
}

// Asserts that no worker holds KV blocks within ms of `since`. A sample (a tandemctl
// call and a /metrics fetch per worker) counts at the time it finished, so a slow last
// sample that saw the blocks free cannot pass late.
// Limits are seconds, not a latency target: a sample alone takes up to a second on a
// loaded 2-core machine, and the requests they guard would run far longer on their own.
async function assertBlocksFree(ms, what, since = Date.now()) {
  for (;;) {
    const used = await blocksInUse();
    const at = Date.now() - since;
    if (used === 0 && at <= ms) return at;
    assert.ok(at <= ms, `${what}: ${used ? `${used} KV blocks still in use` : "blocks seen free only"} ${at} ms after, ` +
      `limit ${ms} ms`);
    await sleep(50);
  }
}

// The lines of tandem serve's log (stderr) from offset `from` on saying that an attempt
// of a request failed on `worker` (the router names the worker first in the reason).
function failedOn(worker, from) {
  const re = new RegExp(`req \\S+: attempt \\d+ failed \\(${worker}[: ]`);
  return serveErr.slice(from).split("\n").filter((l) => re.test(l));
}

// An error event the server sent on a stream: the client throws it as an APIError
// without an HTTP status, carrying the event's error object. A broken connection (an
// APIConnectionError, or undici's "TypeError: terminated") is not one.
function isErrorEvent(e) {
  return e instanceof OpenAI.APIError && !(e instanceof OpenAI.APIConnectionError) && e.status === undefined &&
    typeof e.error?.message === "string";
}

// ------------------------------------------------------------------ references

const generate = referenceGenerator(tandem, modelDir, matmulArgs);
const completionParams = (ref, maxTokens, samp) => referenceRequest(modelName, ref, maxTokens, samp);
const streamCompletion = (p, onChunk) => streamReference(client, p, onChunk);

// ------------------------------------------------------------------ checks

await check("tandemctl status: every worker registered and healthy", async () => {
  const s = status();
  assert.equal(s.model, modelName);
  assert.equal(s.workers.length, colocated ? 2 : 4);
  for (const w of s.workers) {
    assert.equal(w.state, "ready");
    assert.ok(w.kv_blocks_total > 0);
    assert.equal(w.transport, "tcp");
    assert.match(w.layout, /bs16 L\d+ kv\d+ d\d+/);
  }
  const roles = s.workers.map((w) => w.role).sort();
  assert.deepEqual(roles, colocated ? ["both", "both"] : ["decode", "decode", "prefill", "prefill"]);
  const table = execFileSync(tandemctl, ["status", "--coordinator", rpcAddr], { encoding: "utf8" });
  assert.match(table, /WORKER\s+ROLE\s+ADDRESS\s+STATE/);
});

await check("greedy and seeded completions equal tandem generate (token-id prompts, stream and not)", async () => {
  for (const [samp, prompt, n] of [[GREEDY, "Once upon a time in a land far away", 12], [SEEDED, "The capital of France is", 12],
    [GREEDY, promptOf(200, 3), 6]]) {
    const ref = await generate(prompt, n, samp);
    const params = completionParams(ref, n, samp);
    const r = await client.completions.create(params);
    sameTokens(`non-streamed ${JSON.stringify(samp)}`, ref, r.choices[0].text, r.choices[0].logprobs.token_logprobs,
      r.choices[0].finish_reason);
    assert.equal(r.usage.prompt_tokens, ref.prompt_tokens.length);
    assert.equal(r.usage.completion_tokens, ref.tokens.length);
    const s = await streamCompletion(params);
    sameTokens(`streamed ${JSON.stringify(samp)}`, ref, s.text, s.lps, s.finish);
  }
});

await check("chat completions, streamed and not, agree", async () => {
  const params = { model: modelName, messages: [{ role: "user", content: "Say hello." }], max_tokens: 10, temperature: 0 };
  const r = await client.chat.completions.create(params);
  assert.equal(r.object, "chat.completion");
  assert.equal(r.usage.completion_tokens, 10);
  const m = r.choices[0].message;
  const full = (m.reasoning_content ?? "") + "|" + (m.content ?? "");
  const stream = await client.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
  let reasoning = "", content = "", usage = null, finish = null;
  for await (const ch of stream) {
    if (ch.usage) usage = ch.usage;
    const c = ch.choices[0];
    if (!c) continue;
    reasoning += c.delta.reasoning_content ?? "";
    content += c.delta.content ?? "";
    if (c.finish_reason) finish = c.finish_reason;
  }
  assert.equal(reasoning + "|" + content, full);
  assert.equal(finish, r.choices[0].finish_reason);
  assert.equal(usage.completion_tokens, 10);
});

if (mode === "tokens") {
  await check("a worker serving another model is refused with the reason", async () => {
    const other = modelDir.replace(/\/+$/, "").replace(/[^/]+$/, "dense");
    const w = spawn(tandem, ["worker", "--role", "decode", "--model", other, "--coordinator", rpcAddr, "--kv-blocks", "64",
      "--threads", "1", "--id", "intruder"], { stdio: ["ignore", "ignore", "pipe"], detached: true });
    procs.push(w);
    let werr = "";
    w.stderr.setEncoding("utf8");
    w.stderr.on("data", (d) => { werr += d; });
    const end = Date.now() + 30000;
    while (!/refused worker 'intruder'/.test(serveErr) && Date.now() < end) await sleep(50);
    assert.match(serveErr, new RegExp(`refused worker 'intruder' at [\\d.:]+: the worker serves model 'dense'; this cluster serves '${modelName}'`));
    while (!/refused/.test(werr) && Date.now() < end) await sleep(50);
    assert.match(werr, /refused: the worker serves model 'dense'/);
    assert.ok(!status().workers.some((x) => x.id === "intruder"));
    w.kill("SIGTERM");
    await once(w, "exit");
  });
}

if (mode === "tokens_mmbf16") {
  await check("every worker registered K/V computed with bf16 matmul inputs", async () => {
    const layouts = [...serveErr.matchAll(/registered worker \S+ .*?, KV (.*?) x \d+ blocks/g)].map((m) => m[1]);
    assert.equal(layouts.length, 4, serveErr);
    for (const l of layouts) assert.match(l, / mm-bf16$/);
  });
}

if (mode.startsWith("tokens")) {
  await stopCluster();
  process.exit(0);
}

await check("32 concurrent streaming requests, prompts of 16..1500 tokens", async () => {
  const lens = Array.from({ length: 32 }, (_, i) => Math.round(16 + (1500 - 16) * Math.pow(i / 31, 2)));
  const maxTokens = 8;
  const results = await Promise.all(lens.map(async (n, i) => {
    const prompt = promptOf(n, i);
    return { i, prompt, r: await streamCompletion({ model: modelName, prompt, max_tokens: maxTokens, temperature: 0, logprobs: 0 }) };
  }));
  for (const { r } of results) {
    assert.ok(r.finish === "length" || r.finish === "stop", `finish ${r.finish}`);
    assert.ok(r.lps.length >= 1 && r.lps.length <= maxTokens);
  }
  for (const k of [0, 17, 31]) {
    const ref = await generate(results[k].prompt, maxTokens, GREEDY);
    sameTokens(`concurrent request ${k} (${lens[k]} words)`, ref, results[k].r.text, results[k].r.lps, results[k].r.finish);
  }
  // batches of more than one sequence on the decode side
  const s = status();
  const decoders = s.workers.filter((w) => w.role !== "prefill");
  assert.ok(decoders.some((w) => w.max_batch > 1), `decode max_batch: ${decoders.map((w) => w.max_batch)}`);
  let batched = 0;
  for (const w of decoders) {
    const text = await metricsText(w.metrics_address);
    const le1 = metricValue(text, "tandem_batch_size_bucket", { le: "1" });
    const all = metricValue(text, "tandem_batch_size_count");
    batched += all - le1;
  }
  assert.ok(batched > 0, "no decode step with more than one sequence in /metrics");
  await assertBlocksFree(3000, "after every request ended");
  await sleep(600); // one heartbeat: tandemctl agrees
  for (const w of status().workers) assert.equal(w.kv_blocks_used, 0, `${w.id} reports blocks in use`);
});

await check("client disconnect mid-stream frees its blocks at once, counted as cancelled", async () => {
  const coordMetrics = async () => metricValue(await metricsText(new URL(baseUrl).host), "tandem_requests_total",
    { role: "coordinator", outcome: "cancelled" }) || 0;
  const before = await coordMetrics();
  const ac = new AbortController();
  const stream = await client.completions.create({ model: modelName, prompt: promptOf(300, 9), max_tokens: 8000,
    temperature: 0, stream: true }, { signal: ac.signal });
  let got = 0, abortedAt = 0;
  try {
    for await (const ch of stream) {
      if (ch.choices[0]?.text !== undefined) got++;
      if (got === 3) {
        assert.ok((await blocksInUse()) > 0, "the request holds KV blocks while it runs");
        abortedAt = Date.now();
        ac.abort();
      }
    }
  } catch (e) {
    assert.ok(ac.signal.aborted, `unexpected ${e}`);
  }
  assert.ok(abortedAt, "the stream ended before the client could disconnect");
  const ms = await assertBlocksFree(5000, "after the disconnect", abortedAt);
  console.log(`   blocks freed within ${ms} ms of the disconnect`);
  const end = Date.now() + 2000;
  while ((await coordMetrics()) < before + 1 && Date.now() < end) await sleep(50);
  assert.equal(await coordMetrics(), before + 1, "cancelled requests");
});

await check("a request without max_tokens (the rest of a 40960-token context: more than a 2048-block pool) is served", async () => {
  // Decode KV grows on demand: admitted on its prompt's blocks, it streams; then the
  // client leaves and the blocks come back.
  const ac = new AbortController();
  const stream = await client.completions.create({ model: modelName, prompt: promptOf(40, 3), temperature: 0,
    stream: true }, { signal: ac.signal });
  let got = 0, abortedAt = 0;
  try {
    for await (const ch of stream) {
      if (ch.choices[0]?.text !== undefined) got++;
      if (got === 20) {
        abortedAt = Date.now();
        ac.abort();
      }
    }
  } catch (e) {
    assert.ok(ac.signal.aborted, `unexpected ${e}`);
  }
  assert.ok(got >= 20, `streamed ${got} chunks before the end`);
  await assertBlocksFree(5000, "after the disconnect", abortedAt);
});

await check("tandemctl cancel ends a request in flight and frees its blocks", async () => {
  // The chunks that arrive while tandemctl runs (seconds on a loaded machine) are read
  // after it returns, so what shows the cancel worked is that the stream stopped short of
  // its max_tokens, not how many chunks came after it.
  const maxTokens = 8000;
  const stream = await client.completions.create({ model: modelName, prompt: promptOf(100, 5), max_tokens: maxTokens,
    temperature: 0, stream: true });
  let got = 0, cancelled = null, ended = "end", finish = null;
  try {
    for await (const ch of stream) {
      finish = ch.choices[0]?.finish_reason || finish;
      if (++got === 3) {
        const r = spawnSync(tandemctl, ["cancel", ch.id, "--coordinator", rpcAddr], { encoding: "utf8" });
        assert.equal(r.status, 0, r.stderr);
        assert.match(r.stdout, /cancelled/);
        cancelled = Date.now();
      }
    }
  } catch (e) {
    ended = String(e);
  }
  assert.ok(cancelled, "the stream ended before it could be cancelled");
  console.log(`   cancelled after ${got} chunks, finish ${finish}, ${ended}`);
  assert.ok(got < maxTokens && finish === null, `the stream went on after the cancel (${got} chunks, finish ${finish}, ${ended})`);
  await assertBlocksFree(5000, "after the cancel", cancelled);
  const r = spawnSync(tandemctl, ["cancel", "cmpl-nonexistent", "--coordinator", rpcAddr], { encoding: "utf8" });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /no such request/);
});

if (mode === "disagg") {
  await check("bad inputs get 4xx OpenAI errors and the server keeps serving", async () => {
    const post = async (path, body, ct = "application/json") => {
      const r = await fetch(`${baseUrl}/v1/${path}`, { method: "POST", headers: { "content-type": ct }, body });
      const text = await r.text();
      return { status: r.status, json: (() => { try { return JSON.parse(text); } catch { return null; } })() };
    };
    const longPrompt = Array.from({ length: 41000 }, (_, i) => 100 + (i % 1000));
    const cases = [
      ["chat/completions", "{not json", 400],
      ["chat/completions", JSON.stringify({ model: modelName }), 400],
      ["chat/completions", JSON.stringify({ model: modelName, messages: [] }), 400],
      ["chat/completions", JSON.stringify({ model: "no-such-model", messages: [{ role: "user", content: "x" }] }), 404],
      ["completions", JSON.stringify({ model: modelName, prompt: "x", max_tokens: -1 }), 400],
      ["completions", JSON.stringify({ model: modelName, prompt: longPrompt, max_tokens: 4 }), 400],
      ["completions", Buffer.concat([Buffer.from(`{"model":"${modelName}","prompt":"`), Buffer.from([0xff, 0xfe]), Buffer.from('"}')]), 400],
      ["completions", JSON.stringify({ model: modelName, prompt: "x", temperature: "hot" }), 400],
      ["completions", JSON.stringify({ model: modelName, prompt: [1, 2, -5] }), 400],
      ["chat/completions", JSON.stringify({ model: modelName, messages: "hello" }), 400],
    ];
    for (const [path, body, want] of cases) {
      const r = await post(path, body);
      assert.equal(r.status, want, `${path} ${String(body).slice(0, 80)}: HTTP ${r.status}`);
      assert.ok(r.json && r.json.error && typeof r.json.error.message === "string" && "type" in r.json.error &&
        "param" in r.json.error && "code" in r.json.error, `error body for ${String(body).slice(0, 60)}`);
    }
    try {
      await client.completions.create({ model: modelName, prompt: "x", max_tokens: -3 });
      assert.fail("negative max_tokens accepted");
    } catch (e) {
      assert.ok(e instanceof OpenAI.APIError && e.status === 400, `${e}`);
    }
    const ok = await client.completions.create({ model: modelName, prompt: "still serving?", max_tokens: 2 });
    assert.equal(ok.usage.completion_tokens, 2);
  });

  await check("a decode worker SIGKILLed mid-request: reruns, explicit errors, routed around, taken back", async () => {
    // the decode workers' pids and exact command lines, from /proc (children of tandem serve)
    const procsOf = {};
    for (const d of readdirSync("/proc")) {
      if (!/^\d+$/.test(d)) continue;
      let argv;
      try { argv = readFileSync(`/proc/${d}/cmdline`, "utf8").split("\0").filter(Boolean); } catch { continue; }
      const id = argv[argv.indexOf("--id") + 1];
      if (argv[1] === "worker" && argv.includes(rpcAddr) && /^decode-/.test(id)) procsOf[id] = { pid: Number(d), argv };
    }
    assert.deepEqual(Object.keys(procsOf).sort(), ["decode-1", "decode-2"], "the decode workers' processes");
    // long enough to be running when the kill lands: the fixture decodes a token in well
    // under a millisecond, and 48, 256 and (attention got faster, 2026-12-07) 1024
    // were sometimes all done before tandemctl answered
    const n = 2048;
    const prompts = Array.from({ length: 8 }, (_, i) => promptOf(40 + 10 * i, 20 + i));
    const refs = await Promise.all(prompts.map((p) => generate(p, n, GREEDY)));
    let streamedTokens = 0;
    const streamed = prompts.slice(0, 4).map((p, i) =>
      streamCompletion({ ...completionParams(refs[i], n, GREEDY) }, () => streamedTokens++)
        .then((r) => ({ ok: true, r }), (e) => ({ ok: false, e })));
    const plain = prompts.slice(4).map((p, i) => client.completions.create(completionParams(refs[4 + i], n, GREEDY))
      .then((r) => ({ ok: true, r }), (e) => ({ ok: false, e })));
    const end = Date.now() + 10000;
    while (streamedTokens < 8 && Date.now() < end) await sleep(5);
    // the victim: the decode worker streaming the most of them now, as the coordinator
    // sees its requests (a fixed choice once found its worker idle and the kill hit nothing)
    const decoding = {};
    for (const r of JSON.parse(execFileSync(tandemctl, ["get", "requests", "-o", "json", "--coordinator", rpcAddr],
      { encoding: "utf8" })))
      if (r.tokens > 0 && r.decode_worker in procsOf) decoding[r.decode_worker] = (decoding[r.decode_worker] || 0) + 1;
    const victimId = Object.keys(decoding).sort((a, b) => decoding[b] - decoding[a])[0];
    assert.ok(victimId, `a decode worker streaming the requests: ${JSON.stringify(decoding)}`);
    const victim = procsOf[victimId];
    const logFrom = serveErr.length;
    process.kill(victim.pid, "SIGKILL");
    const sres = await Promise.all(streamed), pres = await Promise.all(plain);
    pres.forEach((x, i) => {
      assert.ok(x.ok, `non-streamed request ${i} failed: ${x.e}`);
      const c = x.r.choices[0];
      sameTokens(`non-streamed request ${i} across the failure`, refs[4 + i], c.text, c.logprobs.token_logprobs, c.finish_reason);
    });
    let errors = 0;
    sres.forEach((x, i) => {
      if (x.ok) sameTokens(`streamed request ${i} across the failure`, refs[i], x.r.text, x.r.lps, x.r.finish);
      else {
        errors++;
        assert.ok(isErrorEvent(x.e) && /worker/.test(x.e.error.message), `streamed ${i}: not an error event: ${x.e}`);
      }
    });
    const failed = failedOn(victimId, logFrom);
    assert.ok(failed.length > 0, `no request failed on ${victimId}: the kill hit nothing; the log since:\n` +
      serveErr.slice(logFrom).split("\n").filter((l) => /failed|attempt|route|decode-/.test(l)).slice(0, 40).join("\n"));
    console.log(`   ${failed.length} attempt(s) failed on ${victimId}; streamed: ${4 - errors} completed by a rerun, ` +
      `${errors} ended with an error event`);
    // Out of rotation once the router saw the failure or, at the latest, after the
    // missed heartbeats (3 intervals): poll for that rather than assume which came first.
    let s = status();
    for (const until = Date.now() + 5000; s.workers.find((w) => w.id === victimId).state !== "failed" && Date.now() < until;) {
      await sleep(100);
      s = status();
    }
    assert.equal(s.workers.find((w) => w.id === victimId).state, "failed");
    // routed around: requests keep working
    for (let i = 0; i < 3; i++) {
      const r = await client.completions.create({ model: modelName, prompt: `after the crash ${i}`, max_tokens: 3 });
      assert.equal(r.usage.completion_tokens, 3);
    }
    // the same command brings it back
    const again = spawn(tandem, victim.argv.slice(1), { stdio: ["ignore", "ignore", "pipe"], detached: true });
    procs.push(again);
    again.stderr.resume();
    const back = Date.now() + 60000;
    while ((s = status()).workers.find((w) => w.id === victimId).state !== "ready" && Date.now() < back) await sleep(100);
    const w = s.workers.find((x) => x.id === victimId);
    assert.equal(w.state, "ready", "restarted worker back in rotation");
    const rs = await Promise.all(Array.from({ length: 6 }, (_, i) =>
      client.completions.create({ model: modelName, prompt: promptOf(30, 50 + i), max_tokens: 4, temperature: 0 })));
    rs.forEach((r) => assert.equal(r.usage.completion_tokens, 4));
    const gen = metricValue(await metricsText(w.metrics_address), "tandem_generation_tokens_total");
    assert.ok(gen > 0, "the restarted worker serves requests again");
    await assertBlocksFree(3000, "after the restarted worker served");
    again.kill("SIGTERM");
    const [code] = await once(again, "exit");
    assert.equal(code, 0, "restarted worker's exit status");
  });

  await check("a prefill worker SIGKILLed: requests sent to it run on the other one", async () => {
    let victim = null;
    for (const d of readdirSync("/proc")) {
      if (!/^\d+$/.test(d)) continue;
      let argv;
      try { argv = readFileSync(`/proc/${d}/cmdline`, "utf8").split("\0"); } catch { continue; }
      if (argv[1] === "worker" && argv.includes(rpcAddr) && argv[argv.indexOf("--id") + 1] === "prefill-1") victim = Number(d);
    }
    assert.ok(victim, "prefill-1's process");
    const prompts = Array.from({ length: 6 }, (_, i) => promptOf(300 + 50 * i, 60 + i));
    const refs = await Promise.all(prompts.map((p) => generate(p, 4, GREEDY)));
    const logFrom = serveErr.length;
    // Stopped, prefill-1 keeps its connections open and only misses heartbeats (noticed
    // after 3 intervals), so the 6 requests are shared between both prefill workers; those
    // on prefill-1 hang until it is killed. A SIGKILL right away would race the coordinator
    // seeing the connections drop before it routes anything. Kill it once the requests on
    // prefill-0 are done and some are still waiting.
    process.kill(victim, "SIGSTOP");
    let settled = 0;
    const pending = Promise.all(refs.map((ref) =>
      client.completions.create(completionParams(ref, 4, GREEDY)).finally(() => settled++)));
    for (let last = -1, quiet = 0; quiet < 5;) {
      await sleep(100);
      quiet = settled > 0 && settled === last ? quiet + 1 : 0;
      last = settled;
    }
    assert.ok(settled < refs.length, "every request completed with prefill-1 stopped: none was sent to it");
    process.kill(victim, "SIGKILL");
    const rs = await pending;
    rs.forEach((r, i) => sameTokens(`request ${i} after the prefill worker died`, refs[i], r.choices[0].text,
      r.choices[0].logprobs.token_logprobs, r.choices[0].finish_reason));
    const failed = failedOn("prefill-1", logFrom);
    assert.ok(failed.length > 0, "no request was sent to prefill-1 after the kill: the check tested nothing");
    console.log(`   ${failed.length} request(s) failed on prefill-1 and completed on the other prefill worker`);
    const end = Date.now() + 3000;
    let s;
    while ((s = status()).workers.find((w) => w.id === "prefill-1").state !== "failed" && Date.now() < end) await sleep(50);
    assert.equal(s.workers.find((w) => w.id === "prefill-1").state, "failed");
    await assertBlocksFree(3000, "after the prefill failover");
  });

  await check("promtool check metrics: coordinator and a worker", async () => {
    const worker = status().workers.find((w) => w.state === "ready");
    for (const addr of [new URL(baseUrl).host, worker.metrics_address]) {
      const text = await metricsText(addr);
      const r = spawnSync(promtool, ["check", "metrics"], { input: text, encoding: "utf8" });
      assert.equal(r.status, 0, `promtool on ${addr}: ${r.stdout}${r.stderr}`);
    }
    const coord = await metricsText(new URL(baseUrl).host);
    assert.ok(metricValue(coord, "tandem_requests_total", { role: "coordinator", outcome: "success" }) > 0);
    assert.ok(metricValue(coord, "tandem_time_to_first_token_seconds_count", { role: "coordinator" }) > 0);
    assert.ok(metricValue(coord, "tandem_kv_blocks_capacity", { role: "decode" }) > 0);
    assert.ok(metricValue(coord, "tandem_kv_transfer_bytes_total", { role: "coordinator" }) > 0);
  });
}

if (mode === "colocated") {
  await check("every worker SIGKILLed mid-stream: the stream ends with an explicit error", async () => {
    const pids = [];
    for (const d of readdirSync("/proc")) {
      if (!/^\d+$/.test(d)) continue;
      let argv;
      try { argv = readFileSync(`/proc/${d}/cmdline`, "utf8").split("\0"); } catch { continue; }
      if (argv[1] === "worker" && argv.includes(rpcAddr)) pids.push(Number(d));
    }
    assert.equal(pids.length, 2);
    let got = 0, error = null, finish = null;
    const t = Date.now();
    try {
      const stream = await client.completions.create({ model: modelName, prompt: promptOf(50, 77), max_tokens: 2000,
        temperature: 0, stream: true });
      for await (const ch of stream) {
        if (ch.choices[0]?.finish_reason) finish = ch.choices[0].finish_reason;
        if (++got === 5) for (const pid of pids) process.kill(pid, "SIGKILL");
      }
    } catch (e) {
      error = e;
    }
    assert.ok(error, `the stream ended without an error (finish ${finish}, ${got} chunks)`);
    assert.ok(isErrorEvent(error), `not an error event: ${error}`);
    assert.match(error.error.message, /no worker|failed/);
    console.log(`   error event after ${((Date.now() - t) / 1000).toFixed(1)} s: ${error.message.slice(0, 160)}`);
    assert.ok(status().workers.every((w) => w.state === "failed"));
    const r = await fetch(`${baseUrl}/health`);
    assert.equal(r.status, 503, "/health with no worker");
    await assert.rejects(client.completions.create({ model: modelName, prompt: "anyone?", max_tokens: 2 }),
      (e) => e instanceof OpenAI.APIError && e.status === 503);
  });
}

async function stopCluster() {
  await check("SIGTERM stops the whole cluster cleanly", async () => {
    serve.kill("SIGTERM");
    const [code] = await once(serve, "exit");
    assert.equal(code, 0, `tandem serve exit status; stderr:\n${serveErr.slice(-3000)}`);
    // no process of this cluster is left
    for (const d of readdirSync("/proc")) {
      if (!/^\d+$/.test(d)) continue;
      let cmd;
      try { cmd = readFileSync(`/proc/${d}/cmdline`, "utf8"); } catch { continue; }
      assert.ok(!cmd.includes(rpcAddr) || !cmd.includes("worker"), `left over: ${cmd.replace(/\0/g, " ")}`);
    }
  });
}

await stopCluster();
console.log(`all ${checksPassed()} checks passed in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
process.exit(0);
