#include "cfg.h"
#include "ckpt.h"

#include "codec.h"
#include "err.h"
#include "uri.h"
#include "util.h"
#include "vm.h"

#include <ini.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int cfg_str(char **field, const char *value)
{
    char *s = strdup(value);
    if (!s)
        return err_set(VK_ENOMEM, "out of memory");
    free(*field);
    *field = s;
    return 0;
}

static int cfg_int(int *field, const char *key, const char *value, int min, int max)
{
    char *end;
    long v = strtol(value, &end, 10);
    if (!value[0] || *end || v < min || v > max)
        return err_set(VK_EINVAL, "%s must be a whole number from %d to %d, not '%s'", key, min,
                       max, value);
    *field = (int)v;
    return 0;
}

/* Extra checks of string settings: 0, or VK_EINVAL naming the setting. */
static int cfg_check_accel(const char *key, const char *v)
{
    return vm_accel_check(v, key);
}

static int cfg_check_machine(const char *key, const char *v)
{
    /* one word: QEMU would parse a comma as more options */
    return util_valid_id(v) ? 0
                            : err_set(VK_EINVAL, "%s '%s' is not a machine type name (letters, "
                                                 "digits, '-', '_', '.')", key, v);
}

static int cfg_check_node(const char *key, const char *v)
{
    /* ".tmp-" marks a store's temporary objects (FTP, SFTP) */
    return util_valid_id(v) && !strstr(v, ".tmp-")
               ? 0
               : err_set(VK_EINVAL, "%s '%s' is not a valid name (letters, digits, '-', '_', "
                                    "'.')", key, v);
}

static int cfg_check_mode(const char *key, const char *v)
{
    enum ckpt_mode m;
    return ckpt_mode_parse(v, key, &m);
}

static int cfg_check_restart(const char *key, const char *v)
{
    return !strcmp(v, "on-crash") || !strcmp(v, "never")
               ? 0
               : err_set(VK_EINVAL, "%s must be on-crash or never, not '%s'", key, v);
}

static int cfg_check_codec(const char *key, const char *v)
{
    int k = codec_by_name(v);
    return k != -2 && k != CODEC_ZERO
               ? 0
               : err_set(VK_EINVAL, "%s must be auto, none, lz4, zstd1, zstd3 or zstd9, not '%s'",
                         key, v);
}

enum cfg_kind {
    CFG_STR,   /* char *, checked by check when it is not NULL */
    CFG_INT,   /* int in [min, max] */
    CFG_WHOLE, /* data.mode: dedup or whole, kept as a flag */
    CFG_EVERY, /* an int in [min, max], or "auto": CFG_AUTO */
};

/* Every setting, once: what cfg_set parses, cfg_load defaults and cfg_free
 * frees all come from here. */
struct cfg_def {
    const char *section, *key;
    enum cfg_kind kind;
    size_t off; /* of the field in struct cfg */
    const char *def_str;
    int def_int, min, max;
    int (*check)(const char *key, const char *value);
};

#define S(sec, k, field, def, chk)                                                             \
    { sec, k, CFG_STR, offsetof(struct cfg, field), def, 0, 0, 0, chk }
#define I(sec, k, field, def, lo, hi)                                                          \
    { sec, k, CFG_INT, offsetof(struct cfg, field), NULL, def, lo, hi, NULL }
static const struct cfg_def cfg_defs[] = {
    S("agent", "state_dir", state_dir, "/var/lib/vmckpt", NULL),
    S("agent", "socket", socket, NULL, NULL),
    S("agent", "group", group, NULL, NULL),
    I("agent", "max_connections", max_conns, 256, 4, 65536),
    I("agent", "idle_timeout", idle_s, 10, 1, 3600),
    S("store", "uri", store_uri, NULL, NULL),
    S("store", "password", store_password, NULL, NULL),
    I("cluster", "enabled", cluster, 0, 0, 1),
    S("cluster", "node", node, NULL, cfg_check_node),
    I("cluster", "lease_ms", lease_ms, 10000, 500, 600000),
    I("cluster", "renew_ms", renew_ms, 2000, 100, 60000),
    I("cluster", "prestage", prestage, 1, 0, 1),
    I("cluster", "prestage_vm", prestage_vm, 1, 0, 1),
    S("ceph", "pool", ceph_pool, NULL, NULL),
    S("ceph", "conf", ceph_conf, NULL, NULL),
    S("ceph", "client", ceph_client, NULL, NULL),
    S("ceph", "keyring", ceph_keyring, NULL, NULL),
    I("ceph", "replicas", ceph_replicas, 3, 1, 10),
    I("ceph", "timeout", ceph_timeout, 30, 1, 3600),
    S("qemu", "binary", qemu, "qemu-system-x86_64", NULL),
    S("qemu", "img_binary", qemu_img, "qemu-img", NULL),
    S("qemu", "accel", accel, "kvm", cfg_check_accel),
    S("qemu", "machine", machine, "pc", cfg_check_machine),
    I("task", "memory_mib", memory_mib, 256, 16, 1 << 20),
    I("task", "vcpus", vcpus, 1, 1, 256),
    I("task", "checkpoint_first", first_s, 0, 0, 1 << 30),
    {"task", "checkpoint_every", CFG_EVERY, offsetof(struct cfg, every_s), NULL, 0, 0, 1 << 30,
     NULL},
    I("task", "mtbf", mtbf_s, 86400, 1, 1 << 30),
    I("task", "max_lost_work", max_lost_s, 600, 1, 1 << 30),
    I("task", "min_interval", min_interval_s, 5, 1, 1 << 30),
    S("task", "mode", mode, "auto", cfg_check_mode),
    S("task", "restart", restart, "on-crash", cfg_check_restart),
    I("task", "restart_max", restart_max, 5, 0, 64), /* RESTART_TRACK */
    I("task", "restart_window", restart_window_s, 600, 1, 30 * 86400),
    I("task", "keep_local_mib", keep_local_mib, 65536, 0, 1 << 30),
    I("task", "log_keep", log_keep, 10, 1, 1000),
    I("task", "log_max_kib", log_max_kib, 1024, 4, 1 << 20),
    I("task", "log_expire_days", log_expire_days, 7, 0, 3650),
    S("task", "kernel", kernel, NULL, NULL),
    S("task", "initrd", initrd, NULL, NULL),
    S("task", "append", append, "console=ttyS0 quiet", NULL),
    I("live", "target_stop_ms", live_stop_ms, 20, 1, 60000),
    I("live", "bandwidth_mib", live_bw_mib, 10240, 1, 1 << 20),
    I("live", "converge_s", live_converge_s, 30, 1, 86400),
    I("live", "spool_pct", live_spool_pct, 200, 100, 10000),
    I("data", "chunk_kib", chunk_kib, 32, 1, 4096),
    I("data", "workers", workers, 0, 0, 64), /* 0: auto, see repo_open */
    I("data", "buffer_mib", buffer_mib, 64, 1, 1 << 16),
    I("data", "retries", retries, 5, 1, 100),
    S("data", "codec", codec, "auto", cfg_check_codec),
    I("data", "storage_cost", storage_cost, REPO_STORAGE_COST_DEFAULT, 0, 1000000),
    I("data", "keep", keep, 0, 0, 1 << 30),
    I("data", "pack_mib", pack_mib, 8, 1, 256),
    I("data", "max_chain", max_chain, 8, 0, 1 << 20),
    I("data", "max_local_chain", max_local_chain, 4, 0, 1 << 16),
    {"data", "mode", CFG_WHOLE, offsetof(struct cfg, whole), NULL, 0, 0, 0, NULL},
    I("data", "gc_grace", gc_grace_s, 3600, 0, 1 << 30),
};
#undef S
#undef I
#define CFG_N_DEFS (sizeof(cfg_defs) / sizeof(*cfg_defs))

static int cfg_apply(struct cfg *c, const struct cfg_def *d, const char *value)
{
    char key[64];
    snprintf(key, sizeof(key), "%s.%s", d->section, d->key);
    void *field = (char *)c + d->off;
    int rc;
    switch (d->kind) {
    case CFG_INT:
        return cfg_int(field, key, value, d->min, d->max);
    case CFG_EVERY:
        if (!strcmp(value, "auto")) {
            *(int *)field = CFG_AUTO;
            return 0;
        }
        return cfg_int(field, key, value, d->min, d->max);
    case CFG_WHOLE:
        if (strcmp(value, "dedup") != 0 && strcmp(value, "whole") != 0)
            return err_set(VK_EINVAL, "%s must be dedup or whole, not '%s'", key, value);
        *(int *)field = !strcmp(value, "whole");
        return 0;
    default:
        rc = d->check ? d->check(key, value) : 0;
        return rc < 0 ? rc : cfg_str(field, value);
    }
}

int cfg_set(struct cfg *c, const char *section, const char *key, const char *value)
{
    for (size_t i = 0; i < CFG_N_DEFS; i++)
        if (!strcmp(section, cfg_defs[i].section) && !strcmp(key, cfg_defs[i].key))
            return cfg_apply(c, &cfg_defs[i], value);
    return err_set(VK_EINVAL, "unknown setting [%s] %s", section, key);
}

/* Every setting at its default. */
static int cfg_defaults(struct cfg *c)
{
    for (size_t i = 0; i < CFG_N_DEFS; i++) {
        const struct cfg_def *d = &cfg_defs[i];
        if (d->kind == CFG_INT || d->kind == CFG_EVERY)
            *(int *)((char *)c + d->off) = d->def_int;
        else if (d->kind == CFG_STR && d->def_str &&
                 cfg_str((char **)((char *)c + d->off), d->def_str) < 0)
            return VK_ENOMEM;
    }
    return 0;
}

struct cfg_parse {
    struct cfg *c;
    const char *path;
    int rc;
};

static int cfg_handler(void *arg, const char *section, const char *key, const char *value)
{
    struct cfg_parse *p = arg;
    if (p->rc < 0)
        return 0;
    p->rc = cfg_set(p->c, section, key, value);
    return p->rc == 0;
}

/* Puts the store password (setting or environment) into the URI, in this
 * process only: it is never in an argv, and stores print URIs without it. */
static int cfg_store_password(struct cfg *c)
{
    const char *env = getenv("VMCKPT_STORE_PASSWORD");
    const char *pw = c->store_password ? c->store_password : env;
    char *with = NULL;
    int rc;
    if (!pw || !*pw || !c->store_uri ||
        (strncmp(c->store_uri, "ftp://", 6) && strncmp(c->store_uri, "sftp://", 7)))
        return 0;
    if (uri_has_password(c->store_uri))
        return err_set(VK_EINVAL, "the store URI has a password and [store] password or "
                                  "VMCKPT_STORE_PASSWORD gives one too: keep one");
    rc = uri_with_password(c->store_uri, pw, &with);
    if (rc == 0) {
        free(c->store_uri);
        c->store_uri = with;
    }
    return rc;
}

int cfg_finish(struct cfg *c)
{
    if (!c->socket && !(c->socket = util_fmt("%s/vmckptd.sock", c->state_dir)))
        return err_set(VK_ENOMEM, "out of memory");
    if (!c->node) {
        char host[128] = "node";
        gethostname(host, sizeof(host) - 1);
        /* the host name is checked as a set node name is: it names
         * objects and leases. A cluster needs a real one; alone, "node". */
        if (cfg_check_node("cluster.node (the host name)", host) < 0) {
            if (c->cluster)
                return err_wrap(VK_EINVAL, "set [cluster] node");
            err_clear();
            snprintf(host, sizeof(host), "node");
        }
        if (!(c->node = strdup(host)))
            return err_set(VK_ENOMEM, "out of memory");
    }
    if (c->cluster && c->renew_ms * 3 > c->lease_ms)
        return err_set(VK_EINVAL, "cluster.renew_ms (%d) must be at most a third of "
                                  "cluster.lease_ms (%d): a lease must survive a missed renewal",
                       c->renew_ms, c->lease_ms);
    if (!c->store_uri && c->ceph_pool) {
        c->store_uri = util_fmt("rados://%s?conf=%s&id=%s&replicas=%d&timeout=%d%s%s", c->ceph_pool,
                                c->ceph_conf ? c->ceph_conf : "/etc/ceph/ceph.conf",
                                c->ceph_client ? c->ceph_client : "admin", c->ceph_replicas,
                                c->ceph_timeout, c->ceph_keyring ? "&keyring=" : "",
                                c->ceph_keyring ? c->ceph_keyring : "");
        if (!c->store_uri)
            return err_set(VK_ENOMEM, "out of memory");
    }
    if (!c->store_uri && !(c->store_uri = util_fmt("file://%s/store", c->state_dir)))
        return err_set(VK_ENOMEM, "out of memory");
    return cfg_store_password(c);
}

int cfg_load(struct cfg **out, const char *path)
{
    struct cfg *c = calloc(1, sizeof(*c));
    struct cfg_parse p = {c, path, 0};
    int rc = 0, line;

    *out = NULL;
    if (!c)
        return err_set(VK_ENOMEM, "out of memory");
    rc = cfg_defaults(c);
    if (rc < 0)
        goto out;
    if (path) {
        line = ini_parse(path, cfg_handler, &p);
        if (line < 0)
            rc = err_set(VK_ENOTFOUND, "cannot read config file %s", path);
        else if (p.rc < 0)
            rc = err_wrap(p.rc, "config file %s line %d", path, line);
        else if (line > 0)
            rc = err_set(VK_EINVAL, "config file %s line %d: not a setting", path, line);
    }
out:
    if (rc < 0) {
        cfg_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void cfg_free(struct cfg *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < CFG_N_DEFS; i++)
        if (cfg_defs[i].kind == CFG_STR)
            free(*(char **)((char *)c + cfg_defs[i].off));
    free(c);
}

void cfg_print_settings(FILE *f)
{
    for (size_t i = 0; i < CFG_N_DEFS; i++) {
        const struct cfg_def *d = &cfg_defs[i];
        if (d->kind == CFG_INT || d->kind == CFG_EVERY)
            fprintf(f, "%s.%s %d\n", d->section, d->key, d->def_int);
        else if (d->kind == CFG_WHOLE)
            fprintf(f, "%s.%s dedup\n", d->section, d->key);
        else
            fprintf(f, "%s.%s %s\n", d->section, d->key, d->def_str ? d->def_str : "-");
    }
}
