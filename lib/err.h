/* err: error codes and the per-thread message that goes with them.
 *
 * Every function that can fail returns 0 or one of the negative codes below
 * and, where the error starts, calls err_set() once with a message a user can
 * act on (what failed, on which file/object/task, why). Callers propagate the
 * code unchanged; they add context only with err_wrap(). */
#ifndef VMCKPT_ERR_H
#define VMCKPT_ERR_H

enum {
    VK_OK = 0,
    VK_EINVAL = -1,    /* bad input from the user or the caller */
    VK_ENOTFOUND = -2, /* no such task, checkpoint, object or file */
    VK_EEXISTS = -3,   /* already there (task id, object) */
    VK_ETIMEOUT = -4,  /* a bounded wait ran out */
    VK_EQEMU = -5,     /* QEMU refused, failed or died */
    VK_EIO = -6,       /* an I/O or system call failed */
    VK_ECORRUPT = -7,  /* stored data does not match its manifest or hash */
    VK_ENOSPC = -8,    /* no space left on the store or the state directory */
    VK_EBUSY = -9,     /* someone else holds it (agent lock, checkpoint running) */
    VK_ESTATE = -10,   /* not allowed in the current state */
    VK_ENOMEM = -11,   /* out of memory */
    VK_ELEASE = -12,   /* a lease was lost */
};

/* Sets this thread's message and returns code (so `return err_set(...)`). */
int err_set(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefixes the current message with more context; returns code. */
int err_wrap(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Sets a message from errno: "<what>: <strerror>"; maps ENOSPC/ENOENT/EEXIST. */
int err_errno(int errnum, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The message of the last error on this thread ("" if none). */
const char *err_msg(void);
/* A short stable name for a code: "not found", "I/O error", ... */
const char *err_name(int code);
void err_clear(void);
/* Keeps this thread's message across clean-up that may set or clear it:
 * char *m = err_stash(); ...clean-up...; err_unstash(m);  (m is freed;
 * out of memory: the message is lost, nothing else). */
char *err_stash(void);
void err_unstash(char *m);

#endif
