/* test_rpc_queue.c: a gRPC call that waits in the server's handler queue past its
 * deadline is answered DEADLINE_EXCEEDED and its handler never runs (issue 12).
 *
 * A real server on loopback with one handler thread: call A holds that thread,
 * call B (200 ms deadline) queues behind it and expires; once A is released, B's
 * handler must not run, and the server still serves new calls. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "rpc.h"
#include "check.h"

#define BLOCK "/test.Queue/Block"
#define COUNT "/test.Queue/Count"

static atomic_int block_running, release_block, count_runs;

static void on_block(void *user, rpc_call *call, const rpc_bytes *req, rpc_bytes *resp, rpc_status *st)
{
    (void)user, (void)call, (void)req, (void)resp, (void)st;
    atomic_store(&block_running, 1);
    while (!atomic_load(&release_block))
        usleep(1000);
}

static void on_count(void *user, rpc_call *call, const rpc_bytes *req, rpc_bytes *resp, rpc_status *st)
{
    (void)user, (void)call, (void)req, (void)resp, (void)st;
    atomic_fetch_add(&count_runs, 1);
}

static void *call_block(void *ch)
{
    rpc_bytes out = {0};
    rpc_status st;
    int rc = rpc_unary(ch, BLOCK, "", 0, 10000, &out, &st);
    rpc_bytes_free(&out);
    return (void *)(intptr_t)(rc == 0);
}

int main(void)
{
    rpc_server *srv;
    rpc_status st;
    int port;
    REQUIRE(rpc_server_create("127.0.0.1:0", &port, &srv, &st) == 0, "%s", st.msg);
    rpc_server_set_max_handlers(srv, 1);
    REQUIRE(rpc_server_add_unary(srv, BLOCK, on_block, NULL, &st) == 0);
    REQUIRE(rpc_server_add_unary(srv, COUNT, on_count, NULL, &st) == 0);
    REQUIRE(rpc_server_start(srv, &st) == 0, "%s", st.msg);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    rpc_channel *ch;
    REQUIRE(rpc_channel_create(target, &ch, &st) == 0);

    pthread_t a;
    REQUIRE(pthread_create(&a, NULL, call_block, ch) == 0);
    for (int i = 0; i < 2000 && !atomic_load(&block_running); i++)
        usleep(1000);
    REQUIRE(atomic_load(&block_running), "the blocking call never started");

    rpc_bytes out = {0};
    CHECK(rpc_unary(ch, COUNT, "", 0, 200, &out, &st) == -1 && st.code == RPC_DEADLINE_EXCEEDED, "%s", st.msg);
    rpc_bytes_free(&out);
    usleep(100000);
    atomic_store(&release_block, 1);
    void *ok;
    pthread_join(a, &ok);
    CHECK(ok, "the blocking call failed");
    usleep(300000); /* time for the queued call's handler to run, were it to */
    CHECK(atomic_load(&count_runs) == 0, "a handler ran %d time(s) after its deadline passed in the queue",
          atomic_load(&count_runs));

    /* the server goes on serving */
    CHECK(rpc_unary(ch, COUNT, "", 0, 5000, &out, &st) == 0, "%s", st.msg);
    rpc_bytes_free(&out);
    CHECK(atomic_load(&count_runs) == 1);
    rpc_channel_destroy(ch);
    rpc_server_stop(srv);
    return check_summary();
}
