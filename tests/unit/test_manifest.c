/* Manifest encoding: round trip, and every kind of damage is detected. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "err.h"
#include "manifest.h"

#include <stdlib.h>
#include <string.h>

static void fill_obj(struct stream_ref *o, const char *name, uint64_t size, char c)
{
    o->name = (char *)name;
    o->size = size;
    memset(o->sha256, c, 64);
    o->sha256[64] = '\0';
}

static void sample(struct manifest *m, struct stream_ref deltas[2])
{
    memset(m, 0, sizeof(*m));
    m->task = "t1";
    m->seq = 7;
    m->created_us = 1795000000000000;
    m->mode = "cow";
    m->memory_mib = 256;
    m->vcpus = 2;
    m->machine = "pc";
    m->append = "console=ttyS0 vmckpt.work=counter";
    m->base_format = "qcow2";
    fill_obj(&m->kernel, "blobs/k", 100, 'a');
    fill_obj(&m->initrd, "blobs/i", 200, 'b');
    fill_obj(&m->base, "blobs/b", 300, 'c');
    fill_obj(&deltas[0], "tasks/t1/ckpt/0000000001/delta-001.qcow2", 400, 'd');
    fill_obj(&deltas[1], "tasks/t1/ckpt/0000000007/delta-002.qcow2", 500, 'e');
    m->deltas = deltas;
    m->n_deltas = 2;
    fill_obj(&m->memory, "tasks/t1/ckpt/0000000007/memory", 600, 'f');
    m->stopped_us = 12345;
    m->seal_us = 2000;
    m->mem_save_us = 300000;
    m->store_us = 400000;
    m->uploaded_bytes = 1100;
    m->serial_bytes = 77;
    m->first_s = 5;
    m->every_s = 60;
}

static void test_roundtrip(void **state)
{
    (void)state;
    struct manifest m, *d = NULL;
    struct stream_ref deltas[2];
    char *text = NULL;
    sample(&m, deltas);
    assert_int_equal(manifest_encode(&m, &text), 0);
    assert_int_equal(manifest_decode(text, strlen(text), "x", &d), 0);
    assert_string_equal(d->task, "t1");
    assert_int_equal(d->seq, 7);
    assert_int_equal(d->vcpus, 2);
    assert_string_equal(d->append, m.append);
    assert_int_equal(d->n_deltas, 2);
    assert_string_equal(d->deltas[1].name, deltas[1].name);
    assert_int_equal(d->deltas[1].size, 500);
    assert_string_equal(d->memory.sha256, m.memory.sha256);
    assert_int_equal(d->stopped_us, 12345);
    assert_int_equal(d->serial_bytes, 77);
    assert_int_equal(d->every_s, 60);
    manifest_free(d);
    free(text);
}

static void test_damage_detected(void **state)
{
    (void)state;
    struct manifest m, *d = NULL;
    struct stream_ref deltas[2];
    char *text = NULL, *p;
    sample(&m, deltas);
    assert_int_equal(manifest_encode(&m, &text), 0);

    /* A changed digit inside a size: still valid JSON, wrong checksum. */
    p = strstr(text, "\"size\": 600");
    assert_non_null(p);
    p[8] = '7';
    assert_int_equal(manifest_decode(text, strlen(text), "m1", &d), VK_ECORRUPT);
    assert_non_null(strstr(err_msg(), "m1"));
    assert_non_null(strstr(err_msg(), "checksum"));
    p[8] = '6';
    assert_int_equal(manifest_decode(text, strlen(text), "m1", &d), 0);
    manifest_free(d);

    /* Truncated: not JSON any more. */
    assert_int_equal(manifest_decode(text, strlen(text) / 2, "m2", &d), VK_ECORRUPT);
    assert_null(d);
    assert_non_null(strstr(err_msg(), "not valid JSON"));

    /* No checksum at all. */
    assert_int_equal(manifest_decode("{\"format\": 1}", 13, "m3", &d), VK_ECORRUPT);
    assert_int_equal(manifest_decode("", 0, "m4", &d), VK_ECORRUPT);
    assert_int_equal(manifest_decode("[1,2]", 5, "m5", &d), VK_ECORRUPT);
    free(text);
}

/* A hostile store can write a manifest with a valid checksum: every field
 * that becomes a path or a QEMU argument is checked anyway. */
static void expect_refused(struct manifest *m, const char *why)
{
    struct manifest *d = NULL;
    char *text = NULL;
    assert_int_equal(manifest_encode(m, &text), 0);
    assert_int_equal(manifest_decode(text, strlen(text), "forged", &d), VK_ECORRUPT);
    assert_null(d);
    if (!strstr(err_msg(), why))
        fail_msg("error '%s' does not say '%s'", err_msg(), why);
    free(text);
}

static void test_forged_fields(void **state)
{
    (void)state;
    struct manifest m;
    struct stream_ref deltas[2];
    sample(&m, deltas); /* a digest that is a path out of the blob cache */
    snprintf(m.base.sha256, sizeof(m.base.sha256), "%s",
             "././././././././././././././././././././././././../../secret.raw");
    assert_int_equal(strlen(m.base.sha256), 64);
    expect_refused(&m, "not 64 hexadecimal digits");
    sample(&m, deltas);
    memset(m.memory.sha256, 'A', 64); /* upper case: not what we write */
    expect_refused(&m, "not 64 hexadecimal digits");
    sample(&m, deltas);
    m.n_deltas = 0;
    expect_refused(&m, "delta chain is empty");
    sample(&m, deltas);
    m.machine = "pc,firmware=/etc/shadow";
    expect_refused(&m, "machine type");
    sample(&m, deltas);
    m.base_format = "vmdk";
    expect_refused(&m, "base format");
    sample(&m, deltas);
    m.memory_mib = 1 << 21; /* 2 TiB: an allocation, not a guest */
    expect_refused(&m, "out of range");
    sample(&m, deltas);
    m.vcpus = 0;
    expect_refused(&m, "out of range");
    sample(&m, deltas);
    m.task = "../other";
    expect_refused(&m, "task name");
    sample(&m, deltas);
    m.mode = "cow,x";
    expect_refused(&m, "mode");
    sample(&m, deltas);
    m.policy_mode = "fast";
    expect_refused(&m, "policy's mode");
    sample(&m, deltas); /* shown to users: no terminal escapes, one line */
    m.mode_why = "live: \033[2Jcleared";
    expect_refused(&m, "reason");
    sample(&m, deltas);
    m.mode_why = "live\nforged line";
    expect_refused(&m, "reason");
}

/* The mode taken, why, and the task's mode setting survive a round trip; a
 * manifest from before the setting was kept reads it back as its mode. */
static void test_modes(void **state)
{
    (void)state;
    struct manifest m, *d = NULL;
    struct stream_ref deltas[2];
    char *text = NULL;
    sample(&m, deltas);
    m.mode = "live";
    m.mode_why = "live: pre-copy is tried first";
    m.policy_mode = "auto";
    assert_int_equal(manifest_encode(&m, &text), 0);
    assert_int_equal(manifest_decode(text, strlen(text), "x", &d), 0);
    assert_string_equal(d->mode, "live");
    assert_string_equal(d->mode_why, "live: pre-copy is tried first");
    assert_string_equal(d->policy_mode, "auto");
    json_t *sum = manifest_summary(d);
    assert_string_equal(json_string_value(json_object_get(sum, "mode_why")),
                        "live: pre-copy is tried first");
    json_decref(sum);
    manifest_free(d);
    free(text);
    sample(&m, deltas); /* older manifests: no reason, no policy mode */
    assert_int_equal(manifest_encode(&m, &text), 0);
    assert_int_equal(manifest_decode(text, strlen(text), "x", &d), 0);
    assert_null(d->mode_why);
    assert_string_equal(d->policy_mode, "cow");
    manifest_free(d);
    free(text);
}

static void test_names(void **state)
{
    (void)state;
    char *n = manifest_name("t1", 42);
    assert_string_equal(n, "tasks/t1/manifests/0000000042.json");
    assert_int_equal(manifest_seq_of(n), 42);
    assert_int_equal(manifest_seq_of("tasks/t1/manifests/0000000042.json.tmp"), 0);
    assert_int_equal(manifest_seq_of("tasks/t1/manifests/00000000x2.json"), 0);
    assert_int_equal(manifest_seq_of("tasks/t1/ckpt/0000000001/memory"), 0);
    free(n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_damage_detected),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_forged_fields),
        cmocka_unit_test(test_modes),
    };
    return cmocka_run_group_tests_name("manifest", tests, NULL, NULL);
}
