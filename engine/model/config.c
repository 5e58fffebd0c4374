/* config.c: parses config.json and generation_config.json with cJSON.
 *
 * Every key Qwen3 and Qwen3-MoE define is read; a key a model cannot run without
 * is required, the rest take the transformers defaults. Errors name the file and
 * the key so a broken checkpoint is fixed in one look. */
#include "model/config.h"

#include "common/file.h"
#include "kernels/kernels.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads a whole file into a NUL-terminated malloc'd string. */
static cJSON *parse_json_file(const char *path, eng_error *err)
{
    char *text = eng_read_file(path, NULL, err);
    if (!text)
        return NULL;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(text, &end, 1);
    if (!root) {
        long at = end ? (long)(end - text) : -1;
        free(text);
        eng_fail(err, "%s: invalid JSON near byte %ld", path, at);
        return NULL;
    }
    free(text);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        eng_fail(err, "%s: top level is not a JSON object", path);
        return NULL;
    }
    return root;
}

/* A key that may be absent or null: returns the default then. */
static int get_int(const cJSON *o, const char *key, int required, int def, int *out, const char *path, eng_error *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    *out = def; /* also when failing, so no caller's variable is ever left unset */
    if (!v || cJSON_IsNull(v))
        return required ? eng_fail(err, "%s: missing key \"%s\"", path, key) : 0;
    if (cJSON_IsBool(v)) {
        *out = cJSON_IsTrue(v);
        return 0;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || fabs(v->valuedouble) > 2e9)
        return eng_fail(err, "%s: key \"%s\" must be an integer", path, key);
    *out = (int)v->valuedouble;
    return 0;
}

static int get_double(const cJSON *o, const char *key, int required, double def, double *out, const char *path,
                      eng_error *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    *out = def; /* also when failing, so no caller's variable is ever left unset */
    if (!v || cJSON_IsNull(v))
        return required ? eng_fail(err, "%s: missing key \"%s\"", path, key) : 0;
    if (!cJSON_IsNumber(v))
        return eng_fail(err, "%s: key \"%s\" must be a number", path, key);
    *out = v->valuedouble;
    return 0;
}

static int get_bool(const cJSON *o, const char *key, int def, int *out, const char *path, eng_error *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsBool(v))
        return eng_fail(err, "%s: key \"%s\" must be true or false", path, key);
    *out = cJSON_IsTrue(v);
    return 0;
}

static int parse_rope_scaling(const cJSON *root, eng_config *c, const char *path, eng_error *err)
{
    eng_rope_scaling *r = &c->rope_scaling;
    memset(r, 0, sizeof *r);
    r->type = ENG_ROPE_DEFAULT;
    r->factor = 1.0;
    r->truncate = 1;
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    if (!rs || cJSON_IsNull(rs))
        return 0;
    if (!cJSON_IsObject(rs))
        return eng_fail(err, "%s: key \"rope_scaling\" must be an object or null", path);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
    if (!t)
        t = cJSON_GetObjectItemCaseSensitive(rs, "type"); /* the older spelling */
    if (!cJSON_IsString(t))
        return eng_fail(err, "%s: rope_scaling needs a string \"rope_type\"", path);
    if (!strcmp(t->valuestring, "default"))
        return 0;
    if (!strcmp(t->valuestring, "yarn"))
        r->type = ENG_ROPE_YARN;
    else if (!strcmp(t->valuestring, "linear"))
        r->type = ENG_ROPE_LINEAR;
    else
        return eng_fail(err, "%s: unsupported rope_scaling type \"%s\" (supported: default, linear, yarn)", path,
                        t->valuestring);
    if (get_double(rs, "factor", 1, 1.0, &r->factor, path, err) < 0)
        return -1;
    if (!(r->factor >= 1.0))
        return eng_fail(err, "%s: rope_scaling.factor must be >= 1", path);
    if (r->type == ENG_ROPE_YARN) {
        if (get_int(rs, "original_max_position_embeddings", 0, c->max_position_embeddings,
                    &r->original_max_position_embeddings, path, err) < 0 ||
            get_double(rs, "beta_fast", 0, 32.0, &r->beta_fast, path, err) < 0 ||
            get_double(rs, "beta_slow", 0, 1.0, &r->beta_slow, path, err) < 0 ||
            get_double(rs, "mscale", 0, 0.0, &r->mscale, path, err) < 0 ||
            get_double(rs, "mscale_all_dim", 0, 0.0, &r->mscale_all_dim, path, err) < 0 ||
            get_double(rs, "attention_factor", 0, 0.0, &r->attention_factor, path, err) < 0 ||
            get_bool(rs, "truncate", 1, &r->truncate, path, err) < 0)
            return -1;
        if (r->original_max_position_embeddings <= 0)
            return eng_fail(err, "%s: rope_scaling.original_max_position_embeddings must be positive", path);
    }
    return 0;
}

/* A string member that must be absent or equal to want. */
static int expect_string(const cJSON *o, const char *key, const char *want, const char *path, eng_error *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsString(v) || strcmp(v->valuestring, want))
        return eng_fail(err, "%s: quantization_config.%s must be \"%s\" (the only one supported)", path, key, want);
    return 0;
}

/* Qwen's -FP8 checkpoints: {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme":
 * "dynamic", "weight_block_size": [128, 128]}. Which tensors are FP8 is read from
 * the files themselves (dtype F8_E4M3), so modules left in bf16 need no list. */
static int parse_quantization(const cJSON *root, eng_config *c, const char *path, eng_error *err)
{
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(root, "quantization_config");
    if (!q || cJSON_IsNull(q))
        return 0;
    if (!cJSON_IsObject(q))
        return eng_fail(err, "%s: key \"quantization_config\" must be an object", path);
    const cJSON *qm = cJSON_GetObjectItemCaseSensitive(q, "quant_method");
    if (!cJSON_IsString(qm))
        return eng_fail(err, "%s: quantization_config needs a string \"quant_method\"", path);
    if (strcmp(qm->valuestring, "fp8"))
        return eng_fail(err, "%s: unsupported quantization_config.quant_method \"%s\" (supported: fp8)", path,
                        qm->valuestring);
    if (expect_string(q, "fmt", "e4m3", path, err) < 0 ||
        expect_string(q, "activation_scheme", "dynamic", path, err) < 0)
        return -1;
    const cJSON *bs = cJSON_GetObjectItemCaseSensitive(q, "weight_block_size");
    if (!cJSON_IsArray(bs) || cJSON_GetArraySize(bs) != 2)
        return eng_fail(err,
                        "%s: quantization_config.weight_block_size must be a list of two integers (block-wise "
                        "FP8 is the supported kind)",
                        path);
    for (int d = 0; d < 2; d++) {
        const cJSON *v = cJSON_GetArrayItem(bs, d);
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 1 ||
            v->valuedouble > 65536)
            return eng_fail(err, "%s: quantization_config.weight_block_size must hold integers in 1..65536", path);
        c->fp8_block[d] = (int)v->valuedouble;
    }
    if (c->fp8_block[1] % ENG_FP8_BLOCK_ALIGN)
        return eng_fail(err, "%s: quantization_config.weight_block_size[1] (%d) must be a multiple of %d", path,
                        c->fp8_block[1], ENG_FP8_BLOCK_ALIGN);
    c->fp8 = 1;
    return 0;
}

int eng_config_load(const char *dir, eng_config *c, eng_error *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    cJSON *root = parse_json_file(path, err);
    if (!root)
        return -1;
    memset(c, 0, sizeof *c);
    int rc = -1;

    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (!cJSON_IsString(mt)) {
        eng_fail(err, "%s: missing key \"model_type\"", path);
        goto done;
    }
    if (!strcmp(mt->valuestring, "qwen3"))
        c->is_moe = 0;
    else if (!strcmp(mt->valuestring, "qwen3_moe"))
        c->is_moe = 1;
    else {
        eng_fail(err, "%s: unknown model_type \"%s\" (supported: qwen3, qwen3_moe)", path, mt->valuestring);
        goto done;
    }
    snprintf(c->model_type, sizeof c->model_type, "%s", mt->valuestring);

    double eps;
    if (get_int(root, "vocab_size", 1, 0, &c->vocab_size, path, err) < 0 ||
        get_int(root, "hidden_size", 1, 0, &c->hidden_size, path, err) < 0 ||
        get_int(root, "num_hidden_layers", 1, 0, &c->num_hidden_layers, path, err) < 0 ||
        get_int(root, "num_attention_heads", 1, 0, &c->num_attention_heads, path, err) < 0 ||
        get_int(root, "num_key_value_heads", 0, 0, &c->num_key_value_heads, path, err) < 0 ||
        get_int(root, "head_dim", 0, 0, &c->head_dim, path, err) < 0 ||
        get_int(root, "intermediate_size", !c->is_moe, 0, &c->intermediate_size, path, err) < 0 ||
        get_double(root, "rms_norm_eps", 0, 1e-6, &eps, path, err) < 0 ||
        get_double(root, "rope_theta", 0, 10000.0, &c->rope_theta, path, err) < 0 ||
        get_int(root, "max_position_embeddings", 0, 32768, &c->max_position_embeddings, path, err) < 0 ||
        get_bool(root, "tie_word_embeddings", 0, &c->tie_word_embeddings, path, err) < 0 ||
        get_int(root, "bos_token_id", 0, -1, &c->bos_token_id, path, err) < 0 ||
        get_int(root, "eos_token_id", 0, -1, &c->eos_token_id, path, err) < 0)
        goto done;
    c->rms_norm_eps = (float)eps;
    if (c->num_key_value_heads == 0)
        c->num_key_value_heads = c->num_attention_heads;
    if (c->vocab_size <= 0 || c->hidden_size <= 0 || c->num_hidden_layers <= 0 || c->num_attention_heads <= 0 ||
        c->num_key_value_heads <= 0) {
        eng_fail(err, "%s: vocab_size, hidden_size, num_hidden_layers and the head counts must be positive", path);
        goto done;
    }
    if (c->num_hidden_layers > ENG_MAX_LAYERS) {
        eng_fail(err, "%s: num_hidden_layers %d exceeds the supported %d", path, c->num_hidden_layers, ENG_MAX_LAYERS);
        goto done;
    }
    if (c->head_dim == 0) {
        if (c->hidden_size % c->num_attention_heads) {
            eng_fail(err, "%s: no \"head_dim\" and hidden_size is not a multiple of num_attention_heads", path);
            goto done;
        }
        c->head_dim = c->hidden_size / c->num_attention_heads;
    }
    if (c->head_dim <= 0 || c->head_dim % 2) {
        eng_fail(err, "%s: head_dim must be positive and even (it is %d)", path, c->head_dim);
        goto done;
    }
    if (c->num_attention_heads % c->num_key_value_heads) {
        eng_fail(err, "%s: num_attention_heads (%d) is not a multiple of num_key_value_heads (%d)", path,
                 c->num_attention_heads, c->num_key_value_heads);
        goto done;
    }
    if (!(c->rms_norm_eps > 0) || !(c->rope_theta > 0)) {
        eng_fail(err, "%s: rms_norm_eps and rope_theta must be positive", path);
        goto done;
    }
    if (parse_rope_scaling(root, c, path, err) < 0 || parse_quantization(root, c, path, err) < 0)
        goto done;

    if (c->is_moe) {
        if (get_int(root, "num_experts", 1, 0, &c->num_experts, path, err) < 0 ||
            get_int(root, "num_experts_per_tok", 1, 0, &c->num_experts_per_tok, path, err) < 0 ||
            get_int(root, "moe_intermediate_size", 1, 0, &c->moe_intermediate_size, path, err) < 0 ||
            get_bool(root, "norm_topk_prob", 0, &c->norm_topk_prob, path, err) < 0 ||
            get_int(root, "decoder_sparse_step", 0, 1, &c->decoder_sparse_step, path, err) < 0)
            goto done;
        if (c->num_experts < 0 || c->num_experts > ENG_MOE_MAX_EXPERTS || c->num_experts_per_tok <= 0 ||
            c->num_experts_per_tok > c->num_experts || c->num_experts_per_tok > ENG_MOE_MAX_TOPK ||
            c->moe_intermediate_size <= 0 || c->decoder_sparse_step <= 0) {
            eng_fail(err,
                     "%s: need 0 < num_experts_per_tok <= num_experts, num_experts <= %d, "
                     "num_experts_per_tok <= %d, moe_intermediate_size > 0 and decoder_sparse_step > 0",
                     path, ENG_MOE_MAX_EXPERTS, ENG_MOE_MAX_TOPK);
            goto done;
        }
        const cJSON *mol = cJSON_GetObjectItemCaseSensitive(root, "mlp_only_layers");
        if (mol && !cJSON_IsNull(mol)) {
            if (!cJSON_IsArray(mol)) {
                eng_fail(err, "%s: key \"mlp_only_layers\" must be a list of layer indices", path);
                goto done;
            }
            const cJSON *it;
            cJSON_ArrayForEach(it, mol)
            {
                if (!cJSON_IsNumber(it) || it->valueint < 0 || it->valueint >= c->num_hidden_layers) {
                    eng_fail(err, "%s: mlp_only_layers holds an invalid layer index", path);
                    goto done;
                }
                c->mlp_only_layers[c->n_mlp_only_layers++] = it->valueint;
            }
        }
        /* A dense layer inside a MoE model needs intermediate_size. */
        for (int l = 0; l < c->num_hidden_layers; l++)
            if (!eng_config_layer_is_moe(c, l) && c->intermediate_size <= 0) {
                eng_fail(err, "%s: layer %d is dense but \"intermediate_size\" is missing", path, l);
                goto done;
            }
    } else if (c->intermediate_size <= 0) {
        eng_fail(err, "%s: intermediate_size must be positive", path);
        goto done;
    }
    rc = 0;
done:
    cJSON_Delete(root);
    return rc;
}

int eng_config_layer_is_moe(const eng_config *c, int layer)
{
    if (!c->is_moe || c->num_experts <= 0)
        return 0;
    for (int i = 0; i < c->n_mlp_only_layers; i++)
        if (c->mlp_only_layers[i] == layer)
            return 0;
    return (layer + 1) % c->decoder_sparse_step == 0;
}

static int get_float(const cJSON *o, const char *key, float def, float *out, const char *path, eng_error *err)
{
    double d = def;
    if (get_double(o, key, 0, def, &d, path, err) < 0)
        return -1;
    *out = (float)d;
    return 0;
}

int eng_gen_config_load(const char *dir, const eng_config *cfg, eng_gen_config *g, eng_error *err)
{
    memset(g, 0, sizeof *g);
    g->temperature = 1.0f;
    g->top_k = 50;
    g->top_p = 1.0f;
    g->repetition_penalty = 1.0f;
    if (cfg && cfg->eos_token_id >= 0)
        g->eos_token_id[g->n_eos++] = cfg->eos_token_id;

    char path[4096];
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    FILE *probe = fopen(path, "rb");
    if (!probe)
        return errno == ENOENT ? 0 : eng_fail(err, "%s: cannot open: %s", path, strerror(errno));
    fclose(probe);

    cJSON *root = parse_json_file(path, err);
    if (!root)
        return -1;
    int rc = -1;
    const cJSON *eos = cJSON_GetObjectItemCaseSensitive(root, "eos_token_id");
    if (eos && !cJSON_IsNull(eos)) {
        g->n_eos = 0;
        if (cJSON_IsNumber(eos)) {
            g->eos_token_id[g->n_eos++] = eos->valueint;
        } else if (cJSON_IsArray(eos)) {
            const cJSON *it;
            cJSON_ArrayForEach(it, eos)
            {
                if (!cJSON_IsNumber(it)) {
                    eng_fail(err, "%s: eos_token_id must hold integers", path);
                    goto done;
                }
                if (g->n_eos == ENG_MAX_EOS) {
                    eng_fail(err, "%s: more than %d eos_token_id values", path, ENG_MAX_EOS);
                    goto done;
                }
                g->eos_token_id[g->n_eos++] = it->valueint;
            }
        } else {
            eng_fail(err, "%s: eos_token_id must be an integer or a list", path);
            goto done;
        }
    }
    if (get_bool(root, "do_sample", 0, &g->do_sample, path, err) < 0 ||
        get_float(root, "temperature", 1.0f, &g->temperature, path, err) < 0 ||
        get_int(root, "top_k", 0, 50, &g->top_k, path, err) < 0 ||
        get_float(root, "top_p", 1.0f, &g->top_p, path, err) < 0 ||
        get_float(root, "min_p", 0.0f, &g->min_p, path, err) < 0 ||
        get_float(root, "repetition_penalty", 1.0f, &g->repetition_penalty, path, err) < 0 ||
        get_float(root, "presence_penalty", 0.0f, &g->presence_penalty, path, err) < 0 ||
        get_float(root, "frequency_penalty", 0.0f, &g->frequency_penalty, path, err) < 0 ||
        get_int(root, "max_new_tokens", 0, 0, &g->max_new_tokens, path, err) < 0)
        goto done;
    if (g->temperature < 0 || g->top_p <= 0 || g->top_p > 1 || g->min_p < 0 || g->min_p > 1 ||
        g->repetition_penalty <= 0) {
        eng_fail(err,
                 "%s: sampling values out of range (temperature >= 0, 0 < top_p <= 1, 0 <= min_p <= 1, "
                 "repetition_penalty > 0)",
                 path);
        goto done;
    }
    rc = 0;
done:
    cJSON_Delete(root);
    return rc;
}

int eng_gen_config_is_eos(const eng_gen_config *g, int32_t id)
{
    for (int i = 0; i < g->n_eos; i++)
        if (g->eos_token_id[i] == id)
            return 1;
    return 0;
}
