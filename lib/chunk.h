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

/* The cut points of a buffer found in parallel: chunk_find scans a stretch
 * of it (stretches scan on their own threads) for every place where the
 * rolling hash of the last 64 bytes would allow a cut, and chunk_cut_found
 * then walks from chunk to chunk over those places, in order, as chunk_cut
 * would: the cuts are exactly chunk_cut's (the hash at a place depends on
 * the 64 bytes before it only, except within 64 bytes of where chunk_cut
 * starts hashing, which chunk_cut_found hashes itself). */
struct chunk_found {
    uint64_t *at; /* (offset in the buffer << 1) | 1 if the stricter mask passes too */
    size_t n, cap;
};
/* Appends the places in [from, to) of buf to *out (offsets ascending):
 * VK_ENOMEM or 0. buf[from-64 .. from) must be readable when from >= 64. */
int chunk_find(const struct chunk_params *p, const uint8_t *buf, size_t from, size_t to,
               struct chunk_found *out);
/* Appends b's places to a (b's follow a's). */
int chunk_found_join(struct chunk_found *a, const struct chunk_found *b);
void chunk_found_clear(struct chunk_found *f);
/* The length of the chunk starting at offset s of buf, n bytes available
 * from s, given the places found over [0, s + n) of buf; *cursor (0 for the
 * first chunk of buf) moves on as chunks are cut. */
size_t chunk_cut_found(const struct chunk_params *p, const uint8_t *buf, size_t s, size_t n,
                       const struct chunk_found *f, size_t *cursor);

#endif
