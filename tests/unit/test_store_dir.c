/* The directory store: the store contract, on a temporary directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "err.h"
#include "store.h"
#include "util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char root[256];

static int setup(void **state)
{
    snprintf(root, sizeof(root), "/tmp/vmckpt-test-store.XXXXXX");
    assert_non_null(mkdtemp(root));
    struct store *s = NULL;
    char uri[300];
    snprintf(uri, sizeof(uri), "file://%s", root);
    assert_int_equal(store_open(uri, &s), 0);
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    store_free(*state);
    util_rm_rf(root);
    return 0;
}

struct names {
    char list[16][128];
    int n;
};

static int collect(void *arg, const char *name, uint64_t size, int64_t mtime)
{
    struct names *n = arg;
    (void)size;
    assert_true(mtime > 1700000000); /* a real time stamp */
    if (n->n < 16)
        snprintf(n->list[n->n++], 128, "%s", name);
    return 0;
}

static void test_put_read_list_remove(void **state)
{
    struct store *s = *state;
    char buf[64];
    size_t got = 0;
    uint64_t size = 0;
    struct names n = {0};

    assert_int_equal(store_put_buf(s, "a/b/obj1", "hello world", 11), 0);
    assert_int_equal(store_put_buf(s, "a/obj2", "x", 1), 0);
    assert_int_equal(store_put_buf(s, "ab/obj3", "y", 1), 0);
    assert_int_equal(store_stat(s, "a/b/obj1", &size), 0);
    assert_int_equal(size, 11);
    assert_int_equal(store_read(s, "a/b/obj1", 6, buf, sizeof(buf), &got), 0);
    assert_int_equal(got, 5);
    assert_memory_equal(buf, "world", 5);
    assert_int_equal(store_list(s, "a/", collect, &n), 0);
    assert_int_equal(n.n, 2); /* not ab/obj3 */
    assert_int_equal(store_remove(s, "a/obj2"), 0);
    assert_int_equal(store_stat(s, "a/obj2", NULL), VK_ENOTFOUND);
    assert_int_equal(store_read(s, "nope", 0, buf, 1, &got), VK_ENOTFOUND);
    assert_non_null(strstr(err_msg(), "nope"));
    assert_int_equal(store_remove(s, "nope"), VK_ENOTFOUND);
}

static void test_uncommitted_invisible(void **state)
{
    struct store *s = *state;
    struct store_writer *w = NULL;
    struct names n = {0};
    assert_int_equal(store_put_begin(s, "c/obj", &w), 0);
    assert_int_equal(store_put_write(w, "partial", 7), 0);
    assert_int_equal(store_stat(s, "c/obj", NULL), VK_ENOTFOUND);
    assert_int_equal(store_list(s, "", collect, &n), 0);
    for (int i = 0; i < n.n; i++)
        assert_null(strstr(n.list[i], "c/obj"));
    store_put_abort(w);
    assert_int_equal(store_stat(s, "c/obj", NULL), VK_ENOTFOUND);
    store_put_abort(NULL);
}

static void test_bad_names(void **state)
{
    struct store *s = *state;
    const char *bad[] = {"", "/abs", "a/../b", "a//b", ".hidden", "a/.tmp/x", "trailing/",
                         "sp ace", "semi;colon"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
        assert_int_equal(store_put_buf(s, bad[i], "x", 1), VK_EINVAL);
    assert_int_equal(store_open("gopher://x", &s), VK_EINVAL);
    assert_int_equal(store_open("file://relative/path", &s), VK_EINVAL);
}

#define BIG (24u << 20)

struct reader {
    struct store *s;
    const unsigned char *want;
    uint64_t off;
    int ok;
};

static void *read_range(void *arg)
{
    struct reader *r = arg;
    unsigned char *buf = malloc(BIG / 4);
    size_t got = 0;
    r->ok = buf && store_read(r->s, "big/obj", r->off, buf, BIG / 4, &got) == 0 &&
            got == BIG / 4 && memcmp(buf, r->want + r->off, BIG / 4) == 0;
    free(buf);
    return NULL;
}

static void test_large_in_parts_parallel_readers(void **state)
{
    struct store *s = *state;
    unsigned char *data = malloc(BIG);
    struct store_writer *w = NULL;
    struct reader r[4];
    pthread_t th[4];
    uint64_t size = 0;

    assert_non_null(data);
    for (size_t i = 0; i < BIG; i++)
        data[i] = (unsigned char)(i * 2654435761u >> 13);
    assert_int_equal(store_put_begin(s, "big/obj", &w), 0);
    for (size_t off = 0; off < BIG; off += 1000003)
        assert_int_equal(store_put_write(w, data + off, off + 1000003 <= BIG ? 1000003 : BIG - off), 0);
    assert_int_equal(store_put_commit(w), 0);
    assert_int_equal(store_stat(s, "big/obj", &size), 0);
    assert_int_equal(size, BIG);
    for (int i = 0; i < 4; i++) {
        r[i] = (struct reader){s, data, (uint64_t)i * (BIG / 4), 0};
        pthread_create(&th[i], NULL, read_range, &r[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_true(r[i].ok);
    }
    free(data);
}

static void test_get_file_checks(void **state)
{
    struct store *s = *state;
    char path[300], sha[UTIL_SHA256_HEX], src[300];
    uint64_t size = 0;

    snprintf(src, sizeof(src), "%s-src", root);
    FILE *f = fopen(src, "w");
    assert_non_null(f);
    fputs("some object content\n", f);
    fclose(f);
    assert_int_equal(store_put_file(s, "f/obj", src, sha, &size, NULL, NULL), 0);
    assert_int_equal(size, 20);
    snprintf(path, sizeof(path), "%s-out", root);
    assert_int_equal(store_get_file(s, "f/obj", path, 20, sha), 0);
    /* Wrong size and wrong hash are both named errors, and leave no file. */
    unlink(path);
    assert_int_equal(store_get_file(s, "f/obj", path, 21, sha), VK_ECORRUPT);
    assert_non_null(strstr(err_msg(), "f/obj"));
    sha[0] = sha[0] == '0' ? '1' : '0';
    assert_int_equal(store_get_file(s, "f/obj", path, 20, sha), VK_ECORRUPT);
    assert_non_null(strstr(err_msg(), "damaged"));
    assert_int_equal(access(path, F_OK), -1);
    unlink(src);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_put_read_list_remove, setup, teardown),
        cmocka_unit_test_setup_teardown(test_uncommitted_invisible, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_in_parts_parallel_readers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_file_checks, setup, teardown),
    };
    return cmocka_run_group_tests_name("store_dir", tests, NULL, NULL);
}
