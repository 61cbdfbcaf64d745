/* QMP client against a scripted peer on a real socket pair. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "err.h"
#include "qmp.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "qmp_peer.h"

static void test_exec_returns_value(void **state)
{
    (void)state;
    struct step steps[] = {caps,
                           {"query-status", "{\"return\": {\"status\": \"running\"}, \"id\": %d}\r\n"},
                           {NULL, NULL}};
    struct peer p;
    int rc;
    json_t *ret = NULL;
    struct qmp *q = start(&p, GREETING, steps, &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(qmp_exec(q, "query-status", NULL, &ret, 2000), 0);
    assert_string_equal(json_string_value(json_object_get(ret, "status")), "running");
    json_decref(ret);
    finish(&p, q);
}

static void test_events_interleaved(void **state)
{
    (void)state;
    struct step steps[] = {
        caps,
        {"\"stop\"", "{\"event\": \"STOP\", \"timestamp\": {\"seconds\": 10, \"microseconds\": 5}}\r\n"
                     "{\"return\": {}, \"id\": %d}\r\n"},
        {"\"cont\"", "{\"event\": \"OTHER\", \"timestamp\": {\"seconds\": 11, \"microseconds\": 0}}\r\n"
                     "{\"return\": {}, \"id\": %d}\r\n"
                     "{\"event\": \"RESUME\", \"timestamp\": {\"seconds\": 12, \"microseconds\": 7}}\r\n"},
        {NULL, NULL}};
    struct peer p;
    int rc;
    json_t *ev = NULL;
    struct qmp *q = start(&p, GREETING, steps, &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(qmp_exec(q, "stop", NULL, NULL, 2000), 0);
    assert_int_equal(qmp_exec(q, "cont", NULL, NULL, 2000), 0);
    /* STOP arrived before its reply: it must have been queued, not lost. */
    assert_int_equal(qmp_wait_event(q, "STOP", 1000, &ev), 0);
    assert_int_equal(qmp_event_time_us(ev), 10000005);
    json_decref(ev);
    /* RESUME arrives after the reply: read from the socket. */
    assert_int_equal(qmp_wait_event(q, "RESUME", 1000, &ev), 0);
    assert_int_equal(qmp_event_time_us(ev), 12000007);
    json_decref(ev);
    finish(&p, q);
}

static void test_error_reply(void **state)
{
    (void)state;
    struct step steps[] = {
        caps,
        {"blockdev-snapshot-sync",
         "{\"error\": {\"class\": \"GenericError\", \"desc\": \"Device 'drive9' not found\"}, "
         "\"id\": %d}\r\n"},
        {NULL, NULL}};
    struct peer p;
    int rc;
    struct qmp *q = start(&p, GREETING, steps, &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(qmp_exec(q, "blockdev-snapshot-sync", json_object(), NULL, 2000), VK_EQEMU);
    assert_non_null(strstr(err_msg(), "Device 'drive9' not found"));
    assert_non_null(strstr(err_msg(), "blockdev-snapshot-sync"));
    finish(&p, q);
}

static void test_peer_closes(void **state)
{
    (void)state;
    struct step steps[] = {caps, {"query-migrate", NULL}, {NULL, NULL}};
    struct peer p;
    int rc;
    struct qmp *q = start(&p, GREETING, steps, &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(qmp_exec(q, "query-migrate", NULL, NULL, 2000), VK_EQEMU);
    assert_non_null(strstr(err_msg(), "closed"));
    finish(&p, q);
}

static void test_stale_reply_skipped(void **state)
{
    (void)state;
    /* A reply with another id (to a command that timed out) must not be
     * taken as this command's answer. */
    struct step steps[] = {
        caps,
        {"query-status", "{\"return\": {\"status\": \"stale\"}, \"id\": 99999}\r\n"
                         "{\"return\": {\"status\": \"paused\"}, \"id\": %d}\r\n"},
        {NULL, NULL}};
    struct peer p;
    int rc;
    json_t *ret = NULL;
    struct qmp *q = start(&p, GREETING, steps, &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(qmp_exec(q, "query-status", NULL, &ret, 2000), 0);
    assert_string_equal(json_string_value(json_object_get(ret, "status")), "paused");
    json_decref(ret);
    finish(&p, q);
}

static void test_timeout(void **state)
{
    (void)state;
    int sv[2];
    struct qmp *q = NULL;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(write(sv[1], GREETING, strlen(GREETING)), (ssize_t)strlen(GREETING));
    /* The peer greets but never answers qmp_capabilities. */
    assert_int_equal(qmp_open_fd(&q, sv[0], "mute-peer", 200), VK_ETIMEOUT);
    assert_null(q);
    close(sv[1]);
}

static void test_bad_greeting(void **state)
{
    (void)state;
    struct peer p;
    int rc;
    struct qmp *q = start(&p, "this is not json\r\n", NULL, &rc);
    assert_int_equal(rc, VK_EQEMU);
    assert_null(q);
    pthread_join(p.th, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exec_returns_value), cmocka_unit_test(test_events_interleaved),
        cmocka_unit_test(test_error_reply),        cmocka_unit_test(test_peer_closes),
        cmocka_unit_test(test_stale_reply_skipped), cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_bad_greeting),
    };
    return cmocka_run_group_tests_name("qmp", tests, NULL, NULL);
}
