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
    const char *l1[] = {"outcome"};
    met_family *c = met_family_new(r, MET_COUNTER, "t_requests_total", "Requests.", 1, l1, NULL, 0, &err);
    met_family *g = met_family_new(r, MET_GAUGE, "t_running", "Running now.", 0, NULL, NULL, 0, &err);
    const double b[] = {0.005, 0.5, 1};
    met_family *h = met_family_new(r, MET_HISTOGRAM, "t_latency_seconds", "Latency.", 1, l1, b, 3, &err);
    CHECK(c && g && h);
    met_inc(met_get(c, "success"), 2);
    met_inc(met_get(c, "success"), 1);
    met_inc(met_get(c, "success"), -5); /* ignored: counters only go up */
    met_inc(met_get(c, "error"), 1);
    met_set(met_get(g), 7);
    met_inc(met_get(g), -2.5);
    met_metric *hm = met_get(h, "x");
    met_observe(hm, 0.005); /* on the bound: counted in that bucket (le) */
    met_observe(hm, 0.25);
    met_observe(hm, 3);
    CHECK(met_hist_count(hm) == 3);
    CHECK(met_hist_bucket(hm, 0) == 1 && met_hist_bucket(hm, 1) == 2 && met_hist_bucket(hm, 3) == 3);
    char *text = render(r);
    const char *want =
        "# HELP t_requests_total Requests.\n"
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

    met_remove(c, "success");
    text = render(r);
    CHECK(text && !strstr(text, "success") && strstr(text, "outcome=\"error\"} 1\n"));
    free(text);
    met_registry_free(r);
}

static void test_escaping(void)
{
    met_registry *r = met_registry_new();
    const char *l[] = {"worker"};
    met_family *g = met_family_new(r, MET_GAUGE, "t_g", "Help with \\ and\nnewline \"quoted\".", 1, l, NULL, 0, NULL);
    met_set(met_get(g, "a\"b\\c\nd"), 1);
    met_set(met_get(g, NULL), 2); /* NULL is "" */
    CHECK(met_get(g, "\xff") == NULL); /* not UTF-8 */
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
    const char *bad_label[] = {"__x"};
    const char *le[] = {"le"};
    const char *dup[] = {"a", "a"};
    const char *digit[] = {"1a"};
    const double unsorted[] = {1, 0.5};
    CHECK(!met_family_new(r, MET_COUNTER, "1bad", "h", 0, NULL, NULL, 0, &err));
    CHECK(strstr(err.msg, "invalid metric name"));
    CHECK(!met_family_new(r, MET_COUNTER, "a-b", "h", 0, NULL, NULL, 0, &err));
    CHECK(!met_family_new(r, MET_COUNTER, "ok_total", "h", 1, bad_label, NULL, 0, &err));
    CHECK(!met_family_new(r, MET_COUNTER, "ok_total", "h", 1, digit, NULL, 0, &err));
    CHECK(!met_family_new(r, MET_COUNTER, "ok_total", "h", 2, dup, NULL, 0, &err));
    CHECK(strstr(err.msg, "given twice"));
    CHECK(!met_family_new(r, MET_HISTOGRAM, "h_seconds", "h", 1, le, NULL, 0, &err));
    CHECK(!met_family_new(r, MET_HISTOGRAM, "h_seconds", "h", 0, NULL, unsorted, 2, &err));
    CHECK(strstr(err.msg, "strictly increasing"));
    CHECK(!met_family_new(r, MET_GAUGE, "g", "\xc3", 0, NULL, NULL, 0, &err));
    CHECK(met_family_new(r, MET_COUNTER, "ok_total", "h", 0, NULL, NULL, 0, &err));
    CHECK(!met_family_new(r, MET_GAUGE, "ok_total", "h", 0, NULL, NULL, 0, &err));
    CHECK(strstr(err.msg, "registered twice"));
    /* default buckets, and updates of the wrong kind are ignored */
    met_family *h = met_family_new(r, MET_HISTOGRAM, "d_seconds", "h", 0, NULL, NULL, 0, &err);
    met_metric *m = met_get(h);
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
    met_family *c = met_family_new(r, MET_COUNTER, "c_total", "c", 0, NULL, NULL, 0, NULL);
    const double b[] = {0.1, 0.6};
    met_family *h = met_family_new(r, MET_HISTOGRAM, "h_seconds", "h", 0, NULL, b, 2, NULL);
    shared_counter = met_get(c);
    shared_hist = met_get(h);
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
    met_metric *used = met_get(m.kv_blocks_used, "decode", "w1");
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
    met_inc(met_get(m.generation_tokens, "decode", "w7"), 12);
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
    CHECK(met_server_start(r, "not-an-ip", 0, NULL, NULL, &s, &err) == -1 && strstr(err.msg, "IPv4"));
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
        met_inc(met_get(m.requests_total, role, wk, "success"), 10 + w);
        met_inc(met_get(m.requests_total, role, wk, "cancelled"), w);
        met_observe(met_get(m.ttft, role, wk), 0.05 * w);
        met_observe(met_get(m.itl, role, wk), 0.02);
        met_observe(met_get(m.e2e, role, wk), 1.5 + w);
        met_inc(met_get(m.prompt_tokens, role, wk), 1234);
        met_inc(met_get(m.generation_tokens, role, wk), 567);
        met_set(met_get(m.requests_running, role, wk), w);
        met_set(met_get(m.requests_waiting, role, wk), 0);
        met_set(met_get(m.kv_usage_perc, role, wk), 0.25);
        met_set(met_get(m.kv_blocks_used, role, wk), 64);
        met_set(met_get(m.kv_blocks_total, role, wk), 256);
        met_inc(met_get(m.kv_transfer_bytes, role, wk, "tcp"), 1e9);
        met_observe(met_get(m.kv_transfer_seconds, role, wk, "tcp"), 0.003);
        met_observe(met_get(m.batch_size, role, wk), 8);
        met_observe(met_get(m.batch_tokens, role, wk), 300);
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
