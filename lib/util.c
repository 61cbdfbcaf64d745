#include "util.h"
#include "testhook.h"

#include "err.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <openssl/evp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

int64_t util_thread_cpu_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t util_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t util_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    /* tests: this process's clock stepped by N ms (the fault campaign) */
    int64_t step_ms = testhook_file_num("VMCKPT_TEST_CLOCK_STEP_FILE");
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000 + step_ms * 1000;
}

void util_iso_time(int64_t wall_us, char *buf, size_t len)
{
    time_t t = (time_t)(wall_us / 1000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

char *util_fmt(const char *fmt, ...)
{
    char *s = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

int util_valid_id(const char *id)
{
    size_t n = 0;
    if (!id || !id[0] || id[0] == '.')
        return 0;
    for (; id[n]; n++) {
        char c = id[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return n <= 64;
}

int util_mkdir_p(const char *path, mode_t mode)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(buf))
        return err_set(VK_EINVAL, "bad directory path '%s'", path);
    memcpy(buf, path, n + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
            return err_errno(errno, "cannot create directory %s", buf);
        *p = '/';
    }
    if (mkdir(buf, mode) < 0 && errno != EEXIST)
        return err_errno(errno, "cannot create directory %s", buf);
    return 0;
}

uint64_t util_proc_start(pid_t pid)
{
    char path[64], *buf = NULL;
    size_t len = 0;
    unsigned long long start = 0;
    if (pid <= 1)
        return 0;
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if (util_read_file(path, &buf, &len) < 0) {
        err_clear(); /* no such process: an answer, not an error */
        return 0;
    }
    /* The command name (field 2) may hold spaces and ')': fields count from
     * the last ')'. Field 22 is the start time. */
    char *p = strrchr(buf, ')');
    if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d "
                            "%*d %*d %*d %llu", &start) != 1)
        start = 0;
    free(buf);
    return (uint64_t)start;
}

int util_private_dir(const char *path)
{
    struct stat st;
    int rc = util_mkdir_p(path, 0700);
    if (rc < 0)
        return rc;
    if (lstat(path, &st) < 0)
        return err_errno(errno, "cannot stat directory %s", path);
    if (!S_ISDIR(st.st_mode))
        return err_set(VK_EINVAL, "%s is not a directory", path);
    if (st.st_uid != geteuid())
        return err_set(VK_EINVAL, "directory %s belongs to uid %u, not to this process (uid %u): "
                                  "others could change what it holds",
                       path, (unsigned)st.st_uid, (unsigned)geteuid());
    if ((st.st_mode & 077) && chmod(path, 0700) < 0)
        return err_errno(errno, "cannot make directory %s private (chmod 0700)", path);
    return 0;
}

int util_rm_rf(const char *path)
{
    struct stat st;
    DIR *d;
    struct dirent *e;
    int rc = 0;

    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : err_errno(errno, "cannot stat %s", path);
    if (!S_ISDIR(st.st_mode))
        return unlink(path) < 0 ? err_errno(errno, "cannot remove %s", path) : 0;
    d = opendir(path);
    if (!d)
        return err_errno(errno, "cannot open directory %s", path);
    while ((e = readdir(d)) && rc == 0) {
        char *sub;
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        sub = util_fmt("%s/%s", path, e->d_name);
        rc = sub ? util_rm_rf(sub) : err_set(VK_ENOMEM, "out of memory");
        free(sub);
    }
    closedir(d);
    if (rc == 0 && rmdir(path) < 0)
        rc = err_errno(errno, "cannot remove directory %s", path);
    return rc;
}

ssize_t util_read_small(const char *path, char *buf, size_t size)
{
    int fd = size > 0 ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    ssize_t got = fd >= 0 ? read(fd, buf, size - 1) : -1;
    if (fd >= 0)
        close(fd);
    if (got >= 0)
        buf[got] = '\0';
    return got;
}

int util_read_file(const char *path, char **out, size_t *out_len)
{
    /* O_NONBLOCK: a FIFO put in a file's place opens at once (and is
     * refused below); reads stop at UTIL_READ_MAX, so /dev/zero or a huge
     * file cannot take the memory. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    char *buf = NULL;
    size_t len = 0, cap = 0;
    struct stat st;
    int rc = 0;

    *out = NULL;
    if (fd < 0)
        return err_errno(errno, "cannot open %s", path);
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        rc = err_set(VK_EINVAL, "%s is not a regular file", path);
        goto out_close;
    }
    for (;;) {
        ssize_t got;
        if (cap - len < 4096) {
            size_t ncap = cap ? cap * 2 : 8192;
            char *nb = ncap <= UTIL_READ_MAX + 8192 ? realloc(buf, ncap) : NULL;
            if (!nb) {
                rc = ncap > UTIL_READ_MAX + 8192
                         ? err_set(VK_EINVAL, "%s is larger than %u MiB: not read", path,
                                   UTIL_READ_MAX >> 20)
                         : err_set(VK_ENOMEM, "out of memory reading %s", path);
                goto out_close;
            }
            buf = nb;
            cap = ncap;
        }
        got = read(fd, buf + len, cap - len - 1);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            rc = err_errno(errno, "cannot read %s", path);
            goto out_close;
        }
        if (got == 0)
            break;
        len += (size_t)got;
    }
    buf[len] = '\0';
    *out = buf;
    buf = NULL;
    if (out_len)
        *out_len = len;
out_close:
    free(buf);
    close(fd);
    return rc;
}

int util_fsync_dir_of(const char *path)
{
    char *copy = strdup(path);
    int fd, rc = 0;
    if (!copy)
        return err_set(VK_ENOMEM, "out of memory");
    fd = open(dirname(copy), O_RDONLY | O_DIRECTORY);
    if (fd < 0 || fsync(fd) < 0)
        rc = err_errno(errno, "cannot sync directory of %s", path);
    if (fd >= 0)
        close(fd);
    free(copy);
    return rc;
}

char *util_part_path(const char *path)
{
    static unsigned long seq;
    return util_fmt("%s.part-%d-%lu", path, (int)getpid(),
                    __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED));
}

int util_write_file_atomic(const char *path, const void *data, size_t len)
{
    /* A name of its own per call: two threads may write the same file (two
     * restores, or a restore and the pre-staging, noting one blob checked). */
    static unsigned long seq;
    char *tmp = util_fmt("%s.tmp.%d.%lu", path, (int)getpid(),
                         __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED));
    const char *p = data;
    int fd, rc = 0;

    if (!tmp)
        return err_set(VK_ENOMEM, "out of memory");
    /* O_EXCL | O_NOFOLLOW: never into a file or a symlink someone put at
     * the name first */
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = err_errno(errno, "cannot create %s", tmp);
        goto out_free;
    }
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            rc = err_errno(errno, "cannot write %s", tmp);
            goto out_unlink;
        }
        p += w;
        len -= (size_t)w;
    }
    if (fsync(fd) < 0) {
        rc = err_errno(errno, "cannot sync %s", tmp);
        goto out_unlink;
    }
    close(fd);
    fd = -1;
    if (rename(tmp, path) < 0) {
        rc = err_errno(errno, "cannot rename %s to %s", tmp, path);
        goto out_unlink;
    }
    rc = util_fsync_dir_of(path);
    goto out_free;
out_unlink:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
out_free:
    free(tmp);
    return rc;
}

int util_is_sha256_hex(const char *s)
{
    return s && strlen(s) == 64 && strspn(s, "0123456789abcdef") == 64;
}

void util_hex(const unsigned char *md, unsigned n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (unsigned i = 0; i < n; i++) {
        out[2 * i] = digits[md[i] >> 4];
        out[2 * i + 1] = digits[md[i] & 15];
    }
    out[2 * n] = '\0';
}

void util_sha256_buf(const void *data, size_t len, char out[UTIL_SHA256_HEX])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    EVP_Digest(data, len, md, &n, EVP_sha256(), NULL);
    util_hex(md, n, out);
}

int util_sha256_file(const char *path, char out[UTIL_SHA256_HEX], uint64_t *out_size)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    uint64_t total = 0;
    char *buf = malloc(1 << 20);
    int fd = -1, rc = 0;

    if (!ctx || !buf) {
        rc = err_set(VK_ENOMEM, "out of memory hashing %s", path);
        goto out;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = err_errno(errno, "cannot open %s", path);
        goto out;
    }
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    for (;;) {
        ssize_t r = read(fd, buf, 1 << 20);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = err_errno(errno, "cannot read %s", path);
            goto out;
        }
        if (r == 0)
            break;
        EVP_DigestUpdate(ctx, buf, (size_t)r);
        total += (uint64_t)r;
    }
    EVP_DigestFinal_ex(ctx, md, &n);
    util_hex(md, n, out);
    if (out_size)
        *out_size = total;
out:
    if (fd >= 0)
        close(fd);
    free(buf);
    EVP_MD_CTX_free(ctx);
    return rc;
}

static char *util_last_line(const char *s)
{
    const char *end = s + strlen(s), *start;
    while (end > s && (end[-1] == '\n' || end[-1] == ' '))
        end--;
    start = end;
    while (start > s && start[-1] != '\n')
        start--;
    return strndup(start, (size_t)(end - start));
}

int util_run(char *const argv[], char **out)
{
    posix_spawn_file_actions_t fa;
    int pipefd[2], status = 0, rc = 0;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    pid_t pid;

    if (out)
        *out = NULL;
    if (pipe2(pipefd, O_CLOEXEC) < 0)
        return err_errno(errno, "cannot create pipe for %s", argv[0]);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pipefd[1]);
    if (rc != 0) {
        close(pipefd[0]);
        return err_set(rc == ENOENT ? VK_ENOTFOUND : VK_EIO, "cannot run %s: %s", argv[0],
                       strerror(rc));
    }
    for (;;) {
        ssize_t r;
        if (cap - len < 4096) {
            char *nb = realloc(buf, cap + 65536);
            if (!nb)
                break;
            buf = nb;
            cap += 65536;
        }
        r = read(pipefd[0], buf + len, cap - len - 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(pipefd[0]);
    if (buf)
        buf[len] = '\0';
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char *last = util_last_line(buf ? buf : "");
        if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
            rc = err_set(VK_ENOTFOUND, "%s: not found", argv[0]);
        else
            rc = err_set(VK_EIO, "%s failed: %s", argv[0],
                         last && last[0] ? last : "no output");
        free(last);
    }
    if (out && rc == 0) {
        *out = buf ? buf : strdup("");
        buf = NULL;
    }
    free(buf);
    return rc;
}

int util_read_tail(const char *path, size_t max, char **out, size_t *out_len)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    int rc = 0;
    *out = NULL;
    *out_len = 0;
    if (fd < 0)
        return err_errno(errno, "cannot open %s", path);
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        rc = err_set(VK_EINVAL, "%s is not a regular file", path);
        goto out;
    }
    size_t want = (uint64_t)st.st_size > max ? max : (size_t)st.st_size;
    off_t from = st.st_size - (off_t)want;
    char *buf = malloc(want + 1);
    ssize_t got = buf ? pread(fd, buf, want, from) : -1;
    if (!buf) {
        rc = err_set(VK_ENOMEM, "out of memory reading %s", path);
    } else if (got < 0) {
        rc = err_errno(errno, "cannot read %s", path);
        free(buf);
    } else {
        buf[got] = '\0';
        *out = buf;
        *out_len = (size_t)got;
    }
out:
    close(fd);
    return rc;
}

char *util_file_tail(const char *path, size_t max)
{
    char *buf = NULL;
    size_t len = 0;
    if (util_read_tail(path, max, &buf, &len) < 0) {
        err_clear();
        return strdup("");
    }
    return buf;
}

char *util_proc_cmdline(pid_t pid, size_t *out_len)
{
    char path[64], *buf = NULL;
    size_t len = 0, cap = 0;
    int fd;
    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    fd = pid > 0 ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    while (fd >= 0) {
        ssize_t n;
        if (cap - len < 4096) {
            char *nb = cap < UTIL_CMDLINE_MAX ? realloc(buf, cap + 65536) : NULL;
            if (!nb)
                break;
            buf = nb;
            cap += 65536;
        }
        n = read(fd, buf + len, cap - len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    if (fd >= 0)
        close(fd);
    if (!buf || len == 0) {
        free(buf);
        return NULL;
    }
    buf[len] = '\0';
    *out_len = len;
    return buf;
}

int util_pid_matches(pid_t pid, const char *needle)
{
    size_t n = 0;
    char *buf;
    int found;

    if (pid <= 0 || kill(pid, 0) < 0 || !(buf = util_proc_cmdline(pid, &n)))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (buf[i] == '\0')
            buf[i] = ' ';
    found = strstr(buf, needle) != NULL;
    free(buf);
    return found;
}

int64_t util_backoff_ms(int base_ms, int attempt)
{
    if (attempt < 0)
        attempt = 0;
    return (int64_t)base_ms << (attempt < 10 ? attempt : 10);
}

void util_backoff(int base_ms, int attempt)
{
    usleep((useconds_t)(util_backoff_ms(base_ms, attempt) * 1000));
}

int util_free_bytes(const char *path, uint64_t *out)
{
    struct statvfs v;
    *out = 0;
    if (statvfs(path, &v) < 0)
        return err_errno(errno, "cannot read the free space of %s", path);
    *out = (uint64_t)v.f_bavail * (uint64_t)v.f_frsize;
    return 0;
}
