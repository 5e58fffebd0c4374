/* log.c: the process-wide leveled logger (see log.h). */
#include "common/log.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MSG_MAX 4096

static const char *const LEVEL_NAMES[] = {"error", "warn", "info", "debug"};
static const char *const LEVEL_TAGS[] = {"ERROR", "WARN", "INFO", "DEBUG"};

static atomic_int current_level = ENG_LOG_INFO;
static atomic_int current_format = ENG_LOG_TEXT;
static eng_log_sink sink;
static void *sink_ctx;

int eng_log_level_parse(const char *name, eng_log_level *out)
{
    for (int i = 0; i < (int)(sizeof LEVEL_NAMES / sizeof *LEVEL_NAMES); i++)
        if (!strcmp(name, LEVEL_NAMES[i])) {
            *out = (eng_log_level)i;
            return 0;
        }
    return -1;
}

int eng_log_format_parse(const char *name, eng_log_format *out)
{
    if (!strcmp(name, "text"))
        *out = ENG_LOG_TEXT;
    else if (!strcmp(name, "json"))
        *out = ENG_LOG_JSON;
    else
        return -1;
    return 0;
}

void eng_log_set_level(eng_log_level level)
{
    atomic_store(&current_level, (int)level);
}

eng_log_level eng_log_get_level(void)
{
    return (eng_log_level)atomic_load(&current_level);
}

void eng_log_set_format(eng_log_format format)
{
    atomic_store(&current_format, (int)format);
}

eng_log_format eng_log_get_format(void)
{
    return (eng_log_format)atomic_load(&current_format);
}

const char *eng_log_level_name(eng_log_level level)
{
    return (unsigned)level <= ENG_LOG_DEBUG ? LEVEL_NAMES[level] : "debug";
}

void eng_log_set_sink(eng_log_sink s, void *ctx)
{
    sink = s;
    sink_ctx = ctx;
}

int eng_log_enabled(eng_log_level level)
{
    return (int)level <= atomic_load_explicit(&current_level, memory_order_relaxed);
}

/* "2026-12-04T16:46:22.807Z": wall-clock UTC, the one place that wants it. */
static void timestamp(char *buf, size_t cap)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    char day[24];
    strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, cap, "%s.%03dZ", day, (int)(now.tv_nsec / 1000000));
}

static void emit(char *line, size_t len)
{
    if (sink) {
        sink(sink_ctx, line);
        return;
    }
    line[len++] = '\n'; /* the caller left room */
    for (size_t off = 0; off < len;) {
        ssize_t n = write(STDERR_FILENO, line + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; /* nowhere left to say it */
        off += (size_t)n;
    }
}

void eng_log(eng_log_level level, const char *component, const char *request_id, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    eng_logv(level, component, request_id, fmt, ap);
    va_end(ap);
}

void eng_logv(eng_log_level level, const char *component, const char *request_id, const char *fmt, va_list ap)
{
    if (!eng_log_enabled(level))
        return;
    if ((unsigned)level > ENG_LOG_DEBUG)
        level = ENG_LOG_DEBUG;
    char msg[MSG_MAX];
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    if (n >= (int)sizeof msg)
        memcpy(msg + sizeof msg - 16, " ...(truncated)", 16);
    char ts[40];
    timestamp(ts, sizeof ts);

    if (atomic_load_explicit(&current_format, memory_order_relaxed) == ENG_LOG_JSON) {
        cJSON *o = cJSON_CreateObject();
        char *text = NULL;
        if (o && cJSON_AddStringToObject(o, "ts", ts) && cJSON_AddStringToObject(o, "level", LEVEL_NAMES[level]) &&
            (!component || cJSON_AddStringToObject(o, "component", component)) &&
            (!request_id || cJSON_AddStringToObject(o, "request_id", request_id)) &&
            cJSON_AddStringToObject(o, "msg", msg))
            text = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        if (text) {
            size_t len = strlen(text);
            char *line = malloc(len + 2);
            if (line) {
                memcpy(line, text, len + 1);
                emit(line, len);
                free(line);
            }
            cJSON_free(text);
            return;
        }
        /* out of memory: the text line below still says it */
    }
    char line[MSG_MAX + 512];
    int len = snprintf(line, sizeof line - 1, "%s %-5s %s%s%s%s%s%s", ts, LEVEL_TAGS[level], component ? component : "",
                       component ? ": " : "", request_id ? "req " : "", request_id ? request_id : "",
                       request_id ? ": " : "", msg);
    if (len > (int)sizeof line - 2)
        len = (int)sizeof line - 2;
    emit(line, (size_t)len);
}
