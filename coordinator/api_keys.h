/* api_keys.h: the HTTP API's keys (`--api-key-file`).
 *
 * The file holds one key per line; blank lines and lines starting with '#' are
 * skipped, surrounding whitespace is trimmed. A request is let in when its
 * `Authorization: Bearer KEY` names one of them (the header OpenAI clients send).
 * Reloading reads the file again and swaps the set at once; a file that cannot be
 * read, or holds no key, leaves the old set in place. Keys are never logged or put
 * in an answer. */
#ifndef COORD_API_KEYS_H
#define COORD_API_KEYS_H

#include <stddef.h>

#include "common/error.h"

typedef struct coord_keys coord_keys;

/* Reads path; fails when it cannot be read or holds no key. */
int coord_keys_load(const char *path, coord_keys **out, eng_error *err);
/* Reads the file again; on failure the old keys stay. Returns the number of keys or -1. */
int coord_keys_reload(coord_keys *k, eng_error *err);
/* 1 when authorization (an Authorization header's value, may be NULL) carries a
 * known key; else 0 with why saying what was wrong (missing, malformed, unknown). */
int coord_keys_allow(coord_keys *k, const char *authorization, const char **why);
void coord_keys_free(coord_keys *k); /* NULL is fine */

#endif
