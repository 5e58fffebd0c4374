/* model.c: loading a Qwen3 checkpoint into an eng_model.
 *
 * config.json gives the shapes; every tensor is then looked up in the mapped
 * safetensors files with the shape the config implies, so a checkpoint that does
 * not match its config fails here with one line instead of producing garbage later.
 * Matrices stay in the mapping in their own dtype, FP8 ones included (their block
 * scales and the norm vectors, a few KB, are converted to f32). The RoPE frequencies, with linear or YaRN scaling, are
 * computed once here. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/model_impl.h"

/* Keeps a malloc'd scale table for eng_model_free. */
static int keep_scales(eng_model *m, float *scales, eng_error *err)
{
    if (m->n_fp8_scales == m->cap_fp8_scales) {
        int cap = m->cap_fp8_scales ? 2 * m->cap_fp8_scales : 64;
        float **t = realloc(m->fp8_scales, (size_t)cap * sizeof *t);
        if (!t) {
            free(scales);
            return eng_fail(err, "out of memory for FP8 scales");
        }
        m->fp8_scales = t;
        m->cap_fp8_scales = cap;
    }
    m->fp8_scales[m->n_fp8_scales++] = scales;
    return 0;
}

/* An F8_E4M3 matrix's <name>_scale_inv, one per weight_block_size block: bf16 in
 * Qwen's dense checkpoints, f16 or f32 in some others; converted to f32 (a few KB
 * per matrix: 1/16384 of its weights for 128 x 128 blocks). */
static int get_fp8_scales(eng_model *m, const char *name, int64_t rows, int64_t cols, eng_weight *out, eng_error *err)
{
    const eng_config *c = &m->cfg;
    if (!c->fp8)
        return eng_fail(err, "%s: tensor %s is F8_E4M3 but config.json has no quantization_config",
                        eng_st_source(m->st), name);
    char sname[300];
    snprintf(sname, sizeof sname, "%s_scale_inv", name);
    int bo = c->fp8_block[0], bi = c->fp8_block[1];
    int64_t shape[2] = {(rows + bo - 1) / bo, (cols + bi - 1) / bi};
    const void *data;
    eng_dtype dt;
    if (eng_st_get(m->st, sname, 2, shape, &data, &dt, err) < 0)
        return -1;
    if (dt == ENG_DT_F8E4M3)
        return eng_fail(err, "%s: scales %s must be BF16, F16 or F32", eng_st_source(m->st), sname);
    size_t n = (size_t)shape[0] * (size_t)shape[1];
    float *scales = malloc(n * sizeof *scales);
    if (!scales)
        return eng_fail(err, "out of memory loading %s", sname);
    eng_to_f32(scales, data, dt, n);
    size_t bad = eng_fp8_scales_check(scales, n);
    if (bad < n) {
        float v = scales[bad];
        free(scales);
        return eng_fail(err, "%s: %s[%zu] is %g; FP8 scales must be finite and within +-%g", eng_st_source(m->st),
                        sname, bad, (double)v, (double)ENG_FP8_SCALE_MAX);
    }
    if (keep_scales(m, scales, err) < 0)
        return -1;
    out->scale = scales;
    out->block_out = bo;
    out->block_in = bi;
    return 0;
}

/* A matrix [rows][cols] in any supported dtype; FP8 with its block scales. */
/* Whether a matrix of dtype dt takes its inputs rounded to bf16 (eng_weight.x_bf16). */
static int takes_bf16_inputs(const eng_model *m, const eng_weight *w)
{
    return m->matmul_dtype == ENG_DT_BF16 &&
           (w->dt == ENG_DT_BF16 || (w->dt == ENG_DT_F8E4M3 && w->block_in % ENG_FP8_BF16_BLOCK_ALIGN == 0));
}

static int get_matrix(eng_model *m, const char *name, int64_t rows, int64_t cols, eng_weight *out, eng_error *err)
{
    int64_t shape[2] = {rows, cols};
    *out = (eng_weight){0};
    if (eng_st_get(m->st, name, 2, shape, &out->w, &out->dt, err) < 0)
        return -1;
    if (out->dt == ENG_DT_F8E4M3 && get_fp8_scales(m, name, rows, cols, out, err) < 0)
        return -1;
    out->x_bf16 = takes_bf16_inputs(m, out);
    return 0;
}

/* Loads a norm vector and converts it to f32 (into *out, malloc'd). */
static int get_vector(eng_model *m, const char *name, int64_t n, float **out, eng_error *err)
{
    int64_t shape[1] = {n};
    const void *data;
    eng_dtype dt;
    if (eng_st_get(m->st, name, 1, shape, &data, &dt, err) < 0)
        return -1;
    if (dt == ENG_DT_F8E4M3) /* a vector has no block scales */
        return eng_fail(err, "%s: tensor %s is F8_E4M3; norm weights must be BF16, F16 or F32", eng_st_source(m->st),
                        name);
    *out = malloc((size_t)n * sizeof(float));
    if (!*out)
        return eng_fail(err, "out of memory loading %s", name);
    eng_to_f32(*out, data, dt, (size_t)n);
    return 0;
}

/* HF's _compute_yarn_parameters: a ramp between interpolated (pos / factor) and
 * extrapolated frequencies over the dimensions whose wavelength falls between the
 * beta_fast and beta_slow rotation counts of the original context, and a scale on
 * cos/sin of 0.1 * ln(factor) + 1. */
static double yarn_correction_dim(double n_rot, int dim, double base, int max_pos)
{
    return (dim * log(max_pos / (n_rot * 2 * M_PI))) / (2 * log(base));
}

static double yarn_get_mscale(double scale, double mscale)
{
    return scale <= 1 ? 1.0 : 0.1 * mscale * log(scale) + 1.0;
}

static void compute_inv_freq(eng_model *m)
{
    const eng_config *c = &m->cfg;
    const eng_rope_scaling *r = &c->rope_scaling;
    int dim = c->head_dim, half = dim / 2;
    double base = c->rope_theta;
    m->attn_factor = 1.0;
    for (int i = 0; i < half; i++)
        m->inv_freq[i] = 1.0 / pow(base, (2.0 * i) / dim);
    if (r->type == ENG_ROPE_LINEAR) {
        for (int i = 0; i < half; i++)
            m->inv_freq[i] /= r->factor;
    } else if (r->type == ENG_ROPE_YARN) {
        double factor = r->factor;
        if (r->attention_factor > 0)
            m->attn_factor = r->attention_factor;
        else if (r->mscale > 0 && r->mscale_all_dim > 0)
            m->attn_factor = yarn_get_mscale(factor, r->mscale) / yarn_get_mscale(factor, r->mscale_all_dim);
        else
            m->attn_factor = yarn_get_mscale(factor, 1.0);
        int orig = r->original_max_position_embeddings;
        double low = yarn_correction_dim(r->beta_fast, dim, base, orig);
        double high = yarn_correction_dim(r->beta_slow, dim, base, orig);
        if (r->truncate) {
            low = floor(low);
            high = ceil(high);
        }
        if (low < 0)
            low = 0;
        if (high > dim - 1)
            high = dim - 1;
        if (low == high)
            high += 0.001; /* avoids a division by zero, as HF does */
        for (int i = 0; i < half; i++) {
            double ramp = (i - low) / (high - low);
            ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
            double extrap_weight = 1.0 - ramp; /* 1 for high-frequency dims: keep them */
            double extrap = m->inv_freq[i], interp = m->inv_freq[i] / factor;
            m->inv_freq[i] = interp * (1 - extrap_weight) + extrap * extrap_weight;
        }
    }
}

int eng_rope_reserve(eng_model *m, int n_pos, eng_error *err)
{
    if (n_pos <= m->rope_len)
        return 0;
    int half = m->cfg.head_dim / 2;
    int len = m->rope_len ? m->rope_len : 256;
    while (len < n_pos)
        len *= 2;
    float *c = realloc(m->rope_cos, (size_t)len * half * sizeof(float));
    if (c)
        m->rope_cos = c;
    float *s = c ? realloc(m->rope_sin, (size_t)len * half * sizeof(float)) : NULL;
    if (!c || !s)
        return eng_fail(err, "out of memory for RoPE tables of %d positions", len);
    m->rope_sin = s;
    for (int p = m->rope_len; p < len; p++)
        for (int i = 0; i < half; i++) {
            double a = (double)p * m->inv_freq[i];
            m->rope_cos[(size_t)p * half + i] = (float)(cos(a) * m->attn_factor);
            m->rope_sin[(size_t)p * half + i] = (float)(sin(a) * m->attn_factor);
        }
    m->rope_len = len;
    return 0;
}

static int load_layer(eng_model *m, int l, eng_error *err)
{
    const eng_config *c = &m->cfg;
    eng_layer_weights *w = &m->layers[l];
    int64_t H = c->hidden_size, HD = c->head_dim;
    int64_t q_dim = (int64_t)c->num_attention_heads * HD, kv_dim = (int64_t)c->num_key_value_heads * HD;
    char n[256];
#define NAME(...) (snprintf(n, sizeof n, __VA_ARGS__), n)
    if (get_vector(m, NAME("model.layers.%d.input_layernorm.weight", l), H, &w->attn_norm, err) < 0 ||
        get_vector(m, NAME("model.layers.%d.post_attention_layernorm.weight", l), H, &w->ffn_norm, err) < 0 ||
        get_vector(m, NAME("model.layers.%d.self_attn.q_norm.weight", l), HD, &w->q_norm, err) < 0 ||
        get_vector(m, NAME("model.layers.%d.self_attn.k_norm.weight", l), HD, &w->k_norm, err) < 0 ||
        get_matrix(m, NAME("model.layers.%d.self_attn.q_proj.weight", l), q_dim, H, &w->wq, err) < 0 ||
        get_matrix(m, NAME("model.layers.%d.self_attn.k_proj.weight", l), kv_dim, H, &w->wk, err) < 0 ||
        get_matrix(m, NAME("model.layers.%d.self_attn.v_proj.weight", l), kv_dim, H, &w->wv, err) < 0 ||
        get_matrix(m, NAME("model.layers.%d.self_attn.o_proj.weight", l), H, q_dim, &w->wo, err) < 0)
        return -1;
    w->is_moe = eng_config_layer_is_moe(c, l);
    if (!w->is_moe) {
        int64_t F = c->intermediate_size;
        return get_matrix(m, NAME("model.layers.%d.mlp.gate_proj.weight", l), F, H, &w->gate, err) < 0 ||
                       get_matrix(m, NAME("model.layers.%d.mlp.up_proj.weight", l), F, H, &w->up, err) < 0 ||
                       get_matrix(m, NAME("model.layers.%d.mlp.down_proj.weight", l), H, F, &w->down, err) < 0
                   ? -1
                   : 0;
    }
    int E = c->num_experts;
    int64_t F = c->moe_intermediate_size;
    if (get_matrix(m, NAME("model.layers.%d.mlp.gate.weight", l), E, H, &w->router, err) < 0)
        return -1;
    w->exp_gate = calloc((size_t)E, sizeof *w->exp_gate);
    w->exp_up = calloc((size_t)E, sizeof *w->exp_up);
    w->exp_down = calloc((size_t)E, sizeof *w->exp_down);
    if (!w->exp_gate || !w->exp_up || !w->exp_down)
        return eng_fail(err, "out of memory for layer %d's expert table", l);
    for (int e = 0; e < E; e++) {
        /* An expert this process does not own may be absent from its files; one it
         * owns must be there with the right shape. */
        int owned = !m->expert_mask || m->expert_mask[e];
        const char *proj[3] = {"gate_proj", "up_proj", "down_proj"};
        eng_weight *dst[3] = {&w->exp_gate[e], &w->exp_up[e], &w->exp_down[e]};
        for (int p = 0; p < 3; p++) {
            NAME("model.layers.%d.mlp.experts.%d.%s.weight", l, e, proj[p]);
            if (!owned) { /* left unloaded, its pages never touched */
                const eng_st_tensor *t = eng_st_find(m->st, n);
                m->unowned_bytes += t ? t->nbytes : 0;
                continue;
            }
            if (get_matrix(m, n, p == 2 ? H : F, p == 2 ? F : H, dst[p], err) < 0)
                return -1;
        }
    }
#undef NAME
    return 0;
}

int eng_model_load(const char *dir, const eng_model_options *opt, eng_model **out, eng_error *err)
{
    *out = NULL;
    eng_kernels_init();
    eng_model *m = calloc(1, sizeof *m);
    if (!m)
        return eng_fail(err, "out of memory");
    if (eng_config_load(dir, &m->cfg, err) < 0)
        goto fail;
    const eng_config *c = &m->cfg;
    if (opt && opt->expert_mask && c->is_moe) {
        m->expert_mask = malloc((size_t)c->num_experts);
        if (!m->expert_mask) {
            eng_fail(err, "out of memory");
            goto fail;
        }
        memcpy(m->expert_mask, opt->expert_mask, (size_t)c->num_experts);
    }
    if (eng_st_open(dir, !(opt && opt->mmap_weights), &m->st, err) < 0)
        goto fail;
    m->matmul_dtype = opt ? opt->matmul_dtype : ENG_DT_F32;
    if (m->matmul_dtype != ENG_DT_F32 && m->matmul_dtype != ENG_DT_BF16) {
        eng_fail(err, "matmul dtype %s: only f32 and bf16 are supported", eng_dtype_name(m->matmul_dtype));
        goto fail;
    }

    /* Embedding rows are looked up, not multiplied: no FP8 there (Qwen's -FP8
     * checkpoints keep it bf16). */
    int64_t embed_shape[2] = {c->vocab_size, c->hidden_size};
    if (eng_st_get(m->st, "model.embed_tokens.weight", 2, embed_shape, &m->embed.w, &m->embed.dt, err) < 0)
        goto fail;
    if (m->embed.dt == ENG_DT_F8E4M3) {
        eng_fail(err, "%s: model.embed_tokens.weight is F8_E4M3; the embedding must be BF16, F16 or F32",
                 eng_st_source(m->st));
        goto fail;
    }
    if (get_vector(m, "model.norm.weight", c->hidden_size, &m->final_norm, err) < 0)
        goto fail;
    if (c->tie_word_embeddings) {
        m->lm_head = m->embed;
        m->lm_head.x_bf16 = takes_bf16_inputs(m, &m->lm_head); /* the embedding was not loaded as a matrix */
    } else if (get_matrix(m, "lm_head.weight", c->vocab_size, c->hidden_size, &m->lm_head, err) < 0)
        goto fail;
    m->layers = calloc((size_t)c->num_hidden_layers, sizeof *m->layers);
    if (!m->layers) {
        eng_fail(err, "out of memory");
        goto fail;
    }
    for (int l = 0; l < c->num_hidden_layers; l++)
        if (load_layer(m, l, err) < 0)
            goto fail;

    m->inv_freq = malloc((size_t)(c->head_dim / 2) * sizeof *m->inv_freq);
    if (!m->inv_freq) {
        eng_fail(err, "out of memory");
        goto fail;
    }
    compute_inv_freq(m);
    if (eng_rope_reserve(m, 256, err) < 0)
        goto fail;

    int threads = opt ? opt->n_threads : 0;
    if (threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)n : 1;
    }
    m->pool = eng_pool_create(threads);
    if (!m->pool) {
        eng_fail(err, "cannot start a thread pool of %d threads", threads);
        goto fail;
    }
    *out = m;
    return 0;
fail:
    eng_model_free(m);
    return -1;
}

void eng_model_free(eng_model *m)
{
    if (!m)
        return;
    if (m->layers)
        for (int l = 0; l < m->cfg.num_hidden_layers; l++) {
            eng_layer_weights *w = &m->layers[l];
            free(w->attn_norm);
            free(w->ffn_norm);
            free(w->q_norm);
            free(w->k_norm);
            free(w->exp_gate);
            free(w->exp_up);
            free(w->exp_down);
        }
    free(m->layers);
    for (int i = 0; i < m->n_fp8_scales; i++)
        free(m->fp8_scales[i]);
    free(m->fp8_scales);
    free(m->final_norm);
    free(m->expert_mask);
    free(m->inv_freq);
    free(m->rope_cos);
    free(m->rope_sin);
    eng_run_state *rs = &m->rs;
    free(rs->x);
    free(rs->xb);
    free(rs->q);
    free(rs->k);
    free(rs->v);
    free(rs->att);
    free(rs->hb);
    free(rs->hb2);
    free(rs->out);
    free(rs->xr);
    free(rs->pos);
    free(rs->item);
    free(rs->att_work);
    free(rs->att_states);
    free(rs->att_units);
    free(rs->att_first_span);
    free(rs->logits);
    if (m->pool)
        eng_pool_destroy(m->pool);
    eng_st_close(m->st);
    free(m);
}

const eng_config *eng_model_config(const eng_model *m)
{
    return &m->cfg;
}

eng_kv_layout eng_model_kv_layout(const eng_model *m, int block_size, eng_dtype dtype)
{
    eng_kv_layout l;
    l.dtype = dtype;
    l.block_size = block_size > 0 ? block_size : 16;
    l.n_layers = m->cfg.num_hidden_layers;
    l.n_kv_heads = m->cfg.num_key_value_heads;
    l.head_dim = m->cfg.head_dim;
    l.matmul_dtype = m->matmul_dtype;
    return l;
}

size_t eng_model_weight_bytes(const eng_model *m)
{
    return eng_st_total_bytes(m->st);
}

size_t eng_model_used_weight_bytes(const eng_model *m)
{
    return eng_st_total_bytes(m->st) - m->unowned_bytes;
}

size_t eng_model_resident_weight_bytes(const eng_model *m)
{
    return eng_st_resident_bytes(m->st);
}

int eng_model_threads(const eng_model *m)
{
    return eng_pool_threads(m->pool);
}
