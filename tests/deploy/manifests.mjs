// manifests.mjs: every kustomization under deploy/k8s renders with `kubectl kustomize`,
// every object validates against the Kubernetes schemas (kubernetes-models; the
// Prometheus Operator's for ServiceMonitor/PodMonitor), and the deployment conventions
// hold. Then the same checks run on broken copies of the base, each of which they
// must reject, so that a convention that stops being checked fails this test.
//
// usage: node manifests.mjs KUBECTL DEPLOY_K8S_DIR
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import * as core from "kubernetes-models/v1";
import * as apps from "kubernetes-models/apps/v1";
import * as policy from "kubernetes-models/policy/v1";
import * as monitoring from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
import { check, checksPassed } from "./lib.mjs";

const [kubectl, k8sDir] = process.argv.slice(2);
const models = { v1: core, "apps/v1": apps, "policy/v1": policy, "monitoring.coreos.com/v1": monitoring };

function render(dir) {
  const text = execFileSync(kubectl, ["kustomize", dir], { encoding: "utf8" });
  return parseAllDocuments(text).map((d) => {
    if (d.errors.length) throw new Error(`${dir}: ${d.errors[0].message}`);
    return d.toJSON();
  }).filter(Boolean);
}

function validate(objs) {
  for (const o of objs) {
    const Model = models[o.apiVersion]?.[o.kind];
    assert.ok(Model, `${o.kind} ${o.metadata?.name}: no schema for ${o.apiVersion} ${o.kind}`);
    new Model(o).validate(); // throws with the schema error
  }
}

const whole = (q) => /^[1-9][0-9]*$/.test(String(q)); // CPUs as whole numbers, no millicores

// The conventions, as a list of problems (empty when all hold).
function conventions(objs) {
  const bad = [];
  const config = objs.find((o) => o.kind === "ConfigMap" && o.metadata.name === "tandem-config");
  if (!config) bad.push("no ConfigMap tandem-config");
  const drain = Number(config?.data?.DRAIN_TIMEOUT);
  if (!(drain > 0)) bad.push("tandem-config has no DRAIN_TIMEOUT");
  const services = objs.filter((o) => o.kind === "Service");
  const pdbs = objs.filter((o) => o.kind === "PodDisruptionBudget");
  const workloads = objs.filter((o) => o.kind === "Deployment" || o.kind === "StatefulSet");
  if (workloads.length < 3) bad.push(`${workloads.length} workloads, expected coordinator, prefill and decode`);
  for (const w of workloads) {
    const at = `${w.kind} ${w.metadata.name}`;
    const pod = w.spec.template.spec;
    const labels = w.spec.template.metadata.labels || {};
    const psc = pod.securityContext || {};
    if (psc.runAsNonRoot !== true) bad.push(`${at}: runAsNonRoot is not true`);
    if (!(psc.runAsUser > 0)) bad.push(`${at}: runAsUser is not a non-root uid`);
    if (pod.automountServiceAccountToken !== false) bad.push(`${at}: mounts a service account token`);
    if (pod.serviceAccountName !== "tandem") bad.push(`${at}: not the tandem ServiceAccount`);
    let longestPreStop = 0;
    const all = [...(pod.initContainers || []).map((c) => [c, true]), ...pod.containers.map((c) => [c, false])];
    for (const [c, init] of all) {
      const cat = `${at} container ${c.name}`;
      const sc = c.securityContext || {};
      if (sc.readOnlyRootFilesystem !== true) bad.push(`${cat}: root file system not read-only`);
      if (sc.allowPrivilegeEscalation !== false) bad.push(`${cat}: privilege escalation allowed`);
      if (!(sc.capabilities?.drop || []).includes("ALL")) bad.push(`${cat}: capabilities not dropped (ALL)`);
      for (const cap of sc.capabilities?.add || [])
        if (cap !== "IPC_LOCK") bad.push(`${cat}: adds capability ${cap}`);
      if (sc.privileged) bad.push(`${cat}: privileged`);
      const img = c.image || "";
      const tag = /^[^@]+\/[^/@:]+:([^:@/]+)$/.exec(img)?.[1];
      if (!tag || tag === "latest") bad.push(`${cat}: image '${img}' is not pinned to a version tag`);
      const req = c.resources?.requests || {}, lim = c.resources?.limits || {};
      if (!req.cpu || !req.memory) bad.push(`${cat}: no cpu and memory requests`);
      for (const k of new Set([...Object.keys(req), ...Object.keys(lim)]))
        if (String(req[k]) !== String(lim[k])) bad.push(`${cat}: ${k} request ${req[k]} != limit ${lim[k]} (not Guaranteed)`);
      if (req.cpu && !whole(req.cpu)) bad.push(`${cat}: cpu ${req.cpu} is not whole CPUs`);
      if (init) continue;
      for (const [probe, path] of [["startupProbe", "/startupz"], ["livenessProbe", "/livez"], ["readinessProbe", "/readyz"]])
        if (c[probe]?.httpGet?.path !== path) bad.push(`${cat}: no ${probe} on ${path}`);
      const startupBudget = (c.startupProbe?.periodSeconds || 10) * (c.startupProbe?.failureThreshold || 3);
      if (w.kind === "StatefulSet" && startupBudget < 600) bad.push(`${cat}: startup probe allows ${startupBudget} s, too short for large weights`);
      const pre = c.lifecycle?.preStop?.exec?.command;
      if (!pre) bad.push(`${cat}: no preStop`);
      else if (pre[0].endsWith("sleep")) longestPreStop = Math.max(longestPreStop, Number(pre[1]) || 0);
      const weights = (c.volumeMounts || []).find((m) => m.name === "weights");
      if (!weights || weights.readOnly !== true) bad.push(`${cat}: the weights are not mounted read-only`);
      const args = c.args || [];
      if (!args.includes("--drain-timeout")) bad.push(`${cat}: no --drain-timeout`);
    }
    const grace = pod.terminationGracePeriodSeconds ?? 30;
    if (!(grace > drain + longestPreStop)) bad.push(`${at}: terminationGracePeriodSeconds ${grace} <= preStop ${longestPreStop} + drain ${drain}`);
    const selects = (sel) => Object.entries(sel || {}).every(([k, v]) => labels[k] === v);
    if (w.kind === "StatefulSet") {
      const svc = services.find((s) => s.metadata.name === w.spec.serviceName);
      if (!svc || svc.spec.clusterIP !== "None") bad.push(`${at}: serviceName ${w.spec.serviceName} is not a headless Service`);
      if (!pdbs.some((p) => selects(p.spec.selector.matchLabels))) bad.push(`${at}: no PodDisruptionBudget`);
    }
  }
  if (!services.some((s) => s.metadata.name === "tandem-coordinator" && ["http", "grpc"].every((n) => s.spec.ports.some((p) => p.name === n))))
    bad.push("no tandem-coordinator Service with http and grpc ports");
  return bad;
}

const dirs = [join(k8sDir, "base"), ...readdirSync(join(k8sDir, "overlays")).map((o) => join(k8sDir, "overlays", o))];
assert.ok(dirs.length >= 6, "base and the overlays dev, tcp, rdma, hostpath, monitoring");
const rendered = {};
for (const dir of dirs) {
  assert.ok(existsSync(join(dir, "kustomization.yaml")), `${dir}: no kustomization.yaml`);
  await check(`${dir.slice(k8sDir.length + 1)}: renders, validates, follows the conventions`, () => {
    const objs = render(dir);
    validate(objs);
    assert.deepEqual(conventions(objs), []);
    rendered[dir.slice(k8sDir.length + 1)] = objs;
  });
}

await check("overlays do what they say", () => {
  const get = (o, kind, name) => rendered[o].find((x) => x.kind === kind && x.metadata.name === name);
  const dev = rendered["overlays/dev"];
  assert.ok(!dev.some((o) => o.kind === "PersistentVolumeClaim"), "dev: no PVC");
  for (const n of ["tandem-prefill", "tandem-decode"]) assert.equal(get("overlays/dev", "StatefulSet", n).spec.replicas, 1);
  for (const w of dev.filter((o) => o.kind === "Deployment" || o.kind === "StatefulSet"))
    assert.match(w.spec.template.spec.initContainers[0].command.join(" "), /tandem-random-model/);
  assert.equal(get("overlays/tcp", "ConfigMap", "tandem-config").data.KV_TRANSPORT, "tcp");
  const rdma = get("overlays/rdma", "StatefulSet", "tandem-decode").spec.template.spec.containers[0];
  assert.equal(rdma.resources.limits["rdma/hca_shared_devices_a"], "1");
  assert.deepEqual(rdma.securityContext.capabilities.add, ["IPC_LOCK"]);
  assert.ok(rdma.args.includes("--rdma-device"));
  assert.equal(get("overlays/rdma", "ConfigMap", "tandem-config").data.KV_TRANSPORT, "rdma");
  assert.equal(get("overlays/hostpath", "StatefulSet", "tandem-prefill").spec.template.spec.volumes
    .find((v) => v.name === "weights").hostPath.path, "/var/lib/tandem/models");
  assert.ok(get("overlays/monitoring", "PodMonitor", "tandem-workers"));
  assert.ok(get("overlays/monitoring", "ServiceMonitor", "tandem-coordinator"));
});

// Each mutation breaks one convention of the base; the checks must say so.
await check("the conventions reject broken manifests", () => {
  const base = rendered.base;
  const worker = (objs) => objs.find((o) => o.metadata.name === "tandem-decode" && o.kind === "StatefulSet").spec.template.spec;
  const mutations = {
    "runs as root": (o) => { worker(o).securityContext.runAsNonRoot = false; },
    "writable root": (o) => { worker(o).containers[0].securityContext.readOnlyRootFilesystem = false; },
    "capabilities kept": (o) => { worker(o).containers[0].securityContext.capabilities.drop = []; },
    "escalation": (o) => { delete worker(o).containers[0].securityContext.allowPrivilegeEscalation; },
    "not guaranteed": (o) => { worker(o).containers[0].resources.limits.memory = "32Gi"; },
    "millicores": (o) => { const r = worker(o).containers[0].resources; r.requests.cpu = r.limits.cpu = "1500m"; },
    "latest tag": (o) => { worker(o).containers[0].image = "localhost/tandem:latest"; },
    "no tag": (o) => { worker(o).containers[0].image = "localhost/tandem"; },
    "no readiness probe": (o) => { delete worker(o).containers[0].readinessProbe; },
    "short grace": (o) => { worker(o).terminationGracePeriodSeconds = 30; },
    "writable weights": (o) => { worker(o).containers[0].volumeMounts[0].readOnly = false; },
  };
  for (const [name, mutate] of Object.entries(mutations)) {
    const copy = structuredClone(base);
    mutate(copy);
    assert.notDeepEqual(conventions(copy), [], `the checks let '${name}' through`);
  }
  const badSchema = structuredClone(base);
  worker(badSchema).containers[0].ports[0].containerPort = "http";
  assert.throws(() => validate(badSchema), undefined, "the schema check let a string containerPort through");
});
console.log(`manifests: ${checksPassed()} checks passed`);
