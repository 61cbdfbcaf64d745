#include "agent.h"

#include "api.h"
#include "ckpt.h"
#include "cluster.h"
#include "err.h"
#include "gc.h"
#include "log.h"
#include "manifest.h"
#include "peer.h"
#include "repo.h"
#include "store.h"
#include "task.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <stdatomic.h>
#include <time.h>
#include <stdint.h>
#include <unistd.h>

/* A take-over in progress. The restore runs on a thread of its own so that
 * the cluster thread goes on renewing this node's leases and heartbeat (a
 * restore can outlast a lease) and renews this task's lease too. */
struct agent_takeover {
    struct agent *a;
    char id[128], from[128]; /* the task, and the dead node it ran on */
    int64_t from_renewed_ms; /* the dead node's last heartbeat */
    int64_t seen_ms;         /* when this node found it dead */
    int lost;                /* another node got its lease meanwhile (a->lock) */
};

struct agent {
    const struct cfg *cfg;
    struct task_env env;
    int lock_fd, listen_fd, stop_pipe[2];
    struct MHD_Daemon *httpd;
    struct peer_table *peers; /* who may call, and their connections */
    pthread_mutex_t lock; /* guards the task table */
    struct task **tasks;  /* live and removed tasks; freed at exit only */
    size_t n_tasks;
    pthread_t sched;
    volatile int stopping;
    /* cluster mode (cluster.h): */
    pthread_t cluster, fence;
    int64_t *lease_ok_ms;  /* per task (same index): when its lease was last renewed
                            * (monotonic: a clock step must not fence, nor delay a fence) */
    char (*seen_dead)[128]; /* nodes found dead, when, and who takes which task */
    int64_t *seen_dead_ms;
    json_t **seen_assign;
    size_t n_dead;
    char (*failed_here)[128]; /* tasks whose take-over failed on this node */
    size_t n_failed;
    struct agent_takeover **restoring; /* take-overs whose restore runs now */
    size_t n_restoring;
    char (*starting)[72]; /* ids a run or restore request is starting now */
    size_t n_starting;
    atomic_int policy_jobs; /* periodic checkpoints running (agent_job) */
    /* metrics */
    uint64_t detections, takeovers, fences, renew_failures;
    double renew_s, detect_s, resume_s;
};

/* ---- task table ------------------------------------------------------------ */

static int agent_is_removed(struct task *t)
{
    json_t *j = task_json(t);
    int removed = !strcmp(json_string_value(json_object_get(j, "state")), "removed");
    json_decref(j);
    return removed;
}

/* The live task with this id, or NULL. */
static struct task *agent_find(struct agent *a, const char *id)
{
    struct task *found = NULL;
    pthread_mutex_lock(&a->lock);
    for (size_t i = 0; i < a->n_tasks && !found; i++)
        if (!strcmp(task_id(a->tasks[i]), id) && !agent_is_removed(a->tasks[i]))
            found = a->tasks[i];
    pthread_mutex_unlock(&a->lock);
    return found;
}

/* Reserves task id for a run or restore request, atomically with the check
 * that no task, take-over or other request has it: two requests for one id
 * at once never both start a VM. Each 0 is paired with agent_unreserve(). */
static int agent_reserve(struct agent *a, const char *id)
{
    int busy = 0;
    pthread_mutex_lock(&a->lock);
    for (size_t i = 0; i < a->n_tasks && !busy; i++)
        busy = !strcmp(task_id(a->tasks[i]), id) && !agent_is_removed(a->tasks[i]);
    for (size_t i = 0; i < a->n_restoring && !busy; i++)
        busy = !strcmp(a->restoring[i]->id, id);
    for (size_t i = 0; i < a->n_starting && !busy; i++)
        busy = !strcmp(a->starting[i], id);
    char(*ns)[72] = busy ? NULL : realloc(a->starting, (a->n_starting + 1) * sizeof(*ns));
    if (ns) {
        a->starting = ns;
        snprintf(a->starting[a->n_starting++], sizeof(*ns), "%s", id);
    }
    pthread_mutex_unlock(&a->lock);
    if (busy)
        return err_set(VK_EEXISTS, "task %s already exists on this node, or is being started, "
                                   "restored or taken over here", id);
    return ns ? 0 : err_set(VK_ENOMEM, "out of memory");
}

static void agent_unreserve(struct agent *a, const char *id)
{
    pthread_mutex_lock(&a->lock);
    for (size_t i = 0; i < a->n_starting; i++)
        if (!strcmp(a->starting[i], id)) {
            memcpy(a->starting[i], a->starting[--a->n_starting], sizeof(*a->starting));
            break;
        }
    pthread_mutex_unlock(&a->lock);
}

/* Whether task `id` of a dead node is being restored here (a take-over). */
static int agent_taking_over(struct agent *a, const char *id)
{
    int found = 0;
    pthread_mutex_lock(&a->lock);
    for (size_t i = 0; i < a->n_restoring && !found; i++)
        found = !strcmp(a->restoring[i]->id, id);
    pthread_mutex_unlock(&a->lock);
    return found;
}

static int agent_add(struct agent *a, struct task *t)
{
    pthread_mutex_lock(&a->lock);
    struct task **nt = realloc(a->tasks, (a->n_tasks + 1) * sizeof(*nt));
    int64_t *nl = nt ? realloc(a->lease_ok_ms, (a->n_tasks + 1) * sizeof(*nl)) : NULL;
    if (nt)
        a->tasks = nt;
    if (nl) {
        a->lease_ok_ms = nl;
        a->lease_ok_ms[a->n_tasks] = util_now_us() / 1000; /* its lease was just taken */
        a->tasks[a->n_tasks++] = t;
    }
    pthread_mutex_unlock(&a->lock);
    return nl ? 0 : err_set(VK_ENOMEM, "out of memory");
}

/* ---- cluster: leases ---------------------------------------------------------- */

/* Takes the task's lease for this node (cluster mode only): VK_EBUSY naming
 * the situation when another node holds it. */
static int agent_take_lease_fenced(struct agent *a, const char *id, struct store_fence *out)
{
    char name[192];
    if (!a->cfg->cluster)
        return 0;
    cluster_lease_name(id, name);
    int rc = store_lease_fenced(a->env.store, name, a->cfg->node, a->cfg->lease_ms, out);
    if (rc == VK_EBUSY)
        return err_set(VK_EBUSY, "task %s runs on another node (its lease %s is held): "
                                 "restore it there, or wait until that node's lease expires",
                       id, name);
    return rc < 0 ? err_wrap(rc, "task %s: cannot take its lease", id) : 0;
}

static int agent_take_lease(struct agent *a, const char *id)
{
    return agent_take_lease_fenced(a, id, NULL);
}

static void agent_drop_lease(struct agent *a, const char *id)
{
    char name[192];
    if (!a->cfg->cluster)
        return;
    cluster_lease_name(id, name);
    if (store_unlease(a->env.store, name, a->cfg->node) < 0)
        log_warn("task %s: cannot release its lease: %s", id, err_msg());
}

/* ---- HTTP plumbing ----------------------------------------------------------- */

struct agent_req {
    char *body;
    size_t len;
    int too_big;
};

static unsigned agent_http_status(int rc)
{
    switch (rc) {
    case VK_EINVAL: return 400;
    case VK_ENOTFOUND: return 404;
    case VK_EEXISTS:
    case VK_ESTATE:
    case VK_EBUSY: return 409;
    case VK_ECORRUPT: return 422;
    case VK_ENOSPC: return 507;
    case VK_EQEMU: return 502;
    default: return 500;
    }
}

/* Sends j (stolen) with status. */
static enum MHD_Result agent_send(struct MHD_Connection *c, unsigned status, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
    struct MHD_Response *r;
    enum MHD_Result ret;
    json_decref(j);
    if (!text) { /* never a success status with an error body */
        text = strdup("{\"error\": \"the reply could not be built\"}");
        status = 500;
    }
    if (!text)
        return MHD_NO;
    r = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, "Content-Type", "application/json");
    ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result agent_send_err(struct MHD_Connection *c, int rc)
{
    return agent_send(c, agent_http_status(rc),
                      json_pack("{s:s, s:s}", "error", err_msg(), "code", err_name(rc)));
}

/* ---- handlers ------------------------------------------------------------------ */

static const char *agent_jstr(json_t *j, const char *key)
{
    return json_string_value(json_object_get(j, key));
}

static int agent_jint(json_t *j, const char *key, int def)
{
    json_t *v = json_object_get(j, key);
    return json_is_integer(v) ? (int)json_integer_value(v) : def;
}

static enum MHD_Result agent_run(struct agent *a, struct MHD_Connection *c, json_t *body)
{
    const struct cfg *cfg = a->cfg;
    struct task_spec sp = {
        .id = agent_jstr(body, "id"),
        .kernel = agent_jstr(body, "kernel") ? agent_jstr(body, "kernel") : cfg->kernel,
        .initrd = agent_jstr(body, "initrd") ? agent_jstr(body, "initrd") : cfg->initrd,
        .base = agent_jstr(body, "base"),
        .work = agent_jstr(body, "work"),
        .accel = agent_jstr(body, "accel"),
        .mode = agent_jstr(body, "mode"),
        .memory_mib = agent_jint(body, "memory_mib", cfg->memory_mib),
        .vcpus = agent_jint(body, "vcpus", cfg->vcpus),
        .first_s = agent_jint(body, "checkpoint_first", cfg->first_s),
        .every_s = agent_jint(body, "checkpoint_every", cfg->every_s),
    };
    struct task *t = NULL;
    int rc = 0;

    if (sp.accel && strcmp(sp.accel, "kvm") && strcmp(sp.accel, "tcg"))
        return agent_send_err(c, err_set(VK_EINVAL, "accel must be kvm or tcg, not '%s'", sp.accel));
    if (sp.mode && strcmp(sp.mode, "cow") && strcmp(sp.mode, "stop-copy"))
        return agent_send_err(c, err_set(VK_EINVAL, "mode must be cow or stop-copy, not '%s'",
                                         sp.mode));
    if (sp.memory_mib < 16 || sp.vcpus < 1 || sp.first_s < 0 || sp.every_s < 0)
        return agent_send_err(c, err_set(VK_EINVAL, "memory must be >= 16 MiB, vcpus >= 1, "
                                                    "checkpoint times >= 0"));
    if (sp.id && (rc = agent_reserve(a, sp.id)) < 0)
        return agent_send_err(c, rc);
    int leased = sp.id && (rc = agent_take_lease(a, sp.id)) == 0;
    if (rc == 0)
        rc = task_run(&a->env, &sp, &t);
    if (rc == 0 && !sp.id && (rc = agent_take_lease(a, task_id(t))) < 0)
        task_remove(t);
    if (rc == 0)
        rc = agent_add(a, t);
    if (rc < 0 && leased)
        agent_drop_lease(a, sp.id);
    if (sp.id)
        agent_unreserve(a, sp.id);
    return rc < 0 ? agent_send_err(c, rc) : agent_send(c, 201, task_json(t));
}

static enum MHD_Result agent_list(struct agent *a, struct MHD_Connection *c)
{
    json_t *arr = json_array();
    pthread_mutex_lock(&a->lock);
    for (size_t i = 0; i < a->n_tasks; i++) {
        json_t *j = task_json(a->tasks[i]);
        if (strcmp(json_string_value(json_object_get(j, "state")), "removed") != 0)
            json_array_append(arr, j);
        json_decref(j);
    }
    pthread_mutex_unlock(&a->lock);
    return agent_send(c, 200, json_pack("{s:o, s:s, s:s, s:b, s:s}", "tasks", arr, "store",
                                        store_uri(a->env.store), "state_dir", a->cfg->state_dir,
                                        "cluster", a->cfg->cluster, "node", a->cfg->node));
}

/* Newest checkpoint first; a damaged or incomplete one is skipped (and
 * logged) for the one before it. Only when the user asks for it. */
static int agent_restore_intact(struct agent *a, struct task *t, const char *id,
                                const char *accel, struct task **out)
{
    uint64_t *seqs = NULL;
    size_t n = 0;
    int rc = ckpt_list(a->env.store, id, &seqs, &n);
    if (rc == 0 && n == 0)
        rc = err_set(VK_ENOTFOUND, "task %s has no checkpoint in store %s", id, a->env.store->uri);
    for (size_t i = n; rc == 0 && i > 0; i--) {
        rc = task_restore(&a->env, t, id, seqs[i - 1], accel, out);
        if (rc == 0 || (rc != VK_ECORRUPT && rc != VK_ENOTFOUND))
            break;
        log_warn("task %s: checkpoint %" PRIu64 " cannot be restored (%s)%s", id, seqs[i - 1],
                 err_msg(), i > 1 ? "; trying the one before" : "");
        if (i > 1)
            rc = 0;
    }
    free(seqs);
    return rc;
}

static enum MHD_Result agent_restore(struct agent *a, struct MHD_Connection *c, const char *id,
                                     json_t *body)
{
    struct task *t = agent_find(a, id), *out = NULL;
    json_int_t seq = json_integer_value(json_object_get(body, "seq"));
    int rc;
    if (!t && (rc = agent_reserve(a, id)) < 0) /* a new task here: one request makes it */
        return agent_send_err(c, rc);
    if ((rc = agent_take_lease(a, id)) < 0) {
        if (!t)
            agent_unreserve(a, id);
        return agent_send_err(c, rc);
    }
    if (seq == 0 && json_is_true(json_object_get(body, "latest_intact")))
        rc = agent_restore_intact(a, t, id, agent_jstr(body, "accel"), &out);
    else
        rc = task_restore(&a->env, t, id, (uint64_t)seq, agent_jstr(body, "accel"), &out);
    if (rc == 0 && !t)
        rc = agent_add(a, out);
    if (rc < 0 && !t)
        agent_drop_lease(a, id);
    if (!t)
        agent_unreserve(a, id);
    return rc < 0 ? agent_send_err(c, rc) : agent_send(c, 200, task_json(out));
}

static enum MHD_Result agent_checkpoints(struct agent *a, struct MHD_Connection *c,
                                         const char *id)
{
    uint64_t *seqs = NULL;
    size_t n = 0;
    json_t *arr = json_array();
    int rc = ckpt_list(a->env.store, id, &seqs, &n);
    if (rc < 0) {
        json_decref(arr);
        return agent_send_err(c, rc);
    }
    for (size_t i = 0; i < n; i++) {
        struct manifest *m = NULL;
        if (ckpt_load(a->env.store, id, seqs[i], &m) == 0)
            json_array_append_new(arr, manifest_summary(m));
        else
            json_array_append_new(arr, json_pack("{s:I, s:s}", "seq", (json_int_t)seqs[i],
                                                 "error", err_msg()));
        manifest_free(m);
    }
    free(seqs);
    return agent_send(c, 200, json_pack("{s:s, s:o}", "task", id, "checkpoints", arr));
}

static enum MHD_Result agent_show(struct agent *a, struct MHD_Connection *c, const char *id,
                                  uint64_t seq)
{
    struct manifest *m = NULL;
    int rc = ckpt_load(a->env.store, id, seq, &m);
    json_t *j;
    if (rc < 0)
        return agent_send_err(c, rc);
    j = manifest_to_json(m);
    json_object_set_new(j, "summary", manifest_summary(m));
    manifest_free(m);
    return agent_send(c, 200, j);
}

static void agent_report(void *arg, const char *msg)
{
    json_array_append_new((json_t *)arg, json_string(msg));
}

/* Reads back checkpoint seq of task id: {task, seq, ok, problems} (new reference). */
static json_t *agent_verify_one(struct agent *a, const char *id, uint64_t seq)
{
    struct manifest *m = NULL;
    json_t *problems = json_array();
    if (ckpt_load(a->env.store, id, seq, &m) < 0)
        agent_report(problems, err_msg());
    else
        ckpt_verify(a->env.repo, m, agent_report, problems);
    manifest_free(m);
    return json_pack("{s:s, s:I, s:b, s:o}", "task", id, "seq", (json_int_t)seq, "ok",
                     json_array_size(problems) == 0, "problems", problems);
}

static enum MHD_Result agent_verify(struct agent *a, struct MHD_Connection *c, const char *id,
                                    uint64_t seq)
{
    uint64_t *seqs = NULL;
    size_t n = 0;
    json_t *res = json_array();
    int rc = 0;

    if (seq) {
        seqs = malloc(sizeof(*seqs));
        if (seqs)
            seqs[n++] = seq;
    } else {
        rc = ckpt_list(a->env.store, id, &seqs, &n);
    }
    for (size_t i = 0; rc == 0 && i < n; i++)
        json_array_append_new(res, agent_verify_one(a, id, seqs[i]));
    free(seqs);
    if (rc < 0) {
        json_decref(res);
        return agent_send_err(c, rc);
    }
    if (n == 0) {
        json_decref(res);
        return agent_send_err(c, err_set(VK_ENOTFOUND, "task %s has no checkpoint in %s", id,
                                         a->env.store->uri));
    }
    return agent_send(c, 200, json_pack("{s:s, s:o}", "task", id, "checkpoints", res));
}

static int agent_collect_task(void *arg, const char *name, uint64_t size, int64_t mtime)
{
    char task[128];
    const char *p = name + 6, *slash = strchr(p, '/');
    (void)size;
    (void)mtime;
    if (!manifest_seq_of(name) || !slash || (size_t)(slash - p) >= sizeof(task))
        return 0;
    snprintf(task, sizeof(task), "%.*s", (int)(slash - p), p);
    json_t *set = arg;
    json_object_set_new(set, task, json_true());
    return 0;
}

/* Every checkpoint of every task in the store. */
static enum MHD_Result agent_verify_all(struct agent *a, struct MHD_Connection *c)
{
    json_t *tasks = json_object(), *res = json_array(), *v;
    const char *id;
    int rc = store_list(a->env.store, "tasks/", agent_collect_task, tasks);
    json_object_foreach(tasks, id, v)
    {
        uint64_t *seqs = NULL;
        size_t n = 0;
        if (ckpt_list(a->env.store, id, &seqs, &n) < 0)
            continue;
        for (size_t i = 0; i < n; i++)
            json_array_append_new(res, agent_verify_one(a, id, seqs[i]));
        free(seqs);
    }
    json_decref(tasks);
    if (rc < 0) {
        json_decref(res);
        return agent_send_err(c, rc);
    }
    return agent_send(c, 200, json_pack("{s:o}", "checkpoints", res));
}

static enum MHD_Result agent_gc(struct agent *a, struct MHD_Connection *c, json_t *body)
{
    struct gc_result g;
    int grace = agent_jint(body, "grace", a->cfg->gc_grace_s);
    int rc = gc_run(a->env.repo, grace, &g);
    return rc < 0 ? agent_send_err(c, rc) : agent_send(c, 200, gc_result_json(&g));
}

static enum MHD_Result agent_task_op(struct agent *a, struct MHD_Connection *c,
                                     const struct api_req *q)
{
    struct task *t = agent_find(a, q->id);
    uint64_t seq = 0;
    int rc;

    if (!t)
        return agent_send_err(c, err_set(VK_ENOTFOUND, "no task '%s' on this node", q->id));
    switch (q->op) {
    case API_TASK_SHOW:
        return agent_send(c, 200, task_json(t));
    case API_TASK_REMOVE:
        rc = task_remove(t);
        if (rc == 0)
            agent_drop_lease(a, q->id);
        return rc < 0 ? agent_send_err(c, rc)
                      : agent_send(c, 200, json_pack("{s:s}", "removed", q->id));
    case API_CHECKPOINT:
        rc = task_checkpoint(t, agent_jstr(q->body, "mode"), &seq);
        return rc < 0 ? agent_send_err(c, rc)
                      : agent_send(c, 202, json_pack("{s:s, s:I}", "task", q->id, "seq",
                                                     (json_int_t)seq));
    default: /* API_KILL */
        rc = task_kill(t);
        return rc < 0 ? agent_send_err(c, rc) : agent_send(c, 200, task_json(t));
    }
}

static enum MHD_Result agent_nodes(struct agent *a, struct MHD_Connection *c);
static enum MHD_Result agent_metrics(struct agent *a, struct MHD_Connection *c, int as_json);

static enum MHD_Result agent_dispatch(struct agent *a, struct MHD_Connection *c,
                                      const struct api_req *q)
{
    switch (q->op) {
    case API_LIST: return agent_list(a, c);
    case API_RUN: return agent_run(a, c, q->body);
    case API_VERIFY_ALL: return agent_verify_all(a, c);
    case API_GC: return agent_gc(a, c, q->body);
    case API_NODES: return agent_nodes(a, c);
    case API_METRICS_JSON: return agent_metrics(a, c, 1);
    case API_METRICS: return agent_metrics(a, c, 0);
    case API_RESTORE: return agent_restore(a, c, q->id, q->body);
    case API_CHECKPOINTS: return agent_checkpoints(a, c, q->id);
    case API_CKPT_SHOW: return agent_show(a, c, q->id, q->seq);
    case API_CKPT_VERIFY: return agent_verify(a, c, q->id, q->seq);
    case API_TASK_VERIFY: return agent_verify(a, c, q->id, 0);
    default: return agent_task_op(a, c, q);
    }
}

static int agent_caller_ok(struct agent *a, struct MHD_Connection *c);

static enum MHD_Result agent_handler(void *cls, struct MHD_Connection *c, const char *url,
                                     const char *method, const char *version,
                                     const char *upload_data, size_t *upload_size, void **ctx)
{
    struct agent *a = cls;
    struct agent_req *req = *ctx;
    enum MHD_Result ret;
    (void)version;

    if (!req) { /* headers in: the caller is checked before any body is read */
        if (!agent_caller_ok(a, c))
            return agent_send(c, 403, json_pack("{s:s}", "error", err_msg()));
        req = calloc(1, sizeof(*req));
        *ctx = req;
        return req ? MHD_YES : MHD_NO;
    }
    if (*upload_size) {
        if (req->len + *upload_size > API_MAX_BODY) {
            req->too_big = 1;
        } else {
            char *nb = realloc(req->body, req->len + *upload_size + 1);
            if (!nb)
                return MHD_NO;
            req->body = nb;
            memcpy(req->body + req->len, upload_data, *upload_size);
            req->len += *upload_size;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    err_clear();
    struct api_req q;
    int rc = api_parse(method, url, req->body, req->too_big ? API_MAX_BODY + 1 : req->len, &q);
    if (rc < 0)
        return agent_send_err(c, rc);
    ret = agent_dispatch(a, c, &q);
    api_req_clear(&q);
    return ret;
}

static void agent_done(void *cls, struct MHD_Connection *c, void **ctx,
                       enum MHD_RequestTerminationCode code)
{
    struct agent_req *req = *ctx;
    (void)cls;
    (void)c;
    (void)code;
    if (req) {
        free(req->body);
        free(req);
    }
    *ctx = NULL;
}

/* ---- scheduler --------------------------------------------------------------- */

/* A periodic checkpoint, on a thread of its own; counted in a->policy_jobs
 * until it returns, so that the agent frees no task one still uses. */
struct agent_job {
    struct agent *a;
    struct task *t;
};

static void *agent_policy_checkpoint(void *arg)
{
    struct agent_job *job = arg;
    uint64_t seq;
    if (task_checkpoint(job->t, NULL, &seq) < 0)
        log_error("task %s: periodic checkpoint failed: %s", task_id(job->t), err_msg());
    atomic_fetch_sub(&job->a->policy_jobs, 1);
    free(job);
    return NULL;
}

static void agent_start_policy_checkpoint(struct agent *a, struct task *t)
{
    struct agent_job *job = malloc(sizeof(*job));
    pthread_t th;
    if (!job) {
        log_error("task %s: out of memory for its periodic checkpoint", task_id(t));
        return;
    }
    *job = (struct agent_job){.a = a, .t = t};
    atomic_fetch_add(&a->policy_jobs, 1);
    if (pthread_create(&th, NULL, agent_policy_checkpoint, job) != 0) {
        atomic_fetch_sub(&a->policy_jobs, 1);
        free(job);
        log_error("task %s: cannot start a thread for its periodic checkpoint", task_id(t));
        return;
    }
    pthread_detach(th);
}

static void *agent_sched(void *arg)
{
    struct agent *a = arg;
    while (!a->stopping) {
        pthread_mutex_lock(&a->lock);
        size_t n = a->n_tasks;
        struct task **copy = malloc((n ? n : 1) * sizeof(*copy));
        if (copy && n)
            memcpy(copy, a->tasks, n * sizeof(*copy));
        pthread_mutex_unlock(&a->lock);
        for (size_t i = 0; copy && i < n && !a->stopping; i++)
            if (task_poll(copy[i]))
                agent_start_policy_checkpoint(a, copy[i]);
        free(copy);
        usleep(100000);
    }
    return NULL;
}


/* ---- cluster: heartbeats, renewal, fencing, take-over ------------------------------ */

static int agent_task_running(struct task *t)
{
    json_t *j = task_json(t);
    int running = !strcmp(json_string_value(json_object_get(j, "state")), "running");
    json_decref(j);
    return running;
}

/* A snapshot of the task table: live tasks and the index of each. */
static size_t agent_snapshot(struct agent *a, struct task ***out, size_t **idx)
{
    size_t k = 0;
    pthread_mutex_lock(&a->lock);
    *out = malloc((a->n_tasks + 1) * sizeof(**out));
    *idx = malloc((a->n_tasks + 1) * sizeof(**idx));
    for (size_t i = 0; *out && *idx && i < a->n_tasks; i++)
        if (!agent_is_removed(a->tasks[i])) {
            (*out)[k] = a->tasks[i];
            (*idx)[k++] = i;
        }
    pthread_mutex_unlock(&a->lock);
    return k;
}

/* Whether the fence process named in pidf ("PID START") runs: that pid, and
 * started when noted (a pid alone may since belong to another process; an
 * empty or damaged file would have been kill(0, 0), which always succeeds). */
static int agent_fence_runs(const char *pidf)
{
    char *text = NULL;
    size_t len = 0;
    long pid = 0;
    unsigned long long start = 0;
    int runs = util_read_file(pidf, &text, &len) == 0 &&
               sscanf(text, "%ld %llu", &pid, &start) == 2 && pid > 1 && pid < INT32_MAX &&
               start != 0 && util_proc_start((pid_t)pid) == start;
    free(text);
    err_clear();
    return runs;
}

/* A fence per VM that does not need the agent: a process of its own (forked
 * twice, its own session, no inherited descriptors) kills the VM when the
 * time in RUN_DIR/lease.ok (CLOCK_MONOTONIC ms, one clock for every
 * process of the host that never steps: when the last renewal that succeeded
 * started) is more than lease_ms - renew_ms ago. The agent writes it
 * at every renewal. So a VM outlives neither a dead or stalled agent nor a
 * cut-off store by more than its lease, whatever the wall clock does. Its pid
 * is in RUN_DIR/fence.pid; one per VM. Returns 1 when the task's VM runs. */
static int agent_touch_fence(struct agent *a, struct task *t, int64_t renewed_mono_ms)
{
    json_t *j = task_json(t);
    const char *run_dir = json_string_value(json_object_get(j, "run_dir"));
    pid_t qpid = (pid_t)json_integer_value(json_object_get(j, "pid"));
    int running = !strcmp(json_string_value(json_object_get(j, "state")), "running");
    char *ok = run_dir ? util_fmt("%s/lease.ok", run_dir) : NULL;
    char *pidf = run_dir ? util_fmt("%s/fence.pid", run_dir) : NULL;
    char *logf = run_dir ? util_fmt("%s/fence.log", run_dir) : NULL;
    int64_t limit_ms = a->cfg->lease_ms - a->cfg->renew_ms;
    char *msg = util_fmt("fence: killed VM %d of task %s: its lease was not renewed for %d ms\n",
                         (int)qpid, task_id(t), (int)limit_ms);
    json_decref(j);
    if (!ok || !pidf || !logf || !msg || !running || qpid <= 0)
        goto out;
    char stamp[24];
    snprintf(stamp, sizeof(stamp), "%019lld\n", (long long)renewed_mono_ms);
    int fd = open(ok, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0) { /* one small write in place: a reader sees the old or the new */
        (void)!pwrite(fd, stamp, 20, 0);
        close(fd);
    }
    if (agent_fence_runs(pidf))
        goto out;
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0)
        goto out;
    pid_t child = fork();
    if (child == 0) { /* only async-signal-safe calls from here */
        pid_t g = fork();
        if (g != 0) {
            if (g > 0)
                (void)!write(pfd[1], &g, sizeof(g));
            _exit(0);
        }
        setsid();
        for (int fdn = 3; fdn < 4096; fdn++)
            close(fdn); /* the agent's lock and socket must not live on here */
        for (;;) {
            struct timespec nap = {0, 100 * 1000 * 1000};
            char buf[24];
            if (kill(qpid, 0) < 0)
                _exit(0);
            int of = open(ok, O_RDONLY | O_CLOEXEC);
            ssize_t got = of >= 0 ? pread(of, buf, 20, 0) : -1;
            if (of >= 0)
                close(of);
            int64_t stamp = 0;
            for (ssize_t i = 0; i < got && buf[i] >= '0' && buf[i] <= '9'; i++)
                stamp = stamp * 10 + (buf[i] - '0'); /* (no strtoll: async-signal-safe only) */
            int64_t age = got == 20 ? util_now_us() / 1000 - stamp : INT64_MAX;
            if (age > limit_ms) {
                kill(qpid, SIGKILL);
                int lf = open(logf, O_WRONLY | O_CREAT | O_APPEND, 0600);
                if (lf >= 0) {
                    (void)!write(lf, msg, strlen(msg));
                    close(lf);
                }
                _exit(0);
            }
            nanosleep(&nap, NULL);
        }
    }
    close(pfd[1]);
    if (child > 0) {
        pid_t g = 0;
        if (read(pfd[0], &g, sizeof(g)) == (ssize_t)sizeof(g)) {
            char buf[64];
            snprintf(buf, sizeof(buf), "%d %llu\n", (int)g,
                     (unsigned long long)util_proc_start(g));
            util_write_file_atomic(pidf, buf, strlen(buf));
            log_info("task %s: fence process %d watches VM %d (lease %d ms)", task_id(t), (int)g,
                     (int)qpid, a->cfg->lease_ms);
        }
        waitpid(child, NULL, 0);
    }
    close(pfd[0]);
out:
    free(ok);
    free(pidf);
    free(logf);
    free(msg);
    return running && qpid > 0;
}

static int agent_json_has(json_t *strings, const char *s)
{
    size_t i;
    json_t *v;
    json_array_foreach(strings, i, v)
    {
        if (json_is_string(v) && !strcmp(json_string_value(v), s))
            return 1;
    }
    return 0;
}

/* Renews the leases of the tasks being restored here (take-overs), which
 * count as this node's in its heartbeat: should this node die now, they
 * are taken over again. */
static void agent_renew_restoring(struct agent *a, json_t *ids)
{
    pthread_mutex_lock(&a->lock);
    size_t n = a->n_restoring;
    char(*v)[128] = n ? malloc(n * sizeof(*v)) : NULL;
    for (size_t i = 0; v && i < n; i++)
        memcpy(v[i], a->restoring[i]->id, sizeof(v[i]));
    pthread_mutex_unlock(&a->lock);
    for (size_t i = 0; v && i < n; i++) {
        char name[192];
        cluster_lease_name(v[i], name);
        int rc = store_lease(a->env.store, name, a->cfg->node, a->cfg->lease_ms);
        if (rc == 0) {
            if (!agent_json_has(ids, v[i])) /* added to the table since the copy */
                json_array_append_new(ids, json_string(v[i]));
            continue;
        }
        if (rc != VK_EBUSY) {
            a->renew_failures++;
            log_warn("task %s: cannot renew its lease during its restore: %s", v[i], err_msg());
            continue;
        }
        pthread_mutex_lock(&a->lock);
        for (size_t k = 0; k < a->n_restoring; k++)
            if (!strcmp(a->restoring[k]->id, v[i]))
                a->restoring[k]->lost = 1;
        pthread_mutex_unlock(&a->lock);
    }
    free(v);
}

/* Renews the lease of every task of this node; a task another node holds
 * was taken over while this node was cut off: its copy here is stopped. */
static void agent_renew(struct agent *a, json_t *ids, int *running)
{
    struct task **v = NULL;
    size_t *idx = NULL, n = agent_snapshot(a, &v, &idx);
    for (size_t k = 0; k < n; k++) {
        char name[192];
        const char *id = task_id(v[k]);
        cluster_lease_name(id, name);
        /* The lease runs from before the call that renewed it: a stall after
         * the store wrote it must shorten the fence's time, never lengthen it. */
        int64_t before = util_now_us() / 1000;
        int rc = store_lease(a->env.store, name, a->cfg->node, a->cfg->lease_ms);
        if (rc == 0) {
            pthread_mutex_lock(&a->lock);
            a->lease_ok_ms[idx[k]] = before;
            pthread_mutex_unlock(&a->lock);
            json_array_append_new(ids, json_string(id));
            *running += agent_touch_fence(a, v[k], before);
        } else if (rc == VK_EBUSY) {
            log_warn("task %s: another node holds its lease (it was taken over while this node "
                     "could not renew it): stopping and forgetting the copy here", id);
            task_kill(v[k]);
            task_remove(v[k]);
        } else {
            a->renew_failures++;
            log_warn("task %s: cannot renew its lease: %s", id, err_msg());
        }
    }
    free(v);
    free(idx);
    agent_renew_restoring(a, ids);
}

/* Kills the VM of every task whose lease was not renewed in time: before it
 * expires, so that no other node can have started its copy yet. Runs on its
 * own thread, so that a store call that hangs does not delay it. */
static void *agent_fence(void *arg)
{
    struct agent *a = arg;
    while (!a->stopping) {
        struct task **v = NULL;
        size_t *idx = NULL, n = agent_snapshot(a, &v, &idx);
        int64_t now = util_now_us() / 1000;
        for (size_t k = 0; k < n; k++) {
            pthread_mutex_lock(&a->lock);
            int64_t ok = a->lease_ok_ms[idx[k]];
            pthread_mutex_unlock(&a->lock);
            if (now - ok > a->cfg->lease_ms - a->cfg->renew_ms && agent_task_running(v[k])) {
                log_error("task %s: lease not renewed for %" PRId64 " ms (it expires after %d): "
                          "killing its VM so that it never runs twice",
                          task_id(v[k]), now - ok, a->cfg->lease_ms);
                task_kill(v[k]);
                a->fences++;
            }
        }
        free(v);
        free(idx);
        usleep(100000);
    }
    return NULL;
}

/* When node nd was first found dead (noting it now if new), and (*assign)
 * which node takes each of its tasks first: decided once, from the
 * heartbeats of that moment, so that take-overs do not shift it. */
static int64_t agent_seen_dead(struct agent *a, const struct cluster_node *nd,
                               const struct cluster_node *v, size_t n, int64_t now,
                               json_t **assign)
{
    for (size_t i = 0; i < a->n_dead; i++)
        if (!strcmp(a->seen_dead[i], nd->name)) {
            *assign = a->seen_assign[i];
            return a->seen_dead_ms[i];
        }
    size_t m = a->n_dead + 1;
    char(*nn)[128] = realloc(a->seen_dead, m * sizeof(*nn));
    if (nn)
        a->seen_dead = nn;
    int64_t *nm = nn ? realloc(a->seen_dead_ms, m * sizeof(*nm)) : NULL;
    if (nm)
        a->seen_dead_ms = nm;
    json_t **na = nm ? realloc(a->seen_assign, m * sizeof(*na)) : NULL;
    if (!na) {
        *assign = NULL;
        return now;
    }
    a->seen_assign = na;
    json_t *as = json_array();
    for (size_t k = 0; k < json_array_size(nd->tasks); k++) {
        char to[128];
        cluster_assign(v, n, now, k, to);
        json_array_append_new(as, json_string(to));
    }
    snprintf(a->seen_dead[a->n_dead], 128, "%s", nd->name);
    a->seen_dead_ms[a->n_dead] = now;
    a->seen_assign[a->n_dead++] = as;
    *assign = as;
    a->detections++;
    a->detect_s = (double)(now - nd->renewed_ms) / 1e3;
    char *what = json_dumps(nd->tasks, JSON_COMPACT), *who = json_dumps(as, JSON_COMPACT);
    log_warn("node %s is dead: no heartbeat for %" PRId64 " ms (lease %d ms); its tasks %s go "
             "first to %s",
             nd->name, now - nd->renewed_ms, nd->lease_ms, what ? what : "?", who ? who : "?");
    free(what);
    free(who);
    return now;
}

static void agent_forget_dead(struct agent *a, const char *node)
{
    for (size_t i = 0; i < a->n_dead; i++)
        if (!strcmp(a->seen_dead[i], node)) {
            json_decref(a->seen_assign[i]);
            a->seen_assign[i] = a->seen_assign[a->n_dead - 1];
            a->seen_dead_ms[i] = a->seen_dead_ms[a->n_dead - 1];
            memcpy(a->seen_dead[i], a->seen_dead[a->n_dead - 1], 128);
            a->n_dead--;
            log_info("node %s is alive again", node);
            return;
        }
}
/* Whether task `id` failed to restore here, or is being restored or started
 * here (a take-over then leaves it alone). */
static int agent_taking_or_failed(struct agent *a, const char *id)
{
    int found = 0;
    pthread_mutex_lock(&a->lock);
    for (size_t i = 0; i < a->n_failed && !found; i++)
        found = !strcmp(a->failed_here[i], id);
    for (size_t i = 0; i < a->n_starting && !found; i++)
        found = !strcmp(a->starting[i], id);
    pthread_mutex_unlock(&a->lock);
    return found || agent_taking_over(a, id);
}

/* Ends take-over tk (frees it); failed: remember not to try it here again. */
static void agent_takeover_end(struct agent_takeover *tk, int failed)
{
    struct agent *a = tk->a;
    pthread_mutex_lock(&a->lock);
    for (size_t i = 0; i < a->n_restoring; i++)
        if (a->restoring[i] == tk) {
            a->restoring[i] = a->restoring[--a->n_restoring];
            break;
        }
    if (failed) {
        char(*nf)[128] = realloc(a->failed_here, (a->n_failed + 1) * sizeof(*nf));
        if (nf) {
            a->failed_here = nf;
            snprintf(a->failed_here[a->n_failed++], 128, "%s", tk->id);
        }
    }
    pthread_mutex_unlock(&a->lock);
    free(tk);
}

static void *agent_takeover_run(void *arg)
{
    struct agent_takeover *tk = arg;
    struct agent *a = tk->a;
    struct task *out = NULL;
    int64_t t0 = util_wall_us() / 1000;
    log_info("task %s of dead node %s: lease taken, restoring its newest checkpoint", tk->id,
             tk->from);
    int rc = agent_restore_intact(a, NULL, tk->id, NULL, &out);
    pthread_mutex_lock(&a->lock);
    int lost = tk->lost;
    pthread_mutex_unlock(&a->lock);
    if (rc == 0 && lost) {
        log_error("task %s: another node took its lease during the restore here: stopping the "
                  "copy here", tk->id);
        task_kill(out);
        task_remove(out);
        task_free(out);
        agent_takeover_end(tk, 0);
        return NULL;
    }
    if (rc == 0 && (rc = agent_add(a, out)) < 0)
        task_free(out);
    int64_t t1 = util_wall_us() / 1000;
    if (rc < 0) {
        log_error("task %s: take-over failed here (%s); leaving it to another node", tk->id,
                  err_msg());
        agent_drop_lease(a, tk->id);
        agent_takeover_end(tk, 1);
        return NULL;
    }
    pthread_mutex_lock(&a->lock);
    a->takeovers++;
    a->resume_s = (double)(t1 - tk->seen_ms) / 1e3;
    pthread_mutex_unlock(&a->lock);
    log_info("task %s of dead node %s runs here: crash to detection <= %" PRId64
             " ms (last heartbeat to detection), detection to running %" PRId64
             " ms (restore %" PRId64 " ms)",
             tk->id, tk->from, tk->seen_ms - tk->from_renewed_ms, t1 - tk->seen_ms, t1 - t0);
    agent_takeover_end(tk, 0);
    return NULL;
}

/* Starts restoring task `id` of dead node `nd` here, if this node gets its
 * lease: 1 when it did. */
static int agent_take_over(struct agent *a, const struct cluster_node *nd, const char *id,
                           int64_t seen_ms)
{
    char name[192];
    cluster_lease_name(id, name);
    if (agent_find(a, id) || agent_taking_or_failed(a, id) ||
        store_lease(a->env.store, name, a->cfg->node, a->cfg->lease_ms) < 0)
        return 0; /* ours, being restored, failed here, held by another node, or not expired */
    struct agent_takeover *tk = calloc(1, sizeof(*tk));
    struct agent_takeover **nr = NULL;
    pthread_t th;
    pthread_attr_t attr;
    if (tk) {
        tk->a = a;
        snprintf(tk->id, sizeof(tk->id), "%s", id);
        snprintf(tk->from, sizeof(tk->from), "%s", nd->name);
        tk->from_renewed_ms = nd->renewed_ms;
        tk->seen_ms = seen_ms;
        pthread_mutex_lock(&a->lock);
        nr = realloc(a->restoring, (a->n_restoring + 1) * sizeof(*nr));
        if (nr) {
            a->restoring = nr;
            a->restoring[a->n_restoring++] = tk;
        }
        pthread_mutex_unlock(&a->lock);
    }
    if (!nr) {
        free(tk);
        log_error("task %s: out of memory for its take-over; leaving it to another node", id);
        agent_drop_lease(a, id);
        return 0;
    }
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&th, &attr, agent_takeover_run, tk) != 0) {
        log_error("task %s: cannot start a thread for its take-over; leaving it to another node", id);
        agent_drop_lease(a, id);
        agent_takeover_end(tk, 1);
        pthread_attr_destroy(&attr);
        return 0;
    }
    pthread_attr_destroy(&attr);
    return 1;
}

static void agent_watch(struct agent *a)
{
    struct cluster_node *v = NULL;
    size_t n = 0;
    int64_t now = util_wall_us() / 1000;
    if (cluster_nodes(a->env.store, &v, &n) < 0)
        return;
    for (size_t i = 0; i < n && !a->stopping; i++) {
        if (!strcmp(v[i].name, a->cfg->node))
            continue;
        if (cluster_state_of(&v[i], now) != CLUSTER_DEAD) {
            agent_forget_dead(a, v[i].name);
            continue;
        }
        json_t *assign = NULL;
        int64_t seen = agent_seen_dead(a, &v[i], v, n, now, &assign);
        size_t k;
        json_t *id;
        json_array_foreach(v[i].tasks, k, id)
        {
            /* Each task has a node it goes to first; any other node takes it
             * only if that one has not within a lease. */
            const char *to = json_string_value(json_array_get(assign, k));
            if (to && strcmp(to, a->cfg->node) != 0 && now - seen < a->cfg->lease_ms)
                continue;
            if (json_is_string(id))
                agent_take_over(a, &v[i], json_string_value(id), seen);
        }
    }
    cluster_nodes_free(v, n);
}

static void *agent_cluster(void *arg)
{
    struct agent *a = arg;
    while (!a->stopping) {
        int64_t t0 = util_now_us();
        json_t *ids = json_array();
        int running = 0;
        agent_renew(a, ids, &running);
        a->renew_s = (double)(util_now_us() - t0) / 1e6;
        if (cluster_beat(a->env.store, a->cfg->node, a->cfg->lease_ms, a->cfg->renew_ms, ids,
                         running) < 0)
            log_warn("cannot write this node's heartbeat: %s", err_msg());
        json_decref(ids);
        agent_watch(a);
        for (int64_t left = a->cfg->renew_ms * 1000 - (util_now_us() - t0);
             left > 0 && !a->stopping; left -= 50000)
            usleep(left < 50000 ? (useconds_t)left : 50000);
    }
    return NULL;
}

/* GET /v1/nodes: every node and where every task runs. */
static enum MHD_Result agent_nodes(struct agent *a, struct MHD_Connection *c)
{
    struct cluster_node *v = NULL;
    size_t n = 0;
    int64_t now = util_wall_us() / 1000;
    if (!a->cfg->cluster)
        return agent_send_err(c, err_set(VK_ESTATE, "this agent is not in cluster mode "
                                                    "([cluster] enabled = 1)"));
    int rc = cluster_nodes(a->env.store, &v, &n);
    if (rc < 0)
        return agent_send_err(c, rc);
    json_t *nodes = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(
            nodes, json_pack("{s:s, s:s, s:I, s:i, s:i, s:I, s:O}", "node", v[i].name, "state",
                             cluster_state_name(cluster_state_of(&v[i], now)), "age_ms",
                             (json_int_t)(now - v[i].renewed_ms), "lease_ms", v[i].lease_ms,
                             "running", v[i].running, "memory_free_mib",
                             (json_int_t)v[i].memory_free_mib, "tasks", v[i].tasks));
    cluster_nodes_free(v, n);
    return agent_send(c, 200, json_pack("{s:s, s:o}", "node", a->cfg->node, "nodes", nodes));
}

/* One gauge per task, from a field of its last checkpoint divided by scale. */
static void agent_task_gauge(FILE *f, struct task **v, size_t n, const char *metric,
                             const char *help, const char *field, double scale)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s gauge\n", metric, help, metric);
    for (size_t k = 0; k < n; k++) {
        json_t *j = task_json(v[k]), *x = json_object_get(json_object_get(j, "last_checkpoint"), field);
        if (json_is_integer(x))
            fprintf(f, "%s{task=\"%s\"} %.12g\n", metric, task_id(v[k]),
                    (double)json_integer_value(x) / scale);
        json_decref(j);
    }
}

/* The metrics in Prometheus' text format. */
static char *agent_metrics_text(struct agent *a)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    struct task **v = NULL;
    size_t *idx = NULL, n = agent_snapshot(a, &v, &idx);
    if (!f) {
        free(v);
        free(idx);
        return NULL;
    }
    agent_task_gauge(f, v, n, "vmckpt_checkpoint_stop_seconds",
                     "VM stop time of the task's last checkpoint", "stopped_us", 1e6);
    agent_task_gauge(f, v, n, "vmckpt_checkpoint_upload_bytes",
                     "bytes the task's last checkpoint added to the store", "uploaded_bytes", 1);
    agent_task_gauge(f, v, n, "vmckpt_checkpoint_upload_seconds",
                     "time to store the task's last checkpoint", "store_us", 1e6);
    fprintf(f,
            "# HELP vmckpt_tasks tasks on this node\n# TYPE vmckpt_tasks gauge\n"
            "vmckpt_tasks %zu\n"
            "# HELP vmckpt_lease_renew_seconds time the last round of lease renewals took\n"
            "# TYPE vmckpt_lease_renew_seconds gauge\nvmckpt_lease_renew_seconds %.6f\n"
            "# HELP vmckpt_lease_renew_failures_total lease renewals that failed\n"
            "# TYPE vmckpt_lease_renew_failures_total counter\n"
            "vmckpt_lease_renew_failures_total %llu\n"
            "# HELP vmckpt_detections_total nodes this node found dead\n"
            "# TYPE vmckpt_detections_total counter\nvmckpt_detections_total %llu\n"
            "# HELP vmckpt_detection_seconds last heartbeat of the last dead node to its detection\n"
            "# TYPE vmckpt_detection_seconds gauge\nvmckpt_detection_seconds %.3f\n"
            "# HELP vmckpt_takeovers_total tasks of dead nodes resumed here\n"
            "# TYPE vmckpt_takeovers_total counter\nvmckpt_takeovers_total %llu\n"
            "# HELP vmckpt_takeover_seconds detection to running, last take-over\n"
            "# TYPE vmckpt_takeover_seconds gauge\nvmckpt_takeover_seconds %.3f\n"
            "# HELP vmckpt_fences_total VMs killed here because their lease could not be renewed\n"
            "# TYPE vmckpt_fences_total counter\nvmckpt_fences_total %llu\n",
            n, a->renew_s, (unsigned long long)a->renew_failures,
            (unsigned long long)a->detections, a->detect_s, (unsigned long long)a->takeovers,
            a->resume_s, (unsigned long long)a->fences);
    fclose(f);
    free(v);
    free(idx);
    return out;
}

static enum MHD_Result agent_metrics(struct agent *a, struct MHD_Connection *c, int as_json)
{
    char *text = agent_metrics_text(a);
    if (!text)
        return agent_send_err(c, err_set(VK_ENOMEM, "out of memory"));
    if (as_json) {
        enum MHD_Result r = agent_send(c, 200, json_pack("{s:s}", "text", text));
        free(text);
        return r;
    }
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(resp, "Content-Type", "text/plain; version=0.0.4");
    enum MHD_Result r = MHD_queue_response(c, 200, resp);
    MHD_destroy_response(resp);
    return r;
}

/* ---- start and stop -------------------------------------------------------------- */

static int agent_lock_state(struct agent *a)
{
    char *path = util_fmt("%s/vmckptd.lock", a->cfg->state_dir);
    char pid[32] = "";
    int rc = 0;

    a->lock_fd = path ? open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600) : -1;
    if (a->lock_fd < 0) {
        rc = err_errno(errno, "cannot open lock file %s", path ? path : "");
    } else if (flock(a->lock_fd, LOCK_EX | LOCK_NB) < 0) {
        ssize_t n = pread(a->lock_fd, pid, sizeof(pid) - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        rc = err_set(VK_EBUSY, "another vmckptd (pid %s) already uses state directory %s",
                     pid[0] ? pid : "?", a->cfg->state_dir);
    } else {
        int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
        if (ftruncate(a->lock_fd, 0) < 0 || pwrite(a->lock_fd, pid, (size_t)n, 0) != n)
            rc = err_errno(errno, "cannot write lock file %s", path);
    }
    free(path);
    return rc;
}

/* Clears the way for the API socket at path: a stale socket (nobody
 * listens) is removed; a live one (another agent, maybe on another state
 * directory) or anything that is not a socket is left alone and refused. */
static int agent_free_socket_path(const char *path, const struct sockaddr_un *sa)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : err_errno(errno, "socket path %s", path);
    if (!S_ISSOCK(st.st_mode))
        return err_set(VK_EEXISTS, "socket path %s exists and is not a socket: not removing it",
                       path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int live = fd >= 0 && (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0 ||
                           errno == EAGAIN); /* EAGAIN: it listens, its backlog is full */
    if (fd >= 0)
        close(fd);
    if (live)
        return err_set(VK_EBUSY, "socket %s is in use: another vmckptd listens there (set "
                                 "[agent] socket to a path of its own)", path);
    if (unlink(path) < 0 && errno != ENOENT)
        return err_errno(errno, "cannot remove the stale socket %s", path);
    return 0;
}

/* task_env.may_commit: only the holder of a task's lease commits its
 * checkpoints. A node that stalled past its lease (its VM fenced meanwhile)
 * and wakes up mid-upload finds the lease taken and commits nothing; one that
 * stalls after this call and before its write holds a proof that the write
 * checks (store_put_fenced), void once another node took the lease. */
static int agent_may_commit(void *arg, const char *id, struct store_fence *out, int *fenced)
{
    struct agent *a = arg;
    *fenced = a->cfg->cluster;
    int rc = agent_take_lease_fenced(a, id, out);
    if (rc == VK_EBUSY)
        return err_set(VK_ELEASE, "task %s: this node (%s) lost the task's lease while the "
                                  "checkpoint uploaded; not committed: the task runs elsewhere",
                       id, a->cfg->node);
    return rc;
}

static int agent_listen(struct agent *a)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    const char *path = a->cfg->socket;
    if (strlen(path) >= sizeof(sa.sun_path))
        return err_set(VK_EINVAL, "socket path too long: %s", path);
    strcpy(sa.sun_path, path);
    int rc0 = agent_free_socket_path(path, &sa);
    if (rc0 < 0)
        return rc0;
    gid_t group = (gid_t)-1;
    int rc = a->cfg->group ? peer_group_id(a->cfg->group, &group) : 0;
    if (rc == 0)
        rc = peer_table_new(&a->peers, a->cfg->max_conns / 8 > 4 ? a->cfg->max_conns / 8 : 4,
                            group);
    if (rc < 0)
        return rc;
    a->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (a->listen_fd < 0 || bind(a->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return err_errno(errno, "cannot listen on %s", path);
    /* Before listen(): no caller gets in while the mode is still the umask's. */
    if ((group != (gid_t)-1 && chown(path, (uid_t)-1, group) < 0) ||
        chmod(path, group != (gid_t)-1 ? 0660 : 0600) < 0)
        return err_errno(errno, "cannot set the owner or mode of socket %s", path);
    /* A deep backlog: a burst of connections (a flood among them) waits to be
     * accepted and counted instead of making other callers' connect() fail. */
    if (listen(a->listen_fd, SOMAXCONN) < 0)
        return err_errno(errno, "cannot listen on %s", path);
    return 0;
}

/* A connection as the daemon sees it: its caller, and whether it counts. */
struct agent_conn {
    struct peer who;
    int known, counted;
};

/* Counts each connection against its caller's share as it opens, before any
 * byte is read: an idle caller holds at most its share, never the API. */
static void agent_conn_notify(void *cls, struct MHD_Connection *c, void **socket_ctx,
                              enum MHD_ConnectionNotificationCode code)
{
    struct agent *a = cls;
    struct agent_conn *ac = *socket_ctx;
    if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        if (ac && ac->counted)
            peer_leave(a->peers, &ac->who);
        free(ac);
        *socket_ctx = NULL;
        return;
    }
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!(ac = calloc(1, sizeof(*ac))) || !ci)
        goto refuse;
    *socket_ctx = ac;
    ac->known = peer_of_fd(ci->connect_fd, &ac->who) == 0;
    if (ac->known && peer_enter(a->peers, &ac->who) == 0) {
        ac->counted = 1;
        return;
    }
    log_warn("API connection refused: %s", err_msg());
refuse:
    if (ci)
        shutdown(ci->connect_fd, SHUT_RDWR); /* the daemon then closes it */
}

/* 1 if the caller of c may use the API. */
static int agent_caller_ok(struct agent *a, struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    const struct agent_conn *ac = ci ? ci->socket_context : NULL;
    if (!ac || !ac->known) {
        err_set(VK_ESTATE, "cannot tell who is calling: refused");
        return 0;
    }
    if (!peer_allowed(a->peers, &ac->who)) {
        err_set(VK_ESTATE, "uid %u (pid %d) may not use this agent: only root, uid %u%s%s may",
                (unsigned)ac->who.uid, (int)ac->who.pid, (unsigned)geteuid(),
                a->cfg->group ? " and group " : "", a->cfg->group ? a->cfg->group : "");
        log_warn("API: %s", err_msg());
        return 0;
    }
    return 1;
}

static int agent_adopt_all(struct agent *a)
{
    DIR *d = opendir(a->env.tasks_dir);
    struct dirent *e;
    int rc = 0;
    while (d && (e = readdir(d)) && rc == 0) {
        struct task *t;
        if (!util_valid_id(e->d_name))
            continue;
        if (task_adopt(&a->env, e->d_name, &t) < 0) {
            log_error("task %s: cannot load its state, leaving it alone: %s", e->d_name, err_msg());
            continue;
        }
        rc = agent_add(a, t);
    }
    if (d)
        closedir(d);
    return rc;
}

int agent_open(struct agent **out, const struct cfg *cfg)
{
    struct agent *a = calloc(1, sizeof(*a));
    int rc;

    *out = NULL;
    if (!a)
        return err_set(VK_ENOMEM, "out of memory");
    a->cfg = cfg;
    a->lock_fd = a->listen_fd = a->stop_pipe[0] = a->stop_pipe[1] = -1;
    pthread_mutex_init(&a->lock, NULL);
    a->env.cfg = cfg;
    if (cfg->cluster) {
        a->env.may_commit = agent_may_commit;
        a->env.may_commit_arg = a;
    }
    a->env.tasks_dir = util_fmt("%s/tasks", cfg->state_dir);
    a->env.blob_dir = util_fmt("%s/blobs", cfg->state_dir);
    rc = util_private_dir(cfg->state_dir);
    if (rc == 0)
        rc = agent_lock_state(a);
    if (rc == 0)
        rc = util_mkdir_p(a->env.tasks_dir, 0700);
    if (rc == 0)
        rc = store_open(cfg->store_uri, &a->env.store);
    if (rc == 0) {
        char probe[96];
        snprintf(probe, sizeof(probe), "probes/vmckptd-%d", (int)getpid());
        rc = store_check_writable(a->env.store, probe);
    }
    if (rc == 0) {
        struct repo_cfg rcfg = {
            .chunk_avg = (size_t)cfg->chunk_kib * 1024,
            .workers = cfg->workers,
            .mem_budget = (size_t)cfg->buffer_mib << 20,
            .pack_size = (size_t)cfg->pack_mib << 20,
            .retries = cfg->retries,
            .retry_base_ms = 200,
            .forced_codec = codec_by_name(cfg->codec),
            .no_dedup = cfg->whole,
        };
        rc = repo_open(&a->env.repo, a->env.store, &rcfg);
    }
    if (rc == 0)
        rc = agent_adopt_all(a);
    if (rc == 0)
        rc = agent_listen(a);
    if (rc == 0 && pipe2(a->stop_pipe, O_CLOEXEC) < 0)
        rc = err_errno(errno, "pipe");
    if (rc == 0) {
        a->httpd = MHD_start_daemon(
            MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0, NULL, NULL,
            agent_handler, a, MHD_OPTION_LISTEN_SOCKET, a->listen_fd,
            MHD_OPTION_NOTIFY_COMPLETED, agent_done, a, MHD_OPTION_NOTIFY_CONNECTION,
            agent_conn_notify, a, MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_conns,
            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->idle_s, MHD_OPTION_END);
        if (!a->httpd)
            rc = err_set(VK_EIO, "cannot start the HTTP server on %s", cfg->socket);
    }
    if (rc == 0 && pthread_create(&a->sched, NULL, agent_sched, a) != 0)
        rc = err_set(VK_ENOMEM, "cannot start the scheduler thread");
    if (rc == 0 && cfg->cluster &&
        (pthread_create(&a->fence, NULL, agent_fence, a) != 0 ||
         pthread_create(&a->cluster, NULL, agent_cluster, a) != 0))
        rc = err_set(VK_ENOMEM, "cannot start the cluster threads");
    if (rc < 0) {
        a->stopping = 1;
        agent_free(a);
        return rc;
    }
    log_info("vmckptd %d: state %s, store %s, listening on %s, %zu task(s) known%s%s", (int)getpid(),
             cfg->state_dir, store_uri(a->env.store), cfg->socket, a->n_tasks,
             cfg->cluster ? "; cluster node " : "", cfg->cluster ? cfg->node : "");
    *out = a;
    return 0;
}

int agent_serve(struct agent *a)
{
    char c;
    while (read(a->stop_pipe[0], &c, 1) < 0 && errno == EINTR)
        ;
    return 0;
}

void agent_stop(struct agent *a)
{
    char c = 'x';
    a->stopping = 1;
    (void)!write(a->stop_pipe[1], &c, 1);
}

static int agent_busy(struct agent *a)
{
    int busy = 0;
    for (size_t i = 0; i < a->n_tasks; i++) {
        json_t *j = task_json(a->tasks[i]);
        busy |= !json_is_null(json_object_get(j, "checkpoint"));
        json_decref(j);
    }
    return busy;
}

void agent_free(struct agent *a)
{
    if (!a)
        return;
    a->stopping = 1;
    if (a->sched)
        pthread_join(a->sched, NULL);
    if (a->cluster)
        pthread_join(a->cluster, NULL);
    if (a->fence)
        pthread_join(a->fence, NULL);
    while (atomic_load(&a->policy_jobs) > 0) /* they hold tasks: checkpoints are bounded */
        usleep(50000);
    for (int waited = 0;; waited++) { /* take-overs in progress hold pointers to a */
        pthread_mutex_lock(&a->lock);
        size_t left = a->n_restoring;
        pthread_mutex_unlock(&a->lock);
        if (!left)
            break;
        if (waited == 0)
            log_info("waiting for %zu take-over restore(s) to end", left);
        usleep(50000);
    }
    if (a->httpd)
        MHD_stop_daemon(a->httpd);
    peer_table_free(a->peers);
    free(a->starting);
    for (int i = 0; i < 600 && agent_busy(a); i++) /* let uploads finish, 60 s at most */
        usleep(100000);
    for (size_t i = 0; i < a->n_tasks; i++)
        task_free(a->tasks[i]);
    free(a->tasks);
    free(a->lease_ok_ms);
    free(a->seen_dead);
    free(a->seen_dead_ms);
    for (size_t i = 0; i < a->n_dead; i++)
        json_decref(a->seen_assign[i]);
    free(a->seen_assign);
    free(a->failed_here);
    free(a->restoring);
    if (a->listen_fd >= 0) {
        close(a->listen_fd);
        unlink(a->cfg->socket);
    }
    if (a->lock_fd >= 0)
        close(a->lock_fd);
    if (a->stop_pipe[0] >= 0)
        close(a->stop_pipe[0]);
    if (a->stop_pipe[1] >= 0)
        close(a->stop_pipe[1]);
    repo_free(a->env.repo);
    store_free(a->env.store);
    free(a->env.tasks_dir);
    free(a->env.blob_dir);
    pthread_mutex_destroy(&a->lock);
    free(a);
}
