/* registry.c: worker registration, heartbeats and health (see registry.h).
 *
 * One mutex guards the table; nothing under it blocks. Health is derived from the
 * time since the last heartbeat when anyone looks, so there is no state to get out
 * of step; a small thread only notices transitions to log them (a worker leaving
 * or rejoining rotation is the first thing an operator wants to see) and keeps the
 * per-worker gauges of /metrics fresh between scrapes. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/log.h"
#include "kv_layout_msg.h"
#include "registry.h"

typedef struct entry {
    coord_worker_view v;
    double last_seen;       /* monotonic seconds of the last registration or heartbeat */
    double failed_at;       /* when the router saw it unreachable; 0 = not */
    int cordoned;           /* an operator took it out of rotation */
    int logged_state;       /* Tandem__WorkerState last logged, to report each change once */
    coord_prefix_keys keys; /* its cached blocks: its latest heartbeat's, and expected since */
} entry;

struct coord_registry {
    coord_registry_config cfg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    entry *w;
    int n, cap;
    int stop;
    /* the last refusal logged, so that a worker retrying every half second with the
     * same problem is reported once a minute, not every time */
    char refused_id[128], refused_why[512];
    double refused_at;
    pthread_t thread;
    int thread_started;
};

const char *coord_role_name(int role)
{
    switch (role) {
    case TANDEM__ROLE__ROLE_PREFILL: return "prefill";
    case TANDEM__ROLE__ROLE_DECODE: return "decode";
    case TANDEM__ROLE__ROLE_BOTH: return "both";
    default: return "unspecified";
    }
}

/* The worker itself answers: heartbeats on time, calls not failing. */
static int alive_locked(const coord_registry *r, const entry *e, double now)
{
    if (e->failed_at > 0)
        return 0;
    return now - e->last_seen <= (double)r->cfg.missed_heartbeats * r->cfg.heartbeat_ms / 1000.0;
}

/* An EP rank serves only while its whole group does: every rank of the group is
 * registered, alive and connected to the others (each reports ep_ready). */
static int group_complete_locked(const coord_registry *r, const entry *e, double now)
{
    const coord_worker_view *v = &e->v;
    if (v->ep_size <= 1)
        return 1;
    uint64_t seen = 0; /* ranks found, as bits (ep_size <= 64) */
    for (int i = 0; i < r->n; i++) {
        const coord_worker_view *o = &r->w[i].v;
        if (o->ep_size == v->ep_size && o->role == v->role && !strcmp(o->ep_group, v->ep_group) && o->ep_ready &&
            alive_locked(r, &r->w[i], now))
            seen |= 1ull << o->ep_rank;
    }
    return seen == (v->ep_size == 64 ? ~0ull : (1ull << v->ep_size) - 1);
}

/* The one place a worker's lifecycle state is decided (see registry.h). */
static int state_locked(const coord_registry *r, const entry *e, double now)
{
    if (!alive_locked(r, e, now))
        return TANDEM__WORKER_STATE__WORKER_FAILED;
    if (!group_complete_locked(r, e, now))
        return TANDEM__WORKER_STATE__WORKER_STARTING;
    if (e->v.draining)
        return e->v.running || e->v.queued ? TANDEM__WORKER_STATE__WORKER_DRAINING
                                           : TANDEM__WORKER_STATE__WORKER_DRAINED;
    if (e->cordoned)
        return TANDEM__WORKER_STATE__WORKER_CORDONED;
    return TANDEM__WORKER_STATE__WORKER_READY;
}

/* Logs e's state once each time it changes, with the reason. */
static void note_state_locked(coord_registry *r, entry *e, double now)
{
    int s = state_locked(r, e, now);
    if (s == e->logged_state)
        return;
    const coord_worker_view *v = &e->v;
    char why[160];
    switch (s) {
    case TANDEM__WORKER_STATE__WORKER_FAILED:
        if (e->failed_at > 0)
            snprintf(why, sizeof why, "calls to it fail");
        else
            snprintf(why, sizeof why, "no heartbeat for %.1f s", now - e->last_seen);
        break;
    case TANDEM__WORKER_STATE__WORKER_STARTING:
        snprintf(why, sizeof why, "EP group %s is not complete", v->ep_group);
        break;
    case TANDEM__WORKER_STATE__WORKER_DRAINING:
        snprintf(why, sizeof why, "it is draining, finishing %u running and %u queued requests", v->running, v->queued);
        break;
    case TANDEM__WORKER_STATE__WORKER_DRAINED: snprintf(why, sizeof why, "draining, and no request is left"); break;
    case TANDEM__WORKER_STATE__WORKER_CORDONED: snprintf(why, sizeof why, "cordoned by an operator"); break;
    default:
        snprintf(why, sizeof why, "%s",
                 e->logged_state == TANDEM__WORKER_STATE__WORKER_CORDONED ? "uncordoned by an operator"
                                                                          : "heartbeats arrive");
    }
    eng_log(s == TANDEM__WORKER_STATE__WORKER_FAILED ? ENG_LOG_WARN : ENG_LOG_INFO, "registry", NULL,
            "worker %s (%s, %s): %s -> %s: %s", v->id, coord_role_name(v->role), v->rpc_address,
            rpc_worker_state_name(e->logged_state), rpc_worker_state_name(s), why);
    e->logged_state = s;
}

static entry *find_locked(coord_registry *r, const char *id)
{
    for (int i = 0; i < r->n; i++)
        if (!strcmp(r->w[i].v.id, id))
            return &r->w[i];
    return NULL;
}

/* ------------------------------------------------------------------ metrics */

/* The series export_locked writes for worker v, dropped when it is forgotten or
 * registers again in another role (else they would stay, frozen, under the old labels). */
static void unexport_locked(coord_registry *r, const coord_worker_view *v)
{
    const met_tandem *m = r->cfg.met;
    if (!m)
        return;
    const met_labels l = {.role = coord_role_name(v->role), .worker = v->id};
    const int load[] = {MET_KV_BLOCKS_USED, MET_KV_BLOCKS_CAPACITY, MET_KV_USAGE_PERC, MET_REQUESTS_RUNNING,
                        MET_REQUESTS_WAITING};
    for (size_t i = 0; i < sizeof load / sizeof *load; i++)
        met_remove(m->family[load[i]], l);
    for (int s = TANDEM__WORKER_STATE__WORKER_READY; s <= TANDEM__WORKER_STATE__WORKER_STARTING; s++)
        met_remove(m->family[MET_WORKER_STATE],
                   (met_labels){.role = l.role, .worker = l.worker, .state = rpc_worker_state_name(s)});
}

static void export_locked(coord_registry *r, double now)
{
    const met_tandem *m = r->cfg.met;
    if (!m)
        return;
    for (int i = 0; i < r->n; i++) {
        const coord_worker_view *v = &r->w[i].v;
        const char *ro = coord_role_name(v->role);
        int state = state_locked(r, &r->w[i], now);
        int up = state != TANDEM__WORKER_STATE__WORKER_FAILED && state != TANDEM__WORKER_STATE__WORKER_STARTING;
        met_labels l = {.role = ro, .worker = v->id};
        met_set(met_get(m->family[MET_KV_BLOCKS_USED], l), up ? v->kv_used : 0);
        met_set(met_get(m->family[MET_KV_BLOCKS_CAPACITY], l), up ? v->kv_total : 0);
        met_set(met_get(m->family[MET_KV_USAGE_PERC], l), up && v->kv_total ? (double)v->kv_used / v->kv_total : 0);
        met_set(met_get(m->family[MET_REQUESTS_RUNNING], l), up ? v->running : 0);
        met_set(met_get(m->family[MET_REQUESTS_WAITING], l), up ? v->queued : 0);
        for (int s = TANDEM__WORKER_STATE__WORKER_READY; s <= TANDEM__WORKER_STATE__WORKER_STARTING; s++)
            met_set(met_get(m->family[MET_WORKER_STATE],
                            (met_labels){.role = ro, .worker = v->id, .state = rpc_worker_state_name(s)}),
                    s == state);
    }
}

static void collect(void *ctx, met_registry *reg)
{
    (void)reg;
    coord_registry *r = ctx;
    pthread_mutex_lock(&r->mu);
    export_locked(r, eng_now_s());
    pthread_mutex_unlock(&r->mu);
}

/* ------------------------------------------------------------------ health thread */

static void *health_main(void *arg)
{
    coord_registry *r = arg;
    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        double now = eng_now_s();
        for (int i = 0; i < r->n; i++) {
            entry *e = &r->w[i];
            if (now - e->last_seen > r->cfg.forget_ms / 1000.0) {
                /* Silent this long: gone for good (a restarted worker registers again). */
                eng_log(ENG_LOG_WARN, "registry", NULL, "forgot worker %s (%s, %s): no heartbeat for %.0f s", e->v.id,
                        coord_role_name(e->v.role), e->v.rpc_address, now - e->last_seen);
                coord_prefix_keys_clear(&e->keys);
                unexport_locked(r, &e->v);
                memmove(&r->w[i], &r->w[i + 1], (size_t)(r->n - i - 1) * sizeof *r->w); /* keeps the order */
                r->n--, i--;
                continue;
            }
            note_state_locked(r, e, now);
        }
        export_locked(r, now);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long ns = ts.tv_nsec + (long)(r->cfg.heartbeat_ms / 2) * 1000000L;
        ts.tv_sec += ns / 1000000000L;
        ts.tv_nsec = ns % 1000000000L;
        pthread_cond_timedwait(&r->cv, &r->mu, &ts);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* ------------------------------------------------------------------ decisions */

int coord_registry_register(coord_registry *r, const Tandem__WorkerInfo *info, char *reason, size_t cap)
{
    reason[0] = 0;
    const char *id = info->worker_id ? info->worker_id : "";
    const Tandem__KvLayout *kl = info->kv_layout;
    eng_kv_layout lay = kv_layout_from_msg(kl);
    char ls[96];
    eng_kv_layout_str(&lay, ls, sizeof ls);
    if (!*id || strlen(id) >= sizeof((coord_worker_view *)0)->id)
        snprintf(reason, cap, "worker_id must be 1..127 bytes");
    else if (info->role != TANDEM__ROLE__ROLE_PREFILL && info->role != TANDEM__ROLE__ROLE_DECODE &&
             info->role != TANDEM__ROLE__ROLE_BOTH)
        snprintf(reason, cap, "role must be prefill, decode or both");
    else if (!info->rpc_address || !*info->rpc_address ||
             strlen(info->rpc_address) >= sizeof((coord_worker_view *)0)->rpc_address)
        snprintf(reason, cap, "rpc_address must be a host:port");
    else if (!info->model || strcmp(info->model, r->cfg.model))
        snprintf(reason, cap, "the worker serves model '%s'; this cluster serves '%s'", info->model ? info->model : "",
                 r->cfg.model);
    else if (!kl || lay.block_size <= 0 || !eng_kv_dtype_ok(lay.dtype) ||
             (lay.matmul_dtype != ENG_DT_F32 && lay.matmul_dtype != ENG_DT_BF16) || lay.n_layers != r->cfg.n_layers ||
             lay.n_kv_heads != r->cfg.n_kv_heads || lay.head_dim != r->cfg.head_dim)
        snprintf(reason, cap, "KV layout %s does not fit this model (L%d kv%d d%d)", ls, r->cfg.n_layers,
                 r->cfg.n_kv_heads, r->cfg.head_dim);
    else if (!info->capacity || info->capacity->kv_blocks_total == 0)
        snprintf(reason, cap, "the worker reports no KV blocks");
    else if (info->capacity->kv_blocks_free > info->capacity->kv_blocks_total)
        snprintf(reason, cap, "the worker reports %u free KV blocks of %u", info->capacity->kv_blocks_free,
                 info->capacity->kv_blocks_total);
    else if (info->ep_size > 64 ||
             (info->ep_size > 1 && (info->ep_rank >= info->ep_size || !info->ep_group || !*info->ep_group ||
                                    strlen(info->ep_group) >= sizeof r->w->v.ep_group)))
        snprintf(reason, cap,
                 "EP rank %u of %u in group '%s': needs rank < size <= 64 and a group name of "
                 "1..63 bytes",
                 info->ep_rank, info->ep_size, info->ep_group ? info->ep_group : "");
    if (reason[0]) {
        pthread_mutex_lock(&r->mu);
        double now = eng_now_s();
        int repeat = !strcmp(r->refused_id, id) && !strcmp(r->refused_why, reason) && now - r->refused_at < 60;
        if (!repeat) {
            snprintf(r->refused_id, sizeof r->refused_id, "%s", id);
            snprintf(r->refused_why, sizeof r->refused_why, "%s", reason);
            r->refused_at = now;
        }
        pthread_mutex_unlock(&r->mu);
        if (!repeat)
            eng_log(ENG_LOG_WARN, "registry", NULL, "refused worker '%s' at %s: %s", id,
                    info->rpc_address ? info->rpc_address : "", reason);
        return 0;
    }

    pthread_mutex_lock(&r->mu);
    entry *e = find_locked(r, id);
    int replaced = e != NULL;
    if (!e && r->n >= r->cfg.max_workers) {
        pthread_mutex_unlock(&r->mu);
        snprintf(reason, cap, "the coordinator already knows %d workers (its limit)", r->cfg.max_workers);
        eng_log(ENG_LOG_WARN, "registry", NULL, "refused worker '%s' at %s: %s", id, info->rpc_address, reason);
        return 0;
    }
    if (!e) {
        if (r->n == r->cap) {
            int nc = r->cap ? 2 * r->cap : 8;
            entry *p = realloc(r->w, (size_t)nc * sizeof *p);
            if (!p) {
                pthread_mutex_unlock(&r->mu);
                snprintf(reason, cap, "the coordinator is out of memory");
                return 0;
            }
            r->w = p, r->cap = nc;
        }
        e = &r->w[r->n++];
        memset(e, 0, sizeof *e);
    }
    uint64_t regs = e->v.registrations;
    if (replaced && e->v.role != (int)info->role) /* tandemctl role */
        unexport_locked(r, &e->v);
    memset(&e->v, 0, sizeof e->v);
    coord_prefix_keys_clear(&e->keys); /* a restarted worker's cache starts empty */
    snprintf(e->v.id, sizeof e->v.id, "%s", id);
    snprintf(e->v.rpc_address, sizeof e->v.rpc_address, "%s", info->rpc_address);
    snprintf(e->v.metrics_address, sizeof e->v.metrics_address, "%s",
             info->metrics_address ? info->metrics_address : "");
    snprintf(e->v.transport, sizeof e->v.transport, "%s",
             info->n_transports && info->transports[0]->transport ? info->transports[0]->transport : "");
    e->v.role = info->role;
    e->v.layout = lay;
    e->v.max_running = info->capacity->max_running;
    e->v.max_context = info->capacity->max_context;
    e->v.kv_total = info->capacity->kv_blocks_total;
    e->v.kv_used = info->capacity->kv_blocks_total - info->capacity->kv_blocks_free;
    e->v.registrations = regs + 1;
    e->v.experts = info->experts;
    if (info->ep_size > 1) {
        snprintf(e->v.ep_group, sizeof e->v.ep_group, "%s", info->ep_group);
        e->v.ep_rank = info->ep_rank;
        e->v.ep_size = info->ep_size;
    }
    e->last_seen = eng_now_s();
    e->failed_at = 0;
    e->cordoned = 0;                                    /* a restarted worker starts in rotation */
    e->logged_state = state_locked(r, e, e->last_seen); /* the registration line says it */
    char transport[sizeof e->v.transport];
    snprintf(transport, sizeof transport, "%s", e->v.transport[0] ? e->v.transport : "none");
    pthread_mutex_unlock(&r->mu); /* e may move (realloc) from here on */
    eng_log(ENG_LOG_INFO, "registry", NULL, "%s worker %s (%s) at %s, metrics %s, KV %s x %u blocks, transport %s",
            replaced ? "re-registered" : "registered", id, coord_role_name(info->role), info->rpc_address,
            info->metrics_address && *info->metrics_address ? info->metrics_address : "none", ls,
            info->capacity->kv_blocks_total, transport);
    return 1;
}

int coord_registry_heartbeat(coord_registry *r, const Tandem__WorkerLoad *l)
{
    pthread_mutex_lock(&r->mu);
    entry *e = l->worker_id ? find_locked(r, l->worker_id) : NULL;
    if (e) {
        e->v.running = l->running;
        e->v.queued = l->queued;
        e->v.queued_prompt_tokens = l->queued_prompt_tokens;
        /* never more used than there are: the router subtracts one from the other */
        e->v.kv_total = l->kv_blocks_total;
        e->v.kv_used = l->kv_blocks_used < l->kv_blocks_total ? l->kv_blocks_used : l->kv_blocks_total;
        if (l->batch) {
            e->v.steps = l->batch->steps;
            e->v.batched_seqs = l->batch->batched_seqs;
            e->v.max_batch = l->batch->max_batch;
            e->v.last_batch = l->batch->last_batch;
        }
        e->v.ep_ready = l->ep_ready;
        e->v.prefill_rate = l->prefill_tokens_per_s;
        const Tandem__PrefixCacheSummary *pc = l->prefix_cache;
        e->v.has_prefix_cache = pc != NULL;
        if (pc) {
            e->v.prefix_blocks = pc->cached_blocks;
            e->v.prefix_query_tokens = pc->query_tokens;
            e->v.prefix_hit_tokens = pc->hit_tokens;
        }
        /* without memory the old keys stay: the routing is only less informed */
        coord_prefix_keys_set(&e->keys, pc ? pc->block_keys : NULL, pc ? pc->n_block_keys : 0);
        e->v.sent_streams = e->v.sent_blocks = 0;
        e->v.sent_prompt_tokens = 0;
        e->last_seen = eng_now_s();
        e->failed_at = 0;
    }
    if (e) {
        e->v.draining = l->draining;
        note_state_locked(r, e, e->last_seen);
    }
    pthread_mutex_unlock(&r->mu);
    return e != NULL;
}

void coord_registry_match_prefix(coord_registry *r, const int32_t *tokens, int n_tokens, coord_worker_view *v, int n)
{
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < n; i++) {
        entry *e = v[i].has_prefix_cache ? find_locked(r, v[i].id) : NULL;
        v[i].cached_tokens = e ? coord_prefix_cached_tokens(&e->keys, r->cfg.model, &v[i].layout, tokens, n_tokens) : 0;
    }
    pthread_mutex_unlock(&r->mu);
}

void coord_registry_expect_prefix(coord_registry *r, const char *id, const int32_t *tokens, int n_tokens)
{
    pthread_mutex_lock(&r->mu);
    entry *e = find_locked(r, id);
    if (e && e->v.has_prefix_cache) /* without memory nothing is recorded: only less informed */
        coord_prefix_keys_expect(&e->keys, r->cfg.model, &e->v.layout, tokens, n_tokens);
    pthread_mutex_unlock(&r->mu);
}

int coord_registry_heartbeat_ms(const coord_registry *r)
{
    return r->cfg.heartbeat_ms;
}

int coord_registry_snapshot(coord_registry *r, coord_worker_view **out, int *n)
{
    pthread_mutex_lock(&r->mu);
    coord_worker_view *v = malloc((size_t)(r->n ? r->n : 1) * sizeof *v);
    if (!v) {
        pthread_mutex_unlock(&r->mu);
        return -1;
    }
    double now = eng_now_s();
    for (int i = 0; i < r->n; i++) {
        v[i] = r->w[i].v;
        v[i].state = state_locked(r, &r->w[i], now);
        v[i].draining = v[i].state == TANDEM__WORKER_STATE__WORKER_DRAINING ||
                        v[i].state == TANDEM__WORKER_STATE__WORKER_DRAINED;
        v[i].healthy = v[i].state == TANDEM__WORKER_STATE__WORKER_READY;
        v[i].cordoned = r->w[i].cordoned;
        v[i].since_heartbeat_s = now - r->w[i].last_seen;
    }
    *n = r->n;
    pthread_mutex_unlock(&r->mu);
    *out = v;
    return 0;
}

void coord_registry_note_sent(coord_registry *r, const char *id, int streams, int blocks, uint64_t prompt_tokens)
{
    pthread_mutex_lock(&r->mu);
    entry *e = find_locked(r, id);
    if (e) {
        e->v.sent_streams += (uint32_t)streams;
        e->v.sent_blocks += (uint32_t)blocks;
        e->v.sent_prompt_tokens += prompt_tokens;
    }
    pthread_mutex_unlock(&r->mu);
}

void coord_registry_note_admitted(coord_registry *r, const char *id, int tokens)
{
    pthread_mutex_lock(&r->mu);
    entry *e = find_locked(r, id);
    if (e)
        e->v.admitted_tokens = e->v.admitted_tokens + tokens > 0 ? e->v.admitted_tokens + tokens : 0;
    pthread_mutex_unlock(&r->mu);
}

void coord_registry_mark_failed(coord_registry *r, const char *id, const char *why)
{
    pthread_mutex_lock(&r->mu);
    entry *e = find_locked(r, id);
    int was = e && e->failed_at == 0;
    if (e && was)
        e->failed_at = eng_now_s();
    pthread_mutex_unlock(&r->mu);
    if (was)
        eng_log(ENG_LOG_WARN, "registry", NULL, "worker %s unreachable (%s): out of rotation until it heartbeats", id,
                why);
}

int coord_registry_cordon(coord_registry *r, const char *id, int on)
{
    pthread_mutex_lock(&r->mu);
    entry *e = find_locked(r, id);
    int s = -1;
    if (e) {
        e->cordoned = on;
        double now = eng_now_s();
        note_state_locked(r, e, now);
        s = state_locked(r, e, now);
    }
    pthread_mutex_unlock(&r->mu);
    return s;
}

void coord_registry_counts(coord_registry *r, int counts[3])
{
    counts[0] = counts[1] = counts[2] = 0;
    pthread_mutex_lock(&r->mu);
    double now = eng_now_s();
    for (int i = 0; i < r->n; i++)
        if (state_locked(r, &r->w[i], now) == TANDEM__WORKER_STATE__WORKER_READY && r->w[i].v.role >= 1 &&
            r->w[i].v.role <= 3)
            counts[r->w[i].v.role - 1]++;
    pthread_mutex_unlock(&r->mu);
}

/* ------------------------------------------------------------------ RPC handlers */

static void on_register(void *user, rpc_call *call, const rpc_bytes *req, rpc_bytes *resp, rpc_status *st)
{
    (void)call;
    coord_registry *r = user;
    Tandem__WorkerInfo *info = rpc_unpack(&tandem__worker_info__descriptor, req->data, req->len, st);
    if (!info)
        return;
    char reason[512];
    Tandem__RegisterReply rep = TANDEM__REGISTER_REPLY__INIT;
    rep.accepted = coord_registry_register(r, info, reason, sizeof reason);
    rep.reason = reason;
    rep.heartbeat_interval_ms = (uint32_t)r->cfg.heartbeat_ms;
    if (rpc_pack(&rep.base, resp) < 0)
        rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
    rpc_msg_free(info);
}

static void on_heartbeat(void *user, rpc_call *call, const rpc_bytes *req, rpc_bytes *resp, rpc_status *st)
{
    (void)call;
    coord_registry *r = user;
    Tandem__WorkerLoad *l = rpc_unpack(&tandem__worker_load__descriptor, req->data, req->len, st);
    if (!l)
        return;
    Tandem__HeartbeatReply rep = TANDEM__HEARTBEAT_REPLY__INIT;
    rep.reregister = !coord_registry_heartbeat(r, l);
    rep.heartbeat_interval_ms = (uint32_t)r->cfg.heartbeat_ms;
    if (rpc_pack(&rep.base, resp) < 0)
        rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
    rpc_msg_free(l);
}

int coord_registry_serve(coord_registry *r, rpc_server *s, rpc_status *st)
{
    if (rpc_server_add_unary(s, RPC_REGISTRY_REGISTER, on_register, r, st) < 0 ||
        rpc_server_add_unary(s, RPC_REGISTRY_HEARTBEAT, on_heartbeat, r, st) < 0)
        return -1;
    return 0;
}

/* ------------------------------------------------------------------ life */

int coord_registry_new(const coord_registry_config *cfg, coord_registry **out, eng_error *err)
{
    *out = NULL;
    if (!cfg->model || !*cfg->model)
        return eng_fail(err, "registry: no model name");
    coord_registry *r = calloc(1, sizeof *r);
    if (!r)
        return eng_fail(err, "out of memory");
    r->cfg = *cfg;
    if (r->cfg.heartbeat_ms <= 0)
        r->cfg.heartbeat_ms = 500;
    if (r->cfg.missed_heartbeats <= 0)
        r->cfg.missed_heartbeats = 3;
    if (r->cfg.max_workers <= 0)
        r->cfg.max_workers = 1024;
    if (r->cfg.forget_ms <= 0)
        r->cfg.forget_ms = 600000;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    if (cfg->metrics && cfg->met && met_on_collect(cfg->metrics, collect, r) < 0) {
        coord_registry_free(r);
        return eng_fail(err, "registry: no room for a metrics collector");
    }
    if (pthread_create(&r->thread, NULL, health_main, r) != 0) {
        coord_registry_free(r);
        return eng_fail(err, "registry: cannot start the health thread");
    }
    r->thread_started = 1;
    *out = r;
    return 0;
}

void coord_registry_free(coord_registry *r)
{
    if (!r)
        return;
    if (r->thread_started) {
        pthread_mutex_lock(&r->mu);
        r->stop = 1;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->thread, NULL);
    }
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    for (int i = 0; i < r->n; i++)
        coord_prefix_keys_clear(&r->w[i].keys);
    free(r->w);
    free(r);
}
