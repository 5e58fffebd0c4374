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

#include "cli_args.h"
#include "commands.h"
#include "tokenizer/tokenizer.h"

typedef struct tokenize_args {
    const char *model, *text, *file;
    int jsonl, no_special;
} tokenize_args;

#define T tokenize_args
static const cli_opt OPTS[] = {
    CLI_STR_OPT(T, model, "--model", "DIR", NULL, "folder with tokenizer.json", CLI_REQUIRED),
    CLI_STR_OPT(T, text, "--text", "T", NULL, "the text to encode", 0),
    CLI_STR_OPT(T, file, "--file", "F", NULL, "read the text from F ('-' for standard input)", 0),
    CLI_FLAG_OPT(T, jsonl, "--jsonl", "the input is lines of JSON strings; one {\"ids\": [...]} line each"),
    CLI_FLAG_OPT(T, no_special, "--no-special", "encode special tokens written in the text as plain text"),
};
#undef T

static const cli_command CMD = {
    .name = "tandem tokenize",
    .usage = "--model DIR (--text T | --file F) [--jsonl] [--no-special]",
    .opts = OPTS,
    .n_opts = CLI_COUNT(OPTS),
    .exactly_one = {"--text", "--file"},
};

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

static int encode_print(const eng_tokenizer *t, const char *text, size_t len, int parse_special, const char *where)
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
    tokenize_args a = {0};
    int exit_status = cli_parse(&CMD, argc, argv, &a);
    if (exit_status != CLI_RUN)
        return exit_status;
    const char *model = a.model, *text = a.text, *file = a.file;
    int jsonl = a.jsonl, parse_special = !a.no_special;

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
    int rc = jsonl ? run_jsonl(t, text, len, parse_special) : (encode_print(t, text, len, parse_special, "") ? 1 : 0);
    if (fflush(stdout) && rc == 0) {
        fprintf(stderr, "tandem tokenize: cannot write the output\n");
        rc = 1;
    }
    eng_tokenizer_free(t);
    free(owned);
    return rc;
}
