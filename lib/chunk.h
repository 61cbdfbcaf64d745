/* chunk: content-defined chunking (FastCDC-style gear hash with normalized
 * chunking). Boundaries depend only on nearby content, so an insertion shifts
 * only the chunks around it, and identical regions of two streams (memory
 * images taken seconds apart, deltas over one base) give identical chunks. */
#ifndef VMCKPT_CHUNK_H
#define VMCKPT_CHUNK_H

#include <stddef.h>
#include <stdint.h>

/* The longest chunk any parameters cut (4 MiB average * 4): a longer length
 * read from a store is damage, never a size to allocate. */
#define CHUNK_LEN_MAX ((size_t)16 << 20)

struct chunk_params {
    size_t min, avg, max;
    uint64_t mask_hard; /* before avg: more bits, cuts are rarer */
    uint64_t mask_easy; /* after avg: fewer bits, cuts come sooner */
};

/* Parameters for an average chunk size avg (a power of two from 1 KiB to
 * 4 MiB): min = avg/4, max = avg*4. 0 or VK_EINVAL. */
int chunk_params_init(struct chunk_params *p, size_t avg);
/* Length of the chunk that starts at src, given n available bytes: a
 * content-defined cut in [min, max], or n when n <= min. The caller gives at
 * least max bytes unless it is at the end of the stream. */
size_t chunk_cut(const struct chunk_params *p, const uint8_t *src, size_t n);
/* 1 if all n bytes are zero. */
int chunk_is_zero(const void *src, size_t n);

#endif
