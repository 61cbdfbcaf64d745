/* cluster: membership of the agents that share a store, and the placement of
 * tasks whose node died. No coordinator: everything is objects on the store.
 *
 *   cluster/nodes/<node>    a node's heartbeat: JSON with the time it was
 *                           written, its lease length, free memory and tasks;
 *                           rewritten every renew interval
 *   cluster/leases/<task>   the task's lease (store_lease), held by the node
 *                           that runs it and renewed with the heartbeat
 *
 * A node whose heartbeat is older than its lease is dead; older than two
 * renew intervals, suspect. The task leases, not the heartbeats, decide who
 * may run a task: a survivor restores a dead node's task only once it holds
 * the task's lease, which the store grants only after the old one expired. */
#ifndef VMCKPT_CLUSTER_H
#define VMCKPT_CLUSTER_H

#include <jansson.h>
#include <stdint.h>

#include "store.h"

struct cluster_node {
    char name[128];
    int64_t renewed_ms; /* wall clock, when the heartbeat was written */
    int lease_ms, renew_ms;
    int64_t memory_free_mib;
    int running;
    json_t *tasks; /* array of task ids (owned) */
};

enum cluster_state { CLUSTER_ALIVE, CLUSTER_SUSPECT, CLUSTER_DEAD };

/* One heartbeat's text (from the store: anyone with write access may have
 * written it), read from object cluster/nodes/<obj_node>, into *out (tasks:
 * json_decref). VK_ECORRUPT when it is not a heartbeat of that node: too
 * big, not JSON, or naming another node. Numbers are bounded, and the task
 * list keeps only valid ids, at most 4096. */
int cluster_beat_parse(const char *obj_node, const char *text, size_t len,
                       struct cluster_node *out);

/* Writes this node's heartbeat. tasks: array of ids (borrowed). */
int cluster_beat(struct store *s, const char *node, int lease_ms, int renew_ms, json_t *tasks,
                 int running);
/* Every node's last heartbeat. *out: cluster_nodes_free(). */
int cluster_nodes(struct store *s, struct cluster_node **out, size_t *out_n);
void cluster_nodes_free(struct cluster_node *v, size_t n);
enum cluster_state cluster_state_of(const struct cluster_node *n, int64_t now_ms);
const char *cluster_state_name(enum cluster_state st);
/* The node that should take over the i-th task of a dead node: the nodes
 * not dead (alive or suspect: a survivor slow to beat under load is still a
 * survivor, and if it does not take its task within a lease another node
 * does) in placement order (fewer running tasks first, then more free memory
 * in whole GiB, then by name), i modulo their number, so a dead node's tasks
 * spread over the survivors. Memory counts in whole GiB so that survivors
 * reading the heartbeats a moment apart compute the same placement. Its name
 * into out; "" if no node is alive. */
void cluster_assign(const struct cluster_node *v, size_t n, int64_t now_ms, size_t i,
                    char out[128]);
/* Planned moves (vmckpt move, drain): cluster/moves/<task> asks node `to`
 * to restore the task, whose source node stopped it at checkpoint seq and
 * gave up its lease; the target deletes the record once the task runs
 * there.
 * The alive node other than self first in placement order; "" if none. */
void cluster_pick_other(const struct cluster_node *v, size_t n, int64_t now_ms, const char *self,
                        char out[128]);
int cluster_move_put(struct store *s, const char *task, const char *from, const char *to,
                     uint64_t seq);
/* The moves asked of node: *out a JSON array of {"task", "from"} (new
 * reference); records that do not check out are skipped. */
int cluster_moves_to(struct store *s, const char *node, json_t **out);
/* One move record's text, read from object name, for node: *out
 * {"task", "from"} when it asks node to take the task; VK_ECORRUPT when it
 * is not a move for node (or not one at all). */
int cluster_move_parse(const char *name, const char *node, const char *text, size_t len,
                       json_t **out);
/* 1 while task's move record exists, 0 once it is gone. */
int cluster_move_pending(struct store *s, const char *task);
int cluster_move_done(struct store *s, const char *task);
/* The task lease's object name. */
void cluster_lease_name(const char *task, char out[192]);
/* MemAvailable of this machine, in MiB (0 if unknown). */
int64_t cluster_memory_free_mib(void);

#endif
