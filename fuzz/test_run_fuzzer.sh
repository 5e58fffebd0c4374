#!/bin/sh
# test_run_fuzzer.sh RUN_FUZZER SELFTEST_HARNESS: run_fuzzer.sh must fail (exit 1, never
# 77, which ctest reads as "skipped") when a harness crashes or an input hangs, and pass
# when the harness behaves. libFuzzer's own exit codes for those are 77 and 70.
set -u
runner=$1 harness=$2
seeds=$(mktemp -d)
trap 'rm -rf "$seeds"' EXIT
echo seed >"$seeds/seed"
cd "$seeds" # a finding leaves its input in the working directory
fail=0
expect() { # WANT MODE: run with FUZZ_SELFTEST=MODE, the runner must exit WANT
    status=0
    FUZZ_SELFTEST=$2 sh "$runner" "$harness" "$seeds" 100 1 >"$seeds/out" 2>&1 || status=$?
    if [ "$status" = "$1" ]; then
        echo "harness that does '${2:-nothing}': run_fuzzer.sh exits $status, as it must"
    else
        tail -n 20 "$seeds/out"
        echo "harness that does '${2:-nothing}': run_fuzzer.sh exits $status, want $1"
        fail=1
    fi
}
expect 1 crash
expect 1 hang
expect 0 ""
exit $fail
