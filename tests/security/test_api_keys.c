/* test_api_keys.c: the HTTP API's key file (coordinator/api_keys.h): comments and
 * blank lines skipped, whitespace trimmed, Bearer parsing, right / wrong / missing
 * keys, reload swapping the set, and a bad reload keeping the old keys. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api_keys.h"
#include "check.h"

static char path[] = "/tmp/tandem-keys-XXXXXX";

static void write_file(const char *text)
{
    FILE *f = fopen(path, "w");
    REQUIRE(f != NULL);
    fputs(text, f);
    fclose(f);
}

int main(void)
{
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    close(fd);
    coord_keys *k = NULL;
    eng_error err;
    const char *why = NULL;

    write_file("# keys\n\n");
    CHECK(coord_keys_load(path, &k, &err) == -1 && strstr(err.msg, "no key"), "%s", err.msg);
    write_file("good key\n");
    CHECK(coord_keys_load(path, &k, &err) == -1 && strstr(err.msg, "line 1"), "%s", err.msg);
    CHECK(coord_keys_load("/nonexistent/keys", &k, &err) == -1 && strstr(err.msg, "cannot read"), "%s", err.msg);

    write_file("# team A\n  sk-alpha  \r\n\nsk-beta\n");
    REQUIRE(coord_keys_load(path, &k, &err) == 0, "%s", err.msg);
    CHECK(coord_keys_allow(k, "Bearer sk-alpha", &why) == 1);
    CHECK(coord_keys_allow(k, "bearer  sk-beta ", &why) == 1);
    CHECK(coord_keys_allow(k, "Bearer sk-alph", &why) == 0 && strstr(why, "Incorrect"));
    CHECK(coord_keys_allow(k, "Bearer sk-alphaX", &why) == 0 && strstr(why, "Incorrect"));
    CHECK(coord_keys_allow(k, "Bearer ", &why) == 0 && strstr(why, "Incorrect"));
    CHECK(coord_keys_allow(k, "Basic c2stYWxwaGE=", &why) == 0 && strstr(why, "Bearer"));
    CHECK(coord_keys_allow(k, NULL, &why) == 0 && strstr(why, "didn't provide"));
    CHECK(coord_keys_allow(k, "Bearer # team A", &why) == 0);

    /* reload: the new set replaces the old at once */
    write_file("sk-gamma\n");
    CHECK(coord_keys_reload(k, &err) == 1, "%s", err.msg);
    CHECK(coord_keys_allow(k, "Bearer sk-gamma", &why) == 1);
    CHECK(coord_keys_allow(k, "Bearer sk-alpha", &why) == 0);
    /* a bad file keeps the old keys */
    write_file("\n");
    CHECK(coord_keys_reload(k, &err) == -1);
    CHECK(coord_keys_allow(k, "Bearer sk-gamma", &why) == 1);
    unlink(path);
    CHECK(coord_keys_reload(k, &err) == -1);
    CHECK(coord_keys_allow(k, "Bearer sk-gamma", &why) == 1);
    coord_keys_free(k);
    return check_summary();
}
