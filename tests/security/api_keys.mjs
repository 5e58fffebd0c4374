// api_keys.mjs: `tandem coordinator --api-key-file` with the official OpenAI client
// (tests/node_modules/openai) against a real colocated cluster (coordinator + one
// worker on the fixture model): the right key works (models, a completion, a
// stream), a wrong key and a missing key get 401 with OpenAI's error body, the
// probes and /metrics stay open, SIGHUP reloads the file (the old key is refused,
// the new one works), no key ever shows up in the logs, and with --auth-probes
// the probes and /metrics need a key too.
// Usage: node api_keys.mjs TANDEM MODEL_DIR
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, basename } from "node:path";
import OpenAI from "openai";
import { start, startCoordinator, waitFor, get, check, checksPassed } from "../deploy/lib.mjs";

const [tandem, modelDir] = process.argv.slice(2);
const model = basename(modelDir.replace(/\/+$/, ""));
const tmp = mkdtempSync(join(tmpdir(), "tandem-keys-"));
process.on("exit", () => rmSync(tmp, { recursive: true, force: true }));
const keyFile = join(tmp, "keys");
const KEY1 = "sk-tandem-test-" + Math.random().toString(36).slice(2);
const KEY2 = "sk-tandem-next-" + Math.random().toString(36).slice(2);
writeFileSync(keyFile, `# test keys\n${KEY1}\n`);

const coord = await startCoordinator(tandem, ["--model", modelDir, "--colocated", "--heartbeat-ms", "200",
  "--api-key-file", keyFile]);
const addr = coord.http;
const worker = start(tandem, ["worker", "--role", "both", "--id", "both-0", "--model", modelDir, "--threads", "1",
  "--kv-blocks", "256", "--coordinator", coord.rpc], "worker");

const client = (apiKey) => new OpenAI({ baseURL: `http://${addr}/v1`, apiKey, maxRetries: 0, timeout: 60000 });

async function expect401(promise) {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof OpenAI.APIError, `expected APIError, got ${e}`);
    assert.equal(e.status, 401);
    assert.equal(e.code, "invalid_api_key");
    assert.equal(e.type, "invalid_request_error");
    return;
  }
  assert.fail("expected HTTP 401");
}

await check("probes and /metrics are open without a key; the cluster gets ready", async () => {
  await waitFor("/livez", async () => (await get(addr, "/livez")).status === 200);
  await waitFor("/readyz", async () => (await get(addr, "/readyz")).status === 200, 120000);
  assert.equal((await get(addr, "/health")).status, 200);
  assert.equal((await get(addr, "/metrics")).status, 200);
});

await check("the right key: models, a completion and a stream", async () => {
  const c = client(KEY1);
  const list = await c.models.list();
  assert.deepEqual(list.data.map((m) => m.id), [model]);
  const r = await c.completions.create({ model, prompt: "The weather in", max_tokens: 4, temperature: 0 });
  assert.equal(r.usage.completion_tokens, 4);
  const s = await c.chat.completions.create({ model, messages: [{ role: "user", content: "hi" }], max_tokens: 3,
    stream: true });
  let chunks = 0;
  for await (const ch of s) chunks += ch.choices.length;
  assert.ok(chunks >= 3, `${chunks} stream chunks`);
});

await check("a wrong key gets 401 with OpenAI's error body", async () => {
  await expect401(client("sk-wrong").models.list());
  await expect401(client(KEY1 + "x").completions.create({ model, prompt: "x", max_tokens: 1 }));
  await expect401(client("sk-wrong").chat.completions.create({ model, messages: [{ role: "user", content: "x" }] }));
});

await check("a missing key gets 401 too", async () => {
  const r = await fetch(`http://${addr}/v1/chat/completions`, { method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ model, messages: [{ role: "user", content: "x" }] }) });
  assert.equal(r.status, 401);
  assert.equal(r.headers.get("www-authenticate"), "Bearer");
  const body = await r.json();
  assert.equal(body.error.code, "invalid_api_key");
  assert.match(body.error.message, /didn't provide an API key/);
  assert.equal((await fetch(`http://${addr}/v1/models`)).status, 401);
});

await check("SIGHUP reloads the key file: the old key is refused, the new one works", async () => {
  writeFileSync(keyFile, `${KEY2}\n`);
  coord.kill("SIGHUP");
  await waitFor("the reload", () => /SIGHUP: 1 API keys loaded/.test(coord.err), 10000);
  await expect401(client(KEY1).models.list());
  assert.equal((await client(KEY2).models.list()).data.length, 1);
  // a file with no key keeps the keys in place
  writeFileSync(keyFile, "\n");
  coord.kill("SIGHUP");
  await waitFor("the refused reload", () => /keys not reloaded/.test(coord.err), 10000);
  assert.equal((await client(KEY2).models.list()).data.length, 1);
});

await check("no key is ever logged", async () => {
  for (const text of [coord.out, coord.err, worker.out, worker.err]) {
    assert.ok(!text.includes(KEY1) && !text.includes(KEY2), "a key appears in a log");
  }
  assert.match(coord.err, /refused 401/);
});

coord.kill("SIGTERM");
worker.kill("SIGTERM");
const [c, w] = await Promise.all([coord.exited, worker.exited]);
assert.equal(c.code, 0, "coordinator exit");

await check("--auth-probes: the probes and /metrics need the key too", async () => {
  writeFileSync(keyFile, `${KEY1}\n`);
  const p = await startCoordinator(tandem, ["--model", modelDir, "--api-key-file", keyFile, "--auth-probes"],
    "coordinator-2");
  const a = p.http;
  for (const path of ["/livez", "/readyz", "/health", "/metrics"]) {
    assert.equal((await get(a, path)).status, 401, path);
    const r = await fetch(`http://${a}${path}`, { headers: { Authorization: `Bearer ${KEY1}` } });
    assert.notEqual(r.status, 401, `${path} with the key`);
  }
  p.kill("SIGTERM");
  assert.equal((await p.exited).code, 0);
});
console.log(`api_keys: ${checksPassed()} checks passed (worker exit ${w.code ?? w.signal})`);
