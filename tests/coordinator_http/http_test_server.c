/* http_test_server.c: the coordinator's HTTP server as a process, for clients
 * written in other languages (the official OpenAI npm client in
 * openai_client.mjs). Two modes:
 *   http_test_server                the HTTP layer over the scripted frontend
 *   http_test_server --model DIR    HTTP + the real chat pipeline (DIR's tokenizer
 *                                   and chat template) over a token backend that
 *                                   replays, token by token, the text found between
 *                                   "SCRIPT[" and "]SCRIPT" in the prompt, then EOS.
 * Prints "PORT <n>" once listening on 127.0.0.1, serves until its standard input
 * closes, then stops cleanly. Test code only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http.h"
#include "scripted_backend.h"
#include "scripted_frontend.h"

#include "chat_pipeline.h"

static eng_tokenizer *tok;
static int32_t eos[2]; /* <|im_end|> and <|endoftext|>, looked up in the tokenizer */

static int be_submit(void *self, const coord_gen_request *req, const coord_token_sink *sink, coord_backend_call **out,
                     coord_error *err)
{
    (void)self;
    eng_buf prompt = {0};
    eng_detokenize(tok, req->prompt, req->n_prompt, 0, &prompt);
    const char *text = prompt.data ? prompt.data : "";
    const char *start = NULL;
    for (const char *p = text; (p = strstr(p, "SCRIPT[")) != NULL; p++)
        start = p + 7;
    const char *end = start ? strstr(start, "]SCRIPT") : NULL;
    if (!end) {
        eng_buf_free(&prompt);
        return coord_fail(err, 400, "invalid_request_error", NULL, NULL, "no SCRIPT[...]SCRIPT in the prompt");
    }
    int32_t *ids = NULL;
    int n_ids = 0;
    eng_error e;
    int rc = eng_tokenize(tok, start, (size_t)(end - start), 1, &ids, &n_ids, &e);
    eng_buf_free(&prompt);
    if (rc)
        return coord_fail(err, 400, "invalid_request_error", NULL, NULL, "%s", e.msg);
    int32_t *with_eos = realloc(ids, sizeof(int32_t) * (size_t)(n_ids + 1));
    if (!with_eos) {
        free(ids);
        return coord_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    }
    with_eos[n_ids++] = eos[0];
    scripted_replay how = {.stop_id = eos[0], .logprob0 = -0.25f, .delay_us = 1000};
    return scripted_backend_play(&how, req, sink, with_eos, n_ids, out, err);
}

int main(int argc, char **argv)
{
    const char *model_dir = argc == 3 && strcmp(argv[1], "--model") == 0 ? argv[2] : NULL;
    if (argc != 1 && !model_dir) {
        fprintf(stderr, "usage: http_test_server [--model DIR]\n");
        return 2;
    }
    const char *models[] = {"qwen3-test"};
    coord_api_config api = {.models = models, .n_models = 1};
    api.defaults.repetition_penalty = 1;
    api.defaults.top_p = 1;
    met_registry *reg = met_registry_new();
    met_tandem met;
    eng_error err;
    if (!reg || met_tandem_register(reg, &met, &err)) {
        fprintf(stderr, "http_test_server: metrics setup failed\n");
        return 1;
    }
    coord_http_config cfg = {
        .host = "127.0.0.1",
        .max_body_bytes = 1 << 20,
        .api = &api,
        .frontend = scripted_frontend(),
        .metrics = reg,
        .met = &met,
    };
    eng_chat_template *tmpl = NULL;
    coord_pipeline *pipe = NULL;
    if (model_dir) {
        if (eng_tokenizer_load(model_dir, &tok, &err) || eng_chat_template_load(model_dir, &tmpl, &err)) {
            fprintf(stderr, "http_test_server: %s\n", err.msg);
            return 1;
        }
        eos[0] = eng_token_id(tok, "<|im_end|>");
        eos[1] = eng_token_id(tok, "<|endoftext|>");
        if (eos[0] < 0 || eos[1] < 0) {
            fprintf(stderr, "http_test_server: %s has no <|im_end|> or <|endoftext|>\n", model_dir);
            return 1;
        }
        coord_pipeline_config pc = {
            .tok = tok,
            .tmpl = tmpl,
            .backend = {.submit = be_submit, .cancel = scripted_backend_cancel, .release = scripted_backend_release},
            .context_len = 4096,
            .eos_ids = eos,
            .n_eos = 2,
            .reasoning = 1,
        };
        if (coord_pipeline_new(&pc, &pipe, &err)) {
            fprintf(stderr, "http_test_server: %s\n", err.msg);
            return 1;
        }
        cfg.frontend = coord_pipeline_frontend(pipe);
    }
    coord_http *h;
    if (coord_http_start(&cfg, &h, &err)) {
        fprintf(stderr, "http_test_server: %s\n", err.msg);
        return 1;
    }
    printf("PORT %d\n", coord_http_port(h));
    fflush(stdout);
    char line[256];
    while (fgets(line, sizeof line, stdin))
        ;
    coord_http_stop(h);
    usleep(20000); /* replay threads drop their last reference after on_done */
    coord_pipeline_free(pipe);
    eng_chat_template_free(tmpl);
    eng_tokenizer_free(tok);
    met_registry_free(reg);
    return 0;
}
