/* interval: the checkpoint interval of a task whose checkpoint_every is
 * auto, from the cost of its own checkpoints and the mean time between
 * failures (Young 1974, refined by Daly 2006).
 *
 * Pure policy, no I/O: the task notes each committed checkpoint
 * (interval_note) and asks interval_pick when it schedules the next one.
 * The cost C of a checkpoint is the work the guest loses to it: the VM stop,
 * plus the part of the memory save during which the guest runs slowed
 * (pre-copy competes with it for CPU and memory bandwidth; cow makes its
 * writes fault), measured by bench/stop_time.sh as 14% (live) and 22% (cow)
 * of the guest's speed; stop-copy's save is inside its stop. The background
 * upload is not counted: the guest does not wait for it. Daly's interval:
 *   T = sqrt(2 C M) (1 + sqrt(C / 2M) / 3 + C / 18M) - C   (C < 2M; else M)
 * bounded by [task] max_lost_work (never more work at risk) and a floor. */
#ifndef VMCKPT_INTERVAL_H
#define VMCKPT_INTERVAL_H

#include <stddef.h>
#include <stdint.h>

#include "ckpt.h"

struct interval_policy {
    double mtbf_s;      /* [task] mtbf: mean time between failures */
    double max_lost_s;  /* [task] max_lost_work: the interval at most */
    double min_s;       /* [task] min_interval: the interval at least */
};

struct interval {
    double cost_s; /* smoothed C; 0 until a checkpoint was measured */
    unsigned long n;
};

/* The share of a memory save's time the guest loses, by mode. */
double interval_save_share(enum ckpt_mode m);
/* A committed checkpoint's VM stop and memory save, microseconds. */
void interval_note(struct interval *iv, enum ckpt_mode m, int64_t stopped_us, int64_t save_us);
/* Daly's interval for cost c_s and MTBF m_s, unbounded (seconds). */
double interval_daly(double c_s, double m_s);
/* The interval in force, seconds (at least 1), and why in `why`. */
int interval_pick(const struct interval *iv, const struct interval_policy *p, char *why,
                  size_t len);

#endif
