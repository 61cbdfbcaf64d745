#include "agent.h"

#include "ckpt.h"
#include "err.h"
#include "gc.h"
#include "log.h"
#include "manifest.h"
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
#include <unistd.h>

#define AGENT_MAX_BODY (1 << 20)

struct agent {
    const struct cfg *cfg;
    struct task_env env;
    int lock_fd, listen_fd, stop_pipe[2];
    struct MHD_Daemon *httpd;
    pthread_mutex_t lock; /* guards the task table */
    struct task **tasks;  /* live and removed tasks; freed at exit only */
    size_t n_tasks;
    pthread_t sched;
    volatile int stopping;
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

static int agent_add(struct agent *a, struct task *t)
{
    pthread_mutex_lock(&a->lock);
    struct task **nt = realloc(a->tasks, (a->n_tasks + 1) * sizeof(*nt));
    if (nt) {
        a->tasks = nt;
        a->tasks[a->n_tasks++] = t;
    }
    pthread_mutex_unlock(&a->lock);
    return nt ? 0 : err_set(VK_ENOMEM, "out of memory");
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
    if (!text)
        text = strdup("{\"error\": \"out of memory\"}");
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
    struct task *t;
    int rc;

    if (sp.accel && strcmp(sp.accel, "kvm") && strcmp(sp.accel, "tcg"))
        return agent_send_err(c, err_set(VK_EINVAL, "accel must be kvm or tcg, not '%s'", sp.accel));
    if (sp.mode && strcmp(sp.mode, "cow") && strcmp(sp.mode, "stop-copy"))
        return agent_send_err(c, err_set(VK_EINVAL, "mode must be cow or stop-copy, not '%s'",
                                         sp.mode));
    if (sp.memory_mib < 16 || sp.vcpus < 1 || sp.first_s < 0 || sp.every_s < 0)
        return agent_send_err(c, err_set(VK_EINVAL, "memory must be >= 16 MiB, vcpus >= 1, "
                                                    "checkpoint times >= 0"));
    if (sp.id && agent_find(a, sp.id))
        return agent_send_err(c, err_set(VK_EEXISTS, "task %s already exists on this node",
                                         sp.id));
    rc = task_run(&a->env, &sp, &t);
    if (rc == 0)
        rc = agent_add(a, t);
    if (rc < 0)
        return agent_send_err(c, rc);
    return agent_send(c, 201, task_json(t));
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
    return agent_send(c, 200, json_pack("{s:o, s:s, s:s}", "tasks", arr, "store",
                                        store_uri(a->env.store), "state_dir", a->cfg->state_dir));
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
    if (seq < 0)
        return agent_send_err(c, err_set(VK_EINVAL, "checkpoint number must be positive"));
    if (seq == 0 && json_is_true(json_object_get(body, "latest_intact")))
        rc = agent_restore_intact(a, t, id, agent_jstr(body, "accel"), &out);
    else
        rc = task_restore(&a->env, t, id, (uint64_t)seq, agent_jstr(body, "accel"), &out);
    if (rc == 0 && !t)
        rc = agent_add(a, out);
    if (rc < 0)
        return agent_send_err(c, rc);
    return agent_send(c, 200, task_json(out));
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
    int rc = grace < 0 ? err_set(VK_EINVAL, "grace must be >= 0 seconds")
                       : gc_run(a->env.repo, grace, &g);
    return rc < 0 ? agent_send_err(c, rc) : agent_send(c, 200, gc_result_json(&g));
}

static enum MHD_Result agent_task_op(struct agent *a, struct MHD_Connection *c, const char *method,
                                     const char *id, const char *op, json_t *body)
{
    struct task *t = agent_find(a, id);
    uint64_t seq = 0;
    int rc;

    if (!strcmp(op, "restore") && !strcmp(method, "POST"))
        return agent_restore(a, c, id, body);
    if (!t)
        return agent_send_err(c, err_set(VK_ENOTFOUND, "no task '%s' on this node", id));
    if (!op[0] && !strcmp(method, "GET"))
        return agent_send(c, 200, task_json(t));
    if (!op[0] && !strcmp(method, "DELETE")) {
        rc = task_remove(t);
        return rc < 0 ? agent_send_err(c, rc) : agent_send(c, 200, json_pack("{s:s}", "removed", id));
    }
    if (!strcmp(op, "checkpoint") && !strcmp(method, "POST")) {
        rc = task_checkpoint(t, agent_jstr(body, "mode"), &seq);
        return rc < 0 ? agent_send_err(c, rc)
                      : agent_send(c, 202, json_pack("{s:s, s:I}", "task", id, "seq", (json_int_t)seq));
    }
    if (!strcmp(op, "kill") && !strcmp(method, "POST")) {
        rc = task_kill(t);
        return rc < 0 ? agent_send_err(c, rc) : agent_send(c, 200, task_json(t));
    }
    return agent_send_err(c, err_set(VK_ENOTFOUND, "no such request: %s /v1/tasks/%s/%s", method,
                                     id, op));
}

/* Splits "/v1/<kind>/<id>[/<rest>]". */
static int agent_route(const char *url, const char *kind, char *id, size_t idlen, const char **rest)
{
    size_t k = strlen(kind);
    const char *p, *slash;
    if (strncmp(url, "/v1/", 4) || strncmp(url + 4, kind, k) || url[4 + k] != '/')
        return 0;
    p = url + 5 + k;
    slash = strchr(p, '/');
    size_t n = slash ? (size_t)(slash - p) : strlen(p);
    if (n == 0 || n >= idlen)
        return 0;
    memcpy(id, p, n);
    id[n] = '\0';
    *rest = slash ? slash + 1 : "";
    return 1;
}

static enum MHD_Result agent_dispatch(struct agent *a, struct MHD_Connection *c, const char *url,
                                      const char *method, json_t *body)
{
    char id[128];
    const char *rest;
    char *end;

    if (!strcmp(url, "/v1/tasks") && !strcmp(method, "GET"))
        return agent_list(a, c);
    if (!strcmp(url, "/v1/tasks") && !strcmp(method, "POST"))
        return agent_run(a, c, body);
    if (!strcmp(url, "/v1/verify") && !strcmp(method, "GET"))
        return agent_verify_all(a, c);
    if (!strcmp(url, "/v1/gc") && !strcmp(method, "POST"))
        return agent_gc(a, c, body);
    if (agent_route(url, "tasks", id, sizeof(id), &rest))
        return agent_task_op(a, c, method, id, rest, body);
    if (agent_route(url, "checkpoints", id, sizeof(id), &rest) && !strcmp(method, "GET")) {
        if (!rest[0])
            return agent_checkpoints(a, c, id);
        uint64_t seq = strtoull(rest, &end, 10);
        if (!strcmp(end, "/verify"))
            return agent_verify(a, c, id, seq);
        if (!*end && seq > 0)
            return agent_show(a, c, id, seq);
    }
    if (agent_route(url, "verify", id, sizeof(id), &rest) && !strcmp(method, "GET"))
        return agent_verify(a, c, id, 0);
    return agent_send_err(c, err_set(VK_ENOTFOUND, "no such request: %s %s", method, url));
}

static enum MHD_Result agent_handler(void *cls, struct MHD_Connection *c, const char *url,
                                     const char *method, const char *version,
                                     const char *upload_data, size_t *upload_size, void **ctx)
{
    struct agent *a = cls;
    struct agent_req *req = *ctx;
    json_t *body = NULL;
    enum MHD_Result ret;
    (void)version;

    if (!req) {
        req = calloc(1, sizeof(*req));
        *ctx = req;
        return req ? MHD_YES : MHD_NO;
    }
    if (*upload_size) {
        if (req->len + *upload_size > AGENT_MAX_BODY) {
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
    if (req->too_big)
        return agent_send_err(c, err_set(VK_EINVAL, "request body over %d bytes", AGENT_MAX_BODY));
    if (req->len) {
        json_error_t jerr;
        body = json_loadb(req->body, req->len, 0, &jerr);
        if (!json_is_object(body)) {
            json_decref(body);
            return agent_send_err(c, err_set(VK_EINVAL, "request body is not a JSON object: %s",
                                             jerr.text));
        }
    } else {
        body = json_object();
    }
    ret = agent_dispatch(a, c, url, method, body);
    json_decref(body);
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

struct agent_job {
    struct task *t;
};

static void *agent_policy_checkpoint(void *arg)
{
    struct task *t = arg;
    uint64_t seq;
    if (task_checkpoint(t, NULL, &seq) < 0)
        log_error("task %s: periodic checkpoint failed: %s", task_id(t), err_msg());
    return NULL;
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
        for (size_t i = 0; copy && i < n; i++) {
            pthread_t th;
            if (task_poll(copy[i]) && pthread_create(&th, NULL, agent_policy_checkpoint, copy[i]) == 0)
                pthread_detach(th);
        }
        free(copy);
        usleep(100000);
    }
    return NULL;
}

/* ---- start and stop -------------------------------------------------------------- */

static int agent_lock_state(struct agent *a)
{
    char *path = util_fmt("%s/vmckptd.lock", a->cfg->state_dir);
    char pid[32] = "";
    int rc = 0;

    a->lock_fd = path ? open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644) : -1;
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

static int agent_listen(struct agent *a)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    const char *path = a->cfg->socket;
    if (strlen(path) >= sizeof(sa.sun_path))
        return err_set(VK_EINVAL, "socket path too long: %s", path);
    strcpy(sa.sun_path, path);
    unlink(path); /* stale: we hold the state lock */
    a->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (a->listen_fd < 0 || bind(a->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(a->listen_fd, 64) < 0)
        return err_errno(errno, "cannot listen on %s", path);
    return 0;
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
    a->env.tasks_dir = util_fmt("%s/tasks", cfg->state_dir);
    a->env.blob_dir = util_fmt("%s/blobs", cfg->state_dir);
    rc = util_mkdir_p(cfg->state_dir, 0755);
    if (rc == 0)
        rc = agent_lock_state(a);
    if (rc == 0)
        rc = util_mkdir_p(a->env.tasks_dir, 0755);
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
        a->httpd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION,
                                    0, NULL, NULL, agent_handler, a, MHD_OPTION_LISTEN_SOCKET,
                                    a->listen_fd, MHD_OPTION_NOTIFY_COMPLETED, agent_done, a,
                                    MHD_OPTION_END);
        if (!a->httpd)
            rc = err_set(VK_EIO, "cannot start the HTTP server on %s", cfg->socket);
    }
    if (rc == 0 && pthread_create(&a->sched, NULL, agent_sched, a) != 0)
        rc = err_set(VK_ENOMEM, "cannot start the scheduler thread");
    if (rc < 0) {
        a->stopping = 1;
        agent_free(a);
        return rc;
    }
    log_info("vmckptd %d: state %s, store %s, listening on %s, %zu task(s) known", (int)getpid(),
             cfg->state_dir, store_uri(a->env.store), cfg->socket, a->n_tasks);
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
    if (a->httpd)
        MHD_stop_daemon(a->httpd);
    for (int i = 0; i < 600 && agent_busy(a); i++) /* let uploads finish, 60 s at most */
        usleep(100000);
    for (size_t i = 0; i < a->n_tasks; i++)
        task_free(a->tasks[i]);
    free(a->tasks);
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
