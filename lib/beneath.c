#include "beneath.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define BENEATH_MAX 4095
#define BENEATH_DIR (O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)

/* openat2 was refused once (a kernel before 5.6, or a seccomp filter that
 * does not know it): the walk from then on. */
static atomic_int beneath_no_openat2;

#ifdef VMCKPT_TEST_HOOKS
void beneath_test_walk_only(int on) { atomic_store(&beneath_no_openat2, on); }
#endif

int beneath_name_ok(const char *rel)
{
    size_t n = rel ? strnlen(rel, BENEATH_MAX + 1) : 0;
    const char *p = rel;
    if (n == 0 || n > BENEATH_MAX || rel[0] == '/')
        return 0;
    for (;;) {
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 0 || (len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
            return 0;
        if (!e)
            return 1;
        p = e + 1;
    }
}

static int beneath_openat2(int root, const char *rel, int flags, mode_t mode)
{
    struct open_how how = {
        .flags = (uint64_t)(flags | O_NOFOLLOW | O_CLOEXEC),
        .mode = (flags & O_CREAT) ? mode : 0,
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    int fd = (int)syscall(SYS_openat2, root, rel, &how, sizeof(how));
    if (fd < 0 && (errno == ENOSYS || errno == E2BIG))
        atomic_store(&beneath_no_openat2, 1);
    return fd;
}

static int beneath_fail(int fd_to_close)
{
    int err = errno;
    if (fd_to_close >= 0)
        close(fd_to_close);
    errno = err;
    return -1;
}

/* One directory after another, each opened with O_NOFOLLOW (a symlink gives
 * ELOOP) and made first with mkdirs; the fd of the last one, *leaf at the
 * component after it. rel is checked by the caller. */
static int beneath_walk(int root, const char *rel, int mkdirs, const char **leaf)
{
    char comp[256];
    const char *p = rel;
    int fd = openat(root, ".", BENEATH_DIR);
    while (fd >= 0) {
        const char *e = strchr(p, '/');
        int next;
        if (!e) {
            *leaf = p;
            return fd;
        }
        if ((size_t)(e - p) >= sizeof(comp)) {
            errno = ENAMETOOLONG;
            return beneath_fail(fd);
        }
        memcpy(comp, p, (size_t)(e - p));
        comp[e - p] = '\0';
        next = openat(fd, comp, BENEATH_DIR);
        if (next < 0 && errno == ENOENT && mkdirs) {
            if (mkdirat(fd, comp, 0700) < 0 && errno != EEXIST)
                return beneath_fail(fd);
            next = openat(fd, comp, BENEATH_DIR);
        }
        if (next < 0)
            return beneath_fail(fd);
        close(fd);
        fd = next;
        p = e + 1;
    }
    return -1;
}

int beneath_open(int root, const char *rel, int flags, mode_t mode)
{
    const char *leaf;
    int dir, fd;
    if (!beneath_name_ok(rel)) {
        errno = EINVAL;
        return -1;
    }
    if (!atomic_load(&beneath_no_openat2)) {
        fd = beneath_openat2(root, rel, flags, mode);
        if (fd >= 0 || !atomic_load(&beneath_no_openat2))
            return fd;
    }
    dir = beneath_walk(root, rel, 0, &leaf);
    if (dir < 0)
        return -1;
    fd = openat(dir, leaf, flags | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0)
        return beneath_fail(dir);
    close(dir);
    return fd;
}

int beneath_parent(int root, const char *rel, int mkdirs, const char **leaf)
{
    const char *slash, *l;
    char dir[BENEATH_MAX + 1];
    if (!beneath_name_ok(rel)) {
        errno = EINVAL;
        return -1;
    }
    slash = strrchr(rel, '/');
    *leaf = slash ? slash + 1 : rel;
    if (!slash)
        return openat(root, ".", BENEATH_DIR);
    if (!atomic_load(&beneath_no_openat2)) {
        int fd;
        memcpy(dir, rel, (size_t)(slash - rel));
        dir[slash - rel] = '\0';
        fd = beneath_openat2(root, dir, O_RDONLY | O_DIRECTORY, 0);
        if (fd >= 0 || (!atomic_load(&beneath_no_openat2) && (errno != ENOENT || !mkdirs)))
            return fd;
    }
    return beneath_walk(root, rel, mkdirs, &l);
}

int beneath_root(const char *root_path)
{
    return open(root_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}
