/* vmckptd: the vmckpt node agent. Defaults -> config file -> options -> serve. */
#include "agent.h"
#include "cfg.h"
#include "err.h"
#include "log.h"
#include "store.h"
#include "uri.h"

#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>

static struct agent *the_agent;
/* The handler writes to a stop pipe of its own, never to the agent: a second
 * SIGTERM during or after agent_free() (a supervisor's, then a process
 * group's) once made the handler write into the freed agent. */
static volatile sig_atomic_t stop_fd = -1;

static void on_signal(int sig)
{
    (void)sig;
    char c = 'x';
    if (stop_fd >= 0)
        (void)!write(stop_fd, &c, 1);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: vmckptd [--config FILE] [--state-dir DIR] [--store URI] [--socket PATH]\n"
            "               [--set SECTION.KEY=VALUE]... [--debug]\n"
            "       vmckptd --settings   (every setting and its default)\n"
            "\n"
            "The vmckpt node agent: runs this node's task VMs, checkpoints them by their\n"
            "policy and serves the vmckpt client on a UNIX socket. Runs in the foreground\n"
            "and logs to stderr. SIGTERM/SIGINT stop the agent; the VMs keep running and\n"
            "the next agent on the same state directory takes them back.\n"
            "\n"
            "  --config FILE     INI settings file (see README, 'Settings')\n"
            "  --state-dir DIR   [agent] state_dir (default /var/lib/vmckpt)\n"
            "  --store URI       [store] uri (default file://STATE_DIR/store): file:///DIR,\n"
            "                    rados://POOL?conf=CEPH_CONF&id=CLIENT&keyring=FILE&replicas=N,\n"
            "                    ftp://USER@HOST:PORT/DIR (password: [store] password in\n"
            "                    the settings file or $VMCKPT_STORE_PASSWORD, never here:\n"
            "                    every user sees a command line) or\n"
            "                    sftp://USER@HOST:PORT/DIR?key=PRIVATE_KEY&known_hosts=FILE\n"
            "                    (host_key_check=no instead of known_hosts: any server)\n"
            "  --socket PATH     [agent] socket (default STATE_DIR/vmckptd.sock)\n"
            "  --set S.K=V       any setting, e.g. --set qemu.accel=tcg\n"
            "  --debug           verbose log\n"
            "\n"
            "Stores in this build: %s.\n", store_schemes());
}

static int set_opt(struct cfg *c, const char *spec)
{
    char sec[64], key[64];
    const char *dot = strchr(spec, '.'), *eq = strchr(spec, '=');
    if (!dot || !eq || dot > eq || (size_t)(dot - spec) >= sizeof(sec) ||
        (size_t)(eq - dot - 1) >= sizeof(key))
        return err_set(VK_EINVAL, "--set wants SECTION.KEY=VALUE, not '%s'", spec);
    snprintf(sec, sizeof(sec), "%.*s", (int)(dot - spec), spec);
    snprintf(key, sizeof(key), "%.*s", (int)(eq - dot - 1), dot + 1);
    return cfg_set(c, sec, key, eq + 1);
}

int main(int argc, char **argv)
{
    const char *config = NULL;
    struct cfg *c = NULL;
    int rc, i;

    /* Large blocks come and go with every checkpoint (chunk buffers, the pack
     * map's table rebuilt when GC changes packs): keep them mmapped, so that
     * freeing one gives it back. (glibc otherwise raises its mmap threshold
     * after such frees and carves later ones from the heap, which then only
     * grows: the agent's RSS drifted up over a 1000-checkpoint soak.) */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);

    /* Guest memory, disks and logs are private whatever the caller's umask;
     * QEMU and qemu-img create files under it too. */
    umask(077);

    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--settings")) {
            cfg_print_settings(stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--config") && i + 1 < argc)
            config = argv[++i];
    }
    rc = cfg_load(&c, config);
    for (i = 1; rc == 0 && i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--config") && v)
            i++;
        else if (!strcmp(a, "--state-dir") && v)
            rc = cfg_set(c, "agent", "state_dir", argv[++i]);
        else if (!strcmp(a, "--store") && v && uri_has_password(v))
            rc = err_set(VK_EINVAL, "--store: the URI holds a password, which every user of this "
                                    "host can read on a command line (ps); put it in [store] "
                                    "password in the settings file or in VMCKPT_STORE_PASSWORD");
        else if (!strcmp(a, "--store") && v)
            rc = cfg_set(c, "store", "uri", argv[++i]);
        else if (!strcmp(a, "--set") && v && !strncmp(v, "store.uri=", 10) &&
                 uri_has_password(v + 10))
            rc = err_set(VK_EINVAL, "--set store.uri: the URI holds a password, which every "
                                    "user of this host can read on a command line (ps); put it "
                                    "in [store] password in the settings file or in "
                                    "VMCKPT_STORE_PASSWORD");
        else if (!strcmp(a, "--set") && v && !strncmp(v, "store.password=", 15))
            rc = err_set(VK_EINVAL, "--set store.password: a password on a command line is "
                                    "readable by every user (ps); use the settings file or "
                                    "VMCKPT_STORE_PASSWORD");
        else if (!strcmp(a, "--socket") && v)
            rc = cfg_set(c, "agent", "socket", argv[++i]);
        else if (!strcmp(a, "--set") && v)
            rc = set_opt(c, argv[++i]);
        else if (!strcmp(a, "--debug"))
            log_set_level(LOG_LVL_DEBUG);
        else {
            usage(stderr);
            rc = err_set(VK_EINVAL, "unknown or incomplete option '%s'", a);
        }
    }
    if (rc == 0)
        rc = cfg_finish(c);
    if (rc == 0) {
        signal(SIGPIPE, SIG_IGN);
        rc = agent_open(&the_agent, c);
    }
    if (rc < 0) {
        fprintf(stderr, "vmckptd: %s\n", err_msg());
        cfg_free(c);
        return 1;
    }
    int fd = agent_stop_fd(the_agent);
    if (fd < 0) {
        fprintf(stderr, "vmckptd: %s\n", err_msg());
        agent_free(the_agent);
        cfg_free(c);
        return 1;
    }
    stop_fd = fd; /* kept open to the exit */
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    agent_serve(the_agent);
    log_info("stopping; task VMs keep running");
    agent_free(the_agent);
    cfg_free(c);
    return 0;
}
