/* test_log.c: the process-wide logger (engine/common/log.h): levels filter and change
 * at run time, text and JSON lines carry the level, component and request id, JSON
 * escapes what it must, and an over-long message is cut and says so. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "common/log.h"

static char lines[8][8192];
static int n_lines;

static void sink(void *ctx, const char *line)
{
    (void)ctx;
    if (n_lines < 8)
        snprintf(lines[n_lines], sizeof lines[0], "%s", line);
    n_lines++;
}

int main(void)
{
    eng_log_set_sink(sink, NULL);
    eng_log_level level;
    eng_log_format format;
    CHECK(eng_log_level_parse("warn", &level) == 0 && level == ENG_LOG_WARN);
    CHECK(eng_log_level_parse("WARN", &level) < 0 && eng_log_level_parse("verbose", &level) < 0);
    CHECK(eng_log_format_parse("json", &format) == 0 && format == ENG_LOG_JSON);
    CHECK(eng_log_format_parse("xml", &format) < 0);

    /* info by default: debug is dropped; the level changes at run time */
    CHECK(eng_log_get_level() == ENG_LOG_INFO);
    eng_log(ENG_LOG_DEBUG, "router", NULL, "dropped");
    eng_log(ENG_LOG_INFO, "registry", NULL, "worker %s registered", "w1");
    CHECK(n_lines == 1);
    CHECK(strstr(lines[0], "Z INFO  registry: worker w1 registered") && lines[0][4] == '-' && lines[0][10] == 'T', "%s",
          lines[0]);
    eng_log_set_level(ENG_LOG_DEBUG);
    eng_log(ENG_LOG_DEBUG, "router", "cmpl-7", "step %d", 3);
    CHECK(n_lines == 2 && strstr(lines[1], " DEBUG router: req cmpl-7: step 3"), "%s", lines[1]);
    eng_log_set_level(ENG_LOG_ERROR);
    CHECK(!eng_log_enabled(ENG_LOG_WARN) && eng_log_enabled(ENG_LOG_ERROR));
    eng_log(ENG_LOG_WARN, NULL, NULL, "dropped");
    eng_log(ENG_LOG_ERROR, NULL, NULL, "bare");
    CHECK(n_lines == 3 && strstr(lines[2], " ERROR bare") && !strstr(lines[2], ": bare"), "%s", lines[2]);

    /* JSON: one object per line, strings escaped */
    eng_log_set_level(ENG_LOG_INFO);
    eng_log_set_format(ENG_LOG_JSON);
    eng_log(ENG_LOG_WARN, "both w\"1", "chatcmpl-1", "a \"quoted\"\nline\t%s", "end");
    REQUIRE(n_lines == 4);
    cJSON *o = cJSON_Parse(lines[3]);
    CHECK(o && !strchr(lines[3], '\n'), "%s", lines[3]);
    const char *want[][2] = {{"level", "warn"},
                             {"component", "both w\"1"},
                             {"request_id", "chatcmpl-1"},
                             {"msg", "a \"quoted\"\nline\tend"}};
    for (int i = 0; i < 4; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, want[i][0]);
        CHECK(cJSON_IsString(v) && !strcmp(v->valuestring, want[i][1]), "%s in %s", want[i][0], lines[3]);
    }
    const cJSON *ts = cJSON_GetObjectItemCaseSensitive(o, "ts");
    CHECK(cJSON_IsString(ts) && strlen(ts->valuestring) == 24 && ts->valuestring[23] == 'Z');
    cJSON_Delete(o);
    eng_log(ENG_LOG_INFO, NULL, NULL, "no component");
    o = cJSON_Parse(lines[4]);
    CHECK(o && !cJSON_GetObjectItem(o, "component") && !cJSON_GetObjectItem(o, "request_id"), "%s", lines[4]);
    cJSON_Delete(o);

    /* a message past the 4 KiB buffer is cut and marked */
    eng_log_set_format(ENG_LOG_TEXT);
    static char big[6000];
    memset(big, 'x', sizeof big - 1);
    eng_log(ENG_LOG_INFO, "c", NULL, "%s", big);
    CHECK(n_lines == 6 && strstr(lines[5], "xx ...(truncated)") && strlen(lines[5]) < 4200, "%zu", strlen(lines[5]));
    return check_summary();
}
