/* forward.c: the Qwen3 forward pass over a batch of sequences (QWEN3.md).
 *
 * All tokens of the step (every item's chunk, back to back) go through each
 * projection as one matrix, so weights are read once per step whatever the batch.
 * The parts that differ per sequence (q/k norm, RoPE, the KV write, attention)
 * run per token. Every number for a token is computed by the same code in the same
 * order whatever else is in the batch (eng_matmul is batch-invariant, kernels.h),
 * so a token's K/V and logits are bitwise the same however the batch is made up or
 * the prompt chunked (tests/model/test_chunk_invariance.c).
 * A model runs one step at a time (its activations live in the model).
 * The layer loop reads top to bottom like the math:
 *
 *   x = embed[token]
 *   for each layer: x += attention(rmsnorm(x)); x += mlp(rmsnorm(x))
 *   logits = lm_head(rmsnorm(x)) for each item's last token */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/model_impl.h"

static int grow(float **p, size_t n)
{
    float *q = realloc(*p, n * sizeof(float));
    if (!q)
        return -1;
    *p = q;
    return 0;
}

/* Sizes the run state for T tokens and attention over up to max_len positions in
 * cache blocks of block_size. */
static int run_state_reserve(eng_model *m, int T, int max_len, int block_size, eng_error *err)
{
    const eng_config *c = &m->cfg;
    eng_run_state *rs = &m->rs;
    if (T > rs->cap) {
        size_t H = c->hidden_size, Q = (size_t)c->num_attention_heads * c->head_dim;
        size_t KV = (size_t)c->num_key_value_heads * c->head_dim, F = c->intermediate_size;
        if (grow(&rs->x, T * H) || grow(&rs->xb, T * H) || grow(&rs->q, T * Q) || grow(&rs->k, T * KV) ||
            grow(&rs->v, T * KV) || grow(&rs->att, T * Q) || grow(&rs->hb, T * (F ? F : 1)) ||
            grow(&rs->hb2, T * (F ? F : 1)) || grow(&rs->out, T * H))
            return eng_fail(err, "out of memory for the activations of %d tokens", T);
        size_t widest = H > Q ? H : Q;
        if (m->matmul_dtype == ENG_DT_BF16 && grow(&rs->xr, T * (widest > F ? widest : F)))
            return eng_fail(err, "out of memory for the activations of %d tokens", T);
        int *p = realloc(rs->pos, (size_t)T * sizeof *p);
        if (p)
            rs->pos = p;
        int *it = p ? realloc(rs->item, (size_t)T * sizeof *it) : NULL;
        if (it)
            rs->item = it;
        int *fs = it ? realloc(rs->att_first_span, ((size_t)T + 1) * sizeof *fs) : NULL;
        if (!p || !it || !fs)
            return eng_fail(err, "out of memory for the activations of %d tokens", T);
        rs->att_first_span = fs;
        rs->cap = T;
    }
    int max_blocks = (max_len + block_size - 1) / block_size;
    if (!rs->att_work || max_blocks > rs->att_max_blocks) {
        int n_tasks = eng_pool_threads(m->pool) * ENG_ATT_TASKS_PER_THREAD;
        size_t state = ENG_ATT_STATE_FLOATS(c->num_attention_heads, c->head_dim);
        size_t per_task = 2 * state + ENG_ATT_WORK_FLOATS(c->num_attention_heads, c->head_dim);
        const void **units = realloc(rs->att_units, (size_t)n_tasks * max_blocks * sizeof *units);
        if (units)
            rs->att_units = units;
        if (!units || (!rs->att_work && grow(&rs->att_work, (size_t)n_tasks * per_task)))
            return eng_fail(err, "out of memory for attention over %d positions", max_len);
        rs->att_tasks = n_tasks;
        rs->att_work_floats = per_task;
        rs->att_max_blocks = max_blocks;
    }
    return 0;
}

/* ---- per-token work: q/k norm, RoPE, KV write ---- */

typedef struct step_ctx {
    eng_model *m;
    eng_kv_pool *kv;
    eng_batch_item *items;
    int layer, T;
} step_ctx;

static void *kv_slot(eng_kv_pool *kv, int layer, const eng_seq *seq, int pos, int kv_head, int is_v)
{
    const eng_kv_layout *l = eng_kv_pool_layout(kv);
    int bs = l->block_size;
    size_t row = (size_t)l->head_dim * eng_dtype_size(l->dtype);
    unsigned char *unit = eng_kv_unit(kv, layer, seq->blocks[pos / bs]);
    size_t k_bytes = (size_t)l->n_kv_heads * bs * row;
    return unit + (is_v ? k_bytes : 0) + ((size_t)kv_head * bs + pos % bs) * row;
}

static void qk_rope_store(void *arg, int t)
{
    step_ctx *s = arg;
    eng_model *m = s->m;
    const eng_config *c = &m->cfg;
    const eng_layer_weights *w = &m->layers[s->layer];
    int HD = c->head_dim, NH = c->num_attention_heads, NKV = c->num_key_value_heads, half = HD / 2;
    float *q = m->rs.q + (size_t)t * NH * HD, *k = m->rs.k + (size_t)t * NKV * HD;
    const float *v = m->rs.v + (size_t)t * NKV * HD;
    for (int h = 0; h < NH; h++)
        eng_rmsnorm(q + h * HD, q + h * HD, w->q_norm, HD, c->rms_norm_eps);
    for (int h = 0; h < NKV; h++)
        eng_rmsnorm(k + h * HD, k + h * HD, w->k_norm, HD, c->rms_norm_eps);
    int pos = m->rs.pos[t];
    const float *cs = m->rope_cos + (size_t)pos * half, *sn = m->rope_sin + (size_t)pos * half;
    eng_rope_neox(q, NH, HD, cs, sn);
    eng_rope_neox(k, NKV, HD, cs, sn);
    const eng_seq *seq = s->items[m->rs.item[t]].seq;
    eng_dtype dt = eng_kv_pool_layout(s->kv)->dtype;
    /* q meets K in the cache's dtype, as llama.cpp's attention over a bf16 cache (and
     * its f16 decode path) converts q before its q.K dot products: the same scores
     * from the same bits (docs/architecture.md, "KV layout"). */
    eng_round_to(dt, q, (size_t)NH * HD);
    for (int h = 0; h < NKV; h++) {
        eng_from_f32(kv_slot(s->kv, s->layer, seq, pos, h, 0), k + h * HD, dt, (size_t)HD);
        eng_from_f32(kv_slot(s->kv, s->layer, seq, pos, h, 1), v + h * HD, dt, (size_t)HD);
    }
}

/* ---- attention: causal over the cache, span by span (eng_attend_span) ----
 * A step's attention is cut into spans of ATT_SPAN positions of one token: a
 * thread streams a span's part of the cache (every kv head, K then V) front to back.
 * With few tokens (decode) the spans are the tasks and each token's span states are
 * merged in order afterwards; with many, a token is a task and merges its spans in
 * the same order as it goes. Either way a token's attention is the same sequence of
 * operations, so which way a step went never changes a result. */
#define ATT_SPAN 256      /* a multiple of ENG_ATT_GROUP */
#define ATT_TOKEN_TASKS 2 /* tokens per thread from which tokens are the tasks */

static int att_spans(int n)
{
    return (n + ATT_SPAN - 1) / ATT_SPAN;
}

/* Span `span` of token t's attention into state; `units` gets the span's blocks of
 * the layer being run (only those: a span reads no other). */
static void att_span(const step_ctx *s, int t, int span, float *state, float *work, const void **units)
{
    const eng_model *m = s->m;
    const eng_config *c = &m->cfg;
    const eng_kv_layout *l = eng_kv_pool_layout(s->kv);
    const eng_seq *seq = s->items[m->rs.item[t]].seq;
    int n = m->rs.pos[t] + 1, p0 = span * ATT_SPAN, p1 = p0 + ATT_SPAN < n ? p0 + ATT_SPAN : n;
    for (int b = p0 / l->block_size; b <= (p1 - 1) / l->block_size; b++)
        units[b] = eng_kv_unit(s->kv, s->layer, seq->blocks[b]);
    eng_kv_view kv = {
        .units = units, .block_size = l->block_size, .n_kv_heads = l->n_kv_heads, .dim = l->head_dim, .dt = l->dtype};
    eng_attend_span(state, work, m->rs.q + (size_t)t * c->num_attention_heads * c->head_dim, c->num_attention_heads,
                    1.0f / sqrtf((float)c->head_dim), &kv, p0, p1);
}

/* Tasks of a step with few tokens: every span of every token, states kept apart. */
static void attention_span_task(void *arg, int task)
{
    step_ctx *s = arg;
    eng_run_state *rs = &s->m->rs;
    const eng_config *c = &s->m->cfg;
    size_t state_floats = ENG_ATT_STATE_FLOATS(c->num_attention_heads, c->head_dim);
    float *work = rs->att_work + (size_t)task * rs->att_work_floats;
    const void **units = rs->att_units + (size_t)task * rs->att_max_blocks;
    for (int i = task, t = 0; i < rs->att_n_spans; i += rs->att_tasks) {
        while (rs->att_first_span[t + 1] <= i)
            t++;
        att_span(s, t, i - rs->att_first_span[t], rs->att_states + (size_t)i * state_floats, work + state_floats,
                 units);
    }
}

/* Tasks of a step with many tokens: whole tokens, spans merged as they come. */
static void attention_token_task(void *arg, int task)
{
    step_ctx *s = arg;
    eng_run_state *rs = &s->m->rs;
    const eng_config *c = &s->m->cfg;
    int NH = c->num_attention_heads, HD = c->head_dim;
    size_t state_floats = ENG_ATT_STATE_FLOATS(NH, HD);
    float *state = rs->att_work + (size_t)task * rs->att_work_floats, *next = state + state_floats;
    float *work = next + state_floats;
    const void **units = rs->att_units + (size_t)task * rs->att_max_blocks;
    for (int t = task; t < s->T; t += rs->att_tasks) {
        int spans = att_spans(rs->pos[t] + 1);
        att_span(s, t, 0, state, work, units);
        for (int i = 1; i < spans; i++) {
            att_span(s, t, i, next, work, units);
            eng_attend_merge(state, next, NH, HD);
        }
        eng_attend_finish(rs->att + (size_t)t * NH * HD, state, NH,
                          &(eng_kv_view){.dim = HD, .dt = eng_kv_pool_layout(s->kv)->dtype});
    }
}

/* Whether a step of T tokens runs its attention span by span (few tokens), and
 * then where each token's span states go. */
static int att_by_spans(const eng_model *m, int T)
{
    return T < ATT_TOKEN_TASKS * eng_pool_threads(m->pool);
}

static int att_plan(eng_model *m, int T, eng_error *err)
{
    eng_run_state *rs = &m->rs;
    if (!att_by_spans(m, T))
        return 0;
    rs->att_first_span[0] = 0;
    for (int t = 0; t < T; t++)
        rs->att_first_span[t + 1] = rs->att_first_span[t] + att_spans(rs->pos[t] + 1);
    rs->att_n_spans = rs->att_first_span[T];
    if (rs->att_n_spans > rs->att_states_cap) {
        size_t state = ENG_ATT_STATE_FLOATS(m->cfg.num_attention_heads, m->cfg.head_dim);
        if (grow(&rs->att_states, (size_t)rs->att_n_spans * state))
            return eng_fail(err, "out of memory for attention over %d spans", rs->att_n_spans);
        rs->att_states_cap = rs->att_n_spans;
    }
    return 0;
}

static void attention(eng_model *m, step_ctx *s)
{
    eng_run_state *rs = &m->rs;
    const eng_config *c = &m->cfg;
    int NH = c->num_attention_heads, HD = c->head_dim;
    if (!att_by_spans(m, s->T)) {
        eng_pool_run(m->pool, attention_token_task, s, rs->att_tasks);
        return;
    }
    size_t state_floats = ENG_ATT_STATE_FLOATS(NH, HD);
    eng_pool_run(m->pool, attention_span_task, s, rs->att_tasks);
    eng_kv_view dims = {.dim = HD, .dt = eng_kv_pool_layout(s->kv)->dtype};
    for (int t = 0; t < s->T; t++) {
        float *state = rs->att_states + (size_t)rs->att_first_span[t] * state_floats;
        for (int i = rs->att_first_span[t] + 1; i < rs->att_first_span[t + 1]; i++)
            eng_attend_merge(state, rs->att_states + (size_t)i * state_floats, NH, HD);
        eng_attend_finish(rs->att + (size_t)t * NH * HD, state, NH, &dims);
    }
}

static void rmsnorm_rows(const eng_model *m, float *y, const float *x, const float *w, int T)
{
    int H = m->cfg.hidden_size;
    for (int t = 0; t < T; t++)
        eng_rmsnorm(y + (size_t)t * H, x + (size_t)t * H, w, H, m->cfg.rms_norm_eps);
}

static void attention_block(eng_model *m, step_ctx *s)
{
    const eng_config *c = &m->cfg;
    const eng_layer_weights *w = &m->layers[s->layer];
    eng_run_state *rs = &m->rs;
    int T = s->T, H = c->hidden_size;
    int Q = c->num_attention_heads * c->head_dim, KV = c->num_key_value_heads * c->head_dim;
    rmsnorm_rows(m, rs->xb, rs->x, w->attn_norm, T);
    const eng_matmul_out qkv[] = {{rs->q, &w->wq, Q}, {rs->k, &w->wk, KV}, {rs->v, &w->wv, KV}};
    eng_matmul_multi(m->pool, rs->xb, rs->xr, T, H, qkv, 3);
    eng_pool_run(m->pool, qk_rope_store, s, T);
    attention(m, s);
    eng_matmul_weight(m->pool, rs->out, rs->att, rs->xr, &w->wo, T, Q, H);
    eng_axpy(rs->x, 1.0f, rs->out, T * H);
}

static int mlp_block(eng_model *m, int layer, int T, eng_error *err)
{
    const eng_config *c = &m->cfg;
    const eng_layer_weights *w = &m->layers[layer];
    eng_run_state *rs = &m->rs;
    int H = c->hidden_size, F = c->intermediate_size;
    rmsnorm_rows(m, rs->xb, rs->x, w->ffn_norm, T);
    if (w->is_moe) {
        memset(rs->out, 0, (size_t)T * H * sizeof(float));
        if (m->moe_fn ? m->moe_fn(m->moe_ctx, m, layer, rs->xb, T, rs->out, err) < 0
                      : eng_moe_layer(m, layer, rs->xb, T, m->expert_mask, rs->out, err) < 0)
            return -1;
    } else {
        const eng_matmul_out gate_up[] = {{rs->hb, &w->gate, F}, {rs->hb2, &w->up, F}};
        eng_matmul_multi(m->pool, rs->xb, rs->xr, T, H, gate_up, 2);
        for (int t = 0; t < T; t++)
            eng_silu_mul(rs->hb + (size_t)t * F, rs->hb2 + (size_t)t * F, F);
        eng_matmul_weight(m->pool, rs->out, rs->hb, rs->xr, &w->down, T, F, H);
    }
    eng_axpy(rs->x, 1.0f, rs->out, T * H);
    return 0;
}

static int check_batch(eng_model *m, eng_kv_pool *kv, const eng_batch_item *items, int n_items, int *T_out,
                       int *max_len_out, eng_error *err)
{
    const eng_config *c = &m->cfg;
    eng_kv_layout want = eng_model_kv_layout(m, eng_kv_pool_layout(kv)->block_size, eng_kv_pool_layout(kv)->dtype);
    if (!eng_kv_layout_equal(&want, eng_kv_pool_layout(kv))) {
        char a[96], b[96];
        eng_kv_layout_str(eng_kv_pool_layout(kv), a, sizeof a);
        eng_kv_layout_str(&want, b, sizeof b);
        return eng_fail(err, "KV pool layout %s does not fit this model (needs %s)", a, b);
    }
    int bs = want.block_size;
    long long T = 0;
    int max_len = 0;
    for (int i = 0; i < n_items; i++) {
        const eng_batch_item *it = &items[i];
        if (!it->seq || it->n_tokens <= 0 || !it->tokens)
            return eng_fail(err, "batch item %d: needs a sequence and at least one token", i);
        int end = it->seq->n_past + it->n_tokens;
        if (it->seq->n_past < 0 || (long long)it->seq->n_blocks * bs < end)
            return eng_fail(err, "batch item %d: sequence holds blocks for %d tokens, needs %d (eng_seq_reserve)", i,
                            it->seq->n_blocks * bs, end);
        for (int b = 0; b < it->seq->n_blocks; b++)
            if (it->seq->blocks[b] < 0 || it->seq->blocks[b] >= eng_kv_pool_blocks(kv))
                return eng_fail(err, "batch item %d: block id %d is not in the pool", i, it->seq->blocks[b]);
        for (int t = 0; t < it->n_tokens; t++)
            if (it->tokens[t] < 0 || it->tokens[t] >= c->vocab_size)
                return eng_fail(err, "batch item %d: token id %d is outside the vocabulary (%d)", i, it->tokens[t],
                                c->vocab_size);
        T += it->n_tokens;
        if (end > max_len)
            max_len = end;
    }
    if (T > (1 << 24))
        return eng_fail(err, "batch of %lld tokens is too large", T);
    *T_out = (int)T;
    *max_len_out = max_len;
    return 0;
}

int eng_forward(eng_model *m, eng_kv_pool *kv, eng_batch_item *items, int n_items, eng_layer_done_fn on_layer,
                void *ctx, eng_error *err)
{
    const eng_config *c = &m->cfg;
    int T = 0, max_len = 0;
    if (n_items <= 0)
        return eng_fail(err, "empty batch");
    if (check_batch(m, kv, items, n_items, &T, &max_len, err) < 0 ||
        run_state_reserve(m, T, max_len, eng_kv_pool_layout(kv)->block_size, err) < 0 ||
        eng_rope_reserve(m, max_len, err) < 0)
        return -1;
    eng_run_state *rs = &m->rs;
    int H = c->hidden_size;
    size_t row_bytes = (size_t)H * eng_dtype_size(m->embed.dt);

    for (int i = 0, t = 0; i < n_items; i++)
        for (int j = 0; j < items[i].n_tokens; j++, t++) {
            rs->pos[t] = items[i].seq->n_past + j;
            rs->item[t] = i;
            eng_to_f32(rs->x + (size_t)t * H, (const char *)m->embed.w + (size_t)items[i].tokens[j] * row_bytes,
                       m->embed.dt, (size_t)H);
        }

    if (att_plan(m, T, err) < 0)
        return -1;
    step_ctx s = {.m = m, .kv = kv, .items = items, .T = T};
    for (int l = 0; l < c->num_hidden_layers; l++) {
        s.layer = l;
        attention_block(m, &s);
        if (on_layer) /* the layer's K/V are final now: shipping them can overlap the MLP */
            on_layer(ctx, l);
        if (mlp_block(m, l, T, err) < 0)
            return -1;
    }

    /* Logits for each item that wants them, from its chunk's last token; all rows
     * in one matmul so the (large) head is read once per step. */
    int n_out = 0;
    for (int i = 0; i < n_items; i++)
        n_out += items[i].logits != NULL;
    if (n_out) {
        if (n_out > rs->logits_rows) {
            if (grow(&rs->logits, (size_t)n_out * c->vocab_size))
                return eng_fail(err, "out of memory for %d rows of logits", n_out);
            rs->logits_rows = n_out;
        }
        float *logits = rs->logits;
        for (int i = 0, t = 0, r = 0; i < n_items; t += items[i].n_tokens, i++)
            if (items[i].logits)
                eng_rmsnorm(rs->xb + (size_t)r++ * H, rs->x + (size_t)(t + items[i].n_tokens - 1) * H, m->final_norm, H,
                            c->rms_norm_eps);
        eng_matmul_weight(m->pool, logits, rs->xb, rs->xr, &m->lm_head, n_out, H, c->vocab_size);
        for (int i = 0, r = 0; i < n_items; i++)
            if (items[i].logits)
                memcpy(items[i].logits, logits + (size_t)r++ * c->vocab_size, (size_t)c->vocab_size * sizeof(float));
    }
    for (int i = 0; i < n_items; i++)
        items[i].seq->n_past += items[i].n_tokens;
    return 0;
}
