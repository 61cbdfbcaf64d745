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

/* A put of checkpoint seq with n_deltas new deltas d<first>, d<first+1>, ...
 * (d_i's content from seed i) and a fresh memory file; objs[i], when given,
 * mark new delta i stored already. */
static void make_put(struct fixture *f, struct ckpt_put *p, uint64_t seq, size_t n_deltas,
                     const struct stream_ref *objs)
{
    static size_t first;
    first = seq == 1 ? 0 : first;
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
        snprintf(name, sizeof(name), "d%zu", first + i);
        p->deltas[i].path = make_file(f, name, 96, first + i);
        if (objs && objs[i].name)
            assert_int_equal(stream_ref_copy(&p->deltas[i].obj, &objs[i]), 0);
    }
    p->n_deltas = n_deltas;
    first += n_deltas;
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

/* The first checkpoint stores everything and commits; the second, given the
 * committed chain and the stored boot files, reads only its new delta and
 * memory and names the committed delta first. */
static void test_store_then_reuse(void **state)
{
    struct fixture *f = *state;
    struct ckpt_put p;
    struct manifest *m = NULL, *back = NULL;
    struct stream_ref boot[3] = {{0}};

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
    assert_int_equal(last_progress, (3 * 64 + 96 + 256) * 1024);
    assert_int_equal(catalog_load(f->s, "t1", 1, &back), 0);
    assert_string_equal(back->memory.sha256, m->memory.sha256);
    assert_string_equal(back->base.sha256, p.boot[2].obj.sha256);
    uint64_t first_bytes = m->uploaded_bytes;
    for (int i = 0; i < 3; i++)
        assert_int_equal(stream_ref_copy(&boot[i], &p.boot[i].obj), 0);
    ckpt_put_clear(&p);

    make_put(f, &p, 2, 1, NULL);
    for (int i = 0; i < 3; i++)
        assert_int_equal(stream_ref_copy(&p.boot[i].obj, &boot[i]), 0);
    p.chain = calloc(1, sizeof(*p.chain));
    assert_int_equal(stream_ref_copy(&p.chain[0], &back->deltas[0]), 0);
    p.n_chain = 1;
    p.below = util_fmt("%s/d0", f->root); /* the committed delta's local file */
    assert_int_equal(ckpt_put_bytes(&p), (256 + 96) * 1024);
    p.progress = progress;
    last_progress = 0;
    struct manifest *m2 = NULL;
    assert_int_equal(ckpt_store(f->r, f->s, &p, &m2), 0);
    assert_int_equal(m2->n_deltas, 2);
    assert_string_equal(m2->deltas[0].name, back->deltas[0].name);
    assert_string_equal(m2->deltas[1].sha256, p.deltas[0].obj.sha256);
    assert_int_equal(last_progress, (256 + 96) * 1024); /* only the new delta and memory read */
    assert_true(m2->uploaded_bytes < first_bytes);
    manifest_free(m);
    manifest_free(m2);
    manifest_free(back);
    ckpt_put_clear(&p);
    for (int i = 0; i < 3; i++)
        free(boot[i].name);
}

/* A new delta stored by a try that failed is named, not read again. */
static void test_stored_delta_reused(void **state)
{
    struct fixture *f = *state;
    struct ckpt_put p;
    struct manifest *m = NULL;
    make_put(f, &p, 1, 2, NULL);
    p.gate = NULL;
    assert_int_equal(ckpt_store(f->r, f->s, &p, &m), 0);
    struct stream_ref d0 = {0};
    assert_int_equal(stream_ref_copy(&d0, &p.deltas[0].obj), 0);
    manifest_free(m);
    ckpt_put_clear(&p);

    make_put(f, &p, 2, 2, NULL);
    free(p.deltas[0].path);
    p.deltas[0].path = strdup("/nonexistent/never-read");
    p.deltas[0].obj = d0; /* taken over by the put */
    assert_int_equal(ckpt_store(f->r, f->s, &p, &m), 0);
    assert_int_equal(m->n_deltas, 2);
    manifest_free(m);
    ckpt_put_clear(&p);
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

/* A put naming no new delta is refused before anything is stored; one whose
 * committed chain is unknown but whose delta backs onto the base (nothing
 * below it) names that delta alone, as it names no chain it was given. */
static void test_refused_and_base_puts(void **state)
{
    struct fixture *f = *state;
    struct ckpt_put p;
    struct manifest *m = NULL;
    make_put(f, &p, 1, 0, NULL);
    assert_int_equal(ckpt_store(f->r, f->s, &p, &m), VK_EINVAL);
    assert_null(p.boot[0].obj.name);
    ckpt_put_clear(&p);
    make_put(f, &p, 1, 1, NULL);
    p.chain_unknown = 1;
    p.chain = calloc(1, sizeof(*p.chain));
    p.chain[0] = (struct stream_ref){strdup("streams/not-there"), 1, "00"};
    p.n_chain = 1;
    assert_int_equal(ckpt_store(f->r, f->s, &p, &m), 0);
    assert_int_equal(m->n_deltas, 1);
    assert_string_equal(m->deltas[0].sha256, p.deltas[0].obj.sha256);
    manifest_free(m);
    ckpt_put_clear(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_store_then_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stored_delta_reused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_and_base_puts, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
