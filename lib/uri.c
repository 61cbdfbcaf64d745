#include "uri.h"

#include "err.h"
#include "util.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

static const unsigned URI_FLAGS = CURLU_NON_SUPPORT_SCHEME;

void uri_clear(struct uri *u)
{
    free(u->scheme);
    free(u->user);
    free(u->password);
    free(u->host);
    free(u->path);
    free(u->query);
    memset(u, 0, sizeof(*u));
}

/* Part p of h, decoded (NULL when absent). 0, or -1 if it could not be read. */
static int uri_part(CURLU *h, CURLUPart p, unsigned flags, char **out)
{
    char *v = NULL;
    CURLUcode rc = curl_url_get(h, p, &v, flags);
    *out = NULL;
    if (rc != CURLUE_OK || !v) {
        curl_free(v);
        /* absent parts have codes of their own; anything else is an error */
        return rc == CURLUE_NO_USER || rc == CURLUE_NO_PASSWORD || rc == CURLUE_NO_PORT ||
                       rc == CURLUE_NO_QUERY || rc == CURLUE_OK
                   ? 0
                   : -1;
    }
    *out = strdup(v);
    curl_free(v);
    return *out ? 0 : -1;
}

static int uri_clean(const char *text)
{
    for (const unsigned char *p = (const unsigned char *)text; *p; p++)
        if (*p <= 0x20 || *p == 0x7f)
            return 0;
    return 1;
}

int uri_parse(const char *text, struct uri *out)
{
    CURLU *h;
    char *port = NULL;
    int bad = 0;
    memset(out, 0, sizeof(*out));
    if (!uri_clean(text))
        return err_set(VK_EINVAL, "store URI has a space or a control character");
    if (!(h = curl_url()))
        return err_set(VK_ENOMEM, "out of memory");
    if (curl_url_set(h, CURLUPART_URL, text, URI_FLAGS) != CURLUE_OK) {
        curl_url_cleanup(h);
        return err_set(VK_EINVAL, "store URI is not of the form scheme://user@host:port/dir "
                                  "(not shown: it may hold a password)");
    }
    bad |= uri_part(h, CURLUPART_SCHEME, 0, &out->scheme);
    bad |= uri_part(h, CURLUPART_USER, CURLU_URLDECODE, &out->user);
    bad |= uri_part(h, CURLUPART_PASSWORD, CURLU_URLDECODE, &out->password);
    bad |= uri_part(h, CURLUPART_HOST, 0, &out->host);
    bad |= uri_part(h, CURLUPART_PORT, 0, &port);
    bad |= uri_part(h, CURLUPART_PATH, CURLU_URLDECODE, &out->path);
    bad |= uri_part(h, CURLUPART_QUERY, 0, &out->query);
    curl_url_cleanup(h);
    if (port) {
        char *end;
        long v = strtol(port, &end, 10);
        bad |= *end || v < 1 || v > 65535;
        out->port = (int)v;
        free(port);
    }
    if (bad || !out->scheme || !out->host || !out->path) {
        uri_clear(out);
        return err_set(VK_EINVAL, "store URI is not of the form scheme://user@host:port/dir "
                                  "(not shown: it may hold a password)");
    }
    if ((out->user && !uri_clean(out->user)) || !uri_clean(out->path)) {
        uri_clear(out);
        return err_set(VK_EINVAL, "store URI: its user or path has a space or control "
                                  "character once decoded");
    }
    return 0;
}

char *uri_public(const struct uri *u)
{
    char port[16] = "";
    if (u->port)
        snprintf(port, sizeof(port), ":%d", u->port);
    return util_fmt("%s://%s%s%s%s%s", u->scheme, u->user ? u->user : "", u->user ? "@" : "",
                    u->host, port, u->path);
}

/* The parameter at p (key=value, up to '&') if its key is key. */
static char *uri_param_at(const char *p, const char *key)
{
    size_t n = strlen(key), len = strcspn(p, "&");
    int out_len = 0;
    if (len <= n || strncmp(p, key, n) || p[n] != '=')
        return NULL;
    char *v = curl_easy_unescape(NULL, p + n + 1, (int)(len - n - 1), &out_len);
    char *copy = v && (size_t)out_len == strlen(v) ? strdup(v) : NULL; /* no %00 */
    curl_free(v);
    return copy;
}

char *uri_param(const struct uri *u, const char *key)
{
    for (const char *p = u->query; p && *p; p = strchr(p, '&') ? strchr(p, '&') + 1 : NULL) {
        char *v = uri_param_at(p, key);
        if (v)
            return v;
    }
    return NULL;
}

int uri_check_params(const struct uri *u, const char *const *allowed)
{
    for (const char *p = u->query; p && *p; p = strchr(p, '&') ? strchr(p, '&') + 1 : NULL) {
        size_t klen = strcspn(p, "=&");
        int known = 0;
        for (const char *const *a = allowed; *a && !known; a++)
            known = strlen(*a) == klen && !strncmp(*a, p, klen) && p[klen] == '=';
        if (!known)
            return err_set(VK_EINVAL, "store URI: unknown or malformed parameter '%.*s'",
                           (int)(klen > 40 ? 40 : klen), p);
    }
    return 0;
}

int uri_has_password(const char *text)
{
    struct uri u;
    if (uri_parse(text, &u) < 0) {
        err_clear();
        return 0;
    }
    int has = u.password != NULL;
    uri_clear(&u);
    return has;
}

int uri_with_password(const char *text, const char *password, char **out)
{
    CURLU *h = curl_url();
    char *esc = NULL, *v = NULL;
    int rc = 0;
    *out = NULL;
    if (!h)
        return err_set(VK_ENOMEM, "out of memory");
    if (curl_url_set(h, CURLUPART_URL, text, URI_FLAGS) != CURLUE_OK)
        rc = err_set(VK_EINVAL, "store URI is not of the form scheme://user@host:port/dir");
    else if (!(esc = curl_easy_escape(NULL, password, 0)) ||
             curl_url_set(h, CURLUPART_PASSWORD, esc, 0) != CURLUE_OK ||
             curl_url_get(h, CURLUPART_URL, &v, 0) != CURLUE_OK || !(*out = strdup(v)))
        rc = err_set(VK_ENOMEM, "out of memory");
    curl_free(esc);
    curl_free(v);
    curl_url_cleanup(h);
    return rc;
}
