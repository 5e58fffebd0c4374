/* ckpt.c: see ckpt.h. Values are drawn from a fixed-seed generator, scaled like
 * make_model.py's so activations stay in a realistic range. */
#include "ckpt.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void ckpt_defaults(ckpt_spec *s, int moe)
{
    memset(s, 0, sizeof *s);
    s->moe = moe;
    s->vocab = 320;
    s->hidden = 64;
    s->layers = 3;
    s->heads = 4;
    s->kv_heads = 2;
    s->head_dim = 32;
    s->ffn = 96;
    s->experts = 8;
    s->experts_per_tok = 3;
    s->moe_ffn = 32;
    s->tied = !moe;
    s->dtype = "BF16";
    s->seed = 7;
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static float rng_normal(uint64_t *s)
{
    double u1 = ((rng_next(s) >> 11) + 1.0) / 9007199254740993.0, u2 = (rng_next(s) >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2 * log(u1)) * cos(2 * M_PI * u2));
}

typedef struct tensor {
    char name[128];
    char dtype[8];
    int rows, cols; /* cols 0: a vector of rows */
    unsigned char *data;
    size_t nbytes;
} tensor;

typedef struct tlist {
    tensor *t;
    int n, cap;
} tlist;

/* float -> IEEE half, rounding to nearest even. Written out because clang before 15 has no
 * _Float16 on x86. */
static uint16_t f32_to_f16(float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    u &= 0x7fffffff;
    if (u > 0x7f800000)
        return sign | 0x7e00; /* NaN */
    if (u >= 0x477ff000)
        return sign | 0x7c00; /* 65520 and above round to infinity */
    if (u < 0x38800000) {     /* below 2^-14: a subnormal half, in units of 2^-24 */
        float mag;
        memcpy(&mag, &u, 4);
        return sign | (uint16_t)lrintf(mag * 16777216.0f);
    }
    u -= 112u << 23; /* exponent bias 127 -> 15 */
    u += 0xfff + ((u >> 13) & 1);
    return sign | (uint16_t)(u >> 13);
}

static void encode(float v, const char *dt, unsigned char *dst)
{
    if (!strcmp(dt, "F32")) {
        memcpy(dst, &v, 4);
    } else if (!strcmp(dt, "BF16")) {
        uint32_t u;
        memcpy(&u, &v, 4);
        u += 0x7FFF + ((u >> 16) & 1);
        uint16_t h = (uint16_t)(u >> 16);
        memcpy(dst, &h, 2);
    } else if (!strcmp(dt, "F16")) {
        uint16_t h = f32_to_f16(v);
        memcpy(dst, &h, 2);
    } else if (!strcmp(dt, "F8_E4M3")) { /* the code of 1.0, whatever v is (for loader tests only) */
        dst[0] = 0x38;
    } else { /* an unsupported dtype: 8 bytes of double */
        double d = v;
        memcpy(dst, &d, 8);
    }
}

static int dt_size(const char *dt)
{
    return !strcmp(dt, "F32") ? 4 : (!strcmp(dt, "BF16") || !strcmp(dt, "F16")) ? 2 : !strcmp(dt, "F8_E4M3") ? 1 : 8;
}

static void add(tlist *l, const ckpt_spec *s, uint64_t *rng, const char *name, int rows, int cols, float scale,
                int is_norm)
{
    if (s->skip_tensor && !strcmp(name, s->skip_tensor))
        return;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->t = realloc(l->t, (size_t)l->cap * sizeof *l->t);
    }
    tensor *t = &l->t[l->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    snprintf(t->dtype, sizeof t->dtype, "%s", s->dtype);
    int odd = s->odd_tensor && !strcmp(name, s->odd_tensor);
    if (odd && s->odd_dtype)
        snprintf(t->dtype, sizeof t->dtype, "%s", s->odd_dtype);
    if (odd && s->odd_rows > 0)
        rows = s->odd_rows;
    t->rows = rows;
    t->cols = cols;
    size_t n = (size_t)rows * (cols ? cols : 1);
    int es = dt_size(t->dtype);
    t->nbytes = n * es;
    t->data = malloc(t->nbytes);
    for (size_t i = 0; i < n; i++) {
        float v = is_norm ? 1.0f + 0.1f * rng_normal(rng) : rng_normal(rng) * scale;
        encode(v, t->dtype, t->data + i * es);
    }
}

static int write_safetensors(const char *path, const tlist *l)
{
    size_t cap = 256 + (size_t)l->n * 200, len = 0;
    char *h = malloc(cap);
    size_t off = 0;
    len += (size_t)snprintf(h + len, cap - len, "{");
    for (int i = 0; i < l->n; i++) {
        const tensor *t = &l->t[i];
        char shape[64];
        if (t->cols)
            snprintf(shape, sizeof shape, "[%d,%d]", t->rows, t->cols);
        else
            snprintf(shape, sizeof shape, "[%d]", t->rows);
        len += (size_t)snprintf(h + len, cap - len,
                                "%s\"%s\":{\"dtype\":\"%s\",\"shape\":%s,\"data_offsets\":[%zu,%zu]}", i ? "," : "",
                                t->name, !strcmp(t->dtype, "F64") ? "F64" : t->dtype, shape, off, off + t->nbytes);
        off += t->nbytes;
    }
    len += (size_t)snprintf(h + len, cap - len, ",\"__metadata__\":{\"format\":\"pt\"}}");
    while (len % 8)
        h[len++] = ' ';
    FILE *f = fopen(path, "wb");
    if (!f) {
        free(h);
        return -1;
    }
    uint64_t hl = len;
    unsigned char le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (unsigned char)(hl >> (8 * i));
    fwrite(le, 1, 8, f);
    fwrite(h, 1, len, f);
    for (int i = 0; i < l->n; i++)
        fwrite(l->t[i].data, 1, l->t[i].nbytes, f);
    free(h);
    return fclose(f) == 0 ? 0 : -1;
}

int ckpt_write(const char *dir, const ckpt_spec *s)
{
    mkdir(dir, 0755);
    uint64_t rng = s->seed;
    tlist l = {0};
    int H = s->hidden, HD = s->head_dim;
    float mix = 4.0f;
    char n[160];
    add(&l, s, &rng, "model.embed_tokens.weight", s->vocab, H, 1.0f, 0);
    for (int i = 0; i < s->layers; i++) {
#define ADD(rows, cols, scale, norm, ...) \
    (snprintf(n, sizeof n, __VA_ARGS__), add(&l, s, &rng, n, rows, cols, scale, norm))
        ADD(H, 0, 0, 1, "model.layers.%d.input_layernorm.weight", i);
        ADD(s->heads * HD, H, 1 / sqrtf(H), 0, "model.layers.%d.self_attn.q_proj.weight", i);
        ADD(s->kv_heads * HD, H, 1 / sqrtf(H), 0, "model.layers.%d.self_attn.k_proj.weight", i);
        ADD(s->kv_heads * HD, H, 1 / sqrtf(H), 0, "model.layers.%d.self_attn.v_proj.weight", i);
        ADD(H, s->heads * HD, mix / sqrtf(s->heads * HD), 0, "model.layers.%d.self_attn.o_proj.weight", i);
        ADD(HD, 0, 0, 1, "model.layers.%d.self_attn.q_norm.weight", i);
        ADD(HD, 0, 0, 1, "model.layers.%d.self_attn.k_norm.weight", i);
        ADD(H, 0, 0, 1, "model.layers.%d.post_attention_layernorm.weight", i);
        if (s->moe) {
            ADD(s->experts, H, 4 / sqrtf(H), 0, "model.layers.%d.mlp.gate.weight", i);
            for (int e = 0; e < s->experts; e++) {
                ADD(s->moe_ffn, H, 1 / sqrtf(H), 0, "model.layers.%d.mlp.experts.%d.gate_proj.weight", i, e);
                ADD(s->moe_ffn, H, 1 / sqrtf(H), 0, "model.layers.%d.mlp.experts.%d.up_proj.weight", i, e);
                ADD(H, s->moe_ffn, mix / sqrtf(s->moe_ffn), 0, "model.layers.%d.mlp.experts.%d.down_proj.weight", i, e);
            }
        } else {
            ADD(s->ffn, H, 1 / sqrtf(H), 0, "model.layers.%d.mlp.gate_proj.weight", i);
            ADD(s->ffn, H, 1 / sqrtf(H), 0, "model.layers.%d.mlp.up_proj.weight", i);
            ADD(H, s->ffn, mix / sqrtf(s->ffn), 0, "model.layers.%d.mlp.down_proj.weight", i);
        }
#undef ADD
    }
    add(&l, s, &rng, "model.norm.weight", H, 0, 0, 1);
    if (!s->tied)
        add(&l, s, &rng, "lm_head.weight", s->vocab, H, 8 / sqrtf(H), 0);

    char path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    int rc = write_safetensors(path, &l);
    for (int i = 0; i < l.n; i++)
        free(l.t[i].data);
    free(l.t);
    if (rc < 0)
        return -1;

    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f,
            "{\"model_type\": \"%s\", \"vocab_size\": %d, \"hidden_size\": %d, \"intermediate_size\": %d,\n"
            " \"num_hidden_layers\": %d, \"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"head_dim\": %d,\n"
            " \"rms_norm_eps\": 1e-6, \"rope_theta\": 1000000.0, \"max_position_embeddings\": 40960,\n"
            " \"tie_word_embeddings\": %s, \"bos_token_id\": 1, \"eos_token_id\": 2",
            s->model_type ? s->model_type
            : s->moe      ? "qwen3_moe"
                          : "qwen3",
            s->vocab, H, s->ffn, s->layers, s->heads, s->kv_heads, HD, s->tied ? "true" : "false");
    if (s->moe)
        fprintf(f,
                ",\n \"num_experts\": %d, \"num_experts_per_tok\": %d, \"moe_intermediate_size\": %d,"
                " \"norm_topk_prob\": true, \"decoder_sparse_step\": 1, \"mlp_only_layers\": []",
                s->experts, s->experts_per_tok, s->moe_ffn);
    if (s->extra_config)
        fprintf(f, ",\n %s", s->extra_config);
    fprintf(f, "}\n");
    fclose(f);
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f,
            "{\"eos_token_id\": [2, 3], \"do_sample\": true, \"temperature\": 0.6, \"top_k\": 20, \"top_p\": 0.95}\n");
    fclose(f);
    return 0;
}

const char *ckpt_tmpdir(const char *tag)
{
    static char buf[1024];
    const char *base = getenv("TMPDIR");
    snprintf(buf, sizeof buf, "%s/tandem-model-%s-XXXXXX", base && *base ? base : "/tmp", tag);
    if (!mkdtemp(buf))
        return NULL;
    return buf;
}

void ckpt_remove(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char path[2048];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    closedir(d);
    rmdir(dir);
}
