/* worker.c: a worker's life: start (model, KV pool, transport, metrics, gRPC, engine
 * thread, registration), the registration/heartbeat thread, the /metrics gauges, the
 * log, and stop (in the reverse order, failing whatever is in flight explicitly).
 *
 * Registration keeps retrying until the coordinator answers, so workers may start
 * before it; a heartbeat answered with `reregister` (the coordinator restarted or
 * dropped us) registers again at once. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/file.h"
#include "kv_layout_msg.h"
#include "worker_internal.h"

void wrk_log(wrk_worker *w, eng_log_level level, const char *request_id, const char *fmt, ...)
{
    if (!eng_log_enabled(level))
        return;
    char who[sizeof w->id + 16];
    snprintf(who, sizeof who, "%s %s", wrk_role_name(wrk_role_now(w)), w->id);
    va_list ap;
    va_start(ap, fmt);
    eng_logv(level, who, request_id, fmt, ap);
    va_end(ap);
}

rpc_channel *wrk_channel(wrk_worker *w, const char *address, rpc_status *st)
{
    if (!address || !*address) {
        rpc_status_set(st, RPC_INVALID_ARGUMENT, "no rpc_address in the KV target");
        return NULL;
    }
    pthread_mutex_lock(&w->chan_mu);
    wrk_chan *c = w->chans;
    while (c && strcmp(c->address, address))
        c = c->next;
    if (!c && (c = calloc(1, sizeof *c))) {
        snprintf(c->address, sizeof c->address, "%s", address);
        if (rpc_channel_create(address, &c->ch, st) < 0) {
            free(c);
            c = NULL;
        } else {
            c->next = w->chans;
            w->chans = c;
        }
    } else if (!c) {
        rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
    }
    pthread_mutex_unlock(&w->chan_mu);
    return c ? c->ch : NULL;
}

int wrk_rpc_port(const wrk_worker *w)
{
    return w->rpc_port;
}
int wrk_metrics_port(const wrk_worker *w)
{
    return w->met_server ? met_server_port(w->met_server) : -1;
}
const char *wrk_id(const wrk_worker *w)
{
    return w->id;
}

int wrk_kv_blocks_used(wrk_worker *w)
{
    pthread_mutex_lock(&w->mu);
    int used = eng_kv_pool_blocks(w->pool) - wrk_free_blocks(w);
    pthread_mutex_unlock(&w->mu);
    return used;
}

/* ------------------------------------------------------------------ metrics */

/* The cache counts on its own; the counters take what it added since the last scrape. */
static void prefix_metrics(wrk_worker *w, const wrk_prefix_stats *now)
{
    wrk_prefix_stats *seen = &w->prefix_seen;
    met_inc(w->m_pc_queries, (double)(now->query_tokens - seen->query_tokens));
    met_inc(w->m_pc_hits, (double)(now->hit_tokens - seen->hit_tokens));
    met_inc(w->m_pc_query_blocks, (double)(now->query_blocks - seen->query_blocks));
    met_inc(w->m_pc_hit_blocks, (double)(now->hit_blocks - seen->hit_blocks));
    met_inc(w->m_pc_evictions, (double)(now->evicted_blocks - seen->evicted_blocks));
    met_set(w->m_pc_blocks, now->cached_blocks);
    met_set(w->m_pc_hit_rate, now->query_tokens ? (double)now->hit_tokens / (double)now->query_tokens : 0);
    *seen = *now;
}

static void collect(void *ctx, met_registry *reg)
{
    (void)reg;
    wrk_worker *w = ctx;
    int running = 0, waiting = 0;
    pthread_mutex_lock(&w->mu);
    for (wrk_req *r = w->reqs; r; r = r->next)
        r->state == ST_RUNNING || r->state == ST_PREFILLING || r->state == ST_RECOMPUTING ? running++ : waiting++;
    int total = eng_kv_pool_blocks(w->pool), used = total - wrk_free_blocks(w);
    wrk_prefix_stats pc = {0};
    if (w->prefix)
        wrk_prefix_get_stats(w->prefix, &pc);
    pthread_mutex_unlock(&w->mu);
    if (w->prefix)
        prefix_metrics(w, &pc);
    met_set(w->m_running, running);
    met_set(w->m_waiting, waiting);
    met_set(w->m_used, used);
    met_set(w->m_total, total);
    met_set(w->m_usage, total ? (double)used / total : 0);
    met_set(w->m_weight_resident, (double)eng_model_resident_weight_bytes(w->model));
    /* The receiving side's bytes come from the transport's own count. */
    kvt_stats ks;
    kvt_get_stats(w->kvt, &ks);
    if (ks.bytes_received > w->kv_bytes_seen) {
        met_inc(w->m_kv_bytes, (double)(ks.bytes_received - w->kv_bytes_seen));
        w->kv_bytes_seen = ks.bytes_received;
    }
    const uint64_t refused[3] = {ks.refused_unknown, ks.refused_secret, ks.refused_peer};
    for (int i = 0; i < 3; i++)
        if (refused[i] > w->kv_refused_seen[i]) {
            met_inc(w->m_kv_refused[i], (double)(refused[i] - w->kv_refused_seen[i]));
            w->kv_refused_seen[i] = refused[i];
        }
}

/* What the checkpoint's mapping costs this worker, against what it may need (an EP
 * rank: the shared weights and its own experts only). */
static void weight_metrics_init(wrk_worker *w)
{
    met_family *const *f = w->met.family;
    const met_labels own = {.role = w->role_name, .worker = w->id};
    w->m_weight_resident = met_get(f[MET_WEIGHT_RESIDENT], own);
    met_set(met_get(f[MET_WEIGHT_NEEDED], own), (double)eng_model_used_weight_bytes(w->model));
}

static met_metric *ep_bytes(wrk_worker *w, const char *direction, const char *transport)
{
    met_labels l = {.role = w->role_name, .worker = w->id, .direction = direction, .transport = transport};
    return met_get(w->met.family[MET_EP_BYTES], l);
}

static void ep_metrics_init(wrk_worker *w)
{
    met_family *const *f = w->met.family;
    const met_labels own = {.role = w->role_name, .worker = w->id};
    wrk_ep_metrics m = {
        .dispatched = f[MET_EP_DISPATCHED],
        .bytes_sent = ep_bytes(w, "sent", "tcp"),
        .bytes_received = ep_bytes(w, "received", "tcp"),
        .bytes_sent_rdma = ep_bytes(w, "sent", "rdma"),
        .bytes_received_rdma = ep_bytes(w, "received", "rdma"),
        .exchange_seconds = met_get(f[MET_EP_SECONDS], own),
        .balance = met_get(f[MET_EP_BALANCE], own),
        .role = own.role,
        .worker = own.worker,
    };
    wrk_ep_set_metrics(w->ep, &m);
}

static int metrics_init(wrk_worker *w, eng_error *err)
{
    if (met_tandem_register(w->metrics, &w->met, err) < 0)
        return -1;
    met_family *const *f = w->met.family;
    const met_labels own = {.role = w->role_name, .worker = w->id};
    w->m_running = met_get(f[MET_REQUESTS_RUNNING], own);
    w->m_waiting = met_get(f[MET_REQUESTS_WAITING], own);
    w->m_used = met_get(f[MET_KV_BLOCKS_USED], own);
    w->m_total = met_get(f[MET_KV_BLOCKS_CAPACITY], own);
    w->m_usage = met_get(f[MET_KV_USAGE_PERC], own);
    w->m_batch = met_get(f[MET_BATCH_SIZE], own);
    w->m_batch_tokens = met_get(f[MET_BATCH_TOKENS], own);
    w->m_prompt_tokens = met_get(f[MET_PROMPT_TOKENS], own);
    w->m_gen_tokens = met_get(f[MET_GENERATION_TOKENS], own);
    const char *outcomes[] = {"success", "cancelled", "error", "rejected"};
    met_metric **by_outcome[] = {&w->m_ok, &w->m_cancelled, &w->m_error, &w->m_rejected};
    for (int i = 0; i < 4; i++)
        *by_outcome[i] = met_get(f[MET_REQUESTS_TOTAL],
                                 (met_labels){.role = own.role, .worker = own.worker, .outcome = outcomes[i]});
    met_labels transfer = {.role = own.role, .worker = own.worker, .transport = kvt_name(w->kvt)};
    w->m_kv_bytes = met_get(f[MET_KV_TRANSFER_BYTES], transfer);
    w->m_kv_seconds = met_get(f[MET_KV_TRANSFER_SECONDS], transfer);
    const char *refusals[3] = {"unknown_transfer", "bad_secret", "wrong_peer"};
    for (int i = 0; i < 3; i++)
        w->m_kv_refused[i] = met_get(f[MET_KV_REFUSED],
                                     (met_labels){.role = own.role, .worker = own.worker, .reason = refusals[i]});
    w->m_ttft = met_get(f[MET_TTFT], own);
    w->m_itl = met_get(f[MET_ITL], own);
    w->m_e2e = met_get(f[MET_E2E], own);
    w->m_preemptions = met_get(f[MET_PREEMPTIONS], own); /* only a decode pool preempts */
    if (w->prefix) {
        met_metric **pc[] = {&w->m_pc_queries,   &w->m_pc_hits,   &w->m_pc_query_blocks, &w->m_pc_hit_blocks,
                             &w->m_pc_evictions, &w->m_pc_blocks, &w->m_pc_hit_rate};
        for (int i = 0; i < (int)(sizeof pc / sizeof pc[0]); i++)
            *pc[i] = met_get(f[MET_PREFIX_QUERIES + i], own);
    }
    weight_metrics_init(w);
    if (w->ep)
        ep_metrics_init(w);
    if (met_on_collect(w->metrics, collect, w) < 0)
        return eng_fail(err, "metrics: no room for a collector");
    return 0;
}

/* ------------------------------------------------------------------ health probes */

static int probe(void *ctx, met_probe p, char *why, size_t cap)
{
    wrk_worker *w = ctx;
    if (p == MET_PROBE_LIVEZ)
        return 1;
    if (!atomic_load(&w->started))
        return snprintf(why, cap, "loading the model"), 0;
    if (p == MET_PROBE_STARTUPZ)
        return 1;
    pthread_mutex_lock(&w->mu);
    int draining = w->draining || w->stopping;
    pthread_mutex_unlock(&w->mu);
    if (draining)
        return snprintf(why, cap, "draining"), 0;
    if (w->opt.coordinator && *w->opt.coordinator && !atomic_load(&w->registered))
        return snprintf(why, cap, "not registered with the coordinator at %s", w->opt.coordinator), 0;
    return 1;
}

/* Before the model loads, so that /livez and /startupz answer during a long load. */
static int metrics_server_start(wrk_worker *w, eng_error *err)
{
    if (!(w->metrics = met_registry_new()))
        return eng_fail(err, "out of memory");
    if (w->opt.metrics_port < 0)
        return 0;
    if (met_server_start(w->metrics, w->host, w->opt.metrics_port, probe, w, &w->met_server, err) < 0 ||
        eng_addr_join(w->host, met_server_port(w->met_server), w->metrics_address, sizeof w->metrics_address, err) < 0)
        return -1;
    /* Says which port --metrics-port 0 got, before a load that can take minutes. */
    wrk_log(w, ENG_LOG_INFO, NULL, "metrics and probes on http://%s", w->metrics_address);
    return 0;
}

/* ------------------------------------------------------------------ registration */

static int do_register(wrk_worker *w, uint32_t *interval_ms, char *why, size_t cap)
{
    Tandem__KvLayout lay;
    kv_layout_to_msg(&w->layout, &lay);
    Tandem__Capacity c = TANDEM__CAPACITY__INIT;
    c.max_running = (uint32_t)w->opt.max_running;
    c.max_batch_tokens = (uint32_t)w->opt.max_batch_tokens;
    c.kv_blocks_total = (uint32_t)eng_kv_pool_blocks(w->pool);
    pthread_mutex_lock(&w->mu);
    c.kv_blocks_free = (uint32_t)wrk_free_blocks(w);
    pthread_mutex_unlock(&w->mu);
    c.max_context = (uint32_t)w->max_context;
    Tandem__TransportEndpoint ep = TANDEM__TRANSPORT_ENDPOINT__INIT, *eps[1] = {&ep};
    ep.transport = (char *)kvt_name(w->kvt);
    ep.descriptor.data = w->descriptor;
    ep.descriptor.len = w->descriptor_len;
    Tandem__WorkerInfo info = TANDEM__WORKER_INFO__INIT;
    info.worker_id = w->id;
    info.role = (Tandem__Role)wrk_role_now(w);
    info.rpc_address = w->rpc_address;
    info.metrics_address = w->metrics_address;
    info.capacity = &c;
    info.kv_layout = &lay;
    info.n_transports = 1;
    info.transports = eps;
    info.model = w->model_name;
    info.experts = (uint32_t)w->experts;
    if (w->ep) {
        info.ep_group = (char *)w->opt.group;
        info.ep_rank = (uint32_t)w->opt.ep_rank;
        info.ep_size = (uint32_t)w->opt.ep_size;
    }
    Tandem__RegisterReply *rep = NULL;
    rpc_status st;
    if (rpc_unary_msg(w->coord, RPC_REGISTRY_REGISTER, &info.base, &tandem__register_reply__descriptor, 2000,
                      (void **)&rep, &st) < 0) {
        snprintf(why, cap, "%s", st.msg);
        return -1;
    }
    int ok = rep->accepted;
    if (!ok)
        snprintf(why, cap, "refused: %s", rep->reason);
    *interval_ms = rep->heartbeat_interval_ms ? rep->heartbeat_interval_ms : 1000;
    rpc_msg_free(rep);
    return ok ? 0 : -1;
}

/* Keys the router sees per heartbeat: 32 KiB at most. */
#define WRK_SUMMARY_KEYS 4096

/* 1: keep going, 0: re-register, -1: unreachable. */
static int do_heartbeat(wrk_worker *w, uint32_t *interval_ms, char *why, size_t cap)
{
    Tandem__BatchStats b = TANDEM__BATCH_STATS__INIT;
    Tandem__WorkerLoad l = TANDEM__WORKER_LOAD__INIT;
    Tandem__PrefixCacheSummary pcs = TANDEM__PREFIX_CACHE_SUMMARY__INIT;
    uint64_t *keys = w->prefix ? malloc(WRK_SUMMARY_KEYS * sizeof *keys) : NULL;
    l.worker_id = w->id;
    pthread_mutex_lock(&w->mu);
    if (w->prefix) {
        wrk_prefix_stats st;
        wrk_prefix_get_stats(w->prefix, &st);
        pcs.cached_blocks = (uint32_t)st.cached_blocks;
        pcs.query_tokens = st.query_tokens;
        pcs.hit_tokens = st.hit_tokens;
        pcs.block_keys = keys;
        pcs.n_block_keys = keys ? (size_t)wrk_prefix_summary(w->prefix, keys, WRK_SUMMARY_KEYS) : 0;
        l.prefix_cache = &pcs;
    }
    for (wrk_req *r = w->reqs; r; r = r->next) {
        if (r->state == ST_RUNNING || r->state == ST_PREFILLING || r->state == ST_RECOMPUTING)
            l.running++;
        else
            l.queued++;
        if (r->state == ST_QUEUED || r->state == ST_PREFILLING)
            l.queued_prompt_tokens += (uint64_t)(r->n_prompt - r->n_prefilled);
    }
    l.kv_blocks_total = (uint32_t)eng_kv_pool_blocks(w->pool);
    l.kv_blocks_used = l.kv_blocks_total - (uint32_t)wrk_free_blocks(w);
    b.steps = w->steps;
    b.batched_seqs = w->batched_seqs;
    b.max_batch = w->max_batch;
    b.last_batch = w->last_batch;
    l.draining = w->draining;
    l.prefill_tokens_per_s = w->rate_seconds > 0 ? (float)(w->rate_tokens / w->rate_seconds) : 0;
    pthread_mutex_unlock(&w->mu);
    l.batch = &b;
    if (w->ep) {
        l.ep_ready = wrk_ep_ready(w->ep, NULL, 0);
        l.ep_epoch = wrk_ep_epoch(w->ep);
    }
    Tandem__HeartbeatReply *rep = NULL;
    rpc_status st;
    int sent = rpc_unary_msg(w->coord, RPC_REGISTRY_HEARTBEAT, &l.base, &tandem__heartbeat_reply__descriptor, 2000,
                             (void **)&rep, &st);
    free(keys);
    if (sent < 0) {
        snprintf(why, cap, "%s", st.msg);
        return -1;
    }
    int again = rep->reregister;
    if (rep->heartbeat_interval_ms)
        *interval_ms = rep->heartbeat_interval_ms;
    rpc_msg_free(rep);
    return again ? 0 : 1;
}

static void *registry_main(void *arg)
{
    wrk_worker *w = arg;
    int registered = 0, failures = 0, unreachable = 0;
    uint32_t interval = 1000;
    char why[300], last_why[300] = "";
    pthread_mutex_lock(&w->reg_mu);
    while (!w->reg_stop) {
        pthread_mutex_unlock(&w->reg_mu);
        uint32_t wait_ms = interval;
        if (!registered) {
            if (do_register(w, &interval, why, sizeof why) == 0) {
                registered = 1;
                atomic_store(&w->registered, 1);
                failures = 0;
                last_why[0] = 0;
                wait_ms = interval;
                wrk_log(w, ENG_LOG_INFO, NULL, "registered with the coordinator at %s (heartbeat every %u ms)",
                        w->opt.coordinator, interval);
            } else {
                /* Say each new reason once, then every 20 tries, not every half second. */
                if (strcmp(why, last_why) || failures % 20 == 0)
                    wrk_log(w, ENG_LOG_WARN, NULL, "registration with %s failed (%s); retrying", w->opt.coordinator,
                            why);
                snprintf(last_why, sizeof last_why, "%s", why);
                failures++;
                wait_ms = 500;
            }
        } else if (wrk_take_new_role(w)) {
            registered = 0;
            atomic_store(&w->registered, 0);
            wait_ms = 0;
        } else {
            int hb = do_heartbeat(w, &interval, why, sizeof why);
            if (hb == 0) {
                registered = 0;
                atomic_store(&w->registered, 0);
                wait_ms = 0;
                wrk_log(w, ENG_LOG_INFO, NULL, "the coordinator asks us to register again");
            } else if (hb < 0 && !unreachable) {
                unreachable = 1;
                wrk_log(w, ENG_LOG_WARN, NULL, "heartbeat to %s failed (%s); still trying", w->opt.coordinator, why);
            } else if (hb > 0 && unreachable) {
                unreachable = 0;
                wrk_log(w, ENG_LOG_INFO, NULL, "coordinator reachable again");
            }
        }
        pthread_mutex_lock(&w->reg_mu);
        if (wait_ms && !w->reg_stop && !w->reg_now) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            long ns = ts.tv_nsec + (long)wait_ms * 1000000L;
            ts.tv_sec += ns / 1000000000L;
            ts.tv_nsec = ns % 1000000000L;
            pthread_cond_timedwait(&w->reg_cv, &w->reg_mu, &ts);
        }
        w->reg_now = 0;
    }
    pthread_mutex_unlock(&w->reg_mu);
    return NULL;
}

/* ------------------------------------------------------------------ start / stop */

static size_t memory_budget(void)
{
    long pages = sysconf(_SC_AVPHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || size <= 0)
        return (size_t)1 << 30;
    return (size_t)pages * (size_t)size / 10; /* a tenth of what is free now */
}

/* The transport's thread, under its lock: note the id, wake the engine. */
static void on_transfer_end(void *user, uint64_t id, kvt_state state)
{
    wrk_worker *w = user;
    if (state != KVT_FAILED)
        return;
    pthread_mutex_lock(&w->fail_mu);
    if (w->n_failed == w->cap_failed) {
        int cap = w->cap_failed ? 2 * w->cap_failed : 16;
        uint64_t *p = realloc(w->failed_ids, (size_t)cap * sizeof *p);
        if (p)
            w->failed_ids = p, w->cap_failed = cap;
    }
    if (w->n_failed < w->cap_failed)
        w->failed_ids[w->n_failed++] = id; /* else the lease still ends it */
    pthread_mutex_unlock(&w->fail_mu);
    pthread_cond_signal(&w->cv);
}

/* Which rank of the EP group holds which experts, from config.json and
 * --expert-placement (before the weights load, so that nobody else's experts are ever
 * touched). */
static int ep_placement(const wrk_options *opt, wrk_ep_placement *out, eng_error *err)
{
    eng_config c;
    if (eng_config_load(opt->model_dir, &c, err) < 0)
        return -1;
    if (!c.is_moe)
        return eng_fail(err, "--ep-size %d needs a MoE model; %s is dense", opt->ep_size, opt->model_dir);
    if (opt->ep_size > c.num_experts)
        return eng_fail(err, "--ep-size %d is larger than the model's %d experts", opt->ep_size, c.num_experts);
    if (opt->ep_rank < 0 || opt->ep_rank >= opt->ep_size)
        return eng_fail(err, "--ep-rank %d is not in [0, %d)", opt->ep_rank, opt->ep_size);
    return wrk_ep_placement_load(opt->expert_placement, c.num_experts, opt->ep_size, out, err);
}

/* The mesh thread's news (a message, the group formed or broke) wakes the engine. */
static void ep_notify(void *ctx)
{
    wrk_worker *w = ctx;
    pthread_mutex_lock(&w->mu);
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static int start_ep(wrk_worker *w, const wrk_ep_placement *placement, eng_error *err)
{
    wrk_ep_options eo = {.group = w->opt.group,
                         .size = w->opt.ep_size,
                         .rank = w->opt.ep_rank,
                         .peers = w->opt.ep_peers,
                         .deadline_ms = w->opt.ep_deadline_ms,
                         .listen_fd = w->opt.ep_listen_fd,
                         .secret_file = w->opt.ep_secret_file,
                         .n_experts = w->cfg->num_experts,
                         .placement = placement,
                         .transport = w->opt.ep_transport,
                         .rdma_device = w->opt.rdma_device,
                         .notify = ep_notify,
                         .notify_ctx = w};
    if (wrk_ep_start(&eo, &w->ep, err) < 0)
        return -1;
    wrk_log(w, ENG_LOG_INFO, NULL, "EP exchange: %s", wrk_ep_transport(w->ep));
    w->experts = wrk_ep_experts_held(w->ep);
    eng_model_set_moe(w->model, wrk_ep_moe, w->ep);
    return 0;
}

static int open_transport(wrk_worker *w, eng_error *err)
{
    const char *which = w->opt.kv_transport ? w->opt.kv_transport : "auto";
    kvt_open_options to = {
        .tcp = {.bind_host = w->host, .io_timeout_ms = w->opt.kv_io_timeout_ms, .max_conns = w->opt.kv_max_conns},
        .rdma = {.device = w->opt.rdma_device, .gid_index = -1}};
    if (kvt_open(which, &to, &w->kvt, err) < 0)
        return -1;
    wrk_log(w, ENG_LOG_INFO, NULL, "KV transport: %s", kvt_choice(w->kvt));
    kvt_set_notify(w->kvt, on_transfer_end, w);
    if (kvt_register(w->kvt, eng_kv_pool_base(w->pool), eng_kv_pool_bytes(w->pool), &w->region, err) < 0 ||
        kvt_descriptor(w->kvt, w->region, w->descriptor, sizeof w->descriptor, &w->descriptor_len, err) < 0)
        return -1;
    return 0;
}

int wrk_start(const wrk_options *opt, wrk_worker **out, eng_error *err)
{
    *out = NULL;
    if (!opt->model_dir)
        return eng_fail(err, "no model directory");
    if (opt->role != WRK_ROLE_PREFILL && opt->role != WRK_ROLE_DECODE && opt->role != WRK_ROLE_BOTH)
        return eng_fail(err, "role must be prefill, decode or both");
    eng_dtype kv_dt;
    if (eng_kv_dtype_parse(opt->kv_dtype ? opt->kv_dtype : ENG_KV_DTYPE_DEFAULT, &kv_dt) < 0)
        return eng_fail(err, "KV dtype '%s': must be bf16, f16 or f32", opt->kv_dtype);
    wrk_worker *w = calloc(1, sizeof *w);
    if (!w)
        return eng_fail(err, "out of memory");
    w->opt = *opt;
    if (!w->opt.block_size)
        w->opt.block_size = 16;
    if (!w->opt.max_batch_tokens)
        w->opt.max_batch_tokens = 2048;
    if (!w->opt.max_running)
        w->opt.max_running = 64;
    if (!w->opt.lease_ms)
        w->opt.lease_ms = 30000;
    if (w->opt.block_size < 1 || w->opt.max_batch_tokens < 1 || w->opt.max_running < 1 || w->opt.lease_ms < 1 ||
        w->opt.kv_blocks < 0) {
        free(w);
        return eng_fail(err, "block size, batch tokens, max running, lease and KV blocks must be positive");
    }
    snprintf(w->host, sizeof w->host, "%s", opt->host && *opt->host ? opt->host : "127.0.0.1");
    w->role_name = wrk_role_name(opt->role);
    atomic_init(&w->role, (int)opt->role);
    snprintf(w->id, sizeof w->id, "%s", opt->id && *opt->id ? opt->id : "starting");
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    pthread_mutex_init(&w->reg_mu, NULL);
    pthread_cond_init(&w->reg_cv, NULL);
    pthread_mutex_init(&w->chan_mu, NULL);
    pthread_mutex_init(&w->fail_mu, NULL);
    eng_path_last_name(opt->model_dir, w->model_name, sizeof w->model_name);

    if (metrics_server_start(w, err) < 0)
        goto fail;
    eng_model_options mo = {.n_threads = opt->threads, .mmap_weights = opt->mmap_weights};
    const char *mm = opt->matmul_dtype ? opt->matmul_dtype : "f32";
    if (strcmp(mm, "f32") != 0 && strcmp(mm, "bf16") != 0) {
        eng_fail(err, "matmul dtype '%s': must be f32 or bf16", mm);
        goto fail;
    }
    mo.matmul_dtype = strcmp(mm, "bf16") == 0 ? ENG_DT_BF16 : ENG_DT_F32;
    wrk_ep_placement placement = {0};
    if (opt->expert_placement && opt->ep_size <= 1) {
        eng_fail(err, "--expert-placement needs --ep-size N > 1");
        goto fail;
    }
    if (opt->ep_size > 1) {
        if (ep_placement(opt, &placement, err) < 0)
            goto fail;
        mo.expert_mask = placement.held + (size_t)opt->ep_rank * (size_t)placement.n_experts;
    }
    int loaded = eng_model_load(opt->model_dir, &mo, &w->model, err);
    if (loaded == 0) {
        w->cfg = eng_model_config(w->model);
        w->experts = w->cfg->is_moe ? w->cfg->num_experts : 0;
    }
    if (loaded == 0 && opt->ep_size > 1)
        loaded = start_ep(w, &placement, err);
    wrk_ep_placement_free(&placement);
    if (loaded < 0)
        goto fail;
    w->max_context = w->cfg->max_position_embeddings > 0 ? w->cfg->max_position_embeddings : 4096;
    w->layout = eng_model_kv_layout(w->model, w->opt.block_size, kv_dt);
    w->unit_bytes = eng_kv_unit_bytes(&w->layout);
    size_t block_bytes = w->unit_bytes * (size_t)w->layout.n_layers;
    int n_blocks = w->opt.kv_blocks;
    size_t budget = memory_budget();
    if (!n_blocks)
        n_blocks = wrk_default_kv_blocks(block_bytes, budget, w->opt.max_running, w->max_context, w->opt.block_size);
    if (eng_kv_pool_create(&w->layout, n_blocks, &w->pool, err) < 0)
        goto fail;
    if (opt->role == WRK_ROLE_PREFILL && !opt->no_prefix_cache) {
        /* the coordinator salts its keys the same way, from the registration */
        char lay[96];
        eng_kv_layout_str(&w->layout, lay, sizeof lay);
        if (wrk_prefix_create(w->pool, eng_block_salt(w->model_name, lay), &w->prefix, err) < 0)
            goto fail;
    }

    if (open_transport(w, err) < 0)
        goto fail;
    rpc_status st;
    char bind[300];
    if (eng_addr_join(w->host, opt->port, bind, sizeof bind, err) < 0)
        goto fail;
    if (rpc_server_create(bind, &w->rpc_port, &w->server, &st) < 0) {
        eng_fail(err, "gRPC server on %s: %s", bind, st.msg);
        goto fail;
    }
    if (eng_addr_join(w->host, w->rpc_port, w->rpc_address, sizeof w->rpc_address, err) < 0)
        goto fail;
    if (!opt->id || !*opt->id)
        snprintf(w->id, sizeof w->id, "%s-%s", w->role_name, w->rpc_address);
    if (metrics_init(w, err) < 0)
        goto fail;
    if (wrk_service_register(w, &st) < 0) {
        eng_fail(err, "gRPC: %s", st.msg);
        goto fail;
    }
    if (pthread_create(&w->engine_thread, NULL, wrk_engine_main, w) != 0) {
        eng_fail(err, "cannot start the engine thread");
        goto fail;
    }
    /* named, so that top -H and bench/goodput.mjs can tell the engine's CPU from the
     * serving path's (gRPC, KV transfer) */
    pthread_setname_np(w->engine_thread, "tandem-engine");
    w->engine_started = 1;
    if (rpc_server_start(w->server, &st) < 0) {
        eng_fail(err, "gRPC: %s", st.msg);
        goto fail;
    }
    char lay[96];
    eng_kv_layout_str(&w->layout, lay, sizeof lay);
    wrk_log(w, ENG_LOG_INFO, NULL,
            "serving %s on %s (metrics %s), KV pool %d blocks x %zu bytes = %.1f MiB (%s; %s), transport %s %.*s",
            w->model_name, w->rpc_address, w->metrics_address[0] ? w->metrics_address : "off", n_blocks, block_bytes,
            (double)n_blocks * (double)block_bytes / (1 << 20), lay,
            w->opt.kv_blocks ? "--kv-blocks" : "default: a tenth of free memory, at most max_running full contexts",
            kvt_name(w->kvt), (int)w->descriptor_len, (const char *)w->descriptor);
    (void)budget;
    atomic_store(&w->started, 1);
    if (opt->coordinator && *opt->coordinator) {
        if (rpc_channel_create(opt->coordinator, &w->coord, &st) < 0) {
            eng_fail(err, "coordinator %s: %s", opt->coordinator, st.msg);
            goto fail;
        }
        if (pthread_create(&w->registry_thread, NULL, registry_main, w) != 0) {
            eng_fail(err, "cannot start the registration thread");
            goto fail;
        }
        w->registry_started = 1;
    }
    *out = w;
    return 0;
fail:
    wrk_stop(w);
    return -1;
}

void wrk_drain(wrk_worker *w)
{
    pthread_mutex_lock(&w->mu);
    int was = w->draining;
    if (!was) {
        w->draining = 1;
        w->drain_deadline = eng_now_s() + w->opt.drain_timeout_s;
        pthread_cond_signal(&w->cv); /* the engine minds the deadline */
    }
    pthread_mutex_unlock(&w->mu);
    if (was)
        return;
    wrk_log(w, ENG_LOG_INFO, NULL,
            "draining: admitting nothing new, %d requests in flight; streams still running in %.1f s are handed "
            "back to go on on other workers",
            wrk_in_flight(w), w->opt.drain_timeout_s);
    pthread_mutex_lock(&w->reg_mu);
    w->reg_now = 1; /* tell the coordinator now, not at the next interval */
    pthread_cond_broadcast(&w->reg_cv);
    pthread_mutex_unlock(&w->reg_mu);
}

void wrk_stop(wrk_worker *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stopping = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    if (w->ep) /* a step waiting on the group ends now, and the group knows we left */
        wrk_ep_leave(w->ep);
    if (w->registry_started) {
        pthread_mutex_lock(&w->reg_mu);
        w->reg_stop = 1;
        pthread_cond_broadcast(&w->reg_cv);
        pthread_mutex_unlock(&w->reg_mu);
        pthread_join(w->registry_thread, NULL);
    }
    /* The engine thread ends every request (UNAVAILABLE) while the server waits for
     * the owners of open calls; then both are gone. */
    rpc_server_stop(w->server);
    if (w->engine_started)
        pthread_join(w->engine_thread, NULL);
    wrk_ep_stop(w->ep);
    met_server_stop(w->met_server);
    if (w->kvt) {
        if (w->region) {
            eng_error e;
            kvt_deregister(w->kvt, w->region, &e);
        }
        kvt_destroy(w->kvt);
    }
    for (wrk_chan *c = w->chans, *next; c; c = next) {
        next = c->next;
        rpc_channel_destroy(c->ch);
        free(c);
    }
    rpc_channel_destroy(w->coord);
    wrk_prefix_destroy(w->prefix);
    eng_kv_pool_destroy(w->pool);
    eng_model_free(w->model);
    met_registry_free(w->metrics);
    if (w->engine_started)
        wrk_log(w, ENG_LOG_INFO, NULL, "stopped");
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->reg_mu);
    pthread_cond_destroy(&w->reg_cv);
    pthread_mutex_destroy(&w->chan_mu);
    pthread_mutex_destroy(&w->fail_mu);
    free(w->failed_ids);
    free(w);
}
