#include "chunk.h"

#include "err.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Under ThreadSanitizer the two scans below are not instrumented byte by
 * byte: they tell it the bytes they read as one range. A check of each byte
 * and of each table lookup was 32% of a TSan agent's CPU while it stored a
 * checkpoint; the range costs about what one copy of the bytes does, and a
 * write racing the scan is still reported. */
#if defined(__SANITIZE_THREAD__)
#define CHUNK_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CHUNK_TSAN 1
#endif
#endif
#ifdef CHUNK_TSAN
void __tsan_read_range(void *addr, unsigned long size);
#define CHUNK_SCAN_FN __attribute__((no_sanitize("thread")))
#define CHUNK_READ(p, n) __tsan_read_range((void *)(uintptr_t)(p), (unsigned long)(n))
#else
#define CHUNK_SCAN_FN
#define CHUNK_READ(p, n) ((void)0)
#endif

static uint64_t gear[256];
static pthread_once_t gear_once = PTHREAD_ONCE_INIT;

/* A fixed table: boundaries must be the same on every node and every run. */
static void chunk_gear_init(void)
{
    uint64_t x = 0x9e3779b97f4a7c15ull; /* splitmix64 */
    for (int i = 0; i < 256; i++) {
        uint64_t z = (x += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        gear[i] = z ^ (z >> 31);
    }
}

/* `bits` one-bits at the top of the word: with the shift-left gear hash the
 * top bits depend on the last 64 bytes, a wide enough window. */
static uint64_t chunk_mask(int bits)
{
    return bits <= 0 ? 0 : ~0ull << (64 - bits);
}

int chunk_params_init(struct chunk_params *p, size_t avg)
{
    int bits = 0;
    if (avg < 1024 || avg > (4u << 20) || (avg & (avg - 1)))
        return err_set(VK_EINVAL, "chunk size must be a power of two from 1 KiB to 4 MiB, not %zu",
                       avg);
    pthread_once(&gear_once, chunk_gear_init);
    while ((1ull << bits) < avg)
        bits++;
    p->avg = avg;
    p->min = avg / 4;
    p->max = avg * 4;
    p->mask_hard = chunk_mask(bits + 2); /* normalization level 2 */
    p->mask_easy = chunk_mask(bits - 2);
    return 0;
}

/* Where the zero bytes from src[i] end, at most at n; whole 64-byte blocks
 * only, as the scan's steps must stay aligned to its start. */
CHUNK_SCAN_FN static size_t chunk_skip_zeros(const uint8_t *src, size_t i, size_t n)
{
    while (i + 64 <= n) {
        uint64_t w[8], any = 0;
        memcpy(w, src + i, sizeof(w));
        for (int k = 0; k < 8; k++)
            any |= w[k];
        if (any)
            break;
        i += 64;
    }
    return i;
}

/* First i in [from, to) where the hash after byte i has no bit of mask set,
 * or `to`. The hash h_i = (h_{i-1} << 1) + gear[src[i]] is a chain of
 * dependent shifts and adds, two cycles a byte. Taking two bytes at a time,
 * h_{i+1} = (h_{i-1} << 2) + ((gear[a] << 1) + gear[b]), halves the chain
 * (the loop takes four, as two such steps); h_i is still computed and
 * tested, off the chain, so the cuts are exactly those of the byte-by-byte
 * loop. */
CHUNK_SCAN_FN static size_t chunk_scan_bytes(const uint8_t *src, size_t from, size_t to,
                                            uint64_t mask, uint64_t *fp)
{
    /* After 64 zero bytes the hash is zfix = -gear[0], which a zero byte
     * maps to itself; it is tested (and passed) once, so every zero byte
     * after it is skipped without hashing: zero pages cost a memory read. */
    const uint64_t zfix = 0 - gear[0];
    uint64_t h = *fp;
    size_t i = from;
    for (; i + 4 <= to; i += 4) {
        uint64_t g0 = gear[src[i]], g1 = gear[src[i + 1]];
        uint64_t g2 = gear[src[i + 2]], g3 = gear[src[i + 3]];
        uint64_t h0 = (h << 1) + g0, h1 = (h << 2) + ((g0 << 1) + g1);
        uint64_t h2 = (h1 << 1) + g2, h3 = (h1 << 2) + ((g2 << 1) + g3);
        if (__builtin_expect(!(h0 & mask) | !(h1 & mask) | !(h2 & mask) | !(h3 & mask), 0)) {
            if (!(h0 & mask))
                return *fp = h0, i;
            if (!(h1 & mask))
                return *fp = h1, i + 1;
            if (!(h2 & mask))
                return *fp = h2, i + 2;
            return *fp = h3, i + 3;
        }
        h = h3;
        if (__builtin_expect(h == zfix, 0))
            i = chunk_skip_zeros(src, i + 4, to) - 4;
    }
    for (; i < to; i++) {
        h = (h << 1) + gear[src[i]];
        if (!(h & mask))
            return *fp = h, i;
    }
    *fp = h;
    return to;
}

static size_t chunk_scan(const uint8_t *src, size_t from, size_t to, uint64_t mask, uint64_t *fp)
{
    size_t at = chunk_scan_bytes(src, from, to, mask, fp);
    CHUNK_READ(src + from, (at < to ? at + 1 : to) - from);
    return at;
}

/* Where a chunk of n available bytes switches to the easier mask, and where
 * it must end; 0 when it is the whole n (n <= min). */
static int chunk_bounds(const struct chunk_params *p, size_t n, size_t *normal, size_t *end)
{
    if (n <= p->min)
        return 0;
    *end = n < p->max ? n : p->max;
    *normal = p->avg < *end ? p->avg : *end;
    return 1;
}

size_t chunk_cut(const struct chunk_params *p, const uint8_t *src, size_t n)
{
    size_t i, normal, end;
    uint64_t fp = 0;

    if (!chunk_bounds(p, n, &normal, &end))
        return n;
    i = chunk_scan(src, p->min, normal, p->mask_hard, &fp);
    if (i < normal)
        return i + 1;
    i = chunk_scan(src, normal, end, p->mask_easy, &fp);
    return i < end ? i + 1 : end;
}

int chunk_is_zero(const void *src, size_t n)
{
    const unsigned char *b = src;
    /* Compare the buffer with itself shifted by 16: zero iff the first 16
     * bytes are zero and every byte equals the one 16 before it. */
    if (n < 16) {
        for (size_t i = 0; i < n; i++)
            if (b[i])
                return 0;
        return 1;
    }
    for (int i = 0; i < 16; i++)
        if (b[i])
            return 0;
    return memcmp(b, b + 16, n - 16) == 0;
}

/* ---- the cut points, found in parallel ---------------------------------------- */

static int chunk_found_add(struct chunk_found *f, uint64_t v)
{
    if (f->n == f->cap) {
        size_t ncap = f->cap ? f->cap * 2 : 256;
        uint64_t *na = realloc(f->at, ncap * sizeof(*na));
        if (!na)
            return err_set(VK_ENOMEM, "out of memory");
        f->at = na;
        f->cap = ncap;
    }
    f->at[f->n++] = v;
    return 0;
}

CHUNK_SCAN_FN static int chunk_find_bytes(const struct chunk_params *p, const uint8_t *buf,
                                         size_t from, size_t to, struct chunk_found *out)
{
    const uint64_t zfix = 0 - gear[0];
    uint64_t h = 0, easy = p->mask_easy, hard = p->mask_hard;
    size_t i = from >= 64 ? from - 64 : 0;
    for (; i < from; i++) /* the window before the stretch */
        h = (h << 1) + gear[buf[i]];
    for (; i + 4 <= to; i += 4) {
        uint64_t g0 = gear[buf[i]], g1 = gear[buf[i + 1]];
        uint64_t g2 = gear[buf[i + 2]], g3 = gear[buf[i + 3]];
        uint64_t h0 = (h << 1) + g0, h1 = (h << 2) + ((g0 << 1) + g1);
        uint64_t h2 = (h1 << 1) + g2, h3 = (h1 << 2) + ((g2 << 1) + g3);
        if (__builtin_expect(!(h0 & easy) | !(h1 & easy) | !(h2 & easy) | !(h3 & easy), 0)) {
            uint64_t hs[4] = {h0, h1, h2, h3};
            for (int k = 0; k < 4; k++)
                if (!(hs[k] & easy) &&
                    chunk_found_add(out, ((uint64_t)(i + (size_t)k) << 1) | !(hs[k] & hard)) < 0)
                    return VK_ENOMEM;
        }
        h = h3;
        if (__builtin_expect(h == zfix, 0) && (zfix & easy)) { /* zero bytes keep it there: no place */
            size_t z = chunk_skip_zeros(buf, i + 4, to);
            i = z - 4;
        }
    }
    for (; i < to; i++) {
        h = (h << 1) + gear[buf[i]];
        if (!(h & easy) && chunk_found_add(out, ((uint64_t)i << 1) | !(h & hard)) < 0)
            return VK_ENOMEM;
    }
    return 0;
}

int chunk_find(const struct chunk_params *p, const uint8_t *buf, size_t from, size_t to,
               struct chunk_found *out)
{
    size_t first = from >= 64 ? from - 64 : 0;
    if (to > first)
        CHUNK_READ(buf + first, to - first);
    return chunk_find_bytes(p, buf, from, to, out);
}

int chunk_found_join(struct chunk_found *a, const struct chunk_found *b)
{
    for (size_t k = 0; k < b->n; k++)
        if (chunk_found_add(a, b->at[k]) < 0)
            return VK_ENOMEM;
    return 0;
}

void chunk_found_clear(struct chunk_found *f)
{
    free(f->at);
    memset(f, 0, sizeof(*f));
}

size_t chunk_cut_found(const struct chunk_params *p, const uint8_t *buf, size_t s, size_t n,
                       const struct chunk_found *f, size_t *cursor)
{
    size_t normal, end, i, exact;
    uint64_t h = 0;

    if (!chunk_bounds(p, n, &normal, &end))
        return n;
    /* chunk_cut hashes from min with a fresh hash: for the first 63 bytes
     * that hash is not yet the rolling one, so those are hashed here. */
    exact = p->min + 63 < end ? p->min + 63 : end;
    for (i = p->min; i < exact; i++) {
        h = (h << 1) + gear[buf[s + i]];
        if (!(h & (i < normal ? p->mask_hard : p->mask_easy)))
            return i + 1;
    }
    size_t c = *cursor;
    while (c < f->n && (f->at[c] >> 1) < s + exact)
        c++;
    *cursor = c;
    for (; c < f->n && (f->at[c] >> 1) < s + end; c++) {
        size_t at = (size_t)(f->at[c] >> 1) - s;
        if (at >= normal || (f->at[c] & 1))
            return at + 1;
    }
    return end;
}
