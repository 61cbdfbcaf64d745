/* gc: retention and garbage collection of the repository.
 *
 * Retention removes a task's oldest manifests; only then do chunks become
 * unreferenced. GC deletes stream indexes that no manifest in the store
 * names, and packs none of whose chunks one names, when older than a grace
 * period; a pack more than half garbage is rewritten with its live chunks
 * (the copy is synced before the original goes). It never touches a manifest,
 * so killing it at any moment cannot break a committed checkpoint; it refuses
 * to run while any manifest is unreadable (it could not know what that one
 * references). On one node it excludes running uploads (the repo's gc_lock);
 * the grace period covers uploads from other nodes. */
#ifndef VMCKPT_GC_H
#define VMCKPT_GC_H

#include <jansson.h>
#include <stdint.h>

#include "repo.h"

struct gc_result {
    uint64_t manifests, streams, chunks_referenced;
    uint64_t chunks_deleted, indexes_deleted, bytes_freed, kept_young;
    uint64_t packs_deleted, packs_rewritten; /* a pack mostly garbage is rewritten */
};

/* Deletes the manifests of task beyond its newest `keep` (keep >= 1). */
int gc_retain(struct store *s, const char *task, int keep, int *out_deleted);
/* Deletes unreferenced chunks and indexes older than grace_s seconds. */
int gc_run(struct repo *r, int grace_s, struct gc_result *out);
json_t *gc_result_json(const struct gc_result *g);

#endif
