# Runs inside the Soft-RoCE VM (tests/rdma/vm.sh) from the build directory: the RDMA
# transport between processes over rxe0 (tests/rdma/test_rdma_pair.c).
set -e
ibv_devices | grep rxe0
ulimit -l unlimited 2>/dev/null || true
./tests/rdma/test_rdma_pair
