/* test_file.c: engine/common/file.h: a path's last name (the served model name comes
 * from it) with trailing slashes, the root, no slash and a name cut to fit; and a
 * whole file read back with its byte count, an empty file, a missing one. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

#include "check.h"
#include "common/file.h"

static void last_name(const char *path, size_t cap, const char *want)
{
    char out[64];
    eng_path_last_name(path, out, cap);
    CHECK(!strcmp(out, want), "\"%s\" (cap %zu): got \"%s\", want \"%s\"", path, cap, out, want);
}

int main(void)
{
    last_name("/models/Qwen3-8B", 64, "Qwen3-8B");
    last_name("/models/Qwen3-8B///", 64, "Qwen3-8B");
    last_name("Qwen3-8B", 64, "Qwen3-8B");
    last_name("./m/", 64, "m");
    last_name("/", 64, "/");
    last_name("", 64, "");
    last_name("/models/Qwen3-8B", 6, "Qwen3");

    char path[] = "/tmp/tandem_test_file_XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    FILE *f = fdopen(fd, "wb");
    REQUIRE(f);
    fwrite("a\0b", 1, 3, f);
    fclose(f);
    eng_error err;
    size_t len = 0;
    char *data = eng_read_file(path, &len, &err);
    CHECK(data && len == 3 && !memcmp(data, "a\0b", 4), "the bytes, the count and the NUL after them");
    free(data);
    f = fopen(path, "wb");
    REQUIRE(f);
    fclose(f);
    data = eng_read_file(path, &len, &err);
    CHECK(data && len == 0 && data[0] == 0, "an empty file is an empty string");
    free(data);
    remove(path);
    CHECK(!eng_read_file(path, &len, &err) && strstr(err.msg, path), "a missing file names its path: %s", err.msg);
    return check_summary();
}
