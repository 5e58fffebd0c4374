/* fuzz_config.c: config.json and generation_config.json readers on arbitrary bytes. */
#include <stdint.h>

#include "fuzz_file.h"
#include "model/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *dir = fuzz_write_file("config.json", data, size);
    fuzz_write_file("generation_config.json", data, size);
    eng_config cfg;
    eng_error err;
    if (eng_config_load(dir, &cfg, &err) == 0) {
        eng_gen_config gen;
        eng_gen_config_load(dir, &cfg, &gen, &err);
    }
    return 0;
}
