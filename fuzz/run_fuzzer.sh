#!/bin/sh
# run_fuzzer.sh HARNESS SEED_DIR RUNS [TIMEOUT_S]: runs a libFuzzer harness RUNS times
# starting from its seeds (new inputs go to a scratch corpus, never into the repository),
# prints the count, and fails on a finding (the crashing input is left in the working
# directory: add it to the seeds as a regression input once fixed) or when fewer runs were
# made. An input that runs longer than TIMEOUT_S (default 25) is a finding too.
#
# libFuzzer's own exit codes are 77 for a crash or leak and 70 for a timeout, and ctest
# reads 77 as "skipped": both are set to 1 here, so that 77 can only come from a harness
# that says it cannot run (fuzz_tokenize without the Qwen3 tokenizer), and a finding
# always fails (fuzz/test_run_fuzzer.sh checks this).
set -eu
harness=$1 seeds=$2 runs=$3 timeout=${4:-25}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
log=$scratch/log
status=0
"$harness" -runs="$runs" -seed=1 -max_len=65536 -timeout="$timeout" -rss_limit_mb=4096 \
    -error_exitcode=1 -timeout_exitcode=1 "$scratch" "$seeds" >"$log" 2>&1 || status=$?
if [ "$status" = 77 ]; then
    cat "$log"
    exit 77
fi
if [ "$status" != 0 ]; then
    tail -n 60 "$log"
    echo "$(basename "$harness"): FINDING (see above)"
    exit 1
fi
done=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log")
echo "$(basename "$harness"): ${done:-0} executions, no finding ($(ls "$seeds" | wc -l) seeds)"
[ "${done:-0}" -ge "$runs" ]
