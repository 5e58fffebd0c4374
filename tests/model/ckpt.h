/* ckpt.h: writes small random Qwen3 checkpoints (config.json, generation_config.json,
 * model.safetensors) for the model tests, with knobs to break them on purpose. */
#ifndef TEST_CKPT_H
#define TEST_CKPT_H

#include <stdint.h>

typedef struct ckpt_spec {
    int moe;
    int vocab, hidden, layers, heads, kv_heads, head_dim, ffn;
    int experts, experts_per_tok, moe_ffn;
    int tied;
    const char *dtype;      /* "BF16", "F16" or "F32" for every tensor */
    const char *model_type; /* NULL: qwen3 / qwen3_moe */
    uint64_t seed;
    /* breakage */
    const char *skip_tensor;  /* leave this tensor out */
    const char *odd_tensor;   /* give this tensor ... */
    const char *odd_dtype;    /* ... this dtype (header and bytes; F8_E4M3 without scales) */
    int odd_rows;             /* ... or this many rows (when > 0) */
    const char *extra_config; /* raw JSON members appended to config.json, e.g. "\"rope_scaling\": {...}" */
} ckpt_spec;

/* Sensible small defaults (dense, GQA 2, head_dim != hidden/heads, bf16). */
void ckpt_defaults(ckpt_spec *s, int moe);
/* Writes the checkpoint into dir (created). Returns 0 or -1. */
int ckpt_write(const char *dir, const ckpt_spec *s);
/* A fresh temporary directory under TMPDIR (or /tmp); static buffer per call. */
const char *ckpt_tmpdir(const char *tag);
/* Removes a directory written by ckpt_write (best effort). */
void ckpt_remove(const char *dir);

#endif
