/* fuzz_safetensors.c: the safetensors reader (header length, JSON header, tensor
 * offsets and shapes against the file size) on arbitrary files. */
#include <stdint.h>

#include "fuzz_file.h"
#include "model/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *dir = fuzz_write_file("model.safetensors", data, size);
    eng_st *st;
    eng_error err;
    if (eng_st_open(dir, &st, &err) == 0) {
        eng_st_find(st, "model.embed_tokens.weight");
        eng_st_total_bytes(st);
        eng_st_close(st);
    }
    return 0;
}
