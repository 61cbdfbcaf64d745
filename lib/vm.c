#include "vm.h"

#include "err.h"
#include "testhook.h"
#include "util.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define VM_MAX_ARGS 64

/* QEMU option values escape ',' by doubling it. */
static char *vm_opt_escape(const char *s)
{
    char *out = malloc(strlen(s) * 2 + 1), *p = out;
    if (!out)
        return NULL;
    for (; *s; s++) {
        *p++ = *s;
        if (*s == ',')
            *p++ = ',';
    }
    *p = '\0';
    return out;
}

static void vm_child(const struct vm_spec *s, char **argv, int errfd)
{
    int logfd = open(s->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    int nullfd = open("/dev/null", O_RDONLY);
    if (logfd >= 0) {
        dup2(logfd, 1);
        dup2(logfd, 2);
    }
    if (nullfd >= 0)
        dup2(nullfd, 0);
    setsid(); /* outlive the agent and its terminal */
    execvp(argv[0], argv);
    int e = errno;
    (void)!write(errfd, &e, sizeof(e));
    _exit(127);
}

int vm_accel_check(const char *accel, const char *what)
{
    if (accel && (!strcmp(accel, "kvm") || !strcmp(accel, "tcg")))
        return 0;
    return err_set(VK_EINVAL, "%s must be kvm or tcg, not '%s'", what, accel ? accel : "");
}

int vm_start(const struct vm_spec *s, pid_t *out_pid)
{
    char *argv[VM_MAX_ARGS], *own[16];
    int n = 0, nown = 0, pipefd[2], rc = 0, e = 0;
    char mem[32], smp[32];
    pid_t pid;

    if ((rc = vm_accel_check(s->accel, "the accelerator")) < 0)
        return rc;
    snprintf(mem, sizeof(mem), "%d", s->memory_mib);
    snprintf(smp, sizeof(smp), "%d", s->vcpus);
    char *disk = vm_opt_escape(s->disk), *ser = vm_opt_escape(s->serial_path);
    char *qmp = vm_opt_escape(s->qmp_path);
    own[nown++] = disk;
    own[nown++] = ser;
    own[nown++] = qmp;
    own[nown++] = util_fmt("file=%s,if=virtio,id=drive0,format=qcow2", disk ? disk : "");
    /* append: the agent notes where the run came from before QEMU starts */
    own[nown++] = util_fmt("file,id=ser0,path=%s,append=on", ser ? ser : "");
    own[nown++] = util_fmt("unix:%s,server=on,wait=off", qmp ? qmp : "");
    for (int i = 0; i < nown; i++)
        if (!own[i]) {
            rc = err_set(VK_ENOMEM, "out of memory");
            goto out;
        }
    const char *fixed[] = {s->qemu, "-accel", s->accel, "-machine", s->machine, "-m", mem,
                           "-smp", smp, "-nodefaults", "-no-user-config", "-display", "none",
                           "-kernel", s->kernel, "-initrd", s->initrd, "-append", s->append,
                           "-drive", own[3], "-chardev", own[4], "-serial", "chardev:ser0",
                           "-qmp", own[5], "-S"};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        argv[n++] = (char *)fixed[i];
    if (s->incoming) {
        argv[n++] = "-incoming";
        argv[n++] = (char *)s->incoming;
    }
    if (s->prealloc)
        argv[n++] = "-mem-prealloc";
    argv[n] = NULL;

    if (pipe2(pipefd, O_CLOEXEC) < 0) {
        rc = err_errno(errno, "cannot start %s", s->qemu);
        goto out;
    }
    pid = fork();
    if (pid < 0) {
        rc = err_errno(errno, "cannot start %s", s->qemu);
        close(pipefd[0]);
        close(pipefd[1]);
        goto out;
    }
    if (pid == 0)
        vm_child(s, argv, pipefd[1]);
    close(pipefd[1]);
    if (read(pipefd[0], &e, sizeof(e)) == sizeof(e)) { /* exec failed */
        waitpid(pid, NULL, 0);
        rc = err_set(e == ENOENT ? VK_ENOTFOUND : VK_EQEMU, "cannot run QEMU '%s': %s%s",
                     s->qemu, strerror(e),
                     e == ENOENT ? " (install qemu-system-x86 or set qemu.binary)" : "");
    } else {
        *out_pid = pid;
    }
    close(pipefd[0]);
out:
    for (int i = 0; i < nown; i++)
        free(own[i]);
    return rc;
}

#define VM_MERGE_JOB "vmckpt-merge"

/* Whether QEMU still lists the merge job; VK_* when it cannot be asked. */
static int vm_job_running(struct qmp *q)
{
    json_t *jobs = NULL, *j;
    size_t i;
    int rc = qmp_exec(q, "query-block-jobs", NULL, &jobs, 30000), found = 0;
    if (rc < 0)
        return rc;
    json_array_foreach(jobs, i, j)
    {
        const char *id = json_string_value(json_object_get(j, "device"));
        found |= id && !strcmp(id, VM_MERGE_JOB);
    }
    json_decref(jobs);
    return found;
}

/* Waits while the merge job runs, cancelling it past timeout_ms (then
 * *cancelled); 0 once QEMU no longer lists it. */
static int vm_job_wait(struct qmp *q, int timeout_ms, int *cancelled)
{
    int64_t deadline = util_now_us() + (int64_t)timeout_ms * 1000;
    int rc;
    *cancelled = 0;
    while ((rc = vm_job_running(q)) == 1) {
        if (!*cancelled && util_now_us() > deadline) {
            qmp_exec(q, "block-job-cancel", json_pack("{s:s}", "device", VM_MERGE_JOB), NULL,
                     30000);
            *cancelled = 1;
        }
        usleep(20000);
    }
    return rc;
}

int vm_merge_settle(struct qmp *q, int timeout_ms)
{
    int cancelled;
    int rc = vm_job_wait(q, timeout_ms, &cancelled);
    qmp_drop_events(q);
    return rc < 0 ? err_wrap(rc, "waiting for a merge of layers left running") : 0;
}

int vm_merge_layers(struct qmp *q, const char *task, const char *top, const char *base,
                    int timeout_ms)
{
    json_t *ev = NULL;
    int rc, cancelled = 0;

    qmp_drop_events(q);
    rc = qmp_exec(q, "block-commit",
                  json_pack("{s:s, s:s, s:s, s:s}", "job-id", VM_MERGE_JOB, "device", "drive0",
                            "top", top, "base", base), NULL, 30000);
    if (rc < 0)
        return err_wrap(rc, "merging %s down to %s", top, base);
    testhook_gate("VMCKPT_TEST_MERGE_GATE", task); /* tests: a merge certainly under way */
    rc = vm_job_wait(q, timeout_ms, &cancelled);
    if (rc < 0)
        return err_wrap(rc, "merging %s down to %s", top, base);
    /* Events come before the reply that no longer lists the job. */
    rc = qmp_wait_event(q, "BLOCK_JOB_COMPLETED", 0, &ev);
    const char *why = json_string_value(json_object_get(json_object_get(ev, "data"), "error"));
    if (rc == 0 && why)
        rc = err_set(VK_EQEMU, "merging %s down to %s: %s", top, base, why);
    else if (rc < 0)
        rc = cancelled ? err_set(VK_ETIMEOUT, "merging %s down to %s: not done in %d ms, "
                                              "cancelled", top, base, timeout_ms)
                       : err_set(VK_EQEMU, "merging %s down to %s: the job ended without "
                                           "completing", top, base);
    json_decref(ev);
    qmp_drop_events(q);
    return rc;
}

/* Whether pid has ended but is not reaped yet: a VM no more. (The parent of
 * an adopted QEMU is whatever init adopted it, which may reap it late.) */
static int vm_zombie(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may hold ')' */
    return p && p[1] == ' ' && p[2] == 'Z';
}

int vm_alive(pid_t pid)
{
    int status;
    pid_t r;
    if (pid <= 0)
        return 0;
    r = waitpid(pid, &status, WNOHANG);
    if (r == pid)
        return 0; /* our child, now reaped */
    if (r < 0 && errno == ECHILD) /* not our child: an adopted QEMU */
        return (kill(pid, 0) == 0 || errno == EPERM) && !vm_zombie(pid);
    return 1;
}

int vm_connect(pid_t pid, const char *qmp_path, const char *log_path, int timeout_ms,
               struct qmp **out)
{
    int64_t deadline = util_now_us() + (int64_t)timeout_ms * 1000;
    int rc;

    *out = NULL;
    for (;;) {
        if (!vm_alive(pid)) {
            char *tail = util_file_tail(log_path, 600);
            rc = err_set(VK_EQEMU, "QEMU exited while starting: %s",
                         tail && tail[0] ? tail : "no output");
            free(tail);
            return rc;
        }
        rc = qmp_connect(out, qmp_path, 200);
        if (rc == 0 || rc != VK_ETIMEOUT || util_now_us() > deadline)
            return rc;
    }
}

int vm_kill(pid_t pid, int sig, int timeout_ms)
{
    int64_t deadline = util_now_us() + (int64_t)timeout_ms * 1000;
    if (pid <= 0)
        return 0;
    if (kill(pid, sig) < 0 && errno != ESRCH)
        return err_errno(errno, "cannot signal QEMU pid %d", (int)pid);
    if (sig != SIGKILL && sig != SIGTERM)
        return 0;
    while (vm_alive(pid)) {
        if (util_now_us() > deadline)
            return err_set(VK_ETIMEOUT, "QEMU pid %d did not exit after signal %d", (int)pid,
                           sig);
        usleep(10000);
    }
    return 0;
}

/* Whether one of the NUL-separated arguments in buf[0..len) names a path in
 * dir: dir at the argument's start or after a QEMU option's '=' or ','
 * (so "/srv/var/lib/..." is not taken for "/var/lib/..."). */
static int vm_args_contain(const char *buf, size_t len, const char *dir)
{
    for (size_t i = 0; i < len; i += strlen(buf + i) + 1)
        for (const char *p = buf + i; (p = strstr(p, dir)); p++)
            if (p == buf + i || p[-1] == '=' || p[-1] == ',')
                return 1;
    return 0;
}

/* Whether process pid runs as this effective user with an argument that
 * contains dir. */
static int vm_uses(pid_t pid, const char *dir)
{
    char path[64];
    struct stat st;
    snprintf(path, sizeof(path), "/proc/%d", (int)pid);
    /* /proc/PID is owned by the process's effective user: another user's
     * process with the same words in its arguments is never ours to kill */
    if (stat(path, &st) < 0 || st.st_uid != geteuid() || pid == getpid())
        return 0;
    /* whole: a long kernel command line must not hide -qmp from the sweep */
    size_t n = 0;
    char *buf = util_proc_cmdline(pid, &n);
    int uses = buf && vm_args_contain(buf, n, dir);
    free(buf);
    return uses;
}

int vm_kill_using(const char *dir, int timeout_ms, int *out_err)
{
    if (out_err)
        *out_err = 0;
    if (!dir[0])
        return 0;
    DIR *d = opendir("/proc");
    struct dirent *e;
    int killed = 0;
    if (out_err)
        *out_err = d == NULL;
    if (!d)
        return 0;
    while ((e = readdir(d))) {
        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        long pid = strtol(e->d_name, NULL, 10);
        if (pid > 1 && pid < INT32_MAX && vm_uses((pid_t)pid, dir)) {
            vm_kill((pid_t)pid, SIGKILL, timeout_ms);
            killed++;
        }
    }
    closedir(d);
    return killed;
}
