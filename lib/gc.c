#include "gc.h"

#include "catalog.h"
#include "err.h"
#include "log.h"
#include "manifest.h"
#include "testhook.h"
#include "util.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int gc_retain(struct store *s, const char *task, int keep, int *out_deleted)
{
    uint64_t *seqs = NULL;
    size_t n = 0;
    int rc = catalog_list(s, task, &seqs, &n);
    *out_deleted = 0;
    for (size_t i = 0; rc == 0 && keep > 0 && i + (size_t)keep < n; i++) {
        char *name = manifest_name(task, seqs[i]);
        rc = name ? store_remove(s, name) : err_set(VK_ENOMEM, "out of memory");
        if (rc == 0) {
            (*out_deleted)++;
            log_info("task %s: checkpoint %" PRIu64 " dropped (keeping the newest %d)", task,
                     seqs[i], keep);
        }
        free(name);
    }
    free(seqs);
    return rc;
}

/* A set of names: appended, then sorted once for lookups. */
struct gc_set {
    char **v;
    size_t n, cap;
};

static int gc_add(void *arg, const char *name)
{
    struct gc_set *s = arg;
    if (s->n == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 4096;
        char **nv = realloc(s->v, ncap * sizeof(*nv));
        if (!nv)
            return err_set(VK_ENOMEM, "out of memory");
        s->v = nv;
        s->cap = ncap;
    }
    if (!(s->v[s->n] = strdup(name)))
        return err_set(VK_ENOMEM, "out of memory");
    s->n++;
    return 0;
}

static int gc_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int gc_has(const struct gc_set *s, const char *name)
{
    return s->n > 0 && bsearch(&name, s->v, s->n, sizeof(*s->v), gc_cmp) != NULL;
}

static void gc_set_free(struct gc_set *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
}

/* Marks every index and chunk that checkpoint seq of task names. */
static int gc_mark_one(struct repo *r, const char *task, uint64_t seq, struct gc_set *live,
                       struct gc_result *g)
{
    struct manifest *m = NULL;
    int rc = catalog_load(repo_store(r), task, seq, &m);
    if (rc < 0)
        return err_wrap(rc, "garbage collection stopped, nothing deleted");
    const struct stream_ref *streams[4] = {&m->kernel, &m->initrd, &m->base, &m->memory};
    for (size_t k = 0; rc == 0 && k < 4 + m->n_deltas; k++) {
        const struct stream_ref *o = k < 4 ? streams[k] : &m->deltas[k - 4];
        rc = gc_add(live, o->name);
        if (rc == 0)
            rc = repo_stream_chunks(r, o, gc_add, live);
        g->streams++;
    }
    if (rc < 0)
        err_wrap(rc, "garbage collection stopped, nothing deleted: checkpoint %" PRIu64
                     " of task %s", seq, task);
    g->manifests++;
    manifest_free(m);
    return rc;
}

/* Marks every index and chunk that a manifest names. */
static int gc_mark(struct repo *r, struct gc_set *live, struct gc_result *g)
{
    struct catalog_entry *e = NULL;
    size_t n = 0;
    int rc = catalog_all(repo_store(r), &e, &n);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = gc_mark_one(r, e[i].task, e[i].seq, live, g);
    catalog_entries_free(e, n);
    return rc;
}

struct gc_sweep {
    struct repo *r;
    struct gc_set *live;
    struct gc_result *g;
    int64_t cutoff;
    struct gc_set doomed;  /* object names, deleted in order */
    struct gc_set idx_ids; /* ids of the pack indexes listed, with their mtime */
    int64_t *idx_mtime;
    size_t idx_cap;
    struct gc_set made; /* ids of the packs this GC wrote */
    size_t unsound;     /* chunks kept since the copy readers use is not sound */
};

/* Between two deletions: tests hold GC here to kill it half-way. */
static void gc_pause(void)
{
    testhook_gate("VMCKPT_TEST_GC_GATE", "sweep");
}

static int gc_consider(void *arg, const char *name, uint64_t size, int64_t mtime)
{
    struct gc_sweep *sw = arg;
    if (gc_has(sw->live, name))
        return 0;
    if (mtime > sw->cutoff) {
        sw->g->kept_young++;
        return 0;
    }
    sw->g->bytes_freed += size;
    return gc_add(&sw->doomed, name);
}

static int gc_collect_idx(void *arg, const char *name, uint64_t size, int64_t mtime)
{
    struct gc_sweep *sw = arg;
    const char *id = name + strlen("packidx/");
    (void)size;
    if (strlen(id) != PACK_ID_HEX - 1 || strchr(id, '.'))
        return 0;
    if (sw->idx_ids.n == sw->idx_cap) {
        size_t ncap = sw->idx_cap ? sw->idx_cap * 2 : 256;
        int64_t *nm = realloc(sw->idx_mtime, ncap * sizeof(*nm));
        if (!nm)
            return err_set(VK_ENOMEM, "out of memory");
        sw->idx_mtime = nm;
        sw->idx_cap = ncap;
    }
    sw->idx_mtime[sw->idx_ids.n] = mtime;
    return gc_add(&sw->idx_ids, id);
}

/* Must record rec of pack id be kept? It holds a chunk a checkpoint needs,
 * and it is the copy readers use, or the copy they use elsewhere is not
 * sound. Another pack's index is the store's word: a well-formed index that
 * names chunks it does not hold (sorted first, its copies are the ones the
 * map keeps) made GC delete the real packs as garbage. So a copy is dropped
 * only once the one kept instead is read and checked. */
static int gc_rec_live(struct gc_sweep *sw, const char *id, const struct pack_rec *rec)
{
    char want[80], have[80];
    uint64_t off = 0;
    if (!gc_has(sw->live, rec->sha))
        return 0;
    if (repo_chunk_where(sw->r, rec->sha, have, &off) < 0)
        return 1; /* needed, and no other copy known: kept */
    pack_object_name(id, want);
    if (!strcmp(want, have) && off == rec->off)
        return 1;
    if (repo_chunk_check(sw->r, rec->sha) == 0)
        return 0; /* a sound copy elsewhere: this one is garbage */
    if (sw->unsound++ == 0) /* (once a sweep: a forged index may name a million) */
        log_warn("garbage collection keeps chunk %s in pack %s: the copy readers use (in %s) "
                 "is not sound: %s", rec->sha, id, have, err_msg());
    err_clear();
    return 1;
}

/* The most a rewritten pack may hold: a pack is at most [data] pack_mib
 * (256 MiB) and a record, so an index that adds up to more is lying. */
#define GC_REPACK_MAX ((size_t)1 << 30)

/* Copies the live records of pack `id` into a new pack, each checked
 * against its name first: the index is the store's word, and a record that
 * is not the chunk it names is not copied as if it were (the pack is then
 * left as it is, and the sweep reports it). */
static int gc_repack(struct gc_sweep *sw, const char *id, const struct pack_idx *idx,
                     const char *live_mask)
{
    struct repo *r = sw->r;
    struct pack_idx out = {0};
    char name[80];
    uint8_t *buf = NULL, *plain = NULL;
    size_t len = 0, cap = 0, got = 0, plain_cap = 0;
    int rc = pack_new_id(out.id);

    pack_object_name(id, name);
    for (size_t i = 0; rc == 0 && i < idx->n; i++) {
        const struct pack_rec *rec = &idx->recs[i];
        if (!live_mask[i])
            continue;
        if (len + rec->bytes > GC_REPACK_MAX) {
            rc = err_set(VK_ECORRUPT, "pack %s: its live records add up to more than %zu MiB, "
                                      "more than a pack holds", name, GC_REPACK_MAX >> 20);
            break;
        }
        if (len + rec->bytes > cap) {
            size_t ncap = cap ? cap * 2 : 1 << 20;
            while (ncap < len + rec->bytes)
                ncap *= 2;
            uint8_t *nb = realloc(buf, ncap);
            if (!nb) {
                rc = err_set(VK_ENOMEM, "out of memory");
                break;
            }
            buf = nb;
            cap = ncap;
        }
        rc = store_read(repo_store(r), name, rec->off, buf + len, rec->bytes, &got);
        if (rc == 0 && got != rec->bytes)
            rc = err_set(VK_ECORRUPT, "pack %s is truncated at record %zu", name, i);
        if (rc == 0 && pack_record_check(buf + len, rec->bytes, rec->sha, &plain, &plain_cap) < 0)
            rc = err_wrap(VK_ECORRUPT, "pack %s, record %zu", name, i);
        if (rc == 0)
            rc = pack_idx_add(&out, rec->sha, len, rec->bytes, rec->codec);
        len += rec->bytes;
    }
    if (rc == 0)
        rc = gc_add(&sw->made, out.id);
    if (rc == 0)
        rc = repo_store_pack(r, buf, len, &out, NULL);
    if (rc == 0) /* the copy is durable before the original goes */
        rc = store_sync(repo_store(r));
    free(buf);
    free(plain);
    pack_idx_clear(&out);
    if (rc < 0)
        err_wrap(rc, "garbage collection: rewriting pack %s", name);
    return rc;
}

/* Deletes a pack whose chunks are all unreferenced, or rewrites one that is
 * mostly garbage; the index goes first, so no reader is sent to a pack that
 * is being deleted. */
static int gc_pack(struct gc_sweep *sw, size_t k)
{
    const char *id = sw->idx_ids.v[k];
    struct pack_idx idx;
    uint64_t live_bytes = 0, all_bytes = 0;
    size_t n_live = 0;
    char name[80], *mask;
    int rc = pack_idx_load(repo_store(sw->r), id, &idx);
    if (rc == VK_ENOTFOUND)
        return 0;
    if (rc == VK_ECORRUPT) { /* kept, pack and all: it may be repaired */
        log_warn("garbage collection leaves pack %s alone: %s", id, err_msg());
        return 0;
    }
    if (rc < 0)
        return err_wrap(rc, "garbage collection stopped");
    mask = calloc(idx.n + 1, 1);
    if (!mask) {
        pack_idx_clear(&idx);
        return err_set(VK_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < idx.n; i++) {
        mask[i] = (char)gc_rec_live(sw, id, &idx.recs[i]);
        n_live += (size_t)mask[i];
        live_bytes += mask[i] ? idx.recs[i].bytes : 0;
        all_bytes += idx.recs[i].bytes;
    }
    int garbage = n_live < idx.n && live_bytes * 2 < all_bytes;
    if (garbage && sw->idx_mtime[k] > sw->cutoff) {
        sw->g->kept_young++;
    } else if (garbage) {
        if (n_live > 0)
            rc = gc_repack(sw, id, &idx, mask);
        if (rc == VK_ECORRUPT) { /* kept, pack and all, as a damaged index is */
            log_warn("garbage collection leaves pack %s alone: %s", id, err_msg());
            free(mask);
            pack_idx_clear(&idx);
            return 0;
        }
        pack_index_name(id, name);
        if (rc == 0)
            rc = store_remove(repo_store(sw->r), name);
        gc_pause();
        pack_object_name(id, name);
        if (rc == 0 && (rc = store_remove(repo_store(sw->r), name)) == VK_ENOTFOUND)
            rc = 0;
        if (rc == 0) {
            sw->g->chunks_deleted += idx.n - n_live;
            sw->g->bytes_freed += all_bytes - live_bytes;
            sw->g->packs_deleted++;
            sw->g->packs_rewritten += n_live > 0;
        }
    }
    free(mask);
    pack_idx_clear(&idx);
    return rc;
}

/* A pack with no index (its writer died between the two) is garbage. */
static int gc_orphan_pack(void *arg, const char *name, uint64_t size, int64_t mtime)
{
    struct gc_sweep *sw = arg;
    const char *id = strrchr(name, '/') + 1;
    if (strlen(id) != PACK_ID_HEX - 1 || strchr(id, '.') || gc_has(&sw->idx_ids, id))
        return 0;
    for (size_t i = 0; i < sw->made.n; i++)
        if (!strcmp(sw->made.v[i], id))
            return 0;
    if (mtime > sw->cutoff) {
        sw->g->kept_young++;
        return 0;
    }
    sw->g->bytes_freed += size;
    sw->g->packs_deleted++;
    return gc_add(&sw->doomed, name);
}

static int gc_sweep(struct gc_sweep *sw)
{
    struct repo *r = sw->r;
    int rc = repo_refresh(r);
    if (rc == 0)
        rc = store_list(repo_store(r), "packidx/", gc_collect_idx, sw);
    for (size_t k = 0; rc == 0 && k < sw->idx_ids.n; k++)
        rc = gc_pack(sw, k);
    if (rc == 0) {
        /* idx_ids sorted (mtimes no longer needed) for the orphan check */
        qsort(sw->idx_ids.v, sw->idx_ids.n, sizeof(*sw->idx_ids.v), gc_cmp);
        rc = store_list(repo_store(r), "packs/", gc_orphan_pack, sw);
    }
    if (rc == 0)
        rc = store_list(repo_store(r), "indexes/", gc_consider, sw);
    for (size_t i = 0; rc == 0 && i < sw->doomed.n; i++) {
        int d = store_remove(repo_store(r), sw->doomed.v[i]);
        if (d < 0 && d != VK_ENOTFOUND)
            rc = d;
        else if (!strncmp(sw->doomed.v[i], "indexes/", 8))
            sw->g->indexes_deleted++;
        gc_pause();
    }
    return rc;
}

int gc_run(struct repo *r, int grace_s, struct gc_result *out)
{
    struct gc_set live = {0};
    struct gc_sweep sw = {.r = r, .live = &live, .g = out};
    int rc;

    memset(out, 0, sizeof(*out));
    repo_gc_begin(r);
    rc = gc_mark(r, &live, out);
    if (rc == 0) {
        qsort(live.v, live.n, sizeof(*live.v), gc_cmp);
        size_t k = 0; /* drop repeats: a chunk is often named by many streams */
        for (size_t i = 0; i < live.n; i++) {
            if (k > 0 && !strcmp(live.v[k - 1], live.v[i])) {
                free(live.v[i]);
                continue;
            }
            live.v[k++] = live.v[i];
            out->chunks_referenced += strncmp(live.v[i], "indexes/", 8) != 0;
        }
        live.n = k;
        sw.cutoff = (int64_t)time(NULL) - grace_s;
        rc = gc_sweep(&sw);
    }
    repo_gc_end(r);
    if (rc == 0)
        log_info("gc: %" PRIu64 " checkpoints reference %" PRIu64 " chunks; deleted %" PRIu64
                 " chunks (%" PRIu64 " packs deleted, %" PRIu64 " rewritten) and %" PRIu64
                 " indexes (%" PRIu64 " bytes), kept %" PRIu64
                 " unreferenced objects younger than %d s",
                 out->manifests, out->chunks_referenced, out->chunks_deleted, out->packs_deleted,
                 out->packs_rewritten, out->indexes_deleted, out->bytes_freed, out->kept_young,
                 grace_s);
    if (rc == 0 && sw.unsound)
        log_warn("gc: kept %zu chunk copies whose shadowing copies (the ones readers use) are "
                 "not sound: a damaged or forged pack index; `vmckpt verify` names the tasks "
                 "hit", sw.unsound);
    gc_set_free(&live);
    gc_set_free(&sw.doomed);
    gc_set_free(&sw.idx_ids);
    gc_set_free(&sw.made);
    free(sw.idx_mtime);
    return rc;
}

json_t *gc_result_json(const struct gc_result *g)
{
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "manifests",
                     (json_int_t)g->manifests, "packs_deleted", (json_int_t)g->packs_deleted,
                     "packs_rewritten", (json_int_t)g->packs_rewritten,
                     "streams", (json_int_t)g->streams, "chunks_referenced",
                     (json_int_t)g->chunks_referenced, "chunks_deleted",
                     (json_int_t)g->chunks_deleted, "indexes_deleted",
                     (json_int_t)g->indexes_deleted, "bytes_freed", (json_int_t)g->bytes_freed,
                     "kept_young", (json_int_t)g->kept_young);
}
