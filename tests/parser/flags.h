/* flags.h: a parser test case's ENG_PARSE_* flags, written in the corpus as words
 * ("reasoning", "think_open", "tools") separated by spaces. */
#ifndef TEST_PARSER_FLAGS_H
#define TEST_PARSER_FLAGS_H

#include <string.h>

#include <cjson/cJSON.h>

#include "chat/parser.h"

static inline unsigned case_flags(const cJSON *tc)
{
    static const struct {
        const char *word;
        unsigned flag;
    } words[] = {{"reasoning", ENG_PARSE_REASONING}, {"think_open", ENG_PARSE_THINK_OPEN}, {"tools", ENG_PARSE_TOOLS}};
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(tc, "flags");
    const char *s = cJSON_IsString(f) ? f->valuestring : "";
    unsigned flags = 0;
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        size_t n = strlen(words[i].word);
        for (const char *at = strstr(s, words[i].word); at; at = strstr(at + 1, words[i].word))
            if ((at == s || at[-1] == ' ') && (at[n] == ' ' || at[n] == 0))
                flags |= words[i].flag;
    }
    return flags;
}

#endif
