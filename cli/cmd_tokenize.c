/* cmd_tokenize.c: `tandem tokenize`, the model's tokenizer from the command line.
 *
 * Prints {"ids": [...]} for a text; with --jsonl every input line is a JSON string and
 * every output line is {"ids": [...]} for it, so that a whole corpus goes through one
 * process (the conformance test compares it with the reference tokenizer that way).
 * Special tokens written in the text are recognised, as in a raw prompt, unless
 * --no-special asks for them to be encoded as plain text. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "tokenizer/tokenizer.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tandem tokenize --model DIR (--text T | --file F) [--jsonl] [--no-special]\n"
            "  --model DIR    folder with tokenizer.json\n"
            "  --text T       the text to encode\n"
            "  --file F       read the text from F ('-' for standard input)\n"
            "  --jsonl        the input is lines of JSON strings; one {\"ids\": [...]} line each\n"
            "  --no-special   encode special tokens written in the text as plain text\n");
}

static char *read_all(const char *path, size_t *len)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) {
        fprintf(stderr, "tandem tokenize: %s: %s\n", path, strerror(errno));
        return NULL;
    }
    size_t n = 0, cap = 1 << 16;
    char *data = malloc(cap + 1);
    while (data) {
        size_t got = fread(data + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
        if (n == cap) {
            cap *= 2;
            char *p = realloc(data, cap + 1);
            if (!p)
                free(data);
            data = p;
        }
    }
    int bad = ferror(f);
    if (f != stdin)
        fclose(f);
    if (!data || bad) {
        fprintf(stderr, "tandem tokenize: %s: %s\n", path, data ? "read error" : "out of memory");
        free(data);
        return NULL;
    }
    data[n] = 0;
    *len = n;
    return data;
}

static int print_ids(const int32_t *ids, int n)
{
    fputs("{\"ids\": [", stdout);
    for (int i = 0; i < n; i++)
        printf(i ? ", %d" : "%d", ids[i]);
    fputs("]}\n", stdout);
    return ferror(stdout) ? -1 : 0;
}

/* cJSON keeps strings NUL-terminated, so an escaped NUL would silently cut the text. */
static int has_escaped_nul(const char *s, size_t n)
{
    for (size_t i = 0; i + 1 < n; i++) {
        if (s[i] != '\\')
            continue;
        if (s[i + 1] == 'u' && i + 5 < n && !memcmp(s + i + 2, "0000", 4))
            return 1;
        i++;
    }
    return 0;
}

static int encode_print(const eng_tokenizer *t, const char *text, size_t len, int parse_special,
                        const char *where)
{
    int32_t *ids;
    int n;
    eng_error err;
    if (eng_tokenize(t, text, len, parse_special, &ids, &n, &err)) {
        fprintf(stderr, "tandem tokenize: %s%s\n", where, err.msg);
        return -1;
    }
    int rc = print_ids(ids, n);
    free(ids);
    if (rc)
        fprintf(stderr, "tandem tokenize: cannot write the output\n");
    return rc;
}

static int run_jsonl(const eng_tokenizer *t, const char *data, size_t len, int parse_special)
{
    size_t line_no = 0;
    for (size_t at = 0; at < len;) {
        const char *line = data + at;
        const char *nl = memchr(line, '\n', len - at);
        size_t n = nl ? (size_t)(nl - line) : len - at;
        at += n + (nl ? 1 : 0);
        line_no++;
        if (n && line[n - 1] == '\r')
            n--;
        size_t k = 0;
        while (k < n && (line[k] == ' ' || line[k] == '\t'))
            k++;
        if (k == n)
            continue; /* blank lines carry no input */
        char where[64];
        snprintf(where, sizeof where, "line %zu: ", line_no);
        cJSON *v = cJSON_ParseWithLength(line, n);
        if (!cJSON_IsString(v)) {
            cJSON_Delete(v);
            fprintf(stderr, "tandem tokenize: %sexpected one JSON string\n", where);
            return 1;
        }
        if (has_escaped_nul(line, n)) {
            cJSON_Delete(v);
            fprintf(stderr, "tandem tokenize: %sNUL characters (\\u0000) are not supported\n", where);
            return 1;
        }
        int rc = encode_print(t, v->valuestring, strlen(v->valuestring), parse_special, where);
        cJSON_Delete(v);
        if (rc)
            return 1;
    }
    return 0;
}

int cmd_tokenize(int argc, char **argv)
{
    const char *model = NULL, *text = NULL, *file = NULL;
    int jsonl = 0, parse_special = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_value = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--model") && has_value) {
            model = argv[++i];
        } else if (!strcmp(a, "--text") && has_value) {
            text = argv[++i];
        } else if (!strcmp(a, "--file") && has_value) {
            file = argv[++i];
        } else if (!strcmp(a, "--jsonl")) {
            jsonl = 1;
        } else if (!strcmp(a, "--no-special")) {
            parse_special = 0;
        } else {
            fprintf(stderr, "tandem tokenize: %s '%s' (see tandem tokenize --help)\n",
                    a[0] == '-' && !has_value ? "missing value or unknown option" : "unknown argument", a);
            return 2;
        }
    }
    if (!model || (!text == !file)) {
        fprintf(stderr, "tandem tokenize: needs --model and exactly one of --text, --file "
                        "(see tandem tokenize --help)\n");
        return 2;
    }

    size_t len;
    char *owned = NULL;
    if (file) {
        owned = read_all(file, &len);
        if (!owned)
            return 1;
        text = owned;
    } else {
        len = strlen(text);
    }
    eng_tokenizer *t;
    eng_error err;
    if (eng_tokenizer_load(model, &t, &err)) {
        fprintf(stderr, "tandem tokenize: %s\n", err.msg);
        free(owned);
        return 1;
    }
    int rc = jsonl ? run_jsonl(t, text, len, parse_special)
                   : (encode_print(t, text, len, parse_special, "") ? 1 : 0);
    if (fflush(stdout) && rc == 0) {
        fprintf(stderr, "tandem tokenize: cannot write the output\n");
        rc = 1;
    }
    eng_tokenizer_free(t);
    free(owned);
    return rc;
}
