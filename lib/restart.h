/* restart: whether and when a task whose VM crashed is restored again on
 * this node ([task] restart, restart_max, restart_window).
 *
 * Pure policy, no I/O: the task keeps one struct restart and tells it of
 * each crash (restart_crashed) and of each restart that worked or failed.
 * The rules: never under restart = never; otherwise at once after the first
 * crash, then after 1, 2, 4 ... 60 s for crashes that follow within the
 * window; the (restart_max + 1)-th crash within restart_window seconds is
 * not restarted: the task is failed, with the reason. */
#ifndef VMCKPT_RESTART_H
#define VMCKPT_RESTART_H

#include <stddef.h>
#include <stdint.h>

#define RESTART_TRACK 64 /* crashes remembered: restart_max is at most this */

struct restart_policy {
    int on_crash;  /* [task] restart = on-crash (else never) */
    int max;       /* [task] restart_max: restarts within the window, at most */
    int window_s;  /* [task] restart_window */
};

struct restart {
    int64_t crash_us[RESTART_TRACK + 1]; /* the latest crashes' times (monotonic), oldest first */
    size_t n;
    unsigned long restarts;          /* restarts that worked, ever */
};

enum restart_verdict {
    RESTART_NO,       /* the policy says never */
    RESTART_AT,       /* restore at *due_us */
    RESTART_GIVE_UP,  /* too many crashes in the window: fail the task */
};

/* A crash at now_us (monotonic). *due_us: when to restore (RESTART_AT);
 * why: one line for the log and status. */
enum restart_verdict restart_crashed(struct restart *r, const struct restart_policy *p,
                                     int64_t now_us, int64_t *due_us, char *why, size_t len);
/* The restart worked. */
void restart_done(struct restart *r);

#endif
