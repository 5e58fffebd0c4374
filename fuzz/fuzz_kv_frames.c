/* fuzz_kv_frames.c: the TCP KV receiver (kvtransfer/tcp.c) on a fuzzed frame stream, over a
 * real loopback connection into a real KV pool.
 *
 * Each input is a fresh TCP transport with the pool registered and one transfer expected
 * for two of the pool's units (kvt_expect_spans, as a decode worker does). The harness
 * sends a valid hello, then the frames the input describes, then half-closes the
 * connection: the receiver must end the connection within 5 s (a hang is a finding) and
 * must not have written one byte of the pool outside the expected spans.
 *
 * The input is a list of records, so that frames name the expected transfer (its id is
 * random per transport) while everything else stays arbitrary:
 *   flags u8 (bits 0-2 frame type, 3 bad magic, 4 id = the expected transfer,
 *             5 the three words are u64 instead of u32), id u64, three words,
 *   n u16 and n raw bytes sent after the header (a payload or reason, short or not).
 * A truncated record sends what there is. */
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "kvtransfer.h"
#include "model/kvcache.h"

#define FRAME_MAGIC 0x3154564bu /* "KVT1", tcp.c's wire format */
#define FRAME_BYTES 40
#define CANARY 0xa5
#define HANG_MS 5000

static eng_kv_pool *pool;
static size_t unit;
static unsigned char *stream;
static size_t stream_len, stream_cap;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    eng_log_set_level(ENG_LOG_ERROR);
    eng_kv_layout l = {.dtype = ENG_DT_F16, .block_size = 4, .n_layers = 2, .n_kv_heads = 1, .head_dim = 8};
    eng_error err;
    if (eng_kv_pool_create(&l, 4, &pool, &err) < 0)
        abort();
    unit = eng_kv_unit_bytes(&l);
    return 0;
}

static void put(const void *p, size_t n)
{
    if (stream_len + n > stream_cap) {
        stream_cap = (stream_len + n) * 2;
        if (!(stream = realloc(stream, stream_cap)))
            abort();
    }
    memcpy(stream + stream_len, p, n);
    stream_len += n;
}

static void put_frame(uint32_t magic, uint32_t type, uint64_t id, const uint64_t w[3])
{
    uint32_t u32[2] = {htole32(magic), htole32(type)};
    uint64_t u64[4] = {htole64(id), htole64(w[0]), htole64(w[1]), htole64(w[2])};
    put(u32, 8);
    put(u64, 32);
}

/* Takes n bytes of input into out (zero-filled past the end); returns what was there. */
static size_t take(const uint8_t **data, size_t *size, void *out, size_t n)
{
    size_t got = *size < n ? *size : n;
    memset(out, 0, n);
    memcpy(out, *data, got);
    *data += got, *size -= got;
    return got;
}

static void build_stream(const uint8_t *data, size_t size, uint64_t instance, uint64_t id)
{
    stream_len = 0;
    put_frame(FRAME_MAGIC, 1, 0, (uint64_t[3]){instance, 1, 0}); /* HELLO, protocol version 1 */
    while (size > 0) {
        uint8_t flags;
        uint64_t raw_id, w[3] = {0};
        uint16_t n;
        take(&data, &size, &flags, 1);
        take(&data, &size, &raw_id, 8);
        for (int i = 0; i < 3; i++) {
            uint32_t small;
            if (flags & 32)
                take(&data, &size, &w[i], 8);
            else
                take(&data, &size, &small, 4), w[i] = small;
        }
        put_frame(flags & 8 ? ~FRAME_MAGIC : FRAME_MAGIC, flags & 7, flags & 16 ? id : raw_id, w);
        take(&data, &size, &n, 2);
        size_t got = size < n ? size : n;
        put(data, got);
        data += got, size -= got;
    }
}

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int rc = fd < 0 ? -1 : connect(fd, (struct sockaddr *)&a, sizeof a);
    if (rc < 0 && errno == EINTR) { /* libFuzzer's timer signal: the connect goes on */
        struct pollfd p = {fd, POLLOUT, 0};
        int e = 0;
        socklen_t el = sizeof e;
        while (poll(&p, 1, HANG_MS) < 0 && errno == EINTR)
            ;
        rc = getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) == 0 && e == 0 && (p.revents & POLLOUT) ? 0 : -1;
        errno = e;
    }
    if (rc < 0) {
        fprintf(stderr, "fuzz_kv_frames: cannot connect to the receiver: %s\n", strerror(errno));
        abort();
    }
    return fd;
}

static int errno_is_reset(void)
{
    return errno == ECONNRESET || errno == EPIPE;
}

/* Sends the stream while reading the receiver's verdicts (so neither side blocks on a full
 * buffer), half-closes, and returns once the receiver closed the connection. */
static void exchange(int fd)
{
    size_t sent = 0;
    int wr_open = 1;
    char sink[4096];
    for (;;) {
        if (wr_open && sent == stream_len) {
            shutdown(fd, SHUT_WR);
            wr_open = 0;
        }
        struct pollfd p = {fd, POLLIN | (wr_open ? POLLOUT : 0), 0};
        int r = poll(&p, 1, HANG_MS);
        if (r == 0) {
            fprintf(stderr, "fuzz_kv_frames: the receiver neither read nor closed for %d ms\n", HANG_MS);
            abort();
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t got = recv(fd, sink, sizeof sink, MSG_DONTWAIT);
            if (got == 0 || (got < 0 && errno_is_reset()))
                return;
        }
        if (wr_open && (p.revents & POLLOUT)) {
            ssize_t w = send(fd, stream + sent, stream_len - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (w > 0)
                sent += (size_t)w;
            else if (w < 0 && errno_is_reset())
                return;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kvt_tcp_options o = {.bind_host = "127.0.0.1", .io_timeout_ms = 1000};
    kvt_transport *t;
    kvt_region *region;
    eng_error err;
    unsigned char *base = eng_kv_pool_base(pool);
    size_t bytes = eng_kv_pool_bytes(pool);
    memset(base, CANARY, bytes);
    if (kvt_tcp_create(&o, &t, &err) < 0 || kvt_register(t, base, bytes, &region, &err) < 0)
        abort();
    char desc[KVT_DESCRIPTOR_MAX + 1];
    size_t desc_len;
    char host[128];
    int port;
    unsigned long long instance;
    if (kvt_descriptor(t, region, desc, sizeof desc - 1, &desc_len, &err) < 0)
        abort();
    desc[desc_len] = '\0';
    if (sscanf(desc, "kvt1 tcp %127s %d %llx", host, &port, &instance) != 3)
        abort();
    /* the transfer may write units 1 and 2 (block 1 of layer 0, block 2 of layer 0) */
    kvt_span span = {.off = unit, .len = 2 * unit};
    uint64_t id;
    if (kvt_expect_spans(t, region, &span, 1, 0, &id, &err) < 0)
        abort();
    build_stream(data, size, instance, id);
    int fd = connect_to(port);
    exchange(fd);
    close(fd);
    kvt_forget(t, id);
    kvt_destroy(t);
    for (size_t i = 0; i < bytes; i++)
        if ((i < span.off || i >= span.off + span.len) && base[i] != CANARY) {
            fprintf(stderr, "fuzz_kv_frames: pool byte %zu outside the transfer's span was written\n", i);
            abort();
        }
    return 0;
}
