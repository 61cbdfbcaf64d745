/* The store contract, the same for every backend: on a temporary directory
 * by default, or on the store named by $VMCKPT_TEST_STORE (an FTP, SFTP or
 * RADOS server started by tests/integration/t_stores.sh). Object names get a
 * prefix of their own per test, so runs on a shared server do not meet. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "err.h"
#include "store.h"
#include "util.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

static char root[256];
static char pfx[64]; /* this test's names start with it */
static int remote;
static char uri_used[300]; /* the store of this test */

/* The name NAME of this test, in buf (static per call site: fine for tests). */
static const char *N(const char *name)
{
    static __thread char buf[8][256];
    static __thread int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof(buf[k]), "%s%s", pfx, name);
    return buf[k];
}

static int setup(void **state)
{
    struct store *s = NULL;
    char uri[300];
    const char *env = getenv("VMCKPT_TEST_STORE");
    static int seq;
    remote = env && *env;
    snprintf(pfx, sizeof(pfx), "t%d-%d/", (int)getpid(), ++seq);
    if (remote) {
        snprintf(uri, sizeof(uri), "%s", env);
    } else {
        snprintf(root, sizeof(root), "/tmp/vmckpt-test-store.XXXXXX");
        assert_non_null(mkdtemp(root));
        snprintf(uri, sizeof(uri), "file://%s", root);
    }
    snprintf(uri_used, sizeof(uri_used), "%s", uri);
    if (store_open(uri, &s) != 0)
        fail_msg("cannot open %s: %s", uri, err_msg());
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    store_free(*state);
    if (!remote)
        util_rm_rf(root);
    return 0;
}

struct names {
    char list[16][128];
    int n;
};

static int collect(void *arg, const char *name, uint64_t size, int64_t mtime)
{
    struct names *n = arg;
    (void)size;
    assert_true(mtime > 1700000000); /* a real time stamp */
    if (n->n < 16)
        snprintf(n->list[n->n++], 128, "%s", name);
    return 0;
}

static void test_put_read_list_remove(void **state)
{
    struct store *s = *state;
    char buf[64];
    size_t got = 0;
    uint64_t size = 0;
    struct names n = {0};

    assert_int_equal(store_put_buf(s, N("a/b/obj1"), "hello world", 11), 0);
    assert_int_equal(store_put_buf(s, N("a/obj2"), "x", 1), 0);
    assert_int_equal(store_put_buf(s, N("ab/obj3"), "y", 1), 0);
    assert_int_equal(store_stat(s, N("a/b/obj1"), &size), 0);
    assert_int_equal(size, 11);
    assert_int_equal(store_read(s, N("a/b/obj1"), 6, buf, sizeof(buf), &got), 0);
    assert_int_equal(got, 5);
    assert_memory_equal(buf, "world", 5);
    assert_int_equal(store_list(s, N("a/"), collect, &n), 0);
    assert_int_equal(n.n, 2); /* not ab/obj3 */
    if (store_remove(s, N("a/obj2")) != 0) fail_msg("%s", err_msg());
    assert_int_equal(store_stat(s, N("a/obj2"), NULL), VK_ENOTFOUND);
    assert_int_equal(store_read(s, N("nope"), 0, buf, 1, &got), VK_ENOTFOUND);
    assert_non_null(strstr(err_msg(), "nope"));
    assert_int_equal(store_remove(s, N("nope")), VK_ENOTFOUND);
}

static void test_uncommitted_invisible(void **state)
{
    struct store *s = *state;
    struct store_writer *w = NULL;
    struct names n = {0};
    assert_int_equal(store_put_begin(s, N("c/obj"), &w), 0);
    assert_int_equal(store_put_write(w, "partial", 7), 0);
    assert_int_equal(store_stat(s, N("c/obj"), NULL), VK_ENOTFOUND);
    assert_int_equal(store_list(s, pfx, collect, &n), 0);
    for (int i = 0; i < n.n; i++)
        assert_null(strstr(n.list[i], N("c/obj")));
    store_put_abort(w);
    assert_int_equal(store_stat(s, N("c/obj"), NULL), VK_ENOTFOUND);
    store_put_abort(NULL);
}

static void test_bad_names(void **state)
{
    struct store *s = *state;
    const char *bad[] = {"", "/abs", "a/../b", "a//b", ".hidden", "a/.tmp/x", "trailing/",
                         "sp ace", "semi;colon"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
        assert_int_equal(store_put_buf(s, bad[i], "x", 1), VK_EINVAL);
    assert_int_equal(store_open("gopher://x", &s), VK_EINVAL);
    assert_int_equal(store_open("file://relative/path", &s), VK_EINVAL);
    assert_int_equal(store_open("ftp://no-path", &s), VK_EINVAL);
}

#define BIG (24u << 20)

struct reader {
    struct store *s;
    const unsigned char *want;
    uint64_t off;
    int ok;
};

static void *read_range(void *arg)
{
    struct reader *r = arg;
    unsigned char *buf = malloc(BIG / 4);
    size_t got = 0;
    r->ok = buf && store_read(r->s, N("big/obj"), r->off, buf, BIG / 4, &got) == 0 &&
            got == BIG / 4 && memcmp(buf, r->want + r->off, BIG / 4) == 0;
    free(buf);
    return NULL;
}

static void test_large_in_parts_parallel_readers(void **state)
{
    struct store *s = *state;
    unsigned char *data = malloc(BIG);
    struct store_writer *w = NULL;
    struct reader r[4];
    pthread_t th[4];
    uint64_t size = 0;

    assert_non_null(data);
    for (size_t i = 0; i < BIG; i++)
        data[i] = (unsigned char)(i * 2654435761u >> 13);
    assert_int_equal(store_put_begin(s, N("big/obj"), &w), 0);
    for (size_t off = 0; off < BIG; off += 1000003)
        assert_int_equal(store_put_write(w, data + off, off + 1000003 <= BIG ? 1000003 : BIG - off), 0);
    assert_int_equal(store_put_commit(w), 0);
    assert_int_equal(store_stat(s, N("big/obj"), &size), 0);
    assert_int_equal(size, BIG);
    for (int i = 0; i < 4; i++) {
        r[i] = (struct reader){s, data, (uint64_t)i * (BIG / 4), 0};
        pthread_create(&th[i], NULL, read_range, &r[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_true(r[i].ok);
    }
    free(data);
}

/* Large page-aligned writes (the directory store sends them around the page
 * cache) mixed with small and unaligned ones: the object is still exactly
 * the bytes written, in order, lazily written or not. */
static void test_aligned_large_writes(void **state)
{
    struct store *s = *state;
    size_t total = (3u << 20) + 4096 + 123 + (2u << 20) + 77;
    unsigned char *data = NULL, *back = malloc(total);
    size_t got = 0;

    assert_int_equal(posix_memalign((void **)&data, 4096, total), 0);
    assert_non_null(back);
    for (size_t i = 0; i < total; i++)
        data[i] = (unsigned char)(i * 2654435761u >> 11);
    for (int lazy = 0; lazy < 2; lazy++) {
        struct store_writer *w = NULL;
        const char *name = lazy ? N("aligned/lazy") : N("aligned/plain");
        assert_int_equal(store_put_begin(s, name, &w), 0);
        w->lazy = lazy;
        /* aligned head + unaligned tail, then a small write, then a large
         * write that starts unaligned in the object */
        assert_int_equal(store_put_write(w, data, (3u << 20) + 4096 + 123), 0);
        assert_int_equal(store_put_write(w, data + (3u << 20) + 4096 + 123, 77), 0);
        assert_int_equal(store_put_write(w, data + (3u << 20) + 4096 + 200, (2u << 20)), 0);
        assert_int_equal(store_put_commit(w), 0);
        if (lazy)
            assert_int_equal(store_sync(s), 0);
        memset(back, 0, total);
        assert_int_equal(store_read(s, name, 0, back, total, &got), 0);
        assert_int_equal(got, total);
        assert_memory_equal(back, data, total);
    }
    free(back);
    free(data);
}

static void test_get_file_checks(void **state)
{
    struct store *s = *state;
    char path[300], sha[UTIL_SHA256_HEX], src[300];
    uint64_t size = 0;

    snprintf(src, sizeof(src), "/tmp/vmckpt-test-store-%d-src", (int)getpid());
    FILE *f = fopen(src, "w");
    assert_non_null(f);
    fputs("some object content\n", f);
    fclose(f);
    assert_int_equal(store_put_file(s, N("f/obj"), src, sha, &size, NULL, NULL), 0);
    assert_int_equal(size, 20);
    snprintf(path, sizeof(path), "/tmp/vmckpt-test-store-%d-out", (int)getpid());
    assert_int_equal(store_get_file(s, N("f/obj"), path, 20, sha), 0);
    /* Wrong size and wrong hash are both named errors, and leave no file. */
    unlink(path);
    assert_int_equal(store_get_file(s, N("f/obj"), path, 21, sha), VK_ECORRUPT);
    assert_non_null(strstr(err_msg(), N("f/obj")));
    sha[0] = sha[0] == '0' ? '1' : '0';
    assert_int_equal(store_get_file(s, N("f/obj"), path, 20, sha), VK_ECORRUPT);
    assert_non_null(strstr(err_msg(), "damaged"));
    assert_int_equal(access(path, F_OK), -1);
    unlink(src);
}

/* Several writers and readers at once, on one store. */
#define W_OBJS 6
#define W_SIZE (300u << 10)

struct writer_arg {
    struct store *s;
    int id, ok;
};

static void fill(unsigned char *p, size_t n, int seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)((i * 31 + (size_t)seed * 7919) >> 3);
}

static void *write_many(void *arg)
{
    struct writer_arg *a = arg;
    unsigned char *data = malloc(W_SIZE), *back = malloc(W_SIZE);
    a->ok = data && back;
    for (int k = 0; a->ok && k < W_OBJS; k++) {
        char name[64];
        size_t got = 0;
        snprintf(name, sizeof(name), "w/%d/obj%d", a->id, k);
        fill(data, W_SIZE, a->id * 100 + k);
        a->ok = store_put_buf(a->s, N(name), data, W_SIZE) == 0 &&
                store_read(a->s, N(name), 0, back, W_SIZE, &got) == 0 && got == W_SIZE &&
                memcmp(data, back, W_SIZE) == 0;
    }
    free(data);
    free(back);
    return NULL;
}

static int count_obj(void *arg, const char *name, uint64_t size, int64_t mtime)
{
    (void)name;
    (void)mtime;
    *(int *)arg += size == W_SIZE;
    return 0;
}

static void test_concurrent_writers(void **state)
{
    struct store *s = *state;
    struct writer_arg a[4];
    pthread_t th[4];
    int n = 0;
    for (int i = 0; i < 4; i++) {
        a[i] = (struct writer_arg){s, i, 0};
        pthread_create(&th[i], NULL, write_many, &a[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_true(a[i].ok);
    }
    assert_int_equal(store_list(s, N("w/"), count_obj, &n), 0);
    assert_int_equal(n, 4 * W_OBJS);
}

/* Writing an object again replaces it whole. */
static void test_overwrite(void **state)
{
    struct store *s = *state;
    char buf[16] = "";
    size_t got = 0;
    assert_int_equal(store_put_buf(s, N("o/x"), "first version", 13), 0);
    assert_int_equal(store_put_buf(s, N("o/x"), "second", 6), 0);
    assert_int_equal(store_read(s, N("o/x"), 0, buf, sizeof(buf), &got), 0);
    assert_int_equal(got, 6);
    assert_memory_equal(buf, "second", 6);
}

/* A new object (a manifest) is created, never replaced: the second writer of
 * a name gets VK_EEXISTS and the first one's content stays. */
static void test_put_new(void **state)
{
    struct store *s = *state;
    char buf[16] = "";
    size_t got = 0;
    assert_int_equal(store_put_new(s, N("n/m.json"), "first", 5), 0);
    assert_int_equal(store_put_new(s, N("n/m.json"), "second!", 7), VK_EEXISTS);
    assert_non_null(strstr(err_msg(), "exists"));
    assert_int_equal(store_read(s, N("n/m.json"), 0, buf, sizeof(buf), &got), 0);
    assert_int_equal(got, 5);
    assert_memory_equal(buf, "first", 5);
    assert_int_equal(store_put_new(s, N("n/other.json"), "x", 1), 0); /* others still go in */
}

/* Leases, where the store has them: exclusive, renewable, and they expire. */
static void test_leases(void **state)
{
    struct store *s = *state;
    if (store_lease(s, N("lease/x"), "owner-a", 1500) == VK_EINVAL &&
        strstr(err_msg(), "has no leases")) {
        skip(); /* directory, FTP, SFTP: no lease */
        return;
    }
    assert_int_equal(store_lease(s, N("lease/x"), "owner-a", 1500), 0); /* renewal */
    assert_int_equal(store_lease(s, N("lease/x"), "owner-b", 1500), VK_EBUSY);
    assert_non_null(strstr(err_msg(), "held by another"));
    usleep(2000 * 1000);
    assert_int_equal(store_lease(s, N("lease/x"), "owner-b", 5000), 0); /* expired: b takes it */
    assert_int_equal(store_lease(s, N("lease/x"), "owner-a", 5000), VK_EBUSY);
    assert_int_equal(store_unlease(s, N("lease/x"), "owner-b"), 0);
    assert_int_equal(store_lease(s, N("lease/x"), "owner-a", 5000), 0);
    assert_int_equal(store_unlease(s, N("lease/x"), "owner-a"), 0);
    /* An owner's lease survives a restart of its process (another connection). */
    struct store *s2 = NULL;
    assert_int_equal(store_lease(s, N("lease/y"), "owner-c", 5000), 0);
    assert_int_equal(store_open(uri_used, &s2), 0);
    assert_int_equal(store_lease(s2, N("lease/y"), "owner-c", 5000), 0);
    assert_int_equal(store_lease(s2, N("lease/y"), "owner-d", 5000), VK_EBUSY);
    store_free(s2);
}

/* The value of query parameter key of the store's URI, into out. */
static int uri_param(const char *key, char *out, size_t n)
{
    char pat[32];
    snprintf(pat, sizeof(pat), "%s=", key);
    const char *p = strstr(uri_used, pat);
    if (!p)
        return 0;
    p += strlen(pat);
    snprintf(out, n, "%.*s", (int)strcspn(p, "&"), p);
    return 1;
}

/* Issue 29, finding 2 (RADOS only): the lease's holder record names the
 * client a take-over blocklists. Forged to a bare IP, it made the next taker
 * blocklist that whole host for an hour (every VM there fenced). Now the
 * client to blocklist is the old lock's, as the OSDs list it. */
static void test_rados_forged_holder(void **state)
{
    struct store *s = *state, *s2 = NULL;
    char conf[256], keyring[256], id[64], pool[64], cmd[1400];
    if (strncmp(uri_used, "rados://", 8) != 0) {
        skip();
        return;
    }
    snprintf(pool, sizeof(pool), "%.*s", (int)strcspn(uri_used + 8, "?"), uri_used + 8);
    assert_true(uri_param("conf", conf, sizeof(conf)) && uri_param("keyring", keyring, sizeof(keyring)) &&
                uri_param("id", id, sizeof(id)));
    assert_int_equal(store_lease(s, N("forged"), "owner-a", 1000), 0);
    snprintf(cmd, sizeof(cmd), "rados -c '%s' --id '%s' --keyring '%s' -p '%s' setxattr '%s' vk.holder "
             "'owner-a 1 10.0.0.5'", conf, id, keyring, pool, N("forged"));
    assert_int_equal(system(cmd), 0);
    /* another node (another client) takes it once it has expired */
    assert_int_equal(store_open(uri_used, &s2), 0);
    int rc = VK_EBUSY;
    for (int i = 0; i < 100 && rc == VK_EBUSY; i++) {
        usleep(100 * 1000);
        rc = store_lease(s2, N("forged"), "owner-b", 5000);
    }
    assert_int_equal(rc, 0);
    snprintf(cmd, sizeof(cmd), "ceph -c '%s' --id '%s' --keyring '%s' osd blocklist ls 2>/dev/null "
             "| grep -q '^10\\.0\\.0\\.5'", conf, id, keyring);
    assert_int_not_equal(system(cmd), 0); /* that host is not blocklisted */
    store_free(s2);
}

/* Agents racing for one lease, each on its own connection, released at once
 * by a barrier: exactly one gets it, every round. */
#define RACERS 6
#define RACE_ROUNDS 4
struct racer {
    pthread_barrier_t *go;
    const char *name;
    char owner[32];
    int rc;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    struct store *s = NULL;
    int opened = store_open(uri_used, &s);
    pthread_barrier_wait(r->go);
    r->rc = opened == 0 ? store_lease(s, r->name, r->owner, 5000) : opened;
    store_free(s);
    return NULL;
}

static void test_lease_race(void **state)
{
    struct store *s = *state;
    if (store_lease(s, N("race/probe"), "owner-a", 1500) == VK_EINVAL &&
        strstr(err_msg(), "has no leases")) {
        skip();
        return;
    }
    for (int round = 0; round < RACE_ROUNDS; round++) {
        char name[256];
        pthread_barrier_t go;
        pthread_t th[RACERS];
        struct racer r[RACERS];
        int won = 0;
        snprintf(name, sizeof(name), "%s", N("race/x"));
        snprintf(name + strlen(name), sizeof(name) - strlen(name), "%d", round);
        pthread_barrier_init(&go, NULL, RACERS);
        for (int i = 0; i < RACERS; i++) {
            r[i] = (struct racer){.go = &go, .name = name};
            snprintf(r[i].owner, sizeof(r[i].owner), "racer-%d", i);
            assert_int_equal(pthread_create(&th[i], NULL, race, &r[i]), 0);
        }
        for (int i = 0; i < RACERS; i++) {
            pthread_join(th[i], NULL);
            if (r[i].rc == 0)
                won++;
            else
                assert_int_equal(r[i].rc, VK_EBUSY);
        }
        pthread_barrier_destroy(&go);
        assert_int_equal(won, 1);
    }
}

/* Directory store: a lease is a directory of generations, the highest one
 * rules, and writers prune the older ones. */
static int count_entries(const char *dir)
{
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "ls -A '%s' | wc -l", dir);
    FILE *f = popen(cmd, "r");
    int n = -1;
    if (f && fscanf(f, "%d", &n) != 1)
        n = -1;
    if (f)
        pclose(f);
    return n;
}

static void test_dir_lease_generations(void **state)
{
    struct store *s = *state;
    char dir[600], gen[700], text[64];
    if (remote) {
        skip(); /* the layout is the directory store's */
        return;
    }
    for (int i = 0; i < 5; i++)
        assert_int_equal(store_lease(s, N("gen/x"), "owner-a", 5000), 0);
    snprintf(dir, sizeof(dir), "%s/%sgen/x.lease", root, pfx);
    assert_int_equal(count_entries(dir), 1); /* the older generations are gone */
    /* another owner's newer generation wins: as if it took the lease while
     * owner-a stalled */
    snprintf(gen, sizeof(gen), "%s/00000000000000000099", dir);
    snprintf(text, sizeof(text), "owner-b %lld\n", (long long)(util_wall_us() / 1000 + 60000));
    assert_int_equal(util_write_file_atomic(gen, text, strlen(text)), 0);
    assert_int_equal(store_lease(s, N("gen/x"), "owner-a", 5000), VK_EBUSY);
    assert_non_null(strstr(err_msg(), "owner-b"));
    assert_int_equal(store_unlease(s, N("gen/x"), "owner-a"), VK_ENOTFOUND);
    assert_int_equal(store_unlease(s, N("gen/x"), "owner-b"), 0);
    assert_int_equal(store_lease(s, N("gen/x"), "owner-a", 5000), 0); /* released: free */
    /* a hostile generation number that would wrap g + 1 is not a generation */
    snprintf(gen, sizeof(gen), "%s/99999999999999999999", dir);
    assert_int_equal(util_write_file_atomic(gen, text, strlen(text)), 0);
    assert_int_equal(store_lease(s, N("gen/x"), "owner-a", 5000), 0);
}

/* Fenced commits: a write that proves a lease goes in only while its owner
 * holds the lease in the epoch it proves; a take-over by another owner voids
 * the proof, even for a process that checked the lease just before. */
static void test_fenced_put(void **state)
{
    struct store *s = *state, *s2 = NULL;
    struct store_fence fa, fb;
    if (store_lease_fenced(s, N("fence/t"), "owner-a", 1500, &fa) == VK_EINVAL &&
        strstr(err_msg(), "has no leases")) {
        snprintf(fa.lease, sizeof(fa.lease), "%s", N("fence/t"));
        snprintf(fa.owner, sizeof(fa.owner), "owner-a");
        assert_int_equal(store_put_fenced(s, &fa, 1, N("fence/1.json"), "a1", 2), VK_EINVAL);
        skip();
        return;
    }
    uint64_t e0 = fa.epoch;
    assert_int_equal(store_put_fenced(s, &fa, 1, N("fence/1.json"), "a1", 2), 0);
    assert_int_equal(store_put_fenced(s, &fa, 1, N("fence/1.json"), "a1", 2), VK_EEXISTS);
    assert_int_equal(store_lease_fenced(s, N("fence/t"), "owner-a", 1500, &fa), 0);
    assert_true(fa.epoch == e0); /* a renewal keeps the epoch */
    usleep(2000 * 1000);
    /* another node (its own connection) takes the expired lease over */
    assert_int_equal(store_open(uri_used, &s2), 0);
    assert_int_equal(store_lease_fenced(s2, N("fence/t"), "owner-b", 5000, &fb), 0);
    assert_true(fb.epoch > fa.epoch);
    assert_int_equal(store_put_fenced(s, &fa, 1, N("fence/2.json"), "a2", 2), VK_ELEASE);
    assert_int_equal(store_stat(s2, N("fence/2.json"), NULL), VK_ENOTFOUND);
    assert_int_equal(store_put_fenced(s2, &fb, 1, N("fence/2.json"), "b2", 2), 0);
    assert_int_equal(store_lease_fenced(s, N("fence/t"), "owner-a", 5000, &fa), VK_EBUSY);
    /* released, then owner-a's again: a new tenure, a new epoch */
    assert_int_equal(store_unlease(s2, N("fence/t"), "owner-b"), 0);
    assert_int_equal(store_lease_fenced(s, N("fence/t"), "owner-a", 5000, &fa), 0);
    assert_true(fa.epoch > fb.epoch);
    assert_int_equal(store_put_fenced(s, &fa, 1, N("fence/3.json"), "a3", 2), 0);
    assert_int_equal(store_put_fenced(s2, &fb, 1, N("fence/4.json"), "b4", 2), VK_ELEASE);
    /* two proofs (a task's lease and an upload hold): both must hold */
    struct store_fence two[2];
    assert_int_equal(store_lease_fenced(s2, N("fence/u"), "owner-b", 5000, &two[0]), 0);
    two[1] = fb; /* void */
    assert_int_equal(store_put_fenced(s2, two, 2, N("fence/5.json"), "b5", 2), VK_ELEASE);
    assert_int_equal(store_stat(s, N("fence/5.json"), NULL), VK_ENOTFOUND);
    assert_int_equal(store_lease_fenced(s, N("fence/u2"), "owner-a", 5000, &two[0]), 0);
    two[1] = fa;
    assert_int_equal(store_put_fenced(s, two, 2, N("fence/5.json"), "a5", 2), 0);
    store_free(s2);
}

/* Voids: a voided name cannot be created exclusively (a late write of a
 * node whose lease was taken over), and no reader sees anything there. */
static void test_void(void **state)
{
    struct store *s = *state;
    uint64_t size = 0;
    if (store_void(s, N("void/m/0000000002.json")) == VK_EINVAL &&
        strstr(err_msg(), "cannot void")) {
        skip(); /* FTP, SFTP: no cluster mode */
        return;
    }
    assert_int_equal(store_taken(s, N("void/m/0000000002.json")), 1);
    assert_int_equal(store_taken(s, N("void/m/0000000003.json")), 0);
    assert_int_equal(store_put_new(s, N("void/m/0000000002.json"), "late", 4), VK_EEXISTS);
    assert_int_equal(store_stat(s, N("void/m/0000000002.json"), &size), VK_ENOTFOUND);
    assert_int_equal(store_put_new(s, N("void/m/0000000001.json"), "one", 3), 0);
    assert_int_equal(store_void(s, N("void/m/0000000001.json")), VK_EEXISTS); /* taken */
    assert_int_equal(store_taken(s, N("void/m/0000000001.json")), 1);
    struct names l = {0};
    assert_int_equal(store_list(s, N("void/"), collect, &l), 0);
    assert_int_equal(l.n, 1); /* the object, not the void */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_put_read_list_remove, setup, teardown),
        cmocka_unit_test_setup_teardown(test_uncommitted_invisible, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_in_parts_parallel_readers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_aligned_large_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_file_checks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_writers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overwrite, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_new, setup, teardown),
        cmocka_unit_test_setup_teardown(test_leases, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lease_race, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dir_lease_generations, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fenced_put, setup, teardown),
        cmocka_unit_test_setup_teardown(test_void, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rados_forged_holder, setup, teardown),
    };
    const char *env = getenv("VMCKPT_TEST_STORE");
    return cmocka_run_group_tests_name(env && *env ? env : "store (directory)", tests, NULL, NULL);
}
