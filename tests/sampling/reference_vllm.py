"""reference_vllm.py PROBE: the sampler against a NumPy transcription of vLLM v1.

vLLM v1 (vllm/v1/sample/sampler.py, ops/topk_topp_sampler.py, ops/penalties.py):
penalties (repetition on prompt+output: divide positive logits, multiply the others;
frequency x output count; presence on output), greedy below temperature 1e-5, then
temperature, min-p (p < min_p * p_max removed), then top-k (logits below the k-th
largest removed, ties kept) and top-p (ascending sort, cumulative softmax, drop while
cumsum <= 1 - p, the largest always kept). Logprobs: log_softmax of the raw logits.

Random cases with logits, penalties and filters; for each, the distribution the sampler
draws from must equal the reference's (same support, probabilities within 1e-5), the
sampled token must lie in the support, and the logprobs must match. Cases whose top-p or
min-p cut falls within 1e-4 of a boundary are redrawn (float order could decide them)."""
import json
import subprocess
import sys

import numpy as np


def softmax(x):
    m = np.max(x)
    e = np.exp(x - m)
    return e / e.sum()


def vllm_v1_probs(logits, c):
    """Returns (probs, margin): margin is how far the filters' cuts are from a tie."""
    l = logits.astype(np.float64).copy()
    V = len(l)
    prompt = np.array(c["prompt"], dtype=np.int64)
    gen = np.array(c["generated"], dtype=np.int64)
    seen = np.zeros(V, bool)
    seen[prompt] = True
    seen[gen] = True
    counts = np.bincount(gen, minlength=V) if len(gen) else np.zeros(V)
    rep = c["repetition_penalty"]
    l = np.where(seen & (l > 0), l / rep, np.where(seen & (l <= 0), l * rep, l))
    l = l - c["frequency_penalty"] * counts - c["presence_penalty"] * (counts > 0)
    margin = 1.0
    if c["temperature"] < 1e-5:
        p = np.zeros(V)
        p[np.argmax(l)] = 1.0
        return p, margin
    l = l / c["temperature"]
    if c["min_p"] > 0:
        p = softmax(l)
        ratio = p / p.max()
        margin = min(margin, np.min(np.abs(ratio - c["min_p"])))
        l[p < c["min_p"] * p.max()] = -np.inf
    order = np.argsort(l, kind="stable")
    ls = l[order]
    k = c["top_k"]
    if 0 < k < V:
        ls[ls < ls[V - k]] = -np.inf
    if c["top_p"] < 1:
        cs = np.cumsum(softmax(ls))
        cut = cs <= 1 - c["top_p"]
        cut[-1] = False
        margin = min(margin, np.min(np.abs(cs - (1 - c["top_p"]))))
        ls[cut] = -np.inf
    l[order] = ls
    return softmax(l), margin


def random_case(rng):
    V = int(rng.choice([5, 17, 64, 300, 2000, 4000]))
    logits = (rng.standard_normal(V) * rng.choice([0.5, 2.0, 5.0])).astype(np.float32)
    if rng.random() < 0.2:
        logits[rng.integers(0, V, size=V // 4)] = -np.inf
        logits[rng.integers(0, V)] = 1.0
    c = {
        "temperature": float(rng.choice([0.0, 0.3, 0.7, 1.0, 1.5])),
        "top_k": int(rng.choice([0, -1, 1, 3, 10, 50, 1500])),  # 1500: past the heap path
        "top_p": float(rng.choice([1.0, 0.95, 0.8, 0.5, 0.1])),
        "min_p": float(rng.choice([0.0, 0.0, 0.05, 0.2])),
        "presence_penalty": float(rng.choice([0.0, 0.5, -0.3])),
        "frequency_penalty": float(rng.choice([0.0, 0.4, -0.2])),
        "repetition_penalty": float(rng.choice([1.0, 1.3, 0.8])),
        "seed": int(rng.integers(0, 2**62)),
        "prompt": rng.integers(0, V, size=int(rng.integers(0, 12))).tolist(),
        "generated": rng.integers(0, V, size=int(rng.integers(0, 12))).tolist(),
        "n_top": int(rng.integers(0, 21)),
    }
    return logits, c


def main():
    probe = sys.argv[1]
    rng = np.random.default_rng(2024)
    cases = []
    while len(cases) < 600:
        logits, c = random_case(rng)
        ref, margin = vllm_v1_probs(logits, c)
        if margin < 1e-4:
            continue
        c["logits"] = [None if np.isneginf(x) else float(x) for x in logits]
        cases.append((logits, c, ref))
    text = "".join(json.dumps(c) + "\n" for _, c, _ in cases)
    out = subprocess.run([probe], input=text, capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert len(lines) == len(cases), (len(lines), len(cases))
    bad = 0
    for n, ((logits, c, ref), line) in enumerate(zip(cases, lines)):
        r = json.loads(line)
        if r.get("error"):
            print(f"case {n}: sampler refused", c)
            bad += 1
            continue
        got = np.array(r["probs"])
        raw_lp = logits.astype(np.float64) - (np.max(logits) + np.log(np.sum(np.exp(logits.astype(np.float64) - np.max(logits)))))
        problems = []
        if not np.array_equal(got > 0, ref > 0):
            problems.append(f"support {np.flatnonzero(got > 0)[:20]} vs {np.flatnonzero(ref > 0)[:20]}")
        if np.max(np.abs(got - ref)) > 1e-5:
            problems.append(f"max |p - ref| = {np.max(np.abs(got - ref)):.3g}")
        if ref[r["id"]] <= 0:
            problems.append(f"sampled {r['id']} outside the support")
        if abs(r["logprob"] - raw_lp[r["id"]]) > 1e-4:
            problems.append(f"logprob {r['logprob']} vs {raw_lp[r['id']]}")
        want_top = sorted(range(len(logits)), key=lambda i: (-logits[i], i))[: min(c["n_top"], len(logits))]
        if [t[0] for t in r["top"]] != want_top:
            problems.append(f"top ids {[t[0] for t in r['top']]} vs {want_top}")
        elif any(abs(t[1] - raw_lp[t[0]]) > 1e-4 for t in r["top"] if np.isfinite(raw_lp[t[0]])):
            problems.append("top logprobs differ")
        if problems:
            bad += 1
            print(f"case {n} (V={len(logits)}, {({k: v for k, v in c.items() if k not in ('logits',)})}): " + "; ".join(problems))
    print(f"reference_vllm: {len(cases) - bad}/{len(cases)} cases match vLLM v1's distribution")
    sys.exit(1 if bad else 0)


main()
