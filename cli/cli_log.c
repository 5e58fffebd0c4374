/* cli_log.c: applies --log-level and --log-format (see cli_log.h). */
#include "cli_log.h"

#include "common/log.h"

void cli_log_apply(const cli_log_opts *o)
{
    eng_log_level level;
    eng_log_format format;
    /* The table's choices admit only names these parse. */
    if (eng_log_level_parse(o->level, &level) == 0)
        eng_log_set_level(level);
    if (eng_log_format_parse(o->format, &format) == 0)
        eng_log_set_format(format);
}
