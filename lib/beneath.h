/* beneath: opening paths beneath a directory, never outside it.
 *
 * A store is written by others (every node, as root; an NFS or FTP server's
 * administrators; anyone with the Ceph key), and the agent runs as root. A
 * name read from a store or made for one is therefore resolved beneath the
 * store root's directory fd, one component at a time, following no symlink
 * at any step and no "..": a store writer who makes packs/ab a symlink to
 * /etc gets an error, not a file in /etc. openat2(RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS) does this in one call where the kernel has it (5.6+);
 * elsewhere the same walk is made with openat(O_NOFOLLOW) a component at a
 * time.
 *
 * Functions return a file descriptor (>= 0) or -1 with errno set: ELOOP or
 * ENOTDIR for a symlink on the way, EINVAL for a name that is not a plain
 * relative path. Callers turn errno into their own message. */
#ifndef VMCKPT_BENEATH_H
#define VMCKPT_BENEATH_H

#include <stddef.h>
#include <sys/types.h>

/* 1 when rel is a plain relative path: not empty, no leading or doubled '/',
 * no "." or ".." component, no NUL before its end, at most 4095 bytes. */
int beneath_name_ok(const char *rel);

/* open(2) of rel beneath root (a directory fd), O_NOFOLLOW and O_CLOEXEC
 * added. mode is used with O_CREAT. */
int beneath_open(int root, const char *rel, int flags, mode_t mode);

/* The directory holding rel's last component, opened O_RDONLY|O_DIRECTORY
 * beneath root (for the *at calls, and fsync); *leaf points at that last
 * component inside rel. With mkdirs, missing directories on the way are
 * made (0700). rel with one component gives a new fd of root itself. */
int beneath_parent(int root, const char *rel, int mkdirs, const char **leaf);

/* Opens a directory fd for root_path itself (which may be reached through
 * symlinks: it is the operator's setting, not a store writer's). */
int beneath_root(const char *root_path);

#ifdef VMCKPT_TEST_HOOKS
/* Tests: 1 makes every call take the walk, as on a kernel without openat2. */
void beneath_test_walk_only(int on);
#endif

#endif
