/* http.c: the coordinator's HTTP server on libmicrohttpd (see http.h).
 *
 * Threading: MHD runs one thread per connection. A request's generation happens
 * on the frontend's threads, which hand events to the connection through a small
 * mutex/condvar mailbox (struct conn). The connection thread either waits for the
 * final event (non-streaming) or drains SSE bytes as they arrive from MHD's
 * content-reader callback (streaming). Both waits wake every POLL_MS to check the
 * client's socket for a hang-up, so a client that disconnects is noticed within
 * that time even while no token is being produced, and its call is cancelled.
 * Blocking a connection's own thread keeps every request's state machine in
 * straight-line code instead of suspend/resume bookkeeping.
 *
 * A request moves through: RECEIVING (body accumulates, capped at max_body_bytes)
 * -> RUNNING (submitted; events arrive) -> DONE (on_done seen) -> released in
 * MHD's completion callback, which also cancels a call still running when the
 * connection ends early and waits for its on_done before freeing anything. */
#include "common/addr.h"
#include "common/clock.h"
#include "common/file.h"
#include "common/log.h"
#include "api_keys.h"
#include "http.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <microhttpd.h>

#define POLL_MS 100
#define SSE_SOCKET_BUFFER (64 * 1024)

struct coord_http {
    struct MHD_Daemon *daemon;
    coord_http_config cfg;
    int port;
    atomic_int stopping;
    atomic_int draining;      /* coord_http_drain: new generation requests get 503 */
    atomic_int active;        /* generation requests between their headers and their end */
    coord_keys *keys;         /* NULL: no --api-key-file, every request is let in */
    char *tls_cert, *tls_key; /* PEM, NULL without TLS */
    /* metric handles, looked up once (NULL when no metrics) */
    met_metric *m_success, *m_cancelled, *m_error, *m_rejected;
    met_metric *m_ttft, *m_itl, *m_e2e, *m_prompt, *m_gen, *m_running;
};

enum route { R_CHAT, R_COMPLETIONS };

struct conn {
    coord_http *h;
    struct MHD_Connection *mhd;
    enum route route;
    int fd;
    double t_arrival;
    /* receiving */
    eng_buf body;
    int too_large;
    /* running: everything below is guarded by mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int submitted; /* a call exists (release it once done) */
    int done;      /* on_done arrived */
    int cancelled; /* cancel() was called */
    coord_call *call;
    coord_request req;
    int have_req;
    coord_finish finish;
    coord_usage usage;
    coord_error err;
    coord_accum acc; /* non-streaming */
    eng_buf out;     /* streaming: SSE bytes not yet handed to MHD */
    size_t out_pos;
    int overflow; /* the client stopped reading: out reached sse_buffer_bytes */
    size_t text_offset;
    double t_last_token;
    double t_first_token;
    double t_done;
    int n_tokens_seen;
};

static const char *route_path(enum route r)
{
    return r == R_CHAT ? "/v1/chat/completions" : "/v1/completions";
}

/* 1 when the peer has closed its side or the socket failed. */
static int client_gone(int fd)
{
    if (fd < 0)
        return 0;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    if (poll(&p, 1, 0) <= 0)
        return 0;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

static void timed_wait(struct conn *c)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += POLL_MS * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&c->cv, &c->mu, &ts);
}

/* ---- responses ---- */

static enum MHD_Result respond(struct MHD_Connection *mhd, unsigned status, const char *type, char *body,
                               const char *allow)
{
    const char *text = body ? body : "";
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    free(body);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    if (allow)
        MHD_add_response_header(r, "Allow", allow);
    if (status == 429 || status == 503)
        MHD_add_response_header(r, "Retry-After", "1");
    if (status == 401)
        MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    enum MHD_Result rc = MHD_queue_response(mhd, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result respond_error(struct MHD_Connection *mhd, const coord_error *e, const char *allow)
{
    return respond(mhd, (unsigned)e->status, "application/json", coord_format_error(e), allow);
}

static enum MHD_Result respond_fail(coord_http *h, struct MHD_Connection *mhd, int status, const char *type,
                                    const char *param, const char *code, const char *msg, const char *allow)
{
    coord_error e;
    coord_fail(&e, status, type, param, code, "%s", msg);
    met_inc(h->m_rejected, 1);
    return respond_error(mhd, &e, allow);
}

/* ---- sink: events from the frontend's threads ---- */

/* Called with mu held. A client that stops reading would let out grow with every
 * token: past sse_buffer_bytes the connection is shut down, which ends it in MHD
 * and so cancels the call (request_completed). */
static void append_sse(struct conn *c, char *json)
{
    if (!json)
        return;
    if (!c->overflow && c->out.len - c->out_pos + strlen(json) + 8 > c->h->cfg.sse_buffer_bytes) {
        c->overflow = 1;
        eng_log(ENG_LOG_WARN, "http", c->req.id,
                "the client does not read its stream (%zu bytes buffered, the limit is %zu): closing the connection",
                c->out.len - c->out_pos, c->h->cfg.sse_buffer_bytes);
        if (c->fd >= 0)
            shutdown(c->fd, SHUT_RDWR);
    }
    if (!c->overflow)
        eng_buf_printf(&c->out, "data: %s\n\n", json);
    free(json);
}

static void record_tokens(struct conn *c, int n)
{
    if (n <= 0)
        return;
    double t = eng_now_s();
    if (c->n_tokens_seen == 0) {
        c->t_first_token = t;
        met_observe(c->h->m_ttft, t - c->t_arrival);
    } else {
        /* A delta may carry several tokens (held back text released at once):
         * spread the gap evenly over them. */
        for (int i = 0; i < n; i++)
            met_observe(c->h->m_itl, (t - c->t_last_token) / n);
    }
    c->n_tokens_seen += n;
    c->t_last_token = t;
}

static void sink_delta(void *ctx, const coord_delta *d)
{
    struct conn *c = ctx;
    pthread_mutex_lock(&c->mu);
    record_tokens(c, d->n_tokens);
    if (c->req.stream)
        append_sse(c, coord_format_delta_chunk(&c->req, d, &c->text_offset));
    else
        coord_accum_add(&c->acc, &c->req, d);
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void sink_done(void *ctx, coord_finish finish, const coord_usage *usage, const coord_error *err)
{
    struct conn *c = ctx;
    coord_http *h = c->h;
    pthread_mutex_lock(&c->mu);
    c->finish = finish;
    if (usage)
        c->usage = *usage;
    if (finish == COORD_FINISH_ERROR) {
        if (err)
            c->err = *err;
        else
            coord_fail(&c->err, 500, "server_error", NULL, NULL, "generation failed");
        if (c->err.status < 400)
            c->err.status = 500;
    }
    if (c->req.stream && finish != COORD_FINISH_CANCELLED) {
        if (finish == COORD_FINISH_ERROR) {
            append_sse(c, coord_format_error(&c->err));
        } else {
            append_sse(c, coord_format_finish_chunk(&c->req, finish));
            if (c->req.include_usage)
                append_sse(c, coord_format_usage_chunk(&c->req, &c->usage));
        }
        if (!c->overflow)
            eng_buf_puts(&c->out, "data: [DONE]\n\n");
    }
    c->t_done = eng_now_s();
    double e2e = c->t_done - c->t_arrival;
    met_observe(h->m_e2e, e2e);
    met_inc(finish == COORD_FINISH_CANCELLED ? h->m_cancelled
            : finish == COORD_FINISH_ERROR   ? h->m_error
                                             : h->m_success,
            1);
    met_inc(h->m_prompt, c->usage.prompt_tokens);
    met_inc(h->m_gen, c->usage.completion_tokens);
    met_inc(h->m_running, -1);
    c->done = 1;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* Called with mu held. The frontend's cancel() runs without our lock, since its
 * own threads take our lock to deliver events. Only the connection's thread
 * cancels and releases, so the call cannot be released meanwhile. */
static void cancel_locked(struct conn *c)
{
    if (c->submitted && !c->done && !c->cancelled && c->call) {
        c->cancelled = 1;
        coord_call *call = c->call;
        pthread_mutex_unlock(&c->mu);
        c->h->cfg.frontend.cancel(c->h->cfg.frontend.self, call);
        pthread_mutex_lock(&c->mu);
    }
}

/* MHD's idle timeout (idle_timeout_s) bounds slow clients: headers, body, and
 * reading the answer. While the answer is being generated the connection is
 * legitimately silent, so the timeout is off then, and set again (which restarts
 * its clock) once there is something to send. Runs on the connection's thread. */
static void idle_timeout(struct conn *c, int on)
{
    MHD_set_connection_option(c->mhd, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
    if (on)
        MHD_set_connection_option(c->mhd, MHD_CONNECTION_OPTION_TIMEOUT, c->h->cfg.idle_timeout_s);
}

/* ---- streaming: MHD pulls SSE bytes from here ---- */

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct conn *c = cls;
    (void)pos;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        size_t avail = c->out.len - c->out_pos;
        if (avail > 0) {
            size_t n = avail < max ? avail : max;
            memcpy(buf, c->out.data + c->out_pos, n);
            c->out_pos += n;
            if (c->out_pos == c->out.len) {
                eng_buf_clear(&c->out);
                c->out_pos = 0;
            }
            pthread_mutex_unlock(&c->mu);
            idle_timeout(c, 1);
            return (ssize_t)n;
        }
        if (c->done) {
            pthread_mutex_unlock(&c->mu);
            idle_timeout(c, 1);
            return c->finish == COORD_FINISH_CANCELLED ? MHD_CONTENT_READER_END_WITH_ERROR
                                                       : MHD_CONTENT_READER_END_OF_STREAM;
        }
        if (c->h->stopping || client_gone(c->fd)) {
            cancel_locked(c);
            pthread_mutex_unlock(&c->mu);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        timed_wait(c);
    }
}

/* ---- the request's end ---- */

static void conn_free(struct conn *c)
{
    coord_http *h = c->h;
    atomic_fetch_sub(&h->active, 1);
    pthread_mutex_lock(&c->mu);
    cancel_locked(c);
    while (c->submitted && !c->done)
        timed_wait(c);
    int release = c->submitted;
    c->submitted = 0;
    pthread_mutex_unlock(&c->mu);
    if (release) {
        h->cfg.frontend.release(h->cfg.frontend.self, c->call);
        const char *outcome = c->finish == COORD_FINISH_CANCELLED ? "cancelled"
                              : c->finish == COORD_FINISH_ERROR   ? "error"
                                                                  : coord_finish_name(c->finish);
        eng_log(
            ENG_LOG_INFO, "http", c->req.id, "%s %s%s%s prompt_tokens=%d completion_tokens=%d ttft_ms=%.1f e2e_ms=%.1f",
            route_path(c->route), outcome, c->finish == COORD_FINISH_ERROR ? ": " : "",
            c->finish == COORD_FINISH_ERROR ? c->err.message : "", c->usage.prompt_tokens, c->usage.completion_tokens,
            c->n_tokens_seen ? (c->t_first_token - c->t_arrival) * 1e3 : -1.0, (c->t_done - c->t_arrival) * 1e3);
    }
    if (c->have_req)
        coord_request_free(&c->req);
    coord_accum_free(&c->acc);
    eng_buf_free(&c->body);
    eng_buf_free(&c->out);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
}

static void request_completed(void *cls, struct MHD_Connection *mhd, void **con_cls,
                              enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)mhd;
    (void)toe;
    struct conn *c = *con_cls;
    if (c)
        conn_free(c);
    *con_cls = NULL;
}

/* ---- routes ---- */

static enum MHD_Result refuse(struct conn *c, const coord_error *e)
{
    eng_log(ENG_LOG_INFO, "http", c->have_req ? c->req.id : NULL, "%s refused %d %s: %s", route_path(c->route),
            e->status, e->type, e->message);
    return respond_error(c->mhd, e, NULL);
}

static enum MHD_Result serve_generation(struct conn *c)
{
    coord_http *h = c->h;
    struct MHD_Connection *mhd = c->mhd;
    if (c->too_large) {
        coord_error e;
        coord_fail(&e, 413, "invalid_request_error", NULL, "request_too_large",
                   "The request body is larger than the limit of %zu bytes", h->cfg.max_body_bytes);
        met_inc(h->m_rejected, 1);
        return refuse(c, &e);
    }
    coord_error err;
    coord_api api = c->route == R_CHAT ? COORD_API_CHAT : COORD_API_COMPLETIONS;
    if (coord_parse_request(api, c->body.data ? c->body.data : "", c->body.len, h->cfg.api, &c->req, &err)) {
        met_inc(h->m_rejected, 1);
        return refuse(c, &err);
    }
    c->have_req = 1;
    eng_buf_free(&c->body);

    if (c->req.stream && api == COORD_API_CHAT)
        append_sse(c, coord_format_role_chunk(&c->req));
    coord_sink sink = {.ctx = c, .on_delta = sink_delta, .on_done = sink_done};
    coord_call *call = NULL;
    met_inc(h->m_running, 1);
    pthread_mutex_lock(&c->mu);
    c->submitted = 1; /* callbacks may arrive before submit returns */
    pthread_mutex_unlock(&c->mu);
    if (h->cfg.frontend.submit(h->cfg.frontend.self, &c->req, &sink, &call, &err)) {
        pthread_mutex_lock(&c->mu);
        c->submitted = 0;
        pthread_mutex_unlock(&c->mu);
        met_inc(h->m_running, -1);
        if (err.status < 400)
            err.status = 500;
        met_inc(err.status >= 500 && err.status != 503 ? h->m_error : h->m_rejected, 1);
        return refuse(c, &err);
    }
    pthread_mutex_lock(&c->mu);
    c->call = call;
    pthread_mutex_unlock(&c->mu);

    idle_timeout(c, 0);
    if (c->req.stream) {
        /* What the kernel may hold for a client that does not read is bounded
         * too, so that sse_buffer_bytes is reached soon after it stops. */
        int sndbuf = SSE_SOCKET_BUFFER;
        if (c->fd >= 0)
            setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
        struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_reader, c, NULL);
        if (!r)
            return MHD_NO; /* the completion callback cancels the call */
        MHD_add_response_header(r, "Content-Type", "text/event-stream; charset=utf-8");
        MHD_add_response_header(r, "Cache-Control", "no-cache");
        MHD_add_response_header(r, "X-Request-Id", c->req.id);
        enum MHD_Result rc = MHD_queue_response(mhd, MHD_HTTP_OK, r);
        MHD_destroy_response(r);
        return rc;
    }

    /* Non-streaming: wait here for the end, watching for the client leaving. */
    pthread_mutex_lock(&c->mu);
    while (!c->done) {
        timed_wait(c);
        if (!c->done && !c->cancelled && (h->stopping || client_gone(c->fd)))
            cancel_locked(c);
    }
    int gone = c->cancelled;
    pthread_mutex_unlock(&c->mu);
    if (gone)
        return MHD_NO; /* nobody to answer */
    idle_timeout(c, 1);
    if (c->finish == COORD_FINISH_ERROR)
        return respond_error(mhd, &c->err, NULL);
    if (c->finish == COORD_FINISH_CANCELLED) {
        coord_fail(&err, 500, "server_error", NULL, NULL, "the request was cancelled by the server");
        return respond_error(mhd, &err, NULL);
    }
    char *json = coord_format_response(&c->req, &c->acc, c->finish, &c->usage);
    if (!json)
        return MHD_NO;
    return respond(mhd, MHD_HTTP_OK, "application/json", json, NULL);
}

/* /livez: the server answers. /startupz: it only listens once started. /readyz: not
 * draining and the frontend has somewhere to send a request (for the router, a
 * complete prefill + decode route among workers in rotation). */
static int probe(void *ctx, met_probe p, char *why, size_t cap)
{
    coord_http *h = ctx;
    if (p != MET_PROBE_READYZ)
        return 1;
    if (atomic_load(&h->draining))
        return snprintf(why, cap, "draining"), 0;
    if (h->cfg.frontend.ready && !h->cfg.frontend.ready(h->cfg.frontend.self))
        return snprintf(why, cap, "no route: no worker (or prefill + decode pair) in rotation"), 0;
    return 1;
}

static enum MHD_Result serve_get(coord_http *h, struct MHD_Connection *mhd, const char *url)
{
    int p = met_probe_from_path(url);
    if (p >= 0) {
        char body[512];
        int status = met_probe_answer(probe, h, (met_probe)p, body, sizeof body);
        return respond(mhd, (unsigned)status, "text/plain; charset=utf-8", strdup(body), NULL);
    }
    if (strcmp(url, "/health") == 0) {
        int ready = !h->cfg.frontend.ready || h->cfg.frontend.ready(h->cfg.frontend.self);
        return respond(mhd, ready ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, "application/json",
                       strdup(ready ? "{\"status\":\"ok\"}" : "{\"status\":\"unavailable\"}"), NULL);
    }
    if (strcmp(url, "/v1/models") == 0) {
        char *json = coord_format_models(h->cfg.api, (int64_t)time(NULL));
        return json ? respond(mhd, MHD_HTTP_OK, "application/json", json, NULL) : MHD_NO;
    }
    /* /metrics */
    if (!h->cfg.metrics)
        return respond_fail(h, mhd, 404, "invalid_request_error", NULL, "not_found", "metrics are not enabled", NULL);
    eng_buf b = {0};
    if (met_render(h->cfg.metrics, &b)) {
        eng_buf_free(&b);
        return MHD_NO;
    }
    char *text = b.data ? eng_buf_take(&b) : strdup("");
    return respond(mhd, MHD_HTTP_OK, MET_CONTENT_TYPE, text, NULL);
}

/* Paths left open with API keys unless auth_probes: what load balancers, kubelets
 * and Prometheus poll. */
static int open_path(const char *url)
{
    static const char *open[] = {"/health", "/livez", "/readyz", "/startupz", "/metrics"};
    for (size_t i = 0; i < sizeof open / sizeof open[0]; i++)
        if (strcmp(url, open[i]) == 0)
            return 1;
    return 0;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *mhd, const char *url, const char *method,
                              const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
    coord_http *h = cls;
    (void)version;
    struct conn *c = *con_cls;
    if (!c && h->keys && (h->cfg.auth_probes || !open_path(url))) {
        const char *why;
        const char *auth = MHD_lookup_connection_value(mhd, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        if (!coord_keys_allow(h->keys, auth, &why)) {
            eng_log(ENG_LOG_WARN, "http", NULL, "%.20s %.100s refused 401: %s", method, url, why);
            return respond_fail(h, mhd, 401, "invalid_request_error", NULL, "invalid_api_key", why, NULL);
        }
    }
    if (!c) {
        /* First call: headers only. Route, then either answer now or accept a body. */
        static const struct {
            const char *path, *method;
        } routes[] = {{"/v1/chat/completions", "POST"},
                      {"/v1/completions", "POST"},
                      {"/v1/models", "GET"},
                      {"/health", "GET"},
                      {"/metrics", "GET"},
                      {"/livez", "GET"},
                      {"/readyz", "GET"},
                      {"/startupz", "GET"}};
        if (strncmp(url, "/v1/models/", 11) == 0) {
            if (strcmp(method, "GET") != 0)
                return respond_fail(h, mhd, 405, "invalid_request_error", NULL, "method_not_allowed",
                                    "Only GET is allowed on /v1/models/{model}", "GET");
            char *json = coord_format_model(h->cfg.api, url + 11, (int64_t)time(NULL));
            if (!json) {
                char msg[200];
                snprintf(msg, sizeof msg, "The model '%.120s' does not exist", url + 11);
                return respond_fail(h, mhd, 404, "invalid_request_error", "model", "model_not_found", msg, NULL);
            }
            return respond(mhd, MHD_HTTP_OK, "application/json", json, NULL);
        }
        int found = -1;
        for (int i = 0; i < (int)(sizeof routes / sizeof routes[0]); i++)
            if (strcmp(url, routes[i].path) == 0)
                found = i;
        if (found < 0) {
            char msg[160];
            snprintf(msg, sizeof msg, "Unknown path %.100s", url);
            return respond_fail(h, mhd, 404, "invalid_request_error", NULL, "not_found", msg, NULL);
        }
        if (strcmp(method, routes[found].method) != 0) {
            char msg[160];
            snprintf(msg, sizeof msg, "Method %.20s is not allowed on %s; use %s", method, url, routes[found].method);
            return respond_fail(h, mhd, 405, "invalid_request_error", NULL, "method_not_allowed", msg,
                                routes[found].method);
        }
        if (found >= 2)
            return serve_get(h, mhd, url);

        const char *cl = MHD_lookup_connection_value(mhd, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > h->cfg.max_body_bytes) {
            char msg[128];
            snprintf(msg, sizeof msg, "The request body is larger than the limit of %zu bytes", h->cfg.max_body_bytes);
            return respond_fail(h, mhd, 413, "invalid_request_error", NULL, "request_too_large", msg, NULL);
        }
        if (atomic_load(&h->draining))
            return respond_fail(h, mhd, 503, "server_error", NULL, "draining",
                                "The server is shutting down; send the request to another replica", NULL);
        c = calloc(1, sizeof *c);
        if (!c)
            return MHD_NO;
        atomic_fetch_add(&h->active, 1);
        c->h = h;
        c->mhd = mhd;
        c->route = found == 0 ? R_CHAT : R_COMPLETIONS;
        c->t_arrival = eng_now_s();
        c->t_last_token = c->t_arrival;
        c->req.max_tokens = -1;
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(mhd, MHD_CONNECTION_INFO_CONNECTION_FD);
        c->fd = ci ? ci->connect_fd : -1;
        pthread_mutex_init(&c->mu, NULL);
        pthread_cond_init(&c->cv, NULL);
        coord_accum_init(&c->acc);
        *con_cls = c;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        if (!c->too_large) {
            if (c->body.len + *upload_data_size > h->cfg.max_body_bytes) {
                c->too_large = 1;
                eng_buf_free(&c->body);
            } else if (eng_buf_append(&c->body, upload_data, *upload_data_size)) {
                return MHD_NO;
            }
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    c->mhd = mhd;
    return serve_generation(c);
}

/* ---- life cycle ---- */

static void free_tls(coord_http *h)
{
    if (h->tls_key)
        explicit_bzero(h->tls_key, strlen(h->tls_key));
    free(h->tls_key);
    free(h->tls_cert);
}

int coord_http_start(const coord_http_config *cfg, coord_http **out, eng_error *err)
{
    *out = NULL;
    if (!cfg->api || cfg->api->n_models < 1)
        return eng_fail(err, "http: no served model configured");
    if (!cfg->frontend.submit || !cfg->frontend.cancel || !cfg->frontend.release)
        return eng_fail(err, "http: the frontend must provide submit, cancel and release");
    if (cfg->port < 0 || cfg->port > 65535)
        return eng_fail(err, "http: port %d out of range", cfg->port);
    if (!cfg->tls_cert_file != !cfg->tls_key_file)
        return eng_fail(err, "http: TLS needs both a certificate and its key");
    char *cert = NULL, *key = NULL; /* PEM text, for MHD (GnuTLS) */
    if (cfg->tls_cert_file) {
        size_t n;
        eng_error ferr;
        if (!(cert = eng_read_file(cfg->tls_cert_file, &n, &ferr)) ||
            !(key = eng_read_file(cfg->tls_key_file, &n, &ferr))) {
            free(cert);
            return eng_fail(err, "http: TLS: %s", ferr.msg);
        }
    }

    struct addrinfo *ai = NULL;
    const char *host = cfg->host && *cfg->host ? cfg->host : NULL;
    eng_error aerr;
    if (eng_addr_resolve(host, cfg->port, 1, &ai, &aerr) < 0) {
        free(cert), free(key);
        return eng_fail(err, "http: %s", aerr.msg);
    }

    coord_http *h = calloc(1, sizeof *h);
    if (!h) {
        freeaddrinfo(ai);
        free(cert), free(key);
        return eng_fail(err, "http: out of memory");
    }
    h->cfg = *cfg;
    if (cfg->api_key_file && coord_keys_load(cfg->api_key_file, &h->keys, err)) {
        freeaddrinfo(ai);
        free(cert), free(key);
        free(h);
        return -1;
    }
    if (!h->cfg.max_body_bytes)
        h->cfg.max_body_bytes = COORD_DEFAULT_MAX_BODY_BYTES;
    if (!h->cfg.max_connections)
        h->cfg.max_connections = COORD_DEFAULT_MAX_CONNECTIONS;
    if (!h->cfg.idle_timeout_s)
        h->cfg.idle_timeout_s = COORD_DEFAULT_IDLE_TIMEOUT_S;
    if (!h->cfg.sse_buffer_bytes)
        h->cfg.sse_buffer_bytes = COORD_DEFAULT_SSE_BUFFER_BYTES;
    if (cfg->met) {
        met_family *const *f = cfg->met->family;
        const met_labels own = {.role = "coordinator", .worker = ""};
        const char *outcomes[] = {"success", "cancelled", "error", "rejected"};
        met_metric **by_outcome[] = {&h->m_success, &h->m_cancelled, &h->m_error, &h->m_rejected};
        for (int i = 0; i < 4; i++)
            *by_outcome[i] = met_get(f[MET_REQUESTS_TOTAL],
                                     (met_labels){.role = own.role, .worker = own.worker, .outcome = outcomes[i]});
        h->m_ttft = met_get(f[MET_TTFT], own);
        h->m_itl = met_get(f[MET_ITL], own);
        h->m_e2e = met_get(f[MET_E2E], own);
        h->m_prompt = met_get(f[MET_PROMPT_TOKENS], own);
        h->m_gen = met_get(f[MET_GENERATION_TOKENS], own);
        h->m_running = met_get(f[MET_REQUESTS_RUNNING], own);
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    if (cert)
        flags |= MHD_USE_TLS; /* a plaintext client then fails its handshake */
    /* Beyond max_connections (or per_ip_connections from one address) MHD closes a
     * new connection at once; idle_timeout_s ends slow or silent ones. */
    h->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, handle, h, MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_NOTIFY_COMPLETED,
        request_completed, h, MHD_OPTION_CONNECTION_LIMIT, h->cfg.max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        h->cfg.per_ip_connections, MHD_OPTION_CONNECTION_TIMEOUT, h->cfg.idle_timeout_s,
        cert ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, cert, MHD_OPTION_HTTPS_MEM_KEY, key, MHD_OPTION_END);
    freeaddrinfo(ai);
    h->tls_cert = cert, h->tls_key = key; /* MHD keeps pointers to them */
    if (!h->daemon) {
        coord_keys_free(h->keys);
        free_tls(h);
        free(h);
        return eng_fail(err, "http: cannot listen on %s:%d (%s)", host ? host : "*", cfg->port,
                        errno ? strerror(errno) : "libmicrohttpd refused");
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : cfg->port;
    *out = h;
    return 0;
}

int coord_http_reload_keys(coord_http *h, eng_error *err)
{
    if (!h->keys)
        return eng_fail(err, "http: no API key file to reload");
    return coord_keys_reload(h->keys, err);
}

int coord_http_port(const coord_http *h)
{
    return h ? h->port : -1;
}

void coord_http_drain(coord_http *h)
{
    atomic_store(&h->draining, 1);
}

int coord_http_active(coord_http *h)
{
    return atomic_load(&h->active);
}

void coord_http_stop(coord_http *h)
{
    if (!h)
        return;
    h->stopping = 1; /* waits in connection threads see it within POLL_MS */
    MHD_stop_daemon(h->daemon);
    coord_keys_free(h->keys);
    free_tls(h);
    free(h);
}
