/* cli_args.h: one option table per command, which drives the parsing, the `--help`
 * text and (through `--help`) docs/cli.md.
 *
 * A command declares its options once, as rows of {name, value name, type, range,
 * default, help, destination field} (the idea of Redis's config table and llama.cpp's
 * common argument list), and cli_parse() fills the command's own struct from argv:
 * defaults first, then the options given, each checked against its type and range.
 * Every bad input gets one line on stderr naming the option and what it accepts, and
 * exit status 2. Rows are written with the CLI_* macros below, which also check at
 * compile time that the destination field has the option's type. */
#ifndef CLI_ARGS_H
#define CLI_ARGS_H

#include <stddef.h>
#include <stdio.h>

typedef enum cli_type {
    CLI_FLAG,  /* no value: sets an int field to 1 */
    CLI_STR,   /* const char * field pointing into argv; with choices, one of them */
    CLI_INT,   /* int field in [lo, hi] */
    CLI_FLOAT, /* float field in [lo, hi], or (lo, hi] with CLI_LO_OPEN */
    CLI_U64,   /* unsigned long long field: any non-negative integer */
} cli_type;

enum {
    CLI_REQUIRED = 1, /* the command cannot run without it */
    CLI_LO_OPEN = 2,  /* CLI_FLOAT: lo itself is not accepted */
};

typedef struct cli_opt {
    const char *name;  /* "--port" */
    const char *value; /* the value's name in --help ("N", "DIR"); NULL for a flag */
    cli_type type;
    double lo, hi;       /* CLI_INT, CLI_FLOAT: the accepted range */
    const char *choices; /* CLI_STR: "a|b|c" when only these are accepted, else NULL */
    const char *def;     /* default, read as if given on the command line; NULL: the field stays 0 */
    const char *env;     /* environment variable that replaces def when set and not empty */
    const char *help;    /* lines separated by '\n'; the default and range are added */
    unsigned flags;
    size_t field; /* offsetof the destination in the command's struct */
    size_t given; /* offsetof + 1 of an int set to 1 when the option is given; 0: none */
} cli_opt;

typedef struct cli_command {
    const char *name;  /* "tandem worker": the prefix of every message */
    const char *usage; /* the synopsis after the name */
    const char *about; /* text printed between the usage line and the options; may be NULL */
    const cli_opt *opts;
    int n_opts;
    int max_args;               /* positional arguments accepted (stored at args_field) */
    size_t args_field;          /* offsetof a const char *[max_args] */
    const char *exactly_one[2]; /* two options of which one and only one must be given */
} cli_command;

/* Compile-time check that struct st's field f has type T (a distinct pointer type
 * comparison is a warning, an error under -Werror), evaluating to its offset. */
#define CLI_FIELD_(st, f, T) (offsetof(st, f) + 0 * sizeof(&((st *)0)->f == (T *)0))

#define CLI_FLAG_OPT(st, f, name, help)                                                  \
    {                                                                                    \
        name, NULL, CLI_FLAG, 0, 0, NULL, NULL, NULL, help, 0, CLI_FIELD_(st, f, int), 0 \
    }
#define CLI_STR_OPT(st, f, name, value, def, help, flags)                                            \
    {                                                                                                \
        name, value, CLI_STR, 0, 0, NULL, def, NULL, help, flags, CLI_FIELD_(st, f, const char *), 0 \
    }
#define CLI_ENV_OPT(st, f, name, value, env, def, help)                                         \
    {                                                                                           \
        name, value, CLI_STR, 0, 0, NULL, def, env, help, 0, CLI_FIELD_(st, f, const char *), 0 \
    }
#define CLI_CHOICE_OPT(st, f, name, choices, def, help, flags)                                            \
    {                                                                                                     \
        name, choices, CLI_STR, 0, 0, choices, def, NULL, help, flags, CLI_FIELD_(st, f, const char *), 0 \
    }
#define CLI_INT_OPT(st, f, name, value, lo, hi, def, help)                                \
    {                                                                                     \
        name, value, CLI_INT, lo, hi, NULL, def, NULL, help, 0, CLI_FIELD_(st, f, int), 0 \
    }
#define CLI_FLOAT_OPT(st, f, name, value, lo, hi, def, help)                                  \
    {                                                                                         \
        name, value, CLI_FLOAT, lo, hi, NULL, def, NULL, help, 0, CLI_FIELD_(st, f, float), 0 \
    }
/* Options whose absence the command must tell from their default (given: an int field). */
#define CLI_INT_GIVEN(st, f, given, name, value, lo, hi, help)                           \
    {                                                                                    \
        name, value, CLI_INT, lo, hi, NULL, NULL, NULL, help, 0, CLI_FIELD_(st, f, int), \
            CLI_FIELD_(st, given, int) + 1                                               \
    }
#define CLI_FLOAT_GIVEN(st, f, given, name, value, lo, hi, help, flags)                          \
    {                                                                                            \
        name, value, CLI_FLOAT, lo, hi, NULL, NULL, NULL, help, flags, CLI_FIELD_(st, f, float), \
            CLI_FIELD_(st, given, int) + 1                                                       \
    }
#define CLI_U64_GIVEN(st, f, given, name, value, help)                                                \
    {                                                                                                 \
        name, value, CLI_U64, 0, 0, NULL, NULL, NULL, help, 0, CLI_FIELD_(st, f, unsigned long long), \
            CLI_FIELD_(st, given, int) + 1                                                            \
    }

#define CLI_COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* What cli_parse returns when the command should go on; anything else is the exit
 * status to return at once (0 after --help, 2 after a usage error). */
#define CLI_RUN (-1)

/* Fills dest (the command's struct, already zeroed or preset by the caller) from the
 * defaults and argv[1..argc-1] (argv[0] is the command's own name), then checks that
 * the required options and exactly one of exactly_one were given. */
int cli_parse(const cli_command *cmd, int argc, char **argv, void *dest);

/* The --help text: the usage line, about, then one entry per option. */
void cli_print_help(const cli_command *cmd, FILE *out);

/* One line "NAME: message" on stderr; returns 2, the usage-error exit status. */
int cli_usage_error(const cli_command *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
