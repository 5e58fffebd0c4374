# Runs inside the Soft-RoCE VM (tests/rdma/vm.sh) from the build directory: KV transfer
# throughput and latency by run size over RDMA (rxe0, emulated: correctness-level figures)
# and over TCP in the same VM. A measurement, not a test:
#   tests/rdma/vm.sh tests/rdma/bench.sh BUILD_DIR
set -e
ibv_devices | grep rxe0
ulimit -l unlimited 2>/dev/null || true
./kvtransfer/rdma_bench rdma 32 2
./kvtransfer/rdma_bench tcp 32 2
