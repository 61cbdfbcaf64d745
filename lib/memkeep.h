/* memkeep: the memory image of a task's newest committed checkpoint, kept on
 * the node that took it, so that a restart there does not wait for the
 * store ([task] keep_local_mib).
 *
 * After a checkpoint commits, its image (the file QEMU saved, which the
 * upload read) is moved into the task's directory as keep-memory.mig, with
 * keep-memory.json naming the checkpoint, its stored stream (size and hash)
 * and the SHA-256 of the file's bytes, taken as it is kept (the upload read
 * the same file a moment before). A restore of that checkpoint on this node
 * feeds QEMU from the file, hashing it as it goes; a copy that does not
 * match is refused (VK_ECORRUPT) and the restore reads the store instead. */
#ifndef VMCKPT_MEMKEEP_H
#define VMCKPT_MEMKEEP_H

#include <stdint.h>

#include "stream.h"
#include "util.h"

/* A kept copy: its file, and the size and SHA-256 of its plain bytes. */
struct memkeep_copy {
    char *path;
    uint64_t size;
    char sha256[UTIL_SHA256_HEX];
};

/* Keeps image (moved, same file system) as checkpoint seq's memory, whose
 * stored stream is mem; replaces the copy kept before. Hashes the file (a
 * stream's own hash is over its chunk list, not its bytes). */
int memkeep_put(const char *dir, const char *image, uint64_t seq, const struct stream_ref *mem);
/* 1 and *out (memkeep_copy_clear) when a copy of checkpoint seq's memory
 * (stream mem) is kept in dir; 0 when none is. */
int memkeep_find(const char *dir, uint64_t seq, const struct stream_ref *mem,
                 struct memkeep_copy *out);
void memkeep_copy_clear(struct memkeep_copy *c);
/* Removes the kept copy: 1 when there was one. */
int memkeep_drop(const char *dir);
/* Writes kept copy c to fd, hashing it as it goes: VK_ECORRUPT when its size
 * or SHA-256 is not the one noted when it was kept (known at its end: the
 * caller loads it into a paused VM and lets that run only on success);
 * *bytes: how many were written. */
int memkeep_feed(const struct memkeep_copy *c, int fd, uint64_t *bytes);

#endif
