/* cmd_serve.c: `tandem serve`, a whole cluster on this machine with one command.
 *
 * Starts `tandem coordinator` and the workers as separate processes (fork + exec
 * of /proc/self/exe, so every piece is the same binary the user can also run by
 * hand), all on loopback: first the coordinator, whose stdout line gives its gRPC
 * port, then the workers pointed at it. Waits until every worker has registered
 * (Admin.Status), prints the URL, and then only watches: SIGINT/SIGTERM stop the
 * workers and then the coordinator, each with SIGTERM (they finish cleanly) and
 * SIGKILL after a grace period; a child that dies on its own is reported (a dead
 * coordinator ends the cluster; a dead worker does not, the coordinator routes
 * around it). Children get PR_SET_PDEATHSIG so that they never outlive us.
 *
 * Worker ids are fixed (prefill-1, decode-2, ...), so a worker restarted by hand
 * with the same arguments takes its old place in the registry. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netdb.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli_args.h"
#include "cli_model.h"
#include "cli_log.h"
#include "cli_tls.h"
#include "commands.h"
#include "common/addr.h"
#include "common/clock.h"
#include "common/log.h"
#include "model/config.h"
#include "rpc.h"
#include "tandem.pb-c.h"

#define MAX_CHILDREN 66

typedef struct child {
    pid_t pid;
    char name[64];
    int alive;
} child;

static child children[MAX_CHILDREN];
static int n_children;

typedef struct serve_args {
    const char *model, *host;
    int n_prefill, n_decode, colocated, port, threads, kv_blocks, rpc_port, heartbeat_ms, ready_timeout, mmap;
    int kv_max_conns, kv_io_timeout_ms;
    cli_log_opts log;
    const char *worker_log_level;
    int ep_size, prefill_ep, decode_ep, ep_deadline_ms, prefill_deadline_ms, decode_deadline_ms;
    int no_prefix_cache;
    float overlap_weight; /* the coordinator's routing and admission */
    int ttft_slo_ms;
    const char *ep_transport, *expert_placement;
    const char *kv_dtype, *matmul_dtype;
    const char *api_key_file, *tls_cert, *tls_key; /* the coordinator's HTTP plane */
    cli_tls_opts rpc_tls;                          /* every process's gRPC */
} serve_args;

#define S serve_args
static const cli_opt OPTS[] = {
    CLI_STR_OPT(S, model, "--model", "DIR", NULL, "Hugging Face checkpoint folder", CLI_REQUIRED),
    CLI_INT_OPT(S, n_prefill, "--prefill-workers", "N", 0, 32, "1", "prefill worker processes"),
    CLI_INT_OPT(S, n_decode, "--decode-workers", "M", 1, 32, "1", "decode worker processes"),
    CLI_FLAG_OPT(S, colocated, "--colocated", "no split: M workers with role both each run whole requests"),
    CLI_INT_OPT(S, port, "--port", "N", 0, 65535, "8000", "HTTP port of the OpenAI API; 0: any free port"),
    CLI_STR_OPT(S, host, "--host", "H", "127.0.0.1", "address to serve on", 0),
    CLI_INT_OPT(S, threads, "--threads-per-worker", "T", 1, 4096, NULL,
                "compute threads per worker; default: CPUs / workers, at least 1"),
    CLI_INT_OPT(S, kv_blocks, "--kv-blocks", "N", 1, 1 << 30, NULL,
                "KV pool size per worker in blocks; default: the worker's own"),
    CLI_KV_DTYPE_OPT(S, kv_dtype),
    CLI_MATMUL_DTYPE_OPT(S, matmul_dtype),
    CLI_MMAP_OPT(S, mmap),
    CLI_INT_OPT(S, kv_max_conns, "--kv-max-conns", "N", 1, 65536, "256",
                "passed to every worker: incoming TCP KV connections at once"),
    CLI_INT_OPT(S, kv_io_timeout_ms, "--kv-io-timeout-ms", "N", 1, 3600 * 1000, "10000",
                "passed to every worker: a TCP KV peer silent this long\nbefore its hello or mid-transfer is cut off"),
    CLI_INT_OPT(S, rpc_port, "--rpc-port", "N", 0, 65535, NULL,
                "the coordinator's gRPC port; default: 50051 when free, so that a\n"
                "bare `tandemctl status` finds it, else any free port"),
    CLI_FLAG_OPT(S, no_prefix_cache, "--no-prefix-cache", "prefill workers keep no KV blocks after a request"),
    CLI_FLOAT_OPT(S, overlap_weight, "--router-overlap-weight", "W", 0, 1000, "1",
                  "passed to the coordinator: a prompt token a prefill worker\n"
                  "holds cached counts as W queued tokens less there; 0: load only"),
    CLI_INT_OPT(S, ttft_slo_ms, "--ttft-slo-ms", "N", 0, 3600 * 1000, "0",
                "passed to the coordinator: a request predicted to wait longer\n"
                "than N ms for its first token gets 503 at once; 0: off"),
    CLI_INT_OPT(S, heartbeat_ms, "--heartbeat-ms", "N", 10, 600000, "500", "worker heartbeat interval"),
    CLI_INT_OPT(S, ready_timeout, "--ready-timeout", "S", 1, 86400, "300",
                "seconds to wait for every worker to register"),
    CLI_LOG_OPTS(S, log),
    CLI_STR_OPT(S, api_key_file, "--api-key-file", "F", NULL,
                "passed to the coordinator: HTTP API keys, one per line\n"
                "(401 without one; SIGHUP to the coordinator reloads them)",
                0),
    CLI_STR_OPT(S, tls_cert, "--tls-cert", "F", NULL, "passed to the coordinator: PEM certificate (chain) for HTTPS",
                0),
    CLI_STR_OPT(S, tls_key, "--tls-key", "F", NULL, "passed to the coordinator: PEM private key of --tls-cert", 0),
    CLI_TLS_OPTS(S, rpc_tls),
    CLI_CHOICE_OPT(S, worker_log_level, "--worker-log-level", "error|warn|info|debug", "warn",
                   "the workers' --log-level: by default only what went wrong,\n"
                   "so that their lines do not bury the coordinator's; raise it\n"
                   "at run time with `tandemctl log-level info --all`",
                   0),
    CLI_INT_OPT(S, ep_size, "--ep-size", "N", 1, 64, NULL,
                "expert parallelism (MoE models): every worker of both pools\n"
                "is an EP group of N rank processes, each holding 1/N of the\n"
                "experts; --prefill-workers / --decode-workers count groups"),
    CLI_INT_OPT(S, prefill_ep, "--prefill-ep-size", "N", 1, 64, NULL, "--ep-size for the prefill pool only"),
    CLI_INT_OPT(S, decode_ep, "--decode-ep-size", "N", 1, 64, NULL,
                "--ep-size for the decode pool (or the colocated workers) only"),
    CLI_INT_OPT(S, ep_deadline_ms, "--ep-deadline-ms", "N", 1, 3600 * 1000, "10000",
                "how long an EP rank's exchange waits for another rank"),
    CLI_INT_OPT(S, prefill_deadline_ms, "--prefill-ep-deadline-ms", "N", 1, 3600 * 1000, NULL,
                "--ep-deadline-ms for the prefill pool only"),
    CLI_INT_OPT(S, decode_deadline_ms, "--decode-ep-deadline-ms", "N", 1, 3600 * 1000, NULL,
                "--ep-deadline-ms for the decode pool (or the colocated workers) only"),
    CLI_STR_OPT(S, expert_placement, "--expert-placement", "FILE", NULL,
                "JSON {\"ranks\": [[expert ids of rank 0], ...]} for every EP\ngroup (all pools must then have the "
                "same size); an expert\nmay be on several ranks; default: contiguous ranges",
                0),
    CLI_CHOICE_OPT(S, ep_transport, "--ep-transport", "auto|tcp|rdma", "auto",
                   "how the EP exchange's payloads travel (auto: RDMA when a\ndevice works, else TCP)", 0),
};
#undef S

static const cli_command CMD = {
    .name = "tandem serve",
    .usage = "--model DIR [options]",
    .opts = OPTS,
    .n_opts = CLI_COUNT(OPTS),
};

/* Appends the --rpc-tls-* options that were given to argv; returns how many words. */
static int add_rpc_tls(char **argv, const cli_tls_opts *tls)
{
    const char *names[3] = {"--rpc-tls-ca", "--rpc-tls-cert", "--rpc-tls-key"};
    const char *values[3] = {tls->ca, tls->cert, tls->key};
    int k = 0;
    for (int i = 0; i < 3; i++)
        if (values[i])
            argv[k++] = (char *)names[i], argv[k++] = (char *)values[i];
    return k;
}

/* fork + exec of ourselves with argv; the child's stdout goes to out_fd (-1: our
 * stderr, so that every log line of the cluster reads in one place); keep_fd (> 2), a
 * close-on-exec descriptor of ours, is passed on to the child. */
static pid_t spawn(const char *name, char *const argv[], int out_fd, int keep_fd, const sigset_t *unblock)
{
    pid_t pid = fork();
    if (pid < 0) {
        eng_log(ENG_LOG_ERROR, "serve", NULL, "cannot start %s: %s", name, strerror(errno));
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() == 1)
            _exit(1); /* the parent is already gone */
        dup2(out_fd >= 0 ? out_fd : 2, 1);
        if (out_fd > 2)
            close(out_fd);
        if (keep_fd > 2)
            fcntl(keep_fd, F_SETFD, 0);
        pthread_sigmask(SIG_UNBLOCK, unblock, NULL);
        execv("/proc/self/exe", argv);
        eng_log(ENG_LOG_ERROR, "serve", NULL, "exec %s: %s", name, strerror(errno));
        _exit(127);
    }
    if (n_children < MAX_CHILDREN) {
        children[n_children].pid = pid;
        snprintf(children[n_children].name, sizeof children[n_children].name, "%s", name);
        children[n_children].alive = 1;
        n_children++;
    }
    return pid;
}

static child *find_child(pid_t pid)
{
    for (int i = 0; i < n_children; i++)
        if (children[i].pid == pid)
            return &children[i];
    return NULL;
}

static void describe_exit(int status, char *buf, size_t cap)
{
    if (WIFEXITED(status))
        snprintf(buf, cap, "exit status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, cap, "killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        snprintf(buf, cap, "status %d", status);
}

/* Reaps children that ended; reports the ones we did not stop. Returns 1 when the
 * coordinator (children[0]) is among them. */
static int reap(int stopping)
{
    int coordinator_died = 0, status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        child *c = find_child(pid);
        if (!c)
            continue;
        c->alive = 0;
        if (!stopping) {
            char how[96];
            describe_exit(status, how, sizeof how);
            eng_log(ENG_LOG_WARN, "serve", NULL, "%s (pid %d) exited unexpectedly: %s%s", c->name, (int)pid, how,
                    c == &children[0] ? "; stopping the cluster" : "; the coordinator routes around it");
        }
        if (c == &children[0])
            coordinator_died = 1;
    }
    return coordinator_died;
}

/* SIGTERM to [from, to), then wait up to grace seconds, then SIGKILL. */
static void stop_range(int from, int to, double grace)
{
    for (int i = from; i < to; i++)
        if (children[i].alive)
            kill(children[i].pid, SIGTERM);
    double end = eng_now_s() + grace;
    for (;;) {
        reap(1);
        int left = 0;
        for (int i = from; i < to; i++)
            left += children[i].alive;
        if (!left)
            return;
        if (eng_now_s() >= end)
            break;
        usleep(20 * 1000);
    }
    for (int i = from; i < to; i++)
        if (children[i].alive) {
            eng_log(ENG_LOG_WARN, "serve", NULL, "%s (pid %d) did not stop within %.0f s; killing it", children[i].name,
                    (int)children[i].pid, grace);
            kill(children[i].pid, SIGKILL);
            waitpid(children[i].pid, NULL, 0);
            children[i].alive = 0;
        }
}

static char ep_secret_path[64]; /* the EP groups' secret, removed with the cluster */

static void stop_all(void)
{
    stop_range(1, n_children, 15); /* workers first: the coordinator then sees them leave */
    stop_range(0, 1, 15);
    if (ep_secret_path[0])
        unlink(ep_secret_path);
}

/* A new random secret for the EP groups (every rank proves it to the others), in a file
 * only we can read; 0 or -1. */
static int make_ep_secret(void)
{
    const char *dir = getenv("TMPDIR");
    snprintf(ep_secret_path, sizeof ep_secret_path, "%s/tandem-ep-XXXXXX", dir && strlen(dir) < 40 ? dir : "/tmp");
    unsigned char raw[32];
    char hex[2 * sizeof raw + 2];
    int fd = mkstemp(ep_secret_path), ok = 0;
    if (fd >= 0 && getrandom(raw, sizeof raw, 0) == (ssize_t)sizeof raw) {
        for (size_t i = 0; i < sizeof raw; i++)
            snprintf(hex + 2 * i, 3, "%02x", raw[i]);
        hex[2 * sizeof raw] = '\n';
        ok = write(fd, hex, 2 * sizeof raw + 1) == (ssize_t)(2 * sizeof raw + 1);
    }
    if (fd >= 0)
        close(fd);
    if (!ok) {
        eng_log(ENG_LOG_ERROR, "serve", NULL, "cannot write the EP secret file %s: %s", ep_secret_path,
                strerror(errno));
        if (fd >= 0)
            unlink(ep_secret_path);
        ep_secret_path[0] = 0;
    }
    return ok ? 0 : -1;
}

/* Copies the coordinator's stdout to our stderr after its first line was read. */
static void *drain_main(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        if (write(2, buf, (size_t)n) < 0)
            break;
    close(fd);
    return NULL;
}

/* Reads the coordinator's first stdout line within timeout seconds. */
static int read_line(int fd, char *line, size_t cap, double timeout)
{
    size_t n = 0;
    double end = eng_now_s() + timeout;
    while (n + 1 < cap) {
        int ms = (int)((end - eng_now_s()) * 1000);
        if (ms <= 0)
            return -1;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int pr = poll(&p, 1, ms > 200 ? 200 : ms);
        if (pr < 0 && errno != EINTR)
            return -1;
        if (pr <= 0)
            continue;
        char ch;
        ssize_t r = read(fd, &ch, 1);
        if (r <= 0)
            return -1;
        if (ch == '\n')
            break;
        line[n++] = ch;
    }
    line[n] = 0;
    return 0;
}

/* A close-on-exec socket listening on host:port (port 0: one the kernel picks), its port
 * in *bound; -1 when it cannot be bound. */
static int listen_on(const char *host, int port, int *bound)
{
    struct addrinfo *ai = NULL;
    *bound = 0;
    if (eng_addr_resolve(host, port, 1, &ai, NULL) < 0)
        return -1;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    struct sockaddr_storage sa;
    socklen_t len = sizeof sa;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd >= 0 && bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 64) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        *bound = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
                                                : ((struct sockaddr_in *)&sa)->sin_port);
    freeaddrinfo(ai);
    if (!*bound && fd >= 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* The default gRPC port is taken only when it is free at this moment (0 otherwise). */
static int try_bind(const char *host, int port)
{
    int bound, fd = listen_on(host, port, &bound);
    if (fd >= 0)
        close(fd);
    return bound;
}

/* --ep-size N needs a MoE model with at least N experts; one line says why not.
 * Returns 0 or the exit status. */
static int check_ep(const char *model, int ep_size)
{
    if (ep_size <= 1)
        return 0;
    eng_config c;
    eng_error err;
    if (eng_config_load(model, &c, &err) < 0)
        return cli_usage_error(&CMD, "%s", err.msg);
    if (!c.is_moe)
        return cli_usage_error(&CMD, "--ep-size %d needs a MoE model; %s is dense", ep_size, model);
    if (ep_size > c.num_experts)
        return cli_usage_error(&CMD, "--ep-size %d is larger than the model's %d experts", ep_size, c.num_experts);
    return 0;
}

/* Healthy workers registered with the coordinator, or -1 when it cannot be asked. */
static int healthy_workers(rpc_channel *ch)
{
    Tandem__StatusRequest q = TANDEM__STATUS_REQUEST__INIT;
    Tandem__ClusterStatus *cs = NULL;
    rpc_status st;
    if (rpc_unary_msg(ch, RPC_ADMIN_STATUS, &q.base, &tandem__cluster_status__descriptor, 2000, (void **)&cs, &st) < 0)
        return -1;
    int n = 0;
    for (size_t i = 0; i < cs->n_workers; i++)
        n += cs->workers[i]->state == TANDEM__WORKER_STATE__WORKER_READY;
    rpc_msg_free(cs);
    return n;
}

int cmd_serve(int argc, char **argv)
{
    serve_args a = {.rpc_port = -1}; /* -1: 50051 when free */
    int exit_status = cli_parse(&CMD, argc, argv, &a);
    if (exit_status != CLI_RUN)
        return exit_status;
    const char *model = a.model, *host = a.host;
    int n_prefill = a.n_prefill, n_decode = a.n_decode, colocated = a.colocated, threads = a.threads;
    int rpc_port = a.rpc_port;
    if (colocated)
        n_prefill = 0;
    else if (n_prefill < 1)
        return cli_usage_error(&CMD, "--prefill-workers must be at least 1 (or pass --colocated)");
    /* each worker of a pool is a group of that pool's EP size */
    int ep_prefill = a.prefill_ep ? a.prefill_ep : a.ep_size ? a.ep_size : 1;
    int ep_decode = a.decode_ep ? a.decode_ep : a.ep_size ? a.ep_size : 1;
    int bad = check_ep(model, ep_prefill > ep_decode ? ep_prefill : ep_decode);
    if (!bad && a.expert_placement &&
        (ep_prefill > 1 ? ep_prefill : ep_decode) != (ep_decode > 1 ? ep_decode : ep_prefill))
        bad = cli_usage_error(&CMD, "--expert-placement gives one placement: both pools' EP groups need the same size");
    if (!bad && a.expert_placement && ep_prefill <= 1 && ep_decode <= 1)
        bad = cli_usage_error(&CMD, "--expert-placement needs EP groups (--ep-size N > 1)");
    if (bad)
        return bad;
    int n_workers = n_prefill * ep_prefill + n_decode * ep_decode;
    if (n_workers + 1 > MAX_CHILDREN) {
        return cli_usage_error(&CMD, "%d worker processes; at most %d on one machine", n_workers, MAX_CHILDREN - 1);
    }
    if (!threads) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cpus > n_workers ? (int)(cpus / n_workers) : 1;
    }

    /* serve's own channel (it waits on Admin.Status) speaks the cluster's mTLS too */
    if ((exit_status = cli_tls_apply(&CMD, &a.rpc_tls)) != CLI_RUN)
        return exit_status;

    /* Blocked here and in every thread; children unblock them before exec. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGCHLD);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* 1. the coordinator */
    int pfd[2];
    if (pipe(pfd) < 0) {
        eng_log(ENG_LOG_ERROR, "serve", NULL, "pipe: %s", strerror(errno));
        return 1;
    }
    if (rpc_port < 0)
        rpc_port = try_bind(host, 50051) ? 50051 : 0;
    char port_s[16], hb_s[16], rpc_s[16], weight_s[32], slo_s[16];
    snprintf(rpc_s, sizeof rpc_s, "%d", rpc_port);
    snprintf(port_s, sizeof port_s, "%d", a.port);
    snprintf(hb_s, sizeof hb_s, "%d", a.heartbeat_ms);
    snprintf(weight_s, sizeof weight_s, "%g", (double)a.overlap_weight);
    snprintf(slo_s, sizeof slo_s, "%d", a.ttft_slo_ms);
    cli_log_apply(&a.log);
    char *cargv[40];
    int k = 0;
    cargv[k++] = "tandem", cargv[k++] = "coordinator", cargv[k++] = "--model", cargv[k++] = (char *)model;
    cargv[k++] = "--host", cargv[k++] = (char *)host, cargv[k++] = "--port", cargv[k++] = port_s;
    cargv[k++] = "--rpc-port", cargv[k++] = rpc_s, cargv[k++] = "--heartbeat-ms", cargv[k++] = hb_s;
    cargv[k++] = "--log-level", cargv[k++] = (char *)a.log.level, cargv[k++] = "--log-format";
    cargv[k++] = (char *)a.log.format;
    cargv[k++] = "--router-overlap-weight", cargv[k++] = weight_s, cargv[k++] = "--ttft-slo-ms", cargv[k++] = slo_s;
    if (colocated)
        cargv[k++] = "--colocated";
    if (a.api_key_file)
        cargv[k++] = "--api-key-file", cargv[k++] = (char *)a.api_key_file;
    if (a.tls_cert)
        cargv[k++] = "--tls-cert", cargv[k++] = (char *)a.tls_cert;
    if (a.tls_key)
        cargv[k++] = "--tls-key", cargv[k++] = (char *)a.tls_key;
    k += add_rpc_tls(cargv + k, &a.rpc_tls);
    cargv[k] = NULL;
    if (spawn("coordinator", cargv, pfd[1], -1, &set) < 0)
        return 1;
    close(pfd[1]);
    char line[512], http_url[300] = "", rpc_addr[300] = "", model_name[256] = "";
    if (read_line(pfd[0], line, sizeof line, 120) < 0 ||
        sscanf(line, "coordinator %299s rpc %299s model %255s", http_url, rpc_addr, model_name) != 3) {
        eng_log(ENG_LOG_ERROR, "serve", NULL, "the coordinator did not start (see its messages above)");
        close(pfd[0]);
        stop_all();
        return 1;
    }
    pthread_t drain;
    if (pthread_create(&drain, NULL, drain_main, (void *)(intptr_t)pfd[0]) == 0)
        pthread_detach(drain);

    /* 2. the workers */
    char threads_s[16], kv_s[16], deadline_s[2][16]; /* [in_prefill] */
    char kv_conns_s[16], kv_timeout_s[16];
    char group_peers[64 * (ENG_HOST_MAX + 8)]; /* an EP group's exchange addresses: --ep-size <= 64 */
    int group_fds[64];                         /* listening on them, each handed to its rank */
    snprintf(threads_s, sizeof threads_s, "%d", threads);
    snprintf(kv_s, sizeof kv_s, "%d", a.kv_blocks);
    snprintf(kv_conns_s, sizeof kv_conns_s, "%d", a.kv_max_conns);
    snprintf(kv_timeout_s, sizeof kv_timeout_s, "%d", a.kv_io_timeout_ms);
    /* prefill steps carry many tokens, so their exchanges wait longer for the slowest
     * rank; decode steps are short, and a short deadline finds a stalled rank sooner */
    snprintf(deadline_s[1], sizeof deadline_s[1], "%d",
             a.prefill_deadline_ms ? a.prefill_deadline_ms : a.ep_deadline_ms);
    snprintf(deadline_s[0], sizeof deadline_s[0], "%d", a.decode_deadline_ms ? a.decode_deadline_ms : a.ep_deadline_ms);
    if ((ep_prefill > 1 || ep_decode > 1) && make_ep_secret() < 0) {
        stop_all();
        return 1;
    }
    for (int i = 0; i < n_workers; i++) {
        int in_prefill = i < n_prefill * ep_prefill, ep = in_prefill ? ep_prefill : ep_decode;
        int j = in_prefill ? i : i - n_prefill * ep_prefill; /* the process's index in its pool */
        int rank = j % ep;
        const char *role = colocated ? "both" : in_prefill ? "prefill" : "decode";
        char id[64], group[32], rank_s[16], ep_s[16], fd_s[16];
        int listen_fd = -1;
        snprintf(group, sizeof group, "%s-%d", role, j / ep + 1);
        if (ep > 1)
            snprintf(id, sizeof id, "%s-r%d", group, rank);
        else
            snprintf(id, sizeof id, "%s", group);
        char *wargv[64];
        k = 0;
        wargv[k++] = "tandem", wargv[k++] = "worker", wargv[k++] = "--role", wargv[k++] = (char *)role;
        wargv[k++] = "--model", wargv[k++] = (char *)model, wargv[k++] = "--coordinator", wargv[k++] = rpc_addr;
        wargv[k++] = "--host", wargv[k++] = (char *)host, wargv[k++] = "--port", wargv[k++] = "0";
        wargv[k++] = "--metrics-port", wargv[k++] = "0", wargv[k++] = "--threads", wargv[k++] = threads_s;
        wargv[k++] = "--id", wargv[k++] = id, wargv[k++] = "--log-level", wargv[k++] = (char *)a.worker_log_level;
        wargv[k++] = "--log-format", wargv[k++] = (char *)a.log.format;
        wargv[k++] = "--kv-max-conns", wargv[k++] = kv_conns_s;
        wargv[k++] = "--kv-io-timeout-ms", wargv[k++] = kv_timeout_s;
        wargv[k++] = "--kv-dtype", wargv[k++] = (char *)a.kv_dtype;
        wargv[k++] = "--matmul-dtype", wargv[k++] = (char *)a.matmul_dtype;
        if (a.mmap)
            wargv[k++] = "--mmap";
        if (a.kv_blocks)
            wargv[k++] = "--kv-blocks", wargv[k++] = kv_s;
        if (a.no_prefix_cache && in_prefill)
            wargv[k++] = "--no-prefix-cache";
        if (ep > 1) {
            if (rank == 0) { /* a new group: its ranks' exchange addresses, bound here */
                size_t off = 0;
                for (int r = 0; r < ep; r++) {
                    int p;
                    group_fds[r] = listen_on(host, 0, &p);
                    eng_error err;
                    char one[ENG_HOST_MAX + 8];
                    if (group_fds[r] < 0 || eng_addr_join(host, p, one, sizeof one, &err) < 0) {
                        eng_log(ENG_LOG_ERROR, "serve", NULL, "no free port on %s for an EP exchange", host);
                        stop_all();
                        return 1;
                    }
                    off += (size_t)snprintf(group_peers + off, sizeof group_peers - off, "%s%s", r ? "," : "", one);
                }
            }
            listen_fd = group_fds[rank];
            snprintf(fd_s, sizeof fd_s, "%d", listen_fd);
            snprintf(rank_s, sizeof rank_s, "%d", rank);
            snprintf(ep_s, sizeof ep_s, "%d", ep);
            wargv[k++] = "--ep-size", wargv[k++] = ep_s, wargv[k++] = "--ep-rank", wargv[k++] = rank_s;
            wargv[k++] = "--group", wargv[k++] = group, wargv[k++] = "--ep-peers", wargv[k++] = group_peers;
            wargv[k++] = "--ep-deadline-ms", wargv[k++] = deadline_s[in_prefill];
            wargv[k++] = "--ep-transport", wargv[k++] = (char *)a.ep_transport;
            wargv[k++] = "--ep-listen-fd", wargv[k++] = fd_s;
            wargv[k++] = "--ep-secret-file", wargv[k++] = ep_secret_path;
            if (a.expert_placement)
                wargv[k++] = "--expert-placement", wargv[k++] = (char *)a.expert_placement;
        }
        k += add_rpc_tls(wargv + k, &a.rpc_tls);
        wargv[k] = NULL;
        pid_t pid = spawn(id, wargv, -1, listen_fd, &set);
        if (listen_fd >= 0)
            close(listen_fd); /* the rank has its own copy */
        if (pid < 0) {
            stop_all();
            return 1;
        }
    }

    /* 3. wait for every registration */
    rpc_channel *ch = NULL;
    rpc_status st;
    if (rpc_channel_create(rpc_addr, &ch, &st) < 0) {
        eng_log(ENG_LOG_ERROR, "serve", NULL, "coordinator %s: %s", rpc_addr, st.msg);
        stop_all();
        return 1;
    }
    double deadline = eng_now_s() + a.ready_timeout;
    int healthy = 0;
    for (;;) {
        if (reap(0)) {
            rpc_channel_destroy(ch);
            stop_all();
            return 1;
        }
        int dead = 0;
        for (int i = 1; i < n_children; i++)
            dead += !children[i].alive;
        if (dead) {
            eng_log(ENG_LOG_ERROR, "serve", NULL, "%d worker(s) failed to start (see their messages above)", dead);
            rpc_channel_destroy(ch);
            stop_all();
            return 1;
        }
        healthy = healthy_workers(ch);
        if (healthy >= n_workers)
            break;
        struct timespec ts = {0, 100 * 1000000L};
        int sig = sigtimedwait(&set, NULL, &ts);
        if (sig == SIGINT || sig == SIGTERM) {
            eng_log(ENG_LOG_INFO, "serve", NULL, "%s while starting, stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
            rpc_channel_destroy(ch);
            stop_all();
            return 1;
        }
        if (eng_now_s() > deadline) {
            eng_log(ENG_LOG_ERROR, "serve", NULL, "only %d of %d workers registered within %d s",
                    healthy < 0 ? 0 : healthy, n_workers, a.ready_timeout);
            rpc_channel_destroy(ch);
            stop_all();
            return 1;
        }
    }
    rpc_channel_destroy(ch);
    char ep_note[64] = "";
    if (colocated && ep_decode > 1)
        snprintf(ep_note, sizeof ep_note, ", EP groups of %d", ep_decode);
    else if (!colocated && (ep_prefill > 1 || ep_decode > 1))
        snprintf(ep_note, sizeof ep_note, ", EP groups of %d + %d", ep_prefill, ep_decode);
    if (colocated)
        printf("tandem: serving %s at %s/v1 (%d colocated workers%s; gRPC %s). Ctrl-C stops it.\n", model_name,
               http_url, n_decode, ep_note, rpc_addr);
    else
        printf("tandem: serving %s at %s/v1 (%d prefill + %d decode workers%s; gRPC %s). Ctrl-C stops it.\n",
               model_name, http_url, n_prefill, n_decode, ep_note, rpc_addr);
    fflush(stdout);

    /* 4. watch */
    int rc = 0;
    for (;;) {
        int sig = sigwaitinfo(&set, NULL);
        if (sig == SIGCHLD) {
            if (reap(0)) {
                rc = 1;
                break;
            }
            continue;
        }
        if (sig == SIGINT || sig == SIGTERM) {
            eng_log(ENG_LOG_INFO, "serve", NULL, "%s, stopping the cluster", sig == SIGINT ? "SIGINT" : "SIGTERM");
            break;
        }
    }
    stop_all();
    return rc;
}
