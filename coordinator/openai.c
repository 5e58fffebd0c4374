/* openai.c: OpenAI request validation and response formatting (see openai.h).
 *
 * Validation follows what OpenAI's API answers (and vLLM where OpenAI has no such
 * parameter): every problem is a 400 invalid_request_error naming the parameter,
 * an unknown model a 404 model_not_found, and a JSON null counts as "not given".
 * Responses are built with cJSON so that escaping is never done by hand. */
#include "openai.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <utf8proc.h>

int coord_fail(coord_error *e, int status, const char *type, const char *param, const char *code, const char *fmt, ...)
{
    if (!e)
        return -1;
    memset(e, 0, sizeof *e);
    e->status = status;
    snprintf(e->type, sizeof e->type, "%s", type ? type : "");
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    snprintf(e->code, sizeof e->code, "%s", code ? code : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}

const char *coord_finish_name(coord_finish f)
{
    switch (f) {
    case COORD_FINISH_STOP: return "stop";
    case COORD_FINISH_LENGTH: return "length";
    case COORD_FINISH_TOOL_CALLS: return "tool_calls";
    default: return NULL;
    }
}

int coord_utf8_valid(const char *s, size_t len)
{
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)s;
    while (len > 0) {
        /* ASCII fast path: bodies are mostly ASCII. */
        if (*p < 0x80) {
            p++;
            len--;
            continue;
        }
        utf8proc_int32_t cp;
        utf8proc_ssize_t n = utf8proc_iterate(p, (utf8proc_ssize_t)len, &cp);
        if (n <= 0)
            return 0;
        p += n;
        len -= (size_t)n;
    }
    return 1;
}

/* ---- request parsing ---- */

#define BAD(param, ...) coord_fail(err, 400, "invalid_request_error", param, NULL, __VA_ARGS__)

/* The member, or NULL when absent or JSON null ("not given"). */
static const cJSON *member(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

/* 0: absent; 1: got it; -1: wrong type or range (err filled). */
static int get_number(const cJSON *body, const char *name, double lo, double hi, int lo_open, double *out,
                      coord_error *err)
{
    const cJSON *v = member(body, name);
    if (!v)
        return 0;
    if (!cJSON_IsNumber(v))
        return BAD(name, "'%s' must be a number", name);
    double x = v->valuedouble;
    if (!isfinite(x) || x > hi || x < lo || (lo_open && x == lo))
        return BAD(name, "'%s' must be %s %g and <= %g, got %g", name, lo_open ? ">" : ">=", lo, hi, x);
    *out = x;
    return 1;
}

static int get_int(const cJSON *body, const char *name, double lo, double hi, double *out, coord_error *err)
{
    const cJSON *v = member(body, name);
    if (!v)
        return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || !isfinite(v->valuedouble))
        return BAD(name, "'%s' must be an integer", name);
    if (v->valuedouble < lo || v->valuedouble > hi)
        return BAD(name, "'%s' must be between %.0f and %.0f, got %.0f", name, lo, hi, v->valuedouble);
    *out = v->valuedouble;
    return 1;
}

static int get_bool(const cJSON *body, const char *name, int *out, coord_error *err)
{
    const cJSON *v = member(body, name);
    if (!v)
        return 0;
    if (!cJSON_IsBool(v))
        return BAD(name, "'%s' must be a boolean", name);
    *out = cJSON_IsTrue(v);
    return 1;
}

static void make_id(char *out, size_t size, const char *prefix)
{
    unsigned char r[12];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
        /* Never fails for 12 bytes once the pool is initialised; fall back to time. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ull ^ (uint64_t)ts.tv_sec;
        for (size_t i = 0; i < sizeof r; i++)
            r[i] = (unsigned char)(x >> (8 * (i % 8)));
    }
    int n = snprintf(out, size, "%s", prefix);
    for (size_t i = 0; i < sizeof r && (size_t)n + 2 < size; i++)
        n += snprintf(out + n, size - (size_t)n, "%02x", r[i]);
}

static int parse_messages(const cJSON *body, int max_messages, coord_request *req, coord_error *err)
{
    static const char *roles[] = {"system", "developer", "user", "assistant", "tool"};
    const cJSON *msgs = member(body, "messages");
    if (!msgs)
        return BAD("messages", "'messages' is required");
    if (!cJSON_IsArray(msgs))
        return BAD("messages", "'messages' must be an array");
    if (cJSON_GetArraySize(msgs) == 0)
        return BAD("messages", "'messages' must not be empty");
    if (cJSON_GetArraySize(msgs) > max_messages)
        return BAD("messages", "'messages' holds %d messages; the limit is %d", cJSON_GetArraySize(msgs), max_messages);
    int i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs)
    {
        if (!cJSON_IsObject(m))
            return BAD("messages", "messages[%d] must be an object", i);
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsString(role))
            return BAD("messages", "messages[%d].role must be a string", i);
        int known = 0;
        for (size_t k = 0; k < sizeof roles / sizeof roles[0]; k++)
            known |= strcmp(role->valuestring, roles[k]) == 0;
        if (!known)
            return BAD("messages", "messages[%d].role '%s' is not one of system, developer, user, assistant, tool", i,
                       role->valuestring);
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        int is_assistant = strcmp(role->valuestring, "assistant") == 0;
        if (!content || cJSON_IsNull(content)) {
            if (!is_assistant)
                return BAD("messages", "messages[%d].content is required for role '%s'", i, role->valuestring);
        } else if (cJSON_IsArray(content)) {
            const cJSON *part;
            cJSON_ArrayForEach(part, content)
            {
                const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
                const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
                if (!cJSON_IsObject(part) || !cJSON_IsString(type) || strcmp(type->valuestring, "text") != 0 ||
                    !cJSON_IsString(text))
                    return BAD("messages",
                               "messages[%d].content parts must be {\"type\": \"text\", \"text\": string} "
                               "(only text is supported)",
                               i);
            }
        } else if (!cJSON_IsString(content)) {
            return BAD("messages", "messages[%d].content must be a string or an array of text parts", i);
        }
        i++;
    }
    req->messages = msgs;
    return 0;
}

static int parse_tools(const cJSON *body, int max_tools, coord_request *req, coord_error *err)
{
    const cJSON *tools = member(body, "tools");
    if (tools) {
        if (!cJSON_IsArray(tools))
            return BAD("tools", "'tools' must be an array");
        if (cJSON_GetArraySize(tools) > max_tools)
            return BAD("tools", "'tools' holds %d tools; the limit is %d", cJSON_GetArraySize(tools), max_tools);
        int i = 0;
        const cJSON *t;
        cJSON_ArrayForEach(t, tools)
        {
            const cJSON *type = cJSON_GetObjectItemCaseSensitive(t, "type");
            const cJSON *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
            if (!cJSON_IsObject(t) || !cJSON_IsString(type) || strcmp(type->valuestring, "function") != 0)
                return BAD("tools", "tools[%d] must be an object with \"type\": \"function\"", i);
            if (!cJSON_IsObject(fn) || !cJSON_IsString(name) || !name->valuestring[0])
                return BAD("tools", "tools[%d].function must be an object with a non-empty string 'name'", i);
            i++;
        }
        if (i > 0)
            req->tools = tools;
    }
    const cJSON *choice = member(body, "tool_choice");
    if (choice) {
        if (!cJSON_IsString(choice))
            return BAD("tool_choice", "'tool_choice' must be \"auto\" or \"none\"; forcing a specific function "
                                      "is not supported");
        if (strcmp(choice->valuestring, "none") == 0)
            req->tool_choice_none = 1;
        else if (strcmp(choice->valuestring, "auto") != 0)
            return BAD("tool_choice", "'tool_choice' \"%s\" is not supported; use \"auto\" or \"none\"",
                       choice->valuestring);
    }
    return 0;
}

static int parse_prompt(const cJSON *body, coord_request *req, coord_error *err)
{
    const cJSON *p = member(body, "prompt");
    if (!p)
        return BAD("prompt", "'prompt' is required");
    /* A list holding one prompt is the same as that prompt (batches are not supported). */
    if (cJSON_IsArray(p) && cJSON_GetArraySize(p) == 1) {
        const cJSON *only = cJSON_GetArrayItem(p, 0);
        if (cJSON_IsString(only) || cJSON_IsArray(only))
            p = only;
    }
    if (cJSON_IsString(p)) {
        if (!p->valuestring[0])
            return BAD("prompt", "'prompt' must not be empty");
        if (!(req->prompt_text = strdup(p->valuestring)))
            return coord_fail(err, 500, "server_error", NULL, NULL, "out of memory");
        return 0;
    }
    if (!cJSON_IsArray(p))
        return BAD("prompt", "'prompt' must be a string, an array of token ids, or an array of one of those");
    int n = cJSON_GetArraySize(p);
    if (n == 0)
        return BAD("prompt", "'prompt' must not be empty");
    const cJSON *first = cJSON_GetArrayItem(p, 0);
    if (cJSON_IsString(first) || cJSON_IsArray(first))
        return BAD("prompt", "'prompt' holds %d prompts; only one prompt per request is supported", n);
    if (!(req->prompt_ids = malloc(sizeof(int32_t) * (size_t)n)))
        return coord_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    int i = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, p)
    {
        double v = t->valuedouble;
        if (!cJSON_IsNumber(t) || v != floor(v) || v < 0 || v > INT32_MAX)
            return BAD("prompt", "prompt[%d] must be a non-negative integer token id", i);
        req->prompt_ids[i++] = (int32_t)v;
    }
    req->n_prompt_ids = n;
    return 0;
}

/* Stop strings are matched against every piece of generated text, at a cost that
 * grows with their length (coord_stop_push), hence the byte limit. */
static int add_stop(const cJSON *s, size_t max_bytes, coord_request *req, coord_error *err)
{
    if (!cJSON_IsString(s))
        return BAD("stop", "'stop' must be a string or an array of strings");
    size_t n = strlen(s->valuestring);
    if (n == 0)
        return BAD("stop", "'stop' must not contain empty strings");
    if (n > max_bytes)
        return BAD("stop", "a stop string is %zu bytes; the limit is %zu", n, max_bytes);
    if (!(req->stop[req->n_stop] = strdup(s->valuestring)))
        return coord_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    req->n_stop++;
    return 0;
}

static int parse_stop(const cJSON *body, const coord_api_config *cfg, coord_request *req, coord_error *err)
{
    const cJSON *stop = member(body, "stop");
    size_t max_bytes = cfg->max_stop_bytes ? cfg->max_stop_bytes : COORD_DEFAULT_MAX_STOP_BYTES;
    if (!stop)
        return 0;
    if (cJSON_IsString(stop))
        return add_stop(stop, max_bytes, req, err);
    if (!cJSON_IsArray(stop))
        return BAD("stop", "'stop' must be a string or an array of strings");
    if (cJSON_GetArraySize(stop) > COORD_MAX_STOP)
        return BAD("stop", "'stop' holds at most %d strings", COORD_MAX_STOP);
    const cJSON *s;
    cJSON_ArrayForEach(s, stop)
    {
        if (add_stop(s, max_bytes, req, err))
            return -1;
    }
    return 0;
}

static int parse_sampling(const cJSON *body, coord_request *req, coord_error *err)
{
    eng_sampling *s = &req->sampling;
    double x;
    int rc;
    if ((rc = get_number(body, "temperature", 0, 2, 0, &x, err)) < 0)
        return -1;
    if (rc)
        s->temperature = (float)x;
    if ((rc = get_number(body, "top_p", 0, 1, 1, &x, err)) < 0)
        return -1;
    if (rc)
        s->top_p = (float)x;
    if ((rc = get_int(body, "top_k", -1, INT32_MAX, &x, err)) < 0)
        return -1;
    if (rc)
        s->top_k = (int)x; /* -1 and 0 both mean off, as in vLLM */
    if ((rc = get_number(body, "min_p", 0, 1, 0, &x, err)) < 0)
        return -1;
    if (rc)
        s->min_p = (float)x;
    if ((rc = get_number(body, "presence_penalty", -2, 2, 0, &x, err)) < 0)
        return -1;
    if (rc)
        s->presence_penalty = (float)x;
    if ((rc = get_number(body, "frequency_penalty", -2, 2, 0, &x, err)) < 0)
        return -1;
    if (rc)
        s->frequency_penalty = (float)x;
    if ((rc = get_number(body, "repetition_penalty", 0, 1e6, 1, &x, err)) < 0)
        return -1;
    if (rc)
        s->repetition_penalty = (float)x;
    /* Seeds are 64-bit on our side; JSON numbers are exact up to 2^53. */
    if ((rc = get_int(body, "seed", -9007199254740992.0, 9007199254740992.0, &x, err)) < 0)
        return -1;
    if (rc) {
        s->seed = (uint64_t)(int64_t)x;
        req->has_seed = 1;
    }

    double mt = -1, mct = -1;
    if (get_int(body, "max_tokens", 0, INT32_MAX, &mt, err) < 0)
        return -1;
    if (get_int(body, "max_completion_tokens", 0, INT32_MAX, &mct, err) < 0)
        return -1;
    req->max_tokens = mct >= 0 ? (int)mct : (int)mt; /* the newer name wins, as in OpenAI */
    return 0;
}

static int parse_logprobs(const cJSON *body, coord_request *req, coord_error *err)
{
    double x;
    int rc;
    if (req->api == COORD_API_CHAT) {
        int on = 0;
        if (get_bool(body, "logprobs", &on, err) < 0)
            return -1;
        req->logprobs = on;
        if ((rc = get_int(body, "top_logprobs", 0, ENG_MAX_TOP_LOGPROBS, &x, err)) < 0)
            return -1;
        if (rc) {
            if (!on && x > 0)
                return BAD("top_logprobs", "'top_logprobs' requires 'logprobs' to be true");
            req->top_logprobs = (int)x;
        }
        return 0;
    }
    const cJSON *v = member(body, "logprobs");
    if (v && cJSON_IsBool(v))
        return BAD("logprobs", "'logprobs' must be an integer from 0 to %d for completions", ENG_MAX_TOP_LOGPROBS);
    if ((rc = get_int(body, "logprobs", 0, ENG_MAX_TOP_LOGPROBS, &x, err)) < 0)
        return -1;
    if (rc) {
        req->logprobs = 1;
        req->top_logprobs = (int)x;
    }
    return 0;
}

static int parse_body(const cJSON *body, const coord_api_config *cfg, coord_request *req, coord_error *err)
{
    const cJSON *model = member(body, "model");
    if (model && !cJSON_IsString(model))
        return BAD("model", "'model' must be a string");
    const char *name = model ? model->valuestring : cfg->models[0];
    int found = 0;
    for (int i = 0; i < cfg->n_models; i++)
        found |= strcmp(cfg->models[i], name) == 0;
    if (!found)
        return coord_fail(err, 404, "invalid_request_error", "model", "model_not_found",
                          "The model '%s' does not exist", name);
    if (!(req->model = strdup(name)))
        return coord_fail(err, 500, "server_error", NULL, NULL, "out of memory");

    double n;
    int rc;
    if ((rc = get_int(body, "n", 1, INT32_MAX, &n, err)) < 0)
        return -1;
    if (rc && n != 1)
        return BAD("n", "only n = 1 is supported");
    if ((rc = get_int(body, "best_of", 1, INT32_MAX, &n, err)) < 0)
        return -1;
    if (rc && n != 1)
        return BAD("best_of", "only best_of = 1 is supported");
    int echo = 0;
    if (get_bool(body, "echo", &echo, err) < 0)
        return -1;
    if (echo)
        return BAD("echo", "'echo' is not supported");
    if (member(body, "suffix"))
        return BAD("suffix", "'suffix' is not supported");
    /* Structured output is not implemented: refuse it rather than ignore it. */
    const cJSON *rf = member(body, "response_format");
    if (rf) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(rf, "type");
        if (!cJSON_IsObject(rf) || !cJSON_IsString(type) || strcmp(type->valuestring, "text") != 0)
            return BAD("response_format", "'response_format' other than {\"type\": \"text\"} is not supported");
    }
    const cJSON *bias = member(body, "logit_bias");
    if (bias && (!cJSON_IsObject(bias) || cJSON_GetArraySize(bias) > 0))
        return BAD("logit_bias", "'logit_bias' is not supported");

    if (req->api == COORD_API_CHAT) {
        if (parse_messages(body, cfg->max_messages ? cfg->max_messages : COORD_DEFAULT_MAX_MESSAGES, req, err) ||
            parse_tools(body, cfg->max_tools ? cfg->max_tools : COORD_DEFAULT_MAX_TOOLS, req, err))
            return -1;
        const cJSON *kw = member(body, "chat_template_kwargs");
        if (kw && !cJSON_IsObject(kw))
            return BAD("chat_template_kwargs", "'chat_template_kwargs' must be an object");
        req->chat_template_kwargs = kw;
    } else if (parse_prompt(body, req, err)) {
        return -1;
    }

    if (parse_sampling(body, req, err) || parse_stop(body, cfg, req, err) || parse_logprobs(body, req, err))
        return -1;

    if (get_bool(body, "stream", &req->stream, err) < 0)
        return -1;
    const cJSON *so = member(body, "stream_options");
    if (so) {
        if (!cJSON_IsObject(so))
            return BAD("stream_options", "'stream_options' must be an object");
        if (!req->stream)
            return BAD("stream_options", "'stream_options' is only allowed when 'stream' is true");
        if (get_bool(so, "include_usage", &req->include_usage, err) < 0) {
            snprintf(err->param, sizeof err->param, "stream_options");
            return -1;
        }
    }
    return 0;
}

/* JSON (RFC 8259) allows no raw control character (U+0000..U+001F) inside a string,
 * and cJSON would accept one, a raw NUL silently ending the text there. cJSON also
 * ends strings at an escaped NUL, so "a\u0000b" would become "a". Both are refused
 * here, naming the byte; escapes are skipped pairwise so that "\\u0000" (a
 * backslash, then the text u0000) is not mistaken for one. */
static int check_json_bytes(const char *s, size_t len, coord_error *err)
{
    int in_string = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 && (in_string || (ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r')))
            return BAD(NULL,
                       "The request body contains the control character U+%04X at byte %zu; JSON requires it "
                       "written as an escape (\\u%04X) inside a string",
                       ch, i, ch);
        if (!in_string) {
            in_string = ch == '"';
        } else if (ch == '"') {
            in_string = 0;
        } else if (ch == '\\' && i + 1 < len) {
            if (s[i + 1] == 'u' && i + 5 < len && memcmp(s + i + 2, "0000", 4) == 0)
                return BAD(NULL,
                           "The request body contains a NUL character (\\u0000) at byte %zu, which is not "
                           "supported",
                           i);
            i++;
        }
    }
    return 0;
}

int coord_parse_request(coord_api api, const char *body, size_t len, const coord_api_config *cfg, coord_request *req,
                        coord_error *err)
{
    memset(req, 0, sizeof *req);
    req->api = api;
    req->max_tokens = -1;
    req->sampling = cfg->defaults;
    make_id(req->id, sizeof req->id, api == COORD_API_CHAT ? "chatcmpl-" : "cmpl-");
    req->created = (int64_t)time(NULL);

    if (!coord_utf8_valid(body, len))
        return BAD(NULL, "The request body is not valid UTF-8");
    if (check_json_bytes(body, len, err))
        return -1;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (!root) {
        size_t at = end && end >= body ? (size_t)(end - body) : 0;
        return BAD(NULL, "The request body is not valid JSON (error near byte %zu)", at);
    }
    for (; end && (size_t)(end - body) < len; end++) {
        if (*end != ' ' && *end != '\t' && *end != '\n' && *end != '\r') {
            cJSON_Delete(root);
            return BAD(NULL, "The request body is not valid JSON (extra data after byte %zu)", (size_t)(end - body));
        }
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return BAD(NULL, "The request body must be a JSON object");
    }
    req->body = root;
    if (parse_body(root, cfg, req, err)) {
        coord_request_free(req);
        return -1;
    }
    return 0;
}

void coord_request_free(coord_request *req)
{
    if (!req)
        return;
    cJSON_Delete(req->body);
    free(req->model);
    free(req->prompt_text);
    free(req->prompt_ids);
    for (int i = 0; i < req->n_stop; i++)
        free(req->stop[i]);
    memset(req, 0, sizeof *req);
    req->max_tokens = -1;
}

/* ---- formatting ---- */

/* A float as the double with the fewest digits that still reads back as the same
 * float, so that cJSON prints -0.25 and not -0.25000000372529. OpenAI writes
 * impossible tokens' -inf as -9999.0. */
static double clean_float(float f)
{
    if (isinf(f) || isnan(f))
        return -9999.0;
    char buf[32];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        if ((float)strtod(buf, NULL) == f)
            break;
    }
    return strtod(buf, NULL);
}

/* Token bytes as a JSON-safe string: bytes that are not valid UTF-8 (a token may
 * hold half a character) become U+FFFD; the exact bytes go in the "bytes" array. */
static char *token_text(const char *s, size_t len)
{
    char *out = malloc(len * 3 + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)s;
    while (len > 0) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t n = utf8proc_iterate(p, (utf8proc_ssize_t)len, &cp);
        if (n <= 0) {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            n = 1;
        } else {
            memcpy(out + o, p, (size_t)n);
            o += (size_t)n;
        }
        p += n;
        len -= (size_t)n;
    }
    out[o] = 0;
    return out;
}

static cJSON *add_string_n(cJSON *obj, const char *key, const char *s, size_t len)
{
    char *t = token_text(s, len);
    if (!t)
        return NULL;
    cJSON *v = cJSON_AddStringToObject(obj, key, t);
    free(t);
    return v;
}

static cJSON *bytes_array(const char *s, size_t len)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && i < len; i++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber((unsigned char)s[i]));
    return a;
}

/* {token, logprob, bytes} */
static cJSON *chat_token_obj(const char *tok, size_t len, float lp)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    add_string_n(o, "token", tok, len);
    cJSON_AddNumberToObject(o, "logprob", clean_float(lp));
    cJSON_AddItemToObject(o, "bytes", bytes_array(tok, len));
    return o;
}

static void chat_logprobs_add(cJSON *content, const coord_delta *d)
{
    for (int i = 0; i < d->n_logprobs; i++) {
        const coord_logprob *l = &d->logprobs[i];
        cJSON *o = chat_token_obj(l->token, l->len, l->logprob);
        if (!o)
            return;
        cJSON *top = cJSON_AddArrayToObject(o, "top_logprobs");
        for (int k = 0; top && k < l->n_top; k++)
            cJSON_AddItemToArray(top, chat_token_obj(l->top[k].token, l->top[k].len, l->top[k].logprob));
        cJSON_AddItemToArray(content, o);
    }
}

static cJSON *completion_logprobs_new(void)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddArrayToObject(o, "tokens");
    cJSON_AddArrayToObject(o, "token_logprobs");
    cJSON_AddArrayToObject(o, "top_logprobs");
    cJSON_AddArrayToObject(o, "text_offset");
    return o;
}

static void completion_logprobs_add(cJSON *o, const coord_delta *d, size_t *text_offset)
{
    cJSON *tokens = cJSON_GetObjectItem(o, "tokens"), *lps = cJSON_GetObjectItem(o, "token_logprobs");
    cJSON *tops = cJSON_GetObjectItem(o, "top_logprobs"), *offs = cJSON_GetObjectItem(o, "text_offset");
    for (int i = 0; i < d->n_logprobs; i++) {
        const coord_logprob *l = &d->logprobs[i];
        char *t = token_text(l->token, l->len);
        cJSON_AddItemToArray(tokens, cJSON_CreateString(t ? t : ""));
        free(t);
        cJSON_AddItemToArray(lps, cJSON_CreateNumber(clean_float(l->logprob)));
        cJSON *top = cJSON_CreateObject();
        for (int k = 0; top && k < l->n_top; k++) {
            char *tt = token_text(l->top[k].token, l->top[k].len);
            if (tt && !cJSON_GetObjectItemCaseSensitive(top, tt))
                cJSON_AddNumberToObject(top, tt, clean_float(l->top[k].logprob));
            free(tt);
        }
        cJSON_AddItemToArray(tops, top);
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)*text_offset));
        *text_offset += l->len;
    }
}

char *coord_format_error(const coord_error *e)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *o = cJSON_AddObjectToObject(root, "error");
    if (!o) {
        cJSON_Delete(root);
        return NULL;
    }
    /* The message may quote user input cut at a byte limit: keep it valid UTF-8. */
    add_string_n(o, "message", e->message, strlen(e->message));
    cJSON_AddStringToObject(o, "type", e->type[0] ? e->type : "server_error");
    if (e->param[0])
        cJSON_AddStringToObject(o, "param", e->param);
    else
        cJSON_AddNullToObject(o, "param");
    if (e->code[0])
        cJSON_AddStringToObject(o, "code", e->code);
    else
        cJSON_AddNullToObject(o, "code");
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

void coord_accum_init(coord_accum *a)
{
    memset(a, 0, sizeof *a);
}

void coord_accum_free(coord_accum *a)
{
    eng_buf_free(&a->content);
    eng_buf_free(&a->reasoning);
    cJSON_Delete(a->tool_calls);
    cJSON_Delete(a->logprobs);
    memset(a, 0, sizeof *a);
}

int coord_accum_add(coord_accum *a, const coord_request *req, const coord_delta *d)
{
    if (eng_buf_append(&a->content, d->content ? d->content : "", d->content_len) ||
        eng_buf_append(&a->reasoning, d->reasoning ? d->reasoning : "", d->reasoning_len))
        return -1;
    if (d->tool_calls && cJSON_GetArraySize(d->tool_calls) > 0) {
        if (!a->tool_calls && !(a->tool_calls = cJSON_CreateArray()))
            return -1;
        const cJSON *tc;
        cJSON_ArrayForEach(tc, d->tool_calls)
        {
            cJSON *copy = cJSON_Duplicate(tc, 1);
            if (!copy)
                return -1;
            cJSON_DeleteItemFromObjectCaseSensitive(copy, "index"); /* only streamed deltas carry it */
            cJSON_AddItemToArray(a->tool_calls, copy);
        }
    }
    if (req->logprobs && d->n_logprobs > 0) {
        if (!a->logprobs)
            a->logprobs = req->api == COORD_API_CHAT ? cJSON_CreateArray() : completion_logprobs_new();
        if (!a->logprobs)
            return -1;
        if (req->api == COORD_API_CHAT)
            chat_logprobs_add(a->logprobs, d);
        else
            completion_logprobs_add(a->logprobs, d, &a->text_offset);
    }
    return 0;
}

static cJSON *usage_obj(const coord_usage *u)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddNumberToObject(o, "prompt_tokens", u ? u->prompt_tokens : 0);
    cJSON_AddNumberToObject(o, "completion_tokens", u ? u->completion_tokens : 0);
    cJSON_AddNumberToObject(o, "total_tokens", u ? u->prompt_tokens + u->completion_tokens : 0);
    return o;
}

static cJSON *envelope(const coord_request *req, const char *object)
{
    cJSON *root = cJSON_CreateObject();
    if (!root)
        return NULL;
    cJSON_AddStringToObject(root, "id", req->id);
    cJSON_AddStringToObject(root, "object", object);
    cJSON_AddNumberToObject(root, "created", (double)req->created);
    cJSON_AddStringToObject(root, "model", req->model ? req->model : "");
    return root;
}

static char *finish_json(cJSON *root)
{
    char *s = root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return s;
}

static cJSON *model_obj(const char *id, int64_t created)
{
    cJSON *m = cJSON_CreateObject();
    if (!m)
        return NULL;
    cJSON_AddStringToObject(m, "id", id);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)created);
    cJSON_AddStringToObject(m, "owned_by", "tandem");
    return m;
}

char *coord_format_models(const coord_api_config *cfg, int64_t created)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(root, "data");
    for (int i = 0; data && i < cfg->n_models; i++)
        cJSON_AddItemToArray(data, model_obj(cfg->models[i], created));
    return finish_json(root);
}

char *coord_format_model(const coord_api_config *cfg, const char *id, int64_t created)
{
    for (int i = 0; i < cfg->n_models; i++)
        if (strcmp(cfg->models[i], id) == 0)
            return finish_json(model_obj(id, created));
    return NULL;
}

static void add_finish(cJSON *choice, coord_finish finish)
{
    const char *name = coord_finish_name(finish);
    if (name)
        cJSON_AddStringToObject(choice, "finish_reason", name);
    else
        cJSON_AddNullToObject(choice, "finish_reason");
}

/* A response or chunk envelope holding choice 0, which *choice points at. */
static cJSON *with_one_choice(const coord_request *req, const char *object, cJSON **choice)
{
    cJSON *root = envelope(req, object);
    cJSON *choices = cJSON_AddArrayToObject(root, "choices");
    cJSON *c = cJSON_CreateObject();
    if (!root || !choices || !c) {
        cJSON_Delete(c);
        cJSON_Delete(root);
        return NULL;
    }
    cJSON_AddItemToArray(choices, c);
    cJSON_AddNumberToObject(c, "index", 0);
    *choice = c;
    return root;
}

char *coord_format_response(const coord_request *req, const coord_accum *a, coord_finish finish,
                            const coord_usage *usage)
{
    int chat = req->api == COORD_API_CHAT;
    cJSON *c, *root = with_one_choice(req, chat ? "chat.completion" : "text_completion", &c);
    if (!root)
        return NULL;
    int has_tools = a->tool_calls && cJSON_GetArraySize(a->tool_calls) > 0;
    if (chat) {
        cJSON *msg = cJSON_AddObjectToObject(c, "message");
        cJSON_AddStringToObject(msg, "role", "assistant");
        /* OpenAI: content is null when the answer is only tool calls. */
        if (has_tools && a->content.len == 0)
            cJSON_AddNullToObject(msg, "content");
        else
            cJSON_AddStringToObject(msg, "content", a->content.data ? a->content.data : "");
        if (a->reasoning.len)
            cJSON_AddStringToObject(msg, "reasoning_content", a->reasoning.data);
        else
            cJSON_AddNullToObject(msg, "reasoning_content");
        if (has_tools)
            cJSON_AddItemToObject(msg, "tool_calls", cJSON_Duplicate(a->tool_calls, 1));
        if (req->logprobs) {
            cJSON *lp = cJSON_AddObjectToObject(c, "logprobs");
            cJSON_AddItemToObject(lp, "content", a->logprobs ? cJSON_Duplicate(a->logprobs, 1) : cJSON_CreateArray());
        } else {
            cJSON_AddNullToObject(c, "logprobs");
        }
    } else {
        cJSON_AddStringToObject(c, "text", a->content.data ? a->content.data : "");
        if (req->logprobs)
            cJSON_AddItemToObject(c, "logprobs",
                                  a->logprobs ? cJSON_Duplicate(a->logprobs, 1) : completion_logprobs_new());
        else
            cJSON_AddNullToObject(c, "logprobs");
    }
    add_finish(c, finish);
    cJSON_AddItemToObject(root, "usage", usage_obj(usage));
    return finish_json(root);
}

/* A chunk envelope with one choice; usage null when the client asked for usage. */
static cJSON *chunk(const coord_request *req, cJSON **choice)
{
    int chat = req->api == COORD_API_CHAT;
    cJSON *root = with_one_choice(req, chat ? "chat.completion.chunk" : "text_completion", choice);
    if (root && req->include_usage)
        cJSON_AddNullToObject(root, "usage");
    return root;
}

char *coord_format_role_chunk(const coord_request *req)
{
    cJSON *c;
    cJSON *root = chunk(req, &c);
    if (!root)
        return NULL;
    cJSON *delta = cJSON_AddObjectToObject(c, "delta");
    cJSON_AddStringToObject(delta, "role", "assistant");
    cJSON_AddStringToObject(delta, "content", "");
    cJSON_AddNullToObject(c, "logprobs");
    cJSON_AddNullToObject(c, "finish_reason");
    return finish_json(root);
}

char *coord_format_delta_chunk(const coord_request *req, const coord_delta *d, size_t *text_offset)
{
    int has_tools = d->tool_calls && cJSON_GetArraySize(d->tool_calls) > 0;
    int has_lp = req->logprobs && d->n_logprobs > 0;
    if (!d->content_len && !d->reasoning_len && !has_tools && !has_lp)
        return NULL;
    cJSON *c;
    cJSON *root = chunk(req, &c);
    if (!root)
        return NULL;
    if (req->api == COORD_API_CHAT) {
        cJSON *delta = cJSON_AddObjectToObject(c, "delta");
        if (d->content_len || (has_lp && !d->reasoning_len && !has_tools))
            add_string_n(delta, "content", d->content ? d->content : "", d->content_len);
        if (d->reasoning_len)
            add_string_n(delta, "reasoning_content", d->reasoning, d->reasoning_len);
        if (has_tools)
            cJSON_AddItemToObject(delta, "tool_calls", cJSON_Duplicate(d->tool_calls, 1));
        if (has_lp) {
            cJSON *lp = cJSON_AddObjectToObject(c, "logprobs");
            cJSON *content = cJSON_AddArrayToObject(lp, "content");
            chat_logprobs_add(content, d);
        } else {
            cJSON_AddNullToObject(c, "logprobs");
        }
    } else {
        add_string_n(c, "text", d->content ? d->content : "", d->content_len);
        if (has_lp) {
            cJSON *lp = completion_logprobs_new();
            completion_logprobs_add(lp, d, text_offset);
            cJSON_AddItemToObject(c, "logprobs", lp);
        } else {
            cJSON_AddNullToObject(c, "logprobs");
        }
    }
    cJSON_AddNullToObject(c, "finish_reason");
    return finish_json(root);
}

char *coord_format_finish_chunk(const coord_request *req, coord_finish finish)
{
    cJSON *c;
    cJSON *root = chunk(req, &c);
    if (!root)
        return NULL;
    if (req->api == COORD_API_CHAT)
        cJSON_AddObjectToObject(c, "delta");
    else
        cJSON_AddStringToObject(c, "text", "");
    cJSON_AddNullToObject(c, "logprobs");
    add_finish(c, finish);
    return finish_json(root);
}

char *coord_format_usage_chunk(const coord_request *req, const coord_usage *usage)
{
    cJSON *root = envelope(req, req->api == COORD_API_CHAT ? "chat.completion.chunk" : "text_completion");
    if (!root)
        return NULL;
    cJSON_AddArrayToObject(root, "choices");
    cJSON_AddItemToObject(root, "usage", usage_obj(usage));
    return finish_json(root);
}

/* ---- stop strings ---- */

void coord_stop_init(coord_stop *s, const char *const *stops, int n_stops)
{
    memset(s, 0, sizeof *s);
    s->stops = stops;
    s->n_stops = n_stops;
}

void coord_stop_free(coord_stop *s)
{
    eng_buf_free(&s->held);
}

/* Length of the longest suffix of h[0..n) that is a proper prefix of stop. */
static size_t partial_suffix(const char *h, size_t n, const char *stop)
{
    size_t sl = strlen(stop);
    size_t k = sl - 1 < n ? sl - 1 : n;
    for (; k > 0; k--)
        if (memcmp(h + n - k, stop, k) == 0)
            return k;
    return 0;
}

int coord_stop_push(coord_stop *s, const char *text, size_t len, eng_buf *out)
{
    if (s->matched)
        return 1;
    if (len == 0 && s->held.len == 0)
        return 0;
    if (eng_buf_append(&s->held, text, len))
        return -1;
    const char *h = s->held.data;
    size_t n = s->held.len;
    /* The earliest complete stop string wins. */
    size_t best = n;
    for (int i = 0; i < s->n_stops; i++) {
        const char *p = memmem(h, n, s->stops[i], strlen(s->stops[i]));
        if (p && (size_t)(p - h) < best)
            best = (size_t)(p - h);
    }
    if (best < n) {
        if (eng_buf_append(out, h, best))
            return -1;
        s->matched = 1;
        eng_buf_clear(&s->held);
        return 1;
    }
    size_t keep = 0;
    for (int i = 0; i < s->n_stops; i++) {
        size_t k = partial_suffix(h, n, s->stops[i]);
        if (k > keep)
            keep = k;
    }
    if (eng_buf_append(out, h, n - keep))
        return -1;
    memmove(s->held.data, h + n - keep, keep);
    s->held.len = keep;
    s->held.data[keep] = 0;
    return 0;
}

int coord_stop_finish(coord_stop *s, eng_buf *out)
{
    if (s->matched || s->held.len == 0)
        return 0;
    int rc = eng_buf_append(out, s->held.data, s->held.len);
    eng_buf_clear(&s->held);
    return rc;
}
