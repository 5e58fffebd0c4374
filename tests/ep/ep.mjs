// ep.mjs: expert parallelism end to end. A real cluster (`tandem serve` with EP groups:
// coordinator + rank processes on loopback, the exchange over TCP) driven by the
// official OpenAI npm client; every answer is compared with single-process
// `tandem generate --raw --json` on the same checkpoint, bit for bit (text, token
// count, every logprob as a float32, finish reason).
//
// usage: node ep.mjs TANDEM TANDEMCTL MODEL_DIR PREFILL_EP DECODE_EP exact|faults [PLACEMENT]
// (PLACEMENT: an --expert-placement file for every group; then each rank holds its list)
// Checks:
//   - tandemctl status: every rank registered and healthy with its group, rank, size
//     and expert count; each group's ranks hold all the experts between them;
//   - greedy and seeded completions, one at a time and 24 at once, equal
//     `tandem generate`; afterwards 0 KV blocks in use on every rank;
//   - the exchange metrics count tokens dispatched on every rank;
//   - faults (two decode groups): SIGKILL of a decode rank while 16 streams run:
//     nothing hangs, every request completes with the right tokens (on the other
//     group) or ends with an explicit error, the surviving ranks free every KV
//     block, the broken group leaves rotation and serves again once the same rank
//     command is run again; SIGSTOP of a rank past the exchange deadline: the same.
// Every process started here is killed when the script exits, whatever happens.
import { spawn, execFileSync } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";
import http from "node:http";
import assert from "node:assert/strict";
import {
  referenceGenerator, referenceRequest, sameTokens, streamCompletion as streamReference, GREEDY, SEEDED, promptOf,
} from "../common/reference.mjs";
import OpenAI from "openai";
import { metricValue, check, sleep, waitFor } from "../deploy/lib.mjs";

const [tandem, tandemctl, modelDir, prefillEp, decodeEp, mode = "", placementFile] = process.argv.slice(2);
const placement = placementFile ? JSON.parse(readFileSync(placementFile, "utf8")).ranks : null;
const faults = mode === "faults";
const modelName = modelDir.replace(/\/+$/, "").split("/").pop();
const nExperts = JSON.parse(readFileSync(`${modelDir}/config.json`, "utf8")).num_experts;
const procs = [];
process.on("exit", () => {
  for (const p of procs) {
    try { process.kill(-p.pid, "SIGKILL"); } catch {}
    try { p.kill("SIGKILL"); } catch {}
  }
});
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => process.exit(1));

// ------------------------------------------------------------------ the cluster

const decodeGroups = faults ? 2 : 1;
const serveArgs = ["serve", "--model", modelDir, "--port", "0", "--rpc-port", "0", "--threads-per-worker", "1",
  "--kv-blocks", "512", "--heartbeat-ms", "200", "--prefill-workers", "1", "--decode-workers", String(decodeGroups),
  "--prefill-ep-size", prefillEp, "--decode-ep-size", decodeEp];
// faults: a short exchange deadline for the decode pool only (the prefill pool keeps 10 s)
if (faults) serveArgs.push("--decode-ep-deadline-ms", "3000");
if (placementFile) serveArgs.push("--expert-placement", placementFile);
const serve = spawn(tandem, serveArgs, { stdio: ["ignore", "pipe", "pipe"], detached: true });
procs.push(serve);
let serveErr = "", serveOut = "";
serve.stderr.setEncoding("utf8");
serve.stderr.on("data", (d) => { serveErr += d; if (process.env.TANDEM_TEST_VERBOSE) process.stderr.write(d); });
serve.stdout.setEncoding("utf8");
serve.stdout.on("data", (d) => { serveOut += d; });
const upRe = /tandem: serving .* at (\S+)\/v1 .*gRPC ([\d.:]+)\)/;
{
  const deadline = Date.now() + 120000;
  while (!upRe.test(serveOut)) {
    if (serve.exitCode !== null || Date.now() > deadline) {
      console.error(serveErr);
      assert.fail(`tandem serve did not come up: ${serveOut}`);
    }
    await sleep(50);
  }
}
const [, baseUrl, rpcAddr] = upRe.exec(serveOut);
// A new connection per request: this script still blocks its event loop at times
// (execFileSync of tandemctl, Atomics.wait between its retries), and a kept-alive socket
// left idle past the coordinator's 30 s --idle-timeout meanwhile, its close unseen because
// the client's own idle timer could not run, was reused by the next request, which failed
// with "socket hang up" (reproduced: 2 of 2 after a 31 s block, 0 of 2 without keep-alive).
const freshAgent = new http.Agent({ keepAlive: false });
const client = new OpenAI({ baseURL: `${baseUrl}/v1`, apiKey: "unused", maxRetries: 0, timeout: 120000,
  httpAgent: freshAgent });
console.log(`cluster up at ${baseUrl}: ${serveOut.trim()}`);

// tandemctl status; a call the coordinator did not answer in time (a loaded machine) is
// asked again for up to 20 s.
function status() {
  for (let tries = 0; ; tries++) {
    try {
      return JSON.parse(execFileSync(tandemctl, ["status", "--coordinator", rpcAddr, "--json"],
        { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }));
    } catch (e) {
      if (tries >= 40) throw e;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 500);
    }
  }
}

function metricsText(addr) {
  return new Promise((resolve, reject) => {
    http.get(`http://${addr}/metrics`, { agent: freshAgent }, (r) => {
      let body = "";
      r.setEncoding("utf8");
      r.on("data", (d) => { body += d; });
      r.on("end", () => (r.statusCode === 200 ? resolve(body) : reject(new Error(`/metrics: ${r.statusCode}`))));
    }).on("error", reject);
  });
}


// KV blocks in use on every live rank (healthy or not: a broken group's ranks too).
async function blocksInUse(skip = new Set()) {
  let used = 0;
  for (const w of status().workers) {
    if (skip.has(w.id) || !w.metrics_address) continue;
    let text;
    try { text = await metricsText(w.metrics_address); } catch { continue; } // a dead rank
    used += metricValue(text, "tandem_kv_blocks_used");
  }
  return used;
}

// ------------------------------------------------------------------ references

const generate = referenceGenerator(tandem, modelDir);
const params = (ref, maxTokens, samp) => referenceRequest(modelName, ref, maxTokens, samp);
const streamCompletion = (p, onChunk) => streamReference(client, p, onChunk);

// ------------------------------------------------------------------ checks

await check("tandemctl status: every rank healthy with its group, rank, size and experts", async () => {
  const s = status();
  const want = Number(prefillEp) + decodeGroups * Number(decodeEp);
  assert.equal(s.workers.length, want);
  const groups = new Map();
  for (const w of s.workers) {
    assert.equal(w.state, "ready", `${w.id}`);
    const size = w.role === "prefill" ? Number(prefillEp) : Number(decodeEp);
    assert.equal(w.ep_size, size, `${w.id}: ep_size`);
    if (size > 1) {
      assert.ok(w.group, `${w.id}: group`);
      assert.ok(w.ep_rank >= 0 && w.ep_rank < size, `${w.id}: ep_rank`);
      if (placement) assert.equal(w.experts, placement[w.ep_rank].length, `${w.id}: experts from the placement`);
    }
    const g = groups.get(w.group || w.id) ?? { experts: 0, ranks: new Set() };
    g.experts += w.experts;
    g.ranks.add(w.ep_rank);
    groups.set(w.group || w.id, g);
  }
  const held = placement ? placement.reduce((n, l) => n + l.length, 0) : nExperts;
  for (const [name, g] of groups)
    assert.equal(g.experts, g.ranks.size > 1 ? held : nExperts, `group ${name} holds every expert (replicas counted)`);
  const table = execFileSync(tandemctl, ["status", "--coordinator", rpcAddr], { encoding: "utf8" });
  assert.match(table, /EP GROUP RANK\/SIZE EXPERTS/);
});

const cases = Array.from({ length: 24 }, (_, i) => ({
  prompt: promptOf(5 + ((i * 13) % 60), i),
  n: 8 + (i % 5) * 4,
  samp: i % 2 ? { ...SEEDED, seed: 1000 + i } : GREEDY,
}));

if (!faults) {
  await check("one request at a time (greedy and seeded) equals tandem generate", async () => {
    for (const c of [cases[0], cases[1], { prompt: promptOf(200, 3), n: 6, samp: GREEDY }]) {
      const ref = await generate(c.prompt, c.n, c.samp);
      const r = await client.completions.create(params(ref, c.n, c.samp));
      sameTokens(`${JSON.stringify(c.samp)}`, ref, r.choices[0].text, r.choices[0].logprobs.token_logprobs,
        r.choices[0].finish_reason);
      const s = await streamCompletion(params(ref, c.n, c.samp));
      sameTokens(`streamed ${JSON.stringify(c.samp)}`, ref, s.text, s.lps, s.finish);
    }
  });

  await check("24 concurrent requests (greedy and seeded, streamed and not) equal tandem generate", async () => {
    const refs = await Promise.all(cases.map((c) => generate(c.prompt, c.n, c.samp)));
    const res = await Promise.all(cases.map((c, i) => i % 3 === 0
      ? streamCompletion(params(refs[i], c.n, c.samp))
      : client.completions.create(params(refs[i], c.n, c.samp)).then((r) => ({
        text: r.choices[0].text, lps: r.choices[0].logprobs.token_logprobs, finish: r.choices[0].finish_reason }))));
    res.forEach((r, i) => sameTokens(`concurrent request ${i}`, refs[i], r.text, r.lps, r.finish));
    await waitFor("every KV block back", async () => (await blocksInUse()) === 0, 5000);
  });

  await check("exchange metrics: every rank exchanged, every group dispatched, weights within budget", async () => {
    const dispatched = new Map();
    for (const w of status().workers) {
      if (w.ep_size <= 1) continue;
      const text = await metricsText(w.metrics_address);
      // a rank the router sent nothing dispatches nothing of its own, but serves the others
      const d = metricValue(text, "tandem_ep_dispatched_tokens_total");
      dispatched.set(w.group, (dispatched.get(w.group) ?? 0) + (Number.isNaN(d) ? 0 : d));
      assert.ok(metricValue(text, "tandem_ep_exchange_bytes_total", { direction: "received" }) > 0,
        `${w.id}: exchange bytes received`);
      assert.ok(metricValue(text, "tandem_ep_exchange_seconds_count") > 0, `${w.id}: exchange latency`);
      const balance = metricValue(text, "tandem_ep_balancedness"); // 0 until the rank dispatched
      assert.ok(balance >= 0 && balance <= 1 && (balance > 0) === (d > 0), `${w.id}: balancedness ${balance}`);
      const resident = metricValue(text, "tandem_weight_resident_bytes");
      const budget = metricValue(text, "tandem_weight_needed_bytes");
      assert.ok(resident > 0 && resident <= budget * 1.05, `${w.id}: resident ${resident} within ${budget} + 5%`);
    }
    for (const [g, d] of dispatched) assert.ok(d > 0, `group ${g}: tokens dispatched`);
  });
}

// ------------------------------------------------------------------ faults

function rankProcess(id) {
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    let argv;
    try { argv = readFileSync(`/proc/${d}/cmdline`, "utf8").split("\0").filter(Boolean); } catch { continue; }
    if (argv[1] === "worker" && argv.includes(rpcAddr) && argv[argv.indexOf("--id") + 1] === id)
      return { pid: Number(d), argv };
  }
  return null;
}

const healthyIds = () => new Set(status().workers.filter((w) => w.state === "ready").map((w) => w.id));

// 16 streams; `hurt` harms a decode rank of group 1 once tokens flow. Every stream
// ends with its full, exact output or an explicit error; nothing hangs.
async function underLoad(hurt) {
  const n = 40;
  const prompts = Array.from({ length: 16 }, (_, i) => promptOf(10 + 3 * i, 40 + i));
  const refs = await Promise.all(prompts.map((p) => generate(p, n, GREEDY)));
  let tokens = 0;
  const runs = refs.map((ref) => streamCompletion(params(ref, n, GREEDY), () => tokens++)
    .then((r) => ({ ok: true, r }), (e) => ({ ok: false, e })));
  await waitFor("tokens to flow", () => tokens >= 32, 30000);
  await hurt();
  const res = await Promise.all(runs);
  let done = 0;
  res.forEach((x, i) => {
    if (x.ok && x.r.finish !== null) {
      sameTokens(`stream ${i}`, refs[i], x.r.text, x.r.lps, x.r.finish);
      done++;
    } else {
      // an explicit error: an exception, or the stream's error event
      assert.ok(!x.ok || x.r.finish === null, `stream ${i}`);
    }
  });
  console.log(`  ${done} of 16 streams complete and exact, ${16 - done} ended with an explicit error`);
}

if (faults) {
  const victimId = `decode-1-r${Number(decodeEp) - 1}`;
  const restart = (v) => {
    // the same command, except the listening socket tandem serve handed to the first one
    const argv = v.argv.slice(1);
    const fd = argv.indexOf("--ep-listen-fd");
    if (fd >= 0) argv.splice(fd, 2);
    const p = spawn(tandem, argv, { stdio: ["ignore", "ignore", "pipe"], detached: true });
    p.stderr.setEncoding("utf8");
    p.stderr.on("data", (d) => { if (process.env.TANDEM_TEST_VERBOSE) process.stderr.write(d); });
    procs.push(p);
  };
  const groupOf = (id) => status().workers.filter((w) => w.group === "decode-1").map((w) => w.id).concat([id]);

  await check("each pool's ranks run with their pool's exchange deadline", async () => {
    const deadline = (id) => {
      const argv = rankProcess(id)?.argv ?? [];
      return argv[argv.indexOf("--ep-deadline-ms") + 1];
    };
    assert.equal(deadline(victimId), "3000", `${victimId}`);
    assert.equal(deadline("prefill-1-r0"), "10000", "prefill-1-r0");
  });

  await check(`SIGKILL of ${victimId} under 16 streams: exact or explicit errors, KV clean, group back`, async () => {
    const victim = rankProcess(victimId);
    assert.ok(victim, `${victimId}'s process`);
    await underLoad(async () => process.kill(victim.pid, "SIGKILL"));
    await waitFor("group decode-1 out of rotation", () => !healthyIds().has("decode-1-r0"), 5000);
    await waitFor("0 KV blocks used on every surviving rank", async () => (await blocksInUse(new Set([victimId]))) === 0, 10000);
    // the other group still serves
    const ref = await generate(cases[2].prompt, cases[2].n, GREEDY);
    const r = await client.completions.create(params(ref, cases[2].n, GREEDY));
    sameTokens("while decode-1 is down", ref, r.choices[0].text, r.choices[0].logprobs.token_logprobs, r.choices[0].finish_reason);
    restart(victim);
    await waitFor("group decode-1 back in rotation", () => groupOf(victimId).every((id) => healthyIds().has(id)), 30000);
  });

  await check(`SIGSTOP of ${victimId} past the deadline: no hang, exact or explicit errors, KV clean, group back`, async () => {
    const victim = rankProcess(victimId);
    assert.ok(victim, `${victimId}'s process`);
    await underLoad(async () => process.kill(victim.pid, "SIGSTOP"));
    await waitFor("0 KV blocks used on the other ranks", async () => (await blocksInUse(new Set([victimId]))) === 0, 15000);
    process.kill(victim.pid, "SIGCONT");
    await waitFor("group decode-1 back in rotation", () => groupOf(victimId).every((id) => healthyIds().has(id)), 30000);
    await waitFor("0 KV blocks used on every rank", async () => (await blocksInUse()) === 0, 10000);
  });

  await check("both groups serve exact tokens again", async () => {
    const refs = await Promise.all(cases.slice(0, 8).map((c) => generate(c.prompt, c.n, c.samp)));
    const rs = await Promise.all(cases.slice(0, 8).map((c, i) => client.completions.create(params(refs[i], c.n, c.samp))));
    rs.forEach((r, i) => sameTokens(`request ${i}`, refs[i], r.choices[0].text, r.choices[0].logprobs.token_logprobs,
      r.choices[0].finish_reason));
    const s = status();
    assert.ok(s.workers.filter((w) => w.group === "decode-1").some((w) => w.running >= 0));
  });
}

assert.equal(serve.exitCode, null, `tandem serve is still running:\n${serveErr}`);
const exited = new Promise((r) => serve.on("exit", (c) => r(c)));
serve.kill("SIGTERM");
assert.equal(await exited, 0, "tandem serve exits 0 on SIGTERM");
console.log("all EP checks passed");
process.exit(0); // the exit handler stops the ranks this script restarted itself
