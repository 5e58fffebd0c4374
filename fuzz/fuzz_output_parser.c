/* fuzz_output_parser.c: the reasoning / tool-call parser on arbitrary model output,
 * whole and fed in two pieces (the first bytes pick the flags and the split), and
 * both ways must agree. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "chat/parser.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    unsigned flags = data[0] & 7;
    size_t split = data[1] % (size - 1);
    const char *text = (const char *)data + 2;
    size_t len = size - 2;
    if (split > len)
        split = len;
    eng_error err;
    eng_parse_delta whole, parts;
    eng_parse_delta_init(&whole);
    eng_parse_delta_init(&parts);
    int a = eng_parse_text(text, len, flags, "f", &whole, &err);
    eng_parser *p = eng_parser_new(flags, "f", &err);
    int b = !p || eng_parser_feed(p, text, split, &parts, &err) ||
            eng_parser_feed(p, text + split, len - split, &parts, &err) || eng_parser_finish(p, &parts, &err);
    if (a == 0 && b == 0) {
        if (whole.content.len != parts.content.len || whole.reasoning.len != parts.reasoning.len ||
            whole.n_calls != parts.n_calls)
            abort(); /* the split changed the result */
        cJSON_Delete(eng_parse_delta_to_json(&whole));
    }
    eng_parser_free(p);
    eng_parse_delta_free(&whole);
    eng_parse_delta_free(&parts);
    return 0;
}
