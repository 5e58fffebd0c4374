// serve_tls.mjs: `tandem serve` passes the security options on. With --api-key-file,
// --tls-cert/--tls-key and --rpc-tls-ca/--rpc-tls-cert/--rpc-tls-key, a split cluster (one
// prefill and one decode worker) comes up, which needs every worker to register over
// mutual TLS and serve's own Admin.Status wait to use it too; the OpenAI client over HTTPS
// with the right key gets a completion (prefill and decode talk gRPC over mTLS), a wrong
// or missing key gets 401, plaintext HTTP gets no answer, and a plaintext gRPC client
// (tandemctl without a certificate) is refused while tandemctl with the cluster's
// certificate sees both workers.
// Usage: node serve_tls.mjs TANDEM TANDEMCTL MODEL_DIR
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import https from "node:https";
import { tmpdir } from "node:os";
import { join, basename } from "node:path";
import OpenAI from "openai";
import { start, waitFor, get, check, checksPassed } from "../deploy/lib.mjs";

const [tandem, tandemctl, modelDir] = process.argv.slice(2);
const model = basename(modelDir.replace(/\/+$/, ""));
const tmp = mkdtempSync(join(tmpdir(), "tandem-serve-tls-"));
process.on("exit", () => rmSync(tmp, { recursive: true, force: true }));
const ssl = (...args) => execFileSync("openssl", args, { stdio: "ignore" });
const file = (name) => join(tmp, name);
writeFileSync(file("ext.cnf"), "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n");
ssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
  "-keyout", file("ca.key"), "-out", file("ca.pem"), "-subj", "/CN=cluster CA");
ssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
  "-keyout", file("node.key"), "-out", file("node.csr"), "-subj", "/CN=cluster process");
ssl("x509", "-req", "-in", file("node.csr"), "-CA", file("ca.pem"), "-CAkey", file("ca.key"), "-CAcreateserial",
  "-days", "1", "-extfile", file("ext.cnf"), "-out", file("node.pem"));
const rpcTls = ["--rpc-tls-ca", file("ca.pem"), "--rpc-tls-cert", file("node.pem"), "--rpc-tls-key", file("node.key")];
const key = "sk-serve-tls-test-key";
writeFileSync(file("keys"), `${key}\n`);

// Ports the kernel picks; the ready line says which.
let url = "", rpcAddr = "";
const serve = start(tandem, ["serve", "--model", modelDir, "--port", "0", "--rpc-port", "0",
  "--prefill-workers", "1", "--decode-workers", "1", "--threads-per-worker", "1", "--kv-blocks", "256",
  "--heartbeat-ms", "200", "--api-key-file", file("keys"), "--tls-cert", file("node.pem"), "--tls-key",
  file("node.key"), ...rpcTls], "serve");
const trusted = new https.Agent({ ca: readFileSync(file("ca.pem")) });
const client = (apiKey) => new OpenAI({ baseURL: `${url}/v1`, apiKey, maxRetries: 0, timeout: 60000,
  httpAgent: trusted });
const ctl = (tls) => spawnSync(tandemctl, ["--coordinator", rpcAddr, "--json", ...tls, "status"], { encoding: "utf8",
  timeout: 30000 });

await check("tandem serve with every security option comes up (workers register over mTLS)", async () => {
  const m = await waitFor("tandem serve's ready line", async () => {
    assert.equal(serve.exitCode, null, `tandem serve exited: ${serve.err}`);
    return serve.out.match(/tandem: serving .* at (https:\/\/\S+)\/v1 .*; gRPC (\S+)\)/);
  }, 120000, 100);
  [, url, rpcAddr] = m;
});

await check("the OpenAI client over HTTPS with the right key gets a completion", async () => {
  const r = await client(key).completions.create({ model, prompt: "The weather in", max_tokens: 4, temperature: 0 });
  assert.equal(r.usage.completion_tokens, 4);
});

await check("a wrong or missing key gets 401", async () => {
  await assert.rejects(client("sk-wrong").models.list(), (e) => e.status === 401);
  const code = await new Promise((resolve) => {
    https.get(`${url}/v1/models`, { agent: trusted }, (r) => { r.resume(); resolve(r.statusCode); })
      .on("error", (e) => resolve(e.code));
  });
  assert.equal(code, 401);
});

await check("plaintext HTTP gets no answer", async () => {
  const r = await get(url.replace("https://", ""), "/health").catch((e) => ({ status: e.code ?? e.message }));
  assert.notEqual(r.status, 200);
});

await check("a plaintext gRPC client is refused; tandemctl with the cluster's certificate sees both workers",
  async () => {
    const plain = ctl([]);
    assert.notEqual(plain.status, 0, `plaintext tandemctl got through: ${plain.stdout}`);
    const good = ctl(rpcTls);
    assert.equal(good.status, 0, good.stderr);
    assert.match(good.stdout, /prefill-1/);
    assert.match(good.stdout, /decode-1/);
  });

serve.kill("SIGTERM");
const { code } = await serve.exited;
assert.equal(code, 0, `tandem serve exit: ${serve.err}`);
console.log(`serve_tls: ${checksPassed()} checks passed`);
