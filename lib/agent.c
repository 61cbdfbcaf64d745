#include "agent.h"

#include "api.h"
#include "catalog.h"
#include "ckpt.h"
#include "err.h"
#include "failover.h"
#include "gc.h"
#include "log.h"
#include "manifest.h"
#include "peer.h"
#include "prestage.h"
#include "repo.h"
#include "runlog.h"
#include "store.h"
#include "task.h"
#include "testhook.h"
#include "util.h"
#include "vm.h"

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
#include <sys/stat.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>

struct agent {
    struct failover *fo; /* cluster mode only */
    struct prestage *pre; /* cluster mode with [cluster] prestage only */
    const struct cfg *cfg;
    struct task_env env;
    int lock_fd, listen_fd, stop_pipe[2];
    struct MHD_Daemon *httpd;
    struct peer_table *peers; /* who may call, and their connections */
    pthread_mutex_t lock; /* guards the task table */
    struct task **tasks;  /* live and removed tasks; freed at exit only */
    size_t n_tasks;
    pthread_t sched;
    atomic_int stopping;
    char (*starting)[72]; /* ids a run or restore request is starting now */
    size_t n_starting;
    atomic_int policy_jobs; /* periodic checkpoints running (agent_job) */
    /* [cluster] prestage_vm: VMs started ahead for take-overs (task_warm),
     * not tasks of this node; under lock. warm_tried: id -> the checkpoint
     * a start ahead failed for (not tried again). */
    struct agent_warm {
        struct task *t;
        int64_t since_us; /* started (monotonic) */
    } *warm;
    size_t n_warm;
    char warming[72];       /* the id whose VM is being started ahead, or "" */
    pthread_cond_t warm_cv; /* warming ended */
    json_t *warm_tried;
    /* what prestage staged last ({id: seq}), for the warmer thread, which
     * starts the VMs ahead: a QEMU start takes seconds, staging must not
     * wait for it */
    json_t *warm_want;
    pthread_cond_t want_cv; /* warm_want was set, or the agent stops */
    pthread_t warmer;
    int has_warmer;
    atomic_int adopted; /* the tasks of STATE are adopted: VMs may be started ahead */
};

/* ---- task table ------------------------------------------------------------ */

static int agent_is_removed(struct task *t) { return task_state(t) == TASK_REMOVED; }

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

/* Reserves task id for a run or restore request or a take-over, atomically
 * with the check that no task or other reservation has it: two of them for
 * one id at once never both start a VM. Each 0 is paired with
 * agent_unreserve(). */
/* Whether id is a live task here or reserved (a->lock held). */
static int agent_id_busy(struct agent *a, const char *id)
{
    int busy = 0;
    for (size_t i = 0; i < a->n_tasks && !busy; i++)
        busy = !strcmp(task_id(a->tasks[i]), id) && !agent_is_removed(a->tasks[i]);
    for (size_t i = 0; i < a->n_starting && !busy; i++)
        busy = !strcmp(a->starting[i], id);
    return busy;
}

static int agent_reserve(struct agent *a, const char *id)
{
    pthread_mutex_lock(&a->lock);
    int busy = agent_id_busy(a, id);
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

/* The warm task of id, taken out of the list (the caller's), or NULL; waits
 * for one being started. The caller has reserved id (agent_reserve). */
static struct task *agent_take_warm(struct agent *a, const char *id)
{
    struct task *t = NULL;
    pthread_mutex_lock(&a->lock);
    while (!strcmp(a->warming, id))
        pthread_cond_wait(&a->warm_cv, &a->lock);
    for (size_t i = 0; i < a->n_warm && !t; i++)
        if (!strcmp(task_id(a->warm[i].t), id)) {
            t = a->warm[i].t;
            a->warm[i] = a->warm[--a->n_warm];
        }
    pthread_mutex_unlock(&a->lock);
    return t;
}

/* {id: {"seq", "pid"}} of the VMs started ahead. */
static json_t *agent_warm_json(struct agent *a)
{
    json_t *j = json_object();
    pthread_mutex_lock(&a->lock);
    for (size_t i = 0; i < a->n_warm; i++) {
        pid_t pid = 0;
        task_vm(a->warm[i].t, &pid, NULL);
        json_object_set_new(j, task_id(a->warm[i].t),
                            json_pack("{s:I, s:i}", "seq", (json_int_t)task_warm_seq(a->warm[i].t),
                                      "pid", (int)pid));
    }
    pthread_mutex_unlock(&a->lock);
    return j;
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

static int agent_add(struct agent *a, struct task *t)
{
    pthread_mutex_lock(&a->lock);
    struct task **nt = realloc(a->tasks, (a->n_tasks + 1) * sizeof(*nt));
    if (nt) {
        a->tasks = nt;
        a->tasks[a->n_tasks++] = t;
    }
    pthread_mutex_unlock(&a->lock);
    if (nt && a->fo)
        failover_task_added(a->fo, task_id(t)); /* its lease was just taken */
    return nt ? 0 : err_set(VK_ENOMEM, "out of memory");
}

/* A snapshot of the live tasks (the caller frees the array). */
static size_t agent_snapshot(struct agent *a, struct task ***out)
{
    size_t k = 0;
    pthread_mutex_lock(&a->lock);
    *out = malloc((a->n_tasks + 1) * sizeof(**out));
    for (size_t i = 0; *out && i < a->n_tasks; i++)
        if (!agent_is_removed(a->tasks[i]))
            (*out)[k++] = a->tasks[i];
    pthread_mutex_unlock(&a->lock);
    return k;
}

/* ---- cluster: leases (failover.h) --------------------------------------------- */

static int agent_take_lease(struct agent *a, const char *id)
{
    return a->fo ? failover_take_lease(a->fo, id, NULL) : 0;
}

static void agent_drop_lease(struct agent *a, const char *id)
{
    if (a->fo)
        failover_drop_lease(a->fo, id);
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

/* The fields of a run request that reach QEMU's command line, each checked
 * (the paths are checked when they are opened: realpath, qemu-img). */
static int agent_check_spec(const struct task_spec *sp)
{
    /* before the id is reserved or leased: a bad one takes neither */
    if (sp->id && !util_valid_id(sp->id))
        return err_set(VK_EINVAL, "task id '%.64s' is not valid: use 1-64 letters, digits, '.', "
                                  "'_' or '-', not starting with '.'", sp->id);
    if (sp->memory_mib < 16 || sp->memory_mib > 1 << 20)
        return err_set(VK_EINVAL, "request field 'memory_mib' must be from 16 to %d, not %d",
                       1 << 20, sp->memory_mib);
    if (sp->vcpus < 1 || sp->vcpus > 256)
        return err_set(VK_EINVAL, "request field 'vcpus' must be from 1 to 256, not %d",
                       sp->vcpus);
    if (sp->first_s < 0 || sp->every_s < CFG_AUTO)
        return err_set(VK_EINVAL, "request fields 'checkpoint_first' and 'checkpoint_every' "
                                  "must be 0 or more");
    /* work goes onto the guest kernel's command line as vmckpt.work=WORK:
     * one word, or it would add parameters of its own */
    size_t n = sp->work ? strlen(sp->work) : 1;
    if (sp->work && (n == 0 || n > 128 ||
                     strspn(sp->work, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                      "0123456789._,:=+-/") != n))
        return err_set(VK_EINVAL, "request field 'work' must be one word of 1-128 letters, "
                                  "digits and . _ , : = + - / (it goes onto the guest kernel's "
                                  "command line), not '%.64s'", sp->work);
    return 0;
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
        .every_s = json_is_string(json_object_get(body, "checkpoint_every"))
                       ? CFG_AUTO /* api_check_body let only "auto" through */
                       : agent_jint(body, "checkpoint_every", cfg->every_s),
    };
    struct task *t = NULL;
    int rc = 0;

    if (sp.accel && (rc = vm_accel_check(sp.accel, "accel")) < 0)
        return agent_send_err(c, rc);
    enum ckpt_mode mode;
    if (sp.mode && (rc = ckpt_mode_parse(sp.mode, "mode", &mode)) < 0)
        return agent_send_err(c, rc);
    if ((rc = agent_check_spec(&sp)) < 0)
        return agent_send_err(c, rc);
    if (sp.id && (rc = agent_reserve(a, sp.id)) < 0)
        return agent_send_err(c, rc);
    if (sp.id)
        task_warm_drop(agent_take_warm(a, sp.id));
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
    for (size_t i = 0; i < a->n_tasks; i++)
        if (!agent_is_removed(a->tasks[i]))
            json_array_append_new(arr, task_json(a->tasks[i]));
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
    int rc = catalog_list(a->env.store, id, &seqs, &n);
    if (rc == 0 && n == 0)
        rc = err_set(VK_ENOTFOUND, "task %s has no checkpoint in store %s", id, store_uri(a->env.store));
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

/* A restored copy that must not run (its lease was lost): stopped and
 * forgotten. */
static void agent_stop_copy(struct task *t)
{
    task_kill(t);
    task_remove(t);
    task_free(t);
}

static enum MHD_Result agent_restore(struct agent *a, struct MHD_Connection *c, const char *id,
                                     json_t *body)
{
    struct task *t = agent_find(a, id), *out = NULL;
    json_int_t seq = json_integer_value(json_object_get(body, "seq"));
    int fresh = !t; /* not a task of this node yet */
    int rc;
    if (fresh && (rc = agent_reserve(a, id)) < 0) /* a new task here: one request makes it */
        return agent_send_err(c, rc);
    if ((rc = agent_take_lease(a, id)) == 0 && a->fo &&
        (rc = failover_fence_task(a->fo, id)) < 0 && fresh) /* a late write of its old node */
        agent_drop_lease(a, id);
    if (rc < 0) {
        if (fresh)
            agent_unreserve(a, id);
        return agent_send_err(c, rc);
    }
    /* not one of this node's tasks yet, so not renewed with them: renewed
     * with the take-overs' while it is fetched */
    struct fo_takeover *hold = fresh && a->fo ? failover_hold(a->fo, id) : NULL;
    if (fresh && a->fo && !hold) {
        agent_drop_lease(a, id);
        agent_unreserve(a, id);
        return agent_send_err(c, err_set(VK_ENOMEM, "out of memory"));
    }
    if (fresh)
        t = agent_take_warm(a, id); /* a VM started ahead: task_restore takes it over or ends it */
    if (seq == 0 && json_is_true(json_object_get(body, "latest_intact")))
        rc = agent_restore_intact(a, t, id, agent_jstr(body, "accel"), &out);
    else
        rc = task_restore(&a->env, t, id, (uint64_t)seq, agent_jstr(body, "accel"), &out);
    if (hold && failover_release(hold) && rc == 0) {
        log_error("task %s: another node took its lease during the restore here: stopping the "
                  "copy here", id);
        agent_stop_copy(out); /* (a warm VM it was restored into, too) */
        out = t = NULL;
        rc = err_set(VK_ELEASE, "restore of task %s: another node took its lease while it was "
                                "fetched; it runs there", id);
    }
    if (rc == 0 && fresh)
        rc = agent_add(a, out);
    if (rc < 0 && fresh) {
        agent_drop_lease(a, id);
        task_warm_drop(t); /* a warm task whose restore failed: not the agent's */
    }
    if (fresh)
        agent_unreserve(a, id);
    return rc < 0 ? agent_send_err(c, rc) : agent_send(c, 200, task_json(out));
}

static enum MHD_Result agent_checkpoints(struct agent *a, struct MHD_Connection *c,
                                         const char *id)
{
    uint64_t *seqs = NULL;
    size_t n = 0;
    json_t *arr = json_array();
    int rc = catalog_list(a->env.store, id, &seqs, &n);
    if (rc < 0) {
        json_decref(arr);
        return agent_send_err(c, rc);
    }
    for (size_t i = 0; i < n; i++) {
        struct manifest *m = NULL;
        if (catalog_load(a->env.store, id, seqs[i], &m) == 0)
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
    int rc = catalog_load(a->env.store, id, seq, &m);
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

/* Whether checkpoint seq of task id is no longer in the store (its manifest
 * gone): a checkpoint that retention or GC removed while it was verified. */
static int agent_ckpt_gone(struct agent *a, const char *id, uint64_t seq)
{
    struct manifest *m = NULL;
    int rc = catalog_load(a->env.store, id, seq, &m);
    manifest_free(m);
    return rc == VK_ENOTFOUND;
}

/* Reads back checkpoint seq of task id: {task, seq, ok, problems[, gone]}
 * (new reference); the chunks in seen (of the same request) are not read
 * again. gone: it left the store while it was read (retention, GC). */
static json_t *agent_verify_one(struct agent *a, const char *id, uint64_t seq,
                                struct repo_seen *seen)
{
    struct manifest *m = NULL;
    json_t *problems = json_array();
    char tag[96];
    snprintf(tag, sizeof(tag), "%s-%" PRIu64, id, seq);
    testhook_gate("VMCKPT_TEST_VERIFY_GATE", tag);
    if (catalog_load(a->env.store, id, seq, &m) < 0)
        agent_report(problems, err_msg());
    else
        ckpt_verify(a->env.repo, m, seen, agent_report, problems);
    manifest_free(m);
    if (json_array_size(problems) > 0 && agent_ckpt_gone(a, id, seq)) {
        /* Retired (retention, GC) while it was read: not damage. */
        json_decref(problems);
        return json_pack("{s:s, s:I, s:b, s:b, s:[]}", "task", id, "seq", (json_int_t)seq, "ok", 1,
                         "gone", 1, "problems");
    }
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
        rc = catalog_list(a->env.store, id, &seqs, &n);
    }
    struct repo_seen *seen = repo_seen_new(); /* (NULL: each chunk read for each checkpoint) */
    for (size_t i = 0; rc == 0 && i < n; i++)
        json_array_append_new(res, agent_verify_one(a, id, seqs[i], seen));
    repo_seen_free(seen);
    free(seqs);
    if (rc < 0) {
        json_decref(res);
        return agent_send_err(c, rc);
    }
    if (n == 0) {
        json_decref(res);
        return agent_send_err(c, err_set(VK_ENOTFOUND, "task %s has no checkpoint in %s", id,
                                         store_uri(a->env.store)));
    }
    return agent_send(c, 200, json_pack("{s:s, s:o}", "task", id, "checkpoints", res));
}

/* Every checkpoint of every task in the store. */
static enum MHD_Result agent_verify_all(struct agent *a, struct MHD_Connection *c)
{
    json_t *res = json_array();
    struct catalog_entry *e = NULL;
    size_t n = 0;
    int rc = catalog_all(a->env.store, &e, &n);
    struct repo_seen *seen = repo_seen_new(); /* (NULL: each chunk read for each checkpoint) */
    for (size_t i = 0; rc == 0 && i < n; i++)
        json_array_append_new(res, agent_verify_one(a, e[i].task, e[i].seq, seen));
    repo_seen_free(seen);
    catalog_entries_free(e, n);
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
    int rc = task_gc(&a->env, grace, &g);
    return rc < 0 ? agent_send_err(c, rc) : agent_send(c, 200, gc_result_json(&g));
}

#define AGENT_MOVE_WAIT_MS 60000

/* A move that failed, its task removed here: restored here again as a new
 * task, its id reserved (no run or restore of it meanwhile) and its lease
 * renewed through the fetch. The caller holds the lease. */
static int agent_take_back(struct agent *a, const char *id)
{
    struct task *back = NULL;
    struct fo_takeover *hold = NULL;
    int rc = agent_reserve(a, id), reserved = rc == 0;
    if (rc == 0)
        rc = (hold = failover_hold(a->fo, id)) ? 0 : err_set(VK_ENOMEM, "out of memory");
    if (rc == 0)
        rc = agent_restore_intact(a, NULL, id, NULL, &back);
    if (hold && failover_release(hold) && rc == 0) {
        agent_stop_copy(back);
        rc = err_set(VK_ELEASE, "another node took its lease while it was fetched");
    } else if (rc == 0 && (rc = agent_add(a, back)) < 0) {
        agent_stop_copy(back);
    }
    if (rc < 0)
        agent_drop_lease(a, id);
    if (reserved)
        agent_unreserve(a, id);
    return rc;
}

/* A planned move of task t to node `to` (NULL: placement picks): its last
 * checkpoint here with the VM left paused, then the VM killed, the task
 * handed over (failover) and removed here; the target restores it from that
 * checkpoint, so no guest work is lost. A target that does not take it in
 * time: the task is restored here again. *out: what was done. */
static int agent_move_task(struct agent *a, struct task *t, const char *to, json_t **out)
{
    char target[128], why[1024];
    const char *id = task_id(t);
    uint64_t seq = 0;
    int64_t t0 = util_now_us();
    int rc = a->fo ? failover_pick_target(a->fo, to, target)
                   : err_set(VK_ESTATE, "a move needs cluster mode ([cluster] enabled = 1)");
    *out = NULL;
    if (rc == 0)
        rc = task_freeze(t, &seq);
    if (rc < 0)
        return err_wrap(rc, "move of task %s", id);
    task_kill(t); /* paused at its last checkpoint: nothing after it is lost */
    rc = failover_move_out(a->fo, id, target, seq);
    if (rc == 0) {
        task_remove(t);
        rc = failover_wait_moved(a->fo, id, testhook_num("VMCKPT_TEST_MOVE_WAIT_MS") > 0
                                                ? (int)testhook_num("VMCKPT_TEST_MOVE_WAIT_MS")
                                                : AGENT_MOVE_WAIT_MS);
    }
    if (rc < 0) { /* take it back: the lease first, which the target may hold by now */
        snprintf(why, sizeof(why), "%s", err_msg());
        int r2 = agent_take_lease(a, id);
        if (r2 == VK_EBUSY) {
            log_warn("task %s: node %s took it late: it runs there", id, target);
            rc = 0;
        } else {
            if (r2 == 0)
                r2 = agent_take_back(a, id);
            return err_set(rc, "move of task %s to %s: %s; %s", id, target, why,
                           r2 == 0 ? "it runs here again from its last checkpoint (no work "
                                     "lost)"
                                   : "it could not be restored here either: restore it by hand");
        }
    }
    double secs = (double)(util_now_us() - t0) / 1e6;
    log_info("task %s moved to %s from its checkpoint %" PRIu64 " in %.2f s", id, target, seq,
             secs);
    *out = json_pack("{s:s, s:s, s:I, s:f}", "task", id, "to", target, "seq", (json_int_t)seq,
                     "seconds", secs);
    return 0;
}

/* POST /v1/drain: every task running here moved to other nodes. */
static enum MHD_Result agent_drain(struct agent *a, struct MHD_Connection *c, json_t *body)
{
    const char *node = agent_jstr(body, "node");
    json_t *moved, *failed;
    if (!node || strcmp(node, a->cfg->node) != 0)
        return agent_send_err(c, err_set(VK_EINVAL, "drain %s: ask that node's own agent (this "
                                                    "is %s)", node ? node : "(no node)",
                                         a->cfg->node));
    if (!a->fo)
        return agent_send_err(c, err_set(VK_ESTATE, "a drain needs cluster mode ([cluster] "
                                                    "enabled = 1)"));
    moved = json_array();
    failed = json_array();
    pthread_mutex_lock(&a->lock);
    size_t n = a->n_tasks;
    struct task **v = n ? malloc(n * sizeof(*v)) : NULL;
    if (v)
        memcpy(v, a->tasks, n * sizeof(*v));
    pthread_mutex_unlock(&a->lock);
    for (size_t i = 0; v && i < n; i++) {
        json_t *r = NULL;
        if (task_state(v[i]) != TASK_RUNNING)
            continue;
        if (agent_move_task(a, v[i], NULL, &r) == 0)
            json_array_append_new(moved, r);
        else
            json_array_append_new(failed, json_pack("{s:s, s:s}", "task", task_id(v[i]),
                                                    "error", err_msg()));
    }
    free(v);
    log_info("drain of %s: %zu task(s) moved, %zu not", node, json_array_size(moved),
             json_array_size(failed));
    return agent_send(c, 200, json_pack("{s:s, s:o, s:o}", "node", node, "moved", moved,
                                        "failed", failed));
}

static enum MHD_Result agent_send_text(struct MHD_Connection *c, char *text, size_t len)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "text/plain; charset=utf-8");
    enum MHD_Result ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ret;
}

/* GET /v1/tasks/ID/console: the runs whose console logs this node has (the
 * current run's and those kept, of a removed task too). */
static enum MHD_Result agent_console_list(struct agent *a, struct MHD_Connection *c,
                                          const char *id)
{
    struct task *t = agent_find(a, id);
    char *serial = NULL, when[40];
    int cur = t ? task_current_run(t, &serial) : 0;
    struct runlog_entry *v = NULL;
    size_t n = 0;
    int rc = runlog_list(a->env.logs_dir, id, &v, &n);
    json_t *runs = json_array();
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (v[i].run == cur)
            continue; /* (the current run's own file is the newer) */
        util_iso_time(v[i].mtime_s * 1000000, when, sizeof(when));
        json_array_append_new(runs, json_pack("{s:i, s:I, s:s, s:b}", "run", v[i].run, "bytes",
                                              (json_int_t)v[i].bytes, "modified", when,
                                              "current", 0));
    }
    struct stat st;
    if (rc == 0 && cur && stat(serial, &st) == 0) {
        util_iso_time((int64_t)st.st_mtime * 1000000, when, sizeof(when));
        json_array_append_new(runs, json_pack("{s:i, s:I, s:s, s:b}", "run", cur, "bytes",
                                              (json_int_t)st.st_size, "modified", when,
                                              "current", 1));
    }
    free(v);
    free(serial);
    if (rc == 0 && !t && json_array_size(runs) == 0)
        rc = err_set(VK_ENOTFOUND, "no task '%s' on this node, and no console logs of it", id);
    if (rc < 0) {
        json_decref(runs);
        return agent_send_err(c, rc);
    }
    return agent_send(c, 200, json_pack("{s:s, s:o, s:o}", "task", id, "current",
                                        cur ? json_integer(cur) : json_null(), "runs", runs));
}

/* GET /v1/tasks/ID/console/RUN: a run's console log, its last
 * [task] log_max_kib (text/plain: it is the guest's bytes, as written). */
static enum MHD_Result agent_console(struct agent *a, struct MHD_Connection *c, const char *id,
                                     int run)
{
    struct task *t = agent_find(a, id);
    char *serial = NULL, *text = NULL;
    size_t len = 0, max = (size_t)a->cfg->log_max_kib << 10;
    int cur = t ? task_current_run(t, &serial) : 0, rc;
    if (cur && run == cur) {
        rc = util_read_tail(serial, max, &text, &len);
        if (rc == VK_ENOTFOUND) { /* its VM has written nothing yet */
            err_clear();
            rc = (text = strdup("")) ? 0 : err_set(VK_ENOMEM, "out of memory");
        }
    } else {
        rc = runlog_read(a->env.logs_dir, id, run, max, &text, &len);
    }
    free(serial);
    return rc < 0 ? agent_send_err(c, rc) : agent_send_text(c, text, len);
}

static enum MHD_Result agent_task_op(struct agent *a, struct MHD_Connection *c,
                                     const struct api_req *q)
{
    struct task *t = agent_find(a, q->id);
    uint64_t seq = 0;
    int rc;

    int purge = json_is_true(json_object_get(q->body, "purge"));
    if (!t && q->op == API_TASK_REMOVE && purge) { /* a task removed before: its logs */
        struct runlog_entry *v = NULL;
        size_t n = 0;
        rc = runlog_list(a->env.logs_dir, q->id, &v, &n);
        free(v);
        if (rc == 0 && n == 0)
            rc = err_set(VK_ENOTFOUND, "no task '%s' on this node, and no console logs of it",
                         q->id);
        if (rc == 0)
            rc = runlog_remove(a->env.logs_dir, q->id);
        return rc < 0 ? agent_send_err(c, rc)
                      : agent_send(c, 200, json_pack("{s:s, s:b}", "purged", q->id, "logs", 1));
    }
    if (!t)
        return agent_send_err(c, err_set(VK_ENOTFOUND, "no task '%s' on this node", q->id));
    switch (q->op) {
    case API_TASK_SHOW:
        return agent_send(c, 200, task_json(t));
    case API_TASK_REMOVE:
        rc = task_remove(t);
        if (rc == 0)
            agent_drop_lease(a, q->id);
        if (rc == 0 && purge && runlog_remove(a->env.logs_dir, q->id) < 0)
            log_warn("task %s removed, but not its console logs: %s", q->id, err_msg());
        return rc < 0 ? agent_send_err(c, rc)
                      : agent_send(c, 200, json_pack("{s:s}", "removed", q->id));
    case API_CHECKPOINT:
        rc = task_checkpoint(t, agent_jstr(q->body, "mode"), &seq);
        return rc < 0 ? agent_send_err(c, rc)
                      : agent_send(c, 202, json_pack("{s:s, s:I}", "task", q->id, "seq",
                                                     (json_int_t)seq));
    case API_MOVE: {
        json_t *r = NULL;
        rc = agent_move_task(a, t, agent_jstr(q->body, "to"), &r);
        return rc < 0 ? agent_send_err(c, rc) : agent_send(c, 200, r);
    }
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
    case API_DRAIN: return agent_drain(a, c, q->body);
    case API_CONSOLE_LIST: return agent_console_list(a, c, q->id);
    case API_CONSOLE: return agent_console(a, c, q->id, (int)q->seq);
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

/* [task] restart: the crashed task restored from its newest intact
 * checkpoint, as `vmckpt restore` would (lease and fence in cluster mode). */
static void *agent_restart(void *arg)
{
    struct agent_job *job = arg;
    struct agent *a = job->a;
    struct task *out = NULL;
    const char *id = task_id(job->t);
    int rc = agent_take_lease(a, id);
    if (rc == 0 && a->fo)
        rc = failover_fence_task(a->fo, id);
    if (rc == 0)
        rc = agent_restore_intact(a, job->t, id, NULL, &out);
    task_restart_ends(job->t, rc, rc < 0 ? err_msg() : NULL);
    atomic_fetch_sub(&a->policy_jobs, 1);
    free(job);
    return NULL;
}

static void agent_start_job(struct agent *a, struct task *t, void *(*fn)(void *),
                            const char *what)
{
    struct agent_job *job = malloc(sizeof(*job));
    pthread_t th;
    if (!job) {
        log_error("task %s: out of memory for its %s", task_id(t), what);
        return;
    }
    *job = (struct agent_job){.a = a, .t = t};
    atomic_fetch_add(&a->policy_jobs, 1);
    if (pthread_create(&th, NULL, fn, job) != 0) {
        atomic_fetch_sub(&a->policy_jobs, 1);
        free(job);
        log_error("task %s: cannot start a thread for its %s", task_id(t), what);
        return;
    }
    pthread_detach(th);
}

/* runlog_expire's question: whether task id is on this node (its logs stay). */
static int agent_has_task(void *arg, const char *id)
{
    struct agent *a = arg;
    char *dir = util_fmt("%s/%s", a->env.tasks_dir, id);
    int has = !dir || access(dir, F_OK) == 0 || agent_find(a, id);
    free(dir);
    return has;
}

/* The kept console logs of tasks gone from this node, past their time. */
static void agent_expire_logs(struct agent *a)
{
    int n = runlog_expire(a->env.logs_dir, (int64_t)a->cfg->log_expire_days * 86400,
                          agent_has_task, a);
    if (n > 0)
        log_info("removed the console logs of %d task(s) gone from this node for over %d "
                 "day(s) ([task] log_expire_days)", n, a->cfg->log_expire_days);
}

static void *agent_sched(void *arg)
{
    struct agent *a = arg;
    int64_t expire_due = 0;
    while (!a->stopping) {
        if (util_now_us() >= expire_due) { /* at start, then hourly */
            agent_expire_logs(a);
            expire_due = util_now_us() + 3600 * (int64_t)1000000;
        }
        pthread_mutex_lock(&a->lock);
        size_t n = a->n_tasks;
        struct task **copy = malloc((n ? n : 1) * sizeof(*copy));
        if (copy && n)
            memcpy(copy, a->tasks, n * sizeof(*copy));
        pthread_mutex_unlock(&a->lock);
        for (size_t i = 0; copy && i < n && !a->stopping; i++) {
            int due = task_poll(copy[i]);
            if (due & TASK_DUE_CHECKPOINT)
                agent_start_job(a, copy[i], agent_policy_checkpoint, "periodic checkpoint");
            if (due & TASK_DUE_RESTART)
                agent_start_job(a, copy[i], agent_restart, "restart");
        }
        free(copy);
        usleep(100000);
    }
    return NULL;
}


/* GET /v1/nodes: every node and where every task runs. */
static enum MHD_Result agent_nodes(struct agent *a, struct MHD_Connection *c)
{
    json_t *j = NULL;
    if (!a->fo)
        return agent_send_err(c, err_set(VK_ESTATE, "this agent is not in cluster mode "
                                                    "([cluster] enabled = 1)"));
    int rc = failover_nodes_json(a->fo, &j);
    if (rc == 0 && a->pre) {
        json_t *pre = prestage_json(a->pre);
        json_object_set_new(pre, "vms", agent_warm_json(a));
        json_object_set_new(j, "prestage", pre);
    }
    return rc < 0 ? agent_send_err(c, rc) : agent_send(c, 200, j);
}

enum agent_gauge { AGENT_STOP, AGENT_UPLOAD_BYTES, AGENT_UPLOAD_TIME };

/* One gauge per task, from a figure of its last checkpoint divided by scale. */
static void agent_task_gauge(FILE *f, struct task **v, size_t n, const char *metric,
                             const char *help, enum agent_gauge which, double scale)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s gauge\n", metric, help, metric);
    for (size_t k = 0; k < n; k++) {
        struct task_last l = task_last(v[k]);
        double x = which == AGENT_STOP           ? (double)l.stopped_us
                   : which == AGENT_UPLOAD_BYTES ? (double)l.uploaded_bytes
                                                 : (double)l.store_us;
        if (l.known)
            fprintf(f, "%s{task=\"%s\"} %.12g\n", metric, task_id(v[k]), x / scale);
    }
}

enum agent_counter { AGENT_FALLBACKS, AGENT_RESTARTS, AGENT_ROOM };

static void agent_task_counter(FILE *f, struct task **v, size_t n, const char *metric,
                               const char *labels, const char *help, enum agent_counter which)
{
    fprintf(f, "# HELP %s %s, since the agent started\n# TYPE %s counter\n", metric, help,
            metric);
    for (size_t k = 0; k < n; k++) {
        struct task_counters c = task_counters(v[k]);
        unsigned long x = which == AGENT_FALLBACKS ? c.live_fallbacks
                          : which == AGENT_RESTARTS ? c.restarts
                                                    : c.room_refusals;
        fprintf(f, "%s{task=\"%s\"%s} %lu\n", metric, task_id(v[k]), labels, x);
    }
}

/* No silent exposure: each running task's unprotected time against its
 * schedule's promise, and how many run late or with no schedule at all. */
static void agent_protection_metrics(FILE *f, struct task **v, size_t n)
{
    struct protection *p = calloc(n ? n : 1, sizeof(*p));
    size_t bad = 0;
    if (!p)
        return;
    for (size_t k = 0; k < n; k++) {
        p[k] = task_protection(v[k]);
        bad += p[k].state == PROTECT_LATE || p[k].state == PROTECT_UNSCHEDULED;
    }
    fprintf(f, "# HELP vmckpt_task_unprotected_seconds the running task's work a crash would "
               "lose now: time since its VM's state was last a committed checkpoint's\n"
               "# TYPE vmckpt_task_unprotected_seconds gauge\n");
    for (size_t k = 0; k < n; k++)
        if (p[k].state != PROTECT_NOT_RUNNING)
            fprintf(f, "vmckpt_task_unprotected_seconds{task=\"%s\"} %.3f\n", task_id(v[k]),
                    (double)p[k].exposed_us / 1e6);
    fprintf(f, "# HELP vmckpt_task_protection_promise_seconds what the running task's schedule "
               "promises at most (its period plus a grace); 0: no schedule\n"
               "# TYPE vmckpt_task_protection_promise_seconds gauge\n");
    for (size_t k = 0; k < n; k++)
        if (p[k].state != PROTECT_NOT_RUNNING)
            fprintf(f, "vmckpt_task_protection_promise_seconds{task=\"%s\"} %.3f\n",
                    task_id(v[k]), (double)p[k].promise_us / 1e6);
    fprintf(f, "# HELP vmckpt_tasks_unprotected running tasks late on their schedule or with "
               "none\n# TYPE vmckpt_tasks_unprotected gauge\nvmckpt_tasks_unprotected %zu\n",
            bad);
    free(p);
}

/* The metrics in Prometheus' text format. */
static char *agent_metrics_text(struct agent *a)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    struct task **v = NULL;
    size_t n = agent_snapshot(a, &v);
    if (!f) {
        free(v);
        return NULL;
    }
    agent_task_gauge(f, v, n, "vmckpt_checkpoint_stop_seconds",
                     "VM stop time of the task's last checkpoint", AGENT_STOP, 1e6);
    agent_task_gauge(f, v, n, "vmckpt_checkpoint_upload_bytes",
                     "bytes the task's last checkpoint added to the store", AGENT_UPLOAD_BYTES,
                     1);
    agent_task_gauge(f, v, n, "vmckpt_checkpoint_upload_seconds",
                     "time to store the task's last checkpoint", AGENT_UPLOAD_TIME, 1e6);
    fprintf(f, "# HELP vmckpt_tasks tasks on this node\n# TYPE vmckpt_tasks gauge\n"
               "vmckpt_tasks %zu\n", n);
    agent_protection_metrics(f, v, n);
    agent_task_counter(f, v, n, "vmckpt_live_fallbacks_total", "",
                       "live pre-copies given up (mode auto then took the checkpoint paused)",
                       AGENT_FALLBACKS);
    agent_task_counter(f, v, n, "vmckpt_restarts_total", "",
                       "crashed tasks restored without a command ([task] restart)",
                       AGENT_RESTARTS);
    agent_task_counter(f, v, n, "vmckpt_checkpoints_refused_total", ",reason=\"room\"",
                       "checkpoints refused before the VM was touched, by reason (room: no "
                       "room for the memory image)", AGENT_ROOM);
    if (a->fo)
        failover_metrics(a->fo, f);
    fclose(f);
    free(v);
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
        if (!util_valid_id(e->d_name) || task_warm_sweep(&a->env, e->d_name))
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

/* ---- failover_host: what fail-over may do with the task table ---------------- */

static size_t agent_host_tasks(void *arg, struct task ***out) { return agent_snapshot(arg, out); }
static int agent_host_reserve(void *arg, const char *id) { return agent_reserve(arg, id); }
static void agent_host_unreserve(void *arg, const char *id) { agent_unreserve(arg, id); }
static int agent_host_add(void *arg, struct task *t) { return agent_add(arg, t); }

static void agent_host_successor_of(void *arg, json_t *ids)
{
    struct agent *a = arg;
    prestage_want(a->pre, ids);
}

static int agent_host_restore(void *arg, const char *id, struct task **out)
{
    struct task *warm = agent_take_warm(arg, id); /* taken over, or ended, by the restore */
    int rc = agent_restore_intact(arg, warm, id, NULL, out);
    if (rc < 0)
        task_warm_drop(warm);
    return rc;
}

/* ---- VMs started ahead for take-overs ([cluster] prestage_vm) -------------- */

/* A VM started ahead for an older checkpoint is replaced once it is this
 * old (microseconds): with checkpoints seconds apart, QEMU starts with all
 * memory allocated would otherwise take a core of the successor. */
#define AGENT_WARM_MIN_AGE_US 5000000

/* Ends the warm tasks that no longer match what is staged. While one is
 * ended its id is a->warming: a take-over or request of the task waits
 * (agent_take_warm) rather than make the directory being removed. */
static void agent_warm_prune(struct agent *a, json_t *staged)
{
    for (;;) {
        struct task *t = NULL;
        int64_t now = util_now_us();
        pthread_mutex_lock(&a->lock);
        for (size_t i = 0; i < a->n_warm && !t; i++) {
            json_t *seq = json_object_get(staged, task_id(a->warm[i].t));
            if (!seq || ((uint64_t)json_integer_value(seq) != task_warm_seq(a->warm[i].t) &&
                         now - a->warm[i].since_us >= AGENT_WARM_MIN_AGE_US)) {
                t = a->warm[i].t;
                a->warm[i] = a->warm[--a->n_warm];
                snprintf(a->warming, sizeof(a->warming), "%s", task_id(t));
            }
        }
        pthread_mutex_unlock(&a->lock);
        if (!t)
            return;
        task_warm_drop(t);
        pthread_mutex_lock(&a->lock);
        a->warming[0] = 0;
        pthread_cond_broadcast(&a->warm_cv);
        pthread_mutex_unlock(&a->lock);
    }
}

/* Starts ahead the VM of checkpoint seq of task id, unless one runs, the
 * task is this node's or being started here, or a try for it failed. */
static void agent_warm_one(struct agent *a, const char *id, uint64_t seq)
{
    json_t *tried = json_object_get(a->warm_tried, id);
    if ((tried && (uint64_t)json_integer_value(tried) == seq) || !util_valid_id(id) ||
        strlen(id) >= sizeof(a->warming))
        return;
    /* not while the task is this node's or a request or take-over has it:
     * those wait for a VM being started ahead (agent_take_warm) */
    pthread_mutex_lock(&a->lock);
    int busy = agent_id_busy(a, id);
    for (size_t i = 0; i < a->n_warm && !busy; i++)
        busy = !strcmp(task_id(a->warm[i].t), id);
    if (!busy)
        snprintf(a->warming, sizeof(a->warming), "%s", id);
    pthread_mutex_unlock(&a->lock);
    if (busy)
        return;
    struct task *t = NULL;
    int64_t t0 = util_now_us();
    if (task_warm(&a->env, id, seq, &t) < 0) {
        log_info("task %s: no VM started ahead for checkpoint %" PRIu64 ": %s", id, seq, err_msg());
        json_object_set_new(a->warm_tried, id, json_integer((json_int_t)seq));
    } else {
        pid_t pid = 0;
        task_vm(t, &pid, NULL);
        log_info("task %s: VM started ahead for checkpoint %" PRIu64 " (pid %d, %.2f s)", id, seq,
                 (int)pid, (double)(util_now_us() - t0) / 1e6);
    }
    pthread_mutex_lock(&a->lock);
    struct agent_warm *nw = t ? realloc(a->warm, (a->n_warm + 1) * sizeof(*nw)) : NULL;
    if (nw) {
        a->warm = nw;
        a->warm[a->n_warm++] = (struct agent_warm){.t = t, .since_us = util_now_us()};
        t = NULL;
    }
    a->warming[0] = 0;
    pthread_cond_broadcast(&a->warm_cv);
    pthread_mutex_unlock(&a->lock);
    task_warm_drop(t); /* no room in the list (out of memory) */
}

/* prestage's round ended (its thread): hands what is staged to the warmer
 * thread (the newest round replaces one it has not taken yet). */
static void agent_prestaged(void *arg, json_t *staged)
{
    struct agent *a = arg;
    json_t *copy = json_deep_copy(staged);
    if (!copy)
        return;
    pthread_mutex_lock(&a->lock);
    json_decref(a->warm_want);
    a->warm_want = copy;
    pthread_cond_broadcast(&a->want_cv);
    pthread_mutex_unlock(&a->lock);
}

/* The warmer thread: the VMs started ahead follow what is staged. */
static void *agent_warmer(void *arg)
{
    struct agent *a = arg;
    pthread_mutex_lock(&a->lock);
    while (!a->stopping) {
        json_t *staged = a->warm_want;
        a->warm_want = NULL;
        if (!staged || !a->adopted) {
            pthread_cond_wait(&a->want_cv, &a->lock);
            json_decref(staged);
            continue;
        }
        pthread_mutex_unlock(&a->lock);
        agent_warm_prune(a, staged);
        const char *id;
        json_t *seq;
        json_object_foreach(staged, id, seq)
        {
            if (a->stopping)
                break;
            agent_warm_one(a, id, (uint64_t)json_integer_value(seq));
        }
        json_decref(staged);
        pthread_mutex_lock(&a->lock);
    }
    pthread_mutex_unlock(&a->lock);
    return NULL;
}

static int agent_warmer_start(struct agent *a)
{
    if (pthread_create(&a->warmer, NULL, agent_warmer, a) != 0)
        return err_set(VK_ENOMEM, "cannot start the thread that starts VMs ahead");
    a->has_warmer = 1;
    return 0;
}

static void agent_warmer_stop(struct agent *a)
{
    if (!a->has_warmer)
        return;
    pthread_mutex_lock(&a->lock);
    a->stopping = 1;
    pthread_cond_broadcast(&a->want_cv);
    pthread_mutex_unlock(&a->lock);
    pthread_join(a->warmer, NULL);
    a->has_warmer = 0;
}


static int agent_failover_open(struct agent *a)
{
    const struct failover_host host = {
        .arg = a,
        .tasks = agent_host_tasks,
        .reserve = agent_host_reserve,
        .unreserve = agent_host_unreserve,
        .restore = agent_host_restore,
        .add = agent_host_add,
        .successor_of = a->pre ? agent_host_successor_of : NULL,
    };
    int rc = failover_open(&a->fo, a->cfg, a->env.store, &host);
    if (rc == 0) {
        a->env.may_commit = failover_may_commit;
        a->env.upload_begin = failover_upload_begin;
        a->env.upload_end = failover_upload_end;
        a->env.gc_begin = failover_gc_begin;
        a->env.gc_end = failover_gc_end;
        a->env.mtbf_s = failover_mtbf_s;
        a->env.cluster_arg = a->fo;
    }
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
    if (!(a->warm_tried = json_object())) {
        free(a);
        return err_set(VK_ENOMEM, "out of memory");
    }
    a->lock_fd = a->listen_fd = a->stop_pipe[0] = a->stop_pipe[1] = -1;
    pthread_mutex_init(&a->lock, NULL);
    pthread_cond_init(&a->warm_cv, NULL);
    pthread_cond_init(&a->want_cv, NULL);
    a->env.cfg = cfg;
    a->env.tasks_dir = util_fmt("%s/tasks", cfg->state_dir);
    a->env.blob_dir = util_fmt("%s/blobs", cfg->state_dir);
    a->env.logs_dir = util_fmt("%s/logs", cfg->state_dir);
    rc = util_private_dir(cfg->state_dir);
    if (rc == 0)
        rc = agent_lock_state(a);
    if (rc == 0)
        rc = util_mkdir_p(a->env.tasks_dir, 0700);
    if (rc == 0)
        rc = a->env.logs_dir ? util_private_dir(a->env.logs_dir)
                             : err_set(VK_ENOMEM, "out of memory");
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
            .retry_base_ms = UTIL_RETRY_BASE_MS,
            .forced_codec = codec_by_name(cfg->codec),
            .storage_cost = cfg->storage_cost,
            .no_dedup = cfg->whole,
        };
        rc = repo_open(&a->env.repo, a->env.store, &rcfg);
    }
    if (rc == 0 && cfg->cluster && cfg->prestage && cfg->prestage_vm)
        rc = agent_warmer_start(a);
    if (rc == 0 && cfg->cluster && cfg->prestage)
        rc = prestage_open(&a->pre, a->env.repo, a->env.store, cfg->state_dir, a->env.blob_dir,
                          cfg->renew_ms, a->has_warmer ? agent_prestaged : NULL, a);
    if (rc == 0 && cfg->cluster)
        rc = agent_failover_open(a);
    if (rc == 0)
        rc = agent_adopt_all(a);
    a->adopted = rc == 0;
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
    if (rc == 0 && a->fo)
        rc = failover_start(a->fo);
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

int agent_stop_fd(struct agent *a)
{
    int fd = fcntl(a->stop_pipe[1], F_DUPFD_CLOEXEC, 0);
    /* non-blocking: a burst of signals that fills the pipe never blocks a handler */
    if (fd < 0 || fcntl(fd, F_SETFL, O_NONBLOCK) < 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return err_errno(e, "cannot duplicate the agent's stop pipe");
    }
    return fd;
}

static int agent_busy(struct agent *a)
{
    int busy = 0;
    for (size_t i = 0; i < a->n_tasks; i++)
        busy |= task_busy(a->tasks[i]);
    return busy;
}

void agent_free(struct agent *a)
{
    if (!a)
        return;
    a->stopping = 1;
    if (a->sched)
        pthread_join(a->sched, NULL);
    failover_stop(a->fo); /* its threads and take-overs, which hold pointers to a */
    /* Every thread is joined before what it uses is freed: the warmer reads
     * the task table and its fetches read prestage's cache of packs
     * (repo_set_cache). Prestage's last round may still hand it work, which
     * the stopped warmer leaves in warm_want (freed below). */
    agent_warmer_stop(a);
    while (atomic_load(&a->policy_jobs) > 0) /* they hold tasks: checkpoints are bounded */
        usleep(50000);
    if (a->httpd)
        MHD_stop_daemon(a->httpd);
    peer_table_free(a->peers);
    pthread_mutex_lock(&a->lock); /* the last take-over to unreserve did so under it */
    free(a->starting);
    a->starting = NULL;
    a->n_starting = 0;
    pthread_mutex_unlock(&a->lock);
    for (int i = 0; i < 600 && agent_busy(a); i++) /* let uploads finish, 60 s at most */
        usleep(100000);
    for (size_t i = 0; i < a->n_tasks; i++) {
        if (task_busy(a->tasks[i])) /* its thread still uses it: the exit frees it */
            log_warn("task %s: its upload or merge still runs; leaving it to the exit",
                     task_id(a->tasks[i]));
        else
            task_free(a->tasks[i]);
    }
    free(a->tasks);
    failover_free(a->fo);
    prestage_free(a->pre); /* failover, which feeds it, is stopped */
    for (size_t i = 0; i < a->n_warm; i++) /* no take-over here will need them */
        task_warm_drop(a->warm[i].t);
    free(a->warm);
    json_decref(a->warm_tried);
    json_decref(a->warm_want);
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
    free(a->env.logs_dir);
    pthread_mutex_destroy(&a->lock);
    pthread_cond_destroy(&a->warm_cv);
    pthread_cond_destroy(&a->want_cv);
    free(a);
}
