// migrate.mjs: streams move between decode workers (resume, not replay) and drains
// complete: real processes on loopback (a coordinator, 2 prefill + 2 decode workers)
// under 32 seeded streams, driven by the official OpenAI npm client and tandemctl.
//
// usage: node migrate.mjs TANDEM TANDEMCTL MODEL_DIR
// Every phase runs the same 32 seeded streams as the undisturbed run at the start and
// requires each to end identical to it: the same tokens and the same logprobs.
//   1. SIGKILL of a decode worker: the moment is not a race: once every stream has
//      tokens and none has ended, the victim is frozen (SIGSTOP) while it holds streams,
//      which then cannot finish, and killed; its streams are resumed elsewhere:
//      tandem_request_migrations_total{reason="failure"} and the log show migrations
//      (not reruns), and the resume gap p99 is printed from its histogram.
//   2. `tandemctl drain decode-1 --wait` (its --drain-timeout 0: the streams it holds are
//      handed back at once): drained, 0 errors, migrations with reason "drain", 0 KV
//      blocks used on it; then SIGTERM makes it exit 0.
//   3. `tandemctl cordon decode-0 --migrate`: the streams it holds move at once (reason
//      "cordon"), identical.
//   4. SIGTERM of a prefill worker, a decode worker and the coordinator under load:
//      each exits 0, 0 failed requests, 0 KV blocks used anywhere afterwards.
//   5. A colocated cluster (2 workers with role both): a SIGKILL moves the streams too,
//      and they equal the disaggregated run's.
//   6. --migration-limit and --migration-max-tokens: a stream that may not move ends
//      with an explicit error event.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { basename } from "node:path";
import OpenAI from "openai";
import { startCoordinator, startWorker, waitFor, get, metricValue, check, checksPassed, sleep } from "../deploy/lib.mjs";

const [tandem, tandemctl, model] = process.argv.slice(2);
const t0 = Date.now();
const modelName = basename(model.replace(/\/+$/, ""));
// TOKENS: long enough that every stream is midway at once (at 48 the first streams sometimes ended
// before the last began, and the SIGKILL check waited in vain)
const N = 32, TOKENS = 256;

async function coordinator(extra = []) {
  const p = await startCoordinator(tandem, ["--model", model, "--heartbeat-ms", "200", ...extra]);
  p.client = new OpenAI({ baseURL: `http://${p.http}/v1`, apiKey: "unused", maxRetries: 0, timeout: 120000 });
  return p;
}
async function worker(coord, role, id, extra = []) {
  const p = await startWorker(tandem, ["--role", role, "--id", id, "--model", model,
    "--threads", "1", "--kv-blocks", "512", "--coordinator", coord.rpc, ...extra], id);
  p.id = id;
  return p;
}
const workersOf = async (coord) => {
  const r = spawn(tandemctl, ["get", "workers", "-o", "json", "--coordinator", coord.rpc]);
  let out = "";
  r.stdout.on("data", (d) => { out += d; });
  const code = await new Promise((res) => r.on("exit", res));
  return code === 0 ? JSON.parse(out) : [];
};
async function ready(coord, ids) {
  await waitFor(`${ids.join(", ")} ready`, async () => {
    const ws = await workersOf(coord);
    return ids.every((id) => ws.find((w) => w.id === id)?.state === "ready");
  }, 120000, 100);
}
const metrics = async (addr) => (await get(addr, "/metrics")).text;
const kvUsed = async (w) => metricValue(await metrics(w.metrics), "tandem_kv_blocks_used");
// A worker frees a stream's blocks just after its last token leaves, so the client may
// see the end first: the blocks must be back within 5 s.
const kvFreed = (w) => waitFor(`${w.id}'s KV blocks back`, async () => (await kvUsed(w)) === 0, 5000, 50);
const running = async (w) => metricValue(await metrics(w.metrics), "tandem_num_requests_running") || 0;
const exitOf = async (p) => (await p.exited).code;

const params = (i) => ({ model: modelName, prompt: `Stream ${i} of the migration test says`, max_tokens: TOKENS,
  temperature: 0.8, top_p: 0.95, seed: 1000 + i, logprobs: 0, stream: true });

// N streams at once; progress[i] counts tokens received, done[i] once it ended.
function streams(client) {
  const progress = new Array(N).fill(0), done = new Array(N).fill(false);
  const results = Array.from({ length: N }, async (_, i) => {
    try {
      const st = await client.completions.create(params(i));
      let text = "", finish = null;
      const tokens = [], lps = [];
      for await (const ch of st) {
        const c = ch.choices[0];
        if (!c) continue;
        text += c.text;
        if (c.logprobs) {
          tokens.push(...c.logprobs.tokens);
          lps.push(...c.logprobs.token_logprobs);
        }
        progress[i] = tokens.length;
        if (c.finish_reason) finish = c.finish_reason;
      }
      return { text, tokens, lps, finish };
    } catch (e) {
      return { error: String(e?.error?.message ?? e) };
    } finally {
      done[i] = true;
    }
  });
  return { progress, done, results: Promise.all(results) };
}
// Every stream has at least `min` tokens and none has ended.
const midway = (s, min) => s.progress.every((n) => n >= min) && s.done.every((d) => !d);

function same(what, ref, got) {
  got.forEach((g, i) => {
    assert.ok(!g.error, `${what}: stream ${i} failed: ${g.error}`);
    assert.equal(g.finish, ref[i].finish, `${what}: stream ${i} finish_reason`);
    assert.deepEqual(g.tokens, ref[i].tokens, `${what}: stream ${i} tokens`);
    assert.deepEqual(g.lps, ref[i].lps, `${what}: stream ${i} logprobs`);
    assert.equal(g.text, ref[i].text, `${what}: stream ${i} text`);
  });
}
const migrations = async (coord, reason) =>
  metricValue(await metrics(coord.http), "tandem_request_migrations_total", { reason }) || 0;
const coordErrors = async (coord) =>
  metricValue(await metrics(coord.http), "tandem_requests_total", { role: "coordinator", outcome: "error" }) || 0;

// The p-quantile of a histogram from its cumulative buckets (the upper bound of the
// bucket that holds it, as Prometheus' histogram_quantile bounds it).
function quantile(text, name, q) {
  const b = [];
  for (const m of text.matchAll(new RegExp(`^${name}_bucket\\{le="([^"]+)"\\} (\\S+)$`, "gm")))
    b.push([m[1] === "+Inf" ? Infinity : Number(m[1]), Number(m[2])]);
  const total = b.at(-1)?.[1] ?? 0;
  if (!total) return NaN;
  return b.find(([, c]) => c >= q * total)[0];
}

const coord = await coordinator();
const p0 = await worker(coord, "prefill", "prefill-0"), p1 = await worker(coord, "prefill", "prefill-1");
let d0 = await worker(coord, "decode", "decode-0");
const d1 = await worker(coord, "decode", "decode-1", ["--drain-timeout", "0"]);
await ready(coord, ["prefill-0", "prefill-1", "decode-0", "decode-1"]);

let ref;
await check(`undisturbed: ${N} seeded streams of ${TOKENS} tokens on 2 prefill + 2 decode workers`, async () => {
  ref = await streams(coord.client).results;
  ref.forEach((r, i) => {
    assert.ok(!r.error, `stream ${i}: ${r.error}`);
    assert.equal(r.tokens.length, TOKENS, `stream ${i} ended early (${r.finish})`);
  });
  assert.ok((await running(d0)) === 0 && (await running(d1)) === 0);
});

await check("SIGKILL of a decode worker mid-stream: every stream resumed elsewhere, identical", async () => {
  const errorsBefore = await coordErrors(coord), logFrom = coord.err.length;
  const s = streams(coord.client);
  await waitFor("every stream midway, decode-0 holding some", async () => midway(s, 2) && (await running(d0)) > 0,
    120000, 5);
  d0.kill("SIGSTOP"); // frozen: what it holds cannot finish
  await sleep(300);
  const stalled = s.done.filter((d) => !d).length;
  d0.kill("SIGKILL");
  const got = await s.results;
  same("after the SIGKILL", ref, got);
  const moved = await migrations(coord, "failure");
  assert.ok(moved >= 1, "no stream migrated: the kill hit nothing");
  assert.ok(moved <= stalled, `${moved} migrations for ${stalled} unfinished streams`);
  assert.equal(await coordErrors(coord), errorsBefore, "failed requests");
  const log = coord.err.slice(logFrom);
  assert.equal(log.match(/attempt \d+ failed \(decode-0[: ].*migrating \(failure, 1 of at most 3\)/g)?.length, moved, log);
  assert.equal(log.match(/resumed at token \d+ after a gap/g)?.length, moved, log);
  const m = await metrics(coord.http);
  assert.equal(metricValue(m, "tandem_request_resume_gap_seconds_count"), moved);
  assert.equal(metricValue(m, "tandem_router_retries_total", { reason: "replay" }) || 0, 0);
  console.log(`   ${moved} streams migrated off the killed decode-0 (${stalled} unfinished at the kill); ` +
    `resume gap p99 <= ${quantile(m, "tandem_request_resume_gap_seconds", 0.99)} s (300 ms of it frozen)`);
  d0 = await worker(coord, "decode", "decode-0", ["--drain-timeout", "0"]); // back, for the next phases
  await ready(coord, ["decode-0"]);
});

await check("tandemctl drain decode-1 --wait mid-stream: migrated, identical, 0 errors, 0 KV left, exits 0", async () => {
  const errorsBefore = await coordErrors(coord), before = await migrations(coord, "drain");
  const s = streams(coord.client);
  await waitFor("every stream midway, decode-1 holding some", async () => midway(s, 2) && (await running(d1)) > 0,
    120000, 5);
  const p = spawn(tandemctl, ["drain", "decode-1", "--wait", "--coordinator", coord.rpc]);
  let out = "", err = "";
  p.stdout.on("data", (d) => { out += d; });
  p.stderr.on("data", (d) => { err += d; });
  assert.equal(await new Promise((r) => p.on("exit", r)), 0, `tandemctl drain: ${err}`);
  assert.match(out, /^worker decode-1 drained: 0 running, 0 queued, KV 0\/\d+$/m, out);
  const got = await s.results;
  same("after the drain", ref, got);
  const moved = (await migrations(coord, "drain")) - before;
  assert.ok(moved >= 1, "no stream was handed back by the drain");
  assert.equal(await coordErrors(coord), errorsBefore, "failed requests");
  assert.equal(await kvUsed(d1), 0);
  assert.match(d1.err, /drain deadline passed/);
  console.log(`   ${moved} streams handed back by decode-1's drain and resumed on decode-0`);
  d1.kill("SIGTERM");
  assert.equal(await exitOf(d1), 0, "the drained worker's exit status");
});

let d2;
await check("tandemctl cordon decode-0 --migrate mid-stream: its streams move at once, identical", async () => {
  d2 = await worker(coord, "decode", "decode-2");
  await ready(coord, ["decode-2"]);
  const errorsBefore = await coordErrors(coord), before = await migrations(coord, "cordon");
  const s = streams(coord.client);
  await waitFor("every stream midway, decode-0 holding some", async () => midway(s, 2) && (await running(d0)) > 0,
    120000, 5);
  const p = spawn(tandemctl, ["cordon", "decode-0", "--migrate", "--coordinator", coord.rpc]);
  let out = "";
  p.stdout.on("data", (d) => { out += d; });
  assert.equal(await new Promise((r) => p.on("exit", r)), 0);
  assert.match(out, /^worker decode-0 cordoned \(state cordoned\); its streams move to other decode workers$/m);
  const got = await s.results;
  same("after cordon --migrate", ref, got);
  const moved = (await migrations(coord, "cordon")) - before;
  assert.ok(moved >= 1, "no stream moved off the cordoned worker");
  assert.equal(await coordErrors(coord), errorsBefore, "failed requests");
  await kvFreed(d0);
  console.log(`   ${moved} streams moved off decode-0 by cordon --migrate`);
  const u = spawn(tandemctl, ["uncordon", "decode-0", "--coordinator", coord.rpc]);
  assert.equal(await new Promise((r) => u.on("exit", r)), 0);
  await ready(coord, ["decode-0"]);
});

await check("SIGTERM of a prefill worker, a decode worker and the coordinator under load: 0 failed", async () => {
  const s = streams(coord.client);
  await waitFor("a first token", () => s.progress.some((n) => n > 0), 120000, 5);
  p1.kill("SIGTERM"); // prefills in flight finish, the others go to prefill-0
  await waitFor("every stream midway, decode-0 holding some", async () => midway(s, 2) && (await running(d0)) > 0,
    120000, 5);
  d0.kill("SIGTERM"); // --drain-timeout 0: its streams move to decode-2 at once
  coord.kill("SIGTERM"); // stops taking requests, finishes those in flight
  const got = await s.results;
  same("across the SIGTERMs", ref, got);
  for (const [p, name] of [[p1, "prefill-1"], [d0, "decode-0"], [coord, "coordinator"]])
    assert.equal(await exitOf(p), 0, `${name}'s exit status`);
  assert.match(d0.err, /drain deadline passed/);
  for (const w of [p0, d2]) await kvFreed(w);
  assert.match(coord.err, /migrating \(drain/);
  d2.kill("SIGTERM");
  assert.equal(await exitOf(d2), 0);
});

// Freezes worker w once stream s has `min` tokens and w holds it (it cannot finish
// then), and kills it.
async function killMidway(s, w, min) {
  await waitFor(`${w.id} holding the stream`, async () => midway(s, min) && (await running(w)) > 0, 120000, 5);
  w.kill("SIGSTOP");
  w.kill("SIGKILL");
  await w.exited;
}
// The worker of ws (but not ws[skip]) that runs a sequence; its index.
async function holder(ws, skip = -1) {
  let k = -1;
  await waitFor("a worker running the stream", async () => {
    const n = await Promise.all(ws.map((w, i) => (i === skip ? 0 : running(w))));
    return (k = n.findIndex((x) => x > 0)) >= 0;
  }, 120000, 5);
  return k;
}
// One stream, alone: its progress and how it ended.
function one(client, max_tokens) {
  const s = { progress: [0], done: [false] };
  s.result = (async () => {
    try {
      const st = await client.completions.create({ ...params(0), max_tokens });
      for await (const ch of st) s.progress[0] += ch.choices[0]?.logprobs?.tokens.length ?? 0;
      return {};
    } catch (e) {
      return { error: String(e?.error?.message ?? e?.message ?? e) };
    } finally {
      s.done[0] = true;
    }
  })();
  return s;
}

await check("colocated (2 workers with role both): SIGKILL mid-stream, resumed, identical to disaggregated", async () => {
  const c = await coordinator();
  const ws = [await worker(c, "both", "both-a"), await worker(c, "both", "both-b")];
  await ready(c, ["both-a", "both-b"]);
  const s = streams(c.client);
  const victim = ws[0];
  await waitFor("every stream midway, both-a holding some", async () => midway(s, 2) && (await running(victim)) > 0,
    120000, 5);
  victim.kill("SIGSTOP");
  victim.kill("SIGKILL");
  same("colocated, after the SIGKILL", ref, await s.results);
  const moved = await migrations(c, "failure");
  assert.ok(moved >= 1, "no stream migrated");
  await kvFreed(ws[1]);
  console.log(`   ${moved} colocated streams resumed on both-b`);
  for (const p of [ws[1], c]) p.kill("SIGTERM");
  for (const p of [ws[1], c]) assert.equal(await exitOf(p), 0);
});

await check("--migration-limit and --migration-max-tokens: a stream that may not move ends with an explicit error",
  async () => {
    const c = await coordinator(["--migration-limit", "1"]);
    const pa = await worker(c, "prefill", "prefill-a");
    const ws = [await worker(c, "decode", "decode-a"), await worker(c, "decode", "decode-b"),
      await worker(c, "decode", "decode-c")];
    await ready(c, ["prefill-a", "decode-a", "decode-b", "decode-c"]);
    const s = one(c.client, 200);
    await waitFor("the first token", () => s.progress[0] > 0, 120000, 5);
    const first = await holder(ws);
    await killMidway(s, ws[first], 2); // moves (1 of at most 1)
    const after = s.progress[0];
    await waitFor("the stream resumed", () => s.progress[0] > after, 120000, 5);
    const second = await holder(ws, first);
    await killMidway(s, ws[second], after + 1); // may not move again
    assert.match((await s.result).error, /it already moved 1 time, the --migration-limit; the response is incomplete/);
    for (const p of [pa, c, ...ws.filter((_, k) => k !== first && k !== second)]) p.kill("SIGTERM");
    for (const p of [pa, c]) assert.equal(await exitOf(p), 0);

    const c2 = await coordinator(["--migration-max-tokens", "5"]);
    const pb = await worker(c2, "prefill", "prefill-b"), dd = await worker(c2, "decode", "decode-d");
    await ready(c2, ["prefill-b", "decode-d"]);
    const s2 = one(c2.client, 200);
    await killMidway(s2, dd, 2);
    assert.match((await s2.result).error, /more than --migration-max-tokens 5, so it is not migrated/);
    for (const p of [pb, c2]) p.kill("SIGTERM");
    for (const p of [pb, c2]) assert.equal(await exitOf(p), 0);
  });

for (const p of [p0]) p.kill("SIGTERM");
assert.equal(await exitOf(p0), 0);
console.log(`ok migrate: ${checksPassed()} checks (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
process.exit(0);
