/* libFuzzer harness: an API request (api_parse): "METHOD\nPATH\nBODY". */
#include "api.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1), *method, *url, *body;
    struct api_req q;
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    method = text;
    url = strchr(method, '\n');
    if (url) {
        *url++ = '\0';
        body = strchr(url, '\n');
        if (body)
            *body++ = '\0';
        size_t blen = body ? size - (size_t)(body - text) : 0;
        if (api_parse(method, url, body ? body : "", blen, &q) == 0)
            api_req_clear(&q);
    }
    free(text);
    return 0;
}
