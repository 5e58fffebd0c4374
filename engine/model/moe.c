/* moe.c: the sparse MLP of Qwen3-MoE in three pieces, shared by one process and by
 * an expert-parallel group (worker/ep_moe.c):
 *
 *   route        softmax over every expert's router logit, top-k, optional
 *                renormalisation: the same picks and weights in every process;
 *   run experts  each expert, in increasing id order, once over all the rows routed
 *                to it (weights read once), writing one unweighted output per pick;
 *   combine      each token adds its picks' weighted outputs in increasing expert id
 *                order, starting from zero.
 *
 * A token's result is therefore a fixed sequence of operations on its own numbers
 * (given batch-invariant matmuls): it does not depend on the batch, on which
 * process ran which expert, or on where the outputs travelled in between. Shares of
 * disjoint expert masks add up to the whole layer. */
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

static int expert_loaded(const eng_layer_weights *w, int e)
{
    return w->exp_gate[e].w && w->exp_up[e].w && w->exp_down[e].w;
}

static int check_layer(const eng_model *m, int layer, eng_error *err)
{
    if (layer < 0 || layer >= m->cfg.num_hidden_layers || !m->layers[layer].is_moe)
        return eng_fail(err, "layer %d is not a MoE layer", layer);
    return 0;
}

void eng_model_set_moe(eng_model *m, eng_moe_fn fn, void *ctx)
{
    m->moe_fn = fn;
    m->moe_ctx = ctx;
}

int eng_moe_is_layer(const eng_model *m, int layer)
{
    return layer >= 0 && layer < m->cfg.num_hidden_layers && m->layers[layer].is_moe;
}

int eng_moe_route(eng_model *m, int layer, const float *x, int n_tokens, int *sel, float *sel_w, eng_error *err)
{
    if (check_layer(m, layer, err) < 0)
        return -1;
    if (n_tokens <= 0)
        return 0;
    const eng_config *c = &m->cfg;
    int H = c->hidden_size, E = c->num_experts, K = c->num_experts_per_tok;
    float *probs = malloc((size_t)n_tokens * E * sizeof(float));
    float *xr = m->matmul_dtype == ENG_DT_BF16 ? malloc((size_t)n_tokens * H * sizeof(float)) : NULL;
    if (!probs || (m->matmul_dtype == ENG_DT_BF16 && !xr)) {
        free(probs);
        free(xr);
        return eng_fail(err, "out of memory routing %d tokens in layer %d", n_tokens, layer);
    }
    eng_matmul_weight(m->pool, probs, x, xr, &m->layers[layer].router, n_tokens, H, E);
    free(xr);
    for (size_t t = 0; t < (size_t)n_tokens; t++) {
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
    free(probs);
    return 0;
}

int eng_moe_run_experts(eng_model *m, int layer, const float *x, const int *rows, const int *experts, int n_picks,
                        float *y, eng_error *err)
{
    if (check_layer(m, layer, err) < 0)
        return -1;
    const eng_config *c = &m->cfg;
    const eng_layer_weights *w = &m->layers[layer];
    int H = c->hidden_size, E = c->num_experts, F = c->moe_intermediate_size;
    /* rows per expert: a token picks an expert at most once, but callers may hand
     * any pick list, so size the scratch by the largest count */
    int *count = calloc((size_t)E, sizeof *count);
    if (!count)
        return eng_fail(err, "out of memory in MoE layer %d", layer);
    int most = 0;
    for (int p = 0; p < n_picks; p++) {
        int e = experts[p];
        if (e < 0)
            continue;
        if (e >= E || !expert_loaded(w, e)) {
            free(count);
            return e >= E ? eng_fail(err, "layer %d: expert %d does not exist (%d experts)", layer, e, E)
                          : eng_fail(err, "layer %d: expert %d is not loaded in this process (not in its expert mask)",
                                     layer, e);
        }
        if (++count[e] > most)
            most = count[e];
    }
    size_t n = most ? (size_t)most : 1;
    int *pick = malloc(n * sizeof *pick);
    float *xe = malloc(n * H * sizeof(float));
    float *g = malloc(n * F * sizeof(float));
    float *u = malloc(n * F * sizeof(float));
    float *ye = malloc(n * H * sizeof(float));
    float *xr = m->matmul_dtype == ENG_DT_BF16 ? malloc(n * (H > F ? H : F) * sizeof(float)) : NULL;
    int rc = -1;
    if (!pick || !xe || !g || !u || !ye || (m->matmul_dtype == ENG_DT_BF16 && !xr)) {
        eng_fail(err, "out of memory in MoE layer %d for %d picks", layer, n_picks);
        goto done;
    }
    for (int e = 0; e < E; e++) {
        if (!count[e])
            continue;
        int r = 0;
        for (int p = 0; p < n_picks; p++)
            if (experts[p] == e) {
                pick[r] = p;
                memcpy(xe + (size_t)r * H, x + (size_t)rows[p] * H, (size_t)H * sizeof(float));
                r++;
            }
        /* down(silu(gate(x)) * up(x)) */
        const eng_matmul_out gate_up[] = {{g, &w->exp_gate[e], F}, {u, &w->exp_up[e], F}};
        eng_matmul_multi(m->pool, xe, xr, r, H, gate_up, 2);
        for (int i = 0; i < r; i++)
            eng_silu_mul(g + (size_t)i * F, u + (size_t)i * F, F);
        eng_matmul_weight(m->pool, ye, g, xr, &w->exp_down[e], r, F, H);
        for (int i = 0; i < r; i++)
            memcpy(y + (size_t)pick[i] * H, ye + (size_t)i * H, (size_t)H * sizeof(float));
    }
    rc = 0;
done:
    free(count);
    free(pick);
    free(xe);
    free(g);
    free(u);
    free(ye);
    free(xr);
    return rc;
}

void eng_moe_combine(const eng_model *m, int n_tokens, const int *sel, const float *sel_w, const float *y, float *out)
{
    int H = m->cfg.hidden_size, K = m->cfg.num_experts_per_tok;
    for (size_t t = 0; t < (size_t)n_tokens; t++) {
        const int *s = sel + t * K;
        /* the picks by increasing expert id (top-k orders them by weight) */
        int order[ENG_MOE_MAX_TOPK];
        int n = 0;
        for (int j = 0; j < K; j++) {
            if (s[j] < 0)
                continue;
            int i = n++;
            while (i > 0 && s[order[i - 1]] > s[j]) {
                order[i] = order[i - 1];
                i--;
            }
            order[i] = j;
        }
        for (int i = 0; i < n; i++)
            eng_axpy(out + t * H, sel_w[t * K + order[i]], y + (t * K + order[i]) * H, H);
    }
}

int eng_moe_layer(eng_model *m, int layer, const float *x, int n_tokens, const uint8_t *mask, float *out,
                  eng_error *err)
{
    if (check_layer(m, layer, err) < 0)
        return -1;
    const eng_config *c = &m->cfg;
    const eng_layer_weights *w = &m->layers[layer];
    for (int e = 0; e < c->num_experts; e++) /* whatever the routing picks this time */
        if ((!mask || mask[e]) && !expert_loaded(w, e))
            return eng_fail(err, "layer %d: expert %d is not loaded in this process (not in its expert mask)", layer,
                            e);
    if (n_tokens <= 0)
        return 0;
    size_t picks = (size_t)n_tokens * c->num_experts_per_tok;
    int *sel = malloc(picks * sizeof *sel);
    float *sel_w = malloc(picks * sizeof *sel_w);
    int *rows = malloc(picks * sizeof *rows);
    float *y = malloc(picks * c->hidden_size * sizeof *y);
    int rc = -1;
    if (!sel || !sel_w || !rows || !y) {
        eng_fail(err, "out of memory in MoE layer %d for %d tokens", layer, n_tokens);
        goto done;
    }
    if (eng_moe_route(m, layer, x, n_tokens, sel, sel_w, err) < 0)
        goto done;
    for (size_t p = 0; p < picks; p++) {
        rows[p] = (int)(p / c->num_experts_per_tok);
        if (mask && !mask[sel[p]])
            sel[p] = -1; /* another process's share */
    }
    if (eng_moe_run_experts(m, layer, x, rows, sel, (int)picks, y, err) < 0)
        goto done;
    eng_moe_combine(m, n_tokens, sel, sel_w, y, out);
    rc = 0;
done:
    free(sel);
    free(sel_w);
    free(rows);
    free(y);
    return rc;
}
