/* config.h: what a Qwen3 checkpoint says about itself.
 *
 * eng_config holds config.json (architecture, shapes, RoPE incl. YaRN, MoE layout);
 * eng_gen_config holds generation_config.json (stop ids and sampling defaults).
 * Both are plain values: copy them freely. Loaded by eng_config_load() and
 * eng_gen_config_load(); eng_model_load() calls the first itself. */
#ifndef ENG_CONFIG_H
#define ENG_CONFIG_H

#include <stdint.h>

#include "common/error.h"

#define ENG_MAX_LAYERS 512
#define ENG_MAX_EOS 8
#define ENG_MOE_MAX_TOPK 64      /* num_experts_per_tok (Qwen3 uses 8) */
#define ENG_MOE_MAX_EXPERTS 4096 /* num_experts (Qwen3 uses 128) */

typedef enum eng_rope_type {
    ENG_ROPE_DEFAULT = 0, /* rope_scaling absent or null */
    ENG_ROPE_YARN = 1,
    ENG_ROPE_LINEAR = 2,
} eng_rope_type;

typedef struct eng_rope_scaling {
    eng_rope_type type;
    double factor;
    int original_max_position_embeddings; /* YaRN: the pretrained context */
    double beta_fast, beta_slow;          /* YaRN ramp bounds (HF defaults 32 and 1) */
    double attention_factor;              /* YaRN: scale on cos/sin; computed when absent */
    double mscale, mscale_all_dim;        /* YaRN (DeepSeek style), 0 when absent */
    int truncate;                         /* YaRN: round the correction range (default 1) */
} eng_rope_scaling;

typedef struct eng_config {
    char model_type[32]; /* "qwen3" or "qwen3_moe" */
    int is_moe;
    int vocab_size;
    int hidden_size;
    int intermediate_size;
    int num_hidden_layers;
    int num_attention_heads;
    int num_key_value_heads;
    int head_dim; /* hidden_size / num_attention_heads when absent */
    float rms_norm_eps;
    double rope_theta;
    eng_rope_scaling rope_scaling;
    int max_position_embeddings;
    int tie_word_embeddings;
    int bos_token_id; /* -1 when absent */
    int eos_token_id; /* -1 when absent */
    /* MoE (zero for dense models) */
    int num_experts;
    int num_experts_per_tok;
    int moe_intermediate_size;
    int norm_topk_prob;
    int decoder_sparse_step;
    int n_mlp_only_layers;
    int mlp_only_layers[ENG_MAX_LAYERS];
    /* quantization_config of Qwen's -FP8 checkpoints (quant_method "fp8", fmt
     * "e4m3", activation_scheme "dynamic"): F8_E4M3 tensors then carry
     * <name>_scale_inv scales, one per fp8_block[0] rows x fp8_block[1] inputs.
     * Activations stay f32, so the model computes what its dequantisation does. */
    int fp8;          /* quantization_config present */
    int fp8_block[2]; /* weight_block_size; fp8_block[1] a multiple of ENG_FP8_BLOCK_ALIGN */
} eng_config;

/* Reads dir/config.json. Fails with one line naming the file and the key for a
 * missing or ill-typed key, an unknown model_type or an inconsistent shape. */
int eng_config_load(const char *dir, eng_config *cfg, eng_error *err);
/* Whether layer `layer` has a sparse (MoE) MLP: num_experts > 0, not listed in
 * mlp_only_layers and (layer + 1) % decoder_sparse_step == 0. */
int eng_config_layer_is_moe(const eng_config *cfg, int layer);

typedef struct eng_gen_config {
    int n_eos;
    int32_t eos_token_id[ENG_MAX_EOS]; /* generation stops on any of these */
    int do_sample;                     /* 0: greedy (the transformers default) */
    float temperature;                 /* 1.0 when absent */
    int top_k;                         /* 50 when absent, as in transformers; 0 = off */
    float top_p;                       /* 1.0 when absent */
    float min_p;                       /* 0 when absent */
    float repetition_penalty;          /* 1.0 when absent */
    float presence_penalty;            /* 0 when absent */
    float frequency_penalty;           /* 0 when absent */
    int max_new_tokens;                /* 0 when absent */
} eng_gen_config;

/* Reads dir/generation_config.json; a missing file gives the defaults above, with
 * config.json's eos_token_id (cfg may be NULL) as the only stop id. */
int eng_gen_config_load(const char *dir, const eng_config *cfg, eng_gen_config *gen, eng_error *err);
/* Whether id is one of the stop ids. */
int eng_gen_config_is_eos(const eng_gen_config *gen, int32_t id);

#endif
