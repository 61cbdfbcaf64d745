/* The buffer pool: buffers come back to the next taker, at most keep are
 * kept, sizes are rounded to the alignment, bad sizes are refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "bufpool.h"
#include "err.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void test_reuse_and_keep(void **state)
{
    (void)state;
    struct bufpool p;
    void *b[4];
    assert_int_equal(bufpool_init(&p, 5000, 4096, 2), 0);
    assert_int_equal(p.size, 8192);
    for (int i = 0; i < 4; i++) {
        assert_non_null(b[i] = bufpool_get(&p));
        assert_int_equal((uintptr_t)b[i] % 4096, 0);
        memset(b[i], i, p.size); /* the whole size is usable */
    }
    assert_int_equal(bufpool_made(&p), 4);
    for (int i = 0; i < 4; i++)
        bufpool_put(&p, b[i]); /* two kept, two freed */
    bufpool_put(&p, NULL);
    assert_int_equal(p.nfree, 2);
    void *x = bufpool_get(&p), *y = bufpool_get(&p), *z = bufpool_get(&p);
    assert_true(x == b[1] || x == b[0]); /* the kept ones come back first */
    assert_true(y == b[1] || y == b[0]);
    assert_int_equal(bufpool_made(&p), 5); /* only the third was new */
    bufpool_put(&p, x);
    bufpool_put(&p, y);
    free(z); /* a buffer may also be freed */
    bufpool_destroy(&p);
    bufpool_destroy(&p); /* twice is harmless */
}

static void test_refused(void **state)
{
    (void)state;
    struct bufpool p;
    assert_int_equal(bufpool_init(&p, 0, 64, 1), VK_EINVAL);
    assert_int_equal(bufpool_init(&p, 100, 3, 1), VK_EINVAL);
    assert_int_equal(bufpool_init(&p, 100, 2, 1), VK_EINVAL); /* smaller than a pointer */
    assert_int_equal(bufpool_init(&p, SIZE_MAX - 10, 64, 1), VK_EINVAL);
    assert_non_null(strstr(err_msg(), "out of range"));
    bufpool_destroy(&p); /* a refused pool is zeroed */
    assert_int_equal(bufpool_init(&p, 64, 64, 0), 0); /* keep 0: a plain allocator */
    void *b = bufpool_get(&p);
    assert_non_null(b);
    bufpool_put(&p, b);
    assert_int_equal(p.nfree, 0);
    bufpool_destroy(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reuse_and_keep),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
