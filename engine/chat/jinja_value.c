/* jinja_value.c: the interpreter's arena and value model, with Python semantics.
 *
 * Templates print values the way Python does (str(True) is "True", a list prints
 * as its repr with quoted strings, 1e16 as "1e+16"), compare them the way Python
 * does (1 == 1.0 == True, "a" < "b", lists lexicographically) and serialise them
 * the way json.dumps(ensure_ascii=False) does; the byte-identity of rendered
 * prompts depends on every one of these details. */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "chat/jinja_internal.h"

/* ---- arena ---- */

typedef struct jchunk {
    struct jchunk *next;
    size_t used, cap;
    max_align_t data[];
} jchunk;

void *ja_alloc(jarena *a, size_t n)
{
    void *p = ja_alloc_raw(a, n);
    if (p)
        memset(p, 0, n);
    return p;
}

void *ja_alloc_raw(jarena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (n == 0)
        n = 16;
    jchunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        if (a->limit && a->total + cap > a->limit) {
            a->exhausted = 1;
            return NULL;
        }
        c = malloc(sizeof *c + cap);
        if (!c) {
            a->exhausted = 1;
            return NULL;
        }
        c->next = a->head;
        c->used = 0;
        c->cap = cap;
        a->head = c;
        a->total += cap;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    return p;
}

char *ja_strndup(jarena *a, const char *s, size_t n)
{
    char *p = ja_alloc_raw(a, n + 1);
    if (p) {
        if (n)
            memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

void ja_free(jarena *a)
{
    jchunk *c = a->head;
    while (c) {
        jchunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
    a->total = 0;
}

/* ---- text buffer ---- */

int jb_append(jbuf *b, const void *data, size_t len)
{
    if (b->oom)
        return -1;
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + len + 1)
            cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p) {
            b->oom = 1;
            return -1;
        }
        b->data = p;
        b->cap = cap;
    }
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = 0;
    return 0;
}

int jb_puts(jbuf *b, const char *s)
{
    return jb_append(b, s, strlen(s));
}

int jb_printf(jbuf *b, const char *fmt, ...)
{
    char small[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = 1;
        return -1;
    }
    if ((size_t)n < sizeof small)
        return jb_append(b, small, (size_t)n);
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->oom = 1;
        return -1;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int rc = jb_append(b, big, (size_t)n);
    free(big);
    return rc;
}

void jb_free(jbuf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

/* ---- UTF-8 ---- */

int utf8_decode(const char *s, size_t len, size_t *pos)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t p = *pos;
    unsigned char c = u[p];
    int cp, n;
    if (c < 0x80) {
        *pos = p + 1;
        return c;
    } else if ((c & 0xE0) == 0xC0) {
        cp = c & 0x1F, n = 1;
    } else if ((c & 0xF0) == 0xE0) {
        cp = c & 0x0F, n = 2;
    } else if ((c & 0xF8) == 0xF0) {
        cp = c & 0x07, n = 3;
    } else {
        *pos = p + 1;
        return -1;
    }
    if (p + (size_t)n >= len) {
        *pos = p + 1;
        return -1;
    }
    for (int i = 1; i <= n; i++) {
        if ((u[p + i] & 0xC0) != 0x80) {
            *pos = p + 1;
            return -1;
        }
        cp = (cp << 6) | (u[p + i] & 0x3F);
    }
    *pos = p + (size_t)n + 1;
    return cp;
}

void utf8_encode(jbuf *out, int cp)
{
    char b[4];
    size_t n;
    if (cp < 0x80) {
        b[0] = (char)cp, n = 1;
    } else if (cp < 0x800) {
        b[0] = (char)(0xC0 | (cp >> 6)), b[1] = (char)(0x80 | (cp & 0x3F)), n = 2;
    } else if (cp < 0x10000) {
        b[0] = (char)(0xE0 | (cp >> 12)), b[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (char)(0x80 | (cp & 0x3F)), n = 3;
    } else {
        b[0] = (char)(0xF0 | (cp >> 18)), b[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        b[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), b[3] = (char)(0x80 | (cp & 0x3F)), n = 4;
    }
    jb_append(out, b, n);
}

size_t utf8_count(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            n++;
    return n;
}

size_t utf8_offset(const char *s, size_t len, size_t cp_index)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80) {
            if (n == cp_index)
                return i;
            n++;
        }
    return len;
}

/* Python's str.isspace(). */
int py_isspace(int cp)
{
    if ((cp >= 9 && cp <= 13) || (cp >= 0x1c && cp <= 0x20) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
        (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000)
        return 1;
    return 0;
}

/* ---- constructors ---- */

jv jv_none_v = {.kind = JV_NONE}, jv_true_v = {.kind = JV_BOOL, .u.b = 1}, jv_false_v = {.kind = JV_BOOL, .u.b = 0},
   jv_undef_v = {.kind = JV_UNDEF};

jv *jv_bool(int b)
{
    return b ? JV_TRUE_P : JV_FALSE_P;
}

static jv *jv_new(jarena *a, jv_kind kind)
{
    jv *v = ja_alloc(a, sizeof *v);
    if (v)
        v->kind = kind;
    return v;
}

/* Small ints are shared (as in CPython), so that counting loops allocate nothing. */
#define SMALL_INTS 1024
static jv small_ints[SMALL_INTS];
static pthread_once_t small_ints_once = PTHREAD_ONCE_INIT;

static void small_ints_init(void)
{
    for (int i = 0; i < SMALL_INTS; i++) {
        small_ints[i].kind = JV_INT;
        small_ints[i].u.i = i;
    }
}

jv *jv_int(jarena *a, long long i)
{
    if (i >= 0 && i < SMALL_INTS) {
        pthread_once(&small_ints_once, small_ints_init);
        return &small_ints[i];
    }
    jv *v = jv_new(a, JV_INT);
    if (v)
        v->u.i = i;
    return v;
}

jv *jv_float(jarena *a, double f)
{
    jv *v = jv_new(a, JV_FLOAT);
    if (v)
        v->u.f = f;
    return v;
}

jv *jv_str(jarena *a, const char *s, size_t len)
{
    jv *v = jv_new(a, JV_STR);
    if (!v)
        return NULL;
    char *p = ja_strndup(a, s, len);
    if (!p)
        return NULL;
    v->u.str.s = p;
    v->u.str.len = len;
    return v;
}

jv *jv_strz(jarena *a, const char *s)
{
    return jv_str(a, s, strlen(s));
}

jv *jv_undef(jarena *a, const char *name)
{
    jv *v = jv_new(a, JV_UNDEF);
    if (v)
        v->u.undef.name = name;
    return v;
}

jv *jv_list(jarena *a, jv_kind kind)
{
    return jv_new(a, kind);
}

int jv_list_push(jarena *a, jv *list, jv *item)
{
    if (list->u.list.len == list->u.list.cap) {
        size_t cap = list->u.list.cap ? list->u.list.cap * 2 : 4;
        jv **items = ja_alloc(a, cap * sizeof *items);
        if (!items)
            return -1;
        if (list->u.list.len)
            memcpy(items, list->u.list.items, list->u.list.len * sizeof *items);
        list->u.list.items = items;
        list->u.list.cap = cap;
    }
    list->u.list.items[list->u.list.len++] = item;
    return 0;
}

jv *jv_dict(jarena *a, jv_kind kind)
{
    return jv_new(a, kind);
}

jv *jv_dict_get(const jv *d, const jv *key)
{
    for (size_t i = 0; i < d->u.dict.len; i++)
        if (jv_eq(d->u.dict.keys[i], key))
            return d->u.dict.vals[i];
    return NULL;
}

jv *jv_dict_gets(const jv *d, const char *key)
{
    size_t n = strlen(key);
    for (size_t i = 0; i < d->u.dict.len; i++) {
        const jv *k = d->u.dict.keys[i];
        if (k->kind == JV_STR && k->u.str.len == n && !memcmp(k->u.str.s, key, n))
            return d->u.dict.vals[i];
    }
    return NULL;
}

int jv_dict_set(jarena *a, jv *d, jv *key, jv *val)
{
    for (size_t i = 0; i < d->u.dict.len; i++)
        if (jv_eq(d->u.dict.keys[i], key)) {
            d->u.dict.vals[i] = val;
            return 0;
        }
    if (d->u.dict.len == d->u.dict.cap) {
        size_t cap = d->u.dict.cap ? d->u.dict.cap * 2 : 4;
        jv **keys = ja_alloc(a, cap * sizeof *keys), **vals = ja_alloc(a, cap * sizeof *vals);
        if (!keys || !vals)
            return -1;
        if (d->u.dict.len) {
            memcpy(keys, d->u.dict.keys, d->u.dict.len * sizeof *keys);
            memcpy(vals, d->u.dict.vals, d->u.dict.len * sizeof *vals);
        }
        d->u.dict.keys = keys;
        d->u.dict.vals = vals;
        d->u.dict.cap = cap;
    }
    d->u.dict.keys[d->u.dict.len] = key;
    d->u.dict.vals[d->u.dict.len] = val;
    d->u.dict.len++;
    return 0;
}

jv *jv_from_json(jarena *a, const cJSON *j)
{
    if (cJSON_IsNull(j))
        return JV_NONE_P;
    if (cJSON_IsBool(j))
        return jv_bool(cJSON_IsTrue(j));
    if (cJSON_IsNumber(j)) {
        double d = j->valuedouble;
        if (d == floor(d) && fabs(d) <= 9007199254740992.0 && !(d == 0 && signbit(d)))
            return jv_int(a, (long long)d);
        return jv_float(a, d);
    }
    if (cJSON_IsString(j)) { /* the JSON outlives the render: no copy */
        jv *v = jv_new(a, JV_STR);
        if (v) {
            v->u.str.s = j->valuestring ? j->valuestring : "";
            v->u.str.len = strlen(v->u.str.s);
        }
        return v;
    }
    if (cJSON_IsArray(j)) {
        jv *l = jv_list(a, JV_LIST);
        if (!l)
            return NULL;
        for (const cJSON *c = j->child; c; c = c->next) {
            jv *item = jv_from_json(a, c);
            if (!item || jv_list_push(a, l, item))
                return NULL;
        }
        return l;
    }
    if (cJSON_IsObject(j)) {
        jv *d = jv_dict(a, JV_DICT);
        if (!d)
            return NULL;
        for (const cJSON *c = j->child; c; c = c->next) {
            jv *k = jv_strz(a, c->string ? c->string : ""), *v = jv_from_json(a, c);
            if (!k || !v || jv_dict_set(a, d, k, v))
                return NULL;
        }
        return d;
    }
    return JV_NONE_P;
}

/* ---- semantics ---- */

const char *jv_type_name(const jv *v)
{
    switch (v->kind) {
    case JV_UNDEF: return "Undefined";
    case JV_NONE: return "NoneType";
    case JV_BOOL: return "bool";
    case JV_INT: return "int";
    case JV_FLOAT: return "float";
    case JV_STR: return "str";
    case JV_LIST: return "list";
    case JV_TUPLE: return "tuple";
    case JV_DICT: return "dict";
    case JV_NS: return "Namespace";
    case JV_MACRO: return "Macro";
    case JV_FUNC: return "function";
    case JV_METHOD: return "method";
    case JV_LOOP: return "LoopContext";
    case JV_CYCLER: return "Cycler";
    }
    return "object";
}

int jv_truthy(const jv *v)
{
    switch (v->kind) {
    case JV_UNDEF:
    case JV_NONE: return 0;
    case JV_BOOL: return v->u.b;
    case JV_INT: return v->u.i != 0;
    case JV_FLOAT: return v->u.f != 0.0;
    case JV_STR: return v->u.str.len != 0;
    case JV_LIST:
    case JV_TUPLE: return v->u.list.len != 0;
    case JV_DICT: return v->u.dict.len != 0;
    default: return 1;
    }
}

int jv_is_num(const jv *v)
{
    return v->kind == JV_BOOL || v->kind == JV_INT || v->kind == JV_FLOAT;
}

double jv_num(const jv *v)
{
    return v->kind == JV_FLOAT ? v->u.f : v->kind == JV_INT ? (double)v->u.i : (double)v->u.b;
}

static long long jv_intval(const jv *v)
{
    return v->kind == JV_INT ? v->u.i : v->u.b;
}

static int eq_depth(const jv *x, const jv *y, int depth);

int jv_eq(const jv *x, const jv *y)
{
    return eq_depth(x, y, 0);
}

/* Beyond JINJA_MAX_VALUE_DEPTH containers compare unequal (Python would raise). */
static int eq_depth(const jv *x, const jv *y, int depth)
{
    if (jv_is_num(x) && jv_is_num(y)) {
        if (x->kind != JV_FLOAT && y->kind != JV_FLOAT)
            return jv_intval(x) == jv_intval(y);
        return jv_num(x) == jv_num(y);
    }
    if (x->kind != y->kind)
        return 0;
    switch (x->kind) {
    case JV_UNDEF:
    case JV_NONE: return 1;
    case JV_STR: return x->u.str.len == y->u.str.len && !memcmp(x->u.str.s, y->u.str.s, x->u.str.len);
    case JV_LIST:
    case JV_TUPLE:
        if (x->u.list.len != y->u.list.len || depth > JINJA_MAX_VALUE_DEPTH)
            return 0;
        for (size_t i = 0; i < x->u.list.len; i++)
            if (!eq_depth(x->u.list.items[i], y->u.list.items[i], depth + 1))
                return 0;
        return 1;
    case JV_DICT:
        if (x->u.dict.len != y->u.dict.len || depth > JINJA_MAX_VALUE_DEPTH)
            return 0;
        for (size_t i = 0; i < x->u.dict.len; i++) {
            const jv *o = jv_dict_get(y, x->u.dict.keys[i]);
            if (!o || !eq_depth(x->u.dict.vals[i], o, depth + 1))
                return 0;
        }
        return 1;
    case JV_FUNC: return x->u.func.id == y->u.func.id;
    default: return x == y;
    }
}

static int cmp_depth(const jv *x, const jv *y, int *res, int depth);

int jv_cmp(const jv *x, const jv *y, int *res)
{
    return cmp_depth(x, y, res, 0);
}

static int cmp_depth(const jv *x, const jv *y, int *res, int depth)
{
    if (jv_is_num(x) && jv_is_num(y)) {
        if (x->kind != JV_FLOAT && y->kind != JV_FLOAT) {
            long long a = jv_intval(x), b = jv_intval(y);
            *res = a < b ? -1 : a > b;
        } else {
            double a = jv_num(x), b = jv_num(y);
            if (isnan(a) || isnan(b)) { /* every comparison with nan is false */
                *res = 2;
                return 0;
            }
            *res = a < b ? -1 : a > b;
        }
        return 0;
    }
    if (x->kind == JV_STR && y->kind == JV_STR) {
        size_t n = x->u.str.len < y->u.str.len ? x->u.str.len : y->u.str.len;
        int c = memcmp(x->u.str.s, y->u.str.s, n);
        *res = c ? (c < 0 ? -1 : 1) : (x->u.str.len < y->u.str.len ? -1 : x->u.str.len > y->u.str.len);
        return 0;
    }
    if ((x->kind == JV_LIST || x->kind == JV_TUPLE) && x->kind == y->kind && depth <= JINJA_MAX_VALUE_DEPTH) {
        size_t n = x->u.list.len < y->u.list.len ? x->u.list.len : y->u.list.len;
        for (size_t i = 0; i < n; i++) {
            if (jv_eq(x->u.list.items[i], y->u.list.items[i]))
                continue;
            return cmp_depth(x->u.list.items[i], y->u.list.items[i], res, depth + 1);
        }
        *res = x->u.list.len < y->u.list.len ? -1 : x->u.list.len > y->u.list.len;
        return 0;
    }
    return -1;
}

/* Python's repr(float): the shortest digits that read back the same. */
void jv_float_repr(double f, jbuf *out)
{
    if (isnan(f)) {
        jb_puts(out, "nan");
        return;
    }
    if (isinf(f)) {
        jb_puts(out, f < 0 ? "-inf" : "inf");
        return;
    }
    char buf[64];
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*e", prec - 1, f);
        if (strtod(buf, NULL) == f)
            break;
    }
    /* buf is [-]d[.ddd]e[+-]XX: split into digits and exponent. */
    char digits[32];
    int nd = 0, neg = buf[0] == '-';
    const char *p = buf + neg;
    for (; *p && *p != 'e'; p++)
        if (*p != '.')
            digits[nd++] = *p;
    int exp = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    digits[nd] = 0;
    if (neg)
        jb_puts(out, "-");
    if (exp >= -5 + 1 && exp < 16) { /* fixed notation */
        if (exp >= 0) {
            for (int i = 0; i <= exp; i++)
                jb_append(out, i < nd ? &digits[i] : "0", 1);
            jb_puts(out, ".");
            if (nd > exp + 1)
                jb_append(out, digits + exp + 1, (size_t)(nd - exp - 1));
            else
                jb_puts(out, "0");
        } else {
            jb_puts(out, "0.");
            for (int i = 0; i < -exp - 1; i++)
                jb_puts(out, "0");
            jb_append(out, digits, (size_t)nd);
        }
    } else {
        jb_append(out, digits, 1);
        if (nd > 1) {
            jb_puts(out, ".");
            jb_append(out, digits + 1, (size_t)(nd - 1));
        }
        jb_printf(out, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    }
}

static int printable(int cp)
{
    if (cp < 0x20 || cp == 0x7f)
        return 0;
    if (cp < 0x7f)
        return 1;
    utf8proc_category_t c = utf8proc_category(cp);
    return !(c == UTF8PROC_CATEGORY_CC || c == UTF8PROC_CATEGORY_CF || c == UTF8PROC_CATEGORY_CS ||
             c == UTF8PROC_CATEGORY_CO || c == UTF8PROC_CATEGORY_CN || c == UTF8PROC_CATEGORY_ZL ||
             c == UTF8PROC_CATEGORY_ZP || c == UTF8PROC_CATEGORY_ZS);
}

static void str_repr(const char *s, size_t len, jbuf *out)
{
    int has_sq = memchr(s, '\'', len) != NULL, has_dq = memchr(s, '"', len) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    jb_append(out, &q, 1);
    size_t pos = 0;
    while (pos < len) {
        size_t start = pos;
        int cp = utf8_decode(s, len, &pos);
        if (cp == q || cp == '\\')
            jb_printf(out, "\\%c", cp);
        else if (cp == '\t')
            jb_puts(out, "\\t");
        else if (cp == '\n')
            jb_puts(out, "\\n");
        else if (cp == '\r')
            jb_puts(out, "\\r");
        else if (cp < 0)
            jb_printf(out, "\\x%02x", (unsigned char)s[start]);
        else if (printable(cp))
            jb_append(out, s + start, pos - start);
        else if (cp <= 0xff)
            jb_printf(out, "\\x%02x", cp);
        else if (cp <= 0xffff)
            jb_printf(out, "\\u%04x", cp);
        else
            jb_printf(out, "\\U%08x", cp);
    }
    jb_append(out, &q, 1);
}

static int out_ok(const jbuf *out)
{
    return out->oom ? -1 : 0;
}

static int repr_depth(const jv *v, jbuf *out, int depth);
static int str_depth(const jv *v, jbuf *out, int depth);

int jv_repr_out(const jv *v, jbuf *out)
{
    return repr_depth(v, out, 0);
}
int jv_str_out(const jv *v, jbuf *out)
{
    return str_depth(v, out, 0);
}

/* Fails (-1) on values nested deeper than JINJA_MAX_VALUE_DEPTH, or out of memory. */
static int repr_depth(const jv *v, jbuf *out, int depth)
{
    if (depth > JINJA_MAX_VALUE_DEPTH)
        return -1;
    switch (v->kind) {
    case JV_STR: str_repr(v->u.str.s, v->u.str.len, out); break;
    case JV_UNDEF: jb_puts(out, "Undefined"); break;
    case JV_LIST:
    case JV_TUPLE:
        jb_puts(out, v->kind == JV_LIST ? "[" : "(");
        for (size_t i = 0; i < v->u.list.len; i++) {
            if (i)
                jb_puts(out, ", ");
            if (repr_depth(v->u.list.items[i], out, depth + 1))
                return -1;
        }
        if (v->kind == JV_TUPLE && v->u.list.len == 1)
            jb_puts(out, ",");
        jb_puts(out, v->kind == JV_LIST ? "]" : ")");
        break;
    case JV_DICT:
    case JV_NS:
        if (v->kind == JV_NS)
            jb_puts(out, "<Namespace ");
        jb_puts(out, "{");
        for (size_t i = 0; i < v->u.dict.len; i++) {
            if (i)
                jb_puts(out, ", ");
            if (repr_depth(v->u.dict.keys[i], out, depth + 1))
                return -1;
            jb_puts(out, ": ");
            if (repr_depth(v->u.dict.vals[i], out, depth + 1))
                return -1;
        }
        jb_puts(out, v->kind == JV_NS ? "}>" : "}");
        break;
    default: return str_depth(v, out, depth);
    }
    return out_ok(out);
}

static int str_depth(const jv *v, jbuf *out, int depth)
{
    switch (v->kind) {
    case JV_UNDEF: jb_puts(out, ""); break;
    case JV_NONE: jb_puts(out, "None"); break;
    case JV_BOOL: jb_puts(out, v->u.b ? "True" : "False"); break;
    case JV_INT: jb_printf(out, "%lld", v->u.i); break;
    case JV_FLOAT: jv_float_repr(v->u.f, out); break;
    case JV_STR: jb_append(out, v->u.str.s, v->u.str.len); break;
    case JV_LIST:
    case JV_TUPLE:
    case JV_DICT:
    case JV_NS: return repr_depth(v, out, depth);
    case JV_MACRO: jb_printf(out, "<Macro '%s'>", v->u.macro.def->name); break;
    case JV_FUNC: jb_puts(out, "<built-in function>"); break;
    case JV_METHOD: jb_printf(out, "<built-in method %s>", v->u.method.name); break;
    case JV_LOOP: jb_printf(out, "<LoopContext %lld/%lld>", v->u.loop.index0 + 1, v->u.loop.length); break;
    case JV_CYCLER: jb_puts(out, "<Cycler>"); break;
    }
    return out_ok(out);
}

/* ---- json.dumps(ensure_ascii=False) ---- */

static void json_string(const char *s, size_t len, jbuf *out)
{
    jb_puts(out, "\"");
    size_t run = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char tmp[8];
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            if (c < 0x20) {
                snprintf(tmp, sizeof tmp, "\\u%04x", c);
                esc = tmp;
            }
        }
        if (esc) {
            jb_append(out, s + run, i - run);
            jb_puts(out, esc);
            run = i + 1;
        }
    }
    jb_append(out, s + run, len - run);
    jb_puts(out, "\"");
}

static void json_newline(jbuf *out, int indent, int level)
{
    jb_puts(out, "\n");
    for (int i = 0; i < indent * level; i++)
        jb_puts(out, " ");
}

static int json_key(const jv *k, jbuf *out, const char **bad)
{
    switch (k->kind) {
    case JV_STR: json_string(k->u.str.s, k->u.str.len, out); return 0;
    case JV_INT: jb_printf(out, "\"%lld\"", k->u.i); return 0;
    case JV_BOOL: jb_puts(out, k->u.b ? "\"true\"" : "\"false\""); return 0;
    case JV_NONE: jb_puts(out, "\"null\""); return 0;
    case JV_FLOAT: {
        jbuf tmp = {0};
        if (isnan(k->u.f))
            jb_puts(&tmp, "NaN");
        else if (isinf(k->u.f))
            jb_puts(&tmp, k->u.f < 0 ? "-Infinity" : "Infinity");
        else
            jv_float_repr(k->u.f, &tmp);
        jb_printf(out, "\"%s\"", tmp.data ? tmp.data : "");
        jb_free(&tmp);
        return 0;
    }
    default: *bad = "keys must be str, int, float, bool or None"; return -1;
    }
}

static int key_order(const void *a, const void *b)
{
    const jv *x = **(const jv *const *const *)a, *y = **(const jv *const *const *)b;
    int r = 0;
    jv_cmp(x, y, &r);
    return r;
}

static int json_value(const jv *v, jbuf *out, int indent, const char *const *seps, int sort_keys, int level,
                      const char **bad)
{
    if (level > JINJA_MAX_VALUE_DEPTH) {
        *bad = "nesting too deep";
        return -1;
    }
    switch (v->kind) {
    case JV_NONE: jb_puts(out, "null"); return 0;
    case JV_BOOL: jb_puts(out, v->u.b ? "true" : "false"); return 0;
    case JV_INT: jb_printf(out, "%lld", v->u.i); return 0;
    case JV_FLOAT:
        if (isnan(v->u.f))
            jb_puts(out, "NaN");
        else if (isinf(v->u.f))
            jb_puts(out, v->u.f < 0 ? "-Infinity" : "Infinity");
        else
            jv_float_repr(v->u.f, out);
        return 0;
    case JV_STR: json_string(v->u.str.s, v->u.str.len, out); return 0;
    case JV_LIST:
    case JV_TUPLE:
        if (!v->u.list.len) {
            jb_puts(out, "[]");
            return 0;
        }
        jb_puts(out, "[");
        for (size_t i = 0; i < v->u.list.len; i++) {
            if (i)
                jb_puts(out, seps[0]);
            if (indent >= 0)
                json_newline(out, indent, level + 1);
            if (json_value(v->u.list.items[i], out, indent, seps, sort_keys, level + 1, bad))
                return -1;
        }
        if (indent >= 0)
            json_newline(out, indent, level);
        jb_puts(out, "]");
        return 0;
    case JV_DICT: {
        size_t n = v->u.dict.len;
        if (!n) {
            jb_puts(out, "{}");
            return 0;
        }
        jv ***order = malloc(n * sizeof *order);
        if (!order) {
            *bad = "out of memory";
            return -1;
        }
        for (size_t i = 0; i < n; i++)
            order[i] = &v->u.dict.keys[i];
        if (sort_keys) {
            for (size_t i = 0; i < n; i++)
                if (v->u.dict.keys[i]->kind != JV_STR) {
                    free(order);
                    *bad = "sort_keys needs str keys";
                    return -1;
                }
            qsort(order, n, sizeof *order, key_order);
        }
        jb_puts(out, "{");
        int rc = 0;
        for (size_t i = 0; i < n && !rc; i++) {
            size_t k = (size_t)(order[i] - v->u.dict.keys);
            if (i)
                jb_puts(out, seps[0]);
            if (indent >= 0)
                json_newline(out, indent, level + 1);
            rc = json_key(v->u.dict.keys[k], out, bad);
            if (!rc) {
                jb_puts(out, seps[1]);
                rc = json_value(v->u.dict.vals[k], out, indent, seps, sort_keys, level + 1, bad);
            }
        }
        free(order);
        if (rc)
            return -1;
        if (indent >= 0)
            json_newline(out, indent, level);
        jb_puts(out, "}");
        return 0;
    }
    default: *bad = jv_type_name(v); return -1;
    }
}

int jv_json_out(const jv *v, jbuf *out, int indent, const char *item_sep, const char *key_sep, int sort_keys,
                const char **bad)
{
    const char *seps[2] = {item_sep ? item_sep : indent >= 0 ? "," : ", ", key_sep ? key_sep : ": "};
    *bad = NULL;
    if (json_value(v, out, indent, seps, sort_keys, 0, bad))
        return -1;
    if (out->oom) {
        *bad = "out of memory";
        return -1;
    }
    return 0;
}
