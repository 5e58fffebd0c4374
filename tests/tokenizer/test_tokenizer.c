/* test_tokenizer.c: unit tests of engine/tokenizer on a small tokenizer.json written here.
 *
 * The fixture has one token per byte (id == byte value, byte-level spelling), a few merges
 * (half as "a b" strings, half as [a, b] pairs) whose ranks disagree with left-to-right
 * order, and added tokens of every kind: special, not special, lstrip, rstrip,
 * single_word, normalized, and two sharing a prefix. The same pipeline as Qwen3's
 * (NFC, its split regex, ByteLevel) makes this the real code path on a vocabulary small
 * enough to reason about by hand. Also covers load errors and the lossy and streaming
 * decoders on arbitrary bytes. */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tokenizer/tokenizer.h"
#include "check.h"

static char dir[256];

/* GPT-2's byte -> code point table, written independently of the tokenizer's. */
static unsigned cp_of(int b)
{
    static unsigned table[256];
    static int ready;
    if (!ready) {
        int n = 0;
        for (int i = 0; i < 256; i++)
            table[i] = ((i >= '!' && i <= '~') || (i >= 0xA1 && i <= 0xAC) || i >= 0xAE) ? (unsigned)i
                                                                                         : 256u + (unsigned)n++;
        ready = 1;
    }
    return table[b];
}

static void spell(char *out, const char *bytes)
{
    for (const unsigned char *p = (const unsigned char *)bytes; *p; p++) {
        unsigned c = cp_of(*p);
        if (c < 0x80) {
            *out++ = (char)c;
        } else {
            *out++ = (char)(0xC0 | (c >> 6));
            *out++ = (char)(0x80 | (c & 0x3F));
        }
    }
    *out = 0;
}

/* Merged tokens, in rank order; ids follow the 256 byte tokens. */
static const char *MERGES[][2] = {
    {"h", "e"},    /* 0 -> 256 "he" */
    {"l", "l"},    /* 1 -> 257 "ll" */
    {"he", "ll"},  /* 2 -> 258 "hell" */
    {"hell", "o"}, /* 3 -> 259 "hello" */
    {" ", "h"},    /* 4 -> 260 " h" (loses to "he") */
    {"a", "a"},    /* 5 -> 261 "aa" */
    {" ", "w"},    /* 6 -> 262 " w" */
};
enum { ID_HE = 256, ID_LL, ID_HELL, ID_HELLO, ID_SP_H, ID_AA, ID_SP_W };
enum { ID_IM_START = 300, ID_THINK, ID_MASK, ID_RMASK, ID_WORD, ID_CAFE, ID_AB, ID_ABC };

static cJSON *added(int id, const char *content, int special, int lstrip, int rstrip, int single, int norm)
{
    cJSON *a = cJSON_CreateObject();
    cJSON_AddNumberToObject(a, "id", id);
    cJSON_AddStringToObject(a, "content", content);
    cJSON_AddBoolToObject(a, "single_word", single);
    cJSON_AddBoolToObject(a, "lstrip", lstrip);
    cJSON_AddBoolToObject(a, "rstrip", rstrip);
    cJSON_AddBoolToObject(a, "normalized", norm);
    cJSON_AddBoolToObject(a, "special", special);
    return a;
}

static const char QWEN_SPLIT[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                                 "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static cJSON *fixture(void)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *add = cJSON_AddArrayToObject(root, "added_tokens");
    cJSON_AddItemToArray(add, added(ID_IM_START, "<|im_start|>", 1, 0, 0, 0, 0));
    cJSON_AddItemToArray(add, added(ID_THINK, "<think>", 0, 0, 0, 0, 0));
    cJSON_AddItemToArray(add, added(ID_MASK, "<mask>", 1, 1, 0, 0, 0));
    cJSON_AddItemToArray(add, added(ID_RMASK, "<rmask>", 1, 0, 1, 0, 0));
    cJSON_AddItemToArray(add, added(ID_WORD, "[W]", 0, 0, 0, 1, 0));
    cJSON_AddItemToArray(add, added(ID_CAFE, "cafe\xcc\x81", 0, 0, 0, 0, 1)); /* NFD, normalized */
    cJSON_AddItemToArray(add, added(ID_AB, "<ab>", 0, 0, 0, 0, 0));
    cJSON_AddItemToArray(add, added(ID_ABC, "<ab><c>", 0, 0, 0, 0, 0));
    cJSON_AddItemToObject(root, "normalizer", cJSON_CreateRaw("{\"type\": \"NFC\"}"));
    cJSON *pre = cJSON_AddObjectToObject(root, "pre_tokenizer");
    cJSON_AddStringToObject(pre, "type", "Sequence");
    cJSON *seq = cJSON_AddArrayToObject(pre, "pretokenizers");
    cJSON *split = cJSON_CreateObject();
    cJSON_AddStringToObject(split, "type", "Split");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(split, "pattern"), "Regex", QWEN_SPLIT);
    cJSON_AddStringToObject(split, "behavior", "Isolated");
    cJSON_AddFalseToObject(split, "invert");
    cJSON_AddItemToArray(seq, split);
    cJSON_AddItemToArray(seq, cJSON_CreateRaw("{\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
                                              "\"trim_offsets\": false, \"use_regex\": false}"));
    cJSON_AddItemToObject(root, "decoder", cJSON_CreateRaw("{\"type\": \"ByteLevel\"}"));
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    char s[64], a[64], b[64];
    for (int i = 0; i < 256; i++) {
        char one[2] = {(char)i, 0};
        if (i == 0) { /* spell() stops at NUL: byte 0 is U+0100 */
            strcpy(s, "\xc4\x80");
        } else {
            spell(s, one);
        }
        cJSON_AddNumberToObject(vocab, s, i);
    }
    cJSON *merges = cJSON_AddArrayToObject(model, "merges");
    for (int i = 0; i < (int)(sizeof MERGES / sizeof *MERGES); i++) {
        char joined[64];
        snprintf(joined, sizeof joined, "%s%s", MERGES[i][0], MERGES[i][1]);
        spell(s, joined);
        cJSON_AddNumberToObject(vocab, s, 256 + i);
        spell(a, MERGES[i][0]);
        spell(b, MERGES[i][1]);
        if (i % 2) {
            cJSON *pair = cJSON_CreateArray();
            cJSON_AddItemToArray(pair, cJSON_CreateString(a));
            cJSON_AddItemToArray(pair, cJSON_CreateString(b));
            cJSON_AddItemToArray(merges, pair);
        } else {
            char line[130];
            snprintf(line, sizeof line, "%s %s", a, b);
            cJSON_AddItemToArray(merges, cJSON_CreateString(line));
        }
    }
    return root;
}

static void write_json(const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fputs(text, f);
    fclose(f);
}

static void write_fixture(cJSON *root)
{
    char *text = cJSON_PrintUnformatted(root);
    write_json("tokenizer.json", text);
    free(text);
}

/* Encodes text and compares with the expected ids (terminated by -1). */
static int encodes_to(const eng_tokenizer *t, const char *text, int parse_special, ...)
{
    int32_t want[64];
    int n_want = 0;
    va_list ap;
    va_start(ap, parse_special);
    for (int id; (id = va_arg(ap, int)) >= 0;)
        want[n_want++] = id;
    va_end(ap);
    int32_t *ids;
    int n;
    eng_error err;
    if (eng_tokenize(t, text, strlen(text), parse_special, &ids, &n, &err)) {
        fprintf(stderr, "encode(\"%s\") failed: %s\n", text, err.msg);
        return 0;
    }
    int ok = n == n_want && !memcmp(ids, want, (size_t)n * sizeof *ids);
    if (!ok) {
        fprintf(stderr, "encode(\"%s\") = [", text);
        for (int i = 0; i < n; i++)
            fprintf(stderr, i ? ", %d" : "%d", ids[i]);
        fprintf(stderr, "]\n");
    }
    free(ids);
    return ok;
}

static int decodes_to(const eng_tokenizer *t, const int32_t *ids, int n, int skip, const char *want)
{
    eng_buf out = {0};
    int ok = eng_detokenize(t, ids, n, skip, &out) == 0 && out.len == strlen(want) &&
             (out.len == 0 || !memcmp(out.data, want, out.len));
    if (!ok)
        fprintf(stderr, "decode gave \"%s\", want \"%s\"\n", out.data ? out.data : "", want);
    eng_buf_free(&out);
    return ok;
}

static int valid_utf8(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char b = s[i];
        int w = b < 0x80 ? 1 : b >= 0xC2 && b <= 0xDF ? 2 : b >= 0xE0 && b <= 0xEF ? 3 : b >= 0xF0 && b <= 0xF4 ? 4 : 0;
        if (!w || i + (size_t)w > n)
            return 0;
        for (int k = 1; k < w; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
        i += (size_t)w;
    }
    return 1;
}

static void test_bpe(const eng_tokenizer *t)
{
    CHECK(encodes_to(t, "hello", 1, ID_HELLO, -1));
    /* " hello": "he" (rank 0) beats " h" (rank 4) although " h" is further left. */
    CHECK(encodes_to(t, " hello", 1, ' ', ID_HELLO, -1));
    /* Equal ranks merge leftmost first. */
    CHECK(encodes_to(t, "aaaaa", 1, ID_AA, ID_AA, 'a', -1));
    /* The regex splits words, digits one by one, punctuation, whitespace runs. */
    CHECK(encodes_to(t, "hello world", 1, ID_HELLO, ID_SP_W, 'o', 'r', 'l', 'd', -1));
    CHECK(encodes_to(t, "12", 1, '1', '2', -1));
    CHECK(encodes_to(t, "a  b", 1, 'a', ' ', ' ', 'b', -1));
    CHECK(encodes_to(t, "", 1, -1));
    /* Bytes of a multi-byte character are separate tokens here. */
    CHECK(encodes_to(t, "\xc3\xa9", 1, 0xC3, 0xA9, -1));
    /* NFC: e + combining acute becomes U+00E9 before BPE. */
    CHECK(encodes_to(t, "e\xcc\x81", 1, 0xC3, 0xA9, -1));
    /* NUL bytes are text like any other. */
    int32_t *ids;
    int n;
    eng_error err;
    CHECK(eng_tokenize(t, "a\0b", 3, 1, &ids, &n, &err) == 0 && n == 3 && ids[1] == 0);
    free(ids);
}

static void test_added(const eng_tokenizer *t)
{
    CHECK(encodes_to(t, "x<|im_start|>y", 1, 'x', ID_IM_START, 'y', -1));
    /* Without parse_special a special token is plain text... */
    CHECK(encodes_to(t, "<|im_start|>", 0, '<', '|', 'i', 'm', '_', 's', 't', 'a', 'r', 't', '|', '>', -1));
    /* ...but an added token that is not special is still matched (as HF does). */
    CHECK(encodes_to(t, "<think>", 0, ID_THINK, -1));
    CHECK(encodes_to(t, "a<think>b", 1, 'a', ID_THINK, 'b', -1));
    /* Near misses stay text. */
    CHECK(encodes_to(t, "<think", 1, '<', 't', 'h', 'i', 'n', 'k', -1));
    CHECK(encodes_to(t, "<|im_start|", 1, '<', '|', 'i', 'm', '_', 's', 't', 'a', 'r', 't', '|', -1));
    /* Longest match at the leftmost position. */
    CHECK(encodes_to(t, "<ab><c>", 1, ID_ABC, -1));
    CHECK(encodes_to(t, "<ab><d>", 1, ID_AB, '<', 'd', '>', -1));
    /* lstrip takes the spaces before, rstrip those after. */
    CHECK(encodes_to(t, "a  <mask>b", 1, 'a', ID_MASK, 'b', -1));
    CHECK(encodes_to(t, "a<rmask>  b", 1, 'a', ID_RMASK, 'b', -1));
    /* single_word: only when not glued to a word character. */
    CHECK(encodes_to(t, "x[W]", 1, 'x', '[', 'W', ']', -1));
    CHECK(encodes_to(t, "[W] x", 1, ID_WORD, ' ', 'x', -1));
    CHECK(encodes_to(t, "_[W]", 1, '_', '[', 'W', ']', -1));
    /* A normalized added token is matched after NFC, whatever form the input had. */
    CHECK(encodes_to(t, "cafe\xcc\x81", 1, ID_CAFE, -1));
    CHECK(encodes_to(t, "caf\xc3\xa9!", 1, ID_CAFE, '!', -1));
    CHECK(encodes_to(t, "<|im_start|>hello<think>", 1, ID_IM_START, ID_HELLO, ID_THINK, -1));
}

static void test_errors(const eng_tokenizer *t)
{
    const char *bad[] = {"\xff", "a\xc0\xaf", "\xed\xa0\x80", "\xe4\xbd", "\xf4\x90\x80\x80", "ok\x80", "\xf0\x9f\x98"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int32_t *ids = (int32_t *)&ids;
        int n = -1;
        eng_error err = {{0}};
        CHECK(eng_tokenize(t, bad[i], strlen(bad[i]), 1, &ids, &n, &err) == -1);
        CHECK(ids == NULL && n == 0);
        CHECK(strstr(err.msg, "UTF-8") != NULL);
    }
    eng_error err = {{0}};
    int32_t *ids;
    int n;
    CHECK(eng_tokenize(t, "ok\x80", 3, 1, &ids, &n, NULL) == -1); /* NULL error slot is allowed */
    (void)err;
}

static void test_lookup(const eng_tokenizer *t)
{
    CHECK(eng_tokenizer_vocab_size(t) == ID_ABC + 1);
    CHECK(eng_token_id(t, "hello") == ID_HELLO);
    CHECK(eng_token_id(t, "\xc4\xa0w") == ID_SP_W); /* "Ġw" */
    CHECK(eng_token_id(t, "<think>") == ID_THINK);
    CHECK(eng_token_id(t, "<|im_start|>") == ID_IM_START);
    CHECK(eng_token_id(t, "nope") == -1);
    size_t len = 0;
    const char *b = eng_token_bytes(t, ID_SP_W, &len);
    CHECK(b && len == 2 && !memcmp(b, " w", 2));
    b = eng_token_bytes(t, 0, &len);
    CHECK(b && len == 1 && b[0] == 0);
    b = eng_token_bytes(t, ID_IM_START, &len);
    CHECK(b && len == 12 && !memcmp(b, "<|im_start|>", 12));
    CHECK(eng_token_bytes(t, 280, &len) == NULL); /* a hole between vocab and added tokens */
    CHECK(eng_token_bytes(t, -1, &len) == NULL);
    CHECK(eng_token_bytes(t, ID_ABC + 1, &len) == NULL);
    CHECK(eng_token_is_special(t, ID_IM_START));
    CHECK(!eng_token_is_special(t, ID_THINK));
    CHECK(!eng_token_is_special(t, 'a'));
    CHECK(!eng_token_is_special(t, 99999));
}

static void test_decode(const eng_tokenizer *t)
{
    int32_t ids[] = {ID_IM_START, ID_HELLO, ID_SP_W, ID_THINK};
    CHECK(decodes_to(t, ids, 4, 0, "<|im_start|>hello w<think>"));
    CHECK(decodes_to(t, ids, 4, 1, "hello w<think>")); /* only special tokens are skipped */
    /* Invalid bytes: one U+FFFD per maximal invalid subpart, like from_utf8_lossy. */
    int32_t trunc[] = {0xE4, 0xBD, 'a'};
    CHECK(decodes_to(t, trunc, 3, 0,
                     "\xef\xbf\xbd"
                     "a"));
    int32_t end[] = {'a', 0xF0, 0x9F, 0x98};
    CHECK(decodes_to(t, end, 4, 0, "a\xef\xbf\xbd"));
    int32_t overlong[] = {0xC0, 0xAF};
    CHECK(decodes_to(t, overlong, 2, 0, "\xef\xbf\xbd\xef\xbf\xbd"));
    int32_t surrogate[] = {0xED, 0xA0, 0x80};
    CHECK(decodes_to(t, surrogate, 3, 0, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"));
    int32_t big[] = {0xF4, 0x90, 0x80, 0x80};
    CHECK(decodes_to(t, big, 4, 0, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"));
    int32_t cut[] = {0xE2, 0x82, 'x', 0xE2, 0x82, 0xAC};
    CHECK(decodes_to(t, cut, 6, 0, "\xef\xbf\xbdx\xe2\x82\xac"));
    CHECK(decodes_to(t, NULL, 0, 0, ""));
    /* Ids the tokenizer lacks (a hole, past the end, negative) decode to nothing, as in
     * HF; they do not break a character split around them either. */
    int32_t unknown[] = {'a', 280, 0xC3, ID_ABC + 1, 0xA9, -5};
    CHECK(decodes_to(t, unknown, 6, 0, "a\xc3\xa9"));
    eng_buf out = {0};
    eng_detok d = {0};
    for (int i = 0; i < 6; i++)
        CHECK(eng_detok_push(t, &d, unknown[i], 0, &out) == 0);
    CHECK(eng_detok_flush(&d, &out) == 0);
    CHECK(out.len == 3 && !memcmp(out.data, "a\xc3\xa9", 3));
    eng_buf_free(&out);
}

/* Streams ids one by one: every piece must be whole UTF-8 and the pieces must add up to
 * the whole decode. */
static void stream_matches(const eng_tokenizer *t, const int32_t *ids, int n, int skip)
{
    eng_buf whole = {0}, all = {0}, piece = {0};
    eng_detok d = {0};
    CHECK(eng_detokenize(t, ids, n, skip, &whole) == 0);
    for (int i = 0; i <= n; i++) {
        eng_buf_clear(&piece);
        CHECK((i < n ? eng_detok_push(t, &d, ids[i], skip, &piece) : eng_detok_flush(&d, &piece)) == 0);
        CHECK(valid_utf8((const unsigned char *)piece.data, piece.len));
        eng_buf_append(&all, piece.data ? piece.data : "", piece.len);
    }
    CHECK(d.n_pending == 0);
    CHECK(all.len == whole.len && !memcmp(all.data ? all.data : "", whole.data ? whole.data : "", all.len));
    eng_buf_free(&whole);
    eng_buf_free(&all);
    eng_buf_free(&piece);
}

static void test_stream(const eng_tokenizer *t)
{
    /* Every character split across byte tokens. */
    const char *text = "h\xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x98\x80\xc3\xa9<|im_start|>z";
    int32_t *ids;
    int n;
    eng_error err;
    CHECK(eng_tokenize(t, text, strlen(text), 1, &ids, &n, &err) == 0);
    stream_matches(t, ids, n, 0);
    stream_matches(t, ids, n, 1);
    /* A special token in the middle of a split character, skipped: still whole. */
    int32_t mid[] = {0xE4, ID_IM_START, 0xBD, 0xA0};
    stream_matches(t, mid, 4, 1);
    stream_matches(t, mid, 4, 0);
    eng_buf out = {0};
    eng_detok d = {0};
    for (int i = 0; i < 4; i++)
        eng_detok_push(t, &d, mid[i], 1, &out);
    eng_detok_flush(&d, &out);
    CHECK(out.len == 3 && !memcmp(out.data, "\xe4\xbd\xa0", 3));
    eng_buf_free(&out);
    free(ids);

    /* Random byte soup, biased towards UTF-8 lead and continuation bytes, plus tokens of
     * several bytes: the stream must always agree with the whole decode. */
    unsigned seed = 12345;
    for (int round = 0; round < 3000; round++) {
        int32_t soup[24];
        int m = 1 + (int)(seed % 24);
        for (int i = 0; i < m; i++) {
            seed = seed * 1103515245u + 12345u;
            unsigned r = (seed >> 8) % 10;
            if (r < 3)
                soup[i] = 0x80 + (int32_t)((seed >> 16) % 64);
            else if (r < 6)
                soup[i] = 0xC0 + (int32_t)((seed >> 16) % 64);
            else if (r < 7)
                soup[i] = ID_HELLO + (int32_t)((seed >> 16) % 4);
            else if (r < 8)
                soup[i] = ID_IM_START;
            else
                soup[i] = (int32_t)((seed >> 16) % 256);
        }
        stream_matches(t, soup, m, round & 1);
    }
}

static void expect_load_error(const char *json, const char *needle)
{
    write_json("tokenizer.json", json);
    eng_tokenizer *t = (eng_tokenizer *)&t;
    eng_error err = {{0}};
    CHECK(eng_tokenizer_load(dir, &t, &err) == -1);
    CHECK(t == NULL);
    if (!strstr(err.msg, needle)) {
        fprintf(stderr, "load error \"%s\" lacks \"%s\"\n", err.msg, needle);
        check_failed++;
    }
}

static void test_load_errors(void)
{
    eng_tokenizer *t;
    eng_error err = {{0}};
    CHECK(eng_tokenizer_load("/nonexistent/dir", &t, &err) == -1);
    CHECK(strstr(err.msg, "/nonexistent/dir/tokenizer.json") != NULL);

    expect_load_error("{\"model\": {", "not valid JSON");
    expect_load_error("{}", "no \"model\"");
    expect_load_error("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}", "WordPiece");
    cJSON *root = fixture();
    cJSON_AddItemToArray(cJSON_GetObjectItem(cJSON_GetObjectItem(root, "model"), "merges"), cJSON_CreateString("zz q"));
    char *s = cJSON_PrintUnformatted(root);
    expect_load_error(s, "merge 7");
    free(s);
    cJSON_Delete(root);

    root = fixture();
    cJSON_ReplaceItemInObject(root, "normalizer", cJSON_CreateRaw("{\"type\": \"Lowercase\"}"));
    s = cJSON_PrintUnformatted(root);
    expect_load_error(s, "Lowercase");
    free(s);
    cJSON_Delete(root);

    root = fixture();
    cJSON *split = cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(root, "pre_tokenizer"), "pretokenizers"),
                                      0);
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(split, "pattern"), "Regex", cJSON_CreateString("(unclosed"));
    s = cJSON_PrintUnformatted(root);
    expect_load_error(s, "does not compile");
    free(s);
    cJSON_Delete(root);

    root = fixture(); /* a byte missing from the vocabulary */
    cJSON_DeleteItemFromObject(cJSON_GetObjectItem(cJSON_GetObjectItem(root, "model"), "vocab"), "!");
    cJSON_DeleteItemFromObject(root, "added_tokens");
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(root, "model"), "merges", cJSON_CreateArray());
    s = cJSON_PrintUnformatted(root);
    expect_load_error(s, "0x21");
    free(s);
    cJSON_Delete(root);
}

/* tokenizer_config.json may add tokens that tokenizer.json does not list. */
static void test_config_tokens(void)
{
    cJSON *root = fixture();
    write_fixture(root);
    cJSON_Delete(root);
    write_json("tokenizer_config.json",
               "{\"added_tokens_decoder\": {\"300\": {\"content\": \"<|im_start|>\", \"special\": true},"
               " \"320\": {\"content\": \"<extra>\", \"special\": true}}}");
    eng_tokenizer *t;
    eng_error err;
    CHECK(eng_tokenizer_load(dir, &t, &err) == 0);
    if (!t)
        return;
    CHECK(eng_token_id(t, "<extra>") == 320);
    CHECK(eng_token_is_special(t, 320));
    CHECK(encodes_to(t, "a<extra>", 1, 'a', 320, -1));
    eng_tokenizer_free(t);
    write_json("tokenizer_config.json", "{not json");
    CHECK(eng_tokenizer_load(dir, &t, &err) == -1 && strstr(err.msg, "tokenizer_config.json"));
    char path[512];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    unlink(path);
}

/* One tokenizer shared by threads that encode at once (the coordinator does this). */
static const char *THREAD_TEXTS[] = {"hello world", "<|im_start|>aaaaa<think>", "cafe\xcc\x81 12", " hello\n\n\t x",
                                     "\xe4\xbd\xa0\xe5\xa5\xbd<mask>"};
enum { N_THREAD_TEXTS = sizeof THREAD_TEXTS / sizeof *THREAD_TEXTS };

struct thread_job {
    const eng_tokenizer *t;
    int32_t want[N_THREAD_TEXTS][32];
    int n_want[N_THREAD_TEXTS];
    int bad;
};

static void *encode_many(void *arg)
{
    struct thread_job *j = arg;
    for (int round = 0; round < 300; round++)
        for (int i = 0; i < N_THREAD_TEXTS; i++) {
            int32_t *ids;
            int n;
            eng_error err;
            if (eng_tokenize(j->t, THREAD_TEXTS[i], strlen(THREAD_TEXTS[i]), 1, &ids, &n, &err)) {
                __atomic_add_fetch(&j->bad, 1, __ATOMIC_RELAXED);
                continue;
            }
            if (n != j->n_want[i] || memcmp(ids, j->want[i], (size_t)n * sizeof *ids))
                __atomic_add_fetch(&j->bad, 1, __ATOMIC_RELAXED);
            free(ids);
        }
    return NULL;
}

static void test_threads(const eng_tokenizer *t)
{
    static struct thread_job job;
    job.t = t;
    for (int i = 0; i < N_THREAD_TEXTS; i++) {
        int32_t *ids;
        eng_error err;
        CHECK(eng_tokenize(t, THREAD_TEXTS[i], strlen(THREAD_TEXTS[i]), 1, &ids, &job.n_want[i], &err) == 0);
        CHECK(job.n_want[i] <= 32);
        memcpy(job.want[i], ids, (size_t)job.n_want[i] * sizeof *ids);
        free(ids);
    }
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        CHECK(pthread_create(&th[i], NULL, encode_many, &job) == 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    CHECK(job.bad == 0);
}

/* Loads the fixture after edit() changed it; NULL (and a failed check) if it does not load. */
static eng_tokenizer *load_variant(void (*edit)(cJSON *root))
{
    cJSON *root = fixture();
    edit(root);
    write_fixture(root);
    cJSON_Delete(root);
    eng_tokenizer *t;
    eng_error err;
    if (eng_tokenizer_load(dir, &t, &err)) {
        fprintf(stderr, "variant load: %s\n", err.msg);
        check_failed++;
        return NULL;
    }
    return t;
}

static void set_pre_tokenizer(cJSON *root, const char *json)
{
    cJSON_ReplaceItemInObject(root, "pre_tokenizer", cJSON_CreateRaw(json));
}

static void edit_ignore_merges(cJSON *root)
{
    cJSON *model = cJSON_GetObjectItem(root, "model");
    cJSON_AddNumberToObject(cJSON_GetObjectItem(model, "vocab"), "ab", 270); /* no merge makes it */
    cJSON_AddTrueToObject(model, "ignore_merges");
}

static void edit_gpt2(cJSON *root)
{
    set_pre_tokenizer(root, "{\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"use_regex\": true}");
}

static void edit_split_removed(cJSON *root)
{
    set_pre_tokenizer(root, "{\"type\": \"Sequence\", \"pretokenizers\": ["
                            "{\"type\": \"Split\", \"pattern\": {\"String\": \" \"}, \"behavior\": \"Removed\"},"
                            "{\"type\": \"ByteLevel\", \"use_regex\": false}]}");
}

static void edit_split_then_prefix(cJSON *root)
{
    set_pre_tokenizer(root, "{\"type\": \"Sequence\", \"pretokenizers\": ["
                            "{\"type\": \"Split\", \"pattern\": {\"String\": \" \"}, \"behavior\": \"Removed\"},"
                            "{\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"use_regex\": false}]}");
}

static void edit_split_inverted(cJSON *root)
{
    set_pre_tokenizer(root, "{\"type\": \"Sequence\", \"pretokenizers\": ["
                            "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\p{L}+\"}, "
                            "\"behavior\": \"Removed\", \"invert\": true},"
                            "{\"type\": \"ByteLevel\", \"use_regex\": false}]}");
}

static void edit_merged_with_previous(cJSON *root)
{
    set_pre_tokenizer(root, "{\"type\": \"Sequence\", \"pretokenizers\": ["
                            "{\"type\": \"Split\", \"pattern\": {\"String\": \" \"}, "
                            "\"behavior\": \"MergedWithPrevious\"}, {\"type\": \"ByteLevel\"}]}");
}

/* The generic parts of tokenizer.json that Qwen3 does not use. */
static void test_variants(void)
{
    eng_tokenizer *t = load_variant(edit_ignore_merges);
    if (t) { /* a whole word found in the vocabulary wins over the merges */
        CHECK(encodes_to(t, "ab", 1, 270, -1));
        CHECK(encodes_to(t, "ab ab", 1, 270, ' ', 'a', 'b', -1));
        CHECK(encodes_to(t, "hello", 1, ID_HELLO, -1));
        eng_tokenizer_free(t);
    }
    t = load_variant(edit_gpt2);
    if (t) { /* ByteLevel's own regex, and a space put before the text */
        CHECK(encodes_to(t, "hello world", 1, ' ', ID_HELLO, ID_SP_W, 'o', 'r', 'l', 'd', -1));
        CHECK(encodes_to(t, " hello", 1, ' ', ID_HELLO, -1));
        CHECK(encodes_to(t, "a<think>hello", 1, ' ', 'a', ID_THINK, ' ', ID_HELLO, -1));
        eng_tokenizer_free(t);
    }
    t = load_variant(edit_split_removed);
    if (t) { /* the literal " " separates and disappears */
        CHECK(encodes_to(t, "hello  world", 1, ID_HELLO, 'w', 'o', 'r', 'l', 'd', -1));
        eng_tokenizer_free(t);
    }
    t = load_variant(edit_split_then_prefix);
    if (t) { /* ByteLevel puts its space before every piece that reaches it */
        CHECK(encodes_to(t, "hello world", 1, ' ', ID_HELLO, ID_SP_W, 'o', 'r', 'l', 'd', -1));
        eng_tokenizer_free(t);
    }
    t = load_variant(edit_split_inverted);
    if (t) { /* inverted: the matches are kept, what lies between them goes */
        CHECK(encodes_to(t, "hello, 12 you!", 1, ID_HELLO, 'y', 'o', 'u', -1));
        eng_tokenizer_free(t);
    }
    cJSON *root = fixture();
    edit_merged_with_previous(root);
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    expect_load_error(s, "MergedWithPrevious");
    free(s);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/tandem-tok-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    cJSON *root = fixture();
    write_fixture(root);
    cJSON_Delete(root);
    eng_tokenizer *t;
    eng_error err;
    if (eng_tokenizer_load(dir, &t, &err)) {
        fprintf(stderr, "load: %s\n", err.msg);
        return 1;
    }
    test_bpe(t);
    test_added(t);
    test_errors(t);
    test_lookup(t);
    test_decode(t);
    test_stream(t);
    test_threads(t);
    eng_tokenizer_free(t);
    test_config_tokens();
    test_variants();
    test_load_errors();

    char path[512];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    unlink(path);
    rmdir(dir);
    return check_summary();
}
