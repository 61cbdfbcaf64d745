/* vmckpt: the command-line client of vmckptd (HTTP/JSON on a UNIX socket). */
#include "cfg.h"
#include "err.h"
#include "util.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *opt_socket;
static int opt_json;

static void usage(FILE *f)
{
    fprintf(f,
        "usage: vmckpt [--socket PATH | --config FILE] [--json] COMMAND [ARGS]\n"
        "\n"
        "Commands (all talk to the vmckptd agent of this node):\n"
        "  run TASK --base IMG [--kernel K] [--initrd I] [--work W] [--memory MIB]\n"
        "           [--vcpus N] [--accel kvm|tcg] [--first SEC] [--every SEC|auto]\n"
        "           [--mode auto|live|cow|stop-copy]\n"
        "                          start a task VM on IMG (read-only) + a fresh delta;\n"
        "                          checkpoint every --every seconds (0 = never; auto:\n"
        "                          from the task's measured checkpoint cost and [task]\n"
        "                          mtbf, Young/Daly), the first --first seconds after the\n"
        "                          VM starts (0 = one interval); again after a restart or\n"
        "                          restore; defaults from the agent's config\n"
        "  checkpoint TASK [--mode auto|live|cow|stop-copy] [--no-wait]\n"
        "                          take a checkpoint; waits for the upload unless --no-wait.\n"
        "                          Modes: live copies memory while the VM runs and stops it\n"
        "                          only for the last dirty pages; cow stops it, then copies\n"
        "                          pages on write; stop-copy stops it until memory is saved;\n"
        "                          auto (default) picks per checkpoint from what the task\n"
        "                          showed (ls and show say which and why)\n"
        "  status [TASK]           tasks on this node: state, last checkpoint, upload\n"
        "  ls TASK                 the task's committed checkpoints in the store\n"
        "  show TASK SEQ           one checkpoint: objects, sizes, phase timings\n"
        "  restore TASK [--checkpoint SEQ | --latest-intact] [--accel kvm|tcg]\n"
        "                          fetch a checkpoint (default: newest) and resume it here;\n"
        "                          --latest-intact falls back to older checkpoints when the\n"
        "                          newest is damaged\n"
        "  verify [TASK [SEQ]]     read back every chunk of the checkpoint(s) (all tasks when\n"
        "                          no task is named) and check them against their hashes;\n"
        "                          a chunk several checkpoints share is read once\n"
        "  gc [--grace SEC]        delete data no checkpoint references any more: indexes, packs\n"
        "                          (rewritten when mostly garbage); kept if younger than SEC\n"
        "                          (default [data] gc_grace)\n"
        "  nodes                   cluster mode: every node sharing the store (alive, suspect,\n"
        "                          dead; heartbeat age) and the tasks it runs\n"
        "  metrics                 this agent's metrics, in Prometheus' text format (also\n"
        "                          served as GET /metrics on the agent's socket)\n"
        "  move TASK [--to NODE]   cluster mode: a last checkpoint with the VM left paused,\n"
        "                          then the task resumes on NODE (or the node placement\n"
        "                          picks) from it: no work lost; refused when no other\n"
        "                          node is alive\n"
        "  drain NODE              move every task of NODE (this agent's node) elsewhere\n"
        "  kill TASK               kill the task's VM with SIGKILL (a crash, but on\n"
        "                          purpose: [task] restart does not restore it)\n"
        "  rm TASK [--purge]       stop the VM and forget the task on this node; its\n"
        "                          checkpoints stay in the store, and its console logs\n"
        "                          on this node for [task] log_expire_days (--purge:\n"
        "                          remove them now; also for a task removed before)\n"
        "  console TASK [--run N | --list]\n"
        "                          a run's console log (default: the current run's, else\n"
        "                          the newest kept); --list: the runs this node has, the\n"
        "                          crashed and restored ones included (newest [task]\n"
        "                          log_keep of them, each its last log_max_kib)\n"
        "\n"
        "Options:\n"
        "  --socket PATH   agent socket (default: $VMCKPT_SOCKET, else from the config,\n"
        "                  else /var/lib/vmckpt/vmckptd.sock)\n"
        "  --config FILE   read [agent] state_dir/socket from this INI file\n"
        "  --json          print the agent's JSON instead of tables\n");
}

/* ---- HTTP ---------------------------------------------------------------- */

struct buf {
    char *p;
    size_t n;
};

static size_t on_data(char *d, size_t sz, size_t nm, void *arg)
{
    struct buf *b = arg;
    char *np = realloc(b->p, b->n + sz * nm + 1);
    if (!np)
        return 0;
    b->p = np;
    memcpy(b->p + b->n, d, sz * nm);
    b->n += sz * nm;
    b->p[b->n] = '\0';
    return sz * nm;
}

/* Calls the agent at path with body (stolen); *reply gets the answer's body
 * (NUL-terminated, the caller's), *status its HTTP status. -1, said, when
 * the agent cannot be reached or does not answer. */
static int api_call(const char *method, json_t *body, const char *path, struct buf *reply,
                    long *status)
{
    CURL *c = curl_easy_init();
    struct curl_slist *hdr = NULL;
    char *url = util_fmt("http://localhost%s", path), *text = NULL;
    int rc = -1;
    CURLcode cc;

    *reply = (struct buf){0};
    *status = 0;
    if (!c || !url)
        goto out;
    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, opt_socket);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, reply);
    if (body) {
        text = json_dumps(body, JSON_COMPACT);
        hdr = curl_slist_append(hdr, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, text);
    }
    cc = curl_easy_perform(c);
    if (cc == CURLE_GOT_NOTHING || cc == CURLE_RECV_ERROR || cc == CURLE_SEND_ERROR) {
        fprintf(stderr, "vmckpt: vmckptd at %s closed the connection without answering: %s\n"
                        "  (this user may hold too many connections to it at once; its log "
                        "says why)\n",
                opt_socket, curl_easy_strerror(cc));
        goto out;
    }
    if (cc != CURLE_OK) {
        fprintf(stderr, "vmckpt: cannot reach vmckptd at %s: %s\n"
                        "  (is the agent running, and may this user use its socket? start it "
                        "with: vmckptd --state-dir DIR)\n",
                opt_socket, curl_easy_strerror(cc));
        goto out;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    rc = 0;
out:
    if (rc < 0) {
        free(reply->p);
        *reply = (struct buf){0};
    }
    json_decref(body);
    curl_slist_free_all(hdr);
    curl_easy_cleanup(c);
    free(text);
    free(url);
    return rc;
}

/* Prints the agent's error of a reply with HTTP status >= 400. */
static void api_say_error(const struct buf *b, long status)
{
    json_t *j = b->p ? json_loads(b->p, 0, NULL) : NULL;
    const char *e = json_string_value(json_object_get(j, "error"));
    if (e)
        fprintf(stderr, "vmckpt: %s\n", e);
    else
        fprintf(stderr, "vmckpt: the agent sent an unreadable reply (HTTP %ld)\n", status);
    json_decref(j);
}

/* Calls the agent at the path made from fmt. body is stolen. On HTTP >= 400,
 * prints the agent's error and returns -1; *out gets the reply (new
 * reference) otherwise. */
static int api(const char *method, json_t *body, json_t **out, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int api(const char *method, json_t *body, json_t **out, const char *fmt, ...)
{
    struct buf b = {0};
    char *path = NULL;
    long status = 0;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&path, fmt, ap) < 0)
        path = NULL;
    va_end(ap);

    *out = NULL;
    int rc = path ? api_call(method, body, path, &b, &status) : -1;
    if (!path)
        json_decref(body);
    free(path);
    if (rc < 0)
        return -1;
    if (status >= 400) {
        api_say_error(&b, status);
        free(b.p);
        return -1;
    }
    *out = b.p ? json_loads(b.p, 0, NULL) : NULL;
    free(b.p);
    if (!*out) {
        fprintf(stderr, "vmckpt: the agent sent an unreadable reply (HTTP %ld)\n", status);
        return -1;
    }
    return 0;
}

/* ---- formatting ------------------------------------------------------------- */

static const char *fmt_bytes(json_int_t v, char *buf, size_t len)
{
    double d = (double)v;
    if (d >= 1 << 30)
        snprintf(buf, len, "%.2f GiB", d / (1 << 30));
    else if (d >= 1 << 20)
        snprintf(buf, len, "%.1f MiB", d / (1 << 20));
    else if (d >= 1 << 10)
        snprintf(buf, len, "%.1f KiB", d / (1 << 10));
    else
        snprintf(buf, len, "%lld B", (long long)v);
    return buf;
}

static const char *fmt_us(json_int_t us, char *buf, size_t len)
{
    if (us < 1000000)
        snprintf(buf, len, "%.1f ms", (double)us / 1000);
    else
        snprintf(buf, len, "%.2f s", (double)us / 1e6);
    return buf;
}

static json_int_t jint(json_t *j, const char *key)
{
    return json_integer_value(json_object_get(j, key));
}

static const char *jstr(json_t *j, const char *key)
{
    const char *s = json_string_value(json_object_get(j, key));
    return s ? s : "-";
}

static void print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (s)
        puts(s);
    free(s);
}

/* The UNPROTECTED column: the work a crash would lose now, and whether the
 * schedule covers it. */
static void fmt_protection(json_t *t, char *out, size_t len)
{
    json_t *p = json_object_get(t, "protection");
    const char *st = json_string_value(json_object_get(p, "state"));
    double x = json_number_value(json_object_get(p, "exposed_s"));
    double promise = json_number_value(json_object_get(p, "promise_s"));
    if (!st || !strcmp(st, "not running"))
        snprintf(out, len, "-");
    else if (!strcmp(st, "unscheduled"))
        snprintf(out, len, "%.0f s NO SCHEDULE", x);
    else if (!strcmp(st, "late"))
        snprintf(out, len, "%.0f s LATE >%.0f s", x, promise);
    else
        snprintf(out, len, "%.0f s (<=%.0f s)", x, promise);
}

static void print_task_row(json_t *t)
{
    json_t *last = json_object_get(t, "last_checkpoint"), *cur = json_object_get(t, "checkpoint");
    char b1[32], b2[32], ck[64] = "-", up[64] = "-", prot[48];
    fmt_protection(t, prot, sizeof(prot));
    if (json_is_object(last) && json_object_get(last, "stopped_us"))
        snprintf(ck, sizeof(ck), "#%lld %s stop %s, %s", (long long)jint(last, "seq"),
                 jstr(last, "mode"), fmt_us(jint(last, "stopped_us"), b1, sizeof(b1)),
                 fmt_bytes(jint(last, "uploaded_bytes"), b2, sizeof(b2)));
    else if (json_is_object(last))
        snprintf(ck, sizeof(ck), "#%lld", (long long)jint(last, "seq"));
    if (json_is_object(cur)) {
        json_int_t done = jint(cur, "bytes_done"), total = jint(cur, "bytes_total");
        size_t q = json_array_size(json_object_get(cur, "queued"));
        if (jint(cur, "uploading"))
            snprintf(up, sizeof(up), "#%lld upload %lld%%%s", (long long)jint(cur, "uploading"),
                     total ? (long long)(done * 100 / total) : 0LL, q ? ", more queued" : "");
        else if (jint(cur, "snapshot"))
            snprintf(up, sizeof(up), "#%lld saving memory", (long long)jint(cur, "snapshot"));
    }
    printf("%-16s %-9s %-8lld %-6lld %-19s %-34s %s\n", jstr(t, "id"), jstr(t, "state"),
           (long long)jint(t, "pid"), (long long)jint(t, "memory_mib"), prot, ck, up);
}

/* One line on how the task is protected, in words. */
static void print_protection(json_t *t)
{
    json_t *p = json_object_get(t, "protection"), *next = json_object_get(p, "next_checkpoint_in_s");
    const char *st = json_string_value(json_object_get(p, "state"));
    double x = json_number_value(json_object_get(p, "exposed_s"));
    double promise = json_number_value(json_object_get(p, "promise_s"));
    if (!st || !strcmp(st, "not running"))
        return;
    if (!strcmp(st, "unscheduled")) {
        printf("protection: NONE: no checkpoint is scheduled (run with --every, or take one with "
               "vmckpt checkpoint); a crash now loses %.0f s of work\n", x);
        return;
    }
    printf("protection: %s: a crash now loses %.0f s of work; the schedule promises at most "
           "%.0f s", !strcmp(st, "late") ? "LATE" : "ok", x, promise);
    if (json_is_number(next))
        printf("; next checkpoint in %.1f s", json_number_value(next));
    printf("\n");
}

static void print_task(json_t *t)
{
    printf("%-16s %-9s %-8s %-6s %-19s %-34s %s\n", "TASK", "STATE", "PID", "MIB", "UNPROTECTED",
           "LAST CHECKPOINT", "IN PROGRESS");
    print_task_row(t);
    print_protection(t);
    if (json_string_value(json_object_get(t, "error")))
        printf("last error: %s\n", jstr(t, "error"));
    json_t *r = json_object_get(t, "restart"), *lc = json_object_get(t, "local_chain");
    if (r) {
        printf("restart: %s; %lld restart(s), %lld crash(es) in the window", jstr(r, "policy"),
               (long long)json_integer_value(json_object_get(r, "restarts")),
               (long long)json_integer_value(json_object_get(r, "recent_crashes")));
        if (json_is_true(json_object_get(r, "restarting")))
            printf("; restoring now");
        else if (json_is_number(json_object_get(r, "due_in_s")))
            printf("; next in %.1f s", json_number_value(json_object_get(r, "due_in_s")));
        printf("\n");
    }
    if (lc)
        printf("local chain: %lld deep, %lld merge(s)\n",
               (long long)json_integer_value(json_object_get(lc, "depth")),
               (long long)json_integer_value(json_object_get(lc, "merges")));
    printf("serial log: %s\n", jstr(t, "serial_log"));
}

/* ---- commands ------------------------------------------------------------------ */

static int need(int argc, int n, const char *what)
{
    if (argc < n) {
        fprintf(stderr, "vmckpt: %s\n", what);
        return -1;
    }
    return 0;
}

static int opt_int(const char *s, const char *name, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < 0 || v > 1 << 30) {
        fprintf(stderr, "vmckpt: %s wants a whole number >= 0, not '%s'\n", name, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int cmd_run(int argc, char **argv)
{
    json_t *body, *out;
    static const char *str_opts[] = {"--base", "base", "--kernel", "kernel", "--initrd", "initrd",
                                     "--work", "work", "--accel", "accel", "--mode", "mode"};
    static const char *int_opts[] = {"--memory", "memory_mib", "--vcpus", "vcpus", "--first",
                                     "checkpoint_first", "--every", "checkpoint_every"};
    if (need(argc, 2, "run needs a task id (vmckpt run TASK --base IMG ...)") < 0)
        return 2;
    body = json_pack("{s:s}", "id", argv[1]);
    for (int i = 2; i < argc; i++) {
        int known = 0, v;
        if (!strcmp(argv[i], "--every") && i + 1 < argc && !strcmp(argv[i + 1], "auto")) {
            json_object_set_new(body, "checkpoint_every", json_string("auto"));
            i++;
            continue;
        }
        for (size_t k = 0; k < sizeof(str_opts) / sizeof(*str_opts); k += 2)
            if (!strcmp(argv[i], str_opts[k]) && i + 1 < argc) {
                char *abs = NULL;
                const char *val = argv[++i];
                if (k <= 4 && !(abs = realpath(val, NULL))) { /* paths: the agent's cwd differs */
                    fprintf(stderr, "vmckpt: %s %s: no such file\n", str_opts[k], val);
                    json_decref(body);
                    return 2;
                }
                json_object_set_new(body, str_opts[k + 1], json_string(abs ? abs : val));
                free(abs);
                known = 1;
            }
        for (size_t k = 0; !known && k < sizeof(int_opts) / sizeof(*int_opts); k += 2)
            if (!strcmp(argv[i], int_opts[k]) && i + 1 < argc) {
                if (opt_int(argv[++i], int_opts[k], &v) < 0) {
                    json_decref(body);
                    return 2;
                }
                json_object_set_new(body, int_opts[k + 1], json_integer(v));
                known = 1;
            }
        if (!known) {
            fprintf(stderr, "vmckpt: run: unknown or incomplete option '%s'\n", argv[i]);
            json_decref(body);
            return 2;
        }
    }
    if (api("POST", body, &out, "/v1/tasks") < 0)
        return 1;
    if (opt_json)
        print_json(out);
    else
        print_task(out);
    json_decref(out);
    return 0;
}

static json_t *get_task(const char *id)
{
    json_t *out = NULL;
    api("GET", NULL, &out, "/v1/tasks/%s", id);
    return out;
}

/* 1 while checkpoint seq is being taken, queued or uploaded. */
static int is_pending(json_t *cur, json_int_t seq)
{
    size_t i;
    json_t *q;
    if (!json_is_object(cur))
        return 0;
    if (jint(cur, "snapshot") == seq || jint(cur, "uploading") == seq)
        return 1;
    json_array_foreach(json_object_get(cur, "queued"), i, q) if (json_integer_value(q) == seq)
        return 1;
    return 0;
}

static void print_progress(json_int_t seq, json_t *cur)
{
    char b1[32], b2[32];
    json_int_t done = jint(cur, "bytes_done"), total = jint(cur, "bytes_total");
    double secs = json_real_value(json_object_get(cur, "seconds"));
    double rate = secs > 0 ? (double)done / secs : 0;
    if (jint(cur, "uploading") != seq) {
        fprintf(stderr, "\r  checkpoint %lld: %s     ", (long long)seq,
                jint(cur, "snapshot") == seq ? "saving memory" : "waiting for the upload before it");
        return;
    }
    int width = 30, fill = total ? (int)(done * width / total) : 0;
    fprintf(stderr, "\r  checkpoint %lld: [%.*s%*s] %s / %s, %.0f MiB/s, ETA %.0f s   ",
            (long long)seq, fill, "##############################", width - fill, "",
            fmt_bytes(done, b1, sizeof(b1)), fmt_bytes(total, b2, sizeof(b2)), rate / (1 << 20),
            rate > 0 ? (double)(total - done) / rate : 0.0);
}

/* Waits for checkpoint seq of task id to commit or fail, with a progress bar. */
static int wait_checkpoint(const char *id, json_int_t seq)
{
    int tty = isatty(2);
    for (;;) {
        json_t *t = get_task(id), *m = NULL;
        char b1[32], b2[32], b3[32], b4[32];
        if (!t)
            break;
        if (is_pending(json_object_get(t, "checkpoint"), seq)) {
            if (tty)
                print_progress(seq, json_object_get(t, "checkpoint"));
            json_decref(t);
            usleep(200000);
            continue;
        }
        if (tty)
            fprintf(stderr, "\r%90s\r", "");
        /* Committed by this agent, not merely "a manifest with that number exists"
         * (another node may have written one). */
        if (jint(t, "failed_seq") == seq ||
            api("GET", NULL, &m, "/v1/checkpoints/%s/%lld", id, (long long)seq) < 0) {
            fprintf(stderr, "vmckpt: checkpoint %lld of %s failed: %s\n", (long long)seq, id,
                    jstr(t, "error"));
            json_decref(t);
            break;
        }
        json_t *sum = json_object_get(m, "summary");
        if (opt_json)
            print_json(sum);
        else
            printf("checkpoint %lld of %s committed: VM stopped %s, memory saved in %s, "
                   "stored %s in %s\n",
                   (long long)seq, id, fmt_us(jint(sum, "stopped_us"), b1, sizeof(b1)),
                   fmt_us(jint(sum, "mem_save_us"), b2, sizeof(b2)),
                   fmt_bytes(jint(sum, "uploaded_bytes"), b3, sizeof(b3)),
                   fmt_us(jint(sum, "store_us"), b4, sizeof(b4)));
        json_decref(m);
        json_decref(t);
        return 0;
    }
    return 1;
}

static int cmd_checkpoint(int argc, char **argv)
{
    json_t *body = json_object(), *out;
    int wait = 1;

    if (need(argc, 2, "checkpoint needs a task id") < 0) {
        json_decref(body);
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--mode") && i + 1 < argc)
            json_object_set_new(body, "mode", json_string(argv[++i]));
        else if (!strcmp(argv[i], "--no-wait"))
            wait = 0;
        else {
            fprintf(stderr, "vmckpt: checkpoint: unknown option '%s'\n", argv[i]);
            json_decref(body);
            return 2;
        }
    }
    if (api("POST", body, &out, "/v1/tasks/%s/checkpoint", argv[1]) < 0)
        return 1;
    json_int_t seq = jint(out, "seq");
    json_decref(out);
    if (!wait) {
        printf("checkpoint %lld of %s started; the VM runs, the upload goes on\n", (long long)seq,
               argv[1]);
        return 0;
    }
    return wait_checkpoint(argv[1], seq);
}

static void print_nodes(json_t *out);

static int cmd_status(int argc, char **argv)
{
    json_t *out, *t;
    size_t i;
    if (argc >= 2) {
        out = get_task(argv[1]);
        if (!out)
            return 1;
        if (opt_json)
            print_json(out);
        else
            print_task(out);
        json_decref(out);
        return 0;
    }
    if (api("GET", NULL, &out, "/v1/tasks") < 0)
        return 1;
    if (opt_json) {
        print_json(out);
    } else {
        printf("store: %s\n", jstr(out, "store"));
        printf("%-16s %-9s %-8s %-6s %-19s %-34s %s\n", "TASK", "STATE", "PID", "MIB",
               "UNPROTECTED", "LAST CHECKPOINT", "IN PROGRESS");
        json_array_foreach(json_object_get(out, "tasks"), i, t) print_task_row(t);
        if (json_is_true(json_object_get(out, "cluster"))) {
            json_t *nodes;
            printf("\n");
            if (api("GET", NULL, &nodes, "/v1/nodes") == 0)
                print_nodes(nodes);
            json_decref(nodes);
        }
    }
    json_decref(out);
    return 0;
}

/* The node table of GET /v1/nodes. */
static void print_nodes(json_t *out)
{
    json_t *n, *t;
    size_t i, k;
    printf("%-16s %-8s %-10s %-9s %-8s %-9s %s\n", "NODE", "STATE", "HEARTBEAT", "LEASE", "RUNNING",
           "FREE MIB", "TASKS");
    json_array_foreach(json_object_get(out, "nodes"), i, n)
    {
        char age[32], tasks[512] = "";
        snprintf(age, sizeof(age), "%.1f s ago", (double)jint(n, "age_ms") / 1e3);
        json_array_foreach(json_object_get(n, "tasks"), k, t)
        {
            size_t l = strlen(tasks);
            snprintf(tasks + l, sizeof(tasks) - l, "%s%s", l ? "," : "", json_string_value(t));
        }
        char lease[32];
        snprintf(lease, sizeof(lease), "%.1f s", (double)jint(n, "lease_ms") / 1e3);
        printf("%-16s %-8s %-10s %-9s %-8lld %-9lld %s%s\n", jstr(n, "node"), jstr(n, "state"), age,
               lease, (long long)jint(n, "running"), (long long)jint(n, "memory_free_mib"),
               tasks[0] ? tasks : "-", strcmp(jstr(n, "node"), jstr(out, "node")) ? "" : "  (this node)");
    }
}

static int cmd_nodes(int argc, char **argv)
{
    json_t *out;
    (void)argc;
    (void)argv;
    if (api("GET", NULL, &out, "/v1/nodes") < 0)
        return 1;
    if (opt_json)
        print_json(out);
    else
        print_nodes(out);
    json_decref(out);
    return 0;
}

static int cmd_metrics(int argc, char **argv)
{
    json_t *out;
    (void)argc;
    (void)argv;
    if (api("GET", NULL, &out, "/v1/metrics") < 0)
        return 1;
    fputs(jstr(out, "text"), stdout);
    json_decref(out);
    return 0;
}

/* Why a checkpoint's mode was chosen ("-" for checkpoints before that was kept). */
static const char *mode_why(json_t *c)
{
    const char *s = json_string_value(json_object_get(c, "mode_why"));
    return s ? s : "-";
}

static int cmd_ls(int argc, char **argv)
{
    json_t *out, *c;
    size_t i;

    if (need(argc, 2, "ls needs a task id") < 0)
        return 2;
    if (api("GET", NULL, &out, "/v1/checkpoints/%s", argv[1]) < 0)
        return 1;
    if (opt_json) {
        print_json(out);
        json_decref(out);
        return 0;
    }
    printf("%-5s %-20s %-9s %-10s %-9s %-9s %-9s %-10s %-16s %-10s %s\n", "SEQ", "CREATED",
           "MODE", "STOPPED", "SEAL", "MEM SAVE", "STORE", "MEMORY", "DELTA CHAIN", "ADDED", "WHY");
    json_array_foreach(json_object_get(out, "checkpoints"), i, c)
    {
        char b[7][32], chain[48];
        if (json_object_get(c, "error")) {
            printf("%-5lld damaged: %s\n", (long long)jint(c, "seq"), jstr(c, "error"));
            continue;
        }
        snprintf(chain, sizeof(chain), "%lld, %s", (long long)jint(c, "deltas"),
                 fmt_bytes(jint(c, "delta_bytes"), b[5], 32));
        printf("%-5lld %-20s %-9s %-10s %-9s %-9s %-9s %-10s %-16s %-10s %s\n",
               (long long)jint(c, "seq"), jstr(c, "created"), jstr(c, "mode"),
               fmt_us(jint(c, "stopped_us"), b[0], 32), fmt_us(jint(c, "seal_us"), b[1], 32),
               fmt_us(jint(c, "mem_save_us"), b[2], 32), fmt_us(jint(c, "store_us"), b[3], 32),
               fmt_bytes(jint(c, "memory_bytes"), b[4], 32), chain,
               fmt_bytes(jint(c, "uploaded_bytes"), b[6], 32), mode_why(c));
    }
    json_decref(out);
    return 0;
}

static void print_obj(const char *what, json_t *o)
{
    char b[32];
    printf("  %-10s %-10s %s  sha256 %.16s...\n", what, fmt_bytes(jint(o, "size"), b, sizeof(b)),
           jstr(o, "name"), jstr(o, "sha256"));
}

/* How the checkpoint's data was stored and why each codec was chosen. */
static void print_data(json_t *d)
{
    json_t *st = json_object_get(d, "stored"), *pol = json_object_get(d, "codec_policy"), *v;
    const char *k;
    char b1[32], b2[32], b3[32];
    if (!json_is_object(st))
        return;
    printf("data: %lld chunks (%lld new, %lld already stored, %lld all-zero), %s read, %s "
           "written, %lld retries\n",
           (long long)jint(st, "chunks"), (long long)jint(st, "new_chunks"),
           (long long)jint(st, "dedup_chunks"), (long long)jint(st, "zero_chunks"),
           fmt_bytes(jint(st, "raw_bytes"), b1, 32), fmt_bytes(jint(st, "new_bytes"), b2, 32),
           (long long)jint(st, "retries"));
    json_object_foreach(json_object_get(st, "new_chunks_by_codec"), k, v)
        printf("  new chunks with %-6s %6lld chunks, %s -> %s\n", k, (long long)jint(v, "chunks"),
               fmt_bytes(jint(v, "raw_bytes"), b1, 32), fmt_bytes(jint(v, "stored_bytes"), b3, 32));
    if (!json_is_object(pol))
        return;
    const char *best = jstr(pol, "best");
    printf("codec policy (%s): the store takes %.0f MB/s per worker and keeps %lld cop%s; "
           "a GB stored is worth %.0f s of CPU a copy ([data] storage_cost).\n"
           "Cost per input byte = compress + ratio x (upload + keep); the lowest is chosen:\n",
           jstr(pol, "forced"), json_real_value(json_object_get(pol, "upload_MBps")),
           (long long)jint(pol, "copies"), jint(pol, "copies") == 1 ? "y" : "ies",
           json_real_value(json_object_get(pol, "storage_cost_s_per_GB")));
    json_object_foreach(json_object_get(pol, "codecs"), k, v)
    {
        double sp = json_real_value(json_object_get(v, "speed_MBps"));
        double ra = json_real_value(json_object_get(v, "ratio"));
        double ns = json_real_value(json_object_get(v, "ns_per_byte"));
        if (!json_object_get(v, "compress_ns")) { /* written before issue 16: the total only */
            printf("  %-6s compress %8.0f MB/s, ratio %.2f, cost %.2f ns/byte\n", k, sp, ra, ns);
            continue;
        }
        printf("  %-6s compress %8.0f MB/s, ratio %.2f: %.2f + %.2f + %.2f = %.2f ns/byte%s\n", k,
               sp, ra, json_real_value(json_object_get(v, "compress_ns")),
               json_real_value(json_object_get(v, "upload_ns")),
               json_real_value(json_object_get(v, "keep_ns")), ns,
               strcmp(best, k) ? "" : "  <- lowest");
    }
}

static int cmd_show(int argc, char **argv)
{
    json_t *out, *d, *t, *vm;
    size_t i;
    char b[4][32];
    if (need(argc, 3, "show needs a task id and a checkpoint number") < 0)
        return 2;
    if (api("GET", NULL, &out, "/v1/checkpoints/%s/%s", argv[1], argv[2]) < 0)
        return 1;
    if (opt_json) {
        print_json(out);
        json_decref(out);
        return 0;
    }
    t = json_object_get(out, "timings_us");
    vm = json_object_get(out, "vm");
    printf("task %s, checkpoint %lld, %s, mode %s\n", jstr(out, "task"), (long long)jint(out, "seq"),
           jstr(out, "created"), jstr(out, "mode"));
    printf("mode chosen: %s (task's mode setting: %s)\n", mode_why(out),
           jstr(json_object_get(out, "policy"), "mode"));
    printf("VM: %lld MiB, %lld vCPU, machine %s, cmdline \"%s\"\n", (long long)jint(vm, "memory_mib"),
           (long long)jint(vm, "vcpus"), jstr(vm, "machine"), jstr(vm, "append"));
    printf("timings: VM stopped %s, delta seal %s, memory save %s, store write %s\n",
           fmt_us(jint(t, "stopped"), b[0], 32), fmt_us(jint(t, "seal"), b[1], 32),
           fmt_us(jint(t, "mem_save"), b[2], 32), fmt_us(jint(t, "store"), b[3], 32));
    printf("bytes added to the store by this checkpoint: %s\n",
           fmt_bytes(jint(out, "uploaded_bytes"), b[0], 32));
    printf("objects:\n");
    print_obj("kernel", json_object_get(out, "kernel"));
    print_obj("initrd", json_object_get(out, "initrd"));
    print_obj("base", json_object_get(out, "base"));
    json_array_foreach(json_object_get(out, "deltas"), i, d)
    {
        char what[32];
        snprintf(what, sizeof(what), "delta %zu", i + 1);
        print_obj(what, d);
    }
    print_obj("memory", json_object_get(out, "memory"));
    print_data(json_object_get(out, "data"));
    json_decref(out);
    return 0;
}

static int cmd_restore(int argc, char **argv)
{
    json_t *body = json_object(), *out;

    int seq;
    if (need(argc, 2, "restore needs a task id") < 0) {
        json_decref(body);
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--checkpoint") && i + 1 < argc) {
            if (opt_int(argv[++i], "--checkpoint", &seq) < 0) {
                json_decref(body);
                return 2;
            }
            json_object_set_new(body, "seq", json_integer(seq));
        } else if (!strcmp(argv[i], "--accel") && i + 1 < argc) {
            json_object_set_new(body, "accel", json_string(argv[++i]));
        } else if (!strcmp(argv[i], "--latest-intact")) {
            json_object_set_new(body, "latest_intact", json_true());
        } else {
            fprintf(stderr, "vmckpt: restore: unknown option '%s'\n", argv[i]);
            json_decref(body);
            return 2;
        }
    }
    if (api("POST", body, &out, "/v1/tasks/%s/restore", argv[1]) < 0)
        return 1;
    if (opt_json) {
        print_json(out);
    } else {
        json_t *r = json_object_get(out, "restore");
        char b1[32], b2[32];
        printf("task %s restored from checkpoint %lld: fetch %s, load+resume %s\n", argv[1],
               (long long)jint(r, "from_seq"), fmt_us(jint(r, "fetch_us"), b1, 32),
               fmt_us(jint(r, "load_us"), b2, 32));
        print_task(out);
    }
    json_decref(out);
    return 0;
}

static int cmd_verify(int argc, char **argv)
{
    json_t *out, *c, *p;
    size_t i, k;
    int bad = 0;
    char *path;
    path = argc >= 3   ? util_fmt("/v1/checkpoints/%s/%s/verify", argv[1], argv[2])
           : argc == 2 ? util_fmt("/v1/verify/%s", argv[1])
                       : util_fmt("/v1/verify");
    int rc = api("GET", NULL, &out, "%s", path);
    free(path);
    if (rc < 0)
        return 1;
    json_array_foreach(json_object_get(out, "checkpoints"), i, c)
    {
        int ok = json_is_true(json_object_get(c, "ok"));
        bad |= !ok;
        if (!opt_json && json_object_get(c, "task"))
            printf("task %s ", jstr(c, "task"));
        if (!opt_json)
            printf("checkpoint %lld: %s\n", (long long)jint(c, "seq"),
                   !ok ? "DAMAGED"
                   : json_is_true(json_object_get(c, "gone"))
                       ? "left the store while it was read (retention or GC), not checked"
                       : "intact");
        json_array_foreach(json_object_get(c, "problems"), k, p) if (!opt_json)
            printf("  %s\n", json_string_value(p));
    }
    if (opt_json)
        print_json(out);
    json_decref(out);
    return bad ? 1 : 0;
}

static int cmd_simple(const char *method, const char *fmt, int argc, char **argv, const char *done)
{
    json_t *out;
    char *path;
    if (need(argc, 2, "this command needs a task id") < 0)
        return 2;
    path = util_fmt(fmt, argv[1]);
    int rc = api(method, method[0] == 'P' ? json_object() : NULL, &out, "%s", path);
    free(path);
    if (rc < 0)
        return 1;
    if (opt_json)
        print_json(out);
    else
        printf("%s %s\n", argv[1], done);
    json_decref(out);
    return 0;
}

static int cmd_gc(int argc, char **argv)
{
    json_t *body = json_object(), *out;
    char b[32];
    int grace;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--grace") && i + 1 < argc) {
            if (opt_int(argv[++i], "--grace", &grace) < 0) {
                json_decref(body);
                return 2;
            }
            json_object_set_new(body, "grace", json_integer(grace));
        } else {
            fprintf(stderr, "vmckpt: gc: unknown option '%s'\n", argv[i]);
            json_decref(body);
            return 2;
        }
    }
    if (api("POST", body, &out, "/v1/gc") < 0)
        return 1;
    if (opt_json)
        print_json(out);
    else
        printf("%lld checkpoints reference %lld chunks; deleted %lld chunks (%lld packs deleted, "
               "%lld rewritten) and %lld indexes (%s); kept %lld unreferenced objects inside the "
               "grace period\n",
               (long long)jint(out, "manifests"), (long long)jint(out, "chunks_referenced"),
               (long long)jint(out, "chunks_deleted"), (long long)jint(out, "packs_deleted"),
               (long long)jint(out, "packs_rewritten"), (long long)jint(out, "indexes_deleted"),
               fmt_bytes(jint(out, "bytes_freed"), b, sizeof(b)), (long long)jint(out, "kept_young"));
    json_decref(out);
    return 0;
}

static int find_socket(const char *config)
{
    struct cfg *c = NULL;
    static char path[4096];
    const char *env = getenv("VMCKPT_SOCKET");
    if (opt_socket)
        return 0;
    if (env && *env && !config) {
        opt_socket = env;
        return 0;
    }
    if (cfg_load(&c, config) < 0 || cfg_finish(c) < 0) {
        fprintf(stderr, "vmckpt: %s\n", err_msg());
        cfg_free(c);
        return -1;
    }
    snprintf(path, sizeof(path), "%s", c->socket);
    opt_socket = path;
    cfg_free(c);
    return 0;
}

static int cmd_kill(int argc, char **argv)
{
    return cmd_simple("POST", "/v1/tasks/%s/kill", argc, argv, "killed (SIGKILL to its VM)");
}

static int cmd_rm(int argc, char **argv)
{
    json_t *out;
    const char *id = NULL;
    int purge = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--purge")) {
            purge = 1;
        } else if (argv[i][0] == '-' || id) {
            fprintf(stderr, "vmckpt: rm: unknown option or extra argument '%s'\n", argv[i]);
            return 2;
        } else {
            id = argv[i];
        }
    }
    if (!id) {
        fprintf(stderr, "vmckpt: rm needs a task id (vmckpt rm TASK [--purge])\n");
        return 2;
    }
    if (api("DELETE", purge ? json_pack("{s:b}", "purge", 1) : NULL, &out, "/v1/tasks/%s",
            id) < 0)
        return 1;
    if (opt_json)
        print_json(out);
    else if (json_object_get(out, "purged"))
        printf("%s: its console logs removed from this node\n", id);
    else
        printf("%s removed from this node%s\n", id,
               purge ? ", its console logs too"
                     : "; its console logs stay (vmckpt console; rm --purge removes them)");
    json_decref(out);
    return 0;
}

/* The runs whose console logs the agent has, as a table. */
static void print_console_runs(json_t *out)
{
    json_t *r;
    size_t i;
    char b[32];
    printf("%-6s %-10s %-22s %s\n", "RUN", "BYTES", "MODIFIED", "");
    json_array_foreach(json_object_get(out, "runs"), i, r)
        printf("%-6lld %-10s %-22s %s\n", (long long)jint(r, "run"),
               fmt_bytes(jint(r, "bytes"), b, sizeof(b)), jstr(r, "modified"),
               json_is_true(json_object_get(r, "current")) ? "(current run)" : "");
}

static int cmd_console(int argc, char **argv)
{
    json_t *out;
    int run = 0, list = 0;
    if (need(argc, 2, "console needs a task id (vmckpt console TASK [--run N | --list])") < 0)
        return 2;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--list")) {
            list = 1;
        } else if (!strcmp(argv[i], "--run") && i + 1 < argc) {
            if (opt_int(argv[++i], "--run", &run) < 0 || run < 1) {
                fprintf(stderr, "vmckpt: --run wants a run number from 1 on\n");
                return 2;
            }
        } else {
            fprintf(stderr, "vmckpt: console: unknown or incomplete option '%s'\n", argv[i]);
            return 2;
        }
    }
    if (api("GET", NULL, &out, "/v1/tasks/%s/console", argv[1]) < 0)
        return 1;
    json_t *runs = json_object_get(out, "runs");
    if (list || opt_json) {
        if (opt_json)
            print_json(out);
        else
            print_console_runs(out);
        json_decref(out);
        return 0;
    }
    if (!run) /* the current run's, else the newest kept */
        run = json_is_integer(json_object_get(out, "current"))
                  ? (int)jint(out, "current")
                  : (int)jint(json_array_get(runs, json_array_size(runs) - 1), "run");
    json_decref(out);
    char *path = util_fmt("/v1/tasks/%s/console/%d", argv[1], run);
    struct buf b;
    long status;
    int rc = path ? api_call("GET", NULL, path, &b, &status) : -1;
    free(path);
    if (rc < 0)
        return 1;
    if (status >= 400) {
        api_say_error(&b, status);
        free(b.p);
        return 1;
    }
    if (b.n && fwrite(b.p, 1, b.n, stdout) != b.n)
        rc = -1;
    free(b.p);
    return rc < 0 ? 1 : 0;
}

static int cmd_move(int argc, char **argv)
{
    json_t *body, *out = NULL;
    if (need(argc, 2, "move needs a task id (vmckpt move TASK [--to NODE])") < 0)
        return 2;
    body = json_object();
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--to") && i + 1 < argc) {
            json_object_set_new(body, "to", json_string(argv[++i]));
        } else {
            fprintf(stderr, "vmckpt: move: unknown or incomplete option '%s'\n", argv[i]);
            json_decref(body);
            return 2;
        }
    }
    if (api("POST", body, &out, "/v1/tasks/%s/move", argv[1]) < 0)
        return 1;
    if (opt_json)
        print_json(out);
    else
        printf("task %s moved to %s from its checkpoint %lld in %.2f s (no work lost)\n",
               jstr(out, "task"), jstr(out, "to"),
               (long long)json_integer_value(json_object_get(out, "seq")),
               json_number_value(json_object_get(out, "seconds")));
    json_decref(out);
    return 0;
}

static int cmd_drain(int argc, char **argv)
{
    json_t *out = NULL, *m;
    size_t i;
    if (need(argc, 2, "drain needs this node's name (vmckpt drain NODE)") < 0)
        return 2;
    if (api("POST", json_pack("{s:s}", "node", argv[1]), &out, "/v1/drain") < 0)
        return 1;
    json_t *failed = json_object_get(out, "failed");
    if (opt_json) {
        print_json(out);
    } else {
        json_array_foreach(json_object_get(out, "moved"), i, m)
            printf("task %s moved to %s from its checkpoint %lld in %.2f s\n", jstr(m, "task"),
                   jstr(m, "to"), (long long)json_integer_value(json_object_get(m, "seq")),
                   json_number_value(json_object_get(m, "seconds")));
        json_array_foreach(failed, i, m)
            fprintf(stderr, "vmckpt: task %s not moved: %s\n", jstr(m, "task"),
                    jstr(m, "error"));
        printf("drain of %s: %zu moved, %zu not\n", argv[1],
               json_array_size(json_object_get(out, "moved")), json_array_size(failed));
    }
    int rc = json_array_size(failed) ? 1 : 0;
    json_decref(out);
    return rc;
}

/* The commands; their help is usage()'s. */
struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
};

static const struct command commands[] = {
    {"run", cmd_run},         {"checkpoint", cmd_checkpoint}, {"status", cmd_status},
    {"ls", cmd_ls},           {"show", cmd_show},             {"restore", cmd_restore},
    {"verify", cmd_verify},   {"gc", cmd_gc},                 {"nodes", cmd_nodes},
    {"metrics", cmd_metrics}, {"kill", cmd_kill},             {"rm", cmd_rm},
    {"move", cmd_move},       {"drain", cmd_drain},             {"console", cmd_console},
};

static const struct command *find_command(const char *name)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(*commands); i++)
        if (!strcmp(commands[i].name, name))
            return &commands[i];
    return NULL;
}

int main(int argc, char **argv)
{
    const char *config = NULL;
    int i = 1, rc;

    /* Guest memory, disks and logs are private whatever the caller's umask;
     * QEMU and qemu-img create files under it too. */
    umask(077);
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--json")) {
            opt_json = 1;
        } else if (!strcmp(argv[i], "--socket") && i + 1 < argc) {
            opt_socket = argv[++i];
        } else if (!strcmp(argv[i], "--config") && i + 1 < argc) {
            config = argv[++i];
        } else {
            fprintf(stderr, "vmckpt: unknown option '%s' (see vmckpt --help)\n", argv[i]);
            return 2;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    if (find_socket(config) < 0)
        return 2;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    argc -= i;
    argv += i;
    const struct command *cmd = find_command(argv[0]);
    if (cmd) {
        rc = cmd->fn(argc, argv);
    } else {
        fprintf(stderr, "vmckpt: unknown command '%s' (see vmckpt --help)\n", argv[0]);
        rc = 2;
    }
    curl_global_cleanup();
    return rc;
}
