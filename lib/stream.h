/* stream: the handle of a stored stream. The repository cuts a file into
 * chunks and stores them with an index; a stream is named by its index
 * object and described by the size and SHA-256 of its plain bytes, which a
 * reader checks. The repository makes these handles (repo_put_file) and
 * reads through them; manifests name a checkpoint's streams with them. */
#ifndef VMCKPT_STREAM_H
#define VMCKPT_STREAM_H

#include <stdint.h>

#include "util.h"

struct stream_ref {
    char *name; /* the stream's index object in the store; NULL: none */
    uint64_t size;
    char sha256[UTIL_SHA256_HEX];
};

/* Deep copy into dst (whose old name is not freed); 0 or VK_ENOMEM. */
int stream_ref_copy(struct stream_ref *dst, const struct stream_ref *src);
/* Frees the name and zeroes the handle. */
void stream_ref_clear(struct stream_ref *r);

#endif
