/* libFuzzer harness: a chunk record as read from a pack (pack_record_decode).
 * The first 3 bytes choose the plain length the index claims (bounded as the
 * index decoder bounds it); the rest is the record. */
#include "chunk.h"
#include "pack.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    uint32_t want = ((uint32_t)data[0] | (uint32_t)data[1] << 8 | (uint32_t)data[2] << 16) %
                    (1 << 20);
    uint8_t *plain = malloc(want ? want : 1);
    if (plain) {
        pack_record_decode(data + 3, size - 3, want, plain);
        free(plain);
    }
    return 0;
}
