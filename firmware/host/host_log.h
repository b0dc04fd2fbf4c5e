/* ESP_LOGx-style lines on stderr: "I (1234) tag: message". */
#ifndef HOST_LOG_H
#define HOST_LOG_H

#include "fleet/port.h"

#if defined(__GNUC__)
#define HOST_PRINTF_LIKE(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define HOST_PRINTF_LIKE(fmt, args)
#endif

void host_log_init(fleet_log_level_t max_level);
/* Milliseconds since host_log_init (the "boot" of this process). */
unsigned long long host_log_uptime_ms(void);
void host_log_line(fleet_log_level_t level, const char *tag, const char *msg);
void host_log(fleet_log_level_t level, const char *tag, const char *fmt, ...) HOST_PRINTF_LIKE(3, 4);

#define HOST_LOGE(tag, ...) host_log(FLEET_LOG_ERROR, (tag), __VA_ARGS__)
#define HOST_LOGW(tag, ...) host_log(FLEET_LOG_WARN, (tag), __VA_ARGS__)
#define HOST_LOGI(tag, ...) host_log(FLEET_LOG_INFO, (tag), __VA_ARGS__)
#define HOST_LOGD(tag, ...) host_log(FLEET_LOG_DEBUG, (tag), __VA_ARGS__)

#endif /* HOST_LOG_H */
