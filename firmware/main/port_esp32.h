/*
 * The ESP-IDF port: fleet_port_t over esp-mqtt, esp_http_client, esp_ota_ops,
 * NVS, mbedtls SHA-256 and a GPIO LED. esp-mqtt's event task only queues
 * events; the device task (app_main) drains the queue and calls the core.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "esp_err.h"
#include "fleet/port.h"

typedef enum { PORT_EVENT_CONNECTED, PORT_EVENT_DISCONNECTED, PORT_EVENT_MESSAGE } port_event_type_t;

typedef struct {
    port_event_type_t type;
    char *topic;   /* NUL terminated, malloc'd */
    char *payload; /* malloc'd */
    size_t len;
} port_event_t;

/* Opens NVS, configures the LED and fills the function table. */
esp_err_t port_esp32_init(fleet_port_t *port);

/* Starts esp-mqtt with the last will; events arrive via port_esp32_next_event. */
esp_err_t port_esp32_start_mqtt(const char *client_id, const char *will_topic,
                                const char *will_payload);

/* Waits up to timeout_ms for an event; false on timeout. Free with port_esp32_free_event. */
bool port_esp32_next_event(port_event_t *ev, uint32_t timeout_ms);
void port_esp32_free_event(port_event_t *ev);

/* NVS string helpers for app_main (same namespace as the core's keys). */
esp_err_t port_esp32_nvs_get(const char *key, char *buf, size_t len);
esp_err_t port_esp32_nvs_set(const char *key, const char *value);
