/* fuzz_openai_request.c: the OpenAI request body parser (coord_parse_request) on
 * arbitrary bytes; the first byte picks chat or completions, and a parsed request
 * is formatted back (role chunk) so that what it holds is used. */
#include <stdint.h>
#include <stdlib.h>

#include "openai.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const char *models[] = {"qwen3"};
    coord_api_config cfg = {.models = models, .n_models = 1};
    cfg.defaults.repetition_penalty = 1;
    coord_api api = data[0] & 1 ? COORD_API_CHAT : COORD_API_COMPLETIONS;
    coord_request req;
    coord_error err;
    if (coord_parse_request(api, (const char *)data + 1, size - 1, &cfg, &req, &err) == 0) {
        free(coord_format_role_chunk(&req));
        coord_request_free(&req);
    } else {
        free(coord_format_error(&err));
    }
    return 0;
}
