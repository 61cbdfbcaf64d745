/* checkpoint_every = auto: Young/Daly's interval from the measured cost. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "interval.h"

#include <math.h>
#include <string.h>

/* Daly's interval: about sqrt(2CM) - C for C << M, M once C >= 2M. */
static void test_daly(void **state)
{
    (void)state;
    double t = interval_daly(0.1, 3600);
    assert_true(fabs(t - (sqrt(2 * 0.1 * 3600) - 0.1)) < 0.2); /* ~26.7 s */
    assert_true(interval_daly(10, 3600) > interval_daly(1, 3600));
    assert_true(interval_daly(1, 7200) > interval_daly(1, 3600));
    assert_true(fabs(interval_daly(100, 40) - 40) < 1e-9);
}

/* The cost counts the stop and the slowed share of the save, by mode; it is
 * smoothed; the pick is bounded by max_lost_work and min_interval and says
 * why. */
static void test_pick(void **state)
{
    (void)state;
    struct interval iv = {0};
    struct interval_policy p = {3600, 600, 5};
    char why[300];
    assert_int_equal(interval_pick(&iv, &p, why, sizeof(why)), 5);
    assert_non_null(strstr(why, "no checkpoint measured"));
    interval_note(&iv, CKPT_STOP_COPY, 200000, 200000); /* C = 0.2 s */
    assert_true(fabs(iv.cost_s - 0.2) < 1e-9);
    int t = interval_pick(&iv, &p, why, sizeof(why));
    assert_int_equal(t, (int)(interval_daly(0.2, 3600) + 0.5));
    assert_non_null(strstr(why, "MTBF 3600 s"));
    interval_note(&iv, CKPT_LIVE, 20000, 1000000); /* C = 0.02 + 0.14 */
    assert_true(fabs(iv.cost_s - (0.8 * 0.2 + 0.2 * 0.16)) < 1e-9);
    p.mtbf_s = 1e9; /* a machine that never fails: capped */
    assert_int_equal(interval_pick(&iv, &p, why, sizeof(why)), 600);
    assert_non_null(strstr(why, "capped by max_lost_work"));
    p.mtbf_s = 1; /* one that fails every second: the floor */
    assert_int_equal(interval_pick(&iv, &p, why, sizeof(why)), 5);
    assert_non_null(strstr(why, "raised to min_interval"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_daly),
        cmocka_unit_test(test_pick),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
