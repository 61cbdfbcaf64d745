#include "manifest.h"

#include "err.h"

#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

char *manifest_name(const char *task, uint64_t seq)
{
    return util_fmt("tasks/%s/manifests/%010" PRIu64 ".json", task, seq);
}

char *manifest_prefix(const char *task) { return util_fmt("tasks/%s/manifests/", task); }

uint64_t manifest_seq_of(const char *name)
{
    const char *base = strrchr(name, '/');
    char *end;
    uint64_t seq;
    base = base ? base + 1 : name;
    if (strlen(base) != 15 || strcmp(base + 10, ".json") != 0)
        return 0;
    seq = strtoull(base, &end, 10);
    return end == base + 10 ? seq : 0;
}

static json_t *mf_ref_json(const struct stream_ref *o)
{
    return json_pack("{s:s, s:I, s:s}", "name", o->name ? o->name : "", "size",
                     (json_int_t)o->size, "sha256", o->sha256);
}

json_t *manifest_to_json(const struct manifest *m)
{
    json_t *deltas = json_array(), *j;
    char when[32];
    util_iso_time(m->created_us, when, sizeof(when));
    for (size_t i = 0; i < m->n_deltas; i++)
        json_array_append_new(deltas, mf_ref_json(&m->deltas[i]));
    j = json_pack(
        "{s:i, s:s, s:I, s:I, s:s, s:s,"
        " s:{s:i, s:i, s:s, s:s},"
        " s:o, s:o, s:o, s:s, s:o, s:o,"
        " s:{s:I, s:I, s:I, s:I}, s:I, s:I, s:{s:i, s:i}}",
        "format", MANIFEST_FORMAT, "task", m->task, "seq", (json_int_t)m->seq, "created_us",
        (json_int_t)m->created_us, "created", when, "mode", m->mode, "vm", "memory_mib",
        m->memory_mib, "vcpus", m->vcpus, "machine", m->machine, "append", m->append, "kernel",
        mf_ref_json(&m->kernel), "initrd", mf_ref_json(&m->initrd), "base",
        mf_ref_json(&m->base), "base_format", m->base_format, "deltas", deltas, "memory",
        mf_ref_json(&m->memory), "timings_us", "stopped", (json_int_t)m->stopped_us, "seal",
        (json_int_t)m->seal_us, "mem_save", (json_int_t)m->mem_save_us, "store",
        (json_int_t)m->store_us, "uploaded_bytes", (json_int_t)m->uploaded_bytes,
        "serial_bytes", (json_int_t)m->serial_bytes, "policy", "first_s", m->first_s, "every_s",
        m->every_s);
    if (j && m->data)
        json_object_set(j, "data", m->data);
    if (j && m->mode_why)
        json_object_set_new(j, "mode_why", json_string(m->mode_why));
    if (j && m->policy_mode)
        json_object_set_new(json_object_get(j, "policy"), "mode", json_string(m->policy_mode));
    return j;
}

static char *mf_canonical(json_t *j)
{
    return json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
}

int manifest_encode(const struct manifest *m, char **out)
{
    json_t *j = manifest_to_json(m);
    char *canon, sha[UTIL_SHA256_HEX];

    *out = NULL;
    if (!j)
        return err_set(VK_ENOMEM, "cannot encode manifest of task %s", m->task);
    canon = mf_canonical(j);
    if (!canon) {
        json_decref(j);
        return err_set(VK_ENOMEM, "out of memory");
    }
    util_sha256_buf(canon, strlen(canon), sha);
    free(canon);
    json_object_set_new(j, "sha256", json_string(sha));
    *out = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(j);
    return *out ? 0 : err_set(VK_ENOMEM, "out of memory");
}

/* A word QEMU takes whole: no comma (its option separator), no '=' or space. */
static int mf_is_word(const char *s)
{
    static const char ok[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-";
    return s && *s && strspn(s, ok) == strlen(s);
}

/* Printable ASCII, one line of at most 400 characters: shown to users. */
static int mf_is_text(const char *s)
{
    size_t n = 0;
    for (; s && s[n]; n++)
        if (s[n] < 0x20 || s[n] > 0x7e)
            return 0;
    return s && n <= 400;
}

static int mf_ref_from(const json_t *j, struct stream_ref *o, const char **why)
{
    const char *name = json_string_value(json_object_get(j, "name"));
    const char *sha = json_string_value(json_object_get(j, "sha256"));
    json_t *size = json_object_get(j, "size");
    if (sha && !util_is_sha256_hex(sha)) {
        *why = "a stream's sha256 is not 64 hexadecimal digits";
        return -1;
    }
    if (!name || !sha || !json_is_integer(size) || json_integer_value(size) < 0)
        return -1;
    o->name = strdup(name);
    o->size = (uint64_t)json_integer_value(size);
    memcpy(o->sha256, sha, UTIL_SHA256_HEX);
    return o->name ? 0 : -1;
}

static char *mf_str(const json_t *j, const char *key)
{
    const char *s = json_string_value(json_object_get(j, key));
    return s ? strdup(s) : NULL;
}

/* Fills m from j: -1 when a field is missing or unusable, with *why set
 * when there is more to say than "missing". */
static int mf_from_json(const json_t *j, struct manifest *m, const char **why)
{
    json_t *vm = json_object_get(j, "vm"), *t = json_object_get(j, "timings_us");
    json_t *deltas = json_object_get(j, "deltas");

    if (json_integer_value(json_object_get(j, "format")) != MANIFEST_FORMAT)
        return -1;
    m->task = mf_str(j, "task");
    m->seq = (uint64_t)json_integer_value(json_object_get(j, "seq"));
    m->created_us = json_integer_value(json_object_get(j, "created_us"));
    m->mode = mf_str(j, "mode");
    m->mode_why = mf_str(j, "mode_why");
    m->policy_mode = mf_str(json_object_get(j, "policy"), "mode");
    if (!m->policy_mode && m->mode)
        m->policy_mode = strdup(m->mode);
    json_int_t mib = json_integer_value(json_object_get(vm, "memory_mib"));
    json_int_t vcpus = json_integer_value(json_object_get(vm, "vcpus"));
    json_int_t first = json_integer_value(json_object_get(json_object_get(j, "policy"), "first_s"));
    json_int_t every = json_integer_value(json_object_get(json_object_get(j, "policy"), "every_s"));
    /* Sizes become QEMU arguments and allocations: in range before any cast. */
    if (mib < 16 || mib > (1 << 20) || vcpus < 1 || vcpus > 256 || first < 0 ||
        first > INT_MAX || every < -1 || every > INT_MAX) { /* every -1: auto */
        *why = "its memory size, vCPU count or checkpoint times are out of range";
        return -1;
    }
    m->memory_mib = (int)mib;
    m->vcpus = (int)vcpus;
    m->machine = mf_str(vm, "machine");
    m->append = mf_str(vm, "append");
    m->base_format = mf_str(j, "base_format");
    m->stopped_us = json_integer_value(json_object_get(t, "stopped"));
    m->seal_us = json_integer_value(json_object_get(t, "seal"));
    m->mem_save_us = json_integer_value(json_object_get(t, "mem_save"));
    m->store_us = json_integer_value(json_object_get(t, "store"));
    m->uploaded_bytes = (uint64_t)json_integer_value(json_object_get(j, "uploaded_bytes"));
    m->serial_bytes = (uint64_t)json_integer_value(json_object_get(j, "serial_bytes"));
    m->data = json_incref(json_object_get(j, "data"));
    m->first_s = (int)first;
    m->every_s = (int)every;
    if (!m->task || !m->mode || !m->machine || !m->append || !m->base_format || m->seq == 0 ||
        m->memory_mib <= 0 || m->vcpus <= 0 || !json_is_array(deltas))
        return -1;
    if (!util_valid_id(m->task)) {
        *why = "its task name is not a valid task id";
        return -1;
    }
    if (strcmp(m->mode, "live") != 0 && strcmp(m->mode, "cow") != 0 &&
        strcmp(m->mode, "stop-copy") != 0) {
        *why = "its mode is none of live, cow and stop-copy";
        return -1;
    }
    if (!m->policy_mode || (strcmp(m->policy_mode, "auto") != 0 &&
                            strcmp(m->policy_mode, "live") != 0 &&
                            strcmp(m->policy_mode, "cow") != 0 &&
                            strcmp(m->policy_mode, "stop-copy") != 0)) {
        *why = "its policy's mode is none of auto, live, cow and stop-copy";
        return -1;
    }
    if (json_object_get(j, "mode_why") && !mf_is_text(m->mode_why)) {
        *why = "its mode's reason is not a line of printable text";
        return -1;
    }
    if (json_array_size(deltas) > MANIFEST_MAX_CHAIN) {
        *why = "its delta chain is longer than any vmckpt writes";
        return -1;
    }
    if (!mf_is_word(m->machine)) {
        *why = "its machine type is not one word (QEMU would parse the rest as options)";
        return -1;
    }
    if (strcmp(m->base_format, "qcow2") != 0 && strcmp(m->base_format, "raw") != 0) {
        *why = "its base format is neither qcow2 nor raw";
        return -1;
    }
    if (json_array_size(deltas) == 0) {
        *why = "its delta chain is empty";
        return -1;
    }
    if (mf_ref_from(json_object_get(j, "kernel"), &m->kernel, why) < 0 ||
        mf_ref_from(json_object_get(j, "initrd"), &m->initrd, why) < 0 ||
        mf_ref_from(json_object_get(j, "base"), &m->base, why) < 0 ||
        mf_ref_from(json_object_get(j, "memory"), &m->memory, why) < 0)
        return -1;
    m->n_deltas = json_array_size(deltas);
    m->deltas = calloc(m->n_deltas ? m->n_deltas : 1, sizeof(*m->deltas));
    if (!m->deltas)
        return -1;
    for (size_t i = 0; i < m->n_deltas; i++)
        if (mf_ref_from(json_array_get(deltas, i), &m->deltas[i], why) < 0)
            return -1;
    return 0;
}

int manifest_decode(const char *text, size_t len, const char *where, struct manifest **out)
{
    json_error_t jerr;
    json_t *j = json_loadb(text, len, 0, &jerr);
    struct manifest *m = NULL;
    char *canon = NULL, sha[UTIL_SHA256_HEX], *want = NULL;
    int rc = 0;

    *out = NULL;
    if (!j || !json_is_object(j)) {
        rc = err_set(VK_ECORRUPT, "manifest %s is damaged: not valid JSON (%s at line %d)", where,
                     j ? "not an object" : jerr.text, jerr.line);
        goto out;
    }
    want = mf_str(j, "sha256");
    json_object_del(j, "sha256");
    canon = mf_canonical(j);
    if (!want || !canon) {
        rc = err_set(VK_ECORRUPT, "manifest %s is damaged: it has no checksum", where);
        goto out;
    }
    util_sha256_buf(canon, strlen(canon), sha);
    if (strcmp(sha, want) != 0) {
        rc = err_set(VK_ECORRUPT, "manifest %s is damaged: its checksum does not match", where);
        goto out;
    }
    m = calloc(1, sizeof(*m));
    if (!m) {
        rc = err_set(VK_ENOMEM, "out of memory");
        goto out;
    }
    const char *why = NULL;
    if (mf_from_json(j, m, &why) < 0) {
        rc = why ? err_set(VK_ECORRUPT, "manifest %s is damaged: %s", where, why)
                 : err_set(VK_ECORRUPT, "manifest %s lacks required fields (format %d expected)",
                           where, MANIFEST_FORMAT);
        goto out;
    }
    *out = m;
    m = NULL;
out:
    manifest_free(m);
    free(canon);
    free(want);
    json_decref(j);
    return rc;
}

void manifest_free(struct manifest *m)
{
    if (!m)
        return;
    free(m->task);
    free(m->mode);
    free(m->mode_why);
    free(m->policy_mode);
    free(m->machine);
    free(m->append);
    free(m->base_format);
    free(m->kernel.name);
    free(m->initrd.name);
    free(m->base.name);
    free(m->memory.name);
    for (size_t i = 0; i < m->n_deltas; i++)
        free(m->deltas[i].name);
    free(m->deltas);
    json_decref(m->data);
    free(m);
}

int manifest_copy(const struct manifest *m, struct manifest **out)
{
    char *text = NULL;
    int rc = manifest_encode(m, &text);
    *out = NULL;
    if (rc == 0)
        rc = manifest_decode(text, strlen(text), "(copy)", out);
    free(text);
    return rc;
}

json_t *manifest_summary(const struct manifest *m)
{
    uint64_t delta = 0;
    char when[32];
    for (size_t i = 0; i < m->n_deltas; i++)
        delta += m->deltas[i].size;
    util_iso_time(m->created_us, when, sizeof(when));
    json_t *j = json_pack("{s:I, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:i, s:I, s:I}", "seq",
                     (json_int_t)m->seq, "created", when, "mode", m->mode, "stopped_us",
                     (json_int_t)m->stopped_us, "seal_us", (json_int_t)m->seal_us, "mem_save_us",
                     (json_int_t)m->mem_save_us, "store_us", (json_int_t)m->store_us,
                     "memory_bytes", (json_int_t)m->memory.size, "delta_bytes",
                     (json_int_t)delta, "deltas", (int)m->n_deltas, "uploaded_bytes",
                     (json_int_t)m->uploaded_bytes, "base_bytes", (json_int_t)m->base.size);
    if (j && m->mode_why)
        json_object_set_new(j, "mode_why", json_string(m->mode_why));
    return j;
}
