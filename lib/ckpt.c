#include "ckpt.h"

#include "err.h"
#include "img.h"
#include "log.h"
#include "testhook.h"

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

/* Whether a memory save in state s still runs (and holds the VM or the spool). */
static int ckpt_save_running(const char *s)
{
    return s && (!strcmp(s, "active") || !strcmp(s, "setup") || !strcmp(s, "pre-switchover") ||
                 !strcmp(s, "device") || !strcmp(s, "cancelling"));
}

int ckpt_settle(struct qmp *q, const char *task)
{
    json_t *st = NULL;
    int rc = qmp_exec(q, "query-migrate", NULL, &st, CKPT_QMP_TIMEOUT_MS);
    const char *s = rc == 0 ? json_string_value(json_object_get(st, "status")) : NULL;
    if (ckpt_save_running(s)) {
        log_warn("task %s: a memory save was left %s; cancelling it", task, s);
        qmp_exec(q, "migrate_cancel", NULL, NULL, CKPT_QMP_TIMEOUT_MS);
        for (int i = 0; i < 500 && ckpt_save_running(s); i++) {
            json_decref(st);
            st = NULL;
            usleep(20000);
            if (qmp_exec(q, "query-migrate", NULL, &st, CKPT_QMP_TIMEOUT_MS) < 0)
                break;
            s = json_string_value(json_object_get(st, "status"));
        }
    }
    json_decref(st);
    st = NULL;
    if (rc == 0)
        rc = qmp_exec(q, "query-status", NULL, &st, CKPT_QMP_TIMEOUT_MS);
    s = rc == 0 ? json_string_value(json_object_get(st, "status")) : NULL;
    if (s && strcmp(s, "running") != 0) {
        log_warn("task %s: VM found %s, resuming it", task, s);
        rc = qmp_exec(q, "cont", NULL, NULL, CKPT_QMP_TIMEOUT_MS);
        if (rc < 0)
            err_wrap(rc, "task %s: its VM could not be resumed", task);
    }
    json_decref(st);
    return rc;
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

/* The capabilities each mode needs, all set in one command: QEMU checks the
 * set as a whole, and a capability left on from another mode would change
 * this one (pause-before-switchover would hold a stop-copy save forever). */
static int ckpt_set_caps(struct qmp *q, enum ckpt_mode mode)
{
    json_t *args = json_pack("{s:[{s:s, s:b}, {s:s, s:b}, {s:s, s:b}]}", "capabilities",
                             "capability", "background-snapshot", "state", mode == CKPT_COW,
                             "capability", "pause-before-switchover", "state",
                             mode == CKPT_LIVE, "capability", "events", "state", 1);
    return qmp_exec(q, "migrate-set-capabilities", args, NULL, CKPT_QMP_TIMEOUT_MS);
}

static int ckpt_seal(struct qmp *q, const char *new_top)
{
    json_t *args = json_pack("{s:s, s:s, s:s, s:s}", "device", "drive0", "snapshot-file",
                             new_top, "format", "qcow2", "mode", "existing");
    return qmp_exec(q, "blockdev-snapshot-sync", args, NULL, CKPT_QMP_TIMEOUT_MS);
}

/* The stop, as QEMU saw it: its STOP event to its RESUME event. Each is
 * taken once (the first wait keeps it in *slot for the time). */
static int ckpt_event(struct qmp *q, const char *name, json_t **slot)
{
    return *slot ? 0 : qmp_wait_event(q, name, CKPT_QMP_TIMEOUT_MS, slot);
}

struct ckpt_evs {
    json_t *stop, *resume;
};

/* Runs the VM again after a completed save. QEMU says "completed" a moment
 * before it leaves its finish-migrate state, and refuses cont until then. */
static int ckpt_cont_saved(struct qmp *q)
{
    int64_t deadline = util_now_us() + (int64_t)CKPT_QMP_TIMEOUT_MS * 1000;
    for (;;) {
        int rc = qmp_exec(q, "cont", NULL, NULL, CKPT_QMP_TIMEOUT_MS);
        if (rc != VK_EQEMU || !strstr(err_msg(), "not finalized") || util_now_us() > deadline)
            return rc;
        usleep(200);
    }
}

/* cow and stop-copy: stop, seal, save (wholly or copy-on-write), run; a
 * final stop-copy leaves the VM paused once saved. */
static int ckpt_paused(struct qmp *q, int stop_copy, int final, const char *new_top,
                       const char *uri, const char *serial_path, struct ckpt_evs *ev,
                       struct ckpt_snap *out)
{
    struct stat st;
    int64_t t;
    int rc = qmp_exec(q, "stop", NULL, NULL, CKPT_QMP_TIMEOUT_MS);
    if (rc < 0)
        return rc;
    rc = ckpt_event(q, "STOP", &ev->stop);
    if (rc < 0)
        return rc;
    if (serial_path && stat(serial_path, &st) == 0)
        out->serial_bytes = (uint64_t)st.st_size;
    t = util_now_us();
    rc = ckpt_seal(q, new_top);
    out->seal_us = util_now_us() - t;
    if (rc < 0)
        return rc;
    out->sealed = 1;
    t = util_now_us();
    rc = qmp_exec(q, "migrate", json_pack("{s:s}", "uri", uri), NULL, CKPT_QMP_TIMEOUT_MS);
    if (rc < 0)
        return rc;
    /* tests: the memory save certainly under way (stop-copy: the VM paused) */
    testhook_gate("VMCKPT_TEST_SAVE_GATE", stop_copy ? "stop-copy" : "cow");
    if (stop_copy) {
        rc = ckpt_wait_migration(q, &out->mem_bytes);
        out->mem_save_us = util_now_us() - t;
        if (rc < 0 || final)
            return rc;
        rc = ckpt_cont_saved(q);
        if (rc < 0)
            return rc;
    }
    rc = ckpt_event(q, "RESUME", &ev->resume);
    if (rc < 0)
        return rc;
    if (!stop_copy) {
        rc = ckpt_wait_migration(q, &out->mem_bytes);
        out->mem_save_us = util_now_us() - t;
    }
    return rc;
}

/* Notes QEMU's view of a pre-copy in progress (query-migrate's "ram"). */
static void ckpt_note_rates(const json_t *r, struct ckpt_snap *out, uint64_t *transferred)
{
    json_t *ram = json_object_get(r, "ram");
    json_int_t psize = json_integer_value(json_object_get(ram, "page-size"));
    json_int_t dirty = json_integer_value(json_object_get(ram, "dirty-pages-rate"));
    double mbps = json_number_value(json_object_get(ram, "mbps"));
    json_int_t syncs = json_integer_value(json_object_get(ram, "dirty-sync-count"));
    /* QEMU's numbers, yet only figures for a policy: clamp, never trust. */
    if (psize <= 0 || psize > (1 << 30))
        psize = 4096;
    if (dirty > 0 && dirty < ((json_int_t)1 << 40))
        out->dirty_bps = (uint64_t)dirty * (uint64_t)psize;
    if (mbps > 0 && mbps < 1e9)
        out->copy_bps = (uint64_t)(mbps * 1e6 / 8);
    if (syncs > 0 && syncs < (1 << 30))
        out->passes = (int)syncs;
    *transferred = (uint64_t)json_integer_value(json_object_get(ram, "transferred"));
}

/* Waits for the MIGRATION event that says `want`; VK_EQEMU when the
 * migration fails or is cancelled instead. Polls query-migrate every
 * poll_ms meanwhile (bounds, figures) via check (may be NULL), which
 * returns non-zero to stop waiting. */
static int ckpt_wait_status(struct qmp *q, const char *want, int timeout_ms, int poll_ms,
                            int (*check)(struct qmp *, void *), void *arg, int64_t *at_us)
{
    int64_t deadline = util_now_us() + (int64_t)timeout_ms * 1000;
    for (;;) {
        json_t *ev = NULL;
        int rc = qmp_wait_event(q, "MIGRATION", poll_ms, &ev);
        if (rc == 0) {
            const char *st = json_string_value(json_object_get(json_object_get(ev, "data"),
                                                               "status"));
            int done = st && !strcmp(st, want);
            int bad = st && (!strcmp(st, "failed") || !strcmp(st, "cancelled"));
            rc = bad ? err_set(VK_EQEMU, "memory save %s (waiting for %s)", st, want) : 0;
            if (done && at_us)
                *at_us = qmp_event_time_us(ev);
            json_decref(ev);
            if (done || bad)
                return rc;
            continue;
        }
        if (rc != VK_ETIMEOUT)
            return rc;
        err_clear();
        if (check && (rc = check(q, arg)) != 0)
            return rc;
        if (util_now_us() > deadline)
            return err_set(VK_ETIMEOUT, "memory save not %s in %d s", want, timeout_ms / 1000);
    }
}

struct ckpt_precopy {
    const struct ckpt_live *live;
    struct ckpt_snap *out;
    int64_t start_us;
};

/* Gives pre-copy up (VK_ETIMEOUT) when it runs too long, would overflow
 * the spool, or cannot converge (the guest dirties memory as fast as QEMU
 * copies it, measured over several passes). */
static int ckpt_precopy_check(struct qmp *q, void *arg)
{
    struct ckpt_precopy *p = arg;
    json_t *r = NULL;
    uint64_t sent = 0;
    int64_t took_ms = (util_now_us() - p->start_us) / 1000;
    int rc = qmp_exec(q, "query-migrate", NULL, &r, CKPT_QMP_TIMEOUT_MS);
    if (rc < 0)
        return rc;
    const char *st = json_string_value(json_object_get(r, "status"));
    int active = st && !strcmp(st, "active");
    if (active)
        ckpt_note_rates(r, p->out, &sent);
    json_decref(r);
    if (!active)
        return 0; /* setup, or already pausing: its event is on its way */
    if (took_ms > p->live->converge_ms)
        return err_set(VK_ETIMEOUT, "live pre-copy did not converge in %d s (%d pass%s, "
                                    "guest dirtying %.1f MB/s, copy %.1f MB/s)",
                       p->live->converge_ms / 1000, p->out->passes,
                       p->out->passes == 1 ? "" : "es", p->out->dirty_bps / 1e6,
                       p->out->copy_bps / 1e6);
    if (sent > p->live->spool_max)
        return err_set(VK_ETIMEOUT, "live pre-copy gave up: %.0f MiB written to the spool "
                                    "(bound %.0f MiB) without converging",
                       sent / 1048576.0, p->live->spool_max / 1048576.0);
    if (p->out->passes >= 8 && p->out->dirty_bps * 10 >= p->out->copy_bps * 9)
        return err_set(VK_ETIMEOUT, "live pre-copy gave up: the guest dirties %.1f MB/s, "
                                    "as fast as QEMU copies (%.1f MB/s), after %d passes",
                       p->out->dirty_bps / 1e6, p->out->copy_bps / 1e6, p->out->passes);
    return 0;
}

/* Cancels a live save and waits until QEMU has run the VM again (it does
 * so itself when the VM was running before the save). */
static void ckpt_cancel(struct qmp *q)
{
    char *why = err_stash();
    if (qmp_exec(q, "migrate_cancel", NULL, NULL, CKPT_QMP_TIMEOUT_MS) == 0)
        ckpt_wait_status(q, "cancelled", 10000, 50, NULL, NULL, NULL);
    err_unstash(why);
}

static int ckpt_live_params(struct qmp *q, const struct ckpt_live *live)
{
    json_t *args = json_pack("{s:I, s:I}", "downtime-limit", (json_int_t)live->target_stop_ms,
                             "max-bandwidth", (json_int_t)live->bandwidth);
    return qmp_exec(q, "migrate-set-parameters", args, NULL, CKPT_QMP_TIMEOUT_MS);
}

/* live: pre-copy while the VM runs; QEMU pauses it for the last dirty pages
 * and waits in pre-switchover, where the disk is sealed, so memory and disk
 * describe the instant it stopped. Inside the pause: seal, continue, cont. */
static int ckpt_live(struct qmp *q, const struct ckpt_live *live, const char *new_top,
                     const char *mem_path, const char *uri, const char *serial_path,
                     struct ckpt_evs *ev, struct ckpt_snap *out)
{
    struct ckpt_precopy p = {live, out, util_now_us()};
    struct stat st;
    int64_t t, t_pause = 0, t_done = 0;
    int rc = ckpt_live_params(q, live);
    if (rc == 0)
        rc = qmp_exec(q, "migrate", json_pack("{s:s}", "uri", uri), NULL, CKPT_QMP_TIMEOUT_MS);
    if (rc == 0)
        rc = ckpt_wait_status(q, "pre-switchover", CKPT_MIGRATE_TIMEOUT_MS, 100,
                              ckpt_precopy_check, &p, &t_pause);
    out->precopy_us = util_now_us() - p.start_us;
    if (rc < 0) {
        out->gave_up = rc == VK_ETIMEOUT;
        ckpt_cancel(q);
        return rc;
    }
    testhook_gate("VMCKPT_TEST_SWITCHOVER_GATE", "pre-switchover");
    if (serial_path && stat(serial_path, &st) == 0)
        out->serial_bytes = (uint64_t)st.st_size;
    t = util_now_us();
    rc = ckpt_seal(q, new_top);
    out->seal_us = util_now_us() - t;
    if (rc < 0) {
        ckpt_cancel(q);
        return rc;
    }
    out->sealed = 1;
    rc = qmp_exec(q, "migrate-continue", json_pack("{s:s}", "state", "pre-switchover"), NULL,
                  CKPT_QMP_TIMEOUT_MS);
    if (rc == 0)
        rc = ckpt_wait_status(q, "completed", CKPT_MIGRATE_TIMEOUT_MS, 1000, NULL, NULL, &t_done);
    if (rc == 0)
        rc = ckpt_cont_saved(q);
    out->mem_save_us = util_now_us() - p.start_us;
    if (rc < 0) {
        ckpt_cancel(q);
        return rc;
    }
    rc = ckpt_event(q, "RESUME", &ev->resume);
    if (rc == 0 && stat(mem_path, &st) == 0)
        out->mem_bytes = (uint64_t)st.st_size;
    if (rc == 0 && ckpt_event(q, "STOP", &ev->stop) == 0)
        log_debug("live: stop->pause %.1f ms, seal %.1f ms, pause->completed %.1f ms, completed->resume %.1f ms",
                 (t_pause - qmp_event_time_us(ev->stop)) / 1e3, out->seal_us / 1e3,
                 (t_done - t_pause) / 1e3, (qmp_event_time_us(ev->resume) - t_done) / 1e3);
    return rc;
}

/* ckpt_settle after a failed checkpoint, whose error stays the one reported. */
static void ckpt_settle_after(struct qmp *q, const char *task)
{
    char *why = err_stash();
    if (ckpt_settle(q, task) < 0)
        log_error("%s", err_msg());
    err_unstash(why);
}

int ckpt_snapshot(struct qmp *q, const struct ckpt_req *req, struct ckpt_snap *out)
{
    struct ckpt_evs ev = {NULL, NULL};
    char *uri = NULL;
    int rc;

    memset(out, 0, sizeof(*out));
    if (req->mode != CKPT_LIVE && req->mode != CKPT_COW && req->mode != CKPT_STOP_COPY)
        return err_set(VK_EINVAL, "checkpoint mode %s is not one QEMU runs",
                       ckpt_mode_name(req->mode));
    if (strchr(req->mem_path, '\''))
        return err_set(VK_EINVAL, "memory file path must not contain a quote: %s", req->mem_path);
    uri = util_fmt("exec:cat > '%s'", req->mem_path);
    if (!uri)
        return err_set(VK_ENOMEM, "out of memory");
    /* Outside the pause: QEMU then only opens it ("existing"), where creating
     * it would cost a file, a header and a flush while the VM waits. */
    rc = img_create_overlay(req->new_top, req->top, "qcow2");
    if (rc == 0)
        rc = ckpt_set_caps(q, req->mode);
    if (rc == 0) {
        qmp_drop_events(q);
        rc = req->mode == CKPT_LIVE
                 ? ckpt_live(q, req->live, req->new_top, req->mem_path, uri, req->serial_path,
                             &ev, out)
                 : ckpt_paused(q, req->mode == CKPT_STOP_COPY, req->final, req->new_top, uri,
                               req->serial_path, &ev, out);
        if (rc == 0 && !req->final)
            rc = ckpt_event(q, "STOP", &ev.stop);
        if (rc == 0 && !req->final)
            out->stopped_us = qmp_event_time_us(ev.resume) - qmp_event_time_us(ev.stop);
        else if (rc == 0) /* still stopped: it stays so */
            out->stopped_us = util_wall_us() - qmp_event_time_us(ev.stop);
        else
            ckpt_settle_after(q, req->task);
    }
    if (rc < 0 && !out->sealed)
        unlink(req->new_top);
    json_decref(ev.stop);
    json_decref(ev.resume);
    free(uri);
    return rc;
}

static int ckpt_check_obj(struct repo *r, const struct stream_ref *o, struct repo_seen *seen,
                          const char *what, void (*report)(void *, const char *), void *arg)
{
    int rc = repo_verify_stream_seen(r, o, what, seen);
    if (rc < 0 && report)
        report(arg, err_msg());
    return rc;
}

int ckpt_verify(struct repo *r, const struct manifest *m, struct repo_seen *seen,
                void (*report)(void *, const char *), void *arg)
{
    int rc = 0, r1;
    char what[96];
    snprintf(what, sizeof(what), "checkpoint %" PRIu64 " kernel", m->seq);
    r1 = ckpt_check_obj(r, &m->kernel, seen, what, report, arg);
    rc = rc ? rc : r1;
    snprintf(what, sizeof(what), "checkpoint %" PRIu64 " initrd", m->seq);
    r1 = ckpt_check_obj(r, &m->initrd, seen, what, report, arg);
    rc = rc ? rc : r1;
    snprintf(what, sizeof(what), "checkpoint %" PRIu64 " base image", m->seq);
    r1 = ckpt_check_obj(r, &m->base, seen, what, report, arg);
    rc = rc ? rc : r1;
    for (size_t i = 0; i < m->n_deltas; i++) {
        snprintf(what, sizeof(what), "checkpoint %" PRIu64 " delta %zu", m->seq, i + 1);
        r1 = ckpt_check_obj(r, &m->deltas[i], seen, what, report, arg);
        rc = rc ? rc : r1;
    }
    snprintf(what, sizeof(what), "checkpoint %" PRIu64 " memory", m->seq);
    r1 = ckpt_check_obj(r, &m->memory, seen, what, report, arg);
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
static int ckpt_fetch_blob(struct repo *r, const struct stream_ref *o, const char *blob_dir,
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

int ckpt_stage(struct repo *r, const struct manifest *m, const char *blob_dir, json_t *packs,
               uint64_t *copied)
{
    char *path = NULL;
    int rc = util_mkdir_p(blob_dir, 0700);
    const struct stream_ref *blob[3] = {&m->kernel, &m->initrd, &m->base};
    const char *blob_what[3] = {"kernel", "initrd", "base image"};
    for (int i = 0; rc == 0 && i < 3; i++) {
        rc = ckpt_fetch_blob(r, blob[i], blob_dir, blob_what[i], &path);
        free(path);
        path = NULL;
    }
    for (size_t i = 0; rc == 0 && i < m->n_deltas; i++)
        rc = repo_stage_stream(r, &m->deltas[i], packs, copied);
    if (rc == 0)
        rc = repo_stage_stream(r, &m->memory, packs, copied);
    if (rc < 0)
        err_wrap(rc, "cannot stage checkpoint %" PRIu64 " of task %s", m->seq, m->task);
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
