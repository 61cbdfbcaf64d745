/* prestage: a pre-staged successor (cluster mode).
 *
 * Each heartbeat round the fail-over module names the tasks this node would
 * take over if the node running them died now (placement as it stands:
 * cluster_assign over the other nodes). For each, a thread here stages the
 * newest committed checkpoint ahead of time: kernel, initrd and base into
 * the blob cache, the packs of its deltas and memory into a local cache that
 * the repository reads before the store (STATE/prestage). A take-over then
 * reads from the store only what was committed since the last round. Packs
 * that no staged checkpoint needs are deleted from the cache; a task no
 * longer wanted (taken over, or placed elsewhere now) keeps its copies for
 * two minutes, since a take-over may be reading them. The cache is
 * read like the store: every chunk is checked against its name, and a copy
 * that fails is passed over for the store's. */
#ifndef VMCKPT_PRESTAGE_H
#define VMCKPT_PRESTAGE_H

#include <jansson.h>

#include "repo.h"
#include "store.h"

struct prestage;

/* Called by the staging thread after each round with what is staged of the
 * tasks wanted: {id: seq} (borrowed), so that the work of a restore that can
 * be done early is (a VM started ahead: task_warm). */
typedef void (*prestage_ready_fn)(void *arg, json_t *staged);

/* Opens the cache at state_dir/prestage, sets it as r's (repo_set_cache) and
 * starts the staging thread, which looks for new checkpoints every round_ms
 * (the heartbeat interval) and whenever the tasks wanted change; ready (may
 * be NULL) is called after each round. *out: prestage_free(), before r and
 * s are. */
int prestage_open(struct prestage **out, struct repo *r, struct store *s, const char *state_dir,
                  const char *blob_dir, int round_ms, prestage_ready_fn ready, void *ready_arg);
/* Stops the thread (a staging in progress finishes first) and unsets the cache. */
void prestage_free(struct prestage *p);
/* The tasks to stage from now on (ids: an array of strings, copied). */
void prestage_want(struct prestage *p, json_t *ids);
/* What is staged: {"tasks": {id: {"seq", "bytes_copied", "packs",
 * "seconds"}}} (new reference). */
json_t *prestage_json(struct prestage *p);

#endif
