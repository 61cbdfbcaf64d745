/* agent: the node agent behind vmckptd. Owns this node's tasks, runs their
 * checkpoint policy, and serves the HTTP/JSON API on a UNIX socket. */
#ifndef VMCKPT_AGENT_H
#define VMCKPT_AGENT_H

#include "cfg.h"

struct agent;

/* Takes the state directory (one agent per directory: VK_EBUSY naming the
 * other agent's pid otherwise), opens the store and checks it takes writes,
 * takes back the tasks an earlier agent left, and listens on cfg->socket.
 * cfg must outlive the agent. *out: agent_free(). */
int agent_open(struct agent **out, const struct cfg *cfg);
/* Serves until agent_stop(); VMs keep running after it returns. */
int agent_serve(struct agent *a);
/* Async-signal-safe: makes agent_serve() return. */
void agent_stop(struct agent *a);
/* A descriptor of the caller's own (a dup; a negative code with a message
 * when it cannot be made): a byte written to it makes agent_serve() return.
 * For a signal handler: writing to it stays harmless after agent_free(),
 * where a second signal calling agent_stop() would touch freed memory. */
int agent_stop_fd(struct agent *a);
/* Waits for running uploads (bounded), then frees. Accepts NULL. */
void agent_free(struct agent *a);

#endif
