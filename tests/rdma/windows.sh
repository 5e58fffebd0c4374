# Runs inside the Soft-RoCE VM (tests/rdma/vm.sh) from the build directory: remote writes
# outside a transfer's spans or after it ended fail (tests/rdma/test_rdma_windows.c).
set -e
ibv_devices | grep rxe0
ulimit -l unlimited 2>/dev/null || true
./tests/rdma/test_rdma_windows
