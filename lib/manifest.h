/* manifest: what one checkpoint is made of, and its encoding.
 *
 * The manifest is the commit point of a checkpoint: it is written last, after
 * every object it names is stored, so a checkpoint exists iff its manifest
 * does. The encoding is JSON carrying the SHA-256 of its own canonical form,
 * so a damaged or truncated manifest is detected, never half-trusted. */
#ifndef VMCKPT_MANIFEST_H
#define VMCKPT_MANIFEST_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "stream.h"
#include "util.h"

#define MANIFEST_FORMAT 1
/* The longest delta chain a manifest may name ([data] max_chain at most). */
#define MANIFEST_MAX_CHAIN (1 << 20)

struct manifest {
    char *task;
    uint64_t seq;       /* 1, 2, ... per task */
    int64_t created_us; /* wall clock */
    char *mode;         /* how memory was copied: "live", "cow" or "stop-copy" */
    char *mode_why;     /* why that mode (auto's reason; may be NULL) */
    char *policy_mode;  /* the task's mode setting, "auto" or a mode (may be NULL:
                         * manifests before it; read back as mode) */
    /* The VM's shape: a restore must start QEMU with exactly these. */
    int memory_mib;
    int vcpus;
    char *machine;
    char *append; /* kernel command line */
    struct stream_ref kernel, initrd, base;
    char *base_format; /* "qcow2" or "raw" */
    struct stream_ref *deltas; /* oldest first; deltas[i] backs onto deltas[i-1], [0] onto base */
    size_t n_deltas;
    struct stream_ref memory; /* QEMU migration stream */
    /* Phase timings, microseconds. */
    int64_t stopped_us, seal_us, mem_save_us, store_us;
    uint64_t uploaded_bytes; /* bytes this checkpoint added to the store */
    uint64_t serial_bytes;   /* size of the guest's console log at the checkpoint */
    /* The task's checkpoint policy, so that it follows the task to another node. */
    int first_s, every_s; /* first checkpoint after first_s, then every every_s; 0 = never;
                           * every_s -1: auto (interval.h) */
    /* How the data was stored: chunk counts, codec decisions and the estimates
     * behind them. Owned (decref'd by manifest_free); may be NULL. */
    json_t *data;
};

/* Object name of a task's manifest number seq. Caller frees. */
char *manifest_name(const char *task, uint64_t seq);
/* Prefix under which a task's manifests live ("tasks/ID/manifests/"). Caller frees. */
char *manifest_prefix(const char *task);
/* Parses the seq out of a manifest object name; 0 if it is not one. */
uint64_t manifest_seq_of(const char *name);

/* The manifest as a JSON object (new reference), without the checksum. */
json_t *manifest_to_json(const struct manifest *m);
/* Encodes m into a malloc'd string (caller frees *out). */
int manifest_encode(const struct manifest *m, char **out);
/* Decodes and validates text; `where` names it in messages (object name).
 * VK_ECORRUPT for bad JSON, a checksum mismatch or missing fields.
 * *out is the caller's, freed with manifest_free(). */
int manifest_decode(const char *text, size_t len, const char *where, struct manifest **out);
void manifest_free(struct manifest *m);
/* Deep copy (through the encoding, so the copy is what a reader would get). */
int manifest_copy(const struct manifest *m, struct manifest **out);
/* One-line facts of a checkpoint for listings (new reference): seq, created,
 * mode, timings, memory/delta/uploaded bytes. */
json_t *manifest_summary(const struct manifest *m);

#endif
