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
#include "cli_args.h"
#include "commands.h"
#include "common/buf.h"
#include "common/file.h"

typedef struct template_args {
    const char *model, *template_file, *request_file;
} template_args;

#define T template_args
static const cli_opt OPTS[] = {
    CLI_STR_OPT(T, model, "--model", "DIR", NULL,
                "the model's chat template (DIR/tokenizer_config.json, or DIR/chat_template.jinja)", 0),
    CLI_STR_OPT(T, template_file, "--template", "FILE", NULL, "a raw Jinja template file instead of a model folder", 0),
    CLI_STR_OPT(T, request_file, "--request", "FILE.json", NULL,
                "an OpenAI-style chat request body ('-' for standard input):\n"
                "messages, tools, add_generation_prompt (default true), chat_template_kwargs",
                CLI_REQUIRED),
};
#undef T

static const cli_command CMD = {
    .name = "tandem chat-template",
    .usage = "(--model DIR | --template FILE) --request FILE.json",
    .about = "Prints the prompt that a chat template renders for a request, nothing added.",
    .opts = OPTS,
    .n_opts = CLI_COUNT(OPTS),
    .exactly_one = {"--model", "--template"},
};

int cmd_chat_template(int argc, char **argv)
{
    template_args a = {0};
    int exit_status = cli_parse(&CMD, argc, argv, &a);
    if (exit_status != CLI_RUN)
        return exit_status;
    const char *model = a.model, *template_file = a.template_file, *request_file = a.request_file;

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
