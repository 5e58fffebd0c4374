/* test_parser_tokens.c: the parser fed token by token, as serving feeds it.
 *
 * Every corpus output is encoded with the real Qwen3 tokenizer (special tokens parsed,
 * so <think>, </think>, <tool_call>, </tool_call> arrive as single tokens, as they do
 * from the model), then fed one token's bytes at a time (characters split across tokens
 * included) and, separately, through the streaming detokenizer; both must give exactly
 * the whole-text result. The folder with tokenizer.json: $TANDEM_TOKENIZER_DIR. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/parser.h"
#include "tokenizer/tokenizer.h"
#include "check.h"
#include "flags.h"

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    eng_buf b = {0};
    char chunk[4096];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
        eng_buf_append(&b, chunk, got);
    fclose(f);
    return eng_buf_take(&b);
}

static char *to_json(const eng_parse_delta *d)
{
    cJSON *j = eng_parse_delta_to_json(d);
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

/* Feeds the tokens (raw bytes, or through the streaming detokenizer) and returns the
 * accumulated result's JSON. */
static char *feed_tokens(const eng_tokenizer *tok, const int32_t *ids, int n, unsigned flags, int detok)
{
    eng_error err;
    eng_parser *p = eng_parser_new(flags, NULL, &err);
    eng_parse_delta total, d;
    eng_parse_delta_init(&total);
    eng_parse_delta_init(&d);
    eng_detok dt = {{0}, 0};
    eng_buf piece = {0};
    for (int i = 0; i <= n; i++) {
        eng_buf_clear(&piece);
        if (i < n && detok) {
            CHECK(eng_detok_push(tok, &dt, ids[i], 0, &piece) == 0);
        } else if (i < n) {
            size_t len;
            const char *bytes = eng_token_bytes(tok, ids[i], &len);
            CHECK(bytes != NULL);
            eng_buf_append(&piece, bytes, len);
        } else if (detok) {
            CHECK(eng_detok_flush(&dt, &piece) == 0);
        }
        CHECK(eng_parser_feed(p, piece.data ? piece.data : "", piece.len, &d, &err) == 0);
        if (i == n)
            CHECK(eng_parser_finish(p, &d, &err) == 0);
        eng_buf_append(&total.reasoning, d.reasoning.data, d.reasoning.len);
        eng_buf_append(&total.content, d.content.data, d.content.len);
        for (int c = 0; c < d.n_calls; c++) {
            if (total.n_calls == total.cap_calls) {
                total.cap_calls = total.cap_calls ? 2 * total.cap_calls : 4;
                total.calls = realloc(total.calls, (size_t)total.cap_calls * sizeof *total.calls);
            }
            total.calls[total.n_calls++] = d.calls[c];
        }
        d.n_calls = 0;
        eng_buf_clear(&d.reasoning);
        eng_buf_clear(&d.content);
    }
    char *s = to_json(&total);
    eng_buf_free(&piece);
    eng_parse_delta_free(&d);
    eng_parse_delta_free(&total);
    eng_parser_free(p);
    return s;
}

int main(void)
{
    const char *tdir = getenv("TANDEM_TOKENIZER_DIR");
    if (!tdir) {
        fprintf(stderr, "test_parser_tokens: set TANDEM_TOKENIZER_DIR to the folder with tokenizer.json\n");
        return 2;
    }
    eng_error err;
    eng_tokenizer *tok;
    if (eng_tokenizer_load(tdir, &tok, &err) < 0) {
        fprintf(stderr, "test_parser_tokens: %s\n", err.msg);
        return 1;
    }
    const char *markers[] = {"<think>", "</think>", "<tool_call>", "</tool_call>"};
    for (int i = 0; i < 4; i++) /* the model emits each marker as one token */
        CHECK(eng_token_id(tok, markers[i]) >= 0);

    const char *dir = getenv("TANDEM_TEST_DATA");
    char path[4096];
    snprintf(path, sizeof path, "%s/corpus.json", dir ? dir : ".");
    char *text = read_file(path);
    cJSON *corpus = text ? cJSON_Parse(text) : NULL;
    free(text);
    if (!cJSON_IsArray(corpus)) {
        fprintf(stderr, "test_parser_tokens: cannot read %s\n", path);
        eng_tokenizer_free(tok);
        return 1;
    }
    int cases = 0, tokens = 0;
    const cJSON *tc;
    cJSON_ArrayForEach(tc, corpus)
    {
        const char *name = cJSON_GetObjectItem(tc, "name")->valuestring;
        const char *in = cJSON_GetObjectItem(tc, "input")->valuestring;
        unsigned flags = case_flags(tc);
        eng_parse_delta whole;
        eng_parse_delta_init(&whole);
        CHECK(eng_parse_text(in, strlen(in), flags, NULL, &whole, &err) == 0);
        char *want = to_json(&whole);
        eng_parse_delta_free(&whole);
        int32_t *ids = NULL;
        int n = 0;
        if (eng_tokenize(tok, in, strlen(in), 1, &ids, &n, &err) < 0) {
            fprintf(stderr, "case %s: tokenize: %s\n", name, err.msg);
            check_failed++;
            free(want);
            continue;
        }
        for (int detok = 0; detok < 2; detok++) {
            char *got = feed_tokens(tok, ids, n, flags, detok);
            if (strcmp(got, want)) {
                fprintf(stderr, "case %s (%s):\n  tokens: %s\n  whole:  %s\n", name, detok ? "detok" : "raw", got,
                        want);
                check_failed++;
            }
            free(got);
        }
        cases++;
        tokens += n;
        free(ids);
        free(want);
    }
    cJSON_Delete(corpus);
    eng_tokenizer_free(tok);
    printf("test_parser_tokens: %d outputs, %d tokens, token by token == whole\n", cases, tokens);
    return check_summary();
}
