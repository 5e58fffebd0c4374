/* model_impl.h: the inside of eng_model, shared by the files of engine/model only
 * (model.c loads, forward.c runs the layers, moe.c runs a sparse MLP). */
#ifndef ENG_MODEL_IMPL_H
#define ENG_MODEL_IMPL_H

#include "kernels/kernels.h"
#include "model/model.h"
#include "model/safetensors.h"

typedef struct eng_layer_weights {
    float *attn_norm, *ffn_norm, *q_norm, *k_norm; /* f32 copies of the tiny norm vectors */
    eng_weight wq, wk, wv, wo;
    int is_moe;
    eng_weight gate, up, down;                /* dense MLP */
    eng_weight router;                        /* MoE: [num_experts][hidden] */
    eng_weight *exp_gate, *exp_up, *exp_down; /* MoE: one per expert */
} eng_layer_weights;

/* Activations of one step, sized for `cap` tokens; grown on demand. */
typedef struct eng_run_state {
    int cap;
    float *x;        /* [T][hidden] residual stream */
    float *xb;       /* [T][hidden] normalised input of a sublayer */
    float *q;        /* [T][heads * head_dim] */
    float *k, *v;    /* [T][kv_heads * head_dim] */
    float *att;      /* [T][heads * head_dim] attention output */
    float *hb, *hb2; /* [T][intermediate_size] dense MLP */
    float *out;      /* [T][hidden] what a sublayer adds to the residual */
    float *xr;       /* [T][max(hidden, heads * head_dim, intermediate_size)] scratch of eng_matmul: inputs rounded
                        to bf16 (matmul_dtype bf16 only) */
    int *pos;        /* [T] position of each token */
    int *item;       /* [T] which batch item each token belongs to */
    /* attention (forward.c): att_tasks tasks, each with att_work_floats of scratch and
     * room for the block units of att_max_blocks blocks; a step with few tokens keeps
     * every span's state (att_states, att_first_span[t] the first of token t's) */
    int att_tasks, att_max_blocks, att_n_spans, att_states_cap;
    size_t att_work_floats;
    float *att_work, *att_states;
    const void **att_units;
    int *att_first_span; /* [cap + 1] */
    /* [logits_rows][vocab] the LM head's rows of a step, kept between steps: freed
     * and allocated anew every step, 64 rows of Qwen3's vocabulary (39 MB, above
     * glibc's mmap threshold) were fresh pages to fault in at every decode step, which
     * made a step of 64 sequences 2.3x one of 48 */
    float *logits;
    int logits_rows;
} eng_run_state;

struct eng_model {
    eng_config cfg;
    eng_st *st;
    eng_pool *pool;
    eng_dtype matmul_dtype; /* eng_model_options */
    eng_weight embed, lm_head;
    float *final_norm;
    eng_layer_weights *layers;
    float **fp8_scales; /* the FP8 matrices' scales as f32 (n_fp8_scales of them) */
    int n_fp8_scales, cap_fp8_scales;
    uint8_t *expert_mask; /* copy of the option; NULL = all experts */
    size_t unowned_bytes; /* tensors of the experts outside the mask */
    eng_moe_fn moe_fn;    /* NULL: eng_moe_layer here */
    void *moe_ctx;
    /* RoPE: inv_freq after any scaling, the YaRN attention factor, and cos/sin
     * tables [rope_len][head_dim / 2] (already multiplied by attn_factor). */
    double *inv_freq;
    double attn_factor;
    float *rope_cos, *rope_sin;
    int rope_len;
    eng_run_state rs;
};

/* Makes sure the tables cover positions [0, n_pos). */
int eng_rope_reserve(eng_model *m, int n_pos, eng_error *err);

/* Number of tasks the attention loop is split into (each gets its own scratch). */
#define ENG_ATT_TASKS_PER_THREAD 4

#endif
