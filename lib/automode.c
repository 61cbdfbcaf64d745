#include "automode.h"

#include <stdio.h>

#define AUTOMODE_MAX_SKIP 16

/* The paused mode with the shorter stop this task showed, and in `how` the
 * measure that chose stop-copy ("" for cow). stop-copy is tried once when
 * the last live attempt's copy rate says saving all memory would take under
 * half of cow's measured stop. */
static enum ckpt_mode automode_paused(const struct automode *a, char *how, size_t len)
{
    int64_t cow = a->stop_us[CKPT_COW], sc = a->stop_us[CKPT_STOP_COPY];
    how[0] = '\0';
    if (cow && sc && sc < cow) {
        snprintf(how, len, "; stop-copy stopped the VM %.0f ms against cow's %.0f ms",
                 sc / 1e3, cow / 1e3);
        return CKPT_STOP_COPY;
    }
    if (cow && !sc && a->copy_bps && a->mem_bytes) {
        double est_us = (double)a->mem_bytes / (double)a->copy_bps * 1e6;
        if (est_us * 2 < (double)cow) {
            snprintf(how, len, "; stop-copy estimated at %.0f ms (%.0f MiB at %.0f MB/s) "
                               "against cow's %.0f ms", est_us / 1e3,
                     a->mem_bytes / 1048576.0, a->copy_bps / 1e6, cow / 1e3);
            return CKPT_STOP_COPY;
        }
    }
    return CKPT_COW;
}

enum ckpt_mode automode_pick(struct automode *a, char *why, size_t len)
{
    char how[160];
    enum ckpt_mode m;
    if (a->skip_live <= 0) {
        if (!a->stop_us[CKPT_LIVE])
            snprintf(why, len, "live: pre-copy is tried first");
        else
            snprintf(why, len,
                     "live: pre-copy converged before, stopping the VM %.0f ms (smoothed)",
                     a->stop_us[CKPT_LIVE] / 1e3);
        return CKPT_LIVE;
    }
    a->skip_live--;
    m = automode_paused(a, how, sizeof(how));
    snprintf(why, len, "%s: pre-copy gave up %d time%s in a row (guest dirtying %.0f MB/s, "
                       "copy %.0f MB/s); live tried again in %d checkpoint%s%s",
             ckpt_mode_name(m), a->live_gave_up, a->live_gave_up == 1 ? "" : "s",
             a->dirty_bps / 1e6, a->copy_bps / 1e6, a->skip_live + 1,
             a->skip_live ? "s" : "", how);
    return m;
}

enum ckpt_mode automode_fallback(const struct automode *a, const char *gave_up, char *why,
                                 size_t len)
{
    char how[160];
    enum ckpt_mode m = automode_paused(a, how, sizeof(how));
    snprintf(why, len, "%s: %s%s", ckpt_mode_name(m), gave_up, how);
    return m;
}

static void automode_smooth(int64_t *v, int64_t x)
{
    *v = *v ? (*v * 3 + x) / 4 : (x > 0 ? x : 1);
}

void automode_note(struct automode *a, enum ckpt_mode m, const struct ckpt_snap *s, int ok)
{
    if (m == CKPT_LIVE && (s->dirty_bps || s->copy_bps)) {
        a->dirty_bps = s->dirty_bps;
        a->copy_bps = s->copy_bps;
    }
    if (m == CKPT_LIVE && s->gave_up) {
        int skip = 1 << (a->live_gave_up < 4 ? a->live_gave_up : 4);
        a->live_gave_up++;
        a->fallbacks++;
        a->skip_live = skip < AUTOMODE_MAX_SKIP ? skip : AUTOMODE_MAX_SKIP;
        return;
    }
    if (!ok)
        return;
    if (m == CKPT_LIVE)
        a->live_gave_up = 0;
    if ((unsigned)m < CKPT_N_MODES)
        automode_smooth(&a->stop_us[m], s->stopped_us);
    if (s->mem_bytes)
        a->mem_bytes = s->mem_bytes;
}
