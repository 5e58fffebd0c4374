/* sampler_probe.c: the sampler as a filter over JSON lines, for reference_vllm.py.
 *
 * Each input line: {"temperature", "top_k", "top_p", "min_p", "presence_penalty",
 * "frequency_penalty", "repetition_penalty", "seed", "logits": [...], "prompt": [...],
 * "generated": [...], "n_top"} (null logits are -inf). Each output line: {"probs": [...]} (eng_sample_probs)
 * plus "id", "logprob", "top": [[id, logprob], ...] (eng_sample), or {"error": true}. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sampling/sampler.h"

static double num(const cJSON *o, const char *key, double dflt)
{
    const cJSON *v = cJSON_GetObjectItem(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

static int32_t *ids(const cJSON *o, const char *key, int *n)
{
    const cJSON *a = cJSON_GetObjectItem(o, key);
    *n = cJSON_GetArraySize(a);
    int32_t *v = malloc(((size_t)*n + 1) * sizeof *v);
    for (int i = 0; i < *n; i++)
        v[i] = (int32_t)cJSON_GetArrayItem(a, i)->valuedouble;
    return v;
}

int main(void)
{
    static char line[1 << 24];
    while (fgets(line, sizeof line, stdin)) {
        cJSON *in = cJSON_Parse(line);
        if (!in) {
            fprintf(stderr, "sampler_probe: bad JSON line\n");
            return 1;
        }
        eng_sampling s;
        eng_sampling_defaults(&s);
        s.temperature = (float)num(in, "temperature", 0);
        s.top_k = (int)num(in, "top_k", 0);
        s.top_p = (float)num(in, "top_p", 1);
        s.min_p = (float)num(in, "min_p", 0);
        s.presence_penalty = (float)num(in, "presence_penalty", 0);
        s.frequency_penalty = (float)num(in, "frequency_penalty", 0);
        s.repetition_penalty = (float)num(in, "repetition_penalty", 1);
        s.seed = (uint64_t)num(in, "seed", 0);
        int vocab, n_prompt, n_gen;
        const cJSON *jl = cJSON_GetObjectItem(in, "logits");
        vocab = cJSON_GetArraySize(jl);
        float *logits = malloc((size_t)vocab * sizeof *logits), *copy = malloc((size_t)vocab * sizeof *copy);
        float *probs = malloc((size_t)vocab * sizeof *probs);
        for (int i = 0; i < vocab; i++) { /* null stands for -inf (a masked token) */
            const cJSON *v = cJSON_GetArrayItem(jl, i);
            logits[i] = cJSON_IsNull(v) ? -INFINITY : (float)v->valuedouble;
        }
        memcpy(copy, logits, (size_t)vocab * sizeof *copy);
        int32_t *prompt = ids(in, "prompt", &n_prompt), *gen = ids(in, "generated", &n_gen);
        eng_sample_result r;
        int rc1 = eng_sample_probs(&s, copy, vocab, prompt, n_prompt, gen, n_gen, probs);
        int rc2 = eng_sample(&s, logits, vocab, prompt, n_prompt, gen, n_gen, (int)num(in, "n_top", 0), &r);
        cJSON *out = cJSON_CreateObject();
        if (rc1 || rc2) {
            cJSON_AddBoolToObject(out, "error", 1);
        } else {
            cJSON *p = cJSON_AddArrayToObject(out, "probs");
            for (int i = 0; i < vocab; i++)
                cJSON_AddItemToArray(p, cJSON_CreateNumber(probs[i]));
            cJSON_AddNumberToObject(out, "id", r.id);
            cJSON_AddNumberToObject(out, "logprob", r.logprob);
            cJSON *t = cJSON_AddArrayToObject(out, "top");
            for (int j = 0; j < r.n_top; j++) {
                cJSON *pair = cJSON_CreateArray();
                cJSON_AddItemToArray(pair, cJSON_CreateNumber(r.top[j].id));
                cJSON_AddItemToArray(pair, cJSON_CreateNumber(r.top[j].logprob));
                cJSON_AddItemToArray(t, pair);
            }
        }
        char *text = cJSON_PrintUnformatted(out);
        puts(text);
        free(text);
        cJSON_Delete(out);
        cJSON_Delete(in);
        free(logits);
        free(copy);
        free(probs);
        free(prompt);
        free(gen);
    }
    return 0;
}
