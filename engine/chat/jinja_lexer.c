/* jinja_lexer.c: template source -> tokens, following Jinja2's lexer rule for rule.
 *
 * Whitespace control is decided here, as Jinja2 does it: `{%-`/`{{-`/`{#-` strip
 * all whitespace before the tag, `-%}`/`-}}`/`-#}` all whitespace after it;
 * trim_blocks drops the first newline after a block or comment tag; lstrip_blocks
 * drops spaces and tabs between the start of a line and a block or comment tag
 * (`{%+` opts out). Newlines are normalised to "\n" and one trailing newline of the
 * template is dropped (keep_trailing_newline=False). String literals are decoded
 * with Python's escapes. Comments vanish; `{% raw %}` bodies become plain data. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja_internal.h"

typedef struct lexer {
    jarena *a;
    const char *src;
    size_t len, pos;
    size_t line_pos; /* lines counted up to here */
    int line;
    jtoken *toks;
    int n, cap;
    eng_error *err;
    /* A syntax error is kept here and becomes a T_ERROR token, so that the parser
     * reports whichever error comes first in the template, as Jinja2's lazy lexer. */
    eng_error syntax;
    int syntax_line;
    size_t syntax_pos;
    int has_syntax;
} lexer;

static int line_at(lexer *L, size_t pos)
{
    while (L->line_pos < pos) {
        if (L->src[L->line_pos] == '\n')
            L->line++;
        L->line_pos++;
    }
    return L->line;
}

static int lex_fail(lexer *L, size_t pos, const char *msg)
{
    L->has_syntax = 1;
    L->syntax_pos = pos;
    L->syntax_line = line_at(L, pos);
    return eng_fail(&L->syntax, "template line %d: syntax error: %s", L->syntax_line, msg);
}

static int emit(lexer *L, jtok_kind kind, size_t at, const char *s, size_t len)
{
    if (L->n == L->cap) {
        int cap = L->cap ? L->cap * 2 : 256;
        jtoken *t = realloc(L->toks, (size_t)cap * sizeof *t);
        if (!t)
            return eng_fail(L->err, "out of memory while reading the template");
        L->toks = t;
        L->cap = cap;
    }
    jtoken *t = &L->toks[L->n++];
    memset(t, 0, sizeof *t);
    t->kind = kind;
    t->line = line_at(L, at);
    t->s = s;
    t->len = len;
    return 0;
}

/* Python's str.isspace() for ASCII; the tag-stripping rules only ever see bytes. */
static int is_ws_at(const char *s, size_t len, size_t pos, size_t *n)
{
    unsigned char ch = (unsigned char)s[pos];
    if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v' || (ch >= 0x1c && ch <= 0x1f)) {
        *n = 1;
        return 1;
    }
    if (ch >= 0x80) {
        size_t p = pos;
        int cp = utf8_decode(s, len, &p);
        if (cp > 0 && py_isspace(cp)) {
            *n = p - pos;
            return 1;
        }
    }
    return 0;
}

/* Length of text once trailing whitespace is removed (Python's str.rstrip()). */
static size_t rstrip_len(const char *s, size_t len)
{
    size_t keep = 0, pos = 0, n;
    while (pos < len) {
        if (is_ws_at(s, len, pos, &n)) {
            pos += n;
        } else {
            size_t p = pos;
            if (utf8_decode(s, len, &p) < 0)
                p = pos + 1;
            pos = p;
            keep = pos;
        }
    }
    return keep;
}

static size_t skip_ws(const char *s, size_t len, size_t pos)
{
    size_t n;
    while (pos < len && is_ws_at(s, len, pos, &n))
        pos += n;
    return pos;
}

/* Emits the text before a tag, applying `-` and lstrip_blocks. */
static int emit_text(lexer *L, size_t start, size_t end, char sign, int is_var, int line_starting)
{
    size_t len = end - start;
    const char *text = L->src + start;
    if (sign == '-') {
        len = rstrip_len(text, len);
    } else if (sign != '+' && !is_var) {
        size_t l_pos = 0;
        for (size_t i = len; i > 0; i--)
            if (text[i - 1] == '\n') {
                l_pos = i;
                break;
            }
        if ((l_pos > 0 || line_starting) && l_pos < len) {
            size_t p = l_pos, n;
            while (p < len && is_ws_at(text, len, p, &n))
                p += n;
            if (p == len)
                len = l_pos;
        }
    }
    if (len == 0)
        return 0;
    return emit(L, T_DATA, start, text, len);
}

/* Python unicode-escape decoding of a string literal's body. */
static int decode_string(lexer *L, size_t at, const char *s, size_t len, jtoken *t)
{
    jbuf b = {0};
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (ch != '\\' || i + 1 >= len) {
            if (jb_append(&b, &ch, 1))
                goto nomem;
            continue;
        }
        char e = s[++i];
        int cp = -1, digits = 0;
        switch (e) {
        case '\n': continue;
        case '\\': cp = '\\'; break;
        case '\'': cp = '\''; break;
        case '"': cp = '"'; break;
        case 'a': cp = 7; break;
        case 'b': cp = 8; break;
        case 'f': cp = 12; break;
        case 'n': cp = 10; break;
        case 'r': cp = 13; break;
        case 't': cp = 9; break;
        case 'v': cp = 11; break;
        case 'x': digits = 2; break;
        case 'u': digits = 4; break;
        case 'U': digits = 8; break;
        default:
            if (e >= '0' && e <= '7') {
                cp = 0;
                int k = 0;
                while (k < 3 && i < len && s[i] >= '0' && s[i] <= '7') {
                    cp = cp * 8 + (s[i] - '0');
                    i++, k++;
                }
                i--;
            }
            break;
        }
        if (digits) {
            cp = 0;
            for (int k = 0; k < digits; k++) {
                char h = i + 1 + (size_t)k < len ? s[i + 1 + k] : 0;
                int v = h >= '0' && h <= '9'   ? h - '0'
                        : h >= 'a' && h <= 'f' ? h - 'a' + 10
                        : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                               : -1;
                if (v < 0) {
                    jb_free(&b);
                    return lex_fail(L, at, "truncated \\x, \\u or \\U escape in a string");
                }
                cp = cp * 16 + v;
            }
            i += (size_t)digits;
            if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
                jb_free(&b);
                return lex_fail(L, at, "escape in a string is not a valid character");
            }
        }
        if (cp < 0) { /* unknown escape: Python keeps the backslash */
            char two[2] = {'\\', e};
            if (jb_append(&b, two, 2))
                goto nomem;
        } else {
            utf8_encode(&b, cp);
        }
    }
    if (b.oom)
        goto nomem;
    t->s = ja_strndup(L->a, b.data, b.len);
    t->len = b.len;
    jb_free(&b);
    if (!t->s)
        return eng_fail(L->err, "out of memory while reading the template");
    return 0;
nomem:
    jb_free(&b);
    return eng_fail(L->err, "out of memory while reading the template");
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}
static int is_name0(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
static int is_name(char c)
{
    return is_name0(c) || is_digit(c);
}

/* Digits with single underscores between them ((\d+_)*\d+); returns the end. */
static size_t scan_digits(const char *s, size_t len, size_t p)
{
    if (p >= len || !is_digit(s[p]))
        return p;
    while (p < len && is_digit(s[p])) {
        p++;
        if (p + 1 < len && s[p] == '_' && is_digit(s[p + 1]))
            p++;
    }
    return p;
}

static int lex_number(lexer *L, size_t *pos)
{
    const char *s = L->src;
    size_t p = *pos, end = scan_digits(s, L->len, p);
    int is_float = 0;
    size_t fend = end;
    if (p == 0 || s[p - 1] != '.') { /* Jinja's float rule has (?<!\.) */
        size_t q = end;
        if (q < L->len && s[q] == '.' && q + 1 < L->len && is_digit(s[q + 1])) {
            q = scan_digits(s, L->len, q + 1);
            is_float = 1;
            fend = q;
        }
        if (q < L->len && (s[q] == 'e' || s[q] == 'E')) {
            size_t r = q + 1;
            if (r < L->len && (s[r] == '+' || s[r] == '-'))
                r++;
            size_t r2 = scan_digits(s, L->len, r);
            if (r2 > r) {
                is_float = 1;
                fend = r2;
            }
        }
    }
    char buf[128];
    size_t n = 0;
    size_t stop = is_float ? fend : end;
    for (size_t i = p; i < stop && n + 1 < sizeof buf; i++)
        if (s[i] != '_')
            buf[n++] = s[i];
    buf[n] = 0;
    if (stop - p >= sizeof buf - 1)
        return lex_fail(L, p, "number literal too long");
    if (emit(L, is_float ? T_FLOAT : T_INT, p, s + p, stop - p))
        return -1;
    jtoken *t = &L->toks[L->n - 1];
    if (is_float) {
        t->fval = strtod(buf, NULL);
    } else {
        if (n > 1 && buf[0] == '0') {
            for (size_t i = 0; i < n; i++)
                if (buf[i] != '0')
                    return lex_fail(L, p, "integer literal with a leading zero");
        }
        unsigned long long v = strtoull(buf, NULL, 10);
        if (n > 19 || v > 9223372036854775807ULL)
            return lex_fail(L, p, "integer literal too large");
        t->ival = (long long)v;
    }
    *pos = stop;
    return 0;
}

static const char *const OPS2[] = {"//", "**", "==", "!=", ">=", "<=", NULL};
static const char OPS1[] = "+-/*%~[](){}><=.:|,;";

/* Inside {{ }} or {% %}: tokens up to the end tag. */
static int lex_tag(lexer *L, int is_block, int *line_starting)
{
    const char *s = L->src;
    char stack[JINJA_MAX_NEST];
    int depth = 0;
    for (;;) {
        size_t p = skip_ws(s, L->len, L->pos);
        L->pos = p;
        if (p >= L->len)
            return lex_fail(L, p,
                            is_block ? "unexpected end of template inside a {% %} tag"
                                     : "unexpected end of template inside a {{ }} tag");
        if (depth == 0) {
            const char *close = is_block ? "%}" : "}}";
            size_t end = 0;
            int strip = 0;
            if (s[p] == '-' && p + 2 < L->len && !strncmp(s + p + 1, close, 2)) {
                end = p + 3;
                strip = 1;
            } else if (is_block && s[p] == '+' && !strncmp(s + p + 1, close, 2)) {
                end = p + 3;
            } else if (!strncmp(s + p, close, 2)) {
                end = p + 2;
                if (is_block && end < L->len && s[end] == '\n')
                    end++; /* trim_blocks */
            }
            if (end) {
                if (emit(L, is_block ? T_BLOCK_END : T_VAR_END, p, s + p, 2))
                    return -1;
                if (strip)
                    end = skip_ws(s, L->len, end);
                *line_starting = s[end - 1] == '\n';
                L->pos = end;
                return 0;
            }
        }
        char ch = s[p];
        if (ch == '\'' || ch == '"') {
            size_t q = p + 1;
            while (q < L->len && s[q] != ch) {
                if (s[q] == '\\' && q + 1 < L->len)
                    q++;
                q++;
            }
            if (q >= L->len)
                return lex_fail(L, p, "unterminated string literal");
            if (emit(L, T_STRING, p, NULL, 0) || decode_string(L, p, s + p + 1, q - p - 1, &L->toks[L->n - 1]))
                return -1;
            L->pos = q + 1;
        } else if (is_digit(ch)) {
            if (lex_number(L, &L->pos))
                return -1;
        } else if (is_name0(ch)) {
            size_t q = p;
            while (q < L->len && is_name(s[q]))
                q++;
            if (emit(L, T_NAME, p, s + p, q - p))
                return -1;
            L->pos = q;
        } else {
            size_t oplen = 0;
            for (int i = 0; OPS2[i]; i++)
                if (p + 1 < L->len && !strncmp(s + p, OPS2[i], 2))
                    oplen = 2;
            if (!oplen && strchr(OPS1, ch) && ch)
                oplen = 1;
            if (!oplen) {
                char msg[64];
                snprintf(msg, sizeof msg, "unexpected character '%c'", ch);
                return lex_fail(L, p, msg);
            }
            if (oplen == 1 && (ch == '(' || ch == '[' || ch == '{')) {
                if (depth == JINJA_MAX_NEST)
                    return lex_fail(L, p, "brackets nested too deeply");
                stack[depth++] = ch == '(' ? ')' : ch == '[' ? ']' : '}';
            } else if (oplen == 1 && (ch == ')' || ch == ']' || ch == '}')) {
                char msg[64];
                if (!depth) {
                    snprintf(msg, sizeof msg, "unexpected '%c'", ch);
                    return lex_fail(L, p, msg);
                }
                if (stack[depth - 1] != ch) {
                    snprintf(msg, sizeof msg, "unexpected '%c', expected '%c'", ch, stack[depth - 1]);
                    return lex_fail(L, p, msg);
                }
                depth--;
            }
            if (emit(L, T_OP, p, s + p, oplen))
                return -1;
            L->pos = p + oplen;
        }
    }
}

/* At `{%` (pos) with the sign already known: is this `{% raw %}`? Returns the
 * position after the opening tag or 0. */
static size_t raw_begin(lexer *L, size_t p)
{
    const char *s = L->src;
    size_t q = skip_ws(s, L->len, p);
    if (q + 3 > L->len || strncmp(s + q, "raw", 3) || (q + 3 < L->len && is_name(s[q + 3])))
        return 0;
    q = skip_ws(s, L->len, q + 3);
    if (q + 3 <= L->len && !strncmp(s + q, "-%}", 3))
        return skip_ws(s, L->len, q + 3);
    if (q + 2 <= L->len && !strncmp(s + q, "%}", 2))
        return q + 2;
    return 0;
}

static int lex_raw(lexer *L, size_t body, int *line_starting)
{
    const char *s = L->src;
    for (size_t p = body; p + 1 < L->len; p++) {
        if (s[p] != '{' || s[p + 1] != '%')
            continue;
        size_t q = p + 2;
        char sign = q < L->len && (s[q] == '-' || s[q] == '+') ? s[q] : 0;
        if (sign)
            q++;
        q = skip_ws(s, L->len, q);
        if (q + 6 > L->len || strncmp(s + q, "endraw", 6))
            continue;
        q = skip_ws(s, L->len, q + 6);
        size_t end = 0;
        if (q + 3 <= L->len && !strncmp(s + q, "-%}", 3))
            end = skip_ws(s, L->len, q + 3);
        else if (q + 3 <= L->len && !strncmp(s + q, "+%}", 3))
            end = q + 3;
        else if (q + 2 <= L->len && !strncmp(s + q, "%}", 2))
            end = q + 2 + (q + 2 < L->len && s[q + 2] == '\n');
        if (!end)
            continue;
        if (emit_text(L, body, p, sign, 0, 0))
            return -1;
        *line_starting = s[end - 1] == '\n';
        L->pos = end;
        return 0;
    }
    return lex_fail(L, body, "missing end of raw directive");
}

int jinja_lex(jarena *a, const char *src, size_t len, jtoken **toks, int *ntoks, eng_error *err)
{
    /* Normalise newlines and drop one trailing newline, as Jinja2 does first. */
    char *norm = ja_alloc(a, len + 1);
    if (!norm)
        return eng_fail(err, "out of memory while reading the template");
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            norm[n++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n')
                i++;
        } else {
            norm[n++] = src[i];
        }
    }
    if (n > 0 && norm[n - 1] == '\n')
        n--;
    norm[n] = 0;

    lexer L = {.a = a, .src = norm, .len = n, .line = 1, .err = err};
    int line_starting = 1;
    while (L.pos < L.len) {
        const char *s = L.src;
        size_t p = L.pos, tag = 0;
        int found = 0;
        for (p = L.pos; p + 1 < L.len; p++)
            if (s[p] == '{' && (s[p + 1] == '{' || s[p + 1] == '%' || s[p + 1] == '#')) {
                found = 1;
                tag = p;
                break;
            }
        if (!found) {
            if (emit(&L, T_DATA, L.pos, s + L.pos, L.len - L.pos))
                goto fail;
            break;
        }
        char type = s[tag + 1];
        char sign = tag + 2 < L.len && (s[tag + 2] == '-' || s[tag + 2] == '+') ? s[tag + 2] : 0;
        size_t after = tag + 2 + (sign ? 1 : 0);
        size_t raw = type == '%' ? raw_begin(&L, after) : 0;
        if (emit_text(&L, L.pos, tag, sign, type == '{', line_starting))
            goto fail;
        if (raw) {
            if (lex_raw(&L, raw, &line_starting))
                goto fail;
        } else if (type == '#') {
            size_t q = after;
            while (q + 1 < L.len && !(s[q] == '#' && s[q + 1] == '}'))
                q++;
            if (q + 1 >= L.len) {
                lex_fail(&L, tag, "missing end of comment tag");
                goto fail;
            }
            size_t end = q + 2;
            if (q > after && s[q - 1] == '-')
                end = skip_ws(s, L.len, end);
            else if (!(q > after && s[q - 1] == '+') && end < L.len && s[end] == '\n')
                end++;
            line_starting = s[end - 1] == '\n';
            L.pos = end;
        } else {
            if (emit(&L, type == '%' ? T_BLOCK_BEGIN : T_VAR_BEGIN, tag, s + tag, 2))
                goto fail;
            L.pos = after;
            if (lex_tag(&L, type == '%', &line_starting))
                goto fail;
        }
    }
    if (emit(&L, T_EOF, L.len, "", 0))
        goto fail;
    if (L.n > 1) /* Jinja2 dates the end of the template at its last token */
        L.toks[L.n - 1].line = L.toks[L.n - 2].line;
    *toks = L.toks;
    *ntoks = L.n;
    return 0;
fail:
    if (L.has_syntax) { /* tokens so far, then the error, then the end */
        const char *msg = ja_strndup(a, L.syntax.msg, strlen(L.syntax.msg));
        if (msg && !emit(&L, T_ERROR, L.syntax_pos, msg, strlen(msg)) && !emit(&L, T_EOF, L.syntax_pos, "", 0)) {
            *toks = L.toks;
            *ntoks = L.n;
            return 0;
        }
    }
    free(L.toks);
    return -1;
}
