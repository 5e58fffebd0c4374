/* cli_log.h: --log-level and --log-format, the same rows in every long-running
 * command's option table (coordinator, worker, serve), applied to common/log.h. */
#ifndef CLI_LOG_H
#define CLI_LOG_H

#include "cli_args.h"

typedef struct cli_log_opts {
    const char *level, *format;
} cli_log_opts;

/* The rows for the cli_log_opts member m of struct st. */
#define CLI_LOG_OPTS(st, m)                                                                                     \
    {"--log-level",                                                                                             \
     "error|warn|info|debug",                                                                                   \
     CLI_STR,                                                                                                   \
     0,                                                                                                         \
     0,                                                                                                         \
     "error|warn|info|debug",                                                                                   \
     "info",                                                                                                    \
     "TANDEM_LOG_LEVEL",                                                                                        \
     "the least severe log lines written",                                                                      \
     0,                                                                                                         \
     CLI_FIELD_(st, m.level, const char *),                                                                     \
     0},                                                                                                        \
    {                                                                                                           \
        "--log-format", "text|json", CLI_STR, 0, 0, "text|json", "text", "TANDEM_LOG_FORMAT",                   \
            "one log line per event, as text or as a JSON object", 0, CLI_FIELD_(st, m.format, const char *), 0 \
    }

/* Sets the process's log level and format from the parsed options. */
void cli_log_apply(const cli_log_opts *o);

#endif
