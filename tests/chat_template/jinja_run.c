/* jinja_run.c: renders TEMPLATE_FILE with the JSON object in VARS_FILE and prints the
 * text; on error prints the one-line message to stderr and exits 1. It is the C side
 * of features.py, which compares it with Jinja2 on many small templates. */
#include <stdio.h>
#include <stdlib.h>

#include "chat/jinja.h"

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    eng_buf b = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        eng_buf_append(&b, chunk, n);
    fclose(f);
    eng_buf_append(&b, "", 0);
    *len = b.len;
    return eng_buf_take(&b);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: jinja_run TEMPLATE_FILE VARS_JSON_FILE\n");
        return 2;
    }
    size_t tlen, vlen;
    char *src = slurp(argv[1], &tlen), *vars_text = slurp(argv[2], &vlen);
    if (!src || !vars_text) {
        fprintf(stderr, "cannot read the inputs\n");
        return 2;
    }
    cJSON *vars = cJSON_Parse(vars_text);
    eng_error err = {{0}};
    eng_jinja *t = NULL;
    eng_buf out = {0};
    int rc = 1;
    if (!vars)
        snprintf(err.msg, sizeof err.msg, "variables are not valid JSON");
    else if (eng_jinja_parse(src, tlen, &t, &err) == 0 && eng_jinja_render(t, vars, &out, &err) == 0)
        rc = 0;
    if (rc == 0)
        fwrite(out.data ? out.data : "", 1, out.len, stdout);
    else
        fprintf(stderr, "%s\n", err.msg);
    eng_buf_free(&out);
    eng_jinja_free(t);
    cJSON_Delete(vars);
    free(src);
    free(vars_text);
    return rc;
}
