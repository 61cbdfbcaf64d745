/* libFuzzer harness: a stream index as read from a store (repo_index_check).
 * The stream it must describe takes its hash and size from the input itself,
 * so that inputs get past the first checks. */
#include "err.h"
#include "repo.h"
#include "store.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct repo *fuzz_repo;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static char dir[] = "/tmp/vmckpt-fuzz-index.XXXXXX";
    struct store *s = NULL;
    struct repo_cfg cfg = {.chunk_avg = 32768, .workers = 1, .mem_budget = 1 << 20, .retries = 1};
    char uri[64];
    (void)argc;
    (void)argv;
    if (!mkdtemp(dir))
        abort();
    snprintf(uri, sizeof(uri), "file://%s", dir);
    if (store_open(uri, &s) < 0 || repo_open(&fuzz_repo, s, &cfg) < 0)
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct stream_ref o = {.name = "indexes/fuzz"};
    json_t *j = json_loadb((const char *)data, size, 0, NULL);
    const char *sha = json_string_value(json_object_get(j, "sha256"));
    snprintf(o.sha256, sizeof(o.sha256), "%s", sha ? sha : "");
    o.size = (uint64_t)json_integer_value(json_object_get(j, "size"));
    repo_index_check(fuzz_repo, &o, (const char *)data, size);
    json_decref(j);
    return 0;
}
