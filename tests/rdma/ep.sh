# Runs inside the Soft-RoCE VM (tests/rdma/vm.sh) from the build directory: an EP group of 2
# ranks (tandem serve --colocated --ep-size 2, moe16: 16 experts top-4) whose exchange
# payloads go by RDMA over rxe0, then the same group with --ep-transport tcp. A greedy and a
# seeded completion from each must equal single-process `tandem generate` in text and in
# every logprob (as float32), both ranks must say their exchange ran over that transport
# (an info line, hence --worker-log-level info: serve's workers log warnings only by
# default), and their /metrics must count exchange payload bytes sent by RDMA (none in the
# TCP run). Any failed check exits non-zero.
set -e
ibv_devices | grep rxe0
ulimit -l unlimited 2>/dev/null || true
T=./cli/tandem
M=./models/moe16
PY=/usr/bin/python3
PROMPT="The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step."
$T generate --model $M --raw --prompt "$PROMPT" --max-tokens 10 --temperature 0 --threads 1 --json > /tmp/ref-greedy.json
$T generate --model $M --raw --prompt "$PROMPT" --max-tokens 10 --temperature 0.8 --top-k 40 --top-p 0.95 \
  --seed 1234 --threads 1 --json > /tmp/ref-seeded.json

run_group() { # transport http-port rpc-port
  tr=$1 http=$2 rpc=$3
  $T serve --model $M --colocated --decode-workers 1 --ep-size 2 --ep-transport $tr --threads-per-worker 1 --worker-log-level info \
    --kv-blocks 64 --port $http --rpc-port $rpc --ready-timeout 600 > /tmp/serve-$tr.out 2> /tmp/serve-$tr.log &
  serve=$!
  up=0
  for i in $(seq 1 1200); do
    if grep -q "tandem: serving" /tmp/serve-$tr.out; then up=1; break; fi
    kill -0 $serve 2>/dev/null || break
    sleep 0.5
  done
  status=0
  if [ $up = 1 ]; then
    $PY - "$tr" "$http" <<'PYEOF' || status=1
import json, struct, sys, urllib.request
f32 = lambda x: struct.unpack("f", struct.pack("f", x))[0]
tr, http = sys.argv[1], sys.argv[2]
models = json.load(urllib.request.urlopen("http://127.0.0.1:%s/v1/models" % http, timeout=60))
name = models["data"][0]["id"]
for kind, extra in (("greedy", {"temperature": 0, "top_k": 0, "top_p": 1}),
                    ("seeded", {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "seed": 1234})):
    ref = json.load(open("/tmp/ref-%s.json" % kind))
    req = dict(model=name, prompt=ref["prompt_tokens"], max_tokens=10, logprobs=0, min_p=0, **extra)
    r = urllib.request.Request("http://127.0.0.1:%s/v1/completions" % http, json.dumps(req).encode(),
                               {"content-type": "application/json"})
    out = json.load(urllib.request.urlopen(r, timeout=600))["choices"][0]
    got = out["logprobs"]["token_logprobs"]
    want = [t["logprob"] for t in ref["logprobs"]]
    print("%s %s: %r" % (tr, kind, out["text"]))
    assert out["text"] == ref["text"], "%s %s: text differs from tandem generate: %r" % (tr, kind, ref["text"])
    assert [f32(x) for x in got] == [f32(x) for x in want], \
        "%s %s: logprobs differ: %r vs %r" % (tr, kind, got, want)
PYEOF
    # every rank's exchange bytes by transport, from its /metrics
    for addr in $(sed -n 's/.*(metrics \([^)]*\)).*/\1/p' /tmp/serve-$tr.log); do
      curl -sf "http://$addr/metrics" | grep '^tandem_ep_exchange_bytes_total{.*direction="sent"' || true
    done > /tmp/bytes-$tr.txt
  else
    echo "$tr group: tandem serve did not come up"; status=1
  fi
  kill $serve 2>/dev/null || true
  wait $serve 2>/dev/null || true
  grep -h "EP exchange:\|exchange over\|group broken\|did not form" /tmp/serve-$tr.log | sed "s/^/$tr group: /" || true
  if [ $status != 0 ]; then tail -20 /tmp/serve-$tr.log; exit 1; fi
  cat /tmp/bytes-$tr.txt
  n=$(grep -c "EP exchange: $tr" /tmp/serve-$tr.log || true)
  [ "$n" = 2 ] || { echo "$tr group: $n of 2 ranks say their exchange is $tr"; exit 1; }
  rdma=$(awk '/transport="rdma"/ { s += $NF } END { printf "%d", s }' /tmp/bytes-$tr.txt)
  echo "$tr group: $rdma exchange payload bytes sent by RDMA"
  if [ $tr = rdma ]; then
    [ "$rdma" -gt 0 ] || { echo "rdma group: no payload went by RDMA"; exit 1; }
  else
    [ "$rdma" = 0 ] || { echo "tcp group: payload bytes counted as RDMA"; exit 1; }
  fi
}
run_group rdma 18180 18151
grep -q "EP exchange: rdma (rxe0" /tmp/serve-rdma.log || { echo "rdma group: not on rxe0"; exit 1; }
run_group tcp 18181 18152
echo "ep over rdma: greedy and seeded outputs equal tcp and tandem generate"
