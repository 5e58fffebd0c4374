/* test_jinja.c: unit tests of the Jinja interpreter (engine/chat/jinja.h).
 *
 * The broad semantics are checked against Jinja2 itself by features.py; here are the
 * things a reference comparison cannot show: every error path gives one line that
 * names the template line, hostile templates stop at the limits instead of hanging or
 * exhausting memory, and the API's contracts (reuse of a parsed template, concurrent
 * renders, variables given as a JSON object). Fast enough for ASan+UBSan. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja.h"
#include "check.h"

/* Renders src with vars (JSON text or NULL); returns malloc'd output or NULL with err. */
static char *render(const char *src, const char *vars_json, eng_error *err)
{
    eng_jinja *t = NULL;
    cJSON *vars = vars_json ? cJSON_Parse(vars_json) : NULL;
    eng_buf out = {0};
    char *result = NULL;
    if (vars_json && !vars) {
        snprintf(err->msg, sizeof err->msg, "test bug: bad vars JSON");
        return NULL;
    }
    if (eng_jinja_parse(src, strlen(src), &t, err) == 0 && eng_jinja_render(t, vars, &out, err) == 0) {
        eng_buf_append(&out, "", 0);
        result = eng_buf_take(&out);
    }
    eng_buf_free(&out);
    eng_jinja_free(t);
    cJSON_Delete(vars);
    return result;
}

static void expect(const char *src, const char *vars, const char *want)
{
    eng_error err = {{0}};
    char *got = render(src, vars, &err);
    CHECK(got && !strcmp(got, want), "template %s: got '%s' (%s), want '%s'", src, got ? got : "(error)",
          got ? "" : err.msg, want);
    free(got);
}

/* The template must fail with a one-line message containing `line` and `needle`. */
static void expect_error(const char *src, const char *vars, int line, const char *needle)
{
    eng_error err = {{0}};
    char *got = render(src, vars, &err);
    char prefix[64];
    snprintf(prefix, sizeof prefix, "template line %d: ", line);
    CHECK(!got, "template %s rendered '%s' but should fail", src, got ? got : "");
    CHECK(!strncmp(err.msg, prefix, strlen(prefix)), "template %s: message '%s' lacks '%s'", src, err.msg, prefix);
    CHECK(strstr(err.msg, needle) != NULL, "template %s: message '%s' lacks '%s'", src, err.msg, needle);
    CHECK(!strchr(err.msg, '\n'), "template %s: message has several lines: '%s'", src, err.msg);
    free(got);
}

static void test_basics(void)
{
    expect("Hello {{ name }}!", "{\"name\": \"W\\u00f6rld\"}", "Hello Wörld!");
    expect("{% for m in msgs %}{{ loop.index }}:{{ m.role }}{% if not loop.last %},{% endif %}{% endfor %}",
           "{\"msgs\": [{\"role\": \"a\"}, {\"role\": \"b\"}]}", "1:a,2:b");
    expect("{{ x|tojson }}", "{\"x\": {\"b\": [1, 2.5, \"\\u00e9\\\"\"], \"a\": null}}",
           "{\"b\": [1, 2.5, \"é\\\"\"], \"a\": null}");
    expect("{{ [1, 'a', none, true] }}", NULL, "[1, 'a', None, True]");
    expect("{{ 'x' if missing is not defined else 'y' }}", "{}", "x");
    expect("a\n  {% if true %}\n  b\n  {% endif %}\nc\n", NULL, "a\n  b\nc");
    expect("{%- set ns = namespace(n=0) %}{% for i in range(4) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}", NULL,
           "6");
    expect("{{ 'abc'[::-1] }}{{ [1, 2, 3][::-1] }}", NULL, "cba[3, 2, 1]");
    expect("{{ 1e16 }} {{ 0.1 }} {{ 1/3 }} {{ -0.0 }} {{ 123456789012345678 }}", NULL,
           "1e+16 0.1 0.3333333333333333 -0.0 123456789012345678");
    expect("", NULL, "");
    expect("{# only a comment #}", NULL, "");
    expect("x\n", NULL, "x"); /* one trailing newline is dropped, as Jinja2 does */
}

static void test_errors(void)
{
    /* syntax */
    expect_error("ok\n{% if x %}\nunclosed", NULL, 3, "expected 'endif'");
    expect_error("{% for x in y %}{% endif %}", NULL, 1, "endif");
    expect_error("\n\n{{ 1 + }}", NULL, 3, "syntax error");
    expect_error("{{ (1, 2 }}", NULL, 1, "unexpected");
    expect_error("{% nosuch %}", NULL, 1, "unknown tag 'nosuch'");
    expect_error("{% break %}", NULL, 1, "outside of a loop");
    expect_error("{{ 'open }}", NULL, 1, "unterminated string");
    expect_error("a\n{# open comment", NULL, 2, "missing end of comment");
    expect_error("{% raw %}never closed", NULL, 1, "raw");
    expect_error("{{ 0123 }}", NULL, 1, "leading zero");
    expect_error("{{ 99999999999999999999 }}", NULL, 1, "too large");
    expect_error("{{ x ]}}", NULL, 1, "unexpected ']'");
    expect_error("{{ 'a' \x01 }}", NULL, 1, "unexpected character");
    expect_error("{% set 1 = 2 %}", NULL, 1, "can't assign");
    expect_error("{% macro m(a=1, b) %}{% endmacro %}", NULL, 1, "non-default argument");
    expect_error("{% for x in y recursive %}{% endfor %}", NULL, 1, "recursive");
    expect_error("{{ x is a is b }}", NULL, 1, "chain");
    /* runtime */
    expect_error("line one\n{{ raise_exception('Only user and assistant roles are supported!') }}", NULL, 2,
                 "Only user and assistant roles are supported!");
    expect_error("{{ x|nosuchfilter }}", NULL, 1, "no filter named 'nosuchfilter'");
    /* unknown filters fail at load time unless inside an if, as Jinja2's compiler */
    {
        eng_jinja *t = NULL;
        eng_error e = {{0}};
        const char *src = "a\n{% for i in [1] %}{{ i|nope }}{% endfor %}";
        CHECK(eng_jinja_parse(src, strlen(src), &t, &e) == -1 &&
                  strstr(e.msg, "template line 2: no filter named 'nope'"),
              "load-time filter check: %s", e.msg);
        src = "{% if false %}{{ i|nope }}{% endif %}ok";
        CHECK(eng_jinja_parse(src, strlen(src), &t, &e) == 0, "deferred filter check: %s", e.msg);
        eng_jinja_free(t);
    }
    expect_error("{% if true %}\n{{ 1|nope }}{% endif %}", NULL, 2, "no filter named 'nope'");
    expect_error("{{ x is nosuchtest }}", NULL, 1, "no test named 'nosuchtest'");
    expect_error("{{ missing_fn() }}", NULL, 1, "'missing_fn' is undefined");
    expect_error("{{ missing.attr }}", NULL, 1, "'missing' is undefined");
    expect_error("{{ d.nokey.attr }}", "{\"d\": {}}", 1, "'dict object' has no attribute 'nokey'");
    expect_error("{{ missing + 1 }}", NULL, 1, "'missing' is undefined");
    expect_error("{{ 'a' + 1 }}", NULL, 1, "can only concatenate str");
    expect_error("{{ 1 / 0 }}", NULL, 1, "division by zero");
    expect_error("{{ 5 % 0 }}", NULL, 1, "modulo by zero");
    expect_error("{{ 'a' < 1 }}", NULL, 1, "not supported between");
    expect_error("{{ n() }}", "{\"n\": 1}", 1, "not callable");
    expect_error("{{ 9223372036854775807 + 1 }}", NULL, 1, "integer overflow");
    expect_error("{{ 2 ** 64 }}", NULL, 1, "integer overflow");
    expect_error("{{ l.append(1) }}", "{\"l\": []}", 1, "unsafe");
    expect_error("{% set d.x = 1 %}", "{\"d\": {}}", 1, "non-namespace");
    expect_error("{{ x|tojson }}", NULL, 1, "not JSON serializable");
    expect_error("{% for a, b in [[1, 2, 3]] %}{% endfor %}", NULL, 1, "too many values to unpack");
    expect_error("{{ [1][::0] }}", NULL, 1, "slice step cannot be zero");
    expect_error("{{ 'x'.split('') }}", NULL, 1, "empty separator");
    expect_error("{% macro m(a) %}{% endmacro %}{{ m(1, a=2) }}", NULL, 1, "multiple values");
    expect_error("{{ range(1, 2, 0) }}", NULL, 1, "must not be zero");
    expect_error("{{ 3 in 5 }}", NULL, 1, "not iterable");
    expect_error("{% for x in 5 %}{% endfor %}", NULL, 1, "not iterable");
    expect_error("{{ 'abc'.startswith(1) }}", NULL, 1, "expects a string");
    expect_error("{{ dict(1) }}", NULL, 1, "mapping");
    expect_error("{{ {[1]: 2} }}", NULL, 1, "unhashable");
    /* vars must be an object */
    eng_error err = {{0}};
    eng_jinja *t = NULL;
    eng_buf out = {0};
    cJSON *arr = cJSON_Parse("[1]");
    CHECK(eng_jinja_parse("x", 1, &t, &err) == 0, "%s", err.msg);
    CHECK(eng_jinja_render(t, arr, &out, &err) == -1 && strstr(err.msg, "JSON object"), "%s", err.msg);
    eng_jinja_free(t);
    eng_buf_free(&out);
    cJSON_Delete(arr);
    /* a NULL error pointer is allowed */
    CHECK(eng_jinja_parse("{% if %}", 8, &t, NULL) == -1 && t == NULL, "parse with NULL err");
}

static void test_limits(void)
{
    /* Each must stop with an error quickly, not hang or exhaust memory. */
    expect_error("{{ range(100001)|length }}", NULL, 1, "Range too big");
    expect_error("{% for i in range(100000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}", NULL, 1,
                 "runs too long");
    expect_error("{% for i in range(100000) %}{% set l = range(100000) %}{% endfor %}", NULL, 1, "too much memory");
    expect_error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", NULL, 1, "nested too deeply");
    expect_error("{% set s = 'x' * 1000000 %}{% for i in range(100) %}{{ s }}{% endfor %}", NULL, 1, "output exceeds");
    expect_error("{% set ns = namespace(s='xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx') %}{% for i in range(40) %}"
                 "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
                 NULL, 1, "too much memory");
    expect_error("{{ 'ab' * 100000000 }}", NULL, 1, "repetition too large");
    /* deep nesting in the source is a syntax error, not a stack overflow */
    size_t n = 100000;
    char *deep = malloc(2 * n + 16);
    strcpy(deep, "{{ ");
    for (size_t i = 0; i < n; i++)
        deep[3 + i] = '(';
    strcpy(deep + 3 + n, "1 }}");
    expect_error(deep, NULL, 1, "nested too deeply");
    for (size_t i = 0; i < n; i++)
        deep[3 + i] = '-';
    expect_error(deep, NULL, 1, "nested too deeply");
    char *blocks = malloc(n * 12 + 1);
    blocks[0] = 0;
    for (size_t i = 0; i < 1000; i++)
        strcat(blocks, "{% if 1 %}");
    expect_error(blocks, NULL, 1, "nested too deeply");
    free(blocks);
    /* long operator chains parse flat but evaluate deep */
    strcpy(deep, "{{ 1");
    for (size_t i = 0; i < 5000; i++)
        strcat(deep + 4 + i * 4, " + 1");
    strcat(deep, " }}");
    expect_error(deep, NULL, 1, "nested too deeply");
    free(deep);
    /* a million-term chain is refused when loading, without deep recursion */
    size_t terms = 1000000;
    char *chain = malloc(terms * 4 + 16);
    strcpy(chain, "{{ 1");
    for (size_t i = 0; i < terms; i++)
        memcpy(chain + 4 + i * 4, " + 1", 4);
    strcpy(chain + 4 + terms * 4, " }}");
    expect_error(chain, NULL, 1, "nested too deeply");
    free(chain);
    /* so is an elif chain that would recurse as deep */
    char *elifs = malloc(20 * 5000 + 64);
    strcpy(elifs, "{% if 0 %}");
    for (int i = 0; i < 5000; i++)
        strcat(elifs + strlen(elifs), "{% elif 0 %}");
    strcat(elifs, "{% endif %}");
    expect_error(elifs, NULL, 1, "nested too deeply");
    free(elifs);
    /* values nested deeper than can be printed */
    expect_error(
        "{% set ns = namespace(x=[]) %}{% for i in range(1000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x }}", NULL,
        1, "cannot print");
}

/* One parsed template rendered by several threads at once must give the same text. */
static eng_jinja *shared;
static void *render_thread(void *arg)
{
    (void)arg;
    cJSON *vars = cJSON_Parse("{\"items\": [\"b\", \"a\", \"c\"]}");
    int bad = 0;
    for (int i = 0; i < 200; i++) {
        eng_buf out = {0};
        eng_error err;
        if (eng_jinja_render(shared, vars, &out, &err) || strcmp(out.data, "a,b,c|c,b,a"))
            bad++;
        eng_buf_free(&out);
    }
    cJSON_Delete(vars);
    return (void *)(long)bad;
}

static void test_threads(void)
{
    const char *src = "{{ items|sort|join(',') }}|{{ items|sort(reverse=true)|join(',') }}";
    eng_error err;
    CHECK(eng_jinja_parse(src, strlen(src), &shared, &err) == 0, "%s", err.msg);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, render_thread, NULL);
    for (int i = 0; i < 4; i++) {
        void *bad;
        pthread_join(th[i], &bad);
        CHECK(bad == NULL, "thread %d had %ld bad renders", i, (long)bad);
    }
    eng_jinja_free(shared);
}

int main(void)
{
    test_basics();
    test_errors();
    test_limits();
    test_threads();
    return check_summary();
}
