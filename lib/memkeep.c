/* memkeep: a newest checkpoint's memory image kept on this node (memkeep.h). */
#include "memkeep.h"

#include "err.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MEMKEEP_IMAGE "keep-memory.mig"
#define MEMKEEP_NOTE "keep-memory.json"
#define MEMKEEP_NOTE_MAX 4096

static char *memkeep_path(const char *dir, const char *name)
{
    return util_fmt("%s/%s", dir, name);
}

int memkeep_drop(const char *dir)
{
    char *note = memkeep_path(dir, MEMKEEP_NOTE), *image = memkeep_path(dir, MEMKEEP_IMAGE);
    int gone = 0;
    if (note)
        unlink(note); /* first: an image without its note is never used */
    if (image)
        gone = unlink(image) == 0;
    free(note);
    free(image);
    return gone;
}

int memkeep_put(const char *dir, const char *image, uint64_t seq, const struct stream_ref *mem)
{
    char *note = memkeep_path(dir, MEMKEEP_NOTE), *kept = memkeep_path(dir, MEMKEEP_IMAGE);
    char plain[UTIL_SHA256_HEX];
    uint64_t size = 0;
    json_t *j = NULL;
    char *text = NULL;
    int rc = note && kept ? 0 : err_set(VK_ENOMEM, "out of memory");
    if (rc == 0)
        unlink(note); /* the old note goes before its image is replaced */
    if (rc == 0 && rename(image, kept) < 0)
        rc = err_errno(errno, "cannot keep %s as %s", image, kept);
    if (rc == 0)
        rc = util_sha256_file(kept, plain, &size);
    if (rc == 0 && size != mem->size)
        rc = err_set(VK_ECORRUPT, "%s has %" PRIu64 " bytes, its stored stream %" PRIu64, kept,
                     size, mem->size);
    if (rc == 0) {
        j = json_pack("{s:I, s:I, s:s, s:s}", "seq", (json_int_t)seq, "size", (json_int_t)size,
                      "stream_sha256", mem->sha256, "sha256", plain);
        text = j ? json_dumps(j, JSON_COMPACT) : NULL;
        rc = text ? util_write_file_atomic(note, text, strlen(text))
                  : err_set(VK_ENOMEM, "out of memory");
    }
    json_decref(j);
    free(text);
    free(note);
    free(kept);
    return rc;
}

void memkeep_copy_clear(struct memkeep_copy *c)
{
    free(c->path);
    memset(c, 0, sizeof(*c));
}

int memkeep_find(const char *dir, uint64_t seq, const struct stream_ref *mem,
                 struct memkeep_copy *out)
{
    char *note = memkeep_path(dir, MEMKEEP_NOTE), *text = NULL;
    size_t len = 0;
    struct stat st;
    int found = 0;
    memset(out, 0, sizeof(*out));
    if (!note || util_read_tail(note, MEMKEEP_NOTE_MAX, &text, &len) < 0) {
        err_clear(); /* none kept */
        free(note);
        return 0;
    }
    json_t *j = json_loadb(text, len, 0, NULL);
    const char *stream = json_string_value(json_object_get(j, "stream_sha256"));
    const char *plain = json_string_value(json_object_get(j, "sha256"));
    if ((uint64_t)json_integer_value(json_object_get(j, "seq")) == seq &&
        (uint64_t)json_integer_value(json_object_get(j, "size")) == mem->size && stream &&
        !strcmp(stream, mem->sha256) && plain && util_is_sha256_hex(plain) &&
        (out->path = memkeep_path(dir, MEMKEEP_IMAGE)) && lstat(out->path, &st) == 0 &&
        S_ISREG(st.st_mode) && (uint64_t)st.st_size == mem->size) {
        out->size = mem->size;
        memcpy(out->sha256, plain, UTIL_SHA256_HEX);
        found = 1;
    }
    if (!found)
        memkeep_copy_clear(out);
    json_decref(j);
    free(text);
    free(note);
    return found;
}

static int memkeep_write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return err_errno(errno, "cannot write the restored stream");
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int memkeep_feed(const struct memkeep_copy *c, int fd, uint64_t *bytes)
{
    enum { BUF = 1 << 20 };
    int in = open(c->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    char *buf = malloc(BUF), hex[UTIL_SHA256_HEX];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    int rc = 0;
    *bytes = 0;
    if (in < 0)
        rc = err_errno(errno, "cannot open %s", c->path);
    else if (!ctx || !buf || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL))
        rc = err_set(VK_ENOMEM, "out of memory");
    while (rc == 0) {
        ssize_t r = read(in, buf, BUF);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            rc = err_errno(errno, "cannot read %s", c->path);
        if (r <= 0)
            break;
        if (*bytes + (uint64_t)r > c->size) /* grown since it was kept */
            rc = err_set(VK_ECORRUPT, "%s is longer than when it was kept (%" PRIu64 " bytes)",
                         c->path, c->size);
        if (rc == 0)
            rc = memkeep_write_all(fd, buf, (size_t)r);
        EVP_DigestUpdate(ctx, buf, (size_t)r);
        *bytes += (uint64_t)r;
    }
    if (rc == 0) {
        EVP_DigestFinal_ex(ctx, md, &n);
        util_hex(md, n, hex);
        if (*bytes != c->size || strcmp(hex, c->sha256))
            rc = err_set(VK_ECORRUPT, "the local copy %s does not match the checkpoint's memory "
                                      "(%" PRIu64 " bytes, SHA-256 %.12s..., not %" PRIu64
                                      " bytes, %.12s...)", c->path, *bytes, hex, c->size,
                         c->sha256);
    }
    if (in >= 0)
        close(in);
    EVP_MD_CTX_free(ctx);
    free(buf);
    return rc;
}
