/* tokenizer.c: Qwen3's byte-level BPE, read generically from tokenizer.json.
 *
 * Owns everything between text and token ids, mirroring the Hugging Face
 * `tokenizers` pipeline step by step so that ids match it byte for byte:
 *
 *   1. added tokens are found in the raw text first (leftmost, then longest match;
 *      lstrip / rstrip / single_word honoured); special ones only when asked to;
 *   2. every other stretch is NFC-normalised (utf8proc) and searched again for the
 *      added tokens marked `normalized`;
 *   3. the pre-tokenizer splits it with its regex (PCRE2, JIT) and maps bytes to
 *      byte-level symbols;
 *   4. each pre-token is merged by rank (a heap of candidate pairs, as HF does).
 *
 * Decoding maps ids back to bytes and replaces invalid UTF-8 the way Rust's
 * String::from_utf8_lossy does (one U+FFFD per maximal invalid subpart), both for a
 * whole sequence and for a stream pushed one id at a time, so that the sum of the
 * streamed pieces is always the whole decode.
 *
 * Ids the tokenizer does not know decode to nothing, as in Hugging Face's decode: a
 * model's vocab_size is often larger than the tokenizer's (Qwen3: 151936 rows for
 * 151669 tokens), and a model can emit those padding rows. Decoding fails (-1) only
 * when memory runs out. */
#include "tokenizer/tokenizer.h"

#include "common/file.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>
#include <pcre2.h>
#include <utf8proc.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------- */
/* Strings: every token string and byte form lives in one arena, addressed by offset. */

typedef struct arena {
    char *data;
    size_t len, cap;
} arena;

/* Returns the offset of the copy, or (size_t)-1 when memory runs out. */
static size_t arena_add(arena *a, const void *p, size_t n)
{
    if (a->len + n + 1 > a->cap) {
        size_t cap = a->cap ? a->cap : 1 << 16;
        while (cap < a->len + n + 1)
            cap *= 2;
        char *d = realloc(a->data, cap);
        if (!d)
            return (size_t)-1;
        a->data = d;
        a->cap = cap;
    }
    size_t off = a->len;
    if (n)
        memcpy(a->data + off, p, n);
    a->data[off + n] = 0;
    a->len += n + 1;
    return off;
}

static uint64_t hash_bytes(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

/* A string -> id map: open addressing over entries that point into the arena. */
typedef struct str_entry {
    uint32_t off, len;
    int32_t id;
} str_entry;

typedef struct str_map {
    int32_t *slots; /* entry index, -1 when empty */
    size_t mask;
    str_entry *e;
    size_t n, cap;
} str_map;

static int str_map_init(str_map *m, size_t expected)
{
    size_t size = 16;
    while (size < expected * 2)
        size *= 2;
    m->slots = malloc(size * sizeof *m->slots);
    m->e = malloc((expected ? expected : 1) * sizeof *m->e);
    if (!m->slots || !m->e)
        return -1;
    memset(m->slots, 0xff, size * sizeof *m->slots);
    m->mask = size - 1;
    m->n = 0;
    m->cap = expected ? expected : 1;
    return 0;
}

static void str_map_free(str_map *m)
{
    free(m->slots);
    free(m->e);
}

/* The slot holding key, or the empty slot where it would go. */
static size_t str_map_slot(const str_map *m, const char *base, const void *key, size_t len)
{
    size_t i = hash_bytes(key, len) & m->mask;
    for (;;) {
        int32_t k = m->slots[i];
        if (k < 0)
            return i;
        const str_entry *e = &m->e[k];
        if (e->len == len && !memcmp(base + e->off, key, len))
            return i;
        i = (i + 1) & m->mask;
    }
}

static int32_t str_map_get(const str_map *m, const char *base, const void *key, size_t len)
{
    if (!m->slots)
        return -1;
    int32_t k = m->slots[str_map_slot(m, base, key, len)];
    return k < 0 ? -1 : m->e[k].id;
}

/* Inserts (or overwrites) key -> id; the key must already be in the arena at off. */
static int str_map_put(str_map *m, const char *base, uint32_t off, uint32_t len, int32_t id)
{
    if ((m->n + 1) * 2 > m->mask + 1) { /* grow: keep the load under one half */
        size_t size = (m->mask + 1) * 2;
        int32_t *slots = malloc(size * sizeof *slots);
        if (!slots)
            return -1;
        memset(slots, 0xff, size * sizeof *slots);
        free(m->slots);
        m->slots = slots;
        m->mask = size - 1;
        for (size_t k = 0; k < m->n; k++)
            m->slots[str_map_slot(m, base, base + m->e[k].off, m->e[k].len)] = (int32_t)k;
    }
    size_t s = str_map_slot(m, base, base + off, len);
    if (m->slots[s] >= 0) {
        m->e[m->slots[s]].id = id;
        return 0;
    }
    if (m->n == m->cap) {
        size_t cap = m->cap * 2;
        str_entry *e = realloc(m->e, cap * sizeof *e);
        if (!e)
            return -1;
        m->e = e;
        m->cap = cap;
    }
    m->e[m->n] = (str_entry){off, len, id};
    m->slots[s] = (int32_t)m->n++;
    return 0;
}

/* Merge ranks: (left id, right id) -> (rank, merged id). */
typedef struct merge_slot {
    uint64_t key; /* UINT64_MAX when empty */
    int32_t rank, id;
} merge_slot;

static uint64_t merge_key(int32_t a, int32_t b)
{
    return (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
}

static size_t merge_hash(uint64_t key)
{
    key *= 0x9E3779B97F4A7C15ull;
    return (size_t)(key ^ (key >> 32));
}

/* ---------------------------------------------------------------------------------- */

typedef struct tok_info {
    uint32_t str_off, str_len;     /* as written in tokenizer.json */
    uint32_t bytes_off, bytes_len; /* the bytes it stands for */
    unsigned char known, special;
} tok_info;

typedef struct added_token {
    uint32_t off, len; /* content (NFC'd when normalized) in the arena */
    int32_t id;
    unsigned char special, lstrip, rstrip, single_word, normalized;
    unsigned char first; /* content's first byte, for grouping */
} added_token;

/* The added tokens searched in one pass, grouped by first byte, longest first. */
typedef struct added_set {
    added_token *tok;
    int n;
    int first[257]; /* tokens starting with byte b: tok[first[b] .. first[b+1]) */
} added_set;

enum split_behavior { SPLIT_ISOLATED, SPLIT_REMOVED };

typedef struct split_step {
    pcre2_code *re;
    int behavior, invert;
} split_step;

#define MAX_SPLITS 4

struct eng_tokenizer {
    arena strings;
    tok_info *tok;
    int32_t n_tok, cap_tok; /* highest id + 1, allocated */
    str_map vocab;          /* model vocabulary, by token string */
    str_map vocab_bytes;    /* model vocabulary, by bytes (only with ignore_merges) */
    str_map added_map;      /* added tokens, by content */
    merge_slot *merges;
    size_t merge_mask;
    int32_t byte_id[256]; /* the token of each single byte */
    int ignore_merges;
    added_set raw_added, norm_added; /* matched before / after normalisation */
    int nfc;
    split_step splits[MAX_SPLITS];
    int n_splits;
    int add_prefix_space, prefix_step; /* ByteLevel's: a space before each piece reaching it */
};

/* GPT-2's byte <-> printable code point table. */
static void byte_level_table(uint32_t cp_of_byte[256])
{
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
        cp_of_byte[b] = printable ? (uint32_t)b : (uint32_t)(256 + n++);
    }
}

static int utf8_encode(uint32_t cp, char out[4])
{
    return (int)utf8proc_encode_char((utf8proc_int32_t)cp, (utf8proc_uint8_t *)out);
}

/* The width of the UTF-8 sequence that lead byte b starts (0: b cannot start one) and
 * the range its second byte must lie in (no overlongs, no surrogates, <= U+10FFFF). */
static int utf8_lead(unsigned char b, unsigned char *lo, unsigned char *hi)
{
    *lo = 0x80, *hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF)
        return 2;
    if (b == 0xE0)
        return *lo = 0xA0, 3;
    if (b == 0xED)
        return *hi = 0x9F, 3;
    if (b >= 0xE1 && b <= 0xEF)
        return 3;
    if (b == 0xF0)
        return *lo = 0x90, 4;
    if (b >= 0xF1 && b <= 0xF3)
        return 4;
    if (b == 0xF4)
        return *hi = 0x8F, 4;
    return 0;
}

/* Length of the valid UTF-8 prefix of s (== n when all of it is valid). Rejects
 * overlongs, surrogates and code points above U+10FFFF, as Rust and JS strings do. */
static size_t utf8_valid_prefix(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char b = s[i];
        if (b < 0x80) {
            i++;
            continue;
        }
        unsigned char lo, hi;
        int w = utf8_lead(b, &lo, &hi);
        if (!w)
            return i;
        if (i + (size_t)w > n || s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (int k = 2; k < w; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF)
                return i;
        i += (size_t)w;
    }
    return n;
}

/* ---------------------------------------------------------------------------------- */
/* Loading */

static int type_is(const cJSON *obj, const char *type)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(obj, "type");
    return cJSON_IsString(t) && !strcmp(t->valuestring, type);
}

static const char *type_of(const cJSON *obj)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(obj, "type");
    return cJSON_IsString(t) ? t->valuestring : "(none)";
}

static int flag(const cJSON *obj, const char *name)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(obj, name));
}

/* Makes room for id (geometrically: ids mostly arrive in increasing order). */
static int grow_ids(eng_tokenizer *t, int32_t id)
{
    if (id < t->n_tok)
        return 0;
    if (id >= t->cap_tok) {
        int32_t cap = t->cap_tok ? t->cap_tok : 1024;
        while (cap <= id)
            cap *= 2;
        tok_info *p = realloc(t->tok, (size_t)cap * sizeof *p);
        if (!p)
            return -1;
        t->tok = p;
        t->cap_tok = cap;
    }
    memset(t->tok + t->n_tok, 0, (size_t)(id + 1 - t->n_tok) * sizeof *t->tok);
    t->n_tok = id + 1;
    return 0;
}

static int load_vocab(eng_tokenizer *t, const cJSON *vocab, const char *path, eng_error *err)
{
    int n = cJSON_GetArraySize(vocab);
    if (str_map_init(&t->vocab, (size_t)n))
        return eng_fail(err, "%s: out of memory", path);
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab)
    {
        if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble > 1e8 ||
            it->valuedouble != (double)(int32_t)it->valuedouble)
            return eng_fail(err, "%s: model.vocab[\"%s\"] is not a valid id", path, it->string);
        int32_t id = (int32_t)it->valuedouble;
        size_t len = strlen(it->string);
        size_t off = arena_add(&t->strings, it->string, len);
        if (off == (size_t)-1 || grow_ids(t, id) ||
            str_map_put(&t->vocab, t->strings.data, (uint32_t)off, (uint32_t)len, id))
            return eng_fail(err, "%s: out of memory", path);
        t->tok[id].str_off = (uint32_t)off;
        t->tok[id].str_len = (uint32_t)len;
        t->tok[id].known = 1;
    }
    return 0;
}

static int put_merge(eng_tokenizer *t, int32_t a, int32_t b, int32_t rank, int32_t id)
{
    uint64_t key = merge_key(a, b);
    size_t i = merge_hash(key) & t->merge_mask;
    while (t->merges[i].key != UINT64_MAX && t->merges[i].key != key)
        i = (i + 1) & t->merge_mask;
    /* A repeated pair keeps its last rank, as HF's map built from the list does. */
    t->merges[i] = (merge_slot){key, rank, id};
    return 0;
}

static const merge_slot *get_merge(const eng_tokenizer *t, int32_t a, int32_t b)
{
    if (!t->merges)
        return NULL;
    uint64_t key = merge_key(a, b);
    size_t i = merge_hash(key) & t->merge_mask;
    while (t->merges[i].key != UINT64_MAX) {
        if (t->merges[i].key == key)
            return &t->merges[i];
        i = (i + 1) & t->merge_mask;
    }
    return NULL;
}

static int load_merges(eng_tokenizer *t, const cJSON *merges, const char *path, eng_error *err)
{
    int n = cJSON_GetArraySize(merges);
    size_t size = 16;
    while (size < (size_t)n * 2)
        size *= 2;
    t->merges = malloc(size * sizeof *t->merges);
    if (!t->merges)
        return eng_fail(err, "%s: out of memory", path);
    for (size_t i = 0; i < size; i++)
        t->merges[i].key = UINT64_MAX;
    t->merge_mask = size - 1;

    char *joined = NULL;
    size_t joined_cap = 0;
    int rank = 0, rc = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, merges)
    {
        const char *a, *b;
        size_t la, lb;
        if (cJSON_IsString(it)) { /* "a b" */
            const char *s = it->valuestring;
            const char *sp = strchr(s, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                rc = eng_fail(err, "%s: merge %d (\"%s\") is not two tokens separated by one space", path, rank, s);
                break;
            }
            a = s, la = (size_t)(sp - s), b = sp + 1, lb = strlen(sp + 1);
        } else if (cJSON_GetArraySize(it) == 2 && cJSON_IsString(cJSON_GetArrayItem(it, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(it, 1))) { /* ["a", "b"] */
            a = cJSON_GetArrayItem(it, 0)->valuestring, la = strlen(a);
            b = cJSON_GetArrayItem(it, 1)->valuestring, lb = strlen(b);
        } else {
            rc = eng_fail(err, "%s: merge %d is neither \"a b\" nor [a, b]", path, rank);
            break;
        }
        if (la + lb > joined_cap) {
            joined_cap = (la + lb) * 2 + 64;
            char *p = realloc(joined, joined_cap);
            if (!p) {
                rc = eng_fail(err, "%s: out of memory", path);
                break;
            }
            joined = p;
        }
        memcpy(joined, a, la);
        memcpy(joined + la, b, lb);
        int32_t ia = str_map_get(&t->vocab, t->strings.data, a, la);
        int32_t ib = str_map_get(&t->vocab, t->strings.data, b, lb);
        int32_t im = str_map_get(&t->vocab, t->strings.data, joined, la + lb);
        if (ia < 0 || ib < 0 || im < 0) {
            rc = eng_fail(err, "%s: merge %d (\"%.*s %.*s\") uses a token missing from model.vocab", path, rank,
                          (int)la, a, (int)lb, b);
            break;
        }
        put_merge(t, ia, ib, rank, im);
        rank++;
    }
    free(joined);
    return rc;
}

static int add_added_token(eng_tokenizer *t, added_token **list, int *n, int *cap, const cJSON *obj, int32_t id,
                           const char *where, eng_error *err)
{
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(obj, "content");
    if (!cJSON_IsString(content) || !content->valuestring[0])
        return eng_fail(err, "%s: added token %d has no content", where, id);
    size_t len = strlen(content->valuestring);
    if (utf8_valid_prefix((const unsigned char *)content->valuestring, len) != len)
        return eng_fail(err, "%s: added token %d is not valid UTF-8", where, id);
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 32;
        added_token *p = realloc(*list, (size_t)*cap * sizeof *p);
        if (!p)
            return eng_fail(err, "%s: out of memory", where);
        *list = p;
    }
    size_t off = arena_add(&t->strings, content->valuestring, len);
    if (off == (size_t)-1 || grow_ids(t, id) ||
        str_map_put(&t->added_map, t->strings.data, (uint32_t)off, (uint32_t)len, id))
        return eng_fail(err, "%s: out of memory", where);
    added_token *a = &(*list)[(*n)++];
    *a = (added_token){(uint32_t)off,
                       (uint32_t)len,
                       id,
                       (unsigned char)flag(obj, "special"),
                       (unsigned char)flag(obj, "lstrip"),
                       (unsigned char)flag(obj, "rstrip"),
                       (unsigned char)flag(obj, "single_word"),
                       (unsigned char)flag(obj, "normalized"),
                       (unsigned char)content->valuestring[0]};
    /* The added token is how this id is written, even when the vocab also has it. */
    t->tok[id].str_off = (uint32_t)off;
    t->tok[id].str_len = (uint32_t)len;
    t->tok[id].known = 1;
    t->tok[id].special = a->special;
    return 0;
}

static int id_of(const cJSON *v, int32_t *id)
{
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 1e8 ||
        v->valuedouble != (double)(int32_t)v->valuedouble)
        return -1;
    *id = (int32_t)v->valuedouble;
    return 0;
}

static int cmp_added(const void *pa, const void *pb)
{
    const added_token *a = pa, *b = pb;
    if (a->first != b->first)
        return a->first < b->first ? -1 : 1;
    if (a->len != b->len)
        return a->len > b->len ? -1 : 1; /* longest first */
    return a->id < b->id ? -1 : a->id > b->id;
}

static int build_added_set(eng_tokenizer *t, added_set *s, const added_token *all, int n, int normalized,
                           const char *path, eng_error *err)
{
    s->tok = malloc((size_t)(n ? n : 1) * sizeof *s->tok);
    if (!s->tok)
        return eng_fail(err, "%s: out of memory", path);
    s->n = 0;
    for (int i = 0; i < n; i++) {
        if (all[i].normalized != normalized)
            continue;
        added_token a = all[i];
        if (normalized && t->nfc) { /* matched in normalised text, so normalise it too */
            utf8proc_uint8_t *nfc = NULL;
            utf8proc_ssize_t m = utf8proc_map((const utf8proc_uint8_t *)t->strings.data + a.off, a.len, &nfc,
                                              UTF8PROC_STABLE | UTF8PROC_COMPOSE);
            if (m < 0)
                return eng_fail(err, "%s: added token %d: %s", path, a.id, utf8proc_errmsg(m));
            size_t off = arena_add(&t->strings, nfc, (size_t)m);
            free(nfc);
            if (off == (size_t)-1)
                return eng_fail(err, "%s: out of memory", path);
            a.off = (uint32_t)off, a.len = (uint32_t)m;
            if (m == 0)
                return eng_fail(err, "%s: added token %d is empty after NFC", path, a.id);
            a.first = (unsigned char)t->strings.data[off];
        }
        s->tok[s->n++] = a;
    }
    qsort(s->tok, (size_t)s->n, sizeof *s->tok, cmp_added);
    int k = 0;
    for (int b = 0; b <= 256; b++) {
        while (k < s->n && s->tok[k].first < b)
            k++;
        s->first[b] = k;
    }
    s->first[256] = s->n;
    return 0;
}

static int load_added(eng_tokenizer *t, const cJSON *root, const char *path, const char *dir, eng_error *err)
{
    added_token *list = NULL;
    int n = 0, cap = 0, rc = 0;
    if (str_map_init(&t->added_map, 64))
        return eng_fail(err, "%s: out of memory", path);
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    const cJSON *it;
    cJSON_ArrayForEach(it, added)
    {
        int32_t id;
        if (id_of(cJSON_GetObjectItemCaseSensitive(it, "id"), &id)) {
            rc = eng_fail(err, "%s: an added token has no valid id", path);
            goto done;
        }
        if ((rc = add_added_token(t, &list, &n, &cap, it, id, path, err)))
            goto done;
    }

    /* tokenizer_config.json may declare more added tokens (transformers adds them). */
    char cfg_path[4096];
    snprintf(cfg_path, sizeof cfg_path, "%s/tokenizer_config.json", dir);
    FILE *probe = fopen(cfg_path, "rb");
    if (probe) {
        fclose(probe);
        size_t len;
        char *text = eng_read_file(cfg_path, &len, err);
        if (!text) {
            rc = -1;
            goto done;
        }
        cJSON *cfg = cJSON_ParseWithLength(text, len);
        free(text);
        if (!cfg) {
            rc = eng_fail(err, "%s: not valid JSON", cfg_path);
            goto done;
        }
        const cJSON *dec = cJSON_GetObjectItemCaseSensitive(cfg, "added_tokens_decoder");
        cJSON_ArrayForEach(it, dec)
        {
            char *end;
            long id = strtol(it->string, &end, 10);
            if (*end || id < 0 || id > 100000000) {
                rc = eng_fail(err, "%s: added_tokens_decoder key \"%s\" is not an id", cfg_path, it->string);
                break;
            }
            if (id < t->n_tok && t->tok[id].known &&
                str_map_get(&t->added_map, t->strings.data, t->strings.data + t->tok[id].str_off, t->tok[id].str_len) ==
                    id)
                continue; /* already an added token of tokenizer.json */
            if ((rc = add_added_token(t, &list, &n, &cap, it, (int32_t)id, cfg_path, err)))
                break;
        }
        cJSON_Delete(cfg);
        if (rc)
            goto done;
    }
    if (build_added_set(t, &t->raw_added, list, n, 0, path, err) ||
        build_added_set(t, &t->norm_added, list, n, 1, path, err))
        rc = -1;
done:
    free(list);
    return rc;
}

/* Rewrites \s and \S into the Unicode White_Space property: HF's Oniguruma uses that set,
 * while PCRE2's \s also takes U+180E. Everything else of the pattern is kept as written. */
static char *rewrite_pattern(const char *p)
{
    size_t n = strlen(p);
    char *out = malloc(n * 8 + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\\' && i + 1 < n) {
            if (p[i + 1] == 's' || p[i + 1] == 'S') {
                o += (size_t)sprintf(out + o, "\\%c{White_Space}", p[i + 1] == 's' ? 'p' : 'P');
            } else {
                out[o++] = p[i];
                out[o++] = p[i + 1];
            }
            i++;
        } else {
            out[o++] = p[i];
        }
    }
    out[o] = 0;
    return out;
}

static int add_split(eng_tokenizer *t, const char *pattern, int is_regex, int behavior, int invert, const char *path,
                     eng_error *err)
{
    if (t->n_splits == MAX_SPLITS)
        return eng_fail(err, "%s: more than %d splitting pre-tokenizers", path, MAX_SPLITS);
    char *pat = is_regex ? rewrite_pattern(pattern) : strdup(pattern);
    if (!pat)
        return eng_fail(err, "%s: out of memory", path);
    int code;
    PCRE2_SIZE at;
    uint32_t opts = PCRE2_UTF | (is_regex ? PCRE2_UCP : PCRE2_LITERAL); /* LITERAL refuses UCP */
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, opts, &code, &at, NULL);
    free(pat);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        return eng_fail(err, "%s: pre-tokenizer pattern /%s/ does not compile at offset %zu: %s", path, pattern,
                        (size_t)at, (char *)msg);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* the interpreter is used if JIT is unavailable */
    t->splits[t->n_splits++] = (split_step){re, behavior, invert};
    return 0;
}

static const char GPT2_PATTERN[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int load_pre_tokenizer(eng_tokenizer *t, const cJSON *pt, int *byte_level, const char *path, eng_error *err)
{
    if (cJSON_IsNull(pt) || !pt)
        return 0;
    if (type_is(pt, "Sequence")) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(pt, "pretokenizers"))
        {
            if (load_pre_tokenizer(t, it, byte_level, path, err))
                return -1;
        }
        return 0;
    }
    if (type_is(pt, "ByteLevel")) {
        if (*byte_level)
            return eng_fail(err, "%s: two ByteLevel pre-tokenizers", path);
        *byte_level = 1;
        t->add_prefix_space = flag(pt, "add_prefix_space");
        t->prefix_step = t->n_splits;
        const cJSON *use_regex = cJSON_GetObjectItemCaseSensitive(pt, "use_regex");
        if (!cJSON_IsFalse(use_regex)) /* HF's default is true */
            return add_split(t, GPT2_PATTERN, 1, SPLIT_ISOLATED, 0, path, err);
        return 0;
    }
    if (type_is(pt, "Split")) {
        if (*byte_level)
            return eng_fail(err, "%s: a Split after the ByteLevel pre-tokenizer is not supported", path);
        const cJSON *pattern = cJSON_GetObjectItemCaseSensitive(pt, "pattern");
        const cJSON *regex = cJSON_GetObjectItemCaseSensitive(pattern, "Regex");
        const cJSON *string = cJSON_GetObjectItemCaseSensitive(pattern, "String");
        const cJSON *beh = cJSON_GetObjectItemCaseSensitive(pt, "behavior");
        int behavior;
        if (cJSON_IsString(beh) && !strcmp(beh->valuestring, "Isolated"))
            behavior = SPLIT_ISOLATED;
        else if (cJSON_IsString(beh) && !strcmp(beh->valuestring, "Removed"))
            behavior = SPLIT_REMOVED;
        else
            return eng_fail(err, "%s: Split behavior \"%s\" is not supported (Isolated, Removed are)", path,
                            cJSON_IsString(beh) ? beh->valuestring : "(none)");
        if (cJSON_IsString(regex))
            return add_split(t, regex->valuestring, 1, behavior, flag(pt, "invert"), path, err);
        if (cJSON_IsString(string))
            return add_split(t, string->valuestring, 0, behavior, flag(pt, "invert"), path, err);
        return eng_fail(err, "%s: Split pre-tokenizer without a Regex or String pattern", path);
    }
    return eng_fail(err, "%s: pre-tokenizer type \"%s\" is not supported", path, type_of(pt));
}

static int load_normalizer(eng_tokenizer *t, const cJSON *nm, const char *path, eng_error *err)
{
    if (!nm || cJSON_IsNull(nm))
        return 0;
    if (type_is(nm, "NFC")) {
        t->nfc = 1;
        return 0;
    }
    if (type_is(nm, "Sequence")) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(nm, "normalizers"))
        {
            if (load_normalizer(t, it, path, err))
                return -1;
        }
        return 0;
    }
    return eng_fail(err, "%s: normalizer type \"%s\" is not supported (NFC is)", path, type_of(nm));
}

/* Fills every id's byte form: each char of its string through the byte-level table,
 * or the string's own UTF-8 when some char is not in the table (HF's ByteLevel decoder). */
static int build_bytes(eng_tokenizer *t, const char *path, eng_error *err)
{
    uint32_t cp_of_byte[256];
    int byte_of_cp[512];
    byte_level_table(cp_of_byte);
    for (int i = 0; i < 512; i++)
        byte_of_cp[i] = -1;
    for (int b = 0; b < 256; b++)
        byte_of_cp[cp_of_byte[b]] = b;

    unsigned char tmp[1024];
    for (int32_t id = 0; id < t->n_tok; id++) {
        tok_info *k = &t->tok[id];
        if (!k->known)
            continue;
        const unsigned char *s = (const unsigned char *)t->strings.data + k->str_off;
        size_t n = k->str_len, m = 0;
        int mapped = n < sizeof tmp;
        for (size_t i = 0; i < n && mapped;) {
            utf8proc_int32_t cp;
            utf8proc_ssize_t w = utf8proc_iterate(s + i, (utf8proc_ssize_t)(n - i), &cp);
            if (w <= 0 || cp >= 512 || byte_of_cp[cp] < 0) {
                mapped = 0;
                break;
            }
            tmp[m++] = (unsigned char)byte_of_cp[cp];
            i += (size_t)w;
        }
        if (!mapped) {
            k->bytes_off = k->str_off;
            k->bytes_len = k->str_len;
            continue;
        }
        size_t off = arena_add(&t->strings, tmp, m);
        if (off == (size_t)-1)
            return eng_fail(err, "%s: out of memory", path);
        k->bytes_off = (uint32_t)off;
        k->bytes_len = (uint32_t)m;
    }

    for (int b = 0; b < 256; b++) {
        char u[4];
        int w = utf8_encode(cp_of_byte[b], u);
        t->byte_id[b] = str_map_get(&t->vocab, t->strings.data, u, (size_t)w);
        if (t->byte_id[b] < 0)
            return eng_fail(err, "%s: model.vocab lacks the byte-level symbol of byte 0x%02x", path, b);
    }
    if (t->ignore_merges) {
        if (str_map_init(&t->vocab_bytes, t->vocab.n))
            return eng_fail(err, "%s: out of memory", path);
        for (size_t i = 0; i < t->vocab.n; i++) {
            const tok_info *k = &t->tok[t->vocab.e[i].id];
            if (str_map_put(&t->vocab_bytes, t->strings.data, k->bytes_off, k->bytes_len, t->vocab.e[i].id))
                return eng_fail(err, "%s: out of memory", path);
        }
    }
    return 0;
}

static int load_json(eng_tokenizer *t, const cJSON *root, const char *path, const char *dir, eng_error *err)
{
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model))
        return eng_fail(err, "%s: no \"model\" object", path);
    if (cJSON_GetObjectItemCaseSensitive(model, "type") && !type_is(model, "BPE"))
        return eng_fail(err, "%s: model type \"%s\" is not supported (BPE is)", path, type_of(model));
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsObject(vocab) || !cJSON_IsArray(merges))
        return eng_fail(err, "%s: model.vocab (object) or model.merges (array) missing", path);
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (dropout && !cJSON_IsNull(dropout))
        return eng_fail(err, "%s: BPE dropout is not supported", path);
    const char *affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(model, affixes[i]);
        if (cJSON_IsString(a) && a->valuestring[0])
            return eng_fail(err, "%s: model.%s is not supported", path, affixes[i]);
    }
    t->ignore_merges = flag(model, "ignore_merges");

    if (load_vocab(t, vocab, path, err) || load_merges(t, merges, path, err) ||
        load_normalizer(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), path, err))
        return -1;
    int byte_level = 0;
    if (load_pre_tokenizer(t, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), &byte_level, path, err))
        return -1;
    if (!byte_level)
        return eng_fail(err, "%s: no ByteLevel pre-tokenizer (only byte-level BPE is supported)", path);
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    if (dec && !cJSON_IsNull(dec) && !type_is(dec, "ByteLevel"))
        return eng_fail(err, "%s: decoder type \"%s\" is not supported (ByteLevel is)", path, type_of(dec));
    if (load_added(t, root, path, dir, err))
        return -1;
    return build_bytes(t, path, err);
}

int eng_tokenizer_load(const char *dir, eng_tokenizer **out, eng_error *err)
{
    *out = NULL;
    char path[4096];
    if (snprintf(path, sizeof path, "%s/tokenizer.json", dir) >= (int)sizeof path)
        return eng_fail(err, "tokenizer directory path too long");
    size_t len;
    char *text = eng_read_file(path, &len, err);
    if (!text)
        return -1;
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        size_t off = at && at >= text && at <= text + len ? (size_t)(at - text) : 0;
        free(text);
        return eng_fail(err, "%s: not valid JSON (near byte %zu)", path, off);
    }
    free(text);
    eng_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        cJSON_Delete(root);
        return eng_fail(err, "%s: out of memory", path);
    }
    int rc = load_json(t, root, path, dir, err);
    cJSON_Delete(root);
    if (rc) {
        eng_tokenizer_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

void eng_tokenizer_free(eng_tokenizer *t)
{
    if (!t)
        return;
    free(t->strings.data);
    free(t->tok);
    str_map_free(&t->vocab);
    str_map_free(&t->vocab_bytes);
    str_map_free(&t->added_map);
    free(t->merges);
    free(t->raw_added.tok);
    free(t->norm_added.tok);
    for (int i = 0; i < t->n_splits; i++)
        pcre2_code_free(t->splits[i].re);
    free(t);
}

/* ---------------------------------------------------------------------------------- */
/* Encoding */

typedef struct symbol {
    int32_t id;
    int prev, next; /* -1 at the ends */
    int alive;
} symbol;

typedef struct cand {
    int32_t rank, id;
    int pos;
} cand;

/* Per-call scratch, so that a shared tokenizer can encode on several threads. */
typedef struct encoder {
    const eng_tokenizer *t;
    int parse_special;
    int32_t *ids;
    int n_ids, cap_ids;
    symbol *sym;
    cand *heap;
    size_t cap_word;
    pcre2_match_data *md;
    eng_error *err;
} encoder;

static int emit(encoder *e, int32_t id)
{
    if (e->n_ids == e->cap_ids) {
        int cap = e->cap_ids ? e->cap_ids * 2 : 256;
        int32_t *p = realloc(e->ids, (size_t)cap * sizeof *p);
        if (!p)
            return eng_fail(e->err, "out of memory");
        e->ids = p;
        e->cap_ids = cap;
    }
    e->ids[e->n_ids++] = id;
    return 0;
}

static int cand_less(const cand *a, const cand *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(cand *h, int *n, cand c)
{
    int i = (*n)++;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!cand_less(&c, &h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = c;
}

static cand heap_pop(cand *h, int *n)
{
    cand top = h[0], last = h[--*n];
    int i = 0;
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        const cand *best = &last;
        if (l < *n && cand_less(&h[l], best))
            m = l, best = &h[l];
        if (r < *n && cand_less(&h[r], best))
            m = r;
        if (m == i)
            break;
        h[i] = h[m];
        i = m;
    }
    if (*n > 0)
        h[i] = last;
    return top;
}

static void push_pair(const eng_tokenizer *t, const symbol *sym, cand *heap, int *nh, int pos)
{
    const merge_slot *m = get_merge(t, sym[pos].id, sym[sym[pos].next].id);
    if (m)
        heap_push(heap, nh, (cand){m->rank, m->id, pos});
}

/* One pre-token (raw bytes) -> ids, merging the lowest-ranked pair first, leftmost on ties. */
static int bpe_word(encoder *e, const unsigned char *w, size_t n)
{
    const eng_tokenizer *t = e->t;
    if (t->ignore_merges) {
        int32_t id = str_map_get(&t->vocab_bytes, t->strings.data, w, n);
        if (id >= 0)
            return emit(e, id);
    }
    if (n == 1)
        return emit(e, t->byte_id[w[0]]);
    if (n > e->cap_word) {
        size_t cap = n * 2;
        symbol *s = realloc(e->sym, cap * sizeof *s);
        if (s)
            e->sym = s;
        cand *h = realloc(e->heap, 2 * cap * sizeof *h); /* live candidates never exceed 2n */
        if (h)
            e->heap = h;
        if (!s || !h)
            return eng_fail(e->err, "out of memory");
        e->cap_word = cap;
    }
    symbol *sym = e->sym;
    cand *heap = e->heap;
    int nh = 0;
    for (size_t i = 0; i < n; i++)
        sym[i] = (symbol){t->byte_id[w[i]], (int)i - 1, i + 1 < n ? (int)i + 1 : -1, 1};
    for (size_t i = 0; i + 1 < n; i++)
        push_pair(t, sym, heap, &nh, (int)i);
    while (nh > 0) {
        cand c = heap_pop(heap, &nh);
        symbol *left = &sym[c.pos];
        if (!left->alive || left->next < 0)
            continue;
        /* Stale if either side has changed since the candidate was queued. */
        const merge_slot *m = get_merge(t, left->id, sym[left->next].id);
        if (!m || m->id != c.id || m->rank != c.rank)
            continue;
        symbol *right = &sym[left->next];
        left->id = c.id;
        right->alive = 0;
        left->next = right->next;
        if (right->next >= 0)
            sym[right->next].prev = c.pos;
        if (left->prev >= 0)
            push_pair(t, sym, heap, &nh, left->prev);
        if (left->next >= 0)
            push_pair(t, sym, heap, &nh, c.pos);
    }
    for (int i = 0; i >= 0; i = sym[i].next)
        if (emit(e, sym[i].id))
            return -1;
    return 0;
}

static int split_piece(encoder *e, const char *s, size_t n, int step);

/* Pre-tokenizer stage number `step` on s[0..n), then BPE on each piece. */
static int pre_tokenize(encoder *e, const char *s, size_t n, int step)
{
    if (n == 0)
        return 0;
    const eng_tokenizer *t = e->t;
    if (!t->add_prefix_space || step != t->prefix_step || s[0] == ' ')
        return split_piece(e, s, n, step);
    char *p = malloc(n + 1);
    if (!p)
        return eng_fail(e->err, "out of memory");
    p[0] = ' ';
    memcpy(p + 1, s, n);
    int rc = split_piece(e, p, n + 1, step);
    free(p);
    return rc;
}

static int split_piece(encoder *e, const char *s, size_t n, int step)
{
    const eng_tokenizer *t = e->t;
    if (step == t->n_splits)
        return bpe_word(e, (const unsigned char *)s, n);
    const split_step *sp = &t->splits[step];
    size_t prev = 0, off = 0;
    while (off < n) {
        int rc = pcre2_match(sp->re, (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK, e->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return eng_fail(e->err, "pre-tokenizer regex failed: %s", (char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) { /* an empty match splits nothing; step over one character */
            off = ms + 1;
            while (off < n && ((unsigned char)s[off] & 0xC0) == 0x80)
                off++;
            continue;
        }
        /* Removed drops the delimiters: the matches, or with invert what lies between them. */
        int keep_gap = sp->behavior == SPLIT_ISOLATED || !sp->invert;
        int keep_match = sp->behavior == SPLIT_ISOLATED || sp->invert;
        if (keep_gap && ms > prev && pre_tokenize(e, s + prev, ms - prev, step + 1))
            return -1;
        if (keep_match && pre_tokenize(e, s + ms, me - ms, step + 1))
            return -1;
        prev = off = me;
    }
    if ((sp->behavior == SPLIT_ISOLATED || !sp->invert) && prev < n)
        return pre_tokenize(e, s + prev, n - prev, step + 1);
    return 0;
}

/* A normalised stretch of text with no added token in it. */
static int encode_plain(encoder *e, const char *s, size_t n)
{
    return pre_tokenize(e, s, n, 0);
}

static int is_word_char(utf8proc_int32_t c)
{
    utf8proc_category_t cat = utf8proc_category(c);
    return c == '_' || (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) ||
           (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO);
}

static int is_space_char(utf8proc_int32_t c)
{
    return (c >= 9 && c <= 13) || c == ' ' || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* The code point that ends s[0..n) (n > 0, valid UTF-8) and where it starts. */
static utf8proc_int32_t last_char(const char *s, size_t n, size_t *start)
{
    size_t i = n - 1;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80)
        i--;
    utf8proc_int32_t c;
    utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &c);
    *start = i;
    return c;
}

static utf8proc_int32_t first_char(const char *s, size_t n, size_t *width)
{
    utf8proc_int32_t c;
    utf8proc_ssize_t w = utf8proc_iterate((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &c);
    *width = w > 0 ? (size_t)w : 1;
    return c;
}

typedef int (*piece_fn)(encoder *e, const char *s, size_t n);

/* Finds the tokens of set in s, leftmost then longest (HF's Aho-Corasick, LeftmostLongest),
 * emits their ids, and hands every stretch between them to plain(). */
static int split_added(encoder *e, const added_set *set, const char *s, size_t n, piece_fn plain)
{
    if (set->n == 0)
        return plain(e, s, n);
    const char *base = e->t->strings.data;
    size_t start = 0, i = 0;
    while (i < n) {
        unsigned char b = (unsigned char)s[i];
        const added_token *hit = NULL;
        for (int k = set->first[b]; k < set->first[b + 1]; k++) {
            const added_token *a = &set->tok[k];
            if (a->len <= n - i && !memcmp(base + a->off, s + i, a->len)) {
                hit = a;
                break;
            }
        }
        if (!hit) {
            i++;
            continue;
        }
        size_t ms = i, me = i + hit->len;
        i = me; /* the automaton resumes after the match, used or not */
        if (hit->special && !e->parse_special)
            continue;
        if (hit->single_word) {
            size_t at, w;
            if ((ms > 0 && is_word_char(last_char(s, ms, &at))) ||
                (me < n && is_word_char(first_char(s + me, n - me, &w))))
                continue;
        }
        if (hit->lstrip) {
            size_t at;
            while (ms > start && is_space_char(last_char(s, ms, &at)))
                ms = at;
        }
        if (hit->rstrip) {
            size_t w;
            while (me < n && is_space_char(first_char(s + me, n - me, &w)))
                me += w;
        }
        if (ms > start && plain(e, s + start, ms - start))
            return -1;
        if (emit(e, hit->id))
            return -1;
        start = me;
    }
    return start < n ? plain(e, s + start, n - start) : 0;
}

static int encode_normalized(encoder *e, const char *s, size_t n)
{
    return split_added(e, &e->t->norm_added, s, n, encode_plain);
}

/* A raw stretch without raw-matched added tokens: normalise, then the rest. */
static int encode_raw(encoder *e, const char *s, size_t n)
{
    const eng_tokenizer *t = e->t;
    int needs_nfc = 0;
    /* Text made only of code points below U+0300 (lead bytes below 0xCC) is already NFC. */
    for (size_t i = 0; i < n && t->nfc; i++)
        if ((unsigned char)s[i] >= 0xCC) {
            needs_nfc = 1;
            break;
        }
    if (!needs_nfc)
        return encode_normalized(e, s, n);
    utf8proc_uint8_t *nfc = NULL;
    utf8proc_ssize_t m = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &nfc,
                                      UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (m < 0)
        return eng_fail(e->err, "NFC normalisation failed: %s", utf8proc_errmsg(m));
    int rc = encode_normalized(e, (const char *)nfc, (size_t)m);
    free(nfc);
    return rc;
}

int eng_tokenize(const eng_tokenizer *t, const char *text, size_t len, int parse_special, int32_t **ids, int *n_ids,
                 eng_error *err)
{
    *ids = NULL;
    *n_ids = 0;
    size_t valid = utf8_valid_prefix((const unsigned char *)text, len);
    if (valid != len)
        return eng_fail(err, "input is not valid UTF-8 (bad byte 0x%02x at offset %zu)", (unsigned char)text[valid],
                        valid);
    if (len > (size_t)INT32_MAX / 2)
        return eng_fail(err, "input too long (%zu bytes)", len);
    encoder e = {.t = t, .parse_special = parse_special, .err = err};
    e.md = pcre2_match_data_create(4, NULL);
    if (!e.md)
        return eng_fail(err, "out of memory");
    int rc = split_added(&e, &t->raw_added, text, len, encode_raw);
    pcre2_match_data_free(e.md);
    free(e.sym);
    free(e.heap);
    if (rc) {
        free(e.ids);
        return -1;
    }
    if (!e.ids) /* empty text: still hand back a valid allocation */
        e.ids = malloc(sizeof *e.ids);
    if (!e.ids)
        return eng_fail(err, "out of memory");
    *ids = e.ids;
    *n_ids = e.n_ids;
    return 0;
}

/* ---------------------------------------------------------------------------------- */
/* Lookups */

int eng_tokenizer_vocab_size(const eng_tokenizer *t)
{
    return t->n_tok;
}

int32_t eng_token_id(const eng_tokenizer *t, const char *token)
{
    size_t n = strlen(token);
    int32_t id = str_map_get(&t->added_map, t->strings.data, token, n);
    return id >= 0 ? id : str_map_get(&t->vocab, t->strings.data, token, n);
}

const char *eng_token_bytes(const eng_tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->n_tok || !t->tok[id].known)
        return NULL;
    *len = t->tok[id].bytes_len;
    return t->strings.data + t->tok[id].bytes_off;
}

int eng_token_is_special(const eng_tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_tok && t->tok[id].special;
}

/* ---------------------------------------------------------------------------------- */
/* Decoding */

static const char REPLACEMENT[] = "\xEF\xBF\xBD"; /* U+FFFD */

/* Appends s[0..n) to out with each maximal invalid subpart replaced by U+FFFD. When
 * !final, an incomplete but so far valid character at the end is not consumed: its
 * length is returned in *rest (it is the caller's to keep for the next bytes). */
static int lossy_append(eng_buf *out, const unsigned char *s, size_t n, int final, size_t *rest)
{
    size_t i = 0;
    *rest = 0;
    while (i < n) {
        size_t v = utf8_valid_prefix(s + i, n - i);
        if (v && eng_buf_append(out, s + i, v))
            return -1;
        i += v;
        if (i == n)
            break;
        /* s[i] starts an invalid or truncated sequence: how far is it a valid prefix? */
        unsigned char b = s[i];
        unsigned char lo, hi;
        int w = utf8_lead(b, &lo, &hi);
        size_t j = i + 1;
        if (w && j < n && s[j] >= lo && s[j] <= hi) {
            j++;
            while (j < n && (int)(j - i) < w && s[j] >= 0x80 && s[j] <= 0xBF)
                j++;
        }
        if (w && j == n && (int)(j - i) < w && !final) { /* truncated: wait for more */
            *rest = n - i;
            return 0;
        }
        if (eng_buf_append(out, REPLACEMENT, 3))
            return -1;
        i = j;
    }
    return 0;
}

int eng_detokenize(const eng_tokenizer *t, const int32_t *ids, int n, int skip_special, eng_buf *out)
{
    eng_buf raw = {0};
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_tok || !t->tok[ids[i]].known)
            continue;
        const tok_info *k = &t->tok[ids[i]];
        if (skip_special && k->special)
            continue;
        if (eng_buf_append(&raw, t->strings.data + k->bytes_off, k->bytes_len)) {
            eng_buf_free(&raw);
            return -1;
        }
    }
    size_t rest;
    int rc = raw.len ? lossy_append(out, (const unsigned char *)raw.data, raw.len, 1, &rest) : 0;
    eng_buf_free(&raw);
    return rc;
}

int eng_detok_push(const eng_tokenizer *t, eng_detok *d, int32_t id, int skip_special, eng_buf *out)
{
    if (id < 0 || id >= t->n_tok || !t->tok[id].known)
        return 0;
    const tok_info *k = &t->tok[id];
    if (skip_special && k->special)
        return 0;
    const unsigned char *bytes = (const unsigned char *)t->strings.data + k->bytes_off;
    size_t n = (size_t)d->n_pending + k->bytes_len;
    unsigned char small[256];
    unsigned char *buf = n <= sizeof small ? small : malloc(n);
    if (!buf)
        return -1;
    memcpy(buf, d->pending, (size_t)d->n_pending);
    memcpy(buf + d->n_pending, bytes, k->bytes_len);
    size_t rest;
    int rc = lossy_append(out, buf, n, 0, &rest);
    if (rc == 0) { /* rest < 4: a truncated character is at most 3 bytes */
        memcpy(d->pending, buf + n - rest, rest);
        d->n_pending = (int)rest;
    }
    if (buf != small)
        free(buf);
    return rc;
}

int eng_detok_flush(eng_detok *d, eng_buf *out)
{
    if (d->n_pending == 0)
        return 0;
    size_t rest;
    int rc = lossy_append(out, d->pending, (size_t)d->n_pending, 1, &rest);
    if (rc == 0)
        d->n_pending = 0;
    return rc;
}
