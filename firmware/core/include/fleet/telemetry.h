/* Telemetry and presence payloads (fleet topics, not part of AWS). */
#ifndef FLEET_TELEMETRY_H
#define FLEET_TELEMETRY_H

#include <stdint.h>

#include "cJSON.h"

#define FLEET_PRESENCE_OFFLINE_PAYLOAD "{\"state\":\"offline\"}"

/* Plausible sensor readings that wander a little on every sample. */
typedef struct {
    double temp_c;
    double cpu_pct;
    int32_t heap_free;
    int32_t rssi;
} fleet_telemetry_t;

void fleet_telemetry_init(fleet_telemetry_t *t);

/* Random walk one step; every byte of random drives one reading. */
void fleet_telemetry_step(fleet_telemetry_t *t, uint32_t random);

cJSON *fleet_telemetry_payload(const fleet_telemetry_t *t, double ts, uint64_t uptime_s,
                               const char *reset_reason, uint32_t errors);

cJSON *fleet_presence_online_payload(const char *firmware_version, const char *hardware_rev,
                                     double ts);

#endif /* FLEET_TELEMETRY_H */
