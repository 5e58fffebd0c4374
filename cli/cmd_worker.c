/* cmd_worker.c: `tandem worker`, one prefill / decode / both worker process.
 *
 * Parses the options into a wrk_options, starts the worker (worker/include/worker.h), prints
 * its log lines on stderr (common/log.h, --log-level), and waits for a signal: SIGTERM drains
 * (cli_drain.h: no new requests, the coordinator told at once, those in flight finish
 * up to --drain-timeout, then the streams left migrate to other workers), SIGINT or a second SIGTERM stops at once;
 * then it stops cleanly (what is left fails explicitly, every block is freed) and exits 0. The signals are blocked
 * before any thread starts and taken with sigwait, so no handler ever runs inside library code. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli_args.h"
#include "cli_drain.h"
#include "cli_model.h"
#include "cli_log.h"
#include "cli_tls.h"
#include "commands.h"
#include "common/addr.h"
#include "worker.h"

typedef struct worker_args {
    wrk_options o;
    const char *role;
    float drain_timeout;
    cli_log_opts log;
    cli_tls_opts tls;
} worker_args;

#define W worker_args
static const cli_opt OPTS[] = {
    CLI_CHOICE_OPT(W, role, "--role", "prefill|decode|both", NULL,
                   "prefill (Prefill.Run), decode (Decode.Generate), or both (also colocated)", CLI_REQUIRED),
    CLI_STR_OPT(W, o.model_dir, "--model", "DIR", NULL, "Hugging Face checkpoint folder", CLI_REQUIRED),
    CLI_STR_OPT(W, o.coordinator, "--coordinator", "HOST:PORT", NULL,
                "the coordinator's gRPC address (registration, heartbeats);\n'none' runs without registering",
                CLI_REQUIRED),
    CLI_STR_OPT(W, o.host, "--host", "H", "127.0.0.1", "address to bind and advertise", 0),
    CLI_INT_OPT(W, o.port, "--port", "N", 0, 65535, "0", "gRPC port; 0: any free port"),
    CLI_INT_OPT(W, o.metrics_port, "--metrics-port", "N", -1, 65535, "0", "/metrics port; 0: any, -1: none"),
    CLI_INT_OPT(W, o.threads, "--threads", "N", 1, 4096, NULL, "compute threads; default: one per CPU"),
    CLI_INT_OPT(W, o.kv_blocks, "--kv-blocks", "N", 1, 1 << 30, NULL,
                "KV pool size in blocks; default: what fits a tenth of free\n"
                "memory, at most --max-running full contexts"),
    CLI_INT_OPT(W, o.block_size, "--block-size", "N", 1, 4096, "16", "tokens per KV block"),
    CLI_KV_DTYPE_OPT(W, o.kv_dtype),
    CLI_MATMUL_DTYPE_OPT(W, o.matmul_dtype),
    CLI_MMAP_OPT(W, o.mmap_weights),
    CLI_INT_OPT(W, o.max_batch_tokens, "--max-batch-tokens", "N", 1, 1 << 24, "2048", "tokens per forward step"),
    CLI_INT_OPT(W, o.max_running, "--max-running", "N", 1, 1 << 20, "64", "sequences decoding at once"),
    CLI_CHOICE_OPT(W, o.kv_transport, "--kv-transport", "auto|tcp|rdma", "auto", "how KV blocks travel", 0),
    CLI_STR_OPT(W, o.rdma_device, "--rdma-device", "NAME", NULL,
                "verbs device for rdma; default: the first with an active port", 0),
    CLI_STR_OPT(W, o.id, "--id", "NAME", NULL, "worker id; default: ROLE-HOST:PORT", 0),
    CLI_INT_OPT(W, o.lease_ms, "--lease-ms", "N", 1, 24 * 3600 * 1000, "30000",
                "KV reservation lease: freed after N ms without\na renewal from its prefill worker"),
    CLI_INT_OPT(W, o.kv_max_conns, "--kv-max-conns", "N", 1, 65536, "256",
                "incoming TCP KV connections at once (a thread each);\nbeyond, a new one is closed at once"),
    CLI_INT_OPT(W, o.kv_io_timeout_ms, "--kv-io-timeout-ms", "N", 1, 3600 * 1000, "10000",
                "TCP KV: a peer silent this long before its hello or\nmid-transfer is cut off (its transfer "
                "fails); also connect\nand a send that makes no progress"),
    CLI_FLAG_OPT(W, o.no_prefix_cache, "--no-prefix-cache",
                 "prefill: keep no KV blocks after a request (prefix caching\nis on by default)"),
    CLI_FLOAT_OPT(W, drain_timeout, "--drain-timeout", "S", 0, 86400, "30",
                  "on SIGTERM or tandemctl drain, seconds to let requests in\n"
                  "flight finish; the streams left then migrate to other workers"),
    CLI_INT_OPT(
        W, o.ep_size, "--ep-size", "N", 1, 64, "1",
        "expert parallelism (MoE models): this worker is one of N\nranks of an EP group, holding 1/N of the experts"),
    CLI_INT_OPT(W, o.ep_rank, "--ep-rank", "R", 0, 63, "0", "this worker's rank in its EP group, 0..N-1"),
    CLI_STR_OPT(W, o.group, "--group", "NAME", NULL, "the EP group's name, the same on every rank", 0),
    CLI_STR_OPT(W, o.ep_peers, "--ep-peers", "LIST", NULL,
                "every rank's exchange address, HOST:PORT,... in rank order\n(this rank listens on its own)", 0),
    CLI_INT_OPT(W, o.ep_deadline_ms, "--ep-deadline-ms", "N", 1, 3600 * 1000, "10000",
                "how long an exchange waits for another rank before the\ngroup is broken"),
    CLI_INT_OPT(W, o.ep_listen_fd, "--ep-listen-fd", "FD", -1, 1 << 20, "-1",
                "an inherited socket already listening on this rank's\n--ep-peers address (tandem serve passes one)"),
    CLI_STR_OPT(W, o.expert_placement, "--expert-placement", "FILE", NULL,
                "JSON {\"ranks\": [[expert ids of rank 0], ...]}, the same on\nevery rank; an expert may be on several "
                "ranks (replicas);\ndefault: contiguous ranges",
                0),
    CLI_STR_OPT(W, o.ep_secret_file, "--ep-secret-file", "FILE", NULL,
                "the EP group's shared secret (16-1024 bytes), the same on\nevery rank; ranks prove it to each other "
                "when they connect",
                0),
    CLI_CHOICE_OPT(W, o.ep_transport, "--ep-transport", "auto|tcp|rdma", "auto",
                   "how the EP exchange's payloads travel (auto: RDMA when a\ndevice works, else TCP)", 0),
    CLI_LOG_OPTS(W, log),
    CLI_TLS_OPTS(W, tls),
};
#undef W

static const cli_command CMD = {
    .name = "tandem worker",
    .usage = "--role prefill|decode|both --model DIR --coordinator HOST:PORT [options]",
    .opts = OPTS,
    .n_opts = CLI_COUNT(OPTS),
};

static void drain(void *w)
{
    wrk_drain(w);
}
static int in_flight(void *w)
{
    return wrk_in_flight(w);
}

int cmd_worker(int argc, char **argv)
{
    worker_args a = {0};
    int exit_status = cli_parse(&CMD, argc, argv, &a);
    if (exit_status != CLI_RUN)
        return exit_status;
    wrk_options o = a.o;
    o.drain_timeout_s = a.drain_timeout;
    if (wrk_role_parse(a.role, &o.role) < 0)
        return cli_usage_error(&CMD, "--role must be prefill, decode or both");
    if (!strcmp(o.coordinator, "none"))
        o.coordinator = NULL;
    cli_log_apply(&a.log);
    if ((exit_status = cli_tls_apply(&CMD, &a.tls)) != CLI_RUN)
        return exit_status;

    /* Blocked here, so every thread the worker starts inherits the mask. */
    sigset_t set;
    cli_block_signals(&set, 0);

    wrk_worker *w = NULL;
    eng_error err = {{0}};
    if (wrk_start(&o, &w, &err) < 0) {
        fprintf(stderr, "tandem worker: %s\n", err.msg);
        return 1;
    }
    /* One line on stdout for whoever started us (tests, `tandem serve`). */
    char rpc[300];
    eng_addr_join(o.host, wrk_rpc_port(w), rpc, sizeof rpc, NULL);
    printf("worker %s listening on %s metrics %d\n", wrk_id(w), rpc, wrk_metrics_port(w));
    fflush(stdout);
    /* The engine hands the streams left back at the timeout: give that a moment. */
    cli_drainable d = {"tandem worker", drain, in_flight, w, .grace_s = 5};
    cli_wait_and_drain(&set, a.drain_timeout, &d);
    wrk_stop(w);
    return 0;
}
