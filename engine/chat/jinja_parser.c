/* jinja_parser.c: tokens -> AST, a recursive-descent copy of Jinja2's grammar.
 *
 * Precedence, lowest first (as jinja2/parser.py): inline if-else, or, and, not,
 * comparisons (chained; in / not in), + -, ~, * / // %, **, unary - +, then
 * postfix (.attr, [index or slice], call) and filters/tests (`|f`, `is t`), which
 * bind to the unary operand. Node fields per kind:
 *   GETATTR a.name    GETITEM a[b]    SLICE a[b:c:d]    CALL a(list, names=list2)
 *   FILTER a|name(list, names=list2)  TEST a is [not(op)] name(list)
 *   BINOP a op b   NEG/POS/NOT a   AND/OR a b   COMPARE a, ops[i] list[i]
 *   COND a if b else c   LIST/TUPLE list   DICT list: list2
 *   FOR a in b if c: list else list2     IF a: list else list2
 *   SET a = b    SET_BLOCK a = list |d   MACRO name(names = defaults list2): list
 *   CALL_BLOCK b(call) caller(names = list2): list    FILTER_BLOCK a(filter chain): list
 *   WITH names = list2: list     OUTPUT a     TEXT value */
#include <stdio.h>
#include <string.h>

#include "chat/jinja_internal.h"

typedef struct parser {
    jarena *a;
    const jtoken *t;
    int n, pos;
    int depth;      /* expression nesting */
    int loop_depth; /* for break/continue */
    eng_error *err;
} parser;

static const jtoken *cur(parser *P)
{
    return &P->t[P->pos];
}
static const jtoken *peek(parser *P, int k)
{
    int i = P->pos + k;
    return &P->t[i < P->n ? i : P->n - 1];
}
static void advance(parser *P)
{
    if (P->pos < P->n - 1)
        P->pos++;
}

static int tok_is(const jtoken *t, jtok_kind kind, const char *s)
{
    return t->kind == kind && (!s || (t->len == strlen(s) && !memcmp(t->s, s, t->len)));
}
static int is_op(parser *P, const char *op)
{
    return tok_is(cur(P), T_OP, op);
}
static int is_name(parser *P, const char *name)
{
    return tok_is(cur(P), T_NAME, name);
}

static void describe(const jtoken *t, char *buf, size_t n)
{
    switch (t->kind) {
    case T_EOF: snprintf(buf, n, "end of template"); break;
    case T_DATA: snprintf(buf, n, "template data"); break;
    case T_VAR_BEGIN: snprintf(buf, n, "'{{'"); break;
    case T_VAR_END: snprintf(buf, n, "end of print statement"); break;
    case T_BLOCK_BEGIN: snprintf(buf, n, "'{%%'"); break;
    case T_BLOCK_END: snprintf(buf, n, "end of statement block"); break;
    case T_STRING: snprintf(buf, n, "string"); break;
    default: snprintf(buf, n, "'%.*s'", (int)(t->len > 40 ? 40 : t->len), t->s); break;
    }
}

static int pfail(parser *P, const char *fmt, const char *arg)
{
    if (cur(P)->kind == T_ERROR) /* the lexer's error came first */
        return eng_fail(P->err, "%s", cur(P)->s);
    char msg[256];
    snprintf(msg, sizeof msg, fmt, arg);
    return eng_fail(P->err, "template line %d: syntax error: %s", cur(P)->line, msg);
}

/* A syntax error about an already parsed node, reported at its line. */
static int pfail_at(parser *P, int line, const char *msg)
{
    if (cur(P)->kind == T_ERROR)
        return eng_fail(P->err, "%s", cur(P)->s);
    return eng_fail(P->err, "template line %d: syntax error: %s", line, msg);
}

static int unexpected(parser *P, const char *expected)
{
    char what[64], msg[200];
    describe(cur(P), what, sizeof what);
    if (expected)
        snprintf(msg, sizeof msg, "unexpected %s, expected %s", what, expected);
    else
        snprintf(msg, sizeof msg, "unexpected %s", what);
    return pfail(P, "%s", msg);
}

static int expect_op(parser *P, const char *op)
{
    if (!is_op(P, op)) {
        char e[16];
        snprintf(e, sizeof e, "'%s'", op);
        return unexpected(P, e);
    }
    advance(P);
    return 0;
}

static int expect_block_end(parser *P)
{
    if (cur(P)->kind != T_BLOCK_END)
        return unexpected(P, "end of statement block");
    advance(P);
    return 0;
}

/* The end of a tag that opens a body; Jinja2 allows a colon first ({% if x: %}). */
static int expect_body_start(parser *P)
{
    if (is_op(P, ":"))
        advance(P);
    return expect_block_end(P);
}

static jnode *node(parser *P, jnode_kind kind, int line)
{
    jnode *n = ja_alloc(P->a, sizeof *n);
    if (!n) {
        eng_fail(P->err, "out of memory while parsing the template");
        return NULL;
    }
    n->kind = kind;
    n->line = line;
    return n;
}

static int push(parser *P, jnodes *l, jnode *n)
{
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 4;
        jnode **v = ja_alloc(P->a, (size_t)cap * sizeof *v);
        if (!v)
            return eng_fail(P->err, "out of memory while parsing the template");
        if (l->n)
            memcpy(v, l->v, (size_t)l->n * sizeof *v);
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = n;
    return 0;
}

static const char *tok_str(parser *P, const jtoken *t)
{
    const char *s = ja_strndup(P->a, t->s, t->len);
    if (!s)
        eng_fail(P->err, "out of memory while parsing the template");
    return s;
}

/* Appends a name to a NULL-free array kept in parallel with a jnodes list. */
static int push_name(parser *P, const char ***names, int n, const char *name)
{
    const char **v = ja_alloc(P->a, (size_t)(n + 1) * sizeof *v);
    if (!v)
        return eng_fail(P->err, "out of memory while parsing the template");
    if (n)
        memcpy(v, *names, (size_t)n * sizeof *v);
    v[n] = name;
    *names = v;
    return 0;
}

static jnode *parse_expression(parser *P, int with_condexpr);
static jnode *parse_tuple(parser *P, int with_condexpr, const char *extra_end, int simplified);
static jnode *parse_unary(parser *P, int with_filter);
static jnode *parse_postfix(parser *P, jnode *n);

/* (args, kw=args) after the '(' has been seen; fills list and list2/names. */
static int parse_call_args(parser *P, jnode *call)
{
    if (expect_op(P, "("))
        return -1;
    int first = 1;
    while (!is_op(P, ")")) {
        if (!first && expect_op(P, ","))
            return -1;
        first = 0;
        if (is_op(P, ")"))
            break;
        if (is_op(P, "*") || is_op(P, "**"))
            return pfail(P, "%s", "*args and **kwargs in calls are not supported");
        if (cur(P)->kind == T_NAME && tok_is(peek(P, 1), T_OP, "=")) {
            const char *name = tok_str(P, cur(P));
            if (!name)
                return -1;
            advance(P);
            advance(P);
            jnode *v = parse_expression(P, 1);
            if (!v || push_name(P, &call->names, call->list2.n, name) || push(P, &call->list2, v))
                return -1;
        } else {
            if (call->list2.n)
                return pfail(P, "%s", "positional argument follows keyword argument");
            jnode *v = parse_expression(P, 1);
            if (!v || push(P, &call->list, v))
                return -1;
        }
    }
    advance(P);
    return 0;
}

static jnode *parse_primary(parser *P)
{
    const jtoken *t = cur(P);
    int line = t->line;
    jnode *n = NULL;
    if (t->kind == T_NAME) {
        if (tok_is(t, T_NAME, "true") || tok_is(t, T_NAME, "True") || tok_is(t, T_NAME, "false") ||
            tok_is(t, T_NAME, "False") || tok_is(t, T_NAME, "none") || tok_is(t, T_NAME, "None")) {
            if (!(n = node(P, N_CONST, line)))
                return NULL;
            n->value = t->s[0] == 'n' || t->s[0] == 'N' ? JV_NONE_P : jv_bool(t->s[0] == 't' || t->s[0] == 'T');
        } else {
            if (!(n = node(P, N_NAME, line)) || !(n->name = tok_str(P, t)))
                return NULL;
        }
        advance(P);
    } else if (t->kind == T_STRING) {
        jbuf b = {0};
        while (cur(P)->kind == T_STRING) {
            if (jb_append(&b, cur(P)->s, cur(P)->len)) {
                jb_free(&b);
                eng_fail(P->err, "out of memory while parsing the template");
                return NULL;
            }
            advance(P);
        }
        n = b.oom ? NULL : node(P, N_CONST, line);
        if (n)
            n->value = jv_str(P->a, b.data ? b.data : "", b.len);
        jb_free(&b);
        if (!n || !n->value) {
            eng_fail(P->err, "out of memory while parsing the template");
            return NULL;
        }
    } else if (t->kind == T_INT || t->kind == T_FLOAT) {
        if (!(n = node(P, N_CONST, line)))
            return NULL;
        n->value = t->kind == T_INT ? jv_int(P->a, t->ival) : jv_float(P->a, t->fval);
        if (!n->value) {
            eng_fail(P->err, "out of memory while parsing the template");
            return NULL;
        }
        advance(P);
    } else if (tok_is(t, T_OP, "(")) {
        advance(P);
        if (is_op(P, ")")) { /* () is the empty tuple */
            advance(P);
            return node(P, N_TUPLE, line);
        }
        n = parse_tuple(P, 1, NULL, 0);
        if (!n || expect_op(P, ")"))
            return NULL;
    } else if (tok_is(t, T_OP, "[")) {
        advance(P);
        if (!(n = node(P, N_LIST, line)))
            return NULL;
        while (!is_op(P, "]")) {
            if (n->list.n && expect_op(P, ","))
                return NULL;
            if (is_op(P, "]"))
                break;
            jnode *item = parse_expression(P, 1);
            if (!item || push(P, &n->list, item))
                return NULL;
        }
        advance(P);
    } else if (tok_is(t, T_OP, "{")) {
        advance(P);
        if (!(n = node(P, N_DICT, line)))
            return NULL;
        while (!is_op(P, "}")) {
            if (n->list.n && expect_op(P, ","))
                return NULL;
            if (is_op(P, "}"))
                break;
            jnode *k = parse_expression(P, 1);
            if (!k || expect_op(P, ":"))
                return NULL;
            jnode *v = parse_expression(P, 1);
            if (!v || push(P, &n->list, k) || push(P, &n->list2, v))
                return NULL;
        }
        advance(P);
    } else {
        unexpected(P, NULL);
        return NULL;
    }
    return n;
}

static jnode *parse_subscribed(parser *P)
{
    int line = cur(P)->line;
    jnode *start = NULL, *stop = NULL, *step = NULL;
    if (!is_op(P, ":")) {
        start = parse_expression(P, 1);
        if (!start)
            return NULL;
        if (!is_op(P, ":"))
            return start;
    }
    advance(P);
    if (!is_op(P, "]") && !is_op(P, ",") && !is_op(P, ":") && !(stop = parse_expression(P, 1)))
        return NULL;
    if (is_op(P, ":")) {
        advance(P);
        if (!is_op(P, "]") && !is_op(P, ",") && !(step = parse_expression(P, 1)))
            return NULL;
    }
    jnode *n = node(P, N_SLICE, line);
    if (n) {
        n->b = start;
        n->c = stop;
        n->d = step;
    }
    return n;
}

static jnode *parse_postfix(parser *P, jnode *n)
{
    while (n) {
        int line = cur(P)->line;
        if (is_op(P, ".")) {
            advance(P);
            if (peek(P, 1)->kind == T_ERROR) { /* Jinja2 reads past the attribute before checking it */
                advance(P);
                pfail(P, "%s", "");
                return NULL;
            }
            jnode *m;
            if (cur(P)->kind == T_NAME) {
                if (!(m = node(P, N_GETATTR, line)) || !(m->name = tok_str(P, cur(P))))
                    return NULL;
            } else if (cur(P)->kind == T_INT) {
                if (!(m = node(P, N_GETITEM, line)))
                    return NULL;
                jnode *k = node(P, N_CONST, line);
                if (!k || !(k->value = jv_int(P->a, cur(P)->ival)))
                    return NULL;
                m->b = k;
            } else {
                unexpected(P, "name or number");
                return NULL;
            }
            advance(P);
            m->a = n;
            n = m;
        } else if (is_op(P, "[")) {
            /* Jinja2: x[a] is an index, x[a, b] and x[] index by a tuple */
            advance(P);
            jnode *tup = node(P, N_TUPLE, line);
            if (!tup)
                return NULL;
            while (!is_op(P, "]")) {
                if (tup->list.n && expect_op(P, ",")) /* no trailing comma, as Jinja2 */
                    return NULL;
                jnode *k = parse_subscribed(P);
                if (!k || push(P, &tup->list, k))
                    return NULL;
            }
            advance(P);
            jnode *key = tup->list.n == 1 ? tup->list.v[0] : tup;
            for (int i = 0; key == tup && i < tup->list.n; i++)
                if (tup->list.v[i]->kind == N_SLICE) {
                    pfail(P, "%s", "a slice inside a tuple index is not supported");
                    return NULL;
                }
            jnode *m;
            if (key->kind == N_SLICE) {
                m = key;
            } else {
                if (!(m = node(P, N_GETITEM, line)))
                    return NULL;
                m->b = key;
            }
            m->a = n;
            n = m;
        } else if (is_op(P, "(")) {
            jnode *m = node(P, N_CALL, line);
            if (!m || parse_call_args(P, m))
                return NULL;
            m->a = n;
            n = m;
        } else {
            break;
        }
    }
    return n;
}

/* A filter or test name, which Jinja2 lets contain dots ("a.b"); consumes it. */
static const char *dotted_name(parser *P)
{
    eng_buf b = {0};
    int ok = !eng_buf_append(&b, cur(P)->s, cur(P)->len);
    advance(P);
    while (ok && is_op(P, ".") && peek(P, 1)->kind == T_NAME) {
        advance(P);
        ok = !eng_buf_puts(&b, ".") && !eng_buf_append(&b, cur(P)->s, cur(P)->len);
        advance(P);
    }
    const char *name = ok ? ja_strndup(P->a, b.data, b.len) : NULL;
    eng_buf_free(&b);
    if (!name)
        eng_fail(P->err, "out of memory while parsing the template");
    return name;
}

/* Filter chain: `|name(args)|name` applied to base (NULL for a filter block). */
static jnode *parse_filter(parser *P, jnode *base, int start_inline)
{
    while (is_op(P, "|") || start_inline) {
        if (!start_inline)
            advance(P);
        start_inline = 0;
        int line = cur(P)->line;
        if (cur(P)->kind != T_NAME) {
            unexpected(P, "filter name");
            return NULL;
        }
        jnode *f = node(P, N_FILTER, line);
        if (!f || !(f->name = dotted_name(P)))
            return NULL;
        if (is_op(P, "(") && parse_call_args(P, f))
            return NULL;
        f->a = base;
        base = f;
    }
    return base;
}

static jnode *parse_test(parser *P, jnode *base)
{
    int line = cur(P)->line;
    advance(P); /* is */
    jnode *t = node(P, N_TEST, line);
    if (!t)
        return NULL;
    if (is_name(P, "not")) {
        t->op = 1;
        advance(P);
    }
    if (cur(P)->kind != T_NAME) {
        unexpected(P, "test name");
        return NULL;
    }
    if (!(t->name = dotted_name(P)))
        return NULL;
    const jtoken *c = cur(P);
    if (is_op(P, "(")) {
        if (parse_call_args(P, t))
            return NULL;
    } else if ((c->kind == T_NAME || c->kind == T_STRING || c->kind == T_INT || c->kind == T_FLOAT || is_op(P, "[") ||
                is_op(P, "{")) &&
               !is_name(P, "else") && !is_name(P, "or") && !is_name(P, "and")) {
        if (is_name(P, "is")) {
            pfail(P, "%s", "you cannot chain multiple tests with is");
            return NULL;
        }
        jnode *arg = parse_primary(P);
        arg = parse_postfix(P, arg);
        if (!arg || push(P, &t->list, arg))
            return NULL;
    }
    t->a = base;
    return t;
}

static jnode *parse_filter_expr(parser *P, jnode *n)
{
    while (n) {
        if (is_op(P, "|"))
            n = parse_filter(P, n, 0);
        else if (is_name(P, "is"))
            n = parse_test(P, n);
        else if (is_op(P, "(")) {
            jnode *m = node(P, N_CALL, cur(P)->line);
            if (!m || parse_call_args(P, m))
                return NULL;
            m->a = n;
            n = m;
        } else
            break;
    }
    return n;
}

static jnode *parse_unary(parser *P, int with_filter)
{
    if (++P->depth > JINJA_MAX_NEST) {
        pfail(P, "%s", "expression nested too deeply");
        return NULL;
    }
    int line = cur(P)->line;
    jnode *n;
    if (is_op(P, "-") || is_op(P, "+")) {
        jnode_kind k = is_op(P, "-") ? N_NEG : N_POS;
        advance(P);
        jnode *x = parse_unary(P, 0);
        if (!x || !(n = node(P, k, line)))
            return NULL;
        n->a = x;
    } else {
        n = parse_primary(P);
    }
    n = parse_postfix(P, n);
    if (with_filter)
        n = parse_filter_expr(P, n);
    P->depth--;
    return n;
}

static jnode *binop(parser *P, int op, jnode *l, jnode *r, int line)
{
    if (!l || !r)
        return NULL;
    jnode *n = node(P, N_BINOP, line);
    if (n) {
        n->op = op;
        n->a = l;
        n->b = r;
    }
    return n;
}

static jnode *parse_pow(parser *P)
{
    jnode *l = parse_unary(P, 1);
    while (l && is_op(P, "**")) {
        int line = cur(P)->line;
        advance(P);
        l = binop(P, OP_POW, l, parse_unary(P, 1), line);
    }
    return l;
}

static jnode *parse_math2(parser *P)
{
    jnode *l = parse_pow(P);
    for (;;) {
        int op = is_op(P, "*")    ? OP_MUL
                 : is_op(P, "/")  ? OP_DIV
                 : is_op(P, "//") ? OP_FLOORDIV
                 : is_op(P, "%")  ? OP_MOD
                                  : -1;
        if (!l || op < 0)
            return l;
        int line = cur(P)->line;
        advance(P);
        l = binop(P, op, l, parse_pow(P), line);
    }
}

static jnode *parse_concat(parser *P)
{
    jnode *l = parse_math2(P);
    while (l && is_op(P, "~")) {
        int line = cur(P)->line;
        advance(P);
        l = binop(P, OP_CONCAT, l, parse_math2(P), line);
    }
    return l;
}

static jnode *parse_math1(parser *P)
{
    jnode *l = parse_concat(P);
    while (l && (is_op(P, "+") || is_op(P, "-"))) {
        int op = is_op(P, "+") ? OP_ADD : OP_SUB, line = cur(P)->line;
        advance(P);
        l = binop(P, op, l, parse_concat(P), line);
    }
    return l;
}

static jnode *parse_compare(parser *P)
{
    int line = cur(P)->line;
    jnode *expr = parse_math1(P);
    if (!expr)
        return NULL;
    jnode *cmp = NULL;
    for (;;) {
        int op = is_op(P, "==")                                            ? OP_EQ
                 : is_op(P, "!=")                                          ? OP_NE
                 : is_op(P, "<")                                           ? OP_LT
                 : is_op(P, "<=")                                          ? OP_LE
                 : is_op(P, ">")                                           ? OP_GT
                 : is_op(P, ">=")                                          ? OP_GE
                 : is_name(P, "in")                                        ? OP_IN
                 : (is_name(P, "not") && tok_is(peek(P, 1), T_NAME, "in")) ? OP_NOTIN
                                                                           : -1;
        if (op < 0)
            break;
        advance(P);
        if (op == OP_NOTIN)
            advance(P);
        jnode *r = parse_math1(P);
        if (!r)
            return NULL;
        if (!cmp) {
            if (!(cmp = node(P, N_COMPARE, line)))
                return NULL;
            cmp->a = expr;
        }
        int *ops = ja_alloc(P->a, (size_t)(cmp->list.n + 1) * sizeof *ops);
        if (!ops) {
            eng_fail(P->err, "out of memory while parsing the template");
            return NULL;
        }
        if (cmp->list.n)
            memcpy(ops, cmp->ops, (size_t)cmp->list.n * sizeof *ops);
        ops[cmp->list.n] = op;
        cmp->ops = ops;
        if (push(P, &cmp->list, r))
            return NULL;
    }
    return cmp ? cmp : expr;
}

static jnode *parse_not(parser *P)
{
    if (is_name(P, "not")) {
        int line = cur(P)->line;
        advance(P);
        if (++P->depth > JINJA_MAX_NEST) {
            pfail(P, "%s", "expression nested too deeply");
            return NULL;
        }
        jnode *x = parse_not(P);
        P->depth--;
        jnode *n = x ? node(P, N_NOT, line) : NULL;
        if (n)
            n->a = x;
        return n;
    }
    return parse_compare(P);
}

/* `and` and `or`: left-associative chains of the next-tighter level. */
static jnode *parse_chain(parser *P, const char *op, jnode_kind kind, jnode *(*operand)(parser *))
{
    jnode *l = operand(P);
    while (l && is_name(P, op)) {
        int line = cur(P)->line;
        advance(P);
        jnode *r = operand(P), *n = r ? node(P, kind, line) : NULL;
        if (!n)
            return NULL;
        n->a = l;
        n->b = r;
        l = n;
    }
    return l;
}

static jnode *parse_and(parser *P)
{
    return parse_chain(P, "and", N_AND, parse_not);
}

static jnode *parse_or(parser *P)
{
    return parse_chain(P, "or", N_OR, parse_and);
}

static jnode *parse_condexpr(parser *P)
{
    jnode *e = parse_or(P);
    while (e && is_name(P, "if")) {
        int line = cur(P)->line;
        advance(P);
        jnode *test = parse_or(P), *other = NULL;
        if (!test)
            return NULL;
        if (is_name(P, "else")) {
            advance(P);
            if (!(other = parse_condexpr(P)))
                return NULL;
        }
        jnode *n = node(P, N_COND, line);
        if (!n)
            return NULL;
        n->a = e;
        n->b = test;
        n->c = other;
        e = n;
    }
    return e;
}

static jnode *parse_expression(parser *P, int with_condexpr)
{
    if (++P->depth > JINJA_MAX_NEST) {
        pfail(P, "%s", "expression nested too deeply");
        return NULL;
    }
    jnode *n = with_condexpr ? parse_condexpr(P) : parse_or(P);
    P->depth--;
    return n;
}

static int tuple_end(parser *P, const char *extra_end)
{
    jtok_kind k = cur(P)->kind;
    return k == T_VAR_END || k == T_BLOCK_END || k == T_EOF || is_op(P, ")") || (extra_end && is_name(P, extra_end));
}

/* Comma-separated expressions; one without a comma is returned as itself.
 * simplified: only names (assignment targets). */
static jnode *parse_tuple(parser *P, int with_condexpr, const char *extra_end, int simplified)
{
    int line = cur(P)->line;
    jnode *tup = node(P, N_TUPLE, line);
    if (!tup)
        return NULL;
    int is_tuple = 0;
    for (;;) {
        if (tup->list.n && expect_op(P, ","))
            return NULL;
        if (tuple_end(P, extra_end))
            break;
        jnode *e = simplified ? parse_primary(P) : parse_expression(P, with_condexpr);
        if (!e || push(P, &tup->list, e))
            return NULL;
        if (is_op(P, ","))
            is_tuple = 1;
        else
            break;
    }
    if (!is_tuple) {
        if (tup->list.n)
            return tup->list.v[0];
        unexpected(P, "an expression");
        return NULL;
    }
    return tup;
}

/* Assignment target: name, name.attr (with_ns) or a tuple of names. */
static jnode *parse_assign_target(parser *P, int with_ns, const char *extra_end)
{
    int line = cur(P)->line;
    if (with_ns && cur(P)->kind == T_NAME && tok_is(peek(P, 1), T_OP, ".") && peek(P, 2)->kind == T_NAME) {
        jnode *n = node(P, N_GETATTR, line), *base = node(P, N_NAME, line);
        if (!n || !base || !(base->name = tok_str(P, cur(P))) || !(n->name = tok_str(P, peek(P, 2))))
            return NULL;
        n->a = base;
        advance(P);
        advance(P);
        advance(P);
        return n;
    }
    jnode *t;
    if (is_op(P, "(")) {
        advance(P);
        t = parse_tuple(P, 0, extra_end, 1);
        if (!t || expect_op(P, ")"))
            return NULL;
    } else {
        t = parse_tuple(P, 0, extra_end, 1);
    }
    if (!t)
        return NULL;
    if (t->kind == N_TUPLE) {
        for (int i = 0; i < t->list.n; i++)
            if (t->list.v[i]->kind != N_NAME) {
                pfail_at(P, t->list.v[i]->line, "can't assign to this expression");
                return NULL;
            }
    } else if (t->kind != N_NAME) {
        pfail_at(P, t->line, "can't assign to this expression");
        return NULL;
    }
    return t;
}

static int subparse(parser *P, jnodes *body, const char *const *end_tags);

/* Parses a body up to one of end_tags, leaving the parser on that tag's name. */
static int parse_body(parser *P, jnodes *body, const char *const *end_tags)
{
    if (++P->depth > JINJA_MAX_NEST)
        return pfail(P, "%s", "blocks nested too deeply");
    int rc = subparse(P, body, end_tags);
    P->depth--;
    return rc;
}

static int expect_end_tag(parser *P, const char *tag)
{
    if (!is_name(P, tag))
        return pfail(P, "expected '%s'", tag);
    advance(P);
    return expect_block_end(P);
}

/* Macro parameters: (a, b=default, ...) into names/list2 (NULL default = none). */
static int parse_signature(parser *P, jnode *n)
{
    if (expect_op(P, "("))
        return -1;
    int count = 0;
    while (!is_op(P, ")")) {
        if (count && expect_op(P, ","))
            return -1;
        if (is_op(P, ")"))
            break;
        if (cur(P)->kind != T_NAME)
            return unexpected(P, "parameter name");
        const char *name = tok_str(P, cur(P));
        if (!name || push_name(P, &n->names, count, name))
            return -1;
        advance(P);
        jnode *def = NULL;
        if (is_op(P, "=")) {
            advance(P);
            if (!(def = parse_expression(P, 1)))
                return -1;
        } else if (n->list2.n && n->list2.v[n->list2.n - 1]) {
            return pfail(P, "%s", "non-default argument follows default argument");
        }
        if (push(P, &n->list2, def))
            return -1;
        count++;
    }
    advance(P);
    return 0;
}

static jnode *parse_statement(parser *P)
{
    const jtoken *t = cur(P);
    int line = t->line;
    if (t->kind != T_NAME) {
        unexpected(P, "a tag name");
        return NULL;
    }
    jnode *n = NULL;
    if (is_name(P, "for")) {
        advance(P);
        static const char *const ends1[] = {"endfor", "else", NULL}, *const ends2[] = {"endfor", NULL};
        if (!(n = node(P, N_FOR, line)) || !(n->a = parse_assign_target(P, 0, "in")))
            return NULL;
        if (!is_name(P, "in")) {
            unexpected(P, "'in'");
            return NULL;
        }
        advance(P);
        if (!(n->b = parse_tuple(P, 0, "recursive", 0)))
            return NULL;
        if (is_name(P, "if")) {
            advance(P);
            if (!(n->c = parse_expression(P, 1)))
                return NULL;
        }
        if (is_name(P, "recursive")) {
            pfail(P, "%s", "recursive for loops are not supported");
            return NULL;
        }
        if (expect_body_start(P))
            return NULL;
        P->loop_depth++;
        int rc = parse_body(P, &n->list, ends1);
        P->loop_depth--;
        if (rc)
            return NULL;
        if (is_name(P, "else")) {
            advance(P);
            if (expect_body_start(P) || parse_body(P, &n->list2, ends2))
                return NULL;
        }
        if (expect_end_tag(P, "endfor"))
            return NULL;
    } else if (is_name(P, "if")) {
        static const char *const ends[] = {"elif", "else", "endif", NULL}, *const ends2[] = {"endif", NULL};
        advance(P);
        jnode *top = NULL, *last = NULL;
        for (;;) {
            jnode *br = node(P, N_IF, cur(P)->line);
            if (!br || !(br->a = parse_tuple(P, 0, NULL, 0)) || expect_body_start(P) || parse_body(P, &br->list, ends))
                return NULL;
            if (!top)
                top = br;
            else if (push(P, &last->list2, br))
                return NULL;
            last = br;
            if (is_name(P, "elif")) {
                advance(P);
                continue;
            }
            if (is_name(P, "else")) {
                advance(P);
                if (expect_body_start(P) || parse_body(P, &last->list2, ends2))
                    return NULL;
            }
            break;
        }
        if (expect_end_tag(P, "endif"))
            return NULL;
        n = top;
    } else if (is_name(P, "set")) {
        static const char *const ends[] = {"endset", NULL};
        advance(P);
        jnode *target = parse_assign_target(P, 1, NULL);
        if (!target)
            return NULL;
        if (is_op(P, "=")) {
            advance(P);
            if (!(n = node(P, N_SET, line)) || !(n->b = parse_tuple(P, 1, NULL, 0)) || expect_block_end(P))
                return NULL;
        } else {
            if (!(n = node(P, N_SET_BLOCK, line)))
                return NULL;
            if (is_op(P, "|") && !(n->d = parse_filter(P, NULL, 0)))
                return NULL;
            if (expect_body_start(P) || parse_body(P, &n->list, ends) || expect_end_tag(P, "endset"))
                return NULL;
        }
        n->a = target;
    } else if (is_name(P, "macro")) {
        static const char *const ends[] = {"endmacro", NULL};
        advance(P);
        if (cur(P)->kind != T_NAME) {
            unexpected(P, "macro name");
            return NULL;
        }
        if (!(n = node(P, N_MACRO, line)) || !(n->name = tok_str(P, cur(P))))
            return NULL;
        advance(P);
        int saved = P->loop_depth;
        P->loop_depth = 0;
        int rc = parse_signature(P, n) || expect_body_start(P) || parse_body(P, &n->list, ends) ||
                 expect_end_tag(P, "endmacro");
        P->loop_depth = saved;
        if (rc)
            return NULL;
    } else if (is_name(P, "call")) {
        static const char *const ends[] = {"endcall", NULL};
        advance(P);
        if (!(n = node(P, N_CALL_BLOCK, line)))
            return NULL;
        n->name = "caller";
        if (is_op(P, "(") && parse_signature(P, n))
            return NULL;
        if (!(n->b = parse_expression(P, 1)))
            return NULL;
        if (n->b->kind != N_CALL) {
            pfail(P, "%s", "expected a call after {% call %}");
            return NULL;
        }
        int saved = P->loop_depth;
        P->loop_depth = 0;
        int rc = expect_body_start(P) || parse_body(P, &n->list, ends) || expect_end_tag(P, "endcall");
        P->loop_depth = saved;
        if (rc)
            return NULL;
    } else if (is_name(P, "filter")) {
        static const char *const ends[] = {"endfilter", NULL};
        advance(P);
        if (!(n = node(P, N_FILTER_BLOCK, line)) || !(n->a = parse_filter(P, NULL, 1)) || expect_body_start(P) ||
            parse_body(P, &n->list, ends) || expect_end_tag(P, "endfilter"))
            return NULL;
    } else if (is_name(P, "with")) {
        static const char *const ends[] = {"endwith", NULL};
        advance(P);
        if (!(n = node(P, N_WITH, line)))
            return NULL;
        int count = 0;
        while (cur(P)->kind != T_BLOCK_END) {
            if (count && expect_op(P, ","))
                return NULL;
            if (cur(P)->kind != T_NAME) {
                unexpected(P, "a name");
                return NULL;
            }
            const char *name = tok_str(P, cur(P));
            if (!name || push_name(P, &n->names, count, name))
                return NULL;
            advance(P);
            if (expect_op(P, "="))
                return NULL;
            jnode *v = parse_expression(P, 1);
            if (!v || push(P, &n->list2, v))
                return NULL;
            count++;
        }
        if (expect_body_start(P) || parse_body(P, &n->list, ends) || expect_end_tag(P, "endwith"))
            return NULL;
    } else if (is_name(P, "break") || is_name(P, "continue")) {
        if (!P->loop_depth) {
            pfail(P, "'%s' outside of a loop", is_name(P, "break") ? "break" : "continue");
            return NULL;
        }
        n = node(P, is_name(P, "break") ? N_BREAK : N_CONTINUE, line);
        advance(P);
        if (!n || expect_block_end(P))
            return NULL;
    } else if (is_name(P, "generation")) { /* transformers' AssistantTracker: renders its body */
        static const char *const ends[] = {"endgeneration", NULL};
        advance(P);
        if (!(n = node(P, N_BODY, line)) || expect_body_start(P) || parse_body(P, &n->list, ends) ||
            expect_end_tag(P, "endgeneration"))
            return NULL;
    } else if (is_name(P, "print")) {
        advance(P);
        if (!(n = node(P, N_OUTPUT, line)) || !(n->a = parse_tuple(P, 1, NULL, 0)) || expect_block_end(P))
            return NULL;
    } else {
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(t->len > 40 ? 40 : t->len), t->s);
        pfail(P, "unknown tag '%s'", name);
        return NULL;
    }
    return n;
}

static int subparse(parser *P, jnodes *body, const char *const *end_tags)
{
    for (;;) {
        const jtoken *t = cur(P);
        if (t->kind == T_EOF) {
            if (end_tags) {
                int last = 0;
                while (end_tags[last + 1])
                    last++;
                return pfail(P, "unexpected end of template, expected '%s'", end_tags[last]);
            }
            return 0;
        }
        if (t->kind == T_DATA) {
            jnode *n = node(P, N_TEXT, t->line);
            if (!n || !(n->value = jv_str(P->a, t->s, t->len)) || push(P, body, n))
                return eng_fail(P->err, "out of memory while parsing the template");
            advance(P);
        } else if (t->kind == T_VAR_BEGIN) {
            advance(P);
            jnode *n = node(P, N_OUTPUT, t->line);
            if (!n || !(n->a = parse_tuple(P, 1, NULL, 0)))
                return -1;
            if (cur(P)->kind != T_VAR_END)
                return unexpected(P, "end of print statement");
            advance(P);
            if (push(P, body, n))
                return -1;
        } else if (t->kind == T_BLOCK_BEGIN) {
            advance(P);
            if (end_tags)
                for (int i = 0; end_tags[i]; i++)
                    if (is_name(P, end_tags[i]))
                        return 0;
            jnode *n = parse_statement(P);
            if (!n || push(P, body, n))
                return -1;
        } else {
            return unexpected(P, NULL);
        }
    }
}

/* Unknown filters and tests are errors when the template is loaded, as Jinja2's
 * compiler makes them, except inside an if (its test and branches) or an inline
 * if-expression, where Jinja2 defers the error until the filter runs. Scopes (for
 * bodies, macros, call/filter/set blocks, with bodies) are not "inside the if". */
static int check_names(eng_error *err, const jnode *n, int soft, int depth);

static int check_list(eng_error *err, const jnodes *l, int soft, int depth)
{
    for (int i = 0; i < l->n; i++)
        if (l->v[i] && check_names(err, l->v[i], soft, depth))
            return -1;
    return 0;
}

/* Also bounds the tree's depth: long operator chains are parsed by loops, so only here
 * (and in the evaluator) does their depth show. */
static int check_names(eng_error *err, const jnode *n, int soft, int depth)
{
    if (!n)
        return 0;
    if (++depth > JINJA_MAX_EVAL_DEPTH)
        return eng_fail(err, "template line %d: syntax error: expression nested too deeply", n->line);
    switch (n->kind) {
    case N_IF:
    case N_COND: soft = 1; break;
    case N_FOR:
        return check_names(err, n->b, soft, depth) || check_names(err, n->c, 0, depth) ||
               check_list(err, &n->list, 0, depth) || check_list(err, &n->list2, 0, depth);
    case N_MACRO: return check_list(err, &n->list2, 0, depth) || check_list(err, &n->list, 0, depth);
    case N_CALL_BLOCK:
        return check_names(err, n->b, soft, depth) || check_list(err, &n->list2, 0, depth) ||
               check_list(err, &n->list, 0, depth);
    case N_FILTER_BLOCK:
    case N_SET_BLOCK:
        return check_names(err, n->a, 0, depth) || check_names(err, n->d, 0, depth) ||
               check_list(err, &n->list, 0, depth);
    case N_WITH: return check_list(err, &n->list2, soft, depth) || check_list(err, &n->list, 0, depth);
    case N_FILTER:
    case N_TEST:
        if (!soft && !(n->kind == N_FILTER ? jinja_has_filter(n->name) : jinja_has_test(n->name)))
            return eng_fail(err, "template line %d: no %s named '%s'", n->line, n->kind == N_FILTER ? "filter" : "test",
                            n->name);
        break;
    default: break;
    }
    return check_names(err, n->a, soft, depth) || check_names(err, n->b, soft, depth) ||
           check_names(err, n->c, soft, depth) || check_names(err, n->d, soft, depth) ||
           check_list(err, &n->list, soft, depth) || check_list(err, &n->list2, soft, depth);
}

int jinja_parse_tokens(jarena *a, const jtoken *toks, int ntoks, jnode **root, eng_error *err)
{
    parser P = {.a = a, .t = toks, .n = ntoks, .err = err};
    jnode *body = node(&P, N_BODY, 1);
    if (!body || subparse(&P, &body->list, NULL) || check_names(err, body, 0, 0))
        return -1;
    *root = body;
    return 0;
}
