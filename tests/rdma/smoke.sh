# Runs inside the Soft-RoCE VM (tests/rdma/vm.sh): the device exists and two
# processes exchange RC verbs traffic over it with the stock ibv_rc_pingpong.
set -e
ibv_devices | grep -q rxe0
echo "rdma smoke: device rxe0 present"
ibv_rc_pingpong -d rxe0 -g 1 -n 200 > /tmp/server.log 2>&1 &
sleep 1
ibv_rc_pingpong -d rxe0 -g 1 -n 200 10.0.2.15
wait
echo "rdma smoke: RC ping-pong over rxe0 ok"
