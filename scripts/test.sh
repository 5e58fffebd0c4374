#!/usr/bin/env bash
# Sets up the machine, builds Tandem five ways with warnings as errors and runs the tests:
#   gcc RelWithDebInfo   every suite
#   gcc Release          built only (-O3 shows warnings that -O2 does not)
#   clang RelWithDebInfo the unit suite
#   gcc Debug ASan+UBSan the tests labelled asan (the unit suite and more)
#   clang Debug libFuzzer the fuzz harnesses, 10,000 executions each (fuzz/, ASan+UBSan)
# and last checks that every C file is formatted (scripts/format.sh --check).
# Usage: scripts/test.sh [extra ctest args for the first run, e.g. -L unit]
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
jobs=$(nproc)

# build DIR CMAKE_ARGS...: configure with -Werror, every test's dependencies required (a
# missing one is a configure error, not a skip), and build everything.
build() {
  local dir=$1
  shift
  cmake -S . -B "$dir" -DTANDEM_WERROR=ON -DTANDEM_REQUIRE_ALL_TESTS=ON "$@" >/dev/null
  cmake --build "$dir" -j"$jobs"
}

build build -DCMAKE_BUILD_TYPE=RelWithDebInfo
(cd build && ctest --output-on-failure --timeout 1800 "$@")

build build-release -DCMAKE_BUILD_TYPE=Release

build build-clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang
(cd build-clang && ctest --output-on-failure -L unit --timeout 900)

build build-asan -DCMAKE_BUILD_TYPE=Debug -DTANDEM_SANITIZE=ON
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
   ctest --output-on-failure -L asan --timeout 900)

build build-fuzz -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang -DTANDEM_FUZZ=ON
# -V: each harness's one line (its executions and seeds, or its finding) is printed
(cd build-fuzz && ctest -V -L fuzz --timeout 900)

scripts/format.sh --check
