/* The console logs of a task's runs, kept past the run: the tail of each,
 * the newest few runs, only under a valid task id, expired once the task is
 * gone from the node. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "err.h"
#include "runlog.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/tmp/vkt-runlog-XXXXXX";

static char *serial(const char *text)
{
    char *p = util_fmt("%s/serial.log", dir);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return p;
}

static void test_keeps_the_tail_of_the_newest_runs(void **state)
{
    (void)state;
    char *logs = util_fmt("%s/logs", dir), *text = NULL;
    size_t len = 0, n = 0;
    struct runlog_entry *v = NULL;
    for (int run = 1; run <= 5; run++) {
        char line[64];
        snprintf(line, sizeof(line), "boot\ncounter %d\n", run);
        char *s = serial(line);
        assert_int_equal(runlog_keep(logs, "t1", run, s, 10, 3), 0);
        free(s);
    }
    assert_int_equal(runlog_list(logs, "t1", &v, &n), 0);
    assert_int_equal(n, 3); /* runs 3, 4, 5, oldest first */
    assert_int_equal(v[0].run, 3);
    assert_int_equal(v[2].run, 5);
    assert_int_equal(v[2].bytes, 10);
    free(v);
    assert_int_equal(runlog_read(logs, "t1", 4, 1 << 20, &text, &len), 0);
    assert_string_equal(text, "counter 4\n"); /* its last 10 bytes */
    free(text);
    assert_int_equal(runlog_read(logs, "t1", 1, 1 << 20, &text, &len), VK_ENOTFOUND);
    assert_non_null(strstr(err_msg(), "no console log of run 1 of task t1"));
    /* a run that never started has no log: nothing kept, no error */
    char *none = util_fmt("%s/none.log", dir);
    assert_int_equal(runlog_keep(logs, "t1", 6, none, 10, 3), 0);
    free(none);
    free(logs);
}

static void test_task_ids_are_checked(void **state)
{
    (void)state;
    char *logs = util_fmt("%s/logs", dir), *s = serial("x\n"), *text = NULL;
    size_t len = 0, n = 0;
    struct runlog_entry *v = NULL;
    assert_int_equal(runlog_keep(logs, "../escape", 1, s, 10, 3), VK_EINVAL);
    assert_int_equal(runlog_list(logs, "a/b", &v, &n), VK_EINVAL);
    assert_int_equal(runlog_read(logs, "..", 1, 10, &text, &len), VK_EINVAL);
    assert_int_equal(runlog_remove(logs, ".x"), VK_EINVAL);
    assert_int_equal(runlog_read(logs, "t2", 0, 10, &text, &len), VK_EINVAL);
    free(s);
    free(logs);
}

static int has_t1(void *arg, const char *id)
{
    (void)arg;
    return !strcmp(id, "t1");
}

static void test_expire(void **state)
{
    (void)state;
    char *logs = util_fmt("%s/logs", dir), *s = serial("gone\n");
    assert_int_equal(runlog_keep(logs, "t9", 1, s, 100, 3), 0);
    assert_int_equal(runlog_expire(logs, 3600, has_t1, NULL), 0); /* too young */
    assert_int_equal(runlog_expire(logs, 0, has_t1, NULL), 1); /* t1 stays: it is here */
    size_t n = 0;
    struct runlog_entry *v = NULL;
    assert_int_equal(runlog_list(logs, "t9", &v, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(runlog_list(logs, "t1", &v, &n), 0);
    assert_int_equal(n, 3);
    free(v);
    free(s);
    free(logs);
}

static int setup(void **state)
{
    (void)state;
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    return util_rm_rf(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keeps_the_tail_of_the_newest_runs),
        cmocka_unit_test(test_task_ids_are_checked),
        cmocka_unit_test(test_expire),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
