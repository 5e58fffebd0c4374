/* safetensors.c: see safetensors.h.
 *
 * Format: 8-byte little-endian header size N, N bytes of JSON mapping each tensor
 * name to {dtype, shape, data_offsets: [begin, end]} (offsets relative to the end
 * of the header), then the data. All tensors of all files go into one array sorted
 * by name, so lookups are a binary search even for MoE checkpoints with tens of
 * thousands of tensors. */
#include "model/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct st_file {
    char *path;
    void *map; /* the file's bytes at their offsets: its mapping, or (in memory) a private region */
    size_t size;
    int fd;       /* in memory: open, tensors are read when first asked for; else -1 */
    void *region; /* in memory: the anonymous mapping map lies in (map rounded up to a huge page) */
    size_t region_size;
} st_file;

struct eng_st {
    int in_memory;
    st_file *files;
    int n_files;
    eng_st_tensor *tensors;
    int n_tensors, cap_tensors;
    char *source; /* what to name when a tensor is missing */
};

static int dtype_bytes(const char *dt)
{
    static const struct {
        const char *name;
        int bytes;
    } T[] = {
        {"F64", 8}, {"F32", 4},  {"F16", 2},     {"BF16", 2},    {"I64", 8}, {"I32", 4}, {"I16", 2}, {"I8", 1},
        {"U8", 1},  {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"U16", 2}, {"U32", 4}, {"U64", 8},
    };
    for (size_t i = 0; i < sizeof T / sizeof T[0]; i++)
        if (!strcmp(dt, T[i].name))
            return T[i].bytes;
    return 0;
}

static int add_tensor(eng_st *st, const eng_st_tensor *t)
{
    if (st->n_tensors == st->cap_tensors) {
        int cap = st->cap_tensors ? st->cap_tensors * 2 : 256;
        eng_st_tensor *p = realloc(st->tensors, (size_t)cap * sizeof *p);
        if (!p)
            return -1;
        st->tensors = p;
        st->cap_tensors = cap;
    }
    st->tensors[st->n_tensors++] = *t;
    return 0;
}

/* bytes [off, off + n) of f into place (in memory). */
static int read_range(const st_file *f, size_t off, size_t n, eng_error *err)
{
    while (n > 0) {
        ssize_t r = pread(f->fd, (char *)f->map + off, n > (1u << 30) ? (1u << 30) : n, (off_t)off);
        if (r <= 0)
            return eng_fail(err, "%s: cannot read bytes %zu..%zu: %s", f->path, off, off + n,
                            r < 0 ? strerror(errno) : "the file is shorter than it was");
        off += (size_t)r;
        n -= (size_t)r;
    }
    return 0;
}

#define HUGE_PAGE (2u << 20)

/* In memory: a private region for the file's bytes, 2 MiB aligned (the weights of one
 * decode step span a GB: with 4 KiB pages every 4 KiB is a TLB miss, so tensors go on
 * huge pages as they are read); only its header is read here. */
static int open_in_memory(st_file *f, int fd, eng_error *err)
{
    f->fd = fd; /* eng_st_close closes it */
    f->region_size = f->size + HUGE_PAGE;
    f->region = mmap(NULL, f->region_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (f->region == MAP_FAILED) {
        f->region = NULL;
        return eng_fail(err, "%s: cannot reserve %zu bytes: %s", f->path, f->size, strerror(errno));
    }
    f->map = (void *)(((uintptr_t)f->region + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
    if (read_range(f, 0, 8, err) < 0)
        return -1;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | ((const unsigned char *)f->map)[i];
    return hlen > f->size - 8 ? 0 : read_range(f, 8, (size_t)hlen, err); /* a bad length is named below */
}

/* Maps one file (or, in memory, reads its header) and adds its tensors. */
static int open_file(eng_st *st, const char *path, eng_error *err)
{
    st_file *f = &st->files[st->n_files];
    memset(f, 0, sizeof *f);
    f->fd = -1;
    f->path = strdup(path);
    if (!f->path)
        return eng_fail(err, "%s: out of memory", path);
    st->n_files++; /* from here on eng_st_close() cleans up this file */

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return eng_fail(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) < 0) {
        close(fd);
        return eng_fail(err, "%s: cannot stat: %s", path, strerror(errno));
    }
    if (sb.st_size < 8) {
        close(fd);
        return eng_fail(err, "%s: truncated file (%lld bytes, no safetensors header)", path, (long long)sb.st_size);
    }
    f->size = (size_t)sb.st_size;
    if (st->in_memory) {
        if (open_in_memory(f, fd, err) < 0)
            return -1;
    } else {
        f->map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        close(fd);
        if (f->map == MAP_FAILED) {
            f->map = NULL;
            return eng_fail(err, "%s: cannot mmap: %s", path, strerror(errno));
        }
    }

    uint64_t hlen = 0;
    const unsigned char *p = f->map;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | p[i];
    if (hlen > f->size - 8)
        return eng_fail(err, "%s: corrupt or truncated file (header of %llu bytes, file of %zu)", path,
                        (unsigned long long)hlen, f->size);
    const char *end = NULL;
    cJSON *h = cJSON_ParseWithLengthOpts((const char *)p + 8, (size_t)hlen, &end, 0);
    if (!h || !cJSON_IsObject(h)) {
        long at = (h || !end) ? 0 : (long)(end - ((const char *)p + 8));
        cJSON_Delete(h);
        return eng_fail(err, "%s: corrupt header (invalid JSON near byte %ld)", path, at);
    }
    const unsigned char *data = p + 8 + hlen;
    size_t data_size = f->size - 8 - (size_t)hlen;
    int rc = -1;
    const cJSON *it;
    cJSON_ArrayForEach(it, h)
    {
        if (!strcmp(it->string, "__metadata__"))
            continue;
        eng_st_tensor t;
        memset(&t, 0, sizeof t);
        t.file = f->path;
        const cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
        const cJSON *shape = cJSON_GetObjectItemCaseSensitive(it, "shape");
        const cJSON *off = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
        if (!cJSON_IsString(dt) || !cJSON_IsArray(shape) || !cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2) {
            eng_fail(err, "%s: corrupt header entry for tensor %s", path, it->string);
            goto done;
        }
        snprintf(t.dtype, sizeof t.dtype, "%s", dt->valuestring);
        int esize = dtype_bytes(t.dtype);
        if (!esize) {
            eng_fail(err, "%s: tensor %s has unknown dtype \"%s\"", path, it->string, dt->valuestring);
            goto done;
        }
        t.n_dims = cJSON_GetArraySize(shape);
        if (t.n_dims > ENG_ST_MAX_DIMS) {
            eng_fail(err, "%s: tensor %s has %d dimensions", path, it->string, t.n_dims);
            goto done;
        }
        uint64_t count = 1;
        for (int d = 0; d < t.n_dims; d++) {
            const cJSON *v = cJSON_GetArrayItem(shape, d);
            if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 1e15) {
                eng_fail(err, "%s: tensor %s has an invalid shape", path, it->string);
                goto done;
            }
            t.shape[d] = (int64_t)v->valuedouble;
            count *= (uint64_t)t.shape[d];
        }
        const cJSON *b = cJSON_GetArrayItem(off, 0), *e = cJSON_GetArrayItem(off, 1);
        if (!cJSON_IsNumber(b) || !cJSON_IsNumber(e) || b->valuedouble < 0 || e->valuedouble < b->valuedouble) {
            eng_fail(err, "%s: tensor %s has invalid data_offsets", path, it->string);
            goto done;
        }
        uint64_t ob = (uint64_t)b->valuedouble, oe = (uint64_t)e->valuedouble;
        if (oe > data_size) {
            eng_fail(err, "%s: truncated file: tensor %s ends at byte %llu of a %zu-byte data section", path,
                     it->string, (unsigned long long)oe, data_size);
            goto done;
        }
        if (oe - ob != count * (uint64_t)esize) {
            eng_fail(err, "%s: tensor %s holds %llu bytes, its shape and dtype need %llu", path, it->string,
                     (unsigned long long)(oe - ob), (unsigned long long)(count * (uint64_t)esize));
            goto done;
        }
        t.data = data + ob;
        t.nbytes = (size_t)(oe - ob);
        t.file_index = st->n_files - 1;
        t.name = strdup(it->string);
        if (!t.name || add_tensor(st, &t) < 0) {
            free((void *)t.name);
            eng_fail(err, "%s: out of memory", path);
            goto done;
        }
    }
    rc = 0;
done:
    cJSON_Delete(h);
    return rc;
}

static int cmp_tensor(const void *a, const void *b)
{
    return strcmp(((const eng_st_tensor *)a)->name, ((const eng_st_tensor *)b)->name);
}

/* Reads the index: the distinct shard names, in order of first appearance. */
static int read_index(const char *dir, const char *path, eng_st *st, char ***shards, int *n_shards, cJSON **root_out,
                      eng_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return eng_fail(err, "%s: cannot open: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = len >= 0 ? malloc((size_t)len + 1) : NULL;
    if (!text || fread(text, 1, (size_t)len, f) != (size_t)len) {
        free(text);
        fclose(f);
        return eng_fail(err, "%s: read error", path);
    }
    fclose(f);
    text[len] = 0;
    cJSON *root = cJSON_Parse(text);
    free(text);
    const cJSON *wm = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    if (!cJSON_IsObject(wm)) {
        cJSON_Delete(root);
        return eng_fail(err, "%s: corrupt index (invalid JSON or no \"weight_map\" object)", path);
    }
    int cap = cJSON_GetArraySize(wm);
    char **names = calloc((size_t)cap + 1, sizeof *names);
    int n = 0;
    if (!names) {
        cJSON_Delete(root);
        return eng_fail(err, "%s: out of memory", path);
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, wm)
    {
        if (!cJSON_IsString(it) || strchr(it->valuestring, '/')) {
            for (int i = 0; i < n; i++)
                free(names[i]);
            free(names);
            cJSON_Delete(root);
            return eng_fail(err, "%s: weight_map entry for %s is not a file name", path, it->string);
        }
        size_t need = strlen(dir) + strlen(it->valuestring) + 2;
        char *full = malloc(need);
        if (!full)
            continue; /* reported below as a missing shard's tensor */
        snprintf(full, need, "%s/%s", dir, it->valuestring);
        int seen = 0;
        for (int i = 0; i < n && !seen; i++)
            seen = !strcmp(names[i], full);
        if (seen)
            free(full);
        else
            names[n++] = full;
    }
    (void)st;
    *shards = names;
    *n_shards = n;
    *root_out = root;
    return 0;
}

int eng_st_open(const char *dir, int in_memory, eng_st **out, eng_error *err)
{
    *out = NULL;
    eng_st *st = calloc(1, sizeof *st);
    if (!st)
        return eng_fail(err, "out of memory");
    st->in_memory = in_memory;
    char index_path[4096], single[4096];
    snprintf(index_path, sizeof index_path, "%s/model.safetensors.index.json", dir);
    snprintf(single, sizeof single, "%s/model.safetensors", dir);

    cJSON *index = NULL;
    if (access(index_path, F_OK) == 0) {
        char **shards = NULL;
        int n = 0;
        if (read_index(dir, index_path, st, &shards, &n, &index, err) < 0)
            goto fail;
        st->source = strdup(index_path);
        st->files = calloc((size_t)n + 1, sizeof *st->files);
        int rc = st->files ? 0 : eng_fail(err, "out of memory");
        for (int i = 0; i < n && rc == 0; i++)
            rc = open_file(st, shards[i], err);
        for (int i = 0; i < n; i++)
            free(shards[i]);
        free(shards);
        if (rc < 0)
            goto fail;
    } else {
        st->source = strdup(single);
        st->files = calloc(1, sizeof *st->files);
        if (!st->files) {
            eng_fail(err, "out of memory");
            goto fail;
        }
        if (access(single, F_OK) != 0) {
            eng_fail(err, "%s: no weights (neither model.safetensors nor model.safetensors.index.json)", dir);
            goto fail;
        }
        if (open_file(st, single, err) < 0)
            goto fail;
    }
    if (st->n_tensors > 1) /* with none, the list is NULL (found by fuzz_safetensors) */
        qsort(st->tensors, (size_t)st->n_tensors, sizeof *st->tensors, cmp_tensor);
    for (int i = 1; i < st->n_tensors; i++)
        if (!strcmp(st->tensors[i].name, st->tensors[i - 1].name)) {
            eng_fail(err, "%s: tensor %s appears in both %s and %s", st->source, st->tensors[i].name,
                     st->tensors[i - 1].file, st->tensors[i].file);
            goto fail;
        }
    if (index) {
        /* Every tensor the index lists must be in the shard it names. */
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(index, "weight_map"))
        {
            const eng_st_tensor *t = eng_st_find(st, it->string);
            if (!t) {
                eng_fail(err, "%s/%s: missing tensor %s (listed in model.safetensors.index.json)", dir, it->valuestring,
                         it->string);
                goto fail;
            }
        }
        cJSON_Delete(index);
    }
    *out = st;
    return 0;
fail:
    cJSON_Delete(index);
    eng_st_close(st);
    return -1;
}

void eng_st_close(eng_st *st)
{
    if (!st)
        return;
    for (int i = 0; i < st->n_tensors; i++)
        free((void *)st->tensors[i].name);
    free(st->tensors);
    for (int i = 0; i < st->n_files; i++) {
        st_file *f = &st->files[i];
        if (f->region)
            munmap(f->region, f->region_size);
        else if (f->map)
            munmap(f->map, f->size);
        if (f->fd >= 0)
            close(f->fd);
        free(f->path);
    }
    free(st->files);
    free(st->source);
    free(st);
}

const eng_st_tensor *eng_st_find(const eng_st *st, const char *name)
{
    eng_st_tensor key;
    key.name = name;
    return st->n_tensors ? bsearch(&key, st->tensors, (size_t)st->n_tensors, sizeof *st->tensors, cmp_tensor) : NULL;
}

const char *eng_st_source(const eng_st *st)
{
    return st->source;
}

size_t eng_st_total_bytes(const eng_st *st)
{
    size_t n = 0;
    for (int i = 0; i < st->n_tensors; i++)
        n += st->tensors[i].nbytes;
    return n;
}

size_t eng_st_resident_bytes(const eng_st *st)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        return 0;
    char line[512];
    size_t total = 0;
    int ours = 0; /* the mapping being read is one of our files' */
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        size_t kb;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) { /* a mapping's first line; then its fields */
            ours = 0; /* in memory, madvise splits a file's region into several mappings */
            for (int i = 0; i < st->n_files; i++) {
                uintptr_t a = (uintptr_t)st->files[i].map, b = a + st->files[i].size;
                ours |= lo < b && hi > a; /* overlaps the file's bytes */
            }
        } else if (ours && sscanf(line, "Rss: %zu kB", &kb) == 1) {
            total += kb * 1024;
        }
    }
    fclose(f);
    return total;
}

static void shape_str(char *buf, size_t len, int n, const int64_t *shape)
{
    size_t used = (size_t)snprintf(buf, len, "[");
    for (int d = 0; d < n && used < len; d++)
        used += (size_t)snprintf(buf + used, len - used, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (used < len)
        snprintf(buf + used, len - used, "]");
}

int eng_st_get(eng_st *st, const char *name, int n_dims, const int64_t *shape, const void **data, eng_dtype *dt,
               eng_error *err)
{
    eng_st_tensor *t = (eng_st_tensor *)eng_st_find(st, name);
    if (!t)
        return eng_fail(err, "%s: missing tensor %s", st->source, name);
    if (!strcmp(t->dtype, "BF16"))
        *dt = ENG_DT_BF16;
    else if (!strcmp(t->dtype, "F16"))
        *dt = ENG_DT_F16;
    else if (!strcmp(t->dtype, "F32"))
        *dt = ENG_DT_F32;
    else if (!strcmp(t->dtype, "F8_E4M3"))
        *dt = ENG_DT_F8E4M3;
    else
        return eng_fail(err, "%s: tensor %s has unsupported dtype %s (supported: BF16, F16, F32, F8_E4M3)", t->file,
                        name, t->dtype);
    int same = t->n_dims == n_dims;
    for (int d = 0; same && d < n_dims; d++)
        same = t->shape[d] == shape[d];
    if (!same) {
        char got[128], want[128];
        shape_str(got, sizeof got, t->n_dims, t->shape);
        shape_str(want, sizeof want, n_dims, shape);
        return eng_fail(err, "%s: tensor %s has shape %s, expected %s", t->file, name, got, want);
    }
    if (st->in_memory && !t->loaded) {
        const st_file *f = &st->files[t->file_index];
        /* Huge pages only for the whole 2 MiB pages inside the tensor: one reaching into
         * a neighbour would bring in bytes nobody asked for (an EP rank's unowned
         * experts). A hint: without huge pages it still works. */
        uintptr_t lo = ((uintptr_t)t->data + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1);
        uintptr_t hi = ((uintptr_t)t->data + t->nbytes) & ~(uintptr_t)(HUGE_PAGE - 1);
        if (lo < hi)
            (void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
        if (read_range(f, (size_t)((const char *)t->data - (const char *)f->map), t->nbytes, err) < 0)
            return -1;
        t->loaded = 1;
    }
    *data = t->data;
    return 0;
}
