/* store_fault: a store that passes every call to another store and makes
 * some of them fail, for tests of retries and error paths (the idea of
 * sqlite's test VFS). URI: fault://<inner URI>. Failures are set with
 * environment variables, read when the store is opened:
 *   VMCKPT_FAULT_WRITE_EVERY=N  every Nth object write fails (at commit)
 *   VMCKPT_FAULT_READ_EVERY=N   every Nth read fails
 *   VMCKPT_FAULT_DOWN_FILE=PATH while PATH exists, every call fails, as if the
 *                               store were cut off from this node
 *   VMCKPT_FAULT_SLOW_FILE=PATH while PATH holds N, every call first waits N
 *                               ms (0-60000), as if the store were slow
 * A test hook: built only into test builds (-DVMCKPT_TEST_HOOKS, `make
 * check`), so a production agent has no fault:// and reads none of these. */
#ifdef VMCKPT_TEST_HOOKS
#include "err.h"
#include "store.h"

#include <stdatomic.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

extern const struct store_ops store_fault_ops;

struct fault_store {
    struct store base;
    struct store *inner;
    unsigned write_every, read_every;
    char *down_file, *slow_file;
    atomic_uint writes, reads;
};

struct fault_writer {
    struct store_writer base;
    struct store_writer *inner;
};

static unsigned fault_env(const char *name)
{
    const char *v = getenv(name);
    return v ? (unsigned)strtoul(v, NULL, 10) : 0;
}

static int fault_open(const char *uri, struct store **out)
{
    struct fault_store *f = calloc(1, sizeof(*f));
    int rc;
    *out = NULL;
    if (!f)
        return err_set(VK_ENOMEM, "out of memory");
    rc = store_open(uri + strlen("fault://"), &f->inner);
    if (rc < 0) {
        free(f);
        return rc;
    }
    f->base.ops = &store_fault_ops;
    f->base.uri = strdup(uri);
    f->write_every = fault_env("VMCKPT_FAULT_WRITE_EVERY");
    f->read_every = fault_env("VMCKPT_FAULT_READ_EVERY");
    if (getenv("VMCKPT_FAULT_DOWN_FILE"))
        f->down_file = strdup(getenv("VMCKPT_FAULT_DOWN_FILE"));
    if (getenv("VMCKPT_FAULT_SLOW_FILE"))
        f->slow_file = strdup(getenv("VMCKPT_FAULT_SLOW_FILE"));
    *out = &f->base;
    return 0;
}

static void fault_free(struct store *s)
{
    struct fault_store *f = (struct fault_store *)s;
    store_free(f->inner);
    free(f->down_file);
    free(f->slow_file);
    free(f->base.uri);
    free(f);
}

/* The delay in the slow file (milliseconds, 0-60000), 0 without one. */
static long fault_slow_ms(const struct fault_store *f)
{
    char *text = NULL;
    size_t len = 0;
    long ms = 0;
    if (f->slow_file && access(f->slow_file, F_OK) == 0 &&
        util_read_file(f->slow_file, &text, &len) == 0)
        ms = strtol(text, NULL, 10);
    free(text);
    err_clear();
    return ms < 0 ? 0 : ms > 60000 ? 60000 : ms;
}

/* VK_EIO while the store is "cut off" (the down file exists); every call
 * first waits the slow file's delay (a slow store). */
static int fault_down(struct store *s, const char *what)
{
    struct fault_store *f = (struct fault_store *)s;
    long slow = fault_slow_ms(f);
    if (slow > 0)
        usleep((useconds_t)slow * 1000);
    if (f->down_file && access(f->down_file, F_OK) == 0)
        return err_set(VK_EIO, "store %s: cut off (injected) during %s", s->uri, what);
    return 0;
}

static int fault_hit(atomic_uint *counter, unsigned every)
{
    return every && (atomic_fetch_add(counter, 1) + 1) % every == 0;
}

static int fault_put_begin(struct store *s, const char *name, struct store_writer **out)
{
    struct fault_store *f = (struct fault_store *)s;
    int rc = fault_down(s, name);
    if (rc < 0)
        return rc;
    struct fault_writer *w = calloc(1, sizeof(*w));
    if (!w)
        return err_set(VK_ENOMEM, "out of memory");
    rc = store_put_begin(f->inner, name, &w->inner);
    if (rc < 0) {
        free(w);
        return rc;
    }
    w->base.store = s;
    w->base.name = w->inner->name;
    *out = &w->base;
    return 0;
}

static int fault_put_write(struct store_writer *sw, const void *data, size_t len)
{
    return store_put_write(((struct fault_writer *)sw)->inner, data, len);
}

static int fault_put_commit(struct store_writer *sw)
{
    struct fault_writer *w = (struct fault_writer *)sw;
    struct fault_store *f = (struct fault_store *)sw->store;
    int rc;
    if (fault_down(sw->store, sw->name) < 0) {
        rc = VK_EIO;
        store_put_abort(w->inner);
    } else if (fault_hit(&f->writes, f->write_every)) {
        /* (the name belongs to the inner writer: use it before the abort frees it) */
        rc = err_set(VK_EIO, "store %s: injected write fault on %s", f->base.uri, sw->name);
        store_put_abort(w->inner);
    } else {
        w->inner->lazy = sw->lazy;
        w->inner->exclusive = sw->exclusive;
        w->inner->fence = sw->fence;
        w->inner->n_fence = sw->n_fence;
        rc = store_put_commit(w->inner);
    }
    free(w);
    return rc;
}

static void fault_put_abort(struct store_writer *sw)
{
    struct fault_writer *w = (struct fault_writer *)sw;
    store_put_abort(w->inner);
    free(w);
}

static int fault_read(struct store *s, const char *name, uint64_t off, void *buf, size_t len,
                      size_t *out_got)
{
    struct fault_store *f = (struct fault_store *)s;
    *out_got = 0;
    if (fault_down(s, name) < 0)
        return VK_EIO;
    if (fault_hit(&f->reads, f->read_every))
        return err_set(VK_EIO, "store %s: injected read fault on %s", s->uri, name);
    return store_read(f->inner, name, off, buf, len, out_got);
}

static int fault_stat(struct store *s, const char *name, uint64_t *out_size)
{
    int rc = fault_down(s, name);
    return rc < 0 ? rc : store_stat(((struct fault_store *)s)->inner, name, out_size);
}

static int fault_list(struct store *s, const char *prefix, store_list_fn fn, void *arg)
{
    int rc = fault_down(s, prefix);
    return rc < 0 ? rc : store_list(((struct fault_store *)s)->inner, prefix, fn, arg);
}

static int fault_remove(struct store *s, const char *name)
{
    int rc = fault_down(s, name);
    return rc < 0 ? rc : store_remove(((struct fault_store *)s)->inner, name);
}

static int fault_sync(struct store *s)
{
    int rc = fault_down(s, "sync");
    return rc < 0 ? rc : store_sync(((struct fault_store *)s)->inner);
}

static int fault_lease(struct store *s, const char *name, const char *owner, int duration_ms,
                       struct store_fence *out)
{
    int rc = fault_down(s, name);
    return rc < 0 ? rc
                  : store_lease_fenced(((struct fault_store *)s)->inner, name, owner, duration_ms,
                                       out);
}

static int fault_unlease(struct store *s, const char *name, const char *owner)
{
    int rc = fault_down(s, name);
    return rc < 0 ? rc : store_unlease(((struct fault_store *)s)->inner, name, owner);
}

static int fault_void(struct store *s, const char *name)
{
    int rc = fault_down(s, name);
    return rc < 0 ? rc : store_void(((struct fault_store *)s)->inner, name);
}

static int fault_taken(struct store *s, const char *name)
{
    int rc = fault_down(s, name);
    return rc < 0 ? rc : store_taken(((struct fault_store *)s)->inner, name);
}

const struct store_ops store_fault_ops = {
    .version = STORE_OPS_VERSION,
    .scheme = "fault",
    .read_gap = 512u << 10, /* it models a link */
    .open = fault_open,
    .free = fault_free,
    .put_begin = fault_put_begin,
    .put_write = fault_put_write,
    .put_commit = fault_put_commit,
    .put_abort = fault_put_abort,
    .read = fault_read,
    .stat = fault_stat,
    .list = fault_list,
    .remove = fault_remove,
    .sync = fault_sync,
    .lease = fault_lease,
    .unlease = fault_unlease,
    .void_name = fault_void,
    .taken = fault_taken,
};

#endif /* VMCKPT_TEST_HOOKS */
