/* test_model_load.c: loading good checkpoints in every dtype, and one clear line
 * naming the file and the tensor for every kind of broken checkpoint. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "ckpt.h"
#include "model/model.h"

static eng_error err;

/* Loads dir expecting failure; checks the message holds every needle and is one line. */
static void expect_fail(const char *what, const char *dir, const char *n1, const char *n2)
{
    eng_model *m = NULL;
    memset(&err, 0, sizeof err);
    int rc = eng_model_load(dir, NULL, &m, &err);
    CHECK(rc == -1 && m == NULL, "%s: load should fail", what);
    CHECK(err.msg[0] && !strchr(err.msg, '\n'), "%s: one-line message, got '%s'", what, err.msg);
    CHECK(!n1 || strstr(err.msg, n1), "%s: message '%s' lacks '%s'", what, err.msg, n1);
    CHECK(!n2 || strstr(err.msg, n2), "%s: message '%s' lacks '%s'", what, err.msg, n2);
    if (rc == 0)
        eng_model_free(m);
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void load_ok(const char *what, const ckpt_spec *s)
{
    const char *dir = ckpt_tmpdir("ok");
    CHECK(ckpt_write(dir, s) == 0, "%s: write", what);
    eng_model *m = NULL;
    eng_model_options opt = {.n_threads = 2};
    CHECK(eng_model_load(dir, &opt, &m, &err) == 0, "%s: load: %s", what, err.msg);
    if (m) {
        const eng_config *c = eng_model_config(m);
        CHECK(c->num_hidden_layers == s->layers && c->head_dim == s->head_dim && c->is_moe == s->moe,
              "%s: config values", what);
        CHECK(eng_model_weight_bytes(m) > 0, "%s: weight bytes", what);
        eng_model_free(m);
    }
    ckpt_remove(dir);
}

int main(void)
{
    ckpt_spec s;
    const char *dtypes[3] = {"BF16", "F16", "F32"};
    for (int moe = 0; moe < 2; moe++)
        for (int d = 0; d < 3; d++) {
            ckpt_defaults(&s, moe);
            s.dtype = dtypes[d];
            load_ok(dtypes[d], &s);
        }
    ckpt_defaults(&s, 0);
    s.tied = 0;
    load_ok("untied dense", &s);

    /* config and generation config values */
    {
        ckpt_defaults(&s, 1);
        s.extra_config = "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0, "
                         "\"original_max_position_embeddings\": 32768}";
        const char *dir = ckpt_tmpdir("cfg");
        ckpt_write(dir, &s);
        eng_config c;
        CHECK(eng_config_load(dir, &c, &err) == 0, "config: %s", err.msg);
        CHECK(c.rope_scaling.type == ENG_ROPE_YARN && c.rope_scaling.factor == 4.0 &&
                  c.rope_scaling.original_max_position_embeddings == 32768 && c.rope_scaling.beta_fast == 32 &&
                  c.rope_scaling.beta_slow == 1,
              "yarn parsed");
        CHECK(c.num_experts == 8 && c.num_experts_per_tok == 3 && c.norm_topk_prob == 1, "moe keys");
        for (int l = 0; l < c.num_hidden_layers; l++)
            CHECK(eng_config_layer_is_moe(&c, l), "layer %d sparse", l);
        c.n_mlp_only_layers = 1;
        c.mlp_only_layers[0] = 1;
        CHECK(!eng_config_layer_is_moe(&c, 1) && eng_config_layer_is_moe(&c, 2), "mlp_only_layers");
        c.n_mlp_only_layers = 0;
        c.decoder_sparse_step = 2;
        CHECK(!eng_config_layer_is_moe(&c, 0) && eng_config_layer_is_moe(&c, 1), "decoder_sparse_step");
        eng_gen_config g;
        CHECK(eng_gen_config_load(dir, &c, &g, &err) == 0, "gen config: %s", err.msg);
        CHECK(g.n_eos == 2 && eng_gen_config_is_eos(&g, 2) && eng_gen_config_is_eos(&g, 3) &&
                  !eng_gen_config_is_eos(&g, 1),
              "eos list");
        CHECK(g.do_sample && g.top_k == 20 && g.temperature > 0.59f && g.temperature < 0.61f && g.top_p > 0.94f,
              "sampling values");
        char path[1024];
        snprintf(path, sizeof path, "%s/generation_config.json", dir);
        unlink(path);
        CHECK(eng_gen_config_load(dir, &c, &g, &err) == 0, "no gen config is fine");
        CHECK(g.n_eos == 1 && g.eos_token_id[0] == 2 && !g.do_sample && g.temperature == 1.0f, "defaults");
        write_file(dir, "generation_config.json", "{\"eos_token_id\": \"x\"}");
        CHECK(eng_gen_config_load(dir, &c, &g, &err) == -1 && strstr(err.msg, "generation_config.json"), "bad eos: %s",
              err.msg);

        write_file(dir, "config.json", "{\"model_type\": \"qwen3\", \"vocab_size\": 10,");
        expect_fail("bad config JSON", dir, "config.json", "invalid JSON");
        write_file(dir, "config.json", "{\"model_type\": \"llama\", \"vocab_size\": 10}");
        expect_fail("unknown model_type", dir, "config.json", "unknown model_type \"llama\"");
        write_file(dir, "config.json", "{\"model_type\": \"qwen3\", \"vocab_size\": 10}");
        expect_fail("missing key", dir, "config.json", "hidden_size");
        ckpt_remove(dir);
    }
    expect_fail("no such directory", "/nonexistent/tandem", "/nonexistent/tandem/config.json", NULL);

    /* broken weights */
    struct {
        const char *what, *skip, *odd, *odd_dtype;
        int odd_rows;
        const char *n1, *n2;
    } cases[] = {
        {"missing tensor", "model.layers.1.self_attn.k_proj.weight", NULL, NULL, 0, "model.safetensors",
         "missing tensor model.layers.1.self_attn.k_proj.weight"},
        {"missing lm_head", "lm_head.weight", NULL, NULL, 0, "model.safetensors", "missing tensor lm_head.weight"},
        {"wrong shape", NULL, "model.layers.2.mlp.down_proj.weight", NULL, 65, "model.layers.2.mlp.down_proj.weight",
         "shape [65, 96], expected [64, 96]"},
        {"unsupported dtype", NULL, "model.layers.0.self_attn.q_norm.weight", "F64", 0, "model.safetensors",
         "model.layers.0.self_attn.q_norm.weight has unsupported dtype F64"},
        {"FP8 without quantization_config", NULL, "model.layers.1.mlp.up_proj.weight", "F8_E4M3", 0,
         "model.layers.1.mlp.up_proj.weight is F8_E4M3", "no quantization_config"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ckpt_defaults(&s, 0);
        s.tied = 0;
        s.skip_tensor = cases[i].skip;
        s.odd_tensor = cases[i].odd;
        s.odd_dtype = cases[i].odd_dtype;
        s.odd_rows = cases[i].odd_rows;
        const char *dir = ckpt_tmpdir("bad");
        ckpt_write(dir, &s);
        expect_fail(cases[i].what, dir, cases[i].n1, cases[i].n2);
        ckpt_remove(dir);
    }
    /* FP8 (Qwen's -FP8 layout): the config and the scales must be as documented */
    static const char fp8_ok[] = "\"quantization_config\": {\"quant_method\": \"fp8\", \"fmt\": \"e4m3\", "
                                 "\"activation_scheme\": \"dynamic\", \"weight_block_size\": [128, 128]}";
    struct {
        const char *what, *odd, *config, *n1, *n2;
    } fp8[] = {
        {"FP8 without its scales", "model.layers.0.self_attn.o_proj.weight", fp8_ok,
         "missing tensor model.layers.0.self_attn.o_proj.weight_scale_inv", NULL},
        {"FP8 norm", "model.layers.1.post_attention_layernorm.weight", fp8_ok,
         "model.layers.1.post_attention_layernorm.weight is F8_E4M3", "norm weights must be"},
        {"FP8 embedding", "model.embed_tokens.weight", fp8_ok, "model.embed_tokens.weight is F8_E4M3",
         "embedding must be"},
        {"other quant_method", NULL, "\"quantization_config\": {\"quant_method\": \"gptq\"}", "config.json",
         "unsupported quantization_config.quant_method \"gptq\""},
        {"e5m2", NULL,
         "\"quantization_config\": {\"quant_method\": \"fp8\", \"fmt\": \"e5m2\", \"weight_block_size\": [128, 128]}",
         "config.json", "quantization_config.fmt must be \"e4m3\""},
        {"static activations", NULL,
         "\"quantization_config\": {\"quant_method\": \"fp8\", \"activation_scheme\": \"static\", "
         "\"weight_block_size\": [128, 128]}",
         "config.json", "activation_scheme must be \"dynamic\""},
        {"per-tensor FP8", NULL, "\"quantization_config\": {\"quant_method\": \"fp8\"}", "config.json",
         "weight_block_size must be a list of two integers"},
        {"block not a multiple of 16", NULL,
         "\"quantization_config\": {\"quant_method\": \"fp8\", \"weight_block_size\": [128, 100]}", "config.json",
         "weight_block_size[1] (100) must be a multiple of 16"},
        {"block of 0", NULL, "\"quantization_config\": {\"quant_method\": \"fp8\", \"weight_block_size\": [0, 128]}",
         "config.json", "integers in 1..65536"},
    };
    for (size_t i = 0; i < sizeof fp8 / sizeof fp8[0]; i++) {
        ckpt_defaults(&s, 0);
        s.odd_tensor = fp8[i].odd;
        s.odd_dtype = fp8[i].odd ? "F8_E4M3" : NULL;
        s.extra_config = fp8[i].config;
        const char *dir = ckpt_tmpdir("fp8");
        ckpt_write(dir, &s);
        expect_fail(fp8[i].what, dir, fp8[i].n1, fp8[i].n2);
        ckpt_remove(dir);
    }
    {
        ckpt_defaults(&s, 1);
        s.skip_tensor = "model.layers.0.mlp.experts.5.up_proj.weight";
        const char *dir = ckpt_tmpdir("moe");
        ckpt_write(dir, &s);
        expect_fail("missing expert", dir, "model.safetensors", "model.layers.0.mlp.experts.5.up_proj.weight");
        /* A process that does not own expert 5 does not need its weights. */
        uint8_t mask[8] = {1, 1, 1, 1, 1, 0, 1, 1};
        eng_model_options opt = {.n_threads = 1, .expert_mask = mask};
        eng_model *m = NULL;
        CHECK(eng_model_load(dir, &opt, &m, &err) == 0, "masked load: %s", err.msg);
        if (m) {
            float x[64] = {1}, out[64] = {0};
            CHECK(eng_moe_layer(m, 0, x, 1, NULL, out, &err) == -1 && strstr(err.msg, "expert 5"),
                  "running an absent expert fails: %s", err.msg);
            eng_model_free(m);
        }
        ckpt_remove(dir);
    }

    /* truncated and corrupt files */
    {
        ckpt_defaults(&s, 0);
        const char *dir = ckpt_tmpdir("trunc");
        ckpt_write(dir, &s);
        char path[1024];
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        FILE *f = fopen(path, "rb");
        fseek(f, 0, SEEK_END);
        long size = ftell(f);
        fclose(f);
        CHECK(truncate(path, size - 100) == 0, "truncate");
        expect_fail("truncated data", dir, "model.safetensors", "truncated file: tensor");
        CHECK(truncate(path, 5) == 0, "truncate");
        expect_fail("truncated header", dir, "model.safetensors", "truncated");
        f = fopen(path, "wb");
        unsigned char len[8] = {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0};
        fwrite(len, 1, 8, f);
        fwrite("{}", 1, 2, f);
        fclose(f);
        expect_fail("header length beyond the file", dir, "model.safetensors", "corrupt");
        f = fopen(path, "wb");
        unsigned char len2[8] = {12, 0, 0, 0, 0, 0, 0, 0};
        fwrite(len2, 1, 8, f);
        fwrite("{\"a\": [1, 2", 1, 12, f);
        fclose(f);
        expect_fail("bad header JSON", dir, "model.safetensors", "corrupt header");
        f = fopen(path, "wb");
        const char *h = "{\"model.norm.weight\":{\"dtype\":\"BF16\",\"shape\":[64],\"data_offsets\":[0,100]}}";
        unsigned char len3[8] = {(unsigned char)strlen(h), 0, 0, 0, 0, 0, 0, 0};
        fwrite(len3, 1, 8, f);
        fwrite(h, 1, strlen(h), f);
        char zeros[100] = {0};
        fwrite(zeros, 1, 100, f);
        fclose(f);
        expect_fail("size disagrees with shape", dir, "model.norm.weight", "holds 100 bytes");
        unlink(path);
        expect_fail("no weights", dir, "no weights", NULL);
        ckpt_remove(dir);
    }
    return check_summary();
}
