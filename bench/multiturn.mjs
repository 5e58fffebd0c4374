// multiturn.mjs: multi-turn agent chat with the prefix cache against without it, and
// KV-aware routing against load-only routing (issue 14, acceptance 2).
//
// Each conversation is an agent's: a long system prompt with tool definitions (sent as
// `tools`, rendered by the model's real chat template, Qwen-Agent's use_raw_api way),
// then turns of a user question and the model's answer, every turn resending the whole
// history through /v1/chat/completions with the official `openai` client, streamed.
// --concurrency conversations run at once (all by default), each turn sent when the
// previous one answered.
//
// For every round, every mode gets its own fresh `tandem serve` (2 prefill + 2 decode
// workers on the bench model, as bench/goodput.mjs makes it) and the same conversations
// (the round's seed, temperature 0); the modes' order rotates from round to round so
// that none always runs first on a machine whose load drifts. Modes:
//   cache     prefix cache on, KV-aware routing (--router-overlap-weight 1, the default)
//   nocache   --no-prefix-cache
//   loadonly  prefix cache on, --router-overlap-weight 0: prefill worker by load only
// Printed per mode: TTFT p50 / p99 of turns 2..N over every round and per round, turn 1's
// p50, the prefill workers' prefix-cache hit rate over the measured turns (their
// /metrics: hit tokens / query tokens), the 1-minute load average before / after; then
// the no-cache / cache TTFT ratios. Every cluster is stopped before the next (SIGTERM,
// SIGKILL after 15 s), also on failure; only 127.0.0.1 is contacted.
//
// usage: node bench/multiturn.mjs [--conversations N (16)] [--concurrency C (16)] [--turns T (6)] [--max-tokens M (16)]
//          [--rounds R (3)] [--seed S (1)] [--tools K (7)] [--modes cache,nocache,loadonly]
//          [--threads-per-worker T (1)] [--build DIR (build)] [--cache DIR] [--out FILE.json]
// Needs tandem and tandemctl built (cmake --build build --target tandem tandemctl) and
// scripts/setup.sh's packages.
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { homedir, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { load, makeModel, startCluster, stopCluster } from "./goodput.mjs";
import { rng } from "./workload.mjs"; // seeded: every mode gets the same conversations

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(join(ROOT, "tests", "package.json"));
const MODEL_NAME = "qwen3-h512-l8-bf16";
const REQUEST_TIMEOUT_S = 600;
const MODES = {
  cache: { label: "prefix cache, KV-aware routing", args: [] },
  nocache: { label: "no prefix cache", args: ["--no-prefix-cache"] },
  loadonly: { label: "prefix cache, load-only routing", args: ["--router-overlap-weight", "0"] },
};

function fail(msg) {
  console.error(`multiturn: ${msg}`);
  process.exit(1);
}

function parseArgs(argv) {
  const o = { conversations: "16", concurrency: "16", turns: "6", "max-tokens": "16", rounds: "3", seed: "1", tools: "7",
    modes: "cache,nocache,loadonly", "threads-per-worker": "1", build: join(ROOT, "build"), out: "",
    cache: process.env.TANDEM_BENCH_CACHE || join(process.env.XDG_CACHE_HOME || join(homedir(), ".cache"), "tandem", "bench") };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "");
    if (!argv[i].startsWith("--") || !(key in o) || i + 1 >= argv.length) fail(`bad option ${argv[i]} (see the usage at the top of this file)`);
    o[key] = argv[i + 1];
  }
  for (const k of ["conversations", "concurrency", "turns", "max-tokens", "rounds", "tools", "threads-per-worker"])
    if (!/^[1-9]\d*$/.test(o[k])) fail(`--${k} must be a positive integer`);
  if (!/^\d+$/.test(o.seed)) fail("--seed must be a non-negative integer");
  if (Number(o.turns) < 2) fail("--turns must be at least 2 (turns 2.. are measured)");
  o.modeList = o.modes.split(",");
  for (const m of o.modeList) if (!(m in MODES)) fail(`unknown mode '${m}' (${Object.keys(MODES).join(", ")})`);
  return o;
}

const WORDS = ("invoice shipment customer refund warehouse route forecast budget ticket priority schedule meeting " +
  "contract supplier order payment account balance report summary delay weather flight hotel booking " +
  "station platform train delivery address region quarter revenue margin inventory backlog release " +
  "incident outage latency server cluster database index query cache memory disk network firewall").split(" ");
const words = (r, n) => Array.from({ length: n }, () => WORDS[Math.floor(r() * WORDS.length)]).join(" ");

// The agent's tools: the same for every conversation, as an agent framework sends them.
function agentTools(k) {
  const r = rng(7);
  return Array.from({ length: k }, (_, i) => ({
    type: "function",
    function: {
      name: `tool_${i}_${WORDS[i % WORDS.length]}`,
      description: `Looks up or changes the ${WORDS[i % WORDS.length]} records of the operations system. ` +
        `Use it when the user asks about ${words(r, 8)}; it returns a JSON object with the ${words(r, 6)}.`,
      parameters: {
        type: "object",
        properties: {
          id: { type: "string", description: `The ${WORDS[(i + 3) % WORDS.length]} identifier, as printed on the ${words(r, 3)}` },
          action: { type: "string", enum: ["get", "list", "update", "cancel"], description: "What to do with it" },
          since: { type: "string", description: "ISO 8601 date: only records changed since then" },
          limit: { type: "integer", description: `At most this many ${words(r, 2)} records (default 20)` },
        },
        required: ["id", "action"],
      },
    },
  }));
}
const SYSTEM = "You are the operations assistant of a logistics company. Answer briefly and precisely. " +
  "Call a tool whenever the answer depends on live records; never invent identifiers. " +
  "If a request is ambiguous, ask one clarifying question. Reply in the user's language.";

const pct = (xs, p) => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
};

async function prefixCounters(tandemctl, rpc) {
  const st = JSON.parse(execFileSync(tandemctl, ["status", "--coordinator", rpc, "--json"], { encoding: "utf8", timeout: 60000 }));
  let queries = 0, hits = 0;
  for (const w of st.workers.filter((x) => x.role === "prefill")) {
    const text = await (await fetch(`http://${w.metrics_address}/metrics`, { signal: AbortSignal.timeout(30000) })).text();
    const read = (name) => Number((new RegExp(`^${name}\\{[^}]*\\} (\\S+)$`, "m").exec(text) || [0, 0])[1]);
    queries += read("tandem_prefix_cache_queries_total");
    hits += read("tandem_prefix_cache_hits_total");
  }
  return { queries, hits };
}

// One mode's run: --concurrency conversations at once, each turn after the last one answered.
async function runConversations(o, url, seed, tools) {
  const OpenAI = require("openai").default ?? require("openai");
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: "unused", maxRetries: 0, timeout: REQUEST_TIMEOUT_S * 1000 });
  async function turn(messages) {
    const t0 = performance.now();
    const stream = await client.chat.completions.create({ model: MODEL_NAME, messages, tools, stream: true,
      max_tokens: Number(o["max-tokens"]), temperature: 0, stream_options: { include_usage: true } });
    let ttft = NaN, text = "", usage = null;
    for await (const ch of stream) {
      if (ch.usage) usage = ch.usage;
      const d = ch.choices?.[0]?.delta;
      if (!d) continue;
      const piece = (d.content ?? "") + (d.reasoning_content ?? "");
      if (Number.isNaN(ttft) && (piece || d.tool_calls?.length)) ttft = performance.now() - t0;
      text += d.content ?? "";
    }
    if (Number.isNaN(ttft)) throw new Error("a stream carried no token");
    return { ttft, text, prompt_tokens: usage?.prompt_tokens ?? NaN };
  }
  const conversation = async (c) => {
    const r = rng(seed * 1000 + c);
    const messages = [{ role: "system", content: SYSTEM }];
    const out = [];
    for (let t = 1; t <= Number(o.turns); t++) {
      messages.push({ role: "user", content: `Question ${t}: ${words(r, 20 + Math.floor(r() * 20))}?` });
      const res = await turn(messages);
      messages.push({ role: "assistant", content: res.text });
      out.push({ conversation: c, turn: t, ttft_ms: res.ttft, prompt_tokens: res.prompt_tokens });
    }
    return out;
  };
  const all = [];
  let next = 0;
  const lane = async () => { while (next < Number(o.conversations)) all.push(...(await conversation(next++))); };
  await Promise.all(Array.from({ length: Math.min(Number(o.concurrency), Number(o.conversations)) }, lane));
  return all;
}

async function runMode(o, paths, mode, round, tools, tmp) {
  const args = ["--prefill-workers", "2", "--decode-workers", "2", "--threads-per-worker", o["threads-per-worker"], ...MODES[mode].args];
  const before = load();
  console.error(`== round ${round + 1}, ${mode}: tandem serve ${args.join(" ")}; load average ${before}`);
  let url, rpc;
  try {
    ({ url, rpc } = await startCluster(paths.tandem, paths.model, args, join(tmp, `${mode}-${round}.log`)));
  } catch (e) {
    await stopCluster();
    fail(`${mode}: ${e.message}`);
  }
  try {
    const c0 = await prefixCounters(paths.tandemctl, rpc);
    const turns = await runConversations(o, url, Number(o.seed) + round, tools);
    const c1 = await prefixCounters(paths.tandemctl, rpc);
    const hitRate = c1.queries > c0.queries ? (c1.hits - c0.hits) / (c1.queries - c0.queries) : NaN;
    return { mode, round, turns, hit_rate: hitRate, load_before: before, load_after: load() };
  } catch (e) {
    fail(`${mode}: the load failed: ${e.message.split("\n")[0]}`);
  } finally {
    await stopCluster();
  }
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const paths = { tandem: join(o.build, "cli/tandem"), tandemctl: join(o.build, "cli/tandemctl") };
  if (!existsSync(paths.tandem) || !existsSync(paths.tandemctl))
    fail(`${paths.tandem} or tandemctl is missing: cmake --build ${o.build} --target tandem tandemctl`);
  const tmp = mkdtempSync(join(tmpdir(), "multiturn-"));
  process.on("exit", () => rmSync(tmp, { recursive: true, force: true }));
  paths.model = makeModel(o);
  const tools = agentTools(Number(o.tools));
  const runs = [];
  for (let round = 0; round < Number(o.rounds); round++)
    for (let i = 0; i < o.modeList.length; i++)
      runs.push(await runMode(o, paths, o.modeList[(i + round) % o.modeList.length], round, tools, tmp));

  const later = (r) => r.turns.filter((t) => t.turn >= 2).map((t) => t.ttft_ms);
  const first = runs[0].turns.filter((t) => t.turn === 1).map((t) => t.prompt_tokens);
  const last = runs[0].turns.filter((t) => t.turn === Number(o.turns)).map((t) => t.prompt_tokens);
  const ms = (x) => (Number.isFinite(x) ? x.toFixed(0) : "-");
  console.log(`${o.conversations} conversations x ${o.turns} turns, ${o.concurrency} at once; ${o.tools} tools in the system prompt; ` +
    `prompt tokens turn 1 ${Math.min(...first)}-${Math.max(...first)}, turn ${o.turns} ${Math.min(...last)}-${Math.max(...last)}; ` +
    `max_tokens ${o["max-tokens"]}, temperature 0; 2 prefill + 2 decode workers, ${o["threads-per-worker"]} thread each; ` +
    `${o.rounds} rounds, seeds ${o.seed}..${Number(o.seed) + Number(o.rounds) - 1}, modes rotating`);
  console.log("TTFT in ms over turns 2..N (per round in brackets); hit rate: prefill workers' hit tokens / query tokens; load: 1-minute average before / after");
  console.log("| mode | TTFT p50 | TTFT p99 | turn 1 TTFT p50 | hit rate | load |");
  console.log("| --- | ---: | ---: | ---: | ---: | --- |");
  const byMode = {};
  for (const m of o.modeList) {
    const rs = runs.filter((r) => r.mode === m);
    const all = rs.flatMap(later);
    byMode[m] = { p50: pct(all, 50), rounds: rs.map((r) => pct(later(r), 50)) };
    console.log(`| ${MODES[m].label} | ${ms(pct(all, 50))} (${rs.map((r) => ms(pct(later(r), 50))).join(", ")}) | ` +
      `${ms(pct(all, 99))} (${rs.map((r) => ms(pct(later(r), 99))).join(", ")}) | ` +
      `${ms(pct(rs.flatMap((r) => r.turns.filter((t) => t.turn === 1).map((t) => t.ttft_ms)), 50))} | ` +
      `${rs.map((r) => (Number.isFinite(r.hit_rate) ? (100 * r.hit_rate).toFixed(0) + "%" : "-")).join(", ")} | ${rs.map((r) => `${r.load_before.split(" ")[0]} / ${r.load_after.split(" ")[0]}`).join(", ")} |`);
  }
  if (byMode.cache && byMode.nocache)
    console.log(`\nTTFT p50 turns 2..N, no cache / cache: ${(byMode.nocache.p50 / byMode.cache.p50).toFixed(1)}x ` +
      `(per round ${byMode.cache.rounds.map((c, i) => (byMode.nocache.rounds[i] / c).toFixed(1) + "x").join(", ")}); goal >= 3x`);
  if (byMode.cache && byMode.loadonly)
    console.log(`TTFT p50 turns 2..N, load-only / KV-aware routing: ${(byMode.loadonly.p50 / byMode.cache.p50).toFixed(2)}x`);
  if (o.out) writeFileSync(o.out, JSON.stringify({ options: o, runs }, null, 1) + "\n");
}

main().catch(async (e) => { await stopCluster(); fail(e.stack || e.message); });
