/* test_parser.c: the output parser over a corpus, whole and streamed at every split.
 *
 * corpus.json holds model outputs, the parser flags they were produced under, and their
 * expected OpenAI fields. The cases named hybrid_*, prompt_opened_*, no_tools_* and
 * hermes_* state, in our own texts, what vLLM's and SGLang's tests expect of Qwen3
 * reasoning and hermes-style tool calls, where issues 8 and 16 keep that behaviour
 * (they do not where a parser takes untagged output for reasoning although the prompt
 * opened no <think>); the others were written by hand from the rules in
 * engine/chat/parser.c. Each one is parsed whole and compared; then fed at every two-way
 * split, byte by byte, and in random chunkings, and the deltas must add up to the whole
 * result exactly, each delta ending on a UTF-8 boundary. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/parser.h"
#include "check.h"
#include "flags.h"

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
    }
    if (s)
        s[n] = 0;
    fclose(f);
    return s;
}

/* Compact JSON of a parse result, for equality checks and messages. */
static char *result_json(const eng_parse_delta *d)
{
    cJSON *j = eng_parse_delta_to_json(d);
    char *s = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    return s;
}

/* The expected result with ids filled in ("call_<n>") in the parser's JSON shape. */
static char *expected_json(const cJSON *exp)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "reasoning_content", cJSON_Duplicate(cJSON_GetObjectItem(exp, "reasoning_content"), 1));
    cJSON_AddItemToObject(o, "content", cJSON_Duplicate(cJSON_GetObjectItem(exp, "content"), 1));
    const cJSON *calls = cJSON_GetObjectItem(exp, "tool_calls");
    if (cJSON_IsArray(calls)) {
        cJSON *arr = cJSON_AddArrayToObject(o, "tool_calls");
        int i = 0;
        const cJSON *c;
        cJSON_ArrayForEach(c, calls)
        {
            char id[32];
            snprintf(id, sizeof id, "call_%d", i++);
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "id", id);
            cJSON_AddStringToObject(e, "type", "function");
            cJSON *f = cJSON_AddObjectToObject(e, "function");
            cJSON_AddStringToObject(f, "name", cJSON_GetObjectItem(c, "name")->valuestring);
            cJSON_AddStringToObject(f, "arguments", cJSON_GetObjectItem(c, "arguments")->valuestring);
            cJSON_AddItemToArray(arr, e);
        }
    } else {
        cJSON_AddNullToObject(o, "tool_calls");
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static int valid_utf8(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!len || i + len > n)
            return 0;
        for (size_t k = 1; k < len; k++)
            if (((unsigned char)s[i + k] & 0xC0) != 0x80)
                return 0;
        i += len;
    }
    return 1;
}

/* Feeds text in the chunks given by cuts (sorted offsets), accumulating all deltas into
 * total; checks that each delta is whole UTF-8 when the input is. */
static int parse_chunked(const char *text, size_t len, unsigned flags, const size_t *cuts, int n_cuts,
                         eng_parse_delta *total)
{
    eng_error err;
    eng_parser *p = eng_parser_new(flags, NULL, &err);
    if (!p)
        return -1;
    int utf8 = valid_utf8(text, len);
    eng_parse_delta d;
    eng_parse_delta_init(&d);
    size_t at = 0;
    int rc = 0;
    for (int i = 0; i <= n_cuts && rc == 0; i++) {
        size_t end = i < n_cuts ? cuts[i] : len;
        eng_parse_delta_clear(&d);
        rc = i < n_cuts || end > at ? eng_parser_feed(p, text + at, end - at, &d, &err) : 0;
        if (i == n_cuts && rc == 0)
            rc = eng_parser_finish(p, &d, &err);
        at = end;
        if (utf8) {
            CHECK(valid_utf8(d.reasoning.data, d.reasoning.len));
            CHECK(valid_utf8(d.content.data, d.content.len));
        }
        eng_buf_append(&total->reasoning, d.reasoning.data, d.reasoning.len);
        eng_buf_append(&total->content, d.content.data, d.content.len);
        for (int c = 0; c < d.n_calls; c++) {
            if (total->n_calls == total->cap_calls) {
                total->cap_calls = total->cap_calls ? 2 * total->cap_calls : 4;
                total->calls = realloc(total->calls, (size_t)total->cap_calls * sizeof *total->calls);
            }
            total->calls[total->n_calls++] = d.calls[c];
        }
        d.n_calls = 0; /* moved into total */
    }
    eng_parse_delta_free(&d);
    eng_parser_free(p);
    return rc;
}

/* 1 when feeding with these cuts gives exactly `whole`. */
static int same_as_whole(const char *text, size_t len, unsigned flags, const size_t *cuts, int n_cuts,
                         const char *whole)
{
    eng_parse_delta total;
    eng_parse_delta_init(&total);
    int ok = 0;
    if (parse_chunked(text, len, flags, cuts, n_cuts, &total) == 0) {
        char *got = result_json(&total);
        ok = got && !strcmp(got, whole);
        if (!ok)
            fprintf(stderr, "  streamed: %s\n  whole:    %s\n", got ? got : "(null)", whole);
        free(got);
    }
    eng_parse_delta_free(&total);
    return ok;
}

static void test_case(const cJSON *tc, uint64_t *rng, long *runs)
{
    const char *name = cJSON_GetObjectItem(tc, "name")->valuestring;
    const char *text = cJSON_GetObjectItem(tc, "input")->valuestring;
    unsigned flags = case_flags(tc);
    size_t len = strlen(text);

    eng_parse_delta whole;
    eng_parse_delta_init(&whole);
    eng_error err;
    CHECK(eng_parse_text(text, len, flags, NULL, &whole, &err) == 0);
    char *got = result_json(&whole);
    char *want = expected_json(cJSON_GetObjectItem(tc, "expected"));
    if (!got || strcmp(got, want)) {
        fprintf(stderr, "case %s:\n  got:  %s\n  want: %s\n", name, got ? got : "(null)", want);
        check_failed++;
    }
    eng_parse_delta_free(&whole);
    free(want);

    /* Every two-way split. */
    for (size_t i = 0; i <= len; i++) {
        size_t cut = i;
        (*runs)++;
        if (!same_as_whole(text, len, flags, &cut, 1, got)) {
            fprintf(stderr, "case %s: split at %zu differs\n", name, i);
            check_failed++;
            break;
        }
    }
    /* Byte by byte, with an empty feed first. */
    size_t *cuts = malloc((len + 1) * sizeof *cuts);
    for (size_t i = 0; i <= len; i++)
        cuts[i] = i;
    (*runs)++;
    if (!same_as_whole(text, len, flags, cuts, (int)len + 1, got)) {
        fprintf(stderr, "case %s: byte by byte differs\n", name);
        check_failed++;
    }
    /* Random chunkings. */
    for (int r = 0; r < 300; r++) {
        int n = 0;
        for (size_t i = 1; i < len; i++) {
            *rng = *rng * 6364136223846793005ull + 1442695040888963407ull;
            if ((*rng >> 33) % 4 == 0)
                cuts[n++] = i;
        }
        (*runs)++;
        if (!same_as_whole(text, len, flags, cuts, n, got)) {
            fprintf(stderr, "case %s: random chunking %d differs\n", name, r);
            check_failed++;
            break;
        }
    }
    free(cuts);
    free(got);
}

static void test_api(void)
{
    eng_error err;
    /* Feeding after finish is an error; finishing twice is harmless. */
    eng_parser *p = eng_parser_new(ENG_PARSE_THINK_OPEN | ENG_PARSE_TOOLS, "req7", &err);
    CHECK(p != NULL);
    eng_parse_delta d;
    eng_parse_delta_init(&d);
    CHECK(eng_parser_in_reasoning(p));
    CHECK(eng_parser_feed(p, "<think>\nhm\n</think>\n\n", 22, &d, &err) == 0);
    CHECK(!eng_parser_in_reasoning(p));
    CHECK(!strcmp(d.reasoning.data, "hm"));
    const char *calls = "<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>"
                        "<tool_call>{\"name\": \"g\", \"arguments\": {}}</tool_call>";
    CHECK(eng_parser_feed(p, calls, strlen(calls), &d, &err) == 0);
    CHECK(d.n_calls == 2 && !strcmp(d.calls[0].id, "call_req7_0") && !strcmp(d.calls[1].id, "call_req7_1"));
    CHECK(d.calls[1].index == 1);
    cJSON *j = eng_tool_call_to_json(&d.calls[1], 1);
    char *s = cJSON_PrintUnformatted(j);
    CHECK(!strcmp(s, "{\"index\":1,\"id\":\"call_req7_1\",\"type\":\"function\","
                     "\"function\":{\"name\":\"g\",\"arguments\":\"{}\"}}"));
    free(s);
    cJSON_Delete(j);
    CHECK(eng_parser_finish(p, &d, &err) == 0);
    CHECK(eng_parser_finish(p, &d, &err) == 0);
    err.msg[0] = 0;
    CHECK(eng_parser_feed(p, "x", 1, &d, &err) == -1 && strstr(err.msg, "after finish"));
    eng_parser_free(p);
    eng_parse_delta_free(&d);
    eng_parser_free(NULL);

    /* A tag that would make ids unreasonably long is refused. */
    char tag[200];
    memset(tag, 'a', sizeof tag - 1);
    tag[sizeof tag - 1] = 0;
    err.msg[0] = 0;
    CHECK(eng_parser_new(0, tag, &err) == NULL && strstr(err.msg, "tag"));

    /* A call's whole delta arrives with the feed that closes it, not before. */
    p = eng_parser_new(ENG_PARSE_TOOLS, NULL, &err);
    eng_parse_delta_init(&d);
    const char *part1 = "Sure.\n<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": \"</tool_call>\"";
    CHECK(eng_parser_feed(p, part1, strlen(part1), &d, &err) == 0);
    CHECK(d.n_calls == 0 && !strcmp(d.content.data, "Sure."));
    eng_parse_delta_clear(&d);
    CHECK(eng_parser_feed(p, "}}\n</tool_call>", 15, &d, &err) == 0);
    CHECK(d.n_calls == 1 && d.content.len == 0 && !strcmp(d.calls[0].arguments, "{\"a\": \"</tool_call>\"}"));
    eng_parser_free(p);
    eng_parse_delta_free(&d);

    /* Held-back bytes: a partial marker or a split character is not emitted early. */
    p = eng_parser_new(ENG_PARSE_TOOLS, NULL, &err);
    eng_parse_delta_init(&d);
    CHECK(eng_parser_feed(p, "caf\xC3", 4, &d, &err) == 0 && !strcmp(d.content.data, "caf"));
    eng_parse_delta_clear(&d);
    CHECK(eng_parser_feed(p, "\xA9 <tool_", 8, &d, &err) == 0 && !strcmp(d.content.data, "\xC3\xA9"));
    eng_parse_delta_clear(&d);
    CHECK(eng_parser_finish(p, &d, &err) == 0 && !strcmp(d.content.data, " <tool_"));
    eng_parser_free(p);
    eng_parse_delta_free(&d);

    /* Whether the prompt opened the think block: only the turn being generated counts. */
    CHECK(!eng_prompt_opens_think("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"));
    CHECK(eng_prompt_opens_think("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n"));
    CHECK(eng_prompt_opens_think("<|im_start|>assistant\n<think>\nhalf a thought"));
    CHECK(!eng_prompt_opens_think("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"));
    CHECK(!eng_prompt_opens_think("<|im_start|>user\nwhat is <think>?<|im_end|>\n<|im_start|>assistant\n"));
    CHECK(eng_prompt_opens_think("<think>\n") && !eng_prompt_opens_think(""));

    /* Null fields in the JSON when nothing is there. */
    eng_parse_delta_init(&d);
    j = eng_parse_delta_to_json(&d);
    s = cJSON_PrintUnformatted(j);
    CHECK(!strcmp(s, "{\"reasoning_content\":null,\"content\":null,\"tool_calls\":null}"));
    free(s);
    cJSON_Delete(j);
    eng_parse_delta_free(&d);
}

int main(void)
{
    const char *dir = getenv("TANDEM_TEST_DATA");
    char path[4096];
    snprintf(path, sizeof path, "%s/corpus.json", dir ? dir : ".");
    char *text = read_file(path);
    if (!text) {
        fprintf(stderr, "test_parser: cannot read %s (set TANDEM_TEST_DATA)\n", path);
        return 1;
    }
    cJSON *corpus = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsArray(corpus) || cJSON_GetArraySize(corpus) < 20) {
        fprintf(stderr, "test_parser: %s is not a corpus array\n", path);
        return 1;
    }
    uint64_t rng = 12345;
    long runs = 0;
    const cJSON *tc;
    cJSON_ArrayForEach(tc, corpus) test_case(tc, &rng, &runs);
    test_api();
    int n = cJSON_GetArraySize(corpus);
    cJSON_Delete(corpus);
    printf("test_parser: %d corpus cases, %ld streamed runs equal to the whole result\n", n, runs);
    return check_summary();
}
