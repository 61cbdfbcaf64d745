#include "store.h"

#include "err.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern const struct store_ops store_dir_ops;
#ifdef VMCKPT_TEST_HOOKS
extern const struct store_ops store_fault_ops; /* tests only */
#endif
extern const struct store_ops store_ftp_ops, store_sftp_ops;
#ifdef VMCKPT_HAVE_RADOS
extern const struct store_ops store_rados_ops;
#endif

static const struct store_ops *const store_backends[] = {
    &store_dir_ops, &store_ftp_ops, &store_sftp_ops,
#ifdef VMCKPT_TEST_HOOKS
    &store_fault_ops,
#endif
#ifdef VMCKPT_HAVE_RADOS
    &store_rados_ops,
#endif
};

/* Backends optional at build time and left out of this build: scheme, and
 * what was missing when it was built. */
static const char *const store_absent[][2] = {
#ifndef VMCKPT_HAVE_RADOS
    {"rados", "librados-dev"},
#endif
    {NULL, NULL},
};

const char *store_schemes(void)
{
#ifdef VMCKPT_HAVE_RADOS
    return "file, rados, ftp, sftp";
#else
    return "file, ftp, sftp (rados left out: built without librados-dev)";
#endif
}

#define STORE_IO_BUF (1 << 20)

int store_valid_name(const char *name)
{
    const char *p = name;
    if (!name || !*name || *name == '/' || strlen(name) > 1024)
        return 0;
    while (*p) {
        const char *end = strchr(p, '/');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == 0 || p[0] == '.')
            return 0; /* no empty, hidden, "." or ".." components */
        for (size_t i = 0; i < n; i++) {
            char c = p[i];
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-'))
                return 0;
        }
        p += n;
        if (*p == '/')
            p++;
    }
    return p[-1] != '/';
}

int store_open(const char *uri, struct store **out)
{
    const char *colon = strstr(uri, "://");
    size_t n = colon ? (size_t)(colon - uri) : 0;

    *out = NULL;
    if (!colon && uri[0] == '/')
        return store_dir_ops.open(uri, out);
    for (size_t i = 0; colon && i < sizeof(store_backends) / sizeof(store_backends[0]); i++) {
        const struct store_ops *ops = store_backends[i];
        if (strlen(ops->scheme) == n && !strncmp(uri, ops->scheme, n)) {
            if (ops->version != STORE_OPS_VERSION)
                return err_set(VK_EINVAL, "store backend %s has version %d, want %d",
                               ops->scheme, ops->version, STORE_OPS_VERSION);
            return ops->open(uri, out);
        }
    }
    for (size_t i = 0; colon && store_absent[i][0]; i++)
        if (strlen(store_absent[i][0]) == n && !strncmp(uri, store_absent[i][0], n))
            return err_set(VK_EINVAL, "store URI: %s:// is not in this build of vmckpt: it was "
                                      "built without %s; install that and rebuild",
                           store_absent[i][0], store_absent[i][1]);
    return err_set(VK_EINVAL, "store URI: unknown scheme '%.*s' (this build has: %s)",
                   (int)(n > 16 ? 16 : n), uri, store_schemes());
}

void store_free(struct store *s)
{
    if (s)
        s->ops->free(s);
}

const char *store_uri(const struct store *s) { return s->uri; }

unsigned store_caps(const struct store *s) { return s->ops->caps; }

int store_copies(struct store *s)
{
    int n = s->ops->copies ? s->ops->copies(s) : 1;
    return n > 0 ? n : 1;
}

size_t store_read_gap(const struct store *s)
{
    return s->ops->read_gap ? s->ops->read_gap : (size_t)64 << 10;
}

int store_put_begin(struct store *s, const char *name, struct store_writer **out)
{
    *out = NULL;
    if (!store_valid_name(name))
        return err_set(VK_EINVAL, "bad object name '%s'", name);
    return s->ops->put_begin(s, name, out);
}

int store_put_write(struct store_writer *w, const void *data, size_t len)
{
    int rc = w->store->ops->put_write(w, data, len);
    if (rc == 0)
        w->written += len;
    return rc;
}

int store_put_commit(struct store_writer *w)
{
    if (w->n_fence && (!w->fence || w->n_fence > STORE_FENCE_MAX || !w->exclusive ||
                       !w->store->ops->lease)) {
        struct store *s = w->store;
        char *name = strdup(w->name);
        store_put_abort(w);
        int rc = err_set(VK_EINVAL, "store %s: cannot fence object %s (no leases, or not new)",
                         s->uri, name ? name : "?");
        free(name);
        return rc;
    }
    return w->store->ops->put_commit(w);
}

void store_put_abort(struct store_writer *w)
{
    if (w)
        w->store->ops->put_abort(w);
}

int store_read(struct store *s, const char *name, uint64_t off, void *buf, size_t len,
               size_t *out_got)
{
    if (!store_valid_name(name))
        return err_set(VK_EINVAL, "bad object name '%s'", name);
    return s->ops->read(s, name, off, buf, len, out_got);
}

int store_stat(struct store *s, const char *name, uint64_t *out_size)
{
    if (!store_valid_name(name))
        return err_set(VK_EINVAL, "bad object name '%s'", name);
    return s->ops->stat(s, name, out_size);
}

int store_list(struct store *s, const char *prefix, store_list_fn fn, void *arg)
{
    return s->ops->list(s, prefix, fn, arg);
}

int store_remove(struct store *s, const char *name)
{
    if (!store_valid_name(name))
        return err_set(VK_EINVAL, "bad object name '%s'", name);
    return s->ops->remove(s, name);
}

int store_sync(struct store *s)
{
    return s->ops->sync ? s->ops->sync(s) : 0;
}

static int store_put_whole(struct store *s, const char *name, const void *data, size_t len,
                           int exclusive, const struct store_fence *fence, size_t n_fence)
{
    struct store_writer *w;
    int rc = store_put_begin(s, name, &w);
    if (rc < 0)
        return rc;
    w->exclusive = exclusive;
    w->fence = fence;
    w->n_fence = n_fence;
    rc = store_put_write(w, data, len);
    if (rc < 0) {
        store_put_abort(w);
        return rc;
    }
    return store_put_commit(w);
}

int store_put_buf(struct store *s, const char *name, const void *data, size_t len)
{
    return store_put_whole(s, name, data, len, 0, NULL, 0);
}

int store_put_new(struct store *s, const char *name, const void *data, size_t len)
{
    return store_put_whole(s, name, data, len, 1, NULL, 0);
}

int store_put_fenced(struct store *s, const struct store_fence *f, size_t n, const char *name,
                     const void *data, size_t len)
{
    if (!s->ops->lease)
        return err_set(VK_EINVAL, "store %s has no leases to fence %s with", s->uri, name);
    if (n < 1 || n > STORE_FENCE_MAX)
        return err_set(VK_EINVAL, "%zu proofs of leases to fence %s with (1-%d)", n, name,
                       STORE_FENCE_MAX);
    for (size_t i = 0; i < n; i++)
        if (!store_valid_name(f[i].lease) || !f[i].owner[0])
            return err_set(VK_EINVAL, "bad lease '%s' to fence %s with", f[i].lease, name);
    return store_put_whole(s, name, data, len, 1, f, n);
}

int store_lease_fenced(struct store *s, const char *name, const char *owner, int duration_ms,
                       struct store_fence *out)
{
    if (!store_valid_name(name))
        return err_set(VK_EINVAL, "bad lease name '%s'", name);
    if (!owner[0] || strlen(owner) >= sizeof(out->owner) || strlen(name) >= sizeof(out->lease) ||
        strpbrk(owner, " \t\n"))
        return err_set(VK_EINVAL, "bad lease owner '%s'", owner);
    if (!s->ops->lease)
        return err_set(VK_EINVAL, "store %s has no leases", s->uri);
    if (out) {
        memset(out, 0, sizeof(*out));
        snprintf(out->lease, sizeof(out->lease), "%s", name);
        snprintf(out->owner, sizeof(out->owner), "%s", owner);
    }
    return s->ops->lease(s, name, owner, duration_ms, out);
}

int store_void(struct store *s, const char *name)
{
    if (!store_valid_name(name))
        return err_set(VK_EINVAL, "bad object name '%s'", name);
    if (!s->ops->void_name)
        return err_set(VK_EINVAL, "store %s cannot void names", s->uri);
    return s->ops->void_name(s, name);
}

int store_taken(struct store *s, const char *name)
{
    if (!store_valid_name(name))
        return err_set(VK_EINVAL, "bad object name '%s'", name);
    if (!s->ops->taken)
        return err_set(VK_EINVAL, "store %s cannot void names", s->uri);
    return s->ops->taken(s, name);
}

int store_lease(struct store *s, const char *name, const char *owner, int duration_ms)
{
    return store_lease_fenced(s, name, owner, duration_ms, NULL);
}

int store_unlease(struct store *s, const char *name, const char *owner)
{
    if (!s->ops->unlease)
        return err_set(VK_EINVAL, "store %s has no leases", s->uri);
    return s->ops->unlease(s, name, owner);
}

int store_check_writable(struct store *s, const char *probe_name)
{
    int rc = store_put_buf(s, probe_name, "probe\n", 6);
    if (rc < 0)
        return err_wrap(rc, "store %s does not take writes", s->uri);
    return store_remove(s, probe_name);
}

int store_get_buf(struct store *s, const char *name, char **out, size_t *out_len)
{
    uint64_t size;
    size_t got = 0;
    char *buf;
    int rc;

    *out = NULL;
    rc = store_stat(s, name, &size);
    if (rc < 0)
        return rc;
    if (size > (64u << 20))
        return err_set(VK_EINVAL, "object %s is too big to load in memory (%llu bytes)", name,
                       (unsigned long long)size);
    buf = malloc(size + 1);
    if (!buf)
        return err_set(VK_ENOMEM, "out of memory");
    rc = store_read(s, name, 0, buf, size, &got);
    if (rc == 0 && got != size)
        rc = err_set(VK_ECORRUPT, "object %s changed size while read", name);
    if (rc < 0) {
        free(buf);
        return rc;
    }
    buf[size] = '\0';
    *out = buf;
    if (out_len)
        *out_len = size;
    return 0;
}

int store_put_file(struct store *s, const char *name, const char *path,
                   char out_sha[UTIL_SHA256_HEX], uint64_t *out_size,
                   void (*progress)(void *arg, uint64_t done), void *progress_arg)
{
    struct store_writer *w = NULL;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    char *buf = malloc(STORE_IO_BUF);
    uint64_t total = 0;
    int fd = -1, rc;

    if (!ctx || !buf) {
        rc = err_set(VK_ENOMEM, "out of memory");
        goto out;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = err_errno(errno, "cannot open %s", path);
        goto out;
    }
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    rc = store_put_begin(s, name, &w);
    while (rc == 0) {
        ssize_t r = read(fd, buf, STORE_IO_BUF);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = err_errno(errno, "cannot read %s", path);
            break;
        }
        if (r == 0)
            break;
        EVP_DigestUpdate(ctx, buf, (size_t)r);
        rc = store_put_write(w, buf, (size_t)r);
        total += (uint64_t)r;
        if (progress)
            progress(progress_arg, total);
    }
    if (rc < 0) {
        store_put_abort(w);
        goto out;
    }
    rc = store_put_commit(w);
    if (rc == 0) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned n;
        EVP_DigestFinal_ex(ctx, md, &n);
        if (out_sha)
            util_hex(md, n, out_sha);
        if (out_size)
            *out_size = total;
    }
out:
    if (fd >= 0)
        close(fd);
    free(buf);
    EVP_MD_CTX_free(ctx);
    return rc;
}

static int store_write_all(int fd, const char *buf, size_t len, const char *path)
{
    while (len > 0) {
        ssize_t w = write(fd, buf, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return err_errno(errno, "cannot write %s", path);
        buf += w;
        len -= (size_t)w;
    }
    return 0;
}

int store_get_file(struct store *s, const char *name, const char *path, uint64_t want_size,
                   const char *want_sha)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    char *buf = malloc(STORE_IO_BUF), *part = util_part_path(path);
    char sha[UTIL_SHA256_HEX];
    uint64_t off = 0, size = 0;
    int fd = -1, rc;

    if (!ctx || !buf || !part) {
        rc = err_set(VK_ENOMEM, "out of memory");
        goto out;
    }
    rc = store_stat(s, name, &size);
    if (rc < 0)
        goto out;
    if (size != want_size) {
        rc = err_set(VK_ECORRUPT, "object %s in %s has %llu bytes, its manifest says %llu",
                     name, s->uri, (unsigned long long)size, (unsigned long long)want_size);
        goto out;
    }
    fd = open(part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = err_errno(errno, "cannot create %s", part);
        goto out;
    }
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    while (off < size) {
        size_t got = 0;
        rc = store_read(s, name, off, buf, STORE_IO_BUF, &got);
        if (rc < 0)
            goto out;
        if (got == 0) {
            rc = err_set(VK_ECORRUPT, "object %s in %s is truncated at %llu bytes", name,
                         s->uri, (unsigned long long)off);
            goto out;
        }
        EVP_DigestUpdate(ctx, buf, got);
        rc = store_write_all(fd, buf, got, part);
        if (rc < 0)
            goto out;
        off += got;
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n;
    EVP_DigestFinal_ex(ctx, md, &n);
    util_hex(md, n, sha);
    if (want_sha && strcmp(sha, want_sha) != 0) {
        rc = err_set(VK_ECORRUPT,
                     "object %s in %s is damaged: its SHA-256 is %.16s..., the manifest says "
                     "%.16s...",
                     name, s->uri, sha, want_sha);
        goto out;
    }
    if (fsync(fd) < 0 || rename(part, path) < 0)
        rc = err_errno(errno, "cannot finish %s", path);
out:
    if (fd >= 0)
        close(fd);
    if (rc < 0 && part)
        unlink(part);
    free(part);
    free(buf);
    EVP_MD_CTX_free(ctx);
    return rc;
}
