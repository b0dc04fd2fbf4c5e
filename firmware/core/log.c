#include "log.h"

#include <stdarg.h>
#include <stdio.h>

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
