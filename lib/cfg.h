/* cfg: settings, from defaults, an INI file and overrides.
 *
 * Every setting has a default that works on one machine with the directory
 * store; see the README for the list. */
#ifndef VMCKPT_CFG_H
#define VMCKPT_CFG_H

#define CFG_AUTO (-1) /* checkpoint_every = auto */

#include <stdio.h>

struct cfg {
    char *state_dir; /* [agent] state_dir: tasks, run directories, blob cache */
    char *socket;    /* [agent] socket: the API's UNIX socket */
    char *group;     /* [agent] group: a group allowed to use the socket (0660), or NULL */
    int max_conns;   /* [agent] max_connections: API connections at once */
    int idle_s;      /* [agent] idle_timeout: seconds an API connection may sit idle */
    char *store_uri; /* [store] uri */
    char *store_password; /* [store] password, or $VMCKPT_STORE_PASSWORD: never on a command line */
    /* [ceph] pool, conf, client, keyring, replicas, timeout: the rados:// store
     * when [store] uri is not set */
    char *ceph_pool, *ceph_conf, *ceph_client, *ceph_keyring;
    int ceph_replicas, ceph_timeout;
    char *qemu;      /* [qemu] binary */
    char *qemu_img;  /* [qemu] img_binary */
    char *accel;     /* [qemu] accel: kvm or tcg */
    char *machine;   /* [qemu] machine */
    int memory_mib;  /* [task] memory_mib */
    int vcpus;       /* [task] vcpus */
    int first_s;     /* [task] checkpoint_first: seconds to the first checkpoint, 0 = none */
    int every_s;     /* [task] checkpoint_every: seconds between checkpoints, 0 = none,
                      * CFG_AUTO = auto (see interval.h) */
    int mtbf_s;      /* [task] mtbf: mean time between failures, for auto */
    int max_lost_s;  /* [task] max_lost_work: auto's interval at most */
    int min_interval_s; /* [task] min_interval: auto's interval at least */
    char *mode;      /* [task] mode: auto, live, cow or stop-copy */
    char *restart;   /* [task] restart: on-crash or never */
    int restart_max; /* [task] restart_max: restarts within restart_window, at most */
    int restart_window_s; /* [task] restart_window: seconds */
    int log_keep;         /* [task] log_keep: console logs of past runs kept per task */
    int keep_local_mib;   /* [task] keep_local_mib: the newest memory image kept, up to */
    int log_max_kib;      /* [task] log_max_kib: of each, the last KiB kept */
    int log_expire_days;  /* [task] log_expire_days: a removed task's logs kept this long */
    int live_stop_ms;     /* [live] target_stop_ms: the VM stop pre-copy aims at */
    int live_bw_mib;      /* [live] bandwidth_mib: MiB/s QEMU may write to the spool */
    int live_converge_s;  /* [live] converge_s: pre-copy not done by then is given up */
    int live_spool_pct;   /* [live] spool_pct: nor once the spool is this % of memory */
    char *kernel;    /* [task] kernel */
    char *initrd;    /* [task] initrd */
    char *append;    /* [task] append: kernel command line before the workload */
    int chunk_kib;   /* [data] chunk_kib: average chunk size */
    int workers;     /* [data] workers: upload/download threads per stream */
    int buffer_mib;  /* [data] buffer_mib: chunk data in flight per stream, at most */
    int retries;     /* [data] retries: tries of a failing store operation */
    char *codec;     /* [data] codec: auto, none, lz4, zstd1, zstd3, zstd9 */
    int storage_cost; /* [data] storage_cost: CPU seconds worth one GB stored, per copy */
    int keep;        /* [data] keep: checkpoints kept per task, 0 = all */
    int pack_mib;    /* [data] pack_mib: new chunks per pack object (at most half the buffer) */
    int max_chain;   /* [data] max_chain: deltas a checkpoint may need, 0 = no limit */
    int max_local_chain; /* [data] max_local_chain: overlays of the running VM, 0 = no limit */
    int gc_grace_s;  /* [data] gc_grace: unreferenced data younger than this is kept */
    int whole;       /* [data] mode = whole: store everything every time (the paper's way) */
    int cluster;     /* [cluster] enabled: leases, failure detection, take-over */
    char *node;      /* [cluster] node: this node's name (default: the host name) */
    int lease_ms;    /* [cluster] lease_ms: a lease not renewed for this long expires */
    int renew_ms;    /* [cluster] renew_ms: heartbeat and lease renewal interval */
    int prestage;    /* [cluster] prestage: stage the checkpoints this node would take over */
    int prestage_vm; /* [cluster] prestage_vm: and start their VMs ahead, where there is room */
};

/* Defaults, then the INI file at path if path is not NULL. VK_EINVAL names
 * the file, line and setting that is wrong. *out: cfg_free(). */
int cfg_load(struct cfg **out, const char *path);
/* Sets one setting ("section", "key", "value"), checking its value. */
int cfg_set(struct cfg *c, const char *section, const char *key, const char *value);
/* Fills settings that derive from others (socket and store from state_dir). */
int cfg_finish(struct cfg *c);
void cfg_free(struct cfg *c);
/* Prints every setting, one "section.key default" a line (what
 * `vmckptd --settings` shows; the README's table is checked against it). */
void cfg_print_settings(FILE *f);

#endif
