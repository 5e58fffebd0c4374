/* check.h: the one assertion vocabulary of the C unit tests.
 *
 * CHECK(cond) or CHECK(cond, "printf format", args...) counts the check; when cond is
 * false it prints "file:line: CHECK(cond) failed" (plus ": message" when one is given)
 * and the test goes on, so one run reports every broken case. REQUIRE is the same but
 * ends the test at once, for preconditions the following checks cannot run without.
 * main() ends with `return check_summary();`, which prints "N passed, N failed" and
 * gives the exit status. A test that must stop after many failures (a broken kernel
 * fails thousands of elements) defines CHECK_MAX_FAILURES before including this.
 * Header-only and static: every test executable is its own translation unit set and
 * only the file holding main() includes it. */
#ifndef TANDEM_TEST_CHECK_H
#define TANDEM_TEST_CHECK_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static int check_passed, check_failed;

static inline int check_summary(void)
{
    printf("%d passed, %d failed\n", check_passed, check_failed);
    fflush(stdout);
    return check_failed ? 1 : 0;
}

/* The three steps of one failure report: where, the optional message, the count. */
static inline void check_fail_begin(const char *file, int line, const char *expr)
{
    fprintf(stderr, "%s:%d: CHECK(%s) failed", file, line, expr);
}

__attribute__((format(printf, 1, 2))) static inline void check_fail_note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs(": ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

/* Ends the test after a failure that the rest cannot survive. */
_Noreturn static inline void check_stop(void)
{
    check_summary();
    exit(1);
}

static inline void check_fail_end(void)
{
    fputc('\n', stderr);
    check_failed++;
#ifdef CHECK_MAX_FAILURES
    if (check_failed > CHECK_MAX_FAILURES)
        check_stop();
#endif
}

#define CHECK_AT_(fatal, cond, expr, ...)               \
    do {                                                \
        if (cond) {                                     \
            check_passed++;                             \
        } else {                                        \
            check_fail_begin(__FILE__, __LINE__, expr); \
            __VA_OPT__(check_fail_note(__VA_ARGS__);)   \
            check_fail_end();                           \
            if (fatal)                                  \
                check_stop();                           \
        }                                               \
    } while (0)

#define CHECK(cond, ...) CHECK_AT_(0, (cond), #cond __VA_OPT__(, ) __VA_ARGS__)
#define REQUIRE(cond, ...) CHECK_AT_(1, (cond), #cond __VA_OPT__(, ) __VA_ARGS__)

#endif
