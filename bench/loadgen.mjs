// loadgen.mjs: replays a workload file against a running Tandem cluster through the
// OpenAI API, open-loop, and reports TTFT, TPOT and SLO attainment.
//
// Open-loop as vLLM's benchmark_serving --request-rate: request i is sent at its
// arrival time from the trace (bench/workload.mjs; the same trace `tandemctl plan`
// simulates for the same --seed, --rate and --requests), whether or not earlier ones
// have finished. Each request is a streaming /v1/completions call through the
// official `openai` npm client with a token-id prompt of the drawn length (ordinary
// vocabulary ids from the same seed), max_tokens the drawn output length, greedy.
// TTFT runs from the request's arrival time (so a late send counts against it) to
// its first token; TPOT is (last token - first token) / (tokens - 1), tokens counted
// by their logprobs. A request meets the SLOs when both are within them; a failed
// request (HTTP error, time limit) meets neither. Only 127.0.0.1 is contacted.
//
// usage: node bench/loadgen.mjs --url http://127.0.0.1:PORT --model NAME --workload FILE
//          [--rate R (req/s; default the file's)] [--requests N (default the file's)] [--seed S (1)]
//          [--ttft-slo MS --tpot-slo MS] [--out FILE.json] [--time-limit-s S (900)] [--label TEXT]
// Prints one summary line (JSON with --out: every request and the summary); exits 1
// with one line when the arguments or the workload are wrong or nothing came back.
import { createRequire } from "node:module";
import { setMaxListeners } from "node:events";
import { writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { loadWorkload, rng, trace } from "./workload.mjs";

const require = createRequire(join(dirname(fileURLToPath(import.meta.url)), "..", "tests", "package.json"));

function fail(msg) {
  console.error(`loadgen: ${msg}`);
  process.exit(1);
}

function parseArgs(argv) {
  const o = { url: "", model: "", workload: "", rate: 0, requests: 0, seed: 1, "ttft-slo": 0, "tpot-slo": 0,
    out: "", "time-limit-s": 900, label: "" };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "");
    if (!argv[i].startsWith("--") || !(key in o)) fail(`unknown option ${argv[i]}`);
    if (i + 1 >= argv.length) fail(`${argv[i]} wants a value`);
    const v = argv[i + 1];
    if (typeof o[key] === "number") {
      if (!/^\d+(\.\d+)?$/.test(v)) fail(`${argv[i]} wants a non-negative number, got '${v}'`);
      o[key] = Number(v);
    } else o[key] = v;
  }
  if (!o.url || !o.model || !o.workload) fail("wants --url, --model and --workload");
  if (!/^http:\/\/127\.0\.0\.1:\d+$/.test(o.url)) fail(`--url must be http://127.0.0.1:PORT, got '${o.url}'`);
  if (!Number.isInteger(o.requests) || !Number.isInteger(o.seed) || o.seed > 2147483647)
    fail("--requests and --seed must be integers (seed below 2^31)");
  if ((o["ttft-slo"] > 0) !== (o["tpot-slo"] > 0)) fail("--ttft-slo and --tpot-slo go together");
  if (!(o["time-limit-s"] > 0)) fail("--time-limit-s must be above 0");
  return o;
}

// Nearest-rank percentile (as tandemctl plan reports them).
function pct(xs, p) {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))];
}

// Ordinary vocabulary ids only (Qwen3's special tokens start at 151643).
const TOKEN_LO = 1000, TOKEN_HI = 150000;

async function main() {
  const o = parseArgs(process.argv.slice(2));
  let w;
  try {
    w = loadWorkload(o.workload);
  } catch (e) {
    fail(e.message);
  }
  const rate = o.rate > 0 ? o.rate : w.arrival.rate;
  const n = o.requests > 0 ? o.requests : w.requests;
  const reqs = trace(w, rate, o.seed, n);
  const ids = rng(o.seed ^ 0x5bd1e995);
  const prompts = reqs.map((q) => Array.from({ length: q.prompt }, () => TOKEN_LO + Math.floor(ids() * (TOKEN_HI - TOKEN_LO))));

  const OpenAI = require("openai").default ?? require("openai");
  const client = new OpenAI({ baseURL: `${o.url}/v1`, apiKey: "unused", maxRetries: 0, timeout: o["time-limit-s"] * 1000 });
  const limit = AbortSignal.timeout(o["time-limit-s"] * 1000);
  setMaxListeners(0, limit); // one listener per request in flight, by design

  async function one(i, t0) {
    const q = reqs[i];
    const rec = { i, arrival: q.arrival, prompt: q.prompt, output: q.output, tokens: 0, ttft: null, tpot: null, error: null };
    try {
      const stream = await client.completions.create({
        model: o.model, prompt: prompts[i], max_tokens: q.output, temperature: 0, logprobs: 0, stream: true,
      }, { signal: limit });
      let first = 0, last = 0;
      for await (const ch of stream) {
        const c = ch.choices?.[0];
        const k = c?.logprobs?.token_logprobs?.length ?? 0;
        if (!k) continue;
        const t = performance.now();
        if (!rec.tokens) first = t;
        last = t;
        rec.tokens += k;
        rec.finish = c.finish_reason ?? rec.finish;
      }
      if (!rec.tokens) throw new Error("the stream carried no token");
      rec.ttft = (first - t0) / 1000 - q.arrival;
      rec.tpot = rec.tokens > 1 ? (last - first) / 1000 / (rec.tokens - 1) : 0;
    } catch (e) {
      rec.error = e.message.split("\n")[0];
    }
    return rec;
  }

  try { // warm-up: pages the weights in; not counted
    const s = await client.completions.create({ model: o.model, prompt: prompts[0].slice(0, 16), max_tokens: 2, stream: false });
    if (!s.choices?.length) throw new Error("no choices");
  } catch (e) {
    fail(`the warm-up request failed: ${e.message}`);
  }
  const load0 = loadavg();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const pending = reqs.map((q, i) => new Promise((resolve) => {
    setTimeout(() => resolve(one(i, t0)), Math.max(0, t0 + q.arrival * 1000 - performance.now()));
  }));
  const recs = await Promise.all(pending);
  const wall = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const ok = recs.filter((r) => !r.error);
  const ttft = ok.map((r) => r.ttft), tpot = ok.map((r) => r.tpot);
  const sloT = o["ttft-slo"] / 1000, sloP = o["tpot-slo"] / 1000;
  const met = sloT > 0 ? ok.filter((r) => r.ttft <= sloT && r.tpot <= sloP).length : null;
  const summary = {
    label: o.label, workload: w.name, rate, requests: n, seed: o.seed, failed: n - ok.length,
    attainment: met === null ? null : met / n, ttft_slo_ms: o["ttft-slo"] || null, tpot_slo_ms: o["tpot-slo"] || null,
    ttft_p50_ms: 1e3 * pct(ttft, 0.5), ttft_p99_ms: 1e3 * pct(ttft, 0.99),
    tpot_p50_ms: 1e3 * pct(tpot, 0.5), tpot_p99_ms: 1e3 * pct(tpot, 0.99),
    tokens: recs.reduce((n, r) => n + r.tokens, 0), client_cpu_s: (cpu.user + cpu.system) / 1e6,
    wall_s: wall, load_average_before: load0.map((x) => +x.toFixed(2)), load_average_after: loadavg().map((x) => +x.toFixed(2)),
  };
  if (o.out) writeFileSync(o.out, JSON.stringify({ summary, requests: recs }, null, 1) + "\n");
  if (!ok.length) fail(`no request succeeded; the first error: ${recs[0].error}`);
  const f = (x) => (Number.isFinite(x) ? x.toFixed(0) : "-");
  console.log(`${o.label ? o.label + ": " : ""}${w.name} at ${rate} req/s, ${n} requests (seed ${o.seed}): ` +
    `${met === null ? "" : `SLO attainment ${(100 * summary.attainment).toFixed(1)}%, `}` +
    `TTFT p50/p99 ${f(summary.ttft_p50_ms)}/${f(summary.ttft_p99_ms)} ms, TPOT p50/p99 ${f(summary.tpot_p50_ms)}/${f(summary.tpot_p99_ms)} ms, ` +
    `${summary.failed} failed, ${wall.toFixed(1)} s, load ${summary.load_average_before[0]} -> ${summary.load_average_after[0]}`);
}

main().catch((e) => fail(e.stack || e.message));
