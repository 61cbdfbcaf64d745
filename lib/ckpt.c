#include "ckpt.h"

#include "err.h"
#include "img.h"
#include "log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CKPT_QMP_TIMEOUT_MS 30000
#define CKPT_MIGRATE_TIMEOUT_MS (30 * 60 * 1000)

/* Makes sure the VM runs again after a failed checkpoint. */
static void ckpt_ensure_running(struct qmp *q)
{
    json_t *st = NULL;
    if (qmp_exec(q, "query-status", NULL, &st, CKPT_QMP_TIMEOUT_MS) == 0) {
        const char *s = json_string_value(json_object_get(st, "status"));
        if (s && strcmp(s, "running") != 0 && qmp_exec(q, "cont", NULL, NULL, 5000) < 0)
            log_error("VM could not be resumed after a failed checkpoint: %s", err_msg());
    }
    json_decref(st);
}

/* Polls query-migrate until the save ends; VK_EQEMU with QEMU's reason if it fails. */
static int ckpt_wait_migration(struct qmp *q, uint64_t *out_bytes)
{
    int64_t deadline = util_now_us() + (int64_t)CKPT_MIGRATE_TIMEOUT_MS * 1000;
    for (;;) {
        json_t *r = NULL;
        int rc = qmp_exec(q, "query-migrate", NULL, &r, CKPT_QMP_TIMEOUT_MS);
        if (rc < 0)
            return rc;
        const char *st = json_string_value(json_object_get(r, "status"));
        if (st && !strcmp(st, "completed")) {
            *out_bytes = (uint64_t)json_integer_value(
                json_object_get(json_object_get(r, "ram"), "transferred"));
            json_decref(r);
            return 0;
        }
        if (st && (!strcmp(st, "failed") || !strcmp(st, "cancelled"))) {
            const char *why = json_string_value(json_object_get(r, "error-desc"));
            rc = err_set(VK_EQEMU, "memory save %s: %s", st, why ? why : "no reason given");
            json_decref(r);
            return rc;
        }
        json_decref(r);
        if (util_now_us() > deadline)
            return err_set(VK_ETIMEOUT, "memory save did not finish in %d s",
                           CKPT_MIGRATE_TIMEOUT_MS / 1000);
        usleep(10000);
    }
}

static int ckpt_set_bg(struct qmp *q, int on)
{
    json_t *args = json_pack("{s:[{s:s, s:b}]}", "capabilities", "capability",
                             "background-snapshot", "state", on);
    return qmp_exec(q, "migrate-set-capabilities", args, NULL, CKPT_QMP_TIMEOUT_MS);
}

static int ckpt_seal(struct qmp *q, const char *new_top)
{
    json_t *args = json_pack("{s:s, s:s, s:s, s:s}", "device", "drive0", "snapshot-file",
                             new_top, "format", "qcow2", "mode", "absolute-paths");
    return qmp_exec(q, "blockdev-snapshot-sync", args, NULL, CKPT_QMP_TIMEOUT_MS);
}

int ckpt_snapshot(struct qmp *q, int stop_copy, const char *new_top, const char *mem_path,
                  const char *serial_path, struct ckpt_snap *out)
{
    json_t *ev_stop = NULL, *ev_resume = NULL;
    char *uri = NULL;
    struct stat st;
    int64_t t;
    int rc;

    memset(out, 0, sizeof(*out));
    if (strchr(mem_path, '\''))
        return err_set(VK_EINVAL, "memory file path must not contain a quote: %s", mem_path);
    uri = util_fmt("exec:cat > '%s'", mem_path);
    if (!uri)
        return err_set(VK_ENOMEM, "out of memory");
    rc = ckpt_set_bg(q, !stop_copy);
    if (rc < 0)
        goto out;
    qmp_drop_events(q);
    rc = qmp_exec(q, "stop", NULL, NULL, CKPT_QMP_TIMEOUT_MS);
    if (rc < 0)
        goto out;
    rc = qmp_wait_event(q, "STOP", CKPT_QMP_TIMEOUT_MS, &ev_stop);
    if (rc < 0)
        goto out_resume;
    if (serial_path && stat(serial_path, &st) == 0)
        out->serial_bytes = (uint64_t)st.st_size;
    t = util_now_us();
    rc = ckpt_seal(q, new_top);
    out->seal_us = util_now_us() - t;
    if (rc < 0)
        goto out_resume;
    out->sealed = 1;
    t = util_now_us();
    rc = qmp_exec(q, "migrate", json_pack("{s:s}", "uri", uri), NULL, CKPT_QMP_TIMEOUT_MS);
    if (rc < 0)
        goto out_resume;
    if (stop_copy) {
        rc = ckpt_wait_migration(q, &out->mem_bytes);
        out->mem_save_us = util_now_us() - t;
        if (rc < 0)
            goto out_resume;
        rc = qmp_exec(q, "cont", NULL, NULL, CKPT_QMP_TIMEOUT_MS);
        if (rc < 0)
            goto out_resume;
    }
    rc = qmp_wait_event(q, "RESUME", CKPT_QMP_TIMEOUT_MS, &ev_resume);
    if (rc < 0)
        goto out_resume;
    out->stopped_us = qmp_event_time_us(ev_resume) - qmp_event_time_us(ev_stop);
    if (!stop_copy) {
        rc = ckpt_wait_migration(q, &out->mem_bytes);
        out->mem_save_us = util_now_us() - t;
    }
    goto out;
out_resume:
    ckpt_ensure_running(q);
out:
    json_decref(ev_stop);
    json_decref(ev_resume);
    free(uri);
    return rc;
}

struct ckpt_seqs {
    uint64_t *v;
    size_t n, cap;
};

static int ckpt_collect(void *arg, const char *name, uint64_t size, int64_t mtime)
{
    struct ckpt_seqs *s = arg;
    uint64_t seq = manifest_seq_of(name);
    (void)size;
    (void)mtime;
    if (seq == 0)
        return 0;
    if (s->n == s->cap) {
        uint64_t *nv = realloc(s->v, (s->cap ? s->cap * 2 : 16) * sizeof(*nv));
        if (!nv)
            return err_set(VK_ENOMEM, "out of memory");
        s->v = nv;
        s->cap = s->cap ? s->cap * 2 : 16;
    }
    s->v[s->n++] = seq;
    return 0;
}

static int ckpt_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int ckpt_list(struct store *s, const char *task, uint64_t **out_seqs, size_t *out_n)
{
    struct ckpt_seqs seqs = {0};
    char *prefix = manifest_prefix(task);
    int rc = prefix ? store_list(s, prefix, ckpt_collect, &seqs) : VK_ENOMEM;
    free(prefix);
    if (rc < 0) {
        free(seqs.v);
        return rc;
    }
    if (seqs.n)
        qsort(seqs.v, seqs.n, sizeof(*seqs.v), ckpt_cmp);
    *out_seqs = seqs.v;
    *out_n = seqs.n;
    return 0;
}

int ckpt_next_seq(struct store *s, const char *task, uint64_t *out)
{
    uint64_t *seqs = NULL, next = 1;
    size_t n = 0;
    int rc = ckpt_list(s, task, &seqs, &n);
    if (rc == 0 && n)
        next = seqs[n - 1] + 1;
    free(seqs);
    for (int i = 0; rc == 0 && i < 100000; i++, next++) {
        char *name = manifest_name(task, next);
        int taken = name ? store_taken(s, name) : err_set(VK_ENOMEM, "out of memory");
        free(name);
        if (taken == VK_EINVAL) /* a store without voids */
            err_clear();
        if (taken != 1) {
            rc = taken == VK_EINVAL ? 0 : taken;
            break;
        }
    }
    *out = next;
    return rc < 0 ? rc : 0;
}

int ckpt_void_next(struct store *s, const char *task, uint64_t *out_seq)
{
    uint64_t seq = 0;
    int rc = ckpt_next_seq(s, task, &seq);
    for (int i = 0; rc == 0 && i < 100; i++, seq++) {
        char *name = manifest_name(task, seq);
        rc = name ? store_void(s, name) : err_set(VK_ENOMEM, "out of memory");
        free(name);
        if (rc != VK_EEXISTS)
            break;
        rc = 0; /* taken meanwhile: the next one */
    }
    if (rc == 0 && out_seq)
        *out_seq = seq;
    return rc < 0 ? err_wrap(rc, "task %s: cannot void its next checkpoint number", task) : 0;
}

/* Collects the task ids of manifest names "tasks/<id>/manifests/...". */
static int ckpt_collect_task(void *arg, const char *name, uint64_t size, int64_t mtime)
{
    json_t *ids = arg;
    const char *p = name + strlen("tasks/"), *slash = strchr(p, '/');
    (void)size;
    (void)mtime;
    if (strncmp(name, "tasks/", 6) != 0 || !slash || strncmp(slash, "/manifests/", 11) != 0)
        return 0;
    char id[128];
    if ((size_t)(slash - p) >= sizeof(id))
        return 0;
    memcpy(id, p, (size_t)(slash - p));
    id[slash - p] = '\0';
    if (util_valid_id(id) && !json_object_get(ids, id))
        json_object_set_new(ids, id, json_true());
    return 0;
}

int ckpt_void_next_all(struct store *s)
{
    json_t *ids = json_object(), *v;
    const char *id;
    int rc = ids ? store_list(s, "tasks/", ckpt_collect_task, ids) : VK_ENOMEM;
    json_object_foreach(ids, id, v)
    {
        if (rc == 0)
            rc = ckpt_void_next(s, id, NULL);
    }
    json_decref(ids);
    return rc;
}

int ckpt_load(struct store *s, const char *task, uint64_t seq, struct manifest **out)
{
    char *name = NULL, *text = NULL;
    size_t len = 0;
    int rc;

    *out = NULL;
    if (seq == 0) {
        uint64_t *seqs = NULL;
        size_t n = 0;
        rc = ckpt_list(s, task, &seqs, &n);
        if (rc < 0)
            return rc;
        seq = n ? seqs[n - 1] : 0;
        free(seqs);
        if (seq == 0)
            return err_set(VK_ENOTFOUND, "task %s has no checkpoint in store %s", task, s->uri);
    }
    name = manifest_name(task, seq);
    rc = VK_EIO;
    for (int attempt = 0; attempt < 3 && rc < 0 && rc != VK_ENOTFOUND; attempt++) {
        if (attempt)
            usleep(200000); /* a store that failed once may answer now */
        rc = store_get_buf(s, name, &text, &len);
    }
    if (rc == VK_ENOTFOUND)
        rc = err_set(rc, "task %s has no checkpoint %" PRIu64 " in store %s", task, seq, s->uri);
    if (rc == 0)
        rc = manifest_decode(text, len, name, out);
    if (rc == 0 && ((*out)->seq != seq || strcmp((*out)->task, task) != 0)) {
        rc = err_set(VK_ECORRUPT, "manifest %s describes task %s checkpoint %" PRIu64, name,
                     (*out)->task, (*out)->seq);
        manifest_free(*out);
        *out = NULL;
    }
    free(name);
    free(text);
    return rc;
}

static int ckpt_same_text(struct store *s, const char *name, const char *text)
{
    char *got = NULL;
    size_t len = 0;
    int same = store_get_buf(s, name, &got, &len) == 0 && len == strlen(text) &&
               memcmp(got, text, len) == 0;
    free(got);
    return same;
}

int ckpt_commit(struct store *s, const struct manifest *m, const struct store_fence *fence,
                size_t n_fence)
{
    char *name = manifest_name(m->task, m->seq), *text = NULL;
    int rc;
    if (!name)
        return err_set(VK_ENOMEM, "out of memory");
    rc = store_sync(s); /* every chunk and index it names is durable first */
    if (rc == 0)
        rc = manifest_encode(m, &text);
    /* Created, never replaced: of two writers of one number (a node that lost
     * its lease while stalled, and the task's new node) one commits. A retry
     * after a lost reply may find its own manifest: the same text is a commit. */
    for (int attempt = 0; attempt < 3 && rc == 0; attempt++) {
        rc = n_fence ? store_put_fenced(s, fence, n_fence, name, text, strlen(text))
                   : store_put_new(s, name, text, strlen(text));
        if (rc == VK_EEXISTS && attempt > 0 && ckpt_same_text(s, name, text))
            rc = 0;
        if (rc == VK_EEXISTS)
            err_set(rc, "checkpoint %s already exists in %s (written by another node)", name,
                    s->uri);
        if (rc == 0 || rc == VK_ENOSPC || rc == VK_EEXISTS || rc == VK_ELEASE || attempt == 2)
            break;
        log_warn("store %s: writing %s failed, retrying: %s", s->uri, name, err_msg());
        usleep(200000);
        rc = 0;
    }
    free(text);
    free(name);
    return rc;
}

static int ckpt_check_obj(struct repo *r, const struct mf_obj *o, const char *what,
                          void (*report)(void *, const char *), void *arg)
{
    int rc = repo_verify_stream(r, o, what);
    if (rc < 0 && report)
        report(arg, err_msg());
    return rc;
}

int ckpt_verify(struct repo *r, const struct manifest *m, void (*report)(void *, const char *),
                void *arg)
{
    int rc = 0, r1;
    char what[96];
    snprintf(what, sizeof(what), "checkpoint %" PRIu64 " kernel", m->seq);
    r1 = ckpt_check_obj(r, &m->kernel, what, report, arg);
    rc = rc ? rc : r1;
    snprintf(what, sizeof(what), "checkpoint %" PRIu64 " initrd", m->seq);
    r1 = ckpt_check_obj(r, &m->initrd, what, report, arg);
    rc = rc ? rc : r1;
    snprintf(what, sizeof(what), "checkpoint %" PRIu64 " base image", m->seq);
    r1 = ckpt_check_obj(r, &m->base, what, report, arg);
    rc = rc ? rc : r1;
    for (size_t i = 0; i < m->n_deltas; i++) {
        snprintf(what, sizeof(what), "checkpoint %" PRIu64 " delta %zu", m->seq, i + 1);
        r1 = ckpt_check_obj(r, &m->deltas[i], what, report, arg);
        rc = rc ? rc : r1;
    }
    snprintf(what, sizeof(what), "checkpoint %" PRIu64 " memory", m->seq);
    r1 = ckpt_check_obj(r, &m->memory, what, report, arg);
    return rc ? rc : r1;
}

void ckpt_local_free(struct ckpt_local *l)
{
    if (!l)
        return;
    free(l->kernel);
    free(l->initrd);
    free(l->base);
    for (size_t i = 0; i < l->n_deltas; i++)
        free(l->deltas[i]);
    free(l->deltas);
    memset(l, 0, sizeof(*l));
}

/* What a blob file was when this node fetched and verified it. A file can
 * be changed in place without its size changing (a damaged disk, a stray
 * writer, a blob left by a version that trusted zero chunks blindly), but
 * not without its ctime changing: a blob is reused only while its identity,
 * size and times are those noted right after its check. */
static void ckpt_blob_stamp(const struct stat *st, char out[160])
{
    snprintf(out, 160, "vmckpt-blob 1 %ju %ju %jd %ld %ld %ld %ld\n", (uintmax_t)st->st_dev,
             (uintmax_t)st->st_ino, (intmax_t)st->st_size, (long)st->st_mtim.tv_sec,
             st->st_mtim.tv_nsec, (long)st->st_ctim.tv_sec, st->st_ctim.tv_nsec);
}

static int ckpt_blob_checked(const char *path, const char *stamp_path, uint64_t size)
{
    char want[160], *have = NULL;
    size_t len = 0;
    struct stat st;
    int same = util_read_file(stamp_path, &have, &len) == 0 && lstat(path, &st) == 0 &&
               S_ISREG(st.st_mode) && (uint64_t)st.st_size == size;
    if (same) {
        ckpt_blob_stamp(&st, want);
        same = strcmp(want, have) == 0;
    }
    free(have);
    err_clear(); /* no stamp: not checked, fetched again; no error */
    return same;
}

/* Fetches stream o into the blob cache (blob_dir/<sha256>), or reuses the
 * copy there when ckpt_blob_checked() says it is the one this node checked. */
static int ckpt_fetch_blob(struct repo *r, const struct mf_obj *o, const char *blob_dir,
                           const char *what, char **out)
{
    struct stat st;
    char stamp[160];
    char *stamp_path = util_fmt("%s/%s.checked", blob_dir, o->sha256);
    int rc;
    *out = util_fmt("%s/%s", blob_dir, o->sha256);
    if (!*out || !stamp_path) {
        free(stamp_path);
        return err_set(VK_ENOMEM, "out of memory");
    }
    if (ckpt_blob_checked(*out, stamp_path, o->size)) {
        free(stamp_path);
        return 0;
    }
    unlink(stamp_path);
    rc = repo_get_file(r, o, *out, what);
    if (rc == 0 && stat(*out, &st) < 0)
        rc = err_errno(errno, "cannot stat %s", *out);
    if (rc == 0) {
        ckpt_blob_stamp(&st, stamp);
        rc = util_write_file_atomic(stamp_path, stamp, strlen(stamp));
    }
    free(stamp_path);
    return rc;
}

int ckpt_fetch(struct repo *r, const struct manifest *m, const char *blob_dir,
               const char *run_dir, struct ckpt_local *out)
{
    char what[96];
    int rc;

    memset(out, 0, sizeof(*out));
    rc = util_mkdir_p(blob_dir, 0700);
    if (rc == 0)
        rc = ckpt_fetch_blob(r, &m->kernel, blob_dir, "kernel", &out->kernel);
    if (rc == 0)
        rc = ckpt_fetch_blob(r, &m->initrd, blob_dir, "initrd", &out->initrd);
    if (rc == 0)
        rc = ckpt_fetch_blob(r, &m->base, blob_dir, "base image", &out->base);
    /* What a store holds may name host files (see img_check_refs). */
    if (rc == 0 && img_check_refs(out->base, m->base_format, 0, "stored base image") < 0)
        rc = VK_ECORRUPT; /* damaged for --latest-intact and take-over too */
    if (rc == 0) {
        out->deltas = calloc(m->n_deltas + 1, sizeof(char *));
        rc = out->deltas ? 0 : err_set(VK_ENOMEM, "out of memory");
    }
    for (size_t i = 0; rc == 0 && i < m->n_deltas; i++) {
        out->deltas[i] = util_fmt("%s/delta-%03zu.qcow2", run_dir, i + 1);
        out->n_deltas = i + 1;
        snprintf(what, sizeof(what), "delta %zu", i + 1);
        rc = repo_get_file(r, &m->deltas[i], out->deltas[i], what);
        if (rc == 0 && img_check_refs(out->deltas[i], "qcow2", 1, "stored delta") < 0)
            rc = VK_ECORRUPT;
        if (rc == 0)
            rc = i == 0 ? img_rebase(out->deltas[0], out->base, m->base_format)
                        : img_rebase(out->deltas[i], out->deltas[i - 1], "qcow2");
    }
    if (rc < 0) {
        err_wrap(rc, "cannot fetch checkpoint %" PRIu64 " of task %s", m->seq, m->task);
        ckpt_local_free(out);
    }
    return rc;
}
