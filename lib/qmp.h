/* qmp: a QEMU Machine Protocol client on a UNIX socket.
 *
 * One struct qmp per QEMU monitor, used by one thread at a time (callers
 * lock). Events that arrive while waiting for a reply are queued and can be
 * taken later with qmp_wait_event(), so none is lost. */
#ifndef VMCKPT_QMP_H
#define VMCKPT_QMP_H

#include <jansson.h>
#include <stdint.h>

struct qmp;

/* Connects to QEMU's QMP socket at path, retrying until timeout_ms (QEMU may
 * not have created it yet), reads the greeting and negotiates capabilities.
 * *out is the caller's, freed with qmp_free(). */
int qmp_connect(struct qmp **out, const char *path, int timeout_ms);
/* Same on an already connected fd (taken over; closed by qmp_free). */
int qmp_open_fd(struct qmp **out, int fd, const char *name, int timeout_ms);
void qmp_free(struct qmp *q);

/* Runs one command. args is stolen (may be NULL). On success *out_ret (if
 * not NULL) gets QEMU's "return" value (a new reference, caller decrefs).
 * Errors: VK_EQEMU with QEMU's own description when QEMU refuses, VK_EQEMU
 * when the connection closes, VK_ETIMEOUT after timeout_ms. */
int qmp_exec(struct qmp *q, const char *cmd, json_t *args, json_t **out_ret, int timeout_ms);

/* Waits for the event `name` (queued or new). *out_ev (if not NULL) gets the
 * whole event object (new reference). VK_ETIMEOUT when it does not come. */
int qmp_wait_event(struct qmp *q, const char *name, int timeout_ms, json_t **out_ev);
/* Drops every queued event. */
void qmp_drop_events(struct qmp *q);
/* QEMU's timestamp of an event, in microseconds since the epoch. */
int64_t qmp_event_time_us(const json_t *ev);

#endif
