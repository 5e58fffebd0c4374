/* coordinator.c: assembles the coordinator process (see coordinator.h).
 *
 * Order matters in both directions: the HTTP server submits to the pipeline,
 * which submits to the router, which reads the registry, which the gRPC server
 * feeds. Start builds from the bottom (registry) up and opens the doors (gRPC,
 * then HTTP) last; stop closes HTTP first so that no request arrives while the
 * router drains, then gRPC (no Admin call may reach a freed router), then the router
 * (it waits for its request threads), then the rest. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "chat/template.h"
#include "chat_pipeline.h"
#include "common/addr.h"
#include "common/file.h"
#include "common/log.h"
#include "coordinator.h"
#include "http.h"
#include "model/config.h"
#include "tokenizer/tokenizer.h"

struct coord_coordinator {
    coord_options opt;
    char model_name[256];
    const char *models[1];
    eng_config cfg;
    eng_gen_config gen;
    eng_tokenizer *tok;
    eng_chat_template *tmpl;
    met_registry *metrics;
    met_tandem met;
    coord_registry *registry;
    coord_router *router;
    coord_pipeline *pipeline;
    coord_api_config api;
    coord_http *http;
    rpc_server *rpc;
    coord_admin *admin;
    int rpc_port;
};

static void add_setting(coord_setting *s, int *n, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void add_setting(coord_setting *s, int *n, const char *key, const char *fmt, ...)
{
    if (*n >= COORD_MAX_SETTINGS)
        return;
    snprintf(s[*n].key, sizeof s[*n].key, "%s", key);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s[*n].value, sizeof s[*n].value, fmt, ap);
    va_end(ap);
    (*n)++;
}

/* What Admin.Config answers for the coordinator: its options as they took effect. */
static void show_settings(coord_coordinator *c, const coord_options *opt, const char *host)
{
    coord_setting s[COORD_MAX_SETTINGS];
    int n = 0;
    add_setting(s, &n, "model", "%s", c->model_name);
    add_setting(s, &n, "model_dir", "%s", opt->model_dir);
    add_setting(s, &n, "model_layout", "L%d kv%d d%d, context %d", c->cfg.num_hidden_layers, c->cfg.num_key_value_heads,
                c->cfg.head_dim, c->cfg.max_position_embeddings);
    add_setting(s, &n, "http", "%s://%s:%d", opt->tls_cert ? "https" : "http", host, coord_http_port(c->http));
    add_setting(s, &n, "grpc", "%s:%d", host, c->rpc_port);
    add_setting(s, &n, "mode", "%s", opt->colocated ? "colocated" : "disaggregated");
    add_setting(s, &n, "heartbeat_ms", "%d", coord_registry_heartbeat_ms(c->registry));
    add_setting(s, &n, "api_keys", "%s", opt->api_key_file ? opt->api_key_file : "none (the HTTP API is open)");
    coord_admin_set_settings(c->admin, s, n);
}

int coord_coordinator_start(const coord_options *opt, coord_coordinator **out, eng_error *err)
{
    *out = NULL;
    if (!opt->model_dir || !*opt->model_dir)
        return eng_fail(err, "no model directory");
    coord_coordinator *c = calloc(1, sizeof *c);
    if (!c)
        return eng_fail(err, "out of memory");
    c->opt = *opt;
    const char *host = opt->host && *opt->host ? opt->host : "127.0.0.1";
    c->opt.host = host;
    /* the served model name is the folder's name, as the workers report it */
    eng_path_last_name(opt->model_dir, c->model_name, sizeof c->model_name);
    c->models[0] = c->model_name;
    if (eng_config_load(opt->model_dir, &c->cfg, err) < 0 ||
        eng_gen_config_load(opt->model_dir, &c->cfg, &c->gen, err) < 0 ||
        eng_tokenizer_load(opt->model_dir, &c->tok, err) < 0)
        goto fail;
    eng_error terr;
    if (eng_chat_template_load(opt->model_dir, &c->tmpl, &terr) < 0) {
        c->tmpl = NULL; /* completions still work; chat requests get a 400 saying why */
        eng_log(ENG_LOG_WARN, "coordinator", NULL, "no chat template (%s): /v1/chat/completions is refused", terr.msg);
    }

    if (!(c->metrics = met_registry_new())) {
        eng_fail(err, "out of memory");
        goto fail;
    }
    if (met_tandem_register(c->metrics, &c->met, err) < 0)
        goto fail;

    coord_registry_config rc = {
        .model = c->model_name,
        .n_layers = c->cfg.num_hidden_layers,
        .n_kv_heads = c->cfg.num_key_value_heads,
        .head_dim = c->cfg.head_dim,
        .heartbeat_ms = opt->heartbeat_ms,
        .max_workers = opt->limits.max_workers,
        .metrics = c->metrics,
        .met = &c->met,
    };
    if (coord_registry_new(&rc, &c->registry, err) < 0)
        goto fail;
    coord_router_config ro = {
        .registry = c->registry,
        .colocated = opt->colocated,
        .max_requests = opt->limits.max_requests,
        .max_waiting = opt->limits.max_waiting,
        .migration_limit = opt->limits.migration_limit,
        .migration_max_tokens = opt->limits.migration_max_tokens,
        .overlap_weight = opt->router_overlap_weight,
        .ttft_slo_ms = opt->ttft_slo_ms,
        .met = &c->met,
    };
    if (coord_router_new(&ro, &c->router, err) < 0)
        goto fail;

    int reasoning = c->tmpl && eng_token_id(c->tok, "<think>") >= 0;
    coord_pipeline_config pc = {
        .tok = c->tok,
        .tmpl = c->tmpl,
        .backend = coord_router_backend(c->router),
        .context_len = c->cfg.max_position_embeddings,
        .eos_ids = c->gen.eos_token_id,
        .n_eos = c->gen.n_eos,
        .reasoning = reasoning,
    };
    if (coord_pipeline_new(&pc, &c->pipeline, err) < 0)
        goto fail;

    rpc_status st;
    char bind[300];
    if (eng_addr_join(host, opt->rpc_port, bind, sizeof bind, err) < 0)
        goto fail;
    if (rpc_server_create(bind, &c->rpc_port, &c->rpc, &st) < 0) {
        eng_fail(err, "gRPC server on %s: %s", bind, st.msg);
        goto fail;
    }
    rpc_server_set_max_handlers(c->rpc, opt->limits.rpc_handlers);
    if (coord_registry_serve(c->registry, c->rpc, &st) < 0 ||
        coord_admin_serve(c->rpc, c->registry, c->router, c->model_name, &c->admin, &st) < 0 ||
        rpc_server_start(c->rpc, &st) < 0) {
        eng_fail(err, "gRPC: %s", st.msg);
        goto fail;
    }

    c->api.models = c->models;
    c->api.n_models = 1;
    c->api.max_stop_bytes = (size_t)opt->limits.max_stop_bytes;
    c->api.max_messages = opt->limits.max_messages;
    c->api.max_tools = opt->limits.max_tools;
    eng_sampling_from_gen_config(&c->gen, &c->api.defaults);
    coord_http_config hc = {
        .host = host,
        .port = opt->port,
        .max_body_bytes = (size_t)opt->limits.max_body_bytes,
        .max_connections = (unsigned)opt->limits.max_connections,
        .per_ip_connections = (unsigned)opt->limits.per_ip_connections,
        .idle_timeout_s = (unsigned)opt->limits.idle_timeout_s,
        .sse_buffer_bytes = (size_t)opt->limits.sse_buffer_bytes,
        .api_key_file = opt->api_key_file,
        .auth_probes = opt->auth_probes,
        .tls_cert_file = opt->tls_cert,
        .tls_key_file = opt->tls_key,
        .api = &c->api,
        .frontend = coord_pipeline_frontend(c->pipeline),
        .metrics = c->metrics,
        .met = &c->met,
    };
    if (coord_http_start(&hc, &c->http, err) < 0)
        goto fail;
    show_settings(c, opt, host);
    eng_log(ENG_LOG_INFO, "coordinator", NULL,
            "serving %s (L%d kv%d d%d, context %d, %s mode) on http://%s:%d, gRPC %s:%d", c->model_name,
            c->cfg.num_hidden_layers, c->cfg.num_key_value_heads, c->cfg.head_dim, c->cfg.max_position_embeddings,
            opt->colocated ? "colocated" : "disaggregated", host, coord_http_port(c->http), host, c->rpc_port);
    *out = c;
    return 0;
fail:
    coord_coordinator_stop(c);
    return -1;
}

void coord_coordinator_stop(coord_coordinator *c)
{
    if (!c)
        return;
    coord_http_stop(c->http);     /* no new requests; open ones cancelled and released */
    rpc_server_stop(c->rpc);      /* no more registrations, heartbeats or Admin calls */
    coord_router_free(c->router); /* waits for request threads */
    coord_admin_free(c->admin);
    coord_pipeline_free(c->pipeline);
    coord_registry_free(c->registry);
    met_registry_free(c->metrics);
    eng_chat_template_free(c->tmpl);
    eng_tokenizer_free(c->tok);
    free(c);
}

void coord_coordinator_drain(coord_coordinator *c)
{
    coord_http_drain(c->http);
}
int coord_coordinator_reload_keys(coord_coordinator *c, eng_error *err)
{
    return coord_http_reload_keys(c->http, err);
}
int coord_coordinator_in_flight(coord_coordinator *c)
{
    return coord_http_active(c->http);
}
int coord_coordinator_http_port(const coord_coordinator *c)
{
    return coord_http_port(c->http);
}
int coord_coordinator_rpc_port(const coord_coordinator *c)
{
    return c->rpc_port;
}
const char *coord_coordinator_model(const coord_coordinator *c)
{
    return c->model_name;
}
