/* rdma_wire.c: encodings of the RDMA transport that need no device (see rdma_wire.h).
 *
 * Kept apart from rdma.c so that the unit tests cover them on any machine, and so that a
 * malformed descriptor or hello from the control plane is rejected with a reason before
 * any verbs call sees it. */
#include <endian.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "rdma_wire.h"

static const char HEX[] = "0123456789abcdef";

int rdma_desc_encode(const rdma_desc *d, char *buf, size_t cap, size_t *len, eng_error *err)
{
    char gid[33];
    for (int i = 0; i < 16; i++) {
        gid[2 * i] = HEX[d->gid[i] >> 4];
        gid[2 * i + 1] = HEX[d->gid[i] & 15];
    }
    gid[32] = '\0';
    int n = snprintf(buf, cap,
                     "kvt1 rdma v2 inst=%016" PRIx64 " region=%" PRIu64 " gid=%s lid=%u addr=%" PRIx64 " size=%" PRIu64,
                     d->instance, d->region_id, gid, (unsigned)d->lid, d->addr, d->size);
    if (n < 0 || (size_t)n >= cap)
        return eng_fail(err, "kvtransfer: descriptor buffer of %zu bytes is too small", cap);
    *len = (size_t)n;
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int rdma_desc_decode(const void *buf, size_t len, rdma_desc *d, eng_error *err)
{
    char s[300], gid[40];
    if (len == 0 || len >= sizeof s)
        return eng_fail(err, "kvtransfer: RDMA descriptor of %zu bytes", len);
    memcpy(s, buf, len);
    s[len] = '\0';
    if (memchr(s, '\0', len))
        return eng_fail(err, "kvtransfer: RDMA descriptor holds a NUL byte");
    unsigned lid;
    int used = 0;
    memset(d, 0, sizeof *d);
    int got = sscanf(
        s, "kvt1 rdma v2 inst=%16" SCNx64 " region=%" SCNu64 " gid=%32s lid=%u addr=%" SCNx64 " size=%" SCNu64 "%n",
        &d->instance, &d->region_id, gid, &lid, &d->addr, &d->size, &used);
    if (got != 6 || (size_t)used != len)
        return eng_fail(err, "kvtransfer: malformed RDMA descriptor \"%.80s\"", s);
    if (strlen(gid) != 32 || lid > 0xffff || d->size == 0 || d->addr + d->size < d->addr)
        return eng_fail(err, "kvtransfer: bad fields in RDMA descriptor \"%.80s\"", s);
    for (int i = 0; i < 16; i++) {
        int hi = hexval(gid[2 * i]), lo = hexval(gid[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return eng_fail(err, "kvtransfer: bad GID in RDMA descriptor \"%.80s\"", s);
        d->gid[i] = (uint8_t)(hi << 4 | lo);
    }
    d->lid = (uint16_t)lid;
    return 0;
}

#define HELLO_MAGIC 0x32524b54u /* "TKR2": SPANS carry a remote key per span */

static void put64(unsigned char *p, uint64_t v)
{
    v = htole64(v);
    memcpy(p, &v, 8);
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return le64toh(v);
}

static void put32(unsigned char *p, uint32_t v)
{
    v = htole32(v);
    memcpy(p, &v, 4);
}

static uint32_t get32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return le32toh(v);
}

/* Layout: magic 0, kind 4, to 8, from 16, token 24, gid 32, qpn 48, psn 52, lid 56, mtu 60,
 * zero padding to 72. */
size_t rdma_hello_encode(const rdma_hello *h, void *buf, size_t cap)
{
    unsigned char *p = buf;
    if (cap < RDMA_HELLO_BYTES)
        return 0;
    memset(p, 0, RDMA_HELLO_BYTES);
    put32(p, HELLO_MAGIC);
    put32(p + 4, (uint32_t)h->kind);
    put64(p + 8, h->to);
    put64(p + 16, h->from);
    put64(p + 24, h->token);
    memcpy(p + 32, h->gid, 16);
    put32(p + 48, h->qpn);
    put32(p + 52, h->psn);
    put32(p + 56, h->lid);
    put32(p + 60, h->mtu);
    return RDMA_HELLO_BYTES;
}

int rdma_hello_decode(const void *buf, size_t len, rdma_hello *h, eng_error *err)
{
    const unsigned char *p = buf;
    if (len != RDMA_HELLO_BYTES || get32(p) != HELLO_MAGIC)
        return eng_fail(err, "kvtransfer: not an RDMA hello (%zu bytes)", len);
    memset(h, 0, sizeof *h);
    h->kind = (int)get32(p + 4);
    h->to = get64(p + 8);
    h->from = get64(p + 16);
    h->token = get64(p + 24);
    memcpy(h->gid, p + 32, 16);
    h->qpn = get32(p + 48);
    h->psn = get32(p + 52);
    uint32_t lid = get32(p + 56), mtu = get32(p + 60);
    if ((h->kind != RDMA_HELLO && h->kind != RDMA_REPLY) || h->qpn == 0 || h->qpn > 0xffffff || h->psn > 0xffffff ||
        lid > 0xffff || mtu < 1 || mtu > 5)
        return eng_fail(err, "kvtransfer: RDMA hello with bad fields (kind %d, qpn %u, mtu %u)", h->kind,
                        (unsigned)h->qpn, (unsigned)mtu);
    h->lid = (uint16_t)lid;
    h->mtu = (uint8_t)mtu;
    return 0;
}

int rdma_msg_item_words(uint32_t type)
{
    return type == RM_RUNS ? 2 : type == RM_SPANS ? 3 : 0;
}

/* Layout: type 0, n 4, id 8, a 16, b 24, c 32, zero 40..48, payload. */
size_t rdma_msg_encode(const rdma_msg *m, const uint64_t *words, const char *text, void *buf)
{
    unsigned char *p = buf;
    uint32_t n = m->n;
    size_t width = (size_t)rdma_msg_item_words(m->type);
    memset(p, 0, RDMA_MSG_HEADER);
    if (text && n > RDMA_MSG_BYTES - RDMA_MSG_HEADER)
        n = RDMA_MSG_BYTES - RDMA_MSG_HEADER;
    if (words && n > (RDMA_MSG_BYTES - RDMA_MSG_HEADER) / (8 * width))
        n = (uint32_t)((RDMA_MSG_BYTES - RDMA_MSG_HEADER) / (8 * width));
    put32(p, m->type);
    put32(p + 4, n);
    put64(p + 8, m->id);
    for (int i = 0; i < 3; i++)
        put64(p + 16 + 8 * i, m->word[i]);
    size_t len = RDMA_MSG_HEADER;
    if (words) {
        for (size_t i = 0; i < width * n; i++)
            put64(p + len + 8 * i, words[i]);
        len += 8 * width * n;
    } else if (text) {
        memcpy(p + len, text, n);
        len += n;
    }
    return len;
}

int rdma_msg_decode(const void *buf, size_t len, rdma_msg *m, const unsigned char **payload, eng_error *err)
{
    const unsigned char *p = buf;
    if (len < RDMA_MSG_HEADER || len > RDMA_MSG_BYTES)
        return eng_fail(err, "kvtransfer: RDMA message of %zu bytes", len);
    m->type = get32(p);
    m->n = get32(p + 4);
    m->id = get64(p + 8);
    for (int i = 0; i < 3; i++)
        m->word[i] = get64(p + 16 + 8 * i);
    *payload = p + RDMA_MSG_HEADER;
    size_t body = len - RDMA_MSG_HEADER;
    size_t width = (size_t)rdma_msg_item_words(m->type);
    if (m->type < RM_BEGIN || m->type > RM_PING || (width ? (size_t)m->n * 8 * width != body : m->n != body))
        return eng_fail(err, "kvtransfer: malformed RDMA message (type %u, %u items, %zu bytes)", (unsigned)m->type,
                        (unsigned)m->n, len);
    return 0;
}

uint64_t rdma_msg_word(const unsigned char *payload, uint32_t type, size_t i, int which)
{
    size_t width = (size_t)rdma_msg_item_words(type);
    return get64(payload + 8 * (width * i + (size_t)which));
}

int rdma_run_add(rdma_run *pending, int *has_pending, uint64_t src, uint64_t dst, uint64_t len, uint64_t max_len,
                 rdma_run *flush)
{
    if (*has_pending && pending->src + pending->len == src && pending->dst + pending->len == dst &&
        pending->len + len <= max_len) {
        pending->len += len;
        return 0;
    }
    int out = *has_pending;
    if (out)
        *flush = *pending;
    *pending = (rdma_run){src, dst, len};
    *has_pending = 1;
    return out;
}

int rdma_gid_is_ipv4(const uint8_t gid[16])
{
    static const uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return memcmp(gid, prefix, 12) == 0;
}
