#!/bin/sh
# smoke.sh: `tandem profile` on a fixture model (alone and beside one co-runner), then
# `tandemctl plan` on its profile and each workload in bench/workloads/: both exit 0, the
# profile has the measured parts, the plan names every candidate and a recommendation,
# --serving-cpu is shown and never raises a goodput; a broken workload is refused with
# exit status 1 and one line naming the problem; `tandemctl plan-check` reads a real
# cluster's debug step log back against the profile.
# usage: smoke.sh TANDEM TANDEMCTL MODEL_DIR SOURCE_DIR
set -eu
tandem=$1 ctl=$2 model=$3 src=$4
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "plan smoke: $*" >&2; exit 1; }

"$tandem" profile --model "$model" --threads 1 --repeats 2 --max-tokens 64 --max-batch 2 --max-context 64 \
    --co-runners 1 --out "$tmp/profile.json" >"$tmp/table.txt" || fail "tandem profile failed"
for key in '"format":\s*"tandem-profile-1"' '"phase":\s*"prefill"' '"phase":\s*"decode"' '"phase":\s*"mixed"' \
    '"prompt_chunk":\s*[1-9]' '"transport":\s*"tcp"' '"median_s":\s*[0-9]' '"co_runners":\s*1'; do
    grep -Eq "$key" "$tmp/profile.json" || fail "the profile lacks $key"
done
grep -q "^decode " "$tmp/table.txt" || fail "the table lacks decode rows"
grep -q "^beside 1 co-runner" "$tmp/table.txt" || fail "the table lacks the co-runner slowdown"

for w in "$src"/bench/workloads/*.json; do
    "$ctl" plan --profile "$tmp/profile.json" --workload "$w" --ttft-slo 2000 --tpot-slo 100 --workers 3 \
        >"$tmp/plan.txt" || fail "tandemctl plan failed on $w"
    for c in "colocated x3" "1 prefill + 2 decode" "2 prefill + 1 decode" "recommendation: " "x beside 1"; do
        grep -q "$c" "$tmp/plan.txt" || { cat "$tmp/plan.txt" >&2; fail "the plan for $w lacks '$c'"; }
    done
done

# the serving path's CPU on the workers' cores: named in the plan, and it can only lower
# a candidate's goodput
w=$src/bench/workloads/decode-heavy.json
"$ctl" plan --profile "$tmp/profile.json" --workload "$w" --ttft-slo 2000 --tpot-slo 100 -o json >"$tmp/p0.json" ||
    fail "tandemctl plan failed"
"$ctl" plan --profile "$tmp/profile.json" --workload "$w" --ttft-slo 2000 --tpot-slo 100 --serving-cpu 2 \
    -o json >"$tmp/p2.json" || fail "tandemctl plan --serving-cpu failed"
"$ctl" plan --profile "$tmp/profile.json" --workload "$w" --ttft-slo 2000 --tpot-slo 100 --serving-cpu 2 \
    >"$tmp/p2.txt" || fail "tandemctl plan --serving-cpu failed"
grep -q "serving path: 2 ms of CPU per streamed token" "$tmp/p2.txt" || fail "the plan does not name the serving CPU"
# the engine threads' streaming likewise
"$ctl" plan --profile "$tmp/profile.json" --workload "$w" --ttft-slo 2000 --tpot-slo 100 --stream-cpu 1 \
    -o json >"$tmp/s1.json" || fail "tandemctl plan --stream-cpu failed"
/usr/bin/python3 - "$tmp/p0.json" "$tmp/p2.json" "$tmp/s1.json" <<'PYEOF' || fail "--serving-cpu or --stream-cpu raised a goodput"
import json, sys
a, b, c = (json.load(open(f)) for f in sys.argv[1:])
assert b["serving_cpu_ms_per_token"] == 2 and c["stream_cpu_ms_per_token"] == 1
for x, y, z in zip(a["candidates"], b["candidates"], c["candidates"]):
    assert y["goodput"] <= x["goodput"] * 1.005, (x["name"], x["goodput"], y["goodput"])
    assert z["goodput"] <= x["goodput"] * 1.005, (x["name"], x["goodput"], z["goodput"])
PYEOF
if "$ctl" plan --profile "$tmp/profile.json" --workload "$w" --ttft-slo 1 --tpot-slo 1 --serving-cpu -1 \
    2>"$tmp/err.txt" >/dev/null; then
    fail "a negative --serving-cpu was accepted"
fi

# a real cluster's steps against the profile: `tandem serve` with debug worker logs
# serves two requests; `tandemctl plan-check` reads their prompt and decode steps back
"$tandem" serve --model "$model" --port 0 --rpc-port 0 --threads-per-worker 1 --prefill-workers 1 \
    --decode-workers 1 --worker-log-level debug >"$tmp/serve.out" 2>"$tmp/serve.log" &
serve=$!
trap 'kill $serve 2>/dev/null || true; rm -rf "$tmp"' EXIT
i=0
until url=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$tmp/serve.out" | head -1) && [ -n "$url" ]; do
    i=$((i + 1))
    [ $i -le 600 ] && kill -0 $serve 2>/dev/null || { cat "$tmp/serve.log" >&2; fail "tandem serve did not come up"; }
    sleep 0.1
done
/usr/bin/python3 - "$url" <<'PYEOF' || fail "a request to the cluster failed"
import json, sys, urllib.request
for prompt in ("The planner checks", "a cluster's steps"):
    req = urllib.request.Request(sys.argv[1] + "/v1/completions", method="POST",
        data=json.dumps({"prompt": prompt, "max_tokens": 8, "temperature": 0}).encode(),
        headers={"Content-Type": "application/json"})
    assert json.load(urllib.request.urlopen(req, timeout=120))["choices"][0]["text"] is not None
PYEOF
kill $serve
wait $serve || true
"$ctl" plan-check --profile "$tmp/profile.json" --log "$tmp/serve.log" >"$tmp/check.txt" || fail "plan-check failed"
for row in '^prefill-[0-9]+ +prompt +2 ' '^decode-[0-9]+ +decode +1[0-9] ' '^all +prompt +2 ' '^all +decode +1[0-9] ' \
    '^all +16 ' '^streamed 1[0-9] tokens in '; do
    grep -Eq "$row" "$tmp/check.txt" || { cat "$tmp/check.txt" "$tmp/serve.log" >&2; fail "plan-check lacks a row '$row'"; }
done
"$ctl" plan-check --profile "$tmp/profile.json" --log "$tmp/serve.log" -o json >"$tmp/check.json" ||
    fail "plan-check -o json failed"
/usr/bin/python3 - "$tmp/check.json" <<'PYEOF' || fail "plan-check -o json: $(cat "$tmp/check.json")"
import json, sys
r = json.load(open(sys.argv[1]))
kinds = {k["kind"]: k for k in r["kinds"]}
assert kinds["prompt"]["steps"] == 2 and kinds["decode"]["steps"] + kinds["prompt"]["steps"] == r["all"]["steps"] == 16
# the requests ran one after the other: each decode step streamed its one token (the
# first tokens came with the prefill worker's hand-off)
assert r["all"]["streamed_tokens"] == kinds["decode"]["steps"] and r["all"]["streaming_ms"] > 0
PYEOF
if "$ctl" plan-check --profile "$tmp/profile.json" --log "$tmp/table.txt" 2>"$tmp/err.txt" >/dev/null; then
    fail "plan-check accepted a log without steps"
fi
grep -q "no step lines" "$tmp/err.txt" || fail "unclear error: $(cat "$tmp/err.txt")"

echo '{"name": "bad", "arrival": {"rate": -1, "shape": 1}}' >"$tmp/bad.json"
if "$ctl" plan --profile "$tmp/profile.json" --workload "$tmp/bad.json" --ttft-slo 1 --tpot-slo 1 \
    2>"$tmp/err.txt" >/dev/null; then
    fail "a bad workload was accepted"
fi
grep -q "arrival.rate" "$tmp/err.txt" || fail "unclear error: $(cat "$tmp/err.txt")"
echo "plan smoke: ok"
