/* parser.c: reasoning / content / tool-call splitting of Qwen3 output, incremental.
 *
 * Rules (the whole-text result; streaming gives the same for every split):
 *
 * Reasoning (ENG_PARSE_REASONING). Text after a "<think>" is reasoning until "</think>",
 * whether the model wrote the "<think>" (after optional leading '\n's) or the prompt
 * opened it (ENG_PARSE_THINK_OPEN: Qwen3 thinking models' templates end the generation
 * prompt with "<think>\n"; a "<think>" the model repeats is dropped). Output cut off
 * before "</think>" is all reasoning: the model was still thinking. Output that never
 * opened "<think>" is content, "</think>" and all: Qwen's model-card code and vLLM's
 * qwen3 parser give output without the tags to the content, and with thinking on the
 * Qwen3 template does not open the block in the prompt, so an answer that starts
 * straight with text or a <tool_call> is an answer. The reasoning has the '\n's around
 * it stripped and the content after "</think>" its leading '\n's: Qwen3's template
 * re-renders a turn that way (reasoning_content.strip('\n'), content.lstrip('\n')), so a
 * parsed turn renders back to what the model wrote. The reasoning ends at the first
 * "</think>" (as in vLLM and SGLang): a stream cannot take back content already sent,
 * and the whole text must split the same way. (Qwen's model-card code splits at the
 * last one, which differs only for output holding two.)
 *
 * Tool calls (ENG_PARSE_TOOLS: the request offered tools). Without the flag the content
 * is passed on byte for byte, <tool_call> blocks included, as agents that parse the
 * calls themselves (Qwen-Agent's default) expect. With it, in the content only (never
 * in reasoning), each "<tool_call>" ... "</tool_call>" block whose body is one JSON
 * object with a non-empty string "name" and an "arguments" object (or a string holding
 * the JSON text; absent means {}) becomes a call; arguments keep the model's own JSON
 * text, as OpenAI passes on what the model generated (vLLM re-serialises with
 * json.dumps, which gives the same text for Qwen's usual `{"k": v}` output). A block
 * ends at the first "</tool_call>" before which it is a valid call (so the marker may
 * appear inside JSON strings); when there is none it is malformed: it ends at its first
 * "</tool_call>" (or at the end of the output), stays in the content verbatim, and
 * parsing goes on after it. Whitespace: vLLM's hermes parser keeps only the text before
 * the first call (verbatim, with its trailing newline), drops everything between and
 * after calls, and turns the whole output into content when one block is malformed. We
 * keep all text but drop the whitespace that separates calls: trailing whitespace right
 * before a call, and whitespace-only text after the last call. So
 * "Sure.\n<tool_call>..</tool_call>\n<tool_call>..</tool_call>\n" gives content "Sure."
 * and two calls, and text after the calls keeps its own form. Empty content and
 * reasoning are reported as null (as vLLM does).
 *
 * Streaming. Bytes are held back only while they could still change meaning: a suffix
 * that may begin a marker, the trailing newlines of reasoning, the trailing whitespace of
 * content (a call may follow), a tool-call block until it closes, and an incomplete
 * UTF-8 character. Everything else is emitted at once. */
#include "chat/parser.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define THINK_OPEN "<think>"
#define THINK_CLOSE "</think>"
#define CALL_OPEN "<tool_call>"
#define CALL_CLOSE "</tool_call>"

enum mode {
    M_START,         /* reasoning: before the output shows whether it opens <think> */
    M_REASONING,     /* inside the reasoning */
    M_CONTENT_START, /* after </think>: dropping the content's leading newlines */
    M_CONTENT,       /* content text */
    M_TOOL,          /* inside a <tool_call> block */
    M_DONE,          /* finished */
};

struct eng_parser {
    enum mode mode;
    unsigned flags; /* ENG_PARSE_* */
    char *tag;
    eng_buf pend; /* bytes not yet decided; decided ones before pos */
    size_t pos;
    int lead;           /* reasoning has not emitted anything yet (drop its leading '\n') */
    int after_call;     /* content: only whitespace since the last valid call */
    eng_buf ws_before;  /* whitespace right before the open block */
    eng_buf block;      /* the open block's bytes after <tool_call> */
    int in_str, esc;    /* JSON string state inside the block */
    size_t first_close; /* block length up to its first "</tool_call>"; 0: none yet */
    int n_calls;
};

/* ---- deltas ---- */

void eng_parse_delta_init(eng_parse_delta *d)
{
    memset(d, 0, sizeof *d);
}

static void free_call(eng_tool_call *c)
{
    free(c->id);
    free(c->name);
    free(c->arguments);
}

void eng_parse_delta_clear(eng_parse_delta *d)
{
    eng_buf_clear(&d->reasoning);
    eng_buf_clear(&d->content);
    for (int i = 0; i < d->n_calls; i++)
        free_call(&d->calls[i]);
    d->n_calls = 0;
}

void eng_parse_delta_free(eng_parse_delta *d)
{
    eng_parse_delta_clear(d);
    eng_buf_free(&d->reasoning);
    eng_buf_free(&d->content);
    free(d->calls);
    eng_parse_delta_init(d);
}

/* ---- small text helpers ---- */

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static const char *find(const char *s, size_t n, const char *marker)
{
    return memmem(s, n, marker, strlen(marker));
}

/* Length of the longest suffix of s[0..n) that is a proper prefix of marker. */
static size_t marker_prefix_suffix(const char *s, size_t n, const char *marker)
{
    size_t m = strlen(marker);
    for (size_t k = (n < m - 1 ? n : m - 1); k > 0; k--)
        if (!memcmp(s + n - k, marker, k))
            return k;
    return 0;
}

/* The largest k <= n such that s[0..k) does not end inside a UTF-8 character. */
static size_t utf8_cut(const char *s, size_t n)
{
    for (size_t back = 1; back <= 4 && back <= n; back++) {
        unsigned char c = (unsigned char)s[n - back];
        if ((c & 0xC0) == 0x80)
            continue;
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return need > back ? n - back : n;
    }
    return n; /* not UTF-8 at all: nothing to protect */
}

static int oom(eng_error *err)
{
    return eng_fail(err, "output parser: out of memory");
}

/* ---- emitting ---- */

static int emit_reasoning(eng_parser *p, eng_parse_delta *out, const char *s, size_t n)
{
    if (p->lead) {
        while (n > 0 && *s == '\n')
            s++, n--;
        if (n == 0)
            return 0;
        p->lead = 0;
    }
    return n ? eng_buf_append(&out->reasoning, s, n) : 0;
}

static int emit_content(eng_parser *p, eng_parse_delta *out, const char *s, size_t n)
{
    if (n == 0)
        return 0;
    p->after_call = 0;
    return eng_buf_append(&out->content, s, n);
}

/* ---- tool-call blocks ---- */

static const char *skip_ws(const char *s)
{
    while (is_ws(*s))
        s++;
    return s;
}

static const char *skip_string(const char *s) /* at '"'; returns past the closing '"' */
{
    for (s++; *s && *s != '"'; s++)
        if (*s == '\\' && s[1])
            s++;
    return *s ? s + 1 : s;
}

static const char *skip_value(const char *s)
{
    if (*s == '"')
        return skip_string(s);
    if (*s == '{' || *s == '[') {
        int depth = 0;
        while (*s) {
            if (*s == '"') {
                s = skip_string(s);
                continue;
            }
            if (*s == '{' || *s == '[')
                depth++;
            else if (*s == '}' || *s == ']') {
                if (--depth == 0)
                    return s + 1;
            }
            s++;
        }
        return s;
    }
    while (*s && !is_ws(*s) && *s != ',' && *s != '}' && *s != ']')
        s++;
    return s;
}

/* The source text of the first top-level member `key` of the (already valid) JSON
 * object text; NULL when the key is written with escapes or absent. */
static const char *member_span(const char *obj, const char *key, size_t *len)
{
    size_t klen = strlen(key);
    const char *s = skip_ws(obj);
    if (*s != '{')
        return NULL;
    s = skip_ws(s + 1);
    while (*s == '"') {
        const char *k = s + 1;
        s = skip_string(s);
        int match = (size_t)(s - 1 - k) == klen && !memcmp(k, key, klen);
        s = skip_ws(s);
        if (*s != ':')
            return NULL;
        const char *v = skip_ws(s + 1);
        s = skip_value(v);
        if (match) {
            *len = (size_t)(s - v);
            return v;
        }
        s = skip_ws(s);
        if (*s != ',')
            return NULL;
        s = skip_ws(s + 1);
    }
    return NULL;
}

/* Turns a block body into a call; 1 if it is one, 0 if malformed, -1 out of memory. */
static int parse_call(eng_parser *p, const char *body, size_t n, eng_parse_delta *out)
{
    char *text = malloc(n + 1);
    if (!text)
        return -1;
    memcpy(text, body, n);
    text[n] = 0;
    int rc = 0;
    char *name = NULL, *args = NULL, *id = NULL;
    cJSON *root = cJSON_ParseWithOpts(text, NULL, 1);
    if (!root || !cJSON_IsObject(root))
        goto done;
    const cJSON *jname = cJSON_GetObjectItemCaseSensitive(root, "name");
    const cJSON *jargs = cJSON_GetObjectItemCaseSensitive(root, "arguments");
    if (!cJSON_IsString(jname) || !jname->valuestring[0])
        goto done;
    if (jargs && !cJSON_IsObject(jargs) && !cJSON_IsString(jargs))
        goto done;
    rc = -1;
    name = strdup(jname->valuestring);
    if (!jargs) {
        args = strdup("{}");
    } else if (cJSON_IsString(jargs)) {
        args = strdup(jargs->valuestring);
    } else {
        size_t alen;
        const char *span = member_span(text, "arguments", &alen);
        args = span ? strndup(span, alen) : cJSON_PrintUnformatted(jargs);
    }
    char idbuf[160];
    if (p->tag)
        snprintf(idbuf, sizeof idbuf, "call_%s_%d", p->tag, p->n_calls);
    else
        snprintf(idbuf, sizeof idbuf, "call_%d", p->n_calls);
    id = strdup(idbuf);
    if (!name || !args || !id)
        goto done;
    if (out->n_calls == out->cap_calls) {
        int cap = out->cap_calls ? out->cap_calls * 2 : 4;
        eng_tool_call *calls = realloc(out->calls, (size_t)cap * sizeof *calls);
        if (!calls)
            goto done;
        out->calls = calls;
        out->cap_calls = cap;
    }
    eng_tool_call *c = &out->calls[out->n_calls++];
    c->index = p->n_calls++;
    c->id = id;
    c->name = name;
    c->arguments = args;
    name = args = id = NULL;
    rc = 1;
done:
    free(name);
    free(args);
    free(id);
    cJSON_Delete(root);
    free(text);
    return rc;
}

/* The open block is not a call: it ends at its first "</tool_call>" (or runs to the end
 * when there is none) and stays in the content verbatim; the bytes after that marker,
 * then the unread rest, are read again as content. */
static int block_malformed(eng_parser *p, eng_parse_delta *out, const char *unread, size_t n_unread)
{
    size_t keep = p->first_close ? p->first_close : p->block.len;
    if (emit_content(p, out, p->ws_before.data, p->ws_before.len) < 0 ||
        emit_content(p, out, CALL_OPEN, strlen(CALL_OPEN)) < 0 || emit_content(p, out, p->block.data, keep) < 0)
        return -1;
    eng_buf_clear(&p->ws_before);
    eng_buf again = {0};
    if (eng_buf_append(&again, p->block.data ? p->block.data + keep : "", p->block.len - keep) < 0 ||
        eng_buf_append(&again, unread, n_unread) < 0) {
        eng_buf_free(&again);
        return -1;
    }
    eng_buf_free(&p->pend);
    p->pend = again;
    p->pos = 0;
    p->mode = M_CONTENT;
    return 0;
}

/* ---- the state machine ---- */

/* Decides as much of pend as possible; at_end: no more bytes will come. */
static int advance(eng_parser *p, eng_parse_delta *out, int at_end)
{
    for (;;) {
        const char *rest = p->pend.data ? p->pend.data + p->pos : "";
        size_t n = p->pend.len - p->pos;
        switch (p->mode) {
        case M_START: {
            size_t m = strlen(THINK_OPEN), j = 0;
            while (j < n && rest[j] == '\n')
                j++;
            if (n - j >= m && !memcmp(rest + j, THINK_OPEN, m)) {
                p->pos += j + m;
                p->mode = M_REASONING;
                continue;
            }
            if (n - j < m && !memcmp(rest + j, THINK_OPEN, n - j) && !at_end)
                return 0; /* maybe "<think>" still arriving (or nothing yet) */
            /* No <think> from the model: still reasoning if the prompt opened it
             * (the leading newlines go with the reasoning's), else all content. */
            p->mode = p->flags & ENG_PARSE_THINK_OPEN ? M_REASONING : M_CONTENT;
            continue;
        }
        case M_REASONING: {
            const char *close = find(rest, n, THINK_CLOSE);
            if (close) {
                size_t k = (size_t)(close - rest);
                size_t t = k;
                while (t > 0 && rest[t - 1] == '\n')
                    t--;
                if (emit_reasoning(p, out, rest, t) < 0)
                    return -1;
                p->pos += k + strlen(THINK_CLOSE);
                p->mode = M_CONTENT_START;
                continue;
            }
            size_t k = at_end ? n : n - marker_prefix_suffix(rest, n, THINK_CLOSE);
            while (k > 0 && rest[k - 1] == '\n')
                k--;
            if (!at_end)
                k = utf8_cut(rest, k);
            if (emit_reasoning(p, out, rest, k) < 0)
                return -1;
            p->pos += k;
            if (at_end) {
                p->pos = p->pend.len;
                p->mode = M_DONE;
            }
            return 0;
        }
        case M_CONTENT_START:
            while (n > 0 && *rest == '\n')
                rest++, n--, p->pos++;
            if (n == 0 && !at_end)
                return 0;
            p->mode = M_CONTENT;
            continue;
        case M_CONTENT: {
            if (!(p->flags & ENG_PARSE_TOOLS)) {
                size_t k = at_end ? n : utf8_cut(rest, n);
                if (emit_content(p, out, rest, k) < 0)
                    return -1;
                p->pos += k;
                if (at_end)
                    p->mode = M_DONE;
                return 0;
            }
            const char *open = find(rest, n, CALL_OPEN);
            if (open) {
                size_t k = (size_t)(open - rest), t = k;
                while (t > 0 && is_ws(rest[t - 1]))
                    t--;
                if (emit_content(p, out, rest, t) < 0 || eng_buf_append(&p->ws_before, rest + t, k - t) < 0)
                    return -1;
                p->pos += k + strlen(CALL_OPEN);
                eng_buf_clear(&p->block);
                p->in_str = p->esc = 0;
                p->first_close = 0;
                p->mode = M_TOOL;
                continue;
            }
            if (at_end) {
                size_t t = 0;
                while (t < n && is_ws(rest[t]))
                    t++;
                if (!(p->after_call && t == n) && emit_content(p, out, rest, n) < 0)
                    return -1;
                p->pos = p->pend.len;
                p->mode = M_DONE;
                return 0;
            }
            size_t k = n - marker_prefix_suffix(rest, n, CALL_OPEN);
            while (k > 0 && is_ws(rest[k - 1]))
                k--;
            k = utf8_cut(rest, k);
            if (emit_content(p, out, rest, k) < 0)
                return -1;
            p->pos += k;
            return 0;
        }
        case M_TOOL: {
            /* Closes at the first "</tool_call>" where the body is a valid call. A marker
             * outside any JSON string with an invalid body proves that no later one can
             * be valid (valid JSON would have put it inside a string). */
            size_t m = strlen(CALL_CLOSE);
            size_t used = 0;
            while (used < n) {
                char c = rest[used++];
                if (p->in_str) {
                    if (p->esc)
                        p->esc = 0;
                    else if (c == '\\')
                        p->esc = 1;
                    else if (c == '"')
                        p->in_str = 0;
                } else if (c == '"') {
                    p->in_str = 1;
                }
                if (eng_buf_append(&p->block, &c, 1) < 0)
                    return -1;
                if (c != '>' || p->block.len < m || memcmp(p->block.data + p->block.len - m, CALL_CLOSE, m))
                    continue;
                if (!p->first_close)
                    p->first_close = p->block.len;
                int rc = parse_call(p, p->block.data, p->block.len - m, out);
                if (rc < 0)
                    return -1;
                if (rc == 1) {
                    p->after_call = 1; /* and the whitespace before it goes */
                    eng_buf_clear(&p->ws_before);
                    p->pos += used;
                    p->mode = M_CONTENT;
                    break;
                }
                if (!p->in_str) {
                    if (block_malformed(p, out, rest + used, n - used) < 0)
                        return -1;
                    break;
                }
            }
            if (p->mode == M_CONTENT)
                continue;
            p->pos += used;
            if (!at_end)
                return 0;
            if (block_malformed(p, out, "", 0) < 0)
                return -1;
            continue;
        }
        case M_DONE: return 0;
        }
    }
}

/* Drops the decided bytes from the front of pend. */
static void compact(eng_parser *p)
{
    if (p->pos == 0)
        return;
    size_t left = p->pend.len - p->pos;
    memmove(p->pend.data, p->pend.data + p->pos, left);
    p->pend.len = left;
    p->pend.data[left] = 0;
    p->pos = 0;
}

eng_parser *eng_parser_new(unsigned flags, const char *id_tag, eng_error *err)
{
    eng_parser *p = calloc(1, sizeof *p);
    if (!p) {
        oom(err);
        return NULL;
    }
    if (id_tag && strlen(id_tag) > 100) {
        free(p);
        eng_fail(err, "output parser: call id tag longer than 100 bytes");
        return NULL;
    }
    if (id_tag && !(p->tag = strdup(id_tag))) {
        free(p);
        oom(err);
        return NULL;
    }
    if (flags & ENG_PARSE_THINK_OPEN)
        flags |= ENG_PARSE_REASONING;
    p->flags = flags;
    p->mode = flags & ENG_PARSE_REASONING ? M_START : M_CONTENT;
    p->lead = 1;
    return p;
}

void eng_parser_free(eng_parser *p)
{
    if (!p)
        return;
    free(p->tag);
    eng_buf_free(&p->pend);
    eng_buf_free(&p->ws_before);
    eng_buf_free(&p->block);
    free(p);
}

int eng_parser_feed(eng_parser *p, const char *data, size_t len, eng_parse_delta *out, eng_error *err)
{
    if (p->mode == M_DONE)
        return eng_fail(err, "output parser: fed after finish");
    if (len && eng_buf_append(&p->pend, data, len) < 0)
        return oom(err);
    if (advance(p, out, 0) < 0)
        return oom(err);
    compact(p);
    return 0;
}

int eng_parser_finish(eng_parser *p, eng_parse_delta *out, eng_error *err)
{
    if (p->mode == M_DONE)
        return 0;
    if (advance(p, out, 1) < 0)
        return oom(err);
    compact(p);
    return 0;
}

int eng_parser_in_reasoning(const eng_parser *p)
{
    return p->mode == M_REASONING || (p->mode == M_START && (p->flags & ENG_PARSE_THINK_OPEN));
}

int eng_parse_text(const char *text, size_t len, unsigned flags, const char *id_tag, eng_parse_delta *out,
                   eng_error *err)
{
    eng_parser *p = eng_parser_new(flags, id_tag, err);
    if (!p)
        return -1;
    int rc = eng_parser_feed(p, text, len, out, err);
    if (rc == 0)
        rc = eng_parser_finish(p, out, err);
    eng_parser_free(p);
    return rc;
}

static const char *find_last(const char *s, size_t n, const char *marker)
{
    const char *last = NULL;
    for (const char *at = find(s, n, marker); at; at = find(at + 1, n - (size_t)(at + 1 - s), marker))
        last = at;
    return last;
}

int eng_prompt_opens_think(const char *prompt)
{
    size_t n = strlen(prompt);
    const char *turn = find_last(prompt, n, "<|im_start|>");
    if (turn)
        n -= (size_t)(turn - prompt), prompt = turn;
    const char *open = find_last(prompt, n, THINK_OPEN);
    return open && !find(open, n - (size_t)(open - prompt), THINK_CLOSE);
}

/* ---- OpenAI JSON ---- */

static cJSON *string_or_null(const eng_buf *b)
{
    return b->len ? cJSON_CreateString(b->data) : cJSON_CreateNull();
}

cJSON *eng_tool_call_to_json(const eng_tool_call *c, int with_index)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *f = cJSON_CreateObject();
    if (!o || !f)
        goto fail;
    if ((with_index && !cJSON_AddNumberToObject(o, "index", c->index)) || !cJSON_AddStringToObject(o, "id", c->id) ||
        !cJSON_AddStringToObject(o, "type", "function") || !cJSON_AddStringToObject(f, "name", c->name) ||
        !cJSON_AddStringToObject(f, "arguments", c->arguments))
        goto fail;
    cJSON_AddItemToObject(o, "function", f);
    return o;
fail:
    cJSON_Delete(o);
    cJSON_Delete(f);
    return NULL;
}

cJSON *eng_parse_delta_to_json(const eng_parse_delta *d)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON *r = string_or_null(&d->reasoning), *c = string_or_null(&d->content);
    cJSON *calls = d->n_calls ? cJSON_CreateArray() : cJSON_CreateNull();
    if (!r || !c || !calls) {
        cJSON_Delete(r);
        cJSON_Delete(c);
        cJSON_Delete(calls);
        cJSON_Delete(o);
        return NULL;
    }
    cJSON_AddItemToObject(o, "reasoning_content", r);
    cJSON_AddItemToObject(o, "content", c);
    cJSON_AddItemToObject(o, "tool_calls", calls);
    for (int i = 0; i < d->n_calls; i++) {
        cJSON *call = eng_tool_call_to_json(&d->calls[i], 0);
        if (!call) {
            cJSON_Delete(o);
            return NULL;
        }
        cJSON_AddItemToArray(calls, call);
    }
    return o;
}
