/* coordinator.h: the coordinator process as a library (`tandem coordinator`).
 *
 * coord_coordinator_start() reads the model folder's tokenizer, chat template,
 * config.json and generation_config.json (never the weights), then assembles:
 * metrics registry -> worker registry -> router (coord_backend over gRPC workers)
 * -> chat pipeline -> HTTP server (OpenAI API, /health, /metrics, probes), plus one gRPC
 * server carrying Registry (workers register and heartbeat) and Admin (status,
 * cancel). coord_coordinator_stop() takes it down in the reverse order. */
#ifndef COORD_COORDINATOR_H
#define COORD_COORDINATOR_H

#include "common/error.h"

/* Receives each event as one line (no newline). */
typedef void (*coord_log_fn)(void *ctx, const char *line);

/* Every limit input can reach, in one place (docs/security.md has the table); 0
 * takes the default named in the header of the part that enforces it. */
typedef struct coord_limits {
    int max_body_bytes;       /* HTTP request body (413) */
    int max_connections;      /* open HTTP connections (a new one is closed) */
    int per_ip_connections;   /* open HTTP connections from one address; 0: none of its own */
    int idle_timeout_s;       /* slow headers/body, or an answer not read */
    int sse_buffer_bytes;     /* unread stream bytes per client (connection closed, call cancelled) */
    int max_requests;         /* generation requests in flight, waiting included (429) */
    int max_waiting;          /* requests waiting for a worker with room (429) */
    int max_stop_bytes;       /* one stop string (400) */
    int max_messages;         /* messages in a chat request (400) */
    int max_tools;            /* tools in a chat request (400) */
    int max_workers;          /* workers known to the registry (registration refused) */
    int rpc_handlers;         /* gRPC handler threads; calls beyond wait, expiring at their deadline */
    int migration_limit;      /* moves of one stream to another decode worker (then 502) */
    int migration_max_tokens; /* prompt + generated a moving stream may prefill (then 502) */
} coord_limits;

typedef struct coord_options {
    const char *model_dir;
    const char *host; /* HTTP and gRPC bind address; NULL = "127.0.0.1" */
    int port;         /* HTTP; 0 = any free port */
    int rpc_port;     /* gRPC (Registry, Admin); 0 = any free port */
    int colocated;    /* route every request to one role-BOTH worker */
    int heartbeat_ms; /* told to workers; 0 = 500 */
    /* KV-aware routing: a prompt token a prefill worker holds cached counts as this many
     * queued tokens less on it; 0: pick by load only (docs/architecture.md). */
    float router_overlap_weight;
    /* > 0: a request predicted to wait longer for its first token is refused at once
     * (503, Retry-After); 0: off. */
    int ttft_slo_ms;
    coord_limits limits;
    const char *api_key_file;       /* NULL: the HTTP API is open; else 'Authorization: Bearer KEY' */
    int auth_probes;                /* with keys: /health, probes and /metrics need one too */
    const char *tls_cert, *tls_key; /* PEM files: HTTPS only; both or neither */
} coord_options;

typedef struct coord_coordinator coord_coordinator;

int coord_coordinator_start(const coord_options *opt, coord_coordinator **out, eng_error *err);
/* Draining (SIGTERM): new HTTP generation requests get 503, /readyz answers 503,
 * requests in flight go on; the caller waits for coord_coordinator_in_flight() to
 * reach 0 (or its deadline), then stops. */
void coord_coordinator_drain(coord_coordinator *c);
/* Reads the API key file again (SIGHUP); the old keys stay on failure. Returns the
 * number of keys or -1. */
int coord_coordinator_reload_keys(coord_coordinator *c, eng_error *err);
int coord_coordinator_in_flight(coord_coordinator *c);
/* Stops HTTP (cancelling requests in flight), the router, gRPC, frees all. NULL is fine. */
void coord_coordinator_stop(coord_coordinator *c);
int coord_coordinator_http_port(const coord_coordinator *c);
int coord_coordinator_rpc_port(const coord_coordinator *c);
const char *coord_coordinator_model(const coord_coordinator *c); /* served model name */

#endif
