/* libFuzzer harness: a pack index as read from a store (pack_idx_parse). */
#include "pack.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct pack_idx idx;
    struct pack_map *m = NULL;
    if (pack_idx_parse((const char *)data, size, "0123456789abcdef0123456789abcdef", "fuzz",
                       &idx) == 0) {
        /* what the agent does next with a pack index it accepted */
        if (pack_map_new(&m) == 0) {
            pack_map_add(m, &idx);
            for (size_t i = 0; i < idx.n; i++) {
                struct pack_loc loc;
                pack_map_find(m, idx.recs[i].sha, &loc);
            }
            pack_map_free(m);
        }
        pack_idx_clear(&idx);
    }
    return 0;
}
