/* test_cli_args.c: the option-table parser (cli/cli_args.h) on good and bad command
 * lines: defaults, ranges at and past their ends, numbers with junk, the given flags,
 * choices, the environment default, positional arguments, and the one-line errors. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "cli_args.h"

typedef struct args {
    const char *name, *mode, *addr;
    int count, verbose, level, have_level;
    float ratio;
    unsigned long long seed;
    int have_seed;
    const char *pos[2];
} args;

static const cli_opt OPTS[] = {
    CLI_STR_OPT(args, name, "--name", "NAME", NULL, "a name", CLI_REQUIRED),
    CLI_CHOICE_OPT(args, mode, "--mode", "fast|slow", "fast", "how", 0),
    CLI_ENV_OPT(args, addr, "--addr", "HOST:PORT", "TEST_CLI_ARGS_ADDR", "127.0.0.1:1", "where"),
    CLI_INT_OPT(args, count, "--count", "N", -2, 10, "5", "how many"),
    CLI_FLAG_OPT(args, verbose, "--verbose", "say more"),
    CLI_INT_GIVEN(args, level, have_level, "--level", "L", 0, 3, "a level"),
    CLI_FLOAT_GIVEN(args, ratio, have_level, "--ratio", "R", 0, 1, "a ratio", CLI_LO_OPEN),
    CLI_U64_GIVEN(args, seed, have_seed, "--seed", "S", "a seed"),
};
static const cli_command CMD = {
    .name = "test",
    .usage = "--name NAME [options] [A [B]]",
    .opts = OPTS,
    .n_opts = CLI_COUNT(OPTS),
    .max_args = 2,
    .args_field = offsetof(args, pos),
};
/* The options but --name, of which --mode or --seed (exactly one) must be given. */
static const cli_command ONE_OF = {
    .name = "one-of",
    .usage = "(--mode fast|slow | --seed S)",
    .opts = OPTS + 1,
    .n_opts = CLI_COUNT(OPTS) - 1,
    .exactly_one = {"--mode", "--seed"},
};

static char err_text[1024];

/* cli_parse of cmd on a NULL-terminated argument list; its stderr lands in err_text. */
#define parse(a, ...) parse_with(&CMD, a, __VA_ARGS__)
static int parse_with(const cli_command *cmd, args *a, ...)
{
    char *argv[32] = {"test"};
    int argc = 1;
    va_list ap;
    va_start(ap, a);
    for (char *s; argc < 31 && (s = va_arg(ap, char *));)
        argv[argc++] = s;
    va_end(ap);
    memset(a, 0, sizeof *a);
    fflush(stderr);
    FILE *tmp = tmpfile();
    int saved = dup(2);
    dup2(fileno(tmp), 2);
    int rc = cli_parse(cmd, argc, argv, a);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(tmp);
    size_t n = fread(err_text, 1, sizeof err_text - 1, tmp);
    err_text[n] = 0;
    fclose(tmp);
    return rc;
}

/* The error was one line holding want. */
static int one_line(const char *want)
{
    size_t n = strlen(err_text);
    return n && strstr(err_text, want) && strchr(err_text, '\n') == err_text + n - 1;
}

int main(void)
{
    args a;
    unsetenv("TEST_CLI_ARGS_ADDR");

    CHECK(parse(&a, "--name", "x", NULL) == CLI_RUN && !err_text[0]);
    CHECK(!strcmp(a.name, "x") && !strcmp(a.mode, "fast") && !strcmp(a.addr, "127.0.0.1:1") && a.count == 5);
    CHECK(!a.verbose && !a.have_level && !a.have_seed && !a.pos[0], "nothing given is marked given");

    CHECK(parse(&a, "--count", "-2", "--name", "y", "--verbose", "--mode", "slow", "A", "B", NULL) == CLI_RUN);
    CHECK(a.count == -2 && a.verbose && !strcmp(a.mode, "slow") && !strcmp(a.pos[0], "A") && !strcmp(a.pos[1], "B"));
    CHECK(parse(&a, "--name", "x", "--count", "10", NULL) == CLI_RUN && a.count == 10, "hi is inside the range");

    CHECK(parse(&a, "--name", "x", "--level", "0", NULL) == CLI_RUN && a.have_level && a.level == 0,
          "given to its zero value still counts as given");
    CHECK(parse(&a, "--name", "x", "--seed", "18446744073709551615", NULL) == CLI_RUN && a.have_seed &&
          a.seed == UINT64_MAX);
    CHECK(parse(&a, "--name", "x", "--ratio", "1", NULL) == CLI_RUN && a.ratio == 1.0f);

    /* every bad input: exit status 2 and one line that names the option and the range */
    CHECK(parse(&a, NULL) == 2 && one_line("test: needs --name NAME"), "%s", err_text);
    CHECK(parse(&a, "--name", "x", "--count", "11", NULL) == 2 &&
              one_line("--count wants an integer in [-2, 10], got '11'"),
          "%s", err_text);
    CHECK(parse(&a, "--name", "x", "--count", "-3", NULL) == 2 && one_line("[-2, 10]"), "%s", err_text);
    CHECK(parse(&a, "--name", "x", "--count", "4x", NULL) == 2 && one_line("got '4x'"), "%s", err_text);
    CHECK(parse(&a, "--name", "x", "--count", "", NULL) == 2 && one_line("got ''"), "%s", err_text);
    CHECK(parse(&a, "--name", "x", "--count", "99999999999999999999", NULL) == 2 && one_line("--count"), "%s",
          err_text);
    CHECK(parse(&a, "--name", "x", "--ratio", "0", NULL) == 2 && one_line("--ratio wants a number in (0, 1], got '0'"),
          "%s", err_text);
    CHECK(parse(&a, "--name", "x", "--ratio", "nan", NULL) == 2 && one_line("--ratio"), "%s", err_text);
    CHECK(parse(&a, "--name", "x", "--ratio", "inf", NULL) == 2 && one_line("--ratio"), "%s", err_text);
    CHECK(parse(&a, "--name", "x", "--seed", "-1", NULL) == 2 && one_line("--seed wants a non-negative integer"), "%s",
          err_text);
    CHECK(parse(&a, "--name", "x", "--seed", "18446744073709551616", NULL) == 2 && one_line("--seed"), "%s", err_text);
    CHECK(parse(&a, "--name", "x", "--mode", "medium", NULL) == 2 &&
              one_line("--mode must be one of fast|slow, got 'medium'"),
          "%s", err_text);
    CHECK(parse(&a, "--name", "x", "--bogus", NULL) == 2 && one_line("unknown option '--bogus'"), "%s", err_text);
    CHECK(parse(&a, "--name", NULL) == 2 && one_line("--name needs a value"), "%s", err_text);
    CHECK(parse(&a, "--name", "x", "A", "B", "C", NULL) == 2 && one_line("unexpected argument 'C'"), "%s", err_text);

    /* exactly one of two */
    CHECK(parse_with(&ONE_OF, &a, "--mode", "slow", NULL) == CLI_RUN && !strcmp(a.mode, "slow"));
    CHECK(parse_with(&ONE_OF, &a, "--seed", "1", NULL) == CLI_RUN && a.seed == 1);
    CHECK(parse_with(&ONE_OF, &a, NULL) == 2 && one_line("one-of: give exactly one of --mode and --seed"), "%s",
          err_text);
    CHECK(parse_with(&ONE_OF, &a, "--seed", "1", "--mode", "fast", NULL) == 2 && one_line("exactly one of"), "%s",
          err_text);

    /* the environment replaces the default, not what the command line says */
    setenv("TEST_CLI_ARGS_ADDR", "10.0.0.1:2", 1);
    CHECK(parse(&a, "--name", "x", NULL) == CLI_RUN && !strcmp(a.addr, "10.0.0.1:2"));
    CHECK(parse(&a, "--name", "x", "--addr", "h:3", NULL) == CLI_RUN && !strcmp(a.addr, "h:3"));
    unsetenv("TEST_CLI_ARGS_ADDR");

    /* --help: exit status 0, the text from the table */
    CHECK(parse(&a, "--count", "nonsense", "--help", NULL) == 2, "options before --help are still checked");
    fflush(stdout);
    int saved = dup(1);
    FILE *devnull = fopen("/dev/null", "w");
    dup2(fileno(devnull), 1);
    int rc = parse(&a, "--help", NULL);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    fclose(devnull);
    CHECK(rc == 0 && !err_text[0], "--help without the required --name");
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    cli_print_help(&CMD, f);
    fclose(f);
    CHECK(strstr(text, "usage: test --name NAME [options] [A [B]]\n") == text, "%s", text);
    CHECK(strstr(text, "  --count N") && strstr(text, "how many (N in [-2, 10]; default 5)\n"), "%s", text);
    CHECK(strstr(text, "a ratio (R in (0, 1])\n") && strstr(text, "how (default fast)\n"), "%s", text);
    CHECK(strstr(text, "where (default $TEST_CLI_ARGS_ADDR, else 127.0.0.1:1)\n"), "%s", text);
    free(text);
    return check_summary();
}
