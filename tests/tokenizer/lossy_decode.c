/* lossy_decode.c: decodes byte strings given as hex lines, through single-byte tokens.
 *
 * For lossy_check.py, which compares the output with CPython's UTF-8 decoder
 * (errors="replace", the same maximal-subpart rule as Rust's from_utf8_lossy). Each
 * input line is hex; each output line is the hex of the whole decode, prefixed with
 * "STREAM-MISMATCH " if decoding one id at a time gave something else.
 *
 * usage: lossy_decode MODEL_DIR < hex lines */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: lossy_decode MODEL_DIR < hex lines\n");
        return 2;
    }
    eng_tokenizer *t;
    eng_error err;
    if (eng_tokenizer_load(argv[1], &t, &err)) {
        fprintf(stderr, "lossy_decode: %s\n", err.msg);
        return 1;
    }
    int32_t byte_id[256];
    for (int b = 0; b < 256; b++)
        byte_id[b] = -1;
    for (int32_t id = 0; id < eng_tokenizer_vocab_size(t); id++) {
        size_t n;
        const char *s = eng_token_bytes(t, id, &n);
        if (s && n == 1 && byte_id[(unsigned char)s[0]] < 0)
            byte_id[(unsigned char)s[0]] = id;
    }
    for (int b = 0; b < 256; b++)
        if (byte_id[b] < 0) {
            fprintf(stderr, "lossy_decode: no token for byte 0x%02x\n", b);
            eng_tokenizer_free(t);
            return 1;
        }
    char line[4096];
    int32_t ids[2048];
    int rc = 0;
    while (rc == 0 && fgets(line, sizeof line, stdin)) {
        int n = 0;
        for (const char *p = line; p[0] && p[1] && p[0] != '\n' && n < 2048; p += 2) {
            unsigned v;
            if (sscanf(p, "%2x", &v) != 1) {
                fprintf(stderr, "lossy_decode: bad hex line\n");
                rc = 1;
                break;
            }
            ids[n++] = byte_id[v];
        }
        eng_buf whole = {0}, streamed = {0};
        eng_detok d = {0};
        if (eng_detokenize(t, ids, n, 0, &whole))
            rc = 1;
        for (int i = 0; i < n && rc == 0; i++)
            if (eng_detok_push(t, &d, ids[i], 0, &streamed))
                rc = 1;
        if (rc == 0 && eng_detok_flush(&d, &streamed))
            rc = 1;
        if (streamed.len != whole.len || (whole.len && memcmp(streamed.data, whole.data, whole.len)))
            fputs("STREAM-MISMATCH ", stdout);
        for (size_t i = 0; i < whole.len; i++)
            printf("%02x", (unsigned char)whole.data[i]);
        putchar('\n');
        eng_buf_free(&whole);
        eng_buf_free(&streamed);
    }
    eng_tokenizer_free(t);
    return rc;
}
