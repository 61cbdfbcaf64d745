/* [task] restart's policy: at once, then backing off, then giving up. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "restart.h"

#include <string.h>

#define S 1000000LL

static void test_never(void **state)
{
    (void)state;
    struct restart r = {0};
    struct restart_policy p = {0, 5, 600};
    int64_t due = 1;
    char why[200];
    assert_int_equal(restart_crashed(&r, &p, 100 * S, &due, why, sizeof(why)), RESTART_NO);
    assert_int_equal(due, 0);
    assert_non_null(strstr(why, "restart = never"));
}

/* At once, then 1, 2, 4 s later for crashes within the window; the crash
 * past restart_max fails the task, saying so. */
static void test_backoff_then_give_up(void **state)
{
    (void)state;
    struct restart r = {0};
    struct restart_policy p = {1, 4, 600};
    int64_t due, now = 1000 * S, want[] = {0, 1, 2, 4};
    char why[200];
    for (int i = 0; i < 4; i++) {
        now += 10 * S;
        assert_int_equal(restart_crashed(&r, &p, now, &due, why, sizeof(why)), RESTART_AT);
        assert_int_equal(due - now, want[i] * S);
    }
    now += 10 * S;
    assert_int_equal(restart_crashed(&r, &p, now, &due, why, sizeof(why)), RESTART_GIVE_UP);
    assert_non_null(strstr(why, "crashed 5 times within 600 s"));
}

/* Crashes older than the window are forgotten: a task that crashes once a
 * day is restarted at once every time. */
static void test_window_forgets(void **state)
{
    (void)state;
    struct restart r = {0};
    struct restart_policy p = {1, 1, 600};
    int64_t due, now = 0;
    char why[200];
    for (int i = 0; i < 10; i++) {
        now += 86400 * S;
        assert_int_equal(restart_crashed(&r, &p, now, &due, why, sizeof(why)), RESTART_AT);
        assert_int_equal(due, now);
        restart_done(&r);
    }
    assert_int_equal(r.restarts, 10);
    now += 1 * S; /* a second crash within the window: past restart_max = 1 */
    assert_int_equal(restart_crashed(&r, &p, now, &due, why, sizeof(why)), RESTART_GIVE_UP);
}

/* The back-off is capped at a minute, and restart_max up to RESTART_TRACK holds. */
static void test_cap(void **state)
{
    (void)state;
    struct restart r = {0};
    struct restart_policy p = {1, RESTART_TRACK, 86400};
    int64_t due, now = 0;
    char why[200];
    for (int i = 0; i < RESTART_TRACK; i++) {
        now += S;
        assert_int_equal(restart_crashed(&r, &p, now, &due, why, sizeof(why)), RESTART_AT);
        assert_true(due - now <= 60 * S);
    }
    assert_int_equal(due - now, 60 * S);
    assert_int_equal(restart_crashed(&r, &p, now + S, &due, why, sizeof(why)), RESTART_GIVE_UP);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_never),
        cmocka_unit_test(test_backoff_then_give_up),
        cmocka_unit_test(test_window_forgets),
        cmocka_unit_test(test_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
