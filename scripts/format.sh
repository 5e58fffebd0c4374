#!/usr/bin/env bash
# Formats every C source and header in the repository with clang-format and the
# project's .clang-format. Tracked and new (not ignored) files count; build trees,
# generated code and tests/node_modules are ignored by git and so never touched.
# Usage: scripts/format.sh           rewrite files in place
#        scripts/format.sh --check   change nothing; list the files that differ, exit 1 if any
set -euo pipefail
cd "$(dirname "$0")/.."

mode=apply
case "${1:-}" in
"") ;;
--check) mode=check ;;
*) echo "usage: scripts/format.sh [--check]" >&2; exit 2 ;;
esac

clang_format=${CLANG_FORMAT:-clang-format}
if ! command -v "$clang_format" >/dev/null; then
  echo "scripts/format.sh: $clang_format not found (Debian: apt install clang-format)" >&2
  exit 2
fi
major=$("$clang_format" --version | sed -n 's/.*clang-format version \([0-9]*\).*/\1/p')
if [ "$major" != 14 ]; then
  # Other versions lay some constructs out differently, so the check would flap.
  echo "scripts/format.sh: needs clang-format 14 (found: $("$clang_format" --version))" >&2
  exit 2
fi

files=()
while IFS= read -r -d '' f; do
  [ -f "$f" ] && files+=("$f") # a deleted file is still listed until the deletion is staged
done < <(git ls-files -z --cached --others --exclude-standard -- '*.c' '*.h')
if [ "$mode" = apply ]; then
  printf '%s\0' "${files[@]}" | xargs -0 -r "$clang_format" -i
  exit 0
fi
bad=0
for f in "${files[@]}"; do
  if ! "$clang_format" "$f" | cmp -s - "$f"; then
    echo "not formatted: $f (scripts/format.sh rewrites it)"
    bad=1
  fi
done
exit $bad
