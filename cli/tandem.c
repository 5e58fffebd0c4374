/* tandem.c: entry point of the `tandem` binary; finds the subcommand and runs it. */
#include <stdio.h>
#include <string.h>

#include "commands.h"

struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
};

/* One line per subcommand. */
static const struct command COMMANDS[] = {
    {"tokenize", cmd_tokenize, "print the token ids of a text (or of JSON lines)"},
    {"generate", cmd_generate, "generate text from a prompt with a model in this process"},
    {"bench", cmd_bench, "time prefill and decode of a model on this machine"},
    {"profile", cmd_profile, "measure one worker on this machine for the planner (tandemctl plan)"},
    {"chat", cmd_chat, "chat with a model in this process, one turn per input line"},
    {"parse", cmd_parse, "split model output into reasoning, content and tool calls"},
    {"chat-template", cmd_chat_template, "print the prompt a chat request renders to"},
    {"worker", cmd_worker, "run a prefill / decode worker process"},
    {"coordinator", cmd_coordinator, "run the coordinator: OpenAI HTTP API, worker registry, router"},
    {"serve", cmd_serve, "start a coordinator and its workers on this machine (the default)"},
    {NULL, NULL, NULL},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: tandem <command> [options]\n\ncommands:\n");
    for (const struct command *c = COMMANDS; c->name; c++)
        fprintf(out, "  %-14s %s\n", c->name, c->summary);
    fprintf(out, "\n`tandem <command> --help` describes a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (const struct command *c = COMMANDS; c->name; c++)
        if (!strcmp(argv[1], c->name))
            return c->run(argc - 1, argv + 1);
    fprintf(stderr, "tandem: unknown command '%s' (see tandem --help)\n", argv[1]);
    return 2;
}
