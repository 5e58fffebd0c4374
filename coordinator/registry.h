/* registry.h: the coordinator's list of workers and their health.
 *
 * Workers call Registry.RegisterWorker once and Registry.Heartbeat every
 * heartbeat_ms (tandem.proto). The registry keeps, per worker id, what it said
 * about itself (role, addresses, capacity, KV layout, transports, model) and its
 * latest load. A worker is ready while its heartbeats arrive; after
 * `missed_heartbeats` intervals of silence, or once the router saw a call to it
 * fail as unreachable, it is failed (out of rotation) until its next heartbeat.
 * A worker whose heartbeat says it is draining (SIGTERM) stays known but leaves the
 * rotation: it finishes its own requests and gets no new ones.
 *
 * Each worker is in one lifecycle state (Tandem__WorkerState), decided in one place
 * (state_locked in registry.c) from what the registry knows:
 *   failed    heartbeats missed, or the router saw calls to it fail
 *   starting  alive, but its EP group is not complete yet
 *   drained   its heartbeat says draining and nothing is running or queued
 *   draining  its heartbeat says draining (SIGTERM): finishing its requests
 *   cordoned  an operator took it out of rotation (coord_registry_cordon)
 *   ready     in rotation: the only state the router sends new requests to
 * Every change is logged once with its reason and exported as the gauge
 * tandem_worker_state{role,worker,state}.
 * A worker serving another model, or whose KV layout cannot hold this model's KV,
 * is refused with the reason. Registering again under a known id replaces the
 * entry (a restarted worker). A worker silent for forget_ms is forgotten, and at
 * most max_workers are known at once, so the list cannot grow without bound.
 *
 * The router reads consistent copies (coord_registry_snapshot) and adds what it
 * sent since the worker's last heartbeat (coord_registry_note_sent), so that a burst
 * of requests between two heartbeats does not all go to the same worker. */
#ifndef COORD_REGISTRY_H
#define COORD_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "coordinator.h"
#include "metrics.h"
#include "model/kvcache.h"
#include "prefix_index.h"
#include "rpc.h"
#include "tandem.pb-c.h"

typedef struct coord_registry_config {
    const char *model;                  /* served model name; a worker must report the same */
    int n_layers, n_kv_heads, head_dim; /* from config.json: a worker's KV layout must match */
    int heartbeat_ms;                   /* told to workers; 0 = 500 */
    int missed_heartbeats;              /* silence (in intervals) before failed; 0 = 3 */
    int max_workers;                    /* workers known at once; registering beyond is refused; 0 = 1024 */
    int forget_ms;                      /* silence after which a worker is forgotten; 0 = 600000 */
    met_registry *metrics;              /* may be NULL; else per-worker gauges are exported */
    const met_tandem *met;
} coord_registry_config;

/* A copy of one worker's entry, as the router and Admin.Status see it. */
typedef struct coord_worker_view {
    char id[128];
    char rpc_address[128];
    char metrics_address[128];
    char transport[32]; /* first transport's name ("tcp") */
    int role;           /* Tandem__Role */
    int state;          /* Tandem__WorkerState */
    int healthy;        /* in rotation: state is READY */
    int draining;       /* heartbeats arrive and say it is draining (DRAINING or DRAINED) */
    int cordoned;       /* an operator cordoned it (it may also be draining or failed) */
    eng_kv_layout layout;
    uint32_t max_running, max_context;
    uint32_t running, queued;
    uint64_t queued_prompt_tokens;
    uint32_t kv_used, kv_total;
    uint32_t max_batch, last_batch;
    uint64_t steps, batched_seqs;
    /* sent by the router since the last heartbeat (not yet in the load above) */
    uint32_t sent_streams, sent_blocks;
    uint64_t sent_prompt_tokens;
    uint64_t registrations; /* how many times this id registered */
    /* Expert parallelism: rank ep_rank of EP group ep_group (ep_size 0 or 1: none);
     * healthy only while every rank of the group is alive and connected (ep_ready). */
    char ep_group[64];
    uint32_t ep_rank, ep_size, experts;
    int ep_ready;
    double since_heartbeat_s;
    double prefill_rate;     /* measured input tokens per second of its forward steps; 0: not yet */
    int64_t admitted_tokens; /* prompt tokens admitted to it and not yet prefilled (admission.h) */
    /* Prefix cache (prefill workers that have one): what its heartbeat said. */
    int has_prefix_cache;
    uint32_t prefix_blocks;
    uint64_t prefix_query_tokens, prefix_hit_tokens;
    /* For one prompt, filled by the router (coord_registry_match_prefix): the prompt
     * tokens this worker holds cached, and the work that saves it in the router's eyes
     * (cached tokens x --router-overlap-weight), subtracted from its queued tokens. */
    int cached_tokens;
    double prefill_credit;
} coord_worker_view;

typedef struct coord_registry coord_registry;

int coord_registry_new(const coord_registry_config *cfg, coord_registry **out, eng_error *err);
/* Stops the health thread and frees everything. NULL is fine. */
void coord_registry_free(coord_registry *r);
/* Serves Registry.RegisterWorker and Registry.Heartbeat on s (before rpc_server_start). */
int coord_registry_serve(coord_registry *r, rpc_server *s, rpc_status *st);

/* The same decisions as the RPC handlers, callable directly (tests, embedding).
 * register: 1 accepted, 0 refused (reason says why). heartbeat: 1 known, 0 unknown
 * (the worker must register again). */
int coord_registry_register(coord_registry *r, const Tandem__WorkerInfo *info, char *reason, size_t cap);
int coord_registry_heartbeat(coord_registry *r, const Tandem__WorkerLoad *load);
int coord_registry_heartbeat_ms(const coord_registry *r);

/* A malloc'd copy of every worker (*n of them, in registration order); free() it.
 * Returns -1 when memory runs out. */
int coord_registry_snapshot(coord_registry *r, coord_worker_view **out, int *n);
/* The router sent streams/blocks/prompt tokens to worker id (counted until its next
 * heartbeat). Unknown ids are ignored. */
void coord_registry_note_sent(coord_registry *r, const char *id, int streams, int blocks, uint64_t prompt_tokens);
/* Admission control's count of prompt tokens on prefill worker id: admitted (tokens > 0)
 * or prefilled / given up (< 0). Unlike the load above, heartbeats do not reset it: it
 * covers requests still on their way to the worker. Unknown ids are ignored. */
void coord_registry_note_admitted(coord_registry *r, const char *id, int tokens);
/* A call to worker id failed as unreachable: out of rotation until it heartbeats again. */
void coord_registry_mark_failed(coord_registry *r, const char *id, const char *why);
/* An operator takes worker id out of rotation (on 1) or puts it back (0); its
 * requests in flight go on. Returns the state after the change, or -1 for an
 * unknown id. The router sees it on its next pick. */
int coord_registry_cordon(coord_registry *r, const char *id, int on);

/* Sets v[i].cached_tokens for a prompt: how much of it worker v[i] holds in its prefix
 * cache, from the block keys of its latest heartbeat (coord_prefix_cached_tokens). */
void coord_registry_match_prefix(coord_registry *r, const int32_t *tokens, int n_tokens, coord_worker_view *v, int n);
/* The router sent the prompt tokens[0..n_tokens) to prefill worker id: its blocks count as
 * cached there until the worker's next heartbeat (coord_prefix_keys_expect), so the next
 * turn of the conversation finds them. Unknown ids and workers without a cache are ignored. */
void coord_registry_expect_prefix(coord_registry *r, const char *id, const int32_t *tokens, int n_tokens);

/* Healthy workers by role: [0] prefill, [1] decode, [2] both. */
void coord_registry_counts(coord_registry *r, int counts[3]);

const char *coord_role_name(int role); /* "prefill", "decode", "both", "unspecified" */

#endif
