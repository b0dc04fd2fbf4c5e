/*
 * Shadow delta handling: which desired keys the device understands, their
 * types and ranges. Anything else is rejected by name, never applied.
 */
#ifndef FLEET_SHADOW_H
#define FLEET_SHADOW_H

#include <stdbool.h>
#include <stddef.h>

#include "cJSON.h"
#include "fleet/limits.h"
#include "fleet/ota.h"

typedef struct {
    bool led_is_on;
    int telemetry_interval_s;
} fleet_settings_t;

/* A delta (or a config_update job's config) sorted into what can be applied. */
typedef struct {
    bool has_led_is_on;
    bool led_is_on;
    bool has_telemetry_interval_s;
    int telemetry_interval_s;
    bool has_target_version;
    bool has_ota_url;
    bool has_ota_sha256;
    fleet_ota_target_t ota;

    size_t rejected_count;  /* may exceed FLEET_REJECTED_MAX; only the first are named */
    char rejected[FLEET_REJECTED_MAX][FLEET_KEY_MAX + 1];
    char config_error[FLEET_ERROR_MAX + 1];
} fleet_delta_t;

/*
 * Sorts state (the delta's "state" object) into fleet_delta_t. allow_ota=false
 * rejects the OTA keys (config_update jobs may not start an update).
 */
void fleet_shadow_parse_delta(const cJSON *state, bool allow_ota, fleet_delta_t *out);

bool fleet_shadow_delta_has_ota(const fleet_delta_t *d);

/* "a,b,c" from the rejected names (truncated to fit). */
void fleet_shadow_rejected_join(const fleet_delta_t *d, char *buf, size_t len);

/* Overlays a desired document's (or delta's) valid OTA keys onto target. */
void fleet_shadow_merge_ota(fleet_ota_target_t *target, const fleet_delta_t *d);

#endif /* FLEET_SHADOW_H */
