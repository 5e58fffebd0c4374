/* jinja_eval.c: walks the AST and writes the rendered text; the public entry points.
 *
 * Scoping follows Jinja2: each iteration of a for loop, a macro call and a with block
 * open a scope whose assignments vanish when it ends (which is why templates carry
 * state out of loops in a namespace()), while if blocks share their enclosing scope. Names not
 * found in any scope come from the render variables, then from the globals
 * (range, namespace, dict, raise_exception, strftime_now, cycler, joiner).
 * Undefined values print as "" and are falsy, but using them (attribute, call,
 * arithmetic) is an error, as in Jinja2's default Undefined.
 * Every failure leaves one "template line N: ..." message. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja_internal.h"

struct eng_jinja {
    jarena arena;
    jnode *root;
};

int jvfail(jctx *c, int line, const char *fmt, va_list ap)
{
    if (!c->failed) {
        char msg[400];
        vsnprintf(msg, sizeof msg, fmt, ap);
        eng_fail(c->err, "template line %d: %s", line, msg);
        c->failed = 1;
    }
    return -1;
}

int jfail(jctx *c, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    jvfail(c, line, fmt, ap);
    va_end(ap);
    return -1;
}

int jnomem(jctx *c, int line)
{
    if (c->arena->exhausted)
        return jfail(c, line, "template uses too much memory (limit %zu MiB)", JINJA_MAX_MEMORY >> 20);
    return jfail(c, line, "out of memory");
}

/* ---- scopes ---- */

static jframe *frame_new(jctx *c, jframe *parent)
{
    jframe *f = ja_alloc(c->arena, sizeof *f);
    if (f)
        f->parent = parent;
    return f;
}

static int frame_set(jctx *c, int line, jframe *f, const char *name, jv *v)
{
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->names[i], name)) {
            f->vals[i] = v;
            return 0;
        }
    if (f->n == f->cap) {
        int cap = f->cap ? f->cap * 2 : 8;
        const char **names = ja_alloc(c->arena, (size_t)cap * sizeof *names);
        jv **vals = ja_alloc(c->arena, (size_t)cap * sizeof *vals);
        if (!names || !vals)
            return jnomem(c, line);
        if (f->n) {
            memcpy(names, f->names, (size_t)f->n * sizeof *names);
            memcpy(vals, f->vals, (size_t)f->n * sizeof *vals);
        }
        f->names = names;
        f->vals = vals;
        f->cap = cap;
    }
    f->names[f->n] = name;
    f->vals[f->n] = v;
    f->n++;
    return 0;
}

static jv *lookup(jctx *c, jframe *f, const char *name)
{
    for (; f; f = f->parent)
        for (int i = f->n - 1; i >= 0; i--)
            if (!strcmp(f->names[i], name))
                return f->vals[i];
    jv *v = jv_dict_gets(c->globals, name);
    if (v)
        return v;
    return jinja_global(c, name);
}

/* ---- output ---- */

static int emit(jctx *c, int line, const char *s, size_t len)
{
    c->out_total += len;
    if (c->out_total > JINJA_MAX_OUTPUT)
        return jfail(c, line, "template output exceeds %zu MiB", JINJA_MAX_OUTPUT >> 20);
    if (jb_append(c->out, s, len))
        return jnomem(c, line);
    return 0;
}

static int step(jctx *c, int line)
{
    if (++c->steps > JINJA_MAX_STEPS)
        return jfail(c, line, "template runs too long (more than %lld steps)", JINJA_MAX_STEPS);
    return 0;
}

jv *jinja_to_str(jctx *c, int line, jv *v)
{
    if (v->kind == JV_STR)
        return v;
    jbuf b = {0};
    if (jv_str_out(v, &b)) {
        jb_free(&b);
        jfail(c, line, "cannot print the value: nested more than %d deep, or out of memory", JINJA_MAX_VALUE_DEPTH);
        return NULL;
    }
    jv *s = jv_str(c->arena, b.data ? b.data : "", b.len);
    jb_free(&b);
    if (!s)
        jnomem(c, line);
    return s;
}

/* ---- expressions ---- */

static jv *eval(jctx *c, jframe *f, const jnode *n);
static int exec_body(jctx *c, jframe *f, const jnodes *body);

static int undefined_error(jctx *c, int line, const jv *v)
{
    return jfail(c, line, "%s", v->u.undef.name ? v->u.undef.name : "value is undefined");
}

static int eval_args(jctx *c, jframe *f, const jnode *n, jargs *a)
{
    memset(a, 0, sizeof *a);
    a->npos = n->list.n;
    a->nkw = n->list2.n;
    a->kwn = n->names;
    if (a->npos && !(a->pos = ja_alloc(c->arena, (size_t)a->npos * sizeof *a->pos)))
        return jnomem(c, n->line);
    if (a->nkw && !(a->kwv = ja_alloc(c->arena, (size_t)a->nkw * sizeof *a->kwv)))
        return jnomem(c, n->line);
    for (int i = 0; i < a->npos; i++)
        if (!(a->pos[i] = eval(c, f, n->list.v[i])))
            return -1;
    for (int i = 0; i < a->nkw; i++)
        if (!(a->kwv[i] = eval(c, f, n->list2.v[i])))
            return -1;
    return 0;
}

static jv *call_macro(jctx *c, int line, jv *macro, const jargs *a, jv *caller)
{
    const jnode *def = macro->u.macro.def;
    if (c->call_depth >= JINJA_MAX_CALL_DEPTH) {
        jfail(c, line, "macro calls nested too deeply (more than %d)", JINJA_MAX_CALL_DEPTH);
        return NULL;
    }
    jframe *fr = frame_new(c, macro->u.macro.closure);
    jv *varargs = jv_list(c->arena, JV_TUPLE), *kwargs = jv_dict(c->arena, JV_DICT);
    int np = def->list2.n;
    jv **bound = ja_alloc(c->arena, (size_t)(np + 1) * sizeof *bound);
    if (!fr || !varargs || !kwargs || !bound) {
        jnomem(c, line);
        return NULL;
    }
    for (int i = 0; i < a->npos; i++) {
        if (i < np)
            bound[i] = a->pos[i];
        else if (jv_list_push(c->arena, varargs, a->pos[i])) {
            jnomem(c, line);
            return NULL;
        }
    }
    for (int k = 0; k < a->nkw; k++) {
        int i;
        for (i = 0; i < np; i++)
            if (!strcmp(def->names[i], a->kwn[k]))
                break;
        if (i < np) {
            if (bound[i]) {
                jfail(c, line, "macro '%s' got multiple values for argument '%s'", def->name, a->kwn[k]);
                return NULL;
            }
            bound[i] = a->kwv[k];
        } else {
            jv *key = jv_strz(c->arena, a->kwn[k]);
            if (!key || jv_dict_set(c->arena, kwargs, key, a->kwv[k])) {
                jnomem(c, line);
                return NULL;
            }
        }
    }
    c->call_depth++;
    jv *result = NULL;
    for (int i = 0; i < np; i++) {
        jv *v = bound[i];
        if (!v && def->list2.v[i])
            v = eval(c, fr, def->list2.v[i]);
        else if (!v) {
            char *msg = ja_alloc(c->arena, 128 + strlen(def->names[i]));
            if (msg)
                sprintf(msg, "parameter '%s' was not provided", def->names[i]);
            v = jv_undef(c->arena, msg);
        }
        if (!v || frame_set(c, line, fr, def->names[i], v))
            goto out;
    }
    if (!caller)
        caller = macro->u.macro.caller;
    if (frame_set(c, line, fr, "varargs", varargs) || frame_set(c, line, fr, "kwargs", kwargs) ||
        (caller && frame_set(c, line, fr, "caller", caller)))
        goto out;
    jbuf body = {0}, *saved = c->out;
    c->out = &body;
    int rc = exec_body(c, fr, &def->list);
    c->out = saved;
    if (rc >= 0) {
        result = body.oom ? NULL : jv_str(c->arena, body.data ? body.data : "", body.len);
        if (!result)
            jnomem(c, line);
    }
    jb_free(&body);
out:
    c->call_depth--;
    return result;
}

jv *jinja_call_macro(jctx *c, int line, jv *macro, const jargs *a)
{
    return call_macro(c, line, macro, a, NULL);
}

static jv *call_value(jctx *c, int line, jv *fn, const jargs *a)
{
    switch (fn->kind) {
    case JV_MACRO: return call_macro(c, line, fn, a, NULL);
    case JV_FUNC:
    case JV_METHOD: return jinja_call_builtin(c, line, fn, a);
    case JV_UNDEF: undefined_error(c, line, fn); return NULL;
    default: jfail(c, line, "'%s' object is not callable", jv_type_name(fn)); return NULL;
    }
}

static int ckd_overflow(jctx *c, int line)
{
    return jfail(c, line, "integer overflow (the interpreter uses 64-bit integers)");
}

static long long ival(const jv *v)
{
    return v->kind == JV_INT ? v->u.i : v->u.b;
}

static jv *repeat(jctx *c, int line, jv *seq, long long times)
{
    if (times < 0)
        times = 0;
    if (seq->kind == JV_STR) {
        if (seq->u.str.len && (size_t)times > JINJA_MAX_OUTPUT / seq->u.str.len) {
            jfail(c, line, "string repetition too large");
            return NULL;
        }
        size_t len = seq->u.str.len * (size_t)times;
        char *p = ja_alloc_raw(c->arena, len + 1);
        jv *v = p ? jv_list(c->arena, JV_STR) : NULL;
        if (!v) {
            jnomem(c, line);
            return NULL;
        }
        for (long long i = 0; i < times; i++)
            memcpy(p + (size_t)i * seq->u.str.len, seq->u.str.s, seq->u.str.len);
        p[len] = 0;
        v->u.str.s = p;
        v->u.str.len = len;
        return v;
    }
    if (seq->u.list.len && (size_t)times > JINJA_MAX_RANGE * 10 / seq->u.list.len) {
        jfail(c, line, "list repetition too large");
        return NULL;
    }
    jv *v = jv_list(c->arena, seq->kind);
    if (!v) {
        jnomem(c, line);
        return NULL;
    }
    for (long long i = 0; i < times; i++)
        for (size_t k = 0; k < seq->u.list.len; k++)
            if (jv_list_push(c->arena, v, seq->u.list.items[k])) {
                jnomem(c, line);
                return NULL;
            }
    return v;
}

static const char *OP_TEXT[] = {"+", "-", "*", "/", "//", "%", "**", "~"};

static jv *binop(jctx *c, int line, int op, jv *x, jv *y)
{
    jarena *A = c->arena;
    if (op == OP_CONCAT) {
        jbuf b = {0};
        if (jv_str_out(x, &b) || jv_str_out(y, &b)) {
            jb_free(&b);
            jfail(c, line, "cannot print the value: nested more than %d deep, or out of memory", JINJA_MAX_VALUE_DEPTH);
            return NULL;
        }
        jv *v = jv_str(A, b.data ? b.data : "", b.len);
        jb_free(&b);
        if (!v)
            jnomem(c, line);
        return v;
    }
    if (x->kind == JV_UNDEF || y->kind == JV_UNDEF) {
        undefined_error(c, line, x->kind == JV_UNDEF ? x : y);
        return NULL;
    }
    jv *v = NULL;
    int both_int = (x->kind == JV_INT || x->kind == JV_BOOL) && (y->kind == JV_INT || y->kind == JV_BOOL);
    int both_num = jv_is_num(x) && jv_is_num(y);
    long long r;
    switch (op) {
    case OP_ADD:
        if (both_int) {
            if (__builtin_add_overflow(ival(x), ival(y), &r)) {
                ckd_overflow(c, line);
                return NULL;
            }
            v = jv_int(A, r);
        } else if (both_num) {
            v = jv_float(A, jv_num(x) + jv_num(y));
        } else if (x->kind == JV_STR && y->kind == JV_STR) {
            char *p = ja_alloc_raw(A, x->u.str.len + y->u.str.len + 1);
            if (p && (v = jv_list(A, JV_STR))) {
                memcpy(p, x->u.str.s, x->u.str.len);
                memcpy(p + x->u.str.len, y->u.str.s, y->u.str.len);
                p[x->u.str.len + y->u.str.len] = 0;
                v->u.str.s = p;
                v->u.str.len = x->u.str.len + y->u.str.len;
            }
        } else if ((x->kind == JV_LIST || x->kind == JV_TUPLE) && x->kind == y->kind) {
            if ((v = jv_list(A, x->kind)))
                for (int k = 0; k < 2; k++) {
                    jv *s = k ? y : x;
                    for (size_t i = 0; i < s->u.list.len; i++)
                        if (jv_list_push(A, v, s->u.list.items[i]))
                            v = NULL, k = 2, i = s->u.list.len;
                }
        } else if (x->kind == JV_STR) {
            jfail(c, line, "can only concatenate str (not \"%s\") to str", jv_type_name(y));
            return NULL;
        } else {
            goto unsupported;
        }
        break;
    case OP_SUB:
    case OP_MUL:
        if (op == OP_MUL && (x->kind == JV_STR || x->kind == JV_LIST || x->kind == JV_TUPLE) &&
            (y->kind == JV_INT || y->kind == JV_BOOL))
            return repeat(c, line, x, ival(y));
        if (op == OP_MUL && (y->kind == JV_STR || y->kind == JV_LIST || y->kind == JV_TUPLE) &&
            (x->kind == JV_INT || x->kind == JV_BOOL))
            return repeat(c, line, y, ival(x));
        if (both_int) {
            int ov = op == OP_SUB ? __builtin_sub_overflow(ival(x), ival(y), &r)
                                  : __builtin_mul_overflow(ival(x), ival(y), &r);
            if (ov) {
                ckd_overflow(c, line);
                return NULL;
            }
            v = jv_int(A, r);
        } else if (both_num) {
            v = jv_float(A, op == OP_SUB ? jv_num(x) - jv_num(y) : jv_num(x) * jv_num(y));
        } else {
            goto unsupported;
        }
        break;
    case OP_DIV:
        if (!both_num)
            goto unsupported;
        if (jv_num(y) == 0) {
            jfail(c, line, "division by zero");
            return NULL;
        }
        v = jv_float(A, jv_num(x) / jv_num(y));
        break;
    case OP_FLOORDIV:
    case OP_MOD:
        if (x->kind == JV_STR && op == OP_MOD) {
            jfail(c, line, "printf-style string formatting with %% is not supported");
            return NULL;
        }
        if (!both_num)
            goto unsupported;
        if (jv_num(y) == 0) {
            jfail(c, line, "integer division or modulo by zero");
            return NULL;
        }
        if (both_int) {
            long long a = ival(x), b = ival(y);
            if (a == (-9223372036854775807LL - 1) && b == -1) {
                ckd_overflow(c, line);
                return NULL;
            }
            long long q = a / b, m = a % b;
            if (m != 0 && ((m < 0) != (b < 0))) {
                q--;
                m += b;
            }
            v = jv_int(A, op == OP_FLOORDIV ? q : m);
        } else {
            double a = jv_num(x), b = jv_num(y);
            double q = __builtin_floor(a / b), m = a - q * b;
            if (op == OP_MOD) {
                m = __builtin_fmod(a, b);
                if (m != 0 && ((m < 0) != (b < 0)))
                    m += b;
                else if (m == 0)
                    m = __builtin_copysign(0.0, b); /* Python: a zero result takes the divisor's sign */
            }
            v = jv_float(A, op == OP_FLOORDIV ? q : m);
        }
        break;
    case OP_POW:
        if (!both_num)
            goto unsupported;
        if (both_int && ival(y) >= 0) {
            long long base = ival(x), e = ival(y), acc = 1;
            while (e > 0) {
                if ((e & 1) && __builtin_mul_overflow(acc, base, &acc)) {
                    ckd_overflow(c, line);
                    return NULL;
                }
                e >>= 1;
                if (e > 0 && __builtin_mul_overflow(base, base, &base)) {
                    ckd_overflow(c, line);
                    return NULL;
                }
            }
            v = jv_int(A, acc);
        } else {
            double r = __builtin_pow(jv_num(x), jv_num(y));
            if (__builtin_isinf(r) && !__builtin_isinf(jv_num(x)) && !__builtin_isinf(jv_num(y))) {
                jfail(c, line, "numerical result out of range");
                return NULL;
            }
            if (jv_num(x) == 0 && jv_num(y) < 0) {
                jfail(c, line, "0.0 cannot be raised to a negative power");
                return NULL;
            }
            v = jv_float(A, r);
        }
        break;
    default: goto unsupported;
    }
    if (!v)
        jnomem(c, line);
    return v;
unsupported:
    jfail(c, line, "unsupported operand type(s) for %s: '%s' and '%s'", OP_TEXT[op], jv_type_name(x), jv_type_name(y));
    return NULL;
}

/* `item in container`: 1/0, or -1 on error. */
static int contains(jctx *c, int line, jv *container, jv *item)
{
    switch (container->kind) {
    case JV_STR:
        if (item->kind != JV_STR)
            return jfail(c, line, "'in <string>' requires string as left operand, not %s", jv_type_name(item));
        if (!item->u.str.len)
            return 1;
        return memmem(container->u.str.s, container->u.str.len, item->u.str.s, item->u.str.len) != NULL;
    case JV_LIST:
    case JV_TUPLE:
        for (size_t i = 0; i < container->u.list.len; i++)
            if (jv_eq(container->u.list.items[i], item))
                return 1;
        return 0;
    case JV_DICT:
    case JV_NS: return jv_dict_get(container, item) != NULL;
    case JV_UNDEF: return 0;
    default: return jfail(c, line, "argument of type '%s' is not iterable", jv_type_name(container));
    }
}

static const char *CMP_TEXT[] = {"==", "!=", "<", "<=", ">", ">="};

static int compare(jctx *c, int line, int op, jv *x, jv *y)
{
    if (op == OP_EQ)
        return jv_eq(x, y);
    if (op == OP_NE)
        return !jv_eq(x, y);
    if (op == OP_IN || op == OP_NOTIN) {
        int r = contains(c, line, y, x);
        return r < 0 ? -1 : op == OP_IN ? r : !r;
    }
    if (x->kind == JV_UNDEF || y->kind == JV_UNDEF)
        return undefined_error(c, line, x->kind == JV_UNDEF ? x : y);
    int r;
    if (jv_cmp(x, y, &r))
        return jfail(c, line, "'%s' not supported between instances of '%s' and '%s'", CMP_TEXT[op - OP_EQ],
                     jv_type_name(x), jv_type_name(y));
    if (r == 2) /* nan */
        return 0;
    switch (op) {
    case OP_LT: return r < 0;
    case OP_LE: return r <= 0;
    case OP_GT: return r > 0;
    default: return r >= 0;
    }
}

static jv *apply_filter(jctx *c, jframe *f, const jnode *n, jv *block_base)
{
    jv *base = n->a ? eval(c, f, n->a) : block_base;
    if (!base)
        return NULL;
    jargs a;
    if (eval_args(c, f, n, &a))
        return NULL;
    return jinja_filter(c, n->line, n->name, base, &a);
}

/* Applies a filter chain whose innermost base is `base` (filter blocks, set blocks). */
static jv *apply_chain(jctx *c, jframe *f, const jnode *n, jv *base)
{
    if (n->a) {
        base = apply_chain(c, f, n->a, base);
        if (!base)
            return NULL;
    }
    jargs a;
    if (eval_args(c, f, n, &a))
        return NULL;
    return jinja_filter(c, n->line, n->name, base, &a);
}

static jv *eval_node(jctx *c, jframe *f, const jnode *n);

/* Long operator chains (1+1+1+...) parse into deep trees without deep parsing; this
 * bounds the evaluator's recursion so that they fail instead of overflowing the stack. */
static jv *eval(jctx *c, jframe *f, const jnode *n)
{
    if (c->eval_depth >= JINJA_MAX_EVAL_DEPTH) {
        jfail(c, n->line, "expression nested too deeply (more than %d levels)", JINJA_MAX_EVAL_DEPTH);
        return NULL;
    }
    c->eval_depth++;
    jv *v = eval_node(c, f, n);
    c->eval_depth--;
    return v;
}

static jv *eval_node(jctx *c, jframe *f, const jnode *n)
{
    jv *x, *y, *v = NULL;
    switch (n->kind) {
    case N_CONST: return n->value;
    case N_NAME:
        v = lookup(c, f, n->name);
        if (!v) {
            char *msg = ja_alloc(c->arena, strlen(n->name) + 32);
            if (msg)
                sprintf(msg, "'%s' is undefined", n->name);
            v = jv_undef(c->arena, msg);
        }
        break;
    case N_GETATTR:
        if (!(x = eval(c, f, n->a)))
            return NULL;
        return jinja_getattr(c, n->line, x, n->name);
    case N_GETITEM:
        if (!(x = eval(c, f, n->a)) || !(y = eval(c, f, n->b)))
            return NULL;
        return jinja_getitem(c, n->line, x, y);
    case N_SLICE: {
        jv *parts[3] = {NULL, NULL, NULL};
        const jnode *pn[3] = {n->b, n->c, n->d};
        if (!(x = eval(c, f, n->a)))
            return NULL;
        for (int i = 0; i < 3; i++)
            if (pn[i] && !(parts[i] = eval(c, f, pn[i])))
                return NULL;
        return jinja_slice(c, n->line, x, parts[0], parts[1], parts[2]);
    }
    case N_CALL: {
        jargs a;
        if (!(x = eval(c, f, n->a)) || eval_args(c, f, n, &a))
            return NULL;
        return call_value(c, n->line, x, &a);
    }
    case N_FILTER: return apply_filter(c, f, n, NULL);
    case N_TEST: {
        jargs a;
        if (!(x = eval(c, f, n->a)) || eval_args(c, f, n, &a))
            return NULL;
        int r = jinja_test(c, n->line, n->name, x, &a);
        if (r < 0)
            return NULL;
        return jv_bool(n->op ? !r : r);
    }
    case N_BINOP:
        if (!(x = eval(c, f, n->a)) || !(y = eval(c, f, n->b)))
            return NULL;
        return binop(c, n->line, n->op, x, y);
    case N_NEG:
    case N_POS:
        if (!(x = eval(c, f, n->a)))
            return NULL;
        if (x->kind == JV_UNDEF) {
            undefined_error(c, n->line, x);
            return NULL;
        }
        if (!jv_is_num(x)) {
            jfail(c, n->line, "bad operand type for unary %s: '%s'", n->kind == N_NEG ? "-" : "+", jv_type_name(x));
            return NULL;
        }
        if (n->kind == N_POS)
            v = x->kind == JV_BOOL ? jv_int(c->arena, x->u.b) : x;
        else if (x->kind == JV_FLOAT)
            v = jv_float(c->arena, -x->u.f);
        else if (ival(x) == (-9223372036854775807LL - 1)) {
            ckd_overflow(c, n->line);
            return NULL;
        } else
            v = jv_int(c->arena, -ival(x));
        break;
    case N_NOT:
        if (!(x = eval(c, f, n->a)))
            return NULL;
        return jv_bool(!jv_truthy(x));
    case N_AND:
    case N_OR:
        if (!(x = eval(c, f, n->a)))
            return NULL;
        if (jv_truthy(x) == (n->kind == N_OR))
            return x;
        return eval(c, f, n->b);
    case N_COMPARE:
        if (!(x = eval(c, f, n->a)))
            return NULL;
        for (int i = 0; i < n->list.n; i++) {
            if (!(y = eval(c, f, n->list.v[i])))
                return NULL;
            int r = compare(c, n->line, n->ops[i], x, y);
            if (r < 0)
                return NULL;
            if (!r)
                return JV_FALSE_P;
            x = y;
        }
        return JV_TRUE_P;
    case N_COND:
        if (!(x = eval(c, f, n->b)))
            return NULL;
        if (jv_truthy(x))
            return eval(c, f, n->a);
        if (n->c)
            return eval(c, f, n->c);
        v = jv_undef(c->arena, "the inline if-expression evaluated to false and has no else");
        break;
    case N_LIST:
    case N_TUPLE:
        if (!(v = jv_list(c->arena, n->kind == N_LIST ? JV_LIST : JV_TUPLE)))
            break;
        for (int i = 0; i < n->list.n; i++) {
            if (!(x = eval(c, f, n->list.v[i])))
                return NULL;
            if (jv_list_push(c->arena, v, x)) {
                v = NULL;
                break;
            }
        }
        break;
    case N_DICT:
        if (!(v = jv_dict(c->arena, JV_DICT)))
            break;
        for (int i = 0; i < n->list.n; i++) {
            if (!(x = eval(c, f, n->list.v[i])) || !(y = eval(c, f, n->list2.v[i])))
                return NULL;
            if (x->kind == JV_LIST || x->kind == JV_DICT || x->kind == JV_NS) {
                jfail(c, n->line, "unhashable type: '%s'", jv_type_name(x));
                return NULL;
            }
            if (jv_dict_set(c->arena, v, x, y)) {
                v = NULL;
                break;
            }
        }
        break;
    default: jfail(c, n->line, "statement used as an expression"); return NULL;
    }
    if (!v)
        jnomem(c, n->line);
    return v;
}

/* ---- statements ---- */

enum { FLOW_NEXT = 0, FLOW_BREAK = 1, FLOW_CONTINUE = 2 };

static int assign(jctx *c, jframe *f, const jnode *target, jv *v, int line)
{
    if (target->kind == N_NAME)
        return frame_set(c, line, f, target->name, v);
    if (target->kind == N_GETATTR) {
        jv *ns = lookup(c, f, target->a->name);
        if (!ns || ns->kind != JV_NS)
            return jfail(c, line, "cannot assign attribute on non-namespace object '%s'", target->a->name);
        jv *key = jv_strz(c->arena, target->name);
        if (!key || jv_dict_set(c->arena, ns, key, v))
            return jnomem(c, line);
        return 0;
    }
    /* tuple unpacking */
    if (v->kind != JV_LIST && v->kind != JV_TUPLE) {
        jv *items = jinja_iter_list(c, line, v);
        if (!items)
            return -1;
        v = items;
    }
    size_t want = (size_t)target->list.n;
    if (v->u.list.len != want)
        return jfail(c, line,
                     v->u.list.len > want ? "too many values to unpack (expected %zu)"
                                          : "not enough values to unpack (expected %zu)",
                     want);
    for (size_t i = 0; i < want; i++)
        if (frame_set(c, line, f, target->list.v[i]->name, v->u.list.items[i]))
            return -1;
    return 0;
}

static int exec_node(jctx *c, jframe *f, const jnode *n);

static int exec_for(jctx *c, jframe *f, const jnode *n)
{
    jv *seq = eval(c, f, n->b);
    if (!seq)
        return -1;
    jv *items = jinja_iter_list(c, n->line, seq);
    if (!items)
        return -1;
    jframe *lf = frame_new(c, f);
    if (!lf)
        return jnomem(c, n->line);
    if (n->c) { /* for x in xs if cond: filter first, so loop.* counts kept items */
        jv *kept = jv_list(c->arena, JV_LIST);
        if (!kept)
            return jnomem(c, n->line);
        for (size_t i = 0; i < items->u.list.len; i++) {
            if (step(c, n->line) || assign(c, lf, n->a, items->u.list.items[i], n->line))
                return -1;
            jv *ok = eval(c, lf, n->c);
            if (!ok)
                return -1;
            if (jv_truthy(ok) && jv_list_push(c->arena, kept, items->u.list.items[i]))
                return jnomem(c, n->line);
        }
        items = kept;
    }
    size_t len = items->u.list.len;
    /* One loop object, updated in place each iteration, as Jinja2's LoopContext. */
    jv *loop = jv_list(c->arena, JV_LOOP);
    if (!loop)
        return jnomem(c, n->line);
    for (size_t i = 0; i < len; i++) {
        if (step(c, n->line))
            return -1;
        loop->u.loop.index0 = (long long)i;
        loop->u.loop.length = (long long)len;
        loop->u.loop.prev = i > 0 ? items->u.list.items[i - 1] : NULL;
        loop->u.loop.next = i + 1 < len ? items->u.list.items[i + 1] : NULL;
        loop->u.loop.depth = 1;
        lf->n = 0; /* each iteration starts a fresh scope: a set in one is not seen by the next */
        if (assign(c, lf, n->a, items->u.list.items[i], n->line) || frame_set(c, n->line, lf, "loop", loop))
            return -1;
        int rc = exec_body(c, lf, &n->list);
        if (rc < 0)
            return -1;
        if (rc == FLOW_BREAK)
            break;
    }
    if (len == 0 && n->list2.n)
        return exec_body(c, lf, &n->list2) < 0 ? -1 : 0;
    return 0;
}

static int capture(jctx *c, jframe *f, const jnodes *body, jv **result, int line)
{
    jbuf b = {0}, *saved = c->out;
    c->out = &b;
    int rc = exec_body(c, f, body);
    c->out = saved;
    if (rc >= 0) {
        *result = b.oom ? NULL : jv_str(c->arena, b.data ? b.data : "", b.len);
        if (!*result)
            rc = jnomem(c, line);
    }
    jb_free(&b);
    return rc < 0 ? -1 : rc;
}

static int exec_node(jctx *c, jframe *f, const jnode *n)
{
    jv *v;
    if (step(c, n->line))
        return -1;
    switch (n->kind) {
    case N_TEXT: return emit(c, n->line, n->value->u.str.s, n->value->u.str.len);
    case N_OUTPUT:
        if (!(v = eval(c, f, n->a)))
            return -1;
        if (!(v = jinja_to_str(c, n->line, v)))
            return -1;
        return emit(c, n->line, v->u.str.s, v->u.str.len);
    case N_IF:
        if (!(v = eval(c, f, n->a)))
            return -1;
        return exec_body(c, f, jv_truthy(v) ? &n->list : &n->list2);
    case N_FOR: return exec_for(c, f, n);
    case N_SET:
        if (!(v = eval(c, f, n->b)))
            return -1;
        return assign(c, f, n->a, v, n->line);
    case N_SET_BLOCK: {
        int rc = capture(c, f, &n->list, &v, n->line);
        if (rc)
            return rc;
        if (n->d && !(v = apply_chain(c, f, n->d, v)))
            return -1;
        return assign(c, f, n->a, v, n->line);
    }
    case N_MACRO:
        if (!(v = jv_list(c->arena, JV_MACRO)))
            return jnomem(c, n->line);
        v->u.macro.def = n;
        v->u.macro.closure = f;
        return frame_set(c, n->line, f, n->name, v);
    case N_CALL_BLOCK: {
        jv *caller = jv_list(c->arena, JV_MACRO), *fn;
        jargs a;
        if (!caller)
            return jnomem(c, n->line);
        caller->u.macro.def = n;
        caller->u.macro.closure = f;
        if (!(fn = eval(c, f, n->b->a)) || eval_args(c, f, n->b, &a))
            return -1;
        if (fn->kind != JV_MACRO)
            return jfail(c, n->line, "{%% call %%} needs a macro, not '%s'", jv_type_name(fn));
        if (!(v = call_macro(c, n->line, fn, &a, caller)))
            return -1;
        return emit(c, n->line, v->u.str.s, v->u.str.len);
    }
    case N_FILTER_BLOCK: {
        int rc = capture(c, f, &n->list, &v, n->line);
        if (rc)
            return rc;
        if (!(v = apply_chain(c, f, n->a, v)) || !(v = jinja_to_str(c, n->line, v)))
            return -1;
        return emit(c, n->line, v->u.str.s, v->u.str.len);
    }
    case N_WITH: {
        jframe *wf = frame_new(c, f);
        if (!wf)
            return jnomem(c, n->line);
        for (int i = 0; i < n->list2.n; i++) {
            if (!(v = eval(c, f, n->list2.v[i])) || frame_set(c, n->line, wf, n->names[i], v))
                return -1;
        }
        return exec_body(c, wf, &n->list);
    }
    case N_BREAK: return FLOW_BREAK;
    case N_CONTINUE: return FLOW_CONTINUE;
    case N_BODY: return exec_body(c, f, &n->list);
    default: return jfail(c, n->line, "expression used as a statement");
    }
}

static int exec_body(jctx *c, jframe *f, const jnodes *body)
{
    for (int i = 0; i < body->n; i++) {
        int rc = exec_node(c, f, body->v[i]);
        if (rc)
            return rc;
    }
    return 0;
}

/* ---- public API ---- */

int eng_jinja_parse(const char *source, size_t len, eng_jinja **out, eng_error *err)
{
    *out = NULL;
    eng_jinja *t = calloc(1, sizeof *t);
    if (!t)
        return eng_fail(err, "out of memory");
    t->arena.limit = JINJA_MAX_MEMORY;
    jtoken *toks = NULL;
    int ntoks = 0;
    if (jinja_lex(&t->arena, source, len, &toks, &ntoks, err) ||
        jinja_parse_tokens(&t->arena, toks, ntoks, &t->root, err)) {
        free(toks);
        eng_jinja_free(t);
        return -1;
    }
    free(toks);
    *out = t;
    return 0;
}

void eng_jinja_free(eng_jinja *t)
{
    if (!t)
        return;
    ja_free(&t->arena);
    free(t);
}

int eng_jinja_render(const eng_jinja *t, const cJSON *vars, eng_buf *out, eng_error *err)
{
    if (vars && !cJSON_IsObject(vars))
        return eng_fail(err, "template variables must be a JSON object");
    jarena arena = {.limit = JINJA_MAX_MEMORY};
    jbuf text = {0};
    jctx c = {.arena = &arena, .err = err, .out = &text};
    int rc = -1;
    c.globals = vars ? jv_from_json(&arena, vars) : jv_dict(&arena, JV_DICT);
    jframe *root = frame_new(&c, NULL);
    if (!c.globals || !root) {
        jnomem(&c, 1);
        goto done;
    }
    rc = exec_body(&c, root, &t->root->list) < 0 ? -1 : 0;
done:
    if (text.len && eng_buf_append(out, text.data, text.len) && rc == 0)
        rc = eng_fail(err, "out of memory for the rendered text");
    jb_free(&text);
    ja_free(&arena);
    return rc;
}
