#include "prestage.h"

#include "catalog.h"
#include "ckpt.h"
#include "err.h"
#include "log.h"
#include "util.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PRESTAGE_KEEP_MS 120000 /* copies of a task no longer wanted are kept this long */

static void prestage_wait(pthread_cond_t *c, pthread_mutex_t *m, int ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += (long)ms * 1000000L;
    until.tv_sec += until.tv_nsec / 1000000000L;
    until.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(c, m, &until);
}

struct prestage {
    struct repo *repo;   /* not owned */
    struct store *store; /* not owned */
    struct store *cache; /* owned */
    char *blob_dir;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int stopping;
    int round_ms;   /* how often the newest checkpoints are looked at */
    json_t *want;   /* ids to stage */
    json_t *staged; /* id -> {"seq", "bytes_copied", "packs", "seconds"} */
    prestage_ready_fn ready;
    void *ready_arg;
};

/* {id: seq} of the wanted tasks that are staged. */
static json_t *prestage_ready_set(json_t *want, json_t *staged)
{
    json_t *set = json_object(), *id;
    size_t i;
    json_array_foreach(want, i, id) {
        json_t *st = json_is_string(id) ? json_object_get(staged, json_string_value(id)) : NULL;
        if (st)
            json_object_set(set, json_string_value(id), json_object_get(st, "seq"));
    }
    return set;
}

/* Stages the newest checkpoint of task id unless it is staged already. */
static void prestage_task(struct prestage *p, const char *id, json_t *staged)
{
    uint64_t *seqs = NULL;
    size_t n = 0;
    struct manifest *m = NULL;
    json_t *old = json_object_get(staged, id), *packs = json_array();
    uint64_t copied = 0;
    int64_t t0 = util_now_us();
    int rc = catalog_list(p->store, id, &seqs, &n);
    if (rc < 0 || n == 0 ||
        (old && (uint64_t)json_integer_value(json_object_get(old, "seq")) == seqs[n - 1]))
        goto out;
    rc = catalog_load(p->store, id, seqs[n - 1], &m);
    if (rc == 0)
        rc = ckpt_stage(p->repo, m, p->blob_dir, packs, &copied);
    if (rc < 0) { /* a round later, again (GC may have rewritten a pack meanwhile) */
        log_warn("prestage: task %s: %s", id, err_msg());
        goto out;
    }
    double secs = (double)(util_now_us() - t0) / 1e6;
    json_object_set_new(staged, id,
                        json_pack("{s:I, s:I, s:O, s:f}", "seq", (json_int_t)seqs[n - 1],
                                  "bytes_copied", (json_int_t)copied, "packs", packs,
                                  "seconds", secs));
    log_info("prestage: task %s: checkpoint %" PRIu64 " staged (%" PRIu64 " bytes copied, %.2f s)",
             id, seqs[n - 1], copied, secs);
out:
    json_decref(packs);
    manifest_free(m);
    free(seqs);
}

struct prestage_sweep {
    json_t *keep; /* pack name -> true */
    struct store *cache;
    json_t *drop;
};

static int prestage_sweep_one(void *arg, const char *name, uint64_t size, int64_t mtime)
{
    struct prestage_sweep *sw = arg;
    (void)size;
    (void)mtime;
    if (!json_object_get(sw->keep, name))
        json_array_append_new(sw->drop, json_string(name));
    return 0;
}

/* Deletes the cached packs no staged checkpoint of a wanted task needs. */
static void prestage_sweep(struct prestage *p, json_t *staged)
{
    struct prestage_sweep sw = {.keep = json_object(), .cache = p->cache, .drop = json_array()};
    const char *id;
    json_t *st, *name;
    size_t i;
    json_object_foreach(staged, id, st)
        json_array_foreach(json_object_get(st, "packs"), i, name)
            json_object_set_new(sw.keep, json_string_value(name), json_true());
    if (store_list(p->cache, "packs/", prestage_sweep_one, &sw) == 0)
        json_array_foreach(sw.drop, i, name)
            store_remove(p->cache, json_string_value(name));
    json_decref(sw.keep);
    json_decref(sw.drop);
}

static void *prestage_thread(void *arg)
{
    struct prestage *p = arg;
    pthread_mutex_lock(&p->lock);
    while (!p->stopping) {
        json_t *want = json_deep_copy(p->want), *staged = json_deep_copy(p->staged), *id;
        size_t i;
        pthread_mutex_unlock(&p->lock);
        const char *k;
        json_t *v, *tmp;
        int64_t now = util_now_us() / 1000;
        json_object_foreach_safe(staged, tmp, k, v)
        {
            /* No longer ours to take over, or being taken over now (this
             * node's heartbeat names it from then on): its copies stay a
             * while, since a restore may be reading them. */
            int wanted = 0;
            json_array_foreach(want, i, id)
                wanted |= json_is_string(id) && !strcmp(json_string_value(id), k);
            json_t *since = json_object_get(v, "unwanted_ms");
            if (wanted)
                json_object_del(v, "unwanted_ms");
            else if (!since)
                json_object_set_new(v, "unwanted_ms", json_integer(now));
            else if (now - json_integer_value(since) > PRESTAGE_KEEP_MS)
                json_object_del(staged, k);
        }
        json_array_foreach(want, i, id)
            if (json_is_string(id) && util_valid_id(json_string_value(id)))
                prestage_task(p, json_string_value(id), staged);
        prestage_sweep(p, staged);
        if (p->ready) {
            json_t *set = prestage_ready_set(want, staged);
            p->ready(p->ready_arg, set);
            json_decref(set);
        }
        pthread_mutex_lock(&p->lock);
        json_decref(p->staged);
        p->staged = staged;
        json_decref(want);
        if (!p->stopping)
            prestage_wait(&p->wake, &p->lock, p->round_ms);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

int prestage_open(struct prestage **out, struct repo *r, struct store *s, const char *state_dir,
                  const char *blob_dir, int round_ms, prestage_ready_fn ready, void *ready_arg)
{
    struct prestage *p = calloc(1, sizeof(*p));
    char *uri = util_fmt("file://%s/prestage", state_dir);
    int rc = p && uri ? 0 : err_set(VK_ENOMEM, "out of memory");
    *out = NULL;
    if (rc == 0) {
        p->repo = r;
        p->store = s;
        p->round_ms = round_ms > 100 ? round_ms : 100;
        p->ready = ready;
        p->ready_arg = ready_arg;
        p->want = json_array();
        p->staged = json_object();
        p->blob_dir = strdup(blob_dir);
        pthread_mutex_init(&p->lock, NULL);
        pthread_condattr_t ca; /* timed waits on the monotonic clock: clocks step */
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&p->wake, &ca);
        pthread_condattr_destroy(&ca);
        rc = store_open(uri, &p->cache);
    }
    free(uri);
    if (rc == 0) {
        repo_set_cache(r, p->cache);
        if (pthread_create(&p->thread, NULL, prestage_thread, p) != 0) {
            repo_set_cache(r, NULL);
            rc = err_set(VK_ENOMEM, "cannot start the pre-staging thread");
        }
    }
    if (rc < 0 && p) {
        store_free(p->cache);
        json_decref(p->want);
        json_decref(p->staged);
        free(p->blob_dir);
        free(p);
        return rc;
    }
    *out = p;
    return 0;
}

void prestage_free(struct prestage *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->stopping = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    pthread_join(p->thread, NULL);
    repo_set_cache(p->repo, NULL);
    store_free(p->cache);
    json_decref(p->want);
    json_decref(p->staged);
    free(p->blob_dir);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->wake);
    free(p);
}

void prestage_want(struct prestage *p, json_t *ids)
{
    json_t *copy = json_deep_copy(ids);
    pthread_mutex_lock(&p->lock);
    int changed = !json_equal(p->want, copy);
    json_decref(p->want);
    p->want = copy ? copy : json_array();
    if (changed)
        pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
}

json_t *prestage_json(struct prestage *p)
{
    pthread_mutex_lock(&p->lock);
    json_t *tasks = json_object();
    const char *id;
    json_t *st;
    json_object_foreach(p->staged, id, st)
        json_object_set_new(tasks, id,
                            json_pack("{s:O, s:O, s:I, s:O}", "seq", json_object_get(st, "seq"),
                                      "bytes_copied", json_object_get(st, "bytes_copied"),
                                      "packs", (json_int_t)json_array_size(json_object_get(st, "packs")),
                                      "seconds", json_object_get(st, "seconds")));
    pthread_mutex_unlock(&p->lock);
    return json_pack("{s:o}", "tasks", tasks);
}
