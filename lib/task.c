#include "task.h"

#include "automode.h"
#include "catalog.h"
#include "ckpt.h"
#include "cluster.h"
#include "err.h"
#include "gc.h"
#include "img.h"
#include "interval.h"
#include "log.h"
#include "manifest.h"
#include "memkeep.h"
#include "qmp.h"
#include "restart.h"
#include "runlog.h"
#include "testhook.h"
#include "util.h"
#include "vm.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TASK_START_TIMEOUT_MS 30000
#define TASK_LOAD_TIMEOUT_MS (10 * 60 * 1000)
/* A VM is started ahead only while this much memory stays available beside
 * its own: its memory is allocated at once. */
#define TASK_WARM_SPARE_MIB 1024
#define TASK_MERGE_TIMEOUT_MS (10 * 60 * 1000) /* a merge of layers, at most */

/* A sealed local layer of the running VM's chain. */
struct task_layer {
    char *path;
    uint64_t gen;          /* its number: layers are sealed 1, 2, 3 ... (never reused) */
    int committed;         /* a committed checkpoint holds its content */
    struct stream_ref obj; /* not committed: stored by a try that failed (else name NULL) */
};

struct task {
    pthread_mutex_t lock;
    const struct task_env *env;
    char *id, *dir, *run_dir;
    int run;
    /* The VM's shape, fixed for the task's life. */
    int memory_mib, vcpus, first_s, every_s;
    char *machine, *accel, *append, *mode;
    char *kernel, *initrd, *base;
    char base_fmt[16];
    struct stream_ref kernel_obj, initrd_obj, base_obj; /* name NULL until stored */
    struct task_layer *layers; /* the running chain's sealed layers, oldest first */
    size_t n_layers;
    uint64_t next_gen; /* the top's number once sealed (its file: top-<next_gen>.qcow2) */
    char *top;         /* the delta the VM writes to */
    /* Committed layers merged into the one below in the running VM (block-
     * commit), bounding its chain: one merge at a time, never beside a
     * snapshot (both use qmp, and QEMU refuses a seal during the job). */
    int merging;
    pthread_cond_t idle; /* signalled when a merge ends */
    unsigned long local_merges;
    unsigned long room_refusals; /* checkpoints refused: no room for the memory image */
    struct interval iv;          /* checkpoint_every = auto: what the checkpoints cost */
    /* [task] restart: a crashed VM restored again on this node. */
    struct restart rs;
    int64_t restart_due_us; /* monotonic; 0: none planned */
    int restarting;         /* the agent restores it now */
    int no_restart;         /* killed on purpose (vmckpt kill, a fence): not restarted */
    int moving;             /* task_freeze: a planned move takes its last checkpoint */
    pid_t pid;
    uint64_t pid_start; /* the VM's start time (/proc): a pid alone may be reused */
    struct qmp *qmp;
    enum task_state state;
    /* Checkpoints: one snapshot at a time (it owns qmp); uploads queue up and
     * one thread per task takes them in order, so manifests commit in order. */
    int snapping;
    int restoring; /* a restore fetches into this task, without its lock */
    uint64_t snap_seq;
    struct task_upload *queue; /* waiting for the uploader, oldest first */
    int uploading;             /* the uploader thread runs */
    uint64_t up_seq;           /* checkpoint being uploaded, 0 if none */
    size_t pending;            /* checkpoints begun and not yet ended */
    uint64_t next_seq, failed_seq;
    uint64_t up_done, up_total;
    int64_t up_start_us, next_due_us;
    /* Protection (protect.h): when the VM's state was last a committed
     * checkpoint's (monotonic), the last checkpoint's time from its start to
     * its commit, and the checkpoints committed since the VM last started. */
    int64_t covered_us, last_take_us;
    unsigned long run_commits;
    /* Last committed checkpoint. */
    uint64_t last_seq;
    struct manifest *last; /* NULL when only its number is known (after an agent restart) */
    char *last_error;
    uint64_t restored_from;
    int64_t restore_fetch_us, restore_load_us;
    uint64_t restore_store_bytes, restore_cache_bytes; /* what the last restore read, and where */
    uint64_t restore_local_bytes; /* ... and from the memory kept on this node (memkeep.h) */
    int restore_warm;  /* the last restore took over a VM started ahead (task_warm) */
    uint64_t warm_seq; /* a warm task: the checkpoint its VM was started for; else 0 */
    struct automode am; /* mode auto: what this task's checkpoints showed */
};

const char *task_id(const struct task *t) { return t->id; }

static const char *const task_state_names[] = {"stopped", "running", "crashed", "failed",
                                               "removed"};

const char *task_state_name(enum task_state s)
{
    return (unsigned)s < sizeof(task_state_names) / sizeof(*task_state_names)
               ? task_state_names[s]
               : "?";
}

/* A state read back from task.json; an unknown name is a task without a VM. */
static enum task_state task_state_parse(const char *s)
{
    for (size_t i = 0; i < sizeof(task_state_names) / sizeof(*task_state_names); i++)
        if (!strcmp(s, task_state_names[i]))
            return (enum task_state)i;
    return TASK_STOPPED;
}

/* Whether the task's VM runs: its pid, started when noted. */
static int task_vm_alive(struct task *t)
{
    return t->pid > 0 && vm_alive(t->pid) &&
           (!t->pid_start || util_proc_start(t->pid) == t->pid_start);
}

/* ---- small helpers ------------------------------------------------------ */

static void task_crashed(struct task *t, const char *how);

static void task_set_error(struct task *t, const char *msg)
{
    free(t->last_error);
    t->last_error = msg ? strdup(msg) : NULL;
}

static void task_free_layers(struct task *t)
{
    for (size_t i = 0; i < t->n_layers; i++) {
        free(t->layers[i].path);
        free(t->layers[i].obj.name);
    }
    free(t->layers);
    t->layers = NULL;
    t->n_layers = 0;
}

/* Appends a sealed layer; obj (may be NULL) is copied. */
static int task_add_layer(struct task *t, const char *path, uint64_t gen, int committed,
                          const struct stream_ref *obj)
{
    struct task_layer *nl = realloc(t->layers, (t->n_layers + 1) * sizeof(*nl));
    if (!nl)
        return err_set(VK_ENOMEM, "out of memory");
    t->layers = nl;
    nl += t->n_layers;
    memset(nl, 0, sizeof(*nl));
    nl->gen = gen;
    nl->committed = committed;
    if (!(nl->path = strdup(path)) || (obj && stream_ref_copy(&nl->obj, obj) < 0)) {
        free(nl->path);
        return err_set(VK_ENOMEM, "out of memory");
    }
    t->n_layers++;
    return 0;
}

void task_free(struct task *t)
{
    if (!t)
        return;
    qmp_free(t->qmp);
    free(t->id);
    free(t->dir);
    free(t->run_dir);
    free(t->machine);
    free(t->accel);
    free(t->append);
    free(t->mode);
    free(t->kernel);
    free(t->initrd);
    free(t->base);
    stream_ref_clear(&t->kernel_obj);
    stream_ref_clear(&t->initrd_obj);
    stream_ref_clear(&t->base_obj);
    task_free_layers(t);
    free(t->top);
    free(t->last_error);
    manifest_free(t->last);
    pthread_cond_destroy(&t->idle);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

static struct task *task_new(const struct task_env *env, const char *id)
{
    struct task *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    pthread_condattr_t ca; /* waits measured on the monotonic clock: the wall one can step */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&t->lock, NULL);
    pthread_cond_init(&t->idle, &ca);
    pthread_condattr_destroy(&ca);
    t->env = env;
    t->next_gen = 1;
    t->id = strdup(id);
    t->dir = util_fmt("%s/%s", env->tasks_dir, id);
    t->state = TASK_STOPPED;
    if (!t->id || !t->dir) {
        task_free(t);
        return NULL;
    }
    return t;
}

static char *task_run_path(const struct task *t, const char *file)
{
    return util_fmt("%s/%s", t->run_dir, file);
}

/* ---- local state (task.json) -------------------------------------------- */

static json_t *task_obj_json(const struct stream_ref *o)
{
    if (!o->name)
        return json_null();
    return json_pack("{s:s, s:I, s:s}", "name", o->name, "size", (json_int_t)o->size, "sha256",
                     o->sha256);
}

static void task_obj_from(const json_t *j, struct stream_ref *o)
{
    const char *name = json_string_value(json_object_get(j, "name"));
    const char *sha = json_string_value(json_object_get(j, "sha256"));
    memset(o, 0, sizeof(*o));
    if (!name || !sha || strlen(sha) != 64)
        return;
    o->name = strdup(name);
    o->size = (uint64_t)json_integer_value(json_object_get(j, "size"));
    memcpy(o->sha256, sha, UTIL_SHA256_HEX);
}

/* Writes task.json atomically; called with t->lock held. */
static int task_save(struct task *t)
{
    json_t *layers = json_array(), *j;
    char *path = util_fmt("%s/task.json", t->dir), *text;
    int rc;

    for (size_t i = 0; i < t->n_layers; i++)
        json_array_append_new(layers, json_pack("{s:s, s:I, s:b, s:o}", "path",
                                                t->layers[i].path, "gen",
                                                (json_int_t)t->layers[i].gen, "committed",
                                                t->layers[i].committed, "object",
                                                task_obj_json(&t->layers[i].obj)));
    j = json_pack("{s:s, s:i, s:s, s:i, s:i, s:i, s:i, s:s, s:s, s:s, s:s,"
                  " s:s, s:s, s:s, s:s, s:o, s:o, s:o, s:o, s:s, s:i, s:s, s:I, s:I}",
                  "id", t->id, "run", t->run, "run_dir", t->run_dir, "memory_mib", t->memory_mib,
                  "vcpus", t->vcpus, "first_s", t->first_s, "every_s", t->every_s, "machine",
                  t->machine, "accel", t->accel, "append", t->append, "mode", t->mode, "kernel",
                  t->kernel, "initrd", t->initrd, "base", t->base, "base_format", t->base_fmt,
                  "kernel_obj", task_obj_json(&t->kernel_obj), "initrd_obj",
                  task_obj_json(&t->initrd_obj), "base_obj", task_obj_json(&t->base_obj),
                  "layers", layers, "top", t->top, "pid", (int)t->pid, "state", task_state_name(t->state),
                  "next_seq", (json_int_t)t->next_seq, "last_seq", (json_int_t)t->last_seq);
    if (j && t->pid_start)
        json_object_set_new(j, "pid_start", json_integer((json_int_t)t->pid_start));
    if (j)
        json_object_set_new(j, "next_gen", json_integer((json_int_t)t->next_gen));
    if (j && t->no_restart)
        json_object_set_new(j, "no_restart", json_true());
    if (j && t->covered_us) /* wall clock: an agent restarted later reads it */
        json_object_set_new(j, "covered_wall_us",
                            json_integer(util_wall_us() - (util_now_us() - t->covered_us)));
    text = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
    rc = (path && text) ? util_write_file_atomic(path, text, strlen(text))
                        : err_set(VK_ENOMEM, "cannot encode state of task %s", t->id);
    if (rc < 0)
        log_error("task %s: %s", t->id, err_msg());
    json_decref(j);
    free(text);
    free(path);
    return rc;
}

static const char *task_jstr_or(const json_t *j, const char *key, const char *def)
{
    const char *s = json_string_value(json_object_get(j, key));
    return s ? s : def;
}

static char *task_jstr(const json_t *j, const char *key)
{
    return strdup(task_jstr_or(j, key, ""));
}

static int task_load(struct task *t)
{
    char *path = util_fmt("%s/task.json", t->dir), *text = NULL;
    json_t *j = NULL, *layer;
    size_t i;
    int rc = util_read_file(path, &text, NULL);

    if (rc == 0 && !(j = json_loads(text, 0, NULL)))
        rc = err_set(VK_ECORRUPT, "state file %s is damaged", path);
    if (rc < 0)
        goto out;
    t->run = (int)json_integer_value(json_object_get(j, "run"));
    t->run_dir = task_jstr(j, "run_dir");
    t->memory_mib = (int)json_integer_value(json_object_get(j, "memory_mib"));
    t->vcpus = (int)json_integer_value(json_object_get(j, "vcpus"));
    t->first_s = (int)json_integer_value(json_object_get(j, "first_s"));
    t->every_s = (int)json_integer_value(json_object_get(j, "every_s"));
    json_int_t cw = json_integer_value(json_object_get(j, "covered_wall_us"));
    if (cw > 0) { /* (a clock stepped back counts as no time) */
        int64_t ago = util_wall_us() - (int64_t)cw;
        t->covered_us = util_now_us() - (ago > 0 ? ago : 0);
    }
    t->machine = task_jstr(j, "machine");
    t->accel = task_jstr(j, "accel");
    t->append = task_jstr(j, "append");
    t->mode = task_jstr(j, "mode");
    t->kernel = task_jstr(j, "kernel");
    t->initrd = task_jstr(j, "initrd");
    t->base = task_jstr(j, "base");
    snprintf(t->base_fmt, sizeof(t->base_fmt), "%s",
             task_jstr_or(j, "base_format", "qcow2"));
    task_obj_from(json_object_get(j, "kernel_obj"), &t->kernel_obj);
    task_obj_from(json_object_get(j, "initrd_obj"), &t->initrd_obj);
    task_obj_from(json_object_get(j, "base_obj"), &t->base_obj);
    json_array_foreach(json_object_get(j, "layers"), i, layer)
    {
        /* A state file from before layer numbers: layers counted 1, 2, ...
         * and taken as not committed (named again after the committed chain,
         * which is harmless: the same writes in the same order). */
        struct stream_ref o;
        uint64_t gen = (uint64_t)json_integer_value(json_object_get(layer, "gen"));
        task_obj_from(json_object_get(layer, "object"), &o);
        rc = task_add_layer(t, task_jstr_or(layer, "path", ""), gen ? gen : i + 1,
                            json_is_true(json_object_get(layer, "committed")), o.name ? &o : NULL);
        free(o.name);
        if (rc < 0)
            goto out;
    }
    t->top = task_jstr(j, "top");
    t->next_gen = (uint64_t)json_integer_value(json_object_get(j, "next_gen"));
    t->no_restart = json_is_true(json_object_get(j, "no_restart"));
    if (t->next_gen <= (t->n_layers ? t->layers[t->n_layers - 1].gen : 0))
        t->next_gen = (t->n_layers ? t->layers[t->n_layers - 1].gen : 0) + 1;
    t->pid = (pid_t)json_integer_value(json_object_get(j, "pid"));
    t->pid_start = (uint64_t)json_integer_value(json_object_get(j, "pid_start"));
    if (t->pid > 0 && t->pid_start && util_proc_start(t->pid) != t->pid_start) {
        log_warn("task %s: its VM pid %d is gone (that pid is another process now)", t->id,
                 (int)t->pid);
        t->pid = 0; /* never signal, nor adopt, a process that is not its VM */
    }
    err_clear();
    t->state = task_state_parse(task_jstr_or(j, "state", "stopped"));
    t->next_seq = (uint64_t)json_integer_value(json_object_get(j, "next_seq"));
    t->last_seq = (uint64_t)json_integer_value(json_object_get(j, "last_seq"));
out:
    json_decref(j);
    free(text);
    free(path);
    return rc;
}

/* ---- starting the VM ---------------------------------------------------- */

/* Kills a VM that did not make it to running. Called with t->lock held. */
static void task_stop_vm(struct task *t)
{
    if (task_vm_alive(t))
        vm_kill(t->pid, SIGKILL, 5000);
    t->pid = 0;
    qmp_free(t->qmp);
    t->qmp = NULL;
}

static int64_t task_every_us(const struct task *t, char *why, size_t len);

/* Starts the checkpoint schedule of a VM that runs (again: a restart, a
 * restore, a take-over, a move, an adoption): the first checkpoint comes
 * checkpoint_first seconds on, or one interval on when that is 0; none
 * when the task has neither. t->lock held. */
static void task_schedule_start(struct task *t)
{
    int64_t us = t->first_s > 0 ? (int64_t)t->first_s * 1000000 : task_every_us(t, NULL, 0);
    t->next_due_us = us > 0 ? util_now_us() + us : 0;
}

/* Lets a started (paused) VM run. Called with t->lock held. */
static int task_resume_vm(struct task *t)
{
    int rc = qmp_exec(t->qmp, "cont", NULL, NULL, 30000);
    if (rc < 0) {
        task_stop_vm(t);
        return rc;
    }
    t->state = TASK_RUNNING;
    t->covered_us = util_now_us(); /* a fresh boot, or a checkpoint's state */
    t->run_commits = 0;
    task_schedule_start(t);
    return 0;
}

/* The error of a memory load that failed with rc: a QEMU that has exited
 * left the reason in its log. wait: it is on its way out, so wait for it to
 * get there (up to 10 s: a loaded machine is slow to let a process exit). */
static int task_load_error(struct task *t, int rc, int wait)
{
    for (int i = 0; wait && i < 500 && task_vm_alive(t); i++)
        usleep(20000);
    if (task_vm_alive(t))
        return rc;
    char *log = task_run_path(t, "qemu.log");
    char *tail = log ? util_file_tail(log, 600) : NULL;
    rc = err_set(VK_EQEMU, "QEMU could not load the checkpoint's memory: %s",
                 tail && tail[0] ? tail : "no output");
    free(tail);
    free(log);
    return rc;
}

/* Waits until QEMU has loaded the memory stream it was given; a QEMU that
 * fails the load is waited for, and its last words make the error. Called
 * with t->lock held; the VM is killed on an error. */
static int task_wait_loaded(struct task *t, atomic_int *feed_failed)
{
    int64_t deadline = util_now_us() + (int64_t)TASK_LOAD_TIMEOUT_MS * 1000;
    int rc, lost; /* lost: QEMU stopped answering, it is on its way out */
    for (;;) { /* QEMU reports "inmigrate" until the whole stream is loaded */
        json_t *st = NULL;
        rc = qmp_exec(t->qmp, "query-status", NULL, &st, 30000);
        const char *s = rc == 0 ? json_string_value(json_object_get(st, "status")) : NULL;
        int loading = s && !strcmp(s, "inmigrate");
        json_decref(st);
        lost = rc < 0;
        if (rc < 0 || !loading)
            break;
        /* QEMU 7.2 can spin forever on a stream that ends early: do not wait for it. */
        if (feed_failed && *feed_failed) {
            rc = err_set(VK_EIO, "the memory stream failed");
            break;
        }
        if (util_now_us() > deadline) {
            rc = err_set(VK_ETIMEOUT, "QEMU did not finish loading the memory stream");
            break;
        }
        usleep(10000);
    }
    /* A QEMU that stopped answering, or a feed cut short by QEMU (a write
     * error: EPIPE), means QEMU is on its way out with the real reason in its
     * log. The feed may learn of it after QMP. */
    if (rc < 0) {
        rc = task_load_error(t, rc, lost || (feed_failed && *feed_failed == VK_EIO));
        task_stop_vm(t);
    }
    return rc;
}

/* Starts QEMU for t->run_dir and t->top, paused, optionally loading a memory
 * stream (returns once it is loaded; "defer": QEMU waits for one, its memory
 * allocated, see task_warm); connects QMP. Called with t->lock held. */
static int task_start_vm(struct task *t, const char *incoming, atomic_int *feed_failed)
{
    const struct cfg *c = t->env->cfg;
    char *qmp_path = task_run_path(t, "qmp.sock"), *serial = task_run_path(t, "serial.log");
    char *log = task_run_path(t, "qemu.log");
    int defer = incoming && !strcmp(incoming, "defer");
    struct vm_spec spec = {
        .qemu = c->qemu, .accel = t->accel, .machine = t->machine,
        .memory_mib = t->memory_mib, .vcpus = t->vcpus, .kernel = t->kernel,
        .initrd = t->initrd, .append = t->append, .disk = t->top, .qmp_path = qmp_path,
        .serial_path = serial, .log_path = log, .incoming = incoming, .prealloc = defer,
    };
    int rc;

    if (!qmp_path || !serial || !log) {
        rc = err_set(VK_ENOMEM, "out of memory");
        goto out;
    }
    rc = vm_start(&spec, &t->pid);
    t->pid_start = rc == 0 ? util_proc_start(t->pid) : 0;
    if (rc < 0)
        goto out;
    rc = vm_connect(t->pid, qmp_path, log, TASK_START_TIMEOUT_MS, &t->qmp);
    /* QEMU fails a stream it cannot load at once, and may be gone before
     * QMP's greeting: then it is the load that failed, in QEMU's words. */
    if (rc < 0 && incoming && !defer)
        rc = task_load_error(t, rc, rc != VK_ETIMEOUT);
    if (rc < 0)
        task_stop_vm(t);
    else if (incoming && !defer)
        rc = task_wait_loaded(t, feed_failed);
out:
    free(qmp_path);
    free(serial);
    free(log);
    return rc;
}

/* The first free run number of a task directory (run-1, run-2, ...). */
static int task_next_run(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int max = 0;
    while (d && (e = readdir(d)))
        if (!strncmp(e->d_name, "run-", 4) && atoi(e->d_name + 4) > max)
            max = atoi(e->d_name + 4);
    if (d)
        closedir(d);
    return max + 1;
}

/* Keeps the console log of t's current run among the task's kept logs
 * (runlog.h); a failure is logged, never fatal. */
static void task_keep_log(struct task *t)
{
    const struct cfg *c = t->env->cfg;
    char *serial = t->run_dir && t->run > 0 && t->env->logs_dir ? task_run_path(t, "serial.log")
                                                                 : NULL;
    if (serial && runlog_keep(t->env->logs_dir, t->id, t->run, serial,
                              (uint64_t)c->log_max_kib << 10, c->log_keep) < 0)
        log_warn("task %s: %s", t->id, err_msg());
    free(serial);
}

/* Notes a line in the console log of t's run, before the guest's own (QEMU
 * appends to it): where this run came from. */
static void task_log_note(struct task *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void task_log_note(struct task *t, const char *fmt, ...)
{
    char line[512], when[40];
    va_list ap;
    util_iso_time(util_wall_us(), when, sizeof(when));
    int n = snprintf(line, sizeof(line), "[vmckpt %s] task %s, run %d: ", when, t->id, t->run);
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof(line))
        vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    size_t len = strnlen(line, sizeof(line) - 2);
    line[len++] = '\n';
    char *serial = task_run_path(t, "serial.log");
    int fd = serial ? open(serial, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600)
                    : -1;
    if (fd < 0 || write(fd, line, len) != (ssize_t)len)
        log_warn("task %s: cannot note the run in its console log %s: %s", t->id,
                 serial ? serial : "", strerror(errno));
    if (fd >= 0)
        close(fd);
    free(serial);
}

/* Whether file name of a run directory is one of its logs: the console's,
 * QEMU's and the fence's (why the VM was killed), kept with the run. */
static int task_is_run_log(const char *name)
{
    return !strcmp(name, "serial.log") || !strcmp(name, "qemu.log") ||
           !strcmp(name, "fence.log");
}

/* Empties the run directories of t but its current one of all but their
 * logs: after a restore they hold a dead VM's disk layers and memory
 * images, which nothing reads again (the console logs are also kept apart,
 * bounded: runlog.h). */
static void task_drop_old_runs(struct task *t)
{
    DIR *d = opendir(t->dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (strncmp(e->d_name, "run-", 4) || atoi(e->d_name + 4) == t->run)
            continue;
        char *run = util_fmt("%s/%s", t->dir, e->d_name);
        DIR *rd = run ? opendir(run) : NULL;
        struct dirent *f;
        while (rd && (f = readdir(rd))) {
            if (!strcmp(f->d_name, ".") || !strcmp(f->d_name, "..") || task_is_run_log(f->d_name))
                continue;
            char *p = util_fmt("%s/%s", run, f->d_name);
            if (p && util_rm_rf(p) < 0)
                log_warn("task %s: cannot remove an old run's file: %s", t->id, err_msg());
            free(p);
        }
        if (rd)
            closedir(rd);
        free(run);
    }
    if (d)
        closedir(d);
}

static int task_new_run_dir(struct task *t)
{
    task_keep_log(t); /* the run that ends: a crash's last words stay readable */
    free(t->run_dir);
    t->run = task_next_run(t->dir);
    t->run_dir = util_fmt("%s/run-%d", t->dir, t->run);
    if (!t->run_dir)
        return err_set(VK_ENOMEM, "out of memory");
    if (strlen(t->run_dir) > 90)
        return err_set(VK_EINVAL, "state directory path too long for QEMU's sockets: %s",
                       t->run_dir);
    return util_mkdir_p(t->run_dir, 0700);
}

static uint64_t task_store_next_seq(struct task *t)
{
    uint64_t next = 1;
    if (catalog_next_seq(t->env->store, t->id, &next) < 0)
        err_clear(); /* the commit will say if that number is taken */
    return next;
}

static int task_abs_path(const char *path, const char *what, char **out)
{
    *out = realpath(path, NULL);
    if (!*out)
        return err_errno(errno, "%s %s", what, path);
    return 0;
}

int task_run(const struct task_env *env, const struct task_spec *sp, struct task **out)
{
    const struct cfg *c = env->cfg;
    struct task *t;
    uint64_t *seqs = NULL;
    size_t n = 0;
    int rc;

    *out = NULL;
    if (!util_valid_id(sp->id))
        return err_set(VK_EINVAL, "task id '%s' is not valid: use 1-64 letters, digits, '.', "
                                  "'_' or '-', not starting with '.'", sp->id ? sp->id : "");
    if (!sp->kernel || !sp->initrd || !sp->base)
        return err_set(VK_EINVAL, "task %s needs a base image, a kernel and an initrd "
                                  "(--base, --kernel, --initrd or [task] settings)", sp->id);
    rc = catalog_list(env->store, sp->id, &seqs, &n);
    free(seqs);
    if (rc < 0)
        return rc;
    if (n > 0)
        return err_set(VK_EEXISTS, "task %s already has %zu checkpoint(s) in %s: restore it "
                                   "(vmckpt restore %s) or pick another id",
                       sp->id, n, store_uri(env->store), sp->id);
    t = task_new(env, sp->id);
    if (!t)
        return err_set(VK_ENOMEM, "out of memory");
    t->memory_mib = sp->memory_mib;
    t->vcpus = sp->vcpus;
    t->first_s = sp->first_s;
    t->every_s = sp->every_s;
    t->machine = strdup(c->machine);
    t->accel = strdup(sp->accel ? sp->accel : c->accel);
    t->mode = strdup(sp->mode ? sp->mode : c->mode);
    t->append = util_fmt("%s vmckpt.work=%s", c->append, sp->work ? sp->work : "counter");
    rc = task_abs_path(sp->kernel, "kernel", &t->kernel);
    if (rc == 0)
        rc = task_abs_path(sp->initrd, "initrd", &t->initrd);
    if (rc == 0)
        rc = task_abs_path(sp->base, "base image", &t->base);
    if (rc == 0)
        rc = img_check_base(t->base, t->base_fmt, NULL);
    if (rc < 0)
        goto out_free;
    rc = util_mkdir_p(t->dir, 0700);
    if (rc == 0)
        rc = task_new_run_dir(t);
    if (rc < 0)
        goto out_free;
    t->top = util_fmt("%s/top-1.qcow2", t->run_dir);
    rc = img_create_overlay(t->top, t->base, t->base_fmt);
    if (rc < 0)
        goto out_rm;
    t->next_seq = 1;
    task_log_note(t, "started");
    rc = task_start_vm(t, NULL, NULL);
    if (rc == 0)
        rc = task_resume_vm(t);
    if (rc < 0)
        goto out_rm;
    task_save(t);
    log_info("task %s: running (pid %d, %d MiB, %s)", t->id, (int)t->pid, t->memory_mib,
             t->accel);
    *out = t;
    return 0;
out_rm:
    util_rm_rf(t->dir);
out_free:
    task_free(t);
    return rc;
}

/* Copies the VM shape of a checkpoint into t and sets its chain to the
 * fetched deltas. Called with t->lock held. */
static int task_take_manifest(struct task *t, const struct manifest *m, struct ckpt_local *l,
                              const char *accel)
{
    const struct cfg *c = t->env->cfg;
    int rc = 0;
#define TAKE(field, value)                                                                     \
    do {                                                                                       \
        free(t->field);                                                                        \
        t->field = (value);                                                                    \
    } while (0)
    TAKE(machine, strdup(m->machine));
    TAKE(append, strdup(m->append));
    TAKE(accel, strdup(accel ? accel : c->accel));
    TAKE(mode, strdup(m->policy_mode));
    TAKE(kernel, l->kernel);
    TAKE(initrd, l->initrd);
    TAKE(base, l->base);
#undef TAKE
    l->kernel = l->initrd = l->base = NULL;
    t->memory_mib = m->memory_mib;
    t->vcpus = m->vcpus;
    t->first_s = m->first_s;
    t->every_s = m->every_s;
    snprintf(t->base_fmt, sizeof(t->base_fmt), "%s", m->base_format);
    stream_ref_clear(&t->kernel_obj);
    stream_ref_clear(&t->initrd_obj);
    stream_ref_clear(&t->base_obj);
    rc = stream_ref_copy(&t->kernel_obj, &m->kernel);
    if (rc == 0)
        rc = stream_ref_copy(&t->initrd_obj, &m->initrd);
    if (rc == 0)
        rc = stream_ref_copy(&t->base_obj, &m->base);
    task_free_layers(t);
    for (size_t i = 0; rc == 0 && i < m->n_deltas; i++) /* m holds them all: committed */
        rc = task_add_layer(t, l->deltas[i], i + 1, 1, NULL);
    t->next_gen = m->n_deltas + 1; /* the top, top-<n+1>.qcow2 */
    return rc;
}

/* Feeds a checkpoint's memory stream to QEMU through a FIFO while chunks
 * arrive, so that loading overlaps fetching. */
struct task_feed {
    struct repo *repo;
    const struct stream_ref *obj;
    const struct memkeep_copy *local; /* a copy kept on this node, or NULL: the store */
    uint64_t local_bytes;
    const char *fifo;
    atomic_int stop;
    atomic_int failed; /* 0, or the feed's error code */
    int rc;
    char err[1024];
};

static void *task_feed_thread(void *arg)
{
    struct task_feed *f = arg;
    int fd = -1;
    while (!f->stop) { /* QEMU's reader may not be there yet */
        fd = open(f->fifo, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd >= 0 || errno != ENXIO)
            break;
        usleep(5000);
    }
    if (fd < 0) {
        f->rc = f->stop ? err_set(VK_EQEMU, "QEMU never read the memory stream")
                        : err_errno(errno, "cannot open %s", f->fifo);
    } else {
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
        f->rc = f->local ? memkeep_feed(f->local, fd, &f->local_bytes)
                         : repo_get_stream(f->repo, f->obj, fd, "memory");
        close(fd); /* EOF for QEMU; on an error it fails the load */
    }
    if (f->rc < 0) {
        snprintf(f->err, sizeof(f->err), "%s", err_msg());
        testhook_gate("VMCKPT_TEST_FEED_GATE", "failed"); /* tests: QMP learns first */
        f->failed = f->rc;
    }
    return NULL;
}

/* Gives a QEMU that waits with -incoming defer its memory stream and waits
 * until it is loaded. Called with t->lock held. */
static int task_load_into(struct task *t, const char *uri, atomic_int *feed_failed)
{
    int rc = qmp_exec(t->qmp, "migrate-incoming", json_pack("{s:s}", "uri", uri), NULL, 30000);
    if (rc < 0) {
        task_stop_vm(t);
        return rc;
    }
    return task_wait_loaded(t, feed_failed);
}

/* task_load_memory from local (a kept copy) or the store (local NULL). */
static int task_load_memory_from(struct task *t, const struct manifest *m,
                                 const struct memkeep_copy *local, uint64_t *local_bytes)
{
    struct task_feed f = {.repo = t->env->repo, .obj = &m->memory, .local = local};
    char *fifo = task_run_path(t, "memory.fifo"), *uri = NULL;
    pthread_t th;
    int rc;

    if (!fifo || !(uri = util_fmt("exec:cat '%s'", fifo))) {
        rc = err_set(VK_ENOMEM, "out of memory");
        goto out;
    }
    f.fifo = fifo;
    if (mkfifo(fifo, 0600) < 0) {
        rc = err_errno(errno, "cannot create %s", fifo);
        goto out;
    }
    if (pthread_create(&th, NULL, task_feed_thread, &f) != 0) {
        rc = err_set(VK_ENOMEM, "cannot start the memory feed");
        goto out_unlink;
    }
    if (t->warm_seq) /* QEMU waits already (task_warm) */
        rc = task_load_into(t, uri, &f.failed);
    else
        rc = task_start_vm(t, uri, &f.failed);
    f.stop = 1;
    pthread_join(th, NULL);
    /* The feed knows better what went wrong (a damaged chunk ...), unless it
     * only saw QEMU go away (a write error): then QEMU's own words stand. */
    if (f.rc < 0 && !(rc == VK_EQEMU && f.rc == VK_EIO)) {
        rc = err_set(f.rc, "%s", f.err);
        if (t->pid > 0)
            task_stop_vm(t);
    }
out_unlink:
    unlink(fifo);
out:
    *local_bytes = f.local_bytes;
    free(fifo);
    free(uri);
    return rc;
}

/* Starts the VM of a restore (or takes the one of a warm task) and loads m's
 * memory into it (paused): from the copy kept on this node when it is m's
 * (a restart here), else, or when that copy fails, from the store. Called
 * with t->lock held. */
static int task_load_memory(struct task *t, const struct manifest *m)
{
    struct memkeep_copy local;
    t->restore_local_bytes = 0;
    if (t->env->cfg->keep_local_mib == 0) /* none kept, none used */
        memkeep_drop(t->dir);
    else if (!t->warm_seq && memkeep_find(t->dir, m->seq, &m->memory, &local)) {
        int rc = task_load_memory_from(t, m, &local, &t->restore_local_bytes);
        memkeep_copy_clear(&local);
        if (rc == 0)
            return 0;
        log_warn("task %s: the memory of checkpoint %" PRIu64 " kept on this node did not load "
                 "(%s); reading it from the store", t->id, m->seq, err_msg());
        memkeep_drop(t->dir);
        t->restore_local_bytes = 0;
    }
    uint64_t none;
    return task_load_memory_from(t, m, NULL, &none);
}

/* ---- a VM started ahead for a take-over (task_warm) ----------------------- */

/* The overlay the restored VM writes to, on the newest fetched delta. */
static int task_make_top(struct task *t, const struct manifest *m, const struct ckpt_local *l)
{
    free(t->top);
    t->top = util_fmt("%s/top-%zu.qcow2", t->run_dir, m->n_deltas + 1);
    if (!t->top)
        return err_set(VK_ENOMEM, "out of memory");
    return img_create_overlay(t->top, l->deltas[m->n_deltas - 1], "qcow2");
}

static char *task_warm_marker(const struct task_env *env, const char *id)
{
    return util_fmt("%s/%s/warm.json", env->tasks_dir, id);
}

/* Notes the warm VM beside the task's directory: an agent that dies leaves
 * the QEMU running, and the next one must know it is not a task of its own. */
static int task_warm_mark(struct task *t)
{
    char *path = task_warm_marker(t->env, t->id), *text = NULL;
    json_t *j = json_pack("{s:i, s:I, s:I}", "pid", (int)t->pid, "pid_start",
                          (json_int_t)t->pid_start, "seq", (json_int_t)t->warm_seq);
    int rc = path && j && (text = json_dumps(j, JSON_COMPACT)) ? 0 : err_set(VK_ENOMEM, "out of memory");
    if (rc == 0)
        rc = util_write_file_atomic(path, text, strlen(text));
    json_decref(j);
    free(text);
    free(path);
    return rc;
}

static void task_warm_unmark(struct task *t)
{
    char *path = task_warm_marker(t->env, t->id);
    if (path)
        unlink(path);
    free(path);
}

/* Ends the warm VM of t and removes its run directory: t becomes a task with
 * nothing on this node, to be restored as usual. t->lock held. */
static void task_warm_cool(struct task *t)
{
    task_stop_vm(t);
    if (t->run_dir)
        util_rm_rf(t->run_dir);
    task_warm_unmark(t);
    t->warm_seq = 0;
}

int task_warm(const struct task_env *env, const char *id, uint64_t seq, struct task **out)
{
    struct manifest *m = NULL;
    struct ckpt_local local = {0};
    struct task *t;
    int rc;

    *out = NULL;
    if (!util_valid_id(id))
        return err_set(VK_EINVAL, "task id '%s' is not valid", id);
    if (!(t = task_new(env, id)))
        return err_set(VK_ENOMEM, "out of memory");
    if (access(t->dir, F_OK) == 0) {
        rc = err_set(VK_EEXISTS, "task %s has a directory on this node already (%s)", id, t->dir);
        task_free(t);
        return rc;
    }
    rc = catalog_load(env->store, id, seq, &m);
    int64_t room = cluster_memory_free_mib();
    if (rc == 0 && room - m->memory_mib < TASK_WARM_SPARE_MIB)
        rc = err_set(VK_ENOSPC, "no room on this node for the %d MiB of task %s's memory (%lld MiB "
                                "available, %d MiB kept spare)", m->memory_mib, id,
                     (long long)room, TASK_WARM_SPARE_MIB);
    if (rc == 0)
        rc = util_mkdir_p(t->dir, 0700);
    t->warm_seq = seq;
    /* Marked before anything is made in the directory, and again with
     * QEMU's pid: no moment shows a VM (or files) of the task that a later
     * agent would not know for started ahead (task_warm_sweep). */
    if (rc == 0)
        rc = task_warm_mark(t);
    if (rc == 0)
        rc = task_new_run_dir(t);
    if (rc == 0) /* tests: a fetch about to read prestage's cache (agent shutdown) */
        testhook_gate("VMCKPT_TEST_WARM_FETCH_GATE", id);
    if (rc == 0)
        rc = ckpt_fetch(env->repo, m, env->blob_dir, t->run_dir, &local);
    pthread_mutex_lock(&t->lock);
    if (rc == 0)
        rc = task_take_manifest(t, m, &local, NULL);
    if (rc == 0)
        rc = task_make_top(t, m, &local);
    if (rc == 0)
        rc = task_start_vm(t, "defer", NULL);
    if (rc == 0) /* tests: the agent dies here, its QEMU noted nowhere yet */
        testhook_gate("VMCKPT_TEST_WARM_GATE", id);
    if (rc == 0)
        rc = task_warm_mark(t);
    if (rc < 0)
        task_stop_vm(t);
    pthread_mutex_unlock(&t->lock);
    ckpt_local_free(&local);
    manifest_free(m);
    if (rc < 0) {
        if (access(t->dir, F_OK) == 0)
            util_rm_rf(t->dir);
        task_free(t);
        return err_wrap(rc, "VM of task %s started ahead", id);
    }
    *out = t;
    return 0;
}

uint64_t task_warm_seq(struct task *t)
{
    pthread_mutex_lock(&t->lock);
    uint64_t seq = t->warm_seq;
    pthread_mutex_unlock(&t->lock);
    return seq;
}

void task_warm_drop(struct task *t)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->lock);
    task_stop_vm(t);
    pthread_mutex_unlock(&t->lock);
    util_rm_rf(t->dir);
    task_free(t);
}

int task_warm_sweep(const struct task_env *env, const char *id)
{
    char *marker = task_warm_marker(env, id), *task = util_fmt("%s/%s/task.json", env->tasks_dir, id);
    char *text = NULL, *dir = util_fmt("%s/%s", env->tasks_dir, id);
    size_t len;
    int swept = 0;

    if (marker && task && dir && util_read_file(marker, &text, &len) == 0) {
        if (access(task, F_OK) == 0) { /* taken over: the agent died before unmarking it */
            unlink(marker);
        } else {
            json_t *j = json_loads(text, 0, NULL);
            json_int_t pid = json_integer_value(json_object_get(j, "pid"));
            uint64_t start = (uint64_t)json_integer_value(json_object_get(j, "pid_start"));
            /* only the QEMU noted, never a pid reused by another process */
            if (pid > 1 && pid < INT32_MAX && start && util_proc_start((pid_t)pid) == start)
                vm_kill((pid_t)pid, SIGKILL, 2000); /* until it has ended (not reaped) */
            json_decref(j);
            /* A QEMU the agent started but died before noting (the marker
             * is written before QEMU starts, with its pid after): found by
             * its files in the task's directory. Again after the removal,
             * for one that was between its fork and its exec. */
            char *runs = util_fmt("%s/run-", dir);
            if (runs)
                vm_kill_using(runs, 2000, NULL);
            util_rm_rf(dir);
            if (runs)
                vm_kill_using(runs, 2000, NULL);
            free(runs);
            log_info("task %s: removed the VM started ahead by an earlier agent", id);
            swept = 1;
        }
    }
    free(text);
    free(marker);
    free(task);
    free(dir);
    return swept;
}

int task_restore(const struct task_env *env, struct task *t, const char *id, uint64_t seq,
                 const char *accel, struct task **out)
{
    struct manifest *m = NULL;
    struct ckpt_local local = {0};
    int created = 0, rc;
    int64_t t0 = util_now_us(), t1;

    *out = NULL;
    if (!util_valid_id(id))
        return err_set(VK_EINVAL, "task id '%s' is not valid", id);
    if (accel && (rc = vm_accel_check(accel, "accel")) < 0) /* a QEMU argument */
        return rc;
    if (!t) {
        t = task_new(env, id);
        if (!t)
            return err_set(VK_ENOMEM, "out of memory");
        created = 1;
    }
    pthread_mutex_lock(&t->lock);
    if (!created && !t->warm_seq && (t->pending || t->merging || task_vm_alive(t))) {
        rc = err_set(VK_ESTATE, "task %s is running on this node (pid %d): kill or remove it "
                                "before restoring it", id, (int)t->pid);
        goto out_unlock;
    }
    if (t->restoring) {
        rc = err_set(VK_EBUSY, "task %s is being restored already", id);
        goto out_unlock;
    }
    /* The store calls without the task's lock: a store that stalls must not
     * stall what reads the task (status, lease renewal, the fence thread). */
    t->restoring = 1;
    pthread_mutex_unlock(&t->lock);
    testhook_gate("VMCKPT_TEST_RESTORE_GATE", id); /* tests: a store call that stalls */
    uint64_t from_store0, from_cache0, from_store, from_cache;
    repo_read_counts(env->repo, &from_store0, &from_cache0);
    rc = catalog_load(env->store, id, seq, &m);
    char *run_dir = NULL;
    pthread_mutex_lock(&t->lock);
    /* A VM started ahead serves only the checkpoint it was started for. */
    if (t->warm_seq && (rc < 0 || m->seq != t->warm_seq || !task_vm_alive(t) ||
                        (accel && strcmp(accel, t->accel))))
        task_warm_cool(t);
    int warm = t->warm_seq != 0;
    if (rc == 0 && !warm) {
        rc = util_mkdir_p(t->dir, 0700);
        if (rc == 0)
            rc = task_new_run_dir(t);
        if (rc == 0 && !(run_dir = strdup(t->run_dir)))
            rc = err_set(VK_ENOMEM, "out of memory");
    }
    pthread_mutex_unlock(&t->lock);
    if (rc == 0 && !warm)
        rc = ckpt_fetch(env->repo, m, env->blob_dir, run_dir, &local);
    free(run_dir);
    pthread_mutex_lock(&t->lock);
    t->restoring = 0;
    if (rc < 0)
        goto out_unlock;
    if (!warm) {
        rc = task_take_manifest(t, m, &local, accel);
        if (rc == 0)
            rc = task_make_top(t, m, &local);
        qmp_free(t->qmp);
        t->qmp = NULL;
    }
    t1 = util_now_us();
    if (rc == 0) {
        char taken[40];
        util_iso_time(m->created_us, taken, sizeof(taken));
        task_log_note(t, "restored from checkpoint %" PRIu64 " (taken %s)%s", m->seq, taken,
                      warm ? " into a VM started ahead" : "");
        rc = task_load_memory(t, m);
    }
    if (rc == 0 && warm) { /* its VM is the task's from now on, not one started ahead */
        t->warm_seq = 0;
        task_warm_unmark(t);
    }
    if (rc == 0)
        rc = task_resume_vm(t);
    if (rc < 0) {
        t->state = TASK_FAILED;
        goto out_unlock;
    }
    t->restore_fetch_us = t1 - t0;
    t->restore_load_us = util_now_us() - t1;
    repo_read_counts(env->repo, &from_store, &from_cache);
    t->restore_store_bytes = from_store - from_store0;
    t->restore_cache_bytes = from_cache - from_cache0;
    /* (restore_local_bytes: set by task_load_memory) */
    t->restore_warm = warm;
    t->restored_from = m->seq;
    t->last_seq = m->seq;
    manifest_free(t->last);
    t->last = m;
    m = NULL;
    t->next_seq = task_store_next_seq(t);
    t->no_restart = 0;
    t->restart_due_us = 0;
    task_set_error(t, NULL);
    task_save(t);
    task_drop_old_runs(t);
    log_info("task %s: restored checkpoint %" PRIu64 " in %.2f s (fetch %.2f s, load+resume "
             "%.2f s%s; read %" PRIu64 " bytes from the store, %" PRIu64 " from the local cache, "
             "%" PRIu64 " from the memory kept here), pid %d", id, t->last_seq,
             (double)(util_now_us() - t0) / 1e6, (double)t->restore_fetch_us / 1e6,
             (double)t->restore_load_us / 1e6, warm ? ", into the VM started ahead" : "",
             t->restore_store_bytes, t->restore_cache_bytes, t->restore_local_bytes, (int)t->pid);
out_unlock:
    if (rc < 0)
        err_wrap(rc, "restore of task %s", id);
    pthread_mutex_unlock(&t->lock);
    ckpt_local_free(&local);
    manifest_free(m);
    if (rc < 0 && created) {
        util_rm_rf(t->dir);
        task_free(t);
        return rc;
    }
    *out = t;
    return rc;
}

/* ---- adopting a task after an agent restart ------------------------------ */

/* Rebuilds the delta chain from what QEMU really has open: the agent may have
 * died between sealing a delta and writing task.json. Called with lock held. */
static int task_sync_chain(struct task *t)
{
    json_t *blocks = NULL, *b, *img = NULL;
    size_t i;
    const char *files[256];
    size_t n = 0;
    int rc = qmp_exec(t->qmp, "query-block", NULL, &blocks, 30000);

    if (rc < 0)
        return rc;
    json_array_foreach(blocks, i, b)
    {
        if (!strcmp(task_jstr_or(b, "device", ""), "drive0"))
            img = json_object_get(json_object_get(b, "inserted"), "image");
    }
    for (; img && n < 256; img = json_object_get(img, "backing-image"))
        files[n++] = json_string_value(json_object_get(img, "filename"));
    if (n < 2 || !files[0]) {
        json_decref(blocks);
        return err_set(VK_EQEMU, "QEMU of task %s shows no delta chain on drive0", t->id);
    }
    /* files: top, newest sealed, ..., base. A known layer keeps its number
     * and state; one the state file missed (sealed just before the agent
     * died) is new and not committed. A layer QEMU no longer has was merged
     * away (its merge ended as the agent died): its file goes. */
    struct task_layer *old = t->layers;
    size_t n_old = t->n_layers;
    t->layers = NULL;
    t->n_layers = 0;
    for (size_t k = n - 2; rc == 0 && k >= 1; k--) {
        const struct task_layer *known = NULL;
        for (size_t o = 0; o < n_old; o++)
            if (files[k] && !strcmp(old[o].path, files[k]))
                known = &old[o];
        if (known)
            rc = task_add_layer(t, known->path, known->gen, known->committed,
                                known->obj.name ? &known->obj : NULL);
        else
            rc = task_add_layer(t, files[k] ? files[k] : "", t->next_gen++, 0, NULL);
    }
    free(t->top);
    t->top = strdup(files[0]);
    for (size_t o = 0; o < n_old; o++) {
        int kept = 0;
        for (size_t k = 0; k < t->n_layers; k++)
            kept |= !strcmp(t->layers[k].path, old[o].path);
        if (!kept && rc == 0 && n < 256) /* (only when QEMU's whole chain was read) */
            unlink(old[o].path);
        free(old[o].path);
        free(old[o].obj.name);
    }
    free(old);
    json_decref(blocks);
    return rc;
}

static void task_drop_spool(struct task *t)
{
    DIR *d = opendir(t->run_dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (!strncmp(e->d_name, "memory-", 7)) {
            char *p = task_run_path(t, e->d_name);
            if (p)
                unlink(p);
            free(p);
        }
    }
    if (d)
        closedir(d);
}

int task_adopt(const struct task_env *env, const char *id, struct task **out)
{
    struct task *t = task_new(env, id);
    char *qmp_path = NULL;
    int rc;

    *out = NULL;
    if (!t)
        return err_set(VK_ENOMEM, "out of memory");
    rc = task_load(t);
    if (rc < 0)
        goto out_free;
    qmp_path = task_run_path(t, "qmp.sock");
    if (t->state == TASK_RUNNING && qmp_path && util_pid_matches(t->pid, qmp_path)) {
        rc = qmp_connect(&t->qmp, qmp_path, 5000);
        if (rc == 0)
            rc = ckpt_settle(t->qmp, t->id);
        if (rc == 0)
            rc = vm_merge_settle(t->qmp, TASK_MERGE_TIMEOUT_MS);
        if (rc == 0)
            rc = task_sync_chain(t);
        if (rc < 0) {
            log_error("task %s: cannot take back its VM (pid %d): %s; killing it", id,
                      (int)t->pid, err_msg());
            vm_kill(t->pid, SIGKILL, 5000);
            qmp_free(t->qmp);
            t->qmp = NULL;
            t->state = TASK_CRASHED;
        } else {
            log_info("task %s: took back running VM pid %d", id, (int)t->pid);
            if (!t->covered_us) /* a state file from before protection was kept */
                t->covered_us = util_now_us();
            task_schedule_start(t);
        }
    } else if (t->state == TASK_RUNNING) {
        char how[96];
        snprintf(how, sizeof(how), "its VM (pid %d) died while the agent was away", (int)t->pid);
        task_crashed(t, how);
    } else if (t->state == TASK_CRASHED && !t->no_restart &&
               !strcmp(env->cfg->restart, "on-crash")) {
        t->restart_due_us = util_now_us(); /* a restart the last agent did not get to */
    }
    task_drop_spool(t);
    t->next_seq = task_store_next_seq(t);
    if (t->last_seq && catalog_load(env->store, id, t->last_seq, &t->last) < 0)
        log_warn("task %s: %s", id, err_msg());
    task_save(t);
    free(qmp_path);
    *out = t;
    return 0;
out_free:
    free(qmp_path);
    task_free(t);
    return rc;
}

/* ---- checkpoints ---------------------------------------------------------- */

struct task_upload {
    struct task_upload *next;
    struct task *t;
    uint64_t seq;
    uint64_t gen; /* the layer this checkpoint sealed; its chain: the layers up to it */
    int64_t began_us; /* the snapshot began (monotonic): the state is no older */
    char *mem_path;
    struct ckpt_snap snap;
    enum ckpt_mode asked; /* the mode asked for (auto, or one forced) */
    enum ckpt_mode mode;  /* the mode that took the checkpoint */
    char why[400];        /* why that mode */
    int final;            /* a move's last checkpoint here: the VM stays paused */
};

static void task_progress(void *arg, uint64_t done)
{
    struct task *t = arg;
    pthread_mutex_lock(&t->lock);
    t->up_done = done;
    pthread_mutex_unlock(&t->lock);
}

static int task_file_copy(struct ckpt_file *f, const char *path, const struct stream_ref *obj)
{
    f->path = strdup(path);
    if (!f->path || (obj->name && stream_ref_copy(&f->obj, obj) < 0))
        return err_set(VK_ENOMEM, "out of memory");
    return 0;
}

/* The chain checkpoint u extends (the last commit's) and its deltas: the
 * layers not committed, up to the one u sealed (later ones belong to later
 * checkpoints; committed ones are never among them, so a local merge, which
 * takes only committed layers, leaves them be). t->lock held. */
static int task_put_chain(struct task *t, const struct task_upload *u, struct ckpt_put *p)
{
    size_t n = 0, newest = 0;
    int rc = 0;
    if (t->last && t->last->n_deltas) {
        p->chain = calloc(t->last->n_deltas, sizeof(*p->chain));
        if (!p->chain)
            return err_set(VK_ENOMEM, "out of memory");
        for (; rc == 0 && p->n_chain < t->last->n_deltas; p->n_chain++)
            rc = stream_ref_copy(&p->chain[p->n_chain], &t->last->deltas[p->n_chain]);
    } else if (t->last_seq) {
        p->chain_unknown = 1; /* its manifest could not be read (see task_adopt) */
    }
    for (size_t i = 0; i < t->n_layers && t->layers[i].gen <= u->gen; i++) {
        newest = i;
        n += !t->layers[i].committed;
    }
    p->deltas = calloc(n ? n : 1, sizeof(*p->deltas));
    if (!p->deltas || n == 0 || t->layers[newest].gen != u->gen)
        return rc < 0 ? rc : !p->deltas ? err_set(VK_ENOMEM, "out of memory")
                             : err_set(VK_ESTATE, "task %s: the delta checkpoint %" PRIu64
                                                  " sealed is not in the chain", t->id, u->seq);
    for (size_t i = 0; rc == 0 && i <= newest; i++)
        if (!t->layers[i].committed)
            rc = task_file_copy(&p->deltas[p->n_deltas++], t->layers[i].path, &t->layers[i].obj);
    if (rc == 0 && newest > 0 && !(p->below = strdup(t->layers[newest - 1].path)))
        rc = err_set(VK_ENOMEM, "out of memory");
    return rc;
}

/* Describes checkpoint u for ckpt_store: the manifest's facts (strings
 * borrowed: a task's shape does not change while a checkpoint is pending,
 * as a restore waits for none to be), copies of the files and of what of
 * them is stored. Called with t->lock held. */
static int task_put_prepare(struct task *t, struct task_upload *u, struct ckpt_put *p)
{
    const struct cfg *c = t->env->cfg;
    struct manifest *m = &p->facts;
    const char *boot[3] = {t->kernel, t->initrd, t->base};
    const struct stream_ref *boot_obj[3] = {&t->kernel_obj, &t->initrd_obj, &t->base_obj};
    int rc = 0;

    m->task = t->id;
    m->seq = u->seq;
    m->mode = (char *)ckpt_mode_name(u->mode);
    m->mode_why = u->why[0] ? u->why : NULL;
    m->policy_mode = t->mode;
    m->memory_mib = t->memory_mib;
    m->vcpus = t->vcpus;
    m->machine = t->machine;
    m->append = t->append;
    m->base_format = t->base_fmt;
    m->first_s = t->first_s;
    m->every_s = t->every_s;
    m->stopped_us = u->snap.stopped_us;
    m->seal_us = u->snap.seal_us;
    m->mem_save_us = u->snap.mem_save_us;
    m->serial_bytes = u->snap.serial_bytes;
    for (size_t i = 0; rc == 0 && i < 3; i++)
        rc = task_file_copy(&p->boot[i], boot[i], boot_obj[i]);
    if (rc == 0)
        rc = task_put_chain(t, u, p);
    p->mem_path = strdup(u->mem_path);
    p->work_dir = strdup(t->run_dir);
    if (rc == 0 && (!p->mem_path || !p->work_dir))
        rc = err_set(VK_ENOMEM, "out of memory");
    p->max_chain = c->max_chain;
    p->whole = c->whole;
    p->gate = t->env->may_commit;
    p->gate_arg = t->env->cluster_arg;
    p->progress = task_progress;
    p->progress_arg = t;
    return rc;
}

static void task_obj_take(struct stream_ref *dst, struct stream_ref *src)
{
    if (!src->name)
        return;
    stream_ref_clear(dst);
    *dst = *src;
    src->name = NULL;
}

/* Takes back what ckpt_store stored, whether or not it committed: a stored
 * stream stays good for the next try to name. Once committed, the layers up
 * to the one u sealed are in the committed chain. t->lock held. */
static void task_put_apply(struct task *t, const struct task_upload *u, struct ckpt_put *p,
                           int committed)
{
    task_obj_take(&t->kernel_obj, &p->boot[0].obj);
    task_obj_take(&t->initrd_obj, &p->boot[1].obj);
    task_obj_take(&t->base_obj, &p->boot[2].obj);
    for (size_t i = 0; i < t->n_layers; i++) {
        struct task_layer *l = &t->layers[i];
        for (size_t k = 0; !l->committed && k < p->n_deltas; k++)
            if (!strcmp(l->path, p->deltas[k].path))
                task_obj_take(&l->obj, &p->deltas[k].obj);
        if (committed && l->gen <= u->gen) {
            l->committed = 1;
            stream_ref_clear(&l->obj);
        }
    }
    task_save(t);
}

/* Stores and commits checkpoint u (ckpt_store) inside the cluster's upload
 * hold, which keeps other nodes' garbage collection off its new chunks. */
static int task_upload(struct task_upload *u, struct manifest **out)
{
    struct task *t = u->t;
    const struct task_env *env = t->env;
    struct ckpt_put p = {0};
    *out = NULL;
    pthread_mutex_lock(&t->lock);
    int rc = task_put_prepare(t, u, &p);
    t->up_total = ckpt_put_bytes(&p);
    pthread_mutex_unlock(&t->lock);
    if (rc < 0) {
        ckpt_put_clear(&p);
        return rc;
    }
    rc = env->upload_begin ? env->upload_begin(env->cluster_arg, &p.hold) : 0;
    /* Store calls without the task's lock: a store that stalls here must not
     * stall what reads the task (status, lease renewal, the fence thread).
     * Commits stay in order: one upload thread per task. */
    if (rc == 0)
        rc = ckpt_store(env->repo, env->store, &p, out);
    if (env->upload_end)
        env->upload_end(env->cluster_arg);
    pthread_mutex_lock(&t->lock);
    task_put_apply(t, u, &p, rc == 0);
    pthread_mutex_unlock(&t->lock);
    ckpt_put_clear(&p);
    return rc;
}

/* Retention after a commit: drop the oldest checkpoints beyond [data] keep,
 * then collect what they alone referenced. A failure here loses nothing. */
int task_gc(const struct task_env *env, int grace_s, struct gc_result *out)
{
    int rc = env->gc_begin ? env->gc_begin(env->cluster_arg) : 0;
    if (rc < 0)
        return rc;
    testhook_gate("VMCKPT_TEST_GC_BEGIN_GATE", "gc"); /* tests: a GC certainly in progress */
    rc = gc_run(env->repo, grace_s, out);
    if (env->gc_end)
        env->gc_end(env->cluster_arg);
    return rc;
}

static void task_retain(struct task *t)
{
    const struct cfg *c = t->env->cfg;
    struct gc_result g;
    int dropped = 0;
    if (c->keep <= 0)
        return;
    if (gc_retain(t->env->store, t->id, c->keep, &dropped) < 0)
        log_warn("task %s: retention: %s", t->id, err_msg());
    else if (dropped > 0 && task_gc(t->env, c->gc_grace_s, &g) < 0)
        log_warn("task %s: garbage collection: %s", t->id, err_msg());
}

/* Sets up the progress of upload u; called with t->lock held. */
static void task_upload_starts(struct task *t, struct task_upload *u)
{
    t->up_seq = u->seq;
    t->up_done = t->up_total = 0; /* up_total: once the upload has described it */
    t->up_start_us = util_now_us();
}

/* Microseconds to the next periodic checkpoint (0: none): checkpoint_every,
 * or under auto Young/Daly's interval from this task's checkpoints (why, if
 * not NULL, says how it came). t->lock held. */
static int64_t task_every_us(const struct task *t, char *why, size_t len)
{
    const struct cfg *c = t->env->cfg;
    struct interval_policy p = {c->mtbf_s, c->max_lost_s, c->min_interval_s};
    char buf[300], seen[160] = "";
    if (t->every_s != CFG_AUTO) {
        if (why)
            snprintf(why, len, t->every_s > 0 ? "fixed" : "none");
        return (int64_t)(t->every_s > 0 ? t->every_s : 0) * 1000000;
    }
    double m = t->env->mtbf_s ? t->env->mtbf_s(t->env->cluster_arg, seen, sizeof(seen)) : 0;
    if (m > 0) /* the cluster's own failures, once it has seen enough */
        p.mtbf_s = m;
    int64_t us = (int64_t)interval_pick(&t->iv, &p, why ? why : buf, why ? len : sizeof(buf)) *
                 1000000;
    if (why && m > 0 && strlen(why) + strlen(seen) + 4 < len)
        snprintf(why + strlen(why), len - strlen(why), " (MTBF %s)", seen);
    return us;
}

/* The schedule's time to the next checkpoint (0: none): checkpoint_first
 * for a run's first, else the interval. t->lock held. */
static int64_t task_period_us(const struct task *t)
{
    if (t->first_s > 0 && t->run_commits == 0)
        return (int64_t)t->first_s * 1000000;
    return t->every_s != 0 ? task_every_us(t, NULL, 0) : 0;
}

static void task_protection_locked(const struct task *t, struct protection *p)
{
    struct protect_in in = {
        .running = t->state == TASK_RUNNING, .now_us = util_now_us(),
        .covered_us = t->covered_us, .period_us = task_period_us(t),
        .last_take_us = t->last_take_us,
    };
    protect_eval(&in, p);
}

/* Records how checkpoint u ended; called with t->lock held. */
static void task_upload_ends(struct task *t, struct task_upload *u, int rc, struct manifest *m)
{
    if (rc == 0) {
        t->last_seq = u->seq;
        t->last_take_us = util_now_us() - u->began_us;
        if (u->began_us >= t->covered_us) { /* (not one begun before a restart) */
            t->covered_us = u->began_us;
            t->run_commits++;
        }
        if (t->failed_seq == u->seq)
            t->failed_seq = 0; /* a number whose first try failed, used again */
        manifest_free(t->last);
        t->last = m;
        task_set_error(t, NULL);
        log_info("task %s: checkpoint %" PRIu64 " committed (%s, VM stopped %.1f ms, memory "
                 "saved in %.1f ms, %" PRIu64 " bytes stored in %.2f s)", t->id, u->seq,
                 ckpt_mode_name(u->mode), (double)u->snap.stopped_us / 1000,
                 (double)u->snap.mem_save_us / 1000, m ? m->uploaded_bytes : 0,
                 (double)(util_now_us() - t->up_start_us) / 1e6);
    } else {
        if (rc == VK_EEXISTS) { /* another node used the number: go on after the store's */
            uint64_t next = task_store_next_seq(t);
            if (next > t->next_seq)
                t->next_seq = next;
        } else if (t->next_seq == u->seq + 1) {
            t->next_seq = u->seq; /* the number was never used */
        }
        t->failed_seq = u->seq;
        task_set_error(t, err_msg());
        log_error("task %s: checkpoint %" PRIu64 " failed, previous checkpoints stay valid: %s",
                  t->id, u->seq, err_msg());
    }
    t->pending--;
    if (t->up_seq == u->seq)
        t->up_seq = 0;
    if (rc == 0)
        interval_note(&t->iv, u->mode, u->snap.stopped_us, u->snap.mem_save_us);
    if (t->every_s != 0 && t->pending == 0)
        t->next_due_us = util_now_us() + task_every_us(t, NULL, 0);
    pthread_cond_broadcast(&t->idle); /* task_freeze waits for its upload */
    task_save(t);
}

static void task_upload_free(struct task_upload *u)
{
    unlink(u->mem_path);
    free(u->mem_path);
    free(u);
}


/* Bounds the running VM's chain ([data] max_local_chain overlays over the
 * base, counting the top): once the next seal would pass it, the committed
 * layers at the bottom are merged into the lowest while the VM runs. Only
 * committed layers: the uncommitted are still to be stored as they are.
 * Not under [data] mode whole, whose checkpoints store the chain from the
 * local files again. Runs on the upload thread, after a commit, so that no
 * upload reads a layer while QEMU writes into it. */
static void task_merge_local(struct task *t)
{
    const struct cfg *c = t->env->cfg;
    size_t k = 0;
    pthread_mutex_lock(&t->lock);
    while (k < t->n_layers && t->layers[k].committed)
        k++;
    if (c->max_local_chain <= 0 || c->whole || t->n_layers + 2 <= (size_t)c->max_local_chain ||
        k < 2 || t->snapping || t->merging || t->moving || t->state != TASK_RUNNING || !t->qmp) {
        pthread_mutex_unlock(&t->lock);
        return;
    }
    char *top = strdup(t->layers[k - 1].path), *base = strdup(t->layers[0].path);
    struct qmp *q = t->qmp; /* ours while merging, as while snapping */
    t->merging = 1;
    pthread_mutex_unlock(&t->lock);
    int64_t t0 = util_now_us();
    int rc = top && base ? vm_merge_layers(q, t->id, top, base, TASK_MERGE_TIMEOUT_MS)
                         : err_set(VK_ENOMEM, "out of memory");
    pthread_mutex_lock(&t->lock);
    t->merging = 0;
    pthread_cond_broadcast(&t->idle);
    if (rc < 0) {
        log_warn("task %s: the running chain stays %zu deep: %s", t->id, t->n_layers + 1,
                 err_msg());
    } else {
        for (size_t i = 1; i < k; i++) {
            unlink(t->layers[i].path);
            free(t->layers[i].path);
        }
        t->layers[0].gen = t->layers[k - 1].gen;
        memmove(&t->layers[1], &t->layers[k], (t->n_layers - k) * sizeof(*t->layers));
        t->n_layers -= k - 1;
        t->local_merges++;
        task_save(t);
        log_info("task %s: %zu committed layers merged into %s in %.2f s, the VM running: its "
                 "chain is %zu deep", t->id, k, base, (double)(util_now_us() - t0) / 1e6,
                 t->n_layers + 1);
    }
    pthread_mutex_unlock(&t->lock);
    free(top);
    free(base);
}

/* A committed checkpoint's memory image (m NULL: not committed) stays on
 * this node as the newest one's kept copy when it fits [task]
 * keep_local_mib; any other image goes. Runs on the upload thread. */
static void task_keep_memory(struct task *t, struct task_upload *u, const struct manifest *m)
{
    uint64_t budget = (uint64_t)t->env->cfg->keep_local_mib << 20;
    if (m && !u->final && m->memory.size > 0 && m->memory.size <= budget) {
        if (memkeep_put(t->dir, u->mem_path, u->seq, &m->memory) < 0) {
            log_warn("task %s: %s (a restart here reads the store)", t->id, err_msg());
            memkeep_drop(t->dir);
        }
    } else if (m) { /* a newer checkpoint: the copy kept before is stale */
        memkeep_drop(t->dir);
    }
    unlink(u->mem_path);
}

/* The task's uploader: takes queued checkpoints in order until none is left. */
static void *task_upload_thread(void *arg)
{
    struct task *t = arg;
    for (;;) {
        struct manifest *m = NULL;
        pthread_mutex_lock(&t->lock);
        struct task_upload *u = t->queue;
        if (!u) {
            t->uploading = 0;
            pthread_mutex_unlock(&t->lock);
            /* An upload's chunk buffers (up to [data] buffer_mib) were freed in
             * the arenas of worker threads now gone: give the pages back, or
             * the agent's RSS wanders with whichever arenas held them. */
            malloc_trim(0);
            return NULL;
        }
        t->queue = u->next;
        task_upload_starts(t, u);
        pthread_mutex_unlock(&t->lock);
        int rc = task_upload(u, &m);
        task_keep_memory(t, u, rc == 0 ? m : NULL);
        if (rc == 0)
            task_retain(t);
        pthread_mutex_lock(&t->lock);
        task_upload_ends(t, u, rc, m);
        pthread_mutex_unlock(&t->lock);
        task_upload_free(u);
        if (rc == 0)
            task_merge_local(t);
    }
}

/* Queues u for upload and makes sure the uploader runs; t->lock held. */
static void task_queue_upload(struct task *t, struct task_upload *u)
{
    struct task_upload **pp = &t->queue;
    pthread_t th;
    while (*pp)
        pp = &(*pp)->next;
    *pp = u;
    if (t->uploading)
        return;
    t->uploading = 1;
    if (pthread_create(&th, NULL, task_upload_thread, t) == 0) {
        pthread_detach(th);
        return;
    }
    t->uploading = 0;
    t->queue = u->next; /* no thread to spare: this checkpoint fails */
    task_upload_ends(t, u, err_set(VK_ENOMEM, "cannot start the upload thread"), NULL);
    task_upload_free(u);
}

#define TASK_MAX_PENDING 2 /* each holds a memory image in the run directory */

/* u->mode and u->why: what auto picks, or the mode asked for. t->lock held. */
static void task_pick_mode(struct task *t, struct task_upload *u)
{
    if (u->asked == CKPT_AUTO) {
        u->mode = automode_pick(&t->am, u->why, sizeof(u->why));
    } else {
        u->mode = u->asked;
        snprintf(u->why, sizeof(u->why), "%s: asked for", ckpt_mode_name(u->mode));
    }
}

#define TASK_ROOM_MARGIN (64ull << 20) /* device state, the new overlay, the log */

/* Whether the run directory can hold the memory image of a checkpoint in
 * mode m before the VM is touched: live's spool may reach its bound
 * ([live] spool_pct of memory: pre-copy resends pages written again), a
 * paused save the guest's memory. t->lock held. */
static int task_room_check(struct task *t, enum ckpt_mode m)
{
    const struct cfg *c = t->env->cfg;
    uint64_t mem = (uint64_t)t->memory_mib << 20, free_b = 0;
    uint64_t need = (m == CKPT_LIVE ? mem * (uint64_t)c->live_spool_pct / 100 : mem) +
                    TASK_ROOM_MARGIN;
    int rc = util_free_bytes(t->run_dir, &free_b);
    long fake = testhook_file_num("VMCKPT_TEST_FREE_MIB_FILE"); /* tests: a disk this full */
    if (rc < 0)
        return rc;
    if (fake > 0)
        free_b = (uint64_t)fake << 20;
    if (free_b >= need)
        return 0;
    /* The memory image kept for a restart here is worth less than a new
     * checkpoint: it goes first. */
    if (fake <= 0 && memkeep_drop(t->dir) &&
        util_free_bytes(t->run_dir, &free_b) == 0 && free_b >= need) {
        log_warn("task %s: dropped the memory image kept for a restart here: the next "
                 "checkpoint needs its room", t->id);
        return 0;
    }
    t->room_refusals++;
    return err_set(VK_ENOSPC, "task %s: %s has %" PRIu64 " MiB free, a %s checkpoint may "
                              "need %" PRIu64 " MiB there (the memory image%s); the VM was not "
                              "touched. Free space in the state directory%s", t->id,
                   t->run_dir, free_b >> 20, ckpt_mode_name(m), need >> 20,
                   m == CKPT_LIVE ? ": [live] spool_pct of the guest's memory" : "",
                   m == CKPT_LIVE ? " or lower [live] spool_pct" : "");
}

static int task_begin_checkpoint(struct task *t, const char *mode, struct task_upload **out)
{
    struct task_upload *u;
    enum ckpt_mode asked;
    int rc;
    *out = NULL;
    if ((rc = ckpt_mode_parse(mode, "checkpoint mode", &asked)) < 0)
        return rc;
    if (t->state != TASK_RUNNING)
        return err_set(VK_ESTATE, "task %s is %s, not running", t->id,
                       task_state_name(t->state));
    if (t->snapping)
        return err_set(VK_EBUSY, "task %s: checkpoint %" PRIu64 " is being taken", t->id,
                       t->snap_seq);
    if (t->pending >= TASK_MAX_PENDING)
        return err_set(VK_EBUSY, "task %s: %zu checkpoints are still uploading; try again when "
                                 "one is stored", t->id, t->pending);
    u = calloc(1, sizeof(*u));
    if (!u)
        return err_set(VK_ENOMEM, "out of memory");
    u->t = t;
    u->seq = t->next_seq++;
    u->asked = asked;
    task_pick_mode(t, u);
    if ((rc = task_room_check(t, u->mode)) < 0) {
        t->next_seq--; /* the number was never used */
        free(u);
        return rc;
    }
    u->mem_path = util_fmt("%s/memory-%010" PRIu64 ".mig", t->run_dir, u->seq);
    t->snapping = 1;
    t->snap_seq = u->seq;
    t->pending++;
    *out = u;
    return 0;
}

static struct ckpt_live task_live_bounds(const struct task *t)
{
    const struct cfg *c = t->env->cfg;
    struct ckpt_live l = {
        .target_stop_ms = c->live_stop_ms,
        .bandwidth = (uint64_t)c->live_bw_mib << 20,
        .converge_ms = c->live_converge_s * 1000,
        .spool_max = ((uint64_t)t->memory_mib << 20) * (uint64_t)c->live_spool_pct / 100,
    };
    return l;
}

/* The VM side of checkpoint u. Under auto, a live pre-copy that gives up
 * (the VM untouched) is followed at once by the paused mode auto picks
 * next, so the checkpoint is still taken. Called without t->lock. */
static int task_snapshot(struct task *t, struct task_upload *u, const char *new_top,
                         const char *serial)
{
    struct ckpt_live live = task_live_bounds(t);
    struct ckpt_req req = {t->id, u->mode, &live, NULL, new_top, u->mem_path, serial, u->final};
    int rc, again = 0;
    pthread_mutex_lock(&t->lock);
    char *top = strdup(t->top); /* t->top changes only under snapping, which is ours */
    pthread_mutex_unlock(&t->lock);
    if (!top)
        return err_set(VK_ENOMEM, "out of memory");
    req.top = top;
    rc = ckpt_snapshot(t->qmp, &req, &u->snap);
    pthread_mutex_lock(&t->lock);
    automode_note(&t->am, u->mode, &u->snap, rc == 0);
    if (rc < 0 && u->snap.gave_up && u->asked == CKPT_LIVE)
        err_wrap(rc, "mode live asked for (mode auto would have taken it paused)");
    if (rc < 0 && u->snap.gave_up && u->asked == CKPT_AUTO) {
        char gave_up[300];
        snprintf(gave_up, sizeof(gave_up), "%s", err_msg());
        log_warn("task %s: checkpoint %" PRIu64 ": %s; taking it paused", t->id, u->seq, gave_up);
        u->mode = automode_fallback(&t->am, gave_up, u->why, sizeof(u->why));
        again = 1;
    }
    pthread_mutex_unlock(&t->lock);
    if (again) {
        req.mode = u->mode;
        rc = ckpt_snapshot(t->qmp, &req, &u->snap);
        pthread_mutex_lock(&t->lock);
        automode_note(&t->am, u->mode, &u->snap, rc == 0);
        pthread_mutex_unlock(&t->lock);
    }
    free(top);
    return rc;
}

#define TASK_MERGE_WAIT_S 60

/* A checkpoint waits for a merge of layers to end (QEMU refuses a seal
 * meanwhile); merges are of the few layers since the last one. t->lock held. */
static int task_wait_merge(struct task *t)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += TASK_MERGE_WAIT_S;
    while (t->merging)
        if (pthread_cond_timedwait(&t->idle, &t->lock, &until) == ETIMEDOUT && t->merging)
            return err_set(VK_EBUSY, "task %s: its layers are being merged for more than "
                                     "%d s; try again later", t->id, TASK_MERGE_WAIT_S);
    return 0;
}

static int task_checkpoint_ex(struct task *t, const char *mode, int final, uint64_t *out_seq)
{
    struct task_upload *u = NULL;
    char *new_top = NULL, *serial = NULL;
    int rc;

    pthread_mutex_lock(&t->lock);
    rc = task_wait_merge(t);
    if (rc == 0 && t->moving && !final)
        rc = err_set(VK_ESTATE, "task %s is being moved to another node", t->id);
    if (rc == 0)
        rc = task_begin_checkpoint(t, mode ? mode : t->mode, &u);
    if (rc == 0)
        u->final = final;
    if (rc < 0 && t->every_s != 0 && t->pending == 0 && t->next_due_us == 0)
        t->next_due_us = util_now_us() + task_every_us(t, NULL, 0); /* try again then */
    if (rc == 0) {
        new_top = util_fmt("%s/top-%" PRIu64 ".qcow2", t->run_dir, t->next_gen + 1);
        serial = task_run_path(t, "serial.log");
    }
    pthread_mutex_unlock(&t->lock);
    if (rc < 0)
        return rc;
    /* The lock is not held here: status stays readable; snapping keeps qmp ours. */
    u->began_us = util_now_us();
    rc = task_snapshot(t, u, new_top, serial);
    pthread_mutex_lock(&t->lock);
    t->snapping = 0;
    pthread_cond_broadcast(&t->idle); /* a move waits for it (task_freeze) */
    if (u->snap.sealed) {
        u->gen = t->next_gen++;
        if (task_add_layer(t, t->top, u->gen, 0, NULL) < 0 && rc == 0)
            rc = VK_ENOMEM; /* the VM writes to new_top: follow it all the same */
        free(t->top);
        t->top = new_top;
        new_top = NULL;
        task_save(t);
    }
    if (rc < 0) {
        err_wrap(rc, "checkpoint %" PRIu64 " of task %s", u->seq, t->id);
        t->up_start_us = util_now_us();
        task_upload_ends(t, u, rc, NULL);
        task_upload_free(u);
    } else {
        *out_seq = u->seq;
        task_queue_upload(t, u);
    }
    pthread_mutex_unlock(&t->lock);
    free(new_top);
    free(serial);
    return rc;
}

int task_checkpoint(struct task *t, const char *mode, uint64_t *out_seq)
{
    return task_checkpoint_ex(t, mode, 0, out_seq);
}

#define TASK_FREEZE_WAIT_S 300 /* a checkpoint in flight, before a move's own */

int task_freeze(struct task *t, uint64_t *out_seq)
{
    uint64_t seq = 0;
    pthread_mutex_lock(&t->lock);
    if (t->moving) {
        pthread_mutex_unlock(&t->lock);
        return err_set(VK_EBUSY, "task %s is being moved already", t->id);
    }
    t->moving = 1; /* no periodic checkpoint begins from now on */
    /* One being taken ends first, and the move's own needs a free upload slot. */
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += TASK_FREEZE_WAIT_S;
    int timed_out = 0;
    while ((t->snapping || t->pending >= TASK_MAX_PENDING) && !timed_out)
        timed_out = pthread_cond_timedwait(&t->idle, &t->lock, &until) == ETIMEDOUT;
    pthread_mutex_unlock(&t->lock);
    int rc = task_checkpoint_ex(t, "stop-copy", 1, &seq);
    pthread_mutex_lock(&t->lock);
    while (rc == 0 && t->pending > 0) /* its upload; task_upload_ends signals */
        pthread_cond_wait(&t->idle, &t->lock);
    if (rc == 0 && t->last_seq != seq)
        rc = err_set(VK_EIO, "the last checkpoint (%" PRIu64 ") of task %s did not commit: %s",
                     seq, t->id, t->last_error ? t->last_error : "see the agent's log");
    if (rc < 0) { /* the VM runs on here, paused no longer */
        char msg[1024];
        snprintf(msg, sizeof(msg), "%s", err_msg());
        t->moving = 0;
        if (t->qmp && t->state == TASK_RUNNING)
            ckpt_settle(t->qmp, t->id);
        rc = err_set(rc, "%s; task %s runs on here", msg, t->id);
    }
    *out_seq = seq;
    pthread_mutex_unlock(&t->lock);
    return rc;
}

/* ---- life and death ------------------------------------------------------- */

/* The VM is gone without being asked to: the task is crashed, and [task]
 * restart says whether and when the agent restores it. t->lock held. */
static void task_crashed(struct task *t, const char *how)
{
    const struct cfg *c = t->env->cfg;
    struct restart_policy p = {!strcmp(c->restart, "on-crash"), c->restart_max,
                               c->restart_window_s};
    char why[200];
    t->state = TASK_CRASHED;
    t->restart_due_us = 0;
    if (t->no_restart) {
        log_error("task %s: %s (killed on purpose: not restarted)", t->id, how);
        return;
    }
    switch (restart_crashed(&t->rs, &p, util_now_us(), &t->restart_due_us, why, sizeof(why))) {
    case RESTART_GIVE_UP:
        t->state = TASK_FAILED;
        task_set_error(t, why);
        log_error("task %s: %s: %s", t->id, how, why);
        break;
    case RESTART_AT:
        log_error("task %s: %s; %s", t->id, how, why);
        break;
    case RESTART_NO:
        log_error("task %s: %s (%s)", t->id, how, why);
        break;
    }
}

void task_restart_ends(struct task *t, int rc, const char *msg)
{
    pthread_mutex_lock(&t->lock);
    t->restarting = 0;
    if (rc == 0) {
        restart_done(&t->rs);
        log_info("task %s: restarted without a command (restart %lu)", t->id, t->rs.restarts);
    } else if (rc == VK_EBUSY || rc == VK_ELEASE || rc == VK_ENOTFOUND || rc == VK_ECORRUPT) {
        /* another node has it now, or no checkpoint can be restored: trying
         * again would not change that */
        task_set_error(t, msg);
        log_warn("task %s: not restarted: %s", t->id, msg);
    } else if (t->state != TASK_RUNNING) {
        char how[600];
        snprintf(how, sizeof(how), "its restart failed: %s", msg);
        task_set_error(t, msg);
        task_crashed(t, how);
        if (t->state == TASK_FAILED)
            task_set_error(t, how);
    }
    task_save(t);
    pthread_mutex_unlock(&t->lock);
}

int task_kill(struct task *t)
{
    int rc;
    pthread_mutex_lock(&t->lock);
    if (!task_vm_alive(t)) {
        rc = err_set(VK_ESTATE, "task %s has no running VM", t->id);
    } else {
        rc = vm_kill(t->pid, SIGKILL, 10000);
        if (rc == 0) {
            t->state = TASK_CRASHED;
            t->no_restart = 1;
            t->restart_due_us = 0;
            log_info("task %s: VM pid %d killed on request", t->id, (int)t->pid);
            task_save(t);
        }
    }
    pthread_mutex_unlock(&t->lock);
    return rc;
}

int task_remove(struct task *t)
{
    int rc = 0;
    pthread_mutex_lock(&t->lock);
    if (t->pending || t->restoring || t->merging) {
        rc = err_set(VK_EBUSY, "task %s: a %s is in progress; try again when it ends", t->id,
                     t->pending ? "checkpoint" : t->restoring ? "restore" : "merge of its layers");
    } else {
        if (task_vm_alive(t))
            vm_kill(t->pid, SIGKILL, 10000);
        qmp_free(t->qmp);
        t->qmp = NULL;
        t->pid = 0;
        t->state = TASK_REMOVED;
        task_keep_log(t);
        rc = util_rm_rf(t->dir);
    }
    pthread_mutex_unlock(&t->lock);
    return rc;
}

int task_poll(struct task *t)
{
    int due = 0;
    pthread_mutex_lock(&t->lock);
    if (t->state == TASK_RUNNING && !task_vm_alive(t)) {
        char how[64];
        snprintf(how, sizeof(how), "VM pid %d died", (int)t->pid);
        task_crashed(t, how);
        if (!t->snapping && !t->merging) {
            qmp_free(t->qmp);
            t->qmp = NULL;
        }
        task_save(t);
    }
    if (t->state == TASK_RUNNING && !t->pending && !t->merging && !t->moving &&
        t->next_due_us > 0 &&
        util_now_us() >= t->next_due_us) {
        due |= TASK_DUE_CHECKPOINT;
        t->next_due_us = 0; /* set again when this checkpoint ends */
    }
    /* A restart waits for the checkpoints in flight: it restores the newest. */
    if (t->state == TASK_CRASHED && t->restart_due_us > 0 && !t->pending && !t->merging &&
        !t->restoring && !t->restarting && util_now_us() >= t->restart_due_us) {
        due |= TASK_DUE_RESTART;
        t->restarting = 1; /* until task_restart_ends */
        t->restart_due_us = 0;
    }
    pthread_mutex_unlock(&t->lock);
    return due;
}

json_t *task_json(struct task *t)
{
    json_t *j, *cur = json_null(), *last = json_null(), *restore = json_null();
    pthread_mutex_lock(&t->lock);
    if (t->pending) {
        double secs = t->up_seq ? (double)(util_now_us() - t->up_start_us) / 1e6 : 0;
        json_t *queued = json_array();
        for (struct task_upload *q = t->queue; q; q = q->next)
            json_array_append_new(queued, json_integer((json_int_t)q->seq));
        cur = json_pack("{s:I, s:I, s:o, s:I, s:I, s:f}", "snapshot",
                        (json_int_t)(t->snapping ? t->snap_seq : 0), "uploading",
                        (json_int_t)t->up_seq, "queued", queued, "bytes_done",
                        (json_int_t)t->up_done, "bytes_total", (json_int_t)t->up_total,
                        "seconds", secs);
    }
    if (t->last)
        last = manifest_summary(t->last);
    else if (t->last_seq)
        last = json_pack("{s:I}", "seq", (json_int_t)t->last_seq);
    if (t->restored_from)
        restore = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:b}", "from_seq",
                            (json_int_t)t->restored_from, "fetch_us",
                            (json_int_t)t->restore_fetch_us, "load_us",
                            (json_int_t)t->restore_load_us, "store_bytes",
                            (json_int_t)t->restore_store_bytes, "cache_bytes",
                            (json_int_t)t->restore_cache_bytes, "local_bytes",
                            (json_int_t)t->restore_local_bytes, "warm", t->restore_warm);
    j = json_pack("{s:s, s:s, s:i, s:i, s:i, s:s, s:s, s:i, s:i, s:i, s:s?, s:s?, s:o, s:o, "
                  "s:o, s:s?, s:I}",
                  "id", t->id, "state", task_state_name(t->state), "pid", (int)t->pid, "memory_mib",
                  t->memory_mib, "vcpus", t->vcpus, "accel", t->accel ? t->accel : "",
                  "mode", t->mode ? t->mode : "", "checkpoint_first", t->first_s,
                  "checkpoint_every", t->every_s, "run", t->run, "run_dir", t->run_dir,
                  "serial_log", NULL, "checkpoint", cur, "last_checkpoint", last, "restore",
                  restore, "error", t->last_error, "deltas", (json_int_t)t->n_layers);
    if (j) /* the running chain: sealed layers and the top; merges that bounded it */
        json_object_set_new(j, "local_chain", json_pack("{s:I, s:I}", "depth",
                                                        (json_int_t)(t->n_layers + 1), "merges",
                                                        (json_int_t)t->local_merges));
    if (j && t->failed_seq)
        json_object_set_new(j, "failed_seq", json_integer((json_int_t)t->failed_seq));
    if (j)
        json_object_set_new(j, "room_refusals", json_integer((json_int_t)t->room_refusals));
    if (j) { /* the interval in force and why */
        char why[300];
        int64_t every = task_every_us(t, why, sizeof(why));
        json_object_set_new(j, "interval", json_pack("{s:I, s:s, s:f, s:I}", "seconds",
                                                     (json_int_t)(every / 1000000), "why", why,
                                                     "cost_s", t->iv.cost_s, "measured",
                                                     (json_int_t)t->iv.n));
        if (t->every_s == CFG_AUTO)
            json_object_set_new(j, "checkpoint_every", json_string("auto"));
    }
    if (j) {
        int64_t due = t->restart_due_us ? t->restart_due_us - util_now_us() : -1;
        json_object_set_new(j, "restart", json_pack("{s:s, s:I, s:I, s:b, s:o}", "policy",
                                                    t->no_restart ? "killed on purpose"
                                                                  : t->env->cfg->restart,
                                                    "restarts", (json_int_t)t->rs.restarts,
                                                    "recent_crashes", (json_int_t)t->rs.n,
                                                    "restarting", t->restarting, "due_in_s",
                                                    due >= 0 ? json_real((double)due / 1e6)
                                                             : json_null()));
    }
    if (j) { /* no silent exposure: the work a crash would lose now, against the promise */
        struct protection p;
        int64_t now = util_now_us();
        task_protection_locked(t, &p);
        json_object_set_new(j, "protection",
                            json_pack("{s:s, s:f, s:f, s:o}", "state",
                                      protect_state_name(p.state), "exposed_s",
                                      (double)p.exposed_us / 1e6, "promise_s",
                                      (double)p.promise_us / 1e6, "next_checkpoint_in_s",
                                      t->next_due_us > 0
                                          ? json_real(t->next_due_us > now ? (double)(t->next_due_us - now) / 1e6 : 0.0)
                                          : json_null()));
    }
    if (j) /* mode auto: live pre-copies given up and taken paused instead */
        json_object_set_new(j, "live_fallbacks", json_integer((json_int_t)t->am.fallbacks));
    if (j && t->run_dir) {
        char *serial = task_run_path(t, "serial.log");
        json_object_set_new(j, "serial_log", json_string(serial));
        free(serial);
    }
    pthread_mutex_unlock(&t->lock);
    return j;
}

enum task_state task_state(struct task *t)
{
    pthread_mutex_lock(&t->lock);
    enum task_state s = t->state;
    pthread_mutex_unlock(&t->lock);
    return s;
}

int task_current_run(struct task *t, char **serial)
{
    pthread_mutex_lock(&t->lock);
    int run = t->run_dir && t->state != TASK_REMOVED ? t->run : 0;
    *serial = run > 0 ? task_run_path(t, "serial.log") : NULL;
    pthread_mutex_unlock(&t->lock);
    return *serial ? run : 0;
}

enum task_state task_vm(struct task *t, pid_t *pid, char **run_dir)
{
    pthread_mutex_lock(&t->lock);
    enum task_state s = t->state;
    *pid = t->pid;
    if (run_dir)
        *run_dir = t->run_dir ? strdup(t->run_dir) : NULL;
    pthread_mutex_unlock(&t->lock);
    return s;
}

int task_busy(struct task *t)
{
    pthread_mutex_lock(&t->lock);
    /* the uploader thread may still merge layers after its last upload */
    int busy = t->pending > 0 || t->uploading || t->merging;
    pthread_mutex_unlock(&t->lock);
    return busy;
}

struct task_counters task_counters(struct task *t)
{
    pthread_mutex_lock(&t->lock);
    struct task_counters c = {t->am.fallbacks, t->rs.restarts, t->room_refusals};
    pthread_mutex_unlock(&t->lock);
    return c;
}

struct protection task_protection(struct task *t)
{
    struct protection p;
    pthread_mutex_lock(&t->lock);
    task_protection_locked(t, &p);
    pthread_mutex_unlock(&t->lock);
    return p;
}

struct task_last task_last(struct task *t)
{
    struct task_last l = {0};
    pthread_mutex_lock(&t->lock);
    if (t->last) {
        l.known = 1;
        l.stopped_us = t->last->stopped_us;
        l.store_us = t->last->store_us;
        l.uploaded_bytes = t->last->uploaded_bytes;
    }
    pthread_mutex_unlock(&t->lock);
    return l;
}
