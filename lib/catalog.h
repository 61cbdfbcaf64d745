/* catalog: the checkpoints a store holds, for everyone who needs them
 * (checkpoints, restores, garbage collection, verify, fail-over): the tasks
 * and numbers there are, manifests loaded and validated, the commit (the
 * manifest's exclusive write, fenced in cluster mode) and voided numbers. */
#ifndef VMCKPT_CATALOG_H
#define VMCKPT_CATALOG_H

#include <stddef.h>
#include <stdint.h>

#include "manifest.h"
#include "store.h"

/* Every committed checkpoint in the store, from one listing (a listing may
 * walk the whole store: RADOS), ordered by task, then number. *out:
 * catalog_entries_free(). */
struct catalog_entry {
    char *task;
    uint64_t seq;
};
int catalog_all(struct store *s, struct catalog_entry **out, size_t *out_n);
void catalog_entries_free(struct catalog_entry *e, size_t n);
/* Committed checkpoint numbers of a task, ascending (*out_seqs malloc'd,
 * caller frees; may be NULL when *out_n is 0). */
int catalog_list(struct store *s, const char *task, uint64_t **out_seqs, size_t *out_n);
/* Loads and validates a manifest; seq 0 means the newest. VK_ENOTFOUND when
 * the task has no such checkpoint. *out: manifest_free(). */
int catalog_load(struct store *s, const char *task, uint64_t seq, struct manifest **out);
/* The number after the task's newest checkpoint and after any voided one. */
int catalog_next_seq(struct store *s, const char *task, uint64_t *out);
/* Fencing, after this node took task's lease over (cluster mode): voids the
 * next checkpoint number (store_void), which the old holder could still be
 * about to write (it stalled between its lease check and its write), so that
 * write fails; a number taken meanwhile (that late write landed first) is
 * passed over. *out_seq (may be NULL): the number voided. */
int catalog_void_next(struct store *s, const char *task, uint64_t *out_seq);
/* catalog_void_next for every task in the store (a GC that took over the
 * upload hold of a node that stalled: any of its commits is stale). */
int catalog_void_next_all(struct store *s);
/* Writes the manifest: the commit point. VK_EEXISTS if that seq is taken;
 * with n_fence proofs of leases, VK_ELEASE once one of those leases was
 * taken over, checked by the store in the same step as the write
 * (store_put_fenced). */
int catalog_commit(struct store *s, const struct manifest *m, const struct store_fence *fence,
                size_t n_fence);
#endif
