/* cli_args.c: parsing and --help from a command's option table (see cli_args.h). */
#include "cli_args.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define HELP_COLUMN_MAX 26 /* a longer "--name VALUE" puts its help on the next line */
#define HELP_WIDTH 100     /* a note that would pass this column goes on a line of its own */
#define MAX_OPTS 64        /* options of one command (a table is code: a bigger one is a bug) */

int cli_usage_error(const cli_command *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", cmd->name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 2;
}

static void *field(void *dest, size_t offset)
{
    return (char *)dest + offset;
}

/* "[lo, hi]" or "(lo, hi]" as the option accepts it. */
static void range_text(const cli_opt *o, char *buf, size_t cap)
{
    snprintf(buf, cap, "%c%.15g, %.15g]", o->flags & CLI_LO_OPEN ? '(' : '[', o->lo, o->hi);
}

static int in_choices(const char *choices, const char *v)
{
    size_t n = strlen(v);
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t k = bar ? (size_t)(bar - p) : strlen(p);
        if (k == n && !memcmp(p, v, n))
            return 1;
        p += k + (bar != NULL);
    }
    return 0;
}

/* Stores v in the option's field; `from` names where v came from in an error. */
static int set_value(const cli_command *cmd, const cli_opt *o, const char *from, const char *v, void *dest)
{
    char range[80];
    char *end;
    errno = 0;
    switch (o->type) {
    case CLI_FLAG: *(int *)field(dest, o->field) = 1; return 0;
    case CLI_STR:
        if (o->choices && !in_choices(o->choices, v))
            return cli_usage_error(cmd, "%s must be one of %s, got '%s'", from, o->choices, v);
        *(const char **)field(dest, o->field) = v;
        return 0;
    case CLI_INT: {
        long long x = strtoll(v, &end, 10);
        if (errno || end == v || *end || x < o->lo || x > o->hi) {
            range_text(o, range, sizeof range);
            return cli_usage_error(cmd, "%s wants an integer in %s, got '%s'", from, range, v);
        }
        *(int *)field(dest, o->field) = (int)x;
        return 0;
    }
    case CLI_FLOAT: {
        float x = strtof(v, &end);
        int low = o->flags & CLI_LO_OPEN ? !(x > o->lo) : !(x >= o->lo);
        if (errno || end == v || *end || low || !(x <= o->hi)) {
            range_text(o, range, sizeof range);
            return cli_usage_error(cmd, "%s wants a number in %s, got '%s'", from, range, v);
        }
        *(float *)field(dest, o->field) = x;
        return 0;
    }
    case CLI_U64: {
        unsigned long long x = strtoull(v, &end, 10);
        if (errno || end == v || *end || v[0] == '-' || v[0] == '+' || v[0] == ' ')
            return cli_usage_error(cmd, "%s wants a non-negative integer, got '%s'", from, v);
        *(unsigned long long *)field(dest, o->field) = x;
        return 0;
    }
    }
    return cli_usage_error(cmd, "%s: unknown option type", from);
}

static const cli_opt *find(const cli_command *cmd, const char *name)
{
    for (int i = 0; i < cmd->n_opts; i++)
        if (!strcmp(cmd->opts[i].name, name))
            return &cmd->opts[i];
    return NULL;
}

int cli_parse(const cli_command *cmd, int argc, char **argv, void *dest)
{
    for (int i = 0; i < cmd->n_opts; i++) {
        const cli_opt *o = &cmd->opts[i];
        const char *env = o->env ? getenv(o->env) : NULL;
        if (env && *env) {
            if (set_value(cmd, o, o->env, env, dest))
                return 2;
        } else if (o->def && set_value(cmd, o, o->name, o->def, dest)) {
            return 2;
        }
    }
    unsigned char seen[MAX_OPTS] = {0};
    if (cmd->n_opts > MAX_OPTS)
        return cli_usage_error(cmd, "%d options: at most %d fit the parser", cmd->n_opts, MAX_OPTS);
    int n_args = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            cli_print_help(cmd, stdout);
            return 0;
        }
        if (a[0] != '-' || !a[1]) {
            if (n_args >= cmd->max_args)
                return cli_usage_error(cmd, "unexpected argument '%s' (see --help)", a);
            ((const char **)field(dest, cmd->args_field))[n_args++] = a;
            continue;
        }
        const cli_opt *o = find(cmd, a);
        if (!o)
            return cli_usage_error(cmd, "unknown option '%s' (see --help)", a);
        const char *v = NULL;
        if (o->type != CLI_FLAG) {
            if (i + 1 >= argc)
                return cli_usage_error(cmd, "%s needs a value (see --help)", a);
            v = argv[++i];
        }
        if (set_value(cmd, o, a, v, dest))
            return 2;
        if (o->given)
            *(int *)field(dest, o->given - 1) = 1;
        seen[o - cmd->opts] = 1;
    }
    for (int i = 0; i < cmd->n_opts; i++) {
        const cli_opt *o = &cmd->opts[i];
        if ((o->flags & CLI_REQUIRED) && !seen[i])
            return cli_usage_error(cmd, "needs %s %s (see --help)", o->name, o->value ? o->value : "");
    }
    if (cmd->exactly_one[0]) {
        const cli_opt *x = find(cmd, cmd->exactly_one[0]), *y = find(cmd, cmd->exactly_one[1]);
        if (!x || !y || seen[x - cmd->opts] == seen[y - cmd->opts])
            return cli_usage_error(cmd, "give exactly one of %s and %s", cmd->exactly_one[0], cmd->exactly_one[1]);
    }
    return CLI_RUN;
}

/* "--name VALUE" as the left column shows it. */
static int left_text(const cli_opt *o, char *buf, size_t cap)
{
    return snprintf(buf, cap, "%s%s%s", o->name, o->value ? " " : "", o->value ? o->value : "");
}

void cli_print_help(const cli_command *cmd, FILE *out)
{
    fprintf(out, "usage: %s %s\n", cmd->name, cmd->usage);
    if (cmd->about)
        fprintf(out, "%s\n", cmd->about);
    int col = 0;
    for (int i = 0; i < cmd->n_opts; i++) {
        char left[128];
        int n = left_text(&cmd->opts[i], left, sizeof left);
        if (n > col && n <= HELP_COLUMN_MAX)
            col = n;
    }
    for (int i = 0; i < cmd->n_opts; i++) {
        const cli_opt *o = &cmd->opts[i];
        char left[128], range[80] = "", def[128] = "", note[256];
        int n = left_text(o, left, sizeof left);
        /* "(N in [lo, hi]; default D)", each part when it applies */
        if (o->type == CLI_INT || o->type == CLI_FLOAT) {
            char r[64];
            range_text(o, r, sizeof r);
            snprintf(range, sizeof range, "%s in %s", o->value, r);
        }
        if (o->env && o->def)
            snprintf(def, sizeof def, "default $%s, else %s", o->env, o->def);
        else if (o->def)
            snprintf(def, sizeof def, "default %s", o->def);
        snprintf(note, sizeof note, "%s%s%s", range, range[0] && def[0] ? "; " : "", def);
        int k = (int)strlen(note);
        fprintf(out, "  %-*s", col, left);
        if (n > col)
            fprintf(out, "\n  %-*s", col, "");
        /* Each help line indented under the first; the note ends the last one. */
        int last = 0;
        for (const char *h = o->help;;) {
            const char *nl = strchr(h, '\n');
            last = nl ? (int)(nl - h) : (int)strlen(h);
            fprintf(out, "  %.*s", last, h);
            if (!nl)
                break;
            fprintf(out, "\n  %-*s", col, "");
            h = nl + 1;
        }
        if (k && 2 + col + 2 + last + 2 + k > HELP_WIDTH)
            fprintf(out, "\n  %-*s  (%s)\n", col, "", note);
        else if (k)
            fprintf(out, " (%s)\n", note);
        else
            fputc('\n', out);
    }
}
