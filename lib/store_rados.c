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
 * of the lease's name; a fenced commit is fenced by blocklisting (see
 * "leases" below). */
#include "err.h"
#include "log.h"
#include "store.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <rados/librados.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

extern const struct store_ops store_rados_ops;

#define STORE_RADOS_PART (4u << 20)
#define STORE_RADOS_INFLIGHT 4
#define STORE_RADOS_DONE "vk.done"
#define SRADOS_HOLDER "vk.holder" /* of a lease object: see "leases" below */

/* A connection to the cluster. One that another node blocklisted (it took a
 * lease of this node over) is marked dead and replaced at the next call; it
 * is kept until the store is freed, as writers in flight may still hold it. */
struct srados_conn {
    rados_t cluster;
    rados_ioctx_t io;
    uint64_t gen;
    atomic_int dead;
    char addr[128]; /* as the cluster sees it (from our own lock), once known */
    struct srados_conn *older;
};

struct srados_store {
    struct store base;
    pthread_mutex_t mu; /* guards conn */
    struct srados_conn *conn;
    char *pool;
    char *conf, *id, *keyring; /* how to connect again */
    int timeout;
    int copies; /* the pool's size when opened */
};

struct srados_part {
    rados_completion_t c;
    char *buf;
};

struct srados_writer {
    struct store_writer base;
    struct srados_conn *c; /* the connection its parts went through */
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

static int srados_fail(struct srados_store *r, struct srados_conn *c, int ret, const char *what,
                       const char *name)
{
    if (ret == -ESHUTDOWN && c) { /* librados: EBLOCKLISTED */
        atomic_store(&c->dead, 1);
        return err_set(VK_ELEASE, "store %s: cannot %s %s: this node's client was blocklisted by "
                                  "another node (one that took over a lease of this node); the "
                                  "next call connects again", r->base.uri, what, name);
    }
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

static void srados_conn_free(struct srados_conn *c)
{
    while (c) {
        struct srados_conn *older = c->older;
        if (c->io)
            rados_ioctx_destroy(c->io);
        if (c->cluster)
            rados_shutdown(c->cluster);
        free(c);
        c = older;
    }
}

static void srados_free_store(struct store *s)
{
    struct srados_store *r = (struct srados_store *)s;
    if (!r)
        return;
    srados_conn_free(r->conn);
    pthread_mutex_destroy(&r->mu);
    free(r->pool);
    free(r->conf);
    free(r->id);
    free(r->keyring);
    free(r->base.uri);
    free(r);
}

/* A new connection (*out, even on failure: srados_conn_free()), without its
 * pool's context yet (srados_open_pool: the pool may have to be made first). */
static int srados_connect(struct srados_store *r, struct srados_conn **out)
{
    struct srados_conn *c = calloc(1, sizeof(*c));
    char t[16];
    int ret;
    *out = c;
    if (!c)
        return err_set(VK_ENOMEM, "out of memory");
    if ((ret = rados_create(&c->cluster, r->id ? r->id : "admin")) < 0)
        return srados_fail(r, NULL, ret, "set up a client", "");
    if ((ret = rados_conf_read_file(c->cluster, r->conf)) < 0)
        return err_set(VK_EINVAL, "store %s: cannot read the Ceph configuration %s: %s",
                       r->base.uri, r->conf ? r->conf : "(default places)", strerror(-ret));
    snprintf(t, sizeof(t), "%d", r->timeout);
    /* A cluster that is down or unreachable gives an error in bounded time. */
    rados_conf_set(c->cluster, "client_mount_timeout", t);
    rados_conf_set(c->cluster, "rados_mon_op_timeout", t);
    rados_conf_set(c->cluster, "rados_osd_op_timeout", t);
    rados_conf_set(c->cluster, "log_to_stderr", "false");
    rados_conf_set(c->cluster, "err_to_stderr", "false");
    if (r->keyring)
        rados_conf_set(c->cluster, "keyring", r->keyring);
    if ((ret = rados_connect(c->cluster)) < 0) {
        rados_shutdown(c->cluster);
        c->cluster = NULL; /* (shutdown of a client that never connected) */
        return err_set(srados_code(ret) == VK_EINVAL ? VK_EINVAL : VK_EIO,
                       "store %s: cannot connect to the Ceph cluster of %s within %d s: %s",
                       r->base.uri, r->conf ? r->conf : "/etc/ceph/ceph.conf", r->timeout,
                       strerror(-ret));
    }
    return 0;
}

static int srados_open_pool(struct srados_store *r, struct srados_conn *c)
{
    int ret = rados_ioctx_create(c->cluster, r->pool, &c->io);
    return ret < 0 ? srados_fail(r, c, ret, "open pool", r->pool) : 0;
}

/* The connection to use: the current one, replaced first if it was
 * blocklisted. A failed reconnect leaves the dead one (its calls fail). */
static struct srados_conn *srados_use(struct srados_store *r)
{
    pthread_mutex_lock(&r->mu);
    struct srados_conn *c = r->conn, *fresh = NULL;
    if (atomic_load(&c->dead)) {
        int rc = srados_connect(r, &fresh);
        if (rc == 0)
            rc = srados_open_pool(r, fresh);
        if (rc == 0) {
            fresh->gen = c->gen + 1;
            fresh->older = c;
            r->conn = c = fresh;
            log_warn("store %s: connected again after this node's client was blocklisted",
                     r->base.uri);
        } else {
            log_warn("store %s: %s", r->base.uri, err_msg());
            srados_conn_free(fresh);
        }
    }
    pthread_mutex_unlock(&r->mu);
    return c;
}

/* Runs a monitor command; *out (may be NULL) gets its JSON answer (free()). */
static int srados_mon(struct srados_store *r, const char *json, char **out_text)
{
    const char *cmd[] = {json};
    char *out = NULL, *outs = NULL;
    size_t outlen = 0, outslen = 0;
    int ret = rados_mon_command(r->conn->cluster, cmd, 1, "", 0, &out, &outlen, &outs, &outslen);
    if (ret < 0)
        err_set(srados_code(ret), "store %s: the monitor refused %s: %s%s%.*s", r->base.uri, json,
                strerror(-ret), outslen ? ": " : "", (int)outslen, outs ? outs : "");
    if (ret >= 0 && out_text)
        *out_text = strndup(out ? out : "", outlen);
    rados_buffer_free(out);
    rados_buffer_free(outs);
    return ret < 0 ? srados_code(ret) : 0;
}

/* A pool variable's value, or 0 when it cannot be read. */
static int srados_pool_get(struct srados_store *r, const char *var)
{
    char cmd[512], *text = NULL;
    int v = 0;
    snprintf(cmd, sizeof(cmd),
             "{\"prefix\": \"osd pool get\", \"pool\": \"%s\", \"var\": \"%s\", "
             "\"format\": \"json\"}",
             r->pool, var);
    if (srados_mon(r, cmd, &text) == 0) {
        json_t *j = json_loads(text, 0, NULL);
        json_int_t n = json_integer_value(json_object_get(j, var));
        v = n > 0 && n <= 100 ? (int)n : 0;
        json_decref(j);
        free(text);
    }
    return v;
}

static int srados_copies(struct store *s) { return ((struct srados_store *)s)->copies; }

/* Sets a pool variable unless it has that value already (each change makes
 * the cluster publish a new map, which clients then wait for). */
static int srados_pool_set(struct srados_store *r, const char *var, int val)
{
    char cmd[512];
    if (srados_pool_get(r, var) == val)
        return 0;
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
    int ret = rados_pool_lookup(r->conn->cluster, r->pool), rc = 0;
    if (ret == -ENOENT) {
        if ((ret = rados_pool_create(r->conn->cluster, r->pool)) < 0 && ret != -EEXIST)
            return srados_fail(r, r->conn, ret, "create pool", r->pool);
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
    int rc = 0, replicas = 0, timeout = 30;

    *out = NULL;
    if (!r)
        return err_set(VK_ENOMEM, "out of memory");
    r->base.ops = &store_rados_ops;
    pthread_mutex_init(&r->mu, NULL);
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
    r->conf = conf;
    r->id = id;
    r->keyring = keyring;
    r->timeout = timeout;
    conf = id = keyring = NULL;
    if ((rc = srados_connect(r, &r->conn)) < 0)
        goto out;
    if ((rc = srados_pool(r, replicas)) < 0)
        goto out;
    r->copies = replicas > 0 ? replicas : srados_pool_get(r, "size");
    rc = srados_open_pool(r, r->conn);
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
    struct srados_conn *c = srados_use(r);
    rados_read_op_t op = rados_create_read_op();
    size_t got = 0;
    int prval = 0, ret;
    *out_got = 0;
    if (!op)
        return err_set(VK_ENOMEM, "out of memory");
    rados_read_op_cmpxattr(op, STORE_RADOS_DONE, LIBRADOS_CMPXATTR_OP_EQ, "1", 1);
    rados_read_op_read(op, off, len, buf, &got, &prval);
    ret = rados_read_op_operate(op, c->io, name, LIBRADOS_OPERATION_BALANCE_READS);
    rados_release_read_op(op);
    if (ret == 0 && prval < 0)
        ret = prval;
    if (ret < 0 && srados_code(ret) == VK_ENOTFOUND)
        return err_set(VK_ENOTFOUND, "store %s: object %s does not exist", s->uri, name);
    if (ret < 0)
        return srados_fail(r, c, ret, "read", name);
    *out_got = got;
    return 0;
}

static int srados_stat_obj(struct srados_store *r, const char *name, uint64_t *size, int64_t *mtime)
{
    struct srados_conn *c = srados_use(r);
    rados_read_op_t op = rados_create_read_op();
    uint64_t sz = 0;
    time_t mt = 0;
    int prval = 0, ret;
    if (!op)
        return err_set(VK_ENOMEM, "out of memory");
    rados_read_op_cmpxattr(op, STORE_RADOS_DONE, LIBRADOS_CMPXATTR_OP_EQ, "1", 1);
    rados_read_op_stat(op, &sz, &mt, &prval);
    ret = rados_read_op_operate(op, c->io, name, LIBRADOS_OPERATION_BALANCE_READS);
    rados_release_read_op(op);
    if (ret == 0 && prval < 0)
        ret = prval;
    if (ret < 0 && srados_code(ret) == VK_ENOTFOUND)
        return err_set(VK_ENOTFOUND, "store %s: object %s does not exist", r->base.uri, name);
    if (ret < 0)
        return srados_fail(r, c, ret, "look up", name);
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
    struct srados_conn *c = srados_use(r);
    rados_list_ctx_t ctx;
    const char *name;
    size_t pl = strlen(prefix);
    int ret = rados_nobjects_list_open(c->io, &ctx), rc = 0;
    if (ret < 0)
        return srados_fail(r, c, ret, "list", prefix[0] ? prefix : "the pool");
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
        rc = srados_fail(r, c, ret, "list", prefix[0] ? prefix : "the pool");
    return rc;
}

static int srados_remove_obj(struct store *s, const char *name)
{
    struct srados_store *r = (struct srados_store *)s;
    struct srados_conn *c = srados_use(r);
    int ret = rados_remove(c->io, name);
    if (ret == -ENOENT)
        return err_set(VK_ENOTFOUND, "store %s: object %s does not exist", s->uri, name);
    return ret < 0 ? srados_fail(r, c, ret, "delete", name) : 0;
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
    w->c = srados_use((struct srados_store *)s);
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
    if (w->off == 0 && (ret = rados_remove(w->c->io, w->base.name)) < 0 && ret != -ENOENT)
        return srados_fail(r, w->c, ret, "replace", w->base.name);
    if (w->nparts == STORE_RADOS_INFLIGHT)
        srados_wait_one(w);
    if (w->rc < 0)
        return srados_fail(r, w->c, w->rc, "write", w->base.name);
    struct srados_part *p = &w->parts[w->nparts];
    if (rados_aio_create_completion2(NULL, NULL, &p->c) < 0)
        return err_set(VK_ENOMEM, "out of memory");
    p->buf = w->buf;
    ret = rados_aio_write(w->c->io, w->base.name, p->c, p->buf, w->len, w->off);
    if (ret < 0) {
        rados_aio_release(p->c);
        return srados_fail(r, w->c, ret, "write", w->base.name);
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

/* A fenced write's proof, checked before the write: the proof was made
 * through this client (not one blocklisted since) and the lease's record
 * still names its owner and epoch. Not atomic with the write: what makes it
 * safe against a take-over is that the taker blocklists this client first. */
static int srados_fence_check(struct srados_store *r, struct srados_conn *c,
                              const struct store_fence *f, const char *obj)
{
    char text[512] = "", owner[256] = "", addr[160] = "";
    uint64_t epoch = 0;
    if (f->client != c->gen)
        return err_set(VK_ELEASE, "store %s: %s not written: lease %s was proven through a "
                                  "client that was blocklisted since", r->base.uri, obj, f->lease);
    int ret = rados_getxattr(c->io, f->lease, SRADOS_HOLDER, text, sizeof(text) - 1);
    if (ret < 0 && ret != -ENODATA && ret != -ENOENT)
        return srados_fail(r, c, ret, "read the holder of lease", f->lease);
    text[ret > 0 ? ret : 0] = '\0';
    if (sscanf(text, "%255s %" SCNu64 " %159s", owner, &epoch, addr) < 3 ||
        strcmp(owner, f->owner) != 0 || epoch != f->epoch || !strcmp(addr, "-"))
        return err_set(VK_ELEASE, "store %s: %s not written: lease %s is not held by %s (epoch "
                                  "%" PRIu64 ") any more", r->base.uri, obj, f->lease, f->owner,
                       f->epoch);
    return 0;
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
    for (size_t i = 0; i < sw->n_fence && rc == 0; i++)
        rc = srados_fence_check(r, w->c, &sw->fence[i], sw->name);
    if (rc < 0)
        goto out;
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
            rc = srados_fail(r, w->c, w->rc, "write", sw->name);
            goto out;
        }
        rados_write_op_assert_exists(op);
    }
    rados_write_op_setxattr(op, STORE_RADOS_DONE, "1", 1);
    ret = rados_write_op_operate(op, w->c->io, sw->name, NULL, 0);
    if (ret == -EEXIST && sw->exclusive)
        rc = err_set(VK_EEXISTS, "store %s: object %s exists already", r->base.uri, sw->name);
    else if (ret < 0)
        rc = srados_fail(r, w->c, ret, "commit", sw->name);
out:
    rados_release_write_op(op);
    if (rc < 0 && w->off > 0)
        rados_remove(w->c->io, sw->name); /* best effort: no half object left */
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
        rados_remove(w->c->io, sw->name);
    srados_writer_free(w);
}

/* ---- leases ---------------------------------------------------------------------------
 * A lease is a RADOS exclusive lock with a duration (cls_lock) on the object
 * of its name, plus the attribute "vk.holder" = "OWNER EPOCH ADDRESS": who
 * took it last, in which epoch, through which client. RADOS cannot assert a
 * lock held on one object in a write to another (a manifest), so fencing is
 * by blocklist, as RBD's exclusive lock does it: a node that takes a lease
 * from another owner first blocklists that owner's recorded client, so any
 * write it still has to make (a stale commit) fails; its next call connects
 * again, as a new client, which holds no lease and must take each again. */

/* RADOS ties a lock to the client instance that took it; a lease belongs to
 * its owner (a node), whose agent may have restarted since: a lock with our
 * owner's cookie held by another client instance is ours, broken and taken
 * again. */
static int srados_break_own(struct srados_conn *c, const char *name, const char *owner)
{
    char tag[256], clients[1024], cookies[1024], addrs[1024];
    size_t tl = sizeof(tag), cl = sizeof(clients), kl = sizeof(cookies), al = sizeof(addrs);
    int excl = 0;
    ssize_t n = rados_list_lockers(c->io, name, "vmckpt", &excl, tag, &tl, clients, &cl, cookies,
                                   &kl, addrs, &al);
    if (n != 1 || strcmp(cookies, owner) != 0)
        return -EBUSY; /* another owner's */
    return rados_break_lock(c->io, name, "vmckpt", clients, cookies);
}

/* A client address a blocklist may be given: "[v1:|v2:|any:]IP:PORT/NONCE",
 * IPv4 or [IPv6], with a non-zero nonce: one client instance (a client's
 * port is 0: it listens on none). A bare IP, or a nonce of 0, is a whole
 * host to Ceph (every client there blocklisted for an hour, and all of its
 * VMs fenced). */
static int srados_addr_ok(const char *a)
{
    const char *p = a, *slash, *colon, *n;
    char host[64];
    unsigned char bin[16];
    size_t nd, pd, hl;
    if (!strncmp(p, "v1:", 3) || !strncmp(p, "v2:", 3))
        p += 3;
    else if (!strncmp(p, "any:", 4))
        p += 4;
    slash = strrchr(p, '/');
    if (!slash)
        return 0;
    n = slash + 1;
    nd = strspn(n, "0123456789");
    if (nd == 0 || nd > 10 || n[nd] != '\0' || strtoull(n, NULL, 10) == 0)
        return 0;
    colon = memrchr(p, ':', (size_t)(slash - p));
    if (!colon)
        return 0;
    pd = strspn(colon + 1, "0123456789");
    if (pd == 0 || pd > 5 || colon + 1 + pd != slash || strtoul(colon + 1, NULL, 10) > 65535)
        return 0;
    hl = (size_t)(colon - p);
    if (hl < 2 || hl >= sizeof(host))
        return 0;
    memcpy(host, p, hl);
    host[hl] = '\0';
    if (host[0] == '[' && host[hl - 1] == ']') {
        host[hl - 1] = '\0';
        return inet_pton(AF_INET6, host + 1, bin) == 1;
    }
    return inet_pton(AF_INET, host, bin) == 1;
}

/* Before taking lease name: the client of another owner's lock on it, as
 * the OSDs list it (they list no expired one), or "". */
static void srados_prev_locker(struct srados_conn *c, const char *name, const char *owner,
                               char out[160])
{
    char tag[256], clients[1024], cookies[1024], addrs[1024];
    size_t tl = sizeof(tag), cl = sizeof(clients), kl = sizeof(cookies), al = sizeof(addrs);
    int excl = 0;
    ssize_t n = rados_list_lockers(c->io, name, "vmckpt", &excl, tag, &tl, clients, &cl, cookies,
                                   &kl, addrs, &al);
    out[0] = '\0';
    if (n == 1 && strcmp(cookies, owner) != 0 && strlen(addrs) < 160 && srados_addr_ok(addrs))
        snprintf(out, 160, "%s", addrs);
}

/* Our client's address as lockers see it (the form blocklists take). */
static int srados_my_addr(struct srados_store *r, struct srados_conn *c, const char *name,
                          const char *owner)
{
    char tag[256], clients[1024], cookies[1024], addrs[1024];
    size_t tl = sizeof(tag), cl = sizeof(clients), kl = sizeof(cookies), al = sizeof(addrs);
    int excl = 0;
    if (c->addr[0])
        return 0;
    ssize_t n = rados_list_lockers(c->io, name, "vmckpt", &excl, tag, &tl, clients, &cl, cookies,
                                   &kl, addrs, &al);
    if (n < 0)
        return srados_fail(r, c, (int)n, "list the lockers of", name);
    if (n != 1 || strcmp(cookies, owner) != 0 || strlen(addrs) >= sizeof(c->addr))
        return err_set(VK_EIO, "store %s: lease %s: cannot find this client among its lockers",
                       r->base.uri, name);
    snprintf(c->addr, sizeof(c->addr), "%s", addrs);
    return 0;
}

/* With the lock held: reads the last holder; when it was another owner that
 * did not release it (its lease expired: it may still write), blocklists its
 * client and waits until the OSDs know; raises the epoch and records us.
 * *epoch: the lease's epoch now. */
static int srados_fence_prev(struct srados_store *r, struct srados_conn *c, const char *name,
                             const char *owner, const char *locker, uint64_t *epoch,
                             int *taken_over)
{
    char text[512] = "", prev[256] = "", addr[160] = "";
    uint64_t e = 0;
    int ret = rados_getxattr(c->io, name, SRADOS_HOLDER, text, sizeof(text) - 1);
    if (ret < 0 && ret != -ENODATA && ret != -ENOENT)
        return srados_fail(r, c, ret, "read the holder of lease", name);
    text[ret > 0 ? ret : 0] = '\0';
    if (sscanf(text, "%255s %" SCNu64 " %159s", prev, &e, addr) < 2)
        prev[0] = addr[0] = '\0', e = 0;
    int rc = srados_my_addr(r, c, name, owner);
    if (rc < 0)
        return rc;
    if (!strcmp(prev, owner) && !strcmp(addr, c->addr)) {
        *epoch = e; /* a renewal */
        return 0;
    }
    /* The client to blocklist: the old lock's, as the OSDs list it, while
     * they still do; once a lock has expired they list no locker, and the
     * record's address is all there is. The record is the store's (anyone
     * with write access could forge it), so its address must name one
     * client instance (srados_addr_ok): at worst a forged one blocklists
     * one client, which connects again as a new one, never a whole host.
     * (Ceph clients listen on no port: their addresses end ":0/NONCE".) */
    *taken_over = prev[0] && strcmp(prev, owner) != 0 && strcmp(addr, "-") != 0;
    if (locker[0])
        snprintf(addr, sizeof(addr), "%s", locker);
    else if (!srados_addr_ok(addr))
        addr[0] = '\0';
    if (*taken_over && addr[0] && strcmp(addr, c->addr) != 0) {
        if ((ret = rados_blocklist_add(c->cluster, addr, 0)) < 0)
            return srados_fail(r, c, ret, "blocklist the old holder of lease", name);
        if ((ret = rados_wait_for_latest_osdmap(c->cluster)) < 0)
            return srados_fail(r, c, ret, "wait for the blocklist of lease", name);
        log_info("store %s: lease %s: blocklisted the client %s of its old holder %s",
                 r->base.uri, name, addr, prev);
    }
    *epoch = strcmp(prev, owner) ? e + 1 : e;
    snprintf(text, sizeof(text), "%s %" PRIu64 " %s", owner, *epoch, c->addr);
    ret = rados_setxattr(c->io, name, SRADOS_HOLDER, text, strlen(text));
    return ret < 0 ? srados_fail(r, c, ret, "record the holder of lease", name) : 0;
}

static int srados_lease(struct store *s, const char *name, const char *owner, int duration_ms,
                        struct store_fence *out)
{
    struct srados_store *r = (struct srados_store *)s;
    struct srados_conn *c = srados_use(r);
    struct timeval d = {.tv_sec = duration_ms / 1000, .tv_usec = (duration_ms % 1000) * 1000};
    uint64_t epoch = 0;
    char locker[160];
    srados_prev_locker(c, name, owner, locker);
    int ret = rados_lock_exclusive(c->io, name, "vmckpt", owner, "vmckpt lease", &d,
                                   LIBRADOS_LOCK_FLAG_MAY_RENEW);
    if (ret == -EBUSY && srados_break_own(c, name, owner) == 0)
        ret = rados_lock_exclusive(c->io, name, "vmckpt", owner, "vmckpt lease", &d,
                                   LIBRADOS_LOCK_FLAG_MAY_RENEW);
    if (ret == -EBUSY)
        return err_set(VK_EBUSY, "store %s: lease %s is held by another owner", s->uri, name);
    if (ret < 0 && ret != -EEXIST) /* (EEXIST: ours already) */
        return srados_fail(r, c, ret, "take lease", name);
    int taken_over = 0;
    int rc = srados_fence_prev(r, c, name, owner, locker, &epoch, &taken_over);
    if (rc < 0) { /* a lease whose old holder may still write is not one to hold */
        rados_unlock(c->io, name, "vmckpt", owner);
        return rc;
    }
    if (out) {
        out->epoch = epoch;
        out->client = c->gen;
        out->taken_over = taken_over;
    }
    return 0;
}

static int srados_unlease(struct store *s, const char *name, const char *owner)
{
    struct srados_store *r = (struct srados_store *)s;
    struct srados_conn *c = srados_use(r);
    char text[512] = "", prev[256] = "";
    uint64_t e = 0;
    /* Released, not lost: the next holder has no one to blocklist. Written
     * while the lock is still ours (best effort: a stale record costs a
     * needless blocklist, after which that client connects again). */
    int ret = rados_getxattr(c->io, name, SRADOS_HOLDER, text, sizeof(text) - 1);
    text[ret > 0 ? ret : 0] = '\0';
    if (sscanf(text, "%255s %" SCNu64, prev, &e) == 2 && !strcmp(prev, owner)) {
        snprintf(text, sizeof(text), "%s %" PRIu64 " -", owner, e);
        rados_setxattr(c->io, name, SRADOS_HOLDER, text, strlen(text));
    }
    ret = rados_unlock(c->io, name, "vmckpt", owner);
    if (ret == -ENOENT)
        return err_set(VK_ENOTFOUND, "store %s: lease %s is not held by %s", s->uri, name, owner);
    return ret < 0 ? srados_fail(r, c, ret, "release lease", name) : 0;
}

/* A void is an object without the done mark: invisible to readers, and an
 * exclusive create of its name fails. */
static int srados_void(struct store *s, const char *name)
{
    struct srados_store *r = (struct srados_store *)s;
    struct srados_conn *c = srados_use(r);
    rados_write_op_t op = rados_create_write_op();
    if (!op)
        return err_set(VK_ENOMEM, "out of memory");
    rados_write_op_create(op, LIBRADOS_CREATE_EXCLUSIVE, NULL);
    int ret = rados_write_op_operate(op, c->io, name, NULL, 0);
    rados_release_write_op(op);
    if (ret == -EEXIST)
        return err_set(VK_EEXISTS, "store %s: %s is taken", s->uri, name);
    return ret < 0 ? srados_fail(r, c, ret, "void", name) : 0;
}

static int srados_taken(struct store *s, const char *name)
{
    struct srados_store *r = (struct srados_store *)s;
    struct srados_conn *c = srados_use(r);
    uint64_t size;
    time_t mtime;
    int ret = rados_stat(c->io, name, &size, &mtime);
    if (ret == -ENOENT)
        return 0;
    return ret < 0 ? srados_fail(r, c, ret, "look up", name) : 1;
}

const struct store_ops store_rados_ops = {
    .version = STORE_OPS_VERSION,
    .scheme = "rados",
    .read_gap = 256u << 10, /* an OSD round trip on a LAN */
    .copies = srados_copies,
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
    .void_name = srados_void,
    .taken = srados_taken,
};
