/* store: where checkpoint objects live, behind one interface.
 *
 * An object is a named sequence of bytes; names are relative paths of
 * [A-Za-z0-9._-] components separated by '/'. Objects are written through a
 * writer in parts of any size and become visible only when committed (all or
 * nothing, even if the writer's process dies). Reads are positional and may
 * run in parallel from many threads on one struct store.
 *
 * A backend is one const struct store_ops in its own file, picked by the URI
 * scheme (file://, rados://, ftp://, sftp://). Its structs embed
 * struct store / struct store_writer first. The core calls backends only
 * through the store_* wrappers below, which validate names and arguments. */
#ifndef VMCKPT_STORE_H
#define VMCKPT_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define STORE_OPS_VERSION 4

struct store;
struct store_writer;

/* A lease as its holder proves it in a commit (store_put_fenced): filled by
 * store_lease_fenced. The epoch is raised each time the lease is taken by an
 * owner that did not hold it (never by a renewal); client names the
 * backend's connection the lease was taken through (RADOS: a connection
 * that another node blocklisted is replaced, and a proof made through the
 * old one is void). */
struct store_fence {
    char lease[192];
    char owner[256];
    uint64_t epoch;
    uint64_t client;
    int taken_over; /* this take found another owner's expired, unreleased lease */
};

/* Called once per object by store_list() with its size and the time it was
 * last written (seconds since the epoch); a non-zero return stops the walk
 * and is returned by store_list(). */
typedef int (*store_list_fn)(void *arg, const char *name, uint64_t size, int64_t mtime);

struct store_ops {
    int version; /* STORE_OPS_VERSION */
    const char *scheme;
    unsigned caps; /* STORE_CAP_* */
    /* Bytes it costs less to read through than to ask for twice (a round
     * trip's worth): readers coalesce ranges closer than this. 0: 64 KiB. */
    uint32_t read_gap;
    int (*open)(const char *uri, struct store **out);
    void (*free)(struct store *s);
    int (*put_begin)(struct store *s, const char *name, struct store_writer **out);
    int (*put_write)(struct store_writer *w, const void *data, size_t len);
    int (*put_commit)(struct store_writer *w); /* frees w, success or not */
    void (*put_abort)(struct store_writer *w); /* frees w */
    int (*read)(struct store *s, const char *name, uint64_t off, void *buf, size_t len,
                size_t *out_got);
    int (*stat)(struct store *s, const char *name, uint64_t *out_size);
    int (*list)(struct store *s, const char *prefix, store_list_fn fn, void *arg);
    int (*remove)(struct store *s, const char *name);
    /* Makes every lazily committed object durable. NULL when commits are
     * always durable. */
    int (*sync)(struct store *s);
    /* Takes, or renews, an exclusive hold on `name` for duration_ms, for
     * `owner`: VK_EBUSY while another owner holds it. NULL when the store has
     * no leases. out (may be NULL) gets the proof a fenced commit checks. */
    int (*lease)(struct store *s, const char *name, const char *owner, int duration_ms,
                 struct store_fence *out);
    int (*unlease)(struct store *s, const char *name, const char *owner);
    /* Makes name unavailable for good to exclusive creates, and invisible
     * (list, stat and read see nothing): VK_EEXISTS when something has the
     * name already. NULL when the store has no leases (only the fencing of
     * cluster mode needs it). */
    int (*void_name)(struct store *s, const char *name);
    /* 1 when name is an object or voided, 0 when free. */
    int (*taken)(struct store *s, const char *name);
    /* Copies the store keeps of each object. NULL: one. */
    int (*copies)(struct store *s);
};

struct store {
    const struct store_ops *ops;
    char *uri;
};

struct store_writer {
    struct store *store;
    char *name;
    uint64_t written;
    /* Set by the caller before commit: the commit makes the object visible
     * but need not make it durable until store_sync() (chunks are written
     * lazily and synced once before the manifest that names them). */
    int lazy;
    /* Set by the caller before commit: the commit fails with VK_EEXISTS when
     * an object of that name exists (a manifest is never overwritten).
     * Atomic on the directory store (link), RADOS (exclusive create) and SFTP
     * (its rename never replaces); FTP can only look first. */
    int exclusive;
    /* Set by the caller before commit (with exclusive): the commit checks,
     * right before the write, that each of the n_fence leases in fence is
     * held by its owner in its epoch, else VK_ELEASE. The check and the write
     * are two steps; a take-over closes the gap by voiding the name the old
     * holder may still write (store_void), and on RADOS by blocklisting the
     * old holder's client. Stores without leases refuse it (VK_EINVAL). */
    const struct store_fence *fence;
    size_t n_fence; /* at most STORE_FENCE_MAX */
};

#define STORE_FENCE_MAX 4

/* What a store is, for callers that tune to it (store_caps). */
#define STORE_CAP_LOCAL 1u /* objects on this node's own disks: the work is bound by CPU,
                            * not by round trips (a fault:// store is not: it models a link) */

/* Opens the store named by uri ("file:///path", or a plain absolute path).
 * *out is the caller's, freed with store_free(). */
int store_open(const char *uri, struct store **out);
void store_free(struct store *s);
const char *store_uri(const struct store *s);
/* The schemes of the backends built in, for --help and messages (static). */
const char *store_schemes(void);
unsigned store_caps(const struct store *s); /* STORE_CAP_* flags */
/* The store's read gap (store_ops.read_gap): two ranges of one object closer
 * than this are cheaper read as one. */
size_t store_read_gap(const struct store *s);
/* Copies the store keeps of each byte (RADOS: the pool's size), at least 1:
 * what storing a byte costs is paid this many times. */
int store_copies(struct store *s);

/* Writes a small object and removes it: VK_OK when the store takes writes. */
int store_check_writable(struct store *s, const char *probe_name);

int store_put_begin(struct store *s, const char *name, struct store_writer **out);
int store_put_write(struct store_writer *w, const void *data, size_t len);
/* Makes the object visible atomically; frees w in every case. */
int store_put_commit(struct store_writer *w);
/* Drops a writer; nothing becomes visible. Accepts NULL. */
void store_put_abort(struct store_writer *w);

/* Reads up to len bytes at off; *out_got < len only at the end of the object. */
int store_read(struct store *s, const char *name, uint64_t off, void *buf, size_t len,
               size_t *out_got);
/* VK_ENOTFOUND when the object does not exist. */
int store_stat(struct store *s, const char *name, uint64_t *out_size);
/* Every object whose name starts with prefix, in no particular order. */
int store_list(struct store *s, const char *prefix, store_list_fn fn, void *arg);
int store_remove(struct store *s, const char *name);
/* Makes every object committed lazily so far durable. */
int store_sync(struct store *s);

/* Leases (see store_ops): VK_EINVAL when the store has none. */
int store_lease(struct store *s, const char *name, const char *owner, int duration_ms);
/* store_lease that also fills *out (see struct store_fence). */
int store_lease_fenced(struct store *s, const char *name, const char *owner, int duration_ms,
                       struct store_fence *out);
int store_unlease(struct store *s, const char *name, const char *owner);

/* Voids (see store_ops) and their probe: VK_EINVAL when the store has none. */
int store_void(struct store *s, const char *name);
int store_taken(struct store *s, const char *name);

/* Convenience built on the calls above. */
int store_put_buf(struct store *s, const char *name, const void *data, size_t len);
/* store_put_buf of a new object: VK_EEXISTS when name exists (see exclusive). */
int store_put_new(struct store *s, const char *name, const void *data, size_t len);
/* store_put_new that commits only while each of the n proofs in f holds
 * (see fence): VK_ELEASE naming the lease when one does not. */
int store_put_fenced(struct store *s, const struct store_fence *f, size_t n, const char *name,
                     const void *data, size_t len);
/* Whole object into a malloc'd, NUL-terminated buffer (caller frees). */
int store_get_buf(struct store *s, const char *name, char **out, size_t *out_len);
/* Uploads a local file; hashes it on the way (out_sha may be NULL).
 * progress (may be NULL) gets the running byte count. */
int store_put_file(struct store *s, const char *name, const char *path,
                   char out_sha[UTIL_SHA256_HEX], uint64_t *out_size,
                   void (*progress)(void *arg, uint64_t done), void *progress_arg);
/* Downloads an object to path (written to path.part, renamed when done),
 * checking its size and SHA-256: VK_ECORRUPT naming the object if they differ. */
int store_get_file(struct store *s, const char *name, const char *path, uint64_t want_size,
                   const char *want_sha);

int store_valid_name(const char *name);

#endif
