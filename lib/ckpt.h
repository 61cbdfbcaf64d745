/* ckpt: the checkpoint protocol with QEMU, and checkpoints in the store
 * (commit, list, load, verify, fetch for restore). */
#ifndef VMCKPT_CKPT_H
#define VMCKPT_CKPT_H

#include <stdint.h>

#include "manifest.h"
#include "qmp.h"
#include "repo.h"
#include "store.h"

/* What the VM-side part of a checkpoint did. */
struct ckpt_snap {
    int sealed;            /* the old top is sealed and new_top is the write target */
    int64_t stopped_us;    /* VM paused: QEMU's STOP event to its RESUME event */
    int64_t seal_us;       /* blockdev-snapshot-sync */
    int64_t mem_save_us;   /* migrate command to migration completed */
    uint64_t serial_bytes; /* console log size while the VM was stopped */
    uint64_t mem_bytes;
};

/* Takes a consistent checkpoint of a running VM: stop, seal the disk by
 * switching writes to new_top (created by QEMU), save memory and device state
 * to mem_path, run again. With stop_copy the VM stays paused until the memory
 * is saved (the paper's method); otherwise QEMU's background-snapshot resumes
 * it at once and copies pages on write. On any failure the VM is left running;
 * out->sealed tells whether the disk switch happened (then new_top is the
 * VM's write target whatever the result). Blocks until memory is saved. */
int ckpt_snapshot(struct qmp *q, int stop_copy, const char *new_top, const char *mem_path,
                  const char *serial_path, struct ckpt_snap *out);

/* Committed checkpoint numbers of a task, ascending (*out_seqs malloc'd,
 * caller frees; may be NULL when *out_n is 0). */
int ckpt_list(struct store *s, const char *task, uint64_t **out_seqs, size_t *out_n);
/* Loads and validates a manifest; seq 0 means the newest. VK_ENOTFOUND when
 * the task has no such checkpoint. *out: manifest_free(). */
int ckpt_load(struct store *s, const char *task, uint64_t seq, struct manifest **out);
/* The number after the task's newest checkpoint and after any voided one. */
int ckpt_next_seq(struct store *s, const char *task, uint64_t *out);
/* Fencing, after this node took task's lease over (cluster mode): voids the
 * next checkpoint number (store_void), which the old holder could still be
 * about to write (it stalled between its lease check and its write), so that
 * write fails; a number taken meanwhile (that late write landed first) is
 * passed over. *out_seq (may be NULL): the number voided. */
int ckpt_void_next(struct store *s, const char *task, uint64_t *out_seq);
/* ckpt_void_next for every task in the store (a GC that took over the
 * upload hold of a node that stalled: any of its commits is stale). */
int ckpt_void_next_all(struct store *s);
/* Writes the manifest: the commit point. VK_EEXISTS if that seq is taken;
 * with n_fence proofs of leases, VK_ELEASE once one of those leases was
 * taken over, checked by the store in the same step as the write
 * (store_put_fenced). */
int ckpt_commit(struct store *s, const struct manifest *m, const struct store_fence *fence,
                size_t n_fence);
/* Reads every chunk of every stream m names and checks them. Returns 0 when
 * all are intact, else the first error; every problem is reported through
 * report(arg, message) when report is not NULL. */
int ckpt_verify(struct repo *r, const struct manifest *m, void (*report)(void *, const char *),
                void *arg);

/* Local copies of what a checkpoint needs to restart (memory is streamed). */
struct ckpt_local {
    char *kernel, *initrd, *base; /* in the blob cache */
    char **deltas;                /* in the run directory, rebased onto each other */
    size_t n_deltas;
};
/* Fetches and verifies the disk and boot streams of m: kernel, initrd and
 * base into blob_dir (reused when present), deltas into run_dir; rebases the
 * delta chain onto the local files. *out: ckpt_local_free(). */
int ckpt_fetch(struct repo *r, const struct manifest *m, const char *blob_dir,
               const char *run_dir, struct ckpt_local *out);
void ckpt_local_free(struct ckpt_local *l);

#endif
