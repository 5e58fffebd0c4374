/* tandemctl.c: the operator's view of a running cluster, over the coordinator's
 * Admin service (gRPC).
 *
 *   tandemctl status                 workers by state and role, then every worker
 *   tandemctl get workers            every worker: role, address, state, load, KV
 *   tandemctl describe worker ID     everything the coordinator knows about one worker
 *   tandemctl cordon ID | uncordon ID   take a worker out of rotation, put it back
 *   tandemctl drain ID [--wait]      the worker finishes its requests, admits nothing new
 *   tandemctl cancel REQUEST_ID      cancel a request in flight
 *
 * Every command takes --coordinator HOST:PORT (default $TANDEM_COORDINATOR, else
 * 127.0.0.1:50051) and -o table|json. Exit status: 0 done, 1 the operation failed
 * (an unknown id, a bad argument; one line on stderr), 2 the coordinator could not
 * be reached. A separate binary that loads no model, so that it runs anywhere the
 * cluster is reachable from. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli_args.h"
#include "cli_tls.h"
#include "model/kvcache.h"
#include "plan.h"
#include "rpc.h"
#include "tandem.pb-c.h"

enum { EXIT_OK = 0, EXIT_FAILED = 1, EXIT_UNREACHABLE = 2 };

typedef struct ctl_args {
    const char *coordinator;
    const char *output;
    int json;
    int wait;
    int migrate;
    cli_tls_opts tls;
    const char *args[2]; /* the command's arguments */
} ctl_args;

#define COMMON_OPTS                                                                                                    \
    CLI_ENV_OPT(ctl_args, coordinator, "--coordinator", "HOST:PORT", "TANDEM_COORDINATOR", "127.0.0.1:50051",          \
                "the coordinator's gRPC address (`tandem serve` and\n`tandem coordinator` print it when they start)"), \
        CLI_CHOICE_OPT(ctl_args, output, "-o", "table|json", "table", "output format", 0),                             \
        CLI_FLAG_OPT(ctl_args, json, "--json", "the same as -o json"), CLI_TLS_OPTS(ctl_args, tls)

static const cli_opt OPTS[] = {COMMON_OPTS};
static const cli_opt DRAIN_OPTS[] = {
    COMMON_OPTS,
    CLI_FLAG_OPT(ctl_args, wait, "--wait", "print the worker's progress until it is drained"),
};
static const cli_opt CORDON_OPTS[] = {
    COMMON_OPTS,
    CLI_FLAG_OPT(ctl_args, migrate, "--migrate",
                 "also move the streams it is decoding to other decode workers\nnow (they resume there, identical)"),
};

/* A command with its own option table (the shared options and its own) or OPTS. */
#define CTL_COMMAND_WITH(nm, use, text, nargs, opt_table)                                                        \
    {                                                                                                            \
        .name = "tandemctl " nm, .usage = use, .about = text, .opts = opt_table, .n_opts = CLI_COUNT(opt_table), \
        .max_args = nargs, .args_field = offsetof(ctl_args, args)                                                \
    }
#define CTL_COMMAND(nm, use, text, nargs) CTL_COMMAND_WITH(nm, use, text, nargs, OPTS)

enum { CMD_STATUS, CMD_GET, CMD_DESCRIBE, CMD_CORDON, CMD_UNCORDON, CMD_DRAIN, CMD_CANCEL, N_CMDS };

/* One row per command: its --help comes from here and the shared option table. */
static const cli_command CMDS[N_CMDS] = {
    [CMD_STATUS] = CTL_COMMAND("status", "[options]",
                               "  The cluster: workers counted by role and state, then every worker\n"
                               "  (as `get workers`; EP groups when there are any).",
                               0),
    [CMD_GET] = CTL_COMMAND("get", "workers [options]",
                            "  Every worker: id, role, address, state, running and queued requests,\n"
                            "  KV blocks used/total, seconds since its last heartbeat.",
                            1),
    [CMD_DESCRIBE] = CTL_COMMAND("describe", "worker ID [options]",
                                 "  Everything the coordinator knows about one worker.", 2),
    [CMD_CORDON] = CTL_COMMAND_WITH("cordon", "ID [--migrate] [options]",
                                    "  Takes a worker out of rotation: the coordinator sends it no new request\n"
                                    "  from now on; the requests it has finish (or, with --migrate, move).",
                                    1, CORDON_OPTS),
    [CMD_UNCORDON] = CTL_COMMAND("uncordon", "ID [options]", "  Puts a cordoned worker back into rotation.", 1),
    [CMD_DRAIN] = CTL_COMMAND_WITH("drain", "ID [options]",
                                   "  Drains a worker as SIGTERM does, but it stays up: cordoned here at once,\n"
                                   "  it admits nothing new and finishes its requests (up to its --drain-timeout;\n"
                                   "  the streams left then migrate to other decode workers); then it is drained.",
                                   1, DRAIN_OPTS),
    [CMD_CANCEL] = CTL_COMMAND("cancel", "REQUEST_ID [options]", "  Cancels a request in flight.", 1),
};

/* The command line without a command: the list of commands. */
static const cli_command TOP = {
    .name = "tandemctl",
    .usage = "COMMAND [ARGS] [options]   (tandemctl COMMAND --help for each)",
    .about = "  status                 workers by role and state, then every worker\n"
             "  get workers            every worker: role, address, state, load, KV\n"
             "  describe worker ID     everything the coordinator knows about one worker\n"
             "  cordon ID [--migrate]  no new requests to this worker (--migrate: its\n"
             "                         streams move to other decode workers now)\n"
             "  uncordon ID            the worker is back in rotation\n"
             "  drain ID [--wait]      the worker finishes its requests, admits nothing new\n"
             "  cancel REQUEST_ID      cancel a request in flight\n"
             "  plan --profile ...     capacity planning: which prefill:decode split (no cluster)\n"
             "Exit status: 0 done, 1 the operation failed, 2 the coordinator is unreachable.",
    .opts = OPTS,
    .n_opts = CLI_COUNT(OPTS),
};

/* One Admin call. A fresh channel's first connection attempt may fail on a busy
 * machine (gRPC fails fast instead of waiting): UNAVAILABLE is retried for up to
 * three seconds before it counts. Failures are reported here, as one line; the
 * return value is the exit status. */
static int admin_call(rpc_channel *ch, const char *addr, const char *method, const ProtobufCMessage *q,
                      const ProtobufCMessageDescriptor *d, void **out)
{
    rpc_status st;
    for (int tries = 0;; tries++) {
        if (rpc_unary_msg(ch, method, q, d, 5000, out, &st) == 0)
            return EXIT_OK;
        if (st.code != RPC_UNAVAILABLE || tries >= 30)
            break;
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (st.code == RPC_UNAVAILABLE || st.code == RPC_DEADLINE_EXCEEDED) {
        fprintf(stderr, "tandemctl: coordinator %s unreachable: %s\n", addr, st.msg);
        return EXIT_UNREACHABLE;
    }
    fprintf(stderr, "tandemctl: %s\n", st.msg);
    return EXIT_FAILED;
}

static const char *role_name(int r)
{
    switch (r) {
    case TANDEM__ROLE__ROLE_PREFILL: return "prefill";
    case TANDEM__ROLE__ROLE_DECODE: return "decode";
    case TANDEM__ROLE__ROLE_BOTH: return "both";
    default: return "?";
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

static const char *id_of(const Tandem__WorkerStatus *w)
{
    return w->info && w->info->worker_id ? w->info->worker_id : "";
}

/* One worker as a JSON object: every field Admin.Status gives. */
static cJSON *worker_json(const Tandem__WorkerStatus *w)
{
    const Tandem__WorkerInfo *in = w->info;
    const Tandem__WorkerLoad *ld = w->load;
    cJSON *o = cJSON_CreateObject();
    char lay[96];
    layout_str(in ? in->kv_layout : NULL, lay, sizeof lay);
    cJSON_AddStringToObject(o, "id", id_of(w));
    cJSON_AddStringToObject(o, "role", role_name(in ? in->role : 0));
    cJSON_AddStringToObject(o, "address", in && in->rpc_address ? in->rpc_address : "");
    cJSON_AddStringToObject(o, "metrics_address", in && in->metrics_address ? in->metrics_address : "");
    cJSON_AddStringToObject(o, "state", rpc_worker_state_name(w->state));
    cJSON_AddNumberToObject(o, "last_heartbeat_ms_ago", (double)w->last_heartbeat_ms_ago);
    cJSON_AddNumberToObject(o, "running", ld ? ld->running : 0);
    cJSON_AddNumberToObject(o, "queued", ld ? ld->queued : 0);
    cJSON_AddNumberToObject(o, "queued_prompt_tokens", ld ? (double)ld->queued_prompt_tokens : 0);
    cJSON_AddNumberToObject(o, "kv_blocks_used", ld ? ld->kv_blocks_used : 0);
    cJSON_AddNumberToObject(o, "kv_blocks_total", ld ? ld->kv_blocks_total : 0);
    cJSON_AddNumberToObject(o, "max_running", in && in->capacity ? in->capacity->max_running : 0);
    cJSON_AddNumberToObject(o, "max_context", in && in->capacity ? in->capacity->max_context : 0);
    cJSON_AddStringToObject(o, "layout", lay);
    cJSON_AddStringToObject(o, "transport", transport_of(in));
    cJSON_AddStringToObject(o, "group", in && in->ep_group ? in->ep_group : "");
    cJSON_AddNumberToObject(o, "ep_rank", in ? in->ep_rank : 0);
    cJSON_AddNumberToObject(o, "ep_size", in && in->ep_size > 1 ? in->ep_size : 1);
    cJSON_AddNumberToObject(o, "experts", in ? in->experts : 0);
    cJSON_AddBoolToObject(o, "ep_ready", ld && ld->ep_ready);
    if (ld && ld->prefix_cache) {
        cJSON_AddNumberToObject(o, "prefix_cache_blocks", ld->prefix_cache->cached_blocks);
        cJSON_AddNumberToObject(o, "prefix_cache_query_tokens", (double)ld->prefix_cache->query_tokens);
        cJSON_AddNumberToObject(o, "prefix_cache_hit_tokens", (double)ld->prefix_cache->hit_tokens);
    }
    if (ld && ld->batch) {
        cJSON_AddNumberToObject(o, "steps", (double)ld->batch->steps);
        cJSON_AddNumberToObject(o, "max_batch", ld->batch->max_batch);
        cJSON_AddNumberToObject(o, "last_batch", ld->batch->last_batch);
    }
    return o;
}

/* Prints and frees j. */
static int print_json(cJSON *j)
{
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    if (!s)
        return EXIT_FAILED;
    printf("%s\n", s);
    free(s);
    return EXIT_OK;
}

/* The worker table: 88 columns with ids and addresses up to 16 and 21 characters. */
static void print_workers(const Tandem__ClusterStatus *cs)
{
    printf("%-16s %-7s %-21s %-8s %4s %5s %12s %7s\n", "WORKER", "ROLE", "ADDRESS", "STATE", "RUN", "QUEUE",
           "KV USED/TOT", "LAST HB");
    for (size_t i = 0; i < cs->n_workers; i++) {
        const Tandem__WorkerStatus *w = cs->workers[i];
        const Tandem__WorkerInfo *in = w->info;
        const Tandem__WorkerLoad *ld = w->load;
        char kv[40], hb[24];
        snprintf(kv, sizeof kv, "%u/%u", ld ? ld->kv_blocks_used : 0, ld ? ld->kv_blocks_total : 0);
        snprintf(hb, sizeof hb, "%.1fs", (double)w->last_heartbeat_ms_ago / 1000.0);
        printf("%-16s %-7s %-21s %-8s %4u %5u %12s %7s\n", id_of(w), role_name(in ? in->role : 0),
               in && in->rpc_address ? in->rpc_address : "", rpc_worker_state_name(w->state), ld ? ld->running : 0,
               ld ? ld->queued : 0, kv, hb);
    }
}

/* Workers with a prefix cache (prefill): its size and hit rate (tokens, since start). */
static void print_prefix_caches(const Tandem__ClusterStatus *cs)
{
    int header = 0;
    for (size_t i = 0; i < cs->n_workers; i++) {
        const Tandem__WorkerLoad *ld = cs->workers[i]->load;
        const Tandem__PrefixCacheSummary *pc = ld ? ld->prefix_cache : NULL;
        if (!pc)
            continue;
        if (!header++)
            printf("\n%-16s %13s %9s\n", "WORKER", "PREFIX BLOCKS", "HIT RATE");
        char rate[16] = "-";
        if (pc->query_tokens)
            snprintf(rate, sizeof rate, "%.1f%%", 100.0 * (double)pc->hit_tokens / (double)pc->query_tokens);
        printf("%-16s %13u %9s\n", id_of(cs->workers[i]), pc->cached_blocks, rate);
    }
}

static void print_status(const Tandem__ClusterStatus *cs)
{
    /* counts[role][state] */
    size_t counts[4][TANDEM__WORKER_STATE__WORKER_STARTING + 1] = {{0}};
    int ep = 0;
    for (size_t i = 0; i < cs->n_workers; i++) {
        const Tandem__WorkerStatus *w = cs->workers[i];
        int role = w->info && w->info->role <= 3 ? w->info->role : 0;
        int state = w->state <= TANDEM__WORKER_STATE__WORKER_STARTING ? w->state : 0;
        counts[role][state]++;
        ep |= w->info && w->info->ep_size > 1;
    }
    printf("model %s, %zu worker(s)\n", cs->model ? cs->model : "", cs->n_workers);
    for (int r = 1; r <= 3; r++) {
        size_t n = 0;
        for (int s = 0; s <= TANDEM__WORKER_STATE__WORKER_STARTING; s++)
            n += counts[r][s];
        if (!n)
            continue;
        printf("  %-8s %zu:", role_name(r), n);
        for (int s = 0; s <= TANDEM__WORKER_STATE__WORKER_STARTING; s++)
            if (counts[r][s])
                printf(" %zu %s", counts[r][s], rpc_worker_state_name(s));
        printf("\n");
    }
    printf("\n");
    print_workers(cs);
    print_prefix_caches(cs);
    if (!ep)
        return;
    printf("\n%-16s %-22s %-9s %s\n", "WORKER", "LAYOUT", "TRANSPORT", "EP GROUP RANK/SIZE EXPERTS");
    for (size_t i = 0; i < cs->n_workers; i++) {
        const Tandem__WorkerInfo *in = cs->workers[i]->info;
        const Tandem__WorkerLoad *ld = cs->workers[i]->load;
        char lay[96], grp[160] = "-";
        layout_str(in ? in->kv_layout : NULL, lay, sizeof lay);
        if (in && in->ep_size > 1)
            snprintf(grp, sizeof grp, "%s %u/%u %u%s", in->ep_group ? in->ep_group : "", in->ep_rank, in->ep_size,
                     in->experts, ld && ld->ep_ready ? "" : " (incomplete)");
        printf("%-16s %-22s %-9s %s\n", id_of(cs->workers[i]), lay, transport_of(in), grp);
    }
}

/* describe worker: one "key: value" line per field of the JSON object. */
static void print_describe(const Tandem__WorkerStatus *w)
{
    cJSON *o = worker_json(w);
    for (const cJSON *f = o->child; f; f = f->next) {
        if (cJSON_IsString(f))
            printf("%-22s %s\n", f->string, *f->valuestring ? f->valuestring : "-");
        else if (cJSON_IsBool(f))
            printf("%-22s %s\n", f->string, cJSON_IsTrue(f) ? "yes" : "no");
        else
            printf("%-22s %.0f\n", f->string, f->valuedouble);
    }
    cJSON_Delete(o);
}

static int find_command(const char *name)
{
    for (int c = 0; c < N_CMDS; c++)
        if (!strcmp(CMDS[c].name + strlen("tandemctl "), name))
            return c;
    return -1;
}

/* Status, get workers, describe worker: one Admin.Status call, printed as asked. */
static int show(rpc_channel *ch, const char *addr, int cmd, const char *id, int json)
{
    Tandem__StatusRequest q = TANDEM__STATUS_REQUEST__INIT;
    Tandem__ClusterStatus *cs = NULL;
    int rc = admin_call(ch, addr, RPC_ADMIN_STATUS, &q.base, &tandem__cluster_status__descriptor, (void **)&cs);
    if (rc)
        return rc;
    if (cmd == CMD_DESCRIBE) {
        const Tandem__WorkerStatus *w = NULL;
        for (size_t i = 0; i < cs->n_workers && !w; i++)
            if (!strcmp(id_of(cs->workers[i]), id))
                w = cs->workers[i];
        if (!w) {
            fprintf(stderr, "tandemctl: no worker '%s'\n", id);
            rc = EXIT_FAILED;
        } else if (json) {
            rc = print_json(worker_json(w));
        } else {
            print_describe(w);
        }
    } else if (json) {
        cJSON *arr = cJSON_CreateArray();
        for (size_t i = 0; i < cs->n_workers; i++)
            cJSON_AddItemToArray(arr, worker_json(cs->workers[i]));
        cJSON *root = arr;
        if (cmd == CMD_STATUS) {
            root = cJSON_CreateObject();
            cJSON_AddStringToObject(root, "model", cs->model ? cs->model : "");
            cJSON_AddItemToObject(root, "workers", arr);
        }
        rc = print_json(root);
    } else if (cmd == CMD_STATUS) {
        print_status(cs);
    } else {
        print_workers(cs);
    }
    rpc_msg_free(cs);
    return rc;
}

static int cordon(rpc_channel *ch, const char *addr, const char *id, int on, int migrate, int json)
{
    Tandem__WorkerRequest q = TANDEM__WORKER_REQUEST__INIT;
    q.worker_id = (char *)id;
    q.migrate = migrate;
    Tandem__WorkerReply *rep = NULL;
    int rc = admin_call(ch, addr, on ? RPC_ADMIN_CORDON : RPC_ADMIN_UNCORDON, &q.base,
                        &tandem__worker_reply__descriptor, (void **)&rep);
    if (rc)
        return rc;
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "worker", id);
        cJSON_AddStringToObject(o, "state", rpc_worker_state_name(rep->state));
        rc = print_json(o);
    } else {
        printf("worker %s %s (state %s)%s\n", id, on ? "cordoned" : "uncordoned", rpc_worker_state_name(rep->state),
               migrate ? "; its streams move to other decode workers" : "");
    }
    rpc_msg_free(rep);
    return rc;
}

/* drain ID: Admin.Drain, then with --wait one line per change of the worker's
 * state or load until it is drained. */
static int drain(rpc_channel *ch, const char *addr, const char *id, int wait, int json)
{
    Tandem__WorkerRequest q = TANDEM__WORKER_REQUEST__INIT;
    q.worker_id = (char *)id;
    Tandem__WorkerReply *rep = NULL;
    int rc = admin_call(ch, addr, RPC_ADMIN_DRAIN, &q.base, &tandem__worker_reply__descriptor, (void **)&rep);
    if (rc)
        return rc;
    rpc_msg_free(rep);
    if (!json)
        printf("worker %s draining\n", id);
    char last[160] = "";
    for (;;) {
        Tandem__StatusRequest sq = TANDEM__STATUS_REQUEST__INIT;
        Tandem__ClusterStatus *cs = NULL;
        if ((rc = admin_call(ch, addr, RPC_ADMIN_STATUS, &sq.base, &tandem__cluster_status__descriptor, (void **)&cs)))
            return rc;
        const Tandem__WorkerStatus *w = NULL;
        for (size_t i = 0; i < cs->n_workers && !w; i++)
            if (!strcmp(id_of(cs->workers[i]), id))
                w = cs->workers[i];
        int state = w ? w->state : 0;
        char now[160];
        snprintf(now, sizeof now, "worker %s %s: %u running, %u queued, KV %u/%u", id, rpc_worker_state_name(state),
                 w && w->load ? w->load->running : 0, w && w->load ? w->load->queued : 0,
                 w && w->load ? w->load->kv_blocks_used : 0, w && w->load ? w->load->kv_blocks_total : 0);
        rpc_msg_free(cs);
        if (!w) {
            fprintf(stderr, "tandemctl: worker '%s' left the cluster while draining\n", id);
            return EXIT_FAILED;
        }
        int done = state == TANDEM__WORKER_STATE__WORKER_DRAINED;
        if (wait && !json && strcmp(now, last))
            printf("%s\n", now);
        snprintf(last, sizeof last, "%s", now);
        if (!wait || done) {
            if (!json)
                return EXIT_OK;
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "worker", id);
            cJSON_AddStringToObject(o, "state", rpc_worker_state_name(state));
            return print_json(o);
        }
        fflush(stdout);
        struct timespec ts = {0, 200 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static int cancel(rpc_channel *ch, const char *addr, const char *id, int json)
{
    Tandem__CancelRequest q = TANDEM__CANCEL_REQUEST__INIT;
    q.request_id = (char *)id;
    Tandem__CancelReply *rep = NULL;
    int rc = admin_call(ch, addr, RPC_ADMIN_CANCEL, &q.base, &tandem__cancel_reply__descriptor, (void **)&rep);
    if (rc)
        return rc;
    if (json)
        printf("{\"found\": %s}\n", rep->found ? "true" : "false");
    else if (rep->found)
        printf("cancelled\n");
    else
        fprintf(stderr, "tandemctl: no such request '%s'\n", id);
    rc = rep->found ? EXIT_OK : EXIT_FAILED;
    rpc_msg_free(rep);
    return rc;
}

/* Options may come before the command (`tandemctl --coordinator X status`): moves
 * the first argument that is neither an option nor an option's value to argv[1]. */
static void command_first(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] != '-' || !argv[i][1]) {
            char *c = argv[i];
            memmove(&argv[2], &argv[1], (size_t)(i - 1) * sizeof *argv);
            argv[1] = c;
            return;
        }
        for (int k = 0; k < CLI_COUNT(OPTS); k++)
            if (!strcmp(argv[i], OPTS[k].name) && OPTS[k].type != CLI_FLAG) {
                i++;
                break;
            }
    }
}

int main(int argc, char **argv)
{
    ctl_args a = {0};
    if (argc > 1 && !strcmp(argv[1], "plan")) /* works offline: its own options (plan_cmd.c) */
        return plan_command(argc - 1, argv + 1);
    command_first(argc, argv);
    int cmd = argc > 1 ? find_command(argv[1]) : -1;
    if (cmd < 0) {
        int rc = cli_parse(&TOP, argc, argv, &a); /* --help, or a bad option */
        if (rc == CLI_RUN && argc > 1)
            rc = cli_usage_error(&TOP, "unknown command '%s' (see --help)", argv[1]);
        else if (rc == CLI_RUN)
            rc = cli_usage_error(&TOP, "needs a command (see --help)");
        return rc ? EXIT_FAILED : EXIT_OK;
    }
    const cli_command *c = &CMDS[cmd];
    int rc = cli_parse(c, argc - 1, argv + 1, &a);
    if (rc != CLI_RUN)
        return rc ? EXIT_FAILED : EXIT_OK;
    const char *arg0 = a.args[0], *arg1 = a.args[1];
    if (cmd == CMD_GET && (!arg0 || strcmp(arg0, "workers")))
        return cli_usage_error(c, "get what? `get workers`"), EXIT_FAILED;
    if (cmd == CMD_DESCRIBE && (!arg0 || strcmp(arg0, "worker") || !arg1))
        return cli_usage_error(c, "describe what? `describe worker ID`"), EXIT_FAILED;
    if ((cmd == CMD_CORDON || cmd == CMD_UNCORDON || cmd == CMD_DRAIN || cmd == CMD_CANCEL) && !arg0)
        return cli_usage_error(c, "needs %s", cmd == CMD_CANCEL ? "a REQUEST_ID" : "a worker ID"), EXIT_FAILED;
    if ((rc = cli_tls_apply(c, &a.tls)) != CLI_RUN)
        return rc ? EXIT_FAILED : EXIT_OK;
    int json = a.json || !strcmp(a.output, "json");
    rpc_channel *ch = NULL;
    rpc_status st;
    if (rpc_channel_create(a.coordinator, &ch, &st) < 0) {
        fprintf(stderr, "tandemctl: %s: %s\n", a.coordinator, st.msg);
        return EXIT_FAILED;
    }
    switch (cmd) {
    case CMD_CORDON:
    case CMD_UNCORDON: rc = cordon(ch, a.coordinator, arg0, cmd == CMD_CORDON, a.migrate, json); break;
    case CMD_DRAIN: rc = drain(ch, a.coordinator, arg0, a.wait, json); break;
    case CMD_CANCEL: rc = cancel(ch, a.coordinator, arg0, json); break;
    default: rc = show(ch, a.coordinator, cmd, arg1, json);
    }
    rpc_channel_destroy(ch);
    return rc;
}
