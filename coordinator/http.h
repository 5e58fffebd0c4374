/* http.h: the coordinator's HTTP server (libmicrohttpd).
 *
 * Routes the OpenAI endpoints to a coord_frontend: POST /v1/chat/completions,
 * POST /v1/completions (JSON or SSE streaming), GET /v1/models, GET /health,
 * GET /metrics, and the health probes GET /livez, /startupz, /readyz (metrics.h). Bodies are accumulated up to a limit
 * (413 beyond it). A client that goes away before its response is complete has its call cancelled. One thread per
 * connection, so a slow client never delays another; connections are capped in number and in idle time, and a stream's
 * unread bytes in size. */
#ifndef COORD_HTTP_H
#define COORD_HTTP_H

#include <stddef.h>

#include "common/error.h"
#include "frontend.h"
#include "metrics.h"
#include "openai.h"

typedef struct coord_http_config {
    const char *host; /* "127.0.0.1"; NULL or "" = all interfaces */
    int port;         /* 0: any free port (coord_http_port tells which) */
    /* limits (docs/security.md); 0: the default below */
    size_t max_body_bytes;       /* a request body; beyond: 413 */
    unsigned max_connections;    /* open connections; beyond: a new one is closed at once */
    unsigned per_ip_connections; /* open connections from one address; 0: no limit of its own */
    unsigned idle_timeout_s;     /* a connection silent this long while sending headers or
                                  * body, or not reading its answer, is closed */
    size_t sse_buffer_bytes;     /* stream bytes waiting for a client that does not read;
                                  * beyond: the connection is closed and its call cancelled */
    /* API keys (api_keys.h): when set, every request needs 'Authorization: Bearer KEY'
     * (401 otherwise), except /health, /livez, /readyz, /startupz and /metrics unless
     * auth_probes */
    const char *api_key_file;
    int auth_probes;
    /* TLS (GnuTLS through MHD): PEM files; both or neither. With them the server
     * speaks HTTPS only. */
    const char *tls_cert_file, *tls_key_file;
    const coord_api_config *api; /* must outlive the server */
    coord_frontend frontend;
    met_registry *metrics; /* may be NULL: /metrics then answers 404 */
    const met_tandem *met; /* may be NULL: nothing recorded */
} coord_http_config;

#define COORD_DEFAULT_MAX_BODY_BYTES (16u << 20)
#define COORD_DEFAULT_MAX_CONNECTIONS 1024u
#define COORD_DEFAULT_IDLE_TIMEOUT_S 30u
#define COORD_DEFAULT_SSE_BUFFER_BYTES (1u << 20)

typedef struct coord_http coord_http;

int coord_http_start(const coord_http_config *cfg, coord_http **out, eng_error *err);
int coord_http_port(const coord_http *h);
/* Reads the API key file again (SIGHUP); on failure the old keys stay. Returns the
 * number of keys, or -1 (also when the server has no key file). */
int coord_http_reload_keys(coord_http *h, eng_error *err);
/* Draining: new generation requests are refused (503), /readyz answers 503, the
 * requests in flight go on; coord_http_active() counts those left. */
void coord_http_drain(coord_http *h);
int coord_http_active(coord_http *h);
/* Stops accepting, cancels calls in flight, waits for connections to end. */
void coord_http_stop(coord_http *h);

#endif
