/* cmd_parse.c: `tandem parse`, the output parser from the command line.
 *
 * Reads a model's raw completion on standard input and prints the OpenAI message fields
 * {"reasoning_content", "content", "tool_calls"} (null where absent) that the
 * coordinator and `tandem generate --json` derive from it. Every Qwen3 model shares one
 * parser, so the model folder is only checked (a folder with a readable config.json that
 * is a JSON object): scripts name the model that wrote the output, as serving does. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "chat/parser.h"
#include "cli_args.h"
#include "commands.h"

typedef struct parse_args {
    const char *model;
    int no_think;
} parse_args;

static const cli_opt OPTS[] = {
    CLI_STR_OPT(parse_args, model, "--model", "DIR", NULL,
                "the model folder (with config.json) that produced the output", CLI_REQUIRED),
    CLI_FLAG_OPT(parse_args, no_think, "--no-think", "no reasoning split: a <think> block stays in the content"),
};

static const cli_command CMD = {
    .name = "tandem parse",
    .usage = "--model DIR [--no-think] < model_output.txt",
    .about = "prints {\"reasoning_content\", \"content\", \"tool_calls\"} as one JSON line",
    .opts = OPTS,
    .n_opts = CLI_COUNT(OPTS),
};

/* The whole of f; NULL (message in err) on error. */
static char *read_stream(FILE *f, size_t *len, eng_error *err)
{
    eng_buf b = {0};
    char chunk[1 << 15];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (eng_buf_append(&b, chunk, got) < 0) {
            eng_buf_free(&b);
            eng_fail(err, "out of memory reading standard input");
            return NULL;
        }
    if (ferror(f)) {
        eng_buf_free(&b);
        eng_fail(err, "standard input: read error");
        return NULL;
    }
    *len = b.len;
    if (!b.data && eng_buf_append(&b, "", 0) < 0) {
        eng_fail(err, "out of memory reading standard input");
        return NULL;
    }
    return eng_buf_take(&b);
}

static int check_model_dir(const char *dir, eng_error *err)
{
    struct stat st;
    if (stat(dir, &st) != 0)
        return eng_fail(err, "model folder %s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return eng_fail(err, "model folder %s: not a directory", dir);
    char path[4096];
    if (snprintf(path, sizeof path, "%s/config.json", dir) >= (int)sizeof path)
        return eng_fail(err, "model folder path too long");
    FILE *f = fopen(path, "rb");
    if (!f)
        return eng_fail(err, "%s: %s", path, strerror(errno));
    size_t len;
    char *text = read_stream(f, &len, err);
    fclose(f);
    if (!text)
        return -1;
    cJSON *config = cJSON_ParseWithLength(text, len);
    int ok = cJSON_IsObject(config);
    cJSON_Delete(config);
    free(text);
    return ok ? 0 : eng_fail(err, "%s: not a JSON object", path);
}

int cmd_parse(int argc, char **argv)
{
    parse_args a = {0};
    int exit_status = cli_parse(&CMD, argc, argv, &a);
    if (exit_status != CLI_RUN)
        return exit_status;
    const char *model = a.model;
    unsigned flags = ENG_PARSE_REASONING | ENG_PARSE_TOOLS;
    if (a.no_think)
        flags &= ~(unsigned)ENG_PARSE_REASONING;
    eng_error err = {{0}};
    if (check_model_dir(model, &err) < 0) {
        fprintf(stderr, "tandem parse: %s\n", err.msg);
        return 1;
    }
    size_t len;
    char *text = read_stream(stdin, &len, &err);
    if (!text) {
        fprintf(stderr, "tandem parse: %s\n", err.msg);
        return 1;
    }
    if (memchr(text, 0, len)) { /* JSON strings here end at NUL: refuse, do not cut */
        free(text);
        fprintf(stderr, "tandem parse: standard input contains a NUL byte\n");
        return 1;
    }
    eng_parse_delta d;
    eng_parse_delta_init(&d);
    int rc = eng_parse_text(text, len, flags, NULL, &d, &err);
    free(text);
    char *json = NULL;
    if (rc == 0) {
        cJSON *j = eng_parse_delta_to_json(&d);
        json = j ? cJSON_PrintUnformatted(j) : NULL;
        cJSON_Delete(j);
        if (!json)
            rc = eng_fail(&err, "out of memory printing the result");
    }
    eng_parse_delta_free(&d);
    if (rc < 0) {
        fprintf(stderr, "tandem parse: %s\n", err.msg);
        return 1;
    }
    int bad = printf("%s\n", json) < 0 || fflush(stdout) != 0;
    free(json);
    if (bad) {
        fprintf(stderr, "tandem parse: cannot write the result\n");
        return 1;
    }
    return 0;
}
