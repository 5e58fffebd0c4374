"""fuzz_whitespace.py: random templates of text and tags, C vs Jinja2, byte for byte.

Whitespace control is where a Jinja reimplementation most easily drifts: `-` and `+`
modifiers on every tag kind, trim_blocks, lstrip_blocks, comments, raw blocks, CRLF,
tabs and Unicode spaces, in every order. This builds random templates from those pieces
(seeded, so a failure reproduces) and compares jinja_run with Jinja2 configured as
transformers does. Both failing (e.g. a stray endif) also counts as agreement.

Usage: /usr/bin/python3 fuzz_whitespace.py --jinja-run BIN [--seed N] [--count N]
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jinja_ref  # noqa: E402

TEXT = [" ", "  ", "\t", "\n", "\n\n", "a", "b c", " x ", "\n  ", "  \n", "\r\n", "\u3000", "é", "\t\n\t"]
SIGNS = ["", "-", "+"]
VARS = {"x": "X", "t": True, "l": [1, 2]}


def text(rng, n):
    return "".join(rng.choice(TEXT) for _ in range(n))


def tag(rng):
    kind = rng.choice(["if", "var", "comment", "for", "set", "raw"])
    l, r = rng.choice(SIGNS), rng.choice(SIGNS)
    if kind == "var":
        return "{{%s x %s}}" % (rng.choice(["", "-"]), rng.choice(["", "-"]))
    if kind == "comment":
        return "{#%s c %s#}" % (l, r)
    if kind == "set":
        return "{%%%s set y = 1 %s%%}" % (l, r)
    if kind == "raw":
        return "{%%%s raw %s%%}%s{%%%s endraw %s%%}" % (l, rng.choice(["", "-"]), text(rng, 2), rng.choice(SIGNS),
                                                        rng.choice(SIGNS))
    if kind == "if":
        return "{%%%s if t %s%%}%s{%%%s endif %s%%}" % (l, r, text(rng, 3), rng.choice(SIGNS), rng.choice(SIGNS))
    return "{%%%s for i in l %s%%}%s{{ i }}%s{%%%s endfor %s%%}" % (l, r, text(rng, 1), text(rng, 1),
                                                                  rng.choice(SIGNS), rng.choice(SIGNS))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jinja-run", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--count", type=int, default=800)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        vpath, tpath = os.path.join(tmp, "vars.json"), os.path.join(tmp, "t.jinja")
        with open(vpath, "w") as f:
            json.dump(VARS, f)
        for _ in range(args.count):
            src = "".join(rng.choice(TEXT) if rng.random() < 0.6 else tag(rng) for _ in range(rng.randint(1, 12)))
            try:
                want = jinja_ref.compile_template(src).render(**VARS).encode("utf-8")
            except Exception:
                want = None
            with open(tpath, "w", encoding="utf-8", newline="") as f:
                f.write(src)
            run = subprocess.run([args.jinja_run, tpath, vpath], capture_output=True, timeout=60)
            got = run.stdout if run.returncode == 0 else None
            if got != want:
                bad += 1
                print("FAIL %r\n   C:      %r %s\n   Jinja2: %r" % (src, got, run.stderr.decode().strip(), want))
    print("whitespace fuzz (seed %d): %d of %d random templates agree with Jinja2"
          % (args.seed, args.count - bad, args.count))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
