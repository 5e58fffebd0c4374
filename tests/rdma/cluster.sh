# Runs inside the Soft-RoCE VM (tests/rdma/vm.sh) from the build directory: a 1 prefill +
# 1 decode cluster whose KV blocks move over RDMA (rxe0), then the same cluster over TCP;
# both greedy completions must equal `tandem generate` in one process, token for token,
# both workers of each cluster must say they use that transport, and the decode worker's
# /metrics must count KV bytes received over it. Any failed check exits non-zero.
set -e
ibv_devices | grep rxe0
ulimit -l unlimited 2>/dev/null || true
T=./cli/tandem
M=./models/dense
PY=/usr/bin/python3
N=12
PROMPT="The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step, and every step counts. Tell me a story about the sea and the ships that sail on it."
$T generate --model $M --raw --prompt "$PROMPT" --max-tokens $N --temperature 0 --threads 1 --json > /tmp/ref.json
$PY - <<'PYEOF'
import json
r = json.load(open("/tmp/ref.json"))
json.dump({"prompt": r["prompt_tokens"], "max_tokens": 12, "temperature": 0}, open("/tmp/req.json", "w"))
print("reference: %d prompt tokens, %d generated" % (len(r["prompt_tokens"]), len(r["tokens"])))
PYEOF

run_cluster() { # transport http-port rpc-port metrics-port
  tr=$1 http=$2 rpc=$3 mport=$4
  $T coordinator --model $M --port $http --rpc-port $rpc > /tmp/coord-$tr.log 2>&1 &
  coord=$!
  $T worker --role prefill --model $M --coordinator 127.0.0.1:$rpc --kv-transport $tr --threads 1 \
    --kv-blocks 64 --metrics-port -1 > /tmp/prefill-$tr.log 2>&1 &
  pre=$!
  $T worker --role decode --model $M --coordinator 127.0.0.1:$rpc --kv-transport $tr --threads 1 \
    --kv-blocks 64 --metrics-port $mport > /tmp/decode-$tr.log 2>&1 &
  dec=$!
  name=$($PY -c 'import json;print(json.load(open("/tmp/ref.json")).get("model","dense"))' 2>/dev/null || echo dense)
  ok=0
  for i in $(seq 1 240); do
    if curl -sf http://127.0.0.1:$http/v1/models > /tmp/models.json 2>/dev/null &&
       name=$($PY -c 'import json;print(json.load(open("/tmp/models.json"))["data"][0]["id"])') &&
       $PY -c 'import json,sys;r=json.load(open("/tmp/req.json"));r["model"]=sys.argv[1];json.dump(r,open("/tmp/req-m.json","w"))' "$name" &&
       curl -sf -H 'content-type: application/json' --data @/tmp/req-m.json \
         http://127.0.0.1:$http/v1/completions > /tmp/out-$tr.json 2>/tmp/curl-$tr.err; then
      ok=1; break
    fi
    sleep 0.5
  done
  bytes=0
  [ $ok = 1 ] && bytes=$(curl -sf http://127.0.0.1:$mport/metrics |
    awk -v tr="$tr" '/^tandem_kv_transfer_bytes_total\{/ && index($0, "transport=\"" tr "\"") { s += $NF }
                     END { printf "%d", s }')
  kill $pre $dec $coord 2>/dev/null || true
  wait $pre $dec $coord 2>/dev/null || true
  grep -h "KV transport" /tmp/prefill-$tr.log /tmp/decode-$tr.log | sed "s/^/$tr cluster: /"
  if [ $ok != 1 ]; then
    echo "$tr cluster: no completion"; tail -5 /tmp/coord-$tr.log /tmp/prefill-$tr.log /tmp/decode-$tr.log
    exit 1
  fi
  for role in prefill decode; do
    grep -q "KV transport: $tr" /tmp/$role-$tr.log || { echo "$tr cluster: the $role worker did not use $tr"; exit 1; }
  done
  echo "$tr cluster: the decode worker received $bytes KV bytes over $tr"
  [ "$bytes" -gt 0 ] || { echo "$tr cluster: no KV bytes counted for transport $tr"; exit 1; }
}
run_cluster rdma 18080 18051 18090
grep -q "KV transport: rdma (rxe0" /tmp/decode-rdma.log || { echo "rdma cluster: not on rxe0"; exit 1; }
run_cluster tcp 18081 18052 18091
$PY - <<'PYEOF'
import json
ref = json.load(open("/tmp/ref.json"))
outs = {tr: json.load(open("/tmp/out-%s.json" % tr))["choices"][0]["text"] for tr in ("rdma", "tcp")}
print("generate: %r" % ref["text"])
for tr, text in outs.items():
    print("%s cluster: %r" % (tr, text))
assert outs["rdma"] == ref["text"] and outs["tcp"] == ref["text"], "outputs differ"
print("rdma cluster: greedy output equals tcp cluster and tandem generate")
PYEOF
