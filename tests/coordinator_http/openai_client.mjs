// openai_client.mjs: the official OpenAI npm client (tests/node_modules/openai)
// against the coordinator's HTTP layer (http_test_server: the real server with a
// scripted frontend). Checks that what we send parses the way OpenAI's own client
// expects: chat and text completions, streaming and not, usage in streams,
// reasoning_content and tool calls, logprobs, errors as APIError with status and
// body, an error event mid-stream, the model list, and /metrics after all that
// traffic through `promtool check metrics`.
// Usage: node openai_client.mjs PATH/TO/http_test_server
import { spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import assert from "node:assert/strict";
import OpenAI from "openai";

async function startServer(args) {
  const proc = spawn(process.argv[2], args, { stdio: ["pipe", "pipe", "inherit"] });
  process.on("exit", () => { try { proc.kill("SIGKILL"); } catch {} });
  let out = "";
  proc.stdout.setEncoding("utf8");
  while (!/PORT \d+\n/.test(out)) {
    const [chunk] = await once(proc.stdout, "data");
    out += chunk;
  }
  const port = Number(/PORT (\d+)/.exec(out)[1]);
  const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: "unused", maxRetries: 0 });
  const stop = async () => {
    proc.stdin.end();
    const [code] = await once(proc, "exit");
    assert.equal(code, 0, "server exit status");
  };
  return { port, client, stop };
}

let { port, client, stop } = await startServer([]);
const user = (content) => [{ role: "user", content }];

async function expectError(promise, status, match) {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof OpenAI.APIError, `expected APIError, got ${e}`);
    assert.equal(e.status, status);
    assert.match(e.message, match);
    return e;
  }
  assert.fail(`expected HTTP ${status}`);
}

let checks = 0;
const check = async (name, fn) => { await fn(); checks++; console.log(`ok ${name}`); };

await check("models", async () => {
  const list = await client.models.list();
  assert.deepEqual(list.data.map((m) => m.id), ["qwen3-test"]);
  const m = await client.models.retrieve("qwen3-test");
  assert.equal(m.id, "qwen3-test");
  await expectError(client.models.retrieve("gpt-4"), 404, /gpt-4/);
});

await check("chat", async () => {
  const r = await client.chat.completions.create({ model: "qwen3-test", messages: user("hi"), max_tokens: 3, logprobs: true, top_logprobs: 1 });
  assert.equal(r.object, "chat.completion");
  assert.match(r.id, /^chatcmpl-/);
  assert.equal(r.choices[0].message.content, "w0 w1 w2");
  assert.equal(r.choices[0].finish_reason, "length");
  assert.equal(r.choices[0].logprobs.content.length, 3);
  assert.equal(r.choices[0].logprobs.content[1].token, " w1");
  assert.equal(r.choices[0].logprobs.content[1].logprob, -0.5);
  assert.deepEqual(r.choices[0].logprobs.content[0].bytes, [119, 48]);
  assert.deepEqual(r.usage, { prompt_tokens: 3, completion_tokens: 3, total_tokens: 6 });
});

await check("chat stream with usage", async () => {
  const stream = await client.chat.completions.create({
    model: "qwen3-test", messages: user("hi"), max_tokens: 4, stream: true, stream_options: { include_usage: true },
  });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  for (const chunk of chunks) assert.equal(chunk.object, "chat.completion.chunk");
  // stream_options.include_usage (OpenAI's API reference): one more chunk before [DONE]
  // carries the usage and an empty choices array; every other chunk has usage null.
  const usage = chunks.at(-1).usage;
  assert.deepEqual(chunks.at(-1).choices, []);
  assert.deepEqual(usage, { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 });
  const body = chunks.slice(0, -1);
  for (const chunk of body) assert.equal(chunk.usage, null);
  // Before it: the role first, the text token by token, and the finish_reason last.
  assert.equal(body[0].choices[0].delta.role, "assistant");
  const texts = body.map((c) => c.choices[0].delta.content).filter((t) => t);
  assert.deepEqual(texts, ["w0", " w1", " w2", " w3"]);
  assert.deepEqual(body.map((c) => c.choices[0].finish_reason).filter((f) => f), ["length"]);
  assert.equal(body.at(-1).choices[0].finish_reason, "length");
});

await check("chat stream helper (finalChatCompletion)", async () => {
  const runner = client.beta.chat.completions.stream({ model: "qwen3-test", messages: user("hi"), max_tokens: 2 });
  const final = await runner.finalChatCompletion();
  assert.equal(final.choices[0].message.content, "w0 w1");
});

await check("tools", async () => {
  const tools = [{ type: "function", function: { name: "get_weather", parameters: { type: "object" } } }];
  const r = await client.chat.completions.create({ model: "qwen3-test", messages: user("tool"), tools });
  const m = r.choices[0].message;
  assert.equal(m.content, null);
  assert.equal(m.reasoning_content, "let me think");
  assert.equal(m.tool_calls[0].function.name, "get_weather");
  assert.deepEqual(JSON.parse(m.tool_calls[0].function.arguments), { city: "Paris" });
  assert.equal(r.choices[0].finish_reason, "tool_calls");

  const stream = await client.chat.completions.create({ model: "qwen3-test", messages: user("tool"), tools, stream: true });
  const calls = [];
  let reasoning = "", finish = null;
  for await (const chunk of stream) {
    for (const c of chunk.choices) {
      if (c.delta.reasoning_content) reasoning += c.delta.reasoning_content;
      for (const t of c.delta.tool_calls ?? []) calls[t.index] = t;
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.equal(reasoning, "let me think");
  assert.equal(calls[0].function.name, "get_weather");
  assert.equal(finish, "tool_calls");

  // The client's own stream accumulator puts the tool call together too.
  const runner = client.beta.chat.completions.stream({ model: "qwen3-test", messages: user("tool"), tools });
  const final = await runner.finalChatCompletion();
  assert.equal(final.choices[0].message.tool_calls[0].function.name, "get_weather");
});

await check("completions", async () => {
  const r = await client.completions.create({ model: "qwen3-test", prompt: "x", max_tokens: 2, logprobs: 1 });
  assert.equal(r.object, "text_completion");
  assert.equal(r.choices[0].text, "w0 w1");
  assert.deepEqual(r.choices[0].logprobs.tokens, ["w0", " w1"]);
  assert.deepEqual(r.choices[0].logprobs.text_offset, [0, 2]);
  const stream = await client.completions.create({ model: "qwen3-test", prompt: [1, 2, 3], max_tokens: 3, stream: true });
  let text = "", finish = null;
  for await (const chunk of stream) {
    text += chunk.choices[0].text;
    if (chunk.choices[0].finish_reason) finish = chunk.choices[0].finish_reason;
  }
  assert.equal(text, "w0 w1 w2");
  assert.equal(finish, "length");
});

await check("errors", async () => {
  let e = await expectError(client.chat.completions.create({ model: "nope", messages: user("hi") }), 404, /nope/);
  assert.equal(e.code, "model_not_found");
  assert.equal(e.param, "model");
  e = await expectError(client.chat.completions.create({ model: "qwen3-test", messages: user("hi"), max_tokens: -1 }), 400, /max_tokens/);
  assert.equal(e.type, "invalid_request_error");
  await expectError(client.chat.completions.create({ model: "qwen3-test", messages: [] }), 400, /messages/);
  await expectError(client.chat.completions.create({ model: "qwen3-test", messages: user("hi"), n: 2 }), 400, /n = 1/);
  await expectError(client.chat.completions.create({ model: "qwen3-test", messages: user("hi"), tool_choice: "required",
    tools: [{ type: "function", function: { name: "f" } }] }), 400, /tool_choice/);
  await expectError(client.chat.completions.create({ model: "qwen3-test", messages: user("reject") }), 503, /no decode worker/);
  // A failure after the stream started arrives as an error the client throws.
  const stream = await client.chat.completions.create({ model: "qwen3-test", messages: user("fail"), stream: true });
  await assert.rejects(async () => { for await (const _ of stream); }, /decode worker w1 died/);
});

await check("still serving", async () => {
  const r = await client.completions.create({ model: "qwen3-test", prompt: "x", max_tokens: 1 });
  assert.equal(r.choices[0].text, "w0");
});

await check("metrics after traffic pass promtool", async () => {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type"), /^text\/plain; version=0\.0\.4/);
  const text = await res.text();
  assert.match(text, /tandem_requests_total\{role="coordinator",worker="",outcome="success"\} \d+/);
  assert.match(text, /tandem_time_to_first_token_seconds_count\{role="coordinator",worker=""\} \d+/);
  const lint = spawnSync("promtool", ["check", "metrics"], { input: text, encoding: "utf8" });
  assert.equal(lint.status, 0, `promtool: ${lint.stdout}${lint.stderr}`);
});

await stop();

// ---- HTTP + chat pipeline: the real Qwen3 tokenizer and template, scripted outputs ----
if (process.argv[3]) {
  ({ port, client, stop } = await startServer(["--model", process.argv[3]]));
  const script = (text) => user(`Please answer. SCRIPT[${text}]SCRIPT`);
  const weather = [{ type: "function", function: { name: "get_weather", description: "Weather in a city",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } } }];

  await check("pipeline: reasoning and content", async () => {
    const r = await client.chat.completions.create({ model: "qwen3-test",
      messages: script("<think>\nI should greet.\n</think>\n\nHello there!") });
    const m = r.choices[0].message;
    assert.equal(m.reasoning_content, "I should greet.");
    assert.equal(m.content, "Hello there!");
    assert.equal(r.choices[0].finish_reason, "stop");
    assert.ok(r.usage.prompt_tokens > 10);
    assert.ok(r.usage.completion_tokens >= 8);
  });

  await check("pipeline: streamed deltas add up", async () => {
    const text = "<think>\nLet me see: 2+2.\n</think>\n\nIt is 4 \u2014 h\u00e9llo \u4e16\u754c \ud83d\ude42";
    const stream = await client.chat.completions.create({ model: "qwen3-test", messages: script(text), stream: true,
      stream_options: { include_usage: true } });
    let reasoning = "", content = "", finish = null, usage = null;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        reasoning += c.delta.reasoning_content ?? "";
        content += c.delta.content ?? "";
        if (c.finish_reason) finish = c.finish_reason;
      }
    }
    assert.equal(reasoning, "Let me see: 2+2.");
    assert.equal(content, "It is 4 \u2014 h\u00e9llo \u4e16\u754c \ud83d\ude42");
    assert.equal(finish, "stop");
    assert.ok(usage.completion_tokens > 10);
  });

  await check("pipeline: tool calls", async () => {
    const out = "<think>\nNeed the weather.\n</think>\n\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
    const r = await client.chat.completions.create({ model: "qwen3-test", messages: script(out), tools: weather });
    const m = r.choices[0].message;
    assert.equal(r.choices[0].finish_reason, "tool_calls");
    assert.equal(m.reasoning_content, "Need the weather.");
    assert.equal(m.tool_calls.length, 1);
    assert.equal(m.tool_calls[0].type, "function");
    assert.equal(m.tool_calls[0].function.name, "get_weather");
    assert.deepEqual(JSON.parse(m.tool_calls[0].function.arguments), { city: "Paris" });
    const runner = client.beta.chat.completions.stream({ model: "qwen3-test", messages: script(out), tools: weather });
    const final = await runner.finalChatCompletion();
    assert.deepEqual(JSON.parse(final.choices[0].message.tool_calls[0].function.arguments), { city: "Paris" });
    assert.equal(final.choices[0].finish_reason, "tool_calls");
  });

  await check("pipeline: thinking off, stop strings, max_tokens", async () => {
    let r = await client.chat.completions.create({ model: "qwen3-test", messages: script("Just the answer."),
      chat_template_kwargs: { enable_thinking: false } });
    assert.equal(r.choices[0].message.content, "Just the answer.");
    assert.equal(r.choices[0].message.reasoning_content, null);
    r = await client.chat.completions.create({ model: "qwen3-test", messages: script("one two three"),
      chat_template_kwargs: { enable_thinking: false }, stop: ["two"] });
    assert.equal(r.choices[0].message.content, "one ");
    assert.equal(r.choices[0].finish_reason, "stop");
    const stream = await client.chat.completions.create({ model: "qwen3-test", messages: script("alpha beta gamma delta"),
      chat_template_kwargs: { enable_thinking: false }, stop: "a d", stream: true });
    let content = "";
    for await (const chunk of stream) content += chunk.choices[0]?.delta?.content ?? "";
    assert.equal(content, "alpha beta gamm");
    r = await client.chat.completions.create({ model: "qwen3-test", messages: script("one two three four"),
      chat_template_kwargs: { enable_thinking: false }, max_tokens: 2 });
    assert.equal(r.choices[0].finish_reason, "length");
    assert.equal(r.usage.completion_tokens, 2);
  });

  await check("pipeline: completions with logprobs", async () => {
    const r = await client.completions.create({ model: "qwen3-test", prompt: "SCRIPT[abc def]SCRIPT", logprobs: 2 });
    const c = r.choices[0];
    assert.equal(c.text, "abc def");
    assert.equal(c.logprobs.tokens.slice(0, -1).join(""), "abc def"); // the last one is EOS
    assert.equal(c.logprobs.token_logprobs[0], -0.25);
    assert.equal(Object.keys(c.logprobs.top_logprobs[0]).length, 2);
    assert.equal(c.logprobs.text_offset[1], c.logprobs.tokens[0].length);
    await expectError(client.completions.create({ model: "qwen3-test", prompt: "x ".repeat(5000) }), 400,
      /maximum context length is 4096/);
    await expectError(client.completions.create({ model: "qwen3-test", prompt: [1, 99999999] }), 400, /token id/);
  });
  await stop();
}
console.log(`openai client: ${checks} checks passed`);
