// mtls.mjs: gRPC over mutual TLS between the cluster's processes (--rpc-tls-ca,
// --rpc-tls-cert, --rpc-tls-key). Certificates are made here with openssl: a cluster
// CA and one certificate it signs, and a rogue CA with its own certificate. A
// coordinator and a worker with the cluster's certificates serve a completion;
// tandemctl with them sees the worker; tandemctl without a certificate, or with the
// rogue one, is refused; a worker without a certificate (plaintext) or with the rogue
// one never registers.
// Usage: node mtls.mjs TANDEM TANDEMCTL MODEL_DIR
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, basename } from "node:path";
import OpenAI from "openai";
import { start, startCoordinator, waitFor, get, check, checksPassed, sleep } from "../deploy/lib.mjs";

const [tandem, tandemctl, modelDir] = process.argv.slice(2);
const model = basename(modelDir.replace(/\/+$/, ""));
const tmp = mkdtempSync(join(tmpdir(), "tandem-mtls-"));
process.on("exit", () => rmSync(tmp, { recursive: true, force: true }));
const ssl = (...args) => execFileSync("openssl", args, { stdio: "ignore" });
const ext = join(tmp, "ext.cnf");
writeFileSync(ext, "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n");
function makeCa(name) {
  ssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
    "-keyout", join(tmp, `${name}-ca.key`), "-out", join(tmp, `${name}-ca.pem`), "-subj", `/CN=${name} CA`);
  ssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-keyout", join(tmp, `${name}.key`), "-out", join(tmp, `${name}.csr`), "-subj", `/CN=${name} process`);
  ssl("x509", "-req", "-in", join(tmp, `${name}.csr`), "-CA", join(tmp, `${name}-ca.pem`), "-CAkey",
    join(tmp, `${name}-ca.key`), "-CAcreateserial", "-days", "1", "-extfile", ext, "-out", join(tmp, `${name}.pem`));
  return ["--rpc-tls-ca", join(tmp, `${name}-ca.pem`), "--rpc-tls-cert", join(tmp, `${name}.pem`),
    "--rpc-tls-key", join(tmp, `${name}.key`)];
}
const cluster = makeCa("cluster"), rogue = makeCa("rogue");
// the rogue process trusts the cluster CA (so only its own certificate is wrong)
const rogueArgs = [...rogue]; rogueArgs[1] = cluster[1];

const coord = await startCoordinator(tandem, ["--model", modelDir, "--colocated", "--heartbeat-ms", "200", ...cluster]);
const addr = coord.http, rpcAddr = coord.rpc;
const worker = (id, tls) => start(tandem, ["worker", "--role", "both", "--id", id, "--model", modelDir, "--threads",
  "1", "--kv-blocks", "256", "--coordinator", rpcAddr, ...tls], id);
const good = worker("good-0", cluster);
const ctl = (tls) => spawnSync(tandemctl, ["--coordinator", rpcAddr, "--json", ...tls, "status"], { encoding: "utf8",
  timeout: 30000 });

await check("coordinator and worker with the cluster's certificates: a completion", async () => {
  await waitFor("/readyz", async () => (await get(addr, "/readyz")).status === 200, 120000);
  const c = new OpenAI({ baseURL: `http://${addr}/v1`, apiKey: "unused", maxRetries: 0, timeout: 30000 });
  const r = await c.completions.create({ model, prompt: "The weather in", max_tokens: 4, temperature: 0 });
  assert.equal(r.usage.completion_tokens, 4);
});

await check("tandemctl with the cluster's certificate sees the worker", async () => {
  const r = ctl(cluster);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /good-0/);
});

await check("tandemctl without a certificate, or with the rogue one, is refused", async () => {
  for (const tls of [[], rogueArgs]) {
    const r = ctl(tls);
    assert.notEqual(r.status, 0, `tandemctl ${tls.length ? "rogue" : "plaintext"} got through: ${r.stdout}`);
  }
});

await check("a worker without a certificate, or with the rogue one, never registers", async () => {
  const plain = worker("plain-0", []), bad = worker("rogue-0", rogueArgs);
  await sleep(6000); // the model loads in well under a second; registration is retried meanwhile
  assert.equal(plain.exitCode ?? 0, 0);
  const r = ctl(cluster);
  assert.equal(r.status, 0, r.stderr);
  assert.doesNotMatch(r.stdout, /plain-0|rogue-0/);
  for (const w of [plain, bad]) assert.match(w.err, /registration with \S+ failed/);
  plain.kill("SIGKILL");
  bad.kill("SIGKILL");
});

coord.kill("SIGTERM");
good.kill("SIGTERM");
const [c] = await Promise.all([coord.exited, good.exited]);
assert.equal(c.code, 0, "coordinator exit");
console.log(`mtls: ${checksPassed()} checks passed`);
