#include "repo.h"

#include "err.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define REPO_HDR 12 /* "VKCH", codec, 3 zero bytes, plain size (u32 LE) */
static const char repo_magic[4] = {'V', 'K', 'C', 'H'};

int repo_open(struct repo **out, struct store *s, const struct repo_cfg *cfg)
{
    struct repo *r;
    int rc;
    *out = NULL;
    if (cfg->workers < 1 || cfg->workers > 64 || cfg->mem_budget < 4 * cfg->chunk_avg * 4)
        return err_set(VK_EINVAL, "data settings: workers must be 1-64 and the memory budget at "
                                  "least 16 times the chunk size");
    r = calloc(1, sizeof(*r));
    if (!r)
        return err_set(VK_ENOMEM, "out of memory");
    rc = chunk_params_init(&r->cp, cfg->chunk_avg);
    if (rc < 0) {
        free(r);
        return rc;
    }
    r->store = s;
    r->cfg = *cfg;
    codec_policy_init(&r->policy, cfg->forced_codec);
    pthread_rwlock_init(&r->gc_lock, NULL);
    *out = r;
    return 0;
}

void repo_free(struct repo *r)
{
    if (!r)
        return;
    codec_policy_destroy(&r->policy);
    pthread_rwlock_destroy(&r->gc_lock);
    free(r);
}

static void repo_chunk_name(const char *sha, char out[80])
{
    snprintf(out, 80, "chunks/%.2s/%s", sha, sha);
}

static void repo_backoff(struct repo *r, int attempt)
{
    usleep((useconds_t)(r->cfg.retry_base_ms * 1000) << (attempt < 10 ? attempt : 10));
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

struct up_job {
    size_t idx;
    uint8_t *data;
    size_t len;
    struct up_job *next;
};

struct up_ctx {
    struct repo *r;
    pthread_mutex_t lock;
    pthread_cond_t cond;
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
};

/* Writes one chunk object, retrying with back-off. */
static int repo_put_chunk(struct repo *r, const char *name, const uint8_t *hdr,
                          const void *payload, size_t n, uint64_t *retries)
{
    int rc = 0;
    for (int attempt = 0; attempt < r->cfg.retries; attempt++) {
        struct store_writer *w = NULL;
        rc = store_put_begin(r->store, name, &w);
        if (rc == 0) {
            w->lazy = 1; /* synced once before the manifest (ckpt_commit) */
            rc = store_put_write(w, hdr, REPO_HDR);
        }
        if (rc == 0)
            rc = store_put_write(w, payload, n);
        if (rc == 0) {
            rc = store_put_commit(w); /* frees w */
            if (rc == 0)
                return 0;
        } else {
            store_put_abort(w);
        }
        if (rc == VK_ENOSPC || rc == VK_EINVAL)
            return rc; /* waiting will not help */
        (*retries)++;
        log_warn("store %s: writing %s failed (try %d of %d): %s", r->store->uri, name,
                 attempt + 1, r->cfg.retries, err_msg());
        repo_backoff(r, attempt);
    }
    return rc;
}

/* Compresses one chunk with codec into *buf (NULL for CODEC_NONE), noting the cost. */
static int repo_compress(struct repo *r, struct up_job *j, int codec, uint8_t **buf,
                         size_t *stored)
{
    size_t cap;
    int64_t t0 = util_now_us();
    int rc;

    *buf = NULL;
    *stored = j->len;
    if (codec == CODEC_NONE)
        return 0;
    cap = codec_bound(codec, j->len);
    if (!(*buf = malloc(cap)))
        return err_set(VK_ENOMEM, "out of memory");
    rc = codec_compress(codec, j->data, j->len, *buf, cap, stored);
    if (rc == 0)
        codec_policy_note_compress(&r->policy, codec, j->len, *stored,
                                   (double)(util_now_us() - t0) / 1e6);
    return rc;
}

/* Compresses a probe chunk with every codec (so ratios are compared on the
 * same data) and keeps the result that is cheapest to store now. */
static int repo_probe(struct repo *r, struct up_job *j, int *codec, uint8_t **buf, size_t *stored)
{
    double spb = codec_policy_upload_spb(&r->policy), best_cost = (double)j->len * spb;
    int best = CODEC_NONE;
    *buf = NULL;
    *stored = j->len;
    for (int c = 1; c < CODEC_COUNT; c++) {
        uint8_t *b = NULL;
        size_t n = 0;
        int64_t t0 = util_now_us();
        int rc = repo_compress(r, j, c, &b, &n);
        if (rc < 0) {
            free(b);
            return rc;
        }
        double cost = (double)(util_now_us() - t0) / 1e6 + (double)n * spb;
        if (cost < best_cost) {
            free(*buf);
            *buf = b;
            *stored = n;
            best = c;
            best_cost = cost;
        } else {
            free(b);
        }
    }
    *codec = best;
    return 0;
}

/* Hashes, deduplicates, compresses and stores one chunk. */
static int repo_up_chunk(struct up_ctx *u, struct up_job *j, struct up_entry *e,
                         struct repo_stats *st)
{
    struct repo *r = u->r;
    uint8_t hdr[REPO_HDR], *buf = NULL;
    char name[80];
    size_t got = 0, stored = j->len;
    int rc, codec;

    e->len = (uint32_t)j->len;
    util_sha256_buf(j->data, j->len, e->sha);
    st->chunks++;
    if (chunk_is_zero(j->data, j->len)) {
        e->codec = CODEC_ZERO;
        st->zero_chunks++;
        return 0;
    }
    repo_chunk_name(e->sha, name);
    rc = r->cfg.no_dedup ? VK_ENOTFOUND : store_read(r->store, name, 0, hdr, REPO_HDR, &got);
    if (rc == 0 && got == REPO_HDR && !memcmp(hdr, repo_magic, 4)) {
        e->codec = hdr[4];
        st->dedup_chunks++;
        return 0;
    }
    int probe;
    codec = codec_policy_choose(&r->policy, &probe);
    rc = probe ? repo_probe(r, j, &codec, &buf, &stored) : repo_compress(r, j, codec, &buf, &stored);
    if (rc < 0)
        goto out;
    if (codec != CODEC_NONE && stored >= j->len) { /* no gain: keep it plain */
        codec = CODEC_NONE;
        stored = j->len;
    }
    memcpy(hdr, repo_magic, 4);
    hdr[4] = (uint8_t)codec;
    hdr[5] = hdr[6] = hdr[7] = 0;
    for (int i = 0; i < 4; i++)
        hdr[8 + i] = (uint8_t)(j->len >> (8 * i));
    int64_t t0 = util_now_us();
    rc = repo_put_chunk(r, name, hdr, codec == CODEC_NONE ? j->data : buf, stored, &st->retries);
    if (rc < 0)
        goto out;
    codec_policy_note_upload(&r->policy, stored + REPO_HDR, (double)(util_now_us() - t0) / 1e6);
    e->codec = codec;
    st->new_chunks++;
    st->new_bytes += stored + REPO_HDR;
    st->codec_chunks[codec]++;
    st->codec_raw[codec] += j->len;
    st->codec_stored[codec] += stored;
out:
    free(buf);
    return rc;
}

static void *repo_up_worker(void *arg)
{
    struct up_ctx *u = arg;
    for (;;) {
        struct up_job *j;
        struct up_entry e = {0};
        struct repo_stats st = {0};
        int rc;

        pthread_mutex_lock(&u->lock);
        while (!u->head && !u->done_reading)
            pthread_cond_wait(&u->cond, &u->lock);
        j = u->head;
        if (j && !(u->head = j->next))
            u->tail = NULL;
        int failed = u->rc;
        pthread_mutex_unlock(&u->lock);
        if (!j)
            return NULL;
        rc = failed == 0 ? repo_up_chunk(u, j, &e, &st) : 0; /* after an error: drain */
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
        pthread_cond_broadcast(&u->cond);
        pthread_mutex_unlock(&u->lock);
        if (u->progress)
            u->progress(u->arg, done);
        free(j->data);
        free(j);
    }
}

/* Queues one chunk; waits while the memory budget is used up. */
static int repo_up_push(struct up_ctx *u, const uint8_t *data, size_t len)
{
    struct up_job *j = malloc(sizeof(*j));
    uint8_t *copy = malloc(len);
    if (!j || !copy) {
        free(j);
        free(copy);
        return err_set(VK_ENOMEM, "out of memory");
    }
    memcpy(copy, data, len);
    j->data = copy;
    j->len = len;
    j->next = NULL;
    pthread_mutex_lock(&u->lock);
    while (u->inflight > 0 && u->inflight + len > u->r->cfg.mem_budget && u->rc == 0)
        pthread_cond_wait(&u->cond, &u->lock); /* back-pressure */
    if (u->n == u->cap) {
        size_t ncap = u->cap ? u->cap * 2 : 1024;
        struct up_entry *ne = realloc(u->entries, ncap * sizeof(*ne));
        if (!ne) {
            pthread_mutex_unlock(&u->lock);
            free(copy);
            free(j);
            return err_set(VK_ENOMEM, "out of memory");
        }
        u->entries = ne;
        u->cap = ncap;
    }
    j->idx = u->n++;
    if (u->tail)
        u->tail->next = j;
    else
        u->head = j;
    u->tail = j;
    u->inflight += len;
    int rc = u->rc;
    pthread_cond_broadcast(&u->cond);
    pthread_mutex_unlock(&u->lock);
    return rc;
}

/* Reads the file, cuts it and feeds the workers; hashes the whole stream. */
static int repo_up_read(struct up_ctx *u, int fd, const char *path, char sha[UTIL_SHA256_HEX],
                        uint64_t *out_size)
{
    struct repo *r = u->r;
    size_t cap = r->cp.max * 4, avail = 0, off = 0;
    uint8_t *buf = malloc(cap);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen;
    int eof = 0, rc = 0;
    uint64_t total = 0;

    if (!buf || !ctx) {
        rc = err_set(VK_ENOMEM, "out of memory");
        goto out;
    }
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    while (rc == 0) {
        if (!eof && avail - off < r->cp.max) { /* refill */
            memmove(buf, buf + off, avail - off);
            avail -= off;
            off = 0;
            while (!eof && avail < cap) {
                ssize_t n = read(fd, buf + avail, cap - avail);
                if (n < 0 && errno == EINTR)
                    continue;
                if (n < 0) {
                    rc = err_errno(errno, "cannot read %s", path);
                    goto out;
                }
                eof = n == 0;
                avail += (size_t)n;
            }
        }
        if (off == avail)
            break;
        size_t cut = chunk_cut(&r->cp, buf + off, avail - off);
        EVP_DigestUpdate(ctx, buf + off, cut);
        total += cut;
        rc = repo_up_push(u, buf + off, cut);
        off += cut;
    }
    if (rc == 0) {
        EVP_DigestFinal_ex(ctx, md, &mdlen);
        util_hex(md, mdlen, sha);
        *out_size = total;
    }
out:
    free(buf);
    EVP_MD_CTX_free(ctx);
    return rc;
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
    j = json_pack("{s:i, s:I, s:s, s:I, s:o}", "format", 1, "size", (json_int_t)size, "sha256",
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

int repo_put_file(struct repo *r, const char *path, int dedup_whole, struct mf_obj *out,
                  struct repo_stats *stats, repo_progress_fn progress, void *arg)
{
    struct up_ctx u = {.r = r, .progress = progress, .arg = arg};
    pthread_t th[64];
    int nth = 0, fd, rc;
    uint64_t size = 0;

    memset(out, 0, sizeof(*out));
    if (dedup_whole) {
        rc = util_sha256_file(path, out->sha256, &out->size);
        if (rc < 0)
            return rc;
        out->name = util_fmt("indexes/%s", out->sha256);
        if (!out->name)
            return err_set(VK_ENOMEM, "out of memory");
        if (!r->cfg.no_dedup && store_stat(r->store, out->name, NULL) == 0)
            return 0; /* stored once for every task that uses it */
        free(out->name);
        out->name = NULL;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_errno(errno, "cannot open %s", path);
    pthread_mutex_init(&u.lock, NULL);
    pthread_cond_init(&u.cond, NULL);
    pthread_rwlock_rdlock(&r->gc_lock);
    for (; nth < r->cfg.workers; nth++)
        if (pthread_create(&th[nth], NULL, repo_up_worker, &u) != 0)
            break;
    rc = nth ? repo_up_read(&u, fd, path, out->sha256, &size)
             : err_set(VK_ENOMEM, "cannot start upload threads");
    pthread_mutex_lock(&u.lock);
    u.done_reading = 1;
    if (rc < 0 && u.rc == 0)
        u.rc = rc;
    pthread_cond_broadcast(&u.cond);
    pthread_mutex_unlock(&u.lock);
    for (int i = 0; i < nth; i++)
        pthread_join(th[i], NULL);
    close(fd);
    if (u.err[0]) /* a worker failed: its message says why */
        rc = err_set(u.rc, "%s", u.err);
    if (rc == 0) {
        out->size = size;
        out->name = util_fmt("indexes/%s", out->sha256);
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
    pthread_mutex_destroy(&u.lock);
    pthread_cond_destroy(&u.cond);
    return rc;
}

/* ---- download ---------------------------------------------------------------- */

struct down_entry {
    char sha[UTIL_SHA256_HEX];
    uint32_t len;
    int codec;
    uint64_t off;
};

/* Loads and checks the index of stream o. *out: free(). */
static int repo_load_index(struct repo *r, const struct mf_obj *o, const char *what,
                           struct down_entry **out, size_t *out_n)
{
    char *text = NULL;
    size_t len = 0, i;
    json_t *j = NULL, *c;
    struct down_entry *e = NULL;
    uint64_t off = 0;
    int rc = VK_EIO;

    *out = NULL;
    for (int attempt = 0; attempt < r->cfg.retries && rc < 0 && rc != VK_ENOTFOUND; attempt++) {
        if (attempt)
            repo_backoff(r, attempt - 1);
        rc = store_get_buf(r->store, o->name, &text, &len);
    }
    if (rc < 0)
        return err_wrap(rc, "%s", what);
    j = json_loadb(text, len, 0, NULL);
    json_t *chunks = json_object_get(j, "chunks");
    const char *sha = json_string_value(json_object_get(j, "sha256"));
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
        if (!h || strlen(h) != 64 || n <= 0 || n > (1 << 30)) {
            rc = err_set(VK_ECORRUPT, "%s: index %s: chunk %zu is malformed", what, o->name, i);
            goto out;
        }
        if (codec < 0 && codec != CODEC_ZERO) {
            rc = err_set(VK_ECORRUPT, "%s: index %s: chunk %zu has unknown codec '%s'", what,
                         o->name, i, cn ? cn : "?");
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
    *out = e;
    *out_n = json_array_size(chunks);
    e = NULL;
out:
    free(e);
    json_decref(j);
    free(text);
    return rc;
}

/* Fetches one chunk into a new buffer of e->len bytes, checked against its name. */
static int repo_fetch_chunk(struct repo *r, const struct down_entry *e, const char *what,
                            uint8_t **out)
{
    char name[80];
    size_t cap = REPO_HDR + codec_bound(CODEC_ZSTD9, e->len) + codec_bound(CODEC_LZ4, e->len);
    uint8_t *raw = malloc(cap), *plain = malloc(e->len ? e->len : 1);
    char sha[UTIL_SHA256_HEX];
    size_t got = 0;
    int rc = 0;

    *out = NULL;
    if (!raw || !plain) {
        rc = err_set(VK_ENOMEM, "out of memory");
        goto out;
    }
    if (e->codec == CODEC_ZERO) {
        memset(plain, 0, e->len);
        goto done;
    }
    repo_chunk_name(e->sha, name);
    for (int attempt = 0; attempt < r->cfg.retries; attempt++) {
        rc = store_read(r->store, name, 0, raw, cap, &got);
        if (rc == 0 || rc == VK_ENOTFOUND)
            break;
        repo_backoff(r, attempt);
    }
    if (rc == VK_ENOTFOUND) {
        rc = err_set(rc, "%s: chunk %s is missing from store %s", what, name, r->store->uri);
        goto out;
    }
    if (rc < 0)
        goto out;
    uint32_t n = (uint32_t)raw[8] | (uint32_t)raw[9] << 8 | (uint32_t)raw[10] << 16 |
                 (uint32_t)raw[11] << 24;
    if (got < REPO_HDR || memcmp(raw, repo_magic, 4) || n != e->len) {
        rc = err_set(VK_ECORRUPT, "%s: chunk %s is damaged (bad header or truncated)", what, name);
        goto out;
    }
    rc = codec_decompress(raw[4], raw + REPO_HDR, got - REPO_HDR, plain, e->len);
    if (rc < 0) {
        err_wrap(rc, "%s: chunk %s is damaged", what, name);
        goto out;
    }
    util_sha256_buf(plain, e->len, sha);
    if (strcmp(sha, e->sha) != 0) {
        rc = err_set(VK_ECORRUPT, "%s: chunk %s is damaged: its content does not match its name",
                     what, name);
        goto out;
    }
done:
    *out = plain;
    plain = NULL;
out:
    free(raw);
    free(plain);
    return rc;
}

struct down_ctx {
    struct repo *r;
    const char *what;
    struct down_entry *e;
    size_t n, next_fetch, next_write;
    uint8_t **slots;
    size_t inflight;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int rc, stop;
    char err[1024];
};

static void *repo_down_worker(void *arg)
{
    struct down_ctx *d = arg;
    for (;;) {
        size_t i;
        uint8_t *buf = NULL;
        pthread_mutex_lock(&d->lock);
        /* Stay within the memory budget, but always fetch the chunk the writer waits for. */
        while (!d->stop && d->next_fetch < d->n && d->next_fetch > d->next_write &&
               d->inflight + d->e[d->next_fetch].len > d->r->cfg.mem_budget)
            pthread_cond_wait(&d->cond, &d->lock);
        if (d->stop || d->next_fetch >= d->n) {
            pthread_mutex_unlock(&d->lock);
            return NULL;
        }
        i = d->next_fetch++;
        d->inflight += d->e[i].len;
        pthread_mutex_unlock(&d->lock);
        int rc = repo_fetch_chunk(d->r, &d->e[i], d->what, &buf);
        pthread_mutex_lock(&d->lock);
        if (rc < 0 && d->rc == 0) {
            d->rc = rc;
            d->stop = 1;
            snprintf(d->err, sizeof(d->err), "%s", err_msg());
        }
        d->slots[i] = buf;
        pthread_cond_broadcast(&d->cond);
        pthread_mutex_unlock(&d->lock);
    }
}

static int repo_write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return err_errno(errno, "cannot write the restored stream");
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Runs the download of stream o: workers fetch, this thread writes in order.
 * With fd < 0 nothing is written (verification). */
static int repo_download(struct repo *r, const struct mf_obj *o, int fd, const char *what)
{
    struct down_ctx d = {.r = r, .what = what};
    pthread_t th[64];
    int nth = 0, rc;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();

    rc = repo_load_index(r, o, what, &d.e, &d.n);
    if (rc < 0) {
        EVP_MD_CTX_free(ctx);
        return rc;
    }
    d.slots = calloc(d.n + 1, sizeof(*d.slots));
    pthread_mutex_init(&d.lock, NULL);
    pthread_cond_init(&d.cond, NULL);
    if (!d.slots || !ctx) {
        rc = err_set(VK_ENOMEM, "out of memory");
        goto out;
    }
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    for (; nth < r->cfg.workers; nth++)
        if (pthread_create(&th[nth], NULL, repo_down_worker, &d) != 0)
            break;
    for (size_t i = 0; i < d.n && rc == 0; i++) {
        pthread_mutex_lock(&d.lock);
        while (!d.slots[i] && !d.stop)
            pthread_cond_wait(&d.cond, &d.lock);
        uint8_t *buf = d.slots[i];
        d.slots[i] = NULL;
        rc = buf ? 0 : d.rc;
        pthread_mutex_unlock(&d.lock);
        if (rc < 0)
            break;
        EVP_DigestUpdate(ctx, buf, d.e[i].len);
        if (fd >= 0)
            rc = repo_write_all(fd, buf, d.e[i].len);
        free(buf);
        pthread_mutex_lock(&d.lock);
        d.inflight -= d.e[i].len;
        d.next_write = i + 1;
        if (rc < 0)
            d.stop = 1;
        pthread_cond_broadcast(&d.cond);
        pthread_mutex_unlock(&d.lock);
    }
    pthread_mutex_lock(&d.lock);
    d.stop = 1;
    pthread_cond_broadcast(&d.cond);
    pthread_mutex_unlock(&d.lock);
    for (int i = 0; i < nth; i++)
        pthread_join(th[i], NULL);
    if (rc < 0 && d.rc < 0)
        rc = err_set(d.rc, "%s", d.err);
    if (rc == 0 && nth == 0 && d.n > 0)
        rc = err_set(VK_ENOMEM, "cannot start download threads");
    if (rc == 0) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned mdlen;
        char sha[UTIL_SHA256_HEX];
        EVP_DigestFinal_ex(ctx, md, &mdlen);
        util_hex(md, mdlen, sha);
        if (strcmp(sha, o->sha256) != 0)
            rc = err_set(VK_ECORRUPT, "%s: the stream rebuilt from %s does not match its SHA-256",
                         what, o->name);
    }
out:
    for (size_t i = 0; d.slots && i < d.n; i++)
        free(d.slots[i]);
    free(d.slots);
    free(d.e);
    EVP_MD_CTX_free(ctx);
    pthread_mutex_destroy(&d.lock);
    pthread_cond_destroy(&d.cond);
    return rc;
}

int repo_get_stream(struct repo *r, const struct mf_obj *o, int fd, const char *what)
{
    return repo_download(r, o, fd, what);
}

int repo_verify_stream(struct repo *r, const struct mf_obj *o, const char *what)
{
    return repo_download(r, o, -1, what);
}

int repo_get_file(struct repo *r, const struct mf_obj *o, const char *path, const char *what)
{
    char *part = util_fmt("%s.part", path);
    int fd, rc;
    if (!part)
        return err_set(VK_ENOMEM, "out of memory");
    fd = open(part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = err_errno(errno, "cannot create %s", part);
        free(part);
        return rc;
    }
    rc = repo_download(r, o, fd, what);
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

int repo_stream_chunks(struct repo *r, const struct mf_obj *o,
                       int (*fn)(void *arg, const char *chunk_name), void *arg)
{
    struct down_entry *e = NULL;
    size_t n = 0;
    char name[80];
    int rc = repo_load_index(r, o, o->name, &e, &n);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (e[i].codec == CODEC_ZERO)
            continue;
        repo_chunk_name(e[i].sha, name);
        rc = fn(arg, name);
    }
    free(e);
    return rc;
}
