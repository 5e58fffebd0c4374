// tandemctl.mjs: running the tandemctl binary from the ops tests.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";

// ctl(ARGS, env) -> { code, out, err }; ctlOk(...ARGS) against rpcAddr, exit 0 asserted,
// its stdout; workersJson(): `get workers -o json`.
export function tandemctlAt(tandemctl, rpcAddr) {
  const ctl = (args, env = {}) => {
    const r = spawnSync(tandemctl, args, { encoding: "utf8", timeout: 120000, env: { ...process.env, ...env } });
    return { code: r.status, out: r.stdout, err: r.stderr };
  };
  const ctlOk = (...args) => {
    const r = ctl([...args, "--coordinator", rpcAddr]);
    assert.equal(r.code, 0, `tandemctl ${args.join(" ")}: ${r.err}`);
    return r.out;
  };
  return { ctl, ctlOk, workersJson: () => JSON.parse(ctlOk("get", "workers", "-o", "json")) };
}
