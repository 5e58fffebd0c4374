/* ep_moe.c: one MoE layer across an EP group (ep.h), DeepEP's dispatch / combine.
 *
 *   1. route: this rank's tokens pick their experts (eng_moe_route, as one process);
 *   2. dispatch: to every rank, each token that picked one of the experts it runs for
 *      that token (wrk_ep_pick: this rank when it holds a replica, else a holder chosen
 *      by the token's index), once, with
 *      the list of (row, expert) picks; an empty message when there is none (idle
 *      ranks take part too, so every rank hears from every other at every layer);
 *   3. run: every rank runs its experts over the rows gathered from all ranks
 *      (eng_moe_run_experts: each expert once, increasing id);
 *   4. combine: each rank's outputs go back to it, pick by pick, and the origin adds
 *      its tokens' weighted outputs in increasing expert id order (eng_moe_combine).
 *
 * The origin does the same route and the same combine as one process does, and an
 * expert's output row depends only on its input row and the expert's weights
 * (batch-invariant kernels; every replica maps the same tensors), so the layer's result
 * is bitwise that of eng_moe_layer in a single process, whichever rank ran a pick.
 *
 * A dispatch message: u32 n_rows, u32 n_picks, n_picks x (u32 row, u32 expert),
 * n_rows x hidden f32. A combine message: n_picks x hidden f32, in dispatch order. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ep.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* What this rank sends to one rank and where the answers go. */
typedef struct ep_dest {
    uint32_t head[2]; /* n_rows, n_picks */
    uint32_t *picks;  /* [n_picks][2] */
    int *slot;        /* [n_picks] t * K + j */
    float *rows;      /* [n_rows][H] */
} ep_dest;

/* What one rank sent us. */
typedef struct ep_src {
    void *msg; /* received (NULL for our own, which points into ep_dest) */
    uint32_t n_rows, n_picks;
    const uint32_t *picks;
    const float *rows;
} ep_src;

static int parse_dispatch(wrk_ep *ep, int from, void *msg, size_t len, int H, ep_src *s, eng_error *err)
{
    s->msg = msg;
    uint32_t head[2];
    if (len < sizeof head)
        goto bad;
    memcpy(head, msg, sizeof head);
    s->n_rows = head[0];
    s->n_picks = head[1];
    /* u32 counts times small sizes cannot overflow a 64-bit size_t */
    if (len != sizeof head + (size_t)s->n_picks * 2 * sizeof(uint32_t) + (size_t)s->n_rows * H * sizeof(float))
        goto bad;
    s->picks = (const uint32_t *)((const char *)msg + sizeof head);
    s->rows = (const float *)(s->picks + 2 * (size_t)s->n_picks);
    for (uint32_t q = 0; q < s->n_picks; q++)
        if (s->picks[2 * q] >= s->n_rows || !wrk_ep_holds(ep, (int)s->picks[2 * q + 1]))
            goto bad;
    return 0;
bad:
    wrk_ep_fail(ep, "a malformed dispatch message");
    return eng_fail(err, "EP: rank %d sent a malformed dispatch message (%zu bytes)", from, len);
}

/* Steps 2-4 for routed tokens (sel, sel_w), writing y[t * K + j]. */
static int exchange(wrk_ep *ep, eng_model *m, int layer, const float *x, int T, const int *sel, float *y,
                    double *compute_s, eng_error *err)
{
    const eng_config *c = eng_model_config(m);
    int N = wrk_ep_size(ep), me = wrk_ep_rank(ep), H = c->hidden_size, K = c->num_experts_per_tok;
    ep_dest d[WRK_EP_MAX_SIZE];
    ep_src s[WRK_EP_MAX_SIZE];
    memset(d, 0, sizeof d);
    memset(s, 0, sizeof s);
    int *last = malloc((size_t)N * sizeof *last);
    int rc = -1;
    float *xall = NULL, *yall = NULL;
    int *rows = NULL, *experts = NULL;
    if (!last)
        goto oom;

    /* dispatch: count, then fill each rank's rows (a token once per rank) and picks */
    for (int r = 0; r < N; r++)
        last[r] = -1;
    for (int t = 0; t < T; t++)
        for (int j = 0; j < K; j++) {
            int r = wrk_ep_pick(ep, sel[t * K + j], t);
            d[r].head[1]++;
            if (last[r] != t)
                d[r].head[0]++, last[r] = t;
        }
    for (int r = 0; r < N; r++) {
        d[r].picks = malloc((d[r].head[1] + 1) * 2 * sizeof(uint32_t));
        d[r].slot = malloc((d[r].head[1] + 1) * sizeof(int));
        d[r].rows = malloc(((size_t)d[r].head[0] * H + 1) * sizeof(float));
        if (!d[r].picks || !d[r].slot || !d[r].rows)
            goto oom;
        d[r].head[0] = d[r].head[1] = 0;
        last[r] = -1;
    }
    for (int t = 0; t < T; t++)
        for (int j = 0; j < K; j++) {
            int r = wrk_ep_pick(ep, sel[t * K + j], t);
            ep_dest *o = &d[r];
            if (last[r] != t) {
                memcpy(o->rows + (size_t)o->head[0] * H, x + (size_t)t * H, (size_t)H * sizeof(float));
                o->head[0]++;
                last[r] = t;
            }
            o->picks[2 * o->head[1]] = o->head[0] - 1;
            o->picks[2 * o->head[1] + 1] = (uint32_t)sel[t * K + j];
            o->slot[o->head[1]++] = t * K + j;
        }
    uint32_t rows_to[WRK_EP_MAX_SIZE];
    for (int r = 0; r < N; r++)
        rows_to[r] = d[r].head[0];
    wrk_ep_count_dispatch(ep, layer, rows_to);
    for (int r = 0; r < N; r++) {
        if (r == me)
            continue;
        const void *parts[3] = {d[r].head, d[r].picks, d[r].rows};
        size_t lens[3] = {sizeof d[r].head, (size_t)d[r].head[1] * 2 * sizeof(uint32_t),
                          (size_t)d[r].head[0] * H * sizeof(float)};
        if (wrk_ep_send(ep, r, WRK_EP_DISPATCH, layer, parts, lens, 3, err) < 0)
            goto done;
    }

    /* run: every rank's rows for our experts, in rank order */
    size_t R = 0, P = 0;
    for (int r = 0; r < N; r++) {
        if (r == me) {
            s[r] = (ep_src){.n_rows = d[r].head[0], .n_picks = d[r].head[1], .picks = d[r].picks, .rows = d[r].rows};
        } else {
            void *msg;
            size_t len;
            if (wrk_ep_recv(ep, r, WRK_EP_DISPATCH, layer, &msg, &len, err) < 0 ||
                parse_dispatch(ep, r, msg, len, H, &s[r], err) < 0) {
                free(msg);
                goto done;
            }
        }
        R += s[r].n_rows;
        P += s[r].n_picks;
    }
    xall = malloc((R * H + 1) * sizeof(float));
    yall = malloc((P * H + 1) * sizeof(float));
    rows = malloc((P + 1) * sizeof(int));
    experts = malloc((P + 1) * sizeof(int));
    if (!xall || !yall || !rows || !experts)
        goto oom;
    for (int r = 0, r0 = 0, p = 0; r < N; r0 += (int)s[r].n_rows, r++) {
        memcpy(xall + (size_t)r0 * H, s[r].rows, (size_t)s[r].n_rows * H * sizeof(float));
        for (uint32_t q = 0; q < s[r].n_picks; q++, p++) {
            rows[p] = r0 + (int)s[r].picks[2 * q];
            experts[p] = (int)s[r].picks[2 * q + 1];
        }
    }
    double t_run = now_s();
    int ran = eng_moe_run_experts(m, layer, xall, rows, experts, (int)P, yall, err);
    *compute_s = now_s() - t_run;
    if (ran < 0) {
        wrk_ep_fail(ep, err->msg);
        goto done;
    }

    /* combine: the outputs back to their ranks; ours straight into y */
    for (int r = 0, p = 0; r < N; p += (int)s[r].n_picks, r++) {
        const float *part = yall + (size_t)p * H;
        if (r == me) {
            for (uint32_t q = 0; q < d[r].head[1]; q++)
                memcpy(y + (size_t)d[r].slot[q] * H, part + (size_t)q * H, (size_t)H * sizeof(float));
            continue;
        }
        const void *parts[1] = {part};
        size_t lens[1] = {(size_t)s[r].n_picks * H * sizeof(float)};
        if (wrk_ep_send(ep, r, WRK_EP_COMBINE, layer, parts, lens, 1, err) < 0)
            goto done;
    }
    for (int r = 0; r < N; r++) {
        if (r == me)
            continue;
        void *msg;
        size_t len;
        if (wrk_ep_recv(ep, r, WRK_EP_COMBINE, layer, &msg, &len, err) < 0)
            goto done;
        if (len != (size_t)d[r].head[1] * H * sizeof(float)) {
            free(msg);
            wrk_ep_fail(ep, "a combine message of the wrong size");
            eng_fail(err, "EP: rank %d answered %zu bytes for %u picks", r, len, d[r].head[1]);
            goto done;
        }
        for (uint32_t q = 0; q < d[r].head[1]; q++)
            memcpy(y + (size_t)d[r].slot[q] * H, (const float *)msg + (size_t)q * H, (size_t)H * sizeof(float));
        free(msg);
    }
    rc = 0;
    goto done;
oom:
    wrk_ep_fail(ep, "out of memory in the exchange");
    eng_fail(err, "EP: out of memory in the exchange of layer %d", layer);
done:
    for (int r = 0; r < N; r++) {
        free(s[r].msg);
        free(d[r].picks);
        free(d[r].slot);
        free(d[r].rows);
    }
    free(last);
    free(xall);
    free(yall);
    free(rows);
    free(experts);
    return rc;
}

int wrk_ep_moe(void *ctx, eng_model *m, int layer, const float *x, int n_tokens, float *out, eng_error *err)
{
    wrk_ep *ep = ctx;
    const eng_config *c = eng_model_config(m);
    size_t picks = (size_t)n_tokens * c->num_experts_per_tok;
    int *sel = malloc((picks + 1) * sizeof *sel);
    float *sel_w = malloc((picks + 1) * sizeof *sel_w);
    float *y = malloc((picks * c->hidden_size + 1) * sizeof *y);
    int rc = -1;
    double t0 = now_s(), compute_s = 0;
    if (!sel || !sel_w || !y) {
        wrk_ep_fail(ep, "out of memory in the exchange");
        eng_fail(err, "EP: out of memory for %d tokens in layer %d", n_tokens, layer);
    } else if (eng_moe_route(m, layer, x, n_tokens, sel, sel_w, err) == 0 &&
               exchange(ep, m, layer, x, n_tokens, sel, y, &compute_s, err) == 0) {
        wrk_ep_observe_exchange(ep, now_s() - t0 - compute_s);
        eng_moe_combine(m, n_tokens, sel, sel_w, y, out);
        rc = 0;
    }
    free(sel);
    free(sel_w);
    free(y);
    return rc;
}

int wrk_ep_idle_step(wrk_ep *ep, eng_model *m, eng_error *err)
{
    for (int l = 0; l < eng_model_config(m)->num_hidden_layers; l++)
        if (eng_moe_is_layer(m, l) && wrk_ep_moe(ep, m, l, NULL, 0, NULL, err) < 0)
            return -1;
    return 0;
}
