/* util: small helpers shared by every module (time, files, hashing, spawn). */
#ifndef VMCKPT_UTIL_H
#define VMCKPT_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define UTIL_SHA256_HEX 65 /* 64 hex digits + NUL */

/* Monotonic and wall-clock time. */
int64_t util_now_us(void);
/* CPU time this thread has used, in microseconds. */
int64_t util_thread_cpu_us(void);
int64_t util_wall_us(void);
/* "2026-11-25T07:30:00Z" into buf (>= 32 bytes). */
void util_iso_time(int64_t wall_us, char *buf, size_t len);

/* malloc'd printf; NULL on out-of-memory. Caller frees. */
char *util_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Task ids and object name parts: 1-64 of [A-Za-z0-9._-], not starting with '.'. */
int util_valid_id(const char *id);

/* mkdir -p; 0 or VK_EIO with a message naming the path. */
/* Bytes free to an unprivileged writer on the file system holding path. */
int util_free_bytes(const char *path, uint64_t *out);
int util_mkdir_p(const char *path, mode_t mode);
/* The start time of process pid (clock ticks since boot, from /proc), or 0
 * when there is no such process (or pid <= 1). With the pid it names one
 * process for good: a pid alone may be reused by another. */
uint64_t util_proc_start(pid_t pid);
/* mkdir -p, then makes path 0700 if it is looser. VK_EINVAL when path is
 * not a directory (a symlink included) or belongs to another user. */
int util_private_dir(const char *path);
/* rm -rf of a directory tree we own (never follows symlinks). */
int util_rm_rf(const char *path);

/* /proc/PID/cmdline, whole (NUL-separated arguments, one NUL after the
 * last; at most UTIL_CMDLINE_MAX bytes), or NULL. free(). */
#define UTIL_CMDLINE_MAX (1u << 20)
char *util_proc_cmdline(pid_t pid, size_t *out_len);
/* Whole file into a NUL-terminated malloc'd buffer (caller frees *out): a
 * regular file of at most UTIL_READ_MAX bytes (VK_EINVAL otherwise; a FIFO
 * is refused at once, not waited on). */
#define UTIL_READ_MAX (64u << 20)
int util_read_file(const char *path, char **out, size_t *out_len);
/* Reads at most size - 1 bytes of a small file into buf and ends them with a
 * NUL: the bytes read, or -1. System calls only (async-signal-safe: for a
 * child forked by a threaded process). */
ssize_t util_read_small(const char *path, char *buf, size_t size);
/* Writes via path.tmp + fsync + rename + fsync(dir): all or nothing. */
int util_write_file_atomic(const char *path, const void *data, size_t len);
/* A name of its own beside path for a file being written, to be renamed to
 * path when whole: writers of the same path at once never share one. free(). */
char *util_part_path(const char *path);
/* fsync of the directory holding path (makes a rename durable). */
int util_fsync_dir_of(const char *path);

/* SHA-256 of a file or buffer as lowercase hex into out[UTIL_SHA256_HEX]. */
int util_sha256_file(const char *path, char out[UTIL_SHA256_HEX], uint64_t *out_size);
void util_sha256_buf(const void *data, size_t len, char out[UTIL_SHA256_HEX]);
/* 1 if s is a SHA-256 as we write it: 64 lowercase hex digits, nothing else.
 * Digests read from a store name local files and map keys, so they are
 * checked with this before any use. */
int util_is_sha256_hex(const char *s);
/* n bytes as lowercase hex into out (2n + 1 bytes). */
void util_hex(const unsigned char *bytes, unsigned n, char *out);

/* Runs argv (argv[0] looked up in PATH), waits, captures stdout+stderr into
 * *out (malloc'd, caller frees; may be NULL if not wanted). Returns 0 when it
 * exits 0, VK_ENOTFOUND if the program is missing, else VK_EIO with a message
 * holding the program's last output line. */
int util_run(char *const argv[], char **out);

/* Last `max` bytes of a text file, for error messages (malloc'd, may be ""). */
/* The last max bytes of regular file path (no symlink followed; a file that
 * grows meanwhile is read as it was), NUL-terminated; *out is the caller's. */
int util_read_tail(const char *path, size_t max, char **out, size_t *out_len);
char *util_file_tail(const char *path, size_t max);

/* A pid is alive and its /proc/PID/cmdline contains `needle`. */
int util_pid_matches(pid_t pid, const char *needle);

/* The one retry policy: the pause before try attempt + 2 (attempt counts
 * from 0) is base_ms doubled attempt times (at most 1024 × base_ms): a store
 * that failed once may answer now, one that stays down is not hammered. */
void util_backoff(int base_ms, int attempt);
/* That pause, in ms, for waits that are scheduled rather than slept. */
int64_t util_backoff_ms(int base_ms, int attempt);
#define UTIL_RETRY_BASE_MS 200

#endif
