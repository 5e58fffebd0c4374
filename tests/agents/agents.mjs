// agents.mjs: agent clients against a real cluster serving the scripted checkpoint.
//
// usage: node agents.mjs TANDEM MODEL_DIR SCRIPTS_JSON
//
// `tandem serve` (a coordinator, one prefill and one decode worker, each its own process
// on 127.0.0.1, OS-chosen ports) serves the checkpoint written by make_scripted_model.py,
// whose output after the generation prompt is the exact text of one of scripts.json's
// scripts (the user's message and the prompt's markers choose which). The official
// `openai` npm client then talks to it as these clients do (issue 16's acceptance):
//   1. Qwen-Agent's default protocol: no `tools`, the tool prompt in the system message,
//      streamed, with a seed; the <tool_call> block must arrive in `content` byte for
//      byte (reasoning apart), and the second request (the call sent back as assistant
//      text with its reasoning_content, the result as a user <tool_response>) is answered;
//   2. Qwen-Agent's use_raw_api: `tools` sent, the call read from delta.tool_calls
//      accumulated by id, then sent back as an assistant message with tool_calls and no
//      content, the result as a tool message with `id` (not tool_call_id); answered;
//   3. an OpenAI-style tool client, thinking on and off, plain and streamed: exactly one
//      get_weather call with the right arguments and finish_reason "tool_calls";
//      reasoning before the call lands in reasoning_content; a call written with thinking
//      on but no <think> is a call;
//   4. two calls in one answer, malformed JSON in a call (content), a call inside an
//      unfinished <think> (reasoning), and without tools the calls stay content.
// Sampling is the checkpoint's generation_config (temperature 0.6, top_k 20, top_p 0.95):
// the scripts must come out exactly under the sampling a client gets by default.
// Every process started here is killed when the script exits, whatever happens.
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import assert from "node:assert/strict";
import OpenAI from "openai";

const [tandem, modelDir, scriptsPath] = process.argv.slice(2);
const scripts = Object.fromEntries(JSON.parse(readFileSync(scriptsPath, "utf8")).scripts.map((s) => [s.name, s.text]));
const procs = [];
process.on("exit", () => {
  for (const p of procs) {
    try { process.kill(-p.pid, "SIGKILL"); } catch {}
  }
});
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => process.exit(1));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let checks = 0;
const check = async (name, fn) => {
  await fn();
  checks++;
  console.log(`ok ${name}`);
};

// ------------------------------------------------------------------ the cluster

const serve = spawn(tandem, ["serve", "--model", modelDir, "--port", "0", "--rpc-port", "0", "--prefill-workers", "1",
  "--decode-workers", "1", "--threads-per-worker", "1", "--kv-blocks", "256", "--heartbeat-ms", "200"],
  { stdio: ["ignore", "pipe", "pipe"], detached: true });
procs.push(serve);
let serveOut = "", serveErr = "";
serve.stdout.setEncoding("utf8");
serve.stdout.on("data", (d) => { serveOut += d; });
serve.stderr.setEncoding("utf8");
serve.stderr.on("data", (d) => { serveErr += d; });
const up = /tandem: serving .* at (\S+)\/v1 /;
for (const deadline = Date.now() + 120000; !up.test(serveOut);) {
  if (serve.exitCode !== null || Date.now() > deadline) {
    console.error(serveErr);
    assert.fail(`tandem serve did not come up: ${serveOut}`);
  }
  await sleep(50);
}
const baseUrl = up.exec(serveOut)[1];
const client = new OpenAI({ baseURL: `${baseUrl}/v1`, apiKey: "EMPTY", maxRetries: 0, timeout: 120000 });
const model = modelDir.replace(/\/+$/, "").split("/").pop();

// ------------------------------------------------------------------ helpers

const getWeather = {
  name: "get_weather",
  description: "Get the current weather in a city",
  parameters: { type: "object", properties: { location: { type: "string", description: "The city name" } },
    required: ["location"] },
};
const tools = [{ type: "function", function: getWeather }];
// User messages never hold the token "Paris" without a space before it (a marker: the
// model writes it in its first call); " Paris" is another token.
const question = "What is the weather in Paris?";
const noThink = { chat_template_kwargs: { enable_thinking: false } };

// A script's text split as the API splits it: the <think> block, and what follows it.
function splitThink(text) {
  const m = /^<think>\n([\s\S]*?)\n<\/think>\n\n([\s\S]*)$/.exec(text);
  return m ? { reasoning: m[1], content: m[2] } : { reasoning: null, content: text };
}
// JSON as Python's json.dumps writes it (", " and ": "), which is how Qwen-Agent writes
// the tool signatures and re-serialises calls.
function pyJson(v) {
  if (Array.isArray(v)) return `[${v.map(pyJson).join(", ")}]`;
  if (v && typeof v === "object") return `{${Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}: ${pyJson(x)}`).join(", ")}}`;
  return JSON.stringify(v);
}

// A streamed chat completion as a client accumulates it; kinds lists the order of the
// parts (reasoning, content, tool_calls) chunk by chunk.
async function stream(params) {
  const s = await client.chat.completions.create({ ...params, stream: true });
  const out = { reasoning: "", content: "", calls: [], finish: null, kinds: [] };
  for await (const ch of s) {
    const c = ch.choices[0];
    if (!c) continue;
    const d = c.delta;
    if (d.reasoning_content) { out.reasoning += d.reasoning_content; out.kinds.push("reasoning"); }
    if (d.content) { out.content += d.content; out.kinds.push("content"); }
    for (const tc of d.tool_calls ?? []) {
      out.kinds.push("tool_calls");
      assert.equal(tc.type, "function");
      // As Qwen-Agent accumulates them: a delta without an id, or with the last one's,
      // continues the last call; a new id starts a call.
      const last = out.calls[out.calls.length - 1];
      if (last && (!tc.id || tc.id === last.id)) {
        assert.equal(tc.index, last.index, "one call keeps its index");
        last.name += tc.function?.name ?? "";
        last.arguments += tc.function?.arguments ?? "";
      } else {
        assert.equal(tc.index, out.calls.length, "calls are indexed 0, 1, ... in order");
        out.calls.push({ id: tc.id, index: tc.index, name: tc.function?.name ?? "", arguments: tc.function?.arguments ?? "" });
      }
    }
    if (c.finish_reason) out.finish = c.finish_reason;
  }
  const rank = { reasoning: 0, content: 1, tool_calls: 2 };
  for (let i = 1; i < out.kinds.length; i++)
    assert.ok(rank[out.kinds[i - 1]] <= rank[out.kinds[i]], `reasoning, then content, then calls: ${out.kinds}`);
  return out;
}

async function plain(params) {
  const r = await client.chat.completions.create(params);
  const m = r.choices[0].message;
  return {
    reasoning: m.reasoning_content ?? "", content: m.content ?? "", finish: r.choices[0].finish_reason,
    calls: (m.tool_calls ?? []).map((c) => ({ id: c.id, name: c.function.name, arguments: c.function.arguments })),
  };
}

function assertCalls(got, locations, what) {
  assert.equal(got.calls.length, locations.length, `${what}: ${JSON.stringify(got)}`);
  got.calls.forEach((c, i) => {
    assert.equal(c.name, "get_weather", what);
    assert.deepEqual(JSON.parse(c.arguments), { location: locations[i] }, what);
    assert.match(c.id, /^call_/, what);
  });
  assert.equal(new Set(got.calls.map((c) => c.id)).size, got.calls.length, `${what}: distinct ids`);
  assert.equal(got.finish, "tool_calls", what);
}

// Plain and streamed; max_tokens bounds a wrong script (it would end with "length").
const both = async (params, fn) => {
  params = { max_tokens: 300, ...params };
  fn(await plain(params), "plain");
  fn(await stream(params), "streamed");
};

// ------------------------------------------------------------------ 1. Qwen-Agent, default protocol

await check("Qwen-Agent default protocol: the <tool_call> block in content, the tool result answered", async () => {
  // Qwen-Agent's nous prompt: the function signatures and the call format in the system
  // message (the same wording as Qwen3's own template uses for `tools`); no `tools`.
  const system = "You are a helpful assistant.\n\n# Tools\n\nYou may call one or more functions to assist with the " +
    "user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n" +
    pyJson({ type: "function", function: getWeather }) + "\n</tools>\n\nFor each function call, return a " +
    "json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n" +
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>';
  const messages = [{ role: "system", content: system }, { role: "user", content: question }];
  const first = await stream({ model, messages, seed: 1234 });
  const want = splitThink(scripts.think_then_call);
  assert.equal(first.content, want.content, "the block in content, byte for byte");
  assert.equal(first.reasoning, want.reasoning);
  assert.equal(first.calls.length, 0, "no tools offered: no tool_calls");
  assert.equal(first.finish, "stop");

  // Qwen-Agent parses the block itself, calls the tool, and sends the call back as the
  // assistant's text (re-serialised by json.dumps) with its reasoning_content, and the
  // result as a user message holding <tool_response>.
  const body = /<tool_call>\n([\s\S]*?)\n<\/tool_call>/.exec(first.content)[1];
  const fn = JSON.parse(body);
  assert.deepEqual(fn, { name: "get_weather", arguments: { location: "Paris" } });
  const resent = `<tool_call>\n${pyJson(fn)}\n</tool_call>`;
  messages.push({ role: "assistant", content: resent, reasoning_content: first.reasoning },
    { role: "user", content: '<tool_response>\n{"temperature": 22, "sky": "sunny"}\n</tool_response>' });
  const second = await stream({ model, messages, seed: 99 });
  const answer = splitThink(scripts.answer);
  assert.equal(second.content, answer.content);
  assert.equal(second.reasoning, answer.reasoning);
  assert.equal(second.finish, "stop");
});

// ------------------------------------------------------------------ 2. Qwen-Agent, use_raw_api

await check("Qwen-Agent use_raw_api: the call in tool_calls, sent back with id and no content, answered", async () => {
  const messages = [{ role: "system", content: "You are a helpful assistant." }, { role: "user", content: question }];
  const first = await stream({ model, messages, tools, seed: 7 });
  assertCalls(first, ["Paris"], "raw api");
  assert.equal(first.reasoning, splitThink(scripts.think_then_call).reasoning);
  assert.equal(first.content, "");
  const c = first.calls[0];
  messages.push({ role: "assistant", reasoning_content: first.reasoning,
    tool_calls: [{ id: c.id, type: "function", function: { name: c.name, arguments: c.arguments } }] },
  { role: "tool", content: '{"temperature": 22, "sky": "sunny"}', name: c.name, id: c.id, extra: { function_id: c.id } });
  const second = await stream({ model, messages, tools, seed: 8 });
  assert.equal(second.content, splitThink(scripts.answer).content);
  assert.equal(second.calls.length, 0);
  assert.equal(second.finish, "stop");
});

// ------------------------------------------------------------------ 3. OpenAI-style tool client

await check("openai client, tools, thinking on: one call, reasoning before it in reasoning_content", async () => {
  await both({ model, messages: [{ role: "user", content: question }], tools }, (got, how) => {
    assertCalls(got, ["Paris"], `thinking on, ${how}`);
    assert.equal(got.reasoning, splitThink(scripts.think_then_call).reasoning, how);
    assert.equal(got.content, "", how);
  });
});

await check("openai client, tools, thinking off: one call, no reasoning", async () => {
  await both({ model, messages: [{ role: "user", content: question }], tools, ...noThink }, (got, how) => {
    assertCalls(got, ["Paris"], `thinking off, ${how}`);
    assert.equal(got.reasoning, "", how);
    assert.equal(got.content, "", how);
  });
});

await check("openai client, tools, thinking on but no <think> written: the call is a call", async () => {
  await both({ model, messages: [{ role: "user", content: "Weather in Paris, directly please." }], tools },
    (got, how) => {
      assertCalls(got, ["Paris"], `no think, ${how}`);
      assert.equal(got.reasoning, "", how);
    });
});

// ------------------------------------------------------------------ 4. the other shapes

await check("two calls in one answer: two tool_calls, indexed and in order", async () => {
  await both({ model, messages: [{ role: "user", content: "Weather for Paris and London, twice." }], tools }, (got, how) => {
    assertCalls(got, ["Paris", "London"], `two calls, ${how}`);
    assert.equal(got.content, "", how);
  });
});

await check("malformed JSON inside <tool_call> stays content", async () => {
  await both({ model, messages: [{ role: "user", content: "Weather please, broken." }], tools }, (got, how) => {
    assert.equal(got.calls.length, 0, how);
    assert.equal(got.content, scripts.malformed_call, how);
    assert.equal(got.finish, "stop", how);
  });
});

await check("a call inside an unfinished <think> stays reasoning", async () => {
  await both({ model, messages: [{ role: "user", content: "I am hesitant: weather in Paris?" }], tools }, (got, how) => {
    assert.equal(got.calls.length, 0, how);
    assert.equal(got.reasoning, scripts.call_in_unfinished_think.replace(/^<think>\n/, ""), how);
    assert.equal(got.content, "", how);
    assert.equal(got.finish, "stop", how);
  });
});

await check("without tools (or tool_choice none) calls stay content byte for byte", async () => {
  const messages = [{ role: "user", content: "Weather for Paris and London, twice." }];
  for (const extra of [{}, { tools, tool_choice: "none" }]) {
    await both({ model, messages, ...extra }, (got, how) => {
      assert.equal(got.calls.length, 0, how);
      assert.equal(got.content, scripts.two_calls, how);
      assert.equal(got.finish, "stop", how);
    });
  }
});

console.log(`agents: ${checks} checks passed`);
process.exit(0);
