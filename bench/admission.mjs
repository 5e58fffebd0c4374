// admission.mjs: admission control at twice the measured capacity (issue 14, acceptance 3),
// with the percentiles the CI test (tests/prefix/admission.mjs) leaves out.
//
// Per round, on the bench model (as bench/goodput.mjs makes it), 1 prefill worker without
// a prefix cache (every prompt costs its full prefill) and 1 decode worker:
//   1. capacity: a `tandem serve` without an objective gets `--burst` requests at once;
//      capacity = burst / the time until the last one's first token (prefill-bound:
//      the worker batches them as it would under load);
//   2. a fresh `tandem serve --ttft-slo-ms S` (S: --ttft-slo-ms, else 3 x the TTFT of one
//      request alone) gets requests at twice that capacity, evenly spaced, for
//      --duration-s seconds, after 3 warm-up requests;
//   3. printed: accepted requests' TTFT p50 / p99 / max against S, the refused ones'
//      answer time p50 / p99 / max against 50 ms, and everything else (other statuses,
//      timeouts, streams that did not complete), which should be none.
// Every request is a streamed /v1/completions of --prompt-tokens token ids (seeded) and
// 2 output tokens. Clusters are stopped before the next (SIGTERM, SIGKILL after 15 s).
//
// usage: node bench/admission.mjs [--rounds R (3)] [--prompt-tokens P (1024)] [--burst B (8)]
//          [--duration-s D (20)] [--ttft-slo-ms S] [--threads-per-worker T (1)] [--seed S (1)]
//          [--build DIR (build)] [--cache DIR]
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { timedCompletion, tokenPrompts } from "./completion.mjs";
import { load, makeModel, startCluster, stopCluster } from "./goodput.mjs";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const MODEL_NAME = "qwen3-h512-l8-bf16";
const REQUEST_TIMEOUT_S = 120;

function fail(msg) {
  console.error(`admission: ${msg}`);
  process.exit(1);
}

function parseArgs(argv) {
  const o = { rounds: "3", "prompt-tokens": "1024", burst: "8", "duration-s": "20", "ttft-slo-ms": "",
    "threads-per-worker": "1", seed: "1", build: join(ROOT, "build"),
    cache: process.env.TANDEM_BENCH_CACHE || join(process.env.XDG_CACHE_HOME || join(homedir(), ".cache"), "tandem", "bench") };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "");
    if (!argv[i].startsWith("--") || !(key in o) || i + 1 >= argv.length) fail(`bad option ${argv[i]} (see the usage at the top of this file)`);
    o[key] = argv[i + 1];
  }
  for (const k of ["rounds", "prompt-tokens", "burst", "duration-s", "threads-per-worker"].concat(o["ttft-slo-ms"] ? ["ttft-slo-ms"] : []))
    if (!/^[1-9]\d*$/.test(o[k])) fail(`--${k} must be a positive integer`);
  if (!/^\d+$/.test(o.seed)) fail("--seed must be a non-negative integer");
  return o;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const pct = (xs, p) => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
};

const request = (url, prompt) => timedCompletion(url, MODEL_NAME, prompt, { timeoutMs: REQUEST_TIMEOUT_S * 1000 });

async function round(o, paths, r, tmp) {
  const prompts = tokenPrompts(Number(o.seed) * 7919 + r + 1);
  const prompt = () => prompts(Number(o["prompt-tokens"]));
  const base = ["--prefill-workers", "1", "--decode-workers", "1", "--no-prefix-cache", "--threads-per-worker", o["threads-per-worker"]];
  const loadBefore = load();
  let url;
  try {
    ({ url } = await startCluster(paths.tandem, paths.model, base, join(tmp, `capacity-${r}.log`)));
    await request(url, prompt()); // warm-up: the weights paged in
    const alone = [];
    for (let i = 0; i < 3; i++) alone.push((await request(url, prompt())).ttft);
    const burst = await Promise.all(Array.from({ length: Number(o.burst) }, () => request(url, prompt())));
    if (burst.some((x) => x.status !== 200)) fail(`the capacity burst failed: ${JSON.stringify(burst.find((x) => x.status !== 200))}`);
    const capacity = Number(o.burst) / (Math.max(...burst.map((x) => x.ttft)) / 1000); // all sent at once
    await stopCluster();
    const slo = o["ttft-slo-ms"] ? Number(o["ttft-slo-ms"]) : Math.round(3 * pct(alone, 50));
    ({ url } = await startCluster(paths.tandem, paths.model, [...base, "--ttft-slo-ms", String(slo)], join(tmp, `slo-${r}.log`)));
    for (let i = 0; i < 3; i++) await request(url, prompt()); // the coordinator learns what its predictions miss
    const gap = 1000 / (2 * capacity), pending = [], start = performance.now();
    for (let k = 0; performance.now() - start < Number(o["duration-s"]) * 1000; k++) {
      pending.push(request(url, prompt()));
      await sleep(Math.max(0, start + (k + 1) * gap - performance.now()));
    }
    const rs = await Promise.all(pending);
    return { round: r, alone_ms: pct(alone, 50), capacity, slo, rate: 2 * capacity, rs, load_before: loadBefore, load_after: load() };
  } catch (e) {
    fail(`round ${r + 1}: ${e.message}`);
  } finally {
    await stopCluster();
  }
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const paths = { tandem: join(o.build, "cli/tandem") };
  if (!existsSync(paths.tandem)) fail(`${paths.tandem} is missing: cmake --build ${o.build} --target tandem`);
  const tmp = mkdtempSync(join(tmpdir(), "admission-"));
  process.on("exit", () => rmSync(tmp, { recursive: true, force: true }));
  paths.model = makeModel(o);
  const ms = (x) => (Number.isFinite(x) ? x.toFixed(0) : "-");
  const rows = [];
  for (let r = 0; r < Number(o.rounds); r++) {
    console.error(`== round ${r + 1}; load average ${load()}`);
    rows.push(await round(o, paths, r, tmp));
  }
  console.log(`${o["prompt-tokens"]}-token prompts, 2 output tokens; 1 prefill (no prefix cache) + 1 decode worker, ` +
    `${o["threads-per-worker"]} thread each; capacity from a burst of ${o.burst}; ${o["duration-s"]} s at twice it per round`);
  console.log("| round | alone TTFT ms | capacity req/s | SLO ms | sent | accepted | accepted TTFT p50 / p99 / max ms | refused (503) | refusal answered p50 / p99 / max ms | other | load |");
  console.log("| ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- | --- | --- |");
  for (const x of rows) {
    const ok = x.rs.filter((q) => q.status === 200 && q.complete), no = x.rs.filter((q) => q.status === 503);
    const other = x.rs.filter((q) => !ok.includes(q) && !no.includes(q));
    const t = ok.map((q) => q.ttft), h = no.map((q) => q.head);
    const others = other.length ? other.map((q) => `${q.status}${q.status === 200 ? " incomplete" : ""}`).join(" ") : "none";
    console.log(`| ${x.round + 1} | ${ms(x.alone_ms)} | ${x.capacity.toFixed(2)} | ${x.slo} | ${x.rs.length} | ${ok.length} | ` +
      `${ms(pct(t, 50))} / ${ms(pct(t, 99))} / ${ms(Math.max(...t))} | ${no.length} | ` +
      `${h.length ? `${pct(h, 50).toFixed(1)} / ${pct(h, 99).toFixed(1)} / ${Math.max(...h).toFixed(1)}` : "-"} | ${others} | ${x.load_before.split(" ")[0]} / ${x.load_after.split(" ")[0]} |`);
  }
}

main().catch(async (e) => { await stopCluster(); fail(e.stack || e.message); });
