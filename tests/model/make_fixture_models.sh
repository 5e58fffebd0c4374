#!/bin/sh
# The `models` test fixture: small random Qwen3 checkpoints in the exact Hugging Face
# layout, with the real Qwen3 tokenizer files, for every suite that needs a model.
#   dense          2 layers, hidden 128, 4 heads / 2 kv heads, head_dim 64, tied, bf16
#   dense-sharded  the same weights in 3 shards with model.safetensors.index.json
#   moe            2 layers, 8 experts top-2, untied, bf16
#   moe16          2 layers, 16 experts top-4 (expert parallelism tests)
#   moe128         2 layers, 128 experts top-8, hidden 64, expert ffn 32 (expert parallelism tests)
#   dense-fp8      dense's shape in Qwen's -FP8 layout (F8_E4M3 projections + block scales)
#   moe-fp8        moe's shape in Qwen's -FP8 layout
# usage: make_fixture_models.sh PYTHON MAKE_MODEL_PY TOKENIZER_DIR MODELS_DIR
set -eu
py=$1 mm=$2 tok=$3 out=$4
mkdir -p "$out"
make() { # name, flags...: written beside, then moved in place, so a reader never sees half a model
    name=$1; shift
    rm -rf "$out/$name.tmp"
    "$py" "$mm" --tokenizer-dir "$tok" --out "$out/$name.tmp" --gguf none "$@"
    rm -rf "$out/$name"
    mv "$out/$name.tmp" "$out/$name"
}
make dense --seed 11
make dense-sharded --seed 11 --shards 3
make moe --seed 12 --moe
make moe16 --seed 13 --moe --experts 16 --experts-per-tok 4
make moe128 --seed 14 --moe --experts 128 --experts-per-tok 8 --hidden 64 --heads 2 --kv-heads 1 --moe-ffn 32
make dense-fp8 --seed 15 --fp8
make moe-fp8 --seed 16 --moe --fp8
echo "models in $out: dense dense-sharded moe moe16 moe128 dense-fp8 moe-fp8"
