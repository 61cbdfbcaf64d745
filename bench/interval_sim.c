/* The checkpoint interval against a scripted random failure trace: a task
 * needs WORK seconds of computation; failures come at exponentially
 * distributed times (mean MTBF, one seeded trace shared by every interval
 * tried); every T seconds of work it pays a checkpoint of cost C (a failure
 * during it loses the segment too); a failure loses the work since the last
 * checkpoint and costs R to recover. The time lost is the wall time minus
 * WORK. Prints the loss of each fixed interval of a sweep, the best of them,
 * and the loss with the interval `checkpoint_every = auto` picks
 * (interval_pick, fed C as the task measured it), and whether auto is within
 * 10% of the best fixed interval.
 * Usage: interval_sim C_SECONDS R_SECONDS MTBF_SECONDS [WORK_SECONDS [SEED]] */
#include "interval.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static uint64_t rng;
static double uniform(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return ((double)(rng >> 11) + 0.5) / (double)(1ull << 53);
}

/* The failure times of one trace, as gaps: the same for every interval. */
struct trace {
    double *gap;
    size_t n, at;
};

static double next_gap(struct trace *tr, double mtbf)
{
    if (tr->at == tr->n) {
        size_t n = tr->n ? 2 * tr->n : 4096;
        double *g = realloc(tr->gap, n * sizeof(*g));
        if (!g)
            exit(1);
        for (size_t i = tr->n; i < n; i++)
            g[i] = -mtbf * log(uniform());
        tr->gap = g;
        tr->n = n;
    }
    return tr->gap[tr->at++];
}

/* Wall time lost to checkpoints, failures and recovery for interval t. */
static double lost(double t, double c, double r, double mtbf, double work, struct trace *tr)
{
    double done = 0, wall = 0, to_fail;
    tr->at = 0;
    to_fail = next_gap(tr, mtbf);
    while (done < work) {
        double seg = work - done < t ? work - done : t;
        double need = seg + (work - done > t ? c : 0); /* no checkpoint after the last piece */
        if (to_fail >= need) {
            wall += need;
            to_fail -= need;
            done += seg;
        } else { /* the segment (and its checkpoint) is lost */
            wall += to_fail;
            for (;;) { /* recover; a failure during it starts it again */
                to_fail = next_gap(tr, mtbf);
                if (to_fail >= r) {
                    wall += r;
                    to_fail -= r;
                    break;
                }
                wall += to_fail;
            }
        }
    }
    return wall - work;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: interval_sim C_SECONDS R_SECONDS MTBF_SECONDS [WORK [SEED]]\n");
        return 2;
    }
    double c = atof(argv[1]), r = atof(argv[2]), mtbf = atof(argv[3]);
    double work = argc > 4 ? atof(argv[4]) : 500 * mtbf;
    rng = argc > 5 ? strtoull(argv[5], NULL, 10) : 88172645463325252ull;
    if (c <= 0 || r < 0 || mtbf <= 0 || work <= 0 || !rng) {
        fprintf(stderr, "interval_sim: C, MTBF and WORK must be > 0, R >= 0\n");
        return 2;
    }
    struct trace tr = {0};
    double best_t = 0, best = INFINITY;
    printf("C %.3f s, R %.3f s, MTBF %.0f s, work %.0f s (%.0f failures expected)\n", c, r,
           mtbf, work, work / mtbf);
    printf("| interval (s) | time lost (s) | lost / work |\n|---|---|---|\n");
    for (double t = 1; t <= mtbf && t <= work; t *= 1.25) { /* past MTBF: hopeless */
        double l = lost(t, c, r, mtbf, work, &tr);
        printf("| %.1f | %.0f | %.4f |\n", t, l, l / work);
        if (l < best) {
            best = l;
            best_t = t;
        }
    }
    struct interval iv = {.cost_s = c, .n = 1};
    struct interval_policy p = {mtbf, 1e12, 1};
    char why[300];
    int ta = interval_pick(&iv, &p, why, sizeof(why));
    double la = lost(ta, c, r, mtbf, work, &tr);
    printf("\nbest fixed interval: %.1f s, %.0f s lost\n", best_t, best);
    printf("auto: %d s (%s), %.0f s lost: %.1f%% %s the best fixed\n", ta, why, la,
           100 * fabs(la - best) / best, la <= best ? "below" : "above");
    int met = la <= 1.10 * best;
    printf("target auto within 10%% of the best fixed interval: %s\n", met ? "met" : "MISSED");
    free(tr.gap);
    return met ? 0 : 1;
}
