/* test_openai.c: OpenAI request validation, response/chunk formatting and stop
 * strings (coordinator/openai.h), without any networking.
 *
 * Every bad input of the serving issue's acceptance 5 (malformed JSON, missing
 * messages, unknown model, negative max_tokens, invalid UTF-8, wrong types) and the
 * other parameter rules map to the right HTTP status, error type and param;
 * formatted bodies are parsed back and checked field by field; the stop matcher
 * gives the same output for every split of the generated text. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "openai.h"
#include "check.h"

static const char *models[] = {"qwen3-test", "other"};
static coord_api_config cfg;

static int parse(coord_api api, const char *body, coord_request *req, coord_error *err)
{
    return coord_parse_request(api, body, strlen(body), &cfg, req, err);
}

/* Expects a failure with this status and param ("" = null). */
static void bad(coord_api api, const char *body, int status, const char *param, const char *msg_part)
{
    coord_request req;
    coord_error err;
    memset(&err, 0, sizeof err);
    int rc = parse(api, body, &req, &err);
    int ok = rc == -1 && err.status == status && strcmp(err.param, param) == 0 &&
             (!msg_part || strstr(err.message, msg_part));
    if (!ok) {
        fprintf(stderr, "body %s: rc %d status %d param '%s' message '%s'\n", body, rc, err.status, err.param,
                err.message);
        check_failed++;
    }
    if (rc == 0)
        coord_request_free(&req);
    /* The error body is OpenAI's shape. */
    char *json = coord_format_error(&err);
    cJSON *e = cJSON_Parse(json);
    cJSON *o = cJSON_GetObjectItem(e, "error");
    CHECK(cJSON_IsString(cJSON_GetObjectItem(o, "message")));
    CHECK(cJSON_IsString(cJSON_GetObjectItem(o, "type")));
    CHECK(cJSON_GetObjectItem(o, "param") && cJSON_GetObjectItem(o, "code"));
    cJSON_Delete(e);
    free(json);
}

#define CHAT(extra) "{\"model\":\"qwen3-test\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]" extra "}"
#define CMPL(extra) "{\"model\":\"qwen3-test\",\"prompt\":\"hi\"" extra "}"

static void test_bad_inputs(void)
{
    const coord_api C = COORD_API_CHAT, T = COORD_API_COMPLETIONS;
    bad(C, "{\"model\": \"qwen3-test\", \"messages\": [", 400, "", "not valid JSON");
    bad(C, "not json", 400, "", "not valid JSON");
    bad(C, "", 400, "", "not valid JSON");
    bad(C, CHAT() " trailing", 400, "", "extra data");
    bad(C, "[1,2]", 400, "", "JSON object");
    bad(C, "{\"model\":\"qwen3-test\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}", 400, "", "UTF-8");
    bad(C, "{\"model\":\"qwen3-test\",\"messages\":[{\"role\":\"user\",\"content\":\"\xed\xa0\x80\"}]}", 400, "",
        "UTF-8");
    bad(C, "{\"model\":\"qwen3-test\",\"messages\":[{\"role\":\"user\",\"content\":\"a\\u0000b\"}]}", 400, "", "NUL");
    bad(C, "{\"model\":\"qwen3-test\"}", 400, "messages", "required");
    bad(C, "{\"model\":\"qwen3-test\",\"messages\":[]}", 400, "messages", "empty");
    bad(C, "{\"model\":\"qwen3-test\",\"messages\":\"hi\"}", 400, "messages", "array");
    bad(C, "{\"model\":\"qwen3-test\",\"messages\":[\"hi\"]}", 400, "messages", "object");
    bad(C, "{\"model\":\"qwen3-test\",\"messages\":[{\"content\":\"hi\"}]}", 400, "messages", "role");
    bad(C, "{\"model\":\"qwen3-test\",\"messages\":[{\"role\":\"wizard\",\"content\":\"hi\"}]}", 400, "messages",
        "wizard");
    bad(C, "{\"model\":\"qwen3-test\",\"messages\":[{\"role\":\"user\",\"content\":5}]}", 400, "messages", "content");
    bad(C, "{\"model\":\"qwen3-test\",\"messages\":[{\"role\":\"user\"}]}", 400, "messages", "required");
    bad(C, "{\"model\":\"qwen3-test\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}", 400,
        "messages", "text");
    bad(C, "{\"model\":\"gpt-9\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", 404, "model", "gpt-9");
    bad(C, "{\"model\":7,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", 400, "model", "string");
    bad(C, CHAT(",\"max_tokens\":-1"), 400, "max_tokens", "between");
    bad(C, CHAT(",\"max_tokens\":\"10\""), 400, "max_tokens", "integer");
    bad(C, CHAT(",\"max_tokens\":1.5"), 400, "max_tokens", "integer");
    bad(C, CHAT(",\"max_completion_tokens\":-3"), 400, "max_completion_tokens", NULL);
    bad(C, CHAT(",\"temperature\":2.5"), 400, "temperature", NULL);
    bad(C, CHAT(",\"temperature\":-0.1"), 400, "temperature", NULL);
    bad(C, CHAT(",\"temperature\":\"hot\""), 400, "temperature", "number");
    bad(C, CHAT(",\"top_p\":0"), 400, "top_p", NULL);
    bad(C, CHAT(",\"top_p\":1.01"), 400, "top_p", NULL);
    bad(C, CHAT(",\"top_k\":-2"), 400, "top_k", NULL);
    bad(C, CHAT(",\"top_k\":2.5"), 400, "top_k", "integer");
    bad(C, CHAT(",\"min_p\":1.5"), 400, "min_p", NULL);
    bad(C, CHAT(",\"presence_penalty\":3"), 400, "presence_penalty", NULL);
    bad(C, CHAT(",\"frequency_penalty\":-2.1"), 400, "frequency_penalty", NULL);
    bad(C, CHAT(",\"repetition_penalty\":0"), 400, "repetition_penalty", NULL);
    bad(C, CHAT(",\"seed\":\"x\""), 400, "seed", "integer");
    bad(C, CHAT(",\"seed\":1.25"), 400, "seed", "integer");
    bad(C, CHAT(",\"stop\":5"), 400, "stop", NULL);
    bad(C, CHAT(",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]"), 400, "stop", "at most 4");
    bad(C, CHAT(",\"stop\":[\"a\",3]"), 400, "stop", NULL);
    bad(C, CHAT(",\"stop\":\"\""), 400, "stop", "empty");
    bad(C, CHAT(",\"logprobs\":3"), 400, "logprobs", "boolean");
    bad(C, CHAT(",\"logprobs\":true,\"top_logprobs\":21"), 400, "top_logprobs", NULL);
    bad(C, CHAT(",\"top_logprobs\":2"), 400, "top_logprobs", "requires");
    bad(C, CHAT(",\"tools\":{}"), 400, "tools", "array");
    bad(C, CHAT(",\"tools\":[{\"type\":\"function\"}]"), 400, "tools", "name");
    bad(C, CHAT(",\"tools\":[{\"type\":\"retrieval\",\"function\":{\"name\":\"f\"}}]"), 400, "tools", NULL);
    bad(C, CHAT(",\"tool_choice\":\"required\""), 400, "tool_choice", "not supported");
    bad(C, CHAT(",\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"f\"}}"), 400, "tool_choice",
        "not supported");
    bad(C, CHAT(",\"chat_template_kwargs\":[1]"), 400, "chat_template_kwargs", "object");
    bad(C, CHAT(",\"n\":2"), 400, "n", "n = 1");
    bad(C, CHAT(",\"n\":\"1\""), 400, "n", "integer");
    bad(C, CHAT(",\"stream\":\"yes\""), 400, "stream", "boolean");
    bad(C, CHAT(",\"stream_options\":{\"include_usage\":true}"), 400, "stream_options", "stream");
    bad(C, CHAT(",\"stream\":true,\"stream_options\":{\"include_usage\":1}"), 400, "stream_options", NULL);
    bad(C, CHAT(",\"logit_bias\":{\"5\":10}"), 400, "logit_bias", NULL);
    bad(C, CHAT(",\"response_format\":{\"type\":\"json_object\"}"), 400, "response_format", "not supported");
    bad(C, CHAT(",\"response_format\":\"json\""), 400, "response_format", NULL);
    bad(T, "{\"model\":\"qwen3-test\"}", 400, "prompt", "required");
    bad(T, CMPL(",\"max_tokens\":-5"), 400, "max_tokens", NULL);
    bad(T, "{\"model\":\"qwen3-test\",\"prompt\":\"\"}", 400, "prompt", "empty");
    bad(T, "{\"model\":\"qwen3-test\",\"prompt\":[]}", 400, "prompt", "empty");
    bad(T, "{\"model\":\"qwen3-test\",\"prompt\":[\"a\",\"b\"]}", 400, "prompt", "one prompt");
    bad(T, "{\"model\":\"qwen3-test\",\"prompt\":[1,-2]}", 400, "prompt", "prompt[1]");
    bad(T, "{\"model\":\"qwen3-test\",\"prompt\":[1,2.5]}", 400, "prompt", NULL);
    bad(T, "{\"model\":\"qwen3-test\",\"prompt\":{\"a\":1}}", 400, "prompt", NULL);
    bad(T, CMPL(",\"logprobs\":true"), 400, "logprobs", "integer");
    bad(T, CMPL(",\"logprobs\":21"), 400, "logprobs", NULL);
    bad(T, CMPL(",\"echo\":true"), 400, "echo", NULL);
    bad(T, CMPL(",\"suffix\":\"x\""), 400, "suffix", NULL);
    bad(T, CMPL(",\"best_of\":3"), 400, "best_of", NULL);
    bad(T, "{\"model\":\"nope\",\"prompt\":\"x\"}", 404, "model", NULL);
}

static void test_good_inputs(void)
{
    coord_request req;
    coord_error err;
    CHECK(parse(COORD_API_CHAT,
                "{\"model\":\"other\",\"messages\":[{\"role\":\"system\",\"content\":\"s\"},"
                "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"}]},"
                "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[]}],"
                "\"temperature\":0.7,\"top_p\":0.8,\"top_k\":20,\"min_p\":0.05,\"presence_penalty\":1.5,"
                "\"frequency_penalty\":-1,\"repetition_penalty\":1.1,\"seed\":-1,\"stop\":[\"x\",\"yy\"],"
                "\"logprobs\":true,\"top_logprobs\":5,\"max_completion_tokens\":9,\"max_tokens\":100,"
                "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{}}}],"
                "\"tool_choice\":\"auto\",\"chat_template_kwargs\":{\"enable_thinking\":false},"
                "\"n\":1,\"response_format\":{\"type\":\"text\"},\"logit_bias\":{},\"stream\":true,\"stream_options\":{"
                "\"include_usage\":true},\"user\":\"u\"}",
                &req, &err) == 0);
    CHECK(strcmp(req.model, "other") == 0 && strncmp(req.id, "chatcmpl-", 9) == 0 && strlen(req.id) == 33);
    CHECK(fabsf(req.sampling.temperature - 0.7f) < 1e-6 && fabsf(req.sampling.top_p - 0.8f) < 1e-6);
    CHECK(req.sampling.top_k == 20 && fabsf(req.sampling.min_p - 0.05f) < 1e-6);
    CHECK(req.sampling.presence_penalty == 1.5f && req.sampling.frequency_penalty == -1.0f);
    CHECK(fabsf(req.sampling.repetition_penalty - 1.1f) < 1e-6);
    CHECK(req.has_seed && req.sampling.seed == UINT64_MAX);
    CHECK(req.n_stop == 2 && strcmp(req.stop[1], "yy") == 0);
    CHECK(req.logprobs && req.top_logprobs == 5 && req.max_tokens == 9);
    CHECK(req.tools && !req.tool_choice_none && req.chat_template_kwargs && req.messages);
    CHECK(req.stream && req.include_usage);
    coord_request_free(&req);

    /* Unset parameters come from the generation config; nulls count as unset. */
    CHECK(parse(COORD_API_CHAT, CHAT(",\"temperature\":null,\"max_tokens\":null,\"tool_choice\":\"none\""), &req,
                &err) == 0);
    CHECK(req.sampling.temperature == 0.6f && req.sampling.top_k == 20 && req.sampling.top_p == 0.95f);
    CHECK(!req.has_seed && req.max_tokens == -1 && req.tool_choice_none && !req.stream && !req.logprobs);
    coord_request_free(&req);

    /* No model: the first served one. */
    CHECK(parse(COORD_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", &req, &err) == 0);
    CHECK(strcmp(req.model, "qwen3-test") == 0);
    coord_request_free(&req);

    /* 151643: Qwen3's <|endoftext|>, an id near the top of its vocabulary */
    CHECK(parse(COORD_API_COMPLETIONS,
                "{\"model\":\"qwen3-test\",\"prompt\":[[1,2,151643]],\"logprobs\":0,"
                "\"max_tokens\":0,\"stop\":\"\\n\"}",
                &req, &err) == 0);
    CHECK(!req.prompt_text && req.n_prompt_ids == 3 && req.prompt_ids[2] == 151643);
    CHECK(req.logprobs && req.top_logprobs == 0 && req.max_tokens == 0 && req.n_stop == 1);
    CHECK(strncmp(req.id, "cmpl-", 5) == 0);
    coord_request_free(&req);

    CHECK(parse(COORD_API_COMPLETIONS, "{\"prompt\":[\"h\\u00e9llo \\ud83d\\ude00\"],\"top_k\":0,\"top_k\":5}", &req,
                &err) == 0);
    CHECK(req.prompt_text && strcmp(req.prompt_text, "h\xc3\xa9llo \xf0\x9f\x98\x80") == 0);
    CHECK(req.sampling.top_k == 0); /* duplicate keys: the first one, as cJSON reads it */
    coord_request_free(&req);

    /* An escaped backslash followed by the text u0000 is fine. */
    CHECK(parse(COORD_API_COMPLETIONS, "{\"prompt\":\"a\\\\u0000\"}", &req, &err) == 0);
    CHECK(req.prompt_text && strcmp(req.prompt_text, "a\\u0000") == 0);
    coord_request_free(&req);

    /* A body that is not NUL-terminated is read only up to its length. */
    const char *body = CMPL() "garbage";
    CHECK(coord_parse_request(COORD_API_COMPLETIONS, body, strlen(CMPL()), &cfg, &req, &err) == 0);
    coord_request_free(&req);
}

static cJSON *parse_json(char *s)
{
    cJSON *j = s ? cJSON_Parse(s) : NULL;
    free(s);
    return j;
}

static const char *str_at(const cJSON *root, const char *path)
{
    /* "a.b.0.c" */
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    const cJSON *cur = root;
    for (char *tok = strtok(buf, "."); tok && cur; tok = strtok(NULL, ".")) {
        if (cJSON_IsArray(cur))
            cur = cJSON_GetArrayItem(cur, atoi(tok));
        else
            cur = cJSON_GetObjectItemCaseSensitive(cur, tok);
    }
    return cJSON_IsString(cur) ? cur->valuestring : NULL;
}

static const cJSON *at(const cJSON *root, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    const cJSON *cur = root;
    for (char *tok = strtok(buf, "."); tok && cur; tok = strtok(NULL, "."))
        cur = cJSON_IsArray(cur) ? cJSON_GetArrayItem(cur, atoi(tok)) : cJSON_GetObjectItemCaseSensitive(cur, tok);
    return cur;
}

static void test_chat_formatting(void)
{
    coord_request req;
    coord_error err;
    CHECK(parse(COORD_API_CHAT,
                CHAT(",\"logprobs\":true,\"top_logprobs\":1,\"stream\":true,"
                     "\"stream_options\":{\"include_usage\":true}"),
                &req, &err) == 0);
    coord_logprob lp[2] = {{"He", 2, -0.25f, 1, {{"He", 2, -0.25f}}}, {"\xc3", 1, -1.5f, 1, {{"\xc3", 1, -1.5f}}}};
    cJSON *calls = cJSON_Parse("[{\"index\":0,\"id\":\"call_0\",\"type\":\"function\","
                               "\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\": 1}\"}}]");
    coord_delta d1 = {.content = "He\xc3",
                      .content_len = 2,
                      .reasoning = "think",
                      .reasoning_len = 5,
                      .logprobs = lp,
                      .n_logprobs = 2,
                      .n_tokens = 2};
    coord_delta d2 = {.tool_calls = calls, .n_tokens = 1};

    cJSON *j = parse_json(coord_format_role_chunk(&req));
    CHECK(strcmp(str_at(j, "object"), "chat.completion.chunk") == 0);
    CHECK(strcmp(str_at(j, "choices.0.delta.role"), "assistant") == 0);
    CHECK(cJSON_IsNull(at(j, "usage")) && cJSON_IsNull(at(j, "choices.0.finish_reason")));
    CHECK(strcmp(str_at(j, "id"), req.id) == 0 && strcmp(str_at(j, "model"), "qwen3-test") == 0);
    cJSON_Delete(j);

    size_t off = 0;
    j = parse_json(coord_format_delta_chunk(&req, &d1, &off));
    CHECK(strcmp(str_at(j, "choices.0.delta.content"), "He") == 0);
    CHECK(strcmp(str_at(j, "choices.0.delta.reasoning_content"), "think") == 0);
    CHECK(strcmp(str_at(j, "choices.0.logprobs.content.0.token"), "He") == 0);
    CHECK(at(j, "choices.0.logprobs.content.0.logprob")->valuedouble == -0.25);
    CHECK(strcmp(str_at(j, "choices.0.logprobs.content.1.token"), "\xef\xbf\xbd") == 0); /* half a char */
    CHECK(at(j, "choices.0.logprobs.content.1.bytes.0")->valueint == 0xc3);
    CHECK(strcmp(str_at(j, "choices.0.logprobs.content.0.top_logprobs.0.token"), "He") == 0);
    CHECK(!at(j, "choices.0.delta.role"));
    cJSON_Delete(j);

    j = parse_json(coord_format_delta_chunk(&req, &d2, &off));
    CHECK(strcmp(str_at(j, "choices.0.delta.tool_calls.0.function.name"), "f") == 0);
    CHECK(at(j, "choices.0.delta.tool_calls.0.index")->valueint == 0);
    CHECK(!at(j, "choices.0.delta.content"));
    cJSON_Delete(j);

    coord_delta empty = {0};
    CHECK(coord_format_delta_chunk(&req, &empty, &off) == NULL);

    j = parse_json(coord_format_finish_chunk(&req, COORD_FINISH_TOOL_CALLS));
    CHECK(strcmp(str_at(j, "choices.0.finish_reason"), "tool_calls") == 0);
    CHECK(cJSON_IsObject(at(j, "choices.0.delta")) && cJSON_GetArraySize(at(j, "choices.0.delta")) == 0);
    cJSON_Delete(j);

    coord_usage u = {7, 3};
    j = parse_json(coord_format_usage_chunk(&req, &u));
    CHECK(cJSON_GetArraySize(at(j, "choices")) == 0 && at(j, "usage.total_tokens")->valueint == 10);
    cJSON_Delete(j);

    /* Non-streaming: content null when only tool calls; index dropped. */
    coord_accum a;
    coord_accum_init(&a);
    coord_delta r1 = {.reasoning = "why", .reasoning_len = 3, .logprobs = lp, .n_logprobs = 1};
    CHECK(coord_accum_add(&a, &req, &r1) == 0 && coord_accum_add(&a, &req, &d2) == 0);
    j = parse_json(coord_format_response(&req, &a, COORD_FINISH_TOOL_CALLS, &u));
    CHECK(strcmp(str_at(j, "object"), "chat.completion") == 0);
    CHECK(cJSON_IsNull(at(j, "choices.0.message.content")));
    CHECK(strcmp(str_at(j, "choices.0.message.reasoning_content"), "why") == 0);
    CHECK(strcmp(str_at(j, "choices.0.message.tool_calls.0.id"), "call_0") == 0);
    CHECK(!at(j, "choices.0.message.tool_calls.0.index"));
    CHECK(strcmp(str_at(j, "choices.0.finish_reason"), "tool_calls") == 0);
    CHECK(at(j, "usage.prompt_tokens")->valueint == 7 && at(j, "usage.completion_tokens")->valueint == 3);
    CHECK(cJSON_GetArraySize(at(j, "choices.0.logprobs.content")) == 1);
    cJSON_Delete(j);
    coord_accum_free(&a);

    coord_accum_init(&a);
    coord_delta c1 = {.content = "Hello \"world\"", .content_len = 13};
    coord_accum_add(&a, &req, &c1);
    j = parse_json(coord_format_response(&req, &a, COORD_FINISH_LENGTH, &u));
    CHECK(strcmp(str_at(j, "choices.0.message.content"), "Hello \"world\"") == 0);
    CHECK(cJSON_IsNull(at(j, "choices.0.message.reasoning_content")) && !at(j, "choices.0.message.tool_calls"));
    CHECK(strcmp(str_at(j, "choices.0.finish_reason"), "length") == 0);
    cJSON_Delete(j);
    coord_accum_free(&a);
    cJSON_Delete(calls);
    coord_request_free(&req);

    /* Without logprobs/include_usage: logprobs null, no usage key in chunks. */
    CHECK(parse(COORD_API_CHAT, CHAT(",\"stream\":true"), &req, &err) == 0);
    j = parse_json(coord_format_delta_chunk(&req, &c1, &off));
    CHECK(!at(j, "usage") && cJSON_IsNull(at(j, "choices.0.logprobs")));
    cJSON_Delete(j);
    coord_request_free(&req);
}

static void test_completion_formatting(void)
{
    coord_request req;
    coord_error err;
    CHECK(parse(COORD_API_COMPLETIONS, CMPL(",\"logprobs\":2"), &req, &err) == 0);
    coord_logprob lp[2] = {{"ab", 2, -0.5f, 2, {{"ab", 2, -0.5f}, {"x", 1, -2.0f}}},
                           {"c", 1, -1.0f, 2, {{"c", 1, -1.0f}, {"d", 1, -3.0f}}}};
    coord_delta d = {.content = "abc", .content_len = 3, .logprobs = lp, .n_logprobs = 2, .n_tokens = 2};
    size_t off = 0;
    cJSON *j = parse_json(coord_format_delta_chunk(&req, &d, &off));
    CHECK(strcmp(str_at(j, "object"), "text_completion") == 0 && strcmp(str_at(j, "choices.0.text"), "abc") == 0);
    CHECK(strcmp(str_at(j, "choices.0.logprobs.tokens.1"), "c") == 0);
    CHECK(at(j, "choices.0.logprobs.token_logprobs.0")->valuedouble == -0.5);
    CHECK(at(j, "choices.0.logprobs.top_logprobs.0.x")->valuedouble == -2.0);
    CHECK(at(j, "choices.0.logprobs.text_offset.1")->valueint == 2 && off == 3);
    cJSON_Delete(j);

    coord_accum a;
    coord_accum_init(&a);
    coord_accum_add(&a, &req, &d);
    coord_accum_add(&a, &req, &d);
    coord_usage u = {2, 4};
    j = parse_json(coord_format_response(&req, &a, COORD_FINISH_STOP, &u));
    CHECK(strcmp(str_at(j, "choices.0.text"), "abcabc") == 0);
    CHECK(at(j, "choices.0.logprobs.text_offset.3")->valueint == 5);
    CHECK(strcmp(str_at(j, "choices.0.finish_reason"), "stop") == 0 && at(j, "usage.total_tokens")->valueint == 6);
    cJSON_Delete(j);
    coord_accum_free(&a);

    j = parse_json(coord_format_finish_chunk(&req, COORD_FINISH_LENGTH));
    CHECK(strcmp(str_at(j, "choices.0.text"), "") == 0 && strcmp(str_at(j, "choices.0.finish_reason"), "length") == 0);
    cJSON_Delete(j);
    coord_request_free(&req);

    j = parse_json(coord_format_models(&cfg, 1234));
    CHECK(strcmp(str_at(j, "object"), "list") == 0 && strcmp(str_at(j, "data.1.id"), "other") == 0);
    CHECK(strcmp(str_at(j, "data.0.object"), "model") == 0 && at(j, "data.0.created")->valueint == 1234);
    cJSON_Delete(j);

    coord_error e;
    coord_fail(&e, 404, "invalid_request_error", "model", "model_not_found", "The model '%s' does not exist", "x\"y");
    j = parse_json(coord_format_error(&e));
    CHECK(strcmp(str_at(j, "error.message"), "The model 'x\"y' does not exist") == 0);
    CHECK(strcmp(str_at(j, "error.code"), "model_not_found") == 0 && strcmp(str_at(j, "error.param"), "model") == 0);
    cJSON_Delete(j);
    coord_fail(&e, 500, "server_error", NULL, NULL, "boom");
    j = parse_json(coord_format_error(&e));
    CHECK(cJSON_IsNull(at(j, "error.param")) && cJSON_IsNull(at(j, "error.code")));
    cJSON_Delete(j);
}

/* Runs the matcher over text cut at the given points; returns the output. */
static char *run_stop(const char *const *stops, int n, const char *text, const size_t *cuts, int n_cuts, int *matched)
{
    coord_stop s;
    coord_stop_init(&s, stops, n);
    eng_buf out = {0};
    size_t prev = 0, len = strlen(text);
    int m = 0;
    for (int i = 0; i <= n_cuts; i++) {
        size_t end = i < n_cuts ? cuts[i] : len;
        size_t before = out.len;
        int rc = coord_stop_push(&s, text + prev, end - prev, &out);
        /* Nothing that could start a stop string is ever released. */
        for (int k = 0; k < n && rc == 0; k++)
            for (size_t p = before; p < out.len; p++)
                if (strncmp(out.data + p, stops[k], out.len - p) == 0 && out.len - p < strlen(stops[k]) &&
                    strncmp(text + p, stops[k], strlen(stops[k])) == 0)
                    check_failed++, fprintf(stderr, "stop prefix leaked\n");
        m |= rc == 1;
        prev = end;
    }
    coord_stop_finish(&s, &out);
    coord_stop_free(&s);
    *matched = m;
    return out.data ? eng_buf_take(&out) : strdup("");
}

static void stop_case(const char *const *stops, int n, const char *text, const char *want, int want_match)
{
    size_t len = strlen(text);
    int matched;
    char *whole = run_stop(stops, n, text, NULL, 0, &matched);
    CHECK(strcmp(whole, want) == 0 && matched == want_match);
    if (strcmp(whole, want) != 0)
        fprintf(stderr, "stop: text '%s' got '%s' want '%s'\n", text, whole, want);
    free(whole);
    /* every split into two and three pieces, and byte by byte */
    for (size_t i = 0; i <= len; i++) {
        for (size_t j = i; j <= len; j++) {
            size_t cuts[2] = {i, j};
            char *got = run_stop(stops, n, text, cuts, 2, &matched);
            if (strcmp(got, want) != 0 || matched != want_match) {
                fprintf(stderr, "stop: text '%s' cut %zu,%zu got '%s' want '%s'\n", text, i, j, got, want);
                check_failed++;
            }
            free(got);
        }
    }
    size_t *cuts = malloc(sizeof(size_t) * (len + 1));
    for (size_t i = 0; i < len; i++)
        cuts[i] = i + 1;
    char *got = run_stop(stops, n, text, cuts, (int)len, &matched);
    CHECK(strcmp(got, want) == 0 && matched == want_match);
    free(got);
    free(cuts);
}

static void test_stop_strings(void)
{
    const char *s1[] = {"STOP"};
    stop_case(s1, 1, "hello STOP world", "hello ", 1);
    stop_case(s1, 1, "hello STO", "hello STO", 0); /* a partial match at the end is released */
    stop_case(s1, 1, "STSTOP", "ST", 1);
    stop_case(s1, 1, "no stop here", "no stop here", 0);
    stop_case(s1, 1, "STOP", "", 1);
    const char *s2[] = {"\n\n", "abc", "bcd"};
    stop_case(s2, 3, "xxabcd", "xx", 1); /* earliest match wins */
    stop_case(s2, 3, "xbcdabc", "x", 1);
    stop_case(s2, 3, "line\nline\n\nmore", "line\nline", 1);
    const char *s3[] = {"\xe4\xb8\x96\xe7\x95\x8c"}; /* 世界 */
    stop_case(s3, 1, "\xe4\xbd\xa0\xe5\xa5\xbd\xe4\xb8\x96\xe7\x95\x8c!", "\xe4\xbd\xa0\xe5\xa5\xbd", 1);
    stop_case(s3, 1, "\xe4\xb8\x96\xe4\xb8\x96", "\xe4\xb8\x96\xe4\xb8\x96", 0);
    const char *s4[] = {"aab"};
    stop_case(s4, 1, "aaab", "a", 1);
    stop_case(s4, 1, "aaaa", "aaaa", 0);
    stop_case(NULL, 0, "anything", "anything", 0);

    /* After a match nothing more comes out. */
    coord_stop s;
    coord_stop_init(&s, s1, 1);
    eng_buf out = {0};
    CHECK(coord_stop_push(&s, "aSTOPb", 6, &out) == 1);
    CHECK(coord_stop_push(&s, "more", 4, &out) == 1);
    coord_stop_finish(&s, &out);
    CHECK(out.len == 1 && out.data[0] == 'a');
    eng_buf_free(&out);
    coord_stop_free(&s);
}

/* Mutated bodies (bytes flipped, cut, duplicated): every one is either accepted
 * or refused with a 4xx, never a crash or a leak (this also runs under ASan). */
static void test_mutations(void)
{
    const char *seeds[] = {
        CHAT(",\"temperature\":0.5,\"stop\":[\"a\"],\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],"
             "\"stream\":true,\"stream_options\":{\"include_usage\":true},\"logprobs\":true,\"top_logprobs\":2"),
        CMPL(",\"max_tokens\":5,\"logprobs\":1,\"seed\":7,\"stop\":\"x\""),
        "{\"prompt\":[1,2,3],\"top_k\":-1,\"min_p\":0.1}",
    };
    uint64_t x = 0x9E3779B97F4A7C15ull;
    int accepted = 0, refused = 0;
    for (int round = 0; round < 3000; round++) {
        const char *seed = seeds[round % 3];
        size_t len = strlen(seed);
        char buf[512];
        memcpy(buf, seed, len);
        int edits = 1 + round % 4;
        for (int e = 0; e < edits; e++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            size_t at = (size_t)(x % len);
            switch ((x >> 32) % 4) {
            case 0: buf[at] = (char)(x >> 40); break;                   /* any byte */
            case 1: len = at; break;                                    /* cut */
            case 2: buf[at] = "{}[]\",:0-e.\\n"[(x >> 40) % 14]; break; /* JSON punctuation */
            default:
                if (len + 8 < sizeof buf) {
                    memmove(buf + at + 8, buf + at, len - at);
                    len += 8;
                }
                break;
            }
            if (len == 0)
                break;
        }
        coord_request req;
        coord_error err;
        coord_api api = round % 3 == 0 ? COORD_API_CHAT : COORD_API_COMPLETIONS;
        if (coord_parse_request(api, buf, len, &cfg, &req, &err) == 0) {
            accepted++;
            coord_request_free(&req);
        } else {
            refused++;
            if (err.status != 400 && err.status != 404) {
                fprintf(stderr, "mutation gave status %d: %s\n", err.status, err.message);
                check_failed++;
            }
            char *json = coord_format_error(&err);
            cJSON *parsed = json ? cJSON_Parse(json) : NULL;
            CHECK(parsed != NULL); /* the error body is valid JSON even for garbage input */
            cJSON_Delete(parsed);
            free(json);
        }
    }
    CHECK(accepted > 0 && refused > 0);
}

/* Issue 12: raw control bytes (a raw NUL used to cut the text silently) and the
 * request limits (stop string length, messages, tools). */
static void test_security_limits(void)
{
    coord_request req;
    coord_error err;
    static const char nul_body[] = "{\"prompt\":\"a\0b\"}";
    CHECK(coord_parse_request(COORD_API_COMPLETIONS, nul_body, sizeof nul_body - 1, &cfg, &req, &err) == -1);
    CHECK(err.status == 400 && strstr(err.message, "U+0000"), "%s", err.message);
    bad(COORD_API_COMPLETIONS, "{\"prompt\":\"a\x01z\"}", 400, "", "U+0001");
    bad(COORD_API_COMPLETIONS, "{\"prompt\":\"line\none\"}", 400, "", "U+000A");
    bad(COORD_API_COMPLETIONS, "{\"prompt\":\"a\\\\\x1f\"}", 400, "", "U+001F");
    bad(COORD_API_COMPLETIONS, "{\"prompt\":\"ok\"\x02}", 400, "", "U+0002");
    /* whitespace between tokens and escaped control characters are fine */
    CHECK(parse(COORD_API_COMPLETIONS, "{\n\t\"prompt\" :\r\n \"a\\u0001\\n\"}", &req, &err) == 0);
    CHECK(req.prompt_text && strcmp(req.prompt_text, "a\x01\n") == 0);
    coord_request_free(&req);

    char stop[600];
    int n = snprintf(stop, sizeof stop, "{\"prompt\":\"hi\",\"stop\":[\"%0*d\"]}", COORD_DEFAULT_MAX_STOP_BYTES, 0);
    CHECK(n > 0 && parse(COORD_API_COMPLETIONS, stop, &req, &err) == 0);
    coord_request_free(&req);
    snprintf(stop, sizeof stop, "{\"prompt\":\"hi\",\"stop\":\"%0*d\"}", COORD_DEFAULT_MAX_STOP_BYTES + 1, 0);
    bad(COORD_API_COMPLETIONS, stop, 400, "stop", "the limit is 256");

    cfg.max_messages = 2;
    cfg.max_tools = 1;
    bad(COORD_API_CHAT,
        "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"user\",\"content\":\"b\"},"
        "{\"role\":\"user\",\"content\":\"c\"}]}",
        400, "messages", "the limit is 2");
    bad(COORD_API_CHAT,
        CHAT(",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"a\"}},"
             "{\"type\":\"function\",\"function\":{\"name\":\"b\"}}]"),
        400, "tools", "the limit is 1");
    CHECK(parse(COORD_API_CHAT, CHAT(",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"a\"}}]"), &req,
                &err) == 0);
    coord_request_free(&req);
    cfg.max_messages = cfg.max_tools = 0;
}

int main(void)
{
    cfg.models = models;
    cfg.n_models = 2;
    memset(&cfg.defaults, 0, sizeof cfg.defaults);
    cfg.defaults.repetition_penalty = 1;
    cfg.defaults.temperature = 0.6f; /* Qwen3's generation_config */
    cfg.defaults.top_k = 20;
    cfg.defaults.top_p = 0.95f;
    test_bad_inputs();
    test_security_limits();
    test_good_inputs();
    test_chat_formatting();
    test_completion_formatting();
    test_stop_strings();
    test_mutations();
    return check_summary();
}
