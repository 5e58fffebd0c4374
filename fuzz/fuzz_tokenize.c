/* fuzz_tokenize.c: the real Qwen3 tokenizer (TANDEM_QWEN3_DIR) on arbitrary bytes:
 * encode (special tokens parsed or not, by the first byte), then decode. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "tokenizer/tokenizer.h"

static eng_tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    const char *dir = getenv("TANDEM_QWEN3_DIR");
    eng_error err;
    if (!dir || !*dir) {
        fprintf(stderr, "fuzz_tokenize: skipped: TANDEM_QWEN3_DIR names no Qwen3 tokenizer folder\n");
        exit(77); /* ctest's skip */
    }
    if (eng_tokenizer_load(dir, &tok, &err)) {
        fprintf(stderr, "fuzz_tokenize: %s\n", err.msg);
        exit(1);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int32_t *ids = NULL;
    int n = 0;
    eng_error err;
    int special = data[0] & 1;
    if (eng_tokenize(tok, (const char *)data + 1, size - 1, special, &ids, &n, &err) == 0) {
        eng_buf out = {0};
        eng_detokenize(tok, ids, n, 0, &out); /* not byte-exact: the tokenizer normalizes to NFC */
        eng_buf_free(&out);
    }
    free(ids);
    return 0;
}
