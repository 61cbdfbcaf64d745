/* automode: the choice of each checkpoint's mode when a task's mode is auto.
 *
 * Pure policy, no I/O: the task keeps one struct automode, asks
 * automode_pick() before each checkpoint and tells automode_note() what the
 * checkpoint showed. The rules, from the cheapest stop to the dearest:
 * - live (pre-copy) unless it was given up lately: a guest that dirtied
 *   memory faster than QEMU copied it is not tried live again for 1, 2, 4
 *   ... 16 checkpoints (then tried again: workloads change);
 * - otherwise the paused mode with the shorter stop measured on this task
 *   (cow unless stop-copy was measured shorter, or estimated so from the
 *   copy rate QEMU reached and the memory it had to save). */
#ifndef VMCKPT_AUTOMODE_H
#define VMCKPT_AUTOMODE_H

#include <stddef.h>
#include <stdint.h>

#include "ckpt.h"

struct automode {
    int64_t stop_us[CKPT_N_MODES]; /* smoothed stop per mode; 0 = not measured */
    uint64_t mem_bytes;            /* the last memory stream's size */
    uint64_t dirty_bps, copy_bps;  /* rates of the last live attempt */
    int live_gave_up;              /* live attempts given up in a row */
    int skip_live;                 /* checkpoints to take without trying live */
    unsigned long fallbacks;       /* live attempts given up, ever */
};

/* The mode for the next checkpoint (counted as begun), and why in `why`. */
enum ckpt_mode automode_pick(struct automode *a, char *why, size_t why_len);
/* The paused mode to take a checkpoint with at once, its live attempt
 * given up for the reason gave_up; why as above. */
enum ckpt_mode automode_fallback(const struct automode *a, const char *gave_up, char *why,
                                 size_t why_len);
/* After a checkpoint in mode `m`: s what it measured, ok whether it took. */
void automode_note(struct automode *a, enum ckpt_mode m, const struct ckpt_snap *s, int ok);

#endif
