/* The checkpoint protocol (ckpt_snapshot) against a scripted QEMU: the
 * commands, in order, of a live checkpoint that works, of one whose seal
 * fails at pre-switchover, and of a pre-copy given up. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "ckpt.h"
#include "err.h"
#include "qmp.h"

#include <sys/stat.h>

#include "qmp_peer.h"

#define RET "{\"return\": {}, \"id\": %d}\r\n"
#define EV(name, sec, data)                                                                    \
    "{\"event\": \"" name "\", \"timestamp\": {\"seconds\": " #sec ", \"microseconds\": 0}" data \
    "}\r\n"
/* Every live checkpoint begins so: capabilities, then its bounds. */
#define LIVE_SETUP caps, {"migrate-set-capabilities", RET}, {"downtime-limit", RET}
#define PAUSED_AT_SWITCHOVER                                                                   \
    {"\"migrate\"", RET EV("STOP", 100, "") EV("MIGRATION", 100, MIG("pre-switchover"))}
/* After a failure: the save is found ended and the VM running. */
#define SETTLED                                                                                \
    {"query-migrate", "{\"return\": {\"status\": \"cancelled\"}, \"id\": %d}\r\n"},           \
    {                                                                                          \
        "query-status", "{\"return\": {\"status\": \"running\"}, \"id\": %d}\r\n"            \
    }
#define MIG(status) ", \"data\": {\"status\": \"" status "\"}"

static char dir[64], top[128], new_top[160], mem[160];

static int setup(void **state)
{
    (void)state;
    char cmd[256];
    snprintf(dir, sizeof(dir), "/tmp/vk-ckpt-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(top, sizeof(top), "%s/top-1.qcow2", dir);
    snprintf(new_top, sizeof(new_top), "%s/top-2.qcow2", dir);
    snprintf(mem, sizeof(mem), "%s/memory.mig", dir);
    snprintf(cmd, sizeof(cmd), "qemu-img create -q -f qcow2 %s 64M", top);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd);
}

static int run(const struct step *steps, int converge_ms, struct ckpt_snap *out)
{
    struct peer p;
    int rc;
    struct ckpt_live live = {20, 1 << 30, converge_ms, 1 << 30};
    struct ckpt_req req = {"t1", CKPT_LIVE, &live, top, new_top, mem, NULL, 0};
    struct qmp *q = start(&p, GREETING, steps, &rc);
    assert_int_equal(rc, 0);
    rc = ckpt_snapshot(q, &req, out);
    finish(&p, q);
    return rc;
}

/* Sealed at pre-switchover, continued, run again once QEMU lets cont in. */
static void test_live_works(void **state)
{
    (void)state;
    struct step steps[] = {
        LIVE_SETUP,
        PAUSED_AT_SWITCHOVER,
        {"\"existing\"", RET},
        {"\"pre-switchover\"", RET EV("MIGRATION", 100, MIG("completed"))},
        {"cont", "{\"error\": {\"class\": \"GenericError\", \"desc\": \"Migration is not "
                 "finalized yet\"}, \"id\": %d}\r\n"},
        {"cont", RET EV("RESUME", 101, "")},
        {NULL, NULL}};
    struct ckpt_snap s;
    assert_int_equal(run(steps, 30000, &s), 0);
    assert_true(s.sealed);
    assert_false(s.gave_up);
    assert_int_equal(s.stopped_us, 1000000);
}

/* The seal fails while QEMU waits: the save is cancelled (QEMU runs the VM
 * again itself), nothing sealed, the new overlay removed. */
static void test_live_seal_fails(void **state)
{
    (void)state;
    struct step steps[] = {
        LIVE_SETUP,
        PAUSED_AT_SWITCHOVER,
        {"\"existing\"", "{\"error\": {\"class\": \"GenericError\", \"desc\": \"disk full\"}, "
                         "\"id\": %d}\r\n"},
        {"migrate_cancel", RET EV("MIGRATION", 100, MIG("cancelled")) EV("RESUME", 100, "")},
        SETTLED,
        {NULL, NULL}};
    struct ckpt_snap s;
    struct stat st;
    int rc = run(steps, 30000, &s);
    assert_int_equal(rc, VK_EQEMU);
    assert_non_null(strstr(err_msg(), "disk full"));
    assert_false(s.sealed);
    assert_int_not_equal(stat(new_top, &st), 0);
}

/* Pre-copy past its time bound: cancelled before the VM ever stopped. */
static void test_live_gives_up(void **state)
{
    (void)state;
    struct step steps[] = {
        LIVE_SETUP,
        {"\"migrate\"", RET},
        {"query-migrate", "{\"return\": {\"status\": \"active\", \"ram\": {\"page-size\": 4096, "
                          "\"dirty-pages-rate\": 1000, \"mbps\": 80.0, \"dirty-sync-count\": 3, "
                          "\"transferred\": 1000}}, \"id\": %d}\r\n"},
        {"migrate_cancel", RET EV("MIGRATION", 100, MIG("cancelled"))},
        SETTLED,
        {NULL, NULL}};
    struct ckpt_snap s;
    assert_int_equal(run(steps, 0, &s), VK_ETIMEOUT);
    assert_true(s.gave_up);
    assert_false(s.sealed);
    assert_non_null(strstr(err_msg(), "did not converge"));
    assert_int_equal(s.dirty_bps, 4096000);
    assert_int_equal(s.copy_bps, 10000000);
    assert_int_equal(s.passes, 3);
}

/* What an agent finds after its predecessor died in a live checkpoint: a
 * save waiting in pre-switchover, cancelled and waited for; the VM, run
 * again by QEMU meanwhile, needs no cont. */
static void test_settle_pre_switchover(void **state)
{
    (void)state;
    struct step steps[] = {
        caps,
        {"query-migrate", "{\"return\": {\"status\": \"pre-switchover\"}, \"id\": %d}\r\n"},
        {"migrate_cancel", RET},
        {"query-migrate", "{\"return\": {\"status\": \"cancelling\"}, \"id\": %d}\r\n"},
        SETTLED,
        {NULL, NULL}};
    struct peer p;
    int rc;
    struct qmp *q = start(&p, GREETING, steps, &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(ckpt_settle(q, "t1"), 0);
    finish(&p, q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_live_works, setup, teardown),
        cmocka_unit_test_setup_teardown(test_live_seal_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_live_gives_up, setup, teardown),
        cmocka_unit_test(test_settle_pre_switchover),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
