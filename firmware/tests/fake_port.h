/* An in-memory fleet_port_t for the core's tests: records what the core does. */
#ifndef FLEET_FAKE_PORT_H
#define FLEET_FAKE_PORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cJSON.h"
#include "fleet/device.h"
#include "fleet/port.h"

#define FAKE_MAX_PUBLISHES 256
#define FAKE_MAX_NVS 32

typedef struct {
    char *topic;
    char *payload;
    int qos;
    bool retain;
} fake_publish_t;

typedef struct {
    fake_publish_t publishes[FAKE_MAX_PUBLISHES];
    size_t publish_count;
    size_t subscribe_count;
    bool connected;

    /* http_get: feeds body in chunks of chunk, then returns http_rc with http_err */
    const uint8_t *body;
    size_t body_len;
    size_t chunk;
    int http_rc;
    const char *http_err;
    char last_url[600];
    size_t http_calls;
    /* Pretend a huge body: feed this many bytes of zeros instead of body. */
    size_t fake_huge_len;

    /* slots */
    int slot_begin_rc;
    int slot_write_rc;
    int slot_end_rc;
    int slot_activate_rc;
    fleet_slot_image_t image;  /* what slot_end reports */
    size_t slot_written;
    size_t slot_begins;
    size_t slot_discards;
    size_t slot_activations;
    size_t confirms;
    size_t reboots;

    char nvs_keys[FAKE_MAX_NVS][16];
    char nvs_values[FAKE_MAX_NVS][600];
    size_t nvs_count;

    uint64_t now_ms;
    uint32_t rng;
    bool led;
    bool verbose;
    /* fake_deliver then answers the device's shadow update in flight with accepted, as
     * a service that answers at once would (off: the test answers, or withholds). */
    bool auto_accept;
    int accepted_version;
} fake_port_t;

void fake_port_init(fake_port_t *f, fleet_port_t *port);
void fake_port_clear_publishes(fake_port_t *f);
void fake_port_free(fake_port_t *f);

/* Number of publishes whose topic ends with suffix. */
size_t fake_count(const fake_port_t *f, const char *suffix);
/* The n-th (0-based) publish whose topic ends with suffix, or NULL. */
const fake_publish_t *fake_nth(const fake_port_t *f, const char *suffix, size_t n);
/* The last such publish parsed as JSON (caller deletes), or NULL. */
cJSON *fake_last_json(const fake_port_t *f, const char *suffix);
/* Walks a dotted path ("state.reported.led_is_on") in doc. */
const cJSON *fake_path(const cJSON *doc, const char *path);

const char *fake_nvs(const fake_port_t *f, const char *key);
void fake_nvs_put(fake_port_t *f, const char *key, const char *value);

/* Sends a JSON text to the device on "{prefix}/{thing}/{suffix}". */
void fake_deliver(fleet_device_t *dev, const char *suffix, const char *json);

/* Answers the device's shadow update in flight (if any) with accepted. */
void fake_accept_update(fleet_device_t *dev);
/* Answers it with rejected and this code. */
void fake_reject_update(fleet_device_t *dev, int code);

/* A standard config: thing "dev-1", hw "rev-a", firmware "2.2.0". */
fleet_device_config_t fake_config(void);

#endif /* FLEET_FAKE_PORT_H */
