/* The store side of a checkpoint: its streams uploaded, its manifest
 * committed. The VM side is ckpt.c; the task only describes what to store
 * (struct ckpt_put) and takes back the objects stored. */
#include "ckpt.h"

#include "catalog.h"
#include "err.h"
#include "img.h"
#include "log.h"
#include "testhook.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* One upload's running state: the bytes of its earlier streams (progress)
 * and what it added to the store. */
struct ckpt_up {
    struct repo *repo;
    struct ckpt_put *p;
    uint64_t before; /* written only between streams: the repo's workers read it */
    struct repo_stats stats;
};

/* Called by the repository's upload workers, several at once. */
static void ckpt_progress(void *arg, uint64_t done)
{
    const struct ckpt_up *u = arg;
    if (u->p->progress)
        u->p->progress(u->p->progress_arg, u->before + done);
}

/* Stores one file as a stream into *o (an old name in *o is freed). */
static int ckpt_put_one(struct ckpt_up *u, const char *path, int dedup_whole, struct stream_ref *o)
{
    struct stream_ref n;
    int rc = repo_put_file(u->repo, path, dedup_whole, &n, &u->stats, ckpt_progress, u);
    if (rc < 0)
        return rc;
    u->before += n.size;
    free(o->name);
    *o = n;
    return 0;
}

/* Kernel, initrd and base: once for the task's life; later checkpoints
 * name what the first stored. Stored whole-file-deduplicated: the same base
 * under another task is not even read again. */
static int ckpt_put_boot(struct ckpt_up *u)
{
    for (size_t i = 0; i < 3; i++) {
        struct ckpt_file *f = &u->p->boot[i];
        int rc = f->obj.name ? 0 : ckpt_put_one(u, f->path, 1, &f->obj);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Whether checkpoint p stores everything below its newest delta again, as
 * one merged delta: when its chain would pass max_chain (bounding what a
 * restore needs), under whole, or when the committed chain is unknown. */
static int ckpt_must_merge(const struct ckpt_put *p)
{
    size_t chain = p->n_chain + p->n_deltas;
    if (!p->below)
        return 0; /* the newest delta backs onto the base: nothing below it */
    return p->whole || p->chain_unknown || (p->max_chain > 0 && chain > (size_t)p->max_chain);
}

/* The merged delta: a copy of the local file below the newest delta, rebased
 * onto the base in safe mode, which copies in what its backing chain holds.
 * Stored into *merged. The running VM keeps its files. */
static int ckpt_merge(struct ckpt_up *u, struct stream_ref *merged)
{
    struct ckpt_put *p = u->p;
    int rc;
    char *tmp = util_fmt("%s/merged-%010" PRIu64 ".qcow2", p->work_dir, p->facts.seq);
    if (!tmp)
        return err_set(VK_ENOMEM, "out of memory");
    char *cp[] = {"cp", "--sparse=always", p->below, tmp, NULL};
    rc = util_run(cp, NULL);
    if (rc == 0)
        rc = img_rebase_merge(tmp, p->boot[2].path, p->facts.base_format);
    if (rc == 0)
        rc = repo_put_file(u->repo, tmp, 0, merged, &u->stats, NULL, NULL);
    unlink(tmp);
    free(tmp);
    if (rc < 0)
        return err_wrap(rc, "merging the deltas of task %s below checkpoint %" PRIu64,
                        p->facts.task, p->facts.seq);
    log_info("task %s: checkpoint %" PRIu64 ": its older deltas merged into one (%" PRIu64
             " bytes): a chain of 2 instead of %zu", p->facts.task, p->facts.seq, merged->size,
             p->n_chain + p->n_deltas);
    return 0;
}

/* The deltas sealed since the last commit that are not stored yet: all of
 * them, or only the newest when the rest is merged. */
static int ckpt_put_deltas(struct ckpt_up *u, int merged)
{
    struct ckpt_put *p = u->p;
    for (size_t i = merged ? p->n_deltas - 1 : 0; i < p->n_deltas; i++) {
        struct ckpt_file *f = &p->deltas[i];
        int rc = f->obj.name ? 0 : ckpt_put_one(u, f->path, 0, &f->obj);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* The manifest to commit: the facts, the streams (merged, or NULL when the
 * chain is the committed one and the new deltas), what the upload added.
 * Its streams are borrowed from p; a copy of its own comes out. */
static int ckpt_manifest(struct ckpt_up *u, const struct stream_ref *merged, int64_t t0,
                         struct manifest **out)
{
    struct ckpt_put *p = u->p;
    struct manifest m = p->facts;
    int rc = 0;

    m.kernel = p->boot[0].obj;
    m.initrd = p->boot[1].obj;
    m.base = p->boot[2].obj;
    m.n_deltas = 0;
    m.deltas = calloc(p->n_chain + p->n_deltas + 1, sizeof(*m.deltas));
    if (!m.deltas)
        return err_set(VK_ENOMEM, "out of memory");
    if (merged) {
        m.deltas[m.n_deltas++] = *merged;
        m.deltas[m.n_deltas++] = p->deltas[p->n_deltas - 1].obj;
    } else {
        /* With nothing below it, the oldest new delta backs onto the base and
         * holds all there is: the committed chain (known or not) adds nothing. */
        for (size_t i = 0; p->below && i < p->n_chain; i++)
            m.deltas[m.n_deltas++] = p->chain[i];
        for (size_t i = 0; i < p->n_deltas; i++)
            m.deltas[m.n_deltas++] = p->deltas[i].obj;
    }
    m.created_us = util_wall_us();
    m.store_us = util_now_us() - t0;
    m.uploaded_bytes = u->stats.new_bytes;
    m.data = json_pack("{s:o, s:o}", "stored", repo_stats_json(&u->stats), "codec_policy",
                       repo_policy_json(u->repo));
    rc = manifest_copy(&m, out); /* validates it as a reader would */
    json_decref(m.data);
    free(m.deltas);
    return rc;
}

/* Tests: hold an upload or a commit at a point (tag: task.seq). */
static void ckpt_gate(const char *name, const struct ckpt_put *p)
{
    char tag[160];
    snprintf(tag, sizeof(tag), "%s.%" PRIu64, p->facts.task, p->facts.seq);
    testhook_gate(name, tag);
}

/* The gate's permission, then the manifest's write: the commit point. */
static int ckpt_commit(struct store *s, struct ckpt_put *p, const struct manifest *m)
{
    struct store_fence fence[STORE_FENCE_MAX];
    size_t n_fence = 0;
    int rc = p->gate ? p->gate(p->gate_arg, p->facts.task, p->hold, fence, &n_fence) : 0;
    if (rc < 0)
        return rc;
    ckpt_gate("VMCKPT_TEST_COMMIT_GATE", p); /* a stall between the lease check and the write */
    return catalog_commit(s, m, fence, n_fence);
}

int ckpt_store(struct repo *r, struct store *s, struct ckpt_put *p, struct manifest **out)
{
    struct ckpt_up u = {.repo = r, .p = p};
    struct manifest *m = NULL;
    struct stream_ref merged = {0};
    int64_t t0 = util_now_us();
    int rc, merge = ckpt_must_merge(p);

    *out = NULL;
    if (p->n_deltas == 0 || !p->mem_path)
        return err_set(VK_EINVAL, "checkpoint %" PRIu64 " of task %s names no new delta or "
                                  "no memory", p->facts.seq, p->facts.task);
    repo_hold(r); /* until the commit: see repo_hold */
    rc = ckpt_put_boot(&u);
    if (rc == 0 && merge)
        rc = ckpt_merge(&u, &merged);
    if (rc == 0)
        rc = ckpt_put_deltas(&u, merge);
    if (rc == 0)
        ckpt_gate("VMCKPT_TEST_UPLOAD_GATE", p); /* an upload in flight, between its streams */
    if (rc == 0)
        rc = ckpt_put_one(&u, p->mem_path, 0, &p->facts.memory);
    if (rc == 0)
        rc = ckpt_manifest(&u, merge ? &merged : NULL, t0, &m);
    if (rc == 0)
        rc = ckpt_commit(s, p, m);
    repo_release(r);
    stream_ref_clear(&merged);
    if (rc < 0) {
        manifest_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

uint64_t ckpt_put_bytes(const struct ckpt_put *p)
{
    struct stat st;
    uint64_t n = p->mem_path && stat(p->mem_path, &st) == 0 ? (uint64_t)st.st_size : 0;
    for (size_t i = p->n_deltas && ckpt_must_merge(p) ? p->n_deltas - 1 : 0; i < p->n_deltas; i++)
        if (!p->deltas[i].obj.name && stat(p->deltas[i].path, &st) == 0)
            n += (uint64_t)st.st_size;
    return n;
}

void ckpt_put_clear(struct ckpt_put *p)
{
    for (size_t i = 0; i < 3; i++) {
        free(p->boot[i].path);
        free(p->boot[i].obj.name);
    }
    for (size_t i = 0; i < p->n_deltas; i++) {
        free(p->deltas[i].path);
        free(p->deltas[i].obj.name);
    }
    free(p->deltas);
    for (size_t i = 0; i < p->n_chain; i++)
        free(p->chain[i].name);
    free(p->chain);
    free(p->below);
    free(p->facts.memory.name);
    free(p->mem_path);
    free(p->work_dir);
    memset(p, 0, sizeof(*p));
}
