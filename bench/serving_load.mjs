// serving_load.mjs: a bounded streaming load against a running Tandem cluster, and
// the table that compares two runs of it.
//
// Why a separate script: bench/serving.sh owns the clusters (start, wait, always
// stop); this file owns what a client sees. It sends the same workload to whatever
// URL it is given (N streaming /v1/completions requests, token-id prompts whose
// lengths come from a seeded PRNG, fixed max_tokens, at most C in flight) through
// the official `openai` npm client, timestamps every streamed chunk, and reads the
// coordinator's /metrics before and after, so that the KV bytes and seconds of this
// run alone are counted (a warm-up request is sent first and left out).
//
// usage:
//   node bench/serving_load.mjs run --url http://127.0.0.1:PORT --model NAME --out FILE.json
//        [--mode LABEL] [--requests N] [--concurrency C] [--min-prompt P] [--max-prompt P]
//        [--max-tokens T] [--seed S] [--request-timeout-s S] [--time-limit-s S] [--serve-log FILE]
//        [--layers L (the model's, to size one layer's KV push; default 8)]
//        [--tandemctl PATH --rpc HOST:PORT (then each worker's steps and batch sizes are read too)]
//   node bench/serving_load.mjs report RUN.json... [--kvt FILE]
//
// `run` exits non-zero with one line when a request fails or the time limit passes;
// `report` prints the comparison table (and the loopback TCP baseline from kvt_bench's
// output when --kvt is given). Only 127.0.0.1 is ever contacted.
import { createRequire } from "node:module";
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync, statSync, openSync, readSync, closeSync } from "node:fs";
import { loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { rng } from "./workload.mjs";

const require = createRequire(join(dirname(fileURLToPath(import.meta.url)), "..", "tests", "package.json"));

function fail(msg) {
  console.error(`serving_load: ${msg}`);
  process.exit(1);
}

function parseArgs(argv, spec) {
  const out = { ...spec };
  const rest = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) { rest.push(a); continue; }
    const key = a.slice(2);
    if (!(key in spec)) fail(`unknown option ${a}`);
    if (i + 1 >= argv.length) fail(`${a} wants a value`);
    const v = argv[++i];
    if (typeof spec[key] === "number") {
      if (!/^\d+$/.test(v)) fail(`${a} wants a non-negative integer, got '${v}'`);
      out[key] = Number(v);
    } else out[key] = v;
  }
  return { opts: out, rest };
}

// rng: mulberry32 (workload.mjs), so that every mode gets exactly the same prompts.

// Ordinary vocabulary ids only (Qwen3's special tokens start at 151643).
const TOKEN_LO = 1000, TOKEN_HI = 150000;

function workload(o) {
  const r = rng(o.seed);
  const reqs = [];
  for (let i = 0; i < o.requests; i++) {
    const n = o["min-prompt"] + Math.floor(r() * (o["max-prompt"] - o["min-prompt"] + 1));
    const prompt = Array.from({ length: n }, () => TOKEN_LO + Math.floor(r() * (TOKEN_HI - TOKEN_LO)));
    reqs.push(prompt);
  }
  return reqs;
}

// Nearest-rank percentile: with few samples p99 is the largest one, said as such in the docs.
function pct(xs, p) {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

// Sum of a metric's samples (any labels) in Prometheus text format.
function metricSum(text, name) {
  let sum = 0;
  for (const line of text.split("\n")) {
    const m = /^([A-Za-z_:][\w:]*)(?:\{[^}]*\})? (\S+)$/.exec(line);
    if (m && m[1] === name) sum += Number(m[2]);
  }
  return sum;
}

async function scrape(url, signal) {
  const r = await fetch(`${url}/metrics`, { signal });
  if (r.status !== 200) fail(`GET ${url}/metrics answered ${r.status}`);
  const t = await r.text();
  return {
    kv_bytes: metricSum(t, "tandem_kv_transfer_bytes_total"),
    kv_seconds: metricSum(t, "tandem_kv_transfer_seconds_sum"),
    kv_transfers: metricSum(t, "tandem_kv_transfer_seconds_count"),
  };
}

// Every worker's forward steps so far: count, summed sequences and tokens per step.
async function workerSteps(o, signal) {
  if (!o.tandemctl || !o.rpc) return {};
  let st;
  try {
    st = JSON.parse(execFileSync(o.tandemctl, ["status", "--coordinator", o.rpc, "--json"],
      { encoding: "utf8", timeout: 10000 }));
  } catch (e) {
    fail(`tandemctl status failed: ${e.message.split("\n")[0]}`);
  }
  const out = {};
  for (const w of st.workers) {
    if (!w.metrics_address || !/^127\.0\.0\.1:\d+$/.test(w.metrics_address)) continue;
    const r = await fetch(`http://${w.metrics_address}/metrics`, { signal });
    if (r.status !== 200) fail(`GET ${w.metrics_address}/metrics answered ${r.status}`);
    const t = await r.text();
    out[w.id] = { role: w.role, steps: metricSum(t, "tandem_batch_size_count"),
      seqs: metricSum(t, "tandem_batch_size_sum"), tokens: metricSum(t, "tandem_batch_tokens_sum") };
  }
  return out;
}

function logSize(path) {
  try { return statSync(path).size; } catch { return 0; }
}

function logSince(path, offset) {
  if (!path) return "";
  const size = logSize(path);
  if (size <= offset) return "";
  const fd = openSync(path, "r");
  try {
    const buf = Buffer.alloc(size - offset);
    readSync(fd, buf, 0, buf.length, offset);
    return buf.toString("utf8");
  } finally {
    closeSync(fd);
  }
}

// The prefill worker logs, per request, when its last KV block was acknowledged
// (from prefill start) and how long the compute itself took; the difference is the
// part of the transfer that compute did not hide.
function exposedTransfers(text) {
  const out = [];
  const re = /first token -?\d+, (\d+) KV bytes pushed to \S+ in ([\d.]+) ms \(queue [\d.]+, compute ([\d.]+)\)/g;
  for (const m of text.matchAll(re)) out.push({ bytes: Number(m[1]), total_ms: Number(m[2]), compute_ms: Number(m[3]) });
  return out;
}

async function run(argv) {
  const { opts: o } = parseArgs(argv, {
    url: "", model: "", out: "", mode: "", "serve-log": "",
    requests: 24, concurrency: 4, "min-prompt": 64, "max-prompt": 1024, "max-tokens": 32, seed: 42,
    "request-timeout-s": 300, "time-limit-s": 900, layers: 8, tandemctl: "", rpc: "",
  });
  if (!o.url || !o.model || !o.out) fail("run wants --url, --model and --out");
  if (!/^http:\/\/127\.0\.0\.1:\d+$/.test(o.url)) fail(`--url must be http://127.0.0.1:PORT, got '${o.url}'`);
  if (o.requests < 1 || o.concurrency < 1 || o["max-tokens"] < 2 || o["min-prompt"] < 1 || o["max-prompt"] < o["min-prompt"])
    fail("need --requests >= 1, --concurrency >= 1, --max-tokens >= 2, 1 <= --min-prompt <= --max-prompt");

  const OpenAI = require("openai").default ?? require("openai");
  const client = new OpenAI({ baseURL: `${o.url}/v1`, apiKey: "unused", maxRetries: 0,
    timeout: o["request-timeout-s"] * 1000 });
  const deadline = AbortSignal.timeout(o["time-limit-s"] * 1000);
  deadline.addEventListener("abort", () => fail(`time limit of ${o["time-limit-s"]} s passed`));

  // One request measures a stream: send time, every chunk's arrival and token count.
  async function one(prompt, maxTokens) {
    const t0 = performance.now();
    const stream = await client.completions.create({
      model: o.model, prompt, max_tokens: maxTokens, temperature: 0, logprobs: 0,
      stream: true, stream_options: { include_usage: true },
    }, { signal: deadline });
    const chunks = [];
    let usage = null, finish = null;
    for await (const ch of stream) {
      if (ch.usage) usage = ch.usage;
      const c = ch.choices?.[0];
      if (!c) continue;
      if (c.finish_reason) finish = c.finish_reason;
      // Tokens are counted by their logprobs (always requested): a chunk may carry no
      // token (the final flush of held-back bytes of an incomplete UTF-8 character)
      // or text-less tokens (the first bytes of such a character).
      const k = c.logprobs?.token_logprobs?.length ?? 0;
      if (k > 0) chunks.push({ t: performance.now(), k, text: c.text, ids: c.logprobs?.tokens, lps: c.logprobs?.token_logprobs });
    }
    const t1 = performance.now();
    if (!chunks.length) throw new Error("the stream carried no token");
    const tokens = chunks.reduce((s, c) => s + c.k, 0);
    // A stream that disagrees with its own usage is a server bug, not a reason to lose
    // the run's timings: it is recorded with the chunks as evidence and reported.
    const anomaly = usage && usage.completion_tokens !== tokens
      ? { usage: usage.completion_tokens, streamed: tokens, finish,
        chunks: chunks.map((c) => ({ ms: +(c.t - t0).toFixed(1), text: c.text, tokens: c.ids, logprobs: c.lps })) }
      : null;
    const ttft = (chunks[0].t - t0) / 1000;
    const itl = [];
    for (let i = 1; i < chunks.length; i++) {
      const gap = (chunks[i].t - chunks[i - 1].t) / 1000 / chunks[i].k;
      for (let j = 0; j < chunks[i].k; j++) itl.push(gap);
    }
    const tpot = tokens > 1 ? (chunks[chunks.length - 1].t - chunks[0].t) / 1000 / (tokens - 1) : NaN;
    return { prompt_tokens: prompt.length, tokens, finish, ttft, tpot, itl, e2e: (t1 - t0) / 1000, anomaly };
  }

  const reqs = workload(o);
  try {
    await one(reqs[0].slice(0, 16), 4); // warm-up: pages the weights in; not counted
  } catch (e) {
    fail(`the warm-up request failed: ${e.message}`);
  }

  const before = await scrape(o.url, deadline);
  const stepsBefore = await workerSteps(o, deadline);
  const logOffset = o["serve-log"] ? logSize(o["serve-log"]) : 0;
  const load0 = loadavg();
  const results = new Array(reqs.length);
  let next = 0;
  const tStart = performance.now();
  async function lane() {
    while (next < reqs.length) {
      const i = next++;
      try {
        results[i] = await one(reqs[i], o["max-tokens"]);
      } catch (e) {
        fail(`request ${i} (${reqs[i].length} prompt tokens) failed: ${e.message}`);
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(o.concurrency, reqs.length) }, lane));
  const wall = (performance.now() - tStart) / 1000;
  const load1 = loadavg();
  const after = await scrape(o.url, deadline);
  const stepsAfter = await workerSteps(o, deadline);
  const workers = Object.entries(stepsAfter).map(([id, a]) => {
    const b = stepsBefore[id] || { steps: 0, seqs: 0, tokens: 0 };
    return { id, role: a.role, steps: a.steps - b.steps, seqs: a.seqs - b.seqs, tokens: a.tokens - b.tokens };
  });
  const exposed = exposedTransfers(logSince(o["serve-log"], logOffset));

  const outTokens = results.reduce((s, r) => s + r.tokens, 0);
  const summary = {
    mode: o.mode || o.url,
    workload: { requests: o.requests, concurrency: o.concurrency, prompt: [o["min-prompt"], o["max-prompt"]],
      max_tokens: o["max-tokens"], seed: o.seed, prompt_tokens: results.reduce((s, r) => s + r.prompt_tokens, 0) },
    wall_s: wall,
    output_tokens: outTokens,
    finish: results.reduce((m, r) => ((m[r.finish] = (m[r.finish] || 0) + 1), m), {}),
    ttft: { p50: pct(results.map((r) => r.ttft), 50), p99: pct(results.map((r) => r.ttft), 99) },
    tpot: { p50: pct(results.map((r) => r.tpot).filter((x) => !isNaN(x)), 50),
      p99: pct(results.map((r) => r.tpot).filter((x) => !isNaN(x)), 99) },
    itl: { p50: pct(results.flatMap((r) => r.itl), 50), p99: pct(results.flatMap((r) => r.itl), 99) },
    e2e: { p50: pct(results.map((r) => r.e2e), 50), p99: pct(results.map((r) => r.e2e), 99) },
    output_tok_s: outTokens / wall,
    req_s: results.length / wall,
    kv: {
      bytes: after.kv_bytes - before.kv_bytes,
      seconds: after.kv_seconds - before.kv_seconds,
      transfers: after.kv_transfers - before.kv_transfers,
      logged: exposed.length,
      exposed_ms: exposed.map((x) => Math.max(0, x.total_ms - x.compute_ms)),
      layers: o.layers,
    },
    workers,
    anomalies: results.flatMap((r, i) => (r.anomaly ? [{ request: i, prompt_tokens: r.prompt_tokens, ...r.anomaly }] : [])),
    loadavg: { start: load0, end: load1 },
  };
  writeFileSync(o.out, JSON.stringify(summary, null, 1));
  for (const a of summary.anomalies)
    console.error(`serving_load: WARNING: request ${a.request} (${a.prompt_tokens} prompt tokens): usage says ${a.usage} ` +
      `completion tokens, the stream carried ${a.streamed} (chunks kept in ${o.out})`);
  console.log(`${summary.mode}: ${results.length} requests in ${wall.toFixed(1)} s, ${outTokens} output tokens`);
}

// kvt_bench prints one row per run size: "<KiB> K raw_GBs kvt_GBs ratio busy%".
function parseKvt(text) {
  const rows = [];
  for (const line of text.split("\n")) {
    const m = /^\s*(\d+) K\s+([\d.]+)\s+([\d.]+)\s+[\d.]+\s+[\d.]+\s*$/.exec(line);
    if (m) rows.push({ label: `${m[1]} KiB`, raw: Number(m[2]), kvt: Number(m[3]) });
  }
  return rows;
}

function report(argv) {
  const { opts, rest } = parseArgs(argv, { kvt: "" });
  if (!rest.length) fail("report wants at least one run .json");
  const runs = rest.map((f) => JSON.parse(readFileSync(f, "utf8")));
  const ms = (x) => (isNaN(x) ? "-" : (x * 1000).toFixed(0));
  const w = runs[0].workload;
  console.log(`workload: ${w.requests} streaming completions, concurrency ${w.concurrency}, prompt ${w.prompt[0]}..${w.prompt[1]} ` +
    `tokens (uniform, seed ${w.seed}; ${w.prompt_tokens} in all), max_tokens ${w.max_tokens}, greedy`);
  console.log("");
  console.log("| mode | TTFT p50 | TTFT p99 | TPOT p50 | TPOT p99 | ITL p50 | ITL p99 | e2e p50 | e2e p99 | output tok/s | req/s | wall s | load avg (1 min, start/end) |");
  console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const r of runs)
    console.log(`| ${r.mode} | ${ms(r.ttft.p50)} | ${ms(r.ttft.p99)} | ${ms(r.tpot.p50)} | ${ms(r.tpot.p99)} | ${ms(r.itl.p50)} | ` +
      `${ms(r.itl.p99)} | ${ms(r.e2e.p50)} | ${ms(r.e2e.p99)} | ${r.output_tok_s.toFixed(1)} | ${r.req_s.toFixed(3)} | ` +
      `${r.wall_s.toFixed(1)} | ${r.loadavg.start[0].toFixed(1)} / ${r.loadavg.end[0].toFixed(1)} |`);
  for (const r of runs)
    for (const a of r.anomalies || [])
      console.log(`${r.mode}: ANOMALY request ${a.request} (${a.prompt_tokens} prompt tokens): usage ${a.usage} completion ` +
        `tokens, stream carried ${a.streamed}`);
  console.log("(latencies in ms; finish reasons: " + runs.map((r) => `${r.mode} ${JSON.stringify(r.finish)}`).join(", ") + ")");
  console.log("");
  for (const r of runs)
    for (const w of r.workers || [])
      if (w.steps)
        console.log(`${r.mode}: ${w.id} (${w.role}) ran ${w.steps} forward steps, ${(w.seqs / w.steps).toFixed(2)} sequences ` +
          `and ${(w.tokens / w.steps).toFixed(1)} tokens per step on average`);
  console.log("");
  const kvt = opts.kvt ? parseKvt(readFileSync(opts.kvt, "utf8")) : [];
  const bestRaw = kvt.reduce((m, k) => Math.max(m, k.raw), 0);
  for (const r of runs) {
    if (!r.kv.transfers) { console.log(`${r.mode}: no KV transfer (colocated: prefill and decode share a worker)`); continue; }
    const gbs = r.kv.bytes / r.kv.seconds / 1e9;
    const ex = r.kv.exposed_ms;
    const perReq = r.kv.bytes / r.kv.transfers;
    console.log(`${r.mode}: KV moved ${(r.kv.bytes / 1e6).toFixed(1)} MB in ${r.kv.transfers} transfers ` +
      `(${(perReq / 1e6).toFixed(2)} MB each on average, ${(perReq / r.kv.layers / 1024).toFixed(0)} KiB per layer, ` +
      `${(r.kv.bytes / r.workload.prompt_tokens).toFixed(0)} bytes per prompt token), ${r.kv.seconds.toFixed(2)} s summed from prefill start to the last ` +
      `block acknowledged: ${gbs.toFixed(3)} GB/s effective (transfer overlapped with compute, so bounded by compute)`);
    if (ex.length)
      console.log(`${r.mode}: transfer time not hidden by compute, per request: p50 ${pct(ex, 50).toFixed(1)} ms, ` +
        `p99 ${pct(ex, 99).toFixed(1)} ms (last compute -> last block verified, from ${ex.length} prefill log lines)` +
        (bestRaw ? `; for scale, a whole request's KV at the best raw TCP rate below takes ${(perReq / bestRaw / 1e6).toFixed(1)} ms` : ""));
  }
  if (kvt.length) {
    console.log("");
    console.log("loopback TCP baseline (kvt_bench, best of its repeats, same machine, just before the clusters):");
    console.log("| run size | raw TCP GB/s | kvtransfer GB/s |");
    console.log("| ---: | ---: | ---: |");
    for (const k of kvt) console.log(`| ${k.label} | ${k.raw.toFixed(2)} | ${k.kvt.toFixed(2)} |`);
  }
}

const [cmd, ...argv] = process.argv.slice(2);
if (cmd === "run") await run(argv);
else if (cmd === "report") report(argv);
else fail("usage: serving_load.mjs run --url URL --model NAME --out FILE [options] | report RUN.json... [--kvt FILE]");
