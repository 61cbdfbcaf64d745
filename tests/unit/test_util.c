/* util's file helpers against what may sit at a name instead of a file
 * (issue 29, finding 1: the agent's own state directory follows the same
 * rules as a store). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "err.h"
#include "util.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[128];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/vmckpt-test-util.XXXXXX");
    assert_non_null(mkdtemp(dir));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    util_rm_rf(dir);
    return 0;
}

static void test_read_file_refuses(void **state)
{
    char p[256], *text = (char *)1;
    size_t len = 0;
    (void)state;
    /* a FIFO: refused at once (before, fopen waited for a writer forever) */
    snprintf(p, sizeof(p), "%s/fifo", dir);
    assert_int_equal(mkfifo(p, 0600), 0);
    assert_int_equal(util_read_file(p, &text, &len), VK_EINVAL);
    assert_null(text);
    /* a device without end */
    assert_int_equal(util_read_file("/dev/zero", &text, &len), VK_EINVAL);
    /* a file larger than the cap (sparse: no disk used) */
    snprintf(p, sizeof(p), "%s/huge", dir);
    int fd = open(p, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)UTIL_READ_MAX + (1 << 20)), 0);
    close(fd);
    assert_int_equal(util_read_file(p, &text, &len), VK_EINVAL);
    assert_non_null(strstr(err_msg(), "larger than"));
    /* and what it is for: a file, and /proc's files (size 0 in stat) */
    snprintf(p, sizeof(p), "%s/ok", dir);
    assert_int_equal(util_write_file_atomic(p, "hello\n", 6), 0);
    assert_int_equal(util_read_file(p, &text, &len), 0);
    assert_int_equal(len, 6);
    assert_string_equal(text, "hello\n");
    free(text);
    assert_int_equal(util_read_file("/proc/self/stat", &text, &len), 0);
    assert_true(len > 10);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_read_file_refuses, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
