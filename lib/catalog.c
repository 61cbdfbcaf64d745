#include "catalog.h"

#include "err.h"
#include "log.h"
#include "util.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct catalog_seqs {
    uint64_t *v;
    size_t n, cap;
};

static int catalog_collect(void *arg, const char *name, uint64_t size, int64_t mtime)
{
    struct catalog_seqs *s = arg;
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

static int catalog_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int catalog_list(struct store *s, const char *task, uint64_t **out_seqs, size_t *out_n)
{
    struct catalog_seqs seqs = {0};
    char *prefix = manifest_prefix(task);
    int rc = prefix ? store_list(s, prefix, catalog_collect, &seqs) : VK_ENOMEM;
    free(prefix);
    if (rc < 0) {
        free(seqs.v);
        return rc;
    }
    if (seqs.n)
        qsort(seqs.v, seqs.n, sizeof(*seqs.v), catalog_cmp);
    *out_seqs = seqs.v;
    *out_n = seqs.n;
    return 0;
}

int catalog_next_seq(struct store *s, const char *task, uint64_t *out)
{
    uint64_t *seqs = NULL, next = 1;
    size_t n = 0;
    int rc = catalog_list(s, task, &seqs, &n);
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

int catalog_void_next(struct store *s, const char *task, uint64_t *out_seq)
{
    uint64_t seq = 0;
    int rc = catalog_next_seq(s, task, &seq);
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
static int catalog_collect_task(void *arg, const char *name, uint64_t size, int64_t mtime)
{
    json_t *ids = arg;
    const char *p = name + strlen("tasks/"), *slash = strchr(p, '/');
    (void)size;
    (void)mtime;
    if (strncmp(name, "tasks/", 6) != 0 || !slash || strncmp(slash, "/manifests/", 11) != 0 ||
        !manifest_seq_of(name))
        return 0;
    char id[128];
    if ((size_t)(slash - p) >= sizeof(id))
        return 0;
    memcpy(id, p, (size_t)(slash - p));
    id[slash - p] = '\0';
    if (!util_valid_id(id))
        return 0;
    json_t *seqs = json_object_get(ids, id);
    if (!seqs && json_object_set_new(ids, id, seqs = json_array()) < 0)
        return err_set(VK_ENOMEM, "out of memory");
    return json_array_append_new(seqs, json_integer((json_int_t)manifest_seq_of(name))) < 0
               ? err_set(VK_ENOMEM, "out of memory")
               : 0;
}

static int catalog_entry_cmp(const void *a, const void *b)
{
    const struct catalog_entry *x = a, *y = b;
    int c = strcmp(x->task, y->task);
    return c ? c : (x->seq > y->seq) - (x->seq < y->seq);
}

int catalog_all(struct store *s, struct catalog_entry **out, size_t *out_n)
{
    json_t *set = json_object(), *seqs, *v;
    const char *id;
    size_t n = 0, cap = 0, i;
    struct catalog_entry *e = NULL;
    int rc = set ? store_list(s, "tasks/", catalog_collect_task, set)
                 : err_set(VK_ENOMEM, "out of memory");
    json_object_foreach(set, id, seqs)
    {
        cap += json_array_size(seqs);
    }
    if (rc == 0 && !(e = calloc(cap + 1, sizeof(*e))))
        rc = err_set(VK_ENOMEM, "out of memory");
    json_object_foreach(set, id, seqs)
    {
        json_array_foreach(seqs, i, v)
        {
            if (rc == 0 && !(e[n].task = strdup(id)))
                rc = err_set(VK_ENOMEM, "out of memory");
            if (rc == 0)
                e[n++].seq = (uint64_t)json_integer_value(v);
        }
    }
    json_decref(set);
    if (rc < 0) {
        catalog_entries_free(e, n);
        e = NULL;
        n = 0;
    } else if (n) {
        qsort(e, n, sizeof(*e), catalog_entry_cmp);
    }
    *out = e;
    *out_n = n;
    return rc;
}

void catalog_entries_free(struct catalog_entry *e, size_t n)
{
    for (size_t i = 0; e && i < n; i++)
        free(e[i].task);
    free(e);
}

static void catalog_ids_free(char **ids, size_t n)
{
    for (size_t i = 0; ids && i < n; i++)
        free(ids[i]);
    free(ids);
}

/* The ids of the tasks that have manifests in the store (valid ids only).
 * *out_ids and each id malloc'd: catalog_ids_free(). */
static int catalog_tasks(struct store *s, char ***out_ids, size_t *out_n)
{
    json_t *set = json_object(), *v;
    const char *id;
    char **ids = NULL;
    size_t n = 0;
    int rc = set ? store_list(s, "tasks/", catalog_collect_task, set)
                 : err_set(VK_ENOMEM, "out of memory");
    if (rc == 0 && !(ids = calloc(json_object_size(set) + 1, sizeof(*ids))))
        rc = err_set(VK_ENOMEM, "out of memory");
    json_object_foreach(set, id, v)
    {
        if (rc == 0 && !(ids[n++] = strdup(id)))
            rc = err_set(VK_ENOMEM, "out of memory");
    }
    json_decref(set);
    if (rc < 0) {
        catalog_ids_free(ids, n);
        ids = NULL;
        n = 0;
    }
    *out_ids = ids;
    *out_n = n;
    return rc;
}


int catalog_void_next_all(struct store *s)
{
    char **ids = NULL;
    size_t n = 0;
    int rc = catalog_tasks(s, &ids, &n);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = catalog_void_next(s, ids[i], NULL);
    catalog_ids_free(ids, n);
    return rc;
}

int catalog_load(struct store *s, const char *task, uint64_t seq, struct manifest **out)
{
    char *name = NULL, *text = NULL;
    size_t len = 0;
    int rc;

    *out = NULL;
    if (seq == 0) {
        uint64_t *seqs = NULL;
        size_t n = 0;
        rc = catalog_list(s, task, &seqs, &n);
        if (rc < 0)
            return rc;
        seq = n ? seqs[n - 1] : 0;
        free(seqs);
        if (seq == 0)
            return err_set(VK_ENOTFOUND, "task %s has no checkpoint in store %s", task, store_uri(s));
    }
    name = manifest_name(task, seq);
    rc = VK_EIO;
    for (int attempt = 0; attempt < 3 && rc < 0 && rc != VK_ENOTFOUND; attempt++) {
        if (attempt)
            util_backoff(UTIL_RETRY_BASE_MS, attempt - 1);
        rc = store_get_buf(s, name, &text, &len);
    }
    if (rc == VK_ENOTFOUND)
        rc = err_set(rc, "task %s has no checkpoint %" PRIu64 " in store %s", task, seq, store_uri(s));
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

static int catalog_same_text(struct store *s, const char *name, const char *text)
{
    char *got = NULL;
    size_t len = 0;
    int same = store_get_buf(s, name, &got, &len) == 0 && len == strlen(text) &&
               memcmp(got, text, len) == 0;
    free(got);
    return same;
}

int catalog_commit(struct store *s, const struct manifest *m, const struct store_fence *fence,
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
        if (rc == VK_EEXISTS && attempt > 0 && catalog_same_text(s, name, text))
            rc = 0;
        if (rc == VK_EEXISTS)
            err_set(rc, "checkpoint %s already exists in %s (written by another node)", name,
                    store_uri(s));
        if (rc == 0 || rc == VK_ENOSPC || rc == VK_EEXISTS || rc == VK_ELEASE || attempt == 2)
            break;
        log_warn("store %s: writing %s failed, retrying: %s", store_uri(s), name, err_msg());
        util_backoff(UTIL_RETRY_BASE_MS, attempt);
        rc = 0;
    }
    free(text);
    free(name);
    return rc;
}

