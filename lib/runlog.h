/* runlog: each run's console log, kept past its run and past its task.
 *
 * A task's VM writes its console to RUN_DIR/serial.log. When that run ends
 * (a restart, a restore, `vmckpt rm`), the log's last `max_bytes` are kept
 * as LOGS/<task>/run-<N>.log, where a crash's last words stay readable. Per
 * task the newest `keep` runs are kept; the logs of a task this node no
 * longer has are removed `expire_s` after their last write, or at once by
 * `vmckpt rm --purge`. Paths are made only from validated task ids and run
 * numbers; reads are bounded and follow no symlink. */
#ifndef VMCKPT_RUNLOG_H
#define VMCKPT_RUNLOG_H

#include <stddef.h>
#include <stdint.h>

struct runlog_entry {
    int run;
    uint64_t bytes;
    int64_t mtime_s; /* wall clock */
};

/* Keeps the last max_bytes of serial (a missing file is no error: a run that
 * never started) as run `run` of task, then leaves the newest keep runs. */
int runlog_keep(const char *logs_dir, const char *task, int run, const char *serial,
                uint64_t max_bytes, int keep);
/* The kept runs of task, oldest first (*out the caller's; none: 0, NULL). */
int runlog_list(const char *logs_dir, const char *task, struct runlog_entry **out, size_t *n);
/* The last max bytes of kept run `run` of task. */
int runlog_read(const char *logs_dir, const char *task, int run, size_t max, char **out,
                size_t *len);
/* Removes every kept log of task. */
int runlog_remove(const char *logs_dir, const char *task);
/* Removes the kept logs of tasks for which has_task says 0 whose newest log
 * is older than expire_s; returns how many tasks' logs went. */
int runlog_expire(const char *logs_dir, int64_t expire_s, int (*has_task)(void *, const char *),
                  void *arg);

#endif
