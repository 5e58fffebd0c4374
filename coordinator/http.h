/* http.h: the coordinator's HTTP server (libmicrohttpd).
 *
 * Routes the OpenAI endpoints to a coord_frontend: POST /v1/chat/completions,
 * POST /v1/completions (JSON or SSE streaming), GET /v1/models, GET /health,
 * GET /metrics, and the health probes GET /livez, /startupz, /readyz (metrics.h). Bodies are accumulated up to a limit (413 beyond it). A client
 * that goes away before its response is complete has its call cancelled. One
 * thread per connection, so a slow client never delays another. */
#ifndef COORD_HTTP_H
#define COORD_HTTP_H

#include <stddef.h>

#include "common/error.h"
#include "frontend.h"
#include "metrics.h"
#include "openai.h"

typedef struct coord_http_config {
    const char *host;       /* "127.0.0.1"; NULL or "" = all interfaces */
    int port;               /* 0: any free port (coord_http_port tells which) */
    size_t max_body_bytes;  /* 0: 16 MiB */
    const coord_api_config *api; /* must outlive the server */
    coord_frontend frontend;
    met_registry *metrics;  /* may be NULL: /metrics then answers 404 */
    const met_tandem *met;  /* may be NULL: nothing recorded */
    /* May be NULL. One line per generation request when it ends (request id,
     * endpoint, outcome, token counts, latencies) or is refused (status, error),
     * for the caller to print; called from connection threads. */
    void (*log)(void *ctx, const char *line);
    void *log_ctx;
} coord_http_config;

typedef struct coord_http coord_http;

int coord_http_start(const coord_http_config *cfg, coord_http **out, eng_error *err);
int coord_http_port(const coord_http *h);
/* Draining: new generation requests are refused (503), /readyz answers 503, the
 * requests in flight go on; coord_http_active() counts those left. */
void coord_http_drain(coord_http *h);
int coord_http_active(coord_http *h);
/* Stops accepting, cancels calls in flight, waits for connections to end. */
void coord_http_stop(coord_http *h);

#endif
