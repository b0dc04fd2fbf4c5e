#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void fleet_log(const fleet_port_t *port, fleet_log_level_t level, const char *tag,
               const char *fmt, ...)
{
    char line[320];
    va_list ap;

    if (port == NULL || port->log == NULL) {
        return;
    }
    va_start(ap, fmt);
    (void)vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    port->log(port->ctx, level, tag, line);
}

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
