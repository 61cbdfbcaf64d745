#include "err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char err_buf[2048];

/* Formats into a scratch buffer first: callers may pass err_msg() itself. */
static void err_vformat(const char *fmt, va_list ap)
{
    char tmp[sizeof(err_buf)];
    vsnprintf(tmp, sizeof(tmp), fmt, ap);
    memcpy(err_buf, tmp, sizeof(err_buf));
}

int err_set(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err_vformat(fmt, ap);
    va_end(ap);
    return code;
}

int err_wrap(int code, const char *fmt, ...)
{
    char old[sizeof(err_buf)], pre[1024];
    va_list ap;
    memcpy(old, err_buf, sizeof(old));
    va_start(ap, fmt);
    vsnprintf(pre, sizeof(pre), fmt, ap);
    va_end(ap);
    snprintf(err_buf, sizeof(err_buf), "%s: %s", pre, old);
    return code;
}

int err_errno(int errnum, const char *fmt, ...)
{
    char what[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    snprintf(err_buf, sizeof(err_buf), "%s: %s", what, strerror(errnum));
    switch (errnum) {
    case ENOSPC:
    case EDQUOT:
        return VK_ENOSPC;
    case ENOENT:
        return VK_ENOTFOUND;
    case EEXIST:
        return VK_EEXISTS;
    case ENOMEM:
        return VK_ENOMEM;
    default:
        return VK_EIO;
    }
}

const char *err_msg(void) { return err_buf; }
void err_clear(void) { err_buf[0] = '\0'; }

char *err_stash(void) { return strdup(err_buf); }

void err_unstash(char *m)
{
    if (m)
        snprintf(err_buf, sizeof(err_buf), "%s", m);
    free(m);
}

const char *err_name(int code)
{
    switch (code) {
    case VK_OK: return "ok";
    case VK_EINVAL: return "invalid argument";
    case VK_ENOTFOUND: return "not found";
    case VK_EEXISTS: return "already exists";
    case VK_ETIMEOUT: return "timed out";
    case VK_EQEMU: return "QEMU error";
    case VK_EIO: return "I/O error";
    case VK_ECORRUPT: return "corrupt data";
    case VK_ENOSPC: return "no space left";
    case VK_EBUSY: return "busy";
    case VK_ESTATE: return "wrong state";
    case VK_ENOMEM: return "out of memory";
    case VK_ELEASE: return "lease lost";
    default: return "unknown error";
    }
}
