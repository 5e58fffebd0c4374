/* jinja.h: a Jinja2 interpreter for chat templates (lexer -> AST -> evaluator).
 *
 * Models ship their prompt format as a Jinja2 program (`chat_template` in
 * tokenizer_config.json). Rather than hand-coding Qwen's format we run that program,
 * configured as Hugging Face transformers configures Jinja2: trim_blocks and
 * lstrip_blocks on, the loop-controls extension (break/continue), `tojson` as
 * json.dumps(x, ensure_ascii=False), a `raise_exception` global, and the immutable
 * sandbox (no mutating methods). Values print as Python prints them (True, None,
 * ['a', 1], 1.5), so the output is byte-identical to Jinja2's.
 *
 * Errors (syntax, unknown filter/test, calling an undefined value, raise_exception,
 * runaway loops or recursion, too much output) fail with one line naming the
 * template line; the interpreter never aborts the process. */
#ifndef ENG_CHAT_JINJA_H
#define ENG_CHAT_JINJA_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "common/buf.h"
#include "common/error.h"

typedef struct eng_jinja eng_jinja;

/* Parses template source (len bytes of UTF-8). */
int eng_jinja_parse(const char *source, size_t len, eng_jinja **out, eng_error *err);
void eng_jinja_free(eng_jinja *t);

/* Renders with the members of the JSON object `vars` as template variables and
 * appends the text to out. An integral JSON number becomes an int, any other a
 * float. On failure out holds whatever was rendered before the error. */
int eng_jinja_render(const eng_jinja *t, const cJSON *vars, eng_buf *out, eng_error *err);

#endif
