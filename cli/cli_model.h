/* cli_model.h: --kv-dtype, --matmul-dtype and --mmap, the same rows in every command
 * that runs the model (worker, serve, generate, chat, profile, bench). */
#ifndef CLI_MODEL_H
#define CLI_MODEL_H

#include "cli_args.h"
#include "model/kvcache.h"

#include <string.h>

/* The row for the const char * field f of struct st. */
#define CLI_KV_DTYPE_OPT(st, f)                                                  \
    CLI_CHOICE_OPT(st, f, "--kv-dtype", "bf16|f16|f32", ENG_KV_DTYPE_DEFAULT,    \
                   "how the KV cache stores K and V; f32 is exact, with twice\n" \
                   "the memory and KV transfer bytes",                           \
                   0)

/* The dtype of a parsed --kv-dtype (the row's choices admit only names that parse). */
static inline eng_dtype cli_kv_dtype(const char *name)
{
    eng_dtype dt = ENG_DT_BF16;
    (void)eng_kv_dtype_parse(name ? name : ENG_KV_DTYPE_DEFAULT, &dt);
    return dt;
}

/* The row for the const char * field f of struct st. */
#define CLI_MATMUL_DTYPE_OPT(st, f)                                                   \
    CLI_CHOICE_OPT(st, f, "--matmul-dtype", "f32|bf16", "f32",                        \
                   "what matmuls with bf16 or FP8 weights multiply: f32 inputs\n"     \
                   "(exact) or inputs rounded to bf16, as llama.cpp does on a bf16\n" \
                   "GGUF (with AVX512-BF16 about twice the prefill speed, and FP8\n"  \
                   "decode no longer bound by widening the weights); every\n"         \
                   "worker of a cluster must use the same",                           \
                   0)

/* The row for the int field f of struct st. */
#define CLI_MMAP_OPT(st, f)                                                         \
    CLI_FLAG_OPT(st, f, "--mmap",                                                   \
                 "map the checkpoint's files instead of reading the weights into\n" \
                 "this process's memory: one copy in the page cache for every\n"    \
                 "process on the machine, but slower decode (4 KiB pages)")

/* The dtype of a parsed --matmul-dtype. */
static inline eng_dtype cli_matmul_dtype(const char *name)
{
    return name && strcmp(name, "bf16") == 0 ? ENG_DT_BF16 : ENG_DT_F32;
}

#endif
