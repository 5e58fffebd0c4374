/* moe.c: the sparse MLP of Qwen3-MoE, with an expert-ownership mask.
 *
 * Routing always covers every expert (softmax over all router logits, top-k,
 * optional renormalisation), so each process computes the same weights; then only
 * the owned experts run. For each owned expert, in increasing id order, the tokens
 * routed to it are gathered into one matrix (weights read once), and its weighted
 * output is added to each token's row. Because every token sees its experts in id
 * order, a token's result does not depend on the batch, and the shares of disjoint
 * masks sum to the full layer. */
#include <stdlib.h>
#include <string.h>

#include "model/model_impl.h"

/* Top-k of a probability row: highest first, ties to the lower id (stable). */
static void top_k(const float *p, int n, int k, int *ids, float *vals)
{
    for (int j = 0; j < k; j++) {
        ids[j] = -1;
        vals[j] = -1.0f;
    }
    for (int e = 0; e < n; e++) {
        if (p[e] <= vals[k - 1] && ids[k - 1] >= 0)
            continue;
        int j = k - 1;
        while (j > 0 && (ids[j - 1] < 0 || p[e] > vals[j - 1])) {
            ids[j] = ids[j - 1];
            vals[j] = vals[j - 1];
            j--;
        }
        ids[j] = e;
        vals[j] = p[e];
    }
}

int eng_moe_layer(eng_model *m, int layer, const float *x, int n_tokens, const uint8_t *mask, float *out,
                  eng_error *err)
{
    const eng_config *c = &m->cfg;
    if (layer < 0 || layer >= c->num_hidden_layers || !m->layers[layer].is_moe)
        return eng_fail(err, "layer %d is not a MoE layer", layer);
    if (n_tokens <= 0)
        return 0;
    const eng_layer_weights *w = &m->layers[layer];
    int H = c->hidden_size, E = c->num_experts, K = c->num_experts_per_tok, F = c->moe_intermediate_size;
    for (int e = 0; e < E; e++)
        if ((!mask || mask[e]) && (!w->exp_gate[e].w || !w->exp_up[e].w || !w->exp_down[e].w))
            return eng_fail(err, "layer %d: expert %d is not loaded in this process (not in its expert mask)", layer,
                            e);

    size_t T = (size_t)n_tokens;
    float *probs = malloc(T * E * sizeof(float));
    int *sel = malloc(T * K * sizeof(int));
    float *sel_w = malloc(T * K * sizeof(float));
    int *rows = malloc(T * sizeof(int));
    float *row_w = malloc(T * sizeof(float));
    float *xe = malloc(T * H * sizeof(float));
    float *g = malloc(T * F * sizeof(float));
    float *u = malloc(T * F * sizeof(float));
    float *y = malloc(T * H * sizeof(float));
    int rc = -1;
    if (!probs || !sel || !sel_w || !rows || !row_w || !xe || !g || !u || !y) {
        eng_fail(err, "out of memory in MoE layer %d for %d tokens", layer, n_tokens);
        goto done;
    }

    /* router = softmax(gate(x)) in f32, top-k, renormalise */
    eng_matmul(m->pool, probs, x, w->router.w, w->router.dt, n_tokens, H, E);
    for (size_t t = 0; t < T; t++) {
        eng_softmax(probs + t * E, E);
        top_k(probs + t * E, E, K, sel + t * K, sel_w + t * K);
        if (c->norm_topk_prob) {
            float sum = 0;
            for (int j = 0; j < K; j++)
                sum += sel_w[t * K + j];
            for (int j = 0; j < K; j++)
                sel_w[t * K + j] /= sum;
        }
    }

    for (int e = 0; e < E; e++) {
        if (mask && !mask[e])
            continue;
        int n = 0;
        for (size_t t = 0; t < T; t++)
            for (int j = 0; j < K; j++)
                if (sel[t * K + j] == e) {
                    rows[n] = (int)t;
                    row_w[n] = sel_w[t * K + j];
                    memcpy(xe + (size_t)n * H, x + t * H, (size_t)H * sizeof(float));
                    n++;
                }
        if (!n)
            continue;
        /* down(silu(gate(x)) * up(x)) */
        eng_matmul(m->pool, g, xe, w->exp_gate[e].w, w->exp_gate[e].dt, n, H, F);
        eng_matmul(m->pool, u, xe, w->exp_up[e].w, w->exp_up[e].dt, n, H, F);
        for (int r = 0; r < n; r++)
            eng_silu_mul(g + (size_t)r * F, u + (size_t)r * F, F);
        eng_matmul(m->pool, y, g, w->exp_down[e].w, w->exp_down[e].dt, n, F, H);
        for (int r = 0; r < n; r++)
            eng_axpy(out + (size_t)rows[r] * H, row_w[r], y + (size_t)r * H, H);
    }
    rc = 0;
done:
    free(probs);
    free(sel);
    free(sel_w);
    free(rows);
    free(row_w);
    free(xe);
    free(g);
    free(u);
    free(y);
    return rc;
}
