#include "gc.h"

#include "ckpt.h"
#include "err.h"
#include "log.h"
#include "manifest.h"
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
    int rc = ckpt_list(s, task, &seqs, &n);
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
    return bsearch(&name, s->v, s->n, sizeof(*s->v), gc_cmp) != NULL;
}

static void gc_set_free(struct gc_set *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
}

static int gc_collect_manifest(void *arg, const char *name, uint64_t size, int64_t mtime)
{
    (void)size;
    (void)mtime;
    return manifest_seq_of(name) ? gc_add(arg, name) : 0;
}

/* Marks every index and chunk that a manifest names. */
static int gc_mark(struct repo *r, struct gc_set *live, struct gc_result *g)
{
    struct gc_set mf = {0};
    int rc = store_list(r->store, "tasks/", gc_collect_manifest, &mf);
    for (size_t i = 0; rc == 0 && i < mf.n; i++) {
        /* tasks/<id>/manifests/<seq>.json */
        char task[128];
        const char *p = mf.v[i] + 6, *slash = strchr(p, '/');
        struct manifest *m = NULL;
        if (!slash || (size_t)(slash - p) >= sizeof(task))
            continue;
        snprintf(task, sizeof(task), "%.*s", (int)(slash - p), p);
        rc = ckpt_load(r->store, task, manifest_seq_of(mf.v[i]), &m);
        if (rc < 0) {
            err_wrap(rc, "garbage collection stopped, nothing deleted");
            break;
        }
        const struct mf_obj *streams[4] = {&m->kernel, &m->initrd, &m->base, &m->memory};
        for (size_t k = 0; rc == 0 && k < 4 + m->n_deltas; k++) {
            const struct mf_obj *o = k < 4 ? streams[k] : &m->deltas[k - 4];
            rc = gc_add(live, o->name);
            if (rc == 0)
                rc = repo_stream_chunks(r, o, gc_add, live);
            g->streams++;
        }
        if (rc < 0)
            err_wrap(rc, "garbage collection stopped, nothing deleted: checkpoint %s", mf.v[i]);
        g->manifests++;
        manifest_free(m);
    }
    gc_set_free(&mf);
    return rc;
}

struct gc_sweep {
    struct repo *r;
    struct gc_set *live;
    struct gc_result *g;
    int64_t cutoff;
    struct gc_set doomed;
};

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

int gc_run(struct repo *r, int grace_s, struct gc_result *out)
{
    struct gc_set live = {0};
    struct gc_sweep sw = {.r = r, .live = &live, .g = out};
    const char *pause = getenv("VMCKPT_TEST_GC_PAUSE_MS"); /* fault injection for tests */
    int rc;

    memset(out, 0, sizeof(*out));
    pthread_rwlock_wrlock(&r->gc_lock);
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
            out->chunks_referenced += strncmp(live.v[i], "chunks/", 7) == 0;
        }
        live.n = k;
        sw.cutoff = (int64_t)time(NULL) - grace_s;
        rc = store_list(r->store, "chunks/", gc_consider, &sw);
        if (rc == 0)
            rc = store_list(r->store, "indexes/", gc_consider, &sw);
    }
    for (size_t i = 0; rc == 0 && i < sw.doomed.n; i++) {
        int d = store_remove(r->store, sw.doomed.v[i]);
        if (d < 0 && d != VK_ENOTFOUND)
            rc = d;
        else if (!strncmp(sw.doomed.v[i], "chunks/", 7))
            out->chunks_deleted++;
        else
            out->indexes_deleted++;
        if (pause)
            usleep((useconds_t)atoi(pause) * 1000);
    }
    pthread_rwlock_unlock(&r->gc_lock);
    if (rc == 0)
        log_info("gc: %" PRIu64 " checkpoints reference %" PRIu64 " chunks; deleted %" PRIu64
                 " chunks and %" PRIu64 " indexes (%" PRIu64 " bytes), kept %" PRIu64
                 " unreferenced objects younger than %d s",
                 out->manifests, out->chunks_referenced, out->chunks_deleted,
                 out->indexes_deleted, out->bytes_freed, out->kept_young, grace_s);
    gc_set_free(&live);
    gc_set_free(&sw.doomed);
    return rc;
}

json_t *gc_result_json(const struct gc_result *g)
{
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "manifests", (json_int_t)g->manifests,
                     "streams", (json_int_t)g->streams, "chunks_referenced",
                     (json_int_t)g->chunks_referenced, "chunks_deleted",
                     (json_int_t)g->chunks_deleted, "indexes_deleted",
                     (json_int_t)g->indexes_deleted, "bytes_freed", (json_int_t)g->bytes_freed,
                     "kept_young", (json_int_t)g->kept_young);
}
