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

// Starts `tandem coordinator` (args: everything but its ports) on two free loopback
// ports and returns once it answers /livez (it binds gRPC before HTTP), with .http and
// .rpc set: workers started after that cannot take its ports first. freePort() only
// finds a port free for the moment; a worker's own ephemeral ports can land on it
// before a coordinator still starting binds it (seen in CI: "cannot listen ... address
// in use"). A coordinator that exits before it answers is started again on fresh
// ports, three times at most.
export async function startCoordinator(tandem, args, name = "coordinator") {
  for (let attempt = 1; ; attempt++) {
    const http = await freePort(), rpc = await freePort();
    const p = start(tandem, ["coordinator", "--port", String(http), "--rpc-port", String(rpc), ...args], name);
    p.http = `127.0.0.1:${http}`;
    p.rpc = `127.0.0.1:${rpc}`;
    await waitFor(`${name} listening on ${p.http}`,
      async () => p.exitCode !== null || p.signalCode !== null || (await get(p.http, "/livez")).status === 200, 60000, 50);
    if (p.exitCode === null && p.signalCode === null) return p;
    if (attempt === 3) throw new Error(`${name} exited before it listened: ${p.err.trim().split("\n").pop()}`);
  }
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
