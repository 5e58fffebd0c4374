/* plan_workload.c: workload files (docs/benchmarks.md, "Workload files") and the
 * traces drawn from them.
 *
 * The draws are written to match bench/workload.mjs step for step (the same
 * generator, the same order of draws, the same transforms), so that the load
 * generator and the planner see the same requests at the same times for a seed. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"

double plan_rng_next(plan_rng *r)
{
    uint32_t t = r->a += 0x6d2b79f5u;
    t = (t ^ (t >> 15)) * (t | 1u);
    t ^= t + (t ^ (t >> 7)) * (t | 61u);
    return (double)(t ^ (t >> 14)) / 4294967296.0;
}

static double normal(plan_rng *r)
{
    double u1 = plan_rng_next(r), u2 = plan_rng_next(r);
    return sqrt(-2 * log(1 - u1)) * cos(2 * 3.141592653589793 * u2);
}

/* Gamma(shape k, scale 1): Marsaglia and Tsang's method; below 1 through Gamma(k + 1). */
static double gamma_draw(plan_rng *r, double k)
{
    if (k < 1) {
        double g = gamma_draw(r, k + 1); /* drawn first, as in workload.mjs */
        return g * pow(1 - plan_rng_next(r), 1 / k);
    }
    double d = k - 1.0 / 3, c = 1 / sqrt(9 * d);
    for (;;) {
        double z = normal(r), v = 1 + c * z;
        if (v <= 0)
            continue;
        v = v * v * v;
        double u = 1 - plan_rng_next(r);
        if (log(u) < 0.5 * z * z + d - d * v + d * log(v))
            return d * v;
    }
}

static int draw(const plan_dist *d, plan_rng *r)
{
    switch (d->kind) {
    case PLAN_FIXED: return d->lo;
    case PLAN_UNIFORM: return d->lo + (int)floor(plan_rng_next(r) * (d->hi - d->lo + 1));
    case PLAN_LOGNORMAL: {
        double v = round(d->median * exp(d->sigma * normal(r)));
        return v < d->lo ? d->lo : v > d->hi ? d->hi : (int)v;
    }
    case PLAN_LIST: return d->values[(int)floor(plan_rng_next(r) * d->n_values)];
    }
    return d->lo;
}

void plan_trace(const plan_workload *w, double rate, uint32_t seed, plan_request *out, int n)
{
    plan_rng r = {seed};
    if (rate <= 0)
        rate = w->rate;
    double t = 0;
    for (int i = 0; i < n; i++) {
        out[i].arrival = t;
        out[i].prompt = draw(&w->prompt, &r);
        out[i].output = draw(&w->output, &r);
        t += gamma_draw(&r, w->shape) / (w->shape * rate);
    }
}

/* ---------------------------------------------------------------- the file */

static int get_int(const cJSON *o, const char *key, int lo, int hi, int *v, const char *where, eng_error *err)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(x) || x->valuedouble != floor(x->valuedouble) || x->valuedouble < lo || x->valuedouble > hi)
        return eng_fail(err, "workload: %s.%s must be an integer in [%d, %d]", where, key, lo, hi);
    *v = (int)x->valuedouble;
    return 0;
}

static int get_num(const cJSON *o, const char *key, double lo, double hi, double *v, const char *where, eng_error *err)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(x) || !(x->valuedouble > lo) || x->valuedouble > hi)
        return eng_fail(err, "workload: %s.%s must be a number in (%g, %g]", where, key, lo, hi);
    *v = x->valuedouble;
    return 0;
}

static int parse_dist(const cJSON *o, const char *where, plan_dist *d, eng_error *err)
{
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(o, "dist");
    if (!cJSON_IsObject(o) || !cJSON_IsString(kind))
        return eng_fail(err, "workload: %s must be an object with \"dist\": fixed, uniform, lognormal or list", where);
    const char *k = kind->valuestring;
    if (!strcmp(k, "fixed")) {
        d->kind = PLAN_FIXED;
        return get_int(o, "value", 1, PLAN_MAX_LEN, &d->lo, where, err);
    }
    if (!strcmp(k, "uniform") || !strcmp(k, "lognormal")) {
        d->kind = !strcmp(k, "uniform") ? PLAN_UNIFORM : PLAN_LOGNORMAL;
        if (get_int(o, "min", 1, PLAN_MAX_LEN, &d->lo, where, err) < 0 ||
            get_int(o, "max", d->lo, PLAN_MAX_LEN, &d->hi, where, err) < 0)
            return -1;
        if (d->kind == PLAN_UNIFORM)
            return 0;
        return get_num(o, "median", 0, PLAN_MAX_LEN, &d->median, where, err) < 0 ||
                       get_num(o, "sigma", 0, 10, &d->sigma, where, err) < 0
                   ? -1
                   : 0;
    }
    if (!strcmp(k, "list")) {
        const cJSON *vals = cJSON_GetObjectItemCaseSensitive(o, "values"), *v;
        int n = cJSON_GetArraySize(vals);
        if (!cJSON_IsArray(vals) || n < 1 || n > PLAN_MAX_LIST)
            return eng_fail(err, "workload: %s.values must be an array of 1 to %d lengths", where, PLAN_MAX_LIST);
        d->kind = PLAN_LIST;
        if (!(d->values = malloc((size_t)n * sizeof *d->values)))
            return eng_fail(err, "workload: out of memory");
        cJSON_ArrayForEach(v, vals)
        {
            if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 1 ||
                v->valuedouble > PLAN_MAX_LEN)
                return eng_fail(err, "workload: %s.values[%d] must be an integer in [1, %d]", where, d->n_values,
                                PLAN_MAX_LEN);
            d->values[d->n_values++] = (int)v->valuedouble;
        }
        return 0;
    }
    return eng_fail(err, "workload: %s.dist \"%s\" is not fixed, uniform, lognormal or list", where, k);
}

int plan_workload_parse(const char *json, plan_workload *out, eng_error *err)
{
    memset(out, 0, sizeof *out);
    cJSON *o = cJSON_Parse(json);
    if (!o)
        return eng_fail(err, "workload: not JSON");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, "arrival");
    int rc = -1;
    if (!cJSON_IsString(name) || !name->valuestring[0] || strlen(name->valuestring) >= sizeof out->name) {
        eng_fail(err, "workload: \"name\" must be a string of 1 to %zu characters", sizeof out->name - 1);
        goto done;
    }
    snprintf(out->name, sizeof out->name, "%s", name->valuestring);
    if (!cJSON_IsObject(arr)) {
        eng_fail(err, "workload: \"arrival\" must be an object {\"rate\": R, \"shape\": K}");
        goto done;
    }
    if (get_num(arr, "rate", 0, 1e6, &out->rate, "arrival", err) < 0 ||
        get_num(arr, "shape", 0, 1e3, &out->shape, "arrival", err) < 0 ||
        parse_dist(cJSON_GetObjectItemCaseSensitive(o, "prompt_tokens"), "prompt_tokens", &out->prompt, err) < 0 ||
        parse_dist(cJSON_GetObjectItemCaseSensitive(o, "output_tokens"), "output_tokens", &out->output, err) < 0 ||
        get_int(o, "requests", 1, PLAN_MAX_REQUESTS, &out->requests, "workload", err) < 0)
        goto done;
    if (out->shape < 0.01) {
        eng_fail(err, "workload: arrival.shape must be at least 0.01");
        goto done;
    }
    rc = 0;
done:
    cJSON_Delete(o);
    if (rc < 0)
        plan_workload_free(out);
    return rc;
}

int plan_workload_load(const char *path, plan_workload *out, eng_error *err)
{
    char *text = plan_read_text(path, err);
    if (!text)
        return -1;
    eng_error e;
    int rc = plan_workload_parse(text, out, &e);
    free(text);
    return rc < 0 ? eng_fail(err, "%s: %s", path, e.msg) : 0;
}

void plan_workload_free(plan_workload *w)
{
    free(w->prompt.values);
    free(w->output.values);
    w->prompt.values = w->output.values = NULL;
}
