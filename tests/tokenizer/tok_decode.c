/* tok_decode.c: the decoding half of the tokenizer conformance test.
 *
 * For every JSON string line of a corpus: encode it (special tokens recognised), decode
 * the ids whole, and decode them again streamed one id at a time. Fails (exit 1, one
 * line) if a streamed piece is not whole UTF-8 or the pieces do not add up to the whole
 * decode, with and without skip_special; otherwise prints {"text": whole decode} per
 * line for compare.mjs to check against NFC(x) and the reference decoder.
 *
 * usage: tok_decode MODEL_DIR CORPUS */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer/tokenizer.h"

static int valid_utf8(const char *s, size_t n)
{
    utf8proc_int32_t c;
    for (size_t i = 0; i < n;) {
        utf8proc_ssize_t w = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &c);
        if (w <= 0)
            return 0;
        i += (size_t)w;
    }
    return 1;
}

/* Streams ids through eng_detok and compares with eng_detokenize. */
static int check_stream(const eng_tokenizer *t, const int32_t *ids, int n, int skip, size_t line)
{
    eng_buf whole = {0}, streamed = {0}, piece = {0};
    eng_detok d = {0};
    int rc = -1;
    if (eng_detokenize(t, ids, n, skip, &whole)) {
        fprintf(stderr, "tok_decode: line %zu: eng_detokenize failed\n", line);
        goto out;
    }
    for (int i = 0; i <= n; i++) {
        eng_buf_clear(&piece);
        if ((i < n ? eng_detok_push(t, &d, ids[i], skip, &piece) : eng_detok_flush(&d, &piece)) ||
            (piece.len && eng_buf_append(&streamed, piece.data, piece.len))) {
            fprintf(stderr, "tok_decode: line %zu: streaming decode failed at id %d\n", line, i);
            goto out;
        }
        if (!valid_utf8(piece.data, piece.len)) {
            fprintf(stderr, "tok_decode: line %zu: streamed piece %d is not whole UTF-8\n", line, i);
            goto out;
        }
    }
    if (streamed.len != whole.len || (whole.len && memcmp(streamed.data, whole.data, whole.len))) {
        fprintf(stderr, "tok_decode: line %zu: streamed decode differs from whole decode (skip_special=%d)\n", line,
                skip);
        goto out;
    }
    rc = 0;
out:
    eng_buf_free(&whole);
    eng_buf_free(&streamed);
    eng_buf_free(&piece);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: tok_decode MODEL_DIR CORPUS\n");
        return 2;
    }
    eng_tokenizer *t;
    eng_error err;
    if (eng_tokenizer_load(argv[1], &t, &err)) {
        fprintf(stderr, "tok_decode: %s\n", err.msg);
        return 1;
    }
    FILE *f = fopen(argv[2], "rb");
    if (!f) {
        fprintf(stderr, "tok_decode: cannot open %s\n", argv[2]);
        eng_tokenizer_free(t);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0, line_no = 0;
    ssize_t len;
    int rc = 0;
    while (rc == 0 && (len = getline(&line, &cap, f)) >= 0) {
        line_no++;
        if (len <= 1)
            continue;
        cJSON *v = cJSON_ParseWithLength(line, (size_t)len);
        if (!cJSON_IsString(v)) {
            fprintf(stderr, "tok_decode: line %zu: expected one JSON string\n", line_no);
            cJSON_Delete(v);
            rc = 1;
            break;
        }
        int32_t *ids;
        int n;
        if (eng_tokenize(t, v->valuestring, strlen(v->valuestring), 1, &ids, &n, &err)) {
            fprintf(stderr, "tok_decode: line %zu: %s\n", line_no, err.msg);
            cJSON_Delete(v);
            rc = 1;
            break;
        }
        cJSON_Delete(v);
        eng_buf text = {0};
        if (check_stream(t, ids, n, 0, line_no) || check_stream(t, ids, n, 1, line_no) ||
            eng_detokenize(t, ids, n, 0, &text)) {
            rc = 1;
        } else {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "text", text.data ? text.data : "");
            char *s = cJSON_PrintUnformatted(o);
            puts(s);
            free(s);
            cJSON_Delete(o);
        }
        eng_buf_free(&text);
        free(ids);
    }
    free(line);
    fclose(f);
    eng_tokenizer_free(t);
    return rc;
}
