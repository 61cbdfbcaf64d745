/* libFuzzer harness: a manifest as read from a store (manifest_decode). */
#include "manifest.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct manifest *m = NULL;
    if (manifest_decode((const char *)data, size, "fuzz", &m) == 0)
        manifest_free(m);
    return 0;
}
