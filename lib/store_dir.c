/* store_dir: the directory backend (file:///path). Also fits an NFS mount:
 * objects are written to .tmp/ and renamed into place, which NFS keeps atomic.
 * Every name is opened beneath the root's directory fd with no symlink on
 * its way (beneath.h), and every object read must be a regular file: others
 * write the store, and the agent runs as root. */
#include "beneath.h"
#include "err.h"
#include "store.h"
#include "testhook.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <inttypes.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

extern const struct store_ops store_dir_ops;

struct dir_store {
    struct store base;
    char *root;
    int rootfd, tmpfd;    /* the root and its .tmp/, opened once */
    atomic_int no_direct; /* the file system refused O_DIRECT once */
};

struct dir_writer {
    struct store_writer base;
    int fd;
    char tmp[48];  /* its name in .tmp/ */
    uint64_t off; /* bytes written so far */
};

/* The deepest a listing goes: the store's own names are at most four
 * levels deep, and a writer's tree of a million levels must not take the
 * stack. */
#define DIR_LIST_DEPTH 16
/* A lease generation is one short line. */
#define DIR_LEASE_MAX 4096

/* Writes of at least this much, aligned in memory and in the file, bypass
 * the page cache (dir_write_direct). */
#define DIR_DIRECT_MIN (1u << 20)
#define DIR_DIRECT_ALIGN 4096u

static atomic_uint dir_tmp_seq;

/* A failed call on name (errno e) as an error: a symlink on the way (ELOOP,
 * or ENOTDIR where a directory was expected) or a name that would leave the
 * store is a damaged or hostile store, never followed. */
static int dir_err(struct dir_store *d, int e, const char *what, const char *name)
{
    if (e == ELOOP || e == EXDEV || e == EINVAL || e == ENOTDIR)
        return err_set(VK_ECORRUPT, "store %s: cannot %s %s: a symlink, or something other "
                                    "than a directory, is on its path (refused: names stay "
                                    "beneath the store's root)", d->base.uri, what, name);
    return err_errno(e, "store %s: cannot %s %s", d->base.uri, what, name);
}

static int dir_open(const char *uri, struct store **out)
{
    const char *path = strncmp(uri, "file://", 7) == 0 ? uri + 7 : uri;
    struct dir_store *d;
    char *tmp;
    int rc;

    *out = NULL;
    if (path[0] != '/')
        return err_set(VK_EINVAL, "store '%s': a directory store needs an absolute path "
                                  "(file:///path)", uri);
    d = calloc(1, sizeof(*d));
    if (!d)
        return err_set(VK_ENOMEM, "out of memory");
    d->base.ops = &store_dir_ops;
    d->rootfd = d->tmpfd = -1;
    d->base.uri = util_fmt("file://%s", path);
    d->root = strdup(path);
    while (strlen(d->root) > 1 && d->root[strlen(d->root) - 1] == '/')
        d->root[strlen(d->root) - 1] = '\0';
    tmp = util_fmt("%s/.tmp", d->root);
    rc = tmp ? util_private_dir(d->root) : err_set(VK_ENOMEM, "out of memory");
    if (rc == 0)
        rc = util_mkdir_p(tmp, 0700);
    free(tmp);
    if (rc == 0 && (d->rootfd = beneath_root(d->root)) < 0)
        rc = err_errno(errno, "cannot open directory %s", d->root);
    if (rc == 0 && (d->tmpfd = beneath_open(d->rootfd, ".tmp", O_RDONLY | O_DIRECTORY, 0)) < 0)
        rc = dir_err(d, errno, "open", ".tmp");
    if (rc < 0) {
        err_wrap(rc, "cannot open store %s", d->base.uri);
        store_dir_ops.free(&d->base);
        return rc;
    }
    *out = &d->base;
    return 0;
}

static void dir_free(struct store *s)
{
    struct dir_store *d = (struct dir_store *)s;
    if (d->tmpfd >= 0)
        close(d->tmpfd);
    if (d->rootfd >= 0)
        close(d->rootfd);
    free(d->root);
    free(d->base.uri);
    free(d);
}

static int dir_put_begin(struct store *s, const char *name, struct store_writer **out)
{
    struct dir_store *d = (struct dir_store *)s;
    struct dir_writer *w = calloc(1, sizeof(*w));
    if (!w)
        return err_set(VK_ENOMEM, "out of memory");
    w->base.store = s;
    w->base.name = strdup(name);
    snprintf(w->tmp, sizeof(w->tmp), "%d.%u", (int)getpid(), atomic_fetch_add(&dir_tmp_seq, 1));
    w->fd = openat(d->tmpfd, w->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (w->fd < 0 || !w->base.name) {
        int rc = w->fd < 0 ? err_errno(errno, "store %s: cannot create .tmp/%s for object %s",
                                       s->uri, w->tmp, name)
                           : err_set(VK_ENOMEM, "out of memory");
        if (w->fd >= 0) {
            close(w->fd);
            unlinkat(d->tmpfd, w->tmp, 0);
        }
        free(w->base.name);
        free(w);
        return rc;
    }
    *out = &w->base;
    return 0;
}

/* Writes the aligned head of a large aligned buffer with O_DIRECT: the disk
 * takes it by DMA, so the copy into the page cache — on a busy host the
 * largest CPU cost of storing a checkpoint — is saved, and the cache stays
 * with the VMs (a checkpoint is not read again until a restore). Returns the
 * bytes written, 0 when not possible (then the caller writes through the
 * cache), or an error. Durability is unchanged: fsync/syncfs still follows. */
static ssize_t dir_write_direct(struct dir_writer *w, const char *p, size_t len)
{
    struct dir_store *d = (struct dir_store *)w->base.store;
    size_t n = len & ~(size_t)(DIR_DIRECT_ALIGN - 1), done = 0;
    int flags;

    if (len < DIR_DIRECT_MIN || w->off % DIR_DIRECT_ALIGN ||
        (uintptr_t)p % DIR_DIRECT_ALIGN || atomic_load(&d->no_direct))
        return 0;
    flags = fcntl(w->fd, F_GETFL);
    if (flags < 0 || fcntl(w->fd, F_SETFL, flags | O_DIRECT) < 0) {
        atomic_store(&d->no_direct, 1); /* tmpfs, some FUSE and NFS setups */
        return 0;
    }
    while (done < n) {
        ssize_t k = write(w->fd, p + done, n - done);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && errno == EINVAL && done == 0) /* alignment the device refuses */
            atomic_store(&d->no_direct, 1);
        if (k == 0)
            errno = EIO; /* not expected from a file */
        if (k <= 0)
            break;
        done += (size_t)k;
    }
    int err = errno;
    if (fcntl(w->fd, F_SETFL, flags) < 0)
        return err_errno(errno, "store %s: cannot write object %s", d->base.uri, w->base.name);
    if (done < n && !atomic_load(&d->no_direct))
        return err_errno(err, "store %s: cannot write object %s", d->base.uri, w->base.name);
    return (ssize_t)done; /* the rest goes through the cache */
}

static int dir_put_write(struct store_writer *sw, const void *data, size_t len)
{
    struct dir_writer *w = (struct dir_writer *)sw;
    const char *p = data;
    ssize_t direct = dir_write_direct(w, p, len);
    if (direct < 0)
        return (int)direct;
    p += direct;
    len -= (size_t)direct;
    w->off += (uint64_t)direct;
    while (len > 0) {
        ssize_t n = write(w->fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return err_errno(errno, "store %s: cannot write object %s", sw->store->uri,
                             sw->name);
        p += n;
        len -= (size_t)n;
        w->off += (uint64_t)n;
    }
    return 0;
}

static void dir_writer_free(struct dir_writer *w)
{
    if (w->fd >= 0)
        close(w->fd);
    free(w->base.name);
    free(w);
}

static void dir_put_abort(struct store_writer *sw)
{
    struct dir_writer *w = (struct dir_writer *)sw;
    unlinkat(((struct dir_store *)sw->store)->tmpfd, w->tmp, 0);
    dir_writer_free(w);
}

static int dir_fence_check(struct dir_store *d, const struct store_fence *f, const char *obj);

static int dir_place(struct dir_store *d, const char *tmp, int pfd, const char *leaf, int exclusive)
{
    return exclusive ? linkat(d->tmpfd, tmp, pfd, leaf, 0) : renameat(d->tmpfd, tmp, pfd, leaf);
}

static int dir_put_commit(struct store_writer *sw)
{
    struct dir_writer *w = (struct dir_writer *)sw;
    struct dir_store *d = (struct dir_store *)sw->store;
    const char *leaf = NULL;
    int rc = 0, pfd = -1;

    if (!sw->lazy && fsync(w->fd) < 0) {
        rc = err_errno(errno, "store %s: cannot sync object %s", d->base.uri, sw->name);
        goto out;
    }
    /* Lazy: start the write-back now, so that the store_sync() before the
     * manifest has little left to wait for. */
    if (sw->lazy)
        (void)sync_file_range(w->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    for (size_t i = 0; i < sw->n_fence && rc == 0; i++)
        rc = dir_fence_check(d, &sw->fence[i], sw->name);
    if (rc < 0)
        goto out;
    /* Most parents exist already: they are made only when missing. */
    pfd = beneath_parent(d->rootfd, sw->name, 0, &leaf);
    if (pfd < 0 && errno == ENOENT)
        pfd = beneath_parent(d->rootfd, sw->name, 1, &leaf);
    if (pfd < 0) {
        rc = dir_err(d, errno, "commit object", sw->name);
        goto out;
    }
    if (sw->n_fence) /* tests: a stall between the fence check and the link */
        testhook_gate("VMCKPT_TEST_LINK_GATE", leaf);
    /* Exclusive: link(2), which never replaces, then drop the temporary name. */
    if (dir_place(d, w->tmp, pfd, leaf, sw->exclusive) < 0) {
        if (errno == EEXIST && sw->exclusive)
            rc = err_set(VK_EEXISTS, "store %s: object %s exists already", d->base.uri,
                         sw->name);
        else
            rc = dir_err(d, errno, "commit object", sw->name);
        goto out;
    }
    if (sw->exclusive)
        unlinkat(d->tmpfd, w->tmp, 0);
    if (!sw->lazy && fsync(pfd) < 0)
        rc = err_errno(errno, "store %s: cannot sync the directory of object %s", d->base.uri,
                       sw->name);
out:
    if (rc < 0)
        unlinkat(d->tmpfd, w->tmp, 0);
    if (pfd >= 0)
        close(pfd);
    dir_writer_free(w);
    return rc;
}

static int dir_read(struct store *s, const char *name, uint64_t off, void *buf, size_t len,
                    size_t *out_got)
{
    struct dir_store *d = (struct dir_store *)s;
    struct stat st;
    size_t got = 0;
    int fd, rc = 0;

    /* (O_NONBLOCK: a FIFO put there opens at once, and is refused below) */
    fd = beneath_open(d->rootfd, name, O_RDONLY | O_NONBLOCK, 0);
    if (fd < 0) {
        rc = dir_err(d, errno, "open object", name);
        goto out;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        rc = err_set(VK_ECORRUPT, "store %s: object %s is not a regular file (refused)", s->uri,
                     name);
        close(fd);
        goto out;
    }
    /* Readers ask for exactly the ranges they need (coalesced up to the read
     * gap): read-ahead past them would only read bytes nobody wants. */
    posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
    while (got < len) {
        ssize_t n = pread(fd, (char *)buf + got, len - got, (off_t)(off + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = err_errno(errno, "store %s: cannot read object %s", s->uri, name);
            break;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    close(fd);
out:
    *out_got = got;
    return rc;
}

static int dir_stat(struct store *s, const char *name, uint64_t *out_size)
{
    struct dir_store *d = (struct dir_store *)s;
    struct stat st;
    int rc = 0, fd = beneath_open(d->rootfd, name, O_PATH, 0);
    if (fd < 0)
        rc = errno == ENOENT ? err_errno(errno, "store %s: object %s", s->uri, name)
                             : dir_err(d, errno, "look up object", name);
    else if (fstat(fd, &st) < 0)
        rc = err_errno(errno, "store %s: object %s", s->uri, name);
    else if (!S_ISREG(st.st_mode)) /* a void (a directory), or a symlink */
        rc = err_set(VK_ENOTFOUND, "store %s: object %s: not an object", s->uri, name);
    else if (out_size)
        *out_size = (uint64_t)st.st_size;
    if (fd >= 0)
        close(fd);
    return rc;
}

/* Walks the directory open as fd (relative name rel; closed here) and
 * reports regular files starting with prefix. Into directories only, never
 * through a symlink (each is opened O_NOFOLLOW from its parent's fd). */
static int dir_walk(int fd, const char *rel, int depth, const char *prefix, store_list_fn fn,
                    void *arg)
{
    DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
    struct dirent *e;
    int rc = 0;

    if (!dir) {
        if (fd >= 0)
            close(fd);
        return 0; /* nothing under this prefix */
    }
    while (rc == 0 && (e = readdir(dir))) {
        struct stat st;
        char *sub;
        if (e->d_name[0] == '.')
            continue; /* ., .., .tmp and partial files */
        sub = rel[0] ? util_fmt("%s/%s", rel, e->d_name) : strdup(e->d_name);
        if (!sub) {
            rc = err_set(VK_ENOMEM, "out of memory");
            break;
        }
        if (fstatat(dirfd(dir), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
            size_t n = strlen(sub) < strlen(prefix) ? strlen(sub) : strlen(prefix);
            if (strncmp(sub, prefix, n) == 0) {
                if (S_ISDIR(st.st_mode) && depth < DIR_LIST_DEPTH)
                    rc = dir_walk(openat(dirfd(dir), e->d_name, O_RDONLY | O_DIRECTORY |
                                                               O_NOFOLLOW | O_CLOEXEC),
                                  sub, depth + 1, prefix, fn, arg);
                else if (S_ISREG(st.st_mode) && strlen(sub) >= strlen(prefix))
                    rc = fn(arg, sub, (uint64_t)st.st_size, (int64_t)st.st_mtime);
            }
        }
        free(sub);
    }
    closedir(dir);
    return rc;
}

static int dir_list(struct store *s, const char *prefix, store_list_fn fn, void *arg)
{
    struct dir_store *d = (struct dir_store *)s;
    return dir_walk(openat(d->rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC), "", 0, prefix,
                    fn, arg);
}

static int dir_remove(struct store *s, const char *name)
{
    struct dir_store *d = (struct dir_store *)s;
    const char *leaf;
    int rc = 0, pfd = beneath_parent(d->rootfd, name, 0, &leaf);
    if (pfd < 0 || unlinkat(pfd, leaf, 0) < 0)
        rc = dir_err(d, errno, "remove object", name);
    if (pfd >= 0)
        close(pfd);
    return rc;
}

/* One syncfs() covers every lazy object: far cheaper than an fsync per chunk. */
static int dir_sync(struct store *s)
{
    struct dir_store *d = (struct dir_store *)s;
    return syncfs(d->rootfd) < 0 ? err_errno(errno, "store %s: cannot sync", s->uri) : 0;
}

/* ---- leases ------------------------------------------------------------------------
 * A lease is the directory NAME.lease/ of generations: files named by a
 * 20-digit number, each holding "OWNER EXPIRY_MS EPOCH DURATION_MS\n" (OWNER
 * "-" when released; EXPIRY_MS, the holder's wall clock, is for people); the
 * highest number is the lease's state. Every change (take, renew, release)
 * writes generation g+1 with link(2), which fails if it exists: of two agents
 * that read generation g, only one moves the lease on.
 *
 * Whether another owner's lease has expired is judged on the file system's
 * clock, never on the nodes': the age of its generation (its mtime, set by
 * the file system when written) against the mtime of a file the taker writes
 * now. So a node whose clock steps neither takes a live lease nor keeps a
 * dead one (on NFS, both times are the server's).
 * No lock is held, so an agent stopped at any instant (SIGSTOP, swap) blocks
 * no other (an earlier version took a lock around each change, and an agent
 * stopped holding it held up the others). One that stalled between its read
 * and its link may link a number already passed and removed: it then finds a
 * higher one and counts as beaten.
 *
 * A fenced write checks the lease's owner and epoch, then links: two steps.
 * What makes it safe is the new holder: after taking a lease over it voids
 * the name the old holder could still be about to link (catalog_void_next), so
 * that link fails. */

#define DIR_LEASE_DIGITS 20
#define DIR_LEASE_TRIES 5

static int dir_lease_gen_of(const char *fname, uint64_t *gen)
{
    /* a leading 0 keeps it below 10^19, so g + 1 never wraps */
    if (strlen(fname) != DIR_LEASE_DIGITS || strspn(fname, "0123456789") != DIR_LEASE_DIGITS ||
        fname[0] != '0')
        return 0;
    *gen = strtoull(fname, NULL, 10);
    return 1;
}

/* The lease directory NAME.lease, opened beneath the root (made with create):
 * its fd, or -1 with errno (ENOENT: no such lease yet). */
static int dir_lease_dir(struct dir_store *d, const char *name, int create)
{
    char *rel = util_fmt("%s.lease/-", name);
    const char *leaf;
    int fd;
    if (!rel) {
        errno = ENOMEM;
        return -1;
    }
    fd = beneath_parent(d->rootfd, rel, create, &leaf);
    free(rel);
    return fd;
}

/* A listing of the lease directory ldfd, from its start (a fd of its own:
 * closedir leaves ldfd open). */
static DIR *dir_lease_list(int ldfd)
{
    int fd = openat(ldfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *dh = fd >= 0 ? fdopendir(fd) : NULL;
    if (!dh && fd >= 0)
        close(fd);
    return dh;
}

/* The highest generation in the lease directory (0: none). */
static int dir_lease_top_gen(struct dir_store *d, int ldfd, const char *name, uint64_t *top)
{
    DIR *dh = dir_lease_list(ldfd);
    struct dirent *e;
    *top = 0;
    if (!dh)
        return err_errno(errno, "store %s: cannot read lease %s", d->base.uri, name);
    while ((e = readdir(dh))) {
        uint64_t g;
        if (dir_lease_gen_of(e->d_name, &g) && g > *top)
            *top = g;
    }
    closedir(dh);
    return 0;
}

struct dir_lease_state {
    uint64_t gen;
    char owner[256]; /* "" when free */
    int64_t expiry_ms;
    uint64_t epoch;
    int64_t duration_ms;     /* 0 when not recorded */
    struct timespec written; /* the generation's mtime */
};

static void dir_lease_parse(const char *text, size_t len, struct dir_lease_state *st)
{
    int n = len ? sscanf(text, "%255s %" SCNd64 " %" SCNu64 " %" SCNd64, st->owner,
                         &st->expiry_ms, &st->epoch, &st->duration_ms)
                : 0;
    if (st->duration_ms < 0 || st->duration_ms > 86400000)
        st->duration_ms = 0;
    if (n < 2 || !strcmp(st->owner, "-"))
        st->owner[0] = '\0'; /* released, or not ours to understand: free */
}

/* Generation gen's text (at most DIR_LEASE_MAX - 1 bytes) and mtime: a
 * regular file, opened without following a symlink and without waiting on a
 * FIFO. VK_ENOTFOUND when it is gone; VK_ECORRUPT when it is not a lease's. */
static int dir_lease_gen_read(struct dir_store *d, int ldfd, const char *name, uint64_t gen,
                              char *text, size_t *len, struct timespec *mtime)
{
    char fname[DIR_LEASE_DIGITS + 1];
    struct stat sb;
    ssize_t n = -1;
    int fd;
    snprintf(fname, sizeof(fname), "%0*" PRIu64, DIR_LEASE_DIGITS, gen);
    fd = openat(ldfd, fname, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? VK_ENOTFOUND : dir_err(d, errno, "read lease", name);
    if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size < DIR_LEASE_MAX)
        n = read(fd, text, DIR_LEASE_MAX - 1);
    close(fd);
    if (n < 0)
        return err_set(VK_ECORRUPT, "store %s: lease %s: generation %s is not a lease's (not "
                                    "a small regular file)", d->base.uri, name, fname);
    text[n] = '\0';
    *len = (size_t)n;
    *mtime = sb.st_mtim;
    return 0;
}

/* The lease's generation, holder, expiry and epoch (ldfd -1: no lease yet). */
static int dir_lease_read(struct dir_store *d, int ldfd, const char *name,
                          struct dir_lease_state *st)
{
    for (int i = 0; i < DIR_LEASE_TRIES; i++) {
        char text[DIR_LEASE_MAX];
        size_t len = 0;
        memset(st, 0, sizeof(*st));
        if (ldfd < 0)
            return 0;
        int rc = dir_lease_top_gen(d, ldfd, name, &st->gen);
        if (rc < 0 || st->gen == 0)
            return rc;
        rc = dir_lease_gen_read(d, ldfd, name, st->gen, text, &len, &st->written);
        if (rc == 0)
            dir_lease_parse(text, len, st);
        if (rc != VK_ENOTFOUND)
            return rc;
        /* removed by a newer writer since the listing: list again */
    }
    return err_set(VK_EIO, "store %s: lease %s keeps changing while read", d->base.uri, name);
}

/* The file system's time now: the mtime of a file written in the lease's
 * directory. */
static int dir_fs_now(struct dir_store *d, int ldfd, const char *name, struct timespec *now)
{
    char tmp[64];
    struct stat sb;
    int fd, rc;
    snprintf(tmp, sizeof(tmp), ".tmp-clock-%d.%u", (int)getpid(),
             atomic_fetch_add(&dir_tmp_seq, 1));
    fd = openat(ldfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    rc = fd >= 0 && fstat(fd, &sb) == 0
             ? 0
             : err_errno(errno, "store %s: cannot read the file system's clock in lease %s",
                         d->base.uri, name);
    if (rc == 0)
        *now = sb.st_mtim;
    if (fd >= 0) {
        close(fd);
        unlinkat(ldfd, tmp, 0);
    }
    return rc;
}

static int64_t dir_ms_between(const struct timespec *a, const struct timespec *b)
{
    return ((int64_t)b->tv_sec - a->tv_sec) * 1000 + (b->tv_nsec - a->tv_nsec) / 1000000;
}

/* Removes the generations below gen, and temporaries older than a minute
 * (left by a writer that died); returns the highest generation seen. One
 * pass, best effort. */
static uint64_t dir_lease_prune(int ldfd, uint64_t gen)
{
    DIR *dh = dir_lease_list(ldfd);
    struct dirent *e;
    time_t old = time(NULL) - 60;
    uint64_t top = 0;
    while (dh && (e = readdir(dh))) {
        uint64_t g = 0;
        struct stat st;
        int is_gen = dir_lease_gen_of(e->d_name, &g);
        if (is_gen && g > top)
            top = g;
        if (is_gen ? g < gen
                   : !strncmp(e->d_name, ".tmp-", 5) &&
                         fstatat(ldfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                         st.st_mtime < old)
            unlinkat(ldfd, e->d_name, 0);
    }
    if (dh)
        closedir(dh);
    return top;
}

/* text into a new file tmp of the lease directory, synced. */
static int dir_lease_tmp(struct dir_store *d, int ldfd, const char *name, const char *tmp,
                         const char *text)
{
    size_t len = strlen(text);
    int fd = openat(ldfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    int rc = fd >= 0 && write(fd, text, len) == (ssize_t)len && fsync(fd) == 0
                 ? 0
                 : err_errno(errno, "store %s: cannot write lease %s", d->base.uri, name);
    if (fd >= 0)
        close(fd);
    return rc;
}

/* Writes generation gen of the lease: VK_EBUSY when another writer got there
 * first (that generation or a higher one exists). */
static int dir_lease_write(struct dir_store *d, int ldfd, const char *name, uint64_t gen,
                           const char *owner, int duration_ms, uint64_t epoch)
{
    int64_t expiry_ms = owner[0] == '-' ? 0 : util_wall_us() / 1000 + duration_ms;
    char tmp[64], fname[DIR_LEASE_DIGITS + 1];
    char *text = util_fmt("%s %" PRId64 " %" PRIu64 " %d\n", owner, expiry_ms, epoch, duration_ms);
    int rc = text ? 0 : err_set(VK_ENOMEM, "out of memory");
    snprintf(tmp, sizeof(tmp), ".tmp-%d.%u", (int)getpid(), atomic_fetch_add(&dir_tmp_seq, 1));
    snprintf(fname, sizeof(fname), "%0*" PRIu64, DIR_LEASE_DIGITS, gen);
    if (rc == 0)
        rc = dir_lease_tmp(d, ldfd, name, tmp, text);
    if (rc == 0 && linkat(ldfd, tmp, ldfd, fname, 0) < 0)
        rc = errno == EEXIST ? VK_EBUSY
                             : err_errno(errno, "store %s: cannot write lease %s (generation %s)",
                                         d->base.uri, name, fname);
    unlinkat(ldfd, tmp, 0);
    if (rc == 0 && fsync(ldfd) < 0)
        rc = err_errno(errno, "store %s: cannot sync lease %s", d->base.uri, name);
    if (rc == 0 && dir_lease_prune(ldfd, gen) > gen) {
        unlinkat(ldfd, fname, 0); /* a stale writer: the lease moved on while it stalled */
        rc = VK_EBUSY;
    }
    free(text);
    return rc;
}

/* One take or renewal. */
static int dir_lease_take(struct dir_store *d, int ldfd, const char *name, const char *owner,
                          int duration_ms, struct store_fence *out)
{
    for (int i = 0; i < DIR_LEASE_TRIES; i++) {
        struct dir_lease_state st;
        struct timespec now = {0, 0};
        int rc = dir_lease_read(d, ldfd, name, &st);
        if (rc < 0)
            return rc;
        if (st.owner[0] && strcmp(st.owner, owner) != 0) {
            int64_t held = st.duration_ms ? st.duration_ms : duration_ms; /* the holder's */
            if ((rc = dir_fs_now(d, ldfd, name, &now)) < 0)
                return rc;
            int64_t age = dir_ms_between(&st.written, &now);
            if (age <= held)
                return err_set(VK_EBUSY, "store %s: lease %s is held by another owner (%s, "
                                         "renewed %" PRId64 " ms ago, expires after %" PRId64
                                         ")", d->base.uri, name, st.owner, age, held);
        }
        uint64_t epoch = strcmp(st.owner, owner) == 0 ? st.epoch : st.epoch + 1;
        rc = dir_lease_write(d, ldfd, name, st.gen + 1, owner, duration_ms, epoch);
        if (rc == 0 && out) {
            out->epoch = epoch;
            out->taken_over = st.owner[0] && strcmp(st.owner, owner) != 0;
        }
        if (rc != VK_EBUSY)
            return rc;
        /* another agent changed it meanwhile: read it again */
    }
    return err_set(VK_EBUSY, "store %s: lease %s changed under every attempt to take it",
                   d->base.uri, name);
}

static int dir_lease(struct store *s, const char *name, const char *owner, int duration_ms,
                     struct store_fence *out)
{
    struct dir_store *d = (struct dir_store *)s;
    int ldfd = dir_lease_dir(d, name, 1);
    int rc = ldfd >= 0 ? dir_lease_take(d, ldfd, name, owner, duration_ms, out)
                       : dir_err(d, errno, "open lease", name);
    if (rc < 0 && rc != VK_EBUSY)
        err_wrap(rc, "store %s: cannot take lease %s", s->uri, name);
    if (ldfd >= 0)
        close(ldfd);
    return rc;
}

/* The lease's directory for reading: its fd, or -1 when there is no lease
 * (then 0 is returned); an error for anything else. */
static int dir_lease_dir_ro(struct dir_store *d, const char *name, int *ldfd)
{
    *ldfd = dir_lease_dir(d, name, 0);
    return *ldfd >= 0 || errno == ENOENT ? 0 : dir_err(d, errno, "open lease", name);
}

static int dir_unlease(struct store *s, const char *name, const char *owner)
{
    struct dir_store *d = (struct dir_store *)s;
    struct dir_lease_state st;
    int ldfd, rc = dir_lease_dir_ro(d, name, &ldfd);
    if (rc == 0)
        rc = dir_lease_read(d, ldfd, name, &st);
    if (rc == 0 && strcmp(st.owner, owner) != 0)
        rc = err_set(VK_ENOTFOUND, "store %s: lease %s is not held by %s", s->uri, name, owner);
    if (rc == 0 && (rc = dir_lease_write(d, ldfd, name, st.gen + 1, "-", 0, st.epoch)) == VK_EBUSY)
        rc = err_set(VK_ENOTFOUND, "store %s: lease %s was taken by another owner meanwhile",
                     s->uri, name);
    if (ldfd >= 0)
        close(ldfd);
    return rc;
}

/* A fenced write's proof: f's owner still holds the lease in f's epoch.
 * Expiry alone does not void it (a lease nobody has taken since is still its
 * holder's). Checked right before the link; a take-over between the two is
 * met by the new holder's void (see "leases"). */
static int dir_fence_check(struct dir_store *d, const struct store_fence *f, const char *obj)
{
    struct dir_lease_state st;
    int ldfd, rc = dir_lease_dir_ro(d, f->lease, &ldfd);
    if (rc == 0)
        rc = dir_lease_read(d, ldfd, f->lease, &st);
    if (rc == 0 && (strcmp(st.owner, f->owner) != 0 || st.epoch != f->epoch))
        rc = err_set(VK_ELEASE, "store %s: %s not written: lease %s is held by %s (epoch %" PRIu64
                                "), not by %s (epoch %" PRIu64 ")", d->base.uri, obj, f->lease,
                     st.owner[0] ? st.owner : "nobody", st.epoch, f->owner, f->epoch);
    if (ldfd >= 0)
        close(ldfd);
    return rc;
}

/* A void is a directory at the object's path: link(2) to it fails (EEXIST),
 * and listings, stat and reads see no object there. */
static int dir_void(struct store *s, const char *name)
{
    struct dir_store *d = (struct dir_store *)s;
    const char *leaf;
    int rc = 0, pfd = beneath_parent(d->rootfd, name, 1, &leaf);
    if (pfd < 0)
        rc = dir_err(d, errno, "void", name);
    else if (mkdirat(pfd, leaf, 0700) < 0)
        rc = errno == EEXIST ? err_set(VK_EEXISTS, "store %s: %s is taken", s->uri, name)
                             : dir_err(d, errno, "void", name);
    else if (fsync(pfd) < 0)
        rc = err_errno(errno, "store %s: cannot sync the directory of %s", s->uri, name);
    if (pfd >= 0)
        close(pfd);
    return rc;
}

static int dir_taken(struct store *s, const char *name)
{
    struct dir_store *d = (struct dir_store *)s;
    struct stat st;
    const char *leaf;
    int rc, pfd = beneath_parent(d->rootfd, name, 0, &leaf);
    if (pfd < 0)
        return errno == ENOENT ? 0 : dir_err(d, errno, "look up", name);
    rc = fstatat(pfd, leaf, &st, AT_SYMLINK_NOFOLLOW) == 0 ? 1
         : errno == ENOENT ? 0
                           : err_errno(errno, "store %s: cannot look up %s", s->uri, name);
    close(pfd);
    return rc;
}

const struct store_ops store_dir_ops = {
    .version = STORE_OPS_VERSION,
    .scheme = "file",
    .caps = STORE_CAP_LOCAL,
    .read_gap = 32u << 10, /* a pread is cheap; bytes read through are not free on a cold disk */
    .open = dir_open,
    .free = dir_free,
    .put_begin = dir_put_begin,
    .put_write = dir_put_write,
    .put_commit = dir_put_commit,
    .put_abort = dir_put_abort,
    .read = dir_read,
    .stat = dir_stat,
    .list = dir_list,
    .remove = dir_remove,
    .sync = dir_sync,
    .lease = dir_lease,
    .unlease = dir_unlease,
    .void_name = dir_void,
    .taken = dir_taken,
};
