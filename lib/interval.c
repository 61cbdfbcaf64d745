#include "interval.h"

#include <math.h>
#include <stdio.h>

#define INTERVAL_SMOOTH 0.2 /* weight of the newest checkpoint in the smoothed cost */

double interval_save_share(enum ckpt_mode m)
{
    switch (m) {
    case CKPT_LIVE: return 0.14;
    case CKPT_COW: return 0.22;
    default: return 0; /* stop-copy: the save is inside the stop */
    }
}

void interval_note(struct interval *iv, enum ckpt_mode m, int64_t stopped_us, int64_t save_us)
{
    double c = ((double)stopped_us + interval_save_share(m) * (double)save_us) / 1e6;
    if (c < 0)
        return;
    iv->cost_s = iv->n ? (1 - INTERVAL_SMOOTH) * iv->cost_s + INTERVAL_SMOOTH * c : c;
    iv->n++;
}

double interval_daly(double c_s, double m_s)
{
    if (c_s <= 0 || m_s <= 0)
        return m_s > 0 ? m_s : 0;
    if (c_s >= 2 * m_s)
        return m_s;
    double x = c_s / (2 * m_s);
    return sqrt(2 * c_s * m_s) * (1 + sqrt(x) / 3 + x / 9) - c_s;
}

int interval_pick(const struct interval *iv, const struct interval_policy *p, char *why,
                  size_t len)
{
    double t;
    const char *bound = "";
    if (!iv->n) {
        t = p->min_s;
        snprintf(why, len, "auto: no checkpoint measured yet: %.0f s (the floor)", t);
    } else {
        t = interval_daly(iv->cost_s, p->mtbf_s);
        if (t > p->max_lost_s) {
            t = p->max_lost_s;
            bound = ", capped by max_lost_work";
        } else if (t < p->min_s) {
            t = p->min_s;
            bound = ", raised to min_interval";
        }
        snprintf(why, len, "auto (Young/Daly): checkpoint cost %.3f s (stop + the slowed share "
                 "of the memory save, smoothed over %lu), MTBF %.0f s: %.0f s%s", iv->cost_s,
                 iv->n, p->mtbf_s, t, bound);
    }
    return t < 1 ? 1 : (int)(t + 0.5);
}
