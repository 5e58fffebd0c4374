"""cli_errors.py: `tandem chat-template` on bad input gives one clear error line.

Each bad template or request must exit with status 1 (2 for bad usage), print exactly
one line on stderr naming the problem, print nothing on stdout, and not crash (under
the sanitizer build a report would make stderr longer than one line). A good request
must print the prompt and nothing else.

Usage: /usr/bin/python3 cli_errors.py --tandem BIN --qwen3 MODEL_DIR
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

GOOD = {"messages": [{"role": "user", "content": "hi"}]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandem", required=True)
    ap.add_argument("--qwen3", required=True)
    args = ap.parse_args()
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        def write(name, text):
            path = os.path.join(tmp, name)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            return path

        good = write("good.json", json.dumps(GOOD))
        broken_dir = os.path.join(tmp, "broken_model")
        os.mkdir(broken_dir)
        with open(os.path.join(broken_dir, "tokenizer_config.json"), "w") as f:
            json.dump({"chat_template": "{% for m in messages %}\n{{ m.content }\n{% endfor %}"}, f)
        cases = [
            # (arguments, expected status, text the error line must contain)
            (["--model", args.qwen3, "--request", write("a.json", "{not json")], 1, "not valid JSON"),
            (["--model", args.qwen3, "--request", write("b.json", "[]")], 1, "must be a JSON object"),
            (["--model", args.qwen3, "--request", write("c.json", "{}")], 1, "no \"messages\""),
            (["--model", args.qwen3, "--request", write("d.json", '{"messages": "hi"}')], 1, "must be a list"),
            (["--model", args.qwen3, "--request", write("e.json", '{"messages": [{"content": "x"}]}')], 1, "role"),
            (["--model", args.qwen3, "--request", write("f.json", '{"messages": [{"role": "user", "content": 3}]}')],
             1, "content must be"),
            (["--model", args.qwen3, "--request", write("g.json", json.dumps({"messages": [
                {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{bad"}}]}]}))],
             1, "not valid JSON"),
            (["--model", args.qwen3, "--request", os.path.join(tmp, "missing.json")], 1, "missing.json: No such file or directory"),
            (["--model", os.path.join(tmp, "no_such_dir"), "--request", good], 1, "cannot read"),
            (["--model", broken_dir, "--request", good], 1, "template line 2"),
            (["--template", write("t1.jinja", "ok\n{{ raise_exception('bad role') }}"), "--request", good], 1,
             "template line 2: bad role"),
            (["--template", write("t2.jinja", "{{ messages|nosuch }}"), "--request", good], 1, "no filter named"),
            (["--template", write("t3.jinja", "{{ nothing() }}"), "--request", good], 1, "'nothing' is undefined"),
            (["--template", write("t4.jinja", "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}"), "--request", good],
             1, "nested too deeply"),
            (["--template", write("t5.jinja", "{% for i in range(100000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}"),
              "--request", good], 1, "runs too long"),
            (["--template", os.path.join(tmp, "missing.jinja"), "--request", good], 1, "missing.jinja: No such file or directory"),
            (["--request", good], 2, "exactly one of --model and --template"),
            (["--model", args.qwen3], 2, "needs --request"),
            (["--model", args.qwen3, "--template", "x", "--request", good], 2, "exactly one of"),
            (["--bogus"], 2, "unknown option '--bogus'"),
        ]
        for argv, status, needle in cases:
            run = subprocess.run([args.tandem, "chat-template", *argv], capture_output=True, timeout=60)
            err = run.stderr.decode(errors="replace")
            lines = err.strip().split("\n")
            label = " ".join(argv)[-90:]
            if run.returncode != status:
                failures.append("%s: exit %d, want %d (%s)" % (label, run.returncode, status, err.strip()))
            elif status == 1 and (len(lines) != 1 or needle not in lines[0] or run.stdout):
                failures.append("%s: want one stderr line with %r and no stdout, got %r / %r"
                                % (label, needle, err, run.stdout[:80]))
            elif status == 2 and needle not in err:
                failures.append("%s: usage error lacks %r: %r" % (label, needle, err))
        run = subprocess.run([args.tandem, "chat-template", "--model", args.qwen3, "--request", good],
                             capture_output=True, timeout=60)
        if run.returncode != 0 or run.stderr or run.stdout != b"<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n":
            failures.append("good request: exit %d, stdout %r, stderr %r" % (run.returncode, run.stdout, run.stderr))
        with open(good, "rb") as f:
            run = subprocess.run([args.tandem, "chat-template", "--model", args.qwen3, "--request", "-"],
                                 stdin=f, capture_output=True, timeout=60)
        if run.returncode != 0 or not run.stdout.startswith(b"<|im_start|>user\nhi"):
            failures.append("request from stdin: exit %d, %r" % (run.returncode, run.stderr))
    for f in failures:
        print("FAIL", f)
    print("chat-template CLI: %d of %d cases as expected" % (len(cases) + 2 - len(failures), len(cases) + 2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
