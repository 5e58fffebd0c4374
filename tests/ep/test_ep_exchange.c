/* test_ep_exchange.c: the EP exchange between two ranks in one process, over loopback
 * TCP, on a small MoE checkpoint written here (16 experts top-4): each rank loads only
 * its half of the experts, routes its own rows, and gets bitwise the MoE layer that one
 * process computes with every expert (eng_moe_layer), also when one rank has no rows
 * (the dummy pass). Then a rank that stays silent: the other's exchange fails within
 * the deadline with a message naming it, and the group breaks (and forms again). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt.h"
#include "check.h"
#include "common/addr.h"
#include "ep.h"
#include "model/model.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = 0;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

typedef struct rank_run {
    wrk_ep *ep;
    eng_model *m;
    int layer, T;
    const float *x;
    float *out;
    int rc;
    eng_error err;
} rank_run;

static void *run_layer(void *arg)
{
    rank_run *r = arg;
    r->rc = wrk_ep_step_begin(r->ep, &r->err);
    if (r->rc == 0)
        r->rc = wrk_ep_moe(r->ep, r->m, r->layer, r->x, r->T, r->out, &r->err);
    wrk_ep_step_end(r->ep);
    return NULL;
}

int main(void)
{
    ckpt_spec s;
    ckpt_defaults(&s, 1);
    s.experts = 16;
    s.experts_per_tok = 4;
    const char *dir = ckpt_tmpdir("ep");
    REQUIRE(ckpt_write(dir, &s) == 0, "write checkpoint");

    eng_error err;
    eng_model *full = NULL, *m[2] = {NULL, NULL};
    eng_model_options all = {.n_threads = 1};
    REQUIRE(eng_model_load(dir, &all, &full, &err) == 0, "%s", err.msg);
    const eng_config *c = eng_model_config(full);
    int H = c->hidden_size, E = c->num_experts;

    char peers[128];
    snprintf(peers, sizeof peers, "127.0.0.1:%d,127.0.0.1:%d", free_port(), free_port());
    wrk_ep *ep[2] = {NULL, NULL};
    for (int r = 0; r < 2; r++) {
        uint8_t mask[16] = {0};
        int lo, hi;
        wrk_ep_range(E, 2, r, &lo, &hi);
        memset(mask + lo, 1, (size_t)(hi - lo));
        eng_model_options o = {.n_threads = 1, .expert_mask = mask};
        REQUIRE(eng_model_load(dir, &o, &m[r], &err) == 0, "%s", err.msg);
        CHECK(eng_model_used_weight_bytes(m[r]) < eng_model_used_weight_bytes(full), "rank %d needs fewer bytes", r);
        wrk_ep_options eo = {.group = "test", .size = 2, .rank = r, .peers = peers, .deadline_ms = 500, .n_experts = E};
        REQUIRE(wrk_ep_start(&eo, &ep[r], &err) == 0, "%s", err.msg);
    }
    for (int i = 0; i < 500 && !(wrk_ep_ready(ep[0], NULL, 0) && wrk_ep_ready(ep[1], NULL, 0)); i++)
        usleep(10000);
    REQUIRE(wrk_ep_ready(ep[0], NULL, 0) && wrk_ep_ready(ep[1], NULL, 0), "the group forms");
    CHECK(wrk_ep_epoch(ep[0]) == wrk_ep_epoch(ep[1]), "both ranks agree on the epoch");

    /* rows of different counts on each rank, including none */
    int counts[][2] = {{5, 3}, {1, 0}, {0, 7}, {40, 17}};
    srand(7);
    for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++)
        for (int layer = 0; layer < c->num_hidden_layers; layer++) {
            if (!eng_moe_is_layer(full, layer))
                continue;
            rank_run run[2];
            pthread_t th[2];
            for (int r = 0; r < 2; r++) {
                int T = counts[k][r];
                float *x = malloc(((size_t)T * H + 1) * sizeof *x), *out = calloc((size_t)T * H + 1, sizeof *out);
                for (int i = 0; i < T * H; i++)
                    x[i] = (float)rand() / (float)RAND_MAX - 0.5f;
                run[r] = (rank_run){.ep = ep[r], .m = m[r], .layer = layer, .T = T, .x = x, .out = out};
                pthread_create(&th[r], NULL, run_layer, &run[r]);
            }
            for (int r = 0; r < 2; r++) {
                pthread_join(th[r], NULL);
                CHECK(run[r].rc == 0, "rank %d layer %d: %s", r, layer, run[r].err.msg);
                float *ref = calloc((size_t)run[r].T * H + 1, sizeof *ref);
                CHECK(eng_moe_layer(full, layer, run[r].x, run[r].T, NULL, ref, &err) == 0, "%s", err.msg);
                CHECK(!memcmp(ref, run[r].out, (size_t)run[r].T * H * sizeof *ref),
                      "rank %d, %d rows (other rank %d), layer %d: bitwise the single-process layer", r, run[r].T,
                      run[1 - r].T, layer);
                free(ref);
                free((void *)run[r].x);
                free(run[r].out);
            }
        }

    /* rank 1 stays silent: rank 0 fails within the deadline, and the group is down */
    float x[64 * 4] = {0.25f}, out[64 * 4] = {0};
    REQUIRE(H <= 64, "hidden fits the buffer");
    rank_run lone = {.ep = ep[0], .m = m[0], .layer = 0, .T = 4, .x = x, .out = out};
    while (!eng_moe_is_layer(full, lone.layer))
        lone.layer++;
    uint32_t epoch = wrk_ep_epoch(ep[0]);
    run_layer(&lone);
    CHECK(lone.rc < 0 && strstr(lone.err.msg, "rank 1"), "a silent rank is named: %s", lone.err.msg);
    /* both ranks are alive, so the mesh may already have formed the group again */
    CHECK(!wrk_ep_ready(ep[0], NULL, 0) || wrk_ep_epoch(ep[0]) > epoch, "the group broke");

    for (int r = 0; r < 2; r++) {
        wrk_ep_stop(ep[r]);
        eng_model_free(m[r]);
    }
    eng_model_free(full);
    ckpt_remove(dir);
    return check_summary();
}
