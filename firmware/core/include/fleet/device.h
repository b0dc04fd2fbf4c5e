/*
 * The device: glue between the port's MQTT session and the shadow, OTA, jobs
 * and telemetry logic. The port's task calls fleet_device_on_connect/
 * on_message/on_disconnect as events arrive and fleet_device_tick() at least
 * every fleet_device_next_wakeup_ms(); all from one thread.
 */
#ifndef FLEET_DEVICE_H
#define FLEET_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fleet/jobs.h"
#include "fleet/limits.h"
#include "fleet/ota.h"
#include "fleet/port.h"
#include "fleet/shadow.h"
#include "fleet/telemetry.h"
#include "fleet/topic.h"

typedef enum {
    FLEET_RESET_POWERON = 0,
    FLEET_RESET_SW_REBOOT,
    FLEET_RESET_PANIC,
    FLEET_RESET_OTA_ROLLBACK,
} fleet_reset_reason_t;

typedef struct {
    const char *thing;
    const char *hardware_rev;
    const char *firmware_version;  /* of the running image */
    const char *location;          /* self-reported tag; NULL or "" for none */
    const char *shadow_prefix;     /* NULL: "$aws/things" */
    const char *fleet_prefix;      /* NULL: "fleet" */
    int telemetry_interval_s;      /* used until NVS holds one */
    fleet_reset_reason_t reset_reason;
    bool image_pending_verify;     /* the running image is not confirmed yet */
    const char *rollback_reason;   /* the bootloader rolled back on this boot; else NULL */
    uint32_t shadow_retry_ms;      /* first retry wait of a shadow update; 0: 5000 */
} fleet_device_config_t;

typedef struct fleet_device {
    const fleet_port_t *port;
    char thing[FLEET_THING_MAX + 1];
    char hardware_rev[FLEET_HW_REV_MAX + 1];
    char firmware_version[FLEET_VERSION_MAX + 1];
    char location[FLEET_LOCATION_MAX + 1];
    char shadow_prefix[FLEET_PREFIX_MAX + 1];
    char fleet_prefix[FLEET_PREFIX_MAX + 1];
    fleet_topics_t topics;
    fleet_reset_reason_t reset_reason;

    bool connected;
    bool rebooting;            /* reboot requested; do nothing else */
    bool pending_verify;       /* running image awaits confirmation */
    uint32_t token_seq;
    uint32_t token_salt;
    uint32_t errors;           /* reported in telemetry */

    fleet_settings_t settings;
    fleet_ota_t ota;
    fleet_jobs_t jobs;

    /* shadow bookkeeping */
    char boot_report_token[FLEET_TOKEN_MAX];  /* full report whose acceptance confirms */
    bool have_delta_version;
    long long last_delta_version;
    uint32_t last_delta_fingerprint;  /* 0: none; reset by local changes */
    char reported_rejected[FLEET_REJECTED_MAX * (FLEET_KEY_MAX + 1)];
    bool reported_rejected_known;     /* false: unknown what the shadow holds */

    /* The retry contract (fleet/shadow.h): the one shadow update in flight, kept as
     * sent so that a retry is the same token and the same bytes, and the reported patch
     * queued behind it (newer reports merge into it; it is sent once the one in flight
     * is answered or given up). */
    uint32_t shadow_retry_ms;
    uint32_t retry_seed;              /* the jitter of its retry waits */
    bool update_in_flight;
    unsigned update_attempts;
    uint64_t update_deadline_ms;
    char update_token[FLEET_TOKEN_MAX];
    char update_text[FLEET_REPORT_MAX];
    bool update_queued;
    bool update_queued_full;          /* the queued patch holds the full (boot) report */
    char update_queued_text[FLEET_REPORT_MAX];  /* the queued "reported" object */

    fleet_telemetry_t telemetry;
    uint64_t telemetry_due_ms;
    uint64_t telemetry_last_ms;
} fleet_device_t;

const char *fleet_reset_reason_str(fleet_reset_reason_t r);
/* FLEET_OK if s names a reset reason ("poweron", "sw_reboot", "panic", "ota_rollback"). */
fleet_err_t fleet_reset_reason_parse(const char *s, fleet_reset_reason_t *out);

/* Validates the config, loads NVS, settles the last OTA. FLEET_ERR_INVALID on bad config. */
fleet_err_t fleet_device_init(fleet_device_t *dev, const fleet_port_t *port,
                              const fleet_device_config_t *config);

/* The last will the port must register before connecting (retained, QoS 1). */
int fleet_device_will_topic(const fleet_device_t *dev, char *buf, size_t len);
const char *fleet_device_will_payload(void);

void fleet_device_on_connect(fleet_device_t *dev);
void fleet_device_on_disconnect(fleet_device_t *dev);
void fleet_device_on_message(fleet_device_t *dev, const char *topic, size_t topic_len,
                             const void *payload, size_t len);
/* Runs a scheduled OTA install, due telemetry and due shadow update retries. */
void fleet_device_tick(fleet_device_t *dev);
/* Milliseconds until fleet_device_tick has work (capped at 1000). */
uint32_t fleet_device_next_wakeup_ms(const fleet_device_t *dev);

/* Publishes retained offline presence (clean power-off). */
void fleet_device_power_off(fleet_device_t *dev);

#endif /* FLEET_DEVICE_H */
