/* pack: chunks stored many to an object.
 *
 * Writing every 32 KiB chunk as its own object costs a create, a rename and
 * a directory entry per chunk on a file system, and a request per chunk on
 * FTP, SFTP or RADOS. So new chunks are appended to packs of a few MiB:
 * packs/XX/<id> holds records (a 12-byte header naming the codec and plain
 * size, then the payload) and packidx/<id>, written after its pack, lists
 * each record as [sha256, offset, record bytes, codec]. A chunk exists in the
 * repository when a pack index names it. Pack ids are random, so two nodes
 * never write the same pack.
 *
 * struct pack_map is the in-memory view of every pack index: chunk hash ->
 * where its record is. It is refreshed from the store's listing, so packs
 * written by other nodes, or rewritten by GC, are found. */
#ifndef VMCKPT_PACK_H
#define VMCKPT_PACK_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "chunk.h"
#include "store.h"
#include "util.h"

#define PACK_HDR 12 /* "VKCH", codec, 3 zero bytes, plain size (u32 LE) */
#define PACK_ID_HEX 33
/* Bounds on what a pack index may say: a record is a header and at most one
 * chunk's bytes (a chunk is stored compressed only when that is smaller). */
#define PACK_REC_MAX (PACK_HDR + (uint64_t)CHUNK_LEN_MAX)
#define PACK_OFF_MAX ((int64_t)1 << 40)

/* Where a chunk's record is. */
struct pack_loc {
    uint32_t pack;   /* index into the map's pack names */
    uint32_t bytes;  /* record length, header included */
    uint64_t off;
    int codec;
};

/* One record of a pack index. */
struct pack_rec {
    char sha[UTIL_SHA256_HEX];
    uint64_t off;
    uint32_t bytes;
    int codec;
};

/* A pack index as loaded (pack_idx_load) or as built while writing. */
struct pack_idx {
    char id[PACK_ID_HEX];
    struct pack_rec *recs;
    size_t n, cap;
    int64_t mtime; /* of the index object, when loaded from a listing */
};

/* ---- map ------------------------------------------------------------------- */

struct pack_map;

/* *out: pack_map_free(). */
int pack_map_new(struct pack_map **out);
void pack_map_free(struct pack_map *m);
/* Loads the pack indexes written since the last refresh; with full, or when a
 * known pack index is gone or changed (GC rewrote or deleted it), reloads
 * everything. A damaged index is logged and skipped (its chunks are missing
 * until it is repaired), and read again when it changes. Thread-safe. */
int pack_map_refresh(struct pack_map *m, struct store *s, int full);
/* VK_ENOTFOUND when no known pack holds the chunk. Thread-safe. */
int pack_map_find(struct pack_map *m, const char *sha, struct pack_loc *out);
/* pack_map_find, and the name and size of the pack, at one instant: a pack's
 * number means another pack once the map is rebuilt (a refresh after GC). */
int pack_map_find_named(struct pack_map *m, const char *sha, struct pack_loc *out,
                        char name[80], uint64_t *pack_size);
/* The object name of pack number loc.pack into out (e.g. "packs/ab/ab12..."). */
void pack_map_pack_name(struct pack_map *m, uint32_t pack, char out[80]);
/* Packs known, numbered 0..count-1, and the size of one (from its index). */
uint32_t pack_map_count(struct pack_map *m);
uint64_t pack_map_pack_size(struct pack_map *m, uint32_t pack);
/* Adds one chunk unless it is there: 1 (and *loc set to the copy known)
 * when it was, 0 when added. Thread-safe. */
int pack_map_put(struct pack_map *m, const char *sha, struct pack_loc *loc);
/* Adds the records of a pack just written. Thread-safe. */
int pack_map_add(struct pack_map *m, const struct pack_idx *idx);

/* ---- packs and their indexes ------------------------------------------------ */

void pack_object_name(const char *id, char out[80]);
void pack_index_name(const char *id, char out[80]);
/* A new random pack id. */
int pack_new_id(char out[PACK_ID_HEX]);
/* Appends a record to idx. */
int pack_idx_add(struct pack_idx *idx, const char *sha, uint64_t off, uint32_t bytes, int codec);
void pack_idx_clear(struct pack_idx *idx);
/* Reads packidx/<id>; checks its form. */
int pack_idx_load(struct store *s, const char *id, struct pack_idx *out);
/* Decodes the text of pack index <id> (len bytes, from store `where`) into
 * out, checking every record: VK_ECORRUPT naming it. */
int pack_idx_parse(const char *text, size_t len, const char *id, const char *where,
                   struct pack_idx *out);
/* Writes packidx/<idx->id> (lazily: synced by the store_sync before a manifest). */
int pack_idx_store(struct store *s, const struct pack_idx *idx);

/* Fills a record header. */
void pack_hdr(uint8_t hdr[PACK_HDR], int codec, uint32_t plain_len);
/* Decodes a record (raw, got bytes) of a chunk of want_len plain bytes into
 * plain (want_len bytes): VK_ECORRUPT when its header, length or payload is
 * wrong. The caller checks the result against the chunk's name. */
int pack_record_decode(const uint8_t *raw, size_t got, uint32_t want_len, uint8_t *plain);
/* Checks a record header: VK_OK and *codec, *plain_len, or VK_ECORRUPT. */
int pack_hdr_parse(const uint8_t hdr[PACK_HDR], int *codec, uint32_t *plain_len);
/* Decodes a record (raw, got bytes) and checks it is the chunk named sha:
 * 0 or VK_ECORRUPT. *scratch (*scratch_cap bytes, grown here; free() it)
 * holds the plain bytes. */
int pack_record_check(const uint8_t *raw, size_t got, const char *sha, uint8_t **scratch,
                      size_t *scratch_cap);

#endif
