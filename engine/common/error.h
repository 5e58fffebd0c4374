/* error.h: how every fallible engine function reports a problem.
 *
 * A function that can fail returns 0 on success and -1 on failure, writing one
 * human-readable line into the caller's eng_error (which may be NULL when the
 * caller does not care). No library code prints or exits. */
#ifndef ENG_ERROR_H
#define ENG_ERROR_H

#include <stddef.h>

typedef struct eng_error {
    char msg[512];
} eng_error;

/* Formats the message into err (if not NULL) and returns -1, so that callers can
 * write `return eng_fail(err, "...", ...);`. */
int eng_fail(eng_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
