/* parser_probe.c: the output parser as a filter over JSON lines, for reference_rules.py.
 *
 * Each input line {"flags": "reasoning think_open tools" (any of the words), "input": string}; each output line the
 * whole-text result {"reasoning_content", "content", "tool_calls"}, computed twice (whole, and fed in 3-byte chunks)
 * with {"error": ...} if the two differ. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/parser.h"
#include "flags.h"

static char *chunked(const char *text, size_t len, unsigned flags)
{
    eng_error err;
    eng_parser *p = eng_parser_new(flags, NULL, &err);
    eng_parse_delta d;
    eng_parse_delta_init(&d);
    for (size_t at = 0; at < len; at += 3)
        eng_parser_feed(p, text + at, len - at < 3 ? len - at : 3, &d, &err);
    eng_parser_finish(p, &d, &err);
    cJSON *j = eng_parse_delta_to_json(&d);
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    eng_parse_delta_free(&d);
    eng_parser_free(p);
    return s;
}

int main(void)
{
    static char line[1 << 22];
    while (fgets(line, sizeof line, stdin)) {
        cJSON *in = cJSON_Parse(line);
        const cJSON *jt = cJSON_GetObjectItem(in, "input");
        if (!cJSON_IsString(jt)) {
            fprintf(stderr, "parser_probe: bad input line\n");
            return 1;
        }
        unsigned flags = case_flags(in);
        const char *text = jt->valuestring;
        size_t len = strlen(text);
        eng_parse_delta d;
        eng_parse_delta_init(&d);
        eng_error err;
        char *whole = NULL;
        if (eng_parse_text(text, len, flags, NULL, &d, &err) == 0) {
            cJSON *j = eng_parse_delta_to_json(&d);
            whole = cJSON_PrintUnformatted(j);
            cJSON_Delete(j);
        }
        char *streamed = chunked(text, len, flags);
        if (whole && streamed && !strcmp(whole, streamed))
            puts(whole);
        else
            printf("{\"error\": \"streamed result differs from the whole\"}\n");
        free(whole);
        free(streamed);
        eng_parse_delta_free(&d);
        cJSON_Delete(in);
    }
    return 0;
}
