/* jinja_internal.h: the types shared by the Jinja interpreter's files.
 *
 * jinja_lexer.c turns source into tokens, jinja_parser.c tokens into an AST,
 * jinja_value.c holds the value model (Python semantics: equality, ordering, str(),
 * repr(), json.dumps), jinja_builtins.c the filters, tests, methods and global
 * functions, jinja_eval.c walks the AST. Everything a parse or a render allocates
 * lives in one arena freed at once, so error paths never leak. */
#ifndef ENG_CHAT_JINJA_INTERNAL_H
#define ENG_CHAT_JINJA_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "chat/jinja.h"

/* Limits that keep a hostile template from hanging or exhausting the process. */
#define JINJA_MAX_MEMORY ((size_t)256 << 20) /* bytes a render may allocate */
#define JINJA_MAX_OUTPUT ((size_t)16 << 20)  /* bytes of rendered text */
#define JINJA_MAX_STEPS 5000000LL            /* statements + loop iterations */
#define JINJA_MAX_CALL_DEPTH 100             /* nested macro calls */
#define JINJA_MAX_NEST 200                   /* nesting of parsed expressions/blocks */
#define JINJA_MAX_EVAL_DEPTH 1000            /* nesting of evaluation (long operator chains) */
#define JINJA_MAX_VALUE_DEPTH 200            /* nesting of lists/dicts printed or compared */
#define JINJA_MAX_RANGE 100000               /* as Jinja2's sandbox */

/* ---- arena ---- */
typedef struct jarena {
    struct jchunk *head;
    size_t total, limit;
    int exhausted;
} jarena;

void *ja_alloc(jarena *a, size_t n);     /* zeroed; NULL when the limit is hit */
void *ja_alloc_raw(jarena *a, size_t n); /* not zeroed */
char *ja_strndup(jarena *a, const char *s, size_t n);
void ja_free(jarena *a);

/* ---- text buffer ---- */
/* Like eng_buf, but an allocation failure is sticky: once an append fails every later
 * one fails too and oom stays set, so a truncated text is never mistaken for a whole
 * one. Appends return 0, or -1 once oom is set. */
typedef struct jbuf {
    char *data; /* NUL-terminated when non-NULL */
    size_t len, cap;
    int oom;
} jbuf;

int jb_append(jbuf *b, const void *data, size_t len);
int jb_puts(jbuf *b, const char *s);
int jb_printf(jbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void jb_free(jbuf *b);

/* ---- values ---- */
typedef enum {
    JV_UNDEF,
    JV_NONE,
    JV_BOOL,
    JV_INT,
    JV_FLOAT,
    JV_STR,
    JV_LIST,
    JV_TUPLE,
    JV_DICT,
    JV_NS,
    JV_MACRO,
    JV_FUNC,
    JV_METHOD,
    JV_LOOP,
    JV_CYCLER
} jv_kind;

struct jnode;
struct jframe;

typedef struct jv {
    jv_kind kind;
    union {
        int b;
        long long i;
        double f;
        struct {
            const char *s;
            size_t len;
        } str;
        struct {
            struct jv **items;
            size_t len, cap;
        } list; /* list, tuple */
        struct {
            struct jv **keys, **vals;
            size_t len, cap;
        } dict; /* dict, namespace */
        struct {
            const struct jnode *def;
            struct jframe *closure;
            struct jv *caller;
        } macro;
        struct {
            int id;
        } func;
        struct {
            struct jv *self;
            const char *name;
        } method;
        struct {
            long long index0, length;
            struct jv *prev, *next;
            int depth;
        } loop;
        struct {
            struct jv *items;
            long long pos;
        } cycler;
        struct {
            const char *name;
        } undef; /* the name, for error messages */
    } u;
} jv;

extern jv jv_none_v, jv_true_v, jv_false_v, jv_undef_v;
#define JV_NONE_P (&jv_none_v)
#define JV_TRUE_P (&jv_true_v)
#define JV_FALSE_P (&jv_false_v)

jv *jv_bool(int b);
jv *jv_int(jarena *a, long long i);
jv *jv_float(jarena *a, double f);
jv *jv_str(jarena *a, const char *s, size_t len); /* copies */
jv *jv_strz(jarena *a, const char *s);
jv *jv_undef(jarena *a, const char *name);
jv *jv_list(jarena *a, jv_kind kind);
int jv_list_push(jarena *a, jv *list, jv *item);
jv *jv_dict(jarena *a, jv_kind kind);
jv *jv_dict_get(const jv *d, const jv *key);
jv *jv_dict_gets(const jv *d, const char *key);
int jv_dict_set(jarena *a, jv *d, jv *key, jv *val);
jv *jv_from_json(jarena *a, const cJSON *j);

const char *jv_type_name(const jv *v);
int jv_truthy(const jv *v);
int jv_eq(const jv *x, const jv *y);
int jv_is_num(const jv *v); /* bool, int or float */
double jv_num(const jv *v);
/* Python ordering: *res <0, 0, >0. Returns -1 for unorderable types. */
int jv_cmp(const jv *x, const jv *y, int *res);
/* str() and repr() as Python prints them. Return 0 or -1 (out of memory). */
int jv_str_out(const jv *v, jbuf *out);
int jv_repr_out(const jv *v, jbuf *out);
/* json.dumps(v, ensure_ascii=False, indent=indent (<0: none), separators (NULL:
 * Python's defaults), sort_keys). Returns -1 and says why in *bad. */
int jv_json_out(const jv *v, jbuf *out, int indent, const char *item_sep, const char *key_sep, int sort_keys,
                const char **bad);
void jv_float_repr(double f, jbuf *out);

/* UTF-8 helpers: strings index and slice by code point, as Python does. */
size_t utf8_count(const char *s, size_t len);
size_t utf8_offset(const char *s, size_t len, size_t cp_index); /* byte offset */
int utf8_decode(const char *s, size_t len, size_t *pos);        /* -1 on bad byte */
void utf8_encode(jbuf *out, int cp);
int py_isspace(int cp);

/* ---- tokens ---- */
typedef enum {
    T_EOF,
    T_DATA,
    T_VAR_BEGIN,
    T_VAR_END,
    T_BLOCK_BEGIN,
    T_BLOCK_END,
    T_NAME,
    T_STRING,
    T_INT,
    T_FLOAT,
    T_OP,
    T_ERROR /* a lexing error; s is its message; the parser fails on reaching it */
} jtok_kind;

typedef struct jtoken {
    jtok_kind kind;
    int line;
    const char *s; /* data, name, decoded string or operator text (arena) */
    size_t len;
    long long ival;
    double fval;
} jtoken;

/* Tokenizes into *toks (malloc'd). A syntax error ends the tokens with a T_ERROR
 * token (still returning 0); only running out of memory fails (-1, err filled). */
int jinja_lex(jarena *a, const char *src, size_t len, jtoken **toks, int *ntoks, eng_error *err);

/* ---- AST ---- */
typedef enum {
    /* expressions */
    N_CONST,
    N_NAME,
    N_GETATTR,
    N_GETITEM,
    N_SLICE,
    N_CALL,
    N_FILTER,
    N_TEST,
    N_BINOP,
    N_NEG,
    N_POS,
    N_NOT,
    N_AND,
    N_OR,
    N_COMPARE,
    N_COND,
    N_LIST,
    N_TUPLE,
    N_DICT,
    /* statements */
    N_TEXT,
    N_OUTPUT,
    N_FOR,
    N_IF,
    N_SET,
    N_SET_BLOCK,
    N_MACRO,
    N_CALL_BLOCK,
    N_FILTER_BLOCK,
    N_WITH,
    N_BREAK,
    N_CONTINUE,
    N_BODY
} jnode_kind;

typedef enum {
    OP_ADD,
    OP_SUB,
    OP_MUL,
    OP_DIV,
    OP_FLOORDIV,
    OP_MOD,
    OP_POW,
    OP_CONCAT,
    OP_EQ,
    OP_NE,
    OP_LT,
    OP_LE,
    OP_GT,
    OP_GE,
    OP_IN,
    OP_NOTIN
} jop;

typedef struct jnodes {
    struct jnode **v;
    int n, cap;
} jnodes;

typedef struct jnode {
    jnode_kind kind;
    int line;
    int op;                      /* jop for BINOP; negation for TEST */
    const char *name;            /* NAME, GETATTR attribute, FILTER/TEST name, MACRO name */
    jv *value;                   /* CONST */
    struct jnode *a, *b, *c, *d; /* children; meaning per kind (see parser) */
    jnodes list;                 /* positional args, items, body, operands */
    jnodes list2;                /* kwarg values, dict values, else body, defaults */
    const char **names;          /* kwarg names or macro parameter names */
    int *ops;                    /* COMPARE operators */
} jnode;

/* Parses tokens into a body node (N_BODY). */
int jinja_parse_tokens(jarena *a, const jtoken *toks, int ntoks, jnode **root, eng_error *err);

/* ---- evaluation context (shared with the builtins) ---- */
typedef struct jframe {
    struct jframe *parent;
    const char **names;
    jv **vals;
    int n, cap;
} jframe;

typedef struct jctx {
    jarena *arena;
    eng_error *err;
    int failed;
    jbuf *out;
    size_t out_total;
    long long steps;
    int call_depth;
    int eval_depth;
    jv *globals; /* the render variables */
} jctx;

/* Records "template line N: <message>" (the first failure wins) and returns -1. */
int jfail(jctx *c, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int jvfail(jctx *c, int line, const char *fmt, va_list ap);
int jnomem(jctx *c, int line);

typedef struct jargs {
    jv **pos;
    int npos;
    const char **kwn;
    jv **kwv;
    int nkw;
} jargs;

/* Binds args to named parameters (positional then keyword); unknown keywords and
 * surplus arguments are errors; missing ones are NULL. */
int jbind(jctx *c, int line, const char *what, const char *const *params, int nparams, const jargs *a, jv **slots);

jv *jinja_filter(jctx *c, int line, const char *name, jv *base, const jargs *a);
/* Returns 0/1, or -1 on error. */
int jinja_test(jctx *c, int line, const char *name, jv *base, const jargs *a);
jv *jinja_getattr(jctx *c, int line, jv *obj, const char *name);
jv *jinja_getitem(jctx *c, int line, jv *obj, jv *key);
jv *jinja_slice(jctx *c, int line, jv *obj, jv *start, jv *stop, jv *step);
jv *jinja_call_builtin(jctx *c, int line, jv *fn, const jargs *a);
jv *jinja_global(jctx *c, const char *name); /* builtin global or NULL */
int jinja_has_filter(const char *name);
int jinja_has_test(const char *name);
/* Calls a macro value; defined in jinja_eval.c, used by filters such as map. */
jv *jinja_call_macro(jctx *c, int line, jv *macro, const jargs *a);
/* The elements a value iterates over (list items, dict keys, string chars), as a
 * fresh list; undefined iterates as empty; NULL (error set) if not iterable. */
jv *jinja_iter_list(jctx *c, int line, jv *v);
/* str(v) into a new string value. */
jv *jinja_to_str(jctx *c, int line, jv *v);

#endif
