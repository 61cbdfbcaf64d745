/* A scripted QMP peer on a real socket pair, for tests of QMP clients
 * (test_qmp.c: the client; test_ckpt.c: the checkpoint protocol). */
#ifndef VMCKPT_TEST_QMP_PEER_H
#define VMCKPT_TEST_QMP_PEER_H

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define GREETING "{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n"

/* One step of the peer: wait for a command named `expect`, then send `lines`
 * (each "%d" is replaced by the command's id); close when lines is NULL. */
struct step {
    const char *expect;
    const char *lines;
};

struct peer {
    int fd;
    const char *greeting;
    const struct step *steps;
    pthread_t th;
    int failed;
};

static int read_line(int fd, char *buf, size_t len)
{
    size_t n = 0;
    while (n + 1 < len) {
        ssize_t r = read(fd, buf + n, 1);
        if (r <= 0)
            return -1;
        if (buf[n++] == '\n')
            break;
    }
    buf[n] = '\0';
    return 0;
}

static void *peer_main(void *arg)
{
    struct peer *p = arg;
    char line[4096], out[4096];
    if (p->greeting)
        (void)!write(p->fd, p->greeting, strlen(p->greeting));
    for (const struct step *s = p->steps; s && s->expect; s++) {
        int id = -1;
        if (read_line(p->fd, line, sizeof(line)) < 0 || !strstr(line, s->expect)) {
            p->failed = 1;
            break;
        }
        const char *idp = strstr(line, "\"id\":");
        if (idp)
            id = atoi(idp + 5);
        if (!s->lines)
            break; /* close without answering */
        snprintf(out, sizeof(out), s->lines, id, id);
        (void)!write(p->fd, out, strlen(out));
    }
    close(p->fd);
    return NULL;
}

static struct qmp *start(struct peer *p, const char *greeting, const struct step *steps, int *rc)
{
    int sv[2];
    struct qmp *q = NULL;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    p->fd = sv[1];
    p->greeting = greeting;
    p->steps = steps;
    p->failed = 0;
    pthread_create(&p->th, NULL, peer_main, p);
    *rc = qmp_open_fd(&q, sv[0], "test-peer", 2000);
    return q;
}

static void finish(struct peer *p, struct qmp *q)
{
    qmp_free(q);
    pthread_join(p->th, NULL);
    assert_false(p->failed);
}

static const struct step caps __attribute__((unused)) = {"qmp_capabilities", "{\"return\": {}, \"id\": %d}\r\n"};

#endif
