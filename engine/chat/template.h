/* template.h: the model's own chat template, rendered from an OpenAI-style request.
 *
 * The template is the `chat_template` of the model's tokenizer_config.json, run by
 * our Jinja interpreter (chat/jinja.h) the way Hugging Face transformers runs it,
 * so that the prompt is byte-identical to what transformers/vLLM would build. The
 * request is prepared as vLLM prepares it before rendering:
 *   - messages: each needs a string `role`; `content` is a string, a list of
 *     {"type": "text", "text": ...} parts (joined with "\n"), or, for assistant
 *     messages only, null/absent (rendered as ""). Other fields (reasoning_content,
 *     tool_calls, tool_call_id, name, ...) are passed through.
 *   - tool_calls[].function.arguments given as a JSON string is parsed into an
 *     object, so that the template's `tojson` prints the object.
 *   - tools: passed as given (absent -> none); add_generation_prompt: default true;
 *   - chat_template_kwargs (e.g. {"enable_thinking": false}) become template
 *     variables, as do the special tokens of tokenizer_config.json (bos_token,
 *     eos_token, pad_token, unk_token) when they are set.
 * A malformed request or a template error (syntax, raise_exception, unknown filter)
 * fails with one line in err; a template error names the template line.
 *
 * Numbers reach the template through cJSON, which does not keep "1.0" apart from
 * "1": an integral JSON number is rendered as an integer. */
#ifndef ENG_CHAT_TEMPLATE_H
#define ENG_CHAT_TEMPLATE_H

#include <cjson/cJSON.h>

#include "common/error.h"

typedef struct eng_chat_template eng_chat_template;

/* Reads model_dir/tokenizer_config.json. `chat_template` may be a string, or a list
 * of {"name", "template"} entries (the "tool_use" one is chosen when the request has
 * tools, else "default"), as transformers does. The template is parsed here, so a
 * syntax error is reported at load time. */
int eng_chat_template_load(const char *model_dir, eng_chat_template **out, eng_error *err);

/* Builds one from template source text (no special tokens, one template). */
int eng_chat_template_from_string(const char *source, eng_chat_template **out, eng_error *err);

void eng_chat_template_free(eng_chat_template *t);

/* Renders the request body (a JSON object with at least `messages`) into the
 * prompt text. *prompt is malloc'd and NUL-terminated; the caller frees it. */
int eng_chat_template_render(const eng_chat_template *t, const cJSON *request, char **prompt, eng_error *err);

#endif
