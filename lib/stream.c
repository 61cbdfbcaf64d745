#include "stream.h"

#include "err.h"

#include <stdlib.h>
#include <string.h>

int stream_ref_copy(struct stream_ref *dst, const struct stream_ref *src)
{
    *dst = *src;
    dst->name = src->name ? strdup(src->name) : NULL;
    return (src->name && !dst->name) ? err_set(VK_ENOMEM, "out of memory") : 0;
}

void stream_ref_clear(struct stream_ref *r)
{
    free(r->name);
    memset(r, 0, sizeof(*r));
}
