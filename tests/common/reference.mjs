// reference.mjs: what a request must produce, from single-process `tandem generate`
// (the cluster and EP tests compare every served token and logprob with it).
import { execFile } from "node:child_process";
import { promisify } from "node:util";

const execFileAsync = promisify(execFile);

// Returns generate(prompt, maxTokens, samp) -> the --json output of `tandem generate`
// (prompt_tokens, tokens, logprobs, ...), cached per (prompt, maxTokens, sampling).
// Asynchronous on purpose: a synchronous spawn blocked the event loop for seconds, and
// the HTTP client then reused keep-alive connections the coordinator had closed as idle
// meanwhile ("Connection error.", "socket hang up").
export function referenceGenerator(tandem, modelDir) {
  const cache = new Map();
  return async function generate(prompt, maxTokens, samp) {
    const key = JSON.stringify([prompt, maxTokens, samp]);
    if (!cache.has(key)) {
      const args = ["generate", "--model", modelDir, "--raw", "--prompt", prompt, "--max-tokens", String(maxTokens),
        "--json", "--threads", "1", "--temperature", String(samp.temperature)];
      if (samp.top_k !== undefined) args.push("--top-k", String(samp.top_k));
      if (samp.top_p !== undefined) args.push("--top-p", String(samp.top_p));
      if (samp.seed !== undefined) args.push("--seed", String(samp.seed));
      cache.set(key, execFileAsync(tandem, args, { encoding: "utf8", maxBuffer: 1 << 26 }).then((r) => JSON.parse(r.stdout)));
    }
    return cache.get(key);
  };
}
