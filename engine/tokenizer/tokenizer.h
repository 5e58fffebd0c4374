/* tokenizer.h: Qwen3's byte-level BPE tokenizer, read from tokenizer.json.
 *
 * Matches the Hugging Face tokenizer byte for byte: added tokens (special and
 * not) are matched first, the rest is NFC-normalised, split with the
 * pre-tokenizer's regex (PCRE2), mapped to byte-level symbols and merged by rank. */
#ifndef ENG_TOKENIZER_H
#define ENG_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/error.h"

typedef struct eng_tokenizer eng_tokenizer;

/* Loads dir/tokenizer.json (and dir/tokenizer_config.json when present). */
int eng_tokenizer_load(const char *dir, eng_tokenizer **out, eng_error *err);
void eng_tokenizer_free(eng_tokenizer *t);

/* Encodes len bytes of UTF-8 text (invalid UTF-8 is an error). With parse_special,
 * special added tokens such as <|im_start|> written in the text become their ids;
 * without, they are encoded as plain text. *ids is malloc'd; the caller frees it. */
int eng_tokenize(const eng_tokenizer *t, const char *text, size_t len, int parse_special, int32_t **ids, int *n_ids,
                 eng_error *err);

int eng_tokenizer_vocab_size(const eng_tokenizer *t); /* highest id + 1 */
/* The id of a token written exactly as in the vocabulary or the added tokens; -1 if none. */
int32_t eng_token_id(const eng_tokenizer *t, const char *token);
/* The bytes a token stands for (byte-level mapping undone). NULL for unknown ids. */
const char *eng_token_bytes(const eng_tokenizer *t, int32_t id, size_t *len);
int eng_token_is_special(const eng_tokenizer *t, int32_t id);

/* Whole decode: appends the text of ids to out; bytes that do not form valid
 * UTF-8 become U+FFFD, as Hugging Face's decode does. */
int eng_detokenize(const eng_tokenizer *t, const int32_t *ids, int n, int skip_special, eng_buf *out);

/* Streaming decode: push one id at a time; only complete UTF-8 characters are
 * appended to out, so a character split across tokens is never split across
 * streamed pieces. flush() emits what is left at the end of the stream. */
typedef struct eng_detok {
    unsigned char pending[8];
    int n_pending;
} eng_detok;

int eng_detok_push(const eng_tokenizer *t, eng_detok *d, int32_t id, int skip_special, eng_buf *out);
int eng_detok_flush(eng_detok *d, eng_buf *out);

#endif
