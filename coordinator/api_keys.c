/* api_keys.c: the HTTP API's keys (see api_keys.h). */
#include "api_keys.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_KEY_BYTES 1024
#define MAX_KEYS 65536

struct coord_keys {
    char *path;
    pthread_rwlock_t lock;
    char **keys; /* guarded by lock */
    int n;
};

static void free_list(char **keys, int n)
{
    for (int i = 0; i < n; i++)
        free(keys[i]);
    free(keys);
}

/* Reads the key file into a new list. */
static int read_keys(const char *path, char ***out, int *n_out, eng_error *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return eng_fail(err, "api keys: cannot read %s: %s", path, strerror(errno));
    char **keys = NULL;
    int n = 0, cap = 0, line_no = 0, rc = 0;
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t len;
    while ((len = getline(&line, &line_cap, f)) >= 0) {
        line_no++;
        char *s = line, *e = line + len;
        while (s < e && isspace((unsigned char)*s))
            s++;
        while (e > s && isspace((unsigned char)e[-1]))
            e--;
        if (s == e || *s == '#')
            continue;
        *e = 0;
        int bad = e - s > MAX_KEY_BYTES;
        for (const char *p = s; p < e && !bad; p++)
            bad = !isgraph((unsigned char)*p);
        if (bad) { /* the line is not quoted: it may be a key */
            rc = eng_fail(err, "api keys: %s line %d: a key is 1..%d printable characters without spaces", path,
                          line_no, MAX_KEY_BYTES);
            break;
        }
        if (n == MAX_KEYS) {
            rc = eng_fail(err, "api keys: %s holds more than %d keys", path, MAX_KEYS);
            break;
        }
        if (n == cap) {
            int nc = cap ? 2 * cap : 8;
            char **p = realloc(keys, (size_t)nc * sizeof *p);
            if (!p) {
                rc = eng_fail(err, "api keys: out of memory");
                break;
            }
            keys = p, cap = nc;
        }
        if (!(keys[n] = strdup(s))) {
            rc = eng_fail(err, "api keys: out of memory");
            break;
        }
        n++;
    }
    free(line);
    fclose(f);
    if (!rc && n == 0)
        rc = eng_fail(err, "api keys: %s holds no key", path);
    if (rc) {
        free_list(keys, n);
        return -1;
    }
    *out = keys;
    *n_out = n;
    return 0;
}

int coord_keys_load(const char *path, coord_keys **out, eng_error *err)
{
    *out = NULL;
    coord_keys *k = calloc(1, sizeof *k);
    if (!k || !(k->path = strdup(path))) {
        free(k);
        return eng_fail(err, "api keys: out of memory");
    }
    if (read_keys(path, &k->keys, &k->n, err)) {
        free(k->path);
        free(k);
        return -1;
    }
    pthread_rwlock_init(&k->lock, NULL);
    *out = k;
    return 0;
}

int coord_keys_reload(coord_keys *k, eng_error *err)
{
    char **keys;
    int n;
    if (read_keys(k->path, &keys, &n, err))
        return -1;
    pthread_rwlock_wrlock(&k->lock);
    char **old = k->keys;
    int old_n = k->n;
    k->keys = keys, k->n = n;
    pthread_rwlock_unlock(&k->lock);
    free_list(old, old_n);
    return n;
}

/* Compares in time that depends on the lengths only, not on where they differ. */
static int same(const char *a, size_t al, const char *b, size_t bl)
{
    if (al != bl)
        return 0;
    unsigned char d = 0;
    for (size_t i = 0; i < al; i++)
        d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

int coord_keys_allow(coord_keys *k, const char *authorization, const char **why)
{
    if (!authorization || !*authorization) {
        *why = "You didn't provide an API key. Send it in an Authorization header: 'Authorization: Bearer KEY'.";
        return 0;
    }
    if (strncasecmp(authorization, "Bearer ", 7) != 0) {
        *why = "The Authorization header must be 'Bearer KEY'.";
        return 0;
    }
    const char *token = authorization + 7;
    while (*token == ' ')
        token++;
    size_t tl = strlen(token);
    while (tl > 0 && token[tl - 1] == ' ')
        tl--;
    int ok = 0;
    pthread_rwlock_rdlock(&k->lock);
    for (int i = 0; i < k->n; i++)
        ok |= same(token, tl, k->keys[i], strlen(k->keys[i]));
    pthread_rwlock_unlock(&k->lock);
    if (!ok)
        *why = "Incorrect API key provided.";
    return ok;
}

void coord_keys_free(coord_keys *k)
{
    if (!k)
        return;
    free_list(k->keys, k->n);
    pthread_rwlock_destroy(&k->lock);
    free(k->path);
    free(k);
}
