// prefix.mjs: prefix caching is exact (issue 14, acceptance 1), through the OpenAI API on
// real processes on loopback: a coordinator, one decode worker, and one prefill worker at
// a time, started in turn with
//   1. --no-prefix-cache, one chunk per prompt: the references;
//   2. the cache on, one chunk per prompt;
//   3. the cache on, chunks of 5 tokens (--max-batch-tokens 5), so the cached blocks and
//      the computed rest come from other chunkings than the references.
// With the cache on every request runs cold and then warm (again, the cache holding its
// prefix), plus a second turn of each conversation (its first turn cached). Each answer
// (greedy and seeded) must equal the reference: text, every token's logprob and its top
// 5 alternatives, bit for bit. The worker's tandem_prefix_cache_hits_total must grow by
// exactly the reused tokens (whole 16-token blocks, the prompt's last token never).
// Then KV-aware routing: with a second prefill worker, a prompt cached on one of them
// goes back to it although load alone would pick the other; `tandemctl status` shows
// each prefill worker's cache size and hit rate.
//
// usage: node prefix.mjs TANDEM TANDEMCTL MODEL_DIR
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { basename } from "node:path";
import OpenAI from "openai";
import { startCoordinator, startWorker, waitFor, get, metricValue, check, checksPassed } from "../deploy/lib.mjs";

const [tandem, tandemctl, model] = process.argv.slice(2);
const modelName = basename(model.replace(/\/+$/, ""));
const BLOCK = 16;
const coord = await startCoordinator(tandem, ["--model", model, "--heartbeat-ms", "200"]);
const rpcAddr = coord.rpc;
const client = new OpenAI({ baseURL: `http://${coord.http}/v1`, apiKey: "unused", maxRetries: 0, timeout: 120000 });

async function worker(role, id, extra = []) {
  const p = await startWorker(tandem, ["--role", role, "--id", id, "--model", model,
    "--threads", "1", "--kv-blocks", "256", "--coordinator", rpcAddr, ...extra], id);
  p.id = id;
  await waitFor(`${id} ready`, async () => (await get(p.metrics, "/readyz")).status === 200, 120000, 100);
  return p;
}
const metric = async (w, name) => metricValue((await get(w.metrics, "/metrics")).text, name);

await worker("decode", "decode-0");

const tools = [{ type: "function", function: { name: "lookup", description: "Looks a word up in the dictionary",
  parameters: { type: "object", properties: { word: { type: "string" } }, required: ["word"] } } }];
const system = "You are a careful assistant for a library. " +
  "Answer briefly, cite the shelf, and never invent a book. ".repeat(12);
const conversations = [
  ["Where are the atlases?", "Which shelf has poetry?"],
  ["Do you lend maps?", "And globes?"],
];
const SAMPLINGS = [{ temperature: 0 }, { temperature: 0.9, top_p: 0.9, seed: 77 }];

function messages(conv, turns, answers) {
  const m = [{ role: "system", content: system }];
  for (let t = 0; t < turns; t++) {
    m.push({ role: "user", content: conv[t] });
    if (t < turns - 1) m.push({ role: "assistant", content: answers[t] });
  }
  return m;
}

// One answer, everything the client sees of it that must not change.
async function ask(msgs, samp) {
  const r = await client.chat.completions.create({ model: modelName, messages: msgs, tools, max_tokens: 12,
    logprobs: true, top_logprobs: 5, ...samp });
  const c = r.choices[0];
  return { prompt_tokens: r.usage.prompt_tokens, text: c.message.content, finish: c.finish_reason,
    logprobs: c.logprobs.content.map((t) => [t.token, t.logprob, t.top_logprobs.map((a) => [a.token, a.logprob])]) };
}

// Every request of a run, in order: [name, messages, sampling].
function requests(answers) {
  const out = [];
  conversations.forEach((conv, i) => SAMPLINGS.forEach((samp, j) => {
    out.push([`conversation ${i} turn 1 sampling ${j}`, messages(conv, 1, []), samp]);
    out.push([`conversation ${i} turn 2 sampling ${j}`, messages(conv, 2, [answers[i] ?? "The atlases are on shelf 3."]), samp]);
  }));
  return out;
}

const refs = new Map();
let prefill = await worker("prefill", "prefill-ref", ["--no-prefix-cache", "--max-batch-tokens", "2048"]);
await check("references with the prefix cache off", async () => {
  for (const [name, msgs, samp] of requests([])) refs.set(name, await ask(msgs, samp));
  assert.ok(Number.isNaN(await metric(prefill, "tandem_prefix_cache_hits_total")), "no cache, no cache metrics");
});

async function replace(id, extra) {
  prefill.kill("SIGTERM");
  assert.equal((await prefill.exited).code, 0);
  prefill = await worker("prefill", id, extra);
  // the coordinator routes to it once its registration is in
  await waitFor(`${id} routable`, async () => { try { await ask(messages(["hi"], 1, []), { temperature: 0 }); return true; }
    catch { return false; } }, 30000, 200);
}

for (const [id, chunk] of [["prefill-cache", 2048], ["prefill-cache-chunk5", 5]]) {
  await replace(id, ["--max-batch-tokens", String(chunk)]);
  await check(`cache on, chunks of ${chunk}: cold, warm and second turns equal the references bit for bit`, async () => {
    for (const [name, msgs, samp] of requests([])) {
      const ref = refs.get(name);
      const before = await metric(prefill, "tandem_prefix_cache_hits_total");
      const cold = await ask(msgs, samp);
      const mid = await metric(prefill, "tandem_prefix_cache_hits_total");
      const warm = await ask(msgs, samp);
      const after = await metric(prefill, "tandem_prefix_cache_hits_total");
      assert.deepEqual(cold, ref, `${name}: first run`);
      assert.deepEqual(warm, ref, `${name}: warm run`);
      assert.equal(after - mid, Math.floor((ref.prompt_tokens - 1) / BLOCK) * BLOCK,
        `${name}: the warm run reuses every whole block but the last token's (cold reused ${mid - before})`);
    }
    assert.ok(await metric(prefill, "tandem_prefix_cache_hit_rate") > 0.5, "hit rate");
    assert.ok(await metric(prefill, "tandem_prefix_cache_blocks") > 0, "cached blocks");
    assert.ok(await metric(prefill, "tandem_prefix_cache_query_blocks_total") >=
      await metric(prefill, "tandem_prefix_cache_hit_blocks_total"), "block counters");
  });
}
function ctl(...args) {
  const r = spawnSync(tandemctl, [...args, "--coordinator", rpcAddr], { encoding: "utf8", timeout: 30000 });
  assert.equal(r.status, 0, `tandemctl ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

await check("KV-aware routing: a cached prompt goes back to the worker that holds it", async () => {
  const a = prefill, b = await worker("prefill", "prefill-b");
  // a registered first, so on equal load a wins; b gets the new prompt while a is cordoned
  ctl("cordon", a.id);
  const msgs = [{ role: "system", content: "You route trains. " + "Keep every answer to one line. ".repeat(10) },
    { role: "user", content: "Which platform?" }];
  const ref = await ask(msgs, { temperature: 0 });
  ctl("uncordon", a.id);
  const aQueries = await metric(a, "tandem_prefix_cache_queries_total");
  const bHits = await metric(b, "tandem_prefix_cache_hits_total");
  await new Promise((res) => setTimeout(res, 1000)); // a few heartbeats: the router learns b's keys
  assert.deepEqual(await ask(msgs, { temperature: 0 }), ref, "the same answer from the cache");
  assert.equal(await metric(a, "tandem_prefix_cache_queries_total"), aQueries, "nothing went to the idle worker a");
  assert.equal(await metric(b, "tandem_prefix_cache_hits_total") - bHits,
    Math.floor((ref.prompt_tokens - 1) / BLOCK) * BLOCK, "b reused the whole cached prefix");

  // the coordinator knows the hit from b's next heartbeat
  const js = await waitFor("prefill-b's hit in tandemctl describe", () => {
    const j = JSON.parse(ctl("describe", "worker", "prefill-b", "--json"));
    return j.prefix_cache_hit_tokens > 0 && j;
  }, 10000, 100);
  assert.ok(js.prefix_cache_blocks > 0, JSON.stringify(js));
  const table = ctl("status");
  assert.match(table, /PREFIX BLOCKS\s+HIT RATE/);
  assert.match(table, /prefill-b\s+\d+\s+\d+\.\d%/);
  b.kill("SIGTERM");
  await b.exited;
});
console.log(`${checksPassed()} checks passed`);
process.exit(0);
