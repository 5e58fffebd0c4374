/* test_router_pick.c: the coordinator's decisions without a network.
 *
 * Registry: registration accepted or refused (model, KV layout, role, address),
 * re-registration under the same id replaces the entry, heartbeats update the load
 * and unknown ids are told to register again, silence past 3 intervals or a failed
 * call takes a worker out of rotation and its next heartbeat puts it back, and what
 * the router sent since the last heartbeat counts as load; the registry's limits
 * (worker count, forgetting silent workers, free > total refused) and the router's
 * admission (requests in flight capped with 429, max_tokens bounded by the context).
 * Routing (coord_route_pick): least-loaded decode worker, least-queued prefill
 * worker, never a pair with different KV layouts (and the reason names both),
 * exclusions, unhealthy workers skipped, colocated mode (forced, or only role-BOTH
 * workers), pools too small, and the `full` hint. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "router.h"
#include "check.h"

static coord_worker_view W(const char *id, int role, int healthy, int dtype, uint32_t used, uint32_t total,
                           uint32_t running, uint64_t queued_tokens)
{
    coord_worker_view v;
    memset(&v, 0, sizeof v);
    snprintf(v.id, sizeof v.id, "%s", id);
    snprintf(v.rpc_address, sizeof v.rpc_address, "127.0.0.1:1");
    snprintf(v.transport, sizeof v.transport, "tcp");
    v.role = role;
    v.healthy = healthy;
    v.layout = (eng_kv_layout){
        .dtype = (eng_dtype)dtype, .block_size = 16, .n_layers = 2, .n_kv_heads = 2, .head_dim = 64};
    v.kv_used = used;
    v.kv_total = total;
    v.running = running;
    v.queued_prompt_tokens = queued_tokens;
    v.max_context = 4096;
    return v;
}

enum { P = TANDEM__ROLE__ROLE_PREFILL, D = TANDEM__ROLE__ROLE_DECODE, B = TANDEM__ROLE__ROLE_BOTH };

static void test_pick(void)
{
    coord_route r;
    char why[512];
    int full;
    /* least-loaded decode, least-queued prefill */
    coord_worker_view v[] = {
        W("p1", P, 1, 0, 0, 100, 0, 500),
        W("p2", P, 1, 0, 0, 100, 0, 20),
        W("d1", D, 1, 0, 50, 100, 3, 0),
        W("d2", D, 1, 0, 10, 100, 1, 0),
    };
    CHECK(coord_route_pick(v, 4, 0, 10, 20, NULL, 0, &r, &full, why, sizeof why) == 0, "%s", why);
    CHECK(r.decode == 3 && r.prefill == 1 && !r.colocated && !full, "decode %d prefill %d", r.decode, r.prefill);

    /* what the router sent since the heartbeat counts */
    v[3].sent_streams = 5;
    v[1].sent_prompt_tokens = 1000;
    CHECK(coord_route_pick(v, 4, 0, 10, 20, NULL, 0, &r, NULL, why, sizeof why) == 0, "%s", why);
    CHECK(r.decode == 2 && r.prefill == 0, "after sends: decode %d prefill %d", r.decode, r.prefill);
    v[3].sent_streams = 0;
    v[1].sent_prompt_tokens = 0;

    /* exclusions and unhealthy workers */
    const char *ex[] = {"d2", "p2"};
    CHECK(coord_route_pick(v, 4, 0, 10, 20, ex, 2, &r, NULL, why, sizeof why) == 0, "%s", why);
    CHECK(r.decode == 2 && r.prefill == 0, "excluded: decode %d prefill %d", r.decode, r.prefill);
    v[0].healthy = v[1].healthy = 0;
    CHECK(coord_route_pick(v, 4, 0, 10, 20, NULL, 0, &r, NULL, why, sizeof why) < 0, "no prefill");
    CHECK(strstr(why, "no healthy prefill worker") != NULL, "%s", why);
    v[0].healthy = v[1].healthy = 1;

    /* a decode worker with room beats a less busy one without */
    v[3].kv_used = 99;
    CHECK(coord_route_pick(v, 4, 0, 100, 200, NULL, 0, &r, &full, why, sizeof why) == 0, "%s", why);
    CHECK(r.decode == 2 && !full, "room first: %d", r.decode);
    v[2].kv_used = 95;
    CHECK(coord_route_pick(v, 4, 0, 100, 200, NULL, 0, &r, &full, why, sizeof why) == 0 && full, "full hint");
    /* a pool that can never hold the request */
    CHECK(coord_route_pick(v, 4, 0, 100, 100 * 16 + 1, NULL, 0, &r, NULL, why, sizeof why) < 0, "too big");
    CHECK(strstr(why, "KV pool") != NULL, "%s", why);
    /* a prompt beyond the context */
    CHECK(coord_route_pick(v, 4, 0, 5000, 5001, NULL, 0, &r, NULL, why, sizeof why) < 0, "context");
    CHECK(strstr(why, "context") != NULL, "%s", why);
}

static void test_layouts(void)
{
    coord_route r;
    char why[512];
    /* d1 is idle but its layout (f16) matches no prefill worker: d2 (f32) is used */
    coord_worker_view v[] = {
        W("p1", P, 1, 0, 0, 100, 0, 0),
        W("d1", D, 1, 1, 0, 100, 0, 0),
        W("d2", D, 1, 0, 50, 100, 7, 0),
    };
    CHECK(coord_route_pick(v, 3, 0, 10, 20, NULL, 0, &r, NULL, why, sizeof why) == 0, "%s", why);
    CHECK(r.decode == 2 && r.prefill == 0, "layout pairing: decode %d", r.decode);
    /* without d2 no pair fits, and the reason names both layouts */
    v[2].healthy = 0;
    CHECK(coord_route_pick(v, 3, 0, 10, 20, NULL, 0, &r, NULL, why, sizeof why) < 0, "mismatch");
    CHECK(strstr(why, "layout") && strstr(why, "f16 bs16") && strstr(why, "f32 bs16"), "%s", why);
    /* bf16 (the workers' default) against f32: never paired either */
    v[1].layout.dtype = ENG_DT_BF16;
    CHECK(coord_route_pick(v, 3, 0, 10, 20, NULL, 0, &r, NULL, why, sizeof why) < 0, "bf16 against f32");
    CHECK(strstr(why, "bf16 bs16") && strstr(why, "f32 bs16"), "%s", why);
    /* the prefill worker's KV dtype, but computed with bf16 matmul inputs: never paired */
    v[1].layout.dtype = ENG_DT_F32;
    v[1].layout.matmul_dtype = ENG_DT_BF16;
    CHECK(coord_route_pick(v, 3, 0, 10, 20, NULL, 0, &r, NULL, why, sizeof why) < 0, "matmul dtype mismatch");
    CHECK(strstr(why, "mm-bf16") != NULL, "%s", why);
    v[1].layout.matmul_dtype = ENG_DT_F32;
    /* block size differs: also a mismatch */
    v[1].layout.dtype = ENG_DT_F32;
    v[1].layout.block_size = 32;
    CHECK(coord_route_pick(v, 3, 0, 10, 20, NULL, 0, &r, NULL, why, sizeof why) < 0, "block size mismatch");
    /* transports differ: a mismatch too */
    v[1].layout.block_size = 16;
    snprintf(v[1].transport, sizeof v[1].transport, "rdma");
    CHECK(coord_route_pick(v, 3, 0, 10, 20, NULL, 0, &r, NULL, why, sizeof why) < 0, "transport mismatch");
}

static void test_colocated(void)
{
    coord_route r;
    char why[512];
    coord_worker_view v[] = {W("b1", B, 1, 0, 10, 100, 4, 0), W("b2", B, 1, 0, 10, 100, 1, 0)};
    /* only role BOTH: colocated without being asked */
    CHECK(coord_route_pick(v, 2, 0, 10, 20, NULL, 0, &r, NULL, why, sizeof why) == 0, "%s", why);
    CHECK(r.colocated && r.decode == 1 && r.prefill == -1, "colocated pick %d", r.decode);
    /* forced colocated ignores prefill/decode workers */
    coord_worker_view m[] = {W("p1", P, 1, 0, 0, 100, 0, 0), W("d1", D, 1, 0, 0, 100, 0, 0)};
    CHECK(coord_route_pick(m, 2, 1, 10, 20, NULL, 0, &r, NULL, why, sizeof why) < 0, "forced, no both");
    CHECK(strstr(why, "role both") != NULL, "%s", why);
    /* disaggregated with BOTH workers: they may serve either side, never both at once */
    coord_worker_view x[] = {W("b1", B, 1, 0, 0, 100, 0, 0), W("d1", D, 1, 0, 0, 100, 5, 0)};
    CHECK(coord_route_pick(x, 2, 0, 10, 20, NULL, 0, &r, NULL, why, sizeof why) == 0, "%s", why);
    CHECK(!r.colocated && r.decode == 1 && r.prefill == 0, "both as prefill: %d %d", r.decode, r.prefill);
    /* no workers at all */
    CHECK(coord_route_pick(x, 0, 0, 10, 20, NULL, 0, &r, NULL, why, sizeof why) < 0, "empty");
}

static void info_init(Tandem__WorkerInfo *in, Tandem__Capacity *cap, Tandem__KvLayout *lay, const char *id, int role,
                      const char *model)
{
    tandem__worker_info__init(in);
    tandem__capacity__init(cap);
    tandem__kv_layout__init(lay);
    lay->dtype = TANDEM__DTYPE__DTYPE_F32;
    lay->block_size = 16;
    lay->layers = 2;
    lay->kv_heads = 2;
    lay->head_dim = 64;
    cap->kv_blocks_total = 100;
    cap->kv_blocks_free = 100;
    cap->max_context = 4096;
    in->worker_id = (char *)id;
    in->role = (Tandem__Role)role;
    in->rpc_address = "127.0.0.1:5000";
    in->metrics_address = "127.0.0.1:5001";
    in->model = (char *)model;
    in->capacity = cap;
    in->kv_layout = lay;
}

static coord_worker_view find(coord_registry *reg, const char *id, int *n_out)
{
    coord_worker_view *v = NULL, out;
    int n = 0;
    memset(&out, 0, sizeof out);
    if (coord_registry_snapshot(reg, &v, &n) == 0) {
        for (int i = 0; i < n; i++)
            if (!strcmp(v[i].id, id))
                out = v[i];
        free(v);
    }
    if (n_out)
        *n_out = n;
    return out;
}

static void test_registry(void)
{
    coord_registry_config cfg = {.model = "tiny", .n_layers = 2, .n_kv_heads = 2, .head_dim = 64, .heartbeat_ms = 40};
    coord_registry *reg = NULL;
    eng_error err;
    CHECK(coord_registry_new(&cfg, &reg, &err) == 0, "%s", err.msg);
    if (!reg)
        return;
    Tandem__WorkerInfo in;
    Tandem__Capacity cap;
    Tandem__KvLayout lay;
    char why[512];
    info_init(&in, &cap, &lay, "d1", D, "tiny");
    CHECK(coord_registry_register(reg, &in, why, sizeof why) == 1, "%s", why);
    info_init(&in, &cap, &lay, "p1", P, "other");
    CHECK(coord_registry_register(reg, &in, why, sizeof why) == 0 && strstr(why, "model 'other'"), "%s", why);
    info_init(&in, &cap, &lay, "p1", P, "tiny");
    lay.kv_heads = 4;
    CHECK(coord_registry_register(reg, &in, why, sizeof why) == 0 && strstr(why, "KV layout"), "%s", why);
    info_init(&in, &cap, &lay, "p1", P, "tiny");
    lay.dtype = (Tandem__DType)7; /* a dtype the engine has no name or size for */
    CHECK(coord_registry_register(reg, &in, why, sizeof why) == 0 && strstr(why, "KV layout unknown bs16 L2 kv2 d64"),
          "%s", why);
    info_init(&in, &cap, &lay, "p1", P, "tiny");
    lay.dtype = (Tandem__DType)ENG_DT_F8E4M3; /* a weight dtype, never a KV cache's */
    CHECK(coord_registry_register(reg, &in, why, sizeof why) == 0 && strstr(why, "KV layout f8e4m3 bs16"), "%s", why);
    info_init(&in, &cap, &lay, "p1", 0, "tiny");
    CHECK(coord_registry_register(reg, &in, why, sizeof why) == 0 && strstr(why, "role"), "%s", why);
    info_init(&in, &cap, &lay, "p1", P, "tiny");
    in.rpc_address = "";
    CHECK(coord_registry_register(reg, &in, why, sizeof why) == 0 && strstr(why, "rpc_address"), "%s", why);
    info_init(&in, &cap, &lay, "p1", P, "tiny");
    CHECK(coord_registry_register(reg, &in, why, sizeof why) == 1, "%s", why);
    int counts[3];
    coord_registry_counts(reg, counts);
    CHECK(counts[0] == 1 && counts[1] == 1 && counts[2] == 0, "counts %d %d %d", counts[0], counts[1], counts[2]);

    /* heartbeats: load, sent counts reset, unknown ids re-register */
    coord_registry_note_sent(reg, "d1", 2, 30, 0);
    coord_worker_view d = find(reg, "d1", NULL);
    CHECK(d.sent_streams == 2 && d.sent_blocks == 30, "sent %u %u", d.sent_streams, d.sent_blocks);
    Tandem__WorkerLoad l = TANDEM__WORKER_LOAD__INIT;
    Tandem__BatchStats bs = TANDEM__BATCH_STATS__INIT;
    bs.max_batch = 7;
    l.worker_id = "d1";
    l.running = 3;
    l.kv_blocks_used = 12;
    l.kv_blocks_total = 100;
    l.batch = &bs;
    CHECK(coord_registry_heartbeat(reg, &l) == 1, "known heartbeat");
    d = find(reg, "d1", NULL);
    CHECK(d.running == 3 && d.kv_used == 12 && d.max_batch == 7 && d.sent_streams == 0 && d.healthy, "load");
    l.worker_id = "ghost";
    CHECK(coord_registry_heartbeat(reg, &l) == 0, "unknown heartbeat");

    /* silence: out of rotation after 3 intervals, back with the next heartbeat */
    usleep(200 * 1000);
    CHECK(!find(reg, "d1", NULL).healthy, "silent worker still healthy");
    l.worker_id = "d1";
    coord_registry_heartbeat(reg, &l);
    CHECK(find(reg, "d1", NULL).healthy, "heartbeat did not bring it back");
    /* a failed call: out until the next heartbeat */
    coord_registry_mark_failed(reg, "d1", "connection refused");
    CHECK(!find(reg, "d1", NULL).healthy, "failed worker healthy");
    coord_registry_heartbeat(reg, &l);
    CHECK(find(reg, "d1", NULL).healthy, "failed worker not back");

    /* restart under the same id replaces the entry */
    info_init(&in, &cap, &lay, "d1", D, "tiny");
    in.rpc_address = "127.0.0.1:6000";
    CHECK(coord_registry_register(reg, &in, why, sizeof why) == 1, "%s", why);
    int n = 0;
    d = find(reg, "d1", &n);
    CHECK(n == 2 && d.registrations == 2 && !strcmp(d.rpc_address, "127.0.0.1:6000") && d.running == 0,
          "re-registration: n %d regs %llu addr %s", n, (unsigned long long)d.registrations, d.rpc_address);
    coord_registry_free(reg);
}

/* Issue 12: the registry's growth and arithmetic are bounded. */
static void test_registry_limits(void)
{
    coord_registry_config cfg = {.model = "tiny",
                                 .n_layers = 2,
                                 .n_kv_heads = 2,
                                 .head_dim = 64,
                                 .heartbeat_ms = 20,
                                 .max_workers = 2,
                                 .forget_ms = 300};
    coord_registry *reg = NULL;
    eng_error err;
    REQUIRE(coord_registry_new(&cfg, &reg, &err) == 0, "%s", err.msg);
    Tandem__WorkerInfo in;
    Tandem__Capacity cap;
    Tandem__KvLayout lay;
    char why[512];
    /* more free blocks than blocks: total - free would wrap around */
    info_init(&in, &cap, &lay, "d1", D, "tiny");
    cap.kv_blocks_free = 101;
    CHECK(coord_registry_register(reg, &in, why, sizeof why) == 0 && strstr(why, "101 free KV blocks of 100"), "%s",
          why);
    info_init(&in, &cap, &lay, "d1", D, "tiny");
    CHECK(coord_registry_register(reg, &in, why, sizeof why) == 1, "%s", why);
    Tandem__WorkerLoad l = TANDEM__WORKER_LOAD__INIT;
    l.worker_id = "d1";
    l.kv_blocks_used = 500;
    l.kv_blocks_total = 100;
    CHECK(coord_registry_heartbeat(reg, &l) == 1);
    coord_worker_view d = find(reg, "d1", NULL);
    CHECK(d.kv_used == 100 && d.kv_total == 100, "used %u of %u", d.kv_used, d.kv_total);
    /* at most max_workers known at once; re-registering a known id still works */
    info_init(&in, &cap, &lay, "d2", D, "tiny");
    CHECK(coord_registry_register(reg, &in, why, sizeof why) == 1, "%s", why);
    info_init(&in, &cap, &lay, "d3", D, "tiny");
    CHECK(coord_registry_register(reg, &in, why, sizeof why) == 0 && strstr(why, "limit"), "%s", why);
    info_init(&in, &cap, &lay, "d2", D, "tiny");
    CHECK(coord_registry_register(reg, &in, why, sizeof why) == 1, "%s", why);
    /* silent past forget_ms: forgotten, which makes room */
    int n = -1;
    for (int i = 0; i < 100 && n != 0; i++) {
        usleep(20 * 1000);
        find(reg, "d1", &n);
    }
    CHECK(n == 0, "%d silent workers still known", n);
    info_init(&in, &cap, &lay, "d3", D, "tiny");
    CHECK(coord_registry_register(reg, &in, why, sizeof why) == 1, "%s", why);
    coord_registry_free(reg);
}

static int ignore_token(void *ctx, const eng_sample_result *t)
{
    (void)ctx, (void)t;
    return 0;
}
static void ignore_done(void *ctx, coord_finish f, const coord_error *e)
{
    (void)ctx, (void)f, (void)e;
}

/* Issue 12: requests in flight and requests waiting are capped (429), and max_tokens cannot size an
 * allocation beyond the worker's context (it used to overflow at INT_MAX). */
static void test_router_admission(void)
{
    coord_registry_config rc = {.model = "tiny", .n_layers = 2, .n_kv_heads = 2, .head_dim = 64, .heartbeat_ms = 60000};
    coord_registry *reg = NULL;
    eng_error err;
    REQUIRE(coord_registry_new(&rc, &reg, &err) == 0, "%s", err.msg);
    Tandem__WorkerInfo in;
    Tandem__Capacity cap;
    Tandem__KvLayout lay;
    char why[512];
    info_init(&in, &cap, &lay, "b1", B, "tiny");
    in.rpc_address = "127.0.0.1:1"; /* nobody listens: calls wait and fail over */
    REQUIRE(coord_registry_register(reg, &in, why, sizeof why) == 1, "%s", why);
    coord_router_config cfg = {
        .registry = reg, .colocated = 1, .max_requests = 2, .wait_ms = 300, .failover_wait_ms = 300};
    coord_router *r = NULL;
    REQUIRE(coord_router_new(&cfg, &r, &err) == 0, "%s", err.msg);
    coord_backend be = coord_router_backend(r);
    int32_t prompt[3] = {1, 2, 3};
    coord_gen_request g = {.prompt = prompt, .n_prompt = 3, .max_tokens = 2147483647};
    coord_token_sink sink = {.on_token = ignore_token, .on_done = ignore_done};
    coord_backend_call *calls[3] = {0};
    coord_error e;
    CHECK(be.submit(be.self, &g, &sink, &calls[0], &e) == -1 && e.status == 400 && !strcmp(e.param, "max_tokens"),
          "max_tokens INT_MAX: %d %s", e.status, e.message);
    g.max_tokens = 8;
    CHECK(be.submit(be.self, &g, &sink, &calls[0], &e) == 0, "%s", e.message);
    CHECK(be.submit(be.self, &g, &sink, &calls[1], &e) == 0, "%s", e.message);
    CHECK(be.submit(be.self, &g, &sink, &calls[2], &e) == -1 && e.status == 429 && strstr(e.message, "in flight"),
          "third request: %d %s", e.status, e.message);
    for (int i = 0; i < 3; i++)
        if (calls[i]) {
            be.cancel(be.self, calls[i]);
            be.release(be.self, calls[i]);
            calls[i] = NULL;
        }
    coord_router_free(r);

    /* requests waiting for a worker are capped on their own (a request waits until its
     * first token; nobody listens at the worker's address, so both would wait) */
    cfg.max_requests = 8, cfg.max_waiting = 1;
    REQUIRE(coord_router_new(&cfg, &r, &err) == 0, "%s", err.msg);
    be = coord_router_backend(r);
    CHECK(be.submit(be.self, &g, &sink, &calls[0], &e) == 0, "%s", e.message);
    CHECK(be.submit(be.self, &g, &sink, &calls[1], &e) == -1 && e.status == 429 &&
              strstr(e.message, "wait for a worker"),
          "second waiting request: %d %s", e.status, e.message);
    for (int i = 0; i < 2; i++)
        if (calls[i]) {
            be.cancel(be.self, calls[i]);
            be.release(be.self, calls[i]);
        }
    coord_router_free(r);
    coord_registry_free(reg);
}

int main(void)
{
    test_pick();
    test_layouts();
    test_colocated();
    test_registry();
    test_registry_limits();
    test_router_admission();
    return check_summary();
}
