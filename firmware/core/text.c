#include "text.h"

#include <string.h>

bool fleet_strlcpy(char *dst, const char *src, size_t dst_len)
{
    size_t n;

    if (dst_len == 0) {
        return false;
    }
    if (src == NULL) {
        dst[0] = '\0';
        return true;
    }
    n = strlen(src);
    if (n >= dst_len) {
        memcpy(dst, src, dst_len - 1);
        dst[dst_len - 1] = '\0';
        return false;
    }
    memcpy(dst, src, n + 1);
    return true;
}
