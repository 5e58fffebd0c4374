/* test_ep_exchange.c: the EP exchange between two ranks in one process, over loopback
 * TCP, on a small MoE checkpoint written here (16 experts top-4): each rank loads only
 * its half of the experts, routes its own rows, and gets bitwise the MoE layer that one
 * process computes with every expert (eng_moe_layer), also when one rank has no rows
 * (the dummy pass). Then a rank that stays silent: the other's exchange fails within
 * the deadline with a message naming it, and the group breaks (and forms again). Then
 * an --expert-placement with replicas and a group secret: bitwise again; ranks with
 * different secrets never form a group; malformed placement files are refused. */
#include <pthread.h>
#include <stdio.h>
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

/* Two ranks of group `name` over loopback, each with the model's experts that the
 * placement gives it (NULL: contiguous ranges), and secrets[r] as its group secret. */
static int start_group(const char *dir, const char *name, const char *placement, const char *const secrets[2],
                       wrk_ep *ep[2], eng_model *m[2], int E)
{
    char peers[128];
    snprintf(peers, sizeof peers, "127.0.0.1:%d,127.0.0.1:%d", free_port(), free_port());
    eng_error err;
    wrk_ep_placement pl;
    REQUIRE(wrk_ep_placement_load(placement, E, 2, &pl, &err) == 0, "%s", err.msg);
    for (int r = 0; r < 2; r++) {
        eng_model_options o = {.n_threads = 1, .expert_mask = pl.held + (size_t)r * E};
        REQUIRE(eng_model_load(dir, &o, &m[r], &err) == 0, "%s", err.msg);
        wrk_ep_options eo = {.group = name,
                             .size = 2,
                             .rank = r,
                             .peers = peers,
                             .deadline_ms = 500,
                             .n_experts = E,
                             .placement = &pl,
                             .secret_file = secrets ? secrets[r] : NULL};
        REQUIRE(wrk_ep_start(&eo, &ep[r], &err) == 0, "%s", err.msg);
    }
    wrk_ep_placement_free(&pl);
    for (int i = 0; i < 150 && !(wrk_ep_ready(ep[0], NULL, 0) && wrk_ep_ready(ep[1], NULL, 0)); i++)
        usleep(10000);
    return wrk_ep_ready(ep[0], NULL, 0) && wrk_ep_ready(ep[1], NULL, 0);
}

static void stop_group(wrk_ep *ep[2], eng_model *m[2])
{
    for (int r = 0; r < 2; r++) {
        wrk_ep_stop(ep[r]);
        eng_model_free(m[r]);
    }
}

/* Rows of different counts on each rank, including none: every MoE layer bitwise the
 * single-process layer. */
static void check_exact(const char *what, eng_model *full, wrk_ep *ep[2], eng_model *m[2])
{
    const eng_config *c = eng_model_config(full);
    int H = c->hidden_size;
    eng_error err;
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
                CHECK(run[r].rc == 0, "%s: rank %d layer %d: %s", what, r, layer, run[r].err.msg);
                float *ref = calloc((size_t)run[r].T * H + 1, sizeof *ref);
                CHECK(eng_moe_layer(full, layer, run[r].x, run[r].T, NULL, ref, &err) == 0, "%s", err.msg);
                CHECK(!memcmp(ref, run[r].out, (size_t)run[r].T * H * sizeof *ref),
                      "%s: rank %d, %d rows (other rank %d), layer %d: bitwise the single-process layer", what, r,
                      run[r].T, run[1 - r].T, layer);
                free(ref);
                free((void *)run[r].x);
                free(run[r].out);
            }
        }
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    REQUIRE(f && fputs(text, f) >= 0 && fclose(f) == 0, "write %s", path);
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

    wrk_ep *ep[2] = {NULL, NULL};
    REQUIRE(start_group(dir, "test", NULL, NULL, ep, m, E), "the group forms");
    for (int r = 0; r < 2; r++) {
        CHECK(eng_model_used_weight_bytes(m[r]) < eng_model_used_weight_bytes(full), "rank %d needs fewer bytes", r);
        CHECK(wrk_ep_experts_held(ep[r]) == E / 2, "rank %d holds half the experts", r);
    }
    CHECK(wrk_ep_epoch(ep[0]) == wrk_ep_epoch(ep[1]), "both ranks agree on the epoch");
    check_exact("contiguous ranges", full, ep, m);

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
    stop_group(ep, m);

    /* a placement file with replicas (experts 4..11 on both ranks) and a group secret:
     * still bitwise, whichever replica runs a pick */
    char placement[512], secret[512], wrong[512], bad[512];
    snprintf(placement, sizeof placement, "%s/placement.json", dir);
    snprintf(secret, sizeof secret, "%s/secret", dir);
    snprintf(wrong, sizeof wrong, "%s/wrong", dir);
    snprintf(bad, sizeof bad, "%s/bad.json", dir);
    write_text(placement, "{\"ranks\": [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, "
                          "14, 15]]}");
    write_text(secret, "0123456789abcdef0123456789abcdef\n");
    write_text(wrong, "fedcba9876543210fedcba9876543210\n");
    const char *same[2] = {secret, secret}, *differ[2] = {secret, wrong};
    REQUIRE(start_group(dir, "replicas", placement, same, ep, m, E), "the group with replicas and a secret forms");
    for (int r = 0; r < 2; r++)
        CHECK(wrk_ep_experts_held(ep[r]) == 12, "rank %d holds 12 experts", r);
    CHECK(wrk_ep_pick(ep[0], 6, 3) == 0 && wrk_ep_pick(ep[1], 6, 3) == 1, "a replica held here runs here");
    CHECK(wrk_ep_pick(ep[0], 13, 0) == 1 && wrk_ep_pick(ep[1], 2, 5) == 0, "an expert held elsewhere runs there");
    check_exact("replicas", full, ep, m);
    stop_group(ep, m);

    /* a rank with another secret is refused: the group does not form */
    CHECK(!start_group(dir, "secrets", NULL, differ, ep, m, E), "ranks with different secrets do not form a group");
    stop_group(ep, m);

    /* bad placement files: one clear line each, nothing loaded */
    const char *bads[][2] = {{"{\"ranks\": [[0, 1, 2, 3, 4, 5, 6, 7]]}", "array of 2 lists"},
                             {"{\"ranks\": [[0, 1, 2, 3, 4, 5, 6, 7], [8, 9, 10, 11, 12, 13, 14]]}", "expert 15"},
                             {"{\"ranks\": [[0, 1, 1], [2, 3]]}", "twice"},
                             {"{\"ranks\": [[0, 16], [1]]}", "[0, 16)"},
                             {"[1, 2", "not JSON"}};
    for (size_t i = 0; i < sizeof bads / sizeof bads[0]; i++) {
        write_text(bad, bads[i][0]);
        wrk_ep_placement pl;
        CHECK(wrk_ep_placement_load(bad, E, 2, &pl, &err) < 0 && strstr(err.msg, bads[i][1]),
              "placement %s refused: %s", bads[i][0], err.msg);
    }

    eng_model_free(full);
    unlink(placement);
    unlink(secret);
    unlink(wrong);
    unlink(bad);
    ckpt_remove(dir);
    return check_summary();
}
