#include "repo.h"
#include "bufpool.h"

#include "err.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#define REPO_ZERO_SLOTS 8

struct repo_zero {
    size_t len; /* 0: empty */
    char sha[UTIL_SHA256_HEX];
};

struct repo {
    struct store *store; /* not owned */
    struct repo_cfg cfg;
    struct chunk_params cp;
    struct codec_policy policy;
    struct pack_map *map; /* every chunk the store holds, and where */
    size_t pack_size;
    int cpu_par;           /* chunks compressed at once: min(CPUs, workers) */
    int uploads;           /* pack uploads in flight (atomic) */
    /* Uploads hold it shared, GC exclusive: a GC on this node never deletes a
     * chunk that an upload on this node has just found and is about to name. */
    pthread_rwlock_t gc_lock;
    struct repo_zero zero[REPO_ZERO_SLOTS]; /* hashes of zero chunks, by length */
    pthread_mutex_t zero_lock;
    struct store *cache;      /* copies of packs, read first (not owned; may be NULL) */
    _Atomic uint64_t read_store, read_cache; /* bytes downloads read from each */
    /* The reader's blocks and the packs' buffers, kept from one upload to the
     * next (bufpool.h says why): as many as one upload used, up to the
     * memory budget's worth of each; and two compression buffers a worker. */
    struct bufpool blocks, packs, cbufs;
};

#define REPO_HDR PACK_HDR
#define REPO_PACK_DEFAULT (8u << 20)
#define REPO_ALIGN 4096 /* pack buffers: page-aligned, so a store may DMA from them */

/* The most any codec makes of a chunk of n bytes. */
static size_t repo_compress_bound(size_t n)
{
    size_t most = n;
    for (int c = 0; c < CODEC_COUNT; c++)
        if (codec_bound(c, n) > most)
            most = codec_bound(c, n);
    return most;
}

int repo_open(struct repo **out, struct store *s, const struct repo_cfg *cfg)
{
    struct repo *r;
    int rc;
    *out = NULL;
    if (cfg->workers < 0 || cfg->workers > 64 || cfg->mem_budget < 4 * cfg->chunk_avg * 4)
        return err_set(VK_EINVAL, "data settings: workers must be 0 (auto) to 64 and the memory "
                                  "budget at least 16 times the chunk size");
    r = calloc(1, sizeof(*r));
    if (!r)
        return err_set(VK_ENOMEM, "out of memory");
    rc = chunk_params_init(&r->cp, cfg->chunk_avg);
    if (rc < 0) {
        free(r);
        return rc;
    }
    rc = pack_map_new(&r->map);
    if (rc < 0) {
        free(r);
        return rc;
    }
    r->store = s;
    r->cfg = *cfg;
    if (r->cfg.workers == 0) {
        /* A local store is bound by CPU (hashing, compression): a thread per
         * core, and two more to hash while others wait for the disk (packs
         * go to it by DMA). A remote one by latency: more requests in flight. */
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        ncpu = ncpu < 1 ? 1 : ncpu > 32 ? 32 : ncpu;
        r->cfg.workers = (int)((store_caps(s) & STORE_CAP_LOCAL) ? ncpu + 2
                                                                   : 2 * ncpu < 8 ? 8 : 2 * ncpu);
    }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    r->cpu_par = ncpu < 1 ? 1 : ncpu < r->cfg.workers ? (int)ncpu : r->cfg.workers;
    /* Packs being filled or written count against the budget: at most half of it. */
    r->pack_size = cfg->pack_size ? cfg->pack_size : REPO_PACK_DEFAULT;
    if (r->pack_size > cfg->mem_budget / 2)
        r->pack_size = cfg->mem_budget / 2;
    /* Blocks big enough to amortise reads, small enough for the budget. */
    size_t blk = cfg->mem_budget / 4 > (4u << 20) ? (4u << 20) : cfg->mem_budget / 4;
    if (blk < 4 * r->cp.max)
        blk = 4 * r->cp.max;
    /* A pack is written once it holds pack_size bytes, and a record is never
     * larger than a plain chunk: one more record always fits. */
    size_t pcap = r->pack_size + REPO_HDR + r->cp.max;
    /* As many of each as the budget lets an upload hold at once, and one more
     * (the block being read, the pack being filled). */
    if ((rc = bufpool_init(&r->blocks, blk, 64, cfg->mem_budget / blk + 1)) < 0 ||
        (rc = bufpool_init(&r->packs, pcap, REPO_ALIGN, cfg->mem_budget / pcap + 1)) < 0 ||
        (rc = bufpool_init(&r->cbufs, repo_compress_bound(r->cp.max), 64,
                           2 * (size_t)r->cfg.workers)) < 0) {
        bufpool_destroy(&r->blocks);
        bufpool_destroy(&r->packs);
        pack_map_free(r->map);
        free(r);
        return rc;
    }
    codec_policy_init(&r->policy, cfg->forced_codec);
    codec_policy_set_storage(&r->policy, cfg->storage_cost * 1e-9, store_copies(s));
    /* Readers first: an upload's hold nests with each stream's own (a reader
     * locking twice must not queue behind a waiting GC). */
    pthread_rwlockattr_t at;
    pthread_rwlockattr_init(&at);
    pthread_rwlockattr_setkind_np(&at, PTHREAD_RWLOCK_PREFER_READER_NP);
    pthread_rwlock_init(&r->gc_lock, &at);
    pthread_rwlockattr_destroy(&at);
    pthread_mutex_init(&r->zero_lock, NULL);
    *out = r;
    return 0;
}

void repo_hold(struct repo *r) { pthread_rwlock_rdlock(&r->gc_lock); }

void repo_release(struct repo *r) { pthread_rwlock_unlock(&r->gc_lock); }

void repo_free(struct repo *r)
{
    if (!r)
        return;
    codec_policy_destroy(&r->policy);
    pack_map_free(r->map);
    bufpool_destroy(&r->blocks);
    bufpool_destroy(&r->packs);
    bufpool_destroy(&r->cbufs);
    pthread_rwlock_destroy(&r->gc_lock);
    pthread_mutex_destroy(&r->zero_lock);
    free(r);
}

static void repo_backoff(struct repo *r, int attempt)
{
    util_backoff(r->cfg.retry_base_ms, attempt);
}

void repo_stats_add(struct repo_stats *a, const struct repo_stats *b)
{
    a->raw_bytes += b->raw_bytes;
    a->new_bytes += b->new_bytes;
    a->chunks += b->chunks;
    a->new_chunks += b->new_chunks;
    a->zero_chunks += b->zero_chunks;
    a->dedup_chunks += b->dedup_chunks;
    a->retries += b->retries;
    for (int c = 0; c < CODEC_COUNT; c++) {
        a->codec_chunks[c] += b->codec_chunks[c];
        a->codec_raw[c] += b->codec_raw[c];
        a->codec_stored[c] += b->codec_stored[c];
    }
}

json_t *repo_stats_json(const struct repo_stats *s)
{
    json_t *codecs = json_object();
    for (int c = 0; c < CODEC_COUNT; c++)
        if (s->codec_chunks[c])
            json_object_set_new(codecs, codec_name(c),
                                json_pack("{s:I, s:I, s:I}", "chunks", (json_int_t)s->codec_chunks[c],
                                          "raw_bytes", (json_int_t)s->codec_raw[c], "stored_bytes",
                                          (json_int_t)s->codec_stored[c]));
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "raw_bytes",
                     (json_int_t)s->raw_bytes, "new_bytes", (json_int_t)s->new_bytes, "chunks",
                     (json_int_t)s->chunks, "new_chunks", (json_int_t)s->new_chunks,
                     "zero_chunks", (json_int_t)s->zero_chunks, "dedup_chunks",
                     (json_int_t)s->dedup_chunks, "retries", (json_int_t)s->retries,
                     "new_chunks_by_codec", codecs);
}

/* ---- upload ------------------------------------------------------------------ */

struct up_entry {
    char sha[UTIL_SHA256_HEX];
    uint32_t len;
    int codec;
};

/* A buffer the reader fills; chunks are cut in place and handed to the
 * workers without a copy. When the last chunk in it is stored its data goes
 * back to repo.blocks for the reader to fill again. */
struct up_block {
    uint8_t *data;
    int refs; /* the reader's, and one per queued chunk; under up_ctx.lock */
};

struct up_job {
    size_t idx;
    const uint8_t *data;
    size_t len;
    struct up_block *blk;
    struct up_job *next;
};

struct up_ctx {
    struct repo *r;
    pthread_mutex_t lock;
    pthread_cond_t work, space; /* a chunk is queued; memory was freed */
    struct up_job *head, *tail;
    int done_reading;
    size_t inflight;
    int rc;
    char err[1024];
    struct up_entry *entries;
    size_t n, cap;
    struct repo_stats st;
    uint64_t raw_done;
    repo_progress_fn progress;
    void *arg;
    struct pack_map *pending; /* chunks of this stream not yet in an indexed pack */
    uint8_t *pbuf;            /* the pack being filled, and its records */
    size_t plen, pcap;        /* pcap: every pack buffer's size (repo.packs') */
    struct pack_idx open;
};

/* Writes a pack object, then its index, retrying with back-off. */
static int repo_write_pack(struct repo *r, const uint8_t *buf, size_t len,
                           const struct pack_idx *idx)
{
    char name[80];
    struct store_writer *w = NULL;
    int rc;
    pack_object_name(idx->id, name);
    rc = store_put_begin(r->store, name, &w);
    if (rc == 0) {
        w->lazy = 1; /* synced once before the manifest (catalog_commit) */
        rc = store_put_write(w, buf, len);
        rc = rc == 0 ? store_put_commit(w) : (store_put_abort(w), rc);
    }
    if (rc == 0)
        rc = pack_idx_store(r->store, idx);
    if (rc < 0)
        err_wrap(rc, "store %s: writing pack %s", store_uri(r->store), name);
    return rc;
}

int repo_store_pack(struct repo *r, const uint8_t *buf, size_t len, const struct pack_idx *idx,
                    uint64_t *retries)
{
    int rc = 0;
    for (int attempt = 0; attempt < r->cfg.retries; attempt++) {
        int64_t t0 = util_now_us();
        int conc = __atomic_add_fetch(&r->uploads, 1, __ATOMIC_RELAXED);
        rc = repo_write_pack(r, buf, len, idx);
        int conc2 = __atomic_fetch_sub(&r->uploads, 1, __ATOMIC_RELAXED);
        if (rc == 0) {
            /* Uploads overlap: what one costs the stream is its time shared with
             * the others in flight. */
            double secs = (double)(util_now_us() - t0) / 1e6;
            codec_policy_note_upload(&r->policy, len, secs / (conc > conc2 ? conc : conc2));
            return pack_map_add(r->map, idx);
        }
        if (rc == VK_ENOSPC || rc == VK_EINVAL)
            return rc; /* waiting will not help */
        if (retries)
            (*retries)++;
        log_warn("%s (try %d of %d)", err_msg(), attempt + 1, r->cfg.retries);
        repo_backoff(r, attempt);
    }
    return rc;
}

/* Takes the pack being filled (lock held): the caller writes it. */
static int repo_up_take(struct up_ctx *u, uint8_t **buf, size_t *len, struct pack_idx *idx)
{
    *buf = u->pbuf;
    *len = u->plen;
    *idx = u->open;
    u->pbuf = NULL;
    u->plen = 0;
    memset(&u->open, 0, sizeof(u->open));
    return pack_new_id(u->open.id);
}

/* Writes a pack taken from the stream (lock not held) and keeps or frees
 * its buffer. */
static int repo_up_flush(struct up_ctx *u, uint8_t *buf, size_t len, struct pack_idx *idx,
                         struct repo_stats *st)
{
    int rc = repo_store_pack(u->r, buf, len, idx, &st->retries);
    bufpool_put(&u->r->packs, buf);
    pack_idx_clear(idx);
    return rc;
}

/* Appends a compressed chunk to the stream's open pack, unless another worker
 * stored the same chunk first (then *dup is set). Writes the pack when full. */
static int repo_up_append(struct up_ctx *u, struct up_entry *e, const uint8_t *payload,
                          size_t n, uint32_t plain_len, int *dup, struct repo_stats *st)
{
    struct pack_loc loc = {.codec = e->codec};
    uint8_t *full = NULL;
    size_t full_len = 0;
    struct pack_idx idx = {0};
    int rc = 0;

    pthread_mutex_lock(&u->lock);
    *dup = !u->r->cfg.no_dedup && (rc = pack_map_put(u->pending, e->sha, &loc)) == 1;
    if (*dup) {
        e->codec = loc.codec;
        pthread_mutex_unlock(&u->lock);
        return 0;
    }
    if (rc == 0 && !u->pbuf) {
        u->pbuf = bufpool_get(&u->r->packs);
        if (!u->pbuf)
            rc = err_set(VK_ENOMEM, "out of memory");
    }
    if (rc == 0 && u->plen + REPO_HDR + n > u->pcap) /* pcap allows for the largest record */
        rc = err_set(VK_EINVAL, "pack record of %zu bytes does not fit (internal error)", n);
    if (rc == 0) {
        pack_hdr(u->pbuf + u->plen, e->codec, plain_len);
        memcpy(u->pbuf + u->plen + REPO_HDR, payload, n);
        rc = pack_idx_add(&u->open, e->sha, u->plen, (uint32_t)(REPO_HDR + n), e->codec);
        u->plen += REPO_HDR + n;
    }
    if (rc == 0 && u->plen >= u->r->pack_size) {
        rc = repo_up_take(u, &full, &full_len, &idx);
        u->inflight += full_len; /* held until written */
    }
    pthread_mutex_unlock(&u->lock);
    if (full) {
        rc = repo_up_flush(u, full, full_len, &idx, st);
        pthread_mutex_lock(&u->lock);
        u->inflight -= full_len;
        pthread_cond_signal(&u->space);
        pthread_mutex_unlock(&u->lock);
    }
    return rc;
}

/* What CPU time costs the stream: chunks are compressed cpu_par at a time.
 * (CPU time, not wall time: with more workers than cores, a worker's wall
 * time counts the others' work too.) */
static double repo_cpu_seconds(const struct repo *r, int64_t cpu_us)
{
    return (double)cpu_us / 1e6 / r->cpu_par;
}

/* Compresses one chunk with codec into buf (a repo.cbufs buffer; unused for
 * CODEC_NONE), noting the cost. */
static int repo_compress(struct repo *r, struct up_job *j, int codec, uint8_t *buf,
                         size_t *stored)
{
    int64_t t0 = util_thread_cpu_us();
    int rc;

    *stored = j->len;
    if (codec == CODEC_NONE)
        return 0;
    rc = codec_compress(codec, j->data, j->len, buf, r->cbufs.size, stored);
    if (rc == 0)
        codec_policy_note_compress(&r->policy, codec, j->len, *stored,
                                   repo_cpu_seconds(r, util_thread_cpu_us() - t0));
    return rc;
}

/* Compresses a probe chunk with the chosen codec and with `other` (so their
 * ratios are compared on the same data) and keeps the cheaper result in
 * buf[0] (buf[1] is scratch). */
static int repo_probe(struct repo *r, struct up_job *j, int other, int *codec, uint8_t *buf[2],
                      size_t *stored)
{
    double spb = codec_policy_byte_cost(&r->policy), best_cost = 0;
    int cand[2] = {*codec, other}, best = -1;
    *stored = j->len;
    for (int k = 0; k < 2; k++) {
        size_t n = 0;
        int64_t t0 = util_thread_cpu_us();
        int rc = repo_compress(r, j, cand[k], buf[best < 0 ? 0 : 1], &n);
        if (rc < 0)
            return rc;
        double cost = repo_cpu_seconds(r, util_thread_cpu_us() - t0) + (double)n * spb;
        if (best < 0 || cost < best_cost) {
            if (best >= 0) { /* the better one is in buf[1] */
                uint8_t *t = buf[0];
                buf[0] = buf[1];
                buf[1] = t;
            }
            *stored = n;
            best = cand[k];
            best_cost = cost;
        }
    }
    *codec = best;
    return 0;
}

/* The SHA-256 of the zero chunk data (len bytes). Zero runs are cut into
 * chunks of a few lengths (mostly the largest), so their hashes are kept,
 * not recomputed: zero pages then cost a compare, not a hash. */
static void repo_zero_sha(struct repo *r, const uint8_t *data, size_t len,
                          char sha[UTIL_SHA256_HEX])
{
    struct repo_zero *z = &r->zero[len % REPO_ZERO_SLOTS];
    pthread_mutex_lock(&r->zero_lock);
    int kept = z->len == len;
    if (kept)
        memcpy(sha, z->sha, UTIL_SHA256_HEX);
    pthread_mutex_unlock(&r->zero_lock);
    if (kept)
        return;
    util_sha256_buf(data, len, sha);
    pthread_mutex_lock(&r->zero_lock);
    z->len = len;
    memcpy(z->sha, sha, UTIL_SHA256_HEX);
    pthread_mutex_unlock(&r->zero_lock);
}

/* 1 if sha names len zero bytes. The stream hash covers each chunk's name
 * and length but not its codec, so a chunk marked zero (returned without a
 * read) is held to its name like any other. */
static int repo_is_zero_sha(struct repo *r, size_t len, const char *sha)
{
    static uint8_t zeros[CHUNK_LEN_MAX]; /* never written: costs no memory */
    char want[UTIL_SHA256_HEX];
    if (len > CHUNK_LEN_MAX)
        return 0;
    repo_zero_sha(r, zeros, len, want);
    return strcmp(want, sha) == 0;
}

/* Hashes, deduplicates, compresses and stores one chunk. buf: the worker's
 * two compression buffers, taken from repo.cbufs when first needed. */
static int repo_up_chunk(struct up_ctx *u, struct up_job *j, struct up_entry *e,
                         struct repo_stats *st, uint8_t *buf[2])
{
    struct repo *r = u->r;
    struct pack_loc loc;
    size_t stored = j->len;
    int rc, codec, probe, dup = 0;

    e->len = (uint32_t)j->len;
    st->chunks++;
    if (chunk_is_zero(j->data, j->len)) {
        repo_zero_sha(r, j->data, j->len, e->sha);
        e->codec = CODEC_ZERO;
        st->zero_chunks++;
        return 0;
    }
    util_sha256_buf(j->data, j->len, e->sha);
    if (!r->cfg.no_dedup &&
        (pack_map_find(u->pending, e->sha, &loc) == 0 || pack_map_find(r->map, e->sha, &loc) == 0)) {
        e->codec = loc.codec;
        st->dedup_chunks++;
        return 0;
    }
    /* A chunk that looks random is stored plain and left out of the
     * policy's estimates, which then describe the data compression is for. */
    codec = CODEC_NONE;
    probe = -1;
    rc = 0;
    if (r->cfg.forced_codec != CODEC_AUTO || !codec_looks_random(j->data, j->len)) {
        codec = codec_policy_choose(&r->policy, &probe);
        for (int k = 0; k < 2; k++)
            if (!buf[k] && !(buf[k] = bufpool_get(&r->cbufs)))
                return err_set(VK_ENOMEM, "out of memory");
        rc = probe >= 0 ? repo_probe(r, j, probe, &codec, buf, &stored)
                        : repo_compress(r, j, codec, buf[0], &stored);
    }
    if (rc < 0)
        return rc;
    if (codec != CODEC_NONE && stored >= j->len) { /* no gain: keep it plain */
        codec = CODEC_NONE;
        stored = j->len;
    }
    e->codec = codec;
    rc = repo_up_append(u, e, codec == CODEC_NONE ? j->data : buf[0], stored, (uint32_t)j->len,
                        &dup, st);
    if (rc < 0 || dup) {
        st->dedup_chunks += dup;
        return rc;
    }
    st->new_chunks++;
    st->new_bytes += stored + REPO_HDR;
    st->codec_chunks[codec]++;
    st->codec_raw[codec] += j->len;
    st->codec_stored[codec] += stored;
    return 0;
}

static void repo_block_unref(struct up_ctx *u, struct up_block *b)
{
    pthread_mutex_lock(&u->lock);
    int last = --b->refs == 0;
    pthread_mutex_unlock(&u->lock);
    if (last) { /* its buffer, for the reader's next block */
        bufpool_put(&u->r->blocks, b->data);
        free(b);
    }
}

static void *repo_up_worker(void *arg)
{
    struct up_ctx *u = arg;
    uint8_t *cbuf[2] = {NULL, NULL};
    for (;;) {
        struct up_job *j;
        struct up_entry e = {0};
        struct repo_stats st = {0};
        int rc;

        pthread_mutex_lock(&u->lock);
        while (!u->head && !u->done_reading)
            pthread_cond_wait(&u->work, &u->lock);
        j = u->head;
        if (j && !(u->head = j->next))
            u->tail = NULL;
        int failed = u->rc;
        pthread_mutex_unlock(&u->lock);
        if (!j)
            break;
        rc = failed == 0 ? repo_up_chunk(u, j, &e, &st, cbuf) : 0; /* after an error: drain */
        pthread_mutex_lock(&u->lock);
        if (rc < 0 && u->rc == 0) {
            u->rc = rc;
            snprintf(u->err, sizeof(u->err), "%s", err_msg());
        }
        u->entries[j->idx] = e;
        st.raw_bytes = j->len;
        repo_stats_add(&u->st, &st);
        u->inflight -= j->len;
        u->raw_done += j->len;
        uint64_t done = u->raw_done;
        pthread_cond_signal(&u->space);
        pthread_mutex_unlock(&u->lock);
        if (u->progress)
            u->progress(u->arg, done);
        repo_block_unref(u, j->blk);
        free(j);
    }
    bufpool_put(&u->r->cbufs, cbuf[0]);
    bufpool_put(&u->r->cbufs, cbuf[1]);
    return NULL;
}

/* Queues one chunk of blk; waits while the memory budget is used up. */
static int repo_up_push(struct up_ctx *u, struct up_block *blk, const uint8_t *data, size_t len)
{
    struct up_job *j = malloc(sizeof(*j));
    if (!j)
        return err_set(VK_ENOMEM, "out of memory");
    j->data = data;
    j->len = len;
    j->blk = blk;
    j->next = NULL;
    pthread_mutex_lock(&u->lock);
    while (u->inflight > 0 && u->inflight + len > u->r->cfg.mem_budget && u->rc == 0)
        pthread_cond_wait(&u->space, &u->lock); /* back-pressure */
    if (u->n == u->cap) {
        size_t ncap = u->cap ? u->cap * 2 : 1024;
        struct up_entry *ne = realloc(u->entries, ncap * sizeof(*ne));
        if (!ne) {
            pthread_mutex_unlock(&u->lock);
            free(j);
            return err_set(VK_ENOMEM, "out of memory");
        }
        u->entries = ne;
        u->cap = ncap;
    }
    j->idx = u->n++;
    blk->refs++;
    if (u->tail)
        u->tail->next = j;
    else
        u->head = j;
    u->tail = j;
    u->inflight += len;
    int rc = u->rc;
    pthread_cond_signal(&u->work);
    pthread_mutex_unlock(&u->lock);
    return rc;
}

/* A block (of repo.blocks' size) holding the `keep` bytes at the end of the
 * previous one. */
static struct up_block *repo_block_new(struct up_ctx *u, const uint8_t *keep, size_t keep_len)
{
    struct up_block *b = malloc(sizeof(*b));
    if (b && !(b->data = bufpool_get(&u->r->blocks))) {
        free(b);
        return NULL;
    }
    if (!b)
        return NULL;
    b->refs = 1;
    if (keep_len)
        memcpy(b->data, keep, keep_len);
    return b;
}

struct find_part {
    const struct chunk_params *cp;
    const uint8_t *buf;
    size_t from, to;
    struct chunk_found found;
    int rc;
};

static void *repo_find_thread(void *arg)
{
    struct find_part *fp = arg;
    fp->rc = chunk_find(fp->cp, fp->buf, fp->from, fp->to, &fp->found);
    return NULL;
}

/* The cut points of buf[0..len), its stretches scanned on cpu_par threads at
 * once (this one included), so that cutting is not one thread's work on
 * the path of every byte. *out is replaced. */
static int repo_find_cuts(struct repo *r, const uint8_t *buf, size_t len, struct chunk_found *out)
{
    struct find_part part[32];
    pthread_t th[32];
    int np = r->cpu_par, started[32] = {0}, rc = 0;

    out->n = 0;
    if (np > 32)
        np = 32;
    if (np < 2 || len < (size_t)np * r->cp.max) /* too little to share */
        return chunk_find(&r->cp, buf, 0, len, out);
    for (int k = 0; k < np; k++) {
        part[k] = (struct find_part){.cp = &r->cp, .buf = buf, .from = len / np * k,
                                     .to = k + 1 == np ? len : len / np * (k + 1)};
        if (k > 0)
            started[k] = pthread_create(&th[k], NULL, repo_find_thread, &part[k]) == 0;
    }
    repo_find_thread(&part[0]);
    for (int k = 1; k < np; k++) {
        if (started[k])
            pthread_join(th[k], NULL);
        else /* no thread: this one does it */
            repo_find_thread(&part[k]);
    }
    for (int k = 0; k < np; k++) {
        if (rc == 0)
            rc = part[k].rc < 0 ? part[k].rc : chunk_found_join(out, &part[k].found);
        chunk_found_clear(&part[k].found);
    }
    return rc;
}

/* Reads the file, cuts it and feeds the workers. */
static int repo_up_read(struct up_ctx *u, int fd, const char *path, uint64_t *out_size)
{
    struct repo *r = u->r;
    size_t cap = r->blocks.size;
    size_t avail = 0, off = 0;
    struct up_block *blk;
    struct chunk_found found = {0};
    size_t cursor = 0;
    int eof = 0, rc = 0, found_ok = 0;
    uint64_t total = 0;

    if (!(blk = repo_block_new(u, NULL, 0)))
        return err_set(VK_ENOMEM, "out of memory");
    while (rc == 0) {
        if (!eof && avail - off < r->cp.max) { /* refill, in a new block */
            struct up_block *nb = repo_block_new(u, blk->data + off, avail - off);
            if (!nb) {
                rc = err_set(VK_ENOMEM, "out of memory");
                break;
            }
            repo_block_unref(u, blk);
            blk = nb;
            avail -= off;
            off = 0;
            found_ok = 0;
            while (!eof && avail < cap) {
                ssize_t n = read(fd, blk->data + avail, cap - avail);
                if (n < 0 && errno == EINTR)
                    continue;
                if (n < 0) {
                    rc = err_errno(errno, "cannot read %s", path);
                    break;
                }
                eof = n == 0;
                avail += (size_t)n;
            }
        }
        if (rc < 0 || off == avail)
            break;
        if (!found_ok) { /* a new block: its cut points */
            if ((rc = repo_find_cuts(r, blk->data, avail, &found)) < 0)
                break;
            found_ok = 1;
            cursor = 0;
        }
        size_t cut = chunk_cut_found(&r->cp, blk->data, off, avail - off, &found, &cursor);
        total += cut;
        rc = repo_up_push(u, blk, blk->data + off, cut);
        off += cut;
    }
    repo_block_unref(u, blk);
    chunk_found_clear(&found);
    *out_size = total;
    return rc;
}

/* The stream's hash: SHA-256 over its chunk list ("<sha>:<len>\n" each).
 * Every chunk is checked against its own hash when read, so this covers the
 * whole content without a second pass over the data. */
struct repo_chunk_ref {
    const char *sha;
    uint32_t len;
};

static int repo_root(size_t n, struct repo_chunk_ref (*at)(const void *v, size_t i), const void *v,
                     char out[UTIL_SHA256_HEX])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen;
    char line[96];
    if (!ctx)
        return err_set(VK_ENOMEM, "out of memory");
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    for (size_t i = 0; i < n; i++) {
        struct repo_chunk_ref c = at(v, i);
        int k = snprintf(line, sizeof(line), "%.64s:%" PRIu32 "\n", c.sha, c.len);
        EVP_DigestUpdate(ctx, line, (size_t)k);
    }
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    EVP_MD_CTX_free(ctx);
    util_hex(md, mdlen, out);
    return 0;
}

static struct repo_chunk_ref repo_up_at(const void *v, size_t i)
{
    const struct up_entry *e = v;
    return (struct repo_chunk_ref){e[i].sha, e[i].len};
}

static int repo_put_index(struct repo *r, struct up_ctx *u, const char *sha, uint64_t size,
                          const char *name)
{
    json_t *chunks = json_array(), *j;
    char *text;
    int rc;
    for (size_t i = 0; i < u->n; i++)
        json_array_append_new(chunks, json_pack("[s, I, s]", u->entries[i].sha,
                                                (json_int_t)u->entries[i].len,
                                                codec_name(u->entries[i].codec)));
    j = json_pack("{s:i, s:I, s:s, s:I, s:o}", "format", 2, "size", (json_int_t)size, "sha256",
                  sha, "chunk_avg", (json_int_t)r->cp.avg, "chunks", chunks);
    text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text)
        return err_set(VK_ENOMEM, "out of memory");
    rc = VK_EIO;
    for (int attempt = 0; attempt < r->cfg.retries && rc < 0; attempt++) {
        rc = store_put_buf(r->store, name, text, strlen(text));
        if (rc < 0 && rc != VK_ENOSPC && attempt + 1 < r->cfg.retries)
            repo_backoff(r, attempt);
        else if (rc == VK_ENOSPC)
            break;
    }
    free(text);
    return rc;
}

/* Fills o from the index of a file stored whole before (named by the file's
 * SHA-256): VK_ENOTFOUND if there is none. */
static int repo_known_file(struct repo *r, const char *file_sha, struct stream_ref *o)
{
    char *name = util_fmt("indexes/%s", file_sha), *text = NULL;
    size_t len = 0;
    int rc = name ? store_get_buf(r->store, name, &text, &len) : err_set(VK_ENOMEM, "out of memory");
    json_t *j = rc == 0 ? json_loadb(text, len, 0, NULL) : NULL;
    const char *root = json_string_value(json_object_get(j, "sha256"));
    json_t *size = json_object_get(j, "size");
    if (rc == 0 && (!util_is_sha256_hex(root) || !json_is_integer(size) ||
                    json_integer_value(size) < 0))
        rc = err_set(VK_ECORRUPT, "store %s: index %s is damaged", store_uri(r->store), name);
    if (rc == 0) {
        memcpy(o->sha256, root, UTIL_SHA256_HEX);
        o->size = (uint64_t)json_integer_value(size);
        o->name = name;
        name = NULL;
    }
    json_decref(j);
    free(text);
    free(name);
    return rc;
}

int repo_put_file(struct repo *r, const char *path, int dedup_whole, struct stream_ref *out,
                  struct repo_stats *stats, repo_progress_fn progress, void *arg)
{
    struct up_ctx u = {.r = r, .progress = progress, .arg = arg};
    pthread_t th[64];
    int nth = 0, fd, rc;
    uint64_t size = 0;
    char file_sha[UTIL_SHA256_HEX] = "";

    memset(out, 0, sizeof(*out));
    if (dedup_whole) {
        rc = util_sha256_file(path, file_sha, &size);
        if (rc < 0)
            return rc;
        if (!r->cfg.no_dedup && (rc = repo_known_file(r, file_sha, out)) != VK_ENOTFOUND)
            return rc; /* stored once for every task that uses it */
    }
    u.pcap = r->packs.size;
    rc = pack_map_new(&u.pending);
    if (rc == 0)
        rc = pack_new_id(u.open.id);
    if (rc == 0 && !r->cfg.no_dedup)
        rc = pack_map_refresh(r->map, r->store, 0); /* packs other nodes wrote */
    if (rc < 0) {
        pack_map_free(u.pending);
        return err_wrap(rc, "storing %s", path);
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        pack_map_free(u.pending);
        return err_errno(errno, "cannot open %s", path);
    }
    pthread_mutex_init(&u.lock, NULL);
    pthread_cond_init(&u.work, NULL);
    pthread_cond_init(&u.space, NULL);
    pthread_rwlock_rdlock(&r->gc_lock);
    for (; nth < r->cfg.workers; nth++)
        if (pthread_create(&th[nth], NULL, repo_up_worker, &u) != 0)
            break;
    rc = nth ? repo_up_read(&u, fd, path, &size)
             : err_set(VK_ENOMEM, "cannot start upload threads");
    pthread_mutex_lock(&u.lock);
    u.done_reading = 1;
    if (rc < 0 && u.rc == 0)
        u.rc = rc;
    pthread_cond_broadcast(&u.work);
    pthread_mutex_unlock(&u.lock);
    for (int i = 0; i < nth; i++)
        pthread_join(th[i], NULL);
    if (u.err[0]) /* a worker failed: its message says why */
        rc = err_set(u.rc, "%s", u.err);
    close(fd);
    if (rc == 0 && u.plen > 0) { /* the last, partly filled pack */
        struct pack_idx idx;
        uint8_t *buf;
        size_t len;
        rc = repo_up_take(&u, &buf, &len, &idx);
        rc = rc == 0 ? repo_up_flush(&u, buf, len, &idx, &u.st)
                     : (bufpool_put(&r->packs, buf), pack_idx_clear(&idx), rc);
    }
    if (rc == 0)
        rc = repo_root(u.n, repo_up_at, u.entries, out->sha256);
    if (rc == 0) {
        /* A file stored whole is found again by its own hash (repo_known_file). */
        out->size = size;
        out->name = util_fmt("indexes/%s", file_sha[0] ? file_sha : out->sha256);
        rc = out->name ? repo_put_index(r, &u, out->sha256, size, out->name)
                       : err_set(VK_ENOMEM, "out of memory");
    }
    pthread_rwlock_unlock(&r->gc_lock);
    if (rc == 0 && stats)
        repo_stats_add(stats, &u.st);
    if (rc < 0) {
        err_wrap(rc, "storing %s", path);
        free(out->name);
        out->name = NULL;
    }
    free(u.entries);
    bufpool_put(&r->packs, u.pbuf);
    pack_idx_clear(&u.open);
    pack_map_free(u.pending);
    pthread_mutex_destroy(&u.lock);
    pthread_cond_destroy(&u.work);
    pthread_cond_destroy(&u.space);
    return rc;
}

/* ---- download ---------------------------------------------------------------- */

/* A restore reads exactly the records its stream needs: records of one pack
 * that lie closer than the store's read gap are read as one range (a "job"),
 * decoded into one buffer, and written out in stream order by one thread
 * while workers fetch the next jobs. Buffers are reused (a fresh page costs a
 * fault), and the bytes in flight are bounded, except for the job the writer
 * waits for. */

struct down_entry {
    char sha[UTIL_SHA256_HEX];
    uint32_t len;
    int codec;
    uint64_t off; /* in the stream */
    int64_t rec;  /* into down_ctx.recs; -1: a zero chunk */
};

static struct repo_chunk_ref repo_down_at(const void *v, size_t i)
{
    const struct down_entry *e = v;
    return (struct repo_chunk_ref){e[i].sha, e[i].len};
}

/* Loads and checks the index of stream o. *out: free(). */
static int repo_index_parse(struct repo *r, const struct stream_ref *o, const char *what,
                            const char *text, size_t len, struct down_entry **out, size_t *out_n);

static int repo_load_index(struct repo *r, const struct stream_ref *o, const char *what,
                           struct down_entry **out, size_t *out_n)
{
    char *text = NULL;
    size_t len = 0;
    int rc = VK_EIO;

    *out = NULL;
    for (int attempt = 0; attempt < r->cfg.retries && rc < 0 && rc != VK_ENOTFOUND; attempt++) {
        if (attempt)
            repo_backoff(r, attempt - 1);
        rc = store_get_buf(r->store, o->name, &text, &len);
    }
    if (rc < 0)
        return err_wrap(rc, "%s", what);
    rc = repo_index_parse(r, o, what, text, len, out, out_n);
    free(text);
    return rc;
}

/* Decodes and checks the index text of stream o. *out: free(). */
static int repo_index_parse(struct repo *r, const struct stream_ref *o, const char *what,
                            const char *text, size_t len, struct down_entry **out, size_t *out_n)
{
    size_t i;
    json_t *j = NULL, *c;
    struct down_entry *e = NULL;
    uint64_t off = 0;
    int rc = 0;

    *out = NULL;
    j = json_loadb(text, len, 0, NULL);
    json_t *chunks = json_object_get(j, "chunks");
    const char *sha = json_string_value(json_object_get(j, "sha256"));
    if (json_integer_value(json_object_get(j, "format")) != 2) {
        rc = err_set(VK_ECORRUPT, "%s: index %s is not in the format this vmckpt reads (2)", what,
                     o->name);
        goto out;
    }
    if (!json_is_array(chunks) || !sha || strcmp(sha, o->sha256) ||
        (uint64_t)json_integer_value(json_object_get(j, "size")) != o->size) {
        rc = err_set(VK_ECORRUPT, "%s: index %s is damaged or does not describe this stream",
                     what, o->name);
        goto out;
    }
    e = calloc(json_array_size(chunks) + 1, sizeof(*e));
    if (!e) {
        rc = err_set(VK_ENOMEM, "out of memory");
        goto out;
    }
    json_array_foreach(chunks, i, c)
    {
        const char *h = json_string_value(json_array_get(c, 0));
        const char *cn = json_string_value(json_array_get(c, 2));
        json_int_t n = json_integer_value(json_array_get(c, 1));
        int codec = cn ? codec_by_name(cn) : -2;
        if (!util_is_sha256_hex(h) || n <= 0 || (uint64_t)n > CHUNK_LEN_MAX) {
            rc = err_set(VK_ECORRUPT, "%s: index %s: chunk %zu is malformed", what, o->name, i);
            goto out;
        }
        if (codec < 0 && codec != CODEC_ZERO) {
            rc = err_set(VK_ECORRUPT, "%s: index %s: chunk %zu has unknown codec '%s'", what,
                         o->name, i, cn ? cn : "?");
            goto out;
        }
        if (codec == CODEC_ZERO && !repo_is_zero_sha(r, (size_t)n, h)) {
            rc = err_set(VK_ECORRUPT, "%s: index %s: chunk %zu is marked zero but its name "
                                      "is not the hash of %" JSON_INTEGER_FORMAT " zero bytes",
                         what, o->name, i, n);
            goto out;
        }
        memcpy(e[i].sha, h, UTIL_SHA256_HEX);
        e[i].len = (uint32_t)n;
        e[i].codec = codec;
        e[i].off = off;
        off += (uint64_t)n;
    }
    if (off != o->size) {
        rc = err_set(VK_ECORRUPT, "%s: index %s: chunks add up to %" PRIu64 " bytes, not %" PRIu64,
                     what, o->name, off, o->size);
        goto out;
    }
    char root[UTIL_SHA256_HEX];
    rc = repo_root(json_array_size(chunks), repo_down_at, e, root);
    if (rc == 0 && strcmp(root, o->sha256) != 0) {
        rc = err_set(VK_ECORRUPT, "%s: index %s is damaged: its chunk list does not match its hash",
                     what, o->name);
        goto out;
    }
    *out = e;
    *out_n = json_array_size(chunks);
    e = NULL;
out:
    free(e);
    json_decref(j);
    return rc;
}

int repo_index_check(struct repo *r, const struct stream_ref *o, const char *text, size_t len)
{
    struct down_entry *e = NULL;
    size_t n = 0;
    int rc = repo_index_parse(r, o, "stream", text, len, &e, &n);
    free(e);
    return rc;
}

/* Reads the record of chunk e alone; looks again at the store's pack indexes
 * once if no known pack has it or its pack is gone (GC on another node
 * rewrote it). */
static int repo_read_record(struct repo *r, const struct down_entry *e, uint8_t *raw, size_t cap,
                            size_t *got, char pack[80], struct pack_loc *loc)
{
    int rc = 0;
    for (int look = 0; look < 2; look++) {
        if (look)
            rc = pack_map_refresh(r->map, r->store, 0);
        uint64_t size;
        if (rc == 0)
            rc = pack_map_find_named(r->map, e->sha, loc, pack, &size);
        if (rc == VK_ENOTFOUND)
            continue;
        if (rc < 0)
            return rc;
        if (loc->bytes > cap)
            return VK_ECORRUPT;
        for (int attempt = 0; attempt < r->cfg.retries; attempt++) {
            rc = store_read(r->store, pack, loc->off, raw, loc->bytes, got);
            if (rc == 0 || rc == VK_ENOTFOUND)
                break;
            repo_backoff(r, attempt);
        }
        atomic_fetch_add(&r->read_store, rc == 0 ? *got : 0);
        if (rc != VK_ENOTFOUND)
            return rc;
    }
    return VK_ENOTFOUND;
}

/* Decodes a record (raw, got bytes; at pack_off in pack) into plain (e->len
 * bytes) and checks it against its name. */
static int repo_decode(const struct down_entry *e, const uint8_t *raw, size_t got,
                       const char *pack, uint64_t pack_off, const char *what, uint8_t *plain)
{
    char sha[UTIL_SHA256_HEX];
    int rc = pack_record_decode(raw, got, e->len, plain);
    if (rc < 0)
        return err_wrap(rc, "%s: chunk %s in pack %s at offset %" PRIu64 " is damaged", what,
                        e->sha, pack, pack_off);
    util_sha256_buf(plain, e->len, sha);
    if (strcmp(sha, e->sha) != 0)
        return err_set(VK_ECORRUPT, "%s: chunk %s in pack %s at offset %" PRIu64
                                    " is damaged: its content does not match its name",
                       what, e->sha, pack, pack_off);
    return 0;
}

/* Fetches one chunk on its own into plain (e->len bytes), checked against
 * its name: for a chunk no known pack holds, or when its range could not be
 * read (a pack rewritten meanwhile). */
static int repo_fetch_alone(struct repo *r, const struct down_entry *e, const char *what,
                            uint8_t *plain)
{
    char pack[80] = "";
    size_t cap = REPO_HDR + codec_bound(CODEC_ZSTD9, e->len) + codec_bound(CODEC_LZ4, e->len);
    uint8_t *raw = malloc(cap);
    struct pack_loc loc = {0};
    size_t got = 0;
    int rc;

    if (!raw)
        return err_set(VK_ENOMEM, "out of memory");
    rc = repo_read_record(r, e, raw, cap, &got, pack, &loc);
    if (rc == VK_ENOTFOUND && !pack[0])
        rc = err_set(rc, "%s: chunk %s is missing: no pack of store %s holds it", what, e->sha,
                     store_uri(r->store));
    else if (rc == VK_ENOTFOUND)
        rc = err_set(rc, "%s: chunk %s is missing: its pack %s is gone from store %s", what,
                     e->sha, pack, store_uri(r->store));
    else if (rc < 0 && rc != VK_ECORRUPT)
        err_wrap(rc, "%s: chunk %s (pack %s)", what, e->sha, pack);
    else
        rc = repo_decode(e, raw, rc == VK_ECORRUPT || got != loc.bytes ? 0 : got, pack, loc.off,
                         what, plain);
    free(raw);
    return rc;
}

/* A record the stream needs; entries naming the same chunk close by share it. */
struct down_rec {
    struct pack_loc loc;
    char pack[48];      /* its pack's name, found with loc (numbers change on a refresh) */
    uint64_t pack_size;
    size_t entry;       /* the first entry naming it */
    uint32_t job;
    uint32_t plain_off; /* where its plain bytes are: in the job's out buffer, or in_raw */
    int found;          /* loc is known; else it is fetched alone */
    int in_raw;         /* stored plain: served from the job's raw buffer, not copied */
};

/* A buffer of the pool; kept for the next job when released. */
struct down_buf {
    struct down_buf *next;
    size_t cap;
    uint8_t *p;
};

enum { DJ_WAITING, DJ_READY, DJ_DONE };

/* One read: a range of one pack holding records rec0..rec0+nrec-1, or one
 * record fetched alone. */
struct down_job {
    uint64_t off, bytes; /* the range */
    size_t rec0, nrec;
    size_t first;        /* the first entry needing it: jobs are fetched in this order */
    uint64_t plain;      /* plain bytes of its records */
    uint32_t refs;       /* entries not written yet */
    int keep_raw;        /* some records are served from raw */
    struct down_buf *raw, *out;
    int state;           /* DJ_* */
};

struct repo_seen {
    json_t *set; /* chunk hash -> null */
};

struct down_ctx {
    struct repo *r;
    const char *what;
    struct repo_seen *seen; /* a verify's chunks read intact already: not read again */
    struct down_entry *e;
    size_t n;
    struct down_rec *recs;
    size_t n_recs;
    struct down_job *jobs;
    size_t n_jobs, next_job; /* next_job: the next to fetch */
    size_t next_write;       /* the entry the writer writes next */
    size_t inflight, budget; /* bytes of buffers taken by jobs */
    size_t job_cap;          /* the bytes of a job at most, raw or plain */
    struct down_buf *free_bufs;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int rc, stop;
    char err[1024];
};

/* Records of one pack at one place, the same chunk, within this many stream
 * bytes of each other are read once. */
#define DOWN_SHARE_SPAN ((uint64_t)8 << 20)
#define DOWN_JOB_MIN ((size_t)256 << 10)
/* Buffers in flight at most. Over SFTP on a 1 Gbit link, 16 MiB (8 workers
 * of 2 MiB jobs) restored no faster than 8 MiB and faulted in 5.2 k pages per
 * 60 MiB against 3.1 k; 4 MiB was 6% slower. */
#define DOWN_BUDGET_MAX ((size_t)8 << 20)

/* The bytes of one job at most (before the budget caps it): a few read gaps. */
static size_t repo_job_max(struct repo *r)
{
    size_t gap = store_read_gap(r->store);
    return gap * 4 > DOWN_JOB_MIN ? gap * 4 : DOWN_JOB_MIN;
}

static int repo_rec_cmp(const void *a, const void *b)
{
    const struct down_rec *x = a, *y = b;
    if (x->found != y->found)
        return x->found ? -1 : 1;
    int byname = strcmp(x->pack, y->pack);
    if (byname)
        return byname;
    if (x->loc.off != y->loc.off)
        return x->loc.off < y->loc.off ? -1 : 1;
    return x->entry < y->entry ? -1 : x->entry > y->entry;
}

static int repo_job_cmp(const void *a, const void *b)
{
    const struct down_job *x = a, *y = b;
    return x->first < y->first ? -1 : x->first > y->first;
}

/* The records the stream needs, one per stored chunk (shared by entries that
 * name the same chunk within DOWN_SHARE_SPAN), sorted by place. */
static int repo_plan_recs(struct down_ctx *d)
{
    struct pack_map *m = d->r->map;
    size_t nz = 0;
    struct down_rec *rec = calloc(d->n + 1, sizeof(*rec));
    if (!rec)
        return err_set(VK_ENOMEM, "out of memory");
    for (size_t i = 0; i < d->n; i++) {
        struct down_entry *e = &d->e[i];
        e->rec = -1;
        if (e->codec == CODEC_ZERO || (d->seen && json_object_get(d->seen->set, e->sha)))
            continue;
        char name[80];
        rec[nz].entry = i;
        rec[nz].found = pack_map_find_named(m, e->sha, &rec[nz].loc, name, &rec[nz].pack_size) == 0 &&
                        strlen(name) < sizeof(rec[nz].pack);
        if (rec[nz].found)
            memcpy(rec[nz].pack, name, strlen(name) + 1);
        nz++;
    }
    qsort(rec, nz, sizeof(*rec), repo_rec_cmp);
    d->n_recs = 0;
    for (size_t k = 0; k < nz; k++) {
        struct down_rec *c = &rec[k], *p = d->n_recs ? &rec[d->n_recs - 1] : NULL;
        struct down_entry *e = &d->e[c->entry];
        if (p && c->found && p->found && !strcmp(p->pack, c->pack) && p->loc.off == c->loc.off &&
            !strcmp(d->e[p->entry].sha, e->sha) &&
            e->off - d->e[p->entry].off <= DOWN_SHARE_SPAN) {
            e->rec = (int64_t)(d->n_recs - 1);
            continue;
        }
        rec[d->n_recs] = *c;
        e->rec = (int64_t)d->n_recs++;
    }
    d->recs = rec;
    return 0;
}

/* Groups the records into jobs: neighbours in one pack closer than the
 * store's read gap, up to a size, and not too far apart in the stream (a job
 * is held until its last entry is written). */
static int repo_plan_jobs(struct down_ctx *d)
{
    size_t gap = store_read_gap(d->r->store), max = repo_job_max(d->r);
    struct down_job *j = NULL;

    if (max > d->budget / 4)
        max = d->budget / 4;
    d->job_cap = max;
    d->jobs = calloc(d->n_recs + 1, sizeof(*d->jobs));
    if (!d->jobs)
        return err_set(VK_ENOMEM, "out of memory");
    for (size_t k = 0; k < d->n_recs; k++) {
        struct down_rec *c = &d->recs[k], *p = k ? &d->recs[k - 1] : NULL;
        const struct down_entry *e = &d->e[c->entry];
        uint64_t end = j ? j->off + j->bytes : 0;
        c->in_raw = c->found && c->loc.codec == CODEC_NONE && c->loc.bytes == REPO_HDR + e->len;
        if (!j || !c->found || !p->found || strcmp(p->pack, c->pack) || c->loc.off < end ||
            c->loc.off - end > gap || c->loc.off + c->loc.bytes - j->off > max ||
            j->plain + (c->in_raw ? 0 : e->len) > max ||
            e->off > d->e[j->first].off + DOWN_SHARE_SPAN ||
            e->off + DOWN_SHARE_SPAN < d->e[j->first].off) {
            j = &d->jobs[d->n_jobs++];
            j->off = c->loc.off;
            j->rec0 = k;
            j->first = c->entry;
        }
        c->plain_off = (uint32_t)(c->in_raw ? c->loc.off - j->off + REPO_HDR : j->plain);
        j->bytes = c->loc.off + c->loc.bytes - j->off;
        j->plain += c->in_raw ? 0 : e->len;
        j->keep_raw |= c->in_raw;
        j->nrec++;
        if (c->entry < j->first)
            j->first = c->entry;
    }
    qsort(d->jobs, d->n_jobs, sizeof(*d->jobs), repo_job_cmp);
    for (size_t k = 0; k < d->n_jobs; k++)
        for (size_t i = 0; i < d->jobs[k].nrec; i++)
            d->recs[d->jobs[k].rec0 + i].job = (uint32_t)k;
    for (size_t i = 0; i < d->n; i++)
        if (d->e[i].rec >= 0)
            d->jobs[d->recs[d->e[i].rec].job].refs++;
    return 0;
}

/* A buffer of at least len bytes from the pool (called with the lock held;
 * *grow set when it must be (re)allocated, outside the lock). */
static struct down_buf *repo_buf_take(struct down_ctx *d, size_t len)
{
    struct down_buf **pp = &d->free_bufs, **best = NULL;
    for (; *pp; pp = &(*pp)->next) {
        if ((*pp)->cap >= len && (!best || (*pp)->cap < (*best)->cap))
            best = pp;
    }
    if (!best && d->free_bufs)
        best = &d->free_bufs; /* grown by the caller */
    if (best) {
        struct down_buf *b = *best;
        *best = b->next;
        b->next = NULL;
        return b;
    }
    return calloc(1, sizeof(struct down_buf));
}

static int repo_buf_fit(struct down_ctx *d, struct down_buf *b, size_t len)
{
    if (b->cap >= len)
        return 0;
    /* Sized for any job at once: a buffer grown job after job would be moved
     * and faulted in again each time. Only the pages a job uses are touched. */
    if (len && len < d->job_cap)
        len = d->job_cap;
    uint8_t *p = realloc(b->p, len ? len : 1);
    if (!p)
        return err_set(VK_ENOMEM, "out of memory");
    b->p = p;
    b->cap = len;
    return 0;
}

static void repo_buf_give(struct down_ctx *d, struct down_buf *b)
{
    if (!b)
        return;
    b->next = d->free_bufs;
    d->free_bufs = b;
}

/* Where the plain bytes of record c of job j are (once fetched). */
static uint8_t *repo_rec_plain(const struct down_job *j, const struct down_rec *c)
{
    return (c->in_raw ? j->raw->p : j->out->p) + c->plain_off;
}

/* Checks a record stored plain where it lies (raw: got bytes, at pack_off). */
static int repo_check_plain(const struct down_entry *e, const uint8_t *raw, size_t got,
                            const char *pack, uint64_t pack_off, const char *what)
{
    char sha[UTIL_SHA256_HEX];
    int codec;
    uint32_t n = 0;
    if (got != REPO_HDR + (size_t)e->len || pack_hdr_parse(raw, &codec, &n) < 0 ||
        codec != CODEC_NONE || n != e->len)
        return err_set(VK_ECORRUPT, "%s: chunk %s in pack %s at offset %" PRIu64
                                    " is damaged: its record is not the plain one its index names",
                       what, e->sha, pack, pack_off);
    util_sha256_buf(raw + REPO_HDR, e->len, sha);
    if (strcmp(sha, e->sha) != 0)
        return err_set(VK_ECORRUPT, "%s: chunk %s in pack %s at offset %" PRIu64
                                    " is damaged: its content does not match its name",
                       what, e->sha, pack, pack_off);
    return 0;
}

/* Decodes the records of job j from its range (j->raw, got bytes of pack). */
static int repo_job_decode(struct down_ctx *d, struct down_job *j, size_t got, const char *pack)
{
    for (size_t i = 0; i < j->nrec; i++) {
        const struct down_rec *c = &d->recs[j->rec0 + i];
        const struct down_entry *e = &d->e[c->entry];
        const uint8_t *rec = j->raw->p + (c->loc.off - j->off);
        int rc;
        if (c->loc.off - j->off + c->loc.bytes > got)
            rc = err_set(VK_ECORRUPT, "%s: chunk %s lies past the end of pack %s", d->what,
                         e->sha, pack);
        else if (c->in_raw)
            rc = repo_check_plain(e, rec, c->loc.bytes, pack, c->loc.off, d->what);
        else
            rc = repo_decode(e, rec, c->loc.bytes, pack, c->loc.off, d->what,
                             repo_rec_plain(j, c));
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Fetches job j into its buffers: its range in one read, or (no known pack,
 * or the range could not be read whole) each record alone, its plain bytes
 * put where the writer looks for them. */
static int repo_job_fetch(struct down_ctx *d, struct down_job *j)
{
    struct down_buf *raw = j->raw;
    const struct down_rec *c0 = &d->recs[j->rec0];
    char pack[80];
    size_t got = 0;
    int rc = VK_ENOTFOUND;

    if (c0->found) {
        snprintf(pack, sizeof(pack), "%s", c0->pack);
        rc = repo_buf_fit(d, raw, j->bytes);
        /* A local copy of the pack first (pre-staged for a take-over); one
         * that cannot be read or is damaged is no error: the store has it. */
        if (rc == 0 && d->r->cache &&
            store_read(d->r->cache, pack, j->off, raw->p, j->bytes, &got) == 0 &&
            got == j->bytes) {
            if (repo_job_decode(d, j, got, pack) == 0) {
                atomic_fetch_add(&d->r->read_cache, got);
                return 0;
            }
            log_warn("%s: the local copy of pack %s is damaged; reading the store's", d->what,
                     pack);
        }
        for (int attempt = 0; rc == 0 && attempt < d->r->cfg.retries; attempt++) {
            if (attempt)
                repo_backoff(d->r, attempt - 1);
            rc = store_read(d->r->store, pack, j->off, raw->p, j->bytes, &got);
            if (rc == 0 || rc == VK_ENOTFOUND)
                break;
        }
        atomic_fetch_add(&d->r->read_store, rc == 0 ? got : 0);
        if (rc == 0 && got == j->bytes)
            return repo_job_decode(d, j, got, pack);
        if (rc == VK_ENOMEM)
            return rc;
    }
    for (size_t i = 0; i < j->nrec; i++) {
        const struct down_rec *c = &d->recs[j->rec0 + i];
        if ((rc = repo_fetch_alone(d->r, &d->e[c->entry], d->what, repo_rec_plain(j, c))) < 0)
            return rc;
    }
    return 0;
}

static void repo_down_fail(struct down_ctx *d, int rc)
{
    if (d->rc == 0) {
        d->rc = rc;
        snprintf(d->err, sizeof(d->err), "%s", err_msg());
    }
    d->stop = 1;
    pthread_cond_broadcast(&d->cond);
}

static void *repo_down_worker(void *arg)
{
    struct down_ctx *d = arg;
    pthread_mutex_lock(&d->lock);
    for (;;) {
        /* Stay within the budget, but always fetch what the writer waits for. */
        while (!d->stop && d->next_job < d->n_jobs &&
               d->jobs[d->next_job].first > d->next_write &&
               d->inflight + d->jobs[d->next_job].plain + d->jobs[d->next_job].bytes > d->budget)
            pthread_cond_wait(&d->cond, &d->lock);
        if (d->stop || d->next_job >= d->n_jobs)
            break;
        struct down_job *j = &d->jobs[d->next_job++];
        j->raw = repo_buf_take(d, j->bytes);
        j->out = j->raw ? repo_buf_take(d, j->plain) : NULL;
        d->inflight += j->plain + j->bytes;
        pthread_mutex_unlock(&d->lock);
        int rc = j->raw && j->out ? repo_buf_fit(d, j->raw, j->bytes)
                                  : err_set(VK_ENOMEM, "out of memory");
        if (rc == 0)
            rc = repo_buf_fit(d, j->out, j->plain);
        if (rc == 0)
            rc = repo_job_fetch(d, j);
        pthread_mutex_lock(&d->lock);
        if (!j->keep_raw) { /* nothing is served from it */
            repo_buf_give(d, j->raw);
            j->raw = NULL;
            d->inflight -= j->bytes;
        }
        if (rc < 0)
            repo_down_fail(d, rc);
        j->state = DJ_READY;
        pthread_cond_broadcast(&d->cond);
    }
    pthread_mutex_unlock(&d->lock);
    return NULL;
}

/* Where the writer puts the stream: a file it may leave holes in (fresh,
 * regular), a pipe or file it writes every byte to, or nowhere (fd < 0). */
struct down_out {
    int fd, sparse;
    uint64_t hole;            /* zero bytes not written yet (sparse) */
    struct iovec iov[64];
    int n_iov;
    size_t batch_bytes, batch_end; /* entries [next_write, batch_end) are in iov */
};

static uint8_t repo_zeros[1 << 20];

static int repo_out_flush(struct down_ctx *d, struct down_out *o)
{
    struct iovec *v = o->iov;
    int n = o->n_iov, rc = 0;
    if (o->fd >= 0 && o->hole && n > 0) {
        if (lseek(o->fd, (off_t)o->hole, SEEK_CUR) < 0)
            return err_errno(errno, "cannot write the restored stream");
        o->hole = 0;
    }
    while (o->fd >= 0 && n > 0) {
        ssize_t w = writev(o->fd, v, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            rc = err_errno(errno, "cannot write the restored stream");
            break;
        }
        while (n > 0 && (size_t)w >= v->iov_len) {
            w -= (ssize_t)v->iov_len;
            v++;
            n--;
        }
        if (n > 0) {
            v->iov_base = (uint8_t *)v->iov_base + w;
            v->iov_len -= (size_t)w;
        }
    }
    /* The jobs of the entries written are released when their last one is. */
    pthread_mutex_lock(&d->lock);
    for (size_t i = d->next_write; i < o->batch_end; i++) {
        if (d->e[i].rec < 0)
            continue;
        struct down_job *j = &d->jobs[d->recs[d->e[i].rec].job];
        if (--j->refs == 0) {
            repo_buf_give(d, j->out);
            repo_buf_give(d, j->raw);
            j->out = j->raw = NULL;
            d->inflight -= j->plain + (j->keep_raw ? j->bytes : 0);
            j->state = DJ_DONE;
        }
    }
    d->next_write = o->batch_end;
    if (rc < 0)
        repo_down_fail(d, rc);
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->lock);
    o->n_iov = 0;
    o->batch_bytes = 0;
    return rc;
}

static int repo_out_add(struct down_ctx *d, struct down_out *o, const uint8_t *p, size_t len)
{
    if (o->n_iov == (int)(sizeof(o->iov) / sizeof(o->iov[0])) && repo_out_flush(d, o) < 0)
        return d->rc;
    o->iov[o->n_iov++] = (struct iovec){(void *)p, len};
    o->batch_bytes += len;
    return 0;
}

/* Writes entry i (after its job is ready). */
static int repo_out_entry(struct down_ctx *d, struct down_out *o, size_t i)
{
    const struct down_entry *e = &d->e[i];
    int rc = 0;
    if (e->rec >= 0) {
        const struct down_rec *c = &d->recs[e->rec];
        rc = repo_out_add(d, o, repo_rec_plain(&d->jobs[c->job], c), e->len);
    } else if (o->sparse) {
        if (o->n_iov > 0 && (rc = repo_out_flush(d, o)) < 0)
            return rc;
        o->hole += e->len;
    } else {
        for (size_t left = e->len; rc == 0 && left > 0;) {
            size_t k = left < sizeof(repo_zeros) ? left : sizeof(repo_zeros);
            rc = repo_out_add(d, o, repo_zeros, k);
            left -= k;
        }
    }
    o->batch_end = i + 1;
    return rc;
}

/* The writer: entries in stream order, a batch written whenever it is large
 * or the next entry's job is not there yet. */
static int repo_write_entries(struct down_ctx *d, struct down_out *o)
{
    int rc = 0;
    for (size_t i = 0; i < d->n && rc == 0; i++) {
        const struct down_entry *e = &d->e[i];
        struct down_job *j = e->rec >= 0 ? &d->jobs[d->recs[e->rec].job] : NULL;
        pthread_mutex_lock(&d->lock);
        int ready = !j || j->state == DJ_READY;
        pthread_mutex_unlock(&d->lock);
        if (!ready && o->batch_end > d->next_write && (rc = repo_out_flush(d, o)) < 0)
            break;
        pthread_mutex_lock(&d->lock);
        while (j && j->state != DJ_READY && !d->stop)
            pthread_cond_wait(&d->cond, &d->lock);
        rc = d->stop ? (d->rc < 0 ? d->rc : VK_EIO) : 0;
        pthread_mutex_unlock(&d->lock);
        if (rc == 0)
            rc = repo_out_entry(d, o, i);
        if (rc == 0 && o->batch_bytes >= ((size_t)1 << 20))
            rc = repo_out_flush(d, o);
    }
    if (rc == 0 && o->batch_end > d->next_write)
        rc = repo_out_flush(d, o);
    if (rc == 0 && o->fd >= 0 && o->hole) {
        off_t end = lseek(o->fd, 0, SEEK_CUR);
        if (end < 0 || ftruncate(o->fd, end + (off_t)o->hole) < 0)
            rc = err_errno(errno, "cannot write the restored stream");
    }
    return rc;
}

/* Runs the download of stream o: workers fetch, this thread writes in order.
 * With fd < 0 nothing is written (verification); with sparse, fd is a fresh
 * regular file and zero chunks are left as holes. */
static int repo_download(struct repo *r, const struct stream_ref *o, int fd, int sparse,
                         const char *what, struct repo_seen *seen)
{
    struct down_ctx d = {.r = r, .what = what, .seen = seen};
    struct down_out out = {.fd = fd, .sparse = sparse};
    pthread_t th[64];
    int nth = 0, rc;

    /* A job per worker, no more: each byte of a buffer is a page to fault in
     * once, and the writer drains faster than the workers fill. */
    d.budget = (size_t)r->cfg.workers * repo_job_max(r);
    if (d.budget > DOWN_BUDGET_MAX)
        d.budget = DOWN_BUDGET_MAX;
    if (d.budget > r->cfg.mem_budget)
        d.budget = r->cfg.mem_budget;
    rc = repo_load_index(r, o, what, &d.e, &d.n);
    if (rc == 0)
        rc = pack_map_refresh(r->map, r->store, 0);
    if (rc == 0)
        rc = repo_plan_recs(&d);
    if (rc == 0)
        rc = repo_plan_jobs(&d);
    pthread_mutex_init(&d.lock, NULL);
    pthread_cond_init(&d.cond, NULL);
    for (; rc == 0 && nth < r->cfg.workers && (size_t)nth < d.n_jobs; nth++)
        if (pthread_create(&th[nth], NULL, repo_down_worker, &d) != 0)
            break;
    if (rc == 0 && nth == 0 && d.n_jobs > 0)
        rc = err_set(VK_ENOMEM, "cannot start download threads");
    if (rc == 0)
        rc = repo_write_entries(&d, &out);
    pthread_mutex_lock(&d.lock);
    d.stop = 1;
    pthread_cond_broadcast(&d.cond);
    pthread_mutex_unlock(&d.lock);
    for (int i = 0; i < nth; i++)
        pthread_join(th[i], NULL);
    if (rc < 0 && d.rc < 0)
        rc = err_set(d.rc, "%s", d.err);
    for (size_t i = 0; rc == 0 && seen && i < d.n; i++) /* (a set that cannot grow reads again) */
        if (d.e[i].rec >= 0)
            json_object_set_new(seen->set, d.e[i].sha, json_null());
    for (size_t k = 0; d.jobs && k < d.n_jobs; k++) {
        repo_buf_give(&d, d.jobs[k].out);
        repo_buf_give(&d, d.jobs[k].raw);
    }
    while (d.free_bufs) {
        struct down_buf *b = d.free_bufs;
        d.free_bufs = b->next;
        free(b->p);
        free(b);
    }
    free(d.jobs);
    free(d.recs);
    free(d.e);
    pthread_mutex_destroy(&d.lock);
    pthread_cond_destroy(&d.cond);
    return rc;
}

void repo_set_cache(struct repo *r, struct store *cache) { r->cache = cache; }

size_t repo_buffers_made(struct repo *r)
{
    return bufpool_made(&r->blocks) + bufpool_made(&r->packs) + bufpool_made(&r->cbufs);
}

void repo_read_counts(struct repo *r, uint64_t *from_store, uint64_t *from_cache)
{
    *from_store = atomic_load(&r->read_store);
    *from_cache = atomic_load(&r->read_cache);
}

/* A pack holds at most [data] pack_mib (256 MiB at most) and one record:
 * an index that says more is not one of ours. */
#define REPO_PACK_MAX ((uint64_t)1 << 30)
#define REPO_COPY_PIECE (4u << 20)

/* Copies pack name of size bytes (as its index says) from the store to the
 * cache, a bounded piece at a time: the size comes from the store, and
 * pre-staging runs this by itself on every successor node. */
static int repo_copy_object(struct repo *r, const char *name, uint64_t size, uint64_t *copied)
{
    struct store_writer *w = NULL;
    uint64_t have = 0, off = 0;
    uint8_t *buf = NULL;
    int rc = size > REPO_PACK_MAX
                 ? err_set(VK_ECORRUPT, "pack %s: its index says it holds %" PRIu64 " bytes, more "
                                        "than a pack can (%" PRIu64 "): not copied", name, size,
                           REPO_PACK_MAX)
                 : store_stat(r->store, name, &have);
    if (rc == 0 && have < size)
        rc = err_set(VK_ECORRUPT, "pack %s is shorter than its index says (%" PRIu64 " < %" PRIu64
                                  " bytes)", name, have, size);
    if (rc == 0 && !(buf = malloc(REPO_COPY_PIECE)))
        rc = err_set(VK_ENOMEM, "out of memory");
    if (rc == 0)
        rc = store_put_begin(r->cache, name, &w);
    while (rc == 0 && off < size) {
        size_t n = size - off < REPO_COPY_PIECE ? (size_t)(size - off) : REPO_COPY_PIECE, got = 0;
        rc = store_read(r->store, name, off, buf, n, &got);
        if (rc == 0 && got != n)
            rc = err_set(VK_ECORRUPT, "pack %s is shorter than its index says", name);
        if (rc == 0)
            rc = store_put_write(w, buf, n);
        off += n;
    }
    if (w && rc == 0)
        rc = store_put_commit(w);
    else if (w)
        store_put_abort(w);
    if (rc == 0)
        *copied += size;
    free(buf);
    return rc;
}

int repo_stage_stream(struct repo *r, const struct stream_ref *o, json_t *packs, uint64_t *copied)
{
    struct down_ctx d = {.r = r, .what = o->name};
    json_t *seen = json_object();
    int rc = r->cache ? 0 : err_set(VK_EINVAL, "no local cache to stage into");
    if (rc == 0)
        rc = repo_load_index(r, o, o->name, &d.e, &d.n);
    if (rc == 0)
        rc = pack_map_refresh(r->map, r->store, 0);
    if (rc == 0)
        rc = repo_plan_recs(&d);
    for (size_t k = 0; rc == 0 && k < d.n_recs; k++) {
        const struct down_rec *c = &d.recs[k];
        uint64_t have = 0;
        if (!c->found || json_object_get(seen, c->pack))
            continue;
        json_object_set_new(seen, c->pack, json_true());
        json_array_append_new(packs, json_string(c->pack));
        if (store_stat(r->cache, c->pack, &have) == 0 && have == c->pack_size)
            continue; /* staged before: packs never change */
        rc = repo_copy_object(r, c->pack, c->pack_size, copied);
    }
    json_decref(seen);
    free(d.recs);
    free(d.e);
    return rc;
}

int repo_stream_stored(struct repo *r, const struct stream_ref *o, uint64_t *bytes)
{
    struct down_ctx d = {.r = r, .what = o->name};
    int rc = repo_load_index(r, o, o->name, &d.e, &d.n);
    *bytes = 0;
    if (rc == 0)
        rc = pack_map_refresh(r->map, r->store, 0);
    if (rc == 0)
        rc = repo_plan_recs(&d);
    for (size_t k = 0; rc == 0 && k < d.n_recs; k++)
        *bytes += d.recs[k].found ? d.recs[k].loc.bytes : 0;
    free(d.recs);
    free(d.e);
    return rc;
}

int repo_get_stream(struct repo *r, const struct stream_ref *o, int fd, const char *what)
{
    return repo_download(r, o, fd, 0, what, NULL);
}

struct repo_seen *repo_seen_new(void)
{
    struct repo_seen *s = calloc(1, sizeof(*s));
    if (s && !(s->set = json_object())) {
        free(s);
        s = NULL;
    }
    return s;
}

void repo_seen_free(struct repo_seen *s)
{
    if (s)
        json_decref(s->set);
    free(s);
}

int repo_verify_stream(struct repo *r, const struct stream_ref *o, const char *what)
{
    return repo_download(r, o, -1, 1, what, NULL);
}

int repo_verify_stream_seen(struct repo *r, const struct stream_ref *o, const char *what,
                            struct repo_seen *seen)
{
    return repo_download(r, o, -1, 1, what, seen);
}

int repo_get_file(struct repo *r, const struct stream_ref *o, const char *path, const char *what)
{
    /* Restores running at once may fetch the same blob (a shared kernel or
     * base): each into its own part file; whichever renames last wins, both whole. */
    char *part = util_part_path(path);
    int fd, rc;
    if (!part)
        return err_set(VK_ENOMEM, "out of memory");
    fd = open(part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = err_errno(errno, "cannot create %s", part);
        free(part);
        return rc;
    }
    rc = repo_download(r, o, fd, 1, what, NULL);
    if (rc == 0 && fsync(fd) < 0)
        rc = err_errno(errno, "cannot sync %s", part);
    close(fd);
    if (rc == 0 && rename(part, path) < 0)
        rc = err_errno(errno, "cannot rename %s", part);
    if (rc < 0)
        unlink(part);
    free(part);
    return rc;
}

int repo_stream_chunks(struct repo *r, const struct stream_ref *o,
                       int (*fn)(void *arg, const char *chunk_name), void *arg)
{
    struct down_entry *e = NULL;
    size_t n = 0;
    int rc = repo_load_index(r, o, o->name, &e, &n);
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (e[i].codec != CODEC_ZERO)
            rc = fn(arg, e[i].sha);
    free(e);
    return rc;
}

void repo_gc_begin(struct repo *r)
{
    if (pthread_rwlock_trywrlock(&r->gc_lock) != 0) {
        log_info("gc: waiting for the uploads in flight on this node to commit");
        pthread_rwlock_wrlock(&r->gc_lock);
    }
}

void repo_gc_end(struct repo *r) { pthread_rwlock_unlock(&r->gc_lock); }

struct store *repo_store(const struct repo *r) { return r->store; }

int repo_refresh(struct repo *r) { return pack_map_refresh(r->map, r->store, 1); }

int repo_chunk_where(struct repo *r, const char *sha, char pack_object[80], uint64_t *off)
{
    struct pack_loc loc;
    uint64_t size;
    if (pack_map_find_named(r->map, sha, &loc, pack_object, &size) < 0)
        return VK_ENOTFOUND;
    *off = loc.off;
    return 0;
}

int repo_chunk_check(struct repo *r, const char *sha)
{
    struct pack_loc loc;
    char pack[80];
    uint64_t size;
    uint8_t *raw, *plain = NULL;
    size_t got = 0, cap = 0;
    int rc;
    if (pack_map_find_named(r->map, sha, &loc, pack, &size) < 0)
        return VK_ENOTFOUND;
    if (loc.bytes > PACK_REC_MAX || !(raw = malloc(loc.bytes)))
        return loc.bytes > PACK_REC_MAX ? VK_ECORRUPT : err_set(VK_ENOMEM, "out of memory");
    rc = store_read(r->store, pack, loc.off, raw, loc.bytes, &got);
    if (rc == 0 && got != loc.bytes)
        rc = err_set(VK_ECORRUPT, "chunk %s: pack %s is shorter than its index says", sha, pack);
    if (rc == 0)
        rc = pack_record_check(raw, got, sha, &plain, &cap);
    free(raw);
    free(plain);
    return rc;
}

json_t *repo_policy_json(struct repo *r) { return codec_policy_json(&r->policy); }
