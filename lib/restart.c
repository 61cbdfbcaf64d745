#include "restart.h"

#include "util.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define RESTART_BACKOFF_BASE_MS 1000
#define RESTART_BACKOFF_MAX_MS 60000

/* Forgets crashes older than the window. */
static void restart_forget(struct restart *r, const struct restart_policy *p, int64_t now_us)
{
    size_t k = 0;
    while (k < r->n && now_us - r->crash_us[k] > (int64_t)p->window_s * 1000000)
        k++;
    memmove(r->crash_us, r->crash_us + k, (r->n - k) * sizeof(*r->crash_us));
    r->n -= k;
}

enum restart_verdict restart_crashed(struct restart *r, const struct restart_policy *p,
                                     int64_t now_us, int64_t *due_us, char *why, size_t len)
{
    *due_us = 0;
    if (!p->on_crash) {
        snprintf(why, len, "not restarted: [task] restart = never");
        return RESTART_NO;
    }
    restart_forget(r, p, now_us);
    if (r->n == RESTART_TRACK + 1) /* keep the newest: enough to pass restart_max */
        memmove(r->crash_us, r->crash_us + 1, --r->n * sizeof(*r->crash_us));
    r->crash_us[r->n++] = now_us;
    if (r->n > (size_t)p->max) {
        snprintf(why, len, "its VM crashed %zu times within %d s ([task] restart_max = %d): not "
                 "restarted again", r->n, p->window_s, p->max);
        return RESTART_GIVE_UP;
    }
    int64_t wait_ms = r->n == 1 ? 0 : util_backoff_ms(RESTART_BACKOFF_BASE_MS, (int)r->n - 2);
    if (wait_ms > RESTART_BACKOFF_MAX_MS)
        wait_ms = RESTART_BACKOFF_MAX_MS;
    *due_us = now_us + wait_ms * 1000;
    snprintf(why, len, "restart %zu of at most %d within %d s, in %.0f s", r->n, p->max,
             p->window_s, (double)wait_ms / 1000);
    return RESTART_AT;
}

void restart_done(struct restart *r) { r->restarts++; }
