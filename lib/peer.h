/* peer: who is on the other end of the API socket, and how many connections
 * each caller holds.
 *
 * The socket is the agent's whole API: whoever can talk to it can run a VM
 * on any file root can read and read it back from the store. The socket file
 * is 0600 (0660 with [agent] group), and each connection is checked again
 * with SO_PEERCRED, so a socket made reachable by mistake (a chmod, a bind
 * mount) still answers only root, the agent's own user and the group.
 *
 * Idle clients must not starve the API: every caller but root and the
 * agent's own user may hold only a few connections at once (the daemon's
 * connection cap and idle timeout do the rest). */
#ifndef VMCKPT_PEER_H
#define VMCKPT_PEER_H

#include <sys/types.h>

struct peer {
    pid_t pid;
    uid_t uid;
    gid_t gid;
};

struct peer_table;

/* *out: peer_table_free(). per_uid_max: connections a caller other than root
 * or the agent's user may hold at once. group: the gid allowed besides them,
 * or (gid_t)-1 for none. */
int peer_table_new(struct peer_table **out, int per_uid_max, gid_t group);
void peer_table_free(struct peer_table *t);

/* The credentials of the process at the other end of UNIX socket fd. */
int peer_of_fd(int fd, struct peer *out);
/* 1 if p may use the API: root, the agent's own user, or a member of the
 * table's group (primary or supplementary). */
int peer_allowed(const struct peer_table *t, const struct peer *p);
/* Counts a new connection of p: 0, or VK_EBUSY (with a message) when p holds
 * its share already. Each 0 is paired with one peer_leave(). Thread-safe. */
int peer_enter(struct peer_table *t, const struct peer *p);
void peer_leave(struct peer_table *t, const struct peer *p);

/* The gid of group name into *out: VK_EINVAL (naming it) if there is none. */
int peer_group_id(const char *name, gid_t *out);

#endif
