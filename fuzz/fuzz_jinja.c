/* fuzz_jinja.c: the Jinja template engine on arbitrary templates, rendered with a
 * chat-like set of variables (a parse error is an answer, never a crash). */
#include <stdint.h>

#include <cjson/cJSON.h>

#include "chat/jinja.h"

static cJSON *vars;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    vars = cJSON_Parse("{\"messages\":[{\"role\":\"system\",\"content\":\"s\"},{\"role\":\"user\",\"content\":\"hi\"},"
                       "{\"role\":\"assistant\",\"content\":\"<think>r</think>a\",\"tool_calls\":[{\"function\":"
                       "{\"name\":\"f\",\"arguments\":{\"x\":1}}}]}],\"tools\":[{\"type\":\"function\",\"function\":"
                       "{\"name\":\"f\",\"parameters\":{}}}],\"add_generation_prompt\":true,\"n\":3,\"s\":\"text\"}");
    return vars ? 0 : 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    eng_jinja *t;
    eng_error err;
    if (eng_jinja_parse((const char *)data, size, &t, &err) == 0) {
        eng_buf out = {0};
        eng_jinja_render(t, vars, &out, &err);
        eng_buf_free(&out);
        eng_jinja_free(t);
    }
    return 0;
}
