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
