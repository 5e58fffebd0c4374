/* jinja_builtins.c: what templates call: filters, tests, attribute and item access,
 * methods of str/dict/list, and the global functions.
 *
 * Attribute access follows Jinja2's sandbox: `x.name` first looks for a method of
 * that name (so `msg.items` is dict.items), then for a key; `x[key]` looks for the
 * key first. Methods that would mutate a value are refused, as in the immutable
 * sandbox transformers uses. Strings are indexed, sliced and measured by code point.
 * tojson is transformers' override: json.dumps(x, ensure_ascii=False).
 *
 * Filters and tests are each one table sorted by name and searched with bsearch: a
 * filter's entry names its function and its parameters (bound before the call, so every
 * filter reports wrong arguments the same way), a test's its function or the value kinds
 * it accepts, and whether it takes an argument. Aliases ("d", "==", "lessthan") are
 * entries of their own that share a function. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <utf8proc.h>

#include "chat/jinja_internal.h"

enum { F_RANGE = 1, F_NAMESPACE, F_DICT, F_RAISE, F_STRFTIME, F_CYCLER };

static jv *nomem(jctx *c, int line)
{
    jnomem(c, line);
    return NULL;
}

/* v, or NULL with the out-of-memory error when the allocation that made v failed. */
static jv *or_nomem(jctx *c, int line, jv *v)
{
    return v ? v : nomem(c, line);
}

/* jfail for functions that return a value: NULL. */
static jv *err(jctx *c, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static jv *err(jctx *c, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    jvfail(c, line, fmt, ap);
    va_end(ap);
    return NULL;
}

int jbind(jctx *c, int line, const char *what, const char *const *params, int nparams, const jargs *a, jv **slots)
{
    for (int i = 0; i < nparams; i++)
        slots[i] = NULL;
    if (a->npos > nparams)
        return jfail(c, line, "%s takes at most %d argument%s (%d given)", what, nparams, nparams == 1 ? "" : "s",
                     a->npos);
    for (int i = 0; i < a->npos; i++)
        slots[i] = a->pos[i];
    for (int k = 0; k < a->nkw; k++) {
        int i;
        for (i = 0; i < nparams; i++)
            if (!strcmp(params[i], a->kwn[k]))
                break;
        if (i == nparams)
            return jfail(c, line, "%s got an unexpected keyword argument '%s'", what, a->kwn[k]);
        if (slots[i])
            return jfail(c, line, "%s got multiple values for argument '%s'", what, a->kwn[k]);
        slots[i] = a->kwv[k];
    }
    return 0;
}

#define BIND(what, ...)                                                \
    static const char *const P_[] = {__VA_ARGS__};                     \
    jv *S[sizeof P_ / sizeof *P_];                                     \
    if (jbind(c, line, what, P_, (int)(sizeof P_ / sizeof *P_), a, S)) \
    return NULL

static int as_int(jctx *c, int line, const jv *v, const char *what, long long *out)
{
    *out = 0; /* also when failing, so no caller's variable is ever left unset */
    if (v->kind == JV_INT || v->kind == JV_BOOL) {
        *out = v->kind == JV_INT ? v->u.i : v->u.b;
        return 0;
    }
    return jfail(c, line, "%s must be an integer, not '%s'", what, jv_type_name(v));
}

static int need_str(jctx *c, int line, const jv *v, const char *what)
{
    if (v->kind == JV_STR)
        return 0;
    if (v->kind == JV_UNDEF)
        return jfail(c, line, "%s", v->u.undef.name ? v->u.undef.name : "value is undefined");
    return jfail(c, line, "%s expects a string, not '%s'", what, jv_type_name(v));
}

static jv *str_of(jctx *c, int line, jbuf *b)
{
    if (b->oom) {
        jb_free(b);
        return nomem(c, line);
    }
    jv *v = jv_str(c->arena, b->data ? b->data : "", b->len);
    jb_free(b);
    return v ? v : nomem(c, line);
}

/* ---- iteration ---- */

jv *jinja_iter_list(jctx *c, int line, jv *v)
{
    jv *l;
    switch (v->kind) {
    case JV_LIST:
    case JV_TUPLE: return v;
    case JV_UNDEF: return or_nomem(c, line, jv_list(c->arena, JV_LIST));
    case JV_DICT:
        if (!(l = jv_list(c->arena, JV_LIST)))
            return nomem(c, line);
        for (size_t i = 0; i < v->u.dict.len; i++)
            if (jv_list_push(c->arena, l, v->u.dict.keys[i]))
                return nomem(c, line);
        return l;
    case JV_STR: {
        if (!(l = jv_list(c->arena, JV_LIST)))
            return nomem(c, line);
        size_t pos = 0;
        while (pos < v->u.str.len) {
            size_t start = pos;
            utf8_decode(v->u.str.s, v->u.str.len, &pos);
            jv *ch = jv_str(c->arena, v->u.str.s + start, pos - start);
            if (!ch || jv_list_push(c->arena, l, ch))
                return nomem(c, line);
        }
        return l;
    }
    default: jfail(c, line, "'%s' object is not iterable", jv_type_name(v)); return NULL;
    }
}

/* ---- attribute and item access ---- */

static const char *const STR_METHODS[] = {"startswith", "endswith", "split",   "rsplit",  "strip",      "lstrip",
                                          "rstrip",     "replace",  "upper",   "lower",   "title",      "capitalize",
                                          "find",       "rfind",    "count",   "join",    "splitlines", "isdigit",
                                          "isalpha",    "isalnum",  "isspace", "isupper", "islower",    NULL};
static const char *const DICT_METHODS[] = {"get", "items", "keys", "values", NULL};
static const char *const LIST_METHODS[] = {"index", "count", NULL};
static const char *const UNSAFE_METHODS[] = {"append", "extend",  "insert", "pop",     "remove",     "clear",
                                             "sort",   "reverse", "update", "popitem", "setdefault", NULL};

static int in_list(const char *const *names, const char *name)
{
    for (int i = 0; names[i]; i++)
        if (!strcmp(names[i], name))
            return 1;
    return 0;
}

static jv *method(jctx *c, int line, jv *self, const char *name)
{
    jv *m = jv_list(c->arena, JV_METHOD);
    if (!m)
        return nomem(c, line);
    m->u.method.self = self;
    m->u.method.name = name;
    return m;
}

static const char *obj_type_repr(const jv *v)
{
    switch (v->kind) {
    case JV_NONE: return "None";
    case JV_DICT: return "dict object";
    case JV_LIST: return "list object";
    case JV_TUPLE: return "tuple object";
    case JV_STR: return "str object";
    case JV_INT: return "int object";
    case JV_FLOAT: return "float object";
    case JV_BOOL: return "bool object";
    case JV_NS: return "jinja2.utils.Namespace object";
    default: return "object";
    }
}

static jv *missing_attr(jctx *c, int line, const jv *obj, const char *name)
{
    char *msg = ja_alloc(c->arena, strlen(name) + 80);
    if (!msg)
        return nomem(c, line);
    sprintf(msg, "'%s' has no attribute '%s'", obj_type_repr(obj), name);
    return or_nomem(c, line, jv_undef(c->arena, msg));
}

/* A dict's or namespace's key as an attribute. */
static jv *dict_attr(jctx *c, int line, const jv *obj, const char *name)
{
    jv *v = jv_dict_gets(obj, name);
    return v ? v : missing_attr(c, line, obj, name);
}

static jv *loop_attr(jctx *c, int line, jv *loop, const char *name)
{
    long long i = loop->u.loop.index0, n = loop->u.loop.length;
    jarena *A = c->arena;
    jv *v = NULL;
    if (!strcmp(name, "index0"))
        v = jv_int(A, i);
    else if (!strcmp(name, "index"))
        v = jv_int(A, i + 1);
    else if (!strcmp(name, "revindex0"))
        v = jv_int(A, n - i - 1);
    else if (!strcmp(name, "revindex"))
        v = jv_int(A, n - i);
    else if (!strcmp(name, "first"))
        return jv_bool(i == 0);
    else if (!strcmp(name, "last"))
        return jv_bool(i == n - 1);
    else if (!strcmp(name, "length"))
        v = jv_int(A, n);
    else if (!strcmp(name, "depth"))
        v = jv_int(A, loop->u.loop.depth);
    else if (!strcmp(name, "depth0"))
        v = jv_int(A, loop->u.loop.depth - 1);
    else if (!strcmp(name, "previtem"))
        return loop->u.loop.prev ? loop->u.loop.prev : jv_undef(A, "there is no previous item");
    else if (!strcmp(name, "nextitem"))
        return loop->u.loop.next ? loop->u.loop.next : jv_undef(A, "there is no next item");
    else if (!strcmp(name, "cycle"))
        return method(c, line, loop, "cycle");
    else
        return missing_attr(c, line, loop, name);
    return v ? v : nomem(c, line);
}

jv *jinja_getattr(jctx *c, int line, jv *obj, const char *name)
{
    switch (obj->kind) {
    case JV_UNDEF: jfail(c, line, "%s", obj->u.undef.name ? obj->u.undef.name : "value is undefined"); return NULL;
    case JV_DICT:
        if (in_list(DICT_METHODS, name))
            return method(c, line, obj, name);
        if (in_list(UNSAFE_METHODS, name))
            break;
        return dict_attr(c, line, obj, name);
    case JV_NS: return dict_attr(c, line, obj, name);
    case JV_STR:
        if (in_list(STR_METHODS, name))
            return method(c, line, obj, name);
        return missing_attr(c, line, obj, name);
    case JV_LIST:
    case JV_TUPLE:
        if (in_list(LIST_METHODS, name))
            return method(c, line, obj, name);
        if (obj->kind == JV_LIST && in_list(UNSAFE_METHODS, name))
            break;
        return missing_attr(c, line, obj, name);
    case JV_LOOP: return loop_attr(c, line, obj, name);
    case JV_CYCLER:
        if (!strcmp(name, "next") || !strcmp(name, "reset"))
            return method(c, line, obj, name);
        if (!strcmp(name, "current")) {
            jv *items = obj->u.cycler.items;
            return items->u.list.items[obj->u.cycler.pos % (long long)items->u.list.len];
        }
        return missing_attr(c, line, obj, name);
    default: return missing_attr(c, line, obj, name);
    }
    char *msg = ja_alloc(c->arena, strlen(name) + 80);
    if (!msg)
        return nomem(c, line);
    sprintf(msg, "access to attribute '%s' of '%s' object is unsafe", name, jv_type_name(obj));
    return or_nomem(c, line, jv_undef(c->arena, msg));
}

jv *jinja_getitem(jctx *c, int line, jv *obj, jv *key)
{
    if (obj->kind == JV_UNDEF) {
        jfail(c, line, "%s", obj->u.undef.name ? obj->u.undef.name : "value is undefined");
        return NULL;
    }
    if ((obj->kind == JV_LIST || obj->kind == JV_TUPLE || obj->kind == JV_STR) &&
        (key->kind == JV_INT || key->kind == JV_BOOL)) {
        long long i = key->kind == JV_INT ? key->u.i : key->u.b;
        long long n = obj->kind == JV_STR ? (long long)utf8_count(obj->u.str.s, obj->u.str.len)
                                          : (long long)obj->u.list.len;
        if (i < 0)
            i += n;
        if (i >= 0 && i < n) {
            if (obj->kind != JV_STR)
                return obj->u.list.items[i];
            size_t b0 = utf8_offset(obj->u.str.s, obj->u.str.len, (size_t)i);
            size_t b1 = utf8_offset(obj->u.str.s, obj->u.str.len, (size_t)i + 1);
            return or_nomem(c, line, jv_str(c->arena, obj->u.str.s + b0, b1 - b0));
        }
        char *msg = ja_alloc(c->arena, 80);
        if (!msg)
            return nomem(c, line);
        sprintf(msg, "%s has no element %lld", obj_type_repr(obj), key->kind == JV_INT ? key->u.i : key->u.b);
        return or_nomem(c, line, jv_undef(c->arena, msg));
    }
    if (obj->kind == JV_DICT || obj->kind == JV_NS) {
        jv *v = jv_dict_get(obj, key);
        if (v)
            return v;
    }
    if (key->kind == JV_STR && obj->kind != JV_NS)
        return jinja_getattr(c, line, obj, key->u.str.s);
    if (key->kind == JV_STR)
        return missing_attr(c, line, obj, key->u.str.s);
    char *msg = ja_alloc(c->arena, 80);
    if (!msg)
        return nomem(c, line);
    jbuf b = {0};
    jv_repr_out(key, &b);
    snprintf(msg, 80, "%s has no element %s", obj_type_repr(obj), b.data ? b.data : "");
    jb_free(&b);
    return or_nomem(c, line, jv_undef(c->arena, msg));
}

/* Python's slice index adjustment. */
static int slice_bound(jctx *c, int line, jv *v, long long len, long long step, int is_start, long long *out)
{
    if (!v || v->kind == JV_NONE) {
        *out = step > 0 ? (is_start ? 0 : len) : (is_start ? len - 1 : -1);
        return 0;
    }
    long long i = 0; /* as_int sets it on success; zeroed for -O2 flow analysis */
    if (as_int(c, line, v, "slice index", &i))
        return -1;
    if (i < 0) {
        i += len;
        if (i < 0)
            i = step < 0 ? -1 : 0;
    } else if (i >= len) {
        i = step < 0 ? len - 1 : len;
    }
    *out = i;
    return 0;
}

jv *jinja_slice(jctx *c, int line, jv *obj, jv *start, jv *stop, jv *stepv)
{
    long long step = 1, b, e;
    if (obj->kind == JV_UNDEF) {
        jfail(c, line, "%s", obj->u.undef.name ? obj->u.undef.name : "value is undefined");
        return NULL;
    }
    if (obj->kind != JV_LIST && obj->kind != JV_TUPLE && obj->kind != JV_STR)
        return err(c, line, "'%s' object is not subscriptable", jv_type_name(obj));
    if (stepv && stepv->kind != JV_NONE && as_int(c, line, stepv, "slice step", &step))
        return NULL;
    if (step == 0)
        return err(c, line, "slice step cannot be zero");
    size_t *offs = NULL;
    long long len;
    if (obj->kind == JV_STR) {
        len = (long long)utf8_count(obj->u.str.s, obj->u.str.len);
        offs = malloc(((size_t)len + 1) * sizeof *offs);
        if (!offs)
            return nomem(c, line);
        long long k = 0;
        for (size_t i = 0; i < obj->u.str.len; i++)
            if (((unsigned char)obj->u.str.s[i] & 0xC0) != 0x80)
                offs[k++] = i;
        offs[k] = obj->u.str.len;
    } else {
        len = (long long)obj->u.list.len;
    }
    jv *res = NULL;
    if (slice_bound(c, line, start, len, step, 1, &b) || slice_bound(c, line, stop, len, step, 0, &e))
        goto out;
    if (obj->kind == JV_STR) {
        jbuf buf = {0};
        for (long long i = b; step > 0 ? i < e : i > e; i += step)
            jb_append(&buf, obj->u.str.s + offs[i], offs[i + 1] - offs[i]);
        res = str_of(c, line, &buf);
    } else {
        res = jv_list(c->arena, obj->kind);
        for (long long i = b; res && (step > 0 ? i < e : i > e); i += step)
            if (jv_list_push(c->arena, res, obj->u.list.items[i]))
                res = NULL;
        if (!res)
            nomem(c, line);
    }
out:
    free(offs);
    return res;
}

/* ---- string helpers ---- */

typedef int (*cp_map)(int);
static int cp_upper(int cp)
{
    return (int)utf8proc_toupper(cp);
}
static int cp_lower(int cp)
{
    return (int)utf8proc_tolower(cp);
}

static jv *str_map(jctx *c, int line, const jv *s, cp_map f)
{
    jbuf b = {0};
    size_t pos = 0;
    while (pos < s->u.str.len) {
        size_t start = pos;
        int cp = utf8_decode(s->u.str.s, s->u.str.len, &pos);
        if (cp < 0)
            jb_append(&b, s->u.str.s + start, pos - start);
        else
            utf8_encode(&b, f(cp));
    }
    return str_of(c, line, &b);
}

static int is_cased(int cp)
{
    return utf8proc_islower(cp) || utf8proc_isupper(cp) || utf8proc_category(cp) == UTF8PROC_CATEGORY_LT;
}

/* Python's str.title(): a letter after a cased letter is lowered, others uppered. */
static jv *str_title(jctx *c, int line, const jv *s)
{
    jbuf b = {0};
    size_t pos = 0;
    int prev_cased = 0;
    while (pos < s->u.str.len) {
        int cp = utf8_decode(s->u.str.s, s->u.str.len, &pos);
        if (cp < 0)
            continue;
        int cased = is_cased(cp);
        utf8_encode(&b, cased ? (prev_cased ? cp_lower(cp) : (int)utf8proc_totitle(cp)) : cp);
        prev_cased = cased;
    }
    return str_of(c, line, &b);
}

static jv *str_capitalize(jctx *c, int line, const jv *s)
{
    jbuf b = {0};
    size_t pos = 0;
    int first = 1;
    while (pos < s->u.str.len) {
        int cp = utf8_decode(s->u.str.s, s->u.str.len, &pos);
        if (cp < 0)
            continue;
        utf8_encode(&b, first ? (int)utf8proc_totitle(cp) : cp_lower(cp));
        first = 0;
    }
    return str_of(c, line, &b);
}

static int in_chars(const jv *chars, int cp)
{
    if (!chars)
        return py_isspace(cp);
    size_t pos = 0;
    while (pos < chars->u.str.len)
        if (utf8_decode(chars->u.str.s, chars->u.str.len, &pos) == cp)
            return 1;
    return 0;
}

/* strip/lstrip/rstrip: which = 3 both ends, 1 left, 2 right. chars NULL = whitespace. */
static jv *str_strip(jctx *c, int line, jv *s, const jv *chars, int which)
{
    const char *p = s->u.str.s;
    size_t len = s->u.str.len, b = 0, e = len;
    if (which & 1) {
        while (b < len) {
            size_t q = b;
            int cp = utf8_decode(p, len, &q);
            if (!in_chars(chars, cp))
                break;
            b = q;
        }
    }
    if (which & 2) {
        while (e > b) {
            size_t q = e - 1;
            while (q > b && ((unsigned char)p[q] & 0xC0) == 0x80)
                q--;
            size_t r = q;
            int cp = utf8_decode(p, len, &r);
            if (!in_chars(chars, cp))
                break;
            e = q;
        }
    }
    if (b == 0 && e == len)
        return s;
    return or_nomem(c, line, jv_str(c->arena, p + b, e - b));
}

static jv *str_split(jctx *c, int line, jv *s, jv *sep, long long maxsplit)
{
    jv *l = jv_list(c->arena, JV_LIST);
    if (!l)
        return nomem(c, line);
    const char *p = s->u.str.s;
    size_t len = s->u.str.len;
    if (!sep || sep->kind == JV_NONE) { /* runs of whitespace, ends ignored */
        size_t pos = 0;
        long long splits = 0;
        while (pos < len) {
            size_t q = pos;
            while (q < len) {
                size_t r = q;
                if (!py_isspace(utf8_decode(p, len, &r)))
                    break;
                q = r;
            }
            pos = q;
            if (pos >= len)
                break;
            size_t end = pos;
            if (maxsplit >= 0 && splits >= maxsplit) {
                end = len; /* the remainder, trailing whitespace included */
            } else {
                while (end < len) {
                    size_t r = end;
                    if (py_isspace(utf8_decode(p, len, &r)))
                        break;
                    end = r;
                }
            }
            jv *part = jv_str(c->arena, p + pos, end - pos);
            if (!part || jv_list_push(c->arena, l, part))
                return nomem(c, line);
            splits++;
            pos = end;
            if (maxsplit >= 0 && splits > maxsplit)
                break;
        }
        return l;
    }
    if (need_str(c, line, sep, "split separator"))
        return NULL;
    if (!sep->u.str.len)
        return err(c, line, "empty separator");
    size_t pos = 0;
    long long splits = 0;
    for (;;) {
        const char *hit = maxsplit >= 0 && splits >= maxsplit
                              ? NULL
                              : memmem(p + pos, len - pos, sep->u.str.s, sep->u.str.len);
        size_t end = hit ? (size_t)(hit - p) : len;
        jv *part = jv_str(c->arena, p + pos, end - pos);
        if (!part || jv_list_push(c->arena, l, part))
            return nomem(c, line);
        if (!hit)
            break;
        pos = end + sep->u.str.len;
        splits++;
    }
    return l;
}

static jv *str_rsplit(jctx *c, int line, jv *s, jv *sep, long long maxsplit)
{
    if (maxsplit < 0 || !sep || sep->kind == JV_NONE)
        return maxsplit < 0 ? str_split(c, line, s, sep, -1) : err(c, line, "rsplit with maxsplit needs a separator");
    if (need_str(c, line, sep, "rsplit separator"))
        return NULL;
    if (!sep->u.str.len)
        return err(c, line, "empty separator");
    const char *p = s->u.str.s;
    size_t end = s->u.str.len, n = sep->u.str.len;
    jv *rev = jv_list(c->arena, JV_LIST), *l = jv_list(c->arena, JV_LIST);
    if (!rev || !l)
        return nomem(c, line);
    long long splits = 0;
    for (;;) {
        size_t hit = (size_t)-1;
        if (splits < maxsplit)
            for (size_t i = end >= n ? end - n + 1 : 0; i-- > 0;)
                if (!memcmp(p + i, sep->u.str.s, n)) {
                    hit = i;
                    break;
                }
        size_t start = hit == (size_t)-1 ? 0 : hit + n;
        jv *part = jv_str(c->arena, p + start, end - start);
        if (!part || jv_list_push(c->arena, rev, part))
            return nomem(c, line);
        if (hit == (size_t)-1)
            break;
        end = hit;
        splits++;
    }
    for (size_t i = rev->u.list.len; i-- > 0;)
        if (jv_list_push(c->arena, l, rev->u.list.items[i]))
            return nomem(c, line);
    return l;
}

static jv *str_replace(jctx *c, int line, jv *s, jv *old, jv *new, long long count)
{
    if (need_str(c, line, old, "replace") || need_str(c, line, new, "replace"))
        return NULL;
    jbuf b = {0};
    const char *p = s->u.str.s;
    size_t len = s->u.str.len, pos = 0;
    long long done = 0;
    if (!old->u.str.len) { /* Python inserts `new` around every character */
        while (count < 0 || done < count) {
            jb_append(&b, new->u.str.s, new->u.str.len);
            done++;
            if (pos >= len)
                break;
            size_t q = pos;
            utf8_decode(p, len, &q);
            jb_append(&b, p + pos, q - pos);
            pos = q;
        }
        jb_append(&b, p + pos, len - pos);
        return str_of(c, line, &b);
    }
    for (;;) {
        const char *hit = count >= 0 && done >= count ? NULL : memmem(p + pos, len - pos, old->u.str.s, old->u.str.len);
        if (!hit)
            break;
        jb_append(&b, p + pos, (size_t)(hit - p) - pos);
        jb_append(&b, new->u.str.s, new->u.str.len);
        pos = (size_t)(hit - p) + old->u.str.len;
        done++;
    }
    jb_append(&b, p + pos, len - pos);
    return str_of(c, line, &b);
}

/* startswith/endswith with a string or a tuple of strings. */
static int str_affix(jctx *c, int line, jv *s, jv *arg, int end)
{
    if (arg->kind == JV_TUPLE || arg->kind == JV_LIST) {
        for (size_t i = 0; i < arg->u.list.len; i++) {
            int r = str_affix(c, line, s, arg->u.list.items[i], end);
            if (r)
                return r;
        }
        return 0;
    }
    if (need_str(c, line, arg, end ? "endswith" : "startswith"))
        return -1;
    size_t n = arg->u.str.len;
    if (n > s->u.str.len)
        return 0;
    return !memcmp(s->u.str.s + (end ? s->u.str.len - n : 0), arg->u.str.s, n);
}

static int str_class(const jv *s, int which)
{
    size_t pos = 0;
    int any_cased = 0;
    if (!s->u.str.len)
        return 0;
    while (pos < s->u.str.len) {
        int cp = utf8_decode(s->u.str.s, s->u.str.len, &pos);
        utf8proc_category_t cat = utf8proc_category(cp);
        int alpha = cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO;
        int digit = cat == UTF8PROC_CATEGORY_ND;
        switch (which) {
        case 0:
            if (!digit)
                return 0;
            break;
        case 1:
            if (!alpha)
                return 0;
            break;
        case 2:
            if (!alpha && !digit && cat != UTF8PROC_CATEGORY_NL && cat != UTF8PROC_CATEGORY_NO)
                return 0;
            break;
        case 3:
            if (!py_isspace(cp))
                return 0;
            break;
        case 4:
            if (utf8proc_islower(cp))
                return 0;
            if (utf8proc_isupper(cp))
                any_cased = 1;
            break;
        case 5:
            if (utf8proc_isupper(cp))
                return 0;
            if (utf8proc_islower(cp))
                any_cased = 1;
            break;
        }
    }
    return which >= 4 ? any_cased : 1;
}

/* str.find/rfind/count by code point. */
static long long str_find(const jv *s, const jv *sub, int reverse)
{
    const char *p = s->u.str.s;
    size_t len = s->u.str.len, n = sub->u.str.len;
    if (n > len)
        return -1;
    long long found = -1;
    for (size_t i = 0; i + n <= len; i++) {
        if (!memcmp(p + i, sub->u.str.s, n) && ((unsigned char)p[i] & 0xC0) != 0x80) {
            found = (long long)utf8_count(p, i);
            if (!reverse)
                return found;
        }
    }
    return found;
}

static jv *join_items(jctx *c, int line, jv *items, const char *sep, size_t seplen, int strict)
{
    jbuf b = {0};
    for (size_t i = 0; i < items->u.list.len; i++) {
        jv *it = items->u.list.items[i];
        if (strict && it->kind != JV_STR) {
            jb_free(&b);
            jfail(c, line, "sequence item %zu: expected str instance, %s found", i, jv_type_name(it));
            return NULL;
        }
        if (i)
            jb_append(&b, sep, seplen);
        if (jv_str_out(it, &b)) {
            jb_free(&b);
            return nomem(c, line);
        }
    }
    return str_of(c, line, &b);
}

static jv *dict_items(jctx *c, int line, jv *d)
{
    jv *l = jv_list(c->arena, JV_LIST);
    if (!l)
        return nomem(c, line);
    for (size_t i = 0; i < d->u.dict.len; i++) {
        jv *t = jv_list(c->arena, JV_TUPLE);
        if (!t || jv_list_push(c->arena, t, d->u.dict.keys[i]) || jv_list_push(c->arena, t, d->u.dict.vals[i]) ||
            jv_list_push(c->arena, l, t))
            return nomem(c, line);
    }
    return l;
}

static jv *call_method(jctx *c, int line, jv *fn, const jargs *a)
{
    jv *self = fn->u.method.self;
    const char *name = fn->u.method.name;
    jarena *A = c->arena;
    if (self->kind == JV_STR) {
        if (!strcmp(name, "startswith") || !strcmp(name, "endswith")) {
            BIND(name, "prefix");
            if (!S[0])
                return err(c, line, "%s() takes at least 1 argument", name);
            int r = str_affix(c, line, self, S[0], name[0] == 'e');
            return r < 0 ? NULL : jv_bool(r);
        }
        if (!strcmp(name, "split") || !strcmp(name, "rsplit")) {
            BIND(name, "sep", "maxsplit");
            long long maxsplit = -1;
            if (S[1] && as_int(c, line, S[1], "maxsplit", &maxsplit))
                return NULL;
            return name[0] == 's' ? str_split(c, line, self, S[0], maxsplit)
                                  : str_rsplit(c, line, self, S[0], maxsplit);
        }
        if (!strcmp(name, "strip") || !strcmp(name, "lstrip") || !strcmp(name, "rstrip")) {
            BIND(name, "chars");
            if (S[0] && S[0]->kind == JV_NONE)
                S[0] = NULL;
            if (S[0] && need_str(c, line, S[0], name))
                return NULL;
            return str_strip(c, line, self, S[0], name[0] == 'l' ? 1 : name[0] == 'r' ? 2 : 3);
        }
        if (!strcmp(name, "replace")) {
            BIND(name, "old", "new", "count");
            long long count = -1;
            if (!S[0] || !S[1])
                return err(c, line, "replace() takes at least 2 arguments");
            if (S[2] && as_int(c, line, S[2], "count", &count))
                return NULL;
            return str_replace(c, line, self, S[0], S[1], count);
        }
        if (!strcmp(name, "join")) {
            BIND(name, "iterable");
            if (!S[0])
                return err(c, line, "join() takes exactly one argument");
            jv *items = jinja_iter_list(c, line, S[0]);
            return items ? join_items(c, line, items, self->u.str.s, self->u.str.len, 1) : NULL;
        }
        if (!strcmp(name, "find") || !strcmp(name, "rfind") || !strcmp(name, "count")) {
            BIND(name, "sub");
            if (!S[0] || need_str(c, line, S[0], name))
                return S[0] ? NULL : err(c, line, "%s() takes at least 1 argument", name);
            if (name[0] != 'c')
                return or_nomem(c, line, jv_int(A, str_find(self, S[0], name[0] == 'r')));
            long long n = 0;
            if (!S[0]->u.str.len)
                n = (long long)utf8_count(self->u.str.s, self->u.str.len) + 1;
            else
                for (const char *p = self->u.str.s, *end = p + self->u.str.len;
                     (p = memmem(p, (size_t)(end - p), S[0]->u.str.s, S[0]->u.str.len)); p += S[0]->u.str.len)
                    n++;
            return or_nomem(c, line, jv_int(A, n));
        }
        BIND(name);
        (void)S;
        if (!strcmp(name, "upper"))
            return str_map(c, line, self, cp_upper);
        if (!strcmp(name, "lower"))
            return str_map(c, line, self, cp_lower);
        if (!strcmp(name, "title"))
            return str_title(c, line, self);
        if (!strcmp(name, "capitalize"))
            return str_capitalize(c, line, self);
        if (!strcmp(name, "isdigit"))
            return jv_bool(str_class(self, 0));
        if (!strcmp(name, "isalpha"))
            return jv_bool(str_class(self, 1));
        if (!strcmp(name, "isalnum"))
            return jv_bool(str_class(self, 2));
        if (!strcmp(name, "isspace"))
            return jv_bool(str_class(self, 3));
        if (!strcmp(name, "isupper"))
            return jv_bool(str_class(self, 4));
        if (!strcmp(name, "islower"))
            return jv_bool(str_class(self, 5));
        if (!strcmp(name, "splitlines")) {
            jv *l = jv_list(A, JV_LIST);
            const char *p = self->u.str.s;
            size_t len = self->u.str.len, start = 0, i = 0;
            if (!l)
                return nomem(c, line);
            while (i < len) {
                size_t eol = 0;
                if (p[i] == '\n' || p[i] == '\v' || p[i] == '\f' || (p[i] >= 0x1c && p[i] <= 0x1e))
                    eol = 1;
                else if (p[i] == '\r')
                    eol = i + 1 < len && p[i + 1] == '\n' ? 2 : 1;
                if (eol) {
                    jv *part = jv_str(A, p + start, i - start);
                    if (!part || jv_list_push(A, l, part))
                        return nomem(c, line);
                    i += eol;
                    start = i;
                } else {
                    i++;
                }
            }
            if (start < len) {
                jv *part = jv_str(A, p + start, len - start);
                if (!part || jv_list_push(A, l, part))
                    return nomem(c, line);
            }
            return l;
        }
    } else if (self->kind == JV_DICT) {
        if (!strcmp(name, "get")) {
            BIND(name, "key", "default");
            if (!S[0])
                return err(c, line, "get() takes at least 1 argument");
            jv *v = jv_dict_get(self, S[0]);
            return v ? v : S[1] ? S[1] : JV_NONE_P;
        }
        BIND(name);
        (void)S;
        if (!strcmp(name, "items"))
            return dict_items(c, line, self);
        jv *l = jv_list(A, JV_LIST);
        if (!l)
            return nomem(c, line);
        for (size_t i = 0; i < self->u.dict.len; i++)
            if (jv_list_push(A, l, name[0] == 'k' ? self->u.dict.keys[i] : self->u.dict.vals[i]))
                return nomem(c, line);
        return l;
    } else if (self->kind == JV_LIST || self->kind == JV_TUPLE) {
        BIND(name, "value");
        if (!S[0])
            return err(c, line, "%s() takes exactly one argument", name);
        long long n = 0;
        for (size_t i = 0; i < self->u.list.len; i++)
            if (jv_eq(self->u.list.items[i], S[0])) {
                if (name[0] == 'i')
                    return or_nomem(c, line, jv_int(A, (long long)i));
                n++;
            }
        if (name[0] == 'i')
            return err(c, line, "value is not in list");
        return or_nomem(c, line, jv_int(A, n));
    } else if (self->kind == JV_LOOP) { /* loop.cycle(a, b, ...) */
        if (a->nkw || !a->npos)
            return err(c, line, "loop.cycle() needs at least one positional argument");
        return a->pos[self->u.loop.index0 % a->npos];
    } else if (self->kind == JV_CYCLER) {
        jv *items = self->u.cycler.items;
        if (!strcmp(name, "reset")) {
            self->u.cycler.pos = 0;
            return JV_NONE_P;
        }
        jv *v = items->u.list.items[self->u.cycler.pos % (long long)items->u.list.len];
        self->u.cycler.pos = (self->u.cycler.pos + 1) % (long long)items->u.list.len;
        return v;
    }
    return err(c, line, "unsupported method '%s' of '%s'", name, jv_type_name(self));
}

/* ---- globals ---- */

static const struct {
    const char *name;
    int id;
} GLOBALS[] = {{"range", F_RANGE},           {"namespace", F_NAMESPACE}, {"dict", F_DICT}, {"raise_exception", F_RAISE},
               {"strftime_now", F_STRFTIME}, {"cycler", F_CYCLER},       {NULL, 0}};

jv *jinja_global(jctx *c, const char *name)
{
    for (int i = 0; GLOBALS[i].name; i++)
        if (!strcmp(GLOBALS[i].name, name)) {
            jv *f = jv_list(c->arena, JV_FUNC);
            if (f)
                f->u.func.id = GLOBALS[i].id;
            return f;
        }
    return NULL;
}

static jv *kw_dict(jctx *c, int line, jv_kind kind, const jargs *a, const char *what)
{
    jv *d = jv_dict(c->arena, kind);
    if (!d)
        return nomem(c, line);
    if (a->npos > 1)
        return err(c, line, "%s() takes at most one positional argument", what);
    if (a->npos) {
        jv *src = a->pos[0];
        if (src->kind != JV_DICT && src->kind != JV_NS)
            return err(c, line, "%s() positional argument must be a mapping, not '%s'", what, jv_type_name(src));
        for (size_t i = 0; i < src->u.dict.len; i++)
            if (jv_dict_set(c->arena, d, src->u.dict.keys[i], src->u.dict.vals[i]))
                return nomem(c, line);
    }
    for (int i = 0; i < a->nkw; i++) {
        jv *k = jv_strz(c->arena, a->kwn[i]);
        if (!k || jv_dict_set(c->arena, d, k, a->kwv[i]))
            return nomem(c, line);
    }
    return d;
}

jv *jinja_call_builtin(jctx *c, int line, jv *fn, const jargs *a)
{
    if (fn->kind == JV_METHOD)
        return call_method(c, line, fn, a);
    jarena *A = c->arena;
    switch (fn->u.func.id) {
    case F_RANGE: {
        long long v[3] = {0, 0, 1};
        if (a->nkw || a->npos < 1 || a->npos > 3)
            return err(c, line, "range() takes 1 to 3 positional arguments");
        for (int i = 0; i < a->npos; i++)
            if (as_int(c, line, a->pos[i], "range() argument", &v[a->npos == 1 ? 1 : i]))
                return NULL;
        if (v[2] == 0)
            return err(c, line, "range() arg 3 must not be zero");
        long long n = v[2] > 0 ? (v[1] > v[0] ? (v[1] - v[0] + v[2] - 1) / v[2] : 0)
                               : (v[0] > v[1] ? (v[0] - v[1] - v[2] - 1) / -v[2] : 0);
        if (n > JINJA_MAX_RANGE) {
            jfail(c, line, "Range too big. The sandbox blocks ranges larger than MAX_RANGE (%d).", JINJA_MAX_RANGE);
            return NULL;
        }
        jv *l = jv_list(A, JV_LIST);
        if (!l)
            return nomem(c, line);
        for (long long i = 0; i < n; i++) {
            jv *x = jv_int(A, v[0] + i * v[2]);
            if (!x || jv_list_push(A, l, x))
                return nomem(c, line);
        }
        return l;
    }
    case F_NAMESPACE: return kw_dict(c, line, JV_NS, a, "namespace");
    case F_DICT: return kw_dict(c, line, JV_DICT, a, "dict");
    case F_RAISE: {
        jv *msg = a->npos ? jinja_to_str(c, line, a->pos[0]) : jv_strz(A, "raise_exception() called");
        if (!msg)
            return NULL;
        jfail(c, line, "%s", msg->u.str.s);
        return NULL;
    }
    case F_STRFTIME: {
        BIND("strftime_now", "format");
        if (!S[0] || need_str(c, line, S[0], "strftime_now"))
            return S[0] ? NULL : err(c, line, "strftime_now() takes exactly one argument");
        char buf[512];
        time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        size_t n = strftime(buf, sizeof buf, S[0]->u.str.s, &tm);
        return or_nomem(c, line, jv_str(A, buf, n));
    }
    case F_CYCLER: {
        if (a->nkw || !a->npos)
            return err(c, line, "cycler() needs at least one positional argument");
        jv *cy = jv_list(A, JV_CYCLER), *items = jv_list(A, JV_LIST);
        if (!cy || !items)
            return nomem(c, line);
        for (int i = 0; i < a->npos; i++)
            if (jv_list_push(A, items, a->pos[i]))
                return nomem(c, line);
        cy->u.cycler.items = items;
        return cy;
    }
    }
    return err(c, line, "unknown function");
}

/* ---- tests ---- */

/* A test: whether v passes, given its one argument (NULL for tests without one), or -1
 * after a failure. name is the name it was called by (aliases share a function). */
#define TEST(fn)                                                                     \
    static int fn(jctx *c __attribute__((unused)), int line __attribute__((unused)), \
                  const char *name __attribute__((unused)), jv *v, jv *arg __attribute__((unused)))

static int cmp_test(jctx *c, int line, int op, jv *x, jv *y)
{
    int r;
    if (x->kind == JV_UNDEF || y->kind == JV_UNDEF) {
        const char *name = (x->kind == JV_UNDEF ? x : y)->u.undef.name;
        return jfail(c, line, "%s", name ? name : "value is undefined");
    }
    if (jv_cmp(x, y, &r))
        return jfail(c, line, "cannot compare '%s' with '%s'", jv_type_name(x), jv_type_name(y));
    if (r == 2)
        return 0;
    return op == 0 ? r < 0 : op == 1 ? r <= 0 : op == 2 ? r > 0 : r >= 0;
}

TEST(t_false)
{
    return v->kind == JV_BOOL && !v->u.b;
}
TEST(t_true)
{
    return v->kind == JV_BOOL && v->u.b;
}
TEST(t_eq)
{
    return jv_eq(v, arg);
}
TEST(t_ne)
{
    return !jv_eq(v, arg);
}
TEST(t_lt)
{
    return cmp_test(c, line, 0, v, arg);
}
TEST(t_le)
{
    return cmp_test(c, line, 1, v, arg);
}
TEST(t_gt)
{
    return cmp_test(c, line, 2, v, arg);
}
TEST(t_ge)
{
    return cmp_test(c, line, 3, v, arg);
}

TEST(t_sameas)
{
    int k = v->kind;
    if ((k == JV_NONE || k == JV_BOOL) && (int)arg->kind == k)
        return k == JV_NONE || v->u.b == arg->u.b;
    return v == arg || (k == JV_INT && arg->kind == JV_INT && v->u.i == arg->u.i && v->u.i >= -5 && v->u.i <= 256);
}

/* odd, even and divisibleby: value % d with Python's sign rule, for ints and floats alike */
TEST(t_parity)
{
    jv *d = arg;
    if (!jv_is_num(v) || (d && !jv_is_num(d)))
        return jfail(c, line, "test '%s' needs numbers, not '%s'", name, jv_type_name(jv_is_num(v) ? d : v));
    double dv = d ? jv_num(d) : 2.0;
    if (dv == 0)
        return jfail(c, line, "integer division or modulo by zero");
    if (v->kind != JV_FLOAT && (!d || d->kind != JV_FLOAT)) {
        long long x = v->kind == JV_INT ? v->u.i : v->u.b, m = (long long)dv, r = m == -1 ? 0 : x % m;
        if (r != 0 && ((r < 0) != (m < 0)))
            r += m;
        return name[0] == 'o' ? r == 1 : r == 0;
    }
    double r = fmod(jv_num(v), dv);
    if (r != 0 && ((r < 0) != (dv < 0)))
        r += dv;
    return name[0] == 'o' ? r == 1.0 : r == 0.0;
}

TEST(t_in)
{
    if (arg->kind == JV_STR) {
        if (v->kind != JV_STR)
            return jfail(c, line, "'in <string>' requires string as left operand, not %s", jv_type_name(v));
        return !v->u.str.len || memmem(arg->u.str.s, arg->u.str.len, v->u.str.s, v->u.str.len) != NULL;
    }
    if (arg->kind == JV_LIST || arg->kind == JV_TUPLE) {
        for (size_t i = 0; i < arg->u.list.len; i++)
            if (jv_eq(arg->u.list.items[i], v))
                return 1;
        return 0;
    }
    if (arg->kind == JV_DICT)
        return jv_dict_get(arg, v) != NULL;
    if (arg->kind == JV_UNDEF) /* iterates as empty */
        return 0;
    return jfail(c, line, "argument of type '%s' is not iterable", jv_type_name(arg));
}

TEST(t_case) /* lower, upper: Jinja2 tests str(value) */
{
    jv *sv = jinja_to_str(c, line, v);
    return sv ? str_class(sv, name[0] == 'l' ? 5 : 4) : -1;
}

TEST(t_known) /* filter, test: whether a filter or test of that name exists */
{
    return v->kind == JV_STR && (name[0] == 'f' ? jinja_has_filter(v->u.str.s) : jinja_has_test(v->u.str.s));
}

#define K(kind) (1u << (kind))
enum { ITERABLE = K(JV_STR) | K(JV_LIST) | K(JV_TUPLE) | K(JV_DICT) | K(JV_UNDEF) };

/* Every test, sorted by name (strcmp order) for bsearch. A test without a function passes
 * when the value's kind is in kinds; n_args is how many arguments it takes (0 or 1). */
static const struct jtest {
    const char *name;
    int (*fn)(jctx *c, int line, const char *name, jv *v, jv *arg);
    unsigned kinds;
    int n_args;
} TESTS[] = {
    {"!=", t_ne, 0, 1},
    {"<", t_lt, 0, 1},
    {"<=", t_le, 0, 1},
    {"==", t_eq, 0, 1},
    {">", t_gt, 0, 1},
    {">=", t_ge, 0, 1},
    {"boolean", NULL, K(JV_BOOL), 0},
    {"callable", NULL, K(JV_MACRO) | K(JV_FUNC) | K(JV_METHOD), 0},
    {"defined", NULL, ~K(JV_UNDEF), 0},
    {"divisibleby", t_parity, 0, 1},
    {"eq", t_eq, 0, 1},
    {"equalto", t_eq, 0, 1},
    {"escaped", NULL, 0, 0},
    {"even", t_parity, 0, 0},
    {"false", t_false, 0, 0},
    {"filter", t_known, 0, 0},
    {"float", NULL, K(JV_FLOAT), 0},
    {"ge", t_ge, 0, 1},
    {"greaterthan", t_gt, 0, 1},
    {"gt", t_gt, 0, 1},
    {"in", t_in, 0, 1},
    {"integer", NULL, K(JV_INT), 0},
    {"iterable", NULL, ITERABLE, 0},
    {"le", t_le, 0, 1},
    {"lessthan", t_lt, 0, 1},
    {"lower", t_case, 0, 0},
    {"lt", t_lt, 0, 1},
    {"mapping", NULL, K(JV_DICT), 0},
    {"ne", t_ne, 0, 1},
    {"none", NULL, K(JV_NONE), 0},
    {"number", NULL, K(JV_INT) | K(JV_FLOAT) | K(JV_BOOL), 0},
    {"odd", t_parity, 0, 0},
    {"sameas", t_sameas, 0, 1},
    {"sequence", NULL, ITERABLE, 0},
    {"string", NULL, K(JV_STR), 0},
    {"test", t_known, 0, 0},
    {"true", t_true, 0, 0},
    {"undefined", NULL, K(JV_UNDEF), 0},
    {"upper", t_case, 0, 0},
};

static int by_name(const void *key, const void *entry)
{
    return strcmp(key, *(const char *const *)entry); /* every table entry starts with its name */
}

static const struct jtest *find_test(const char *name)
{
    return bsearch(name, TESTS, sizeof TESTS / sizeof *TESTS, sizeof *TESTS, by_name);
}

int jinja_has_test(const char *name)
{
    return find_test(name) != NULL;
}

int jinja_test(jctx *c, int line, const char *name, jv *v, const jargs *a)
{
    const struct jtest *t = find_test(name);
    if (!t)
        return jfail(c, line, "no test named '%s'", name);
    if (a->npos + a->nkw > t->n_args)
        return jfail(c, line, "test '%s' takes %s argument%s (%d given)", name, t->n_args ? "one" : "no",
                     t->n_args ? "" : "s", a->npos + a->nkw);
    jv *arg = a->npos ? a->pos[0] : a->nkw ? a->kwv[0] : NULL;
    if (t->n_args && !arg)
        return jfail(c, line, "test '%s' needs an argument", name);
    return t->fn ? t->fn(c, line, name, v, arg) : (t->kinds & K(v->kind)) != 0;
}

/* ---- filters ---- */

/* Follows a dotted attribute path ("a.b", "0.name") as Jinja's make_attrgetter. */
static jv *attr_path(jctx *c, int line, jv *v, const jv *path)
{
    if (path->kind == JV_INT)
        return jinja_getitem(c, line, v, (jv *)path);
    if (path->kind != JV_STR)
        return err(c, line, "attribute must be a string, not '%s'", jv_type_name(path));
    const char *p = path->u.str.s;
    while (v) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        jv *key;
        int digits = n > 0;
        for (size_t i = 0; i < n; i++)
            if (p[i] < '0' || p[i] > '9')
                digits = 0;
        if (digits)
            key = jv_int(c->arena, strtoll(p, NULL, 10));
        else
            key = jv_str(c->arena, p, n);
        if (!key)
            return nomem(c, line);
        v = jinja_getitem(c, line, v, key);
        if (!dot)
            break;
        p = dot + 1;
    }
    return v;
}

/* Sort key for sort/dictsort/unique/min/max: lower-cased string unless case-sensitive. */
static jv *sort_key(jctx *c, int line, jv *v, int case_sensitive)
{
    if (!case_sensitive && v->kind == JV_STR)
        return str_map(c, line, v, cp_lower);
    return v;
}

typedef struct {
    jv *key, *item;
    size_t idx;
} keyed;

typedef struct {
    jctx *c;
    int line, failed, reverse;
} sort_state;

/* Python's sorted(): stable, and reverse keeps equal items in input order. */
static int keyed_cmp(const void *pa, const void *pb, void *arg)
{
    const keyed *a = pa, *b = pb;
    sort_state *st = arg;
    int r;
    if (st->failed)
        return 0;
    if (jv_cmp(a->key, b->key, &r)) {
        st->failed = 1;
        jfail(st->c, st->line, "'<' not supported between instances of '%s' and '%s'", jv_type_name(a->key),
              jv_type_name(b->key));
        return 0;
    }
    if (r == 2)
        r = 0;
    if (r)
        return st->reverse ? -r : r;
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

static jv *sorted(jctx *c, int line, jv *items, jv *keys, int reverse)
{
    size_t n = items->u.list.len;
    keyed *k = malloc((n ? n : 1) * sizeof *k);
    if (!k)
        return nomem(c, line);
    for (size_t i = 0; i < n; i++)
        k[i] = (keyed){keys->u.list.items[i], items->u.list.items[i], i};
    sort_state st = {c, line, 0, reverse};
    qsort_r(k, n, sizeof *k, keyed_cmp, &st);
    jv *l = st.failed ? NULL : jv_list(c->arena, JV_LIST);
    if (!st.failed && !l)
        nomem(c, line);
    for (size_t i = 0; l && i < n; i++)
        if (jv_list_push(c->arena, l, k[i].item))
            l = nomem(c, line);
    free(k);
    return l;
}

/* The arguments after the first `skip` positional ones (a test's or filter's own). */
static void args_after(const jargs *a, int skip, jargs *rest)
{
    *rest = *a;
    rest->npos = a->npos > skip ? a->npos - skip : 0;
    rest->pos = a->npos > skip ? a->pos + skip : NULL;
}

/* select/reject/selectattr/rejectattr. */
static jv *select_filter(jctx *c, int line, jv *seq, const jargs *a, int want, int by_attr)
{
    jv *items = jinja_iter_list(c, line, seq), *l = jv_list(c->arena, JV_LIST);
    if (!items || !l)
        return items ? nomem(c, line) : NULL;
    int skip = by_attr ? 1 : 0;
    if (by_attr && !a->npos)
        return err(c, line, "%s needs an attribute name", want ? "selectattr" : "rejectattr");
    const char *test = a->npos > skip ? (a->pos[skip]->kind == JV_STR ? a->pos[skip]->u.str.s : NULL) : NULL;
    if (a->npos > skip && !test)
        return err(c, line, "test name must be a string");
    jargs rest;
    args_after(a, skip + 1, &rest);
    for (size_t i = 0; i < items->u.list.len; i++) {
        jv *it = items->u.list.items[i], *x = it;
        if (by_attr && !(x = attr_path(c, line, it, a->pos[0])))
            return NULL;
        int r = test ? jinja_test(c, line, test, x, &rest) : jv_truthy(x);
        if (r < 0)
            return NULL;
        if (r == want && jv_list_push(c->arena, l, it))
            return nomem(c, line);
    }
    return l;
}

static jv *to_number(jctx *c, int line, jv *v, jv *def, int want_float)
{
    if (v->kind == JV_INT || v->kind == JV_BOOL)
        return want_float ? jv_float(c->arena, jv_num(v)) : v->kind == JV_BOOL ? jv_int(c->arena, v->u.b) : v;
    if (v->kind == JV_FLOAT) {
        if (want_float)
            return v;
        if (isnan(v->u.f) || isinf(v->u.f) || fabs(v->u.f) >= 9.2e18)
            return def;
        return jv_int(c->arena, (long long)v->u.f);
    }
    if (v->kind == JV_STR) {
        char *end;
        const char *s = v->u.str.s;
        while (*s == ' ' || *s == '\t' || *s == '\n')
            s++;
        if (want_float) {
            double d = strtod(s, &end);
            while (*end == ' ' || *end == '\t' || *end == '\n')
                end++;
            return end != s && !*end ? jv_float(c->arena, d) : def;
        }
        long long x = strtoll(s, &end, 10);
        while (*end == ' ' || *end == '\t' || *end == '\n')
            end++;
        if (end != s && !*end)
            return jv_int(c->arena, x);
        double d = strtod(s, &end); /* Jinja's int filter falls back to int(float(s)) */
        while (*end == ' ' || *end == '\t' || *end == '\n')
            end++;
        if (end != s && !*end && !isnan(d) && !isinf(d) && fabs(d) < 9.2e18)
            return jv_int(c->arena, (long long)d);
        return def;
    }
    (void)line;
    return def;
}

/* A filter: v filtered by the call's arguments, bound to the table's parameters in S or,
 * for a filter that reads them itself, as given in a. name is the name it was called by
 * (aliases share a function). */
#define FILTER(fn)                                                                                                    \
    static jv *fn(jctx *c, int line, const char *name __attribute__((unused)), jv *v, jv **S __attribute__((unused)), \
                  const jargs *a __attribute__((unused)))

FILTER(f_default)
{
    jarena *A = c->arena;
    int boolean = S[1] && jv_truthy(S[1]);
    if (v->kind == JV_UNDEF || (boolean && !jv_truthy(v)))
        return S[0] ? S[0] : or_nomem(c, line, jv_strz(A, ""));
    return v;
}

FILTER(f_length)
{
    jarena *A = c->arena;
    long long n;
    switch (v->kind) {
    case JV_STR: n = (long long)utf8_count(v->u.str.s, v->u.str.len); break;
    case JV_LIST:
    case JV_TUPLE: n = (long long)v->u.list.len; break;
    case JV_DICT: n = (long long)v->u.dict.len; break;
    case JV_UNDEF: n = 0; break;
    default: return err(c, line, "object of type '%s' has no len()", jv_type_name(v));
    }
    return or_nomem(c, line, jv_int(A, n));
}

FILTER(f_tojson)
{
    long long indent = -1;
    const char *seps[2] = {NULL, NULL};
    if (S[1] && S[1]->kind != JV_NONE) {
        if (as_int(c, line, S[1], "indent", &indent))
            return NULL;
        if (indent < 0)
            indent = 0;
        if (indent > 64)
            return err(c, line, "tojson indent too large");
    }
    if (S[2] && S[2]->kind != JV_NONE) {
        if ((S[2]->kind != JV_LIST && S[2]->kind != JV_TUPLE) || S[2]->u.list.len != 2 ||
            S[2]->u.list.items[0]->kind != JV_STR || S[2]->u.list.items[1]->kind != JV_STR)
            return err(c, line, "tojson separators must be a pair of strings");
        seps[0] = S[2]->u.list.items[0]->u.str.s;
        seps[1] = S[2]->u.list.items[1]->u.str.s;
    }
    if (S[0] && jv_truthy(S[0]))
        return err(c, line, "tojson(ensure_ascii=True) is not supported");
    jbuf b = {0};
    const char *bad;
    if (jv_json_out(v, &b, (int)indent, seps[0], seps[1], S[3] && jv_truthy(S[3]), &bad)) {
        jb_free(&b);
        return err(c, line, "tojson: Object of type %s is not JSON serializable", bad);
    }
    return str_of(c, line, &b);
}

FILTER(f_string)
{
    return jinja_to_str(c, line, v);
}

FILTER(f_trim)
{
    if (S[0] && S[0]->kind == JV_NONE)
        S[0] = NULL;
    jv *s = jinja_to_str(c, line, v);
    if (!s || (S[0] && need_str(c, line, S[0], "trim")))
        return NULL;
    return str_strip(c, line, s, S[0], 3);
}

FILTER(f_case)
{
    jv *s = jinja_to_str(c, line, v);
    if (!s)
        return NULL;
    if (name[0] == 'u')
        return str_map(c, line, s, cp_upper);
    if (name[0] == 'l')
        return str_map(c, line, s, cp_lower);
    if (name[0] == 'c')
        return str_capitalize(c, line, s);
    /* Jinja's title: capitalise each word split at whitespace, - ( { [ < */
    jbuf b = {0};
    size_t pos = 0;
    int word_start = 1;
    while (pos < s->u.str.len) {
        int cp = utf8_decode(s->u.str.s, s->u.str.len, &pos);
        if (cp < 0)
            continue;
        int sep = py_isspace(cp) || cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<';
        utf8_encode(&b, sep ? cp : word_start ? cp_upper(cp) : cp_lower(cp));
        word_start = sep;
    }
    return str_of(c, line, &b);
}

FILTER(f_replace)
{
    long long count = -1;
    jv *s = jinja_to_str(c, line, v);
    if (!s)
        return NULL;
    if (!S[0] || !S[1])
        return err(c, line, "replace filter needs old and new strings");
    if (S[2] && S[2]->kind != JV_NONE && as_int(c, line, S[2], "count", &count))
        return NULL;
    return str_replace(c, line, s, S[0], S[1], count);
}

FILTER(f_join)
{
    jarena *A = c->arena;
    jv *items = jinja_iter_list(c, line, v);
    if (!items)
        return NULL;
    if (S[1] && S[1]->kind != JV_NONE) {
        jv *m = jv_list(A, JV_LIST);
        if (!m)
            return nomem(c, line);
        for (size_t i = 0; i < items->u.list.len; i++) {
            jv *x = attr_path(c, line, items->u.list.items[i], S[1]);
            if (!x || jv_list_push(A, m, x))
                return x ? nomem(c, line) : NULL;
        }
        items = m;
    }
    jv *sep = S[0] ? jinja_to_str(c, line, S[0]) : NULL;
    if (S[0] && !sep)
        return NULL;
    return join_items(c, line, items, sep ? sep->u.str.s : "", sep ? sep->u.str.len : 0, 0);
}

FILTER(f_first_last)
{
    jarena *A = c->arena;
    jv *items = jinja_iter_list(c, line, v);
    if (!items)
        return NULL;
    if (!items->u.list.len)
        return or_nomem(
            c, line,
            jv_undef(A, name[0] == 'f' ? "No first item, sequence was empty." : "No last item, sequence was empty."));
    return items->u.list.items[name[0] == 'f' ? 0 : items->u.list.len - 1];
}

FILTER(f_list)
{
    jarena *A = c->arena;
    jv *items = jinja_iter_list(c, line, v);
    if (!items)
        return NULL;
    jv *l = jv_list(A, JV_LIST);
    for (size_t i = 0; l && i < items->u.list.len; i++)
        if (jv_list_push(A, l, items->u.list.items[i]))
            l = NULL;
    return l ? l : nomem(c, line);
}

FILTER(f_items)
{
    jarena *A = c->arena;
    if (v->kind == JV_UNDEF)
        return or_nomem(c, line, jv_list(A, JV_LIST));
    if (v->kind != JV_DICT)
        return err(c, line, "Can only get item pairs from a mapping, not '%s'", jv_type_name(v));
    return dict_items(c, line, v);
}

FILTER(f_dictsort)
{
    jarena *A = c->arena;
    if (v->kind != JV_DICT)
        return err(c, line, "dictsort needs a mapping, not '%s'", jv_type_name(v));
    int by_value = 0;
    if (S[1]) {
        if (S[1]->kind != JV_STR || (strcmp(S[1]->u.str.s, "key") && strcmp(S[1]->u.str.s, "value")))
            return err(c, line, "You can only sort by either \"key\" or \"value\"");
        by_value = S[1]->u.str.s[0] == 'v';
    }
    jv *items = dict_items(c, line, v), *keys = jv_list(A, JV_LIST);
    if (!items || !keys)
        return items ? nomem(c, line) : NULL;
    for (size_t i = 0; i < items->u.list.len; i++) {
        jv *k = sort_key(c, line, items->u.list.items[i]->u.list.items[by_value], S[0] && jv_truthy(S[0]));
        if (!k || jv_list_push(A, keys, k))
            return k ? nomem(c, line) : NULL;
    }
    return sorted(c, line, items, keys, S[2] && jv_truthy(S[2]));
}

/* sort, unique, min and max: the items keyed (by attribute, lower-cased unless
 * case_sensitive), then sorted, deduplicated or the smallest or largest picked. */
static jv *sort_like(jctx *c, int line, const char *name, jv *v, jv *reverse, jv *case_sensitive, jv *attribute)
{
    jarena *A = c->arena;
    jv *items = jinja_iter_list(c, line, v), *keys = jv_list(A, JV_LIST);
    if (!items || !keys)
        return items ? nomem(c, line) : NULL;
    for (size_t i = 0; i < items->u.list.len; i++) {
        jv *x = items->u.list.items[i];
        if (attribute && attribute->kind != JV_NONE && !(x = attr_path(c, line, x, attribute)))
            return NULL;
        jv *k = sort_key(c, line, x, case_sensitive && jv_truthy(case_sensitive));
        if (!k || jv_list_push(A, keys, k))
            return k ? nomem(c, line) : NULL;
    }
    if (name[0] == 'u') {
        jv *l = jv_list(A, JV_LIST), *seen = jv_list(A, JV_LIST);
        if (!l || !seen)
            return nomem(c, line);
        for (size_t i = 0; i < items->u.list.len; i++) {
            int dup = 0;
            for (size_t j = 0; j < seen->u.list.len && !dup; j++)
                dup = jv_eq(seen->u.list.items[j], keys->u.list.items[i]);
            if (!dup && (jv_list_push(A, seen, keys->u.list.items[i]) || jv_list_push(A, l, items->u.list.items[i])))
                return nomem(c, line);
        }
        return l;
    }
    if (name[0] == 'm') {
        if (!items->u.list.len)
            return or_nomem(c, line, jv_undef(A, "No aggregated item, sequence was empty."));
        size_t best = 0;
        for (size_t i = 1; i < items->u.list.len; i++) {
            int r;
            if (jv_cmp(keys->u.list.items[i], keys->u.list.items[best], &r))
                return err(c, line, "cannot compare '%s' with '%s'", jv_type_name(keys->u.list.items[i]),
                           jv_type_name(keys->u.list.items[best]));
            if ((name[1] == 'i' && r < 0) || (name[1] == 'a' && r > 0 && r != 2))
                best = i;
        }
        return items->u.list.items[best];
    }
    return sorted(c, line, items, keys, reverse && jv_truthy(reverse));
}

FILTER(f_sort)
{
    return sort_like(c, line, name, v, S[0], S[1], S[2]);
}

FILTER(f_unique_min_max)
{
    return sort_like(c, line, name, v, NULL, S[0], S[1]);
}

FILTER(f_reverse)
{
    jarena *A = c->arena;
    if (v->kind == JV_STR) {
        jv *neg = jv_int(A, -1);
        return neg ? jinja_slice(c, line, v, NULL, NULL, neg) : nomem(c, line);
    }
    jv *items = jinja_iter_list(c, line, v), *l = jv_list(A, JV_LIST);
    if (!items || !l)
        return items ? nomem(c, line) : NULL;
    for (size_t i = items->u.list.len; i-- > 0;)
        if (jv_list_push(A, l, items->u.list.items[i]))
            return nomem(c, line);
    return l;
}

FILTER(f_map)
{
    jarena *A = c->arena;
    jv *items = jinja_iter_list(c, line, v), *l = jv_list(A, JV_LIST);
    if (!items || !l)
        return items ? nomem(c, line) : NULL;
    jv *attribute = NULL, *def = NULL;
    for (int i = 0; i < a->nkw; i++) {
        if (!strcmp(a->kwn[i], "attribute"))
            attribute = a->kwv[i];
        else if (!strcmp(a->kwn[i], "default"))
            def = a->kwv[i];
    }
    if (!attribute && (!a->npos || a->pos[0]->kind != JV_STR))
        return err(c, line, "map needs a filter name or attribute=");
    jargs rest; /* map('filter', args..., kwargs...) passes the rest on */
    args_after(a, 1, &rest);
    for (size_t i = 0; i < items->u.list.len; i++) {
        jv *x = items->u.list.items[i];
        if (attribute) {
            x = attr_path(c, line, x, attribute);
            if (x && x->kind == JV_UNDEF && def)
                x = def;
        } else {
            x = jinja_filter(c, line, a->pos[0]->u.str.s, x, &rest);
        }
        if (!x || jv_list_push(A, l, x))
            return x ? nomem(c, line) : NULL;
    }
    return l;
}

FILTER(f_select)
{
    return select_filter(c, line, v, a, name[0] == 's', 0);
}

FILTER(f_selectattr)
{
    return select_filter(c, line, v, a, name[0] == 's', 1);
}

FILTER(f_sum)
{
    jarena *A = c->arena;
    jv *items = jinja_iter_list(c, line, v), *acc = S[1] ? S[1] : jv_int(A, 0);
    if (!items || !acc)
        return items ? nomem(c, line) : NULL;
    for (size_t i = 0; i < items->u.list.len; i++) {
        jv *x = items->u.list.items[i];
        if (S[0] && !(x = attr_path(c, line, x, S[0])))
            return NULL;
        if (!jv_is_num(x) || !jv_is_num(acc))
            return err(c, line, "sum: unsupported operand type(s) '%s' and '%s'", jv_type_name(acc), jv_type_name(x));
        if (acc->kind == JV_FLOAT || x->kind == JV_FLOAT)
            acc = jv_float(A, jv_num(acc) + jv_num(x));
        else {
            long long r;
            if (__builtin_add_overflow((long long)jv_num(acc), (long long)jv_num(x), &r))
                return err(c, line, "integer overflow");
            acc = jv_int(A, acc->kind == JV_INT ? acc->u.i + (x->kind == JV_INT ? x->u.i : x->u.b)
                                                : acc->u.b + (x->kind == JV_INT ? x->u.i : x->u.b));
        }
        if (!acc)
            return nomem(c, line);
    }
    return acc;
}

FILTER(f_abs)
{
    jarena *A = c->arena;
    if (v->kind == JV_FLOAT)
        return or_nomem(c, line, jv_float(A, fabs(v->u.f)));
    if (v->kind == JV_INT || v->kind == JV_BOOL) {
        long long x = v->kind == JV_INT ? v->u.i : v->u.b;
        if (x == (-9223372036854775807LL - 1))
            return err(c, line, "integer overflow");
        return or_nomem(c, line, jv_int(A, x < 0 ? -x : x));
    }
    return err(c, line, "bad operand type for abs(): '%s'", jv_type_name(v));
}

FILTER(f_number)
{
    jarena *A = c->arena;
    if (v->kind == JV_UNDEF)
        return err(c, line, "%s", v->u.undef.name ? v->u.undef.name : "value is undefined");
    jv *def = S[0] ? S[0] : name[0] == 'i' ? jv_int(A, 0) : jv_float(A, 0.0);
    if (!def)
        return nomem(c, line);
    return or_nomem(c, line, to_number(c, line, v, def, name[0] == 'f'));
}

FILTER(f_round)
{
    jarena *A = c->arena;
    long long prec = 0;
    if (S[0] && as_int(c, line, S[0], "precision", &prec))
        return NULL;
    const char *method = S[1] && S[1]->kind == JV_STR ? S[1]->u.str.s : "common";
    if (!jv_is_num(v))
        return err(c, line, "round needs a number, not '%s'", jv_type_name(v));
    if (v->kind != JV_FLOAT && !strcmp(method, "common") && prec >= 0) /* round(int) stays an int */
        return v->kind == JV_INT ? v : or_nomem(c, line, jv_int(A, v->u.b));
    double x = jv_num(v), m = pow(10.0, (double)prec), r;
    if (!strcmp(method, "common"))
        r = round(x * m) / m;
    else if (!strcmp(method, "ceil"))
        r = ceil(x * m) / m;
    else if (!strcmp(method, "floor"))
        r = floor(x * m) / m;
    else
        return err(c, line, "method must be common, ceil or floor");
    return or_nomem(c, line, jv_float(A, r));
}

FILTER(f_indent)
{
    jv *s = v;
    if (need_str(c, line, s, "indent"))
        return NULL;
    jbuf pad = {0}, b = {0};
    if (S[0] && S[0]->kind == JV_STR)
        jb_append(&pad, S[0]->u.str.s, S[0]->u.str.len);
    else {
        long long w = 4;
        if (S[0] && as_int(c, line, S[0], "width", &w))
            return NULL;
        for (long long i = 0; i < w && i < 1024; i++)
            jb_puts(&pad, " ");
    }
    int first = S[1] && jv_truthy(S[1]), blank = S[2] && jv_truthy(S[2]);
    const char *p = s->u.str.s, *end = p + s->u.str.len;
    int lineno = 0;
    while (p <= end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        int is_blank = 1;
        for (size_t i = 0; i < n; i++)
            if (!py_isspace((unsigned char)p[i]))
                is_blank = 0;
        if ((lineno > 0 || first) && (blank || !is_blank) && pad.len)
            jb_append(&b, pad.data, pad.len);
        jb_append(&b, p, n);
        if (!nl)
            break;
        jb_puts(&b, "\n");
        p = nl + 1;
        lineno++;
    }
    jb_free(&pad);
    return str_of(c, line, &b);
}

FILTER(f_wordcount)
{
    jarena *A = c->arena;
    /* Jinja2 counts runs of \w (letters, digits, underscore) */
    jv *s = jinja_to_str(c, line, v);
    if (!s)
        return NULL;
    long long words = 0;
    int in_word = 0;
    size_t pos = 0;
    while (pos < s->u.str.len) {
        int cp = utf8_decode(s->u.str.s, s->u.str.len, &pos);
        utf8proc_category_t cat = cp < 0 ? UTF8PROC_CATEGORY_CN : utf8proc_category(cp);
        int w = cp == '_' || (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) ||
                (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO) || cat == UTF8PROC_CATEGORY_MN ||
                cat == UTF8PROC_CATEGORY_MC;
        words += w && !in_word;
        in_word = w;
    }
    return or_nomem(c, line, jv_int(A, words));
}

FILTER(f_escape)
{
    jv *s = jinja_to_str(c, line, v);
    if (!s)
        return NULL;
    jbuf b = {0};
    for (size_t i = 0; i < s->u.str.len; i++) {
        char ch = s->u.str.s[i];
        switch (ch) {
        case '&': jb_puts(&b, "&amp;"); break;
        case '<': jb_puts(&b, "&lt;"); break;
        case '>': jb_puts(&b, "&gt;"); break;
        case '"': jb_puts(&b, "&#34;"); break;
        case '\'': jb_puts(&b, "&#39;"); break;
        default: jb_append(&b, &ch, 1);
        }
    }
    return str_of(c, line, &b);
}

FILTER(f_safe)
{
    (void)c;
    (void)line;
    return v;
}

FILTER(f_attr)
{
    if (!S[0] || need_str(c, line, S[0], "attr"))
        return S[0] ? NULL : err(c, line, "attr needs a name");
    return jinja_getattr(c, line, v, S[0]->u.str.s);
}

FILTER(f_batch)
{
    jarena *A = c->arena;
    long long n;
    if (!S[0] || as_int(c, line, S[0], "linecount", &n))
        return S[0] ? NULL : err(c, line, "batch needs a line count");
    if (n <= 0)
        return err(c, line, "batch line count must be positive");
    jv *items = jinja_iter_list(c, line, v), *l = jv_list(A, JV_LIST), *cur = NULL;
    if (!items || !l)
        return items ? nomem(c, line) : NULL;
    for (size_t i = 0; i < items->u.list.len; i++) {
        if (!cur || (long long)cur->u.list.len == n) {
            if (!(cur = jv_list(A, JV_LIST)) || jv_list_push(A, l, cur))
                return nomem(c, line);
        }
        if (jv_list_push(A, cur, items->u.list.items[i]))
            return nomem(c, line);
    }
    while (S[1] && cur && (long long)cur->u.list.len < n)
        if (jv_list_push(A, cur, S[1]))
            return nomem(c, line);
    return l;
}

#define MAX_PARAMS 4 /* the most any filter below declares (tojson) */
#define PARAMS(...) \
    (const char *const[]){__VA_ARGS__}, (int)(sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *))
#define NO_PARAMS NULL, 0
#define AS_GIVEN NULL, -1 /* the filter reads the call's arguments itself */

/* Every filter, sorted by name (strcmp order) for bsearch, with its parameters. */
static const struct jfilter {
    const char *name;
    jv *(*fn)(jctx *c, int line, const char *name, jv *v, jv **S, const jargs *a);
    const char *const *params;
    int n_params;
} FILTERS[] = {
    {"abs", f_abs, NO_PARAMS},
    {"attr", f_attr, PARAMS("name")},
    {"batch", f_batch, PARAMS("linecount", "fill_with")},
    {"capitalize", f_case, NO_PARAMS},
    {"count", f_length, NO_PARAMS},
    {"d", f_default, PARAMS("default_value", "boolean")},
    {"default", f_default, PARAMS("default_value", "boolean")},
    {"dictsort", f_dictsort, PARAMS("case_sensitive", "by", "reverse")},
    {"e", f_escape, NO_PARAMS},
    {"escape", f_escape, NO_PARAMS},
    {"first", f_first_last, NO_PARAMS},
    {"float", f_number, PARAMS("default", "base")},
    {"indent", f_indent, PARAMS("width", "first", "blank")},
    {"int", f_number, PARAMS("default", "base")},
    {"items", f_items, NO_PARAMS},
    {"join", f_join, PARAMS("d", "attribute")},
    {"last", f_first_last, NO_PARAMS},
    {"length", f_length, NO_PARAMS},
    {"list", f_list, NO_PARAMS},
    {"lower", f_case, NO_PARAMS},
    {"map", f_map, AS_GIVEN},
    {"max", f_unique_min_max, PARAMS("case_sensitive", "attribute")},
    {"min", f_unique_min_max, PARAMS("case_sensitive", "attribute")},
    {"reject", f_select, AS_GIVEN},
    {"rejectattr", f_selectattr, AS_GIVEN},
    {"replace", f_replace, PARAMS("old", "new", "count")},
    {"reverse", f_reverse, NO_PARAMS},
    {"round", f_round, PARAMS("precision", "method")},
    {"safe", f_safe, NO_PARAMS},
    {"select", f_select, AS_GIVEN},
    {"selectattr", f_selectattr, AS_GIVEN},
    {"sort", f_sort, PARAMS("reverse", "case_sensitive", "attribute")},
    {"string", f_string, NO_PARAMS},
    {"sum", f_sum, PARAMS("attribute", "start")},
    {"title", f_case, NO_PARAMS},
    {"tojson", f_tojson, PARAMS("ensure_ascii", "indent", "separators", "sort_keys")},
    {"trim", f_trim, PARAMS("chars")},
    {"unique", f_unique_min_max, PARAMS("case_sensitive", "attribute")},
    {"upper", f_case, NO_PARAMS},
    {"wordcount", f_wordcount, NO_PARAMS},
};

static const struct jfilter *find_filter(const char *name)
{
    return bsearch(name, FILTERS, sizeof FILTERS / sizeof *FILTERS, sizeof *FILTERS, by_name);
}

int jinja_has_filter(const char *name)
{
    return find_filter(name) != NULL;
}

jv *jinja_filter(jctx *c, int line, const char *name, jv *v, const jargs *a)
{
    const struct jfilter *f = find_filter(name);
    if (!f)
        return err(c, line, "no filter named '%s'", name);
    jv *S[MAX_PARAMS] = {0};
    if (f->n_params >= 0 && jbind(c, line, name, f->params, f->n_params, a, S))
        return NULL;
    return f->fn(c, line, name, v, S, a);
}
