/* ckpt: one checkpoint end to end. The protocol with QEMU (modes live, cow,
 * stop-copy: ckpt.c), the upload of its streams and the commit of its
 * manifest (ckpt_store.c), and a stored checkpoint's streams verified or
 * fetched for a restore (ckpt.c). Listing and loading manifests: catalog. */
#ifndef VMCKPT_CKPT_H
#define VMCKPT_CKPT_H

#include <stdint.h>

#include "manifest.h"
#include "qmp.h"
#include "repo.h"
#include "store.h"

/* How a checkpoint copies memory (ckpt_mode_parse, ckpt_mode_name). */
enum ckpt_mode {
    CKPT_AUTO,      /* the task's policy picks one of the others (automode) */
    CKPT_LIVE,      /* pre-copy while the VM runs; paused for the last dirty pages */
    CKPT_COW,       /* paused, then background-snapshot copies pages on write */
    CKPT_STOP_COPY, /* paused until all memory is saved (the paper's method) */
};
#define CKPT_N_MODES 4
/* "auto", "live", "cow", "stop-copy". */
const char *ckpt_mode_name(enum ckpt_mode m);
/* VK_EINVAL (with a message naming what) when s is none of those names. */
int ckpt_mode_parse(const char *s, const char *what, enum ckpt_mode *out);

/* Bounds of a live checkpoint (settings [live]). */
struct ckpt_live {
    int target_stop_ms;  /* QEMU's downtime-limit: the stop it aims at */
    uint64_t bandwidth;  /* bytes/s QEMU may write to the spool */
    int converge_ms;     /* pre-copy not done in this long is given up */
    uint64_t spool_max;  /* nor once it has written this many bytes */
};

/* What the VM-side part of a checkpoint did. */
struct ckpt_snap {
    int sealed;            /* the old top is sealed and new_top is the write target */
    int gave_up;           /* live: pre-copy given up before the VM stopped; nothing
                            * sealed, VM running, the spool file is to be discarded */
    int64_t stopped_us;    /* VM paused: QEMU's STOP event to its RESUME event */
    int64_t seal_us;       /* blockdev-snapshot-sync */
    int64_t mem_save_us;   /* migrate command to migration completed */
    int64_t precopy_us;    /* live: migrate command to the pause before switch-over */
    uint64_t serial_bytes; /* console log size while the VM was stopped */
    uint64_t mem_bytes;
    uint64_t dirty_bps;    /* live: the guest's dirty rate QEMU measured last, bytes/s */
    uint64_t copy_bps;     /* live: QEMU's copy rate to the spool, bytes/s */
    int passes;            /* live: dirty-bitmap syncs (passes over memory) */
};

/* What to checkpoint and where. */
struct ckpt_req {
    const char *task;              /* its id, for messages */
    enum ckpt_mode mode;           /* not CKPT_AUTO */
    const struct ckpt_live *live;  /* CKPT_LIVE's bounds */
    const char *top;               /* the qcow2 the VM writes to now */
    const char *new_top;           /* its successor, created here */
    const char *mem_path;          /* memory and device state go here */
    const char *serial_path;       /* console log (its size is noted), or NULL */
    int final;                     /* CKPT_STOP_COPY only: the VM stays paused once saved
                                    * (a planned move: it never runs here again) */
};

/* Takes a consistent checkpoint of a running VM: memory and device state to
 * mem_path, the disk sealed by switching writes to new_top (created before
 * the VM stops, so the pause only opens it) while the VM is paused, so both
 * describe one instant; the VM runs again. By mode:
 * - CKPT_LIVE: QEMU copies memory while the VM runs (pre-copy), pauses it
 *   for the last dirty pages and waits (pause-before-switchover); the disk is
 *   sealed there, the save completes, the VM runs. Bounded by *live: when it
 *   does not converge in time or the spool would grow past its bound, the
 *   copy is cancelled before the VM is stopped, out->gave_up is set and
 *   VK_ETIMEOUT returned (the caller may take the checkpoint another way).
 * - CKPT_COW: paused, sealed, QEMU's background-snapshot resumes it at once
 *   and copies pages on write.
 * - CKPT_STOP_COPY: paused until the memory is saved (and after, when final).
 * On any failure the VM is left running; out->sealed tells whether the disk
 * switch happened (then new_top is the VM's write target whatever the
 * result; else new_top is removed). Blocks until memory is saved. */
int ckpt_snapshot(struct qmp *q, const struct ckpt_req *req, struct ckpt_snap *out);
/* Makes a VM run again whatever a checkpoint left: a memory save still
 * running (a live one may wait in pre-switchover for a migrate-continue
 * that will never come) is cancelled, and waited for, as QEMU then runs the
 * VM again itself; a VM still paused gets cont. For a failed checkpoint and
 * for an agent that takes back a VM its predecessor was checkpointing. */
int ckpt_settle(struct qmp *q, const char *task);

/* ---- the store side (ckpt_store.c) --------------------------------------- */

/* A local file of a checkpoint and the stream it is stored as. */
struct ckpt_file {
    char *path;        /* owned by the put */
    struct stream_ref obj; /* owned by the put; obj.name NULL until stored */
};

/* Asked right before the manifest is written (the task's lease, in a
 * cluster): 0 to commit, with out[0..*n) the proofs the write must check. */
typedef int (*ckpt_gate_fn)(void *arg, const char *task, uint64_t hold,
                            struct store_fence *out, size_t *n);

/* One checkpoint to upload and commit. The caller fills it, ckpt_store sets
 * the objects of what it stored (also when it fails later: a stored stream
 * stays good to name), ckpt_put_clear frees what the put owns. */
struct ckpt_put {
    /* The manifest but for its streams: task, seq, mode, the VM's shape,
     * timings, policy (strings borrowed, kept valid by the caller until
     * ckpt_store returns). Its streams, store_us, uploaded_bytes and data
     * are filled by ckpt_store. */
    struct manifest facts;
    struct ckpt_file boot[3];  /* kernel, initrd, base: stored once */
    /* The chain of the last committed checkpoint (its manifest's deltas,
     * oldest first), which this one extends; chain_unknown when that
     * manifest could not be read: the chain is then stored again, merged. */
    struct stream_ref *chain;
    size_t n_chain;
    int chain_unknown;
    struct ckpt_file *deltas;  /* sealed since it, oldest first; the newest is this one's */
    size_t n_deltas;
    /* The local file the newest delta backs onto (NULL: the base, and then
     * the new deltas hold all there is; the chain is not named): through
     * its backing chain, the disk as the previous seal left it. A merge
     * copies it and rebases the copy onto the base. */
    char *below;
    char *mem_path;            /* the memory and device state (owned) */
    char *work_dir;            /* for a merge's temporary copy (owned) */
    int max_chain;             /* [data] max_chain: merge beyond it; 0 = never */
    int whole;                 /* [data] mode whole: the disk stored again each time */
    ckpt_gate_fn gate;         /* may be NULL (one node) */
    void *gate_arg;
    uint64_t hold;             /* the cluster's upload hold, passed to gate */
    repo_progress_fn progress; /* bytes of this checkpoint stored so far; may be NULL */
    void *progress_arg;
};

/* Stores what checkpoint p needs and has not stored yet (kernel, initrd and
 * base once; the deltas sealed since the last commit, or, when the chain
 * would pass max_chain (or under whole, or an unknown chain), everything
 * below the newest as one merged delta and the newest; the memory), then,
 * gate permitting, commits its manifest: the checkpoint exists from that
 * write on. Holds off this node's garbage
 * collection meanwhile (repo_hold). *out: the committed manifest
 * (manifest_free), NULL on failure; VK_EEXISTS when p->facts.seq is taken,
 * VK_ELEASE when the gate or the store's fence refuses. */
int ckpt_store(struct repo *r, struct store *s, struct ckpt_put *p, struct manifest **out);
/* Bytes ckpt_store would read: memory and the deltas not stored yet. */
uint64_t ckpt_put_bytes(const struct ckpt_put *p);
/* Frees what the put owns (paths, objects, the deltas array); objects the
 * caller took over are to be cleared (name NULL) before. */
void ckpt_put_clear(struct ckpt_put *p);

/* Reads every chunk of every stream m names and checks them. Returns 0 when
 * all are intact, else the first error; every problem is reported through
 * report(arg, message) when report is not NULL. With seen (repo.h), the
 * chunks an earlier checkpoint of the same verification read intact are not
 * read again: checkpoints share most of theirs. */
int ckpt_verify(struct repo *r, const struct manifest *m, struct repo_seen *seen,
                void (*report)(void *, const char *), void *arg);

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
/* Stages what a restore of m will read, ahead of it (a pre-staged
 * successor): kernel, initrd and base into blob_dir as ckpt_fetch would, and
 * the packs of its deltas and memory into the repository's cache (see
 * repo_set_cache); appends the packs' names to packs and the bytes copied to
 * *copied. */
int ckpt_stage(struct repo *r, const struct manifest *m, const char *blob_dir, json_t *packs,
               uint64_t *copied);

#endif
