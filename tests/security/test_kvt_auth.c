/* test_kvt_auth.c: only the reservation's peer, holding its secret, may write a KV
 * transfer (issue 12, acceptance 5). A receiver opens transfers with
 * kvt_expect_guarded; a real TCP sender (a second transport over loopback) then tries a
 * transfer that is not expected, one with a wrong secret, and one from a host that is not
 * the named peer: each is refused, the receiver's pool keeps every byte, the refusal is
 * counted by reason, and a bad secret or peer costs the sender its connection. The same
 * sender with the right secret from the named host still lands its bytes. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvtransfer.h"
#include "check.h"

/* A run larger than the sockets' buffers: the receiver hangs up on a refused BEGIN while
 * the sender is still writing, so the sender's send fails before it reads the verdict. */
#define POOL_BYTES (16u << 20)
#define RUN_BYTES (8u << 20)
#define POOL_FILL 0xab
#define SOURCE_FILL 0x11

typedef struct side {
    kvt_transport *t;
    kvt_region *r;
    unsigned char *mem;
} side;

static void side_open(side *s, int fill)
{
    kvt_tcp_options o = {.bind_host = "127.0.0.1", .io_timeout_ms = 2000};
    eng_error err;
    REQUIRE(kvt_tcp_create(&o, &s->t, &err) == 0, "%s", err.msg);
    REQUIRE((s->mem = malloc(POOL_BYTES)) != NULL);
    memset(s->mem, fill, POOL_BYTES);
    REQUIRE(kvt_register(s->t, s->mem, POOL_BYTES, &s->r, &err) == 0, "%s", err.msg);
}

static void side_close(side *s)
{
    eng_error err;
    CHECK(kvt_deregister(s->t, s->r, &err) == 0, "%s", err.msg);
    kvt_destroy(s->t);
    free(s->mem);
}

/* 1 when no byte of the receiver's pool changed. */
static int pool_untouched(const side *rx)
{
    for (size_t i = 0; i < POOL_BYTES; i++)
        if (rx->mem[i] != POOL_FILL)
            return 0;
    return 1;
}

/* A new sender (a connection of its own): a refused BEGIN closes the receiver's end of
 * the old one, which the old sender may not have noticed yet. */
static kvt_peer *new_sender(side *tx, const char *desc, size_t desc_len)
{
    if (tx->t)
        side_close(tx);
    side_open(tx, SOURCE_FILL);
    kvt_peer *peer = NULL;
    eng_error err;
    REQUIRE(kvt_connect(tx->t, desc, desc_len, &peer, &err) == 0, "%s", err.msg);
    return peer;
}

/* Sends one RUN_BYTES run to dst offset 0 of transfer id with secret (NULL: none) and
 * returns kvt_send_finish's result; why gets its error. */
static int send_one(side *tx, kvt_peer *peer, uint64_t id, const kvt_secret *secret, char *why, size_t cap)
{
    eng_error err = {0};
    kvt_send *s = NULL;
    int rc = kvt_send_begin(peer, tx->r, id, secret, &s, &err);
    if (rc == 0 && kvt_send_write(s, 0, 0, RUN_BYTES, &err) < 0) {
        kvt_send_abort(s, "write failed");
        rc = -1;
    } else if (rc == 0) {
        rc = kvt_send_finish(s, 5000, &err);
    }
    snprintf(why, cap, "%s", rc ? err.msg : "");
    return rc;
}

int main(void)
{
    side rx, tx = {0};
    side_open(&rx, POOL_FILL);
    eng_error err;
    char desc[KVT_DESCRIPTOR_MAX], why[sizeof err.msg];
    size_t desc_len;
    REQUIRE(kvt_descriptor(rx.t, rx.r, desc, sizeof desc, &desc_len, &err) == 0, "%s", err.msg);
    kvt_peer *peer = new_sender(&tx, desc, desc_len);
    const kvt_span span = {0, RUN_BYTES};
    kvt_stats st;

    /* 1. a transfer the receiver never opened */
    uint64_t known, unknown;
    kvt_secret secret;
    REQUIRE(kvt_expect_guarded(rx.t, rx.r, &span, 1, RUN_BYTES, "localhost", &known, &secret, &err) == 0, "%s",
            err.msg);
    unknown = known + 1000;
    CHECK(send_one(&tx, peer, unknown, &secret, why, sizeof why) < 0, "a transfer nobody expected was accepted");
    printf("unknown transfer: %s\n", why);
    CHECK(pool_untouched(&rx), "an unknown transfer wrote into the pool");
    kvt_get_stats(rx.t, &st);
    CHECK(st.refused_unknown == 1, "refused_unknown %llu", (unsigned long long)st.refused_unknown);

    /* 2. the right transfer with a wrong secret (one bit off), and with none */
    kvt_secret wrong = secret;
    wrong.bytes[KVT_SECRET_BYTES - 1] ^= 1;
    CHECK(send_one(&tx, peer, known, &wrong, why, sizeof why) < 0, "a wrong secret was accepted");
    printf("wrong secret: %s\n", why);
    CHECK(strstr(why, "secret"), "the sender learns why: %s", why);
    CHECK(pool_untouched(&rx), "a transfer with a wrong secret wrote into the pool");
    CHECK(kvt_wait(rx.t, known, 0, &err) == KVT_PENDING, "a refused BEGIN must leave the reservation to its peer");
    peer = new_sender(&tx, desc, desc_len);
    CHECK(send_one(&tx, peer, known, NULL, why, sizeof why) < 0, "a BEGIN without a secret was accepted");
    printf("no secret: %s\n", why);
    CHECK(pool_untouched(&rx), "a transfer without a secret wrote into the pool");
    kvt_get_stats(rx.t, &st);
    CHECK(st.refused_secret == 2, "refused_secret %llu", (unsigned long long)st.refused_secret);

    /* 3. the right secret from a host that is not the named peer (the sender connects
     * from 127.0.0.1; the reservation names 127.0.0.2) */
    uint64_t elsewhere;
    kvt_secret elsewhere_secret;
    REQUIRE(kvt_expect_guarded(rx.t, rx.r, &span, 1, RUN_BYTES, "127.0.0.2", &elsewhere, &elsewhere_secret, &err) == 0,
            "%s", err.msg);
    peer = new_sender(&tx, desc, desc_len);
    CHECK(send_one(&tx, peer, elsewhere, &elsewhere_secret, why, sizeof why) < 0, "a stranger was accepted");
    printf("wrong peer: %s\n", why);
    CHECK(pool_untouched(&rx), "a transfer from a stranger wrote into the pool");
    kvt_get_stats(rx.t, &st);
    CHECK(st.refused_peer == 1, "refused_peer %llu", (unsigned long long)st.refused_peer);
    kvt_forget(rx.t, elsewhere);

    /* 4. the real sender: its bytes land */
    peer = new_sender(&tx, desc, desc_len);
    CHECK(send_one(&tx, peer, known, &secret, why, sizeof why) == 0, "the named peer was refused: %s", why);
    CHECK(kvt_wait(rx.t, known, 5000, &err) == KVT_OK, "%s", err.msg);
    CHECK(memcmp(rx.mem, tx.mem, RUN_BYTES) == 0, "the named peer's bytes did not land");
    CHECK(rx.mem[RUN_BYTES] == POOL_FILL, "bytes beyond the transfer changed");
    kvt_forget(rx.t, known);

    /* bad arguments change nothing */
    uint64_t id;
    CHECK(kvt_expect_guarded(rx.t, rx.r, &span, 1, RUN_BYTES, "no-such-host.invalid", &id, &secret, &err) < 0);
    printf("unresolvable peer: %s\n", err.msg);

    side_close(&tx);
    side_close(&rx);
    return check_summary();
}
