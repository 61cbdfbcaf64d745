/* failover: see failover.h. */
#include "failover.h"

#include "catalog.h"
#include "cluster.h"
#include "err.h"
#include "log.h"
#include "testhook.h"
#include "util.h"

#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* A take-over in progress: its restore runs on a thread of its own. */
struct fo_takeover {
    struct failover *f;
    char id[128], from[128]; /* the task, and the dead node it ran on */
    int64_t from_renewed_ms; /* the dead node's last heartbeat (its wall clock) */
    int64_t seen_wall_ms;    /* when this node found it dead */
    int64_t seen_mono_ms;
    int lost; /* another node got its lease meanwhile (f->lock) */
    int move; /* a planned move of a live node's task, not a take-over */
};

/* When a task's lease was last renewed here (monotonic ms). */
struct fo_lease {
    char id[128];
    int64_t ok_ms;
};

/* A node found dead: when, and which node takes each of its tasks first. */
struct fo_dead {
    char node[128];
    int64_t seen_wall_ms, seen_mono_ms;
    json_t *assign;
};

struct failover {
    const struct cfg *cfg;
    struct store *store;
    struct failover_host host;
    pthread_t cluster, fence;
    int started;
    atomic_int stopping;
    pthread_mutex_t lock; /* guards leases, failed, restoring and the timings */
    struct fo_lease *leases;
    size_t n_leases;
    char (*failed)[128]; /* tasks whose take-over failed here: left to others */
    size_t n_failed;
    struct fo_takeover **restoring;
    size_t n_restoring;
    struct fo_dead *dead; /* the cluster thread's own */
    size_t n_dead;
    atomic_ullong detections, takeovers, fences, renew_failures, moves_in, moves_out;
    /* The failures observed, for checkpoint_every = auto: node-time watched
     * (nodes not dead, times the watch's interval). Atomic: read under task
     * locks, which must not wait for f->lock. */
    atomic_llong node_ms;
    int64_t watched_ms; /* the cluster thread's own */
    double renew_s, detect_s, resume_s;
    /* uploads in flight here and their hold; a GC running here */
    pthread_mutex_t hold_mu; /* guards the four below; held across their store calls */
    int n_uploads, have_hold, gc_running;
    struct store_fence hold;
};

#define FO_GC_LEASE "cluster/gc"
#define FO_WAIT_MS 250              /* between two looks at a lease held elsewhere */
#define FO_GC_WAIT_MS (600 * 1000) /* a GC gives up waiting for uploads after this */

static int64_t fo_mono_ms(void) { return util_now_us() / 1000; }

/* ---- leases ------------------------------------------------------------------- */

int failover_take_lease(struct failover *f, const char *id, struct store_fence *out)
{
    char name[192];
    cluster_lease_name(id, name);
    int rc = store_lease_fenced(f->store, name, f->cfg->node, f->cfg->lease_ms, out);
    if (rc == VK_EBUSY)
        return err_set(VK_EBUSY, "task %s runs on another node (its lease %s is held): "
                                 "restore it there, or wait until that node's lease expires",
                       id, name);
    return rc < 0 ? err_wrap(rc, "task %s: cannot take its lease", id) : 0;
}

int failover_fence_task(struct failover *f, const char *id)
{
    uint64_t seq = 0;
    int rc = catalog_void_next(f->store, id, &seq);
    if (rc == 0)
        log_info("task %s: checkpoint number %" PRIu64 " voided: a node that held the task "
                 "before cannot write it late", id, seq);
    return rc;
}

void failover_drop_lease(struct failover *f, const char *id)
{
    char name[192], *keep = err_stash(); /* (called on failure paths: keep their message) */
    cluster_lease_name(id, name);
    if (store_unlease(f->store, name, f->cfg->node) < 0)
        log_warn("task %s: cannot release its lease: %s", id, err_msg());
    err_unstash(keep);
}

/* Notes that task id's lease was renewed at ok_ms; called with f->lock held. */
static void fo_lease_ok(struct failover *f, const char *id, int64_t ok_ms)
{
    for (size_t i = 0; i < f->n_leases; i++)
        if (!strcmp(f->leases[i].id, id)) {
            f->leases[i].ok_ms = ok_ms;
            return;
        }
    struct fo_lease *nl = realloc(f->leases, (f->n_leases + 1) * sizeof(*nl));
    if (!nl)
        return; /* then the fence counts from its first look (fo_lease_age) */
    f->leases = nl;
    snprintf(nl[f->n_leases].id, sizeof(nl->id), "%s", id);
    nl[f->n_leases++].ok_ms = ok_ms;
}

/* How long ago task id's lease was renewed here (0 when not known yet). */
static int64_t fo_lease_age(struct failover *f, const char *id, int64_t now)
{
    int64_t age = -1;
    pthread_mutex_lock(&f->lock);
    for (size_t i = 0; i < f->n_leases && age < 0; i++)
        if (!strcmp(f->leases[i].id, id))
            age = now - f->leases[i].ok_ms;
    if (age < 0)
        fo_lease_ok(f, id, now);
    pthread_mutex_unlock(&f->lock);
    return age < 0 ? 0 : age;
}

void failover_task_added(struct failover *f, const char *id)
{
    pthread_mutex_lock(&f->lock);
    fo_lease_ok(f, id, fo_mono_ms());
    pthread_mutex_unlock(&f->lock);
}

static void fo_hold_name(const char *node, char out[192])
{
    snprintf(out, 192, "cluster/uploads/%s", node);
}

/* task_env.may_commit: only the holder of a task's lease commits its
 * checkpoints. A node that stalled past its lease (its VM fenced meanwhile)
 * and wakes up mid-upload finds the lease taken and commits nothing; one that
 * stalls after this call and before its write holds a proof that the write
 * checks (store_put_fenced), void once another node took the lease. */
int failover_may_commit(void *arg, const char *id, uint64_t hold, struct store_fence *out,
                        size_t *n)
{
    struct failover *f = arg;
    *n = 0;
    int rc = failover_take_lease(f, id, &out[0]);
    if (rc == VK_EBUSY)
        return err_set(VK_ELEASE, "task %s: this node (%s) lost the task's lease while the "
                                  "checkpoint uploaded; not committed: the task runs elsewhere",
                       id, f->cfg->node);
    if (rc < 0)
        return rc;
    /* The hold renewed now, and still the one the upload began under (a GC
     * elsewhere takes it only from a node that stalled past it). */
    char name[192];
    struct store_fence h;
    fo_hold_name(f->cfg->node, name);
    pthread_mutex_lock(&f->hold_mu);
    int held = f->have_hold && store_lease_fenced(f->store, name, f->cfg->node,
                                                  f->cfg->lease_ms, &h) == 0 &&
               h.epoch == hold;
    if (held)
        out[1] = f->hold = h;
    pthread_mutex_unlock(&f->hold_mu);
    if (!held) /* a GC elsewhere took it while this node stalled */
        return err_set(VK_ELEASE, "task %s: this node (%s) lost its upload hold (a garbage "
                                  "collection on another node took it); not committed",
                       id, f->cfg->node);
    *n = 2;
    return 0;
}

/* ---- uploads here and GC elsewhere ---------------------------------------------- */

/* Whether lease `name` is free (held by no other node): taken and released
 * at once. VK_EBUSY when another node holds it. *taken_over (may be NULL):
 * it was another node's, expired and never released. */
static int fo_lease_free(struct failover *f, const char *name, int *taken_over)
{
    struct store_fence p;
    int rc = store_lease_fenced(f->store, name, f->cfg->node, f->cfg->lease_ms, &p);
    if (taken_over)
        *taken_over = rc == 0 && p.taken_over;
    if (rc == 0 && store_unlease(f->store, name, f->cfg->node) < 0)
        err_clear(); /* it expires */
    return rc;
}

static int fo_gc_here(struct failover *f)
{
    pthread_mutex_lock(&f->hold_mu);
    int here = f->gc_running;
    pthread_mutex_unlock(&f->hold_mu);
    return here;
}

/* Takes this node's upload hold (or counts one more upload under it);
 * *epoch: the hold's, which the upload's commit proves. */
static int fo_hold_take(struct failover *f, uint64_t *epoch)
{
    char name[192];
    int rc = 0;
    fo_hold_name(f->cfg->node, name);
    pthread_mutex_lock(&f->hold_mu);
    if (!f->have_hold && (rc = store_lease_fenced(f->store, name, f->cfg->node,
                                                  f->cfg->lease_ms, &f->hold)) == 0)
        f->have_hold = 1;
    if (rc == 0) {
        f->n_uploads++;
        *epoch = f->hold.epoch;
    }
    pthread_mutex_unlock(&f->hold_mu);
    return rc;
}

void failover_upload_end(void *arg)
{
    struct failover *f = arg;
    char name[192], *keep = err_stash(); /* the upload's own error, if any */
    fo_hold_name(f->cfg->node, name);
    pthread_mutex_lock(&f->hold_mu);
    if (f->n_uploads > 0 && --f->n_uploads == 0 && f->have_hold) {
        f->have_hold = 0;
        if (store_unlease(f->store, name, f->cfg->node) < 0)
            err_clear(); /* it expires */
    }
    pthread_mutex_unlock(&f->hold_mu);
    err_unstash(keep);
}

/* Before an upload: waits while a GC runs on another node, then holds off
 * new ones. A GC here is excluded by the repository's own lock instead. */
int failover_upload_begin(void *arg, uint64_t *hold)
{
    struct failover *f = arg;
    for (int said = 0; !atomic_load(&f->stopping);) {
        int rc = fo_gc_here(f) ? 0 : fo_lease_free(f, FO_GC_LEASE, NULL);
        if (rc == 0) {
            if ((rc = fo_hold_take(f, hold)) < 0)
                return err_wrap(rc, "cannot hold off garbage collection for an upload");
            /* held now: a GC that took its lease meanwhile must be seen, and go first */
            rc = fo_gc_here(f) ? 0 : fo_lease_free(f, FO_GC_LEASE, NULL);
            if (rc == 0)
                return 0;
            failover_upload_end(f);
        }
        if (rc != VK_EBUSY)
            return err_wrap(rc, "cannot look for a garbage collection on another node");
        if (!said++)
            log_info("upload waits: a garbage collection runs on another node");
        usleep(FO_WAIT_MS * 1000);
    }
    return err_set(VK_ESTATE, "the agent is stopping");
}

/* Waits until no other node has uploads in flight (each node's hold is
 * free, or taken from a node that stalled past it). */
static int fo_gc_wait_uploads(struct failover *f)
{
    struct cluster_node *v = NULL;
    size_t n = 0;
    int rc = cluster_nodes(f->store, &v, &n);
    int64_t t0 = fo_mono_ms();
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char name[192];
        if (!strcmp(v[i].name, f->cfg->node))
            continue;
        fo_hold_name(v[i].name, name);
        int stalled = 0;
        for (int said = 0; (rc = fo_lease_free(f, name, &stalled)) == VK_EBUSY;) {
            if (!said++)
                log_info("gc: waiting for the uploads in flight on node %s", v[i].name);
            if (fo_mono_ms() - t0 > FO_GC_WAIT_MS || atomic_load(&f->stopping)) {
                rc = err_set(VK_ETIMEOUT, "gc: node %s still has uploads in flight after %d s: "
                                          "not collecting", v[i].name, FO_GC_WAIT_MS / 1000);
                break;
            }
            usleep(FO_WAIT_MS * 1000);
        }
        /* Taken from a node that stalled past it: whatever it commits late
         * may name what this GC deletes; void every task's next number. */
        if (rc == 0 && stalled) {
            log_warn("gc: node %s stalled with uploads in flight: voiding the next checkpoint "
                     "number of every task", v[i].name);
            rc = catalog_void_next_all(f->store);
        }
    }
    cluster_nodes_free(v, n);
    return rc;
}

int failover_gc_begin(void *arg)
{
    struct failover *f = arg;
    int rc;
    pthread_mutex_lock(&f->hold_mu);
    int busy = f->gc_running;
    f->gc_running = 1;
    pthread_mutex_unlock(&f->hold_mu);
    if (busy)
        return err_set(VK_EBUSY, "a garbage collection runs on this node already");
    int64_t t0 = fo_mono_ms();
    for (int said = 0; (rc = store_lease(f->store, FO_GC_LEASE, f->cfg->node,
                                         f->cfg->lease_ms)) == VK_EBUSY;) {
        if (!said++)
            log_info("gc: waiting for the garbage collection running on another node");
        if (fo_mono_ms() - t0 > FO_GC_WAIT_MS || atomic_load(&f->stopping))
            break;
        usleep(FO_WAIT_MS * 1000);
    }
    if (rc == 0 && (rc = fo_gc_wait_uploads(f)) < 0) {
        char *keep = err_stash();
        store_unlease(f->store, FO_GC_LEASE, f->cfg->node);
        err_unstash(keep);
    }
    if (rc < 0) {
        pthread_mutex_lock(&f->hold_mu);
        f->gc_running = 0;
        pthread_mutex_unlock(&f->hold_mu);
        return err_wrap(rc, "gc: cannot exclude the uploads of other nodes");
    }
    return 0;
}

void failover_gc_end(void *arg)
{
    struct failover *f = arg;
    char *keep = err_stash(); /* the GC's own error, if any */
    if (store_unlease(f->store, FO_GC_LEASE, f->cfg->node) < 0)
        err_clear(); /* it expires */
    pthread_mutex_lock(&f->hold_mu);
    f->gc_running = 0;
    pthread_mutex_unlock(&f->hold_mu);
    err_unstash(keep);
}

/* Renews the upload hold and the GC lease while they are held here; a hold
 * taken meanwhile (this node stalled past it) voids the uploads in flight. */
static void fo_renew_holds(struct failover *f)
{
    char name[192];
    fo_hold_name(f->cfg->node, name);
    pthread_mutex_lock(&f->hold_mu);
    if (f->have_hold) {
        struct store_fence h;
        int rc = store_lease_fenced(f->store, name, f->cfg->node, f->cfg->lease_ms, &h);
        if (rc == 0 && h.epoch != f->hold.epoch)
            rc = VK_EBUSY; /* lost and taken again: not the hold the uploads began under */
        if (rc == 0)
            f->hold = h; /* the same hold (its client may be a new connection) */
        if (rc == VK_EBUSY) {
            log_warn("this node's upload hold was taken by a garbage collection elsewhere "
                     "(this node stalled past it): the uploads in flight will not commit");
            f->have_hold = 0;
            if (store_unlease(f->store, name, f->cfg->node) < 0)
                err_clear();
        } else if (rc < 0) {
            log_warn("cannot renew this node's upload hold: %s", err_msg());
        }
    }
    if (f->gc_running && store_lease(f->store, FO_GC_LEASE, f->cfg->node, f->cfg->lease_ms) < 0)
        log_warn("cannot renew this node's garbage collection lease: %s", err_msg());
    pthread_mutex_unlock(&f->hold_mu);
}

/* ---- fencing ------------------------------------------------------------------- */

/* Whether the fence process named in pidf ("PID START") runs: that pid, and
 * started when noted (a pid alone may since belong to another process; an
 * empty or damaged file would have been kill(0, 0), which always succeeds). */
static int fo_fence_runs(const char *pidf)
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

/* The fence process's start time of process pid, read from /proc/PID/stat
 * with system calls only (it runs in a child of a threaded process): 0 when
 * unknown. */
static unsigned long long fo_raw_start(pid_t pid)
{
    char path[64], buf[1024], digits[16];
    int n;
    /* "/proc/PID/stat", built by hand: snprintf is not async-signal-safe */
    int nd = 0;
    for (pid_t p = pid; p > 0 && nd < 15; p /= 10)
        digits[nd++] = (char)('0' + p % 10);
    memcpy(path, "/proc/", 6);
    n = 6;
    while (nd > 0)
        path[n++] = digits[--nd];
    memcpy(path + n, "/stat", 6);
    if (util_read_small(path, buf, sizeof(buf)) <= 0)
        return 0;
    char *p = strrchr(buf, ')'); /* the name may hold spaces and parentheses */
    if (!p)
        return 0;
    /* after ") ": state is field 3; starttime is field 22 */
    int field = 2;
    unsigned long long v = 0;
    for (p++; *p; p++) {
        if (*p == ' ') {
            if (++field == 23)
                return v;
            v = 0;
        } else if (field == 22 && *p >= '0' && *p <= '9') {
            v = v * 10 + (unsigned long long)(*p - '0');
        }
    }
    return field == 22 ? v : 0;
}

/* The fence process: kills VM qpid (started at qstart) when the time in
 * file ok is more than limit_ms ago, or exits when the VM has. Only
 * async-signal-safe calls. */
static _Noreturn void fo_fence_loop(pid_t qpid, unsigned long long qstart, const char *ok,
                                    const char *logf, const char *msg, int64_t limit_ms)
{
    for (;;) {
        struct timespec nap = {0, 100 * 1000 * 1000};
        char buf[24];
        /* the VM, and no other process that got its pid since */
        if (kill(qpid, 0) < 0 || fo_raw_start(qpid) != qstart)
            _exit(0);
        ssize_t got = util_read_small(ok, buf, sizeof(buf));
        int64_t stamp = 0;
        for (ssize_t i = 0; i < got && buf[i] >= '0' && buf[i] <= '9'; i++)
            stamp = stamp * 10 + (buf[i] - '0');
        int64_t age = got == 20 ? fo_mono_ms() - stamp : INT64_MAX;
        if (age > limit_ms) {
            kill(qpid, SIGKILL);
            int lf = open(logf, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
            if (lf >= 0) {
                (void)!write(lf, msg, strlen(msg));
                close(lf);
            }
            _exit(0);
        }
        nanosleep(&nap, NULL);
    }
}

/* Starts the fence process of VM qpid; notes its pid and start in pidf. */
static void fo_spawn_fence(struct failover *f, struct task *t, pid_t qpid, const char *ok,
                           const char *pidf, const char *logf, const char *msg)
{
    int64_t limit_ms = f->cfg->lease_ms - f->cfg->renew_ms;
    unsigned long long qstart = fo_raw_start(qpid);
    int pfd[2];
    if (qstart == 0 || pipe2(pfd, O_CLOEXEC) < 0)
        return;
    pid_t child = fork();
    if (child == 0) { /* only async-signal-safe calls from here */
        pid_t g = fork();
        if (g != 0) {
            if (g > 0)
                (void)!write(pfd[1], &g, sizeof(g));
            _exit(0);
        }
        setsid();
        /* the agent's lock and socket must not live on here: every fd
         * above 2, however many (close_range is Linux 5.9+; before it, up
         * to the limit on open files) */
        if (syscall(SYS_close_range, 3u, ~0u, 0u) < 0) {
            struct rlimit rl = {1024, 1024};
            (void)getrlimit(RLIMIT_NOFILE, &rl);
            for (rlim_t fdn = 3; fdn < rl.rlim_cur && fdn < (1u << 20); fdn++)
                close((int)fdn);
        }
        /* Its kill must come before the lease expires (renew_ms of margin)
         * however busy the CPUs are: real-time, lowest priority. It sleeps
         * 100 ms between two reads of a small file. (Best effort: without
         * the right, it runs as before.) */
        struct sched_param sp = {.sched_priority = 1};
        (void)sched_setscheduler(0, SCHED_FIFO, &sp);
        fo_fence_loop(qpid, qstart, ok, logf, msg, limit_ms);
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
                     (int)qpid, f->cfg->lease_ms);
        }
        waitpid(child, NULL, 0);
    }
    close(pfd[0]);
}

/* A fence per VM that does not need the agent: a process of its own (forked
 * twice, its own session, no inherited descriptors) kills the VM when the
 * time in RUN_DIR/lease.ok (CLOCK_MONOTONIC ms, one clock for every process
 * of the host that never steps: when the last renewal that succeeded
 * started) is more than lease_ms - renew_ms ago. Written at every renewal. So
 * a VM outlives neither a dead or stalled agent nor a cut-off store by more
 * than its lease, whatever the wall clock does. The VM is known by pid and
 * start time, and so is the fence (RUN_DIR/fence.pid); one per VM. Returns 1
 * when the task's VM runs. */
static int fo_touch_fence(struct failover *f, struct task *t, int64_t renewed_ms)
{
    char *run_dir = NULL;
    pid_t qpid = 0;
    int running = task_vm(t, &qpid, &run_dir) == TASK_RUNNING;
    char *ok = run_dir ? util_fmt("%s/lease.ok", run_dir) : NULL;
    char *pidf = run_dir ? util_fmt("%s/fence.pid", run_dir) : NULL;
    char *logf = run_dir ? util_fmt("%s/fence.log", run_dir) : NULL;
    char *msg = util_fmt("fence: killed VM %d of task %s: its lease was not renewed for %d ms\n",
                         (int)qpid, task_id(t), f->cfg->lease_ms - f->cfg->renew_ms);
    free(run_dir);
    if (ok && pidf && logf && msg && running && qpid > 0) {
        char stamp[24];
        snprintf(stamp, sizeof(stamp), "%019lld\n", (long long)renewed_ms);
        int fd = open(ok, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        if (fd >= 0) { /* one small write in place: a reader sees the old or the new */
            (void)!pwrite(fd, stamp, 20, 0);
            close(fd);
        }
        if (!fo_fence_runs(pidf))
            fo_spawn_fence(f, t, qpid, ok, pidf, logf, msg);
    }
    free(ok);
    free(pidf);
    free(logf);
    free(msg);
    return running && qpid > 0;
}

static int fo_task_running(struct task *t) { return task_state(t) == TASK_RUNNING; }

/* Kills the VM of every task whose lease was not renewed in time: before it
 * expires, so that no other node can have started its copy yet. Runs on its
 * own thread, so that a store call that hangs does not delay it. */
static void *fo_fence_thread(void *arg)
{
    struct failover *f = arg;
    while (!atomic_load(&f->stopping)) {
        struct task **v = NULL;
        size_t n = f->host.tasks(f->host.arg, &v);
        int64_t now = fo_mono_ms();
        for (size_t k = 0; k < n; k++) {
            int64_t age = fo_lease_age(f, task_id(v[k]), now);
            if (age > f->cfg->lease_ms - f->cfg->renew_ms && fo_task_running(v[k])) {
                log_error("task %s: lease not renewed for %" PRId64 " ms (it expires after %d): "
                          "killing its VM so that it never runs twice",
                          task_id(v[k]), age, f->cfg->lease_ms);
                task_kill(v[k]);
                atomic_fetch_add(&f->fences, 1);
            }
        }
        free(v);
        usleep(100000);
    }
    return NULL;
}

/* ---- renewal -------------------------------------------------------------------- */

static int fo_json_has(json_t *strings, const char *s)
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
static void fo_renew_restoring(struct failover *f, json_t *ids)
{
    pthread_mutex_lock(&f->lock);
    size_t n = f->n_restoring;
    char(*v)[128] = n ? malloc(n * sizeof(*v)) : NULL;
    for (size_t i = 0; v && i < n; i++)
        memcpy(v[i], f->restoring[i]->id, sizeof(v[i]));
    pthread_mutex_unlock(&f->lock);
    for (size_t i = 0; v && i < n; i++) {
        int rc = failover_take_lease(f, v[i], NULL);
        if (rc == 0) {
            if (!fo_json_has(ids, v[i])) /* added to the table since the copy */
                json_array_append_new(ids, json_string(v[i]));
            continue;
        }
        if (rc != VK_EBUSY) {
            atomic_fetch_add(&f->renew_failures, 1);
            log_warn("task %s: cannot renew its lease during its restore: %s", v[i], err_msg());
            continue;
        }
        pthread_mutex_lock(&f->lock);
        for (size_t k = 0; k < f->n_restoring; k++)
            if (!strcmp(f->restoring[k]->id, v[i]))
                f->restoring[k]->lost = 1;
        pthread_mutex_unlock(&f->lock);
    }
    free(v);
}

/* Renews the lease of every task of this node; a task another node holds
 * was taken over while this node was cut off: its copy here is stopped. */
static void fo_renew(struct failover *f, json_t *ids, int *running)
{
    struct task **v = NULL;
    size_t n = f->host.tasks(f->host.arg, &v);
    for (size_t k = 0; k < n; k++) {
        const char *id = task_id(v[k]);
        /* The lease runs from before the call that renewed it: a stall after
         * the store wrote it must shorten the fence's time, never lengthen it. */
        int64_t before = fo_mono_ms();
        int rc = failover_take_lease(f, id, NULL);
        if (rc == 0) {
            pthread_mutex_lock(&f->lock);
            fo_lease_ok(f, id, before);
            pthread_mutex_unlock(&f->lock);
            json_array_append_new(ids, json_string(id));
            *running += fo_touch_fence(f, v[k], before);
        } else if (rc == VK_EBUSY) {
            log_warn("task %s: another node holds its lease (it was taken over while this node "
                     "could not renew it): stopping and forgetting the copy here", id);
            task_kill(v[k]);
            task_remove(v[k]);
        } else {
            atomic_fetch_add(&f->renew_failures, 1);
            log_warn("task %s: cannot renew its lease: %s", id, err_msg());
        }
    }
    free(v);
    fo_renew_restoring(f, ids);
}

/* ---- detection ------------------------------------------------------------------ */

/* Dead node nd as first found (noted now if new), with which node takes each
 * of its tasks first: decided once, from the heartbeats of that moment, so
 * that take-overs do not shift it. NULL when out of memory. */
static struct fo_dead *fo_seen_dead(struct failover *f, const struct cluster_node *nd,
                                    const struct cluster_node *v, size_t n, int64_t now)
{
    for (size_t i = 0; i < f->n_dead; i++)
        if (!strcmp(f->dead[i].node, nd->name))
            return &f->dead[i];
    struct fo_dead *nv = realloc(f->dead, (f->n_dead + 1) * sizeof(*nv));
    if (!nv)
        return NULL;
    f->dead = nv;
    struct fo_dead *d = &f->dead[f->n_dead++];
    snprintf(d->node, sizeof(d->node), "%s", nd->name);
    d->seen_wall_ms = now;
    d->seen_mono_ms = fo_mono_ms();
    d->assign = json_array();
    for (size_t k = 0; k < json_array_size(nd->tasks); k++) {
        char to[128];
        cluster_assign(v, n, now, k, to);
        json_array_append_new(d->assign, json_string(to));
    }
    atomic_fetch_add(&f->detections, 1);
    pthread_mutex_lock(&f->lock);
    f->detect_s = (double)(now - nd->renewed_ms) / 1e3;
    pthread_mutex_unlock(&f->lock);
    char *what = json_dumps(nd->tasks, JSON_COMPACT), *who = json_dumps(d->assign, JSON_COMPACT);
    log_warn("node %s is dead: no heartbeat for %" PRId64 " ms (lease %d ms); its tasks %s go "
             "first to %s",
             nd->name, now - nd->renewed_ms, nd->lease_ms, what ? what : "?", who ? who : "?");
    free(what);
    free(who);
    return d;
}

static void fo_forget_dead(struct failover *f, const char *node)
{
    for (size_t i = 0; i < f->n_dead; i++)
        if (!strcmp(f->dead[i].node, node)) {
            json_decref(f->dead[i].assign);
            f->dead[i] = f->dead[--f->n_dead];
            log_info("node %s is alive again", node);
            return;
        }
}

/* ---- take-over ------------------------------------------------------------------ */

static int fo_failed_here(struct failover *f, const char *id)
{
    int found = 0;
    pthread_mutex_lock(&f->lock);
    for (size_t i = 0; i < f->n_failed && !found; i++)
        found = !strcmp(f->failed[i], id);
    pthread_mutex_unlock(&f->lock);
    return found;
}

/* Ends take-over tk (frees it, drops its reservation); failed: remember not
 * to try it here again. */
static void fo_takeover_end(struct fo_takeover *tk, int failed)
{
    struct failover *f = tk->f;
    pthread_mutex_lock(&f->lock);
    for (size_t i = 0; i < f->n_restoring; i++)
        if (f->restoring[i] == tk) {
            f->restoring[i] = f->restoring[--f->n_restoring];
            break;
        }
    if (failed) {
        char(*nf)[128] = realloc(f->failed, (f->n_failed + 1) * sizeof(*nf));
        if (nf) {
            f->failed = nf;
            snprintf(f->failed[f->n_failed++], 128, "%s", tk->id);
        }
    }
    pthread_mutex_unlock(&f->lock);
    f->host.unreserve(f->host.arg, tk->id);
    free(tk);
}

static void *fo_takeover_run(void *arg)
{
    struct fo_takeover *tk = arg;
    struct failover *f = tk->f;
    struct task *out = NULL;
    int64_t t0 = fo_mono_ms();
    log_info("task %s of %s node %s: lease taken, restoring its newest checkpoint", tk->id,
             tk->move ? "moving" : "dead", tk->from);
    int rc = failover_fence_task(f, tk->id);
    if (rc == 0)
        rc = f->host.restore(f->host.arg, tk->id, &out);
    pthread_mutex_lock(&f->lock);
    int lost = tk->lost;
    pthread_mutex_unlock(&f->lock);
    if (rc == 0 && lost) {
        log_error("task %s: another node took its lease during the restore here: stopping the "
                  "copy here", tk->id);
        task_kill(out);
        task_remove(out);
        task_free(out);
        fo_takeover_end(tk, 0);
        return NULL;
    }
    if (rc == 0 && (rc = f->host.add(f->host.arg, out)) < 0)
        task_free(out);
    int64_t t1 = fo_mono_ms();
    if (rc < 0) {
        log_error("task %s: take-over failed here (%s); leaving it to another node", tk->id,
                  err_msg());
        failover_drop_lease(f, tk->id);
        fo_takeover_end(tk, 1);
        return NULL;
    }
    if (tk->move) {
        if (cluster_move_done(f->store, tk->id) < 0)
            log_warn("task %s: cannot remove its move record: %s", tk->id, err_msg());
        atomic_fetch_add(&f->moves_in, 1);
        log_info("task %s moved here from node %s: restored in %" PRId64 " ms", tk->id, tk->from,
                 t1 - t0);
        fo_takeover_end(tk, 0);
        return NULL;
    }
    atomic_fetch_add(&f->takeovers, 1);
    pthread_mutex_lock(&f->lock);
    f->resume_s = (double)(t1 - tk->seen_mono_ms) / 1e3;
    pthread_mutex_unlock(&f->lock);
    log_info("task %s of dead node %s runs here: crash to detection <= %" PRId64
             " ms (last heartbeat to detection), detection to running %" PRId64
             " ms (restore %" PRId64 " ms)",
             tk->id, tk->from, tk->seen_wall_ms - tk->from_renewed_ms, t1 - tk->seen_mono_ms,
             t1 - t0);
    fo_takeover_end(tk, 0);
    return NULL;
}

/* ---- restores asked of this node ------------------------------------------------ */

struct fo_takeover *failover_hold(struct failover *f, const char *id)
{
    struct fo_takeover *tk = calloc(1, sizeof(*tk)), **nr = NULL;
    if (!tk)
        return NULL;
    tk->f = f;
    snprintf(tk->id, sizeof(tk->id), "%s", id);
    pthread_mutex_lock(&f->lock);
    nr = realloc(f->restoring, (f->n_restoring + 1) * sizeof(*nr));
    if (nr) {
        f->restoring = nr;
        f->restoring[f->n_restoring++] = tk;
    }
    pthread_mutex_unlock(&f->lock);
    if (!nr) {
        free(tk);
        return NULL;
    }
    return tk;
}

int failover_release(struct fo_takeover *tk)
{
    struct failover *f = tk->f;
    int lost;
    pthread_mutex_lock(&f->lock);
    for (size_t i = 0; i < f->n_restoring; i++)
        if (f->restoring[i] == tk) {
            f->restoring[i] = f->restoring[--f->n_restoring];
            break;
        }
    lost = tk->lost;
    pthread_mutex_unlock(&f->lock);
    free(tk);
    return lost;
}

/* Starts restoring task `id` here, if this node gets its lease: 1 when it
 * did. tk0: who it comes from and when that was seen. */
static int fo_start_takeover(struct failover *f, const char *id, const struct fo_takeover *tk0)
{
    char name[192];
    cluster_lease_name(id, name);
    if (fo_failed_here(f, id) || f->host.reserve(f->host.arg, id) < 0) {
        err_clear();
        return 0; /* failed here before; ours, or being started or restored here */
    }
    if (store_lease(f->store, name, f->cfg->node, f->cfg->lease_ms) < 0) {
        err_clear();
        f->host.unreserve(f->host.arg, id);
        return 0; /* held by another node, or not expired */
    }
    struct fo_takeover *tk = calloc(1, sizeof(*tk));
    struct fo_takeover **nr = NULL;
    if (tk) {
        *tk = *tk0;
        tk->f = f;
        snprintf(tk->id, sizeof(tk->id), "%s", id);
        pthread_mutex_lock(&f->lock);
        nr = realloc(f->restoring, (f->n_restoring + 1) * sizeof(*nr));
        if (nr) {
            f->restoring = nr;
            f->restoring[f->n_restoring++] = tk;
        }
        pthread_mutex_unlock(&f->lock);
    }
    if (!nr) {
        free(tk);
        log_error("task %s: out of memory for its take-over; leaving it to another node", id);
        failover_drop_lease(f, id);
        f->host.unreserve(f->host.arg, id);
        return 0;
    }
    pthread_t th;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int started = pthread_create(&th, &attr, fo_takeover_run, tk) == 0;
    pthread_attr_destroy(&attr);
    if (!started) {
        log_error("task %s: cannot start a thread for its take-over; leaving it to another node", id);
        failover_drop_lease(f, id);
        fo_takeover_end(tk, 1);
    }
    return started;
}

/* Starts restoring task `id` of dead node nd here, if this node gets its
 * lease: 1 when it did. */
static int fo_take_over(struct failover *f, const struct cluster_node *nd, const char *id,
                        const struct fo_dead *d)
{
    struct fo_takeover tk = {.from_renewed_ms = nd->renewed_ms,
                             .seen_wall_ms = d->seen_wall_ms,
                             .seen_mono_ms = d->seen_mono_ms};
    snprintf(tk.from, sizeof(tk.from), "%s", nd->name);
    return fo_start_takeover(f, id, &tk);
}

/* The planned moves asked of this node: each task restored here once its
 * old node gave up its lease. */
static void fo_watch_moves(struct failover *f)
{
    json_t *moves = NULL, *m;
    size_t i;
    if (testhook_file_num("VMCKPT_TEST_MOVES_OFF_FILE")) /* tests: a target that never takes */
        return;
    if (cluster_moves_to(f->store, f->cfg->node, &moves) < 0) {
        log_warn("%s", err_msg());
        return;
    }
    json_array_foreach(moves, i, m)
    {
        struct fo_takeover tk = {.move = 1, .seen_wall_ms = util_wall_us() / 1000,
                                 .seen_mono_ms = fo_mono_ms()};
        snprintf(tk.from, sizeof(tk.from), "%s", json_string_value(json_object_get(m, "from")));
        fo_start_takeover(f, json_string_value(json_object_get(m, "task")), &tk);
    }
    json_decref(moves);
}

/* The tasks this node would take over if the node running each died now:
 * placement over the other nodes, as the survivors would compute it. */
static void fo_successor_of(struct failover *f, const struct cluster_node *v, size_t n,
                            int64_t now)
{
    struct cluster_node *as_dead = malloc((n + 1) * sizeof(*as_dead));
    json_t *mine = json_array(), *running = json_object();
    for (size_t i = 0; i < n; i++) { /* tasks a live node (this one too) runs */
        size_t k;
        json_t *id;
        if (cluster_state_of(&v[i], now) != CLUSTER_DEAD)
            json_array_foreach(v[i].tasks, k, id)
                if (json_is_string(id))
                    json_object_set_new(running, json_string_value(id), json_true());
    }
    for (size_t i = 0; as_dead && i < n; i++) {
        int dead = cluster_state_of(&v[i], now) == CLUSTER_DEAD;
        if (!strcmp(v[i].name, f->cfg->node))
            continue;
        /* A node found dead keeps its tasks' stages here until they are taken
         * over (its heartbeat still names them): the take-over reads them. */
        memcpy(as_dead, v, n * sizeof(*v)); /* shallow: only renewed_ms changes */
        as_dead[i].renewed_ms = INT64_MIN / 4;
        size_t k;
        json_t *id;
        json_array_foreach(v[i].tasks, k, id)
        {
            char to[128];
            if (!json_is_string(id) || (dead && json_object_get(running, json_string_value(id))))
                continue; /* taken over already: a dead node's heartbeat stays */
            cluster_assign(as_dead, n, now, k, to);
            if (!strcmp(to, f->cfg->node))
                json_array_append(mine, id);
        }
    }
    f->host.successor_of(f->host.arg, mine);
    json_decref(mine);
    json_decref(running);
    free(as_dead);
}

static void fo_watch(struct failover *f)
{
    struct cluster_node *v = NULL;
    size_t n = 0;
    int64_t now = util_wall_us() / 1000, mono = fo_mono_ms();
    if (cluster_nodes(f->store, &v, &n) < 0)
        return;
    size_t up = 0;
    for (size_t i = 0; i < n; i++)
        up += cluster_state_of(&v[i], now) != CLUSTER_DEAD;
    if (f->watched_ms)
        atomic_fetch_add(&f->node_ms, (long long)up * (mono - f->watched_ms));
    f->watched_ms = mono;
    for (size_t i = 0; i < n && !atomic_load(&f->stopping); i++) {
        if (!strcmp(v[i].name, f->cfg->node))
            continue;
        if (cluster_state_of(&v[i], now) != CLUSTER_DEAD) {
            fo_forget_dead(f, v[i].name);
            continue;
        }
        const struct fo_dead *d = fo_seen_dead(f, &v[i], v, n, now);
        size_t k;
        json_t *id;
        json_array_foreach(v[i].tasks, k, id)
        {
            /* Each task has a node it goes to first; any other node takes it
             * only if that one has not within a lease. */
            const char *to = d ? json_string_value(json_array_get(d->assign, k)) : NULL;
            if (d && to && strcmp(to, f->cfg->node) != 0 &&
                fo_mono_ms() - d->seen_mono_ms < f->cfg->lease_ms)
                continue;
            if (d && json_is_string(id))
                fo_take_over(f, &v[i], json_string_value(id), d);
        }
    }
    if (f->host.successor_of && !atomic_load(&f->stopping))
        fo_successor_of(f, v, n, now);
    cluster_nodes_free(v, n);
    fo_watch_moves(f);
}

static void *fo_cluster_thread(void *arg)
{
    struct failover *f = arg;
    while (!atomic_load(&f->stopping)) {
        int64_t t0 = util_now_us();
        json_t *ids = json_array();
        int running = 0;
        fo_renew(f, ids, &running);
        fo_renew_holds(f);
        pthread_mutex_lock(&f->lock);
        f->renew_s = (double)(util_now_us() - t0) / 1e6;
        pthread_mutex_unlock(&f->lock);
        if (cluster_beat(f->store, f->cfg->node, f->cfg->lease_ms, f->cfg->renew_ms, ids,
                         running) < 0)
            log_warn("cannot write this node's heartbeat: %s", err_msg());
        json_decref(ids);
        fo_watch(f);
        for (int64_t left = f->cfg->renew_ms * 1000 - (util_now_us() - t0);
             left > 0 && !atomic_load(&f->stopping); left -= 50000)
            usleep(left < 50000 ? (useconds_t)left : 50000);
    }
    return NULL;
}

double failover_mtbf_s(void *arg, char *why, size_t len)
{
    struct failover *f = arg;
    unsigned long long fails = atomic_load(&f->detections);
    double node_s = (double)atomic_load(&f->node_ms) / 1000;
    if (fails < FAILOVER_MTBF_MIN_FAILURES)
        return 0;
    snprintf(why, len, "observed: %llu node failures in %.1f node-hours", fails, node_s / 3600);
    return node_s / (double)fails;
}

/* ---- planned moves: this node's side ------------------------------------------- */

int failover_pick_target(struct failover *f, const char *to, char out[128])
{
    struct cluster_node *v = NULL;
    size_t n = 0;
    int64_t now = util_wall_us() / 1000;
    int rc = cluster_nodes(f->store, &v, &n);
    out[0] = '\0';
    if (rc < 0)
        return rc;
    if (to) {
        for (size_t i = 0; i < n; i++)
            if (!strcmp(v[i].name, to) && cluster_state_of(&v[i], now) == CLUSTER_ALIVE)
                snprintf(out, 128, "%s", to);
        if (!strcmp(to, f->cfg->node))
            rc = err_set(VK_EINVAL, "node %s is this node: a move goes to another one", to);
        else if (!out[0])
            rc = err_set(VK_ESTATE, "node %s is not an alive node of this cluster (see vmckpt "
                                    "nodes): nothing was moved", to);
    } else {
        cluster_pick_other(v, n, now, f->cfg->node, out);
        if (!out[0])
            rc = err_set(VK_ESTATE, "no other node of this cluster is alive to take the task: "
                                    "nothing was moved");
    }
    cluster_nodes_free(v, n);
    return rc;
}

int failover_move_out(struct failover *f, const char *id, const char *to, uint64_t seq)
{
    /* The record first, then the lease: the target takes the task only once
     * the lease is free, and the record tells it to. */
    int rc = cluster_move_put(f->store, id, f->cfg->node, to, seq);
    if (rc < 0)
        return rc;
    failover_drop_lease(f, id);
    atomic_fetch_add(&f->moves_out, 1);
    return 0;
}

int failover_wait_moved(struct failover *f, const char *id, int timeout_ms)
{
    int64_t deadline = fo_mono_ms() + timeout_ms;
    for (;;) {
        int rc = cluster_move_pending(f->store, id);
        if (rc <= 0)
            return rc;
        if (fo_mono_ms() > deadline)
            break;
        usleep(50000);
    }
    /* Not taken: the record goes, so that the target cannot take it late
     * (it would need the lease too, which the caller takes back). */
    cluster_move_done(f->store, id);
    return err_set(VK_ETIMEOUT, "no node took task %s within %d s", id, timeout_ms / 1000);
}

/* ---- views ---------------------------------------------------------------------- */

int failover_nodes_json(struct failover *f, json_t **out)
{
    struct cluster_node *v = NULL;
    size_t n = 0;
    int64_t now = util_wall_us() / 1000;
    int rc = cluster_nodes(f->store, &v, &n);
    if (rc < 0)
        return rc;
    json_t *nodes = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(
            nodes, json_pack("{s:s, s:s, s:I, s:i, s:i, s:I, s:O}", "node", v[i].name, "state",
                             cluster_state_name(cluster_state_of(&v[i], now)), "age_ms",
                             (json_int_t)(now - v[i].renewed_ms), "lease_ms", v[i].lease_ms,
                             "running", v[i].running, "memory_free_mib",
                             (json_int_t)v[i].memory_free_mib, "tasks", v[i].tasks));
    cluster_nodes_free(v, n);
    *out = json_pack("{s:s, s:o}", "node", f->cfg->node, "nodes", nodes);
    return *out ? 0 : err_set(VK_ENOMEM, "out of memory");
}

void failover_metrics(struct failover *f, FILE *out)
{
    pthread_mutex_lock(&f->lock);
    double renew_s = f->renew_s, detect_s = f->detect_s, resume_s = f->resume_s;
    pthread_mutex_unlock(&f->lock);
    fprintf(out,
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
            renew_s, (unsigned long long)atomic_load(&f->renew_failures),
            (unsigned long long)atomic_load(&f->detections), detect_s,
            (unsigned long long)atomic_load(&f->takeovers), resume_s,
            (unsigned long long)atomic_load(&f->fences));
    fprintf(out, "# HELP vmckpt_moves_total planned moves of tasks (vmckpt move, drain), by "
                 "direction\n# TYPE vmckpt_moves_total counter\n"
                 "vmckpt_moves_total{direction=\"in\"} %llu\n"
                 "vmckpt_moves_total{direction=\"out\"} %llu\n",
            (unsigned long long)atomic_load(&f->moves_in),
            (unsigned long long)atomic_load(&f->moves_out));
}

/* ---- start and stop ------------------------------------------------------------- */

int failover_open(struct failover **out, const struct cfg *cfg, struct store *s,
                  const struct failover_host *host)
{
    struct failover *f = calloc(1, sizeof(*f));
    *out = NULL;
    if (!f)
        return err_set(VK_ENOMEM, "out of memory");
    f->cfg = cfg;
    f->store = s;
    f->host = *host;
    pthread_mutex_init(&f->lock, NULL);
    pthread_mutex_init(&f->hold_mu, NULL);
    *out = f;
    return 0;
}

int failover_start(struct failover *f)
{
    if (pthread_create(&f->fence, NULL, fo_fence_thread, f) != 0)
        return err_set(VK_ENOMEM, "cannot start the fence thread");
    if (pthread_create(&f->cluster, NULL, fo_cluster_thread, f) != 0) {
        atomic_store(&f->stopping, 1);
        pthread_join(f->fence, NULL);
        return err_set(VK_ENOMEM, "cannot start the cluster thread");
    }
    f->started = 1;
    return 0;
}

void failover_stop(struct failover *f)
{
    if (!f)
        return;
    atomic_store(&f->stopping, 1);
    if (f->started) {
        pthread_join(f->cluster, NULL);
        pthread_join(f->fence, NULL);
        f->started = 0;
    }
    for (int waited = 0;; waited++) { /* take-overs in progress hold pointers to f */
        pthread_mutex_lock(&f->lock);
        size_t left = f->n_restoring;
        pthread_mutex_unlock(&f->lock);
        if (!left)
            break;
        if (waited == 0)
            log_info("waiting for %zu take-over restore(s) to end", left);
        usleep(50000);
    }
}

void failover_free(struct failover *f)
{
    if (!f)
        return;
    failover_stop(f);
    for (size_t i = 0; i < f->n_dead; i++)
        json_decref(f->dead[i].assign);
    free(f->dead);
    free(f->leases);
    free(f->failed);
    free(f->restoring);
    pthread_mutex_destroy(&f->lock);
    pthread_mutex_destroy(&f->hold_mu);
    free(f);
}
