/* http_test_server.c: the coordinator's HTTP server with the scripted test
 * frontend, as a process, for clients written in other languages (the official
 * OpenAI npm client in openai_client.mjs). Prints "PORT <n>" once listening on
 * 127.0.0.1, serves until its standard input closes, then stops cleanly. Test
 * code only. */
#include <stdio.h>
#include <string.h>

#include "http.h"
#include "scripted_frontend.h"

int main(void)
{
    const char *models[] = {"qwen3-test"};
    coord_api_config api = {.models = models, .n_models = 1};
    api.defaults.repetition_penalty = 1;
    api.defaults.top_p = 1;
    met_registry *reg = met_registry_new();
    met_tandem met;
    eng_error err;
    if (!reg || met_tandem_register(reg, &met, &err)) {
        fprintf(stderr, "http_test_server: metrics setup failed\n");
        return 1;
    }
    coord_http_config cfg = {
        .host = "127.0.0.1",
        .max_body_bytes = 1 << 20,
        .api = &api,
        .frontend = scripted_frontend(),
        .metrics = reg,
        .met = &met,
    };
    coord_http *h;
    if (coord_http_start(&cfg, &h, &err)) {
        fprintf(stderr, "http_test_server: %s\n", err.msg);
        return 1;
    }
    printf("PORT %d\n", coord_http_port(h));
    fflush(stdout);
    char line[256];
    while (fgets(line, sizeof line, stdin))
        ;
    coord_http_stop(h);
    met_registry_free(reg);
    return 0;
}
