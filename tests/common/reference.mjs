// reference.mjs: what a request must produce, from single-process `tandem generate`
// (the cluster and EP tests compare every served token and logprob with it).
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";

const execFileAsync = promisify(execFile);

// Returns generate(prompt, maxTokens, samp) -> the --json output of `tandem generate`
// (prompt_tokens, tokens, logprobs, ...), cached per (prompt, maxTokens, sampling).
// Asynchronous on purpose: a synchronous spawn blocked the event loop for seconds, and
// the HTTP client then reused keep-alive connections the coordinator had closed as idle
// meanwhile ("Connection error.", "socket hang up").
export function referenceGenerator(tandem, modelDir, extra = []) {
  const cache = new Map();
  return async function generate(prompt, maxTokens, samp) {
    const key = JSON.stringify([prompt, maxTokens, samp]);
    if (!cache.has(key)) {
      const args = ["generate", "--model", modelDir, "--raw", "--prompt", prompt, "--max-tokens", String(maxTokens),
        "--json", "--threads", "1", "--temperature", String(samp.temperature), ...extra];
      if (samp.top_k !== undefined) args.push("--top-k", String(samp.top_k));
      if (samp.top_p !== undefined) args.push("--top-p", String(samp.top_p));
      if (samp.seed !== undefined) args.push("--seed", String(samp.seed));
      cache.set(key, execFileAsync(tandem, args, { encoding: "utf8", maxBuffer: 1 << 26 }).then((r) => JSON.parse(r.stdout)));
    }
    return cache.get(key);
  };
}

export const GREEDY = { temperature: 0 };
export const SEEDED = { temperature: 0.8, top_k: 40, top_p: 0.95, seed: 1234 };

const words = "the quick brown fox jumps over a lazy dog while seven cats sing about distributed inference".split(" ");
// A prompt of n words, different for each salt.
export const promptOf = (n, salt = 0) => Array.from({ length: n }, (_, i) => words[(i * 7 + salt) % words.length]).join(" ");

// The completion request for a reference: its token-id prompt and the same sampling, explicitly.
export function referenceRequest(model, ref, maxTokens, samp) {
  const p = { model, prompt: ref.prompt_tokens, max_tokens: maxTokens, temperature: samp.temperature,
    logprobs: 0, top_p: samp.top_p ?? 1, top_k: samp.top_k ?? 0, min_p: 0 };
  if (samp.seed !== undefined) p.seed = samp.seed;
  return p;
}

// Bit for bit: both sides print float32 logprobs, so compare them as float32.
export function sameTokens(what, ref, text, logprobs, finish) {
  assert.equal(text, ref.text, `${what}: text`);
  assert.equal(logprobs.length, ref.tokens.length, `${what}: token count`);
  for (let i = 0; i < logprobs.length; i++)
    assert.equal(Math.fround(logprobs[i]), Math.fround(ref.logprobs[i].logprob), `${what}: logprob ${i}`);
  assert.equal(finish, ref.finish_reason, `${what}: finish_reason`);
}

// A streamed completion: its text, every token's logprob and the finish reason;
// onChunk(chunk) sees each chunk as it arrives.
export async function streamCompletion(client, params, onChunk) {
  const stream = await client.completions.create({ ...params, stream: true });
  let text = "", finish = null;
  const lps = [];
  for await (const ch of stream) {
    const c = ch.choices[0];
    if (!c) continue;
    text += c.text;
    if (c.logprobs) lps.push(...c.logprobs.token_logprobs);
    if (c.finish_reason) finish = c.finish_reason;
    if (onChunk) onChunk(ch);
  }
  return { text, lps, finish };
}
