/* The repository on a directory store: streams as chunks, dedup, zero
 * chunks, round trips, damage detection, retention and GC. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "catalog.h"
#include "err.h"
#include "gc.h"
#include "manifest.h"
#include "repo.h"
#include "store.h"
#include "util.h"

#include <dirent.h>
#include <pthread.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "repo_fixture.h"

/* 3 MiB: 1 MiB of text, 1 MiB of zeros, the first MiB again. */
static char *make_file(struct fixture *f, const char *name, int variant)
{
    char *path = util_fmt("%s/%s", f->root, name);
    FILE *fp = fopen(path, "wb");
    char *mib = malloc(1 << 20), *zero = calloc(1, 1 << 20);
    uint64_t x = 12345 + (uint64_t)variant;
    for (int i = 0; i < (1 << 20); i++) {
        x = x * 6364136223846793005ull + 1;
        mib[i] = (x >> 60) ? "vmckpt chunk "[i % 13] : (char)(x >> 40);
    }
    fwrite(mib, 1, 1 << 20, fp);
    fwrite(zero, 1, 1 << 20, fp);
    fwrite(mib, 1, 1 << 20, fp);
    fclose(fp);
    free(mib);
    free(zero);
    return path;
}

static int same_files(const char *a, const char *b)
{
    char sa[UTIL_SHA256_HEX], sb[UTIL_SHA256_HEX];
    uint64_t na, nb;
    return util_sha256_file(a, sa, &na) == 0 && util_sha256_file(b, sb, &nb) == 0 &&
           na == nb && !strcmp(sa, sb);
}

static int count_chunks(struct fixture *f)
{
    char *cmd = util_fmt("cat %s/store/packidx/* | jq '.records | length' | "
                         "awk '{ n += $1 } END { print n + 0 }'", f->root);
    FILE *p = popen(cmd, "r");
    int n = 0;
    assert_int_equal(fscanf(p, "%d", &n), 1);
    pclose(p);
    free(cmd);
    return n;
}

static void test_roundtrip_dedup_zero(void **state)
{
    struct fixture *f = *state;
    char *in = make_file(f, "in", 0), *out = util_fmt("%s/out", f->root);
    struct repo_stats st = {0}, st2 = {0};
    struct stream_ref o, o2;

    assert_int_equal(repo_put_file(f->r, in, 0, &o, &st, NULL, NULL), 0);
    assert_int_equal(o.size, 3 << 20);
    assert_true(st.zero_chunks > 0);  /* the zero MiB is not stored */
    assert_true(st.dedup_chunks > 0); /* the repeated MiB is stored once */
    assert_true(st.new_bytes < (2u << 20));
    assert_int_equal(repo_get_file(f->r, &o, out, "test stream"), 0);
    assert_true(same_files(in, out));
    /* The same file again: nothing new. */
    size_t made = repo_buffers_made(f->r);
    assert_true(made > 0);
    assert_int_equal(repo_put_file(f->r, in, 0, &o2, &st2, NULL, NULL), 0);
    assert_int_equal(st2.new_chunks, 0);
    assert_string_equal(o.name, o2.name);
    free(o2.name);
    /* ...through the buffers the first upload kept: four more uploads make
     * fewer fresh ones than the first did (each made all its own before). */
    for (int k = 0; k < 4; k++) {
        assert_int_equal(repo_put_file(f->r, in, 0, &o2, NULL, NULL, NULL), 0);
        free(o2.name);
    }
    assert_true(repo_buffers_made(f->r) < 2 * made);
    /* Stored whole (a base image): the second time, not even read. */
    assert_int_equal(repo_put_file(f->r, in, 1, &o2, &st2, NULL, NULL), 0);
    memset(&st2, 0, sizeof(st2));
    free(o2.name);
    assert_int_equal(repo_put_file(f->r, in, 1, &o2, &st2, NULL, NULL), 0);
    assert_int_equal(st2.chunks, 0);
    assert_string_equal(o.sha256, o2.sha256); /* the same content, the same hash */
    assert_int_equal(repo_get_file(f->r, &o2, out, "test stream"), 0);
    assert_true(same_files(in, out));
    assert_int_equal(repo_verify_stream(f->r, &o, "test stream"), 0);
    /* Zero chunks are named without hashing them (kept hashes): the names
     * must still be the SHA-256 of their zeros. */
    char *text = NULL;
    size_t len = 0, zeros = 0;
    assert_int_equal(store_get_buf(f->s, o.name, &text, &len), 0);
    json_t *idx = json_loads(text, 0, NULL), *c;
    size_t i;
    assert_non_null(idx);
    json_array_foreach(json_object_get(idx, "chunks"), i, c) {
        if (strcmp(json_string_value(json_array_get(c, 2)), "zero") != 0)
            continue;
        size_t n = (size_t)json_integer_value(json_array_get(c, 1));
        char *z = calloc(1, n), sha[UTIL_SHA256_HEX];
        util_sha256_buf(z, n, sha);
        assert_string_equal(json_string_value(json_array_get(c, 0)), sha);
        free(z);
        zeros++;
    }
    assert_true(zeros > 0);
    json_decref(idx);
    free(text);
    free(o.name);
    free(o2.name);
    free(in);
    free(out);
}

static void test_damage_named(void **state)
{
    struct fixture *f = *state;
    char *in = make_file(f, "in", 1);
    struct stream_ref o;
    assert_int_equal(repo_put_file(f->r, in, 0, &o, NULL, NULL, NULL), 0);
    /* Damage the first chunk of a pack: verification names it and its pack. */
    char *cmd = util_fmt("f=$(find %s/store/packs -type f | head -n1); "
                         "perl -e 'open(F, \"+<\", $ARGV[0]); seek(F, 30, 0); read(F, $c, 1); "
                         "seek(F, 30, 0); print F chr(ord($c) ^ 0xff)' $f; echo $f",
                         f->root);
    FILE *p = popen(cmd, "r");
    char victim[512] = "";
    assert_non_null(fgets(victim, sizeof(victim), p));
    pclose(p);
    victim[strcspn(victim, "\n")] = '\0';
    assert_int_equal(repo_verify_stream(f->r, &o, "stream X"), VK_ECORRUPT);
    assert_non_null(strstr(err_msg(), "stream X"));
    assert_non_null(strstr(err_msg(), strrchr(victim, '/') + 1));
    assert_non_null(strstr(err_msg(), "damaged"));
    unlink(victim);
    assert_int_equal(repo_verify_stream(f->r, &o, "stream X"), VK_ENOTFOUND);
    assert_non_null(strstr(err_msg(), "missing"));
    assert_non_null(strstr(err_msg(), strrchr(victim, '/') + 1));
    /* Its index gone too: no pack holds the chunk. */
    char *idx = util_fmt("%s/store/packidx/%s", f->root, strrchr(victim, '/') + 1);
    unlink(idx);
    free(idx);
    assert_int_equal(repo_verify_stream(f->r, &o, "stream X"), VK_ENOTFOUND);
    assert_non_null(strstr(err_msg(), "no pack"));
    free(o.name);
    free(in);
    free(cmd);
}

/* One verification reads each chunk once: a stream verified again reads
 * nothing, a stream sharing chunks reads only its own, and a chunk read
 * damaged is not remembered as intact. */
static void test_verify_reads_each_chunk_once(void **state)
{
    struct fixture *f = *state;
    char *in = make_file(f, "in", 0), *in2 = make_file(f, "in2", 1);
    char *both = util_fmt("cat %s %s > %s/in3", in, in2, f->root), *in3 = util_fmt("%s/in3", f->root);
    struct stream_ref o, o3;
    uint64_t s0, s1, s2, c;
    struct repo_seen *seen = repo_seen_new(), *seen2 = repo_seen_new();
    assert_non_null(seen);
    assert_non_null(seen2);
    assert_int_equal(system(both), 0);
    assert_int_equal(repo_put_file(f->r, in, 0, &o, NULL, NULL, NULL), 0);
    assert_int_equal(repo_put_file(f->r, in3, 0, &o3, NULL, NULL, NULL), 0);

    repo_read_counts(f->r, &s0, &c);
    assert_int_equal(repo_verify_stream_seen(f->r, &o, "o", seen), 0);
    repo_read_counts(f->r, &s1, &c);
    assert_true(s1 > s0);
    assert_int_equal(repo_verify_stream_seen(f->r, &o, "o", seen), 0);
    repo_read_counts(f->r, &s2, &c);
    assert_int_equal(s2, s1); /* read once */
    /* in3 starts with in: only its second half is read */
    assert_int_equal(repo_verify_stream_seen(f->r, &o3, "o3", seen), 0);
    repo_read_counts(f->r, &s0, &c);
    assert_int_equal(repo_verify_stream(f->r, &o3, "o3"), 0);
    repo_read_counts(f->r, &s1, &c);
    assert_true(s0 - s2 > 0);
    assert_true(s0 - s2 < s1 - s0);

    /* damaged: a fresh verification finds it, every time */
    char *cmd = util_fmt("for p in $(find %s/store/packs -type f); do "
                         "printf 'XXXXXXXXXXXXXXXX' | dd of=$p bs=1 seek=40 conv=notrunc 2>/dev/null; done",
                         f->root);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(repo_verify_stream_seen(f->r, &o, "o", seen2), VK_ECORRUPT);
    assert_int_equal(repo_verify_stream_seen(f->r, &o, "o", seen2), VK_ECORRUPT);
    repo_seen_free(seen);
    repo_seen_free(seen2);
    free(o.name);
    free(o3.name);
    free(in);
    free(in2);
    free(in3);
    free(both);
    free(cmd);
}

/* Rewrites the index of stream o with fn applied to its chunk list. */
static void edit_index(struct fixture *f, const struct stream_ref *o, void (*fn)(json_t *chunks))
{
    char *text = NULL, *out;
    size_t len = 0;
    assert_int_equal(store_get_buf(f->s, o->name, &text, &len), 0);
    json_t *idx = json_loads(text, 0, NULL);
    assert_non_null(idx);
    fn(json_object_get(idx, "chunks"));
    out = json_dumps(idx, JSON_COMPACT);
    assert_int_equal(store_put_buf(f->s, o->name, out, strlen(out)), 0);
    free(out);
    json_decref(idx);
    free(text);
}

static void mark_first_stored_zero(json_t *chunks)
{
    json_t *c;
    size_t i;
    json_array_foreach(chunks, i, c) {
        if (strcmp(json_string_value(json_array_get(c, 2)), "zero") != 0) {
            json_array_set_new(c, 2, json_string("zero"));
            return;
        }
    }
}

static void make_first_huge(json_t *chunks)
{
    json_array_set_new(json_array_get(chunks, 0), 1, json_integer((json_int_t)1 << 30));
}

static uint64_t rchar(void)
{
    FILE *fp = fopen("/proc/self/io", "r");
    char line[128];
    unsigned long long v = 0;
    assert_non_null(fp);
    while (fgets(line, sizeof(line), fp))
        if (sscanf(line, "rchar: %llu", &v) == 1)
            break;
    fclose(fp);
    return v;
}

static void fill_random(char *p, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = (char)(seed >> 56);
    }
}

/* Issue 16: a restore reads the records it needs and little more, even when
 * they lie scattered through packs another stream filled; the output is the
 * same whether zero chunks become holes (a file) or bytes (a stream). */
static void test_restore_reads_what_it_needs(void **state)
{
    struct fixture *f = *state;
    size_t mib = 1 << 20, piece = 64 << 10;
    char *x = malloc(4 * mib), *y = malloc(4 * mib);
    char *px = util_fmt("%s/x", f->root), *py = util_fmt("%s/y", f->root);
    char *out = util_fmt("%s/out", f->root), *out2 = util_fmt("%s/out2", f->root);
    struct stream_ref ox, oy;
    struct repo_stats st = {0};

    /* y: every other 64 KiB piece of x, new data between, then zeros. */
    fill_random(x, 4 * mib, 1);
    fill_random(y, 3 * mib, 2);
    for (size_t off = 0; off < 3 * mib; off += 2 * piece)
        memcpy(y + off, x + off, piece);
    memset(y + 3 * mib, 0, mib);
    FILE *fp = fopen(px, "wb");
    fwrite(x, 1, 4 * mib, fp);
    fclose(fp);
    fp = fopen(py, "wb");
    fwrite(y, 1, 4 * mib, fp);
    fclose(fp);
    assert_int_equal(repo_put_file(f->r, px, 0, &ox, NULL, NULL, NULL), 0);
    assert_int_equal(repo_put_file(f->r, py, 0, &oy, &st, NULL, NULL), 0);
    assert_true(st.dedup_chunks > 0 && st.zero_chunks > 0);
    assert_int_equal(repo_verify_stream(f->r, &oy, "y"), 0); /* the map is loaded */

    /* What y needs: its stored chunks (random: stored plain), once each. */
    char *text = NULL;
    size_t len = 0, need = 0;
    assert_int_equal(store_get_buf(f->s, oy.name, &text, &len), 0);
    json_t *idx = json_loads(text, 0, NULL), *c;
    json_t *seen = json_object();
    size_t i;
    json_array_foreach(json_object_get(idx, "chunks"), i, c) {
        const char *sha = json_string_value(json_array_get(c, 0));
        if (strcmp(json_string_value(json_array_get(c, 2)), "zero") != 0 &&
            !json_object_get(seen, sha)) {
            json_object_set_new(seen, sha, json_true());
            need += (size_t)json_integer_value(json_array_get(c, 1)) + 16;
        }
    }
    uint64_t r0 = rchar();
    assert_int_equal(repo_get_file(f->r, &oy, out, "y"), 0);
    uint64_t got = rchar() - r0;
    assert_true(same_files(py, out));
    /* Its index and the pack indexes looked at again are read too. */
    assert_true(got <= need + need / 20 * 3 + len + 65536);
    /* The old planner read whole packs of which a quarter was needed: here
     * every pack of x is about half needed. */
    struct stat sb;
    assert_int_equal(stat(out, &sb), 0);
    assert_true((uint64_t)sb.st_blocks * 512 < 4 * mib); /* the zero MiB is a hole */

    /* Into a file descriptor that is not left with holes: the same bytes. */
    int fd = open(out2, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(repo_get_stream(f->r, &oy, fd, "y"), 0);
    close(fd);
    assert_true(same_files(py, out2));
    json_decref(seen);
    json_decref(idx);
    free(text);
    free(ox.name);
    free(oy.name);
    free(x);
    free(y);
    free(px);
    free(py);
    free(out);
    free(out2);
}

/* Issue 16: a stream's packs staged into a local cache are read from there,
 * not the store; a damaged or missing copy is passed over for the store's. */
static void test_cache_read_first(void **state)
{
    struct fixture *f = *state;
    char *in = make_file(f, "in", 7), *out = util_fmt("%s/out", f->root);
    char uri[128];
    struct store *cache = NULL;
    struct stream_ref o;
    json_t *packs = json_array();
    uint64_t copied = 0, s0, c0, s1, c1;

    snprintf(uri, sizeof(uri), "file://%s/cache", f->root);
    assert_int_equal(store_open(uri, &cache), 0);
    assert_int_equal(repo_put_file(f->r, in, 0, &o, NULL, NULL, NULL), 0);
    assert_int_equal(repo_stage_stream(f->r, &o, packs, &copied), VK_EINVAL); /* no cache yet */
    repo_set_cache(f->r, cache);
    assert_int_equal(repo_stage_stream(f->r, &o, packs, &copied), 0);
    assert_true(json_array_size(packs) > 0 && copied > 0);
    uint64_t again = 0;
    json_t *packs2 = json_array();
    assert_int_equal(repo_stage_stream(f->r, &o, packs2, &again), 0);
    assert_int_equal(again, 0); /* staged already: nothing copied twice */
    repo_read_counts(f->r, &s0, &c0);
    assert_int_equal(repo_get_file(f->r, &o, out, "s"), 0);
    repo_read_counts(f->r, &s1, &c1);
    assert_true(same_files(in, out));
    assert_int_equal(s1 - s0, 0);
    assert_true(c1 - c0 > 0);
    /* Damage every cached pack: the restore still works, from the store. */
    char *cmd = util_fmt("for p in $(find %s/cache/packs -type f); do "
                         "printf 'XXXXXXXXXXXXXXXXXXXXXXXX' | dd of=$p bs=1 seek=40 conv=notrunc 2>/dev/null; done",
                         f->root);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(repo_get_file(f->r, &o, out, "s"), 0);
    repo_read_counts(f->r, &s0, &c0);
    assert_true(same_files(in, out));
    assert_true(s0 - s1 > 0);
    /* Gone altogether: the same. */
    char *rm = util_fmt("rm -rf %s/cache/packs", f->root);
    assert_int_equal(system(rm), 0);
    assert_int_equal(repo_verify_stream(f->r, &o, "s"), 0);
    repo_set_cache(f->r, NULL);
    store_free(cache);
    json_decref(packs);
    json_decref(packs2);
    free(o.name);
    free(in);
    free(out);
    free(cmd);
    free(rm);
}

struct writer_arg {
    const char *path;
    int failures;
};

static void *write_often(void *arg)
{
    struct writer_arg *w = arg;
    for (int i = 0; i < 200; i++)
        w->failures += util_write_file_atomic(w->path, "stamp\n", 6) != 0;
    return NULL;
}

/* Issue 16: a restore and the pre-staging note the same blob checked at
 * once (the same file from two threads): every write must succeed (they
 * shared one temporary name and failed each other's renames). */
static void test_atomic_write_two_threads(void **state)
{
    struct fixture *f = *state;
    char *path = util_fmt("%s/blob.checked", f->root);
    struct writer_arg a = {.path = path}, b = {.path = path};
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, write_often, &a), 0);
    assert_int_equal(pthread_create(&tb, NULL, write_often, &b), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    assert_int_equal(a.failures + b.failures, 0);
    free(path);
}

/* Finding 3 of issue 11: the stream hash covers names and lengths, not the
 * codec; a stored chunk marked "zero" must not be returned as zeros. */
static void test_forged_index(void **state)
{
    struct fixture *f = *state;
    char *in = make_file(f, "in", 2), *out = util_fmt("%s/out", f->root);
    struct stream_ref o;
    assert_int_equal(repo_put_file(f->r, in, 0, &o, NULL, NULL, NULL), 0);
    edit_index(f, &o, mark_first_stored_zero);
    assert_int_equal(repo_verify_stream(f->r, &o, "base"), VK_ECORRUPT);
    assert_non_null(strstr(err_msg(), "marked zero"));
    assert_int_equal(repo_get_file(f->r, &o, out, "base"), VK_ECORRUPT);
    assert_int_equal(access(out, F_OK), -1); /* nothing written where a blob would be */
    free(o.name);
    assert_int_equal(repo_put_file(f->r, in, 0, &o, NULL, NULL, NULL), 0); /* repaired */
    assert_int_equal(repo_verify_stream(f->r, &o, "base"), 0);
    edit_index(f, &o, make_first_huge);
    assert_int_equal(repo_verify_stream(f->r, &o, "base"), VK_ECORRUPT);
    assert_non_null(strstr(err_msg(), "malformed"));
    free(o.name);
    free(in);
    free(out);
}

/* Finding 4 of issue 11: one damaged pack index costs only its own chunks,
 * and is read again once repaired, without a restart. */
static void test_bad_pack_index(void **state)
{
    struct fixture *f = *state;
    char *a = make_file(f, "a", 3), *b = make_file(f, "b", 4), *c = make_file(f, "c", 5);
    struct stream_ref oa, ob, oc;
    struct repo *r2 = NULL;
    struct repo_cfg cfg = {.chunk_avg = 16384, .workers = 2, .mem_budget = 1 << 20,
                           .retries = 2, .retry_base_ms = 1, .forced_codec = CODEC_AUTO};
    assert_int_equal(repo_put_file(f->r, a, 0, &oa, NULL, NULL, NULL), 0);
    assert_int_equal(store_sync(f->s), 0);
    /* The pack index of stream a: the only one so far. */
    char *cmd = util_fmt("ls %s/store/packidx", f->root), id[64] = "";
    FILE *p = popen(cmd, "r");
    assert_non_null(fgets(id, sizeof(id), p));
    pclose(p);
    id[strcspn(id, "\n")] = '\0';
    assert_int_equal(repo_put_file(f->r, b, 0, &ob, NULL, NULL, NULL), 0);
    char *name = util_fmt("packidx/%s", id), *good = NULL;
    size_t good_len = 0;
    assert_int_equal(store_get_buf(f->s, name, &good, &good_len), 0);
    assert_int_equal(store_put_buf(f->s, name, "{\"format\":1,\"records\":[[\"../x\",0,9,\"none\"]]}", 44), 0);
    assert_int_equal(store_put_buf(f->s, "packidx/0123456789abcdef0123456789abcdef", "junk", 4), 0);
    /* A node that starts now: the damaged indexes are skipped, not fatal. */
    assert_int_equal(repo_open(&r2, f->s, &cfg), 0);
    assert_int_equal(repo_verify_stream(r2, &ob, "b"), 0);
    assert_int_equal(repo_verify_stream(r2, &oa, "a"), VK_ENOTFOUND);
    assert_int_equal(repo_put_file(r2, c, 0, &oc, NULL, NULL, NULL), 0); /* checkpoints go on */
    assert_int_equal(repo_verify_stream(r2, &oc, "c"), 0);
    /* Repaired: read again on the next look, same process. */
    assert_int_equal(store_put_buf(f->s, name, good, good_len), 0);
    assert_int_equal(repo_verify_stream(r2, &oa, "a"), 0);
    repo_free(r2);
    free(oa.name);
    free(ob.name);
    free(oc.name);
    free(name);
    free(good);
    free(cmd);
    free(a);
    free(b);
    free(c);
}

/* A manifest naming stream o as every one of its streams. */
static void commit(struct fixture *f, uint64_t seq, const struct stream_ref *o)
{
    struct manifest m = {0};
    m.task = "t";
    m.seq = seq;
    m.mode = "cow";
    m.memory_mib = 16;
    m.vcpus = 1;
    m.machine = "pc";
    m.append = "x";
    m.base_format = "raw";
    m.kernel = m.initrd = m.base = m.memory = *o;
    struct stream_ref delta = *o; /* a checkpoint always seals a delta */
    m.deltas = &delta;
    m.n_deltas = 1;
    assert_int_equal(catalog_commit(f->s, &m, NULL, 0), 0);
}

static void test_retention_and_gc(void **state)
{
    struct fixture *f = *state;
    char *a = make_file(f, "a", 2), *b = make_file(f, "b", 3);
    struct stream_ref oa, ob;
    struct gc_result g;
    int dropped = 0;

    assert_int_equal(repo_put_file(f->r, a, 0, &oa, NULL, NULL, NULL), 0);
    assert_int_equal(repo_put_file(f->r, b, 0, &ob, NULL, NULL, NULL), 0);
    int all = count_chunks(f);
    commit(f, 1, &oa);
    commit(f, 2, &ob);
    /* Everything is referenced: nothing goes. */
    assert_int_equal(gc_run(f->r, 0, &g), 0);
    assert_int_equal(g.chunks_deleted, 0);
    assert_int_equal(g.manifests, 2);
    /* Keep the newest: checkpoint 1 goes; young garbage survives a grace period... */
    assert_int_equal(gc_retain(f->s, "t", 1, &dropped), 0);
    assert_int_equal(dropped, 1);
    assert_int_equal(gc_run(f->r, 3600, &g), 0);
    assert_int_equal(g.chunks_deleted, 0);
    assert_true(g.kept_young > 0);
    /* ...and goes without one; what checkpoint 2 needs stays and restores. */
    assert_int_equal(gc_run(f->r, 0, &g), 0);
    assert_true(g.chunks_deleted > 0);
    assert_int_equal(g.indexes_deleted, 1);
    assert_true(count_chunks(f) < all);
    assert_int_equal(repo_verify_stream(f->r, &ob, "b"), 0);
    assert_int_equal(repo_verify_stream(f->r, &oa, "a"), VK_ENOTFOUND);
    /* An unreadable manifest stops GC before it deletes anything. */
    char *mpath = util_fmt("%s/store/tasks/t/manifests/0000000002.json", f->root);
    FILE *fp = fopen(mpath, "w");
    fputs("{broken", fp);
    fclose(fp);
    assert_int_equal(gc_run(f->r, 0, &g), VK_ECORRUPT);
    assert_non_null(strstr(err_msg(), "nothing deleted"));
    assert_int_equal(g.chunks_deleted, 0);
    free(mpath);
    free(oa.name);
    free(ob.name);
    free(a);
    free(b);
}

/* A file of n random 128 KiB segments; segment k is the same in every file. */
static char *make_segs(struct fixture *f, const char *name, const int *segs, int n)
{
    char *path = util_fmt("%s/%s", f->root, name);
    FILE *fp = fopen(path, "wb");
    char *mib = malloc(128 << 10);
    for (int k = 0; k < n; k++) {
        uint64_t x = 777 + (uint64_t)segs[k];
        for (int i = 0; i < (128 << 10); i++) {
            x = x * 6364136223846793005ull + 1;
            mib[i] = (char)(x >> 40);
        }
        fwrite(mib, 1, 128 << 10, fp);
    }
    fclose(fp);
    free(mib);
    return path;
}

/* A pack mostly garbage is rewritten with its live chunks, which still restore. */
static void test_gc_repacks(void **state)
{
    struct fixture *f = *state;
    /* x fills 512 KiB packs with 4 segments each; y shares one in four. */
    static const int xs[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, ys[] = {1, 5, 9};
    char *x = make_segs(f, "x", xs, 12), *y = make_segs(f, "y", ys, 3);
    struct stream_ref ox, oy;
    struct repo_stats st = {0};
    struct gc_result g;

    assert_int_equal(repo_put_file(f->r, x, 0, &ox, NULL, NULL, NULL), 0);
    assert_int_equal(repo_put_file(f->r, y, 0, &oy, &st, NULL, NULL), 0);
    assert_true(st.dedup_chunks > st.new_chunks); /* y's chunks are x's, but near the joins */
    commit(f, 1, &oy);
    int before = count_chunks(f);
    assert_int_equal(gc_run(f->r, 0, &g), 0);
    assert_true(g.packs_rewritten >= 1);
    assert_true(g.chunks_deleted > 0);
    assert_int_equal(g.indexes_deleted, 1); /* x's */
    assert_true(count_chunks(f) < before);
    assert_int_equal(repo_verify_stream(f->r, &oy, "y"), 0);
    /* A second GC finds nothing to do. */
    assert_int_equal(gc_run(f->r, 0, &g), 0);
    assert_int_equal(g.chunks_deleted, 0);
    assert_int_equal(g.packs_deleted, 0);
    free(ox.name);
    free(oy.name);
    free(x);
    free(y);
}

/* Issue 29, finding 3: a pack index that says its pack holds a TiB must not
 * make staging allocate one (it did: malloc of the index's size). */
static void test_stage_huge_pack(void **state)
{
    struct fixture *f = *state;
    char *in = make_file(f, "in", 8), uri[128];
    struct store *cache = NULL;
    struct stream_ref o;
    json_t *packs = json_array();
    uint64_t copied = 0;

    snprintf(uri, sizeof(uri), "file://%s/cache", f->root);
    assert_int_equal(store_open(uri, &cache), 0);
    assert_int_equal(repo_put_file(f->r, in, 0, &o, NULL, NULL, NULL), 0);
    assert_int_equal(store_sync(f->s), 0);
    char *cmd = util_fmt("cd %s/store/packidx && for i in *; do jq -c "
                         "'.records[0][1] = 1099511000000' $i > ../$i.new && mv ../$i.new $i; done",
                         f->root);
    assert_int_equal(system(cmd), 0);
    /* a node that loads the indexes now (as a successor's pre-staging does) */
    struct repo *r2 = NULL;
    struct repo_cfg cfg = {.chunk_avg = 16384, .workers = 2, .mem_budget = 1 << 20,
                           .retries = 2, .retry_base_ms = 1, .forced_codec = CODEC_AUTO};
    assert_int_equal(repo_open(&r2, f->s, &cfg), 0);
    repo_set_cache(r2, cache);
    assert_int_equal(repo_stage_stream(r2, &o, packs, &copied), VK_ECORRUPT);
    assert_non_null(strstr(err_msg(), "more than a pack can"));
    assert_int_equal(copied, 0);
    repo_set_cache(r2, NULL);
    repo_free(r2);
    store_free(cache);
    json_decref(packs);
    free(o.name);
    free(in);
    free(cmd);
}

/* Issue 29, finding 1: GC's rewrite copied live records without checking
 * them, so a record that is not its chunk (a host file's bytes, through a
 * symlink, or a damaged pack) became a "live" copy and the original pack was
 * deleted. Now each is checked, and a pack with a bad one is left alone. */
static void test_gc_repack_checks_records(void **state)
{
    struct fixture *f = *state;
    static const int xs[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, ys[] = {1, 5, 9};
    char *x = make_segs(f, "x", xs, 12), *y = make_segs(f, "y", ys, 3);
    struct stream_ref ox, oy;
    struct gc_result g;

    assert_int_equal(repo_put_file(f->r, x, 0, &ox, NULL, NULL, NULL), 0);
    assert_int_equal(repo_put_file(f->r, y, 0, &oy, NULL, NULL, NULL), 0);
    commit(f, 1, &oy);
    assert_int_equal(store_sync(f->s), 0);
    /* every record's payload overwritten, headers kept */
    char *cmd = util_fmt("cd %s/store/packidx && for i in *; do p=../packs/$(echo $i | cut -c1-2)/$i; "
                         "for o in $(jq -r '.records[][1]' $i); do head -c 64 /dev/urandom | "
                         "dd of=$p bs=1 seek=$((o + 12)) conv=notrunc 2>/dev/null; done; done",
                         f->root);
    assert_int_equal(system(cmd), 0);
    int before = count_chunks(f);
    assert_int_equal(gc_run(f->r, 0, &g), 0);
    assert_int_equal(g.packs_rewritten, 0);
    assert_int_equal(count_chunks(f), before - (int)g.chunks_deleted);
    free(ox.name);
    free(oy.name);
    free(x);
    free(y);
    free(cmd);
}

/* Issue 29, finding 8: a well-formed pack index, named to sort first, that
 * names a stream's chunks at places of a pack that does not hold them. Its
 * copies are the ones the map keeps, so GC took the real packs for garbage
 * and deleted them: the checkpoint was lost. Now GC checks the shadowing
 * copy first, keeps the real ones, and the stream verifies once the forged
 * index is gone. */
static void test_gc_shadowing_index(void **state)
{
    struct fixture *f = *state;
    char *in = make_file(f, "in", 9);
    struct stream_ref o;
    struct gc_result g;
    const char *fake = "00000000000000000000000000000000";
    assert_int_equal(repo_put_file(f->r, in, 0, &o, NULL, NULL, NULL), 0);
    commit(f, 1, &o);
    assert_int_equal(store_sync(f->s), 0);
    char *cmd = util_fmt(
        "cd %s/store && mkdir -p packs/00 && jq -s -c 'reduce ([.[].records[]][]) as $x "
        "({off: 0, out: []}; .out += [[$x[0], .off, $x[2], $x[3]]] | .off += $x[2]) "
        "| {format: 1, records: .out}' packidx/* > ../fake.idx && "
        "head -c $(jq '[.records[][2]] | add' ../fake.idx) /dev/urandom > packs/00/%s && "
        "mv ../fake.idx packidx/%s",
        f->root, fake, fake);
    assert_int_equal(system(cmd), 0);
    struct repo *r2 = NULL; /* a node that loads the indexes now */
    struct repo_cfg cfg = {.chunk_avg = 16384, .workers = 2, .mem_budget = 1 << 20,
                           .retries = 2, .retry_base_ms = 1, .forced_codec = CODEC_AUTO};
    assert_int_equal(repo_open(&r2, f->s, &cfg), 0);
    assert_int_equal(gc_run(r2, 0, &g), 0);
    repo_free(r2);
    char *rm = util_fmt("rm %s/store/packidx/%s %s/store/packs/00/%s", f->root, fake, f->root,
                        fake);
    assert_int_equal(system(rm), 0);
    assert_int_equal(repo_open(&r2, f->s, &cfg), 0);
    assert_int_equal(repo_verify_stream(r2, &o, "in"), 0); /* nothing of it was deleted */
    repo_free(r2);
    free(o.name);
    free(in);
    free(cmd);
    free(rm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_roundtrip_dedup_zero, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damage_named, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verify_reads_each_chunk_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restore_reads_what_it_needs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_read_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_atomic_write_two_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forged_index, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_pack_index, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention_and_gc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gc_repacks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stage_huge_pack, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gc_repack_checks_records, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gc_shadowing_index, setup, teardown),
    };
    return cmocka_run_group_tests_name("repo", tests, NULL, NULL);
}
