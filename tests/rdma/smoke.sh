# Runs inside the Soft-RoCE VM (tests/rdma/vm.sh): the device exists and two
# processes exchange RC verbs traffic over it with the stock ibv_rc_pingpong.
set -e
ibv_devices | grep -q rxe0
echo "rdma smoke: device rxe0 present"
ibv_rc_pingpong -d rxe0 -g 1 -n 200 > /tmp/server.log 2>&1 &
# The server may take a while to listen under TCG on a busy host: retry the client.
ok=0
for _ in $(seq 30); do
  sleep 1
  if ibv_rc_pingpong -d rxe0 -g 1 -n 200 10.0.2.15; then ok=1; break; fi
done
wait
[ "$ok" = 1 ]
echo "rdma smoke: RC ping-pong over rxe0 ok"
