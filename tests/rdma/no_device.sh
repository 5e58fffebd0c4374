#!/bin/sh
# On a host without an RDMA device (this CI machine's kernel has none): a worker asked for
# --kv-transport rdma refuses to start with one clear line, and auto starts on TCP and
# says why in its log. On a machine that has an RDMA device there is nothing to check:
# exit 77, which ctest reports as skipped. usage: no_device.sh TANDEM MODEL_DIR
set -u
tandem=$1 model=$2
if command -v ibv_devices >/dev/null && ibv_devices 2>/dev/null | tail -n +3 | grep -q .; then
  echo "no_device: this machine has an RDMA device; skipped"; exit 77
fi
out=$(timeout 60 "$tandem" worker --role decode --model "$model" --coordinator none \
      --kv-transport rdma --threads 1 --kv-blocks 16 2>&1); rc=$?
echo "rdma: exit $rc: $out"
[ $rc -ne 0 ] || { echo "no_device: --kv-transport rdma started without a device"; exit 1; }
echo "$out" | grep -Eq "no RDMA device found \(ibv_get_device_list returned none\); use --kv-transport tcp or auto|RDMA support was not built" \
  || { echo "no_device: unclear message"; exit 1; }
log=$(mktemp)
timeout -s TERM 8 "$tandem" worker --role decode --model "$model" --coordinator none \
  --kv-transport auto --threads 1 --kv-blocks 16 > "$log" 2>&1
grep "KV transport" "$log"
grep -q "KV transport: tcp (auto: " "$log" || { echo "no_device: auto did not say it picked tcp"; rm -f "$log"; exit 1; }
rm -f "$log"
echo "no_device ok"
