#include "fleet/telemetry.h"

#include <stddef.h>

/* Rounds to the given number of decimals so payloads print short. */
static double round_to(double v, double scale)
{
    double scaled = v * scale;
    long long n = (long long)(scaled >= 0 ? scaled + 0.5 : scaled - 0.5);

    return (double)n / scale;
}

static double clamp(double v, double lo, double hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

/* A step in [-1, 1] from one byte, nudged back toward a resting value. */
static double step(uint32_t byte, double value, double rest, double spread)
{
    double r = ((double)(byte & 0xffu) - 127.5) / 127.5;

    return value + r * spread + (rest - value) * 0.05;
}

void fleet_telemetry_init(fleet_telemetry_t *t)
{
    t->temp_c = 40.0;
    t->cpu_pct = 12.0;
    t->heap_free = 180000;
    t->rssi = -60;
}

void fleet_telemetry_step(fleet_telemetry_t *t, uint32_t random)
{
    t->temp_c = clamp(step(random, t->temp_c, 40.0, 0.4), 20.0, 85.0);
    t->cpu_pct = clamp(step(random >> 8, t->cpu_pct, 12.0, 3.0), 0.5, 100.0);
    t->heap_free = (int32_t)clamp(step(random >> 16, (double)t->heap_free, 180000.0, 800.0),
                                  60000.0, 240000.0);
    t->rssi = (int32_t)clamp(step(random >> 24, (double)t->rssi, -60.0, 2.0), -95.0, -30.0);
}

cJSON *fleet_telemetry_payload(const fleet_telemetry_t *t, double ts, uint64_t uptime_s,
                               const char *reset_reason, uint32_t errors)
{
    cJSON *doc = cJSON_CreateObject();

    if (doc == NULL) {
        return NULL;
    }
    if (cJSON_AddNumberToObject(doc, "ts", round_to(ts, 1000.0)) == NULL ||
        cJSON_AddNumberToObject(doc, "uptime_s", (double)uptime_s) == NULL ||
        cJSON_AddNumberToObject(doc, "heap_free", (double)t->heap_free) == NULL ||
        cJSON_AddNumberToObject(doc, "rssi", (double)t->rssi) == NULL ||
        cJSON_AddNumberToObject(doc, "cpu_pct", round_to(t->cpu_pct, 10.0)) == NULL ||
        cJSON_AddNumberToObject(doc, "temp_c", round_to(t->temp_c, 100.0)) == NULL ||
        cJSON_AddStringToObject(doc, "reset_reason", reset_reason) == NULL ||
        cJSON_AddNumberToObject(doc, "errors", (double)errors) == NULL) {
        cJSON_Delete(doc);
        return NULL;
    }
    return doc;
}

cJSON *fleet_presence_online_payload(const char *firmware_version, const char *hardware_rev,
                                     double ts)
{
    cJSON *doc = cJSON_CreateObject();

    if (doc == NULL) {
        return NULL;
    }
    if (cJSON_AddStringToObject(doc, "state", "online") == NULL ||
        cJSON_AddStringToObject(doc, "firmware_version", firmware_version) == NULL ||
        cJSON_AddStringToObject(doc, "hardware_rev", hardware_rev) == NULL ||
        cJSON_AddNumberToObject(doc, "ts", (double)(long long)ts) == NULL) {
        cJSON_Delete(doc);
        return NULL;
    }
    return doc;
}
