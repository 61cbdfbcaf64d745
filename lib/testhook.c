/* testhook: see testhook.h. Empty unless built with -DVMCKPT_TEST_HOOKS. */
#include "testhook.h"

#ifdef VMCKPT_TEST_HOOKS
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

long testhook_num(const char *name)
{
    const char *v = getenv(name);
    return v ? strtol(v, NULL, 10) : 0;
}

long testhook_file_num(const char *name)
{
    const char *path = getenv(name);
    char buf[32];
    return path && util_read_small(path, buf, sizeof(buf)) > 0 ? strtol(buf, NULL, 10) : 0;
}

void testhook_gate(const char *name, const char *tag)
{
    const char *gate = getenv(name);
    if (!gate || access(gate, F_OK) != 0)
        return;
    char mark[4096];
    snprintf(mark, sizeof(mark), "%s.%s", gate, tag);
    int fd = open(mark, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0)
        close(fd);
    log_info("test gate %s: held at %s", gate, tag);
    /* Bounded, so that a test that never opens the gate fails instead of hanging. */
    for (int i = 0; i < 60000 && access(gate, F_OK) == 0; i++)
        usleep(10000);
    log_info("test gate %s: released at %s", gate, tag);
}
#else
typedef int testhook_empty; /* ISO C: a translation unit is not empty */
#endif
