/* runlog: each run's console log, kept past its run and its task (runlog.h). */
#include "runlog.h"

#include "err.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define RUNLOG_MAX_RUNS 4096 /* a listing reads no more than this */

static int runlog_dir(const char *logs_dir, const char *task, char **out)
{
    *out = NULL;
    if (!util_valid_id(task))
        return err_set(VK_EINVAL, "task id '%s' is not valid", task ? task : "");
    if (!(*out = util_fmt("%s/%s", logs_dir, task)))
        return err_set(VK_ENOMEM, "out of memory");
    return 0;
}

/* "run-<N>.log" with N a plain positive number: its N, else 0. */
static int runlog_run_of(const char *name)
{
    char *end;
    if (strncmp(name, "run-", 4) || name[4] < '1' || name[4] > '9')
        return 0;
    long n = strtol(name + 4, &end, 10);
    return strcmp(end, ".log") || n > 1 << 30 ? 0 : (int)n;
}

static int runlog_cmp(const void *a, const void *b)
{
    const struct runlog_entry *x = a, *y = b;
    return (x->run > y->run) - (x->run < y->run);
}

int runlog_list(const char *logs_dir, const char *task, struct runlog_entry **out, size_t *n)
{
    char *dir;
    struct runlog_entry *v = NULL;
    size_t k = 0, cap = 0;
    struct dirent *e;
    *out = NULL;
    *n = 0;
    int rc = runlog_dir(logs_dir, task, &dir);
    if (rc < 0)
        return rc;
    DIR *d = opendir(dir);
    if (!d) {
        rc = errno == ENOENT ? 0 : err_errno(errno, "cannot list %s", dir);
        free(dir);
        return rc;
    }
    while ((e = readdir(d)) && k < RUNLOG_MAX_RUNS) {
        struct stat st;
        int run = runlog_run_of(e->d_name);
        if (!run || fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
            !S_ISREG(st.st_mode))
            continue;
        if (k == cap) {
            struct runlog_entry *nv = realloc(v, (cap = cap ? cap * 2 : 16) * sizeof(*v));
            if (!nv) {
                rc = err_set(VK_ENOMEM, "out of memory");
                break;
            }
            v = nv;
        }
        v[k++] = (struct runlog_entry){run, (uint64_t)st.st_size, (int64_t)st.st_mtime};
    }
    closedir(d);
    free(dir);
    if (rc < 0) {
        free(v);
        return rc;
    }
    if (k)
        qsort(v, k, sizeof(*v), runlog_cmp);
    *out = v;
    *n = k;
    return 0;
}

/* Copies the last max_bytes of src to path, atomically. */
static int runlog_copy_tail(const char *src, const char *path, uint64_t max_bytes)
{
    char *buf = NULL;
    size_t len = 0;
    int rc = util_read_tail(src, (size_t)max_bytes, &buf, &len);
    if (rc < 0) {
        if (rc == VK_ENOTFOUND) { /* a run that never started has no log */
            err_clear();
            return 0;
        }
        return rc;
    }
    rc = util_write_file_atomic(path, buf, len);
    free(buf);
    return rc;
}

int runlog_keep(const char *logs_dir, const char *task, int run, const char *serial,
                uint64_t max_bytes, int keep)
{
    char *dir, *path = NULL;
    struct runlog_entry *v = NULL;
    size_t n = 0;
    int rc = runlog_dir(logs_dir, task, &dir);
    if (keep < 1)
        keep = 1;
    if (rc == 0)
        rc = util_private_dir(dir);
    if (rc == 0 && run <= 0)
        rc = err_set(VK_EINVAL, "run number %d of task %s is not valid", run, task);
    if (rc == 0 && !(path = util_fmt("%s/run-%d.log", dir, run)))
        rc = err_set(VK_ENOMEM, "out of memory");
    if (rc == 0)
        rc = runlog_copy_tail(serial, path, max_bytes);
    if (rc == 0)
        rc = runlog_list(logs_dir, task, &v, &n);
    for (size_t i = 0; rc == 0 && n > (size_t)keep && i < n - (size_t)keep; i++) {
        char *old = util_fmt("%s/run-%d.log", dir, v[i].run);
        if (old && unlink(old) < 0 && errno != ENOENT)
            rc = err_errno(errno, "cannot remove %s", old);
        free(old);
    }
    free(v);
    free(path);
    free(dir);
    return rc < 0 ? err_wrap(rc, "cannot keep the console log of run %d of task %s", run,
                             task ? task : "")
                  : 0;
}

int runlog_read(const char *logs_dir, const char *task, int run, size_t max, char **out,
                size_t *len)
{
    char *dir;
    *out = NULL;
    *len = 0;
    int rc = runlog_dir(logs_dir, task, &dir);
    if (rc < 0)
        return rc;
    char *path = run > 0 ? util_fmt("%s/run-%d.log", dir, run) : NULL;
    rc = path ? util_read_tail(path, max, out, len)
              : err_set(VK_EINVAL, "run number %d is not valid", run);
    if (rc == VK_ENOTFOUND)
        rc = err_set(VK_ENOTFOUND, "no console log of run %d of task %s on this node", run, task);
    free(path);
    free(dir);
    return rc;
}

int runlog_remove(const char *logs_dir, const char *task)
{
    char *dir;
    int rc = runlog_dir(logs_dir, task, &dir);
    if (rc == 0)
        rc = util_rm_rf(dir);
    free(dir);
    return rc;
}

/* The newest mtime of the logs of task, 0 when it has none. */
static int64_t runlog_newest(const char *logs_dir, const char *task)
{
    struct runlog_entry *v = NULL;
    size_t n = 0;
    int64_t newest = 0;
    if (runlog_list(logs_dir, task, &v, &n) < 0)
        err_clear();
    for (size_t i = 0; i < n; i++)
        if (v[i].mtime_s > newest)
            newest = v[i].mtime_s;
    free(v);
    return newest;
}

int runlog_expire(const char *logs_dir, int64_t expire_s, int (*has_task)(void *, const char *),
                  void *arg)
{
    DIR *d = opendir(logs_dir);
    struct dirent *e;
    int gone = 0;
    if (!d)
        return 0;
    int64_t now = (int64_t)time(NULL);
    while ((e = readdir(d))) {
        if (!util_valid_id(e->d_name) || has_task(arg, e->d_name))
            continue;
        int64_t newest = runlog_newest(logs_dir, e->d_name);
        if (now - newest < expire_s)
            continue;
        if (runlog_remove(logs_dir, e->d_name) == 0)
            gone++;
        else
            err_clear();
    }
    closedir(d);
    return gone;
}
