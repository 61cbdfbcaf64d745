/* ckpt: the names of the checkpoint modes. A file of its own so that what
 * only checks a mode's name (the settings, the client) links none of the
 * checkpoint protocol. */
#include "ckpt.h"

#include "err.h"

#include <string.h>

static const char *const ckpt_mode_names[CKPT_N_MODES] = {"auto", "live", "cow", "stop-copy"};

const char *ckpt_mode_name(enum ckpt_mode m)
{
    return (unsigned)m < CKPT_N_MODES ? ckpt_mode_names[m] : "?";
}

int ckpt_mode_parse(const char *s, const char *what, enum ckpt_mode *out)
{
    for (int i = 0; s && i < CKPT_N_MODES; i++) {
        if (!strcmp(s, ckpt_mode_names[i])) {
            *out = (enum ckpt_mode)i;
            return 0;
        }
    }
    return err_set(VK_EINVAL, "%s must be auto, live, cow or stop-copy, not '%s'", what,
                   s ? s : "");
}
