/* cmd_coordinator.c: `tandem coordinator`, the process clients and workers talk to.
 *
 * Parses options into coord_options, starts the coordinator (coordinator/
 * coordinator.h), prints one line on stdout with its URLs (what `tandem serve` and
 * tests read to find the ports), logs on stderr (common/log.h, --log-level), and stops
 * cleanly on a signal: SIGTERM drains first (cli_drain.h: new requests get 503, those
 * in flight finish up to --drain-timeout), SIGINT or a second SIGTERM stops at once.
 * Signals are blocked before any thread starts and
 * taken with sigwait, so no handler ever runs inside library code. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli_args.h"
#include "cli_drain.h"
#include "cli_log.h"
#include "cli_tls.h"
#include "commands.h"
#include "common/addr.h"
#include "common/log.h"
#include "coordinator.h"

typedef struct coordinator_args {
    coord_options o;
    float drain_timeout;
    cli_log_opts log;
    cli_tls_opts tls;
} coordinator_args;

#define C coordinator_args
static const cli_opt OPTS[] = {
    CLI_STR_OPT(C, o.model_dir, "--model", "DIR", NULL,
                "checkpoint folder: tokenizer, chat template and generation config\n"
                "are read here (the weights are not; workers load them)",
                CLI_REQUIRED),
    CLI_STR_OPT(C, o.host, "--host", "H", "127.0.0.1", "address for HTTP and gRPC", 0),
    CLI_INT_OPT(C, o.port, "--port", "N", 0, 65535, "8000", "HTTP port of the OpenAI API; 0: any free port"),
    CLI_INT_OPT(C, o.rpc_port, "--rpc-port", "N", 0, 65535, "50051",
                "gRPC port for workers and tandemctl; 0: any free port"),
    CLI_FLAG_OPT(C, o.colocated, "--colocated", "run every request on one worker with role both"),
    CLI_INT_OPT(C, o.heartbeat_ms, "--heartbeat-ms", "N", 10, 600000, "500",
                "heartbeat interval told to workers; a worker silent for\n"
                "3 intervals leaves rotation until it returns"),
    CLI_FLOAT_OPT(C, o.router_overlap_weight, "--router-overlap-weight", "W", 0, 1000, "1",
                  "KV-aware routing: a prompt token a prefill worker holds in\n"
                  "its prefix cache counts as W queued tokens less there;\n"
                  "0: pick the prefill worker by load only"),
    CLI_INT_OPT(C, o.ttft_slo_ms, "--ttft-slo-ms", "N", 0, 3600 * 1000, "0",
                "admission control: a request whose predicted time to first\n"
                "token exceeds N ms gets 503 and Retry-After at once; 0: off"),
    CLI_FLOAT_OPT(C, drain_timeout, "--drain-timeout", "S", 0, 86400, "30",
                  "on SIGTERM, seconds to let requests in flight finish"),
    CLI_LOG_OPTS(C, log),
    CLI_TLS_OPTS(C, tls),
    CLI_STR_OPT(C, o.api_key_file, "--api-key-file", "F", NULL,
                "HTTP API keys, one per line: every request then needs\n"
                "'Authorization: Bearer KEY' (401 otherwise); SIGHUP reloads the file",
                0),
    CLI_FLAG_OPT(C, o.auth_probes, "--auth-probes",
                 "with --api-key-file, /health, /livez, /readyz, /startupz and\n"
                 "/metrics need a key too (by default they are open)"),
    CLI_STR_OPT(C, o.tls_cert, "--tls-cert", "F", NULL,
                "PEM certificate (chain) for HTTPS; with --tls-key the API\n"
                "speaks HTTPS only",
                0),
    CLI_STR_OPT(C, o.tls_key, "--tls-key", "F", NULL, "PEM private key of --tls-cert", 0),
    /* limits (docs/security.md); the defaults are the libraries' own */
    CLI_INT_OPT(C, o.limits.max_body_bytes, "--max-body-bytes", "N", 1024, 1 << 30, "16777216",
                "largest HTTP request body; beyond: 413"),
    CLI_INT_OPT(C, o.limits.max_connections, "--max-connections", "N", 1, 1 << 20, "1024",
                "open HTTP connections; a new one beyond is closed at once"),
    CLI_INT_OPT(C, o.limits.per_ip_connections, "--max-connections-per-ip", "N", 0, 1 << 20, "0",
                "open HTTP connections from one address; 0: only --max-connections"),
    CLI_INT_OPT(C, o.limits.idle_timeout_s, "--idle-timeout", "S", 1, 86400, "30",
                "seconds an HTTP client may stall while sending its request\n"
                "or not read its answer before the connection is closed"),
    CLI_INT_OPT(C, o.limits.sse_buffer_bytes, "--sse-buffer-bytes", "N", 4096, 1 << 30, "1048576",
                "stream bytes held for a client that does not read; beyond:\n"
                "the connection is closed and the request cancelled"),
    CLI_INT_OPT(C, o.limits.max_requests, "--max-requests", "N", 1, 1 << 20, "1024",
                "generation requests in flight, waiting ones included; beyond: 429"),
    CLI_INT_OPT(C, o.limits.max_waiting, "--max-waiting", "N", 1, 1 << 20, "512",
                "requests waiting for a worker with room; beyond: 429"),
    CLI_INT_OPT(C, o.limits.max_stop_bytes, "--max-stop-bytes", "N", 1, 65536, "256",
                "longest stop string in a request; beyond: 400"),
    CLI_INT_OPT(C, o.limits.max_messages, "--max-messages", "N", 1, 1 << 20, "4096",
                "messages in one chat request; beyond: 400"),
    CLI_INT_OPT(C, o.limits.max_tools, "--max-tools", "N", 1, 1 << 20, "128", "tools in one chat request; beyond: 400"),
    CLI_INT_OPT(C, o.limits.max_workers, "--max-workers", "N", 1, 1 << 20, "1024",
                "workers known at once; registering beyond is refused"),
    CLI_INT_OPT(C, o.limits.rpc_handlers, "--rpc-handlers", "N", 1, 65536, "512",
                "gRPC handler threads; calls beyond wait and expire at their deadline"),
    CLI_INT_OPT(C, o.limits.migration_limit, "--migration-limit", "N", 1, 1000, "3",
                "times one stream may move to another decode worker (its\n"
                "worker died or drained); beyond: the request fails"),
    CLI_INT_OPT(C, o.limits.migration_max_tokens, "--migration-max-tokens", "N", 1, 1 << 24, "32768",
                "prompt + generated tokens a moving stream may prefill;\n"
                "a longer one fails instead of migrating"),
};
#undef C

static const cli_command CMD = {
    .name = "tandem coordinator",
    .usage = "--model DIR [options]",
    .opts = OPTS,
    .n_opts = CLI_COUNT(OPTS),
};

/* SIGHUP (blocked in every thread, taken here): the API key file is read again. */
static void *reload_on_sighup(void *c)
{
    sigset_t hup;
    sigemptyset(&hup);
    sigaddset(&hup, SIGHUP);
    for (;;) {
        int sig;
        if (sigwait(&hup, &sig))
            continue;
        eng_error err = {{0}};
        int n = coord_coordinator_reload_keys(c, &err);
        if (n < 0)
            eng_log(ENG_LOG_WARN, "tandem coordinator", NULL, "SIGHUP: keys not reloaded, the old ones stay: %s",
                    err.msg);
        else
            eng_log(ENG_LOG_INFO, "tandem coordinator", NULL, "SIGHUP: %d API keys loaded", n);
    }
    return NULL;
}

static void drain(void *c)
{
    coord_coordinator_drain(c);
}
static int in_flight(void *c)
{
    return coord_coordinator_in_flight(c);
}

int cmd_coordinator(int argc, char **argv)
{
    coordinator_args a = {0};
    int exit_status = cli_parse(&CMD, argc, argv, &a);
    if (exit_status != CLI_RUN)
        return exit_status;
    coord_options o = a.o;
    cli_log_apply(&a.log);
    if ((exit_status = cli_tls_apply(&CMD, &a.tls)) != CLI_RUN)
        return exit_status;

    sigset_t set;
    cli_block_signals(&set, o.api_key_file ? SIGHUP : 0);

    coord_coordinator *c = NULL;
    eng_error err = {{0}};
    if (coord_coordinator_start(&o, &c, &err) < 0) {
        fprintf(stderr, "tandem coordinator: %s\n", err.msg);
        return 1;
    }
    char http[300], rpc[300];
    eng_addr_join(o.host, coord_coordinator_http_port(c), http, sizeof http, NULL);
    eng_addr_join(o.host, coord_coordinator_rpc_port(c), rpc, sizeof rpc, NULL);
    printf("coordinator %s://%s rpc %s model %s\n", o.tls_cert ? "https" : "http", http, rpc,
           coord_coordinator_model(c));
    fflush(stdout);
    pthread_t hup;
    if (o.api_key_file && pthread_create(&hup, NULL, reload_on_sighup, c) == 0)
        pthread_detach(hup);
    cli_drainable d = {"tandem coordinator", drain, in_flight, c, 0};
    cli_wait_and_drain(&set, a.drain_timeout, &d);
    coord_coordinator_stop(c);
    return 0;
}
