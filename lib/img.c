#include "img.h"

#include "err.h"
#include "util.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *img_bin = "qemu-img";

void img_set_binary(const char *path) { img_bin = path; }

static int img_run(char *const argv[], char **out, const char *what)
{
    int rc = util_run(argv, out);
    if (rc == VK_ENOTFOUND)
        return err_set(rc, "%s: qemu-img '%s' not found (install qemu-utils or set "
                           "qemu.img_binary)", what, img_bin);
    return rc < 0 ? err_wrap(rc, "%s", what) : 0;
}

static int img_ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* A qcow2 can name other host files: a backing file and an external data
 * file. QEMU, run as root, would open them. A base must hold its own data;
 * a delta's backing file is set by vmckpt (img_rebase) and its data must be
 * its own. info: qemu-img info's JSON. */
static int img_refuse_refs(const char *path, json_t *info, int backing_ok, const char *what)
{
    const char *b = json_string_value(json_object_get(info, "backing-filename"));
    json_t *spec = json_object_get(json_object_get(info, "format-specific"), "data");
    const char *d = json_string_value(json_object_get(spec, "data-file"));
    if (b && !backing_ok)
        return err_set(VK_EINVAL, "%s %s has a backing file (%.200s): a base image must hold "
                                  "all its data (flatten it: qemu-img convert -O qcow2 %s new.qcow2)",
                       what, path, b, path);
    if (d)
        return err_set(VK_EINVAL, "%s %s keeps its data in an external file (%.200s): vmckpt "
                                  "takes images that hold their own data",
                       what, path, d);
    return 0;
}

int img_check_refs(const char *path, const char *fmt, int backing_ok, const char *what)
{
    char *argv[] = {(char *)img_bin, "info", "--output=json", "-f", (char *)fmt, (char *)path, NULL};
    char *out = NULL;
    int rc = img_run(argv, &out, what);
    json_t *j = rc == 0 ? json_loads(out, 0, NULL) : NULL;
    if (rc == 0 && !j)
        rc = err_set(VK_EIO, "%s %s: qemu-img info gave no JSON", what, path);
    if (rc == 0)
        rc = img_refuse_refs(path, j, backing_ok, what);
    json_decref(j);
    free(out);
    return rc;
}

int img_check_base(const char *path, char fmt[16], uint64_t *out_virtual_size)
{
    char *argv[] = {(char *)img_bin, "info", "--output=json", (char *)path, NULL};
    char *out = NULL;
    json_t *j = NULL;
    const char *f;
    int rc;

    if (access(path, R_OK) < 0)
        return err_errno(errno, "base image %s", path);
    rc = img_run(argv, &out, "base image");
    if (rc < 0)
        return err_set(VK_ECORRUPT, "base image %s cannot be read as a disk image: %s", path,
                       err_msg());
    j = json_loads(out, 0, NULL);
    f = json_string_value(json_object_get(j, "format"));
    if (!f || strlen(f) >= 16 || (strcmp(f, "qcow2") != 0 && strcmp(f, "raw") != 0)) {
        rc = err_set(VK_EINVAL, "base image %s has format '%s'; vmckpt takes qcow2 or raw", path,
                     f ? f : "unknown");
        goto out;
    }
    if (strcmp(f, "raw") == 0 && img_ends_with(path, ".qcow2")) {
        rc = err_set(VK_ECORRUPT, "base image %s is named .qcow2 but holds no qcow2 header "
                                  "(damaged or not an image)", path);
        goto out;
    }
    if ((rc = img_refuse_refs(path, j, 0, "base image")) < 0)
        goto out;
    strcpy(fmt, f);
    if (out_virtual_size)
        *out_virtual_size = (uint64_t)json_integer_value(json_object_get(j, "virtual-size"));
    if (strcmp(f, "qcow2") == 0) {
        char *check[] = {(char *)img_bin, "check", "-q", "-f", "qcow2", (char *)path, NULL};
        if (img_run(check, NULL, "qemu-img check") < 0)
            rc = err_set(VK_ECORRUPT, "base image %s is damaged: %s", path, err_msg());
    }
out:
    json_decref(j);
    free(out);
    return rc;
}

int img_create_overlay(const char *path, const char *backing, const char *backing_fmt)
{
    char *argv[] = {(char *)img_bin, "create", "-q", "-f", "qcow2", "-b", (char *)backing,
                    "-F", (char *)backing_fmt, (char *)path, NULL};
    return img_run(argv, NULL, path);
}

int img_rebase(const char *path, const char *backing, const char *backing_fmt)
{
    char *argv[] = {(char *)img_bin, "rebase", "-u", "-f", "qcow2", "-b", (char *)backing,
                    "-F", (char *)backing_fmt, (char *)path, NULL};
    return img_run(argv, NULL, path);
}

int img_rebase_merge(const char *path, const char *backing, const char *backing_fmt)
{
    char *argv[] = {(char *)img_bin, "rebase", "-f", "qcow2", "-b", (char *)backing,
                    "-F", (char *)backing_fmt, (char *)path, NULL};
    return img_run(argv, NULL, path);
}
