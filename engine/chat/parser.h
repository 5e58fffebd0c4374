/* parser.h: splitting a Qwen3 completion into reasoning, answer and tool calls.
 *
 * The same parser serves a finished text and a token stream: feed it any byte chunks,
 * collect the deltas, call finish. Whatever the split (byte by byte, token by token),
 * the concatenated deltas equal the result for the whole text, no piece of a marker
 * (<think>, </think>, <tool_call>, </tool_call>) reaches the content early, and no delta
 * ends inside a UTF-8 character. The rules are documented in parser.c. */
#ifndef ENG_PARSER_H
#define ENG_PARSER_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "common/buf.h"
#include "common/error.h"

/* One OpenAI tool_calls entry ({id, type: "function", function: {name, arguments}}). */
typedef struct eng_tool_call {
    int index; /* 0, 1, ... in the order of the output */
    char *id;  /* "call_<n>", or "call_<tag>_<n>" with a tag (see eng_parser_new) */
    char *name;
    char *arguments; /* JSON text of the arguments object */
} eng_tool_call;

/* What one or more feed/finish calls produced. Calls append to it; the caller owns it. */
typedef struct eng_parse_delta {
    eng_buf reasoning;
    eng_buf content;
    eng_tool_call *calls;
    int n_calls;
    int cap_calls;
} eng_parse_delta;

void eng_parse_delta_init(eng_parse_delta *d);
void eng_parse_delta_clear(eng_parse_delta *d); /* empties it, keeps memory */
void eng_parse_delta_free(eng_parse_delta *d);

typedef struct eng_parser eng_parser;

/* What to look for in the output (the rules are in parser.c). */
enum {
    ENG_PARSE_REASONING = 1,  /* a <think> block the model opens is reasoning */
    ENG_PARSE_THINK_OPEN = 2, /* the prompt opened <think>: the output starts as reasoning
                                 (implies ENG_PARSE_REASONING) */
    ENG_PARSE_TOOLS = 4,      /* <tool_call> blocks become calls (the request offered tools) */
};

/* flags: ENG_PARSE_*; none: all is content, byte for byte. id_tag (may be NULL) makes
 * call ids unique across responses. */
eng_parser *eng_parser_new(unsigned flags, const char *id_tag, eng_error *err);
void eng_parser_free(eng_parser *p);

/* Feeds len bytes, appending whatever became certain to out. 0, or -1 (out of memory,
 * or fed after finish). */
int eng_parser_feed(eng_parser *p, const char *data, size_t len, eng_parse_delta *out, eng_error *err);
/* The end of the output: releases everything held back. 0 or -1 (out of memory). */
int eng_parser_finish(eng_parser *p, eng_parse_delta *out, eng_error *err);
/* Inside the reasoning part, or sure to start in it (for displays that show it apart). */
int eng_parser_in_reasoning(const eng_parser *p);

/* Whole text in one go: feed + finish. */
int eng_parse_text(const char *text, size_t len, unsigned flags, const char *id_tag, eng_parse_delta *out,
                   eng_error *err);

/* Whether a rendered chat prompt leaves the model inside a think block
 * (ENG_PARSE_THINK_OPEN): its last "<think>" comes after its last "<|im_start|>" (the
 * turn being generated) and no "</think>" follows it. Qwen3's template with thinking on
 * opens nothing (the model writes "<think>" itself), with thinking off it writes an empty,
 * closed block; Qwen3 thinking-only models' templates end the prompt with "<think>\n". */
int eng_prompt_opens_think(const char *prompt);

/* {"reasoning_content", "content", "tool_calls"} as in an OpenAI message: null where
 * empty or absent. NULL when out of memory. */
cJSON *eng_parse_delta_to_json(const eng_parse_delta *d);
/* One tool call as OpenAI's {"id", "type": "function", "function": {"name", "arguments"}};
 * with_index adds "index" (as in streamed chunks). NULL when out of memory. */
cJSON *eng_tool_call_to_json(const eng_tool_call *c, int with_index);

#endif
