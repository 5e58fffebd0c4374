/* test_rpc_copy.c: a received message is copied once (issue 12: "64 MiB messages are
 * copied twice"). rpc_bb_to_bytes is what both the server (requests) and the client
 * (replies, stream messages) use to take a message out of gRPC. A 48 MiB message in
 * three slices that point at memory the test already touched (no copy on the way in)
 * is taken out; the process's peak resident memory may grow by about one message
 * (the result), not two (a flattened slice, then the result). */
#include <grpc/grpc.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "rpc_internal.h"
#include "check.h"

#define PIECE (16u << 20)

static double peak_mib(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_maxrss / 1024.0;
}

int main(void)
{
    grpc_init();
    static unsigned char payload[3 * PIECE];
    for (size_t i = 0; i < sizeof payload; i++)
        payload[i] = (unsigned char)(i * 31 + 7);
    grpc_slice slices[3];
    for (int i = 0; i < 3; i++)
        slices[i] = grpc_slice_from_static_buffer(payload + (size_t)i * PIECE, PIECE);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(slices, 3);
    double before = peak_mib();
    rpc_bytes out;
    REQUIRE(rpc_bb_to_bytes(bb, &out) == 0);
    double grown = peak_mib() - before, message = sizeof payload / 1048576.0;
    printf("took a %.0f MiB message in 3 slices out of gRPC: peak RSS grew %.1f MiB (one copy: %.0f)\n", message, grown,
           message);
    CHECK(out.len == sizeof payload && memcmp(out.data, payload, sizeof payload) == 0, "the bytes arrive intact");
    CHECK(grown < 1.5 * message, "one copy: the peak grew %.1f MiB for a %.0f MiB message", grown, message);
    rpc_bytes_free(&out);
    grpc_byte_buffer_destroy(bb);
    grpc_shutdown();
    return check_summary();
}
