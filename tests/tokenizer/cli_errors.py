#!/usr/bin/python3
"""cli_errors.py: `tandem tokenize` as a user runs it, bad input included.

Every bad input must exit non-zero with exactly one line on stderr that names the
problem, and never crash; good input gives {"ids": [...]} lines.

usage: cli_errors.py TANDEM MODEL_DIR
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from vocab import Vocab  # noqa: E402

tandem, model = sys.argv[1], sys.argv[2]
vocab = Vocab(model)  # expected ids come from the real tokenizer.json, named by their text
failures = 0


def run(args, stdin=None):
    r = subprocess.run([tandem, "tokenize"] + args, input=stdin, capture_output=True, timeout=120)
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


def expect_error(name, args, needle, code=None, stdin=None):
    global failures
    rc, out, err = run(args, stdin)
    lines = err.strip("\n").split("\n")
    ok = rc > 0 and (code is None or rc == code) and len(lines) == 1 and needle in err
    if not ok:
        failures += 1
        print(f"FAIL {name}: rc={rc} stderr={err!r}")
    else:
        print(f"ok   {name}: {lines[0]}")
    return out


def expect_ids(name, args, want_lines, stdin=None):
    global failures
    rc, out, err = run(args, stdin)
    got = [json.loads(l)["ids"] for l in out.splitlines()] if rc == 0 else None
    if rc != 0 or got != want_lines:
        failures += 1
        print(f"FAIL {name}: rc={rc} out={out!r} err={err!r} want={want_lines}")
    else:
        print(f"ok   {name}")


M = ["--model", model]
expect_error("no arguments", [], "needs --model", 2)
expect_error("both --text and --file", M + ["--text", "a", "--file", "x"], "exactly one", 2)
expect_error("unknown option", M + ["--text", "a", "--bogus"], "--bogus", 2)
expect_error("missing model dir", ["--model", "/nonexistent/m", "--text", "a"], "/nonexistent/m/tokenizer.json", 1)
expect_error("missing file", M + ["--file", "/nonexistent/input.txt"], "/nonexistent/input.txt", 1)
# Arguments are bytes: an invalid --text must be refused, not encoded.
r = subprocess.run([tandem.encode(), b"tokenize", b"--model", model.encode(), b"--text", b"ok\xc3\x28"],
                   capture_output=True, timeout=120)
if r.returncode != 1 or r.stderr.count(b"\n") != 1 or b"not valid UTF-8" not in r.stderr:
    failures += 1
    print(f"FAIL invalid UTF-8 in --text: rc={r.returncode} stderr={r.stderr!r}")
else:
    print(f"ok   invalid UTF-8 in --text: {r.stderr.decode().strip()}")
with tempfile.TemporaryDirectory() as tmp:
    bad = os.path.join(tmp, "bad.txt")
    with open(bad, "wb") as f:
        f.write(b"hello \xed\xa0\x80 surrogate")
    expect_error("invalid UTF-8 file", M + ["--file", bad], "not valid UTF-8", 1)
    lines = os.path.join(tmp, "lines.jsonl")
    with open(lines, "w") as f:
        f.write('"hello"\n{"not": "a string"}\n')
    out = expect_error("JSON line that is not a string", M + ["--jsonl", "--file", lines], "line 2", 1)
    if out.splitlines() != [json.dumps({"ids": vocab.ids("hello")})]:
        failures += 1
        print(f"FAIL lines before the bad one are printed: {out!r}")
    with open(lines, "w") as f:
        f.write('"a\\u0000b"\n')
    expect_error("escaped NUL", M + ["--jsonl", "--file", lines], "NUL", 1)
    with open(lines, "w") as f:
        f.write('"\\ud800"\n')
    expect_error("lone surrogate escape", M + ["--jsonl", "--file", lines], "line 1", 1)
    broken = os.path.join(tmp, "broken")
    os.mkdir(broken)
    with open(os.path.join(model, "tokenizer.json"), "rb") as src:
        data = src.read()
    with open(os.path.join(broken, "tokenizer.json"), "wb") as f:
        f.write(data[: len(data) // 2])
    expect_error("truncated tokenizer.json", ["--model", broken, "--text", "a"], "not valid JSON", 1)
    with open(os.path.join(broken, "tokenizer.json"), "w") as f:
        f.write('{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}}')
    expect_error("merge with unknown token", ["--model", broken, "--text", "a"], "merge 0", 1)

    expect_ids("special tokens recognised", M + ["--text", "<|im_start|>user"], [vocab.ids("<|im_start|>", "user")])
    expect_ids("--no-special encodes them as text", M + ["--no-special", "--text", "<|im_end|>"],
               [vocab.ids("<", "|", "im", "_end", "|", ">")])
    expect_ids("--no-special still matches <think>", M + ["--no-special", "--text", "<think>"],
               [vocab.ids("<think>")])
    expect_ids("empty text", M + ["--text", ""], [[]])
    expect_ids("stdin", M + ["--file", "-"], [vocab.ids("hello", " world")], stdin=b"hello world")
    with open(lines, "wb") as f:
        f.write(b'"hello"\r\n\n  \n"\\ud83d\\ude00 world"')
    expect_ids("jsonl with CRLF, blank lines, escapes, no final newline", M + ["--jsonl", "--file", lines],
               [vocab.ids("hello"), vocab.ids("😀", " world")])

if failures:
    print(f"{failures} failures")
    sys.exit(1)
print("PASS")
