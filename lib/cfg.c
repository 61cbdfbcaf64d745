#include "cfg.h"
#include "ckpt.h"

#include "codec.h"
#include "err.h"
#include "uri.h"
#include "util.h"

#include <ini.h>
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

static int cfg_choice(char **field, const char *key, const char *value, const char *a,
                      const char *b)
{
    if (strcmp(value, a) != 0 && strcmp(value, b) != 0)
        return err_set(VK_EINVAL, "%s must be %s or %s, not '%s'", key, a, b, value);
    return cfg_str(field, value);
}

int cfg_set(struct cfg *c, const char *section, const char *key, const char *value)
{
#define IS(s, k) (!strcmp(section, s) && !strcmp(key, k))
    if (IS("agent", "state_dir"))
        return cfg_str(&c->state_dir, value);
    if (IS("agent", "socket"))
        return cfg_str(&c->socket, value);
    if (IS("agent", "group"))
        return cfg_str(&c->group, value);
    if (IS("agent", "max_connections"))
        return cfg_int(&c->max_conns, "agent.max_connections", value, 4, 65536);
    if (IS("agent", "idle_timeout"))
        return cfg_int(&c->idle_s, "agent.idle_timeout", value, 1, 3600);
    if (IS("store", "uri"))
        return cfg_str(&c->store_uri, value);
    if (IS("store", "password"))
        return cfg_str(&c->store_password, value);
    if (IS("cluster", "enabled"))
        return cfg_int(&c->cluster, "cluster.enabled", value, 0, 1);
    if (IS("cluster", "node")) /* ".tmp-" marks a store's temporary objects (FTP, SFTP) */
        return util_valid_id(value) && !strstr(value, ".tmp-") ? cfg_str(&c->node, value)
                                    : err_set(VK_EINVAL, "cluster.node '%s' is not a valid name "
                                                         "(letters, digits, '-', '_', '.')", value);
    if (IS("cluster", "lease_ms"))
        return cfg_int(&c->lease_ms, "cluster.lease_ms", value, 500, 600000);
    if (IS("cluster", "renew_ms"))
        return cfg_int(&c->renew_ms, "cluster.renew_ms", value, 100, 60000);
    if (IS("ceph", "pool"))
        return cfg_str(&c->ceph_pool, value);
    if (IS("ceph", "conf"))
        return cfg_str(&c->ceph_conf, value);
    if (IS("ceph", "client"))
        return cfg_str(&c->ceph_client, value);
    if (IS("ceph", "keyring"))
        return cfg_str(&c->ceph_keyring, value);
    if (IS("ceph", "replicas"))
        return cfg_int(&c->ceph_replicas, "ceph.replicas", value, 1, 10);
    if (IS("ceph", "timeout"))
        return cfg_int(&c->ceph_timeout, "ceph.timeout", value, 1, 3600);
    if (IS("qemu", "binary"))
        return cfg_str(&c->qemu, value);
    if (IS("qemu", "img_binary"))
        return cfg_str(&c->qemu_img, value);
    if (IS("qemu", "accel"))
        return cfg_choice(&c->accel, "qemu.accel", value, "kvm", "tcg");
    if (IS("qemu", "machine")) /* one word: QEMU would parse a comma as more options */
        return util_valid_id(value) ? cfg_str(&c->machine, value)
                                    : err_set(VK_EINVAL, "qemu.machine '%s' is not a machine "
                                                         "type name (letters, digits, '-', '_', '.')",
                                              value);
    if (IS("task", "memory_mib"))
        return cfg_int(&c->memory_mib, "task.memory_mib", value, 16, 1 << 20);
    if (IS("task", "vcpus"))
        return cfg_int(&c->vcpus, "task.vcpus", value, 1, 256);
    if (IS("task", "checkpoint_first"))
        return cfg_int(&c->first_s, "task.checkpoint_first", value, 0, 1 << 30);
    if (IS("task", "checkpoint_every"))
        return cfg_int(&c->every_s, "task.checkpoint_every", value, 0, 1 << 30);
    if (IS("task", "mode")) {
        enum ckpt_mode m;
        int rc = ckpt_mode_parse(value, "task.mode", &m);
        return rc < 0 ? rc : cfg_str(&c->mode, value);
    }
    if (IS("live", "target_stop_ms"))
        return cfg_int(&c->live_stop_ms, "live.target_stop_ms", value, 1, 60000);
    if (IS("live", "bandwidth_mib"))
        return cfg_int(&c->live_bw_mib, "live.bandwidth_mib", value, 1, 1 << 20);
    if (IS("live", "converge_s"))
        return cfg_int(&c->live_converge_s, "live.converge_s", value, 1, 86400);
    if (IS("live", "spool_pct"))
        return cfg_int(&c->live_spool_pct, "live.spool_pct", value, 100, 10000);
    if (IS("task", "kernel"))
        return cfg_str(&c->kernel, value);
    if (IS("task", "initrd"))
        return cfg_str(&c->initrd, value);
    if (IS("task", "append"))
        return cfg_str(&c->append, value);
    if (IS("data", "chunk_kib"))
        return cfg_int(&c->chunk_kib, "data.chunk_kib", value, 1, 4096);
    if (IS("data", "workers"))
        return cfg_int(&c->workers, "data.workers", value, 0, 64);
    if (IS("data", "buffer_mib"))
        return cfg_int(&c->buffer_mib, "data.buffer_mib", value, 1, 1 << 16);
    if (IS("data", "retries"))
        return cfg_int(&c->retries, "data.retries", value, 1, 100);
    if (IS("data", "codec")) {
        if (codec_by_name(value) == -2 || codec_by_name(value) == CODEC_ZERO)
            return err_set(VK_EINVAL, "data.codec must be auto, none, lz4, zstd1, zstd3 or "
                                      "zstd9, not '%s'", value);
        return cfg_str(&c->codec, value);
    }
    if (IS("data", "keep"))
        return cfg_int(&c->keep, "data.keep", value, 0, 1 << 30);
    if (IS("data", "pack_mib"))
        return cfg_int(&c->pack_mib, "data.pack_mib", value, 1, 256);
    if (IS("data", "max_chain"))
        return cfg_int(&c->max_chain, "data.max_chain", value, 0, 1 << 20);
    if (IS("data", "mode")) {
        if (strcmp(value, "dedup") != 0 && strcmp(value, "whole") != 0)
            return err_set(VK_EINVAL, "data.mode must be dedup or whole, not '%s'", value);
        c->whole = !strcmp(value, "whole");
        return 0;
    }
    if (IS("data", "gc_grace"))
        return cfg_int(&c->gc_grace_s, "data.gc_grace", value, 0, 1 << 30);
#undef IS
    return err_set(VK_EINVAL, "unknown setting [%s] %s", section, key);
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
    c->memory_mib = 256;
    c->vcpus = 1;
    c->chunk_kib = 32;
    c->workers = 0; /* auto: see repo_open */
    c->buffer_mib = 64;
    c->retries = 5;
    c->keep = 0;
    c->max_chain = 8;
    c->ceph_replicas = 3;
    c->max_conns = 256;
    c->idle_s = 10;
    c->lease_ms = 10000;
    c->renew_ms = 2000;
    c->ceph_timeout = 30;
    c->pack_mib = 8;
    c->gc_grace_s = 3600;
    c->live_stop_ms = 20;
    c->live_bw_mib = 10240;
    c->live_converge_s = 30;
    c->live_spool_pct = 200;
    if (cfg_str(&c->state_dir, "/var/lib/vmckpt") < 0 || cfg_str(&c->qemu, "qemu-system-x86_64") < 0 ||
        cfg_str(&c->qemu_img, "qemu-img") < 0 || cfg_str(&c->accel, "kvm") < 0 ||
        cfg_str(&c->machine, "pc") < 0 || cfg_str(&c->mode, "auto") < 0 ||
        cfg_str(&c->append, "console=ttyS0 quiet") < 0 || cfg_str(&c->codec, "auto") < 0) {
        rc = VK_ENOMEM;
        goto out;
    }
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
    free(c->state_dir);
    free(c->socket);
    free(c->store_password);
    free(c->group);
    free(c->store_uri);
    free(c->ceph_pool);
    free(c->node);
    free(c->ceph_conf);
    free(c->ceph_client);
    free(c->ceph_keyring);
    free(c->qemu);
    free(c->qemu_img);
    free(c->accel);
    free(c->machine);
    free(c->mode);
    free(c->kernel);
    free(c->initrd);
    free(c->append);
    free(c->codec);
    free(c);
}
