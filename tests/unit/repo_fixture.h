/* A repository on a directory store in a fresh temporary directory, as a
 * cmocka fixture (test_repo.c, test_ckpt_store.c). */
#ifndef VMCKPT_TEST_REPO_FIXTURE_H
#define VMCKPT_TEST_REPO_FIXTURE_H

#include "repo.h"
#include "store.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>

struct fixture {
    char root[64];
    struct store *s;
    struct repo *r;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct repo_cfg cfg = {.chunk_avg = 16384, .workers = 3, .mem_budget = 1 << 20,
                           .retries = 2, .retry_base_ms = 1, .forced_codec = CODEC_AUTO};
    char uri[128];
    snprintf(f->root, sizeof(f->root), "/tmp/vmckpt-test-repo.XXXXXX");
    assert_non_null(mkdtemp(f->root));
    snprintf(uri, sizeof(uri), "file://%s/store", f->root);
    assert_int_equal(store_open(uri, &f->s), 0);
    assert_int_equal(repo_open(&f->r, f->s, &cfg), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    repo_free(f->r);
    store_free(f->s);
    util_rm_rf(f->root);
    free(f);
    return 0;
}

#endif
