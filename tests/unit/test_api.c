/* Requests and store URIs as the agent reads them: a request is checked
 * whole before anything acts (issue 11, finding 9), a URI's password is
 * never in a message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "api.h"
#include "err.h"
#include "uri.h"

#include <stdlib.h>
#include <string.h>

static int parse(const char *method, const char *url, const char *body, struct api_req *q)
{
    return api_parse(method, url, body, strlen(body), q);
}

static void test_routes(void **state)
{
    struct api_req q;
    (void)state;
    assert_int_equal(parse("GET", "/v1/tasks", "", &q), 0);
    assert_int_equal(q.op, API_LIST);
    assert_true(json_is_object(q.body));
    api_req_clear(&q);
    assert_int_equal(parse("POST", "/v1/tasks/t-1.a/restore", "{\"seq\":4,\"accel\":\"tcg\"}", &q), 0);
    assert_int_equal(q.op, API_RESTORE);
    assert_string_equal(q.id, "t-1.a");
    assert_int_equal(json_integer_value(json_object_get(q.body, "seq")), 4);
    api_req_clear(&q);
    assert_int_equal(parse("GET", "/v1/checkpoints/t/12/verify", "", &q), 0);
    assert_int_equal(q.op, API_CKPT_VERIFY);
    assert_int_equal(q.seq, 12);
    api_req_clear(&q);
    assert_int_equal(parse("GET", "/v1/checkpoints/t/0", "", &q), VK_ENOTFOUND);
    assert_int_equal(parse("GET", "/v1/checkpoints/t/7x", "", &q), VK_ENOTFOUND);
    assert_int_equal(parse("GET", "/v1/checkpoints/t/99999999999999999999", "", &q), VK_ENOTFOUND);
    assert_int_equal(parse("PUT", "/v1/tasks", "", &q), VK_ENOTFOUND);
    assert_int_equal(parse("DELETE", "/v1/tasks/t", "", &q), 0);
    assert_int_equal(q.op, API_TASK_REMOVE);
    api_req_clear(&q);
    assert_int_equal(parse("DELETE", "/v1/tasks/t", "{\"purge\":true}", &q), 0);
    assert_true(json_is_true(json_object_get(q.body, "purge")));
    api_req_clear(&q);
    assert_int_equal(parse("DELETE", "/v1/tasks/t", "{\"purge\":1}", &q), VK_EINVAL);
    /* the console logs of a task's runs: a run number of digits only */
    assert_int_equal(parse("GET", "/v1/tasks/t/console", "", &q), 0);
    assert_int_equal(q.op, API_CONSOLE_LIST);
    api_req_clear(&q);
    assert_int_equal(parse("GET", "/v1/tasks/t/console/12", "", &q), 0);
    assert_int_equal(q.op, API_CONSOLE);
    assert_int_equal(q.seq, 12);
    api_req_clear(&q);
    assert_int_equal(parse("GET", "/v1/tasks/t/console/0", "", &q), VK_ENOTFOUND);
    assert_int_equal(parse("GET", "/v1/tasks/t/console/-1", "", &q), VK_ENOTFOUND);
    assert_int_equal(parse("GET", "/v1/tasks/t/console/1234567890", "", &q), VK_ENOTFOUND);
    assert_int_equal(parse("GET", "/v1/tasks/t/console/../../etc", "", &q), VK_ENOTFOUND);
    assert_int_equal(parse("POST", "/v1/tasks/t/console/1", "", &q), VK_ENOTFOUND);
}

static void test_wrong_types(void **state)
{
    struct api_req q;
    (void)state;
    /* Before: a string or a real "seq" read as absent: the newest checkpoint. */
    assert_int_equal(parse("POST", "/v1/tasks/t/restore", "{\"seq\":\"4\"}", &q), VK_EINVAL);
    assert_non_null(strstr(err_msg(), "'seq' must be a whole number"));
    assert_int_equal(parse("POST", "/v1/tasks/t/restore", "{\"seq\":4.0}", &q), VK_EINVAL);
    assert_int_equal(parse("POST", "/v1/tasks/t/restore", "{\"seq\":-1}", &q), VK_EINVAL);
    assert_int_equal(parse("POST", "/v1/tasks/t/restore", "{\"latest_intact\":1}", &q), VK_EINVAL);
    assert_int_equal(parse("POST", "/v1/tasks", "{\"memory_mib\":4294967296}", &q), VK_EINVAL);
    assert_int_equal(parse("POST", "/v1/tasks", "{\"base\":7}", &q), VK_EINVAL);
    assert_int_equal(parse("POST", "/v1/tasks", "{\"bsae\":\"/x\"}", &q), VK_EINVAL);
    assert_non_null(strstr(err_msg(), "unknown request field 'bsae'"));
    assert_int_equal(parse("POST", "/v1/gc", "[1]", &q), VK_EINVAL);
    assert_int_equal(parse("POST", "/v1/gc", "{", &q), VK_EINVAL);
    assert_int_equal(parse("POST", "/v1/tasks/t/kill", "{\"now\":true}", &q), VK_EINVAL);
    assert_int_equal(api_parse("POST", "/v1/gc", "{}", API_MAX_BODY + 1, &q), VK_EINVAL);
}

static void test_bad_paths(void **state)
{
    struct api_req q;
    (void)state;
    /* Before: 200 with {"error": "out of memory"}. */
    assert_int_equal(parse("GET", "/v1/tasks/\xff", "", &q), VK_EINVAL);
    assert_non_null(strstr(err_msg(), "0xff"));
    assert_int_equal(parse("GET", "/v1/tasks/a b", "", &q), VK_EINVAL);
    assert_int_equal(parse("GET", "/v1/tasks/..", "", &q), VK_EINVAL);
    assert_int_equal(parse("POST", "/v1/tasks/.hidden/kill", "", &q), VK_EINVAL);
    char long_id[200];
    memset(long_id, 'a', sizeof(long_id));
    memcpy(long_id, "/v1/tasks/", 10);
    long_id[sizeof(long_id) - 1] = '\0';
    assert_int_equal(parse("GET", long_id, "", &q), VK_EINVAL);
}

static void test_uri_secrets(void **state)
{
    struct uri u;
    char *s = NULL;
    (void)state;
    assert_int_equal(uri_parse("ftp://bob:s3cr%40t@127.0.0.1:2121/root/dir?x=1", &u), 0);
    assert_string_equal(u.user, "bob");
    assert_string_equal(u.password, "s3cr@t");
    assert_int_equal(u.port, 2121);
    assert_string_equal(u.path, "/root/dir");
    s = uri_public(&u);
    assert_string_equal(s, "ftp://bob@127.0.0.1:2121/root/dir");
    free(s);
    uri_clear(&u);
    /* Before: printed whole when malformed, half-masked with an '@' in it. */
    assert_int_equal(uri_parse("ftp://bob:p@ss w0rd@host/x", &u), VK_EINVAL);
    assert_null(strstr(err_msg(), "w0rd"));
    assert_int_equal(uri_parse("ftp://bob:pw@host:99999/x", &u), VK_EINVAL);
    assert_null(strstr(err_msg(), "pw"));
    assert_int_equal(uri_parse("ftp://bob@host/x\n", &u), VK_EINVAL);
    assert_int_equal(uri_parse("ftp://bob@host/a%0ab", &u), VK_EINVAL);
    assert_true(uri_has_password("ftp://a:b@h/x"));
    assert_false(uri_has_password("ftp://a@h/x"));
    assert_int_equal(uri_with_password("ftp://a@h:21/x", "p@ss:/w", &s), 0);
    assert_int_equal(uri_parse(s, &u), 0);
    assert_string_equal(u.password, "p@ss:/w");
    uri_clear(&u);
    free(s);
    assert_int_equal(uri_parse("sftp://a@h/x?key=/k%20y&known_hosts=/kh", &u), 0);
    s = uri_param(&u, "key");
    assert_string_equal(s, "/k y");
    free(s);
    static const char *const allowed[] = {"key", "known_hosts", NULL};
    assert_int_equal(uri_check_params(&u, allowed), 0);
    uri_clear(&u);
    assert_int_equal(uri_parse("sftp://a@h/x?kye=/k", &u), 0);
    assert_int_equal(uri_check_params(&u, allowed), VK_EINVAL);
    assert_non_null(strstr(err_msg(), "'kye'"));
    uri_clear(&u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_bad_paths),
        cmocka_unit_test(test_uri_secrets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
