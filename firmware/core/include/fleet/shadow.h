/*
 * Shadow delta handling: which desired keys the device understands, their
 * types and ranges. Anything else is rejected by name, never applied.
 */
#ifndef FLEET_SHADOW_H
#define FLEET_SHADOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

/*
 * The retry contract for the device's own shadow updates (docs/scale-out.md): one
 * update in flight per shadow; unanswered within the attempt's wait, or answered 500
 * or 429, it is sent again with the same clientToken and the same text. The wait
 * doubles per attempt (base, 2x, 4x ... capped); after FLEET_SHADOW_ATTEMPTS_MAX
 * attempts the update is given up. Other rejections (400, 409, 413) are final.
 */
#define FLEET_SHADOW_RETRY_DEFAULT_MS 5000u
#define FLEET_SHADOW_RETRY_CAP_MS 60000u
#define FLEET_SHADOW_ATTEMPTS_MAX 5u

/* How long attempt n (1-based) waits for its answer. base_ms 0: the default. The wait
 * is jittered into [w/2, w) by the device's seed (fleet_shadow_retry_seed), so devices
 * whose requests died together (a service worker killed) do not retry together; the
 * jitter is a hash, not a random draw, so the simulator (sim/protocol.py) waits exactly
 * as long. */
uint32_t fleet_shadow_retry_wait_ms(uint32_t base_ms, unsigned attempt, uint32_t seed);

/* The retry jitter's seed for a thing: FNV-1a of its name. */
uint32_t fleet_shadow_retry_seed(const char *thing);

/* A rejection with this code is retried (500: the service failed, 429: too many). */
bool fleet_shadow_rejection_is_retryable(int code);

/*
 * Merges a newer reported patch into an older queued one, as the shadow would apply
 * them in turn: objects merge key by key, anything else (null included) replaces.
 * Takes ownership of newer.
 */
void fleet_shadow_merge_reported(cJSON *older, cJSON *newer);

#endif /* FLEET_SHADOW_H */
