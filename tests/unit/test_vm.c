/* vm: whether a QEMU still runs, for a child and for a process adopted from
 * an earlier agent (not our child), which may linger unreaped as a zombie. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "vm.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void test_child(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) { /* lives until the pipe closes */
        char c;
        close(p[1]);
        (void)!read(p[0], &c, 1);
        _exit(0);
    }
    close(p[0]);
    assert_int_equal(vm_alive(pid), 1);
    close(p[1]);
    for (int i = 0; i < 500 && vm_alive(pid); i++) /* reaped by vm_alive once it ends */
        usleep(10000);
    assert_int_equal(vm_alive(pid), 0);
    assert_int_equal(waitpid(pid, NULL, WNOHANG), -1); /* already reaped */
}

/* A grandchild that ended while its parent (not us) has not reaped it: a
 * zombie is not a running VM. */
static void test_zombie_not_ours(void **state)
{
    (void)state;
    int p[2], q[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(pipe(q), 0);
    pid_t mid = fork();
    assert_true(mid >= 0);
    if (mid == 0) {
        pid_t g = fork();
        if (g == 0)
            _exit(0); /* ends at once; its parent never reaps it */
        (void)!write(q[1], &g, sizeof(g));
        close(p[1]);
        char c;
        (void)!read(p[0], &c, 1); /* until the test is done */
        _exit(0);
    }
    pid_t g = 0;
    assert_int_equal(read(q[0], &g, sizeof(g)), (ssize_t)sizeof(g));
    for (int i = 0; i < 500 && vm_alive(g); i++)
        usleep(10000);
    assert_int_equal(kill(g, 0), 0); /* it still exists, as a zombie */
    assert_int_equal(vm_alive(g), 0);
    close(p[1]);
    waitpid(mid, NULL, 0);
    close(p[0]);
    close(q[0]);
    close(q[1]);
}

/* Until process pid has exec'd sh (its arguments are the ones given). */
static void wait_exec(pid_t pid)
{
    for (int i = 0; i < 500; i++) {
        char path[64], buf[256] = {0};
        snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
        FILE *f = fopen(path, "r");
        size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
        if (f)
            fclose(f);
        if (n > 3 && !strcmp(buf, "sh"))
            return;
        usleep(10000);
    }
}

/* A shell that loops until killed, with arg among its arguments; returns
 * once it has exec'd. */
static pid_t spawn_sh(const char *arg)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", "while :; do sleep 1; done", arg, (char *)NULL);
        _exit(127);
    }
    wait_exec(pid);
    return pid;
}

/* A process noted nowhere (its agent died before writing its pid) is found
 * by the run directory in its arguments; one without it is left alone. */
static void test_kill_using(void **state)
{
    (void)state;
    char dir[64], arg[96];
    snprintf(dir, sizeof(dir), "/nonexistent/vkt-%d/tasks/t3/run-", (int)getpid());
    snprintf(arg, sizeof(arg), "file=%s1/top-2.qcow2", dir);
    char near[96]; /* t30, not t3: its path differs after the id */
    snprintf(near, sizeof(near), "/nonexistent/vkt-%d/tasks/t30/run-1", (int)getpid());
    char longer[128]; /* another state directory that ends with this one's path */
    snprintf(longer, sizeof(longer), "file=/srv%s1/top-2.qcow2", dir);
    pid_t ours = spawn_sh(arg), other = spawn_sh(near), third = spawn_sh(longer);
    int err = 1;
    assert_int_equal(vm_kill_using(dir, 5000, &err), 1);
    assert_int_equal(err, 0);
    assert_int_equal(vm_alive(ours), 0);
    assert_int_equal(vm_alive(other), 1);
    assert_int_equal(vm_alive(third), 1);
    kill(third, SIGKILL);
    waitpid(third, NULL, 0);
    assert_int_equal(vm_kill_using("", 1000, NULL), 0); /* an empty pattern matches nothing */
    kill(other, SIGKILL);
    waitpid(other, NULL, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_child),
        cmocka_unit_test(test_zombie_not_ours),
        cmocka_unit_test(test_kill_using),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
