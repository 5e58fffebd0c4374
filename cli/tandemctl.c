/* tandemctl.c: the operator's view of a running cluster, over the coordinator's
 * Admin service (gRPC).
 *
 *   tandemctl status                    workers by state and role, then every worker
 *   tandemctl get workers|requests      every worker / every request in flight
 *   tandemctl describe worker|request ID   everything known about one of them
 *   tandemctl cordon ID | uncordon ID   take a worker out of rotation, put it back
 *   tandemctl drain ID [--deadline D] [--wait]   finish its requests, admit nothing new
 *   tandemctl role ID prefill|decode|both        drain, then switch role in place
 *   tandemctl log-level LEVEL [ID|--all]         log verbosity, at run time
 *   tandemctl config [ID]               a process's effective settings
 *   tandemctl cancel REQUEST_ID         cancel a request in flight
 *
 * Every command takes --coordinator HOST:PORT (default $TANDEM_COORDINATOR, else
 * 127.0.0.1:50051), -o table|json and --timeout (each call's deadline). Exit status:
 * 0 done, 1 the operation failed (an unknown id, a bad argument; one line on
 * stderr), 2 the coordinator could not be reached. A separate binary that loads no
 * model, so that it runs anywhere the cluster is reachable from. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli_args.h"
#include "cli_tls.h"
#include "common/log.h"
#include "kv_layout_msg.h"
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
    int all;
    float timeout;
    const char *deadline;
    cli_tls_opts tls;
    const char *args[2]; /* the command's arguments */
} ctl_args;

#define COMMON_OPTS                                                                                                    \
    CLI_ENV_OPT(ctl_args, coordinator, "--coordinator", "HOST:PORT", "TANDEM_COORDINATOR", "127.0.0.1:50051",          \
                "the coordinator's gRPC address (`tandem serve` and\n`tandem coordinator` print it when they start)"), \
        CLI_CHOICE_OPT(ctl_args, output, "-o", "table|json", "table", "output format", 0),                             \
        CLI_FLAG_OPT(ctl_args, json, "--json", "the same as -o json"),                                                 \
        CLI_FLOAT_OPT(ctl_args, timeout, "--timeout", "S", 0.1, 3600, "30",                                            \
                      "seconds each call to the coordinator may take (a loaded\nmachine may need more than a few)"),   \
        CLI_TLS_OPTS(ctl_args, tls)
#define DEADLINE_OPT                                                                                   \
    CLI_STR_OPT(ctl_args, deadline, "--deadline", "DURATION", NULL,                                    \
                "streams still running this long after the drain began\n(90s, 10m, 1h) move to other " \
                "workers and go on there;\ndefault: the worker's --drain-timeout (30 s)",              \
                0)

static const cli_opt OPTS[] = {COMMON_OPTS};
static const cli_opt DRAIN_OPTS[] = {
    COMMON_OPTS,
    DEADLINE_OPT,
    CLI_FLAG_OPT(ctl_args, wait, "--wait", "print the worker's progress until it is drained"),
};
static const cli_opt ROLE_OPTS[] = {COMMON_OPTS, DEADLINE_OPT};
static const cli_opt LOG_OPTS[] = {
    COMMON_OPTS,
    CLI_FLAG_OPT(ctl_args, all, "--all", "the coordinator and every worker"),
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

enum {
    CMD_STATUS,
    CMD_GET,
    CMD_DESCRIBE,
    CMD_CORDON,
    CMD_UNCORDON,
    CMD_DRAIN,
    CMD_ROLE,
    CMD_LOG_LEVEL,
    CMD_CONFIG,
    CMD_CANCEL,
    N_CMDS
};

/* One row per command: its --help comes from here and the shared option table. */
static const cli_command CMDS[N_CMDS] = {
    [CMD_STATUS] = CTL_COMMAND("status", "[options]",
                               "  The cluster: workers counted by role and state, then every worker\n"
                               "  (as `get workers`; EP groups when there are any).",
                               0),
    [CMD_GET] = CTL_COMMAND("get", "workers|requests [options]",
                            "  workers: every worker: id, role, address, state, running and queued\n"
                            "  requests, KV blocks used/total, seconds since its last heartbeat.\n"
                            "  requests: every request in flight: id, state (waiting, prefill, decode),\n"
                            "  prompt tokens, tokens generated/max, its worker pair, age.",
                            1),
    [CMD_DESCRIBE] = CTL_COMMAND("describe", "worker ID | request ID [options]",
                                 "  Everything the coordinator knows about one worker or one request in\n"
                                 "  flight (for a request also failovers, migrations and timings).",
                                 2),
    [CMD_CORDON] = CTL_COMMAND_WITH("cordon", "ID [--migrate] [options]",
                                    "  Takes a worker out of rotation: the coordinator sends it no new request\n"
                                    "  from now on; the requests it has finish (or, with --migrate, move).",
                                    1, CORDON_OPTS),
    [CMD_UNCORDON] = CTL_COMMAND("uncordon", "ID [options]", "  Puts a cordoned worker back into rotation.", 1),
    [CMD_DRAIN] = CTL_COMMAND_WITH("drain", "ID [options]",
                                   "  Drains a worker as SIGTERM does, but it stays up: cordoned here at once,\n"
                                   "  it admits nothing new and finishes its requests (up to --deadline, else its\n"
                                   "  --drain-timeout; the streams left then migrate to other decode workers).",
                                   1, DRAIN_OPTS),
    [CMD_ROLE] = CTL_COMMAND_WITH("role", "ID prefill|decode|both [options]",
                                  "  Changes a worker's role in place: it drains (as `drain`), then registers\n"
                                  "  again in its new role and the coordinator routes to it accordingly.\n"
                                  "  Prints its progress until it is back, ready, in the new role.",
                                  2, ROLE_OPTS),
    [CMD_LOG_LEVEL] = CTL_COMMAND_WITH("log-level", "error|warn|info|debug [ID | --all] [options]",
                                       "  Sets the log level of the coordinator (no ID, or ID coordinator), of one\n"
                                       "  worker, or of every process (--all), from now on.",
                                       2, LOG_OPTS),
    [CMD_CONFIG] = CTL_COMMAND("config", "[ID] [options]",
                               "  The effective settings of the coordinator (no ID, or ID coordinator) or of\n"
                               "  a worker: options after their defaults, model, KV layout, transport; for a\n"
                               "  worker also a warning per setting the workers of its pool disagree on.",
                               1),
    [CMD_CANCEL] = CTL_COMMAND("cancel", "REQUEST_ID [options]", "  Cancels a request in flight.", 1),
};

/* The command line without a command: the list of commands. */
static const cli_command TOP = {
    .name = "tandemctl",
    .usage = "COMMAND [ARGS] [options]   (tandemctl COMMAND --help for each)",
    .about = "  status                     workers by role and state, then every worker\n"
             "  get workers|requests       every worker / every request in flight\n"
             "  describe worker|request ID everything known about one of them\n"
             "  cordon ID [--migrate]      no new requests to this worker (--migrate: its\n"
             "                             streams move to other decode workers now)\n"
             "  uncordon ID                the worker is back in rotation\n"
             "  drain ID [--deadline D] [--wait]\n"
             "                             the worker finishes its requests, admits nothing new\n"
             "  role ID prefill|decode     drain, then switch the worker's role in place\n"
             "  log-level LEVEL [ID|--all] log verbosity of a process, at run time\n"
             "  config [ID]                a process's effective settings\n"
             "  cancel REQUEST_ID          cancel a request in flight\n"
             "  plan --profile ...         capacity planning: which prefill:decode split (no cluster)\n"
             "  plan-check --profile P --log F\n"
             "                             a cluster's logged steps against the profile's cost\n"
             "Exit status: 0 done, 1 the operation failed, 2 the coordinator is unreachable.",
    .opts = OPTS,
    .n_opts = CLI_COUNT(OPTS),
};

/* Each call's deadline (--timeout). */
static int call_ms = 30000;

/* One Admin call within --timeout. gRPC fails a call at once while its channel cannot
 * connect, and on a busy machine a fresh channel's first connection attempts may fail
 * ("tcp handshaker shutdown"): UNAVAILABLE is retried until the --timeout is spent, so
 * an unreachable coordinator is reported after --timeout. Failures are reported here,
 * as one line; the return value is the exit status. */
static int admin_call(rpc_channel *ch, const char *addr, const char *method, const ProtobufCMessage *q,
                      const ProtobufCMessageDescriptor *d, void **out)
{
    rpc_status st;
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        long left = call_ms - ((now.tv_sec - t0.tv_sec) * 1000L + (now.tv_nsec - t0.tv_nsec) / 1000000L);
        if (rpc_unary_msg(ch, method, q, d, left > 1 ? (int)left : 1, out, &st) == 0)
            return EXIT_OK;
        if (st.code != RPC_UNAVAILABLE || left <= 100)
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

/* prefill, decode, both: the Tandem__Role; 0 for another name. */
static int role_parse(const char *s)
{
    for (int r = TANDEM__ROLE__ROLE_PREFILL; r <= TANDEM__ROLE__ROLE_BOTH; r++)
        if (!strcmp(s, role_name(r)))
            return r;
    return 0;
}

/* The engine's own description of a layout ("f32 bs16 L28 kv8 d128"), "-" for none. */
static void layout_str(const Tandem__KvLayout *l, char *buf, size_t cap)
{
    if (!l) {
        snprintf(buf, cap, "-");
        return;
    }
    eng_kv_layout lay = kv_layout_from_msg(l);
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

/* "key value" lines of a JSON object: numbers as given, null as "-". */
static void print_fields(const cJSON *o)
{
    for (const cJSON *f = o->child; f; f = f->next) {
        if (cJSON_IsString(f))
            printf("%-22s %s\n", f->string, *f->valuestring ? f->valuestring : "-");
        else if (cJSON_IsBool(f))
            printf("%-22s %s\n", f->string, cJSON_IsTrue(f) ? "yes" : "no");
        else if (cJSON_IsNull(f))
            printf("%-22s -\n", f->string);
        else if (f->valuedouble == floor(f->valuedouble))
            printf("%-22s %.0f\n", f->string, f->valuedouble);
        else
            printf("%-22s %.3f\n", f->string, f->valuedouble);
    }
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
            cJSON *o = worker_json(w);
            print_fields(o);
            cJSON_Delete(o);
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

/* Polls Admin.Status until the worker is drained (role 0) or back, ready, in `role`,
 * printing (when print) one line per change of its state and load. */
static int watch(rpc_channel *ch, const char *addr, const char *id, int role, int print)
{
    char last[200] = "";
    for (;;) {
        Tandem__StatusRequest sq = TANDEM__STATUS_REQUEST__INIT;
        Tandem__ClusterStatus *cs = NULL;
        int rc = admin_call(ch, addr, RPC_ADMIN_STATUS, &sq.base, &tandem__cluster_status__descriptor, (void **)&cs);
        if (rc)
            return rc;
        const Tandem__WorkerStatus *w = NULL;
        for (size_t i = 0; i < cs->n_workers && !w; i++)
            if (!strcmp(id_of(cs->workers[i]), id))
                w = cs->workers[i];
        int state = w ? w->state : 0, now_role = w && w->info ? w->info->role : 0;
        const Tandem__WorkerLoad *ld = w ? w->load : NULL;
        char now[200], as[32] = "";
        if (role)
            snprintf(as, sizeof as, " (%s)", role_name(now_role));
        snprintf(now, sizeof now, "worker %s%s %s: %u running, %u queued, KV %u/%u", id, as,
                 rpc_worker_state_name(state), ld ? ld->running : 0, ld ? ld->queued : 0, ld ? ld->kv_blocks_used : 0,
                 ld ? ld->kv_blocks_total : 0);
        rpc_msg_free(cs);
        if (!w) {
            fprintf(stderr, "tandemctl: worker '%s' left the cluster\n", id);
            return EXIT_FAILED;
        }
        if (state == TANDEM__WORKER_STATE__WORKER_FAILED && role) {
            fprintf(stderr, "tandemctl: worker '%s' failed while changing its role\n", id);
            return EXIT_FAILED;
        }
        if (print && strcmp(now, last))
            printf("%s\n", now);
        snprintf(last, sizeof last, "%s", now);
        if (role ? now_role == role && state == TANDEM__WORKER_STATE__WORKER_READY
                 : state == TANDEM__WORKER_STATE__WORKER_DRAINED)
            return EXIT_OK;
        fflush(stdout);
        struct timespec ts = {0, 200 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* "90s", "10m", "1h", "500ms", or seconds: milliseconds, 1 ms to 7 days; -1 otherwise. */
static long parse_duration(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    double unit = !*end || !strcmp(end, "s") ? 1000
                  : !strcmp(end, "ms")       ? 1
                  : !strcmp(end, "m")        ? 60000
                  : !strcmp(end, "h")        ? 3600000
                                             : -1;
    if (end == s || unit < 0 || !isfinite(v) || v * unit < 1 || v * unit > 7 * 24 * 3600e3)
        return -1;
    return (long)(v * unit);
}

/* drain ID and role ID ROLE: Admin.Drain / Admin.SetRole, then (drain --wait, role)
 * the worker's progress until it is drained / back in its new role. */
static int drain(rpc_channel *ch, const char *addr, const char *id, int role, long deadline_ms, int wait, int json)
{
    Tandem__WorkerRequest q = TANDEM__WORKER_REQUEST__INIT;
    q.worker_id = (char *)id;
    q.deadline_ms = (uint32_t)deadline_ms;
    q.role = (Tandem__Role)role;
    Tandem__WorkerReply *rep = NULL;
    int rc = admin_call(ch, addr, role ? RPC_ADMIN_SET_ROLE : RPC_ADMIN_DRAIN, &q.base,
                        &tandem__worker_reply__descriptor, (void **)&rep);
    if (rc)
        return rc;
    rpc_msg_free(rep);
    if (!json && role)
        printf("worker %s draining, then becoming %s\n", id, role_name(role));
    else if (!json)
        printf("worker %s draining\n", id);
    if ((wait || role) && (rc = watch(ch, addr, id, role, !json)))
        return rc;
    if (!json)
        return EXIT_OK;
    Tandem__StatusRequest sq = TANDEM__STATUS_REQUEST__INIT;
    Tandem__ClusterStatus *cs = NULL;
    if ((rc = admin_call(ch, addr, RPC_ADMIN_STATUS, &sq.base, &tandem__cluster_status__descriptor, (void **)&cs)))
        return rc;
    for (size_t i = 0; i < cs->n_workers; i++)
        if (!strcmp(id_of(cs->workers[i]), id))
            rc = print_json(worker_json(cs->workers[i]));
    rpc_msg_free(cs);
    return rc;
}

static cJSON *request_json(const Tandem__RequestStatus *r)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", r->request_id ? r->request_id : "");
    cJSON_AddStringToObject(o, "state", r->state ? r->state : "");
    cJSON_AddNumberToObject(o, "prompt_tokens", r->prompt_tokens);
    cJSON_AddNumberToObject(o, "tokens", r->tokens);
    cJSON_AddNumberToObject(o, "max_tokens", r->max_tokens);
    cJSON_AddStringToObject(o, "decode_worker", r->decode_worker ? r->decode_worker : "");
    cJSON_AddStringToObject(o, "prefill_worker", r->prefill_worker ? r->prefill_worker : "");
    cJSON_AddNumberToObject(o, "failovers", r->failovers);
    cJSON_AddNumberToObject(o, "migrations", r->migrations);
    cJSON_AddNumberToObject(o, "age_s", r->age_s);
    if (r->ttft_s >= 0)
        cJSON_AddNumberToObject(o, "ttft_s", r->ttft_s);
    else
        cJSON_AddNullToObject(o, "ttft_s");
    if (r->since_token_s >= 0)
        cJSON_AddNumberToObject(o, "since_token_s", r->since_token_s);
    else
        cJSON_AddNullToObject(o, "since_token_s");
    return o;
}

/* get requests, describe request ID: one Admin.Requests call. */
static int show_requests(rpc_channel *ch, const char *addr, const char *id, int json)
{
    Tandem__StatusRequest q = TANDEM__STATUS_REQUEST__INIT;
    Tandem__RequestList *l = NULL;
    int rc = admin_call(ch, addr, RPC_ADMIN_REQUESTS, &q.base, &tandem__request_list__descriptor, (void **)&l);
    if (rc)
        return rc;
    if (id) {
        const Tandem__RequestStatus *r = NULL;
        for (size_t i = 0; i < l->n_requests && !r; i++)
            if (l->requests[i]->request_id && !strcmp(l->requests[i]->request_id, id))
                r = l->requests[i];
        if (!r) {
            fprintf(stderr, "tandemctl: no request '%s' in flight\n", id);
            rc = EXIT_FAILED;
        } else if (json) {
            rc = print_json(request_json(r));
        } else {
            cJSON *o = request_json(r);
            print_fields(o);
            cJSON_Delete(o);
        }
    } else if (json) {
        cJSON *arr = cJSON_CreateArray();
        for (size_t i = 0; i < l->n_requests; i++)
            cJSON_AddItemToArray(arr, request_json(l->requests[i]));
        rc = print_json(arr);
    } else {
        /* 96 columns with ids up to 33 characters (chatcmpl- and 24 hex digits) */
        printf("%-33s %-7s %6s %9s %-14s %-14s %7s\n", "REQUEST", "STATE", "PROMPT", "TOKENS", "DECODE", "PREFILL",
               "AGE");
        for (size_t i = 0; i < l->n_requests; i++) {
            const Tandem__RequestStatus *r = l->requests[i];
            char tok[32], age[24];
            snprintf(tok, sizeof tok, "%u/%u", r->tokens, r->max_tokens);
            snprintf(age, sizeof age, "%.1fs", r->age_s);
            printf("%-33s %-7s %6u %9s %-14s %-14s %7s\n", r->request_id, r->state, r->prompt_tokens, tok,
                   *r->decode_worker ? r->decode_worker : "-", *r->prefill_worker ? r->prefill_worker : "-", age);
        }
    }
    rpc_msg_free(l);
    return rc;
}

/* log-level LEVEL [ID|--all]: each process changed on a line; any that failed
 * make it exit 1. */
static int log_level(rpc_channel *ch, const char *addr, const char *level, const char *id, int all, int json)
{
    Tandem__WorkerRequest q = TANDEM__WORKER_REQUEST__INIT;
    q.worker_id = (char *)(id ? id : "");
    q.log_level = (char *)level;
    q.all = all;
    Tandem__LogLevelReply *rep = NULL;
    int rc = admin_call(ch, addr, RPC_ADMIN_SET_LOG_LEVEL, &q.base, &tandem__log_level_reply__descriptor,
                        (void **)&rep);
    if (rc)
        return rc;
    if (json) {
        cJSON *o = cJSON_CreateObject(), *ch_ = cJSON_AddArrayToObject(o, "changed"),
              *f = cJSON_AddArrayToObject(o, "failed");
        cJSON_AddStringToObject(o, "log_level", level);
        for (size_t i = 0; i < rep->n_changed; i++)
            cJSON_AddItemToArray(ch_, cJSON_CreateString(rep->changed[i]));
        for (size_t i = 0; i < rep->n_failed; i++)
            cJSON_AddItemToArray(f, cJSON_CreateString(rep->failed[i]));
        print_json(o);
    } else {
        for (size_t i = 0; i < rep->n_changed; i++)
            printf("%s: log level %s\n", rep->changed[i], level);
    }
    for (size_t i = 0; i < rep->n_failed; i++)
        fprintf(stderr, "tandemctl: %s\n", rep->failed[i]);
    rc = rep->n_failed ? EXIT_FAILED : EXIT_OK;
    rpc_msg_free(rep);
    return rc;
}

/* config [ID]: "key value" lines, then a warning line per setting the pool disagrees on. */
static int config(rpc_channel *ch, const char *addr, const char *id, int json)
{
    Tandem__WorkerRequest q = TANDEM__WORKER_REQUEST__INIT;
    q.worker_id = (char *)(id ? id : "");
    Tandem__ConfigReply *rep = NULL;
    int rc = admin_call(ch, addr, RPC_ADMIN_CONFIG, &q.base, &tandem__config_reply__descriptor, (void **)&rep);
    if (rc)
        return rc;
    if (json) {
        cJSON *o = cJSON_CreateObject(), *set = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "id", rep->id ? rep->id : "");
        for (size_t i = 0; i < rep->n_settings; i++)
            cJSON_AddStringToObject(set, rep->settings[i]->key, rep->settings[i]->value);
        cJSON_AddItemToObject(o, "settings", set);
        cJSON *w = cJSON_AddArrayToObject(o, "warnings");
        for (size_t i = 0; i < rep->n_warnings; i++)
            cJSON_AddItemToArray(w, cJSON_CreateString(rep->warnings[i]));
        rc = print_json(o);
    } else {
        printf("%-18s %s\n", "id", rep->id);
        for (size_t i = 0; i < rep->n_settings; i++)
            if (strcmp(rep->settings[i]->key, "id"))
                printf("%-18s %s\n", rep->settings[i]->key, rep->settings[i]->value);
        for (size_t i = 0; i < rep->n_warnings; i++)
            printf("%swarning: the pool disagrees on %s\n", i ? "" : "\n", rep->warnings[i]);
    }
    rpc_msg_free(rep);
    return rc;
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
    if (argc > 1 && !strcmp(argv[1], "plan-check")) /* offline too (plan_check_cmd.c) */
        return plan_check_command(argc - 1, argv + 1);
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
    const char *bad = NULL;
    int role = 0;
    long deadline_ms = 0;
    eng_log_level level;
    if (cmd == CMD_GET && (!arg0 || (strcmp(arg0, "workers") && strcmp(arg0, "requests"))))
        bad = "get what? `get workers` or `get requests`";
    else if (cmd == CMD_DESCRIBE && (!arg0 || (strcmp(arg0, "worker") && strcmp(arg0, "request")) || !arg1))
        bad = "describe what? `describe worker ID` or `describe request ID`";
    else if ((cmd == CMD_CORDON || cmd == CMD_UNCORDON || cmd == CMD_DRAIN || cmd == CMD_ROLE) && !arg0)
        bad = "needs a worker ID";
    else if (cmd == CMD_CANCEL && !arg0)
        bad = "needs a REQUEST_ID";
    else if (cmd == CMD_ROLE && (!arg1 || (role = role_parse(arg1)) == 0))
        bad = "the new role must be prefill, decode or both";
    else if (a.deadline && (deadline_ms = parse_duration(a.deadline)) < 0)
        bad = "--deadline must be a duration from 1ms to 7 days: 90s, 10m, 1h, 500ms";
    else if (cmd == CMD_LOG_LEVEL && (!arg0 || eng_log_level_parse(arg0, &level) < 0))
        bad = "the level must be error, warn, info or debug";
    else if (cmd == CMD_LOG_LEVEL && a.all && arg1)
        bad = "an ID or --all, not both";
    if (bad)
        return cli_usage_error(c, "%s", bad), EXIT_FAILED;
    if ((rc = cli_tls_apply(c, &a.tls)) != CLI_RUN)
        return rc ? EXIT_FAILED : EXIT_OK;
    call_ms = (int)(a.timeout * 1000);
    int json = a.json || !strcmp(a.output, "json");
    rpc_channel *ch = NULL;
    rpc_status st;
    if (rpc_channel_create(a.coordinator, &ch, &st) < 0) {
        fprintf(stderr, "tandemctl: %s: %s\n", a.coordinator, st.msg);
        return EXIT_FAILED;
    }
    int requests = (cmd == CMD_GET && !strcmp(arg0, "requests")) || (cmd == CMD_DESCRIBE && !strcmp(arg0, "request"));
    switch (cmd) {
    case CMD_CORDON:
    case CMD_UNCORDON: rc = cordon(ch, a.coordinator, arg0, cmd == CMD_CORDON, a.migrate, json); break;
    case CMD_DRAIN:
    case CMD_ROLE: rc = drain(ch, a.coordinator, arg0, role, deadline_ms, a.wait, json); break;
    case CMD_LOG_LEVEL: rc = log_level(ch, a.coordinator, arg0, arg1, a.all, json); break;
    case CMD_CONFIG: rc = config(ch, a.coordinator, arg0, json); break;
    case CMD_CANCEL: rc = cancel(ch, a.coordinator, arg0, json); break;
    default: rc = requests ? show_requests(ch, a.coordinator, arg1, json) : show(ch, a.coordinator, cmd, arg1, json);
    }
    rpc_channel_destroy(ch);
    return rc;
}
