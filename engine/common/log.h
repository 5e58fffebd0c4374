/* log.h: the one logger of every Tandem process (coordinator, worker, tools).
 *
 * One line per event on stderr (or a sink a test installs), with a UTC timestamp,
 * the level, the component that speaks ("registry", "router", "both decode-1") and the
 * request id when the event belongs to a request:
 *
 *   text: 2026-12-04T16:46:22.807Z INFO  registry: req cmpl-7: message
 *   json: {"ts":"2026-12-04T16:46:22.807Z","level":"info","component":"registry",
 *          "request_id":"cmpl-7","msg":"message"}
 *
 * The level and format are process-wide atomics: set from --log-level / --log-format
 * at start, and settable at run time from any thread. Lines below the level cost one
 * atomic load. Each line is written with one write(2), so threads never interleave. */
#ifndef ENG_LOG_H
#define ENG_LOG_H

#include <stdarg.h>

typedef enum eng_log_level {
    ENG_LOG_ERROR = 0, /* the process or a request failed */
    ENG_LOG_WARN = 1,  /* something went wrong and was handled (a retry, a failover) */
    ENG_LOG_INFO = 2,  /* what an operator wants to see: start, stop, registrations, requests */
    ENG_LOG_DEBUG = 3, /* per-step detail */
} eng_log_level;

typedef enum eng_log_format {
    ENG_LOG_TEXT = 0,
    ENG_LOG_JSON = 1,
} eng_log_format;

/* "error", "warn", "info", "debug"; -1 for another name. */
int eng_log_level_parse(const char *name, eng_log_level *out);
/* "text", "json"; -1 for another name. */
int eng_log_format_parse(const char *name, eng_log_format *out);

void eng_log_set_level(eng_log_level level);
eng_log_level eng_log_get_level(void);
void eng_log_set_format(eng_log_format format);
eng_log_format eng_log_get_format(void);
/* "error", "warn", "info", "debug" (the names eng_log_level_parse reads). */
const char *eng_log_level_name(eng_log_level level);

/* Where finished lines (no newline) go instead of stderr; NULL restores stderr. Tests
 * use it to read what was logged. Set it before the threads that log start. */
typedef void (*eng_log_sink)(void *ctx, const char *line);
void eng_log_set_sink(eng_log_sink sink, void *ctx);

/* Whether a line of this level would be written now. */
int eng_log_enabled(eng_log_level level);

/* One event. component and request_id may be NULL. A message longer than the line
 * buffer (4 KiB) is cut, and says so. */
void eng_log(eng_log_level level, const char *component, const char *request_id, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void eng_logv(eng_log_level level, const char *component, const char *request_id, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));

#endif
