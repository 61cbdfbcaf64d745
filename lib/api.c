#include "api.h"

#include "err.h"
#include "util.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* The fields a body may have, and their JSON types: a field of the wrong
 * type, an unknown one or a number out of range is refused, never read as
 * "absent" and replaced by a default ({"seq": "4"} must not restore the
 * newest checkpoint). */
struct api_field {
    const char *key;
    char type; /* 's' string, 'i' integer 0..INT_MAX, 'b' boolean, 'e' 'i' or "auto" */
};

static const struct api_field api_run_fields[] = {
    {"id", 's'}, {"kernel", 's'}, {"initrd", 's'}, {"base", 's'}, {"work", 's'},
    {"accel", 's'}, {"mode", 's'}, {"memory_mib", 'i'}, {"vcpus", 'i'},
    {"checkpoint_first", 'i'}, {"checkpoint_every", 'e'}, {NULL, 0}};
static const struct api_field api_restore_fields[] = {
    {"seq", 'i'}, {"accel", 's'}, {"latest_intact", 'b'}, {NULL, 0}};
static const struct api_field api_gc_fields[] = {{"grace", 'i'}, {NULL, 0}};
static const struct api_field api_ckpt_fields[] = {{"mode", 's'}, {NULL, 0}};
static const struct api_field api_move_fields[] = {{"to", 's'}, {NULL, 0}};
static const struct api_field api_drain_fields[] = {{"node", 's'}, {NULL, 0}};
static const struct api_field api_remove_fields[] = {{"purge", 'b'}, {NULL, 0}};
static const struct api_field api_no_fields[] = {{NULL, 0}};

static int api_check_body(json_t *body, const struct api_field *f)
{
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v)
    {
        const struct api_field *k = f;
        while (k->key && strcmp(k->key, key))
            k++;
        if (!k->key)
            return err_set(VK_EINVAL, "unknown request field '%.64s'", key);
        if (k->type == 's' && !json_is_string(v))
            return err_set(VK_EINVAL, "request field '%s' must be a string", key);
        if (k->type == 'b' && !json_is_boolean(v))
            return err_set(VK_EINVAL, "request field '%s' must be true or false", key);
        if (k->type == 'e' && json_is_string(v) && !strcmp(json_string_value(v), "auto"))
            continue;
        if ((k->type == 'i' || k->type == 'e') &&
            (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT_MAX))
            return err_set(VK_EINVAL, "request field '%s' must be a whole number from 0 to %d%s",
                           key, INT_MAX, k->type == 'e' ? " or \"auto\"" : "");
    }
    return 0;
}

static const struct api_field *api_fields_of(enum api_op op)
{
    switch (op) {
    case API_RUN: return api_run_fields;
    case API_RESTORE: return api_restore_fields;
    case API_GC: return api_gc_fields;
    case API_CHECKPOINT: return api_ckpt_fields;
    case API_MOVE: return api_move_fields;
    case API_DRAIN: return api_drain_fields;
    case API_TASK_REMOVE: return api_remove_fields;
    default: return api_no_fields;
    }
}

/* Splits "/v1/<kind>/<id>[/<rest>]" into out->id (a valid task id) and *rest:
 * 1, 0 when url is not of that kind, VK_EINVAL when the id is not valid. */
static int api_route(const char *url, const char *kind, struct api_req *out, const char **rest)
{
    size_t k = strlen(kind);
    const char *p, *slash;
    if (strncmp(url, "/v1/", 4) || strncmp(url + 4, kind, k) || url[4 + k] != '/')
        return 0;
    p = url + 5 + k;
    slash = strchr(p, '/');
    size_t n = slash ? (size_t)(slash - p) : strlen(p);
    if (n == 0 || n >= sizeof(out->id))
        return err_set(VK_EINVAL, "request path %.100s: no valid task id in it", url);
    memcpy(out->id, p, n);
    out->id[n] = '\0';
    if (!util_valid_id(out->id))
        return err_set(VK_EINVAL, "task id '%s' is not valid (1-64 of letters, digits, '.', "
                                  "'_', '-', not starting with '.')", out->id);
    *rest = slash ? slash + 1 : "";
    return 1;
}

/* A run number: 1 to 999999999, decimal digits only, into out->seq. */
static int api_run_number(const char *s, struct api_req *out)
{
    size_t n = strspn(s, "0123456789");
    if (n == 0 || n > 9 || s[n] || s[0] == '0')
        return VK_ENOTFOUND;
    out->seq = strtoull(s, NULL, 10);
    return 0;
}

/* "SEQ" or "SEQ/verify" into out (seq >= 1, decimal digits only). */
static int api_seq(const char *rest, struct api_req *out)
{
    char *end;
    if (rest[0] < '1' || rest[0] > '9')
        return VK_ENOTFOUND;
    unsigned long long v = strtoull(rest, &end, 10);
    if (end - rest > 19)
        return VK_ENOTFOUND;
    out->seq = v;
    if (!*end)
        out->op = API_CKPT_SHOW;
    else if (!strcmp(end, "/verify"))
        out->op = API_CKPT_VERIFY;
    else
        return VK_ENOTFOUND;
    return 0;
}

static int api_route_all(const char *method, const char *url, struct api_req *out)
{
    static const struct {
        const char *method, *url;
        enum api_op op;
    } fixed[] = {{"GET", "/v1/tasks", API_LIST},          {"POST", "/v1/tasks", API_RUN},
                 {"GET", "/v1/verify", API_VERIFY_ALL},   {"POST", "/v1/gc", API_GC},
                 {"GET", "/v1/nodes", API_NODES},         {"GET", "/v1/metrics", API_METRICS_JSON},
                 {"GET", "/metrics", API_METRICS},        {"POST", "/v1/drain", API_DRAIN}};
    const char *rest;
    int get = !strcmp(method, "GET"), post = !strcmp(method, "POST"), r;
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        if (!strcmp(method, fixed[i].method) && !strcmp(url, fixed[i].url)) {
            out->op = fixed[i].op;
            return 0;
        }
    if ((r = api_route(url, "tasks", out, &rest)) != 0) {
        if (r < 0)
            return r;
        if (!rest[0] && get)
            out->op = API_TASK_SHOW;
        else if (!rest[0] && !strcmp(method, "DELETE"))
            out->op = API_TASK_REMOVE;
        else if (!strcmp(rest, "checkpoint") && post)
            out->op = API_CHECKPOINT;
        else if (!strcmp(rest, "kill") && post)
            out->op = API_KILL;
        else if (!strcmp(rest, "restore") && post)
            out->op = API_RESTORE;
        else if (!strcmp(rest, "move") && post)
            out->op = API_MOVE;
        else if (!strcmp(rest, "console") && get)
            out->op = API_CONSOLE_LIST;
        else if (!strncmp(rest, "console/", 8) && get && api_run_number(rest + 8, out) == 0)
            out->op = API_CONSOLE;
        else
            return VK_ENOTFOUND;
        return 0;
    }
    if ((r = api_route(url, "checkpoints", out, &rest)) != 0) {
        if (r < 0 || !get)
            return r < 0 ? r : VK_ENOTFOUND;
        if (!rest[0]) {
            out->op = API_CHECKPOINTS;
            return 0;
        }
        return api_seq(rest, out);
    }
    if ((r = api_route(url, "verify", out, &rest)) != 0) {
        if (r < 0 || !get || rest[0])
            return r < 0 ? r : VK_ENOTFOUND;
        out->op = API_TASK_VERIFY;
        return 0;
    }
    return VK_ENOTFOUND;
}

int api_parse(const char *method, const char *url, const char *body, size_t len,
              struct api_req *out)
{
    int rc;
    memset(out, 0, sizeof(*out));
    /* Paths name tasks and numbers: printable ASCII only (a %FF decodes to
     * a byte no reply could even quote). */
    for (const unsigned char *p = (const unsigned char *)url; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f)
            return err_set(VK_EINVAL, "request path has a byte that is not printable ASCII "
                                      "(0x%02x)", *p);
    if (strlen(url) > 1024)
        return err_set(VK_EINVAL, "request path is over 1024 bytes");
    rc = api_route_all(method, url, out);
    if (rc == VK_ENOTFOUND)
        return err_set(rc, "no such request: %.16s %s", method, url);
    if (rc < 0)
        return rc;
    if (len > API_MAX_BODY)
        return err_set(VK_EINVAL, "request body over %d bytes", API_MAX_BODY);
    if (len) {
        json_error_t jerr;
        out->body = json_loadb(body, len, 0, &jerr);
        if (!json_is_object(out->body)) {
            api_req_clear(out);
            return err_set(VK_EINVAL, "request body is not a JSON object: %s", jerr.text);
        }
    } else if (!(out->body = json_object())) {
        return err_set(VK_ENOMEM, "out of memory");
    }
    if ((rc = api_check_body(out->body, api_fields_of(out->op))) < 0)
        api_req_clear(out);
    return rc;
}

void api_req_clear(struct api_req *r)
{
    json_decref(r->body);
    r->body = NULL;
}
