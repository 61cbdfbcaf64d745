#include "codec.h"

#include "err.h"

#include <lz4.h>
#include <pthread.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>
#include <zstd.h>

static const char *const codec_names[CODEC_COUNT] = {"none", "lz4", "zstd1", "zstd3", "zstd9"};

const char *codec_name(int codec)
{
    if (codec == CODEC_ZERO)
        return "zero";
    if (codec == CODEC_AUTO)
        return "auto";
    return codec >= 0 && codec < CODEC_COUNT ? codec_names[codec] : "unknown";
}

int codec_by_name(const char *name)
{
    if (!strcmp(name, "zero"))
        return CODEC_ZERO;
    if (!strcmp(name, "auto"))
        return CODEC_AUTO;
    for (int i = 0; i < CODEC_COUNT; i++)
        if (!strcmp(name, codec_names[i]))
            return i;
    return -2;
}

/* zstd contexts, kept from call to call for the whole process: making one
 * per chunk allocates (and faults in) hundreds of KiB each time, and an
 * upload's threads live only as long as one file, so a context kept per
 * thread would be made again for every file. A call takes one from the pool
 * and gives it back; at most CODEC_KEEP of each kind are kept. */
#define CODEC_KEEP 64

struct codec_pool {
    void *kept[CODEC_KEEP];
    int n;
};

static pthread_mutex_t codec_pool_lock = PTHREAD_MUTEX_INITIALIZER;
static struct codec_pool codec_cpool, codec_dpool;

/* A kept context, or NULL: the caller makes one. */
static void *codec_pool_take(struct codec_pool *p)
{
    void *x = NULL;
    pthread_mutex_lock(&codec_pool_lock);
    if (p->n > 0)
        x = p->kept[--p->n];
    pthread_mutex_unlock(&codec_pool_lock);
    return x;
}

/* Keeps x if there is room; returns what the caller must free (x or NULL). */
static void *codec_pool_give(struct codec_pool *p, void *x)
{
    pthread_mutex_lock(&codec_pool_lock);
    if (x && p->n < CODEC_KEEP)
        p->kept[p->n++] = x, x = NULL;
    pthread_mutex_unlock(&codec_pool_lock);
    return x;
}

static int codec_zstd_level(int codec)
{
    return codec == CODEC_ZSTD1 ? 1 : codec == CODEC_ZSTD3 ? 3 : 9;
}

size_t codec_bound(int codec, size_t n)
{
    switch (codec) {
    case CODEC_LZ4: return (size_t)LZ4_compressBound((int)n);
    case CODEC_ZSTD1:
    case CODEC_ZSTD3:
    case CODEC_ZSTD9: return ZSTD_compressBound(n);
    default: return n;
    }
}

int codec_compress(int codec, const void *src, size_t n, void *dst, size_t cap, size_t *out_n)
{
    switch (codec) {
    case CODEC_NONE:
        if (cap < n)
            return err_set(VK_EINVAL, "codec none: buffer too small");
        memcpy(dst, src, n);
        *out_n = n;
        return 0;
    case CODEC_LZ4: {
        int r = LZ4_compress_default(src, dst, (int)n, (int)cap);
        if (r <= 0)
            return err_set(VK_EIO, "lz4 compression failed");
        *out_n = (size_t)r;
        return 0;
    }
    case CODEC_ZSTD1:
    case CODEC_ZSTD3:
    case CODEC_ZSTD9: {
        ZSTD_CCtx *c = codec_pool_take(&codec_cpool);
        if (!c)
            c = ZSTD_createCCtx();
        size_t r = c ? ZSTD_compressCCtx(c, dst, cap, src, n, codec_zstd_level(codec))
                     : ZSTD_compress(dst, cap, src, n, codec_zstd_level(codec));
        ZSTD_freeCCtx(codec_pool_give(&codec_cpool, c));
        if (ZSTD_isError(r))
            return err_set(VK_EIO, "zstd compression failed: %s", ZSTD_getErrorName(r));
        *out_n = r;
        return 0;
    }
    default:
        return err_set(VK_EINVAL, "unknown codec %d", codec);
    }
}

int codec_decompress(int codec, const void *src, size_t n, void *dst, size_t raw_n)
{
    switch (codec) {
    case CODEC_NONE:
        if (n != raw_n)
            return err_set(VK_ECORRUPT, "stored chunk has %zu bytes, expected %zu", n, raw_n);
        memcpy(dst, src, n);
        return 0;
    case CODEC_LZ4:
        if (LZ4_decompress_safe(src, dst, (int)n, (int)raw_n) != (int)raw_n)
            return err_set(VK_ECORRUPT, "lz4 data does not decode to %zu bytes", raw_n);
        return 0;
    case CODEC_ZSTD1:
    case CODEC_ZSTD3:
    case CODEC_ZSTD9: {
        ZSTD_DCtx *d = codec_pool_take(&codec_dpool);
        if (!d)
            d = ZSTD_createDCtx();
        size_t r = d ? ZSTD_decompressDCtx(d, dst, raw_n, src, n)
                     : ZSTD_decompress(dst, raw_n, src, n);
        ZSTD_freeDCtx(codec_pool_give(&codec_dpool, d));
        if (ZSTD_isError(r) || r != raw_n)
            return err_set(VK_ECORRUPT, "zstd data does not decode to %zu bytes%s%s", raw_n,
                           ZSTD_isError(r) ? ": " : "", ZSTD_isError(r) ? ZSTD_getErrorName(r) : "");
        return 0;
    }
    case CODEC_ZERO:
        memset(dst, 0, raw_n);
        return 0;
    default:
        return err_set(VK_ECORRUPT, "unknown codec %d", codec);
    }
}

/* ---- the adaptive choice ---------------------------------------------------- */

#define CODEC_EWMA 0.2   /* weight of the newest sample */
#define CODEC_DECAY 0.98 /* forgetting factor of the upload fit, per sample */
#define CODEC_PROBE 16   /* one chunk in this many is a probe, at first */
#define CODEC_PROBE_MAX 256 /* ...backing off to this while the estimates hold */
#define CODEC_SURPRISE 0.05 /* a ratio this far from its estimate: probe often again */
#define CODEC_FAR_EVERY 8

void codec_policy_init(struct codec_policy *p, int forced)
{
    /* Priors, replaced by measurements within the first chunks. */
    static const double speed0[CODEC_COUNT] = {4e9, 600e6, 400e6, 250e6, 60e6};
    static const double ratio0[CODEC_COUNT] = {1.0, 0.6, 0.5, 0.45, 0.4};
    memset(p, 0, sizeof(*p));
    pthread_mutex_init(&p->lock, NULL);
    p->forced = forced;
    memcpy(p->speed, speed0, sizeof(speed0));
    memcpy(p->ratio, ratio0, sizeof(ratio0));
    p->probe_every = CODEC_PROBE;
    p->copies = 1;
}

void codec_policy_destroy(struct codec_policy *p) { pthread_mutex_destroy(&p->lock); }

void codec_policy_set_storage(struct codec_policy *p, double spb, int copies)
{
    pthread_mutex_lock(&p->lock);
    p->keep_spb = spb > 0 ? spb : 0;
    p->copies = copies > 0 ? copies : 1;
    pthread_mutex_unlock(&p->lock);
}

static double codec_spb_locked(struct codec_policy *p)
{
    double den = p->sw * p->sxx - p->sx * p->sx;
    double b = den > 0 ? (p->sw * p->sxy - p->sx * p->sy) / den : 0;
    if (b > 0)
        return b;
    /* Sizes too alike to fit a line: charge all the time to bandwidth, or a
     * prior of 200 MB/s before any upload. */
    return p->sx > 0 ? p->sy / p->sx : 1 / 200e6;
}

double codec_policy_byte_cost(struct codec_policy *p)
{
    pthread_mutex_lock(&p->lock);
    double v = codec_spb_locked(p) + p->keep_spb * p->copies;
    pthread_mutex_unlock(&p->lock);
    return v;
}

/* Bits per byte above which a sample is taken for random: 2 KiB of random
 * bytes measure about 7.9 (the estimate is biased low on a small sample);
 * text, code and most memory pages stay well below 7. */
#define CODEC_RANDOM_BITS 7.5

int codec_looks_random(const void *data, size_t n)
{
    const uint8_t *p = data;
    unsigned hist[256] = {0}, total = 0;
    /* 16 bytes every 256 (all of a short chunk): runs catch local
     * structure, the stride the whole chunk. */
    size_t step = n >= 4096 ? n / 128 : 16;
    for (size_t off = 0; off + 16 <= n; off += step) {
        for (size_t i = 0; i < 16; i++)
            hist[p[off + i]]++;
        total += 16;
    }
    if (total < 256)
        return 0;
    double bits = 0;
    for (int b = 0; b < 256; b++)
        if (hist[b]) {
            double q = (double)hist[b] / total;
            bits -= q * log2(q);
        }
    return bits > CODEC_RANDOM_BITS;
}

double codec_policy_upload_spb(struct codec_policy *p)
{
    pthread_mutex_lock(&p->lock);
    double v = codec_spb_locked(p);
    pthread_mutex_unlock(&p->lock);
    return v;
}

static double codec_cost_locked(struct codec_policy *p, int c)
{
    return (c == CODEC_NONE ? 0 : 1.0 / p->speed[c]) +
           p->ratio[c] * (codec_spb_locked(p) + p->keep_spb * p->copies);
}

double codec_policy_cost(struct codec_policy *p, int c)
{
    pthread_mutex_lock(&p->lock);
    double v = codec_cost_locked(p, c);
    pthread_mutex_unlock(&p->lock);
    return v;
}

static void codec_probe_soon(struct codec_policy *p)
{
    p->probe_every = CODEC_PROBE;
    if (p->probe_at > p->decisions + CODEC_PROBE)
        p->probe_at = p->decisions + CODEC_PROBE;
}

int codec_policy_choose(struct codec_policy *p, int *probe)
{
    int best = CODEC_NONE;
    *probe = -1;
    if (p->forced != CODEC_AUTO)
        return p->forced;
    pthread_mutex_lock(&p->lock);
    uint64_t d = p->decisions++;
    for (int c = 1; c < CODEC_COUNT; c++)
        if (codec_cost_locked(p, c) < codec_cost_locked(p, best))
            best = c;
    if (best != p->last_best) { /* the data or the store changed: look closer */
        p->last_best = best;
        codec_probe_soon(p);
    }
    if (d >= p->probe_at) {
        /* One other codec per probe, in turn; one far behind the best (a slow
         * zstd level on incompressible data) only every CODEC_FAR_EVERY-th
         * turn. While probes leave the choice as it is, they come half as
         * often each time: probing stays a small share of the work. */
        int c = (int)(p->next_probe++ % (CODEC_COUNT - 1));
        c = c >= best ? c + 1 : c;
        if (codec_cost_locked(p, c) <= 2 * codec_cost_locked(p, best) ||
            ++p->far_skips[c] % CODEC_FAR_EVERY == 0) {
            *probe = c;
            p->probes++;
        }
        p->probe_at = d + p->probe_every;
        if (p->probe_every < CODEC_PROBE_MAX)
            p->probe_every *= 2;
    }
    pthread_mutex_unlock(&p->lock);
    return best;
}

static void codec_ewma(double *v, double sample)
{
    *v = (1 - CODEC_EWMA) * *v + CODEC_EWMA * sample;
}

void codec_policy_note_compress(struct codec_policy *p, int codec, size_t raw, size_t stored,
                                double seconds)
{
    if (codec < 0 || codec >= CODEC_COUNT || raw == 0)
        return;
    pthread_mutex_lock(&p->lock);
    if (seconds > 0 && codec != CODEC_NONE)
        codec_ewma(&p->speed[codec], (double)raw / seconds);
    double ratio = (double)stored / (double)raw;
    if (fabs(ratio - p->ratio[codec]) > CODEC_SURPRISE)
        codec_probe_soon(p); /* the estimates are off: refresh them before backing off */
    codec_ewma(&p->ratio[codec], ratio);
    pthread_mutex_unlock(&p->lock);
}

void codec_policy_note_upload(struct codec_policy *p, size_t bytes, double seconds)
{
    double x = (double)bytes, y = seconds;
    if (seconds <= 0)
        return;
    pthread_mutex_lock(&p->lock);
    p->sw = p->sw * CODEC_DECAY + 1;
    p->sx = p->sx * CODEC_DECAY + x;
    p->sy = p->sy * CODEC_DECAY + y;
    p->sxx = p->sxx * CODEC_DECAY + x * x;
    p->sxy = p->sxy * CODEC_DECAY + x * y;
    pthread_mutex_unlock(&p->lock);
}

json_t *codec_policy_json(struct codec_policy *p)
{
    json_t *codecs = json_object();
    pthread_mutex_lock(&p->lock);
    double spb = codec_spb_locked(p);
    double lat = p->sw > 0 ? (p->sy - spb * p->sx) / p->sw : 0;
    int best = CODEC_NONE;
    for (int c = 0; c < CODEC_COUNT; c++) {
        json_object_set_new(
            codecs, codec_names[c],
            json_pack("{s:f, s:f, s:f, s:f, s:f, s:f}", "speed_MBps", p->speed[c] / 1e6, "ratio",
                      p->ratio[c], "ns_per_byte", codec_cost_locked(p, c) * 1e9, "compress_ns",
                      c == CODEC_NONE ? 0.0 : 1e9 / p->speed[c], "upload_ns",
                      p->ratio[c] * spb * 1e9, "keep_ns", p->ratio[c] * p->keep_spb * p->copies * 1e9));
        if (codec_cost_locked(p, c) < codec_cost_locked(p, best))
            best = c;
    }
    json_t *j = json_pack("{s:s, s:f, s:f, s:I, s:I, s:o, s:f, s:i, s:s}", "forced",
                          codec_name(p->forced), "upload_MBps", 1 / spb / 1e6,
                          "upload_latency_ms", lat > 0 ? lat * 1e3 : 0.0, "decisions",
                          (json_int_t)p->decisions, "probes", (json_int_t)p->probes, "codecs",
                          codecs, "storage_cost_s_per_GB", p->keep_spb * 1e9, "copies",
                          p->copies, "best", codec_name(best));
    pthread_mutex_unlock(&p->lock);
    return j;
}
