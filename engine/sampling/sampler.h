/* sampler.h: turning logits into the next token.
 *
 * Greedy, temperature, top-k, top-p, min-p, presence / frequency / repetition
 * penalties, and logprobs with top alternatives. Randomness is derived only from
 * (seed, step), step = number of tokens generated so far, so the same seed gives the
 * same tokens however requests are batched, split or moved between workers. */
#ifndef ENG_SAMPLER_H
#define ENG_SAMPLER_H

#include <stdint.h>

#include "common/error.h"
#include "model/config.h"

#define ENG_MAX_TOP_LOGPROBS 20

typedef struct eng_sampling {
    float temperature;        /* 0: greedy */
    int top_k;                /* 0 or <0: off */
    float top_p;              /* 1: off */
    float min_p;              /* 0: off */
    float presence_penalty;   /* 0: off; applied to generated tokens (OpenAI/vLLM) */
    float frequency_penalty;  /* 0: off; applied to generated tokens */
    float repetition_penalty; /* 1: off; applied to prompt and generated tokens (HF/vLLM) */
    uint64_t seed;
} eng_sampling;

/* Greedy, all filters and penalties off, seed 0. */
void eng_sampling_defaults(eng_sampling *s);

/* The sampling generation_config.json asks for, as vLLM applies it: its temperature,
 * top_k, top_p, min_p and penalties when do_sample is true, else greedy with its
 * repetition_penalty. The one rule of every caller (the HTTP API, `tandem generate`,
 * `tandem chat`): start from this and replace only the parameters the user set, so
 * each one left out keeps the model's value. The seed is left 0. */
void eng_sampling_from_gen_config(const eng_gen_config *gen, eng_sampling *s);

/* Checks the ranges vLLM accepts: temperature >= 0, top_k >= -1, top_p in (0, 1],
 * min_p in [0, 1], presence/frequency in [-2, 2], repetition > 0. Returns 0 or -1 with
 * one line naming the bad parameter (eng_sample rejects the same, without a message). */
int eng_sampling_check(const eng_sampling *s, eng_error *err);

/* Greedy decoding's pick: the id of the largest logit, ties to the lowest id;
 * -1 when none is above -inf (all -inf or NaN). */
int32_t eng_argmax(const float *logits, int vocab);

/* The one uniform in [0, 1) that step `step` of a request seeded `seed` draws. */
double eng_sample_uniform(uint64_t seed, uint64_t step);

typedef struct eng_token_logprob {
    int32_t id;
    float logprob;
} eng_token_logprob;

typedef struct eng_sample_result {
    int32_t id;
    float logprob; /* of id under the model's distribution: log_softmax of the raw logits */
    int n_top;
    eng_token_logprob top[ENG_MAX_TOP_LOGPROBS]; /* best first, from the same distribution */
} eng_sample_result;

/* Picks the next token. logits (vocab floats) are used as scratch and modified.
 * prompt/generated are the sequence so far (for penalties); step = n_generated.
 * n_top_logprobs in [0, ENG_MAX_TOP_LOGPROBS]. Returns 0, or -1 on bad parameters. */
int eng_sample(const eng_sampling *s, float *logits, int vocab, const int32_t *prompt, int n_prompt,
               const int32_t *generated, int n_generated, int n_top_logprobs, eng_sample_result *out);

/* The distribution eng_sample draws from at this step (after penalties, temperature,
 * min-p, top-k, top-p), written to probs[vocab]: zero for removed tokens, one-hot for
 * greedy. For tests and diagnostics; logits are scratch as above. 0, or -1 as eng_sample. */
int eng_sample_probs(const eng_sampling *s, float *logits, int vocab, const int32_t *prompt, int n_prompt,
                     const int32_t *generated, int n_generated, float *probs);

#endif
