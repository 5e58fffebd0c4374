/* file.h: reading a whole file, the one place that does it for configs, tokenizer
 * files, templates and CLI inputs; and a path's last name. */
#ifndef ENG_FILE_H
#define ENG_FILE_H

#include <stddef.h>

#include "common/error.h"

/* Reads all of path ("-" = standard input) into a NUL-terminated heap buffer that the
 * caller frees; *len (may be NULL) gets the byte count, which excludes the NUL.
 * NULL on failure, with "PATH: reason" in err. */
char *eng_read_file(const char *path, size_t *len, eng_error *err);

/* The last name in path, trailing slashes ignored ("/m/Qwen3-8B/" -> "Qwen3-8B"; "/" stays
 * "/"), into out[cap], cut to fit: the served model name is its folder's name. */
void eng_path_last_name(const char *path, char *out, size_t cap);

#endif
