/* bufpool: buffers of one size, kept for reuse (see bufpool.h). */
#include "bufpool.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

int bufpool_init(struct bufpool *p, size_t size, size_t align, size_t keep)
{
    memset(p, 0, sizeof(*p));
    if (align < sizeof(void *) || (align & (align - 1)) || size == 0 || size > SIZE_MAX / 2)
        return err_set(VK_EINVAL, "buffer pool: size %zu or alignment %zu out of range (internal error)",
                       size, align);
    p->size = (size + align - 1) & ~(align - 1);
    p->align = align;
    p->keep = keep;
    pthread_mutex_init(&p->lock, NULL);
    return 0;
}

void bufpool_destroy(struct bufpool *p)
{
    if (!p->size)
        return;
    while (p->free) {
        void *b = p->free;
        memcpy(&p->free, b, sizeof(void *));
        free(b);
    }
    p->nfree = 0;
    pthread_mutex_destroy(&p->lock);
    p->size = 0;
}

void *bufpool_get(struct bufpool *p)
{
    void *b;
    pthread_mutex_lock(&p->lock);
    if ((b = p->free)) {
        memcpy(&p->free, b, sizeof(void *));
        p->nfree--;
    } else {
        p->made++;
    }
    pthread_mutex_unlock(&p->lock);
    return b ? b : aligned_alloc(p->align, p->size);
}

void bufpool_put(struct bufpool *p, void *buf)
{
    if (!buf)
        return;
    pthread_mutex_lock(&p->lock);
    int kept = p->nfree < p->keep;
    if (kept) {
        memcpy(buf, &p->free, sizeof(void *));
        p->free = buf;
        p->nfree++;
    }
    pthread_mutex_unlock(&p->lock);
    if (!kept)
        free(buf);
}

size_t bufpool_made(struct bufpool *p)
{
    pthread_mutex_lock(&p->lock);
    size_t n = p->made;
    pthread_mutex_unlock(&p->lock);
    return n;
}
