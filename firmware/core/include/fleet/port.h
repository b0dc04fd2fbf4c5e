/*
 * The platform port: everything the portable core needs from the device.
 *
 * The core never touches the network, the flash or the clock itself; it calls
 * these functions. The ESP-IDF port (main/port_esp32.c) implements them with
 * esp-mqtt, esp_http_client, esp_ota_ops and NVS; the Linux port
 * (host/port_linux.c) with libmosquitto, libcurl, files and OpenSSL; the unit
 * tests with an in-memory fake (tests/fake_port.c).
 *
 * Every function returns FLEET_OK (0) on success unless documented otherwise.
 * Functions are called from a single thread: the device task.
 */
#ifndef FLEET_PORT_H
#define FLEET_PORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fleet/limits.h"

typedef enum {
    FLEET_OK = 0,
    FLEET_ERR = -1,          /* generic failure */
    FLEET_ERR_NOT_FOUND = -2,
    FLEET_ERR_INVALID = -3,  /* malformed input */
    FLEET_ERR_TOO_LARGE = -4,
    FLEET_ERR_NO_CONN = -5,
} fleet_err_t;

typedef enum {
    FLEET_LOG_ERROR = 0,
    FLEET_LOG_WARN = 1,
    FLEET_LOG_INFO = 2,
    FLEET_LOG_DEBUG = 3,
} fleet_log_level_t;

/* Receives the body of an HTTP download chunk by chunk; non-zero aborts it. */
typedef int (*fleet_http_sink_fn)(void *sink_ctx, const void *data, size_t len);

/* What the port learned about a staged image once it was fully written. */
typedef struct {
    uint8_t sha256[32];                   /* over every byte written */
    uint32_t size;                        /* bytes written */
    bool header_valid;                    /* platform image header/magic accepted */
    char version[FLEET_VERSION_MAX + 1];  /* version from the image header */
} fleet_slot_image_t;

typedef struct fleet_port {
    void *ctx;

    /* MQTT. qos is 0 or 1. Fails with FLEET_ERR_NO_CONN while disconnected. */
    int (*publish)(void *ctx, const char *topic, const void *payload, size_t len, int qos,
                   bool retain);
    int (*subscribe)(void *ctx, const char *topic_filter, int qos);

    /*
     * Blocking streaming HTTP(S) GET. Feeds the body to sink. On failure returns
     * non-zero and writes a short human readable reason ("HTTP 404",
     * "Couldn't connect to server") into err; a sink abort returns FLEET_ERR_TOO_LARGE
     * or FLEET_ERR as the sink asked and the port need not fill err.
     */
    int (*http_get)(void *ctx, const char *url, fleet_http_sink_fn sink, void *sink_ctx,
                    char *err, size_t err_len);

    /* The inactive firmware slot: begin, write chunks, end (hash + header), then
     * activate (boot it next, pending verification) or discard. */
    int (*slot_begin)(void *ctx);
    int (*slot_write)(void *ctx, const void *data, size_t len);
    int (*slot_end)(void *ctx, fleet_slot_image_t *image);
    int (*slot_activate)(void *ctx, bool activate);
    /* Mark the running image valid: cancels the bootloader's rollback. */
    int (*slot_confirm)(void *ctx);

    /* Restart the device. Does not return on a real device; fakes may return. */
    void (*reboot)(void *ctx);

    /* Monotonic milliseconds since boot, and wall clock seconds since the epoch. */
    uint64_t (*uptime_ms)(void *ctx);
    double (*epoch_s)(void *ctx);

    /* Persistent string key/value store. Keys are at most 15 characters (NVS).
     * nvs_get returns FLEET_ERR_NOT_FOUND when absent; nvs_set(NULL) erases. */
    int (*nvs_get)(void *ctx, const char *key, char *buf, size_t buf_len);
    int (*nvs_set)(void *ctx, const char *key, const char *value);

    uint32_t (*random)(void *ctx);

    /* Drives the status LED; may be NULL on boards without one. */
    void (*set_led)(void *ctx, bool on);

    /* One complete log line without newline; the port adds level, time, tag. */
    void (*log)(void *ctx, fleet_log_level_t level, const char *tag, const char *msg);
} fleet_port_t;

#endif /* FLEET_PORT_H */
