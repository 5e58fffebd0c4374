/* cli_generate.h: the in-process generation loop shared by `tandem generate` and `tandem chat`.
 *
 * A cli_session holds a loaded model, its tokenizer, generation_config.json, the chat
 * template (when the model has one) and one KV-cache sequence that outlives a call:
 * the next call keeps the cached tokens its prompt shares as a prefix and prefills
 * only the rest, which is what makes a multi-turn chat cheap. The sampling options
 * (--temperature, --top-k, --top-p, --min-p, --seed) are declared and applied here too,
 * so that both commands read them the same way. */
#ifndef CLI_GENERATE_H
#define CLI_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "chat/template.h"
#include "cli_args.h"
#include "common/error.h"
#include "model/model.h"
#include "sampling/sampler.h"
#include "tokenizer/tokenizer.h"

typedef struct cli_sampling_opts {
    int have_temperature, have_top_k, have_top_p, have_min_p, have_seed;
    float temperature, top_p, min_p;
    int top_k;
    unsigned long long seed;
} cli_sampling_opts;

/* The sampling rows of a command's option table (cli_args.h), for the
 * cli_sampling_opts member m of struct st. */
#define CLI_SAMPLING_OPTS(st, m)                                                                 \
    CLI_FLOAT_GIVEN(st, m.temperature, m.have_temperature, "--temperature", "T", 0, 100,         \
                    "0: greedy. Each sampling option left out takes\n"                           \
                    "generation_config.json's value (as the API does)",                          \
                    0),                                                                          \
        CLI_INT_GIVEN(st, m.top_k, m.have_top_k, "--top-k", "K", -1, 1 << 30, "0 or -1: off"),   \
        CLI_FLOAT_GIVEN(st, m.top_p, m.have_top_p, "--top-p", "P", 0, 1, "1: off", CLI_LO_OPEN), \
        CLI_FLOAT_GIVEN(st, m.min_p, m.have_min_p, "--min-p", "M", 0, 1, "0: off", 0),           \
        CLI_U64_GIVEN(st, m.seed, m.have_seed, "--seed", "S", "seed of the sampler; default: from the clock")

/* generation_config.json's sampling with each option the user gave in its place; the
 * seed from the clock unless given. */
void cli_choose_sampling(const cli_sampling_opts *o, const eng_gen_config *g, eng_sampling *s);

typedef struct cli_session {
    eng_model *model;
    eng_tokenizer *tok;
    eng_gen_config gen;
    eng_chat_template *tmpl; /* NULL unless loaded with want_template */
    int context;             /* max_position_embeddings */
    eng_dtype kv_dtype;      /* of every pool the session makes (--kv-dtype) */
    eng_kv_pool *kv;
    int kv_tokens; /* capacity of the pool in tokens */
    eng_seq seq;
    int32_t *cached; /* the tokens whose K/V are in seq, in order (seq.n_past of them) */
    int cap_cached;
    float *logits;
} cli_session;

/* Loads the model, tokenizer, generation config and, with want_template, the chat
 * template of tokenizer_config.json, the model loaded with mo; its KV cache stores
 * kv_dtype. */
int cli_session_open(cli_session *s, const char *model_dir, const eng_model_options *mo, eng_dtype kv_dtype,
                     int want_template, eng_error *err);
void cli_session_close(cli_session *s);

/* The prompt text of an OpenAI-style request through the model's chat template, and
 * its ids (special tokens such as <|im_start|> recognised). *text and *ids are malloc'd. */
int cli_render_prompt(const cli_session *s, const cJSON *request, char **text, int32_t **ids, int *n_ids,
                      eng_error *err);

/* The output parser's ENG_PARSE_* flags for the completion of this rendered prompt:
 * reasoning when the model has the <think> token (opened by the prompt or not), and
 * tool calls. */
unsigned cli_parse_flags(const cli_session *s, const char *prompt);

/* Called with each piece of generated text as it comes (whole UTF-8 characters only).
 * A non-zero return ends the generation there (finish_reason "cancelled"). */
typedef int (*cli_text_fn)(void *ctx, const char *text, size_t len);

typedef struct cli_gen_out {
    int32_t *tokens; /* generated ids, the stop token included when there was one */
    eng_sample_result *results;
    int n;
    const char *finish_reason; /* "stop" (an eos id), "length", or "cancelled" by on_text */
    int n_reused;              /* prompt tokens whose K/V came from the previous call */
    double prefill_s, decode_s;
} cli_gen_out;

void cli_gen_out_free(cli_gen_out *o);

/* Prefills what the cache does not already hold of the prompt, then samples until an
 * eos id or max_tokens (cut to what the model's context leaves). on_text may be NULL;
 * the stop token's text is not passed. */
int cli_session_generate(cli_session *s, const eng_sampling *samp, const int32_t *prompt, int n_prompt, int max_tokens,
                         int top_logprobs, cli_text_fn on_text, void *ctx, cli_gen_out *o, eng_error *err);

#endif
