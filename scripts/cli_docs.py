#!/usr/bin/python3
"""cli_docs.py: docs/cli.md's option lists are the binaries' own --help output.

Every fenced block in the page whose first line is `usage: tandem CMD ...`,
`usage: tandemctl ...` (CMD or the command list) or `$ tandem --help` is replaced by what that command prints
for --help now (the option tables in cli/ are the one source). With --check nothing
is written: the blocks that differ are shown and the exit status is 1.

usage: cli_docs.py TANDEM TANDEMCTL DOCS_CLI_MD [--check]
"""
import difflib
import re
import subprocess
import sys


def help_text(tandem, tandemctl, first_line):
    if first_line == "$ tandem --help":
        return first_line + "\n" + run([tandem, "--help"])
    m = re.match(r"usage: tandem ([a-z-]+)", first_line)
    if m:
        return run([tandem, m.group(1), "--help"])
    m = re.match(r"usage: tandemctl ([a-z-]+)", first_line)
    if m:
        return run([tandemctl, m.group(1), "--help"])
    if first_line.startswith("usage: tandemctl"):
        return run([tandemctl, "--help"])
    return None


def run(argv):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        sys.exit(f"{' '.join(argv)}: exit status {p.returncode}: {p.stderr.strip()}")
    return p.stdout


def main():
    if len(sys.argv) not in (4, 5) or (len(sys.argv) == 5 and sys.argv[4] != "--check"):
        sys.exit(__doc__.strip().splitlines()[-1])
    tandem, tandemctl, path = sys.argv[1:4]
    check = len(sys.argv) == 5
    with open(path, encoding="utf-8") as f:
        page = f.read()
    stale, blocks = [], 0

    def replace(m):
        nonlocal blocks
        body = m.group(1)
        want = help_text(tandem, tandemctl, body.split("\n", 1)[0])
        if want is None:
            return m.group(0)
        blocks += 1
        if want != body:
            stale.append("".join(difflib.unified_diff(body.splitlines(True), want.splitlines(True),
                                                      "docs", "--help")))
        return "```\n" + want + "```\n"

    new = re.sub(r"```\n(.*?)```\n", replace, page, flags=re.S)
    if blocks == 0:
        sys.exit(f"{path}: no usage blocks found")
    if check:
        for d in stale:
            print(d)
        print(f"{path}: {blocks} usage blocks, {len(stale)} differ from --help"
              + (" (run scripts/cli_docs.py to update them)" if stale else ""))
        return 1 if stale else 0
    with open(path, "w", encoding="utf-8") as f:
        f.write(new)
    print(f"{path}: {blocks} usage blocks, {len(stale)} updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
