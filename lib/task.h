/* task: one task's life on this node — start its VM, checkpoint it, restore
 * it, notice when it dies — and its local state (STATE/tasks/ID/task.json).
 *
 * A struct task is shared by the agent's threads: every function here takes
 * the task's lock itself. While a checkpoint runs (busy), the checkpoint owns
 * the QMP connection. Tasks live as long as the agent (task_free at exit). */
#ifndef VMCKPT_TASK_H
#define VMCKPT_TASK_H

#include <jansson.h>
#include <stdint.h>
#include <sys/types.h>

#include "cfg.h"
#include "gc.h"
#include "protect.h"
#include "repo.h"
#include "store.h"

struct task;

/* Where a task is in its life. Kept in task.json by name (task_state_name). */
enum task_state {
    TASK_STOPPED, /* no VM: not started, or stopped with the agent */
    TASK_RUNNING, /* its VM runs */
    TASK_CRASHED, /* its VM died (or was killed); a restore resumes it */
    TASK_FAILED,  /* a restore failed; the task waits for another */
    TASK_REMOVED, /* removed by the user; kept only until the agent drops it */
};
/* "stopped", "running", "crashed", "failed", "removed". */
const char *task_state_name(enum task_state s);

/* What the agent shares with its tasks (owned by the agent). */
struct task_env {
    const struct cfg *cfg;
    struct store *store;
    struct repo *repo; /* chunks and indexes on that store */
    char *tasks_dir; /* STATE/tasks */
    char *blob_dir;  /* STATE/blobs: local cache of kernels, initrds, bases */
    char *logs_dir;  /* STATE/logs: the console logs of past runs (runlog.h) */
    /* Cluster mode (all NULL otherwise; arg is cluster_arg):
     * may_commit, asked right before a manifest is written: 0 when this node
     * still holds task id's lease (renewed by the call), else VK_ELEASE and
     * the checkpoint is not committed; out[0..*n) are the proofs of leases
     * that the manifest's write must check (catalog_commit).
     * upload_begin / upload_end bracket an upload and its commit: this node's
     * uploads hold off garbage collection on other nodes, and wait for one
     * that runs; *hold names the hold the upload began under, which
     * may_commit checks is still this node's and puts among the proofs.
     * gc_begin / gc_end bracket a garbage collection: it waits for the
     * uploads of other nodes and holds off new ones. */
    int (*may_commit)(void *arg, const char *id, uint64_t hold, struct store_fence *out,
                      size_t *n);
    int (*upload_begin)(void *arg, uint64_t *hold);
    void (*upload_end)(void *arg);
    /* checkpoint_every = auto: the mean time between failures the cluster
     * observed, or 0 (then [task] mtbf); why says how it came. */
    double (*mtbf_s)(void *arg, char *why, size_t len);
    int (*gc_begin)(void *arg);
    void (*gc_end)(void *arg);
    void *cluster_arg;
};

/* A new task, as the user asks for it. */
struct task_spec {
    const char *id;
    const char *kernel, *initrd, *base;
    const char *work;  /* guest workload, passed as vmckpt.work= on the kernel command line */
    const char *accel; /* kvm or tcg */
    const char *mode;  /* default checkpoint mode: cow or stop-copy */
    int memory_mib, vcpus;
    int first_s, every_s; /* checkpoint policy; 0 = never */
};

/* Starts a new task: checks the inputs, creates its first delta and starts
 * QEMU. Nothing is left behind on failure. *out belongs to the agent. */
int task_run(const struct task_env *env, const struct task_spec *spec, struct task **out);
/* Restores checkpoint seq (0 = newest) of task id from the store into a fresh
 * run directory and resumes it. t is the local task if there is one (it must
 * not be running), a warm task (task_warm: its VM is taken over when it was
 * started for this checkpoint, else ended first), or NULL; *out is t or a new
 * task. accel may be NULL (config). */
/* A VM started ahead for a take-over (a pre-staged successor): checkpoint
 * seq of task id, which has no directory on this node, fetched into a run
 * directory (from the caches pre-staging filled), its top overlay made and
 * QEMU started on it paused, waiting for its memory (-incoming defer) with
 * the memory allocated (-mem-prealloc). VK_ENOSPC when that would leave less
 * than 1 GiB of memory available. A marker (STATE/tasks/ID/warm.json) lets a
 * later agent remove it (task_warm_sweep). *out: a warm task, not one of the
 * agent's: give it to task_restore, or end it with task_warm_drop. */
int task_warm(const struct task_env *env, const char *id, uint64_t seq, struct task **out);
/* The checkpoint the VM of a warm task was started for (0 once taken over). */
uint64_t task_warm_seq(struct task *t);
/* Kills the VM of a warm task (or of one whose restore failed), removes its
 * directory and frees it. */
void task_warm_drop(struct task *t);
/* At agent start: 1 when STATE/tasks/id is a warm task's that an agent which
 * died left behind (its QEMU is killed, the directory removed), else 0. */
int task_warm_sweep(const struct task_env *env, const char *id);
int task_restore(const struct task_env *env, struct task *t, const char *id, uint64_t seq,
                 const char *accel, struct task **out);
/* Loads a task left by an earlier agent (STATE/tasks/id) and takes its VM
 * back if it still runs, finishing or undoing a checkpoint cut short. */
int task_adopt(const struct task_env *env, const char *id, struct task **out);
void task_free(struct task *t);

const char *task_id(const struct task *t);

/* Takes a checkpoint. Returns when the VM runs again and the memory is saved
 * locally; the upload and the commit continue in the background (see
 * task_json: "checkpoint"). mode NULL means the task's default. */
int task_checkpoint(struct task *t, const char *mode, uint64_t *out_seq);
/* A planned move's last checkpoint here: stop-copy, the VM left paused,
 * and waits until it is committed; *out_seq its number. On success the VM
 * never runs here again (kill and remove the task next; no checkpoint or
 * restart is begun meanwhile); on failure it runs on as before. */
int task_freeze(struct task *t, uint64_t *out_seq);
/* Kills the VM with SIGKILL, as a crash would (the task becomes "crashed"),
 * but on purpose: it is not restarted automatically ([task] restart). */
int task_kill(struct task *t);
/* Ends the VM and removes the task's local files but the console log of its
 * last run, which is kept with the others (runlog.h); its checkpoints stay in
 * the store. Fails while a checkpoint runs. */
int task_remove(struct task *t);
/* The number of the task's current run and its console log's path (*serial,
 * the caller's), or 0 and NULL when it has none on this node. */
int task_current_run(struct task *t, char **serial);
/* What task_poll finds due (bits). */
#define TASK_DUE_CHECKPOINT 1 /* the checkpoint policy: take one now */
#define TASK_DUE_RESTART 2    /* [task] restart: restore the crashed task now, then
                               * task_restart_ends */
/* Periodic work: notices a dead VM (crashed; a restart planned by [task]
 * restart) and returns what is due now. */
int task_poll(struct task *t);
/* How a restart task_poll asked for ended (rc and the error's message):
 * counted; a failure counts as another crash (retried later or the task
 * failed); VK_EBUSY/VK_ELEASE (another node holds the task) end restarts. */
void task_restart_ends(struct task *t, int rc, const char *msg);
/* Garbage collection of env's repository (gc_run), excluding the uploads of
 * other nodes in cluster mode (gc_begin/gc_end). */
int task_gc(const struct task_env *env, int grace_s, struct gc_result *out);

/* The task's state as JSON (new reference), for the API. */
json_t *task_json(struct task *t);
/* What other modules ask of a task, each read under the task's lock. */
enum task_state task_state(struct task *t);
/* The state, its VM's pid (0 when none) and, when run_dir is not NULL, a
 * malloc'd copy of its run directory (caller frees; NULL when none), read
 * together. */
enum task_state task_vm(struct task *t, pid_t *pid, char **run_dir);
int task_busy(struct task *t); /* 1 while a checkpoint is taken or uploaded, or layers merged */
/* Counters since the agent started, for the metrics. */
struct task_counters {
    unsigned long live_fallbacks; /* live pre-copies given up (automode) */
    unsigned long restarts;       /* crashes restored without a command ([task] restart) */
    unsigned long room_refusals;  /* checkpoints refused: no room for the memory image */
};
struct task_counters task_counters(struct task *t);
/* Figures of the task's last committed checkpoint (0 when unknown). */
struct task_last {
    int known;
    int64_t stopped_us, store_us;
    uint64_t uploaded_bytes;
};
struct task_last task_last(struct task *t);

/* How well the task is protected now (protect.h): its exposure against its
 * schedule's promise. */
struct protection task_protection(struct task *t);

#endif
