/* repo: the repository vmckpt keeps on a store — content-addressed chunks
 * and stream indexes.
 *
 * A stream (a memory image, a delta, a base image, a kernel) is cut into
 * content-defined chunks, named by the SHA-256 of their plain content. Each
 * chunk is stored once, compressed by the codec the policy picks, as a
 * record of a pack (pack.h: a few MiB of new chunks per object); all-zero
 * chunks are not stored. The stream's index, indexes/<sha256 of the stream>,
 * lists its chunks in order. A manifest names streams by their index, so a
 * base image used by many tasks, or a chunk shared by two memory images, is
 * stored once for the whole store. Every chunk is checked against its name
 * when read, and every stream against its hash. */
#ifndef VMCKPT_REPO_H
#define VMCKPT_REPO_H

#include <pthread.h>
#include <stdint.h>

#include "chunk.h"
#include "codec.h"
#include "pack.h"
#include "store.h"
#include "stream.h"

/* [data] storage_cost's default: 30 s of CPU are worth a GB not stored, per
 * copy (zstd3 costs about 3 s per GB of input here and saves half of it or
 * more on memory images; a core-second costs far less than a GB kept). */
#define REPO_STORAGE_COST_DEFAULT 30

struct repo_cfg {
    size_t chunk_avg;     /* average chunk size, bytes */
    int workers;          /* upload/download threads per stream */
    size_t mem_budget;    /* bytes of chunk data in flight per stream, at most */
    int retries;          /* tries of a failed store operation before giving up */
    int retry_base_ms;    /* first back-off; doubles each try */
    int forced_codec;     /* CODEC_AUTO or a codec */
    int storage_cost;     /* CPU seconds worth one GB stored, per copy the store keeps */
    int no_dedup;         /* write every chunk even if stored (the paper's method) */
    size_t pack_size;     /* bytes of new chunks per pack object; 0: 8 MiB */
};

/* A repository on one store; private to repo.c (callers use the functions
 * below). */
struct repo;

/* What storing a stream did (added up over the streams of a checkpoint). */
struct repo_stats {
    uint64_t raw_bytes, new_bytes;   /* plain bytes seen; bytes written to the store */
    uint64_t chunks, new_chunks, zero_chunks, dedup_chunks;
    uint64_t codec_chunks[CODEC_COUNT];
    uint64_t codec_raw[CODEC_COUNT], codec_stored[CODEC_COUNT];
    uint64_t retries;
};

/* *out: repo_free(). The store must outlive the repo. */
int repo_open(struct repo **out, struct store *s, const struct repo_cfg *cfg);
void repo_free(struct repo *r);

typedef void (*repo_progress_fn)(void *arg, uint64_t raw_done);

/* Stores a local file as a stream; fills out (out->name is the index name,
 * the caller's). With dedup_whole, the file is hashed first and nothing is
 * done if the store has its index already (kernels, initrds, bases). */
int repo_put_file(struct repo *r, const char *path, int dedup_whole, struct stream_ref *out,
                  struct repo_stats *stats, repo_progress_fn progress, void *arg);
/* Writes stream o to fd (a file or a pipe), fetching chunks in parallel and
 * checking each chunk and the whole stream. VK_ECORRUPT / VK_ENOTFOUND name
 * the damaged or missing object and the stream (`what`). */
int repo_get_stream(struct repo *r, const struct stream_ref *o, int fd, const char *what);
/* repo_get_stream into path (via path.part, renamed when complete). */
int repo_get_file(struct repo *r, const struct stream_ref *o, const char *path, const char *what);
/* A local store holding copies of packs (pre-staging for a take-over), read
 * before the store; NULL: none. Not owned; set before downloads start. A
 * copy that is missing, short or damaged is passed over for the store's. */
void repo_set_cache(struct repo *r, struct store *cache);
/* Bytes downloads have read so far from the store and from the cache. */
void repo_read_counts(struct repo *r, uint64_t *from_store, uint64_t *from_cache);
/* Upload buffers (read blocks, packs, compression output) allocated fresh
 * since repo_open. An upload takes the buffers earlier ones kept (up to the
 * memory budget's worth of each kind), so this stops growing once uploads
 * are alike. */
size_t repo_buffers_made(struct repo *r);
/* Copies the packs stream o needs into the cache, those not there yet;
 * appends their names to packs (a JSON array) and adds the bytes copied to
 * *copied. */
int repo_stage_stream(struct repo *r, const struct stream_ref *o, json_t *packs, uint64_t *copied);
/* The bytes a restore of stream o must read at least: its stored records,
 * each once. */
int repo_stream_stored(struct repo *r, const struct stream_ref *o, uint64_t *bytes);
/* Reads and checks every chunk of stream o without writing it anywhere. */
int repo_verify_stream(struct repo *r, const struct stream_ref *o, const char *what);
/* The chunks one verification has read back intact: a later stream of the
 * same verification that names one does not read it again (a chunk's name
 * is its content's hash, and the stream's chunk list is checked against
 * the stream's hash whole). One thread at a time. */
struct repo_seen;
struct repo_seen *repo_seen_new(void); /* NULL: out of memory */
void repo_seen_free(struct repo_seen *s);
/* repo_verify_stream, skipping the chunks in seen (NULL: none), and adding
 * the chunks it read to seen when all were intact. */
int repo_verify_stream_seen(struct repo *r, const struct stream_ref *o, const char *what,
                            struct repo_seen *seen);

/* Decodes and checks index text (len bytes) as the index of stream o, as a
 * read does: 0 or VK_ECORRUPT naming what is wrong. */
int repo_index_check(struct repo *r, const struct stream_ref *o, const char *text, size_t len);
/* Calls fn with the hash of every stored (non-zero) chunk of stream o. */
int repo_stream_chunks(struct repo *r, const struct stream_ref *o,
                       int (*fn)(void *arg, const char *chunk_sha), void *arg);
/* Writes a pack (buf, len bytes, records listed in idx) and its index, with
 * retries, and adds it to the map; *retries (may be NULL) counts failed tries. */
int repo_store_pack(struct repo *r, const uint8_t *buf, size_t len, const struct pack_idx *idx,
                    uint64_t *retries);
/* Holds off garbage collection on this node (gc_run waits) from the first
 * stream of a checkpoint to its commit: GC must not delete what an upload
 * stored but no manifest names yet. Pairs with repo_release(); may nest
 * with the hold each stream takes itself. */
void repo_hold(struct repo *r);
void repo_release(struct repo *r);
/* Garbage collection's side of the hold: waits until no upload on this node
 * holds the repository (saying so in the log), and keeps new ones out until
 * repo_gc_end(). */
void repo_gc_begin(struct repo *r);
void repo_gc_end(struct repo *r);
/* The store the repository is on (not owned). */
struct store *repo_store(const struct repo *r);
/* Reloads the map of stored chunks from every pack index in the store. */
int repo_refresh(struct repo *r);
/* Where readers find chunk sha: its pack's object name (80 bytes) and the
 * record's offset there; VK_ENOTFOUND when no pack holds it. */
int repo_chunk_where(struct repo *r, const char *sha, char pack_object[80], uint64_t *off);
/* Reads the copy of chunk sha that readers use and checks it against its
 * name: 0, VK_ECORRUPT (with a message), or VK_ENOTFOUND. */
int repo_chunk_check(struct repo *r, const char *sha);
/* The codec policy's state and estimates as JSON (new reference). */
json_t *repo_policy_json(struct repo *r);
/* Adds b into a. */
void repo_stats_add(struct repo_stats *a, const struct repo_stats *b);
/* The stats as JSON (new reference). */
json_t *repo_stats_json(const struct repo_stats *s);

#endif
