/* admin.c: the Admin service on the coordinator's gRPC port (tandem.proto).
 *
 * Admin.Status answers every registered worker with its role, addresses, state,
 * load (running/queued, KV blocks used/total, batch statistics), KV layout and
 * transport: what `tandemctl status` prints and what tests poll to see a cluster
 * come up or drain. Admin.Requests lists the requests in flight (the router's view).
 * Admin.Cancel cancels a request in flight by id. Admin.Cordon and Admin.Uncordon
 * take a worker out of rotation and put it back. Admin.Drain and Admin.SetRole
 * cordon the worker here and ask it (Worker.Drain, Worker.SetRole) to drain, and
 * for SetRole to come back in its new role. Admin.SetLogLevel changes the log level
 * here, on one worker, or everywhere; Admin.Config shows a process's effective
 * settings and, for a worker, where the workers of its pool disagree. Kept apart
 * from the registry and the router since it only asks them. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "common/log.h"
#include "kv_layout_msg.h"

/* Calls from here to a worker: short, they only set a flag or read settings there. */
#define WORKER_CALL_MS 10000
/* One Admin.Config warning line, every part cut to its precision in pool_warnings. */
#define WARNING_MAX 400

struct coord_admin {
    coord_registry *reg;
    coord_router *router;
    const char *model;
    pthread_mutex_t mu; /* guards the settings */
    coord_setting settings[COORD_MAX_SETTINGS];
    int n_settings;
};
typedef struct coord_admin admin;

static void on_status(void *user, rpc_call *call, const rpc_bytes *req, rpc_bytes *resp, rpc_status *st)
{
    (void)call, (void)req;
    admin *a = user;
    coord_worker_view *v = NULL;
    int n = 0;
    if (coord_registry_snapshot(a->reg, &v, &n) < 0) {
        rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    /* Everything on the stack or in a few arrays: the messages only point at v. */
    size_t m = (size_t)(n ? n : 1);
    Tandem__WorkerStatus *ws = calloc(m, sizeof *ws), **wsp = calloc(m, sizeof *wsp);
    Tandem__WorkerInfo *wi = calloc(m, sizeof *wi);
    Tandem__WorkerLoad *wl = calloc(m, sizeof *wl);
    Tandem__Capacity *cap = calloc(m, sizeof *cap);
    Tandem__KvLayout *lay = calloc(m, sizeof *lay);
    Tandem__BatchStats *bs = calloc(m, sizeof *bs);
    Tandem__PrefixCacheSummary *pcs = calloc(m, sizeof *pcs); /* counts only: the keys stay in the registry */
    Tandem__TransportEndpoint *ep = calloc(m, sizeof *ep), **epp = calloc(m, sizeof *epp);
    if (!ws || !wsp || !wi || !wl || !cap || !lay || !bs || !pcs || !ep || !epp) {
        rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (int i = 0; i < n; i++) {
        tandem__worker_status__init(&ws[i]);
        tandem__worker_info__init(&wi[i]);
        tandem__worker_load__init(&wl[i]);
        tandem__capacity__init(&cap[i]);
        tandem__batch_stats__init(&bs[i]);
        tandem__transport_endpoint__init(&ep[i]);
        kv_layout_to_msg(&v[i].layout, &lay[i]);
        cap[i].max_running = v[i].max_running;
        cap[i].max_context = v[i].max_context;
        cap[i].kv_blocks_total = v[i].kv_total;
        cap[i].kv_blocks_free = v[i].kv_total - v[i].kv_used;
        ep[i].transport = v[i].transport;
        epp[i] = &ep[i];
        wi[i].worker_id = v[i].id;
        wi[i].role = (Tandem__Role)v[i].role;
        wi[i].rpc_address = v[i].rpc_address;
        wi[i].metrics_address = v[i].metrics_address;
        wi[i].capacity = &cap[i];
        wi[i].kv_layout = &lay[i];
        wi[i].n_transports = v[i].transport[0] ? 1 : 0;
        wi[i].transports = &epp[i];
        wi[i].model = (char *)a->model;
        wi[i].ep_group = v[i].ep_group;
        wi[i].ep_rank = v[i].ep_rank;
        wi[i].ep_size = v[i].ep_size;
        wi[i].experts = v[i].experts;
        bs[i].steps = v[i].steps;
        bs[i].batched_seqs = v[i].batched_seqs;
        bs[i].max_batch = v[i].max_batch;
        bs[i].last_batch = v[i].last_batch;
        wl[i].worker_id = v[i].id;
        wl[i].running = v[i].running;
        wl[i].queued = v[i].queued;
        wl[i].queued_prompt_tokens = v[i].queued_prompt_tokens;
        wl[i].kv_blocks_used = v[i].kv_used;
        wl[i].kv_blocks_total = v[i].kv_total;
        wl[i].batch = &bs[i];
        wl[i].draining = v[i].draining;
        wl[i].ep_ready = v[i].ep_ready;
        if (v[i].has_prefix_cache) {
            tandem__prefix_cache_summary__init(&pcs[i]);
            pcs[i].cached_blocks = v[i].prefix_blocks;
            pcs[i].query_tokens = v[i].prefix_query_tokens;
            pcs[i].hit_tokens = v[i].prefix_hit_tokens;
            wl[i].prefix_cache = &pcs[i];
        }
        ws[i].info = &wi[i];
        ws[i].load = &wl[i];
        ws[i].state = (Tandem__WorkerState)v[i].state;
        ws[i].last_heartbeat_ms_ago = (uint64_t)(v[i].since_heartbeat_s * 1000);
        wsp[i] = &ws[i];
    }
    Tandem__ClusterStatus cs = TANDEM__CLUSTER_STATUS__INIT;
    cs.n_workers = (size_t)n;
    cs.workers = wsp;
    cs.model = (char *)a->model;
    if (rpc_pack(&cs.base, resp) < 0)
        rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
out:
    free(ws), free(wsp), free(wi), free(wl), free(cap), free(lay), free(bs), free(pcs), free(ep), free(epp);
    free(v);
}

static void on_cancel(void *user, rpc_call *call, const rpc_bytes *req, rpc_bytes *resp, rpc_status *st)
{
    (void)call;
    admin *a = user;
    Tandem__CancelRequest *q = rpc_unpack(&tandem__cancel_request__descriptor, req->data, req->len, st);
    if (!q)
        return;
    Tandem__CancelReply rep = TANDEM__CANCEL_REPLY__INIT;
    rep.found = q->request_id && *q->request_id && coord_router_cancel_id(a->router, q->request_id);
    if (rpc_pack(&rep.base, resp) < 0)
        rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
    rpc_msg_free(q);
}

/* Cordon (on) or uncordon one worker; an unknown id is NOT_FOUND. */
static void set_cordon(admin *a, const rpc_bytes *req, rpc_bytes *resp, rpc_status *st, int on)
{
    Tandem__WorkerRequest *q = rpc_unpack(&tandem__worker_request__descriptor, req->data, req->len, st);
    if (!q)
        return;
    int s = q->worker_id ? coord_registry_cordon(a->reg, q->worker_id, on) : -1;
    if (s < 0) {
        rpc_status_set(st, RPC_NOT_FOUND, "no worker '%s'", q->worker_id ? q->worker_id : "");
    } else {
        if (on && q->migrate) /* out of rotation first, so that no stream moves back to it */
            coord_router_migrate_from(a->router, q->worker_id);
        Tandem__WorkerReply rep = TANDEM__WORKER_REPLY__INIT;
        rep.state = (Tandem__WorkerState)s;
        if (rpc_pack(&rep.base, resp) < 0)
            rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
    }
    rpc_msg_free(q);
}

static void on_cordon(void *user, rpc_call *call, const rpc_bytes *req, rpc_bytes *resp, rpc_status *st)
{
    (void)call;
    set_cordon(user, req, resp, st, 1);
}

static void on_uncordon(void *user, rpc_call *call, const rpc_bytes *req, rpc_bytes *resp, rpc_status *st)
{
    (void)call;
    set_cordon(user, req, resp, st, 0);
}

/* Calls method on worker id with q (the reply of type d in *out). An unknown id is
 * NOT_FOUND; a worker that does not answer is FAILED_PRECONDITION naming it (not
 * UNAVAILABLE: tandemctl reads that as the coordinator being unreachable). */
static int call_worker(admin *a, const char *id, const char *method, const ProtobufCMessage *q,
                       const ProtobufCMessageDescriptor *d, void **out, rpc_status *st)
{
    coord_worker_view *v = NULL;
    int n = 0;
    char addr[sizeof v->rpc_address] = "";
    if (coord_registry_snapshot(a->reg, &v, &n) < 0)
        return rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
    for (int i = 0; id && i < n; i++)
        if (!strcmp(v[i].id, id))
            snprintf(addr, sizeof addr, "%s", v[i].rpc_address);
    free(v);
    if (!addr[0])
        return rpc_status_set(st, RPC_NOT_FOUND, "no worker '%s'", id ? id : "");
    rpc_channel *ch = NULL;
    int rc = rpc_channel_create(addr, &ch, st);
    if (rc == 0)
        rc = rpc_unary_msg(ch, method, q, d, WORKER_CALL_MS, out, st);
    rpc_channel_destroy(ch);
    if (rc < 0 && st->code != RPC_NOT_FOUND && st->code != RPC_INVALID_ARGUMENT &&
        st->code != RPC_FAILED_PRECONDITION) {
        char why[sizeof st->msg];
        snprintf(why, sizeof why, "%s", st->msg);
        rpc_status_set(st, RPC_FAILED_PRECONDITION, "worker %s at %s did not answer: %.160s", id, addr, why);
    }
    return rc;
}

/* Packs a WorkerReply (or passes on the error in st). */
static void reply_state(const Tandem__WorkerReply *rep, rpc_bytes *resp, rpc_status *st)
{
    if (rep && rpc_pack(&rep->base, resp) < 0)
        rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
}

/* Admin.Drain and Admin.SetRole: cordons the worker here at once, then asks it to
 * drain (its next heartbeat, sent at once, says so). A worker that does not take
 * the request stays cordoned. */
static void cordon_and_call(admin *a, const rpc_bytes *req, rpc_bytes *resp, rpc_status *st, const char *method)
{
    Tandem__WorkerRequest *q = rpc_unpack(&tandem__worker_request__descriptor, req->data, req->len, st);
    if (!q)
        return;
    Tandem__WorkerReply *rep = NULL;
    if (!q->worker_id || coord_registry_cordon(a->reg, q->worker_id, 1) < 0)
        rpc_status_set(st, RPC_NOT_FOUND, "no worker '%s'", q->worker_id ? q->worker_id : "");
    else if (call_worker(a, q->worker_id, method, &q->base, &tandem__worker_reply__descriptor, (void **)&rep, st) == 0)
        reply_state(rep, resp, st);
    rpc_msg_free(rep);
    rpc_msg_free(q);
}

static void on_drain(void *user, rpc_call *call, const rpc_bytes *req, rpc_bytes *resp, rpc_status *st)
{
    (void)call;
    cordon_and_call(user, req, resp, st, RPC_WORKER_DRAIN);
}

/* Admin.SetRole: prefill, decode or both, not the role it has; an EP rank keeps its
 * group's role. */
static void on_set_role(void *user, rpc_call *call, const rpc_bytes *req, rpc_bytes *resp, rpc_status *st)
{
    (void)call;
    admin *a = user;
    Tandem__WorkerRequest *q = rpc_unpack(&tandem__worker_request__descriptor, req->data, req->len, st);
    if (!q)
        return;
    coord_worker_view *v = NULL, *w = NULL;
    int n = 0;
    if (coord_registry_snapshot(a->reg, &v, &n) < 0) {
        rpc_msg_free(q);
        rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    for (int i = 0; q->worker_id && i < n; i++)
        if (!strcmp(v[i].id, q->worker_id))
            w = &v[i];
    if (q->role != TANDEM__ROLE__ROLE_PREFILL && q->role != TANDEM__ROLE__ROLE_DECODE &&
        q->role != TANDEM__ROLE__ROLE_BOTH) {
        rpc_status_set(st, RPC_INVALID_ARGUMENT, "the role must be prefill, decode or both");
    } else if (!w) {
        rpc_status_set(st, RPC_NOT_FOUND, "no worker '%s'", q->worker_id ? q->worker_id : "");
    } else if ((int)q->role == w->role) {
        rpc_status_set(st, RPC_FAILED_PRECONDITION, "worker %s is %s already", w->id, coord_role_name(w->role));
    } else if (w->ep_size > 1) {
        rpc_status_set(st, RPC_FAILED_PRECONDITION, "worker %s is a rank of EP group %s: its role is the group's",
                       w->id, w->ep_group);
    }
    free(v);
    rpc_msg_free(q);
    if (st->code == RPC_OK)
        cordon_and_call(a, req, resp, st, RPC_WORKER_SET_ROLE);
}

static void on_requests(void *user, rpc_call *call, const rpc_bytes *req, rpc_bytes *resp, rpc_status *st)
{
    (void)call, (void)req;
    admin *a = user;
    coord_request_view *v = NULL;
    int n = 0;
    if (coord_router_requests(a->router, &v, &n) < 0) {
        rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    size_t m = (size_t)(n ? n : 1);
    Tandem__RequestStatus *rs = calloc(m, sizeof *rs), **rsp = calloc(m, sizeof *rsp);
    if (!rs || !rsp) {
        rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (int i = 0; i < n; i++) {
        Tandem__RequestStatus *r = &rs[i];
        tandem__request_status__init(r);
        r->request_id = v[i].id;
        r->state = !v[i].decode[0] ? "waiting" : v[i].n_gen ? "decode" : "prefill";
        r->prompt_tokens = (uint32_t)v[i].n_prompt;
        r->tokens = (uint32_t)v[i].n_gen;
        r->max_tokens = (uint32_t)v[i].max_tokens;
        r->decode_worker = v[i].decode;
        r->prefill_worker = v[i].prefill;
        r->failovers = (uint32_t)v[i].failovers;
        r->migrations = (uint32_t)v[i].migrations;
        r->age_s = v[i].age_s;
        r->ttft_s = v[i].ttft_s;
        r->since_token_s = v[i].since_token_s;
        rsp[i] = r;
    }
    Tandem__RequestList list = TANDEM__REQUEST_LIST__INIT;
    list.n_requests = (size_t)n;
    list.requests = rsp;
    if (rpc_pack(&list.base, resp) < 0)
        rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
out:
    free(rs), free(rsp), free(v);
}

/* Admin.SetLogLevel: the coordinator (worker_id "" or "coordinator"), one worker, or
 * with `all` the coordinator and every worker, each one named in the reply as
 * changed or failed. */
static void on_set_log_level(void *user, rpc_call *call, const rpc_bytes *req, rpc_bytes *resp, rpc_status *st)
{
    (void)call;
    admin *a = user;
    Tandem__WorkerRequest *q = rpc_unpack(&tandem__worker_request__descriptor, req->data, req->len, st);
    if (!q)
        return;
    eng_log_level level;
    coord_worker_view *v = NULL;
    int n = 0;
    const char *id = q->worker_id ? q->worker_id : "";
    int here = q->all || !*id || !strcmp(id, "coordinator");
    if (!q->log_level || eng_log_level_parse(q->log_level, &level) < 0) {
        rpc_status_set(st, RPC_INVALID_ARGUMENT, "the log level must be error, warn, info or debug");
        goto out;
    }
    if (q->all && coord_registry_snapshot(a->reg, &v, &n) < 0) {
        rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    char **changed = calloc((size_t)n + 2, sizeof *changed), **failed = calloc((size_t)n + 2, sizeof *failed);
    char(*why)[400] = calloc((size_t)n + 1, sizeof *why);
    size_t n_changed = 0, n_failed = 0;
    if (!changed || !failed || !why) {
        rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
    } else if (here) {
        eng_log(ENG_LOG_WARN, "coordinator", NULL, "log level %s (Admin.SetLogLevel)", q->log_level);
        eng_log_set_level(level);
        changed[n_changed++] = "coordinator";
    } else {
        Tandem__WorkerReply *rep = NULL;
        if (call_worker(a, id, RPC_WORKER_SET_LOG_LEVEL, &q->base, &tandem__worker_reply__descriptor, (void **)&rep,
                        st) == 0)
            changed[n_changed++] = (char *)id;
        rpc_msg_free(rep);
    }
    for (int i = 0; st->code == RPC_OK && i < n; i++) {
        Tandem__WorkerReply *rep = NULL;
        rpc_status ws = {0};
        Tandem__WorkerRequest wq = *q;
        wq.worker_id = v[i].id;
        if (call_worker(a, v[i].id, RPC_WORKER_SET_LOG_LEVEL, &wq.base, &tandem__worker_reply__descriptor,
                        (void **)&rep, &ws) == 0) {
            changed[n_changed++] = v[i].id;
        } else {
            snprintf(why[n_failed], sizeof why[0], "%s: %.250s", v[i].id, ws.msg);
            failed[n_failed] = why[n_failed];
            n_failed++;
        }
        rpc_msg_free(rep);
    }
    if (st->code == RPC_OK) {
        Tandem__LogLevelReply rep = TANDEM__LOG_LEVEL_REPLY__INIT;
        rep.n_changed = n_changed;
        rep.changed = changed;
        rep.n_failed = n_failed;
        rep.failed = failed;
        if (rpc_pack(&rep.base, resp) < 0)
            rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
    }
    free(changed), free(failed), free(why);
out:
    free(v);
    rpc_msg_free(q);
}

/* Settings that differ between workers of one pool by design (or harmlessly). */
static int per_worker(const char *key)
{
    static const char *const own[] = {"id", "rpc_address", "metrics_address", "ep_rank", "log_level", "log_format"};
    for (size_t i = 0; i < sizeof own / sizeof *own; i++)
        if (!strcmp(key, own[i]))
            return 1;
    return 0;
}

static const char *setting(const Tandem__ConfigReply *c, const char *key)
{
    for (size_t i = 0; i < c->n_settings; i++)
        if (c->settings[i]->key && !strcmp(c->settings[i]->key, key))
            return c->settings[i]->value ? c->settings[i]->value : "";
    return NULL;
}

/* One warning per setting of `mine` that another worker of its pool has otherwise:
 * "max_running: decode-1 has 32, decode-0 has 64". Returns the number written. */
static size_t pool_warnings(admin *a, const char *id, const Tandem__ConfigReply *mine, char (*out)[WARNING_MAX],
                            size_t cap)
{
    coord_worker_view *v = NULL;
    int n = 0, role = 0;
    if (coord_registry_snapshot(a->reg, &v, &n) < 0)
        return 0;
    for (int i = 0; i < n; i++)
        if (!strcmp(v[i].id, id))
            role = v[i].role;
    size_t k = 0;
    for (int i = 0; i < n && k < cap; i++) {
        if (v[i].role != role || !strcmp(v[i].id, id) || v[i].state == TANDEM__WORKER_STATE__WORKER_FAILED)
            continue;
        Tandem__WorkerRequest q = TANDEM__WORKER_REQUEST__INIT;
        q.worker_id = v[i].id;
        Tandem__ConfigReply *other = NULL;
        rpc_status st = {0};
        if (call_worker(a, v[i].id, RPC_WORKER_CONFIG, &q.base, &tandem__config_reply__descriptor, (void **)&other,
                        &st) < 0) {
            snprintf(out[k++], sizeof out[0], "%.128s: settings unknown (%.200s)", v[i].id, st.msg);
            continue;
        }
        for (size_t s = 0; s < mine->n_settings && k < cap; s++) {
            const char *key = mine->settings[s]->key, *val = mine->settings[s]->value, *theirs = setting(other, key);
            if (!per_worker(key) && theirs && strcmp(theirs, val))
                snprintf(out[k++], sizeof out[0], "%.40s: %.60s has %.80s, %.60s has %.80s", key, v[i].id, theirs, id,
                         val);
        }
        rpc_msg_free(other);
    }
    free(v);
    return k;
}

/* Admin.Config: the coordinator's settings (worker_id "" or "coordinator"), or a
 * worker's own (Worker.Config) with warnings where its pool disagrees. */
static void on_config(void *user, rpc_call *call, const rpc_bytes *req, rpc_bytes *resp, rpc_status *st)
{
    (void)call;
    admin *a = user;
    Tandem__WorkerRequest *q = rpc_unpack(&tandem__worker_request__descriptor, req->data, req->len, st);
    if (!q)
        return;
    const char *id = q->worker_id ? q->worker_id : "";
    Tandem__ConfigReply rep = TANDEM__CONFIG_REPLY__INIT;
    if (!*id || !strcmp(id, "coordinator")) {
        Tandem__Setting s[COORD_MAX_SETTINGS + 2], *sp[COORD_MAX_SETTINGS + 2];
        char level[16], format[8];
        pthread_mutex_lock(&a->mu);
        int n = a->n_settings;
        for (int i = 0; i < n; i++) {
            tandem__setting__init(&s[i]);
            s[i].key = a->settings[i].key;
            s[i].value = a->settings[i].value;
        }
        snprintf(level, sizeof level, "%s", eng_log_level_name(eng_log_get_level()));
        snprintf(format, sizeof format, "%s", eng_log_get_format() == ENG_LOG_JSON ? "json" : "text");
        const char *extra[2][2] = {{"log_level", level}, {"log_format", format}};
        for (int i = 0; i < 2; i++, n++) {
            tandem__setting__init(&s[n]);
            s[n].key = (char *)extra[i][0];
            s[n].value = (char *)extra[i][1];
        }
        for (int i = 0; i < n; i++)
            sp[i] = &s[i];
        rep.id = "coordinator";
        rep.n_settings = (size_t)n;
        rep.settings = sp;
        if (rpc_pack(&rep.base, resp) < 0)
            rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
        pthread_mutex_unlock(&a->mu);
        rpc_msg_free(q);
        return;
    }
    Tandem__ConfigReply *mine = NULL;
    if (call_worker(a, id, RPC_WORKER_CONFIG, &q->base, &tandem__config_reply__descriptor, (void **)&mine, st) == 0) {
        enum { MAX_WARNINGS = 64 };
        char(*warn)[WARNING_MAX] = calloc(MAX_WARNINGS, sizeof *warn);
        char *wp[MAX_WARNINGS];
        size_t nw = warn ? pool_warnings(a, id, mine, warn, MAX_WARNINGS) : 0;
        for (size_t i = 0; i < nw; i++)
            wp[i] = warn[i];
        rep.id = mine->id;
        rep.n_settings = mine->n_settings;
        rep.settings = mine->settings;
        rep.n_warnings = nw;
        rep.warnings = wp;
        if (rpc_pack(&rep.base, resp) < 0)
            rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
        free(warn);
    }
    rpc_msg_free(mine);
    rpc_msg_free(q);
}

void coord_admin_set_settings(coord_admin *a, const coord_setting *s, int n)
{
    pthread_mutex_lock(&a->mu);
    a->n_settings = n < COORD_MAX_SETTINGS ? n : COORD_MAX_SETTINGS;
    memcpy(a->settings, s, (size_t)a->n_settings * sizeof *s);
    pthread_mutex_unlock(&a->mu);
}

int coord_admin_serve(rpc_server *s, coord_registry *reg, coord_router *router, const char *model, coord_admin **out,
                      rpc_status *st)
{
    *out = NULL;
    admin *a = calloc(1, sizeof *a);
    if (!a)
        return rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
    a->reg = reg;
    a->router = router;
    a->model = model;
    pthread_mutex_init(&a->mu, NULL);
    if (rpc_server_add_unary(s, RPC_ADMIN_STATUS, on_status, a, st) < 0 ||
        rpc_server_add_unary(s, RPC_ADMIN_REQUESTS, on_requests, a, st) < 0 ||
        rpc_server_add_unary(s, RPC_ADMIN_SET_ROLE, on_set_role, a, st) < 0 ||
        rpc_server_add_unary(s, RPC_ADMIN_SET_LOG_LEVEL, on_set_log_level, a, st) < 0 ||
        rpc_server_add_unary(s, RPC_ADMIN_CONFIG, on_config, a, st) < 0 ||
        rpc_server_add_unary(s, RPC_ADMIN_CANCEL, on_cancel, a, st) < 0 ||
        rpc_server_add_unary(s, RPC_ADMIN_CORDON, on_cordon, a, st) < 0 ||
        rpc_server_add_unary(s, RPC_ADMIN_UNCORDON, on_uncordon, a, st) < 0 ||
        rpc_server_add_unary(s, RPC_ADMIN_DRAIN, on_drain, a, st) < 0) {
        pthread_mutex_destroy(&a->mu);
        free(a); /* the server is stopped without ever calling it */
        return -1;
    }
    *out = a;
    return 0;
}

void coord_admin_free(coord_admin *a)
{
    if (a)
        pthread_mutex_destroy(&a->mu);
    free(a);
}
