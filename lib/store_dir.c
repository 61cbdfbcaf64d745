/* store_dir: the directory backend (file:///path). Also fits an NFS mount:
 * objects are written to .tmp/ and renamed into place, which NFS keeps atomic. */
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
    atomic_int no_direct; /* the file system refused O_DIRECT once */
};

struct dir_writer {
    struct store_writer base;
    int fd;
    char *tmp;
    uint64_t off; /* bytes written so far */
};

/* Writes of at least this much, aligned in memory and in the file, bypass
 * the page cache (dir_write_direct). */
#define DIR_DIRECT_MIN (1u << 20)
#define DIR_DIRECT_ALIGN 4096u

static atomic_uint dir_tmp_seq;

static char *dir_path(struct dir_store *d, const char *name)
{
    return util_fmt("%s/%s", d->root, name);
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
    d->base.uri = util_fmt("file://%s", path);
    d->root = strdup(path);
    while (strlen(d->root) > 1 && d->root[strlen(d->root) - 1] == '/')
        d->root[strlen(d->root) - 1] = '\0';
    tmp = util_fmt("%s/.tmp", d->root);
    rc = tmp ? util_private_dir(d->root) : err_set(VK_ENOMEM, "out of memory");
    if (rc == 0)
        rc = util_mkdir_p(tmp, 0700);
    free(tmp);
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
    w->tmp = util_fmt("%s/.tmp/%d.%u", d->root, (int)getpid(), atomic_fetch_add(&dir_tmp_seq, 1));
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (w->fd < 0) {
        int rc = err_errno(errno, "store %s: cannot create %s for object %s", s->uri, w->tmp,
                           name);
        free(w->base.name);
        free(w->tmp);
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
    free(w->tmp);
    free(w->base.name);
    free(w);
}

static void dir_put_abort(struct store_writer *sw)
{
    struct dir_writer *w = (struct dir_writer *)sw;
    unlink(w->tmp);
    dir_writer_free(w);
}

static int dir_mkparent(const char *path)
{
    char *copy = strdup(path), *slash;
    int rc = 0;
    if (!copy)
        return err_set(VK_ENOMEM, "out of memory");
    slash = strrchr(copy, '/');
    if (slash) {
        *slash = '\0';
        rc = util_mkdir_p(copy, 0700);
    }
    free(copy);
    return rc;
}

static int dir_fence_check(struct dir_store *d, const struct store_fence *f, const char *obj);

static int dir_place(const char *tmp, const char *final, int exclusive)
{
    return exclusive ? link(tmp, final) : rename(tmp, final);
}

static int dir_put_commit(struct store_writer *sw)
{
    struct dir_writer *w = (struct dir_writer *)sw;
    struct dir_store *d = (struct dir_store *)sw->store;
    char *final = dir_path(d, sw->name);
    int rc = 0;

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
    if (sw->n_fence) /* tests: a stall between the fence check and the link */
        testhook_gate("VMCKPT_TEST_LINK_GATE", strrchr(final, '/') + 1);
    /* Most parents exist already: create them only when the rename says so.
     * Exclusive: link(2), which never replaces, then drop the temporary name. */
    if (dir_place(w->tmp, final, sw->exclusive) < 0 &&
        (errno != ENOENT || (rc = dir_mkparent(final)) < 0 ||
         dir_place(w->tmp, final, sw->exclusive) < 0)) {
        if (rc == 0 && errno == EEXIST && sw->exclusive)
            rc = err_set(VK_EEXISTS, "store %s: object %s exists already", d->base.uri,
                         sw->name);
        else if (rc == 0)
            rc = err_errno(errno, "store %s: cannot commit object %s", d->base.uri, sw->name);
        goto out;
    }
    if (sw->exclusive)
        unlink(w->tmp);
    if (!sw->lazy)
        rc = util_fsync_dir_of(final);
out:
    if (rc < 0)
        unlink(w->tmp);
    free(final);
    dir_writer_free(w);
    return rc;
}

static int dir_read(struct store *s, const char *name, uint64_t off, void *buf, size_t len,
                    size_t *out_got)
{
    char *path = dir_path((struct dir_store *)s, name);
    size_t got = 0;
    int fd, rc = 0;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = err_errno(errno, "store %s: cannot open object %s", s->uri, name);
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
    free(path);
    *out_got = got;
    return rc;
}

static int dir_stat(struct store *s, const char *name, uint64_t *out_size)
{
    char *path = dir_path((struct dir_store *)s, name);
    struct stat st;
    int rc = 0;
    if (stat(path, &st) < 0)
        rc = err_errno(errno, "store %s: object %s", s->uri, name);
    else if (!S_ISREG(st.st_mode))
        rc = err_set(VK_ENOTFOUND, "store %s: object %s: not an object", s->uri, name);
    else if (out_size)
        *out_size = (uint64_t)st.st_size;
    free(path);
    return rc;
}

/* Walks dir (relative name rel) and reports regular files starting with prefix. */
static int dir_walk(struct dir_store *d, const char *rel, const char *prefix, store_list_fn fn,
                    void *arg)
{
    char *path = rel[0] ? dir_path(d, rel) : strdup(d->root);
    DIR *dir = path ? opendir(path) : NULL;
    struct dirent *e;
    int rc = 0;

    if (!dir) {
        free(path);
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
                if (S_ISDIR(st.st_mode))
                    rc = dir_walk(d, sub, prefix, fn, arg);
                else if (S_ISREG(st.st_mode) && strlen(sub) >= strlen(prefix))
                    rc = fn(arg, sub, (uint64_t)st.st_size, (int64_t)st.st_mtime);
            }
        }
        free(sub);
    }
    closedir(dir);
    free(path);
    return rc;
}

static int dir_list(struct store *s, const char *prefix, store_list_fn fn, void *arg)
{
    return dir_walk((struct dir_store *)s, "", prefix, fn, arg);
}

static int dir_remove(struct store *s, const char *name)
{
    char *path = dir_path((struct dir_store *)s, name);
    int rc = 0;
    if (unlink(path) < 0)
        rc = err_errno(errno, "store %s: cannot remove object %s", s->uri, name);
    free(path);
    return rc;
}

/* One syncfs() covers every lazy object: far cheaper than an fsync per chunk. */
static int dir_sync(struct store *s)
{
    struct dir_store *d = (struct dir_store *)s;
    int fd = open(d->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;
    if (fd < 0 || syncfs(fd) < 0)
        rc = err_errno(errno, "store %s: cannot sync", s->uri);
    if (fd >= 0)
        close(fd);
    return rc;
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

/* The highest generation in dir (0: none, or the directory does not exist). */
static int dir_lease_top_gen(struct dir_store *d, const char *dir, uint64_t *top)
{
    DIR *dh = opendir(dir);
    struct dirent *e;
    *top = 0;
    if (!dh)
        return errno == ENOENT ? 0 : err_errno(errno, "store %s: cannot read lease %s",
                                                d->base.uri, dir);
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

/* The lease's generation, holder, expiry and epoch. */
static int dir_lease_read(struct dir_store *d, const char *dir, struct dir_lease_state *st)
{
    for (int i = 0; i < DIR_LEASE_TRIES; i++) {
        char *text = NULL, *path;
        size_t len = 0;
        memset(st, 0, sizeof(*st));
        int rc = dir_lease_top_gen(d, dir, &st->gen);
        if (rc < 0 || st->gen == 0)
            return rc;
        path = util_fmt("%s/%0*" PRIu64, dir, DIR_LEASE_DIGITS, st->gen);
        if (!path)
            return err_set(VK_ENOMEM, "out of memory");
        struct stat sb;
        rc = util_read_file(path, &text, &len);
        if (rc == 0 && stat(path, &sb) < 0)
            rc = VK_ENOTFOUND;
        free(path);
        if (rc == 0) {
            st->written = sb.st_mtim;
            dir_lease_parse(text, len, st);
            free(text);
            return 0;
        }
        free(text);
        text = NULL;
        err_clear(); /* removed by a newer writer since the listing: list again */
    }
    return err_set(VK_EIO, "store %s: lease %s keeps changing while read", d->base.uri, dir);
}

/* The file system's time now: the mtime of a file written in dir. */
static int dir_fs_now(struct dir_store *d, const char *dir, struct timespec *now)
{
    char *tmp = util_fmt("%s/.tmp-clock-%d.%u", dir, (int)getpid(),
                         atomic_fetch_add(&dir_tmp_seq, 1));
    struct stat sb;
    int fd = tmp ? open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600) : -1;
    int rc = fd >= 0 && fstat(fd, &sb) == 0
                 ? 0
                 : err_errno(errno, "store %s: cannot read the file system's clock in %s",
                             d->base.uri, dir);
    if (rc == 0)
        *now = sb.st_mtim;
    if (fd >= 0) {
        close(fd);
        unlink(tmp);
    }
    free(tmp);
    return rc;
}

static int64_t dir_ms_between(const struct timespec *a, const struct timespec *b)
{
    return ((int64_t)b->tv_sec - a->tv_sec) * 1000 + (b->tv_nsec - a->tv_nsec) / 1000000;
}

/* Removes the generations below gen, and temporaries older than a minute
 * (left by a writer that died); returns the highest generation seen. One
 * pass, best effort. */
static uint64_t dir_lease_prune(const char *dir, uint64_t gen)
{
    DIR *dh = opendir(dir);
    struct dirent *e;
    time_t old = time(NULL) - 60;
    uint64_t top = 0;
    while (dh && (e = readdir(dh))) {
        uint64_t g = 0;
        struct stat st;
        char *path = NULL;
        int is_gen = dir_lease_gen_of(e->d_name, &g);
        if (is_gen && g > top)
            top = g;
        if (is_gen ? g < gen : !strncmp(e->d_name, ".tmp-", 5))
            path = util_fmt("%s/%s", dir, e->d_name);
        if (path && (is_gen || (stat(path, &st) == 0 && st.st_mtime < old)))
            unlink(path);
        free(path);
    }
    if (dh)
        closedir(dh);
    return top;
}

/* Writes generation gen of the lease: VK_EBUSY when another writer got there
 * first (that generation or a higher one exists). */
static int dir_lease_write(struct dir_store *d, const char *dir, uint64_t gen, const char *owner,
                           int duration_ms, uint64_t epoch)
{
    int64_t expiry_ms = owner[0] == '-' ? 0 : util_wall_us() / 1000 + duration_ms;
    char *tmp = util_fmt("%s/.tmp-%d.%u", dir, (int)getpid(), atomic_fetch_add(&dir_tmp_seq, 1));
    char *path = util_fmt("%s/%0*" PRIu64, dir, DIR_LEASE_DIGITS, gen);
    char *text = util_fmt("%s %" PRId64 " %" PRIu64 " %d\n", owner, expiry_ms, epoch, duration_ms);
    int rc = tmp && path && text ? dir_mkparent(tmp) : err_set(VK_ENOMEM, "out of memory");
    if (rc == 0)
        rc = util_write_file_atomic(tmp, text, strlen(text));
    if (rc == 0 && link(tmp, path) < 0)
        rc = errno == EEXIST ? VK_EBUSY
                             : err_errno(errno, "store %s: cannot write lease %s", d->base.uri, path);
    if (tmp)
        unlink(tmp);
    if (rc == 0 && dir_lease_prune(dir, gen) > gen) {
        unlink(path); /* a stale writer: the lease moved on while it stalled */
        rc = VK_EBUSY;
    }
    free(tmp);
    free(path);
    free(text);
    return rc;
}

/* One take or renewal. */
static int dir_lease_take(struct dir_store *d, const char *dir, const char *name,
                            const char *owner, int duration_ms, struct store_fence *out)
{
    for (int i = 0; i < DIR_LEASE_TRIES; i++) {
        struct dir_lease_state st;
        struct timespec now = {0, 0};
        int rc = dir_lease_read(d, dir, &st);
        if (rc < 0)
            return rc;
        if (st.owner[0] && strcmp(st.owner, owner) != 0) {
            int64_t held = st.duration_ms ? st.duration_ms : duration_ms; /* the holder's */
            if ((rc = dir_fs_now(d, dir, &now)) < 0)
                return rc;
            int64_t age = dir_ms_between(&st.written, &now);
            if (age <= held)
                return err_set(VK_EBUSY, "store %s: lease %s is held by another owner (%s, "
                                         "renewed %" PRId64 " ms ago, expires after %" PRId64
                                         ")", d->base.uri, name, st.owner, age, held);
        }
        uint64_t epoch = strcmp(st.owner, owner) == 0 ? st.epoch : st.epoch + 1;
        rc = dir_lease_write(d, dir, st.gen + 1, owner, duration_ms, epoch);
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
    char *dir = util_fmt("%s/%s.lease", d->root, name);
    int rc = dir ? dir_lease_take(d, dir, name, owner, duration_ms, out)
                 : err_set(VK_ENOMEM, "out of memory");
    if (rc < 0 && rc != VK_EBUSY)
        err_wrap(rc, "store %s: cannot take lease %s", s->uri, name);
    free(dir);
    return rc;
}

static int dir_unlease(struct store *s, const char *name, const char *owner)
{
    struct dir_store *d = (struct dir_store *)s;
    struct dir_lease_state st;
    char *dir = util_fmt("%s/%s.lease", d->root, name);
    int rc = dir ? dir_lease_read(d, dir, &st) : err_set(VK_ENOMEM, "out of memory");
    if (rc == 0 && strcmp(st.owner, owner) != 0)
        rc = err_set(VK_ENOTFOUND, "store %s: lease %s is not held by %s", s->uri, name, owner);
    if (rc == 0 && (rc = dir_lease_write(d, dir, st.gen + 1, "-", 0, st.epoch)) == VK_EBUSY)
        rc = err_set(VK_ENOTFOUND, "store %s: lease %s was taken by another owner meanwhile",
                     s->uri, name);
    free(dir);
    return rc;
}

/* A fenced write's proof: f's owner still holds the lease in f's epoch.
 * Expiry alone does not void it (a lease nobody has taken since is still its
 * holder's). Checked right before the link; a take-over between the two is
 * met by the new holder's void (see "leases"). */
static int dir_fence_check(struct dir_store *d, const struct store_fence *f, const char *obj)
{
    struct dir_lease_state st;
    char *dir = util_fmt("%s/%s.lease", d->root, f->lease);
    int rc = dir ? dir_lease_read(d, dir, &st) : err_set(VK_ENOMEM, "out of memory");
    if (rc == 0 && (strcmp(st.owner, f->owner) != 0 || st.epoch != f->epoch))
        rc = err_set(VK_ELEASE, "store %s: %s not written: lease %s is held by %s (epoch %" PRIu64
                                "), not by %s (epoch %" PRIu64 ")", d->base.uri, obj, f->lease,
                     st.owner[0] ? st.owner : "nobody", st.epoch, f->owner, f->epoch);
    free(dir);
    return rc;
}

/* A void is a directory at the object's path: link(2) to it fails (EEXIST),
 * and listings, stat and reads see no object there. */
static int dir_void(struct store *s, const char *name)
{
    char *path = dir_path((struct dir_store *)s, name);
    int rc = path ? dir_mkparent(path) : err_set(VK_ENOMEM, "out of memory");
    if (rc == 0 && mkdir(path, 0700) < 0)
        rc = errno == EEXIST ? err_set(VK_EEXISTS, "store %s: %s is taken", s->uri, name)
                             : err_errno(errno, "store %s: cannot void %s", s->uri, name);
    if (rc == 0)
        rc = util_fsync_dir_of(path);
    free(path);
    return rc;
}

static int dir_taken(struct store *s, const char *name)
{
    char *path = dir_path((struct dir_store *)s, name);
    struct stat st;
    int rc = !path ? err_set(VK_ENOMEM, "out of memory")
             : lstat(path, &st) == 0 ? 1
             : errno == ENOENT ? 0
                               : err_errno(errno, "store %s: cannot look up %s", s->uri, name);
    free(path);
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
