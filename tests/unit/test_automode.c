/* automode: the choice of each checkpoint's mode under mode auto. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "automode.h"

#include <string.h>

static struct ckpt_snap snap(int64_t stop_us, int gave_up)
{
    struct ckpt_snap s;
    memset(&s, 0, sizeof(s));
    s.stopped_us = stop_us;
    s.gave_up = gave_up;
    s.mem_bytes = 100 << 20;
    s.dirty_bps = gave_up ? 900000000 : 1000000;
    s.copy_bps = 1000000000;
    return s;
}

static void expect(struct automode *a, enum ckpt_mode want, const char *why_has)
{
    char why[400];
    enum ckpt_mode m = automode_pick(a, why, sizeof(why));
    if (m != want || !strstr(why, why_has))
        fail_msg("picked %s (%s), want %s saying '%s'", ckpt_mode_name(m), why,
                 ckpt_mode_name(want), why_has);
}

/* Live first and while it converges. */
static void test_live_first(void **state)
{
    (void)state;
    struct automode a = {0};
    struct ckpt_snap s = snap(9000, 0);
    expect(&a, CKPT_LIVE, "live: pre-copy is tried first");
    automode_note(&a, CKPT_LIVE, &s, 1);
    expect(&a, CKPT_LIVE, "live: pre-copy converged before, stopping the VM 9 ms (smoothed)");
    assert_int_equal(a.fallbacks, 0);
}

/* Given up: the fallback is paused (cow) at once, then live is skipped for
 * 1, 2, 4 ... 16 checkpoints, and tried again after each such run. */
static void test_backoff(void **state)
{
    (void)state;
    struct automode a = {0};
    char why[400];
    int want_skip[] = {1, 2, 4, 8, 16, 16};
    for (int round = 0; round < 6; round++) {
        struct ckpt_snap s = snap(0, 1), c = snap(30000, 0);
        expect(&a, CKPT_LIVE, "live");
        automode_note(&a, CKPT_LIVE, &s, 0);
        assert_int_equal(automode_fallback(&a, "did not converge", why, sizeof(why)), CKPT_COW);
        assert_non_null(strstr(why, "cow: did not converge"));
        automode_note(&a, CKPT_COW, &c, 1);
        for (int k = 0; k < want_skip[round]; k++)
            expect(&a, CKPT_COW, "live tried again in");
        assert_int_equal(a.fallbacks, (unsigned long)round + 1);
    }
    /* Converging again resets the back-off. */
    struct ckpt_snap ok = snap(8000, 0), s = snap(0, 1);
    expect(&a, CKPT_LIVE, "live");
    automode_note(&a, CKPT_LIVE, &ok, 1);
    expect(&a, CKPT_LIVE, "live");
    automode_note(&a, CKPT_LIVE, &s, 0);
    expect(&a, CKPT_COW, "gave up 1 time");
    expect(&a, CKPT_LIVE, "live");
}

/* The paused mode with the shorter measured stop, and stop-copy tried when
 * the copy rate says it would be far shorter than cow's stop. */
static void test_paused_choice(void **state)
{
    (void)state;
    struct automode a = {0};
    char why[400];
    struct ckpt_snap g = snap(0, 1), cow = snap(800000, 0), sc = snap(120000, 0);
    automode_note(&a, CKPT_LIVE, &g, 0);
    /* cow measured at 800 ms; 100 MiB at 1 GB/s is ~105 ms: try stop-copy */
    automode_note(&a, CKPT_COW, &cow, 1);
    assert_int_equal(automode_fallback(&a, "x", why, sizeof(why)), CKPT_STOP_COPY);
    assert_non_null(strstr(why, "stop-copy estimated at"));
    automode_note(&a, CKPT_STOP_COPY, &sc, 1);
    assert_int_equal(automode_fallback(&a, "x", why, sizeof(why)), CKPT_STOP_COPY);
    assert_non_null(strstr(why, "stop-copy stopped the VM 120 ms against cow's 800 ms"));
    /* stop-copy measured longer than cow: cow */
    struct automode b = {0};
    struct ckpt_snap cow2 = snap(10000, 0), sc2 = snap(100000, 0);
    automode_note(&b, CKPT_COW, &cow2, 1);
    automode_note(&b, CKPT_STOP_COPY, &sc2, 1);
    assert_int_equal(automode_fallback(&b, "x", why, sizeof(why)), CKPT_COW);
}

static void test_names(void **state)
{
    (void)state;
    enum ckpt_mode m;
    assert_int_equal(ckpt_mode_parse("live", "mode", &m), 0);
    assert_int_equal(m, CKPT_LIVE);
    assert_int_equal(ckpt_mode_parse("stop-copy", "mode", &m), 0);
    assert_int_equal(m, CKPT_STOP_COPY);
    assert_int_not_equal(ckpt_mode_parse("Live", "mode", &m), 0);
    assert_int_not_equal(ckpt_mode_parse("", "mode", &m), 0);
    assert_int_not_equal(ckpt_mode_parse(NULL, "mode", &m), 0);
    assert_string_equal(ckpt_mode_name(CKPT_AUTO), "auto");
    assert_string_equal(ckpt_mode_name((enum ckpt_mode)9), "?");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_live_first),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_paused_choice),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
