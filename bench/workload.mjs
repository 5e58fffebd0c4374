// workload.mjs: workload files (the format is in docs/benchmarks.md, "Workload files")
// and the request traces drawn from them.
//
// The draws follow cli/plan_workload.c step for step (mulberry32, the same order of
// draws, the same transforms), so that bench/loadgen.mjs sends the very requests that
// `tandemctl plan --seed S` simulates for the same seed, rate and count.
import { readFileSync } from "node:fs";

// mulberry32: a tiny seeded PRNG; uniform in [0, 1).
export function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function normal(r) {
  const u1 = r(), u2 = r();
  return Math.sqrt(-2 * Math.log(1 - u1)) * Math.cos(2 * 3.141592653589793 * u2);
}

// Gamma(shape k, scale 1): Marsaglia and Tsang; below 1 through Gamma(k + 1).
function gamma(r, k) {
  if (k < 1) {
    const g = gamma(r, k + 1);
    return g * Math.pow(1 - r(), 1 / k);
  }
  const d = k - 1 / 3, c = 1 / Math.sqrt(9 * d);
  for (;;) {
    const z = normal(r);
    let v = 1 + c * z;
    if (v <= 0) continue;
    v = v * v * v;
    const u = 1 - r();
    if (Math.log(u) < 0.5 * z * z + d - d * v + d * Math.log(v)) return d * v;
  }
}

function draw(d, r) {
  switch (d.dist) {
    case "fixed": return d.value;
    case "uniform": return d.min + Math.floor(r() * (d.max - d.min + 1));
    case "lognormal": {
      const v = Math.round(d.median * Math.exp(d.sigma * normal(r)));
      return v < d.min ? d.min : v > d.max ? d.max : v;
    }
    case "list": return d.values[Math.floor(r() * d.values.length)];
  }
  throw new Error(`unknown dist ${d.dist}`);
}

const MAX_LEN = 1 << 20;
const isLen = (v) => Number.isInteger(v) && v >= 1 && v <= MAX_LEN;

function checkDist(d, where) {
  if (!d || typeof d !== "object") throw new Error(`${where} must be an object with "dist"`);
  const ok = {
    fixed: () => isLen(d.value),
    uniform: () => isLen(d.min) && isLen(d.max) && d.min <= d.max,
    lognormal: () => isLen(d.min) && isLen(d.max) && d.min <= d.max && d.median > 0 && d.sigma > 0 && d.sigma <= 10,
    list: () => Array.isArray(d.values) && d.values.length >= 1 && d.values.length <= 100000 && d.values.every(isLen),
  }[d.dist];
  if (!ok) throw new Error(`${where}.dist must be fixed, uniform, lognormal or list`);
  if (!ok()) throw new Error(`${where}: bad ${d.dist} parameters (see docs/benchmarks.md, "Workload files")`);
}

// Reads and checks a workload file; throws with the reason.
export function loadWorkload(path) {
  let w;
  try {
    w = JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new Error(`${path}: ${e.message}`);
  }
  try {
    if (typeof w.name !== "string" || !w.name) throw new Error(`"name" must be a string`);
    const a = w.arrival;
    if (!a || !(a.rate > 0) || !(a.shape >= 0.01 && a.shape <= 1000))
      throw new Error(`"arrival" must be {"rate": R > 0, "shape": K in [0.01, 1000]}`);
    checkDist(w.prompt_tokens, "prompt_tokens");
    checkDist(w.output_tokens, "output_tokens");
    if (!(Number.isInteger(w.requests) && w.requests >= 1 && w.requests <= 1000000))
      throw new Error(`"requests" must be an integer in [1, 1000000]`);
  } catch (e) {
    throw new Error(`${path}: ${e.message}`);
  }
  return w;
}

// n requests at `rate` per second (the file's when 0): [{arrival (s), prompt, output}].
export function trace(w, rate, seed, n) {
  const r = rng(seed);
  const k = w.arrival.shape;
  if (!(rate > 0)) rate = w.arrival.rate;
  const out = [];
  let t = 0;
  for (let i = 0; i < n; i++) {
    const prompt = draw(w.prompt_tokens, r);
    const output = draw(w.output_tokens, r);
    out.push({ arrival: t, prompt, output });
    t += gamma(r, k) / (k * rate);
  }
  return out;
}
