/* safetensors.h: a read-only view of a checkpoint's safetensors files.
 *
 * Opens model.safetensors, or every shard listed by model.safetensors.index.json,
 * memory-maps each file and indexes its tensors by name. Tensor data is used in
 * place (never copied), so the mapping lives as long as the eng_st. Every header is
 * checked against the file's size on open, so a truncated or corrupt file is
 * reported then, naming the file and the tensor. */
#ifndef ENG_SAFETENSORS_H
#define ENG_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "kernels/kernels.h"

#define ENG_ST_MAX_DIMS 8

typedef struct eng_st eng_st;

typedef struct eng_st_tensor {
    const char *name;
    const char *file; /* the file it lives in (for messages) */
    char dtype[16];   /* as written in the header: "BF16", "F16", "F32", ... */
    int n_dims;
    int64_t shape[ENG_ST_MAX_DIMS];
    const void *data; /* in the file's mapping or private region */
    size_t nbytes;
    int file_index;
    int loaded; /* in memory: its bytes have been read */
} eng_st_tensor;

/* Opens dir's weights (sharded when the index file exists). in_memory: each tensor is
 * read, when eng_st_get first asks for it, into private memory that may use huge
 * pages (faster to stream than a file mapping of 4 KiB pages); else the files are
 * mapped (pages shared with every process mapping them, read in as touched). Either
 * way tensors never asked for cost no memory. */
int eng_st_open(const char *dir, int in_memory, eng_st **out, eng_error *err);
void eng_st_close(eng_st *st);
/* NULL when there is no such tensor. */
const eng_st_tensor *eng_st_find(const eng_st *st, const char *name);
/* The file name to quote for a tensor that is missing (the index, or the one file). */
const char *eng_st_source(const eng_st *st);
size_t eng_st_total_bytes(const eng_st *st); /* sum of all tensors' bytes */
/* Bytes of the files' mappings in this process's memory now (Rss in /proc/self/smaps):
 * what the weights really cost this process. 0 when smaps cannot be read. */
size_t eng_st_resident_bytes(const eng_st *st);

/* Finds a tensor that must have the given shape (n_dims values in shape) and a
 * supported dtype (BF16, F16, F32, F8_E4M3); fails with one line naming the file
 * and the tensor. */
int eng_st_get(eng_st *st, const char *name, int n_dims, const int64_t *shape, const void **data, eng_dtype *dt,
               eng_error *err);

#endif
