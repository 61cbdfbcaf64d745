/* api: the agent's HTTP requests, read and checked before anything acts.
 *
 * A request is a method, a path and maybe a JSON body, all from a caller
 * that is trusted to ask, not to be well-formed. api_parse() turns them into
 * an operation with checked arguments: a path of printable ASCII naming a
 * valid task id and a checkpoint number, a body that is a JSON object whose
 * fields are the operation's own and of the right JSON type. The agent then
 * acts on struct api_req alone. */
#ifndef VMCKPT_API_H
#define VMCKPT_API_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

enum api_op {
    API_LIST,         /* GET /v1/tasks */
    API_RUN,          /* POST /v1/tasks */
    API_VERIFY_ALL,   /* GET /v1/verify */
    API_GC,           /* POST /v1/gc */
    API_NODES,        /* GET /v1/nodes */
    API_METRICS_JSON, /* GET /v1/metrics */
    API_METRICS,      /* GET /metrics */
    API_TASK_SHOW,    /* GET /v1/tasks/ID */
    API_TASK_REMOVE,  /* DELETE /v1/tasks/ID */
    API_CHECKPOINT,   /* POST /v1/tasks/ID/checkpoint */
    API_KILL,         /* POST /v1/tasks/ID/kill */
    API_RESTORE,      /* POST /v1/tasks/ID/restore */
    API_CHECKPOINTS,  /* GET /v1/checkpoints/ID */
    API_CKPT_SHOW,    /* GET /v1/checkpoints/ID/SEQ */
    API_CKPT_VERIFY,  /* GET /v1/checkpoints/ID/SEQ/verify */
    API_TASK_VERIFY,  /* GET /v1/verify/ID */
    API_MOVE,         /* POST /v1/tasks/ID/move {"to": NODE} */
    API_DRAIN,        /* POST /v1/drain {"node": NODE} */
    API_CONSOLE_LIST, /* GET /v1/tasks/ID/console: its runs' console logs */
    API_CONSOLE,      /* GET /v1/tasks/ID/console/RUN (seq: RUN) */
};

#define API_MAX_BODY (1 << 20)

struct api_req {
    enum api_op op;
    char id[72];   /* a valid task id (util_valid_id), or "" */
    uint64_t seq;  /* a checkpoint number >= 1, or 0 */
    json_t *body;  /* a JSON object (empty when none was sent); api_req_clear() */
};

/* Reads one request. VK_ENOTFOUND for a path or method no operation has,
 * VK_EINVAL for anything malformed; the message says what (it quotes the
 * path only when it is printable). */
int api_parse(const char *method, const char *url, const char *body, size_t len,
              struct api_req *out);
void api_req_clear(struct api_req *r);

#endif
