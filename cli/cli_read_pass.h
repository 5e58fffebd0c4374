/* cli_read_pass.h: how fast a pool's threads stream memory, the denominator of the
 * decode roofline (`tandem bench --roofline`, bench/membw).
 *
 * Decode is bound by reading every weight once per token; a pass that only reads
 * (each thread sums its own contiguous slice, with enough independent chains to
 * keep DRAM busy) is the fastest any kernel could go over the same bytes. */
#ifndef TANDEM_CLI_READ_PASS_H
#define TANDEM_CLI_READ_PASS_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/threadpool.h"

/* Seconds one pass of the pool's threads takes to read the first `bytes` of buf
 * (rounded down to whole 64-byte lines per thread); the sums go to *checksum so
 * that the loads cannot be optimised away. */
double read_pass_s(eng_pool *pool, const uint64_t *buf, size_t bytes, uint64_t *checksum);

/* A buffer of `bytes` for read_pass_s, every page touched (and non-zero) so that the
 * passes read memory, not the zero page; NULL when out of memory. free() it. */
uint64_t *read_pass_buffer(size_t bytes);

#endif
