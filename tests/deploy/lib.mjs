// lib.mjs: what the Node end-to-end tests (deploy, security, cluster, ep) share: free
// ports, child processes killed when the test exits (whatever happens), polling, health
// probes and metric values.
import { spawn } from "node:child_process";
import { once } from "node:events";
import { writeSync } from "node:fs";
import net from "node:net";

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A failing test shows the last lines each child wrote on stderr (unless they were echoed
// as they came): a flake in CI can then be told apart from a process that failed.
const children = [];
process.on("exit", (code) => {
  for (const p of children) if (p.exitCode === null && p.signalCode === null) try { p.kill("SIGKILL"); } catch {}
  if (code === 0 || process.env.TANDEM_TEST_VERBOSE) return;
  for (const p of children) {
    const tail = p.err.trimEnd().split("\n").slice(-15).filter((l) => l);
    // fd 2 directly: after an uncaught exception process.stderr drops what 'exit' writes
    if (tail.length) writeSync(2, `--- last stderr lines of ${p.name}:\n${tail.join("\n")}\n`);
  }
});
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => process.exit(1));

// A child whose stdout and stderr are kept (and echoed with TANDEM_TEST_VERBOSE).
export function start(cmd, args, name) {
  const p = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
  children.push(p);
  p.name = name;
  p.out = "";
  p.err = "";
  p.stdout.setEncoding("utf8").on("data", (d) => { p.out += d; });
  p.stderr.setEncoding("utf8").on("data", (d) => {
    p.err += d;
    if (process.env.TANDEM_TEST_VERBOSE) process.stderr.write(`[${name}] ${d}`);
  });
  p.exited = new Promise((res) => p.on("exit", (code, signal) => res({ code, signal })));
  return p;
}

export async function freePort() {
  const srv = net.createServer();
  srv.listen(0, "127.0.0.1");
  await once(srv, "listening");
  const port = srv.address().port;
  srv.close();
  await once(srv, "close");
  return port;
}

// Resolves with the match of re in p's stdout or stderr (which: "out" or "err") once a
// line it printed matches; throws with p's last stderr line if p exits first.
async function announced(p, which, re, what) {
  let m = null;
  await waitFor(`${p.name}: ${what}`, () => (m = p[which].match(re)) || p.exitCode !== null || p.signalCode !== null,
    120000, 20);
  if (!m) throw new Error(`${p.name} exited before ${what}: ${p.err.trim().split("\n").pop()}`);
  return m;
}

// Servers in tests listen on ports the kernel picks (port 0) and say which: a port that
// freePort() found free can be taken by another process's ephemeral port before the
// server binds it (seen in CI: "cannot listen ... address in use").
//
// `tandem coordinator` (args may name its ports instead); returns once it listens, with
// .http, .rpc ("127.0.0.1:N") and .scheme ("http" or "https") from the line it prints.
export async function startCoordinator(tandem, args, name = "coordinator") {
  const p = start(tandem, ["coordinator", "--port", "0", "--rpc-port", "0", ...args], name);
  [, p.scheme, p.http, p.rpc] = await announced(p, "out", /^coordinator (https?):\/\/(\S+) rpc (\S+)/m, "it listens");
  return p;
}

// `tandem worker` with /metrics on a port the kernel picks; returns once that listens
// (before the model loads), with .metrics set.
export async function startWorker(tandem, args, name) {
  const p = start(tandem, ["worker", "--metrics-port", "0", ...args], name);
  [, p.metrics] = await announced(p, "err", /metrics and probes on http:\/\/(\S+)/, "/metrics listens");
  return p;
}

// Polls fn() until it returns something truthy; fails with what() after ms.
export async function waitFor(what, fn, ms = 30000, every = 50) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(every);
  }
}

// GET http://addr/path -> { status, text }, or { status: 0 } while nothing listens.
export async function get(addr, path) {
  try {
    const r = await fetch(`http://${addr}${path}`, { signal: AbortSignal.timeout(5000) });
    return { status: r.status, text: await r.text() };
  } catch {
    return { status: 0, text: "" };
  }
}

// The sum of a metric's samples whose labels include `labels`; NaN when none.
export function metricValue(text, name, labels = {}) {
  let sum = 0, found = false;
  for (const line of text.split("\n")) {
    const m = /^(\w+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const ls = Object.fromEntries([...(m[2] || "").matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => ls[k] === v)) { sum += Number(m[3]); found = true; }
  }
  return found ? sum : NaN;
}

let checks = 0;
export async function check(name, fn) {
  const t = Date.now();
  await fn();
  checks++;
  console.log(`ok ${name} (${((Date.now() - t) / 1000).toFixed(1)} s)`);
}
export const checksPassed = () => checks;
