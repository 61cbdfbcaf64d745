/* store_bench: drives the repository directly, for the data-path benchmarks.
 *   store_bench mkfile PATH MIB FILL_PCT random|text [SEED]   makes a test "delta":
 *       FILL_PCT % of it data (random: incompressible; text: compressible), the rest zeros
 *   store_bench put STORE_URI PATH CODEC [CHUNK_KIB]   stores PATH as one stream and
 *       prints a JSON line: bytes, seconds, MB/s, new bytes, chunks by codec
 *   store_bench upload STORE_URI PATH   the upload stage alone: PATH's bytes written as
 *       8 MiB objects (the size of a pack) by 2 threads, as the upload workers write packs,
 *       then synced; prints bytes, seconds, MB/s
 *   store_bench putobj STORE_URI NAME MIB   writes one object of MIB MiB (store tests)
 *   store_bench stat STORE_URI NAME          prints its size, or fails
 *   store_bench roundtrip STORE_URI PATH OUT|-   stores PATH, reads it back (times both)
 *   store_bench putset STORE_URI FILE...      stores a checkpoint's files; prints their streams
 *   store_bench getset STORE_URI SET.json [OUTDIR]   fetches and checks them (a restore's
 *       reads); with OUTDIR, writes stream n to OUTDIR/n as a restore writes a blob
 *   BENCH_CODEC=none|lz4|zstd3|zstd9 forces a codec for put and putset */
#include "codec.h"
#include "err.h"
#include "repo.h"
#include "store.h"
#include "util.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

static int mkfile(const char *path, long mib, long fill, const char *kind, uint64_t seed)
{
    FILE *f = fopen(path, "wb");
    static const char words[] = "checkpoint memory delta chunk store restore qemu guest task ";
    uint64_t x = 88172645463325252ull + seed * 0x9e3779b97f4a7c15ull, total = (uint64_t)mib << 20, data = total * (uint64_t)fill / 100;
    char buf[65536];
    if (!f)
        return 1;
    for (uint64_t off = 0; off < total; off += sizeof(buf)) {
        for (size_t i = 0; i < sizeof(buf); i++) {
            if (off + i >= data) {
                buf[i] = 0;
            } else if (!strcmp(kind, "text")) {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                buf[i] = (x & 7) ? words[(off + i) % (sizeof(words) - 1)] : (char)('a' + (x >> 8) % 26);
            } else {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                buf[i] = (char)(x >> 24);
            }
        }
        if (fwrite(buf, 1, sizeof(buf), f) != sizeof(buf))
            return 1;
    }
    return fclose(f) != 0;
}

static int put(const char *uri, const char *path, const char *codec, long chunk_kib)
{
    struct store *s = NULL;
    struct repo *r = NULL;
    struct repo_cfg cfg = {.chunk_avg = (size_t)chunk_kib * 1024,
                           .workers = getenv("BENCH_WORKERS") ? atoi(getenv("BENCH_WORKERS")) : 0,
                           .mem_budget = 64 << 20, .retries = 5, .retry_base_ms = 100,
                           .forced_codec = codec_by_name(codec),
                           /* the paper's policy (time alone) unless asked */
                           .storage_cost = getenv("BENCH_STORAGE_COST")
                                               ? atoi(getenv("BENCH_STORAGE_COST")) : 0};
    struct repo_stats st = {0};
    struct stream_ref o;
    int rc = store_open(uri, &s);
    if (rc == 0)
        rc = repo_open(&r, s, &cfg);
    int64_t t0 = util_now_us();
    if (rc == 0)
        rc = repo_put_file(r, path, 0, &o, &st, NULL, NULL);
    int64_t t1 = util_now_us();
    if (rc == 0)
        rc = store_sync(s); /* durable, as a checkpoint needs before its manifest */
    double sync_secs = (double)(util_now_us() - t1) / 1e6;
    double secs = (double)(util_now_us() - t0) / 1e6;
    if (rc < 0) {
        fprintf(stderr, "store_bench: %s\n", err_msg());
        return 1;
    }
    json_t *j = json_pack("{s:I, s:f, s:f, s:f, s:o, s:{s:s, s:s, s:I}}", "bytes",
                          (json_int_t)o.size, "seconds", secs, "sync_seconds", sync_secs, "MBps",
                          (double)o.size / secs / 1e6, "stored", repo_stats_json(&st), "stream",
                          "name", o.name, "sha256", o.sha256, "size", (json_int_t)o.size);
    char *text = json_dumps(j, JSON_COMPACT);
    puts(text);
    free(text);
    json_decref(j);
    free(o.name);
    repo_free(r);
    store_free(s);
    return 0;
}

/* upload: threads take the next 8 MiB of the file, read it into their own
 * page-aligned buffer (as a pack is built in one) and write it as an object. */
struct upload {
    struct store *s;
    int fd;
    uint64_t size;
    atomic_uint_fast64_t next;
    atomic_int rc;
};

#define UPLOAD_OBJ (8u << 20)

static void *upload_thread(void *arg)
{
    struct upload *u = arg;
    uint8_t *buf = NULL;
    if (posix_memalign((void **)&buf, 4096, UPLOAD_OBJ) != 0) {
        atomic_store(&u->rc, VK_ENOMEM);
        return NULL;
    }
    for (;;) {
        uint64_t off = atomic_fetch_add(&u->next, UPLOAD_OBJ);
        if (off >= u->size || atomic_load(&u->rc) < 0)
            break;
        size_t len = u->size - off < UPLOAD_OBJ ? (size_t)(u->size - off) : UPLOAD_OBJ;
        char name[64];
        struct store_writer *w = NULL;
        int rc = pread(u->fd, buf, len, (off_t)off) == (ssize_t)len ? 0 : VK_EIO;
        snprintf(name, sizeof(name), "upload/%08llu", (unsigned long long)(off / UPLOAD_OBJ));
        if (rc == 0)
            rc = store_put_begin(u->s, name, &w);
        if (rc == 0) {
            w->lazy = 1; /* as packs: synced once, before the manifest */
            rc = store_put_write(w, buf, len);
            rc = rc == 0 ? store_put_commit(w) : (store_put_abort(w), rc);
        }
        if (rc < 0)
            atomic_store(&u->rc, rc);
    }
    free(buf);
    return NULL;
}

static int upload(const char *uri, const char *path)
{
    struct upload u = {.fd = open(path, O_RDONLY)};
    pthread_t th[2];
    struct stat st;
    if (u.fd < 0 || fstat(u.fd, &st) < 0 || store_open(uri, &u.s) < 0) {
        fprintf(stderr, "store_bench: cannot open %s or %s\n", path, uri);
        return 1;
    }
    u.size = (uint64_t)st.st_size;
    int64_t t0 = util_now_us();
    for (int i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, upload_thread, &u);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    int rc = atomic_load(&u.rc) == 0 ? store_sync(u.s) : atomic_load(&u.rc);
    double secs = (double)(util_now_us() - t0) / 1e6;
    close(u.fd);
    store_free(u.s);
    if (rc < 0) {
        fprintf(stderr, "store_bench: %s\n", err_msg());
        return 1;
    }
    printf("{\"bytes\":%llu,\"seconds\":%f,\"MBps\":%f}\n", (unsigned long long)u.size, secs,
           (double)u.size / secs / 1e6);
    return 0;
}

/* Stores PATH, then reads it back (a fresh repo, as another node would) into
 * OUT ("-" for nowhere); prints put and get seconds. */
static int roundtrip(const char *uri, const char *path, const char *out)
{
    struct store *s = NULL;
    struct repo *r = NULL, *r2 = NULL;
    struct repo_cfg cfg = {.chunk_avg = 32768, .workers = 0, .mem_budget = 64 << 20,
                           .retries = 3, .retry_base_ms = 100, .forced_codec = CODEC_AUTO};
    struct stream_ref o = {0};
    int64_t t0, t1, t2;
    int rc = store_open(uri, &s);
    if (rc == 0)
        rc = repo_open(&r, s, &cfg);
    if (rc == 0)
        rc = repo_open(&r2, s, &cfg);
    t0 = util_now_us();
    if (rc == 0)
        rc = repo_put_file(r, path, 0, &o, NULL, NULL, NULL);
    if (rc == 0)
        rc = store_sync(s);
    t1 = util_now_us();
    if (rc == 0 && strcmp(out, "-"))
        rc = repo_get_file(r2, &o, out, "stream");
    else if (rc == 0)
        rc = repo_verify_stream(r2, &o, "stream");
    t2 = util_now_us();
    if (rc < 0)
        fprintf(stderr, "store_bench: %s\n", err_msg());
    else
        printf("{\"bytes\": %llu, \"put_seconds\": %.3f, \"get_seconds\": %.3f}\n",
               (unsigned long long)o.size, (double)(t1 - t0) / 1e6, (double)(t2 - t1) / 1e6);
    free(o.name);
    repo_free(r);
    repo_free(r2);
    store_free(s);
    return rc < 0;
}

/* The agent's defaults; BENCH_CODEC forces a codec (bench/peers.sh). */
static struct repo_cfg bench_cfg(void)
{
    struct repo_cfg cfg = {.chunk_avg = 32768, .workers = 0, .mem_budget = 64 << 20,
                           .retries = 3, .retry_base_ms = 100, .forced_codec = CODEC_AUTO,
                           .storage_cost = REPO_STORAGE_COST_DEFAULT};
    const char *codec = getenv("BENCH_CODEC"), *keep = getenv("BENCH_STORAGE_COST");
    if (keep)
        cfg.storage_cost = atoi(keep);
    if (codec && codec_by_name(codec) >= 0)
        cfg.forced_codec = codec_by_name(codec);
    return cfg;
}

/* A checkpoint's streams: stores each file; prints {"seconds", "bytes",
 * "stored", "streams": [{name, size, sha256}]} for getset. */
static int putset(const char *uri, int n, char **paths)
{
    struct store *s = NULL;
    struct repo *r = NULL;
    struct repo_cfg cfg = bench_cfg();
    struct repo_stats st = {0};
    json_t *streams = json_array();
    uint64_t bytes = 0;
    int rc = store_open(uri, &s);
    if (rc == 0)
        rc = repo_open(&r, s, &cfg);
    int64_t t0 = util_now_us();
    for (int i = 0; rc == 0 && i < n; i++) {
        struct stream_ref o = {0};
        rc = repo_put_file(r, paths[i], 0, &o, &st, NULL, NULL);
        if (rc == 0) {
            json_array_append_new(streams, json_pack("{s:s, s:I, s:s}", "name", o.name, "size",
                                                     (json_int_t)o.size, "sha256", o.sha256));
            bytes += o.size;
        }
        free(o.name);
    }
    if (rc == 0)
        rc = store_sync(s);
    double secs = (double)(util_now_us() - t0) / 1e6;
    if (rc < 0) {
        fprintf(stderr, "store_bench: %s\n", err_msg());
    } else {
        json_t *j = json_pack("{s:f, s:I, s:I, s:O}", "seconds", secs, "bytes", (json_int_t)bytes,
                              "stored", (json_int_t)st.new_bytes, "streams", streams);
        char *text = json_dumps(j, JSON_COMPACT);
        puts(text);
        free(text);
        json_decref(j);
    }
    json_decref(streams);
    repo_free(r);
    store_free(s);
    return rc < 0;
}

/* read_bytes of /proc/self/io: bytes this process made the disks read. */
static uint64_t self_read_bytes(void)
{
    FILE *f = fopen("/proc/self/io", "r");
    char line[128];
    unsigned long long v = 0;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "read_bytes: %llu", &v) == 1)
            break;
    if (f)
        fclose(f);
    return v;
}

/* Restores every stream of a putset answer (SETJSON, a file) and checks it;
 * into OUTDIR/<n> as a restore fetches a blob (synced), or nowhere when
 * outdir is NULL; prints the seconds it took. */
static int getset(const char *uri, const char *setjson, const char *outdir)
{
    struct store *s = NULL;
    struct repo *r = NULL;
    struct repo_cfg cfg = bench_cfg();
    json_t *j = json_load_file(setjson, 0, NULL), *o;
    size_t i;
    int rc = j ? store_open(uri, &s) : err_set(VK_EINVAL, "cannot read %s", setjson);
    if (rc == 0)
        rc = repo_open(&r, s, &cfg);
    /* A resident agent has the map of stored chunks loaded: so does this
     * before it measures. */
    if (rc == 0)
        rc = repo_refresh(r);
    uint64_t need = 0, io0 = self_read_bytes();
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    int64_t t0 = util_now_us();
    json_array_foreach(json_object_get(j, "streams"), i, o)
    {
        struct stream_ref m = {.name = (char *)json_string_value(json_object_get(o, "name")),
                           .size = (uint64_t)json_integer_value(json_object_get(o, "size"))};
        snprintf(m.sha256, sizeof(m.sha256), "%s", json_string_value(json_object_get(o, "sha256")));
        char *out = outdir ? util_fmt("%s/%zu", outdir, i) : NULL;
        if (rc == 0 && out)
            rc = repo_get_file(r, &m, out, m.name);
        else if (rc == 0)
            rc = repo_verify_stream(r, &m, m.name); /* fetch, decompress, check; no disk write */
        free(out);
    }
    double secs = (double)(util_now_us() - t0) / 1e6;
    uint64_t io = self_read_bytes() - io0;
    getrusage(RUSAGE_SELF, &ru1);
    json_array_foreach(json_object_get(j, "streams"), i, o)
    {
        struct stream_ref m = {.name = (char *)json_string_value(json_object_get(o, "name")),
                           .size = (uint64_t)json_integer_value(json_object_get(o, "size"))};
        uint64_t b = 0;
        snprintf(m.sha256, sizeof(m.sha256), "%s", json_string_value(json_object_get(o, "sha256")));
        if (rc == 0 && (rc = repo_stream_stored(r, &m, &b)) == 0)
            need += b;
    }
    if (rc < 0)
        fprintf(stderr, "store_bench: %s\n", err_msg());
    else /* within the restore: what a resident agent pays (no start-up) */
        printf("{\"seconds\": %.3f, \"read_bytes\": %llu, \"minflt\": %ld, \"needed_bytes\": %llu}\n",
               secs, (unsigned long long)io, ru1.ru_minflt - ru0.ru_minflt,
               (unsigned long long)need);
    json_decref(j);
    repo_free(r);
    store_free(s);
    return rc < 0;
}

static int putobj(const char *uri, const char *name, long mib)
{
    struct store *s = NULL;
    struct store_writer *w = NULL;
    char *buf = malloc(1 << 20);
    int rc = buf ? store_open(uri, &s) : VK_ENOMEM;
    if (rc == 0)
        rc = store_put_begin(s, name, &w);
    const char *pause = getenv("VMCKPT_TEST_PUT_PAUSE_MS"); /* tests: a slow writer to cut */
    for (long i = 0; rc == 0 && i < mib; i++) {
        memset(buf, (int)i, 1 << 20);
        rc = store_put_write(w, buf, 1 << 20);
        if (pause) { /* and says how far it got, so a test can cut it mid-way */
            fprintf(stderr, "putobj: %ld MiB written\n", i + 1);
            usleep((useconds_t)atoi(pause) * 1000);
        }
    }
    if (rc == 0)
        rc = store_put_commit(w);
    else
        store_put_abort(w);
    if (rc < 0)
        fprintf(stderr, "store_bench: %s\n", err_msg());
    store_free(s);
    free(buf);
    return rc < 0;
}

static int statobj(const char *uri, const char *name)
{
    struct store *s = NULL;
    uint64_t size = 0;
    int rc = store_open(uri, &s);
    if (rc == 0)
        rc = store_stat(s, name, &size);
    if (rc < 0)
        fprintf(stderr, "store_bench: %s\n", err_msg());
    else
        printf("%llu\n", (unsigned long long)size);
    store_free(s);
    return rc < 0;
}

/* reseal: recomputes the checksum of a manifest edited by hand, as a store
 * writer could (the checksum catches damage, not forgery). The tests use it
 * to play a hostile store. */
static int reseal(const char *path)
{
    json_error_t jerr;
    json_t *j = json_load_file(path, 0, &jerr);
    char *canon, sha[UTIL_SHA256_HEX];
    if (!j) {
        fprintf(stderr, "store_bench: %s: %s\n", path, jerr.text);
        return 1;
    }
    json_object_del(j, "sha256");
    canon = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    util_sha256_buf(canon, strlen(canon), sha);
    free(canon);
    json_object_set_new(j, "sha256", json_string(sha));
    int rc = json_dump_file(j, path, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(j);
    return rc != 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "reseal"))
        return reseal(argv[2]);
    if (argc == 5 && !strcmp(argv[1], "putobj"))
        return putobj(argv[2], argv[3], atol(argv[4]));
    if (argc >= 4 && !strcmp(argv[1], "putset"))
        return putset(argv[2], argc - 3, argv + 3);
    if ((argc == 4 || argc == 5) && !strcmp(argv[1], "getset"))
        return getset(argv[2], argv[3], argc == 5 ? argv[4] : NULL);
    if (argc == 5 && !strcmp(argv[1], "roundtrip"))
        return roundtrip(argv[2], argv[3], argv[4]);
    if (argc == 4 && !strcmp(argv[1], "stat"))
        return statobj(argv[2], argv[3]);
    if ((argc == 6 || argc == 7) && !strcmp(argv[1], "mkfile"))
        return mkfile(argv[2], atol(argv[3]), atol(argv[4]), argv[5],
                      argc == 7 ? (uint64_t)atoll(argv[6]) : 0);
    if (argc == 4 && !strcmp(argv[1], "upload"))
        return upload(argv[2], argv[3]);
    if ((argc == 5 || argc == 6) && !strcmp(argv[1], "put"))
        return put(argv[2], argv[3], argv[4], argc == 6 ? atol(argv[5]) : 32);
    fprintf(stderr, "usage: store_bench mkfile PATH MIB FILL_PCT random|text [SEED]\n"
                    "       store_bench reseal MANIFEST_FILE\n"
                    "       store_bench put STORE_URI PATH CODEC [CHUNK_KIB]\n"
                    "       store_bench upload STORE_URI PATH\n"
                    "       store_bench putobj STORE_URI NAME MIB\n"
                    "       store_bench stat STORE_URI NAME\n"
                    "       store_bench roundtrip STORE_URI PATH OUT|-\n"
                    "       store_bench putset STORE_URI FILE...\n"
                    "       store_bench getset STORE_URI SET.json [OUTDIR]\n");
    return 2;
}
