/* test_metrics.c: the Prometheus registry (metrics/metrics.h).
 *
 * Exact text for a small registry, escaping, histogram buckets, invalid
 * registrations, thread safety of updates, collectors, removal and the workers'
 * /metrics server over a real socket. With --dump it prints a registry holding
 * every Tandem metric with awkward label values, which the conformance test pipes
 * into `promtool check metrics`. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "metrics.h"
#include "check.h"

static char *render(met_registry *r)
{
    eng_buf b = {0};
    if (met_render(r, &b))
        return NULL;
    return b.data ? eng_buf_take(&b) : strdup("");
}

static void test_exact_text(void)
{
    met_registry *r = met_registry_new();
    eng_error err;
    const double b[] = {0.005, 0.5, 1};
    const met_spec specs[] = {
        {MET_COUNTER, "t_requests_total", "Requests.", MET_L(MET_OUTCOME), NULL, 0},
        {MET_GAUGE, "t_running", "Running now.", 0, NULL, 0},
        {MET_HISTOGRAM, "t_latency_seconds", "Latency.", MET_L(MET_OUTCOME), b, 3},
    };
    met_family *c = met_family_new(r, &specs[0], &err);
    met_family *g = met_family_new(r, &specs[1], &err);
    met_family *h = met_family_new(r, &specs[2], &err);
    CHECK(c && g && h);
    met_inc(met_get(c, (met_labels){.outcome = "success"}), 2);
    met_inc(met_get(c, (met_labels){.outcome = "success"}), 1);
    met_inc(met_get(c, (met_labels){.outcome = "success"}), -5); /* ignored: counters only go up */
    met_inc(met_get(c, (met_labels){.outcome = "error"}), 1);
    CHECK(met_get(c, (met_labels){.outcome = "x", .worker = "w"}) == NULL); /* no worker label */
    met_set(met_get(g, (met_labels){0}), 7);
    met_inc(met_get(g, (met_labels){0}), -2.5);
    met_metric *hm = met_get(h, (met_labels){.outcome = "x"});
    met_observe(hm, 0.005); /* on the bound: counted in that bucket (le) */
    met_observe(hm, 0.25);
    met_observe(hm, 3);
    CHECK(met_hist_count(hm) == 3);
    CHECK(met_hist_bucket(hm, 0) == 1 && met_hist_bucket(hm, 1) == 2 && met_hist_bucket(hm, 3) == 3);
    char *text = render(r);
    const char *want = "# HELP t_requests_total Requests.\n"
                       "# TYPE t_requests_total counter\n"
                       "t_requests_total{outcome=\"success\"} 3\n"
                       "t_requests_total{outcome=\"error\"} 1\n"
                       "# HELP t_running Running now.\n"
                       "# TYPE t_running gauge\n"
                       "t_running 4.5\n"
                       "# HELP t_latency_seconds Latency.\n"
                       "# TYPE t_latency_seconds histogram\n"
                       "t_latency_seconds_bucket{outcome=\"x\",le=\"0.005\"} 1\n"
                       "t_latency_seconds_bucket{outcome=\"x\",le=\"0.5\"} 2\n"
                       "t_latency_seconds_bucket{outcome=\"x\",le=\"1\"} 2\n"
                       "t_latency_seconds_bucket{outcome=\"x\",le=\"+Inf\"} 3\n"
                       "t_latency_seconds_sum{outcome=\"x\"} 3.255\n"
                       "t_latency_seconds_count{outcome=\"x\"} 3\n";
    CHECK(text && strcmp(text, want) == 0);
    if (text && strcmp(text, want) != 0)
        fprintf(stderr, "got:\n%s\nwant:\n%s\n", text, want);
    free(text);

    met_remove(c, (met_labels){.outcome = "success"});
    text = render(r);
    CHECK(text && !strstr(text, "success") && strstr(text, "outcome=\"error\"} 1\n"));
    free(text);
    met_registry_free(r);
}

static void test_escaping(void)
{
    met_registry *r = met_registry_new();
    const met_spec spec = {MET_GAUGE, "t_g", "Help with \\ and\nnewline \"quoted\".", MET_L(MET_WORKER), NULL, 0};
    met_family *g = met_family_new(r, &spec, NULL);
    met_set(met_get(g, (met_labels){.worker = "a\"b\\c\nd"}), 1);
    met_set(met_get(g, (met_labels){.worker = NULL}), 2);      /* NULL is "" */
    CHECK(met_get(g, (met_labels){.worker = "\xff"}) == NULL); /* not UTF-8 */
    char *text = render(r);
    CHECK(text && strstr(text, "# HELP t_g Help with \\\\ and\\nnewline \"quoted\".\n"));
    CHECK(text && strstr(text, "t_g{worker=\"a\\\"b\\\\c\\nd\"} 1\n"));
    CHECK(text && strstr(text, "t_g{worker=\"\"} 2\n"));
    free(text);
    met_registry_free(r);
}

static void test_invalid(void)
{
    met_registry *r = met_registry_new();
    eng_error err = {{0}};
    const double unsorted[] = {1, 0.5};
#define REFUSED(...) (!met_family_new(r, &(met_spec){__VA_ARGS__}, &err))
    CHECK(REFUSED(MET_COUNTER, "1bad", "h", 0, NULL, 0));
    CHECK(strstr(err.msg, "invalid metric name"));
    CHECK(REFUSED(MET_COUNTER, "a-b", "h", 0, NULL, 0));
    CHECK(REFUSED(MET_COUNTER, "ok_total", "h", MET_L(MET_N_LABELS), NULL, 0));
    CHECK(strstr(err.msg, "unknown label"));
    CHECK(REFUSED(MET_HISTOGRAM, "h_seconds", "h", 0, unsorted, 2));
    CHECK(strstr(err.msg, "strictly increasing"));
    CHECK(REFUSED(MET_GAUGE, "g", "\xc3", 0, NULL, 0));
    CHECK(!REFUSED(MET_COUNTER, "ok_total", "h", 0, NULL, 0));
    CHECK(REFUSED(MET_GAUGE, "ok_total", "h", 0, NULL, 0));
    CHECK(strstr(err.msg, "registered twice"));
#undef REFUSED
    CHECK(!met_family_new(r, NULL, &err));
    /* default buckets, and updates of the wrong kind are ignored */
    met_family *h = met_family_new(r, &(met_spec){MET_HISTOGRAM, "d_seconds", "h", 0, NULL, 0}, &err);
    met_metric *m = met_get(h, (met_labels){0});
    met_inc(m, 1);
    met_set(m, 1);
    met_observe(m, 100);
    CHECK(met_hist_count(m) == 1 && met_hist_bucket(m, met_n_default_buckets - 1) == 0 &&
          met_hist_bucket(m, met_n_default_buckets) == 1);
    met_inc(NULL, 1); /* tolerated */
    met_registry_free(r);
}

static met_metric *shared_counter, *shared_hist;
static void *hammer(void *arg)
{
    (void)arg;
    for (int i = 0; i < 20000; i++) {
        met_inc(shared_counter, 1);
        met_observe(shared_hist, (i % 3) * 0.5);
    }
    return NULL;
}

static void test_threads(void)
{
    met_registry *r = met_registry_new();
    const double b[] = {0.1, 0.6};
    met_family *c = met_family_new(r, &(met_spec){MET_COUNTER, "c_total", "c", 0, NULL, 0}, NULL);
    met_family *h = met_family_new(r, &(met_spec){MET_HISTOGRAM, "h_seconds", "h", 0, b, 2}, NULL);
    shared_counter = met_get(c, (met_labels){0});
    shared_hist = met_get(h, (met_labels){0});
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, hammer, NULL);
    for (int i = 0; i < 20; i++) { /* render concurrently with the updates */
        char *text = render(r);
        CHECK(text != NULL);
        free(text);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    CHECK(met_value(shared_counter) == 80000);
    CHECK(met_hist_count(shared_hist) == 80000);
    /* i%3 == 0 -> 0.0 (bucket 0), 1 -> 0.5 (bucket 1), 2 -> 1.0 (+Inf); 20000 = 6667+6667+6666 */
    CHECK(met_hist_bucket(shared_hist, 0) == 4 * 6667);
    CHECK(met_hist_bucket(shared_hist, 1) == 4 * (6667 + 6667));
    met_registry_free(r);
}

static void collect(void *ctx, met_registry *r)
{
    (void)r;
    met_set((met_metric *)ctx, 42);
}

static void test_collect_and_tandem(void)
{
    met_registry *r = met_registry_new();
    eng_error err;
    met_tandem m;
    CHECK(met_tandem_register(r, &m, &err) == 0);
    met_tandem again;
    CHECK(met_tandem_register(r, &again, &err) == -1); /* names already taken */
    met_metric *used = met_get(m.family[MET_KV_BLOCKS_USED], (met_labels){.role = "decode", .worker = "w1"});
    CHECK(met_on_collect(r, collect, used) == 0);
    char *text = render(r);
    CHECK(text && strstr(text, "tandem_kv_blocks_used{role=\"decode\",worker=\"w1\"} 42\n"));
    CHECK(text && strstr(text, "# TYPE tandem_time_to_first_token_seconds histogram\n"));
    free(text);
    met_registry_free(r);
}

static int http_get(int port, const char *path, char *resp, size_t size)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        close(fd);
        return -1;
    }
    char req[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    size_t got = 0;
    ssize_t k;
    while (got + 1 < size && (k = read(fd, resp + got, size - 1 - got)) > 0)
        got += (size_t)k;
    resp[got] = 0;
    close(fd);
    return 0;
}

static void test_server(void)
{
    met_registry *r = met_registry_new();
    met_tandem m;
    met_tandem_register(r, &m, NULL);
    met_inc(met_get(m.family[MET_GENERATION_TOKENS], (met_labels){.role = "decode", .worker = "w7"}), 12);
    met_server *s;
    eng_error err;
    CHECK(met_server_start(r, "127.0.0.1", 0, NULL, NULL, &s, &err) == 0);
    int port = met_server_port(s);
    CHECK(port > 0);
    static char resp[65536];
    CHECK(http_get(port, "/metrics", resp, sizeof resp) == 0);
    CHECK(strncmp(resp, "HTTP/1.1 200", 12) == 0);
    CHECK(strstr(resp, "text/plain; version=0.0.4"));
    CHECK(strstr(resp, "tandem_generation_tokens_total{role=\"decode\",worker=\"w7\"} 12\n"));
    CHECK(http_get(port, "/nope", resp, sizeof resp) == 0);
    CHECK(strncmp(resp, "HTTP/1.1 404", 12) == 0);
    met_server_stop(s);
    CHECK(met_server_start(r, "no-such-host.invalid", 0, NULL, NULL, &s, &err) == -1 &&
          strstr(err.msg, "cannot resolve 'no-such-host.invalid'"));
    met_registry_free(r);
}

/* Every Tandem metric, several children each, label values that need escaping. */
static int dump(void)
{
    met_registry *r = met_registry_new();
    met_tandem m;
    eng_error err;
    if (met_tandem_register(r, &m, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    const char *workers[] = {"", "w1", "we\"ird\\name\nx", "ünïcode"};
    for (int w = 0; w < 4; w++) {
        const char *role = w == 0 ? "coordinator" : (w % 2 ? "decode" : "prefill");
        const char *wk = workers[w];
        met_family *const *f = m.family;
        const met_labels l = {.role = role, .worker = wk};
        met_inc(met_get(f[MET_REQUESTS_TOTAL], (met_labels){.role = role, .worker = wk, .outcome = "success"}), 10 + w);
        met_inc(met_get(f[MET_REQUESTS_TOTAL], (met_labels){.role = role, .worker = wk, .outcome = "cancelled"}), w);
        met_observe(met_get(f[MET_TTFT], l), 0.05 * w);
        met_observe(met_get(f[MET_ITL], l), 0.02);
        met_observe(met_get(f[MET_E2E], l), 1.5 + w);
        met_inc(met_get(f[MET_PROMPT_TOKENS], l), 1234);
        met_inc(met_get(f[MET_GENERATION_TOKENS], l), 567);
        met_set(met_get(f[MET_REQUESTS_RUNNING], l), w);
        met_set(met_get(f[MET_REQUESTS_WAITING], l), 0);
        met_set(met_get(f[MET_KV_USAGE_PERC], l), 0.25);
        met_set(met_get(f[MET_KV_BLOCKS_USED], l), 64);
        met_set(met_get(f[MET_KV_BLOCKS_CAPACITY], l), 256);
        const met_labels t = {.role = role, .worker = wk, .transport = "tcp"};
        met_inc(met_get(f[MET_KV_TRANSFER_BYTES], t), 1e9);
        met_observe(met_get(f[MET_KV_TRANSFER_SECONDS], t), 0.003);
        met_observe(met_get(f[MET_BATCH_SIZE], l), 8);
        met_observe(met_get(f[MET_BATCH_TOKENS], l), 300);
        met_inc(met_get(f[MET_PREEMPTIONS], l), w);
        met_inc(met_get(f[MET_ROUTER_RETRIES], (met_labels){.reason = w % 2 ? "failover" : "full"}), 1);
    }
    eng_buf b = {0};
    if (met_render(r, &b))
        return 1;
    fwrite(b.data, 1, b.len, stdout);
    eng_buf_free(&b);
    met_registry_free(r);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--dump") == 0)
        return dump();
    test_exact_text();
    test_escaping();
    test_invalid();
    test_threads();
    test_collect_and_tandem();
    test_server();
    return check_summary();
}
