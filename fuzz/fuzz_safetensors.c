/* fuzz_safetensors.c: the safetensors reader (header length, JSON header, tensor
 * offsets and shapes against the file size) on arbitrary files. */
#include <stdint.h>

#include "fuzz_file.h"
#include "model/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *dir = fuzz_write_file("model.safetensors", data, size);
    /* both ways of holding the weights: the mapping, and reads into private memory
     * (a tensor's bytes are read when it is asked for) */
    for (int in_memory = 0; in_memory <= 1; in_memory++) {
        eng_st *st;
        eng_error err;
        if (eng_st_open(dir, in_memory, &st, &err) == 0) {
            const eng_st_tensor *t = eng_st_find(st, "model.embed_tokens.weight");
            if (t) {
                const void *p;
                eng_dtype dt;
                eng_st_get(st, t->name, t->n_dims, t->shape, &p, &dt, &err);
            }
            eng_st_total_bytes(st);
            eng_st_close(st);
        }
    }
    return 0;
}
