/* admin.c: the Admin service on the coordinator's gRPC port (tandem.proto).
 *
 * Admin.Status answers every registered worker with its role, addresses, state,
 * load (running/queued, KV blocks used/total, batch statistics), KV layout and
 * transport: what `tandemctl status` prints and what tests poll to see a cluster
 * come up or drain. Admin.Cancel cancels a request in flight by id. Admin.Cordon
 * and Admin.Uncordon take a worker out of rotation and put it back; Admin.Drain
 * asks a worker to drain (Worker.Drain). Kept apart
 * from the registry and the router since it only asks them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"

struct coord_admin {
    coord_registry *reg;
    coord_router *router;
    const char *model;
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
        tandem__kv_layout__init(&lay[i]);
        tandem__batch_stats__init(&bs[i]);
        tandem__transport_endpoint__init(&ep[i]);
        lay[i].dtype = (Tandem__DType)v[i].layout.dtype;
        lay[i].block_size = (uint32_t)v[i].layout.block_size;
        lay[i].layers = (uint32_t)v[i].layout.n_layers;
        lay[i].kv_heads = (uint32_t)v[i].layout.n_kv_heads;
        lay[i].head_dim = (uint32_t)v[i].layout.head_dim;
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

/* Admin.Drain: cordons the worker here at once, then asks it over Worker.Drain to
 * drain (its next heartbeat, sent at once, says so). */
static void on_drain(void *user, rpc_call *call, const rpc_bytes *req, rpc_bytes *resp, rpc_status *st)
{
    (void)call;
    admin *a = user;
    coord_worker_view *v = NULL;
    int n = 0;
    char addr[sizeof v->rpc_address] = "";
    if (coord_registry_snapshot(a->reg, &v, &n) < 0) {
        rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    Tandem__WorkerRequest *q = rpc_unpack(&tandem__worker_request__descriptor, req->data, req->len, st);
    for (int i = 0; q && q->worker_id && i < n; i++)
        if (!strcmp(v[i].id, q->worker_id))
            snprintf(addr, sizeof addr, "%s", v[i].rpc_address);
    free(v);
    if (!q)
        return;
    rpc_channel *ch = NULL;
    Tandem__WorkerReply *rep = NULL;
    if (!addr[0]) {
        rpc_status_set(st, RPC_NOT_FOUND, "no worker '%s'", q->worker_id ? q->worker_id : "");
    } else {
        coord_registry_cordon(a->reg, q->worker_id, 1);
        if (rpc_channel_create(addr, &ch, st) == 0 &&
            rpc_unary_msg(ch, RPC_WORKER_DRAIN, &q->base, &tandem__worker_reply__descriptor, 5000, (void **)&rep, st) ==
                0) {
            if (rpc_pack(&rep->base, resp) < 0)
                rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
        } else {
            /* not UNAVAILABLE: tandemctl reads that as the coordinator being unreachable */
            char why[sizeof st->msg];
            snprintf(why, sizeof why, "%s", st->msg);
            rpc_status_set(st, RPC_FAILED_PRECONDITION,
                           "worker %s at %s did not take the drain (it stays cordoned): %.160s", q->worker_id, addr,
                           why);
        }
    }
    if (rep)
        rpc_msg_free(rep);
    rpc_channel_destroy(ch);
    rpc_msg_free(q);
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
    if (rpc_server_add_unary(s, RPC_ADMIN_STATUS, on_status, a, st) < 0 ||
        rpc_server_add_unary(s, RPC_ADMIN_CANCEL, on_cancel, a, st) < 0 ||
        rpc_server_add_unary(s, RPC_ADMIN_CORDON, on_cordon, a, st) < 0 ||
        rpc_server_add_unary(s, RPC_ADMIN_UNCORDON, on_uncordon, a, st) < 0 ||
        rpc_server_add_unary(s, RPC_ADMIN_DRAIN, on_drain, a, st) < 0) {
        free(a); /* the server is stopped without ever calling it */
        return -1;
    }
    *out = a;
    return 0;
}

void coord_admin_free(coord_admin *a)
{
    free(a);
}
