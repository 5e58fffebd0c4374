// completion.mjs: a timed, streamed /v1/completions of token ids and seeded token-id
// prompts: what bench/admission.mjs and the tests that time first tokens
// (tests/prefix/admission.mjs, tests/cluster/lease.mjs) send, in one place.

// n-token prompts of ids in [1000, 31000) from a Park-Miller sequence: the same seed
// (a positive integer) gives the same prompts.
export function tokenPrompts(seed) {
  let s = seed;
  return (n) => Array.from({ length: n }, () => 1000 + ((s = (s * 48271) % 2147483647) % 30000));
}

// One streamed completion of maxTokens tokens (temperature 0): its status, the time to the
// answer's head and, accepted, to the first token and whether the stream completed;
// refused, the Retry-After header and the body text. A timeout or a broken connection
// comes back as status "timeout" or "error" with the message in body.
export async function timedCompletion(url, model, prompt, { maxTokens = 2, timeoutMs = 120000 } = {}) {
  const t0 = performance.now();
  try {
    const res = await fetch(`${url}/v1/completions`, {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ model, prompt, max_tokens: maxTokens, temperature: 0, stream: true }),
      signal: AbortSignal.timeout(timeoutMs) });
    const head = performance.now() - t0;
    if (res.status !== 200)
      return { status: res.status, head, retryAfter: res.headers.get("retry-after"), body: await res.text() };
    const reader = res.body.getReader();
    let text = "", ttft = NaN;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
      if (Number.isNaN(ttft) && text.includes('"text"')) ttft = performance.now() - t0;
    }
    return { status: 200, head, ttft, complete: text.includes("[DONE]"), body: text };
  } catch (e) {
    return { status: e.name === "TimeoutError" ? "timeout" : "error", head: performance.now() - t0, body: e.message };
  }
}
