/* protect: how well a task is protected now, from its checkpoint schedule
 * and its newest committed checkpoint ("no silent exposure").
 *
 * Pure policy, no I/O, like restart and interval. The exposure is the
 * guest's work a crash would lose now: the time since the VM's state was
 * last that of a committed checkpoint (its start, or a restore, counts as
 * such an instant: before it there was nothing of this run to lose). The
 * promise is what the schedule allows: the period to the next checkpoint
 * plus a grace for taking and storing it. A task is late when its exposure
 * passes the promise, and unscheduled when nothing will checkpoint it. */
#ifndef VMCKPT_PROTECT_H
#define VMCKPT_PROTECT_H

#include <stdint.h>

#define PROTECT_GRACE_MIN_US (30 * (int64_t)1000000) /* the grace at least */

enum protect_state {
    PROTECT_NOT_RUNNING, /* no VM runs: nothing accrues (a crash already lost its part) */
    PROTECT_OK,          /* exposed no longer than the schedule promises */
    PROTECT_LATE,        /* exposed longer than the schedule promises */
    PROTECT_UNSCHEDULED, /* running, and no checkpoint will come by itself */
};

struct protect_in {
    int running;         /* the VM runs */
    int64_t now_us;      /* monotonic */
    int64_t covered_us;  /* the VM's state was last a committed checkpoint's then */
    int64_t period_us;   /* the schedule's time to the next checkpoint; 0: none */
    int64_t last_take_us; /* the last checkpoint's time from its start to its commit */
};

struct protection {
    enum protect_state state;
    int64_t exposed_us; /* 0 when not running */
    int64_t promise_us; /* period + grace; 0 when unscheduled */
};

void protect_eval(const struct protect_in *in, struct protection *out);
const char *protect_state_name(enum protect_state s);

#endif
