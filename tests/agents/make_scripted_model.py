#!/usr/bin/python3
"""make_scripted_model.py TANDEM TOKENIZER_DIR SCRIPTS_JSON OUT_DIR

Writes a Qwen3 checkpoint in the Hugging Face layout (config.json, model.safetensors in
bf16, generation_config.json, the real tokenizer files) whose greedy (and, by its
margins, sampled) output after the chat template's generation prompt is an exact chosen
text: a tool call, a think block, two calls, malformed JSON (scripts.json). Real weights
through the real forward pass: the same code path a downloaded Qwen3 takes.

How one layer writes a script. Texts are tokenized with the real tokenizer (through
`tandem tokenize`); each step of a script is a transition
    (markers in the context, the last three tokens) -> next token.
A token repeats inside Qwen's format ("\\n", ' "', <tool_call>), so the next token cannot
be a function of the current one alone. The layer's attention gives every position
its context, written into separate parts of the residual stream:
  - two "previous token" heads: all positions have the same key, and RoPE makes the
    query-key score peak sharply at distance 1 (and 2); the value is the token's code;
  - one head per marker token: only that token has a key, so the head reads 1 once the
    marker occurs anywhere before (a <tool_response> in the prompt, a trigger word in
    the user's message, or "Paris" already written, which tells a second call from the
    first).
The MLP is a lookup table: one unit per transition fires only when all its features
are present (SiLU of a sum over a threshold) and writes the next token's code, which the
untied lm_head turns into a logit far above every other. Each transition uses as few
previous tokens as tell it apart from the others with the same current token; a script
set that cannot be told apart fails here, loudly, and so does a designed margin below 25
(previous-token and marker attention scores, the next token's logit over the others).
Whether the engine then writes the scripts exactly is what tests/agents/agents.mjs checks.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from make_model import stored, write_safetensors  # noqa: E402  (the fixture's own writers)

EOS = 151645  # <|im_end|>: generation_config's eos_token_id, checked against the tokenizer
EOT = 151643  # <|endoftext|>: Qwen3's bos/pad id in config.json, checked against the tokenizer
VOCAB = 151936  # vocab_size in Qwen3's config.json
HIDDEN, HEAD_DIM, N_HEADS = 128, 64, 8
CODES = 64                      # residual dims [0, 64): the current (and next) token's code
PREV = 24                       # prev1 code in [64, 88), prev2 code in [88, 112)
MARK0, N_MARK = 112, N_HEADS - 2  # marker flags in [112, 118)
BIAS_DIM = HIDDEN - 1           # a constant every token has; sets the scale of the rest
BIAS = 10.0                     # large, so that the norm scale hardly depends on the features
ALPHA, OUT, LOGIT = 40.0, 10.0, 6.0  # MLP sharpness, MLP output size, lm_head scale
THETA = 1e6
PREV_PAIRS = 10                 # RoPE pairs 0..9 make the previous-token score peak
PREV_NORM = 7.0                 # q_norm/k_norm weight on those pairs
MARK_PAIR, MARK_NORM = HEAD_DIM // 2 - 1, 3.0  # slowest pair: position-blind marker keys
STARTS = {"think": "<|im_start|>assistant\n", "no_think": "<think>\n\n</think>\n\n"}


def fail(msg):
    sys.exit(f"make_scripted_model: {msg}")


def tokenize(tandem, tok_dir, texts):
    lines = "".join(json.dumps(t) + "\n" for t in texts)
    out = subprocess.run([tandem, "tokenize", "--model", tok_dir, "--jsonl", "--file", "-"], input=lines.encode(),
                         capture_output=True, check=True).stdout.decode().splitlines()
    return [json.loads(line)["ids"] for line in out]


def transitions(scripts, markers, tandem, tok_dir):
    """[(marker_set, prev2, prev1, cur, next, script name)] over every script."""
    starts = dict(zip(STARTS, tokenize(tandem, tok_dir, list(STARTS.values()))))
    marker_ids = tokenize(tandem, tok_dir, markers)
    for m, ids in zip(markers, marker_ids):
        if len(ids) != 1:
            fail(f"marker {m!r} is {len(ids)} tokens, not one")
    marker_of = {ids[0]: i for i, ids in enumerate(marker_ids)}
    texts = tokenize(tandem, tok_dir, [s["text"] for s in scripts])
    out = []
    for s, ids in zip(scripts, texts):
        state = set()
        for m in s["present"]:
            if m not in markers:
                fail(f"script {s['name']}: unknown marker {m!r}")
            state.add(markers.index(m))
        seq = starts[s["start"]][-3:] + ids + [EOS]
        for p in range(2, len(seq) - 1):
            out.append((frozenset(state), seq[p - 2], seq[p - 1], seq[p], seq[p + 1], s["name"]))
            if seq[p + 1] in marker_of:
                state.add(marker_of[seq[p + 1]])
    return out


def units(trans):
    """The MLP's lookup entries: (marker_set, prev2 or None, prev1 or None, cur, next),
    with the fewest previous tokens that tell each group (markers, cur) apart."""
    groups = {}
    for ms, p2, p1, cur, nxt, name in trans:
        groups.setdefault((ms, cur), []).append((p2, p1, nxt, name))
    out = set()
    for (ms, cur), g in groups.items():
        for depth in (0, 1, 2):
            table = {}
            ok = True
            for p2, p1, nxt, name in g:
                key = (p2 if depth == 2 else None, p1 if depth >= 1 else None)
                if table.setdefault(key, (nxt, name))[0] != nxt:
                    ok = False
            if ok:
                out |= {(ms, k[0], k[1], cur, v[0]) for k, v in table.items()}
                break
        else:
            names = sorted({x[3] for x in g})
            fail(f"scripts {names}: token {cur} is followed by different tokens after the same three tokens")
    return sorted(out, key=lambda u: (sorted(u[0]), u[1] or -1, u[2] or -1, u[3], u[4]))


def slots(items, size, what):
    order = sorted(set(items))
    if len(order) > size:
        fail(f"{len(order)} {what} tokens; at most {size} fit")
    return {t: i for i, t in enumerate(order)}


def build(scripts_path, tandem, tok_dir):
    spec = json.load(open(scripts_path))
    markers = spec["markers"]
    if len(markers) > N_MARK:
        fail(f"{len(markers)} markers; at most {N_MARK} fit")
    trans = transitions(spec["scripts"], markers, tandem, tok_dir)
    table = units(trans)
    marker_ids = [ids[0] for ids in tokenize(tandem, tok_dir, markers)]
    code = slots([t for tr in trans for t in tr[1:5]], CODES, "distinct script")
    prev1 = slots([u[2] for u in table if u[2] is not None], PREV, "previous")
    prev2 = slots([u[1] for u in table if u[1] is not None], PREV, "second previous")

    # A feature present in the residual has size 1 before the norm; after it, s0.
    s0 = np.sqrt(HIDDEN / (BIAS ** 2 + 4))
    H, D = HIDDEN, HEAD_DIM
    W = {}
    emb = np.zeros((VOCAB, H), np.float32)
    emb[:, BIAS_DIM] = BIAS
    for t, i in code.items():
        emb[t, i] = 1
    for j, t in enumerate(marker_ids):
        emb[t, MARK0 + j] = 1
    W["model.embed_tokens.weight"] = emb

    q = np.zeros((N_HEADS * D, H), np.float32)
    k = np.zeros((N_HEADS * D, H), np.float32)
    v = np.zeros((N_HEADS * D, H), np.float32)
    o = np.zeros((H, N_HEADS * D), np.float32)
    theta = THETA ** (-np.arange(D // 2) / (D // 2))
    for h, (dist, slot, base) in enumerate(((1, prev1, CODES), (2, prev2, CODES + PREV))):
        # score(distance) = sum over pairs of cos(theta_i (distance - dist)): peaks at dist
        for i in range(PREV_PAIRS):
            k[h * D + i, BIAS_DIM] = 1
            q[h * D + i, BIAS_DIM] = np.cos(dist * theta[i])
            q[h * D + D // 2 + i, BIAS_DIM] = -np.sin(dist * theta[i])
        for t, j in slot.items():
            v[h * D + j, code[t]] = 1
            o[base + j, h * D + j] = 1 / s0
    for j in range(len(markers)):
        h = 2 + j
        q[h * D + MARK_PAIR, BIAS_DIM] = 1
        k[h * D + MARK_PAIR, MARK0 + j] = 1
        v[h * D, MARK0 + j] = 1
        o[MARK0 + j, h * D] = 1 / s0
    norm_w = np.ones(D, np.float32)
    norm_w[list(range(PREV_PAIRS)) + list(range(D // 2, D // 2 + PREV_PAIRS))] = PREV_NORM
    norm_w[[MARK_PAIR, D - 1]] = MARK_NORM

    n_units = len(table)
    ffn = -(-n_units // 64) * 64
    gate = np.zeros((ffn, H), np.float32)
    up = np.zeros((ffn, H), np.float32)
    down = np.zeros((H, ffn), np.float32)
    for u, (ms, p2, p1, cur, nxt) in enumerate(table):
        need = [code[cur]] + [MARK0 + j for j in ms]
        if p1 is not None:
            need.append(CODES + prev1[p1])
        if p2 is not None:
            need.append(CODES + PREV + prev2[p2])
        gate[u, need] = ALPHA
        gate[u, [MARK0 + j for j in range(len(markers)) if j not in ms]] = -ALPHA
        gate[u, BIAS_DIM] = -ALPHA * (len(need) - 0.5) / BIAS
        up[u, BIAS_DIM] = 1 / (BIAS * s0)
        down[code[nxt], u] = OUT / (0.5 * ALPHA * s0)
    lm = np.zeros((VOCAB, H), np.float32)
    for t, i in code.items():
        lm[t, i] = LOGIT

    p = "model.layers.0."
    W[p + "input_layernorm.weight"] = np.ones(H, np.float32)
    W[p + "self_attn.q_proj.weight"] = q
    W[p + "self_attn.k_proj.weight"] = k
    W[p + "self_attn.v_proj.weight"] = v
    W[p + "self_attn.o_proj.weight"] = o
    W[p + "self_attn.q_norm.weight"] = norm_w
    W[p + "self_attn.k_norm.weight"] = norm_w.copy()
    W[p + "post_attention_layernorm.weight"] = np.ones(H, np.float32)
    W[p + "mlp.gate_proj.weight"] = gate
    W[p + "mlp.up_proj.weight"] = up
    W[p + "mlp.down_proj.weight"] = down
    W["model.norm.weight"] = np.ones(H, np.float32)
    W["lm_head.weight"] = lm
    check_margins(theta)
    return W, ffn, len(trans), n_units, len(code)


def check_margins(theta):
    """The designed margins, before any weight is written: the previous-token score at
    its distance against every other distance the context allows, and the logit of the
    next token against the current one's and the rest."""
    dist = np.arange(0, 40960)
    for d in (1, 2):
        f = sum(np.cos(theta[i] * (dist - d)) for i in range(PREV_PAIRS)) / PREV_PAIRS
        gap = (f[d] - np.delete(f, d).max()) * np.sqrt(HEAD_DIM) * PREV_NORM ** 2
        if gap < 25:
            fail(f"previous-token head {d}: score margin {gap:.1f} < 25")
    marker_score = np.sqrt(HEAD_DIM) * MARK_NORM ** 2 * np.cos(theta[MARK_PAIR] * 40960)
    if marker_score < 25 + np.log(40960):
        fail(f"marker score {marker_score:.1f} too low")
    s_final = np.sqrt(HIDDEN / (BIAS ** 2 + 8 + OUT ** 2))
    if LOGIT * s_final * (OUT - 1) < 25:
        fail("lm_head margin below 25")


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__.split("\n\n")[0])
    tandem, tok_dir, scripts, out = sys.argv[1:]
    W, ffn, n_trans, n_units, n_codes = build(scripts, tandem, tok_dir)
    os.makedirs(out, exist_ok=True)
    write_safetensors(os.path.join(out, "model.safetensors"),
                      {name: (st[0], a.shape, st[1]) for name, a in W.items() for st in [stored(a, "bf16")]})
    cfg = {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
        "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": EOT, "eos_token_id": EOS,
        "head_dim": HEAD_DIM, "hidden_act": "silu", "hidden_size": HIDDEN, "initializer_range": 0.02,
        "intermediate_size": ffn, "max_position_embeddings": 40960, "max_window_layers": 1,
        "num_attention_heads": N_HEADS, "num_hidden_layers": 1, "num_key_value_heads": N_HEADS,
        "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": THETA, "sliding_window": None,
        "use_sliding_window": False, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "use_cache": True, "vocab_size": VOCAB,
    }
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=2)
    # Qwen3's sampling defaults: the scripts must survive them, not only greedy decoding.
    json.dump({"bos_token_id": EOT, "do_sample": True, "eos_token_id": [EOS, EOT], "pad_token_id": EOT,
               "temperature": 0.6, "top_k": 20, "top_p": 0.95}, open(os.path.join(out, "generation_config.json"), "w"),
              indent=2)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(tok_dir, f), os.path.join(out, f))
    added = {a["content"]: a["id"] for a in json.load(open(os.path.join(tok_dir, "tokenizer.json")))["added_tokens"]}
    if added.get("<|im_end|>") != EOS or added.get("<|endoftext|>") != EOT:
        fail("the tokenizer's <|im_end|> or <|endoftext|> is not the id this checkpoint writes")
    print(f"scripted model in {out}: {n_trans} transitions, {n_units} MLP units, {n_codes} token codes")


if __name__ == "__main__":
    main()
