/* vm: one QEMU process: its command line, start, liveness and end.
 *
 * QEMU runs in its own session so that it outlives the agent and the client
 * that started it; the agent finds it again by pid and QMP socket. */
#ifndef VMCKPT_VM_H
#define VMCKPT_VM_H

#include <sys/types.h>

#include "qmp.h"

struct vm_spec {
    const char *qemu;    /* binary, looked up in PATH */
    const char *accel;   /* "kvm" or "tcg" */
    const char *machine; /* "pc", "q35", ... */
    int memory_mib;
    int vcpus;
    const char *kernel, *initrd, *append;
    const char *disk;     /* top qcow2 overlay; its backing chain is opened read-only */
    const char *qmp_path; /* UNIX socket QEMU listens on */
    const char *serial_path;
    const char *log_path; /* QEMU's own stdout/stderr */
    const char *incoming; /* NULL, or a migration URI to load from (VM stays paused),
                           * or "defer": QEMU waits for migrate-incoming */
    int prealloc;         /* allocate the guest's memory at start (-mem-prealloc) */
};

/* 0 when accel is an accelerator vmckpt runs QEMU with ("kvm", "tcg"), else
 * VK_EINVAL naming what (a setting, a request field). The one check of it:
 * settings, API requests, restores and vm_start all ask here. */
int vm_accel_check(const char *accel, const char *what);
/* Starts QEMU; returns once it is exec'd. VK_ENOTFOUND if the binary is
 * missing, VK_EINVAL for an accelerator vm_accel_check refuses. */
int vm_start(const struct vm_spec *spec, pid_t *out_pid);
/* Connects to the QMP socket of a QEMU we started, failing fast with QEMU's own
 * last words if it exits first. *out is the caller's (qmp_free). */
int vm_connect(pid_t pid, const char *qmp_path, const char *log_path, int timeout_ms,
               struct qmp **out);
/* Merges the running VM's sealed layers from top down to base (filenames in
 * drive0's backing chain, top not the active layer) into base, while the VM
 * runs (QMP block-commit): QEMU then points the layer above top at base, and
 * the files between are no longer used. Waits for the job, at most
 * timeout_ms (then cancels it). A job cut short leaves a valid chain: what
 * it copied into base is what the layers above hold. */
int vm_merge_layers(struct qmp *q, const char *task, const char *top, const char *base,
                    int timeout_ms);
/* Waits for a merge QEMU may still run (its agent died during it), at most
 * timeout_ms, then cancels it: an agent that takes back a VM knows its
 * chain only once no merge changes it. */
int vm_merge_settle(struct qmp *q, int timeout_ms);
/* 1 while the process exists (reaps it if it is our child and has exited). */
int vm_alive(pid_t pid);
/* Sends sig and, for SIGKILL/SIGTERM, waits up to timeout_ms for the end. */
int vm_kill(pid_t pid, int sig, int timeout_ms);
/* Kills (SIGKILL) every process of this effective user one of whose
 * arguments contains dir (a run directory: QEMU names its files there), and
 * waits up to timeout_ms for each to end. For the VMs a dead agent started
 * but did not live to note. Returns how many it killed; *out_err (may be
 * NULL) 1 when /proc could not be read. */
int vm_kill_using(const char *dir, int timeout_ms, int *out_err);

#endif
