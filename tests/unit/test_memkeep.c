/* The memory image kept for a restart on this node: found only for its own
 * checkpoint and stream, fed back checked against the stream's hash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "err.h"
#include "memkeep.h"
#include "util.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[] = "/tmp/vkt-memkeep-XXXXXX";

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* an image of checkpoint seq kept in dir, with its stream's handle in ref
 * (a stream's hash is over its chunk list: any other hash stands for it) */
static void keep(uint64_t seq, const char *text, struct stream_ref *ref)
{
    char *img = util_fmt("%s/image", dir);
    write_file(img, text);
    memset(ref, 0, sizeof(*ref));
    ref->size = strlen(text);
    util_sha256_buf(img, strlen(img), ref->sha256);
    assert_int_equal(memkeep_put(dir, img, seq, ref), 0);
    assert_int_equal(access(img, F_OK), -1); /* moved, not copied */
    free(img);
}

static int feed(const struct memkeep_copy *c, char *out, size_t len)
{
    int p[2];
    uint64_t n = 0;
    assert_int_equal(pipe(p), 0);
    int rc = memkeep_feed(c, p[1], &n);
    close(p[1]);
    ssize_t got = read(p[0], out, len - 1);
    out[got > 0 ? got : 0] = '\0';
    close(p[0]);
    return rc;
}

static void test_found_for_its_checkpoint_only(void **state)
{
    (void)state;
    struct stream_ref ref, other;
    struct memkeep_copy c;
    keep(7, "the guest's memory", &ref);
    assert_int_equal(memkeep_find(dir, 7, &ref, &c), 1);
    memkeep_copy_clear(&c);
    assert_int_equal(memkeep_find(dir, 6, &ref, &c), 0); /* another checkpoint */
    assert_null(c.path);
    other = ref;
    other.sha256[0] = other.sha256[0] == 'a' ? 'b' : 'a'; /* another stream */
    assert_int_equal(memkeep_find(dir, 7, &other, &c), 0);
    keep(8, "newer memory", &ref); /* replaces it */
    assert_int_equal(memkeep_find(dir, 7, &other, &c), 0);
    assert_int_equal(memkeep_find(dir, 8, &ref, &c), 1);
    memkeep_copy_clear(&c);
    assert_int_equal(memkeep_drop(dir), 1);
    assert_int_equal(memkeep_find(dir, 8, &ref, &c), 0);
    assert_int_equal(memkeep_drop(dir), 0);
}

static void test_fed_back_checked(void **state)
{
    (void)state;
    struct stream_ref ref;
    struct memkeep_copy c;
    char out[64];
    keep(3, "pages of a guest", &ref);
    assert_int_equal(memkeep_find(dir, 3, &ref, &c), 1);
    assert_int_equal(feed(&c, out, sizeof(out)), 0);
    assert_string_equal(out, "pages of a guest");
    /* the same size, one byte changed: its end finds it */
    write_file(c.path, "pages of a guesT");
    assert_int_equal(feed(&c, out, sizeof(out)), VK_ECORRUPT);
    assert_non_null(strstr(err_msg(), "does not match"));
    /* grown since it was kept */
    write_file(c.path, "pages of a guest, and more");
    assert_int_equal(feed(&c, out, sizeof(out)), VK_ECORRUPT);
    memkeep_copy_clear(&c);
    memkeep_drop(dir);
}

static int setup(void **state)
{
    (void)state;
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    return util_rm_rf(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_found_for_its_checkpoint_only),
        cmocka_unit_test(test_fed_back_checked),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
