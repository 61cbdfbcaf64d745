/* Cluster membership: node states from heartbeat ages, the placement of a
 * dead node's tasks, heartbeats written and read back on a directory store. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "cluster.h"
#include "err.h"
#include "store.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct cluster_node mk(const char *name, int64_t renewed, int running, int64_t mem)
{
    struct cluster_node n = {.renewed_ms = renewed, .lease_ms = 3000, .renew_ms = 500,
                             .running = running, .memory_free_mib = mem};
    snprintf(n.name, sizeof(n.name), "%s", name);
    return n;
}

static void test_states(void **state)
{
    (void)state;
    struct cluster_node n = mk("x", 10000, 0, 0);
    assert_int_equal(cluster_state_of(&n, 10500), CLUSTER_ALIVE);
    assert_int_equal(cluster_state_of(&n, 11001), CLUSTER_SUSPECT); /* > 2 renewals */
    assert_int_equal(cluster_state_of(&n, 13001), CLUSTER_DEAD);    /* > the lease */
    assert_string_equal(cluster_state_name(CLUSTER_DEAD), "dead");
}

static void test_assign_spreads_and_prefers_room(void **state)
{
    (void)state;
    struct cluster_node v[4] = {mk("dead", 0, 2, 900), mk("busy", 9900, 3, 9000),
                                mk("idle", 9900, 0, 1000), mk("roomy", 9900, 0, 8000)};
    char to[128];
    /* idle nodes first, the one with more memory first; then the busy one */
    cluster_assign(v, 4, 10000, 0, to);
    assert_string_equal(to, "roomy");
    cluster_assign(v, 4, 10000, 1, to);
    assert_string_equal(to, "idle");
    cluster_assign(v, 4, 10000, 2, to);
    assert_string_equal(to, "busy");
    cluster_assign(v, 4, 10000, 3, to);
    assert_string_equal(to, "roomy");
    /* nobody alive: nobody */
    cluster_assign(v, 1, 10000, 0, to);
    assert_string_equal(to, "");
}

/* Two survivors decide a dead node's placement each from the heartbeats it
 * reads: a moment apart, with free memory a few MiB off and one of them late
 * to beat (suspect). They must agree, and spread the tasks. */
static void test_assign_views_agree(void **state)
{
    (void)state;
    struct cluster_node seen_by_b[3] = {mk("a", 0, 2, 20000), mk("b", 9900, 1, 20110),
                                        mk("c", 9900, 1, 20050)};
    struct cluster_node seen_by_c[3] = {mk("a", 0, 2, 20000), mk("b", 8800, 1, 20020),
                                        mk("c", 10300, 1, 20140)};
    char b0[128], b1[128], c0[128], c1[128];
    assert_int_equal(cluster_state_of(&seen_by_c[1], 10400), CLUSTER_SUSPECT);
    cluster_assign(seen_by_b, 3, 10000, 0, b0);
    cluster_assign(seen_by_b, 3, 10000, 1, b1);
    cluster_assign(seen_by_c, 3, 10400, 0, c0);
    cluster_assign(seen_by_c, 3, 10400, 1, c1);
    assert_string_equal(b0, c0);
    assert_string_equal(b1, c1);
    assert_string_not_equal(b0, b1); /* spread */
    /* a node past its lease is no candidate */
    struct cluster_node late[2] = {mk("b", 9900, 0, 20000), mk("c", 6000, 0, 20000)};
    cluster_assign(late, 2, 10000, 1, b0);
    assert_string_equal(b0, "b");
}

static void test_beat_roundtrip(void **state)
{
    (void)state;
    char root[] = "/tmp/vmckpt-test-cluster.XXXXXX", uri[128];
    struct store *s = NULL;
    struct cluster_node *v = NULL;
    size_t n = 0;
    assert_non_null(mkdtemp(root));
    snprintf(uri, sizeof(uri), "file://%s", root);
    assert_int_equal(store_open(uri, &s), 0);
    json_t *tasks = json_pack("[s, s]", "t1", "t2");
    assert_int_equal(cluster_beat(s, "node-1", 3000, 500, tasks, 2), 0);
    json_t *none = json_array();
    assert_int_equal(cluster_beat(s, "node-2", 3000, 500, none, 0), 0);
    /* The default name is the host name, often a fully qualified one. */
    assert_int_equal(cluster_beat(s, "node-3.dc1.example.com", 3000, 500, none, 0), 0);
    json_decref(none);
    json_decref(tasks);
    assert_int_equal(cluster_nodes(s, &v, &n), 0);
    assert_int_equal(n, 3);
    int dotted = 0;
    for (size_t i = 0; i < n; i++)
        dotted += !strcmp(v[i].name, "node-3.dc1.example.com");
    assert_int_equal(dotted, 1);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(cluster_state_of(&v[i], util_wall_us() / 1000), CLUSTER_ALIVE);
        if (!strcmp(v[i].name, "node-1")) {
            assert_int_equal(json_array_size(v[i].tasks), 2);
            assert_int_equal(v[i].running, 2);
        }
    }
    cluster_nodes_free(v, n);
    store_free(s);
    util_rm_rf(root);
}

/* Issue 29, finding 4: heartbeats from a hostile store writer. One that
 * speaks for another node, one too big, one with a forged task list, and
 * one whose numbers overflow: each is ignored or bounded. (b) of the issue:
 * a 64 MiB heartbeat of 2 million ids, or /dev/zero, took 357 MiB and
 * stalled the node. */
static void put_text(struct store *s, const char *name, const char *text)
{
    assert_int_equal(store_put_buf(s, name, text, strlen(text)), 0);
}

static void test_beats_hostile(void **state)
{
    (void)state;
    char root[] = "/tmp/vmckpt-test-cluster.XXXXXX", uri[128], path[256];
    struct store *s = NULL;
    struct cluster_node *v = NULL;
    size_t n = 0;
    assert_non_null(mkdtemp(root));
    snprintf(uri, sizeof(uri), "file://%s", root);
    assert_int_equal(store_open(uri, &s), 0);
    /* speaks for node-1 from another object */
    put_text(s, "cluster/nodes/evil", "{\"node\": \"node-1\", \"renewed_ms\": 1, \"lease_ms\": 3000, "
                                      "\"renew_ms\": 500, \"tasks\": [\"t1\"]}");
    /* overflowing numbers, and a task list of ids good and bad */
    size_t cap = 5100 * 16 + 256, len = 0;
    char *big = malloc(cap);
    assert_non_null(big);
    len += (size_t)snprintf(big + len, cap - len, "{\"node\": \"odd\", \"renewed_ms\": "
                            "-9223372036854775808, \"lease_ms\": 9223372036854775807, "
                            "\"renew_ms\": -5, \"running\": 99999999999, \"tasks\": [\"../x\", 5, \"\"");
    for (int i = 0; i < 5000; i++)
        len += (size_t)snprintf(big + len, cap - len, ", \"t%d\"", i);
    snprintf(big + len, cap - len, "]}");
    put_text(s, "cluster/nodes/odd", big);
    free(big);
    /* too big to be a heartbeat: 600 KiB */
    char *huge = malloc(600 << 10);
    assert_non_null(huge);
    memset(huge, ' ', 600 << 10);
    memcpy(huge, "{\"node\": \"huge\"}", 16);
    assert_int_equal(store_put_buf(s, "cluster/nodes/huge", huge, 600 << 10), 0);
    free(huge);
    /* /dev/zero in a heartbeat's place */
    snprintf(path, sizeof(path), "%s/cluster/nodes/zero", root);
    assert_int_equal(symlink("/dev/zero", path), 0);
    json_t *none = json_array();
    assert_int_equal(cluster_beat(s, "good", 3000, 500, none, 0), 0);
    json_decref(none);

    assert_int_equal(cluster_nodes(s, &v, &n), 0);
    assert_int_equal(n, 2); /* good and odd */
    for (size_t i = 0; i < n; i++) {
        if (strcmp(v[i].name, "odd") != 0) {
            assert_string_equal(v[i].name, "good");
            continue;
        }
        assert_int_equal(json_array_size(v[i].tasks), 4096); /* valid ids only, at most 4096 */
        assert_string_equal(json_string_value(json_array_get(v[i].tasks, 0)), "t0");
        assert_true(v[i].renewed_ms >= 0);
        assert_true(v[i].lease_ms > 0 && v[i].renew_ms > 0);
        assert_int_equal(cluster_state_of(&v[i], util_wall_us() / 1000), CLUSTER_DEAD);
    }
    cluster_nodes_free(v, n);
    store_free(s);
    util_rm_rf(root);
}

/* Move records from a hostile store: only a record whose task is a valid id,
 * whose object name is its own and that is addressed to this node is taken. */
static void test_moves_hostile(void **state)
{
    (void)state;
    char root[] = "/tmp/vmckpt-test-cluster.XXXXXX", uri[128];
    struct store *s = NULL;
    json_t *moves = NULL;
    assert_non_null(mkdtemp(root));
    snprintf(uri, sizeof(uri), "file://%s", root);
    assert_int_equal(store_open(uri, &s), 0);
    assert_int_equal(cluster_move_put(s, "m1", "node-a", "node-b", 3), 0);
    assert_int_equal(cluster_move_put(s, "m2", "node-a", "node-c", 3), 0); /* not ours */
    const char *bad[][2] = {
        {"cluster/moves/m3", "{\"task\": \"../../etc\", \"from\": \"a\", \"to\": \"node-b\"}"},
        {"cluster/moves/m4", "{\"task\": \"m1\", \"from\": \"a\", \"to\": \"node-b\"}"},
        {"cluster/moves/m5", "not json"},
        {"cluster/moves/m6", "{\"task\": 5, \"to\": \"node-b\"}"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
        assert_int_equal(store_put_buf(s, bad[i][0], bad[i][1], strlen(bad[i][1])), 0);
    assert_int_equal(cluster_moves_to(s, "node-b", &moves), 0);
    assert_int_equal(json_array_size(moves), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(moves, 0), "task")),
                        "m1");
    json_decref(moves);
    assert_int_equal(cluster_move_pending(s, "m1"), 1);
    assert_int_equal(cluster_move_done(s, "m1"), 0);
    assert_int_equal(cluster_move_pending(s, "m1"), 0);
    assert_int_equal(cluster_move_done(s, "m1"), 0); /* gone already: fine */
    store_free(s);
    util_rm_rf(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_states),
        cmocka_unit_test(test_assign_spreads_and_prefers_room),
        cmocka_unit_test(test_assign_views_agree),
        cmocka_unit_test(test_beat_roundtrip),
        cmocka_unit_test(test_beats_hostile),
        cmocka_unit_test(test_moves_hostile),
    };
    return cmocka_run_group_tests_name("cluster", tests, NULL, NULL);
}
