/* beneath: names resolve beneath their root, through no symlink, with
 * openat2 and with the walk used where the kernel has no openat2. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "beneath.h"
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
static int rootfd = -1;

static int setup(void **state)
{
    (void)state;
    snprintf(top, sizeof(top), "/tmp/vmckpt-test-beneath.XXXXXX");
    assert_non_null(mkdtemp(top));
    snprintf(root, sizeof(root), "%s/root", top);
    snprintf(outside, sizeof(outside), "%s/outside", top);
    assert_int_equal(mkdir(root, 0700), 0);
    assert_int_equal(mkdir(outside, 0700), 0);
    rootfd = beneath_root(root);
    assert_true(rootfd >= 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    close(rootfd);
    util_rm_rf(top);
    beneath_test_walk_only(0);
    return 0;
}

static void at(char *buf, size_t n, const char *base, const char *rel)
{
    snprintf(buf, n, "%s/%s", base, rel);
}

static int entries(const char *dir)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "test -z \"$(ls -A '%s')\"", dir);
    return system(cmd) == 0 ? 0 : 1;
}

static void test_names(void **state)
{
    (void)state;
    assert_true(beneath_name_ok("a"));
    assert_true(beneath_name_ok("packs/ab/cdef"));
    assert_true(beneath_name_ok(".tmp/1.2"));
    assert_true(beneath_name_ok("a..b/c.d"));
    assert_false(beneath_name_ok(""));
    assert_false(beneath_name_ok(NULL));
    assert_false(beneath_name_ok("/etc/passwd"));
    assert_false(beneath_name_ok("a//b"));
    assert_false(beneath_name_ok("a/"));
    assert_false(beneath_name_ok("."));
    assert_false(beneath_name_ok("a/./b"));
    assert_false(beneath_name_ok(".."));
    assert_false(beneath_name_ok("a/../../etc/passwd"));
    char *long_name = malloc(5000);
    assert_non_null(long_name);
    memset(long_name, 'a', 4999);
    long_name[4999] = '\0';
    assert_false(beneath_name_ok(long_name));
    free(long_name);
    errno = 0;
    assert_int_equal(beneath_open(rootfd, "../outside", O_RDONLY, 0), -1);
    assert_int_equal(errno, EINVAL);
}

/* The same cases in both modes. */
static void cases(void)
{
    char p[256];
    const char *leaf;
    int fd;

    /* a plain tree: made by beneath_parent, opened by beneath_open */
    fd = beneath_parent(rootfd, "a/b/c/file", 1, &leaf);
    assert_true(fd >= 0);
    assert_string_equal(leaf, "file");
    int f = openat(fd, leaf, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(f >= 0);
    assert_int_equal(write(f, "x", 1), 1);
    close(f);
    close(fd);
    fd = beneath_open(rootfd, "a/b/c/file", O_RDONLY, 0);
    assert_true(fd >= 0);
    close(fd);
    /* one component: the root itself */
    fd = beneath_parent(rootfd, "top", 0, &leaf);
    assert_true(fd >= 0);
    assert_string_equal(leaf, "top");
    close(fd);

    /* a directory on the way is a symlink to outside */
    at(p, sizeof(p), root, "link");
    assert_int_equal(symlink(outside, p), 0);
    errno = 0;
    assert_int_equal(beneath_parent(rootfd, "link/x/file", 1, &leaf), -1);
    assert_true(errno == ELOOP || errno == ENOTDIR || errno == EXDEV);
    assert_int_equal(entries(outside), 0); /* nothing made there */
    assert_int_equal(beneath_open(rootfd, "link/file", O_WRONLY | O_CREAT, 0600), -1);
    assert_int_equal(entries(outside), 0);
    /* an absolute symlink deeper down */
    at(p, sizeof(p), root, "a/b/up");
    assert_int_equal(symlink("/etc", p), 0);
    assert_int_equal(beneath_open(rootfd, "a/b/up/passwd", O_RDONLY, 0), -1);
    /* the last component a symlink: not followed */
    at(p, sizeof(p), root, "a/b/c/passwd");
    assert_int_equal(symlink("/etc/passwd", p), 0);
    errno = 0;
    assert_int_equal(beneath_open(rootfd, "a/b/c/passwd", O_RDONLY, 0), -1);
    assert_int_equal(errno, ELOOP);
    /* a symlink within the root is refused as well: no symlink at all */
    at(p, sizeof(p), root, "a/same");
    assert_int_equal(symlink("b", p), 0);
    assert_int_equal(beneath_open(rootfd, "a/same/c/file", O_RDONLY, 0), -1);
    /* a file where a directory should be */
    errno = 0;
    assert_int_equal(beneath_parent(rootfd, "a/b/c/file/x", 1, &leaf), -1);
    assert_int_equal(errno, ENOTDIR);
}

static void test_openat2(void **state)
{
    (void)state;
    beneath_test_walk_only(0);
    cases();
}

static void test_walk(void **state)
{
    (void)state;
    beneath_test_walk_only(1);
    cases();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_openat2, setup, teardown),
        cmocka_unit_test_setup_teardown(test_walk, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
