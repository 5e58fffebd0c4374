/* fuzz_rdma_hello.c: the RDMA transport's wire parsers (kvtransfer/rdma_wire.c) on
 * arbitrary bytes. The first byte picks one: the connection hello/reply that arrives over
 * the control plane (KvHello), the endpoint descriptor that travels in a KvTarget, or a
 * message received on the queue pair. What decodes must encode and decode back to the
 * same fields, and a message's pairs are all read (ASan checks they lie inside it). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rdma_wire.h"

static void hello(const uint8_t *data, size_t size)
{
    rdma_hello h, back;
    unsigned char buf[RDMA_HELLO_BYTES];
    eng_error err;
    if (rdma_hello_decode(data, size, &h, &err) < 0)
        return;
    if (rdma_hello_encode(&h, buf, sizeof buf) != RDMA_HELLO_BYTES || rdma_hello_decode(buf, sizeof buf, &back, &err) ||
        memcmp(&h, &back, sizeof h))
        abort();
}

static void descriptor(const uint8_t *data, size_t size)
{
    rdma_desc d, back;
    char buf[300];
    size_t len;
    eng_error err;
    if (rdma_desc_decode(data, size, &d, &err) < 0)
        return;
    if (rdma_desc_encode(&d, buf, sizeof buf, &len, &err) || rdma_desc_decode(buf, len, &back, &err) ||
        memcmp(&d, &back, sizeof d))
        abort();
}

static void message(const uint8_t *data, size_t size)
{
    rdma_msg m, back;
    const unsigned char *payload;
    static unsigned char buf[RDMA_MSG_BYTES];
    static uint64_t words[(RDMA_MSG_BYTES - RDMA_MSG_HEADER) / 8];
    eng_error err;
    if (rdma_msg_decode(data, size, &m, &payload, &err) < 0)
        return;
    int width = rdma_msg_item_words(m.type);
    for (uint32_t i = 0; i < m.n && width; i++)
        for (int which = 0; which < width; which++)
            words[(size_t)width * i + (size_t)which] = rdma_msg_word(payload, m.type, i, which);
    size_t len = rdma_msg_encode(&m, width ? words : NULL, width ? NULL : (const char *)payload, buf);
    if (len != size || memcmp(buf, data, RDMA_MSG_HEADER - 8) ||
        memcmp(buf + RDMA_MSG_HEADER, payload, size - RDMA_MSG_HEADER) ||
        rdma_msg_decode(buf, len, &back, &payload, &err) || memcmp(&m, &back, sizeof m))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    switch (data[0] % 3) {
    case 0: hello(data + 1, size - 1); break;
    case 1: descriptor(data + 1, size - 1); break;
    default: message(data + 1, size - 1); break;
    }
    return 0;
}
