/* protect: a task's exposure against its schedule's promise (protect.h). */
#include "protect.h"

void protect_eval(const struct protect_in *in, struct protection *out)
{
    *out = (struct protection){.state = PROTECT_NOT_RUNNING};
    if (!in->running)
        return;
    out->exposed_us = in->now_us > in->covered_us ? in->now_us - in->covered_us : 0;
    if (in->period_us <= 0) {
        out->state = PROTECT_UNSCHEDULED;
        return;
    }
    /* A checkpoint is not instant: twice the last one's time, so one slow
     * upload does not make a task late, and at least a floor for the first. */
    int64_t grace = 2 * in->last_take_us;
    if (grace < PROTECT_GRACE_MIN_US)
        grace = PROTECT_GRACE_MIN_US;
    out->promise_us = in->period_us + grace;
    out->state = out->exposed_us > out->promise_us ? PROTECT_LATE : PROTECT_OK;
}

const char *protect_state_name(enum protect_state s)
{
    switch (s) {
    case PROTECT_NOT_RUNNING:
        return "not running";
    case PROTECT_OK:
        return "protected";
    case PROTECT_LATE:
        return "late";
    case PROTECT_UNSCHEDULED:
        return "unscheduled";
    }
    return "?";
}
