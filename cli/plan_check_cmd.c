/* plan_check_cmd.c: `tandemctl plan-check`, a cluster's real steps against a
 * profile's cost.
 *
 * A worker at --log-level debug logs every step it runs (worker/engine.c); this sums,
 * per worker and kind of step (prompt, decode, mixed), the time those steps took and
 * the time the profile's cost model gives the same steps (plan_step_seconds), and
 * prints the ratio, per worker, per kind across workers and in all, with the
 * tokens streamed after the steps and the time that took (bench/goodput.mjs's
 * --stream-cpu). The planner's predictions stand on that cost: a ratio far from 1
 * says the machine ran the cluster at another speed than it ran the profile (another
 * moment's load, contention the profile did not see), whatever the scheduling model.
 * bench/goodput.mjs prints it for every rate it runs. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_args.h"
#include "plan.h"

enum { MAX_WORKERS = 64, LINE_MAX_BYTES = 4096 };

typedef enum { STEP_PROMPT, STEP_DECODE, STEP_MIXED, N_KINDS } step_kind;
static const char *const KIND_NAME[N_KINDS] = {"prompt", "decode", "mixed"};

typedef struct check_args {
    const char *profile, *log, *output;
    int json;
} check_args;

#define A check_args
static const cli_opt OPTS[] = {
    CLI_STR_OPT(A, profile, "--profile", "FILE", NULL, "a profile written by `tandem profile --out FILE`",
                CLI_REQUIRED),
    CLI_STR_OPT(
        A, log, "--log", "FILE", NULL,
        "a log of workers at --log-level debug (`tandem serve\n--worker-log-level debug` writes theirs to stderr)",
        CLI_REQUIRED),
    CLI_CHOICE_OPT(A, output, "-o", "table|json", "table", "output format", 0),
    CLI_FLAG_OPT(A, json, "--json", "the same as -o json"),
};
#undef A

static const cli_command CMD = {
    .name = "tandemctl plan-check",
    .usage = "--profile FILE --log FILE [options]",
    .about = "  Sets the steps a cluster's workers logged (at --log-level debug) against the\n"
             "  profile's cost for the same steps: per worker and kind of step (prompt, decode,\n"
             "  mixed) the time measured, the time the profile gives, and their ratio. A ratio\n"
             "  far from 1 means the machine ran the cluster at another speed than the profile.",
    .opts = OPTS,
    .n_opts = CLI_COUNT(OPTS),
};

typedef struct tally {
    int steps;
    double measured, profiled; /* seconds */
    long long streamed;        /* tokens handed to their streams after the steps ... */
    double streaming;          /* ... in this long (seconds, not in measured) */
} tally;

typedef struct worker_tally {
    char id[64];
    tally kind[N_KINDS];
} worker_tally;

static step_kind kind_of(const plan_logged_step *s)
{
    if (s->longest_chunk == 0)
        return STEP_DECODE;
    return s->decode_items ? STEP_MIXED : STEP_PROMPT;
}

static void add(tally *t, const plan_logged_step *s, double profiled)
{
    t->steps++;
    t->measured += s->seconds;
    t->profiled += profiled;
    t->streamed += s->streamed_tokens;
    t->streaming += s->stream_seconds;
}

/* measured / profile; 0 for no profiled time */
static double ratio(const tally *t)
{
    return t->profiled > 0 ? t->measured / t->profiled : 0;
}

static cJSON *tally_json(const char *worker, const char *kind, const tally *t)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "worker", worker);
    cJSON_AddStringToObject(o, "kind", kind);
    cJSON_AddNumberToObject(o, "steps", t->steps);
    cJSON_AddNumberToObject(o, "measured_ms", 1e3 * t->measured);
    cJSON_AddNumberToObject(o, "profile_ms", 1e3 * t->profiled);
    cJSON_AddNumberToObject(o, "ratio", ratio(t));
    cJSON_AddNumberToObject(o, "streamed_tokens", (double)t->streamed);
    cJSON_AddNumberToObject(o, "streaming_ms", 1e3 * t->streaming);
    return o;
}

static void print_row(const char *worker, const char *kind, const tally *t)
{
    printf("%-20s %-7s %7d %13.1f %13.1f %9.3f\n", worker, kind, t->steps, 1e3 * t->measured, 1e3 * t->profiled,
           ratio(t));
}

int plan_check_command(int argc, char **argv)
{
    check_args a = {0};
    int rc = cli_parse(&CMD, argc, argv, &a);
    if (rc != CLI_RUN)
        return rc ? 1 : 0;
    int json = a.json || !strcmp(a.output, "json");
    eng_error err = {{0}};
    plan_profile prof;
    if (plan_profile_load(a.profile, &prof, &err) < 0) {
        fprintf(stderr, "tandemctl plan-check: %s\n", err.msg);
        return 1;
    }
    FILE *f = fopen(a.log, "r");
    if (!f) {
        fprintf(stderr, "tandemctl plan-check: %s: cannot open\n", a.log);
        return 1;
    }
    worker_tally *w = calloc(MAX_WORKERS, sizeof *w);
    if (!w) {
        fclose(f);
        fprintf(stderr, "tandemctl plan-check: out of memory\n");
        return 1;
    }
    int n_workers = 0, status = 1;
    tally all = {0}, kinds[N_KINDS] = {{0}};
    char line[LINE_MAX_BYTES];
    while (fgets(line, sizeof line, f)) {
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') { /* longer than any step line: skip the rest */
            int c;
            while ((c = fgetc(f)) != EOF && c != '\n')
                ;
            continue;
        }
        plan_logged_step s;
        if (!plan_parse_step_line(line, &s))
            continue;
        int k = 0;
        while (k < n_workers && strcmp(w[k].id, s.worker))
            k++;
        if (k == n_workers) {
            if (n_workers == MAX_WORKERS) {
                fprintf(stderr, "tandemctl plan-check: %s: more than %d workers\n", a.log, MAX_WORKERS);
                goto done;
            }
            memcpy(w[n_workers++].id, s.worker, sizeof s.worker);
        }
        double profiled = plan_step_seconds(&prof.cost, s.x, s.decode_items, s.longest_chunk);
        step_kind kind = kind_of(&s);
        add(&w[k].kind[kind], &s, profiled);
        add(&kinds[kind], &s, profiled);
        add(&all, &s, profiled);
    }
    if (ferror(f)) {
        fprintf(stderr, "tandemctl plan-check: %s: read error\n", a.log);
        goto done;
    }
    if (!all.steps) {
        fprintf(stderr,
                "tandemctl plan-check: %s: no step lines (workers log them at --log-level debug, this release's "
                "format)\n",
                a.log);
        goto done;
    }
    if (json) {
        cJSON *doc = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(doc, "steps");
        cJSON_AddStringToObject(doc, "profile", prof.model);
        cJSON_AddNumberToObject(doc, "cost_fit_error", prof.fit_error);
        cJSON_AddItemToObject(doc, "slowdown", cJSON_CreateDoubleArray(prof.slowdown + 1, prof.co_runners));
        for (int i = 0; i < n_workers; i++)
            for (int k = 0; k < N_KINDS; k++)
                if (w[i].kind[k].steps)
                    cJSON_AddItemToArray(arr, tally_json(w[i].id, KIND_NAME[k], &w[i].kind[k]));
        cJSON *by_kind = cJSON_AddArrayToObject(doc, "kinds");
        for (int k = 0; k < N_KINDS; k++)
            if (kinds[k].steps)
                cJSON_AddItemToArray(by_kind, tally_json("all", KIND_NAME[k], &kinds[k]));
        cJSON_AddItemToObject(doc, "all", tally_json("all", "all", &all));
        char *text = cJSON_Print(doc);
        if (text)
            puts(text);
        free(text);
        cJSON_Delete(doc);
    } else {
        printf("%d steps of %s against the profile of %s (cost fit median error %.1f%%); ratio = measured / "
               "profile\n",
               all.steps, a.log, prof.model, 100 * prof.fit_error);
        /* the profile's cost is a step alone; in a cluster steps overlap */
        for (int k = 1; k <= prof.co_runners; k++)
            printf("%s%.2fx beside %d%s", k == 1 ? "the profile's contention (not applied here): " : ", ",
                   prof.slowdown[k], k, k == prof.co_runners ? "\n" : "");
        printf("\n");
        printf("%-20s %-7s %7s %13s %13s %9s\n", "worker", "kind", "steps", "measured ms", "profile ms", "ratio");
        for (int i = 0; i < n_workers; i++)
            for (int k = 0; k < N_KINDS; k++)
                if (w[i].kind[k].steps)
                    print_row(w[i].id, KIND_NAME[k], &w[i].kind[k]);
        if (n_workers > 1)
            for (int k = 0; k < N_KINDS; k++)
                if (kinds[k].steps)
                    print_row("all", KIND_NAME[k], &kinds[k]);
        print_row("all", "", &all);
        if (all.streamed)
            printf("\nstreamed %lld tokens in %.1f ms after the steps (%.4f ms a token; not in measured)\n",
                   all.streamed, 1e3 * all.streaming, 1e3 * all.streaming / (double)all.streamed);
    }
    status = 0;
done:
    fclose(f);
    free(w);
    return status;
}
