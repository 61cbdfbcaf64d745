/* libFuzzer harness: a heartbeat (cluster_beat_parse) and a move record
 * (cluster_move_parse), as any writer of the store may have left them. The
 * first byte picks which; the object names are fixed. */
#include "cluster.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    if (data[0] & 1) {
        json_t *one = NULL;
        if (cluster_move_parse("cluster/moves/t1", "node-b", text, len, &one) == 0 &&
            (!one || !json_is_object(one)))
            abort();
        json_decref(one);
    } else {
        struct cluster_node n;
        if (cluster_beat_parse("node-a", text, len, &n) == 0) {
            if (strcmp(n.name, "node-a") != 0 || n.lease_ms < 1 || n.renew_ms < 1 ||
                n.renewed_ms < 0 || json_array_size(n.tasks) > 4096)
                abort();
            (void)cluster_state_of(&n, INT64_MAX / 2);
            (void)cluster_state_of(&n, 0);
            json_decref(n.tasks);
        }
    }
    return 0;
}
