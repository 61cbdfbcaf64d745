#include "pack.h"

#include "chunk.h"
#include "codec.h"
#include "err.h"
#include "log.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

static const char pack_magic[4] = {'V', 'K', 'C', 'H'};

/* ---- names, headers, indexes ----------------------------------------------- */

void pack_object_name(const char *id, char out[80])
{
    snprintf(out, 80, "packs/%.2s/%s", id, id);
}

void pack_index_name(const char *id, char out[80])
{
    snprintf(out, 80, "packidx/%s", id);
}

int pack_new_id(char out[PACK_ID_HEX])
{
    unsigned char b[16];
    if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b))
        return err_errno(errno, "cannot get random bytes for a pack name");
    util_hex(b, sizeof(b), out);
    return 0;
}

void pack_hdr(uint8_t hdr[PACK_HDR], int codec, uint32_t plain_len)
{
    memcpy(hdr, pack_magic, 4);
    hdr[4] = (uint8_t)codec;
    hdr[5] = hdr[6] = hdr[7] = 0;
    for (int i = 0; i < 4; i++)
        hdr[8 + i] = (uint8_t)(plain_len >> (8 * i));
}

int pack_hdr_parse(const uint8_t hdr[PACK_HDR], int *codec, uint32_t *plain_len)
{
    if (memcmp(hdr, pack_magic, 4) || hdr[4] >= CODEC_COUNT)
        return VK_ECORRUPT;
    *codec = hdr[4];
    *plain_len = (uint32_t)hdr[8] | (uint32_t)hdr[9] << 8 | (uint32_t)hdr[10] << 16 |
                 (uint32_t)hdr[11] << 24;
    return 0;
}

int pack_record_decode(const uint8_t *raw, size_t got, uint32_t want_len, uint8_t *plain)
{
    int codec;
    uint32_t n = 0;
    if (got < PACK_HDR || pack_hdr_parse(raw, &codec, &n) < 0 || n != want_len)
        return err_set(VK_ECORRUPT, "bad header or truncated");
    return codec_decompress(codec, raw + PACK_HDR, got - PACK_HDR, plain, want_len);
}

int pack_record_check(const uint8_t *raw, size_t got, const char *sha, uint8_t **scratch,
                      size_t *scratch_cap)
{
    char have[UTIL_SHA256_HEX];
    int codec;
    uint32_t n = 0;
    if (got < PACK_HDR || pack_hdr_parse(raw, &codec, &n) < 0 || n > CHUNK_LEN_MAX)
        return err_set(VK_ECORRUPT, "chunk %s: bad record header", sha);
    if (*scratch_cap < (size_t)n + 1) {
        uint8_t *nb = realloc(*scratch, (size_t)n + 1);
        if (!nb)
            return err_set(VK_ENOMEM, "out of memory");
        *scratch = nb;
        *scratch_cap = (size_t)n + 1;
    }
    if (pack_record_decode(raw, got, n, *scratch) < 0)
        return err_set(VK_ECORRUPT, "chunk %s: its record does not decode", sha);
    util_sha256_buf(*scratch, n, have);
    return strcmp(have, sha) == 0
               ? 0
               : err_set(VK_ECORRUPT, "chunk %s: its record holds other content", sha);
}

int pack_idx_add(struct pack_idx *idx, const char *sha, uint64_t off, uint32_t bytes, int codec)
{
    if (idx->n == idx->cap) {
        size_t ncap = idx->cap ? idx->cap * 2 : 256;
        struct pack_rec *nr = realloc(idx->recs, ncap * sizeof(*nr));
        if (!nr)
            return err_set(VK_ENOMEM, "out of memory");
        idx->recs = nr;
        idx->cap = ncap;
    }
    struct pack_rec *r = &idx->recs[idx->n++];
    memcpy(r->sha, sha, UTIL_SHA256_HEX);
    r->off = off;
    r->bytes = bytes;
    r->codec = codec;
    return 0;
}

void pack_idx_clear(struct pack_idx *idx)
{
    free(idx->recs);
    memset(idx, 0, sizeof(*idx));
}

static int pack_valid_id(const char *id)
{
    size_t n = strlen(id);
    return n == PACK_ID_HEX - 1 && strspn(id, "0123456789abcdef") == n;
}

int pack_idx_load(struct store *s, const char *id, struct pack_idx *out)
{
    char name[80], *text = NULL;
    size_t len = 0;
    int rc;

    memset(out, 0, sizeof(*out));
    pack_index_name(id, name);
    if (!pack_valid_id(id))
        return err_set(VK_ECORRUPT, "store %s: %s is not a pack index name", store_uri(s), name);
    rc = store_get_buf(s, name, &text, &len);
    if (rc < 0)
        return rc;
    rc = pack_idx_parse(text, len, id, store_uri(s), out);
    free(text);
    return rc;
}

int pack_idx_parse(const char *text, size_t len, const char *id, const char *where,
                   struct pack_idx *out)
{
    char name[80];
    size_t i;
    json_t *j = NULL, *recs, *r;
    int rc = 0;

    memset(out, 0, sizeof(*out));
    pack_index_name(id, name);
    if (!pack_valid_id(id))
        return err_set(VK_ECORRUPT, "store %s: %s is not a pack index name", where, name);
    snprintf(out->id, sizeof(out->id), "%s", id);
    j = json_loadb(text, len, 0, NULL);
    recs = json_object_get(j, "records");
    if (json_integer_value(json_object_get(j, "format")) != 1 || !json_is_array(recs)) {
        rc = err_set(VK_ECORRUPT, "store %s: pack index %s is damaged", where, name);
        goto out;
    }
    json_array_foreach(recs, i, r)
    {
        const char *sha = json_string_value(json_array_get(r, 0));
        json_int_t off = json_integer_value(json_array_get(r, 1));
        json_int_t bytes = json_integer_value(json_array_get(r, 2));
        const char *cn = json_string_value(json_array_get(r, 3));
        int codec = cn ? codec_by_name(cn) : -1;
        if (!util_is_sha256_hex(sha) || !json_is_integer(json_array_get(r, 1)) || off < 0 ||
            off > PACK_OFF_MAX || bytes <= PACK_HDR || (uint64_t)bytes > PACK_REC_MAX ||
            codec < 0) {
            rc = err_set(VK_ECORRUPT, "store %s: pack index %s: record %zu is damaged", where,
                         name, i);
            goto out;
        }
        rc = pack_idx_add(out, sha, (uint64_t)off, (uint32_t)bytes, codec);
        if (rc < 0)
            goto out;
    }
out:
    if (rc < 0)
        pack_idx_clear(out);
    json_decref(j);
    return rc;
}

int pack_idx_store(struct store *s, const struct pack_idx *idx)
{
    json_t *recs = json_array(), *j;
    char name[80], *text;
    struct store_writer *w = NULL;
    int rc;

    for (size_t i = 0; i < idx->n; i++)
        json_array_append_new(recs, json_pack("[s, I, I, s]", idx->recs[i].sha,
                                              (json_int_t)idx->recs[i].off,
                                              (json_int_t)idx->recs[i].bytes,
                                              codec_name(idx->recs[i].codec)));
    j = json_pack("{s:i, s:o}", "format", 1, "records", recs);
    text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text)
        return err_set(VK_ENOMEM, "out of memory");
    pack_index_name(idx->id, name);
    rc = store_put_begin(s, name, &w);
    if (rc == 0) {
        w->lazy = 1;
        rc = store_put_write(w, text, strlen(text));
        rc = rc == 0 ? store_put_commit(w) : (store_put_abort(w), rc);
    }
    free(text);
    return rc;
}

/* ---- the map ----------------------------------------------------------------- */

/* An index object as a listing shows it: when either changes, it was
 * rewritten and is read again. */
struct pack_stamp {
    uint64_t size;
    int64_t mtime;
};

struct pack_listed {
    char id[PACK_ID_HEX];
    struct pack_stamp st;
};

struct pack_slot {
    uint8_t key[32];
    struct pack_loc loc;
    int used;
};

struct pack_map {
    pthread_mutex_t lock;
    struct pack_slot *slots;
    size_t cap, n; /* cap: a power of two */
    char (*ids)[PACK_ID_HEX]; /* pack number -> id */
    uint64_t *sizes;          /* pack number -> bytes */
    struct pack_stamp *stamps; /* pack number -> its index as listed when loaded */
    size_t n_ids, cap_ids;
    struct pack_listed *bad;  /* damaged indexes, as listed when found so */
    size_t n_bad;
};

int pack_map_new(struct pack_map **out)
{
    struct pack_map *m = calloc(1, sizeof(*m));
    *out = NULL;
    if (!m)
        return err_set(VK_ENOMEM, "out of memory");
    pthread_mutex_init(&m->lock, NULL);
    *out = m;
    return 0;
}

static void pack_map_clear(struct pack_map *m)
{
    free(m->slots);
    free(m->ids);
    free(m->sizes);
    free(m->stamps);
    m->slots = NULL;
    m->ids = NULL;
    m->sizes = NULL;
    m->stamps = NULL;
    m->cap = m->n = m->n_ids = m->cap_ids = 0;
}

void pack_map_free(struct pack_map *m)
{
    if (!m)
        return;
    pack_map_clear(m);
    free(m->bad);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static int pack_nibble(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static int pack_key(const char *sha, uint8_t key[32])
{
    for (int i = 0; i < 32; i++) {
        int hi = pack_nibble(sha[2 * i]), lo = hi < 0 ? -1 : pack_nibble(sha[2 * i + 1]);
        if (lo < 0)
            return VK_EINVAL;
        key[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

static struct pack_slot *pack_slot_of(struct pack_map *m, const uint8_t key[32])
{
    uint64_t h;
    memcpy(&h, key, sizeof(h)); /* a SHA-256 is as good a hash as any */
    for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1))
        if (!m->slots[i].used || !memcmp(m->slots[i].key, key, 32))
            return &m->slots[i];
}

static int pack_map_grow(struct pack_map *m)
{
    struct pack_slot *old = m->slots;
    size_t ocap = m->cap, ncap = m->cap ? m->cap * 2 : 4096;
    struct pack_slot *ns = calloc(ncap, sizeof(*ns));
    if (!ns)
        return err_set(VK_ENOMEM, "out of memory");
    m->slots = ns;
    m->cap = ncap;
    for (size_t i = 0; i < ocap; i++)
        if (old[i].used)
            *pack_slot_of(m, old[i].key) = old[i];
    free(old);
    return 0;
}

/* Adds the records of idx; the first copy of a chunk wins. Lock held. */
static int pack_map_add_locked(struct pack_map *m, const struct pack_idx *idx)
{
    if (m->n_ids == m->cap_ids) {
        size_t ncap = m->cap_ids ? m->cap_ids * 2 : 64;
        char(*ni)[PACK_ID_HEX] = realloc(m->ids, ncap * sizeof(*ni));
        if (ni)
            m->ids = ni;
        uint64_t *ns = ni ? realloc(m->sizes, ncap * sizeof(*ns)) : NULL;
        if (ns)
            m->sizes = ns;
        struct pack_stamp *nt = ns ? realloc(m->stamps, ncap * sizeof(*nt)) : NULL;
        if (!nt)
            return err_set(VK_ENOMEM, "out of memory");
        m->stamps = nt;
        m->cap_ids = ncap;
    }
    uint32_t p = (uint32_t)m->n_ids++;
    memcpy(m->ids[p], idx->id, PACK_ID_HEX);
    m->sizes[p] = 0;
    m->stamps[p] = (struct pack_stamp){0, 0};
    for (size_t i = 0; i < idx->n; i++)
        if (idx->recs[i].off + idx->recs[i].bytes > m->sizes[p])
            m->sizes[p] = idx->recs[i].off + idx->recs[i].bytes;
    for (size_t i = 0; i < idx->n; i++) {
        uint8_t key[32];
        if ((m->n + 1) * 2 > m->cap && pack_map_grow(m) < 0)
            return VK_ENOMEM;
        if (pack_key(idx->recs[i].sha, key) < 0)
            continue;
        struct pack_slot *sl = pack_slot_of(m, key);
        if (sl->used)
            continue;
        memcpy(sl->key, key, 32);
        sl->used = 1;
        sl->loc = (struct pack_loc){.pack = p, .bytes = idx->recs[i].bytes,
                                    .off = idx->recs[i].off, .codec = idx->recs[i].codec};
        m->n++;
    }
    return 0;
}

int pack_map_put(struct pack_map *m, const char *sha, struct pack_loc *loc)
{
    uint8_t key[32];
    int rc = 0;
    if (pack_key(sha, key) < 0)
        return err_set(VK_EINVAL, "bad chunk name %.64s", sha);
    pthread_mutex_lock(&m->lock);
    if ((m->n + 1) * 2 > m->cap)
        rc = pack_map_grow(m);
    if (rc == 0) {
        struct pack_slot *sl = pack_slot_of(m, key);
        if (sl->used) {
            *loc = sl->loc;
            rc = 1;
        } else {
            memcpy(sl->key, key, 32);
            sl->used = 1;
            sl->loc = *loc;
            m->n++;
        }
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}

int pack_map_add(struct pack_map *m, const struct pack_idx *idx)
{
    pthread_mutex_lock(&m->lock);
    int rc = pack_map_add_locked(m, idx);
    pthread_mutex_unlock(&m->lock);
    return rc;
}

/* The slot of sha, and (name not NULL) its pack's name and size, under one
 * hold of the lock. */
static int pack_map_lookup(struct pack_map *m, const char *sha, struct pack_loc *out,
                           char *name, uint64_t *pack_size)
{
    uint8_t key[32];
    int rc = VK_ENOTFOUND;
    if (pack_key(sha, key) < 0)
        return VK_EINVAL;
    pthread_mutex_lock(&m->lock);
    if (m->cap) {
        struct pack_slot *sl = pack_slot_of(m, key);
        if (sl->used && (!name || sl->loc.pack < m->n_ids)) {
            *out = sl->loc;
            if (name) {
                pack_object_name(m->ids[sl->loc.pack], name);
                *pack_size = m->sizes[sl->loc.pack];
            }
            rc = 0;
        }
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}

int pack_map_find(struct pack_map *m, const char *sha, struct pack_loc *out)
{
    return pack_map_lookup(m, sha, out, NULL, NULL);
}

uint32_t pack_map_count(struct pack_map *m)
{
    pthread_mutex_lock(&m->lock);
    uint32_t n = (uint32_t)m->n_ids;
    pthread_mutex_unlock(&m->lock);
    return n;
}

int pack_map_find_named(struct pack_map *m, const char *sha, struct pack_loc *out,
                        char name[80], uint64_t *pack_size)
{
    return pack_map_lookup(m, sha, out, name, pack_size);
}

uint64_t pack_map_pack_size(struct pack_map *m, uint32_t pack)
{
    pthread_mutex_lock(&m->lock);
    uint64_t n = pack < m->n_ids ? m->sizes[pack] : 0;
    pthread_mutex_unlock(&m->lock);
    return n;
}

void pack_map_pack_name(struct pack_map *m, uint32_t pack, char out[80])
{
    pthread_mutex_lock(&m->lock);
    if (pack < m->n_ids)
        pack_object_name(m->ids[pack], out);
    else
        snprintf(out, 80, "packs/?");
    pthread_mutex_unlock(&m->lock);
}

/* The store's pack indexes, sorted by id. */
struct pack_list {
    struct pack_listed *v;
    size_t n, cap;
};

static int pack_list_add(void *arg, const char *name, uint64_t size, int64_t mtime)
{
    struct pack_list *l = arg;
    const char *id = name + strlen("packidx/");
    if (!pack_valid_id(id))
        return 0; /* not an index (a leftover temporary file, say) */
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 64;
        struct pack_listed *nv = realloc(l->v, ncap * sizeof(*nv));
        if (!nv)
            return err_set(VK_ENOMEM, "out of memory");
        l->v = nv;
        l->cap = ncap;
    }
    memcpy(l->v[l->n].id, id, PACK_ID_HEX);
    l->v[l->n++].st = (struct pack_stamp){size, mtime};
    return 0;
}

static int pack_id_cmp(const void *a, const void *b)
{
    return strcmp(a, b); /* struct pack_listed and ids both start with the id */
}

static int pack_stamp_eq(struct pack_stamp a, struct pack_stamp b)
{
    return a.size == b.size && a.mtime == b.mtime;
}

/* Whether the known packs are still what the listing shows: 0 when one is
 * gone or was rewritten (then the map is rebuilt). Lock held. */
static int pack_map_current(struct pack_map *m, const struct pack_list *l)
{
    if (l->n == 0)
        return m->n_ids == 0;
    for (size_t i = 0; i < m->n_ids; i++) {
        const struct pack_listed *e = bsearch(m->ids[i], l->v, l->n, sizeof(*l->v), pack_id_cmp);
        if (!e)
            return 0;
        if (m->stamps[i].size == 0 && m->stamps[i].mtime == 0)
            m->stamps[i] = e->st; /* written here (pack_map_add): first seen listed */
        else if (!pack_stamp_eq(e->st, m->stamps[i]))
            return 0;
    }
    return 1;
}

/* Notes a damaged index (so it is not read again until it changes) and says
 * so once. Lock held. */
static void pack_map_note_bad(struct pack_map *m, const struct pack_listed *e)
{
    for (size_t i = 0; i < m->n_bad; i++)
        if (!strcmp(m->bad[i].id, e->id)) {
            m->bad[i].st = e->st;
            return;
        }
    struct pack_listed *nb = realloc(m->bad, (m->n_bad + 1) * sizeof(*nb));
    log_warn("%s; its chunks are not used until it is repaired", err_msg());
    if (!nb)
        return; /* it is read again next time: slower, still correct */
    m->bad = nb;
    m->bad[m->n_bad++] = *e;
}

static int pack_map_known_bad(struct pack_map *m, const struct pack_listed *e)
{
    for (size_t i = 0; i < m->n_bad; i++)
        if (!strcmp(m->bad[i].id, e->id))
            return pack_stamp_eq(m->bad[i].st, e->st);
    return 0;
}

/* Loads one listed index into the map. A damaged one is named and skipped:
 * it costs only the chunks it lists, never other tasks. Lock held. */
static int pack_map_load(struct pack_map *m, struct store *s, const struct pack_listed *e)
{
    struct pack_idx idx;
    int rc;
    if (pack_map_known_bad(m, e))
        return 0;
    rc = pack_idx_load(s, e->id, &idx);
    if (rc == VK_ENOTFOUND) /* deleted since the listing */
        return 0;
    if (rc == VK_ECORRUPT) {
        pack_map_note_bad(m, e);
        return 0;
    }
    if (rc == 0 && (rc = pack_map_add_locked(m, &idx)) == 0)
        m->stamps[m->n_ids - 1] = e->st;
    pack_idx_clear(&idx);
    return rc;
}

int pack_map_refresh(struct pack_map *m, struct store *s, int full)
{
    struct pack_list l = {0};
    int rc = store_list(s, "packidx/", pack_list_add, &l);
    if (rc < 0) {
        free(l.v);
        return err_wrap(rc, "store %s: cannot list the pack indexes", store_uri(s));
    }
    if (l.n)
        qsort(l.v, l.n, sizeof(*l.v), pack_id_cmp);
    pthread_mutex_lock(&m->lock);
    if (full || !pack_map_current(m, &l))
        pack_map_clear(m);
    char(*known)[PACK_ID_HEX] = NULL;
    size_t n_known = m->n_ids;
    if (n_known) {
        known = malloc(n_known * sizeof(*known));
        if (!known)
            rc = err_set(VK_ENOMEM, "out of memory");
        else
            memcpy(known, m->ids, n_known * sizeof(*known));
        if (known)
            qsort(known, n_known, sizeof(*known), pack_id_cmp);
    }
    for (size_t i = 0; rc == 0 && i < l.n; i++)
        if (!n_known || !bsearch(l.v[i].id, known, n_known, sizeof(*known), pack_id_cmp))
            rc = pack_map_load(m, s, &l.v[i]);
    pthread_mutex_unlock(&m->lock);
    free(known);
    free(l.v);
    return rc;
}
