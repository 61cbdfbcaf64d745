/* codec: chunk compression (none, lz4, zstd levels) and the adaptive choice
 * among them.
 *
 * The paper compresses only when t_compress + t_upload(compressed) <
 * t_upload(raw). codec_policy generalises that to several codecs: for each
 * codec it keeps running estimates of compression speed and achieved ratio on
 * recent chunks of this data, and of the store's upload throughput, and picks
 * the codec with the smallest estimated cost per byte: compression time, plus
 * the stored bytes times (upload time + the cost of keeping a byte, counted
 * in CPU time, once per copy the store keeps). A small share of chunks is
 * spent probing the other codecs so the estimates follow the data. */
#ifndef VMCKPT_CODEC_H
#define VMCKPT_CODEC_H

#include <jansson.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

enum codec_id {
    CODEC_NONE = 0,
    CODEC_LZ4 = 1,
    CODEC_ZSTD1 = 2,
    CODEC_ZSTD3 = 3,
    CODEC_ZSTD9 = 4,
    CODEC_COUNT,
    CODEC_ZERO = 255, /* an all-zero chunk: nothing is stored */
    CODEC_AUTO = -1,  /* setting: let the policy choose */
};

const char *codec_name(int codec);
/* Codec id of a name ("none", "lz4", "zstd1", "zstd3", "zstd9", "zero", and
 * "auto" for the setting); -2 if unknown. */
int codec_by_name(const char *name);
/* Worst-case output size for n input bytes. */
size_t codec_bound(int codec, size_t n);
/* Compresses src into dst (cap bytes). With CODEC_NONE it copies. */
int codec_compress(int codec, const void *src, size_t n, void *dst, size_t cap, size_t *out_n);
/* Decompresses exactly raw_n bytes; VK_ECORRUPT if the data does not decode to that. */
int codec_decompress(int codec, const void *src, size_t n, void *dst, size_t raw_n);

/* Running estimates; shared by the upload workers of one agent.
 *
 * Upload time is modelled as a + b * bytes (a per-object latency, b the
 * inverse bandwidth), fitted by least squares over recent uploads with
 * exponential forgetting: only b depends on the codec, so a store whose cost
 * is mostly latency (small objects, fsync) does not make compression look
 * better than it is. Ratios are compared on the same data: a probe chunk is
 * compressed with the current choice and one other codec. */
struct codec_policy {
    pthread_mutex_t lock;
    int forced;                /* CODEC_AUTO or a codec to always use */
    double speed[CODEC_COUNT]; /* compression, raw bytes per second per worker */
    double ratio[CODEC_COUNT]; /* stored bytes / raw bytes */
    double sw, sx, sy, sxx, sxy; /* decayed sums of the upload fit (x bytes, y seconds) */
    uint64_t decisions, probes, next_probe;
    uint64_t probe_at, probe_every; /* the next probe's decision; the gap to the one after */
    int last_best;
    uint64_t far_skips[CODEC_COUNT];
    double keep_spb; /* seconds of CPU worth one stored byte, per copy */
    int copies;      /* copies the store keeps of each byte */
};

void codec_policy_init(struct codec_policy *p, int forced);
void codec_policy_destroy(struct codec_policy *p);
/* The cost of keeping bytes: spb seconds of CPU per byte per copy, copies
 * copies (0 and 1 by default: time alone decides). */
void codec_policy_set_storage(struct codec_policy *p, double spb, int copies);
/* The codec for the next chunk. *probe is another codec to try on the same
 * chunk (the cheaper result is kept) so the estimates follow the data, or -1. */
int codec_policy_choose(struct codec_policy *p, int *probe);
/* Seconds per byte of upload bandwidth (the b of a + b * bytes). */
double codec_policy_upload_spb(struct codec_policy *p);
/* What one more stored byte costs, in seconds: its upload, and keeping it
 * (once per copy). */
double codec_policy_byte_cost(struct codec_policy *p);
/* 1 when a chunk looks incompressible (the bytes of a sample are spread like
 * random ones: encrypted, compressed or random data), so that compressing
 * it would only cost time. Cheap: about 2 KiB of it are looked at. */
int codec_looks_random(const void *data, size_t n);
/* What the codec's choice cost: compression time and result for raw bytes. */
void codec_policy_note_compress(struct codec_policy *p, int codec, size_t raw, size_t stored,
                                double seconds);
/* What an upload of `bytes` took. */
void codec_policy_note_upload(struct codec_policy *p, size_t bytes, double seconds);
/* Estimated seconds per raw byte for codec c (compress + upload), for display. */
double codec_policy_cost(struct codec_policy *p, int codec);
/* The estimates as JSON (new reference). */
json_t *codec_policy_json(struct codec_policy *p);

#endif
