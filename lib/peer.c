#include "peer.h"

#include "err.h"

#include <errno.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define PEER_SLOTS 64 /* distinct callers tracked at once; more are refused */

struct peer_count {
    uid_t uid;
    int n; /* 0: free slot */
};

struct peer_table {
    pthread_mutex_t lock;
    int per_uid_max;
    gid_t group;
    struct peer_count c[PEER_SLOTS];
};

int peer_table_new(struct peer_table **out, int per_uid_max, gid_t group)
{
    struct peer_table *t = calloc(1, sizeof(*t));
    *out = NULL;
    if (!t)
        return err_set(VK_ENOMEM, "out of memory");
    pthread_mutex_init(&t->lock, NULL);
    t->per_uid_max = per_uid_max;
    t->group = group;
    *out = t;
    return 0;
}

void peer_table_free(struct peer_table *t)
{
    if (!t)
        return;
    pthread_mutex_destroy(&t->lock);
    free(t);
}

int peer_of_fd(int fd, struct peer *out)
{
    struct ucred cr;
    socklen_t len = sizeof(cr);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0 || len != sizeof(cr))
        return err_errno(errno, "cannot tell who is connected to the API socket");
    *out = (struct peer){.pid = cr.pid, .uid = cr.uid, .gid = cr.gid};
    return 0;
}

/* Whether uid (whose process runs with primary gid) belongs to group. */
static int peer_in_group(uid_t uid, gid_t gid, gid_t group)
{
    struct passwd pw, *pp = NULL;
    char buf[4096];
    gid_t groups[256];
    int n = 256;
    if (gid == group)
        return 1;
    if (getpwuid_r(uid, &pw, buf, sizeof(buf), &pp) != 0 || !pp)
        return 0;
    if (getgrouplist(pp->pw_name, pp->pw_gid, groups, &n) < 0)
        return 0; /* over 256 groups: only the primary one counts */
    for (int i = 0; i < n; i++)
        if (groups[i] == group)
            return 1;
    return 0;
}

static int peer_trusted(const struct peer *p)
{
    return p->uid == 0 || p->uid == geteuid();
}

int peer_allowed(const struct peer_table *t, const struct peer *p)
{
    if (peer_trusted(p))
        return 1;
    return t->group != (gid_t)-1 && peer_in_group(p->uid, p->gid, t->group);
}

int peer_enter(struct peer_table *t, const struct peer *p)
{
    struct peer_count *slot = NULL;
    int rc = 0;
    if (peer_trusted(p))
        return 0;
    pthread_mutex_lock(&t->lock);
    for (int i = 0; i < PEER_SLOTS; i++) {
        if (t->c[i].n && t->c[i].uid == p->uid) {
            slot = &t->c[i];
            break;
        }
        if (!t->c[i].n && !slot)
            slot = &t->c[i];
    }
    if (!slot)
        rc = err_set(VK_EBUSY, "too many callers of the API at once");
    else if (slot->n >= t->per_uid_max)
        rc = err_set(VK_EBUSY, "uid %u holds %d connections to the API already (the most a "
                               "caller may hold)", (unsigned)p->uid, slot->n);
    else {
        slot->uid = p->uid;
        slot->n++;
    }
    pthread_mutex_unlock(&t->lock);
    return rc;
}

void peer_leave(struct peer_table *t, const struct peer *p)
{
    if (peer_trusted(p))
        return;
    pthread_mutex_lock(&t->lock);
    for (int i = 0; i < PEER_SLOTS; i++)
        if (t->c[i].n && t->c[i].uid == p->uid) {
            t->c[i].n--;
            break;
        }
    pthread_mutex_unlock(&t->lock);
}

int peer_group_id(const char *name, gid_t *out)
{
    struct group gr, *gp = NULL;
    char buf[16384];
    if (getgrnam_r(name, &gr, buf, sizeof(buf), &gp) != 0 || !gp)
        return err_set(VK_EINVAL, "agent.group: no group named '%s' on this host", name);
    *out = gp->gr_gid;
    return 0;
}
