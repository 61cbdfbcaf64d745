/* libFuzzer harness: a store URI (uri_parse and what stores do with it). */
#include "uri.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const allowed[] = {"key", "known_hosts", "host_key_check", NULL};
    char *text = malloc(size + 1), *s = NULL;
    struct uri u;
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    if (uri_parse(text, &u) == 0) {
        free(uri_public(&u));
        free(uri_param(&u, "key"));
        uri_check_params(&u, allowed);
        if (uri_with_password(text, "p@ss:w/rd", &s) == 0)
            free(s);
        uri_clear(&u);
    }
    free(text);
    return 0;
}
