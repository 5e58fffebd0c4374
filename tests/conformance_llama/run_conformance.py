#!/usr/bin/python3
"""Greedy generation of `tandem generate --raw --json` against llama.cpp on the same
weights (tests/tools/llama_ref.mjs on the GGUF that make_model.py writes beside the
Hugging Face folder), over dense and MoE shapes and prompts of 1 to ~500 tokens.

Per prompt: the prompt ids must be equal; the generated ids must be equal, except
that where they first differ llama.cpp's top-1 and top-2 probabilities must be a
near tie (gap < 0.02); before that point the top-1 probabilities must agree within
2e-3. Nothing after a divergence is compared (the sequences differ from there).

usage: run_conformance.py --tandem BIN --make-model PY --tokenizer-dir DIR
                          --llama-ref MJS --node NODE --work DIR [--only NAME]"""
import argparse, json, math, os, shutil, subprocess, sys, time

N_TOKENS = 16
GAP = 0.02
PROB_TOL = 2e-3

# name: make_model.py flags. Every real Qwen3 has head_dim != hidden / heads; so do these.
CASES = {
    "dense-gqa1":        ["--hidden", "96", "--layers", "3", "--heads", "4", "--kv-heads", "4", "--head-dim", "32",
                          "--ffn", "256"],
    "dense-gqa2":        ["--hidden", "128", "--layers", "3", "--heads", "4", "--kv-heads", "2", "--head-dim", "64",
                          "--ffn", "256"],
    "dense-gqa4-untied": ["--hidden", "128", "--layers", "4", "--heads", "8", "--kv-heads", "2", "--head-dim", "32",
                          "--ffn", "192", "--untied"],
    "dense-f16-sharded": ["--hidden", "64", "--layers", "3", "--heads", "4", "--kv-heads", "2", "--head-dim", "32",
                          "--ffn", "160", "--dtype", "f16", "--shards", "3"],
    "dense-f32-yarn":    ["--hidden", "64", "--layers", "3", "--heads", "2", "--kv-heads", "1", "--head-dim", "64",
                          "--ffn", "160", "--dtype", "f32", "--yarn", "4", "--yarn-orig", "256"],
    "moe-16x4-gqa4":     ["--moe", "--hidden", "64", "--layers", "3", "--heads", "8", "--kv-heads", "2",
                          "--head-dim", "32", "--experts", "16", "--experts-per-tok", "4", "--moe-ffn", "48"],
    "moe-8x2-gqa2":      ["--moe", "--hidden", "96", "--layers", "3", "--heads", "4", "--kv-heads", "2",
                          "--head-dim", "48", "--experts", "8", "--experts-per-tok", "2", "--moe-ffn", "64"],
}

SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "In 1969, astronauts landed on the Moon and walked on its dusty surface for hours.",
    "def add(a, b):\n    return a + b  # a tiny function\n",
    "Les chats dorment souvent au soleil, mais les chiens préfèrent jouer dehors.",
    "Quantum computers use qubits, which can hold superpositions of 0 and 1.",
    "东京是日本的首都，也是世界上人口最多的城市之一。",
    "She counted 3, 14, 159 and 2653 apples before the market closed at 6 pm.",
]

def prompts():
    long = " ".join(SENTENCES[i % len(SENTENCES)] for i in range(26))
    return ["Hello", "The capital of France is", " ".join(SENTENCES[:4]), long]

def run_case(name, flags, a):
    out = os.path.join(a.work, name)
    shutil.rmtree(out, ignore_errors=True)
    seed = 100 + sorted(CASES).index(name)
    subprocess.run([sys.executable, a.make_model, "--tokenizer-dir", a.tokenizer_dir, "--out", out,
                    "--gguf", "f32", "--seed", str(seed), *flags], check=True)
    ps = prompts()
    ref = subprocess.run([a.node, a.llama_ref, os.path.join(out, "model-f32.gguf"), str(N_TOKENS)],
                         input=json.dumps(ps), capture_output=True, text=True, check=True)
    refs = json.loads(ref.stdout)
    problems, report = [], []
    for prompt, r in zip(ps, refs):
        p = subprocess.run([a.tandem, "generate", "--model", out, "--prompt", prompt, "--raw", "--json",
                            "--max-tokens", str(N_TOKENS), "--temperature", "0", "--top-logprobs", "2"],
                           capture_output=True, text=True)
        if p.returncode != 0:
            problems.append(f"tandem failed: {p.stderr.strip()}")
            continue
        t = json.loads(p.stdout)
        n_prompt = len(r["prompt_tokens"])
        if t["prompt_tokens"] != r["prompt_tokens"]:
            problems.append(f"{n_prompt}-token prompt: prompt ids differ")
            continue
        max_dp, same = 0.0, 0
        for i, (a_id, b_id) in enumerate(zip(r["tokens"], t["tokens"])):
            top = r["top"][i]
            if a_id != b_id:
                gap = top[0][1] - top[1][1]
                note = f"differs at step {i} (llama {a_id} p={top[0][1]:.4f}, 2nd p={top[1][1]:.4f}; tandem {b_id})"
                if gap >= GAP:
                    problems.append(f"{n_prompt}-token prompt: {note}: not a near tie")
                report.append(f"{n_prompt}-token prompt: {note}, a near tie")
                break
            same += 1
            dp = abs(top[0][1] - math.exp(t["logprobs"][i]["logprob"]))
            max_dp = max(max_dp, dp)
            if dp > PROB_TOL:
                problems.append(f"{n_prompt}-token prompt: step {i}: top-1 probability llama {top[0][1]:.5f} "
                                f"tandem {math.exp(t['logprobs'][i]['logprob']):.5f}")
        if same == len(r["tokens"]) and len(t["tokens"]) != len(r["tokens"]):
            problems.append(f"{n_prompt}-token prompt: {len(t['tokens'])} tokens, llama.cpp {len(r['tokens'])}")
        report.append(f"{n_prompt:4d}-token prompt: {same}/{len(r['tokens'])} ids equal, "
                      f"max |p1 diff| {max_dp:.2e}")
    if not a.keep:
        shutil.rmtree(out, ignore_errors=True)
    return problems, report

def main():
    ap = argparse.ArgumentParser()
    for opt in ("--tandem", "--make-model", "--tokenizer-dir", "--llama-ref", "--node", "--work"):
        ap.add_argument(opt, required=True)
    ap.add_argument("--only")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoints")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    failed = 0
    for name, flags in CASES.items():
        if a.only and a.only != name:
            continue
        t0 = time.time()
        problems, report = run_case(name, flags, a)
        status = "FAIL" if problems else "ok"
        print(f"{status:4s} {name} ({time.time() - t0:.0f} s)")
        for line in report:
            print("       " + line)
        for line in problems:
            print("   !!  " + line)
        failed += bool(problems)
    if failed:
        sys.exit(f"{failed} case(s) differ from llama.cpp")
    print("all cases agree with llama.cpp")

if __name__ == "__main__":
    main()
