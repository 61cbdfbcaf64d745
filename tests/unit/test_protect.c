/* No silent exposure: a task's unprotected time against its schedule. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "protect.h"

#include <string.h>

#define S 1000000LL

static struct protection eval(int running, int64_t now, int64_t covered, int64_t period,
                              int64_t take)
{
    struct protect_in in = {running, now, covered, period, take};
    struct protection p;
    protect_eval(&in, &p);
    return p;
}

static void test_not_running(void **state)
{
    (void)state;
    struct protection p = eval(0, 500 * S, 100 * S, 20 * S, 0);
    assert_int_equal(p.state, PROTECT_NOT_RUNNING);
    assert_int_equal(p.exposed_us, 0);
    assert_string_equal(protect_state_name(p.state), "not running");
}

/* No schedule: unscheduled whatever the exposure, and the exposure grows. */
static void test_unscheduled(void **state)
{
    (void)state;
    struct protection p = eval(1, 160 * S, 100 * S, 0, 0);
    assert_int_equal(p.state, PROTECT_UNSCHEDULED);
    assert_int_equal(p.exposed_us, 60 * S);
    assert_int_equal(p.promise_us, 0);
    assert_string_equal(protect_state_name(p.state), "unscheduled");
}

/* Every 20 s: the grace is at least PROTECT_GRACE_MIN_US, so late past 50 s. */
static void test_ok_then_late(void **state)
{
    (void)state;
    struct protection p = eval(1, 150 * S, 100 * S, 20 * S, 1 * S);
    assert_int_equal(p.state, PROTECT_OK);
    assert_int_equal(p.promise_us, 20 * S + PROTECT_GRACE_MIN_US);
    p = eval(1, 151 * S, 100 * S, 20 * S, 1 * S);
    assert_int_equal(p.state, PROTECT_LATE);
    assert_int_equal(p.exposed_us, 51 * S);
    assert_string_equal(protect_state_name(p.state), "late");
}

/* A slow store: twice the last checkpoint's time is the grace. */
static void test_grace_follows_the_last_checkpoint(void **state)
{
    (void)state;
    struct protection p = eval(1, 300 * S, 100 * S, 60 * S, 80 * S);
    assert_int_equal(p.promise_us, 220 * S);
    assert_int_equal(p.state, PROTECT_OK);
}

/* A covered instant in the future (a clock that stepped) is no exposure. */
static void test_covered_ahead(void **state)
{
    (void)state;
    struct protection p = eval(1, 100 * S, 200 * S, 20 * S, 0);
    assert_int_equal(p.exposed_us, 0);
    assert_int_equal(p.state, PROTECT_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_not_running),
        cmocka_unit_test(test_unscheduled),
        cmocka_unit_test(test_ok_then_late),
        cmocka_unit_test(test_grace_follows_the_last_checkpoint),
        cmocka_unit_test(test_covered_ahead),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
