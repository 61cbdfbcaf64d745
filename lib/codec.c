#include "codec.h"

#include "err.h"

#include <lz4.h>
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
        size_t r = ZSTD_compress(dst, cap, src, n, codec_zstd_level(codec));
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
        size_t r = ZSTD_decompress(dst, raw_n, src, n);
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
#define CODEC_PROBE 16   /* one decision in this many probes another codec */

void codec_policy_init(struct codec_policy *p, int forced)
{
    /* Priors, replaced by measurements within the first chunks: typical
     * speeds on one core and ratios of mixed data. */
    static const double speed0[CODEC_COUNT] = {4e9, 600e6, 400e6, 250e6, 60e6};
    static const double ratio0[CODEC_COUNT] = {1.0, 0.6, 0.5, 0.45, 0.4};
    memset(p, 0, sizeof(*p));
    pthread_mutex_init(&p->lock, NULL);
    p->forced = forced;
    memcpy(p->speed, speed0, sizeof(speed0));
    memcpy(p->ratio, ratio0, sizeof(ratio0));
    p->upload_bps = 200e6;
}

void codec_policy_destroy(struct codec_policy *p) { pthread_mutex_destroy(&p->lock); }

static double codec_cost_locked(struct codec_policy *p, int c)
{
    return 1.0 / p->speed[c] + p->ratio[c] / p->upload_bps;
}

double codec_policy_cost(struct codec_policy *p, int c)
{
    pthread_mutex_lock(&p->lock);
    double v = codec_cost_locked(p, c);
    pthread_mutex_unlock(&p->lock);
    return v;
}

int codec_policy_choose(struct codec_policy *p)
{
    int best = CODEC_NONE;
    if (p->forced != CODEC_AUTO)
        return p->forced;
    pthread_mutex_lock(&p->lock);
    uint64_t d = p->decisions++;
    for (int c = 1; c < CODEC_COUNT; c++)
        if (codec_cost_locked(p, c) < codec_cost_locked(p, best))
            best = c;
    /* Probe: keep every codec's estimates fresh, skipping the slowest
     * (zstd9) unless it is already close to the best. */
    if (d % CODEC_PROBE == CODEC_PROBE - 1) {
        int c = (int)((d / CODEC_PROBE) % CODEC_COUNT);
        if (c != CODEC_ZSTD9 || codec_cost_locked(p, c) < 2 * codec_cost_locked(p, best))
            best = c;
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
    codec_ewma(&p->ratio[codec], (double)stored / (double)raw);
    pthread_mutex_unlock(&p->lock);
}

void codec_policy_note_upload(struct codec_policy *p, size_t bytes, double seconds)
{
    if (seconds <= 0 || bytes < 4096)
        return;
    pthread_mutex_lock(&p->lock);
    codec_ewma(&p->upload_bps, (double)bytes / seconds);
    pthread_mutex_unlock(&p->lock);
}

json_t *codec_policy_json(struct codec_policy *p)
{
    json_t *codecs = json_object();
    pthread_mutex_lock(&p->lock);
    for (int c = 0; c < CODEC_COUNT; c++)
        json_object_set_new(codecs, codec_names[c],
                            json_pack("{s:f, s:f, s:f}", "speed_MBps", p->speed[c] / 1e6, "ratio",
                                      p->ratio[c], "ns_per_byte", codec_cost_locked(p, c) * 1e9));
    json_t *j = json_pack("{s:s, s:f, s:o}", "forced", codec_name(p->forced), "upload_MBps",
                          p->upload_bps / 1e6, "codecs", codecs);
    pthread_mutex_unlock(&p->lock);
    return j;
}
