// podman_dev.mjs: the `dev` overlay run for real with `podman kube play`, driven by the
// official OpenAI npm client, as a user of the cluster would.
//
// usage: node podman_dev.mjs KUBECTL DEPLOY_K8S_DIR IMAGE_CONTAINERS_CONF
//
// The overlay is rendered with `kubectl kustomize`; what podman cannot play is
// converted here, and nothing else:
//   - each Deployment / StatefulSet becomes one Pod with its pod template (a StatefulSet
//     pod keeps its name, tandem-decode-0);
//   - podman has no Services and no cluster DNS: each pod gets its own network namespace
//     on podman's bridge with an address fixed here (`podman kube play --ip`, what the
//     downward API's status.podIP then says), the Service name in the ConfigMap
//     (tandem-coordinator:50051) becomes the coordinator pod's address, and the
//     coordinator's Service port is published on 127.0.0.1 (hostPort, a port the OS
//     picked for this run), where the test's client connects; the other containerPorts
//     are dropped (podman would publish them on the host too);
//   - the ConfigMap's values are inlined (envFrom) and $(NAME) references in command
//     and args expanded (podman does neither), emptyDir volumes become host
//     folders owned by the pods' uid, and the probes are left out: podman would run
//     them with a curl the image does not have. This test plays the kubelet's part
//     instead and polls the same /livez, /readyz and /startupz endpoints.
// Everything else (the image, init containers, args, users, read-only root file
// system, dropped capabilities, resources) is played as written.
//
// Checks: the init containers write the random model; every pod's /startupz and
// /readyz turn 200; a streamed chat completion arrives through the coordinator's
// port; deleting the decode pod (SIGTERM to its container, then the grace period)
// during a streamed request drains it: its /readyz turns 503, the stream completes
// with every token, the worker exits 0, the coordinator counts 0 failed requests.
import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseAllDocuments, stringify } from "yaml";
import OpenAI from "openai";
import { freePort, waitFor, get, metricValue, check, checksPassed } from "./lib.mjs";

const [kubectl, k8sDir, containersConf] = process.argv.slice(2);
const env = { ...process.env, CONTAINERS_CONF: resolve(containersConf) };
// Pods on the host's network, volumes owned by the pods' uid: root's podman (sudo if need be).
const root = process.getuid() === 0;
const asRoot = (cmd, args) => (root ? [cmd, args] : ["sudo", ["-n", "--preserve-env=CONTAINERS_CONF", cmd, ...args]]);
const podmanCmd = (args) => asRoot("podman", args);
const podman = (...args) => execFileSync(...podmanCmd(args), { encoding: "utf8", env, stdio: ["ignore", "pipe", "pipe"] });
const logs = (container) => { // the container's stdout and stderr
  const r = spawnSync(...podmanCmd(["logs", container]), { encoding: "utf8", env });
  return r.stdout + r.stderr;
};
const t0 = Date.now();

const objs = parseAllDocuments(execFileSync(kubectl, ["kustomize", join(k8sDir, "overlays/dev")], { encoding: "utf8" }))
  .map((d) => d.toJSON()).filter(Boolean);
const config = objs.find((o) => o.kind === "ConfigMap").data;
const modelName = config.MODEL_DIR.split("/").pop();

const httpPort = await freePort(); // the coordinator's Service port, published on 127.0.0.1

// Pod addresses near the end of podman's bridge subnet, away from those it hands out.
const [net, bits] = podman("network", "inspect", "podman", "--format", "{{range .Subnets}}{{.Subnet}}{{end}}").trim().split("/");
const netInt = net.split(".").reduce((a, o) => a * 256 + Number(o), 0);
const podIp = (i) => {
  const v = netInt + 2 ** (32 - Number(bits)) - 16 + i;
  return [24, 16, 8, 0].map((b) => Math.floor(v / 2 ** b) % 256).join(".");
};
const tmp = mkdtempSync(join(tmpdir(), "tandem-podman-"));
const pods = [];
// Removes a pod and its containers; a second try covers podman 4.3 losing a race with a
// container that is still exiting.
function removePod(name) {
  for (let i = 0; i < 2; i++) {
    try { podman("pod", "rm", "--force", "--ignore", "--time", "0", name); return; } catch (e) {
      if (i) console.error(`could not remove pod ${name}: ${e.stderr || e.message}`);
    }
  }
}
process.on("exit", () => {
  for (const p of pods) removePod(p);
  try { execFileSync(...asRoot("rm", ["-rf", tmp])); } catch {}
});

// ------------------------------------------------------------------ conversion

function toPod(w, ip, coordinatorIp) {
  const name = w.kind === "StatefulSet" ? `${w.metadata.name}-0` : w.metadata.name;
  const spec = structuredClone(w.spec.template.spec);
  const local = { ...config, COORDINATOR: `${coordinatorIp}:50051` };
  for (const c of [...(spec.initContainers || []), ...spec.containers]) {
    const fixed = Object.entries(local).map(([k, v]) => ({ name: k, value: String(v) }));
    for (const e of c.env || []) {
      if (e.valueFrom?.fieldRef?.fieldPath === "status.podIP") fixed.push({ name: e.name, value: ip });
      else if (e.valueFrom?.fieldRef?.fieldPath === "metadata.name") fixed.push({ name: e.name, value: name });
      else fixed.push(e);
    }
    c.env = fixed;
    delete c.envFrom;
    delete c.startupProbe;
    delete c.livenessProbe;
    delete c.readinessProbe;
    delete c.lifecycle;
    // podman publishes every containerPort on the host: keep only the Service port
    c.ports = (c.ports || []).filter((p) => name === "tandem-coordinator" && p.name === "http")
      .map((p) => ({ ...p, hostPort: httpPort, hostIP: "127.0.0.1" }));
    // Kubernetes expands $(NAME) in command and args from the container's env; podman does not.
    const vars = Object.fromEntries(c.env.filter((e) => "value" in e).map((e) => [e.name, e.value]));
    const expand = (a) => a.replace(/\$\((\w+)\)/g, (m, k) => (k in vars ? vars[k] : m));
    if (c.args) c.args = c.args.map(expand);
    if (c.command) c.command = c.command.map(expand);
  }
  for (const v of spec.volumes || []) {
    if (!v.emptyDir) continue;
    const dir = join(tmp, name, v.name);
    mkdirSync(dir, { recursive: true });
    execFileSync(...asRoot("chown", [`${spec.securityContext.runAsUser}:${spec.securityContext.runAsGroup}`, dir]));
    delete v.emptyDir;
    v.hostPath = { path: dir, type: "Directory" };
  }
  // podman 4.3 removes a finished "once" init container before runc reports it stopped
  // (kube play then fails); "always" init containers are kept, and still run first.
  const annotations = { "io.podman.annotations.init.container.type": "always" };
  return { apiVersion: "v1", kind: "Pod", metadata: { name, labels: w.spec.template.metadata.labels, annotations }, spec };
}

const played = {};
const workloads = objs.filter((o) => o.kind === "Deployment" || o.kind === "StatefulSet");
const ips = workloads.map((w, i) => podIp(i));
const coordinatorIp = ips[workloads.findIndex((w) => w.metadata.name === "tandem-coordinator")];
for (const [i, w] of workloads.entries()) {
  const pod = toPod(w, ips[i], coordinatorIp);
  const c = pod.spec.containers[0];
  const m = c.args.indexOf("--metrics-port");
  played[pod.metadata.labels["app.kubernetes.io/component"]] = {
    name: pod.metadata.name,
    probes: m > 0 ? `${ips[i]}:${c.args[m + 1]}` : `127.0.0.1:${httpPort}`,
    container: `${pod.metadata.name}-${c.name}`,
  };
  const file = join(tmp, `${pod.metadata.name}.yaml`);
  writeFileSync(file, stringify(pod));
  removePod(pod.metadata.name); // left over by a run that was killed
  pods.push(pod.metadata.name);
  podman("kube", "play", "--network", "podman", "--ip", ips[i], file);
}
console.log(`played ${pods.join(", ")} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

// ------------------------------------------------------------------ checks

const ready = async (addr) => (await get(addr, "/readyz")).status === 200;
await check("every pod starts: init container writes the model, /startupz and /readyz 200", async () => {
  for (const [role, p] of Object.entries(played)) {
    await waitFor(`${role} /startupz`, async () => (await get(p.probes, "/startupz")).status === 200, 180000, 200);
    await waitFor(`${role} /readyz`, () => ready(p.probes), 60000, 100);
    assert.equal((await get(p.probes, "/livez")).status, 200);
    const user = podman("exec", p.container, "/usr/bin/id", "-u").trim();
    assert.equal(user, "10001", `${p.container} runs as uid ${user}`);
    assert.match(logs(`${p.name}-random-model`), /wrote \/models\/tandem-dev/);
  }
});

const client = new OpenAI({ baseURL: `http://127.0.0.1:${httpPort}/v1`, apiKey: "unused", maxRetries: 0, timeout: 120000 });

async function streamChat(maxTokens, onStreaming) {
  const s = await client.chat.completions.create({ model: modelName, messages: [{ role: "user", content: "Hello there" }],
    max_tokens: maxTokens, temperature: 0, stream: true, stream_options: { include_usage: true } });
  // onStreaming runs once the decode worker is producing: after a few content chunks.
  // The role chunk comes before routing, and the first token from the prefill worker, so
  // a drain started then could still leave the request without a decode worker.
  let text = "", finish = null, usage = null, contentChunks = 0;
  for await (const ch of s) {
    if (ch.usage) usage = ch.usage;
    const c = ch.choices[0];
    if (!c) continue;
    text += c.delta?.content || "";
    if (c.finish_reason) finish = c.finish_reason;
    if ((c.delta?.content || c.delta?.reasoning_content) && ++contentChunks === 3 && onStreaming) await onStreaming();
  }
  return { text, finish, usage };
}

await check("a streamed chat completion through the coordinator's port (official openai client)", async () => {
  const models = await client.models.list();
  assert.deepEqual(models.data.map((m) => m.id), [modelName]);
  const r = await streamChat(16);
  assert.equal(r.finish, "length");
  assert.equal(r.usage.completion_tokens, 16);
});

await check("deleting the decode pod during a streamed request drains it: 0 failed requests", async () => {
  const d = played.decode;
  let stopping, sawDraining = false;
  // 400 tokens: long enough to outlive the signal, short enough to finish within the
  // worker's 30 s drain timeout even on a loaded 2-core machine (at 1500 it did not).
  const r = await streamChat(400, async () => {
    // What the kubelet does on deletion: SIGTERM to the container, then up to the grace
    // period, while the pod's network stays up (podman pod stop would take the network
    // down at once, with the infra container; no kubelet does that).
    stopping = new Promise((res) => spawn(...podmanCmd(["stop", "--time", "60", d.container]), { env, stdio: "ignore" }).on("exit", res));
    await waitFor("the decode pod's /readyz 503", async () => {
      const p = await get(d.probes, "/readyz");
      return p.status === 503 && /draining/.test(p.text);
    }, 10000, 10);
    sawDraining = true;
  });
  assert.ok(sawDraining);
  assert.equal(r.finish, "length", "the stream ran to its end");
  assert.equal(r.usage.completion_tokens, 400, "every token arrived");
  assert.equal(await stopping, 0, "podman stop");
  const exit = podman("inspect", "--format", "{{.State.ExitCode}}", d.container).trim();
  assert.equal(exit, "0", "the worker exited 0 by itself (drained), not killed");
  assert.match(logs(d.container), /drained, stopping/);
  removePod(d.name); // the rest of the deletion
  const m = (await get(played.coordinator.probes, "/metrics")).text;
  assert.equal(metricValue(m, "tandem_requests_total", { role: "coordinator", outcome: "error" }), 0);
  assert.equal(metricValue(m, "tandem_requests_total", { role: "coordinator", outcome: "success" }), 2);
  // without a decode worker there is no route: the coordinator says so
  await waitFor("the coordinator's /readyz 503 without a decode worker", async () => (await get(played.coordinator.probes, "/readyz")).status === 503, 10000);
});
console.log(`podman dev: ${checksPassed()} checks passed in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
