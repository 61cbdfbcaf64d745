#include "qmp.h"

#include "err.h"
#include "util.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define QMP_LINE_MAX (16 << 20)

struct qmp {
    int fd;
    char *name; /* socket path, for messages */
    char *buf;  /* bytes read but not yet parsed */
    size_t len, cap;
    json_t *events; /* queued events, oldest first */
    unsigned next_id;
};

void qmp_free(struct qmp *q)
{
    if (!q)
        return;
    if (q->fd >= 0)
        close(q->fd);
    free(q->name);
    free(q->buf);
    json_decref(q->events);
    free(q);
}

/* Reads one JSON message (QMP ends each with "\r\n"). *out: new reference. */
static int qmp_read_msg(struct qmp *q, int64_t deadline_us, json_t **out)
{
    for (;;) {
        char *nl = q->len ? memchr(q->buf, '\n', q->len) : NULL;
        if (nl) {
            json_error_t jerr;
            size_t linelen = (size_t)(nl - q->buf) + 1;
            json_t *msg = json_loadb(q->buf, linelen, 0, &jerr);
            memmove(q->buf, nl + 1, q->len - linelen);
            q->len -= linelen;
            if (!msg || !json_is_object(msg)) {
                json_decref(msg);
                return err_set(VK_EQEMU, "QMP %s: unreadable message from QEMU: %s", q->name,
                               jerr.text);
            }
            *out = msg;
            return 0;
        }
        int64_t left = deadline_us - util_now_us();
        if (left <= 0)
            return err_set(VK_ETIMEOUT, "QMP %s: QEMU did not answer in time", q->name);
        struct pollfd p = {.fd = q->fd, .events = POLLIN};
        int pr = poll(&p, 1, (int)(left / 1000) + 1);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr < 0)
            return err_errno(errno, "QMP %s: poll", q->name);
        if (pr == 0)
            continue;
        if (q->cap - q->len < 4096) {
            /* QEMU's answers are lines of a few KiB: one without its end
             * in QMP_LINE_MAX is not read on without bound */
            if (q->cap >= QMP_LINE_MAX)
                return err_set(VK_EQEMU, "QMP %s: QEMU sent a message longer than %d MiB",
                               q->name, QMP_LINE_MAX >> 20);
            char *nb = realloc(q->buf, q->cap + 65536);
            if (!nb)
                return err_set(VK_ENOMEM, "out of memory");
            q->buf = nb;
            q->cap += 65536;
        }
        ssize_t r = read(q->fd, q->buf + q->len, q->cap - q->len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return err_errno(errno, "QMP %s: read", q->name);
        if (r == 0)
            return err_set(VK_EQEMU, "QMP %s: QEMU closed the connection (did it exit?)",
                           q->name);
        q->len += (size_t)r;
    }
}

static int qmp_send(struct qmp *q, json_t *msg)
{
    char *s = json_dumps(msg, JSON_COMPACT);
    size_t len, off = 0;
    int rc = 0;
    if (!s)
        return err_set(VK_ENOMEM, "out of memory");
    len = strlen(s);
    s[len] = '\n'; /* replaces the NUL; we track len ourselves */
    len++;
    while (off < len) {
        ssize_t w = send(q->fd, s + off, len - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            rc = err_set(VK_EQEMU, "QMP %s: cannot send to QEMU: %s", q->name, strerror(errno));
            break;
        }
        off += (size_t)w;
    }
    free(s);
    return rc;
}

int qmp_exec(struct qmp *q, const char *cmd, json_t *args, json_t **out_ret, int timeout_ms)
{
    int64_t deadline = util_now_us() + (int64_t)timeout_ms * 1000;
    unsigned id = ++q->next_id;
    json_t *msg = json_pack("{s:s, s:I}", "execute", cmd, "id", (json_int_t)id);
    int rc;

    if (out_ret)
        *out_ret = NULL;
    if (!msg) {
        json_decref(args);
        return err_set(VK_ENOMEM, "out of memory");
    }
    if (args)
        json_object_set_new(msg, "arguments", args); /* steals args */
    rc = qmp_send(q, msg);
    json_decref(msg);
    while (rc == 0) {
        json_t *m = NULL;
        rc = qmp_read_msg(q, deadline, &m);
        if (rc < 0) {
            err_wrap(rc, "%s", cmd);
            break;
        }
        if (json_object_get(m, "event")) {
            json_array_append_new(q->events, m);
            continue;
        }
        json_t *mid = json_object_get(m, "id");
        if (!mid || json_integer_value(mid) != (json_int_t)id) {
            json_decref(m); /* reply to a command that timed out earlier */
            continue;
        }
        json_t *e = json_object_get(m, "error");
        if (e) {
            const char *desc = json_string_value(json_object_get(e, "desc"));
            rc = err_set(VK_EQEMU, "QEMU refused %s: %s", cmd, desc ? desc : "no reason given");
        } else if (out_ret) {
            *out_ret = json_incref(json_object_get(m, "return"));
        }
        json_decref(m);
        break;
    }
    return rc;
}

static int qmp_is_event(const json_t *m, const char *name)
{
    const char *ev = json_string_value(json_object_get(m, "event"));
    return ev && !strcmp(ev, name);
}

static json_t *qmp_take_queued(struct qmp *q, const char *name)
{
    size_t i;
    json_t *ev;
    json_array_foreach(q->events, i, ev)
    {
        if (qmp_is_event(ev, name)) {
            json_incref(ev);
            json_array_remove(q->events, i);
            return ev;
        }
    }
    return NULL;
}

int qmp_wait_event(struct qmp *q, const char *name, int timeout_ms, json_t **out_ev)
{
    int64_t deadline = util_now_us() + (int64_t)timeout_ms * 1000;
    json_t *ev = qmp_take_queued(q, name);

    while (!ev) {
        json_t *m = NULL;
        int rc = qmp_read_msg(q, deadline, &m);
        if (rc < 0)
            return err_wrap(rc, "waiting for event %s", name);
        if (qmp_is_event(m, name))
            ev = m;
        else if (json_object_get(m, "event"))
            json_array_append_new(q->events, m);
        else
            json_decref(m);
    }
    if (out_ev)
        *out_ev = ev;
    else
        json_decref(ev);
    return 0;
}

void qmp_drop_events(struct qmp *q) { json_array_clear(q->events); }

int64_t qmp_event_time_us(const json_t *ev)
{
    json_t *ts = json_object_get(ev, "timestamp");
    return (int64_t)json_integer_value(json_object_get(ts, "seconds")) * 1000000 +
           (int64_t)json_integer_value(json_object_get(ts, "microseconds"));
}

int qmp_open_fd(struct qmp **out, int fd, const char *name, int timeout_ms)
{
    struct qmp *q = calloc(1, sizeof(*q));
    json_t *greeting = NULL;
    int rc;

    *out = NULL;
    if (!q) {
        close(fd);
        return err_set(VK_ENOMEM, "out of memory");
    }
    q->fd = fd;
    q->name = strdup(name);
    q->events = json_array();
    rc = qmp_read_msg(q, util_now_us() + (int64_t)timeout_ms * 1000, &greeting);
    if (rc == 0 && !json_object_get(greeting, "QMP"))
        rc = err_set(VK_EQEMU, "QMP %s: peer did not greet like QEMU", name);
    json_decref(greeting);
    if (rc == 0)
        rc = qmp_exec(q, "qmp_capabilities", NULL, NULL, timeout_ms);
    if (rc < 0) {
        qmp_free(q);
        return rc;
    }
    *out = q;
    return 0;
}

int qmp_connect(struct qmp **out, const char *path, int timeout_ms)
{
    int64_t deadline = util_now_us() + (int64_t)timeout_ms * 1000;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};

    *out = NULL;
    if (strlen(path) >= sizeof(sa.sun_path))
        return err_set(VK_EINVAL, "QMP socket path too long: %s", path);
    strcpy(sa.sun_path, path);
    for (;;) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return err_errno(errno, "socket");
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
            int64_t left = (deadline - util_now_us()) / 1000;
            return qmp_open_fd(out, fd, path, left > 1000 ? (int)left : 1000);
        }
        int e = errno;
        close(fd);
        if (util_now_us() > deadline)
            return err_set(VK_ETIMEOUT, "cannot connect to QMP socket %s: %s", path, strerror(e));
        usleep(20000);
    }
}
