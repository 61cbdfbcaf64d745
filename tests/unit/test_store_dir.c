/* The directory store against a hostile writer of the store (issue 29,
 * finding 1): symlinks on an object's path, special files as objects or
 * lease generations. The agent runs as root, so each must be an error, and
 * no file outside the store may be written, read, or removed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "beneath.h"
#include "err.h"
#include "store.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef VMCKPT_TEST_HOOKS /* a build without test hooks: only the openat2 half */
static void beneath_test_walk_only(int on)
{
    if (on)
        skip();
}
#endif

static char top[128], root[160], outside[160];
static struct store *s;

static void at(char *buf, size_t n, const char *base, const char *rel)
{
    snprintf(buf, n, "%s/%s", base, rel);
}

static int setup(void **state)
{
    char uri[200], p[256];
    (void)state;
    snprintf(top, sizeof(top), "/tmp/vmckpt-test-store-dir.XXXXXX");
    assert_non_null(mkdtemp(top));
    at(root, sizeof(root), top, "store");
    at(outside, sizeof(outside), top, "outside");
    assert_int_equal(mkdir(outside, 0700), 0);
    snprintf(uri, sizeof(uri), "file://%s", root);
    if (store_open(uri, &s) != 0)
        fail_msg("cannot open %s: %s", uri, err_msg());
    at(p, sizeof(p), outside, "host-file");
    assert_int_equal(util_write_file_atomic(p, "host data\n", 10), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    store_free(s);
    util_rm_rf(top);
    beneath_test_walk_only(0);
    return 0;
}

static int outside_count(void)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "exit $(ls -A '%s' | wc -l)", outside);
    return WEXITSTATUS(system(cmd));
}

static void link_in_store(const char *target, const char *rel)
{
    char p[256], dir[256];
    at(p, sizeof(p), root, rel);
    snprintf(dir, sizeof(dir), "%s", p);
    *strrchr(dir, '/') = '\0';
    assert_int_equal(util_mkdir_p(dir, 0700), 0);
    assert_int_equal(symlink(target, p), 0);
}

/* (a) of the issue: every pack prefix directory a symlink to outside; a
 * put writes nothing there and fails. */
static void symlinked_parent_cases(void)
{
    char buf[32];
    size_t got = 0;
    link_in_store(outside, "packs/ab");
    assert_int_equal(store_put_buf(s, "packs/ab/0123", "guest bytes", 11), VK_ECORRUPT);
    assert_non_null(strstr(err_msg(), "symlink"));
    assert_int_equal(store_put_new(s, "packs/ab/4567", "guest bytes", 11), VK_ECORRUPT);
    assert_int_equal(outside_count(), 1); /* only host-file */
    /* reading, stat, remove and void through it reach nothing outside */
    assert_true(store_read(s, "packs/ab/host-file", 0, buf, sizeof(buf), &got) < 0);
    assert_int_equal(got, 0);
    assert_true(store_stat(s, "packs/ab/host-file", NULL) < 0);
    assert_true(store_remove(s, "packs/ab/host-file") < 0);
    assert_true(store_void(s, "packs/ab/void") < 0);
    assert_int_equal(outside_count(), 1);
    /* a listing does not go through it */
    assert_true(store_taken(s, "packs/ab/host-file") <= 0);
}

static int count_fn(void *arg, const char *name, uint64_t size, int64_t mtime)
{
    (void)name, (void)size, (void)mtime;
    ++*(int *)arg;
    return 0;
}

static void test_symlinked_parent(void **state)
{
    (void)state;
    symlinked_parent_cases();
    int n = 0;
    assert_int_equal(store_list(s, "packs/", count_fn, &n), 0);
    assert_int_equal(n, 0);
}

static void test_symlinked_parent_walk(void **state)
{
    (void)state;
    beneath_test_walk_only(1);
    symlinked_parent_cases();
}

/* An object that is a symlink to a host file, a FIFO, or a device. */
static void test_special_objects(void **state)
{
    char p[256], host[256], buf[64];
    size_t got = 0;
    char *text = NULL;
    (void)state;
    at(host, sizeof(host), outside, "host-file");
    link_in_store(host, "tasks/x/manifests/1.json");
    assert_int_equal(store_get_buf(s, "tasks/x/manifests/1.json", &text, NULL) < 0, 1);
    assert_null(text);
    assert_int_equal(store_read(s, "tasks/x/manifests/1.json", 0, buf, sizeof(buf), &got),
                     VK_ECORRUPT);
    link_in_store("/dev/zero", "cluster/nodes/evil");
    assert_true(store_read(s, "cluster/nodes/evil", 0, buf, sizeof(buf), &got) < 0);
    assert_int_equal(got, 0);
    /* a FIFO: refused at once, not waited on */
    at(p, sizeof(p), root, "cluster/nodes/fifo");
    assert_int_equal(mkfifo(p, 0600), 0);
    assert_int_equal(store_read(s, "cluster/nodes/fifo", 0, buf, sizeof(buf), &got), VK_ECORRUPT);
    assert_true(store_stat(s, "cluster/nodes/fifo", NULL) < 0);
    /* the commit replaces the symlink itself, never the file it names */
    assert_int_equal(store_put_buf(s, "tasks/x/manifests/1.json", "{}", 2), 0);
    assert_int_equal(util_read_file(host, &text, NULL), 0);
    assert_string_equal(text, "host data\n");
    free(text);
}

/* Leases: the lease directory a symlink, a generation a FIFO, /dev/zero or
 * a symlink to a host file. */
static void test_hostile_leases(void **state)
{
    char p[256], host[256], *text = NULL;
    (void)state;
    link_in_store(outside, "tasks/a/lease.lease");
    assert_true(store_lease(s, "tasks/a/lease", "node-1", 3000) < 0);
    assert_int_equal(outside_count(), 1);
    /* a generation that is a FIFO: an error, at once */
    at(p, sizeof(p), root, "tasks/b/lease.lease");
    assert_int_equal(util_mkdir_p(p, 0700), 0);
    at(p, sizeof(p), root, "tasks/b/lease.lease/00000000000000000001");
    assert_int_equal(mkfifo(p, 0600), 0);
    assert_int_equal(store_lease(s, "tasks/b/lease", "node-1", 3000), VK_ECORRUPT);
    /* /dev/zero: refused, not read without end */
    link_in_store("/dev/zero", "tasks/c/lease.lease/00000000000000000001");
    assert_int_equal(store_lease(s, "tasks/c/lease", "node-1", 3000), VK_ECORRUPT);
    /* a host file as the newest generation: not read, not rewritten */
    at(host, sizeof(host), outside, "host-file");
    link_in_store(host, "tasks/d/lease.lease/00000000000000000001");
    assert_int_equal(store_lease(s, "tasks/d/lease", "node-1", 3000), VK_ECORRUPT);
    assert_int_equal(util_read_file(host, &text, NULL), 0);
    assert_string_equal(text, "host data\n");
    free(text);
    /* a generation too big to be one */
    at(p, sizeof(p), root, "tasks/e/lease.lease");
    assert_int_equal(util_mkdir_p(p, 0700), 0);
    at(p, sizeof(p), root, "tasks/e/lease.lease/00000000000000000001");
    int fd = open(p, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 1 << 30), 0);
    close(fd);
    assert_int_equal(store_lease(s, "tasks/e/lease", "node-1", 3000), VK_ECORRUPT);
    /* and a sound one still works */
    assert_int_equal(store_lease(s, "tasks/f/lease", "node-1", 3000), 0);
    assert_int_equal(store_unlease(s, "tasks/f/lease", "node-1"), 0);
}

/* The store's own .tmp replaced by a symlink after it was opened: the
 * store keeps writing into the directory it opened. */
static void test_tmp_swapped(void **state)
{
    char p[256], q[256];
    (void)state;
    at(p, sizeof(p), root, ".tmp");
    at(q, sizeof(q), root, ".tmp-old");
    assert_int_equal(rename(p, q), 0);
    assert_int_equal(symlink(outside, p), 0);
    assert_int_equal(store_put_buf(s, "tasks/y/obj", "data", 4), 0);
    assert_int_equal(outside_count(), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_symlinked_parent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_symlinked_parent_walk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_special_objects, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_leases, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tmp_swapped, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
