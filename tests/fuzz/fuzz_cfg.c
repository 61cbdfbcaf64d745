/* libFuzzer harness: a settings file (cfg_load, cfg_finish). */

#include "cfg.h"

#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    struct cfg *c = NULL;
    int fd = memfd_create("fuzz-cfg", 0);
    if (fd < 0)
        return 0;
    if (write(fd, data, size) == (ssize_t)size) {
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        if (cfg_load(&c, path) == 0) {
            cfg_finish(c);
            cfg_free(c);
        }
    }
    close(fd);
    return 0;
}
