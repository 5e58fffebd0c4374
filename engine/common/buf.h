/* buf.h: a growable byte buffer, the one string builder used across the engine. */
#ifndef ENG_BUF_H
#define ENG_BUF_H

#include <stddef.h>

typedef struct eng_buf {
    char *data; /* always NUL-terminated when non-NULL */
    size_t len;
    size_t cap;
} eng_buf;

/* Each returns 0, or -1 when memory runs out (the buffer is then unchanged). */
int eng_buf_append(eng_buf *b, const void *data, size_t len);
int eng_buf_puts(eng_buf *b, const char *s);
int eng_buf_printf(eng_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void eng_buf_clear(eng_buf *b); /* len = 0, keeps memory */
void eng_buf_free(eng_buf *b);
/* Hands the data to the caller (who frees it) and leaves the buffer empty. */
char *eng_buf_take(eng_buf *b);

#endif
