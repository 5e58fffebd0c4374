"""fuzz_mutations.py: mutated real chat templates, C vs Jinja2.

Takes the stored Qwen templates, applies a few random edits (deletions, insertions of
template syntax fragments, duplicated spans), renders each with the variables of a
random corpus request, and checks that jinja_run and Jinja2 agree: the same bytes, or
both reject the template. A rejection must be one line naming the template line, the
same line as Jinja2's for syntax errors.
This finds divergences in error handling (what is a syntax error, what is deferred to
run time) that hand-written cases miss. Seeded, so failures reproduce.

Usage: /usr/bin/python3 fuzz_mutations.py --jinja-run BIN --templates DIR [--seed N] [--count N]
"""
import argparse
import copy
import json
import os
import random
import subprocess
import sys
import tempfile
import warnings

import jinja2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import corpus  # noqa: E402
import jinja_ref  # noqa: E402

FRAGMENTS = list("{}%#-+()[]|.,:'\"~=!<>*/ \n\tabcdefgijklmnopqrstuvwxyz0123456789_\\") + [
    "{%", "%}", "{{", "}}", "{#", "#}", "endif", "endfor", "if ", "for ", " in ", " is ", "not ", "set ",
    "macro ", "call ", "raw", "loop.", "ns.", "namespace(", "|tojson", "[::-1]"]


def mutate(rng, text):
    t = list(text)
    for _ in range(rng.randint(1, 6)):
        op, p = rng.random(), rng.randrange(len(t) + 1)
        if op < 0.4 and t:
            del t[p:p + rng.randint(1, 8)]
        elif op < 0.8:
            t[p:p] = list(rng.choice(FRAGMENTS))
        else:
            q = rng.randrange(len(t) + 1)
            t[p:p] = t[q:q + rng.randint(1, 40)]
    return "".join(t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jinja-run", required=True)
    ap.add_argument("--templates", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--count", type=int, default=300)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    sources = []
    for name in sorted(os.listdir(args.templates)):
        if name.endswith(".jinja"):
            with open(os.path.join(args.templates, name), encoding="utf-8") as f:
                sources.append(f.read())
    requests = corpus.requests()
    rng = random.Random(args.seed)
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        tpath, vpath = os.path.join(tmp, "t.jinja"), os.path.join(tmp, "vars.json")
        for _ in range(args.count):
            src = mutate(rng, rng.choice(sources))
            variables = jinja_ref.prepare(rng.choice(requests)[1], {})
            with open(tpath, "w", encoding="utf-8", newline="") as f:
                f.write(src)
            with open(vpath, "w", encoding="utf-8") as f:
                json.dump(variables, f, ensure_ascii=False)
            lineno = None
            try:
                want, why = jinja_ref.compile_template(src).render(**copy.deepcopy(variables)).encode("utf-8"), None
            except jinja2.exceptions.TemplateSyntaxError as e:
                want, why, lineno = None, "%s: %s" % (type(e).__name__, e), e.lineno
            except Exception as e:
                want, why = None, "%s: %s" % (type(e).__name__, e)
            run = subprocess.run([args.jinja_run, tpath, vpath], capture_output=True, timeout=60)
            err = run.stderr.decode(errors="replace")
            got = run.stdout if run.returncode == 0 else None
            problem = None
            if got != want:
                problem = "C %r / Jinja2 %r" % (got[:120] if got else err.strip()[:120], want[:120] if want else why)
            elif got is None and (run.returncode != 1 or err.count("\n") != 1 or "template line" not in err):
                problem = "bad error report (exit %d): %r" % (run.returncode, err[:200])
            elif got is None and lineno is not None and ("template line %d:" % lineno) not in err:
                problem = "Jinja2 reports line %d (%s), C %r" % (lineno, why, err.strip()[:200])
            if problem:
                failures += 1
                print("FAIL mutated template %r...\n  %s" % (src[:60], problem))
    print("mutation fuzz (seed %d): %d of %d mutated templates agree with Jinja2"
          % (args.seed, args.count - failures, args.count))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
