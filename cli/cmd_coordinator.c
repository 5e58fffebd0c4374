/* cmd_coordinator.c: `tandem coordinator`, the process clients and workers talk to.
 *
 * Parses options into coord_options, starts the coordinator (coordinator/
 * coordinator.h), prints one line on stdout with its URLs (what `tandem serve` and
 * tests read to find the ports), logs on stderr with UTC timestamps, and stops
 * cleanly on a signal: SIGTERM drains first (cli_drain.h: new requests get 503, those
 * in flight finish up to --drain-timeout), SIGINT or a second SIGTERM stops at once.
 * Signals are blocked before any thread starts and
 * taken with sigwait, so no handler ever runs inside library code. */
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
#include "coordinator.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tandem coordinator --model DIR [options]\n"
            "  --model DIR        checkpoint folder: tokenizer, chat template and generation config\n"
            "                     are read here (the weights are not; workers load them)\n"
            "  --host H           address for HTTP and gRPC (default 127.0.0.1)\n"
            "  --port N           HTTP port of the OpenAI API (default 8000; 0: any free port)\n"
            "  --rpc-port N       gRPC port for workers and tandemctl (default 50051; 0: any free port)\n"
            "  --colocated        run every request on one worker with role both\n"
            "  --heartbeat-ms N   heartbeat interval told to workers (default 500); a worker\n"
            "                     silent for 3 intervals leaves rotation until it returns\n"
            "  --drain-timeout S  on SIGTERM, seconds to let requests in flight finish (default 30)\n");
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
        fprintf(stderr, "tandem coordinator: %s wants an integer in [%ld, %ld], got '%s'\n", opt, lo, hi, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static void drain(void *c) { coord_coordinator_drain(c); }
static int in_flight(void *c) { return coord_coordinator_in_flight(c); }

int cmd_coordinator(int argc, char **argv)
{
    coord_options o = {.port = 8000, .rpc_port = 50051};
    double drain_timeout = 30;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--colocated")) {
            o.colocated = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "tandem coordinator: %s needs a value (see --help)\n", a);
            return 2;
        }
        const char *v = argv[++i];
        int rc = 0;
        if (!strcmp(a, "--model"))
            o.model_dir = v;
        else if (!strcmp(a, "--host"))
            o.host = v;
        else if (!strcmp(a, "--port"))
            rc = parse_int(a, v, 0, 65535, &o.port);
        else if (!strcmp(a, "--rpc-port"))
            rc = parse_int(a, v, 0, 65535, &o.rpc_port);
        else if (!strcmp(a, "--heartbeat-ms"))
            rc = parse_int(a, v, 10, 600000, &o.heartbeat_ms);
        else if (!strcmp(a, "--drain-timeout"))
            rc = cli_parse_drain_timeout("tandem coordinator", v, &drain_timeout);
        else {
            fprintf(stderr, "tandem coordinator: unknown option '%s' (see --help)\n", a);
            return 2;
        }
        if (rc < 0)
            return 2;
    }
    if (!o.model_dir) {
        fprintf(stderr, "tandem coordinator: --model DIR is required (see --help)\n");
        return 2;
    }
    o.log = log_line;

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    coord_coordinator *c = NULL;
    eng_error err = {{0}};
    if (coord_coordinator_start(&o, &c, &err) < 0) {
        fprintf(stderr, "tandem coordinator: %s\n", err.msg);
        return 1;
    }
    const char *host = o.host && *o.host ? o.host : "127.0.0.1";
    printf("coordinator http://%s:%d rpc %s:%d model %s\n", host, coord_coordinator_http_port(c), host,
           coord_coordinator_rpc_port(c), coord_coordinator_model(c));
    fflush(stdout);
    cli_drainable d = {"tandem coordinator", drain, in_flight, c};
    cli_wait_and_drain(&set, drain_timeout, &d);
    coord_coordinator_stop(c);
    return 0;
}
