/* fuzz_tokenizer_json.c: tokenizer.json loading on arbitrary bytes; what loads is
 * used once (encode and decode a short text). */
#include <stdint.h>
#include <stdlib.h>

#include "fuzz_file.h"
#include "tokenizer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *dir = fuzz_write_file("tokenizer.json", data, size);
    eng_tokenizer *t;
    eng_error err;
    if (eng_tokenizer_load(dir, &t, &err) == 0) {
        int32_t *ids = NULL;
        int n = 0;
        if (eng_tokenize(t, "Hello, world! 123", 17, 1, &ids, &n, &err) == 0) {
            eng_buf out = {0};
            eng_detokenize(t, ids, n, 0, &out);
            eng_buf_free(&out);
        }
        free(ids);
        eng_tokenizer_free(t);
    }
    return 0;
}
