/* store_rados: Ceph RADOS through librados — replicated, distributed storage.
 *
 *   rados://POOL?conf=CEPH_CONF&id=CLIENT&keyring=FILE&replicas=N&timeout=S
 *
 * All parameters but the pool are optional (librados defaults: /etc/ceph).
 * The pool is made if missing; with replicas=N its size is set to N (and its
 * min_size to what keeps it writable with one replica down: N - N/2).
 *
 * An object is one RADOS object. A small one is written by a single compound
 * operation (data + the "vk.done" attribute), so it appears whole or not at
 * all. A large one is written in parts of STORE_RADOS_PART bytes with
 * asynchronous writes, STORE_RADOS_INFLIGHT at a time, and marked done by a
 * last operation; readers, stat and list treat an object without the mark as
 * absent. Reads ask for the mark in the same operation as the data (one round
 * trip) and may be served by any replica (BALANCE_READS). Every write is
 * acknowledged once on all replicas, so sync has nothing to do.
 *
 * Leases are RADOS exclusive locks with a duration (cls_lock), on an object
 * of the lease's name. */
#include "err.h"
#include "store.h"

#include <errno.h>
#include <jansson.h>
#include <rados/librados.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

extern const struct store_ops store_rados_ops;

#define STORE_RADOS_PART (4u << 20)
#define STORE_RADOS_INFLIGHT 4
#define STORE_RADOS_DONE "vk.done"

struct srados_store {
    struct store base;
    rados_t cluster;
    rados_ioctx_t io;
    int connected;
    char *pool;
};

struct srados_part {
    rados_completion_t c;
    char *buf;
};

struct srados_writer {
    struct store_writer base;
    char *buf; /* the part being filled */
    size_t len;
    uint64_t off; /* bytes already sent */
    struct srados_part parts[STORE_RADOS_INFLIGHT];
    int nparts;
    int rc;
};

/* ---- errors ------------------------------------------------------------------ */

static int srados_code(int r)
{
    switch (-r) {
    case ENOENT:
    case ECANCELED: /* the done mark is missing: not committed */
    case ENODATA:
        return VK_ENOTFOUND;
    case ETIMEDOUT:
        return VK_ETIMEOUT;
    case ENOSPC:
    case EDQUOT:
        return VK_ENOSPC;
    case EBUSY:
        return VK_EBUSY;
    case EPERM:
    case EACCES:
    case EINVAL:
        return VK_EINVAL;
    default:
        return VK_EIO;
    }
}

static int srados_fail(struct srados_store *r, int ret, const char *what, const char *name)
{
    return err_set(srados_code(ret), "store %s: cannot %s %s: %s", r->base.uri, what, name,
                   strerror(-ret));
}

/* ---- open ----------------------------------------------------------------------- */

static char *srados_param(const char *q, const char *key)
{
    size_t n = strlen(key);
    for (const char *p = q; p && *p; p = strchr(p, '&') ? strchr(p, '&') + 1 : NULL)
        if (!strncmp(p, key, n) && p[n] == '=')
            return strndup(p + n + 1, strcspn(p + n + 1, "&"));
    return NULL;
}

static void srados_free_store(struct store *s)
{
    struct srados_store *r = (struct srados_store *)s;
    if (!r)
        return;
    if (r->io)
        rados_ioctx_destroy(r->io);
    if (r->cluster)
        rados_shutdown(r->cluster);
    free(r->pool);
    free(r->base.uri);
    free(r);
}

/* Runs a monitor command; *out (may be NULL) gets its JSON answer (free()). */
static int srados_mon(struct srados_store *r, const char *json, char **out_text)
{
    const char *cmd[] = {json};
    char *out = NULL, *outs = NULL;
    size_t outlen = 0, outslen = 0;
    int ret = rados_mon_command(r->cluster, cmd, 1, "", 0, &out, &outlen, &outs, &outslen);
    if (ret < 0)
        err_set(srados_code(ret), "store %s: the monitor refused %s: %s%s%.*s", r->base.uri, json,
                strerror(-ret), outslen ? ": " : "", (int)outslen, outs ? outs : "");
    if (ret >= 0 && out_text)
        *out_text = strndup(out ? out : "", outlen);
    rados_buffer_free(out);
    rados_buffer_free(outs);
    return ret < 0 ? srados_code(ret) : 0;
}

/* Sets a pool variable unless it has that value already (each change makes
 * the cluster publish a new map, which clients then wait for). */
static int srados_pool_set(struct srados_store *r, const char *var, int val)
{
    char cmd[512], *text = NULL;
    snprintf(cmd, sizeof(cmd),
             "{\"prefix\": \"osd pool get\", \"pool\": \"%s\", \"var\": \"%s\", "
             "\"format\": \"json\"}",
             r->pool, var);
    if (srados_mon(r, cmd, &text) == 0) {
        json_t *j = json_loads(text, 0, NULL);
        int now = (int)json_integer_value(json_object_get(j, var));
        json_decref(j);
        free(text);
        if (now == val)
            return 0;
    }
    snprintf(cmd, sizeof(cmd),
             "{\"prefix\": \"osd pool set\", \"pool\": \"%s\", \"var\": \"%s\", "
             "\"val\": \"%d\", \"yes_i_really_mean_it\": true}",
             r->pool, var, val);
    return srados_mon(r, cmd, NULL);
}

/* Makes the pool if missing; sets its replica count when asked. */
static int srados_pool(struct srados_store *r, int replicas)
{
    char cmd[512];
    int ret = rados_pool_lookup(r->cluster, r->pool), rc = 0;
    if (ret == -ENOENT) {
        if ((ret = rados_pool_create(r->cluster, r->pool)) < 0 && ret != -EEXIST)
            return srados_fail(r, ret, "create pool", r->pool);
        snprintf(cmd, sizeof(cmd),
                 "{\"prefix\": \"osd pool application enable\", \"pool\": \"%s\", "
                 "\"app\": \"rados\", \"yes_i_really_mean_it\": true}",
                 r->pool);
        rc = srados_mon(r, cmd, NULL);
    }
    if (rc == 0 && replicas > 0)
        rc = srados_pool_set(r, "size", replicas);
    if (rc == 0 && replicas > 0)
        rc = srados_pool_set(r, "min_size", replicas - replicas / 2);
    return rc < 0 ? VK_EINVAL : 0;
}

static int srados_open_store(const char *uri, struct store **out)
{
    const char *rest = uri + strlen("rados://"), *q = strchr(rest, '?');
    struct srados_store *r = calloc(1, sizeof(*r));
    char *conf = NULL, *id = NULL, *keyring = NULL, *reps = NULL, *tmo = NULL;
    int rc = 0, ret, replicas = 0, timeout = 30;

    *out = NULL;
    if (!r)
        return err_set(VK_ENOMEM, "out of memory");
    r->base.ops = &store_rados_ops;
    r->pool = strndup(rest, q ? (size_t)(q - rest) : strlen(rest));
    r->base.uri = strndup(uri, q ? (size_t)(q - uri) : strlen(uri));
    if (q) {
        conf = srados_param(q + 1, "conf");
        id = srados_param(q + 1, "id");
        keyring = srados_param(q + 1, "keyring");
        reps = srados_param(q + 1, "replicas");
        tmo = srados_param(q + 1, "timeout");
    }
    if (!r->pool || !r->base.uri) {
        rc = err_set(VK_ENOMEM, "out of memory");
        goto out;
    }
    if (!r->pool[0] || strchr(r->pool, '/')) {
        rc = err_set(VK_EINVAL, "store '%s': expected rados://POOL?conf=...", uri);
        goto out;
    }
    replicas = reps ? atoi(reps) : 0;
    timeout = tmo ? atoi(tmo) : 30;
    if ((reps && (replicas < 1 || replicas > 10)) || timeout < 1 || timeout > 3600) {
        rc = err_set(VK_EINVAL, "store %s: replicas must be 1-10 and timeout 1-3600 s",
                     r->base.uri);
        goto out;
    }
    if ((ret = rados_create(&r->cluster, id ? id : "admin")) < 0) {
        rc = srados_fail(r, ret, "set up a client", "");
        goto out;
    }
    if ((ret = rados_conf_read_file(r->cluster, conf)) < 0) {
        rc = err_set(VK_EINVAL, "store %s: cannot read the Ceph configuration %s: %s",
                     r->base.uri, conf ? conf : "(default places)", strerror(-ret));
        goto out;
    }
    char t[16];
    snprintf(t, sizeof(t), "%d", timeout);
    /* A cluster that is down or unreachable gives an error in bounded time. */
    rados_conf_set(r->cluster, "client_mount_timeout", t);
    rados_conf_set(r->cluster, "rados_mon_op_timeout", t);
    rados_conf_set(r->cluster, "rados_osd_op_timeout", t);
    rados_conf_set(r->cluster, "log_to_stderr", "false");
    rados_conf_set(r->cluster, "err_to_stderr", "false");
    if (keyring)
        rados_conf_set(r->cluster, "keyring", keyring);
    if ((ret = rados_connect(r->cluster)) < 0) {
        rc = err_set(srados_code(ret) == VK_EINVAL ? VK_EINVAL : VK_EIO,
                     "store %s: cannot connect to the Ceph cluster of %s within %d s: %s",
                     r->base.uri, conf ? conf : "/etc/ceph/ceph.conf", timeout, strerror(-ret));
        goto out;
    }
    r->connected = 1;
    if ((rc = srados_pool(r, replicas)) < 0)
        goto out;
    if ((ret = rados_ioctx_create(r->cluster, r->pool, &r->io)) < 0)
        rc = srados_fail(r, ret, "open pool", r->pool);
out:
    free(conf);
    free(id);
    free(keyring);
    free(reps);
    free(tmo);
    if (rc < 0) {
        srados_free_store(&r->base);
        return rc;
    }
    *out = &r->base;
    return 0;
}

/* ---- reads ------------------------------------------------------------------------ */

static int srados_read_obj(struct store *s, const char *name, uint64_t off, void *buf, size_t len,
                          size_t *out_got)
{
    struct srados_store *r = (struct srados_store *)s;
    rados_read_op_t op = rados_create_read_op();
    size_t got = 0;
    int prval = 0, ret;
    *out_got = 0;
    if (!op)
        return err_set(VK_ENOMEM, "out of memory");
    rados_read_op_cmpxattr(op, STORE_RADOS_DONE, LIBRADOS_CMPXATTR_OP_EQ, "1", 1);
    rados_read_op_read(op, off, len, buf, &got, &prval);
    ret = rados_read_op_operate(op, r->io, name, LIBRADOS_OPERATION_BALANCE_READS);
    rados_release_read_op(op);
    if (ret == 0 && prval < 0)
        ret = prval;
    if (ret < 0 && srados_code(ret) == VK_ENOTFOUND)
        return err_set(VK_ENOTFOUND, "store %s: object %s does not exist", s->uri, name);
    if (ret < 0)
        return srados_fail(r, ret, "read", name);
    *out_got = got;
    return 0;
}

static int srados_stat_obj(struct srados_store *r, const char *name, uint64_t *size, int64_t *mtime)
{
    rados_read_op_t op = rados_create_read_op();
    uint64_t sz = 0;
    time_t mt = 0;
    int prval = 0, ret;
    if (!op)
        return err_set(VK_ENOMEM, "out of memory");
    rados_read_op_cmpxattr(op, STORE_RADOS_DONE, LIBRADOS_CMPXATTR_OP_EQ, "1", 1);
    rados_read_op_stat(op, &sz, &mt, &prval);
    ret = rados_read_op_operate(op, r->io, name, LIBRADOS_OPERATION_BALANCE_READS);
    rados_release_read_op(op);
    if (ret == 0 && prval < 0)
        ret = prval;
    if (ret < 0 && srados_code(ret) == VK_ENOTFOUND)
        return err_set(VK_ENOTFOUND, "store %s: object %s does not exist", r->base.uri, name);
    if (ret < 0)
        return srados_fail(r, ret, "look up", name);
    if (size)
        *size = sz;
    if (mtime)
        *mtime = (int64_t)mt;
    return 0;
}

static int srados_stat(struct store *s, const char *name, uint64_t *out_size)
{
    return srados_stat_obj((struct srados_store *)s, name, out_size, NULL);
}

static int srados_list(struct store *s, const char *prefix, store_list_fn fn, void *arg)
{
    struct srados_store *r = (struct srados_store *)s;
    rados_list_ctx_t ctx;
    const char *name;
    size_t pl = strlen(prefix);
    int ret = rados_nobjects_list_open(r->io, &ctx), rc = 0;
    if (ret < 0)
        return srados_fail(r, ret, "list", prefix[0] ? prefix : "the pool");
    while (rc == 0 && (ret = rados_nobjects_list_next(ctx, &name, NULL, NULL)) == 0) {
        uint64_t size;
        int64_t mtime;
        if (strncmp(name, prefix, pl) != 0)
            continue;
        char *copy = strdup(name);
        if (!copy) {
            rc = err_set(VK_ENOMEM, "out of memory");
            break;
        }
        rc = srados_stat_obj(r, copy, &size, &mtime);
        if (rc == VK_ENOTFOUND) /* being written, or deleted since */
            rc = 0;
        else if (rc == 0)
            rc = fn(arg, copy, size, mtime);
        free(copy);
    }
    rados_nobjects_list_close(ctx);
    if (rc == 0 && ret < 0 && ret != -ENOENT)
        rc = srados_fail(r, ret, "list", prefix[0] ? prefix : "the pool");
    return rc;
}

static int srados_remove_obj(struct store *s, const char *name)
{
    struct srados_store *r = (struct srados_store *)s;
    int ret = rados_remove(r->io, name);
    if (ret == -ENOENT)
        return err_set(VK_ENOTFOUND, "store %s: object %s does not exist", s->uri, name);
    return ret < 0 ? srados_fail(r, ret, "delete", name) : 0;
}

/* ---- writes ------------------------------------------------------------------------ */

static int srados_put_begin(struct store *s, const char *name, struct store_writer **out)
{
    struct srados_writer *w = calloc(1, sizeof(*w));
    if (!w || !(w->base.name = strdup(name)) || !(w->buf = malloc(STORE_RADOS_PART))) {
        if (w)
            free(w->base.name);
        free(w);
        return err_set(VK_ENOMEM, "out of memory");
    }
    w->base.store = s;
    *out = &w->base;
    return 0;
}

/* Waits for the oldest part in flight. */
static void srados_wait_one(struct srados_writer *w)
{
    struct srados_part *p = &w->parts[0];
    rados_aio_wait_for_complete(p->c);
    int ret = rados_aio_get_return_value(p->c);
    if (ret < 0 && w->rc == 0)
        w->rc = ret;
    rados_aio_release(p->c);
    free(p->buf);
    memmove(&w->parts[0], &w->parts[1], (size_t)(w->nparts - 1) * sizeof(*p));
    w->nparts--;
}

/* Sends the filled part asynchronously; the first one clears an older object. */
static int srados_send_part(struct srados_writer *w)
{
    struct srados_store *r = (struct srados_store *)w->base.store;
    int ret;
    if (w->off == 0 && (ret = rados_remove(r->io, w->base.name)) < 0 && ret != -ENOENT)
        return srados_fail(r, ret, "replace", w->base.name);
    if (w->nparts == STORE_RADOS_INFLIGHT)
        srados_wait_one(w);
    if (w->rc < 0)
        return srados_fail(r, w->rc, "write", w->base.name);
    struct srados_part *p = &w->parts[w->nparts];
    if (rados_aio_create_completion2(NULL, NULL, &p->c) < 0)
        return err_set(VK_ENOMEM, "out of memory");
    p->buf = w->buf;
    ret = rados_aio_write(r->io, w->base.name, p->c, p->buf, w->len, w->off);
    if (ret < 0) {
        rados_aio_release(p->c);
        return srados_fail(r, ret, "write", w->base.name);
    }
    w->nparts++;
    w->off += w->len;
    w->len = 0;
    if (!(w->buf = malloc(STORE_RADOS_PART)))
        return err_set(VK_ENOMEM, "out of memory");
    return 0;
}

static int srados_put_write(struct store_writer *sw, const void *data, size_t len)
{
    struct srados_writer *w = (struct srados_writer *)sw;
    const char *p = data;
    while (len > 0) {
        size_t take = STORE_RADOS_PART - w->len < len ? STORE_RADOS_PART - w->len : len;
        memcpy(w->buf + w->len, p, take);
        w->len += take;
        p += take;
        len -= take;
        if (w->len == STORE_RADOS_PART) {
            int rc = srados_send_part(w);
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

static void srados_writer_free(struct srados_writer *w)
{
    while (w->nparts > 0)
        srados_wait_one(w);
    free(w->buf);
    free(w->base.name);
    free(w);
}

static int srados_put_commit(struct store_writer *sw)
{
    struct srados_writer *w = (struct srados_writer *)sw;
    struct srados_store *r = (struct srados_store *)sw->store;
    rados_write_op_t op = rados_create_write_op();
    int ret = 0, rc = 0;
    if (!op) {
        srados_writer_free(w);
        return err_set(VK_ENOMEM, "out of memory");
    }
    if (w->off == 0) { /* all of it in one operation: whole or nothing */
        if (sw->exclusive)
            rados_write_op_create(op, LIBRADOS_CREATE_EXCLUSIVE, NULL);
        rados_write_op_write_full(op, w->buf, w->len);
    } else {
        if (sw->exclusive) { /* parts already written: it is ours, or refused at begin */
            rc = err_set(VK_EINVAL, "store %s: an exclusive object must fit one operation (%s)",
                         r->base.uri, sw->name);
            goto out;
        }
        if (w->len > 0 && (rc = srados_send_part(w)) < 0)
            goto out;
        while (w->nparts > 0)
            srados_wait_one(w);
        if (w->rc < 0) {
            rc = srados_fail(r, w->rc, "write", sw->name);
            goto out;
        }
        rados_write_op_assert_exists(op);
    }
    rados_write_op_setxattr(op, STORE_RADOS_DONE, "1", 1);
    ret = rados_write_op_operate(op, r->io, sw->name, NULL, 0);
    if (ret == -EEXIST && sw->exclusive)
        rc = err_set(VK_EEXISTS, "store %s: object %s exists already", r->base.uri, sw->name);
    else if (ret < 0)
        rc = srados_fail(r, ret, "commit", sw->name);
out:
    rados_release_write_op(op);
    if (rc < 0 && w->off > 0)
        rados_remove(r->io, sw->name); /* best effort: no half object left */
    srados_writer_free(w);
    return rc;
}

static void srados_put_abort(struct store_writer *sw)
{
    struct srados_writer *w = (struct srados_writer *)sw;
    int sent = w->off > 0;
    while (w->nparts > 0)
        srados_wait_one(w);
    if (sent)
        rados_remove(((struct srados_store *)sw->store)->io, sw->name);
    srados_writer_free(w);
}

/* ---- leases --------------------------------------------------------------------------- */

/* RADOS ties a lock to the client instance that took it; a lease belongs to
 * its owner (a node), whose agent may have restarted since: a lock with our
 * owner's cookie held by another client instance is ours, broken and taken
 * again. */
static int srados_break_own(struct srados_store *r, const char *name, const char *owner)
{
    char tag[256], clients[1024], cookies[1024], addrs[1024];
    size_t tl = sizeof(tag), cl = sizeof(clients), kl = sizeof(cookies), al = sizeof(addrs);
    int excl = 0;
    ssize_t n = rados_list_lockers(r->io, name, "vmckpt", &excl, tag, &tl, clients, &cl, cookies,
                                   &kl, addrs, &al);
    if (n != 1 || strcmp(cookies, owner) != 0)
        return -EBUSY; /* another owner's */
    return rados_break_lock(r->io, name, "vmckpt", clients, cookies);
}

static int srados_lease(struct store *s, const char *name, const char *owner, int duration_ms)
{
    struct srados_store *r = (struct srados_store *)s;
    struct timeval d = {.tv_sec = duration_ms / 1000, .tv_usec = (duration_ms % 1000) * 1000};
    int ret = rados_lock_exclusive(r->io, name, "vmckpt", owner, "vmckpt lease", &d,
                                   LIBRADOS_LOCK_FLAG_MAY_RENEW);
    if (ret == -EBUSY && srados_break_own(r, name, owner) == 0)
        ret = rados_lock_exclusive(r->io, name, "vmckpt", owner, "vmckpt lease", &d,
                                   LIBRADOS_LOCK_FLAG_MAY_RENEW);
    if (ret == -EEXIST) /* ours already */
        return 0;
    if (ret == -EBUSY)
        return err_set(VK_EBUSY, "store %s: lease %s is held by another owner", s->uri, name);
    return ret < 0 ? srados_fail(r, ret, "take lease", name) : 0;
}

static int srados_unlease(struct store *s, const char *name, const char *owner)
{
    struct srados_store *r = (struct srados_store *)s;
    int ret = rados_unlock(r->io, name, "vmckpt", owner);
    if (ret == -ENOENT)
        return err_set(VK_ENOTFOUND, "store %s: lease %s is not held by %s", s->uri, name, owner);
    return ret < 0 ? srados_fail(r, ret, "release lease", name) : 0;
}

const struct store_ops store_rados_ops = {
    .version = STORE_OPS_VERSION,
    .scheme = "rados",
    .open = srados_open_store,
    .free = srados_free_store,
    .put_begin = srados_put_begin,
    .put_write = srados_put_write,
    .put_commit = srados_put_commit,
    .put_abort = srados_put_abort,
    .read = srados_read_obj,
    .stat = srados_stat,
    .list = srados_list,
    .remove = srados_remove_obj,
    .sync = NULL,
    .lease = srados_lease,
    .unlease = srados_unlease,
};
