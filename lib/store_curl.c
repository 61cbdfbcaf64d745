/* store_curl: FTP and SFTP backends through libcurl (the paper's baselines).
 *
 *   ftp://USER:PASSWORD@HOST:PORT/DIR
 *   sftp://USER@HOST:PORT/ABSOLUTE/DIR?key=PRIVATE_KEY&known_hosts=FILE
 *
 * An object is uploaded under a temporary name in its directory and renamed
 * into place, so a reader never sees half of it; directories are made on the
 * way. The writer keeps the object in memory until commit (objects are packs
 * of a few MiB, indexes and manifests). Reads are ranged downloads; many may
 * run at once, each on a connection taken from a small pool. A server that
 * does not answer within the timeout gives an error naming it, never a hang.
 * Listings come from LIST (ls -l lines), so their times are good to a minute;
 * they are rounded up, which errs on the side of keeping an object. */
#include "err.h"
#include "log.h"
#include "store.h"
#include "testhook.h"
#include "uri.h"
#include "util.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

extern const struct store_ops store_ftp_ops, store_sftp_ops;

#define CURL_POOL 16
#define CURL_TIMEOUT_S 15 /* connect, and longest stall of a transfer */

struct curl_store {
    struct store base;
    int sftp;
    char *url;  /* scheme://user:pass@host:port/dir, no trailing '/', no query */
    char *path; /* the directory as commands name it: absolute (SFTP; FTP: from the
                 * login directory, which curl_probe asks for) */
    char *key, *pubkey, *known_hosts;
    pthread_mutex_t lock;
    CURL *pool[CURL_POOL];
    int npool;
};

struct curl_writer {
    struct store_writer base;
    unsigned char *buf;
    size_t len, cap;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

/* ---- URI --------------------------------------------------------------------- */

static const char *const curl_ftp_params[] = {NULL};
static const char *const curl_sftp_params[] = {"key", "known_hosts", "host_key_check", NULL};

static void curl_free_store(struct store *s)
{
    struct curl_store *c = (struct curl_store *)s;
    if (!c)
        return;
    for (int i = 0; i < c->npool; i++)
        curl_easy_cleanup(c->pool[i]);
    pthread_mutex_destroy(&c->lock);
    free(c->url);
    free(c->path);
    free(c->key);
    free(c->pubkey);
    free(c->known_hosts);
    free(c->base.uri);
    free(c);
}

static int curl_probe(struct curl_store *c);

/* Fills c from uri (checked with uri_parse). */
static int curl_from_uri(struct curl_store *c, const char *uri, const struct uri *u)
{
    const char *q = strchr(uri, '?'); /* uri parsed: no '?' before its query */
    int rc = uri_check_params(u, c->sftp ? curl_sftp_params : curl_ftp_params);
    if (rc < 0)
        return rc;
    c->base.uri = uri_public(u);
    c->url = strndup(uri, q ? (size_t)(q - uri) : strlen(uri));
    while (c->url && strlen(c->url) > 1 && c->url[strlen(c->url) - 1] == '/')
        c->url[strlen(c->url) - 1] = '\0';
    c->path = strdup(u->path);
    while (c->path && strlen(c->path) > 1 && c->path[strlen(c->path) - 1] == '/')
        c->path[strlen(c->path) - 1] = '\0';
    c->key = uri_param(u, "key");
    c->known_hosts = uri_param(u, "known_hosts");
    c->pubkey = c->key ? util_fmt("%s.pub", c->key) : NULL;
    if (!c->base.uri || !c->url || !c->path || (c->key && !c->pubkey))
        return err_set(VK_ENOMEM, "out of memory");
    if (c->sftp && !c->known_hosts) {
        char *check = uri_param(u, "host_key_check");
        int off = check && !strcmp(check, "no");
        free(check);
        if (!off)
            return err_set(VK_EINVAL, "store %s: no known_hosts=FILE given, so the server's host "
                                      "key would not be checked; add known_hosts=FILE (or "
                                      "host_key_check=no to accept any server)", c->base.uri);
        log_warn("store %s: the server's host key is not checked (host_key_check=no)",
                 c->base.uri);
    }
    return 0;
}

static int curl_open_any(const char *uri, int sftp, struct store **out)
{
    struct curl_store *c;
    struct uri u;
    int rc;

    *out = NULL;
    pthread_once(&curl_once, curl_init_once);
    const char *rest = strstr(uri, "://");
    if (!rest || !strchr(rest + 3, '/'))
        return err_set(VK_EINVAL, "%s store: expected %s://USER@HOST:PORT/DIR", sftp ? "sftp" : "ftp",
                       sftp ? "sftp" : "ftp");
    if ((rc = uri_parse(uri, &u)) < 0)
        return err_wrap(rc, "%s store", sftp ? "sftp" : "ftp");
    c = calloc(1, sizeof(*c));
    if (!c) {
        uri_clear(&u);
        return err_set(VK_ENOMEM, "out of memory");
    }
    pthread_mutex_init(&c->lock, NULL);
    c->base.ops = sftp ? &store_sftp_ops : &store_ftp_ops;
    c->sftp = sftp;
    rc = curl_from_uri(c, uri, &u);
    uri_clear(&u);
    if (rc == 0)
        rc = curl_probe(c);
    if (rc < 0) {
        curl_free_store(&c->base);
        return rc;
    }
    *out = &c->base;
    return 0;
}

static int curl_open_ftp(const char *uri, struct store **out) { return curl_open_any(uri, 0, out); }
static int curl_open_sftp(const char *uri, struct store **out) { return curl_open_any(uri, 1, out); }

/* ---- handles ------------------------------------------------------------------- */

static size_t curl_discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return size * n;
}

static CURL *curl_get(struct curl_store *c, const char *url, char errbuf[CURL_ERROR_SIZE])
{
    CURL *h = NULL;
    pthread_mutex_lock(&c->lock);
    if (c->npool > 0)
        h = c->pool[--c->npool];
    pthread_mutex_unlock(&c->lock);
    if (!h && !(h = curl_easy_init()))
        return NULL;
    curl_easy_reset(h); /* keeps the connection, drops the options */
    errbuf[0] = '\0';
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, curl_discard); /* NOBODY answers, say */
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, (long)CURL_TIMEOUT_S);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, (long)CURL_TIMEOUT_S);
    curl_easy_setopt(h, CURLOPT_SERVER_RESPONSE_TIMEOUT, (long)CURL_TIMEOUT_S);
    if (c->key) {
        curl_easy_setopt(h, CURLOPT_SSH_PRIVATE_KEYFILE, c->key);
        curl_easy_setopt(h, CURLOPT_SSH_PUBLIC_KEYFILE, c->pubkey);
        curl_easy_setopt(h, CURLOPT_SSH_AUTH_TYPES, (long)CURLSSH_AUTH_PUBLICKEY);
    }
    if (c->known_hosts)
        curl_easy_setopt(h, CURLOPT_SSH_KNOWNHOSTS, c->known_hosts);
    return h;
}

static void curl_put_back(struct curl_store *c, CURL *h, CURLcode res)
{
    pthread_mutex_lock(&c->lock);
    /* A handle whose transfer failed may hold a broken connection: drop it. */
    if (res == CURLE_OK && c->npool < CURL_POOL) {
        c->pool[c->npool++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&c->lock);
    if (h)
        curl_easy_cleanup(h);
}

static int curl_is_missing(CURLcode res, long code)
{
    return res == CURLE_REMOTE_FILE_NOT_FOUND || code == 550 ||
           (res == CURLE_QUOTE_ERROR && code == 550);
}

/* An error message naming the store, the object and what libcurl said. */
static int curl_fail(struct curl_store *c, CURLcode res, const char *errbuf, const char *what,
                     const char *name)
{
    /* Refused logins and permissions are settings to fix: retrying will not help. */
    int code = res == CURLE_LOGIN_DENIED || res == CURLE_REMOTE_ACCESS_DENIED ? VK_EINVAL
               : res == CURLE_REMOTE_DISK_FULL                               ? VK_ENOSPC
                                                                             : VK_EIO;
    return err_set(code, "store %s: cannot %s %s: %s%s%s", c->base.uri, what, name,
                   curl_easy_strerror(res), errbuf[0] ? ": " : "", errbuf);
}

static char *curl_obj_url(struct curl_store *c, const char *name)
{
    return util_fmt("%s/%s", c->url, name);
}

/* ---- reads ------------------------------------------------------------------------ */

struct curl_sink {
    unsigned char *buf;
    size_t cap, got;
};

static size_t curl_sink_write(char *p, size_t size, size_t n, void *arg)
{
    struct curl_sink *s = arg;
    size_t len = size * n, take = len > s->cap - s->got ? s->cap - s->got : len;
    memcpy(s->buf + s->got, p, take);
    s->got += take;
    return take == len ? len : 0; /* more than asked for: stop the transfer */
}

static int curl_stat_h(struct curl_store *c, const char *name, uint64_t *size, int64_t *mtime);

static int curl_read(struct store *s, const char *name, uint64_t off, void *buf, size_t len,
                     size_t *out_got)
{
    struct curl_store *c = (struct curl_store *)s;
    struct curl_sink sink = {.buf = buf, .cap = len};
    char errbuf[CURL_ERROR_SIZE], range[64], *url = curl_obj_url(c, name);
    uint64_t size = 0;
    long code = 0;
    int rc;

    *out_got = 0;
    if (!url)
        return err_set(VK_ENOMEM, "out of memory");
    if (len == 0 || off > 0) {
        /* A range at or past the end is an error to the servers: ask the size. */
        rc = curl_stat_h(c, name, &size, NULL);
        if (rc < 0 || off >= size || len == 0) {
            free(url);
            return rc;
        }
    }
    CURL *h = curl_get(c, url, errbuf);
    if (!h) {
        free(url);
        return err_set(VK_ENOMEM, "out of memory");
    }
    /* A ranged FTP transfer ends with ABOR and a new login for the next one:
     * from the start, read plainly and stop at len (most reads are whole packs). */
    snprintf(range, sizeof(range), "%llu-%llu", (unsigned long long)off,
             (unsigned long long)(off + len - 1));
    if (off > 0 || c->sftp)
        curl_easy_setopt(h, CURLOPT_RANGE, range);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, curl_sink_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &sink);
    CURLcode res = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    if (res == CURLE_WRITE_ERROR && sink.got == len)
        res = CURLE_OK; /* we stopped it: the range was served */
    if (res == CURLE_OK)
        rc = 0;
    else if (curl_is_missing(res, code))
        rc = err_set(VK_ENOTFOUND, "store %s: object %s does not exist", c->base.uri, name);
    else
        rc = curl_fail(c, res, errbuf, "read", name);
    curl_put_back(c, h, res == CURLE_OK && sink.got == len ? CURLE_OK : CURLE_ABORTED_BY_CALLBACK);
    *out_got = sink.got;
    free(url);
    return rc;
}

static int curl_stat_h(struct curl_store *c, const char *name, uint64_t *size, int64_t *mtime)
{
    char errbuf[CURL_ERROR_SIZE], *url = curl_obj_url(c, name);
    curl_off_t len = -1, t = -1;
    long code = 0;
    int rc = 0;
    CURL *h = url ? curl_get(c, url, errbuf) : NULL;
    if (!h) {
        free(url);
        return err_set(VK_ENOMEM, "out of memory");
    }
    curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(h, CURLOPT_FILETIME, 1L);
    CURLcode res = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_getinfo(h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &len);
    curl_easy_getinfo(h, CURLINFO_FILETIME_T, &t);
    if (res == CURLE_OK && len < 0) /* SFTP: a directory, say */
        res = CURLE_REMOTE_FILE_NOT_FOUND;
    if (curl_is_missing(res, code) || res == CURLE_FTP_COULDNT_RETR_FILE)
        rc = err_set(VK_ENOTFOUND, "store %s: object %s does not exist", c->base.uri, name);
    else if (res != CURLE_OK)
        rc = curl_fail(c, res, errbuf, "look up", name);
    if (rc == 0 && size)
        *size = (uint64_t)len;
    if (rc == 0 && mtime)
        *mtime = (int64_t)t;
    curl_put_back(c, h, res == CURLE_OK || rc == VK_ENOTFOUND ? CURLE_OK : res);
    free(url);
    return rc;
}

static int curl_stat(struct store *s, const char *name, uint64_t *out_size)
{
    return curl_stat_h((struct curl_store *)s, name, out_size, NULL);
}

/* Checks at open that the server answers and the directory can be listed or made. */
static int curl_probe(struct curl_store *c)
{
    char errbuf[CURL_ERROR_SIZE], *url = util_fmt("%s/", c->url);
    CURL *h = url ? curl_get(c, url, errbuf) : NULL;
    if (!h) {
        free(url);
        return err_set(VK_ENOMEM, "out of memory");
    }
    curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(h, CURLOPT_FTP_CREATE_MISSING_DIRS, (long)CURLFTP_CREATE_DIR_RETRY);
    CURLcode res = curl_easy_perform(h);
    int rc = res == CURLE_OK ? 0 : curl_fail(c, res, errbuf, "open", "its directory");
    const char *entry = NULL;
    if (rc == 0 && !c->sftp) {
        /* A pooled FTP connection may be in any directory: commands we send
         * ourselves (DELE) use absolute paths, from the login directory. */
        curl_easy_getinfo(h, CURLINFO_FTP_ENTRY_PATH, &entry);
        char *abs = util_fmt("%s%s", entry && strcmp(entry, "/") ? entry : "", c->path);
        if (!abs)
            rc = err_set(VK_ENOMEM, "out of memory");
        free(c->path);
        c->path = abs;
    }
    curl_put_back(c, h, res);
    free(url);
    return rc;
}

/* ---- writes ------------------------------------------------------------------------ */

static int curl_put_begin(struct store *s, const char *name, struct store_writer **out)
{
    struct curl_writer *w = calloc(1, sizeof(*w));
    if (!w || !(w->base.name = strdup(name))) {
        free(w);
        return err_set(VK_ENOMEM, "out of memory");
    }
    w->base.store = s;
    *out = &w->base;
    return 0;
}

static int curl_put_write(struct store_writer *sw, const void *data, size_t len)
{
    struct curl_writer *w = (struct curl_writer *)sw;
    if (w->len + len > w->cap) {
        size_t ncap = w->cap ? w->cap : 65536;
        while (ncap < w->len + len)
            ncap *= 2;
        unsigned char *nb = realloc(w->buf, ncap);
        if (!nb)
            return err_set(VK_ENOMEM, "out of memory");
        w->buf = nb;
        w->cap = ncap;
    }
    memcpy(w->buf + w->len, data, len);
    w->len += len;
    return 0;
}

struct curl_source {
    const unsigned char *buf;
    size_t len, off;
};

static size_t curl_source_read(char *p, size_t size, size_t n, void *arg)
{
    struct curl_source *src = arg;
    size_t take = size * n < src->len - src->off ? size * n : src->len - src->off;
    memcpy(p, src->buf + src->off, take);
    src->off += take;
    return take;
}

static void curl_writer_free(struct curl_writer *w)
{
    if (!w)
        return;
    free(w->buf);
    free(w->base.name);
    free(w);
}

/* Uploads to NAME.tmp-<random> and renames it NAME with a command sent after
 * the transfer, in the same session. */
static int curl_put_commit(struct store_writer *sw)
{
    struct curl_writer *w = (struct curl_writer *)sw;
    struct curl_store *c = (struct curl_store *)sw->store;
    const char *name = sw->name, *base = strrchr(name, '/') ? strrchr(name, '/') + 1 : name;
    unsigned char rnd[6];
    char tag[16], errbuf[CURL_ERROR_SIZE], *tmp, *url, *cmd1, *cmd2, *cmd3 = NULL;
    struct curl_source src = {.buf = w->buf, .len = w->len};
    struct curl_slist *post = NULL;
    long code = 0;
    int rc;

    if (sw->exclusive) { /* SFTP's rename below never replaces; FTP can only look first */
        rc = curl_stat_h(c, name, NULL, NULL);
        if (rc == 0)
            rc = err_set(VK_EEXISTS, "store %s: object %s exists already", c->base.uri, name);
        if (rc != VK_ENOTFOUND) {
            curl_writer_free(w); /* (name is the writer's: the message is set first) */
            return rc;
        }
        err_clear();
    }
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        memset(rnd, 0x5a, sizeof(rnd));
    util_hex(rnd, sizeof(rnd), tag);
    tmp = util_fmt("%s.tmp-%s", name, tag);
    url = tmp ? curl_obj_url(c, tmp) : NULL;
    if (c->sftp) { /* absolute paths; OpenSSH will not rename over a file */
        cmd1 = sw->exclusive ? util_fmt("*pwd") : util_fmt("*rm %s/%s", c->path, name);
        cmd2 = util_fmt("rename %s/%s %s/%s", c->path, tmp, c->path, name);
    } else { /* after the upload the session is in the object's directory */
        cmd1 = util_fmt("RNFR %s.tmp-%s", base, tag);
        cmd2 = util_fmt("RNTO %s", base);
    }
    CURL *h = url && cmd1 && cmd2 ? curl_get(c, url, errbuf) : NULL;
    if (!h) {
        rc = err_set(VK_ENOMEM, "out of memory");
        goto out;
    }
    post = curl_slist_append(curl_slist_append(NULL, cmd1), cmd2);
    curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(h, CURLOPT_READFUNCTION, curl_source_read);
    curl_easy_setopt(h, CURLOPT_READDATA, &src);
    curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)w->len);
    curl_easy_setopt(h, CURLOPT_FTP_CREATE_MISSING_DIRS, (long)CURLFTP_CREATE_DIR_RETRY);
    curl_easy_setopt(h, CURLOPT_POSTQUOTE, post);
    long bps = testhook_num("VMCKPT_TEST_SEND_BPS"); /* tests: a slow link to cut */
    if (bps > 0)
        curl_easy_setopt(h, CURLOPT_MAX_SEND_SPEED_LARGE, (curl_off_t)bps);
    CURLcode res = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    rc = res == CURLE_OK ? 0 : curl_fail(c, res, errbuf, "write", name);
    curl_put_back(c, h, res);
    if (rc < 0 && res != CURLE_COULDNT_CONNECT) { /* best effort: no temporary left */
        cmd3 = c->sftp ? util_fmt("*rm %s/%s", c->path, tmp) : util_fmt("*DELE %s/%s", c->path, tmp);
        char *root = util_fmt("%s/", c->url), eb2[CURL_ERROR_SIZE];
        struct curl_slist *q = cmd3 ? curl_slist_append(NULL, cmd3) : NULL;
        CURL *h2 = root && q ? curl_get(c, root, eb2) : NULL;
        if (h2) {
            curl_easy_setopt(h2, CURLOPT_NOBODY, 1L);
            curl_easy_setopt(h2, CURLOPT_QUOTE, q);
            curl_put_back(c, h2, curl_easy_perform(h2));
        }
        curl_slist_free_all(q);
        free(root);
    }
out:
    curl_slist_free_all(post);
    free(tmp);
    free(url);
    free(cmd1);
    free(cmd2);
    free(cmd3);
    curl_writer_free(w);
    return rc;
}

static void curl_put_abort(struct store_writer *sw)
{
    curl_writer_free((struct curl_writer *)sw);
}

static int curl_remove(struct store *s, const char *name)
{
    struct curl_store *c = (struct curl_store *)s;
    char errbuf[CURL_ERROR_SIZE], *root = util_fmt("%s/", c->url);
    char *cmd = util_fmt(c->sftp ? "rm %s/%s" : "DELE %s/%s", c->path, name);
    int rc = curl_stat_h(c, name, NULL, NULL); /* so that a missing object says so */
    if (rc < 0 || !root || !cmd) {
        free(root);
        free(cmd);
        return rc < 0 ? rc : err_set(VK_ENOMEM, "out of memory");
    }
    struct curl_slist *q = curl_slist_append(NULL, cmd);
    CURL *h = curl_get(c, root, errbuf);
    if (!h) {
        curl_slist_free_all(q);
        free(root);
        free(cmd);
        return err_set(VK_ENOMEM, "out of memory");
    }
    curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(h, CURLOPT_QUOTE, q);
    CURLcode res = curl_easy_perform(h);
    rc = res == CURLE_OK ? 0 : curl_fail(c, res, errbuf, "delete", name);
    curl_put_back(c, h, res);
    curl_slist_free_all(q);
    free(root);
    free(cmd);
    return rc;
}

/* ---- listing ------------------------------------------------------------------------ */

struct curl_text {
    char *p;
    size_t len, cap;
    int too_big;
};

/* A directory listing is read to at most this: the server is not trusted,
 * and a store's largest directory (packs/XX at a million packs) lists in
 * a few MiB. */
#define CURL_LIST_MAX ((size_t)256 << 20)

static size_t curl_text_write(char *p, size_t size, size_t n, void *arg)
{
    struct curl_text *t = arg;
    size_t len = size * n;
    if (len > CURL_LIST_MAX - t->len - 1) {
        t->too_big = 1;
        return 0; /* ends the transfer */
    }
    if (t->len + len + 1 > t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 4096;
        while (ncap < t->len + len + 1)
            ncap *= 2;
        char *np = realloc(t->p, ncap);
        if (!np)
            return 0;
        t->p = np;
        t->cap = ncap;
    }
    memcpy(t->p + t->len, p, len);
    t->len += len;
    t->p[t->len] = '\0';
    return len;
}

/* The time of an ls -l line ("Nov 25 10:20" or "Nov 25  2025"), rounded up to
 * the end of its minute. */
static int64_t curl_ls_time(const char *mon, int day, const char *hm_or_year)
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    const char *m = strstr(months, mon);
    time_t now = time(NULL);
    struct tm tm = {0}, tnow;
    gmtime_r(&now, &tnow);
    if (!m || strlen(mon) != 3)
        return 0;
    tm.tm_mon = (int)(m - months) / 3;
    tm.tm_mday = day;
    if (strchr(hm_or_year, ':')) {
        sscanf(hm_or_year, "%d:%d", &tm.tm_hour, &tm.tm_min);
        tm.tm_year = tnow.tm_year;
        if (timegm(&tm) > now + 86400) /* a date in the future is last year's */
            tm.tm_year--;
    } else {
        tm.tm_year = atoi(hm_or_year) - 1900;
    }
    return (int64_t)timegm(&tm) + 59;
}

struct curl_walk {
    struct curl_store *c;
    const char *prefix;
    store_list_fn fn;
    void *arg;
};

static int curl_walk_dir(struct curl_walk *wk, const char *dir, int depth);

/* One line of a LIST answer: recurse into directories, report files. */
static int curl_walk_line(struct curl_walk *wk, const char *dir, char *line, int depth)
{
    char perms[16], mon[8], when[8], name[256];
    unsigned long long size;
    int day, pos = 0;
    if (sscanf(line, "%15s %*s %*s %*s %llu %7s %d %7s %n", perms, &size, mon, &day, when,
               &pos) != 5 ||
        pos == 0)
        return 0;
    snprintf(name, sizeof(name), "%s", line + pos);
    name[strcspn(name, "\r\n")] = '\0';
    if (!strcmp(name, ".") || !strcmp(name, "..") || strstr(name, ".tmp-"))
        return 0;
    char *full = util_fmt("%s%s%s", dir, dir[0] ? "/" : "", name);
    int rc = 0;
    if (!full)
        return err_set(VK_ENOMEM, "out of memory");
    size_t pl = strlen(wk->prefix), fl = strlen(full);
    if (perms[0] == 'd') {
        /* Only into directories that can hold names with the prefix. */
        if (strncmp(full, wk->prefix, fl < pl ? fl : pl) == 0 && depth < 8)
            rc = curl_walk_dir(wk, full, depth + 1);
    } else if (perms[0] == '-' && strncmp(full, wk->prefix, pl) == 0) {
        rc = wk->fn(wk->arg, full, (uint64_t)size, curl_ls_time(mon, day, when));
    }
    free(full);
    return rc;
}

static int curl_walk_dir(struct curl_walk *wk, const char *dir, int depth)
{
    struct curl_store *c = wk->c;
    struct curl_text t = {0};
    char errbuf[CURL_ERROR_SIZE], *url = util_fmt("%s/%s%s", c->url, dir, dir[0] ? "/" : "");
    long code = 0;
    int rc = 0;
    CURL *h = url ? curl_get(c, url, errbuf) : NULL;
    if (!h) {
        free(url);
        return err_set(VK_ENOMEM, "out of memory");
    }
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, curl_text_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &t);
    CURLcode res = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_put_back(c, h, res);
    free(url);
    if (t.too_big) {
        free(t.p);
        return err_set(VK_EIO, "store %s: the listing of %s is longer than %zu MiB: not read",
                       c->base.uri, dir[0] ? dir : "its directory", CURL_LIST_MAX >> 20);
    }
    if (res != CURLE_OK) {
        free(t.p);
        /* A directory not made yet holds nothing. */
        if (res == CURLE_REMOTE_ACCESS_DENIED || curl_is_missing(res, code))
            return 0;
        return curl_fail(c, res, errbuf, "list", dir[0] ? dir : "its directory");
    }
    for (char *line = t.p, *next; rc == 0 && line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        rc = curl_walk_line(wk, dir, line, depth);
    }
    free(t.p);
    return rc;
}

static int curl_list(struct store *s, const char *prefix, store_list_fn fn, void *arg)
{
    struct curl_walk wk = {(struct curl_store *)s, prefix, fn, arg};
    const char *slash = strrchr(prefix, '/');
    char *dir = slash ? strndup(prefix, (size_t)(slash - prefix)) : strdup("");
    int rc = dir ? curl_walk_dir(&wk, dir, 0) : err_set(VK_ENOMEM, "out of memory");
    free(dir);
    return rc;
}

/* A range read is a new transfer: on FTP a REST, a RETR and a data
 * connection (several round trips), on SFTP an open, a seek and a read. */
#define CURL_OPS(var, sch, openfn, gap)                                                        \
    const struct store_ops var = {                                                             \
        .version = STORE_OPS_VERSION,                                                          \
        .scheme = sch,                                                                         \
        .read_gap = gap,                                                                       \
        .open = openfn,                                                                        \
        .free = curl_free_store,                                                               \
        .put_begin = curl_put_begin,                                                           \
        .put_write = curl_put_write,                                                           \
        .put_commit = curl_put_commit,                                                         \
        .put_abort = curl_put_abort,                                                           \
        .read = curl_read,                                                                     \
        .stat = curl_stat,                                                                     \
        .list = curl_list,                                                                     \
        .remove = curl_remove,                                                                 \
        .sync = NULL,                                                                          \
    }

CURL_OPS(store_ftp_ops, "ftp", curl_open_ftp, 1u << 20);
CURL_OPS(store_sftp_ops, "sftp", curl_open_sftp, 512u << 10);
