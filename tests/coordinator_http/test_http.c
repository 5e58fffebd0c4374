/* test_http.c: the coordinator's HTTP server (coordinator/http.h) over real sockets.
 *
 * The server runs on 127.0.0.1 with an OS-chosen port and a frontend written
 * here that produces deterministic words ("w0 w1 ..."), so that only the HTTP
 * layer is under test: routing, status codes and OpenAI error bodies, the body
 * size limit (Content-Length and chunked uploads), JSON and SSE responses
 * (role chunk, deltas, finish, usage, [DONE]), errors before and during a
 * stream, client disconnects turning into cancels (streaming and not), many
 * concurrent streams, a server that keeps serving after every bad request, and
 * the connection limits (count, idle and slow-header timeout, unread streams).
 * The client is a small HTTP/1.1 client with chunked decoding. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "http.h"
#include "scripted_frontend.h"
#include "check.h"

/* ---- the server's request log ---- */

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char log_text[1 << 16];

static void log_cb(void *ctx, const char *line)
{
    (void)ctx;
    pthread_mutex_lock(&log_mu);
    if (strlen(log_text) + strlen(line) + 2 < sizeof log_text) {
        strcat(log_text, line);
        strcat(log_text, "\n");
    }
    pthread_mutex_unlock(&log_mu);
}

static int log_has(const char *a, const char *b)
{
    pthread_mutex_lock(&log_mu);
    int found = 0;
    for (char *p = log_text; (p = strstr(p, a)) != NULL; p++) {
        char *eol = strchr(p, '\n');
        char *q = strstr(p, b);
        if (q && (!eol || q < eol)) {
            found = 1;
            break;
        }
    }
    pthread_mutex_unlock(&log_mu);
    return found;
}

/* ---- a small HTTP/1.1 client ---- */

static int port;

typedef struct response {
    int status;
    char headers[4096];
    char *body; /* de-chunked */
    size_t body_len;
} response;

static int connect_server(void)
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
    return fd;
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int send_request(int fd, const char *method, const char *path, const char *body, size_t body_len)
{
    char head[512];
    int n = snprintf(head, sizeof head,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                     method, path, body ? body_len : 0);
    if (send_all(fd, head, (size_t)n))
        return -1;
    return body ? send_all(fd, body, body_len) : 0;
}

static void decode_response(char *raw, size_t n, response *r)
{
    memset(r, 0, sizeof *r);
    char *end = strstr(raw, "\r\n\r\n");
    if (!end || sscanf(raw, "HTTP/1.%*d %d", &r->status) != 1)
        return;
    size_t hl = (size_t)(end - raw);
    memcpy(r->headers, raw, hl < sizeof r->headers - 1 ? hl : sizeof r->headers - 1);
    char *p = end + 4;
    size_t left = n - (size_t)(p - raw);
    r->body = malloc(left + 1);
    if (strcasestr(r->headers, "Transfer-Encoding: chunked")) {
        while (left > 0) {
            char *nl = strstr(p, "\r\n");
            if (!nl)
                break;
            size_t sz = strtoul(p, NULL, 16);
            p = nl + 2;
            if (sz == 0 || sz > (size_t)(raw + n - p))
                break;
            memcpy(r->body + r->body_len, p, sz);
            r->body_len += sz;
            p += sz + 2;
            left = n - (size_t)(p - raw) < n ? n - (size_t)(p - raw) : 0;
        }
    } else {
        memcpy(r->body, p, left);
        r->body_len = left;
    }
    r->body[r->body_len] = 0;
}

static char *read_all(int fd, size_t *n)
{
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    ssize_t k;
    while ((k = recv(fd, buf + len, cap - len - 1, 0)) > 0) {
        len += (size_t)k;
        if (cap - len < 4096)
            buf = realloc(buf, cap *= 2);
    }
    buf[len] = 0;
    *n = len;
    return buf;
}

static response request(const char *method, const char *path, const char *body)
{
    response r = {0};
    int fd = connect_server();
    if (fd < 0 || send_request(fd, method, path, body, body ? strlen(body) : 0)) {
        if (fd >= 0)
            close(fd);
        return r;
    }
    size_t n;
    char *raw = read_all(fd, &n);
    close(fd);
    decode_response(raw, n, &r);
    free(raw);
    return r;
}

static cJSON *body_json(const response *r)
{
    return r->body ? cJSON_Parse(r->body) : NULL;
}

/* Checks an OpenAI error response. */
static void expect_error(const char *method, const char *path, const char *body, int status, const char *type)
{
    response r = request(method, path, body);
    cJSON *j = body_json(&r);
    cJSON *e = cJSON_GetObjectItem(j, "error");
    int ok = r.status == status && cJSON_IsString(cJSON_GetObjectItem(e, "message")) &&
             cJSON_IsString(cJSON_GetObjectItem(e, "type")) &&
             strcmp(cJSON_GetObjectItem(e, "type")->valuestring, type) == 0 && cJSON_GetObjectItem(e, "param") &&
             cJSON_GetObjectItem(e, "code");
    if (!ok) {
        fprintf(stderr, "%s %s: status %d body %s\n", method, path, r.status, r.body ? r.body : "(none)");
        check_failed++;
    }
    CHECK(strcasestr(r.headers, "Content-Type: application/json"));
    cJSON_Delete(j);
    free(r.body);
}

static int health_ok(void)
{
    response r = request("GET", "/health", NULL);
    int ok = r.status == 200 && r.body && strcmp(r.body, "{\"status\":\"ok\"}") == 0;
    free(r.body);
    return ok;
}

/* Splits an SSE body into its data payloads; returns the count. */
static int sse_events(char *body, char **events, int max)
{
    int n = 0;
    char *p = body;
    while (p && *p && n < max) {
        if (strncmp(p, "data: ", 6) != 0)
            return -1;
        char *end = strstr(p, "\n\n");
        if (!end)
            return -1;
        *end = 0;
        events[n++] = p + 6;
        p = end + 2;
    }
    return n;
}

#define CHAT_BODY(content, extra) \
    "{\"model\":\"qwen3-test\",\"messages\":[{\"role\":\"user\",\"content\":\"" content "\"}]" extra "}"

static void test_routes(void)
{
    CHECK(health_ok());
    atomic_store(&ready_flag, 0);
    response r = request("GET", "/health", NULL);
    CHECK(r.status == 503);
    free(r.body);
    atomic_store(&ready_flag, 1);

    r = request("GET", "/v1/models", NULL);
    cJSON *j = body_json(&r);
    CHECK(r.status == 200 &&
          strcmp(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "data"), 0)->child->valuestring, "qwen3-test") == 0);
    cJSON_Delete(j);
    free(r.body);

    r = request("GET", "/v1/models/qwen3-test", NULL);
    j = body_json(&r);
    CHECK(r.status == 200 && strcmp(cJSON_GetObjectItem(j, "id")->valuestring, "qwen3-test") == 0 &&
          strcmp(cJSON_GetObjectItem(j, "object")->valuestring, "model") == 0);
    cJSON_Delete(j);
    free(r.body);
    expect_error("GET", "/v1/models/gpt-4", NULL, 404, "invalid_request_error");
    expect_error("POST", "/v1/models/qwen3-test", "{}", 405, "invalid_request_error");
    expect_error("GET", "/v1/nothing", NULL, 404, "invalid_request_error");
    expect_error("POST", "/", "{}", 404, "invalid_request_error");
    expect_error("GET", "/v1/chat/completions", NULL, 405, "invalid_request_error");
    expect_error("DELETE", "/v1/models", NULL, 405, "invalid_request_error");
    r = request("PUT", "/v1/completions", "{}");
    CHECK(r.status == 405 && strcasestr(r.headers, "Allow: POST"));
    free(r.body);
}

static void test_bad_requests(void)
{
    expect_error("POST", "/v1/chat/completions", "{\"model\": \"qwen3-test\", \"messages\": [", 400,
                 "invalid_request_error");
    expect_error("POST", "/v1/chat/completions", "{\"model\":\"qwen3-test\"}", 400, "invalid_request_error");
    expect_error("POST", "/v1/chat/completions",
                 "{\"model\":\"nope\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", 404,
                 "invalid_request_error");
    expect_error("POST", "/v1/chat/completions", CHAT_BODY("hi", ",\"max_tokens\":-1"), 400, "invalid_request_error");
    expect_error("POST", "/v1/chat/completions", CHAT_BODY("\xc3\x28", ""), 400, "invalid_request_error");
    expect_error("POST", "/v1/chat/completions", CHAT_BODY("hi", ",\"temperature\":\"x\""), 400,
                 "invalid_request_error");
    expect_error("POST", "/v1/completions", "{\"prompt\": 5}", 400, "invalid_request_error");
    expect_error("POST", "/v1/completions", "", 400, "invalid_request_error");
    expect_error("POST", "/v1/chat/completions", CHAT_BODY("reject", ""), 503, "server_error");
    CHECK(health_ok());

    /* Too large: announced by Content-Length, and found while accumulating a
     * chunked upload that announces nothing. */
    size_t big = 10000;
    char *body = malloc(big + 1);
    memset(body, ' ', big);
    body[big] = 0;
    body[0] = '{';
    body[big - 1] = '}';
    expect_error("POST", "/v1/chat/completions", body, 413, "invalid_request_error");
    int fd = connect_server();
    const char *head = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n";
    send_all(fd, head, strlen(head));
    for (int i = 0; i < 5; i++) {
        char sz[16];
        int n = snprintf(sz, sizeof sz, "%zx\r\n", big / 5);
        send_all(fd, sz, (size_t)n);
        send_all(fd, body, big / 5);
        send_all(fd, "\r\n", 2);
    }
    send_all(fd, "0\r\n\r\n", 5);
    size_t n;
    char *raw = read_all(fd, &n);
    close(fd);
    response r;
    decode_response(raw, n, &r);
    CHECK(r.status == 413 && r.body && strstr(r.body, "request_too_large"));
    free(raw);
    free(r.body);
    free(body);
    CHECK(health_ok());
}

static void test_json_responses(void)
{
    response r = request("POST", "/v1/chat/completions", CHAT_BODY("hi", ",\"max_tokens\":3,\"logprobs\":true"));
    cJSON *j = body_json(&r);
    CHECK(r.status == 200);
    cJSON *choice = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    cJSON *msg = cJSON_GetObjectItem(choice, "message");
    CHECK(strcmp(cJSON_GetObjectItem(j, "object")->valuestring, "chat.completion") == 0);
    CHECK(strcmp(cJSON_GetObjectItem(msg, "content")->valuestring, "w0 w1 w2") == 0);
    CHECK(strcmp(cJSON_GetObjectItem(choice, "finish_reason")->valuestring, "length") == 0);
    CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetObjectItem(choice, "logprobs"), "content")) == 3);
    cJSON *usage = cJSON_GetObjectItem(j, "usage");
    CHECK(cJSON_GetObjectItem(usage, "completion_tokens")->valueint == 3 &&
          cJSON_GetObjectItem(usage, "total_tokens")->valueint == 6);
    cJSON_Delete(j);
    free(r.body);

    r = request("POST", "/v1/chat/completions",
                CHAT_BODY("tool", ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}]"));
    j = body_json(&r);
    choice = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    msg = cJSON_GetObjectItem(choice, "message");
    CHECK(r.status == 200 && cJSON_IsNull(cJSON_GetObjectItem(msg, "content")));
    CHECK(strcmp(cJSON_GetObjectItem(msg, "reasoning_content")->valuestring, "let me think") == 0);
    cJSON *call = cJSON_GetArrayItem(cJSON_GetObjectItem(msg, "tool_calls"), 0);
    CHECK(call &&
          strcmp(cJSON_GetObjectItem(cJSON_GetObjectItem(call, "function"), "name")->valuestring, "get_weather") == 0);
    CHECK(strcmp(cJSON_GetObjectItem(choice, "finish_reason")->valuestring, "tool_calls") == 0);
    cJSON_Delete(j);
    free(r.body);

    r = request("POST", "/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":2}");
    j = body_json(&r);
    choice = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    CHECK(r.status == 200 && strcmp(cJSON_GetObjectItem(choice, "text")->valuestring, "w0 w1") == 0);
    CHECK(strcmp(cJSON_GetObjectItem(j, "object")->valuestring, "text_completion") == 0);
    cJSON_Delete(j);
    free(r.body);

    /* An error after submit, non-streaming: the frontend's status and message. */
    r = request("POST", "/v1/completions", "{\"prompt\":\"fail\"}");
    CHECK(r.status == 500 && r.body && strstr(r.body, "decode worker w1 died"));
    free(r.body);
}

static void test_streams(void)
{
    response r = request(
        "POST", "/v1/chat/completions",
        CHAT_BODY("hi", ",\"max_tokens\":4,\"stream\":true,\"stream_options\":{\"include_usage\":true}"));
    CHECK(r.status == 200 && strcasestr(r.headers, "Content-Type: text/event-stream"));
    char *ev[64];
    int n = r.body ? sse_events(r.body, ev, 64) : -1;
    CHECK(n == 1 + 4 + 1 + 1 + 1); /* role, 4 words, finish, usage, [DONE] */
    if (n == 8) {
        cJSON *j = cJSON_Parse(ev[0]);
        cJSON *delta = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "delta");
        CHECK(strcmp(cJSON_GetObjectItem(delta, "role")->valuestring, "assistant") == 0);
        CHECK(strcmp(cJSON_GetObjectItem(j, "object")->valuestring, "chat.completion.chunk") == 0);
        cJSON_Delete(j);
        char text[128] = "";
        for (int i = 1; i <= 4; i++) {
            j = cJSON_Parse(ev[i]);
            delta = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "delta");
            strcat(text, cJSON_GetObjectItem(delta, "content")->valuestring);
            CHECK(cJSON_IsNull(cJSON_GetObjectItem(j, "usage")));
            cJSON_Delete(j);
        }
        CHECK(strcmp(text, "w0 w1 w2 w3") == 0);
        j = cJSON_Parse(ev[5]);
        CHECK(strcmp(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "finish_reason")
                         ->valuestring,
                     "length") == 0);
        cJSON_Delete(j);
        j = cJSON_Parse(ev[6]);
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(j, "choices")) == 0 &&
              cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "completion_tokens")->valueint == 4);
        cJSON_Delete(j);
        CHECK(strcmp(ev[7], "[DONE]") == 0);
    }
    free(r.body);

    /* completions stream: no role chunk, no usage chunk */
    r = request("POST", "/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":2,\"stream\":true}");
    n = r.body ? sse_events(r.body, ev, 64) : -1;
    CHECK(r.status == 200 && n == 4 && strstr(ev[0], "\"text\":\"w0\"") &&
          strstr(ev[2], "\"finish_reason\":\"length\"") && strcmp(ev[3], "[DONE]") == 0);
    free(r.body);

    /* An error mid-stream: an error event, then [DONE]. */
    r = request("POST", "/v1/chat/completions", CHAT_BODY("fail", ",\"stream\":true"));
    n = r.body ? sse_events(r.body, ev, 64) : -1;
    CHECK(r.status == 200 && n == 4 && strstr(ev[2], "\"error\"") && strstr(ev[2], "decode worker w1 died") &&
          strcmp(ev[3], "[DONE]") == 0);
    free(r.body);

    /* Rejected before streaming: a plain error response. */
    r = request("POST", "/v1/chat/completions", CHAT_BODY("reject", ",\"stream\":true"));
    CHECK(r.status == 503 && r.body && strstr(r.body, "no_workers"));
    free(r.body);
}

static int wait_cancelled(int want, double limit_s)
{
    double t0 = eng_now_s();
    while (atomic_load(&n_cancelled) < want && eng_now_s() - t0 < limit_s)
        usleep(5000);
    return atomic_load(&n_cancelled) >= want;
}

static void test_disconnects(void)
{
    /* Streaming: read the first bytes, hang up; the call must be cancelled. */
    int before = atomic_load(&n_cancelled);
    int fd = connect_server();
    const char *body = CHAT_BODY("forever", ",\"stream\":true");
    send_request(fd, "POST", "/v1/chat/completions", body, strlen(body));
    char buf[512];
    CHECK(recv(fd, buf, sizeof buf, 0) > 0);
    usleep(50000);
    close(fd);
    double t0 = eng_now_s();
    CHECK(wait_cancelled(before + 1, 2.0));
    double dt = eng_now_s() - t0;
    CHECK(dt < 1.0);
    printf("streaming disconnect -> cancel in %.0f ms\n", dt * 1000);

    /* Non-streaming: the client leaves while the server is still generating. */
    before = atomic_load(&n_cancelled);
    fd = connect_server();
    body = CHAT_BODY("forever", "");
    send_request(fd, "POST", "/v1/chat/completions", body, strlen(body));
    usleep(100000);
    close(fd);
    t0 = eng_now_s();
    CHECK(wait_cancelled(before + 1, 2.0));
    dt = eng_now_s() - t0;
    CHECK(dt < 1.0);
    printf("non-streaming disconnect -> cancel in %.0f ms\n", dt * 1000);
    CHECK(health_ok());
}

static void *stream_client(void *arg)
{
    (void)arg;
    response r = request("POST", "/v1/chat/completions", CHAT_BODY("hi", ",\"max_tokens\":20,\"stream\":true"));
    char *ev[64];
    int n = r.body ? sse_events(r.body, ev, 64) : -1;
    int ok = r.status == 200 && n == 1 + 20 + 1 + 1 && strcmp(ev[n - 1], "[DONE]") == 0;
    free(r.body);
    return (void *)(intptr_t)ok;
}

static void test_concurrency(void)
{
    enum { N = 32 };
    pthread_t t[N];
    for (int i = 0; i < N; i++)
        pthread_create(&t[i], NULL, stream_client, NULL);
    int ok = 0;
    for (int i = 0; i < N; i++) {
        void *res;
        pthread_join(t[i], &res);
        ok += (int)(intptr_t)res;
    }
    CHECK(ok == N);
}

static void test_metrics_endpoint(void)
{
    response r = request("GET", "/metrics", NULL);
    CHECK(r.status == 200 && strcasestr(r.headers, "text/plain; version=0.0.4"));
    CHECK(r.body &&
          strstr(r.body, "tandem_requests_total{role=\"coordinator\",worker=\"\",outcome=\"cancelled\"} 2\n"));
    CHECK(r.body && strstr(r.body, "tandem_requests_total{role=\"coordinator\",worker=\"\",outcome=\"error\"} 2\n"));
    CHECK(r.body && strstr(r.body, "tandem_num_requests_running{role=\"coordinator\",worker=\"\"} 0\n"));
    CHECK(r.body && strstr(r.body, "tandem_time_to_first_token_seconds_count{role=\"coordinator\",worker=\"\"}"));
    free(r.body);
}

/* 1 when the server closes fd (or resets it) within limit_s without answering. */
static int closed_by_server(int fd, double limit_s)
{
    struct timeval tv = {.tv_sec = (time_t)limit_s, .tv_usec = (suseconds_t)((limit_s - (time_t)limit_s) * 1e6)};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[64];
    return recv(fd, buf, sizeof buf, 0) <= 0 && (errno == 0 || errno == ECONNRESET);
}

/* The connection limits (issue 12): a second server with small ones. */
static void test_limits(coord_http_config cfg)
{
    cfg.max_connections = 8;
    cfg.idle_timeout_s = 1;
    cfg.sse_buffer_bytes = 2048;
    coord_http *h;
    eng_error err;
    REQUIRE(coord_http_start(&cfg, &h, &err) == 0);
    port = coord_http_port(h);

    /* Connections beyond the limit are closed at once; idle ones end after the timeout. */
    int idle[8];
    for (int i = 0; i < 8; i++)
        idle[i] = connect_server();
    usleep(200000);
    int extra = connect_server();
    send_request(extra, "GET", "/health", NULL, 0);
    errno = 0;
    CHECK(closed_by_server(extra, 0.5), "a connection beyond max_connections was served");
    close(extra);
    double t0 = eng_now_s();
    errno = 0;
    CHECK(closed_by_server(idle[0], 5), "an idle connection outlived idle_timeout_s");
    printf("idle connection closed after %.1f s\n", eng_now_s() - t0);
    for (int i = 0; i < 8; i++)
        close(idle[i]);

    /* A client that sends half its headers, then nothing, is cut off too. */
    int slow = connect_server();
    send_all(slow, "GET /health HTTP/1.1\r\nHost: x\r\n", 31);
    errno = 0;
    CHECK(closed_by_server(slow, 5), "a slow-header client held its connection");
    close(slow);
    usleep(300000); /* MHD counts the closed connections out */
    CHECK(health_ok());

    /* A stream whose client never reads: past sse_buffer_bytes the call is cancelled
     * (a tiny receive window keeps the kernel's buffers from hiding the growth). */
    int before = atomic_load(&n_cancelled);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int small = 1024;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    const char *body = CHAT_BODY("many", ",\"stream\":true,\"max_tokens\":100000");
    send_request(fd, "POST", "/v1/chat/completions", body, strlen(body));
    t0 = eng_now_s();
    CHECK(wait_cancelled(before + 1, 60), "a stream nobody reads was not cancelled");
    printf("unread stream cancelled after %.1f s\n", eng_now_s() - t0);
    close(fd);

    /* Refusals that say "come back later" carry Retry-After. */
    response r = request("POST", "/v1/chat/completions", CHAT_BODY("reject", ""));
    CHECK(r.status == 503 && strcasestr(r.headers, "Retry-After: 1"));
    free(r.body);
    coord_http_stop(h);
}

int main(void)
{
    const char *models[] = {"qwen3-test"};
    coord_api_config api = {.models = models, .n_models = 1};
    api.defaults.repetition_penalty = 1;
    met_registry *reg = met_registry_new();
    met_tandem met;
    eng_error err;
    CHECK(met_tandem_register(reg, &met, &err) == 0);
    coord_http_config cfg = {
        .host = "127.0.0.1",
        .port = 0,
        .max_body_bytes = 4096,
        .api = &api,
        .frontend = scripted_frontend(),
        .metrics = reg,
        .met = &met,
    };
    eng_log_set_sink(log_cb, NULL);
    coord_http *h;
    if (coord_http_start(&cfg, &h, &err)) {
        fprintf(stderr, "start: %s\n", err.msg);
        return 1;
    }
    port = coord_http_port(h);
    CHECK(port > 0);

    test_routes();
    test_bad_requests();
    test_json_responses();
    test_streams();
    test_disconnects();
    test_concurrency();
    test_metrics_endpoint();
    /* one line per request, with its id and outcome */
    CHECK(log_has("INFO  http: req chatcmpl-",
                  ": /v1/chat/completions length prompt_tokens=3 completion_tokens=3 ttft_ms="));
    CHECK(log_has("http: req chatcmpl-", ": /v1/chat/completions tool_calls"));
    CHECK(log_has("http: req cmpl-", ": /v1/completions error: decode worker w1 died"));
    CHECK(log_has("http: req chatcmpl-", ": /v1/chat/completions cancelled"));
    CHECK(log_has("http: /v1/chat/completions", "refused 400 invalid_request_error"));
    CHECK(log_has("http: req chatcmpl-", "refused 503 server_error: no decode worker"));
    CHECK(log_has("http: /v1/completions", "refused 413"));

    /* Stopping with a request in flight cancels it and returns. */
    int before = atomic_load(&n_cancelled);
    int fd = connect_server();
    const char *body = CHAT_BODY("forever", ",\"stream\":true");
    send_request(fd, "POST", "/v1/chat/completions", body, strlen(body));
    char buf[256];
    CHECK(recv(fd, buf, sizeof buf, 0) > 0);
    coord_http_stop(h);
    close(fd);
    CHECK(atomic_load(&n_cancelled) == before + 1);
    for (int i = 0; i < 200 && atomic_load(&n_live_calls) > 0; i++)
        usleep(5000);
    CHECK(atomic_load(&n_live_calls) == 0); /* every call released */

    /* Bad configurations. */
    coord_http_config bad = cfg;
    bad.host = "no.such.host.invalid";
    CHECK(coord_http_start(&bad, &h, &err) == -1);
    bad = cfg;
    bad.frontend.submit = NULL;
    CHECK(coord_http_start(&bad, &h, &err) == -1 && strstr(err.msg, "submit"));

    test_limits(cfg);

    met_registry_free(reg);
    printf("test_http: ok (%d calls)\n", atomic_load(&n_submitted));
    return check_summary();
}
