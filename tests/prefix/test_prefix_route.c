/* test_prefix_route.c: KV-aware routing's pieces without a network. The coordinator's
 * view of a worker's cached blocks (coord_prefix_keys) finds the same blocks the worker's
 * own keys name (the same chain, salted by model and layout): whole blocks of the
 * leading chain only, never the prompt's last token, nothing under another model or
 * layout. coord_route_pick takes the prefill worker with the least queued tokens minus
 * its credit for the cached part of the prompt, and by load alone without credit.
 * Between heartbeats the blocks of a prompt sent to a worker count as held there, so a
 * conversation's next turn goes back to it rather than by load; the next summary
 * replaces them, and they are bounded.
 * Admission's TTFT prediction: waiting plus uncached tokens over the measured speed,
 * the router's admitted count when larger than the worker's queue, none before a
 * measurement, the best healthy prefill worker. */
#include <string.h>

#include "admission.h"
#include "check.h"
#include "common/block_hash.h"
#include "prefix_index.h"
#include "router.h"

static const eng_kv_layout LAY = {
    .dtype = ENG_DT_F32, .block_size = 16, .n_layers = 2, .n_kv_heads = 2, .head_dim = 64};

/* The short keys a worker with this layout would publish for tokens' first n blocks. */
static void worker_keys(const char *model, const eng_kv_layout *l, const int32_t *tokens, int n, uint64_t *out)
{
    char s[96];
    eng_kv_layout_str(l, s, sizeof s);
    eng_block_key k[16];
    eng_block_keys(eng_block_salt(model, s), tokens, n, l->block_size, k);
    for (int i = 0; i < n; i++)
        out[i] = eng_block_key_short(k[i]);
}

static void matching(void)
{
    int32_t t[80];
    for (int i = 0; i < 80; i++)
        t[i] = 100 + i * 3;
    uint64_t keys[5];
    worker_keys("m", &LAY, t, 5, keys);
    coord_prefix_keys s = {0};
    CHECK(coord_prefix_cached_tokens(&s, "m", &LAY, t, 80) == 0, "empty set");
    uint64_t shuffled[3] = {keys[2], keys[0], keys[1]};
    REQUIRE(coord_prefix_keys_set(&s, shuffled, 3) == 0, "set");
    CHECK(coord_prefix_cached_tokens(&s, "m", &LAY, t, 80) == 48, "3 leading blocks");
    CHECK(coord_prefix_cached_tokens(&s, "m", &LAY, t, 49) == 48, "49 tokens: 3 blocks, the last token computed");
    CHECK(coord_prefix_cached_tokens(&s, "m", &LAY, t, 48) == 32, "48 tokens: the third block holds the last token");
    CHECK(coord_prefix_cached_tokens(&s, "m", &LAY, t, 1) == 0, "one token");
    CHECK(coord_prefix_cached_tokens(&s, "other", &LAY, t, 80) == 0, "another model's keys never match");
    eng_kv_layout l2 = LAY;
    l2.dtype = ENG_DT_BF16;
    CHECK(coord_prefix_cached_tokens(&s, "m", &l2, t, 80) == 0, "another layout's keys never match");
    int32_t u[80];
    memcpy(u, t, sizeof u);
    u[20] = 7; /* block 1 differs: the chain stops after block 0, whatever follows */
    CHECK(coord_prefix_cached_tokens(&s, "m", &LAY, u, 80) == 16, "a different block ends the chain");
    uint64_t gap[2] = {keys[0], keys[2]};
    REQUIRE(coord_prefix_keys_set(&s, gap, 2) == 0, "set");
    CHECK(coord_prefix_cached_tokens(&s, "m", &LAY, t, 80) == 16, "only the leading chain counts");
    coord_prefix_keys_clear(&s);
    CHECK(s.n == 0 && s.keys == NULL, "cleared");
    CHECK(coord_prefix_keys_set(&s, NULL, 0) == 0 && s.n == 0, "an empty summary");
}

static coord_worker_view worker(const char *id, int role, uint64_t queued)
{
    coord_worker_view v;
    memset(&v, 0, sizeof v);
    snprintf(v.id, sizeof v.id, "%s", id);
    snprintf(v.transport, sizeof v.transport, "tcp");
    v.role = role;
    v.healthy = 1;
    v.layout = LAY;
    v.kv_total = 100;
    v.max_context = 4096;
    v.queued_prompt_tokens = queued;
    return v;
}

static void picking(void)
{
    enum { P = TANDEM__ROLE__ROLE_PREFILL, D = TANDEM__ROLE__ROLE_DECODE };
    coord_worker_view v[] = {worker("p1", P, 100), worker("p2", P, 300), worker("d1", D, 0)};
    coord_route r;
    char why[256];
    CHECK(coord_route_pick(v, 3, 0, 400, 401, NULL, 0, &r, NULL, why, sizeof why) == 0 && r.prefill == 0,
          "load only: the less queued p1 (%s)", why);
    v[1].cached_tokens = 256;
    v[1].prefill_credit = 1.0 * 256; /* weight 1: p2 computes 144 new + 300 queued < p1's 400 + 100 */
    CHECK(coord_route_pick(v, 3, 0, 400, 401, NULL, 0, &r, NULL, why, sizeof why) == 0 && r.prefill == 1,
          "overlap: p2 holds most of the prompt");
    v[1].prefill_credit = 0.5 * 256; /* weight 0.5: 300 - 128 > 100 */
    CHECK(coord_route_pick(v, 3, 0, 400, 401, NULL, 0, &r, NULL, why, sizeof why) == 0 && r.prefill == 0,
          "a lower weight lets load win");
}

/* Turn 1 of a conversation went to p2 moments ago; p2's last summary predates it. */
static void expecting(void)
{
    enum { P = TANDEM__ROLE__ROLE_PREFILL, D = TANDEM__ROLE__ROLE_DECODE };
    static int32_t turn[120];
    for (int i = 0; i < 120; i++)
        turn[i] = 500 + i * 7;
    coord_prefix_keys p2 = {0};
    REQUIRE(coord_prefix_keys_expect(&p2, "m", &LAY, turn, 72) == 0, "expect turn 1");
    CHECK(p2.n_expected == 4, "turn 1's 4 whole blocks, not its partial fifth (%zu)", p2.n_expected);
    CHECK(coord_prefix_cached_tokens(&p2, "m", &LAY, turn, 120) == 64, "turn 2 finds turn 1's blocks on p2");
    CHECK(coord_prefix_cached_tokens(&p2, "other", &LAY, turn, 120) == 0, "under another model: nothing");
    REQUIRE(coord_prefix_keys_expect(&p2, "m", &LAY, turn, 72) == 0, "the same prompt again");
    CHECK(p2.n_expected == 4, "recorded once (%zu)", p2.n_expected);

    coord_worker_view v[] = {worker("p1", P, 90), worker("p2", P, 100), worker("d1", D, 0)};
    coord_prefix_keys none = {0};
    const coord_prefix_keys *held[2] = {&none, &p2};
    for (int i = 0; i < 2; i++) {
        v[i].cached_tokens = coord_prefix_cached_tokens(held[i], "m", &LAY, turn, 120);
        v[i].prefill_credit = 1.0 * v[i].cached_tokens;
    }
    coord_route r;
    char why[256];
    CHECK(coord_route_pick(v, 3, 0, 120, 121, NULL, 0, &r, NULL, why, sizeof why) == 0 && r.prefill == 1,
          "turn 2 goes where turn 1 went, though p1 is less loaded (%s)", why);

    uint64_t summary[1] = {42}; /* p2's next heartbeat: its summary says what it holds */
    REQUIRE(coord_prefix_keys_set(&p2, summary, 1) == 0, "heartbeat");
    CHECK(p2.n_expected == 0 && coord_prefix_cached_tokens(&p2, "m", &LAY, turn, 120) == 0,
          "the summary replaces the expectation");
    v[1].cached_tokens = 0, v[1].prefill_credit = 0;
    CHECK(coord_route_pick(v, 3, 0, 120, 121, NULL, 0, &r, NULL, why, sizeof why) == 0 && r.prefill == 0,
          "without it turn 2 goes by load, to p1");

    static int32_t many[(COORD_PREFIX_EXPECTED_MAX + 10) * 16];
    for (size_t i = 0; i < sizeof many / sizeof *many; i++)
        many[i] = (int32_t)(i % 150000);
    REQUIRE(coord_prefix_keys_expect(&p2, "m", &LAY, many, (int)(sizeof many / sizeof *many)) == 0, "a long prompt");
    CHECK(p2.n_expected == COORD_PREFIX_EXPECTED_MAX, "bounded: %zu", p2.n_expected);
    CHECK(coord_prefix_keys_expect(&p2, "m", &LAY, turn, 72) == 0 && p2.n_expected == COORD_PREFIX_EXPECTED_MAX,
          "full: nothing more recorded");
    coord_prefix_keys_clear(&p2);
    CHECK(p2.n_expected == 0 && p2.expected == NULL, "cleared");
}

static void predicting(void)
{
    enum { P = TANDEM__ROLE__ROLE_PREFILL, D = TANDEM__ROLE__ROLE_DECODE };
    coord_worker_view v[] = {worker("p1", P, 1000), worker("p2", P, 3000), worker("d1", D, 0)};
    double t = 0;
    CHECK(coord_predict_ttft_s(&v[0], 500) < 0, "no speed measured: no prediction");
    CHECK(coord_admission_best(v, 3, 500, &t) == -1, "nothing measured: admit");
    v[0].prefill_rate = 1000, v[1].prefill_rate = 4000, v[2].prefill_rate = 1e9;
    CHECK(coord_predict_ttft_s(&v[0], 500) == 1.5, "(1000 queued + 500) / 1000 per s");
    v[0].cached_tokens = 400;
    CHECK(coord_predict_ttft_s(&v[0], 500) == 1.1, "the cached part is not computed");
    v[0].admitted_tokens = 2000;
    CHECK(coord_predict_ttft_s(&v[0], 500) == 2.1, "admitted on their way count when more than the queue");
    CHECK(coord_admission_best(v, 3, 500, &t) == 1 && t == 3500.0 / 4000, "the faster worker, never a decode one");
    v[1].healthy = 0;
    CHECK(coord_admission_best(v, 3, 500, &t) == 0 && t == 2.1, "unhealthy workers are not candidates");
}

int main(void)
{
    matching();
    picking();
    expecting();
    predicting();
    return check_summary();
}
