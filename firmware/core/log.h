/* Core logging through the port (internal to the core). */
#ifndef FLEET_LOG_H
#define FLEET_LOG_H

#include "fleet/port.h"

#if defined(__GNUC__)
#define FLEET_PRINTF_LIKE(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define FLEET_PRINTF_LIKE(fmt, args)
#endif

void fleet_log(const fleet_port_t *port, fleet_log_level_t level, const char *tag,
               const char *fmt, ...) FLEET_PRINTF_LIKE(4, 5);

#define FLEET_LOGE(port, tag, ...) fleet_log((port), FLEET_LOG_ERROR, (tag), __VA_ARGS__)
#define FLEET_LOGW(port, tag, ...) fleet_log((port), FLEET_LOG_WARN, (tag), __VA_ARGS__)
#define FLEET_LOGI(port, tag, ...) fleet_log((port), FLEET_LOG_INFO, (tag), __VA_ARGS__)
#define FLEET_LOGD(port, tag, ...) fleet_log((port), FLEET_LOG_DEBUG, (tag), __VA_ARGS__)

#endif /* FLEET_LOG_H */
