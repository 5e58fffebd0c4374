/* tandemctl.c: the operator's view of a running cluster, over the coordinator's
 * Admin service (gRPC).
 *
 *   tandemctl status [--coordinator HOST:PORT] [--json]
 *       every worker: id, role, address, state, running/queued requests, KV blocks
 *       used/total, KV layout, transport (a table, or one JSON object)
 *   tandemctl cancel REQUEST_ID [--coordinator HOST:PORT]
 *       cancels a request in flight
 *
 * The coordinator address defaults to $TANDEM_COORDINATOR, else 127.0.0.1:50051.
 * A separate binary that loads no model, so that it runs anywhere the cluster is
 * reachable from. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli_args.h"
#include "cli_tls.h"
#include "model/kvcache.h"
#include "rpc.h"
#include "tandem.pb-c.h"

/* One Admin call. A fresh channel's first connection attempt may fail on a busy
 * machine (gRPC fails fast instead of waiting): UNAVAILABLE is retried for up to
 * three seconds before it counts. */
static int admin_call(rpc_channel *ch, const char *method, const ProtobufCMessage *q,
                      const ProtobufCMessageDescriptor *d, void **out, rpc_status *st)
{
    for (int tries = 0;; tries++) {
        if (rpc_unary_msg(ch, method, q, d, 5000, out, st) == 0)
            return 0;
        if (st->code != RPC_UNAVAILABLE || tries >= 30)
            return -1;
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

typedef struct ctl_args {
    const char *coordinator;
    int json;
    cli_tls_opts tls;
    const char *args[2]; /* the command and its argument */
} ctl_args;

static const cli_opt OPTS[] = {
    CLI_ENV_OPT(ctl_args, coordinator, "--coordinator", "HOST:PORT", "TANDEM_COORDINATOR", "127.0.0.1:50051",
                "the coordinator's gRPC address (`tandem serve` and\n`tandem coordinator` print it when they start)"),
    CLI_FLAG_OPT(ctl_args, json, "--json", "print one JSON object"),
    CLI_TLS_OPTS(ctl_args, tls),
};

static const cli_command CMD = {
    .name = "tandemctl",
    .usage = "status [options] | cancel REQUEST_ID [options]",
    .about = "  status: every worker: id, role, address, state, running/queued requests,\n"
             "          KV blocks used/total, KV layout, transport\n"
             "  cancel: cancels a request in flight",
    .opts = OPTS,
    .n_opts = CLI_COUNT(OPTS),
    .max_args = 2,
    .args_field = offsetof(ctl_args, args),
};

static const char *role_name(int r)
{
    switch (r) {
    case TANDEM__ROLE__ROLE_PREFILL: return "prefill";
    case TANDEM__ROLE__ROLE_DECODE: return "decode";
    case TANDEM__ROLE__ROLE_BOTH: return "both";
    default: return "?";
    }
}

static const char *state_name(int s)
{
    switch (s) {
    case TANDEM__WORKER_STATE__WORKER_HEALTHY: return "healthy";
    case TANDEM__WORKER_STATE__WORKER_UNHEALTHY: return "unhealthy";
    case TANDEM__WORKER_STATE__WORKER_DRAINING: return "draining";
    default: return "unknown";
    }
}

/* The engine's own description of a layout ("f32 bs16 L28 kv8 d128"), "-" for none. */
static void layout_str(const Tandem__KvLayout *l, char *buf, size_t cap)
{
    if (!l) {
        snprintf(buf, cap, "-");
        return;
    }
    eng_kv_layout lay = {.dtype = (eng_dtype)l->dtype,
                         .block_size = (int)l->block_size,
                         .n_layers = (int)l->layers,
                         .n_kv_heads = (int)l->kv_heads,
                         .head_dim = (int)l->head_dim};
    eng_kv_layout_str(&lay, buf, cap);
}

static const char *transport_of(const Tandem__WorkerInfo *i)
{
    return i && i->n_transports && i->transports[0]->transport ? i->transports[0]->transport : "-";
}

static int print_json(const Tandem__ClusterStatus *cs)
{
    cJSON *root = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(root, "workers");
    cJSON_AddStringToObject(root, "model", cs->model ? cs->model : "");
    for (size_t i = 0; i < cs->n_workers; i++) {
        const Tandem__WorkerStatus *w = cs->workers[i];
        const Tandem__WorkerInfo *in = w->info;
        const Tandem__WorkerLoad *ld = w->load;
        cJSON *o = cJSON_CreateObject();
        char lay[96];
        layout_str(in ? in->kv_layout : NULL, lay, sizeof lay);
        cJSON_AddStringToObject(o, "id", in && in->worker_id ? in->worker_id : "");
        cJSON_AddStringToObject(o, "role", role_name(in ? in->role : 0));
        cJSON_AddStringToObject(o, "address", in && in->rpc_address ? in->rpc_address : "");
        cJSON_AddStringToObject(o, "metrics_address", in && in->metrics_address ? in->metrics_address : "");
        cJSON_AddStringToObject(o, "state", state_name(w->state));
        cJSON_AddNumberToObject(o, "last_heartbeat_ms_ago", (double)w->last_heartbeat_ms_ago);
        cJSON_AddNumberToObject(o, "running", ld ? ld->running : 0);
        cJSON_AddNumberToObject(o, "queued", ld ? ld->queued : 0);
        cJSON_AddNumberToObject(o, "queued_prompt_tokens", ld ? (double)ld->queued_prompt_tokens : 0);
        cJSON_AddNumberToObject(o, "kv_blocks_used", ld ? ld->kv_blocks_used : 0);
        cJSON_AddNumberToObject(o, "kv_blocks_total", ld ? ld->kv_blocks_total : 0);
        cJSON_AddStringToObject(o, "layout", lay);
        cJSON_AddStringToObject(o, "transport", transport_of(in));
        cJSON_AddStringToObject(o, "group", in && in->ep_group ? in->ep_group : "");
        cJSON_AddNumberToObject(o, "ep_rank", in ? in->ep_rank : 0);
        cJSON_AddNumberToObject(o, "ep_size", in && in->ep_size > 1 ? in->ep_size : 1);
        cJSON_AddNumberToObject(o, "experts", in ? in->experts : 0);
        cJSON_AddBoolToObject(o, "ep_ready", ld && ld->ep_ready);
        if (ld && ld->batch) {
            cJSON_AddNumberToObject(o, "steps", (double)ld->batch->steps);
            cJSON_AddNumberToObject(o, "max_batch", ld->batch->max_batch);
            cJSON_AddNumberToObject(o, "last_batch", ld->batch->last_batch);
        }
        cJSON_AddItemToArray(arr, o);
    }
    char *s = cJSON_Print(root);
    cJSON_Delete(root);
    if (!s)
        return 1;
    printf("%s\n", s);
    free(s);
    return 0;
}

static void print_table(const Tandem__ClusterStatus *cs)
{
    printf("model %s, %zu worker(s)\n", cs->model ? cs->model : "", cs->n_workers);
    printf("%-22s %-8s %-22s %-10s %7s %6s %14s  %-22s %-9s %s\n", "WORKER", "ROLE", "ADDRESS", "STATE", "RUNNING",
           "QUEUED", "KV USED/TOTAL", "LAYOUT", "TRANSPORT", "EP GROUP RANK/SIZE EXPERTS");
    for (size_t i = 0; i < cs->n_workers; i++) {
        const Tandem__WorkerStatus *w = cs->workers[i];
        const Tandem__WorkerInfo *in = w->info;
        const Tandem__WorkerLoad *ld = w->load;
        char lay[96], kv[40];
        layout_str(in ? in->kv_layout : NULL, lay, sizeof lay);
        snprintf(kv, sizeof kv, "%u/%u", ld ? ld->kv_blocks_used : 0, ld ? ld->kv_blocks_total : 0);
        char ep[160] = "-";
        if (in && in->ep_size > 1)
            snprintf(ep, sizeof ep, "%s %u/%u %u%s", in->ep_group ? in->ep_group : "", in->ep_rank, in->ep_size,
                     in->experts, ld && ld->ep_ready ? "" : " (group incomplete)");
        printf("%-22s %-8s %-22s %-10s %7u %6u %14s  %-22s %-9s %s\n", in && in->worker_id ? in->worker_id : "",
               role_name(in ? in->role : 0), in && in->rpc_address ? in->rpc_address : "", state_name(w->state),
               ld ? ld->running : 0, ld ? ld->queued : 0, kv, lay, transport_of(in), ep);
    }
}

int main(int argc, char **argv)
{
    ctl_args a = {0};
    int exit_status = cli_parse(&CMD, argc, argv, &a);
    if (exit_status != CLI_RUN)
        return exit_status;
    const char *addr = a.coordinator, *cmd = a.args[0], *arg = a.args[1];
    int json = a.json;
    if (!cmd || (strcmp(cmd, "status") && strcmp(cmd, "cancel")))
        return cli_usage_error(&CMD, "the command is status or cancel (see --help)");
    if (!strcmp(cmd, "cancel") && !arg)
        return cli_usage_error(&CMD, "cancel needs a REQUEST_ID");
    if (!strcmp(cmd, "status") && arg)
        return cli_usage_error(&CMD, "unexpected argument '%s' (see --help)", arg);
    if ((exit_status = cli_tls_apply(&CMD, &a.tls)) != CLI_RUN)
        return exit_status;
    rpc_channel *ch = NULL;
    rpc_status st;
    if (rpc_channel_create(addr, &ch, &st) < 0) {
        fprintf(stderr, "tandemctl: %s: %s\n", addr, st.msg);
        return 1;
    }
    int rc = 0;
    if (!strcmp(cmd, "status")) {
        Tandem__StatusRequest q = TANDEM__STATUS_REQUEST__INIT;
        Tandem__ClusterStatus *cs = NULL;
        if (admin_call(ch, RPC_ADMIN_STATUS, &q.base, &tandem__cluster_status__descriptor, (void **)&cs, &st) < 0) {
            fprintf(stderr, "tandemctl: coordinator %s: %s (%s)\n", addr, st.msg, rpc_code_name(st.code));
            rc = 1;
        } else {
            if (json)
                rc = print_json(cs);
            else
                print_table(cs);
            rpc_msg_free(cs);
        }
    } else {
        Tandem__CancelRequest q = TANDEM__CANCEL_REQUEST__INIT;
        q.request_id = (char *)arg;
        Tandem__CancelReply *rep = NULL;
        if (admin_call(ch, RPC_ADMIN_CANCEL, &q.base, &tandem__cancel_reply__descriptor, (void **)&rep, &st) < 0) {
            fprintf(stderr, "tandemctl: coordinator %s: %s (%s)\n", addr, st.msg, rpc_code_name(st.code));
            rc = 1;
        } else {
            printf(json ? "{\"found\": %s}\n" : "%s\n", rep->found ? (json ? "true" : "cancelled") : (json ? "false" : "no such request"));
            rc = rep->found ? 0 : 1;
            rpc_msg_free(rep);
        }
    }
    rpc_channel_destroy(ch);
    return rc;
}
