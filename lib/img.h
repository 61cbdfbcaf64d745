/* img: disk images through qemu-img (base checks, overlays, rebasing). */
#ifndef VMCKPT_IMG_H
#define VMCKPT_IMG_H

#include <stdint.h>

/* Sets the qemu-img binary (default "qemu-img"). Not thread-safe: call at start. */
void img_set_binary(const char *path);

/* Checks that path is a usable disk image and tells its format ("qcow2" or
 * "raw", written into fmt[16]). A file named *.qcow2 that qemu-img does not
 * see as qcow2, or a qcow2 that `qemu-img check` finds damaged, is an error
 * (VK_ECORRUPT) naming the file; so is a base with a backing file or an
 * external data file (VK_EINVAL). */
int img_check_base(const char *path, char fmt[16], uint64_t *out_virtual_size);
/* Refuses (VK_EINVAL, naming it) an image of format fmt that keeps data in
 * an external data file, or has a backing file unless backing_ok: such an
 * image makes QEMU open another host file. `what` names it in messages. */
int img_check_refs(const char *path, const char *fmt, int backing_ok, const char *what);
/* Creates an empty qcow2 overlay at path on top of backing (absolute path). */
int img_create_overlay(const char *path, const char *backing, const char *backing_fmt);
/* Points path's backing file to backing, without touching data (qemu-img rebase -u). */
int img_rebase(const char *path, const char *backing, const char *backing_fmt);

/* Rebases path onto backing, copying into path every cluster in which its
 * old backing chain differs from the new one (qemu-img rebase, safe mode):
 * path then holds the union of the layers it leaves out. */
int img_rebase_merge(const char *path, const char *backing, const char *backing_fmt);

#endif
