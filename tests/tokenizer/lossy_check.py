#!/usr/bin/python3
"""lossy_check.py: tandem's decoding of invalid UTF-8 against CPython's decoder.

Random byte strings, biased towards the bytes where UTF-8 decoders disagree (lead bytes
E0 ED F0 F4, continuations at range edges), go through lossy_decode (one token per byte,
decoded whole and streamed). Each must equal bytes.decode("utf-8", "replace"): one U+FFFD
per maximal invalid subpart, which is also what Hugging Face's decoder (Rust's
String::from_utf8_lossy) produces.

usage: lossy_check.py LOSSY_DECODE MODEL_DIR
"""
import random
import subprocess
import sys

rng = random.Random(20261129)
EDGES = [0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5,
         0xFF, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF]
cases = []
for _ in range(20000):
    n = rng.randint(1, 12)
    cases.append(bytes(rng.choice([rng.randint(0x80, 0xBF), rng.randint(0xC0, 0xFF), rng.randint(0, 0x7F),
                                   rng.choice(EDGES)]) for _ in range(n)))
r = subprocess.run([sys.argv[1], sys.argv[2]], input="".join(c.hex() + "\n" for c in cases),
                   capture_output=True, text=True, timeout=300)
if r.returncode != 0:
    sys.exit(f"FAIL: lossy_decode exited {r.returncode}: {r.stderr.strip()}")
out = r.stdout.splitlines()
if len(out) != len(cases):
    sys.exit(f"FAIL: {len(out)} outputs for {len(cases)} inputs")
bad = 0
for c, got in zip(cases, out):
    want = c.decode("utf-8", "replace").encode("utf-8").hex()
    if got != want:
        bad += 1
        if bad <= 10:
            print(f"MISMATCH {c.hex()}: tandem {got}, CPython {want}")
if bad:
    sys.exit(f"FAIL: {bad} of {len(cases)} byte strings decode differently")
print(f"PASS: {len(cases)} byte strings decode as CPython does, streamed and whole")
