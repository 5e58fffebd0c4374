/* cmd_worker.c: `tandem worker`, one prefill / decode / both worker process.
 *
 * Parses the options into a wrk_options, starts the worker (worker/worker.h), prints
 * its log lines with a UTC timestamp on stderr, and waits for a signal: SIGTERM drains
 * (cli_drain.h: no new requests, the coordinator told at once, those in flight finish
 * up to --drain-timeout), SIGINT or a second SIGTERM stops at once; then it stops
 * cleanly (what is left fails explicitly, every block is freed) and exits 0.
 * The signals are blocked before any thread starts and taken with sigwait, so no
 * handler ever runs inside library code. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "cli_drain.h"
#include "commands.h"
#include "worker.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tandem worker --role prefill|decode|both --model DIR --coordinator HOST:PORT [options]\n"
            "  --role R              prefill (Prefill.Run), decode (Decode.Generate), or both (also colocated)\n"
            "  --model DIR           Hugging Face checkpoint folder\n"
            "  --coordinator H:P     the coordinator's gRPC address (registration, heartbeats);\n"
            "                        'none' runs without registering\n"
            "  --host H              address to bind and advertise (default 127.0.0.1)\n"
            "  --port N              gRPC port (default 0: any free port)\n"
            "  --metrics-port N      /metrics port (default 0: any; -1: none)\n"
            "  --threads N           compute threads (default: one per CPU)\n"
            "  --kv-blocks N         KV pool size in blocks (default: what fits a tenth of free memory,\n"
            "                        at most --max-running full contexts)\n"
            "  --block-size N        tokens per KV block (default 16)\n"
            "  --max-batch-tokens N  tokens per forward step (default 2048)\n"
            "  --max-running N       sequences decoding at once (default 64)\n"
            "  --kv-transport T      auto, tcp or rdma (default auto)\n"
            "  --id NAME             worker id (default ROLE-HOST:PORT)\n"
            "  --lease-ms N          KV reservation lease (default 30000)\n"
            "  --drain-timeout S     on SIGTERM, seconds to let requests in flight finish (default 30)\n");
}

static void log_line(void *ctx, const char *line)
{
    (void)ctx;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char ts[32];
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(stderr, "%s.%03dZ %s\n", ts, (int)(tv.tv_usec / 1000), line);
    fflush(stderr);
}

static int parse_int(const char *opt, const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "tandem worker: %s wants an integer in [%ld, %ld], got '%s'\n", opt, lo, hi, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static void drain(void *w) { wrk_drain(w); }
static int in_flight(void *w) { return wrk_in_flight(w); }

int cmd_worker(int argc, char **argv)
{
    wrk_options o = {0};
    const char *role = NULL;
    double drain_timeout = 30;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "tandem worker: %s needs a value (see --help)\n", a);
            return 2;
        }
        const char *v = argv[++i];
        int rc = 0;
        if (!strcmp(a, "--role"))
            role = v;
        else if (!strcmp(a, "--model"))
            o.model_dir = v;
        else if (!strcmp(a, "--coordinator"))
            o.coordinator = strcmp(v, "none") ? v : NULL;
        else if (!strcmp(a, "--host"))
            o.host = v;
        else if (!strcmp(a, "--port"))
            rc = parse_int(a, v, 0, 65535, &o.port);
        else if (!strcmp(a, "--metrics-port"))
            rc = parse_int(a, v, -1, 65535, &o.metrics_port);
        else if (!strcmp(a, "--threads"))
            rc = parse_int(a, v, 1, 4096, &o.threads);
        else if (!strcmp(a, "--kv-blocks"))
            rc = parse_int(a, v, 1, 1 << 30, &o.kv_blocks);
        else if (!strcmp(a, "--block-size"))
            rc = parse_int(a, v, 1, 4096, &o.block_size);
        else if (!strcmp(a, "--max-batch-tokens"))
            rc = parse_int(a, v, 1, 1 << 24, &o.max_batch_tokens);
        else if (!strcmp(a, "--max-running"))
            rc = parse_int(a, v, 1, 1 << 20, &o.max_running);
        else if (!strcmp(a, "--kv-transport"))
            o.kv_transport = v;
        else if (!strcmp(a, "--id"))
            o.id = v;
        else if (!strcmp(a, "--lease-ms"))
            rc = parse_int(a, v, 1, 24 * 3600 * 1000, &o.lease_ms);
        else if (!strcmp(a, "--drain-timeout"))
            rc = cli_parse_drain_timeout("tandem worker", v, &drain_timeout);
        else {
            fprintf(stderr, "tandem worker: unknown option '%s' (see --help)\n", a);
            return 2;
        }
        if (rc < 0)
            return 2;
    }
    if (!role || wrk_role_parse(role, &o.role) < 0) {
        fprintf(stderr, "tandem worker: --role must be prefill, decode or both (see --help)\n");
        return 2;
    }
    if (!o.model_dir) {
        fprintf(stderr, "tandem worker: --model DIR is required (see --help)\n");
        return 2;
    }
    int have_coord = 0;
    for (int i = 1; i + 1 < argc; i++)
        have_coord |= !strcmp(argv[i], "--coordinator");
    if (!have_coord) {
        fprintf(stderr, "tandem worker: --coordinator HOST:PORT is required ('none' to run unregistered)\n");
        return 2;
    }
    o.log = log_line;

    /* Blocked here, so every thread the worker starts inherits the mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    wrk_worker *w = NULL;
    eng_error err = {{0}};
    if (wrk_start(&o, &w, &err) < 0) {
        fprintf(stderr, "tandem worker: %s\n", err.msg);
        return 1;
    }
    /* One line on stdout for whoever started us (tests, `tandem serve`). */
    printf("worker %s listening on %s:%d metrics %d\n", wrk_id(w), o.host ? o.host : "127.0.0.1", wrk_rpc_port(w),
           wrk_metrics_port(w));
    fflush(stdout);
    cli_drainable d = {"tandem worker", drain, in_flight, w};
    cli_wait_and_drain(&set, drain_timeout, &d);
    wrk_stop(w);
    return 0;
}
