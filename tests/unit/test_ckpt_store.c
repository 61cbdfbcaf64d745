/* The store side of a checkpoint (ckpt_store) on a directory store: what is
 * stored once and what again, the commit and what refuses it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "catalog.h"
#include "ckpt.h"
#include "err.h"
#include "manifest.h"
#include "repo.h"
#include "store.h"
#include "util.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repo_fixture.h"

/* A file of n KiB of pseudo-random bytes that depend on seed. */
static char *make_file(struct fixture *f, const char *name, int kib, uint64_t seed)
{
    char *path = util_fmt("%s/%s", f->root, name);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    for (int i = 0; i < kib * 1024; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        fputc((int)(seed >> 56), fp);
    }
    fclose(fp);
    return path;
}

/* A put of checkpoint seq with n_deltas deltas d0, d1, ... (d_i's content
 * from seed i) and a fresh memory file; objs[i], when given, mark delta i
 * stored already. */
static void make_put(struct fixture *f, struct ckpt_put *p, uint64_t seq, size_t n_deltas,
                     const struct stream_ref *objs)
{
    static const char *boot[3] = {"kernel", "initrd", "base"};
    char name[32];
    memset(p, 0, sizeof(*p));
    p->facts = (struct manifest){.task = "t1", .seq = seq, .mode = "cow", .policy_mode = "auto",
                                 .memory_mib = 64, .vcpus = 1, .machine = "q35",
                                 .append = "console=ttyS0", .base_format = "raw"};
    for (int i = 0; i < 3; i++)
        p->boot[i].path = make_file(f, boot[i], 64, 100 + (uint64_t)i);
    p->deltas = calloc(n_deltas, sizeof(*p->deltas));
    for (size_t i = 0; i < n_deltas; i++) {
        snprintf(name, sizeof(name), "d%zu", i);
        p->deltas[i].path = make_file(f, name, 96, i);
        if (objs && objs[i].name)
            assert_int_equal(stream_ref_copy(&p->deltas[i].obj, &objs[i]), 0);
    }
    p->n_deltas = n_deltas;
    snprintf(name, sizeof(name), "mem%" PRIu64, seq);
    p->mem_path = make_file(f, name, 256, 1000 + seq);
    p->work_dir = strdup(f->root);
}

static _Atomic uint64_t last_progress;
static void progress(void *arg, uint64_t done)
{
    (void)arg;
    uint64_t seen = last_progress; /* the repository's workers report concurrently */
    while (done > seen && !atomic_compare_exchange_weak(&last_progress, &seen, done))
        ;
}

/* The first checkpoint stores everything and commits; the second names the
 * stored boot files and delta and adds only its new delta and memory. */
static void test_store_then_reuse(void **state)
{
    struct fixture *f = *state;
    struct ckpt_put p;
    struct manifest *m = NULL, *back = NULL;
    struct stream_ref first[2] = {{0}};

    make_put(f, &p, 1, 1, NULL);
    p.progress = progress;
    last_progress = 0;
    assert_int_equal(ckpt_store(f->r, f->s, &p, &m), 0);
    assert_non_null(m);
    assert_int_equal(m->n_deltas, 1);
    assert_non_null(p.boot[2].obj.name);
    assert_non_null(p.deltas[0].obj.name);
    assert_string_equal(m->deltas[0].sha256, p.deltas[0].obj.sha256);
    assert_int_equal(m->memory.size, 256 * 1024);
    assert_true(last_progress >= (256 + 96) * 1024);
    assert_int_equal(catalog_load(f->s, "t1", 1, &back), 0);
    assert_string_equal(back->memory.sha256, m->memory.sha256);
    assert_string_equal(back->base.sha256, p.boot[2].obj.sha256);
    uint64_t first_bytes = m->uploaded_bytes;
    struct stream_ref back_boot[3] = {{0}};
    assert_int_equal(stream_ref_copy(&first[0], &p.deltas[0].obj), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(stream_ref_copy(&back_boot[i], &p.boot[i].obj), 0);
    manifest_free(m);
    manifest_free(back);
    ckpt_put_clear(&p);

    /* The boot files are named by the caller's objects, as a task keeps them. */
    make_put(f, &p, 2, 2, first);
    for (int i = 0; i < 3; i++)
        assert_int_equal(stream_ref_copy(&p.boot[i].obj, &back_boot[i]), 0);
    assert_int_equal(ckpt_put_bytes(&p), (256 + 96) * 1024); /* delta 0 is stored */
    p.progress = progress;
    last_progress = 0;
    assert_int_equal(ckpt_store(f->r, f->s, &p, &m), 0);
    assert_int_equal(m->n_deltas, 2);
    assert_string_equal(m->deltas[0].name, first[0].name);
    assert_int_equal(last_progress, (256 + 96) * 1024); /* only delta 1 and memory read */
    assert_true(m->uploaded_bytes < first_bytes);
    manifest_free(m);
    ckpt_put_clear(&p);

    /* [data] whole: every delta stored (read) again. */
    make_put(f, &p, 3, 2, first);
    for (int i = 0; i < 3; i++)
        assert_int_equal(stream_ref_copy(&p.boot[i].obj, &back_boot[i]), 0);
    p.whole = 1;
    p.progress = progress;
    last_progress = 0;
    assert_int_equal(ckpt_store(f->r, f->s, &p, &m), 0);
    assert_int_equal(last_progress, (256 + 2 * 96) * 1024);
    manifest_free(m);
    ckpt_put_clear(&p);
    free(first[0].name);
    for (int i = 0; i < 3; i++)
        free(back_boot[i].name);
}

static int refuse(void *arg, const char *task, uint64_t hold, struct store_fence *out, size_t *n)
{
    (void)out;
    *n = 0;
    *(uint64_t *)arg = hold;
    return err_set(VK_ELEASE, "task %s: lease lost", task);
}

/* A gate that refuses: nothing committed, and the streams stored stay known
 * to the caller for the next try. A number already taken: VK_EEXISTS. */
static void test_refused_commit(void **state)
{
    struct fixture *f = *state;
    struct ckpt_put p;
    struct manifest *m = NULL;
    uint64_t seen = 0, *seqs = NULL;
    size_t n = 0;

    make_put(f, &p, 1, 1, NULL);
    p.gate = refuse;
    p.gate_arg = &seen;
    p.hold = 42;
    assert_int_equal(ckpt_store(f->r, f->s, &p, &m), VK_ELEASE);
    assert_null(m);
    assert_int_equal(seen, 42);
    assert_non_null(p.deltas[0].obj.name);
    assert_non_null(p.facts.memory.name);
    assert_int_equal(catalog_list(f->s, "t1", &seqs, &n), 0);
    assert_int_equal(n, 0);
    free(seqs);

    p.gate = NULL;
    assert_int_equal(ckpt_store(f->r, f->s, &p, &m), 0);
    manifest_free(m);
    m = NULL;
    assert_int_equal(ckpt_store(f->r, f->s, &p, &m), VK_EEXISTS);
    assert_null(m);
    ckpt_put_clear(&p);
}

/* A put naming no delta is refused before anything is stored. */
static void test_no_delta(void **state)
{
    struct fixture *f = *state;
    struct ckpt_put p;
    struct manifest *m = NULL;
    make_put(f, &p, 1, 0, NULL);
    assert_int_equal(ckpt_store(f->r, f->s, &p, &m), VK_EINVAL);
    assert_null(p.boot[0].obj.name);
    ckpt_put_clear(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_store_then_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_delta, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
