/* file.c: see file.h. */
#include "common/file.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/buf.h"

char *eng_read_file(const char *path, size_t *len, eng_error *err)
{
    int is_stdin = !strcmp(path, "-");
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (!f) {
        eng_fail(err, "%s: %s", path, strerror(errno));
        return NULL;
    }
    eng_buf b = {0};
    char chunk[65536];
    size_t n;
    int nomem = 0;
    while (!nomem && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
        nomem = eng_buf_append(&b, chunk, n);
    int bad = ferror(f);
    if (!is_stdin)
        fclose(f);
    if (!nomem && !bad)
        nomem = eng_buf_append(&b, "", 0); /* an empty file still gets its NUL */
    if (nomem || bad) {
        eng_buf_free(&b);
        eng_fail(err, "%s: %s", path, nomem ? "out of memory" : "read error");
        return NULL;
    }
    if (len)
        *len = b.len;
    return eng_buf_take(&b);
}

void eng_path_last_name(const char *path, char *out, size_t cap)
{
    size_t end = strlen(path);
    while (end > 1 && path[end - 1] == '/')
        end--;
    size_t start = end;
    while (start > 0 && path[start - 1] != '/')
        start--;
    if (start == end && end > 0) /* the root */
        start = end - 1;
    snprintf(out, cap, "%.*s", (int)(end - start), path + start);
}
