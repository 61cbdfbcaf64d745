/* bufpool: buffers of one size, kept for reuse between uploads. A fresh page
 * costs a fault and its zeroing (several times more under a hypervisor, and
 * again for its shadow under a sanitizer), while a checkpoint pours hundreds
 * of MiB through the same few buffers: keeping them makes a checkpoint's
 * memory traffic a copy, not a fault per page. Thread-safe. */
#ifndef VMCKPT_BUFPOOL_H
#define VMCKPT_BUFPOOL_H

#include <pthread.h>
#include <stddef.h>

struct bufpool {
    pthread_mutex_t lock;
    size_t size, align; /* every buffer's size (a multiple of align) and alignment */
    size_t keep;        /* at most this many buffers are kept */
    void *free;         /* the kept buffers: a list through each one's first bytes */
    size_t nfree;
    size_t made;        /* buffers allocated fresh, ever (for tests and figures) */
};

/* A pool of buffers of size bytes aligned to align (a power of two, at least
 * the size of a pointer; size is rounded up to it) that keeps at most keep of
 * them. 0, or VK_EINVAL for a size or alignment out of range. */
int bufpool_init(struct bufpool *p, size_t size, size_t align, size_t keep);
/* Frees every kept buffer. Buffers still out must have been put back or freed
 * with free(). Accepts a pool never initialised if zeroed. */
void bufpool_destroy(struct bufpool *p);
/* A buffer of the pool's size (a kept one, else a fresh one; contents
 * undefined), or NULL when out of memory. Free it with bufpool_put (or free()). */
void *bufpool_get(struct bufpool *p);
/* Gives buf (from bufpool_get; NULL is ignored) back: kept if fewer than keep
 * are, else freed. */
void bufpool_put(struct bufpool *p, void *buf);
/* Buffers allocated fresh since bufpool_init. */
size_t bufpool_made(struct bufpool *p);

#endif
