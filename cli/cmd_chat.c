/* cmd_chat.c: `tandem chat`, a multi-turn conversation with a model in this process.
 *
 * Keeps the history as Qwen3's model card's QwenChatbot does: each input line is a user
 * turn, the whole history is rendered through the model's own chat template and
 * generated from, and the answer joins the history. Only the answer (content) goes
 * back, never the reasoning, which is what the template expects of earlier turns.
 * The generation loop is cli_generate.h's: its KV cache survives between turns and
 * is rewound to the prefix the new prompt shares, so a turn prefills only what is new.
 *
 * Thinking. --no-think renders every turn with enable_thinking=false. "/think" and
 * "/no_think" in a line stay in the message (the model obeys them). The output is
 * parsed as the API parses it: a think block the model (or the prompt) opens is
 * reasoning, the rest is the answer.
 *
 * Display. Every reasoning line starts with "thinking: " (dimmed on a terminal); piped,
 * the answer starts with "assistant: ", so that transcripts stay readable and scripts
 * can tell the parts apart. Text streams as generated.
 * Ctrl-C during an answer stops it (what came so far is kept); at the prompt it ends
 * the chat. TANDEM_CHAT_DUMP=DIR writes each turn's request, rendered prompt and raw output to
 * DIR/turn<N>.{request.json,prompt.txt,output.txt} (the chat tests compare them). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "chat/parser.h"
#include "cli_generate.h"
#include "cli_model.h"
#include "commands.h"
#include "common/buf.h"

typedef struct chat_args {
    const char *model, *kv_dtype, *matmul_dtype, *system;
    int no_think, verbose, max_tokens, threads, mmap;
    cli_sampling_opts sampling;
} chat_args;

#define C chat_args
static const cli_opt OPTS[] = {
    CLI_STR_OPT(C, model, "--model", "DIR", NULL, "Hugging Face checkpoint folder with a chat template", CLI_REQUIRED),
    CLI_FLAG_OPT(C, no_think, "--no-think", "render every turn with enable_thinking=false"),
    CLI_STR_OPT(C, system, "--system", "TEXT", NULL, "a system message before the first turn", 0),
    CLI_INT_OPT(C, max_tokens, "--max-tokens", "N", 1, 1 << 20, "2048", "at most N generated tokens per turn"),
    CLI_SAMPLING_OPTS(C, sampling),
    CLI_INT_OPT(C, threads, "--threads", "N", 1, 4096, NULL, "compute threads; default: one per CPU"),
    CLI_KV_DTYPE_OPT(C, kv_dtype),
    CLI_MATMUL_DTYPE_OPT(C, matmul_dtype),
    CLI_MMAP_OPT(C, mmap),
    CLI_FLAG_OPT(C, verbose, "--verbose", "one line per turn on stderr: tokens, cache reuse, speed"),
};
#undef C

static const cli_command CMD = {
    .name = "tandem chat",
    .usage = "--model DIR [options]",
    .about = "Reads one user turn per line of standard input; an empty line is skipped, /exit or\n"
             "the end of input ends the chat. /think and /no_think in a line switch thinking.",
    .opts = OPTS,
    .n_opts = CLI_COUNT(OPTS),
};

/* One turn's output on its way to the screen and into the history. */
typedef struct turn {
    int tty; /* stdout is a terminal */
    eng_parser *parser;
    eng_buf raw;     /* everything generated (for the dump) */
    eng_buf content; /* the answer, for the history */
    eng_parse_delta d;
    int shown;      /* 0 nothing yet, 1 in reasoning, 2 in the answer */
    int line_start; /* the last character shown ended a line (or none yet) */
    int failed;
    eng_error err;
} turn;

static void put(turn *t, const char *s, size_t n)
{
    if (n) {
        fwrite(s, 1, n, stdout);
        t->line_start = s[n - 1] == '\n';
    }
}

static void show_reasoning(turn *t, const char *s, size_t n)
{
    if (!n)
        return;
    if (t->shown != 1) {
        if (!t->line_start)
            put(t, "\n", 1);
        if (t->tty)
            fputs("\033[2m", stdout);
        t->shown = 1;
    }
    for (size_t i = 0; i < n;) { /* each line marked, as it starts */
        if (t->line_start)
            fputs("thinking: ", stdout), t->line_start = 0;
        const char *nl = memchr(s + i, '\n', n - i);
        size_t k = nl ? (size_t)(nl - (s + i)) + 1 : n - i;
        put(t, s + i, k);
        i += k;
    }
}

static void start_answer(turn *t)
{
    if (t->shown == 2)
        return;
    if (t->shown == 1 && t->tty)
        fputs("\033[0m", stdout);
    if (!t->line_start)
        put(t, "\n", 1);
    if (!t->tty)
        fputs("assistant: ", stdout);
    t->line_start = 0;
    t->shown = 2;
}

static void show_delta(turn *t)
{
    eng_parse_delta *d = &t->d;
    show_reasoning(t, d->reasoning.data, d->reasoning.len);
    if (d->content.len) {
        start_answer(t);
        put(t, d->content.data, d->content.len);
        if (eng_buf_append(&t->content, d->content.data, d->content.len) < 0 && !t->failed)
            t->failed = 1, eng_fail(&t->err, "out of memory");
    }
    for (int i = 0; i < d->n_calls; i++) {
        start_answer(t);
        if (!t->line_start)
            put(t, "\n", 1);
        fprintf(stdout, "[tool call %s: %s]\n", d->calls[i].name, d->calls[i].arguments);
        t->line_start = 1;
    }
    fflush(stdout);
    eng_parse_delta_clear(d);
}

static void parse(turn *t, const char *s, size_t n, int final)
{
    if (t->failed)
        return;
    int rc = 0;
    if (n)
        rc = eng_parser_feed(t->parser, s, n, &t->d, &t->err);
    if (!rc && final)
        rc = eng_parser_finish(t->parser, &t->d, &t->err);
    if (rc < 0)
        t->failed = 1;
    else
        show_delta(t);
}

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

static int on_text(void *ctx, const char *s, size_t n)
{
    turn *t = ctx;
    if (interrupted)
        return 1;
    if (eng_buf_append(&t->raw, s, n) < 0 && !t->failed)
        t->failed = 1, eng_fail(&t->err, "out of memory");
    if (t->failed)
        return 1;
    parse(t, s, n, 0);
    return t->failed;
}

static void turn_free(turn *t)
{
    eng_parser_free(t->parser);
    eng_buf_free(&t->raw);
    eng_buf_free(&t->content);
    eng_parse_delta_free(&t->d);
}

static int dump(const char *dir, int n, const char *what, const char *data, size_t len, eng_error *err)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s/turn%d.%s", dir, n, what) >= (int)sizeof path)
        return eng_fail(err, "TANDEM_CHAT_DUMP: path too long");
    FILE *f = fopen(path, "wb");
    if (!f)
        return eng_fail(err, "TANDEM_CHAT_DUMP: %s: %s", path, strerror(errno));
    int bad = fwrite(data, 1, len, f) != len;
    bad |= fclose(f) != 0;
    return bad ? eng_fail(err, "TANDEM_CHAT_DUMP: cannot write %s", path) : 0;
}

static cJSON *message(const char *role, const char *content)
{
    cJSON *m = cJSON_CreateObject();
    if (m && (!cJSON_AddStringToObject(m, "role", role) || !cJSON_AddStringToObject(m, "content", content))) {
        cJSON_Delete(m);
        return NULL;
    }
    return m;
}

typedef struct chat {
    const chat_args *a;
    cli_session s;
    cJSON *request; /* {"messages": history, "add_generation_prompt": true, "chat_template_kwargs"?} */
    cJSON *history;
    int n_turns;
    const char *dump_dir;
} chat;

/* One user turn: render, generate, show, keep the answer. -1 with err set. */
static int run_turn(chat *c, const char *line, eng_error *err)
{
    cJSON *user = message("user", line);
    if (!user)
        return eng_fail(err, "out of memory");
    cJSON_AddItemToArray(c->history, user);
    c->n_turns++;

    char *prompt = NULL, *req_text = NULL;
    int32_t *ids = NULL;
    int n_ids = 0, rc = -1;
    turn t = {.tty = isatty(STDOUT_FILENO), .line_start = 1};
    eng_parse_delta_init(&t.d);
    cli_gen_out o = {0};
    eng_sampling samp;

    if (cli_render_prompt(&c->s, c->request, &prompt, &ids, &n_ids, err) < 0)
        goto done;
    if (c->dump_dir && (!(req_text = cJSON_Print(c->request)) ||
                        dump(c->dump_dir, c->n_turns, "request.json", req_text, strlen(req_text), err) < 0 ||
                        dump(c->dump_dir, c->n_turns, "prompt.txt", prompt, strlen(prompt), err) < 0)) {
        if (!req_text)
            eng_fail(err, "out of memory");
        goto done;
    }
    if (!(t.parser = eng_parser_new(cli_parse_flags(&c->s, prompt), NULL, err)))
        goto done;
    cli_choose_sampling(&c->a->sampling, &c->s.gen, &samp);
    if (eng_sampling_check(&samp, err) < 0)
        goto done;
    interrupted = 0;
    if (cli_session_generate(&c->s, &samp, ids, n_ids, c->a->max_tokens, 0, on_text, &t, &o, err) < 0)
        goto done;
    interrupted = 0;
    if (!t.failed)
        parse(&t, NULL, 0, 1);
    if (t.failed) {
        eng_fail(err, "%s", t.err.msg);
        goto done;
    }
    start_answer(&t); /* every turn shows its (maybe empty) answer */
    if (t.tty && t.shown == 1)
        fputs("\033[0m", stdout);
    if (!t.line_start)
        putchar('\n');
    fflush(stdout);
    if (c->a->verbose)
        fprintf(stderr,
                "[turn %d: %d prompt tokens (%d from the cache), %.1f tok/s; %d generated, %.1f tok/s; finish: %s]\n",
                c->n_turns, n_ids, o.n_reused, o.prefill_s > 0 ? (n_ids - o.n_reused) / o.prefill_s : 0, o.n,
                o.decode_s > 0 && o.n > 1 ? (o.n - 1) / o.decode_s : 0, o.finish_reason);
    if (c->dump_dir && dump(c->dump_dir, c->n_turns, "output.txt", t.raw.data ? t.raw.data : "", t.raw.len, err) < 0)
        goto done;
    cJSON *answer = message("assistant", t.content.data ? t.content.data : "");
    if (!answer) {
        eng_fail(err, "out of memory");
        goto done;
    }
    cJSON_AddItemToArray(c->history, answer);
    rc = 0;
done:
    if (rc < 0) /* keep the history as it was before the failed turn */
        cJSON_DeleteItemFromArray(c->history, cJSON_GetArraySize(c->history) - 1);
    cli_gen_out_free(&o);
    turn_free(&t);
    free(req_text);
    free(prompt);
    free(ids);
    return rc;
}

static int is_blank(const char *s)
{
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\r' && *s != '\n')
            return 0;
    return 1;
}

int cmd_chat(int argc, char **argv)
{
    chat_args a = {0};
    int exit_status = cli_parse(&CMD, argc, argv, &a);
    if (exit_status != CLI_RUN)
        return exit_status;
    eng_error err = {{0}};
    chat c = {.a = &a};
    const char *dir = getenv("TANDEM_CHAT_DUMP");
    c.dump_dir = dir && *dir ? dir : NULL;
    char *line = NULL;
    size_t cap = 0;
    int status = 1, interactive = isatty(STDIN_FILENO);

    if (cli_session_open(&c.s, a.model,
                         &(eng_model_options){.n_threads = a.threads,
                                              .matmul_dtype = cli_matmul_dtype(a.matmul_dtype),
                                              .mmap_weights = a.mmap},
                         cli_kv_dtype(a.kv_dtype), 1, &err) < 0)
        goto fail;
    /* No SA_RESTART: Ctrl-C at the prompt interrupts getline, which ends the chat. */
    struct sigaction sa = {.sa_handler = on_sigint};
    sigemptyset(&sa.sa_mask);
    if (interactive)
        sigaction(SIGINT, &sa, NULL);
    c.request = cJSON_CreateObject();
    c.history = c.request ? cJSON_AddArrayToObject(c.request, "messages") : NULL;
    if (!c.history || !cJSON_AddBoolToObject(c.request, "add_generation_prompt", 1) ||
        (a.no_think &&
         !cJSON_AddBoolToObject(cJSON_AddObjectToObject(c.request, "chat_template_kwargs"), "enable_thinking", 0))) {
        eng_fail(&err, "out of memory");
        goto fail;
    }
    if (a.system) {
        cJSON *m = message("system", a.system);
        if (!m) {
            eng_fail(&err, "out of memory");
            goto fail;
        }
        cJSON_AddItemToArray(c.history, m);
    }
    for (;;) {
        if (interactive) {
            fputs("> ", stdout);
            fflush(stdout);
        }
        ssize_t n = getline(&line, &cap, stdin);
        if (n < 0) {
            if (interrupted) { /* Ctrl-C at the prompt: a clean end, as EOF */
                clearerr(stdin);
                putchar('\n');
            }
            break;
        }
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = 0;
        if ((size_t)n != strlen(line)) {
            eng_fail(&err, "input line %d contains a NUL byte", c.n_turns + 1);
            goto fail;
        }
        if (is_blank(line))
            continue;
        if (!strcmp(line, "/exit"))
            break;
        if (run_turn(&c, line, &err) < 0) {
            char msg[sizeof err.msg];
            snprintf(msg, sizeof msg, "%s", err.msg);
            eng_fail(&err, "turn %d: %s", c.n_turns, msg);
            goto fail;
        }
    }
    if (ferror(stdin)) {
        eng_fail(&err, "standard input: read error");
        goto fail;
    }
    status = 0;
    goto done;
fail:
    fflush(stdout);
    fprintf(stderr, "tandem chat: %s\n", err.msg);
done:
    free(line);
    cJSON_Delete(c.request);
    cli_session_close(&c.s);
    return status;
}
