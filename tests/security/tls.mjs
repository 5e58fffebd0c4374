// tls.mjs: `tandem coordinator --tls-cert --tls-key` (HTTPS through libmicrohttpd and
// GnuTLS) with a certificate made here by openssl: the official OpenAI client trusting
// that certificate gets a completion over HTTPS from a real colocated cluster, a client
// that does not trust it is refused, and a plaintext HTTP client gets no answer.
// Usage: node tls.mjs TANDEM MODEL_DIR
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import https from "node:https";
import { tmpdir } from "node:os";
import { join, basename } from "node:path";
import OpenAI from "openai";
import { start, startCoordinator, waitFor, get, check, checksPassed } from "../deploy/lib.mjs";

const [tandem, modelDir] = process.argv.slice(2);
const model = basename(modelDir.replace(/\/+$/, ""));
const tmp = mkdtempSync(join(tmpdir(), "tandem-tls-"));
process.on("exit", () => rmSync(tmp, { recursive: true, force: true }));
const cert = join(tmp, "cert.pem"), key = join(tmp, "key.pem");
execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
  "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
  { stdio: "ignore" });

const coord = await startCoordinator(tandem, ["--model", modelDir, "--colocated", "--heartbeat-ms", "200",
  "--tls-cert", cert, "--tls-key", key]);
const url = `https://${coord.http}`;
const worker = start(tandem, ["worker", "--role", "both", "--id", "both-0", "--model", modelDir, "--threads", "1",
  "--kv-blocks", "256", "--coordinator", coord.rpc], "worker");
const trusted = new https.Agent({ ca: readFileSync(cert) });
const client = (httpAgent) => new OpenAI({ baseURL: `${url}/v1`, apiKey: "unused", maxRetries: 0, timeout: 30000,
  httpAgent });
const httpsGet = (path, agent) => new Promise((resolve) => {
  https.get(`${url}${path}`, { agent }, (r) => { r.resume(); resolve(r.statusCode); }).on("error", (e) => resolve(e.code));
});

await check("the cluster gets ready behind HTTPS", async () => {
  await waitFor("/readyz over HTTPS", async () => (await httpsGet("/readyz", trusted)) === 200, 120000);
});

await check("the OpenAI client trusting the certificate: models and a completion over HTTPS", async () => {
  const c = client(trusted);
  assert.deepEqual((await c.models.list()).data.map((m) => m.id), [model]);
  const r = await c.completions.create({ model, prompt: "The weather in", max_tokens: 4, temperature: 0 });
  assert.equal(r.usage.completion_tokens, 4);
});

await check("a client that does not trust the certificate is refused", async () => {
  const code = await httpsGet("/v1/models", new https.Agent());
  assert.match(String(code), /SELF_SIGNED|UNABLE_TO_VERIFY|CERT/);
  await assert.rejects(client(new https.Agent()).models.list(), OpenAI.APIConnectionError);
});

await check("plaintext HTTP gets no answer", async () => {
  const r = await get(coord.http, "/health");
  assert.equal(r.status, 0, `plaintext answered ${r.status}`);
});

coord.kill("SIGTERM");
worker.kill("SIGTERM");
const [c] = await Promise.all([coord.exited, worker.exited]);
assert.equal(c.code, 0, "coordinator exit");
console.log(`tls: ${checksPassed()} checks passed`);
