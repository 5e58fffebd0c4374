/* cli_kv.h: --kv-dtype, the same row in every command that makes a KV cache (worker,
 * serve, generate, chat, profile, bench), read by the engine's eng_kv_dtype_parse. */
#ifndef CLI_KV_H
#define CLI_KV_H

#include "cli_args.h"
#include "model/kvcache.h"

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

#endif
