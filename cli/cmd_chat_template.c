/* cmd_chat_template.c: `tandem chat-template`, the prompt an OpenAI request becomes.
 *
 * Renders a request body through the model's own chat template and prints exactly
 * the prompt text, nothing added, so that it can be compared byte for byte with
 * transformers/Jinja2. Errors are one line on stderr and exit status 1. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "chat/template.h"
#include "commands.h"
#include "common/buf.h"
#include "common/file.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tandem chat-template (--model DIR | --template FILE) --request FILE.json\n"
            "\n"
            "Prints the prompt that the model's chat template (DIR/tokenizer_config.json, or\n"
            "DIR/chat_template.jinja) renders for an OpenAI-style chat request body:\n"
            "messages, tools, add_generation_prompt (default true), chat_template_kwargs.\n"
            "--template FILE uses a raw Jinja template file instead of a model directory.\n"
            "--request - reads the request from standard input.\n");
}

int cmd_chat_template(int argc, char **argv)
{
    const char *model = NULL, *template_file = NULL, *request_file = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 < argc && !strcmp(argv[i], "--model"))
            model = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--template"))
            template_file = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--request"))
            request_file = argv[++i];
        else {
            fprintf(stderr, "tandem chat-template: unknown or incomplete option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!request_file || !!model == !!template_file) {
        usage(stderr);
        return 2;
    }

    eng_error err = {{0}};
    eng_chat_template *t = NULL;
    char *request_text = NULL, *prompt = NULL;
    cJSON *request = NULL;
    int status = 1;

    if (model) {
        if (eng_chat_template_load(model, &t, &err))
            goto fail;
    } else {
        char *src = eng_read_file(template_file, NULL, &err);
        if (!src)
            goto fail;
        int rc = eng_chat_template_from_string(src, &t, &err);
        free(src);
        if (rc)
            goto fail;
    }
    if (!(request_text = eng_read_file(request_file, NULL, &err)))
        goto fail;
    if (!(request = cJSON_Parse(request_text))) {
        snprintf(err.msg, sizeof err.msg, "%s: the request is not valid JSON", request_file);
        goto fail;
    }
    if (eng_chat_template_render(t, request, &prompt, &err))
        goto fail;
    size_t len = strlen(prompt);
    if (fwrite(prompt, 1, len, stdout) != len || fflush(stdout)) {
        snprintf(err.msg, sizeof err.msg, "cannot write the prompt");
        goto fail;
    }
    status = 0;
    goto done;
fail:
    fprintf(stderr, "tandem chat-template: %s\n", err.msg);
done:
    free(prompt);
    cJSON_Delete(request);
    free(request_text);
    eng_chat_template_free(t);
    return status;
}
