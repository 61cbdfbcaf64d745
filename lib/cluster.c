#include "cluster.h"

#include "err.h"
#include "util.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cluster_lease_name(const char *task, char out[192])
{
    snprintf(out, 192, "cluster/leases/%s", task);
}

int64_t cluster_memory_free_mib(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    long long kib = 0;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "MemAvailable: %lld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib / 1024;
}

int cluster_beat(struct store *s, const char *node, int lease_ms, int renew_ms, json_t *tasks,
                 int running)
{
    char name[192];
    json_t *j = json_pack("{s:s, s:I, s:i, s:i, s:I, s:i, s:O}", "node", node, "renewed_ms",
                          (json_int_t)(util_wall_us() / 1000), "lease_ms", lease_ms, "renew_ms",
                          renew_ms, "memory_free_mib", (json_int_t)cluster_memory_free_mib(),
                          "running", running, "tasks", tasks);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    int rc;
    json_decref(j);
    if (!text)
        return err_set(VK_ENOMEM, "out of memory");
    snprintf(name, sizeof(name), "cluster/nodes/%s", node);
    rc = store_put_buf(s, name, text, strlen(text));
    free(text);
    return rc;
}

struct cluster_list {
    struct store *s;
    struct cluster_node *v;
    size_t n, cap;
};

/* What one heartbeat is read to, from a store anyone with write access to
 * it may have written. */
#define CLUSTER_BEAT_MAX (512u << 10)
#define CLUSTER_BEAT_TASKS 4096
#define CLUSTER_NODES_MAX 4096
#define CLUSTER_MS_MAX 86400000 /* a day: no lease or renewal is longer */
#define CLUSTER_MOVE_MAX 4096

static int64_t cluster_clamp(json_t *v, int64_t lo, int64_t hi)
{
    json_int_t x = json_integer_value(v);
    return x < lo ? lo : x > hi ? hi : (int64_t)x;
}

/* The heartbeat's task list, with only valid task ids (at most
 * CLUSTER_BEAT_TASKS): a forged list steers placement, take-overs and
 * pre-staging, each paid for on the renewal thread. */
static json_t *cluster_task_ids(json_t *tasks)
{
    json_t *out = json_array(), *v;
    size_t i;
    if (!out || !json_is_array(tasks))
        return out;
    json_array_foreach(tasks, i, v) {
        if (json_array_size(out) >= CLUSTER_BEAT_TASKS)
            break;
        if (json_is_string(v) && util_valid_id(json_string_value(v)))
            json_array_append(out, v);
    }
    return out;
}

int cluster_beat_parse(const char *obj_node, const char *text, size_t len,
                       struct cluster_node *out)
{
    json_t *j;
    const char *node;
    memset(out, 0, sizeof(*out));
    /* Node names are host names (dots included): checked as ids, and the
     * one inside must be the object's own, so no node speaks for another. */
    if (len > CLUSTER_BEAT_MAX || !util_valid_id(obj_node))
        return VK_ECORRUPT;
    j = json_loadb(text, len, 0, NULL);
    node = json_string_value(json_object_get(j, "node"));
    if (!node || strcmp(node, obj_node) != 0 || strlen(node) >= sizeof(out->name)) {
        json_decref(j);
        return VK_ECORRUPT;
    }
    snprintf(out->name, sizeof(out->name), "%s", node);
    /* bounded, so that ages and sums of them never overflow */
    out->renewed_ms = cluster_clamp(json_object_get(j, "renewed_ms"), 0, INT64_MAX / 4);
    out->lease_ms = (int)cluster_clamp(json_object_get(j, "lease_ms"), 1, CLUSTER_MS_MAX);
    out->renew_ms = (int)cluster_clamp(json_object_get(j, "renew_ms"), 1, CLUSTER_MS_MAX);
    out->memory_free_mib = cluster_clamp(json_object_get(j, "memory_free_mib"), 0, INT64_MAX / 4);
    out->running = (int)cluster_clamp(json_object_get(j, "running"), 0, CLUSTER_BEAT_TASKS);
    out->tasks = cluster_task_ids(json_object_get(j, "tasks"));
    json_decref(j);
    return out->tasks ? 0 : err_set(VK_ENOMEM, "out of memory");
}

static int cluster_collect(void *arg, const char *name, uint64_t size, int64_t mtime)
{
    struct cluster_list *l = arg;
    char *text = NULL;
    size_t len = 0;
    struct cluster_node n;
    int rc;
    (void)mtime;
    if (size > CLUSTER_BEAT_MAX || l->n >= CLUSTER_NODES_MAX ||
        !util_valid_id(name + strlen("cluster/nodes/")))
        return 0;
    if (store_get_buf(l->s, name, &text, &len) < 0) {
        err_clear();
        return 0; /* gone since the listing, being replaced, or not a heartbeat */
    }
    rc = cluster_beat_parse(name + strlen("cluster/nodes/"), text, len, &n);
    free(text);
    if (rc == VK_ECORRUPT)
        return 0;
    if (rc < 0)
        return rc;
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 8;
        struct cluster_node *nv = realloc(l->v, ncap * sizeof(*nv));
        if (!nv) {
            json_decref(n.tasks);
            return err_set(VK_ENOMEM, "out of memory");
        }
        l->v = nv;
        l->cap = ncap;
    }
    l->v[l->n++] = n;
    return 0;
}

int cluster_nodes(struct store *s, struct cluster_node **out, size_t *out_n)
{
    struct cluster_list l = {.s = s};
    int rc = store_list(s, "cluster/nodes/", cluster_collect, &l);
    if (rc < 0) {
        cluster_nodes_free(l.v, l.n);
        return err_wrap(rc, "cannot read the cluster's heartbeats");
    }
    *out = l.v;
    *out_n = l.n;
    return 0;
}

void cluster_nodes_free(struct cluster_node *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        json_decref(v[i].tasks);
    free(v);
}

enum cluster_state cluster_state_of(const struct cluster_node *n, int64_t now_ms)
{
    /* (renewed_ms is clamped when read; a clock before 1970 is no age) */
    int64_t age = now_ms < 0 ? 0 : now_ms - n->renewed_ms;
    if (age > n->lease_ms)
        return CLUSTER_DEAD;
    if (age > 2 * (int64_t)n->renew_ms)
        return CLUSTER_SUSPECT;
    return CLUSTER_ALIVE;
}

const char *cluster_state_name(enum cluster_state st)
{
    return st == CLUSTER_ALIVE ? "alive" : st == CLUSTER_SUSPECT ? "suspect" : "dead";
}

/* a before b in the take-over order */
static int cluster_before(const struct cluster_node *a, const struct cluster_node *b)
{
    if (a->running != b->running)
        return a->running < b->running;
    /* In whole GiB: a few MiB either way is noise that changes between two
     * heartbeats, and two survivors reading them a moment apart must still
     * compute the same order. */
    if (a->memory_free_mib / 1024 != b->memory_free_mib / 1024)
        return a->memory_free_mib / 1024 > b->memory_free_mib / 1024;
    return strcmp(a->name, b->name) < 0;
}

static int cluster_cmp(const void *x, const void *y)
{
    const struct cluster_node *a = *(const struct cluster_node *const *)x;
    const struct cluster_node *b = *(const struct cluster_node *const *)y;
    return cluster_before(a, b) ? -1 : cluster_before(b, a) ? 1 : 0;
}

void cluster_assign(const struct cluster_node *v, size_t n, int64_t now_ms, size_t i,
                    char out[128])
{
    const struct cluster_node **live = malloc((n + 1) * sizeof(*live));
    size_t k = 0;
    out[0] = '\0';
    if (!live)
        return;
    for (size_t j = 0; j < n; j++)
        if (cluster_state_of(&v[j], now_ms) != CLUSTER_DEAD)
            live[k++] = &v[j];
    if (k > 0) {
        qsort(live, k, sizeof(*live), cluster_cmp);
        snprintf(out, 128, "%s", live[i % k]->name);
    }
    free(live);
}

/* ---- planned moves ----------------------------------------------------------- */

void cluster_pick_other(const struct cluster_node *v, size_t n, int64_t now_ms, const char *self,
                        char out[128])
{
    const struct cluster_node *best = NULL;
    out[0] = '\0';
    for (size_t j = 0; j < n; j++)
        if (strcmp(v[j].name, self) != 0 && cluster_state_of(&v[j], now_ms) == CLUSTER_ALIVE &&
            (!best || cluster_before(&v[j], best)))
            best = &v[j];
    if (best)
        snprintf(out, 128, "%s", best->name);
}

static void cluster_move_name(const char *task, char out[192])
{
    snprintf(out, 192, "cluster/moves/%s", task);
}

int cluster_move_put(struct store *s, const char *task, const char *from, const char *to,
                     uint64_t seq)
{
    char name[192];
    json_t *j = json_pack("{s:s, s:s, s:s, s:I}", "task", task, "from", from, "to", to, "seq",
                          (json_int_t)seq);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text)
        return err_set(VK_ENOMEM, "out of memory");
    cluster_move_name(task, name);
    int rc = store_put_buf(s, name, text, strlen(text));
    free(text);
    return rc < 0 ? err_wrap(rc, "cannot hand task %s over to %s", task, to) : 0;
}

struct cluster_moves {
    struct store *s;
    const char *node;
    json_t *out; /* [{"task", "from"}] */
};

int cluster_move_parse(const char *name, const char *node, const char *text, size_t len,
                       json_t **out)
{
    json_t *j = len <= CLUSTER_MOVE_MAX ? json_loadb(text, len, 0, NULL) : NULL;
    const char *task = json_string_value(json_object_get(j, "task"));
    const char *from = json_string_value(json_object_get(j, "from"));
    const char *to = json_string_value(json_object_get(j, "to"));
    char want[192];
    int rc = VK_ECORRUPT;
    *out = NULL;
    /* The store is not trusted: the task becomes a path, and the record
     * must be the one its name says. */
    if (task && from && to && util_valid_id(task) && util_valid_id(from) && !strcmp(to, node)) {
        cluster_move_name(task, want);
        if (!strcmp(want, name)) {
            *out = json_pack("{s:s, s:s}", "task", task, "from", from);
            rc = *out ? 0 : err_set(VK_ENOMEM, "out of memory");
        }
    }
    json_decref(j);
    return rc;
}

static int cluster_move_collect(void *arg, const char *name, uint64_t size, int64_t mtime)
{
    struct cluster_moves *m = arg;
    char *text = NULL;
    size_t len = 0;
    json_t *one = NULL;
    int rc;
    (void)mtime;
    if (size > CLUSTER_MOVE_MAX || json_array_size(m->out) >= CLUSTER_NODES_MAX ||
        store_get_buf(m->s, name, &text, &len) < 0) {
        err_clear();
        return 0; /* not one we wrote, or gone since the listing */
    }
    rc = cluster_move_parse(name, m->node, text, len, &one);
    free(text);
    if (rc == 0)
        json_array_append_new(m->out, one);
    return rc == VK_ENOMEM ? rc : 0;
}

int cluster_moves_to(struct store *s, const char *node, json_t **out)
{
    struct cluster_moves m = {s, node, json_array()};
    int rc = m.out ? store_list(s, "cluster/moves/", cluster_move_collect, &m)
                   : err_set(VK_ENOMEM, "out of memory");
    if (rc < 0) {
        json_decref(m.out);
        *out = NULL;
        return err_wrap(rc, "cannot read the cluster's planned moves");
    }
    *out = m.out;
    return 0;
}

int cluster_move_pending(struct store *s, const char *task)
{
    char name[192];
    uint64_t size;
    cluster_move_name(task, name);
    int rc = store_stat(s, name, &size);
    if (rc == VK_ENOTFOUND) {
        err_clear();
        return 0;
    }
    return rc < 0 ? rc : 1;
}

int cluster_move_done(struct store *s, const char *task)
{
    char name[192];
    cluster_move_name(task, name);
    int rc = store_remove(s, name);
    if (rc == VK_ENOTFOUND) {
        err_clear();
        rc = 0;
    }
    return rc;
}
