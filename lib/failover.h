/* failover: this node's part in the cluster (cluster mode only).
 *
 *   renewal    every renew interval, the lease of each task here and this
 *              node's heartbeat (cluster.h); a task whose lease another node
 *              took (while this one was cut off or stalled) is stopped here
 *   fencing    a thread kills the VM of a task whose lease was not renewed
 *              for lease - renew ms (before it can expire), and a process per
 *              VM, which outlives the agent, does the same
 *   detection  a node whose heartbeat is older than its lease is dead
 *   take-over  the dead node's tasks are shared out (cluster_assign); this
 *              node takes the lease of each assigned to it, and restores it
 *              on a thread of its own, so that renewal never waits for it
 *   GC         garbage collection on one node and uploads on the others
 *              exclude each other through store leases: cluster/gc, held by
 *              a node while it collects, and cluster/uploads/<node>, held by
 *              a node while it has uploads in flight. Each side takes its
 *              own lease, then checks the other's is free (by taking and
 *              releasing it), and backs off if not: of two that overlap, at
 *              least one sees the other. A commit proves the upload hold too,
 *              so an upload that stalled past it (and a GC took it) commits
 *              nothing.
 *
 * The agent composes it: it owns the task table and the HTTP API, and
 * failover reaches the tasks only through struct failover_host. Times local
 * to this node are on the monotonic clock; leases expire on the store's. */
#ifndef VMCKPT_FAILOVER_H
#define VMCKPT_FAILOVER_H

#include <jansson.h>
#include <stdio.h>

#include "cfg.h"
#include "store.h"
#include "task.h"

struct failover;

/* What failover needs of the agent. */
struct failover_host {
    void *arg;
    /* The live tasks: a malloc'd array (the caller frees it) of tasks that
     * stay valid until the agent exits. */
    size_t (*tasks)(void *arg, struct task ***out);
    /* Reserves task id for a take-over, atomically with the check that no
     * task, request or take-over here has it (VK_EEXISTS otherwise). */
    int (*reserve)(void *arg, const char *id);
    void (*unreserve)(void *arg, const char *id);
    /* Restores task id from its newest intact checkpoint (*out: a new task). */
    int (*restore)(void *arg, const char *id, struct task **out);
    /* Adds a restored task to the table. */
    int (*add)(void *arg, struct task *t);
    /* Each round: the tasks (an array of ids, borrowed) this node would take
     * over if their node died now, to stage ahead (prestage.h). May be NULL. */
    void (*successor_of)(void *arg, json_t *ids);
};

/* *out: failover_free(). Threads start with failover_start. */
int failover_open(struct failover **out, const struct cfg *cfg, struct store *s,
                  const struct failover_host *host);
int failover_start(struct failover *f);
/* Stops the threads and waits for them and for take-overs in progress. */
void failover_stop(struct failover *f);
void failover_free(struct failover *f);

/* Takes (or renews) task id's lease for this node: VK_EBUSY, saying so, when
 * another node holds it. out (may be NULL): the proof for a fenced commit. */
int failover_take_lease(struct failover *f, const char *id, struct store_fence *out);
void failover_drop_lease(struct failover *f, const char *id);
/* After taking task id's lease over: voids its next checkpoint number, which
 * the old holder could still be about to write (catalog_void_next). */
int failover_fence_task(struct failover *f, const char *id);
/* A restore asked of this node (through the API, or a move's take-back) of a
 * task that is not among its tasks yet: from failover_hold to
 * failover_release its lease is renewed with the take-overs' (a fetch may
 * outlast the lease). failover_release returns 1 when another node got the
 * lease meanwhile: then the restored copy must not run. NULL: out of memory. */
struct fo_takeover;
struct fo_takeover *failover_hold(struct failover *f, const char *id);
int failover_release(struct fo_takeover *hold);
/* Task id's lease was just taken here: its fence counts from now. */
void failover_task_added(struct failover *f, const char *id);
/* The task_env hooks (arg: the failover; see task.h). */
int failover_may_commit(void *arg, const char *id, uint64_t hold, struct store_fence *out,
                        size_t *n);
int failover_upload_begin(void *arg, uint64_t *hold);
void failover_upload_end(void *arg);
int failover_gc_begin(void *arg);
void failover_gc_end(void *arg);

/* The cluster's mean time between failures of a node, as this node has
 * observed it (the node-time it watched over the nodes it found dead), once
 * it saw FAILOVER_MTBF_MIN_FAILURES; else 0. why: how it came. The task_env
 * hook for checkpoint_every = auto (arg: the failover). */
#define FAILOVER_MTBF_MIN_FAILURES 3
double failover_mtbf_s(void *arg, char *why, size_t len);
/* Planned moves (vmckpt move, drain). The alive node a task goes to: `to`
 * when it is one (VK_EINVAL for this node, VK_ESTATE for a node not alive),
 * else the first other alive node in placement order (VK_ESTATE: none). */
int failover_pick_target(struct failover *f, const char *to, char out[128]);
/* Hands task id (stopped here at its committed checkpoint seq) to node to:
 * the move record, then its lease given up. The target restores it. */
int failover_move_out(struct failover *f, const char *id, const char *to, uint64_t seq);
/* Waits until the target took the task (its record gone): 0; VK_ETIMEOUT
 * after timeout_ms, the record withdrawn. */
int failover_wait_moved(struct failover *f, const char *id, int timeout_ms);

/* GET /v1/nodes: every node, its state and tasks (new reference). */
int failover_nodes_json(struct failover *f, json_t **out);
/* The fail-over metrics, in Prometheus' text format. */
void failover_metrics(struct failover *f, FILE *out);

#endif
