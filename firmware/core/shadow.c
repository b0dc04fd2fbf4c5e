#include "fleet/shadow.h"

#include <stdio.h>
#include <string.h>

#include "fleet/version.h"
#include "log.h"
#include "text.h"

static void append_error(fleet_delta_t *d, const char *key, const char *reason)
{
    size_t used = strlen(d->config_error);
    size_t room = sizeof(d->config_error) - used;
    char key_short[FLEET_KEY_MAX + 1];

    (void)fleet_strlcpy(key_short, key, sizeof(key_short));
    if (room > 1) {
        (void)snprintf(d->config_error + used, room, "%s%s: %s", used > 0 ? "; " : "", key_short,
                       reason);
    }
}

static void reject(fleet_delta_t *d, const char *key, const char *reason)
{
    if (d->rejected_count < FLEET_REJECTED_MAX) {
        (void)fleet_strlcpy(d->rejected[d->rejected_count], key, FLEET_KEY_MAX + 1);
    }
    d->rejected_count++;
    append_error(d, key, reason);
}

static bool is_interval(const cJSON *item, int *out)
{
    double v;

    if (!cJSON_IsNumber(item)) {
        return false;
    }
    v = item->valuedouble;
    if (!(v >= FLEET_TELEMETRY_MIN_S && v <= FLEET_TELEMETRY_MAX_S) || v != (double)(int)v) {
        return false;
    }
    *out = (int)v;
    return true;
}

static const char *ota_string(const cJSON *item, bool (*valid)(const char *))
{
    return (cJSON_IsString(item) && valid(item->valuestring)) ? item->valuestring : NULL;
}

void fleet_shadow_parse_delta(const cJSON *state, bool allow_ota, fleet_delta_t *out)
{
    const cJSON *item;

    memset(out, 0, sizeof(*out));
    if (!cJSON_IsObject(state)) {
        return;
    }
    cJSON_ArrayForEach(item, state) {
        const char *key = item->string;
        const char *s;
        bool is_ota_key;

        if (key == NULL) {
            continue;
        }
        is_ota_key = strcmp(key, "target_version") == 0 || strcmp(key, "ota_url") == 0 ||
                     strcmp(key, "ota_sha256") == 0;
        if (strcmp(key, "led_is_on") == 0) {
            if (cJSON_IsBool(item)) {
                out->has_led_is_on = true;
                out->led_is_on = cJSON_IsTrue(item);
            } else {
                reject(out, key, "expected true or false");
            }
        } else if (strcmp(key, "telemetry_interval_s") == 0) {
            if (is_interval(item, &out->telemetry_interval_s)) {
                out->has_telemetry_interval_s = true;
            } else {
                reject(out, key, "expected an integer 1..86400");
            }
        } else if (is_ota_key && !allow_ota) {
            reject(out, key, "OTA keys are set through the shadow only");
        } else if (strcmp(key, "target_version") == 0) {
            if ((s = ota_string(item, fleet_version_is_valid)) != NULL) {
                out->has_target_version = true;
                (void)fleet_strlcpy(out->ota.version, s, sizeof(out->ota.version));
            } else {
                reject(out, key, "expected a version string");
            }
        } else if (strcmp(key, "ota_url") == 0) {
            if ((s = ota_string(item, fleet_ota_url_is_valid)) != NULL) {
                out->has_ota_url = true;
                (void)fleet_strlcpy(out->ota.url, s, sizeof(out->ota.url));
            } else {
                reject(out, key, "expected an http:// or https:// URL");
            }
        } else if (strcmp(key, "ota_sha256") == 0) {
            if ((s = ota_string(item, fleet_ota_sha256_hex_is_valid)) != NULL) {
                out->has_ota_sha256 = true;
                (void)fleet_strlcpy(out->ota.sha256, s, sizeof(out->ota.sha256));
            } else {
                reject(out, key, "expected 64 hex digits");
            }
        } else {
            reject(out, key, "unknown key");
        }
    }
}

bool fleet_shadow_delta_has_ota(const fleet_delta_t *d)
{
    return d->has_target_version || d->has_ota_url || d->has_ota_sha256;
}

void fleet_shadow_rejected_join(const fleet_delta_t *d, char *buf, size_t len)
{
    size_t i;
    size_t n = d->rejected_count < FLEET_REJECTED_MAX ? d->rejected_count : FLEET_REJECTED_MAX;
    size_t used = 0;

    if (len == 0) {
        return;
    }
    buf[0] = '\0';
    for (i = 0; i < n; i++) {
        int w = snprintf(buf + used, len - used, "%s%s", i > 0 ? "," : "", d->rejected[i]);
        if (w < 0 || (size_t)w >= len - used) {
            return;
        }
        used += (size_t)w;
    }
}

void fleet_shadow_merge_ota(fleet_ota_target_t *target, const fleet_delta_t *d)
{
    if (d->has_target_version) {
        memcpy(target->version, d->ota.version, sizeof(target->version));
    }
    if (d->has_ota_url) {
        memcpy(target->url, d->ota.url, sizeof(target->url));
    }
    if (d->has_ota_sha256) {
        memcpy(target->sha256, d->ota.sha256, sizeof(target->sha256));
    }
}

uint32_t fleet_shadow_retry_seed(const char *thing)
{
    uint32_t h = 2166136261u;

    for (; thing != NULL && *thing != '\0'; thing++) {
        h = (h ^ (uint8_t)*thing) * 16777619u;
    }
    return h;
}

uint32_t fleet_shadow_retry_wait_ms(uint32_t base_ms, unsigned attempt, uint32_t seed)
{
    uint32_t wait = base_ms != 0 ? base_ms : FLEET_SHADOW_RETRY_DEFAULT_MS;
    uint32_t h;
    uint32_t half;
    unsigned i;

    for (i = 1; i < attempt && wait < FLEET_SHADOW_RETRY_CAP_MS; i++) {
        wait = wait > FLEET_SHADOW_RETRY_CAP_MS / 2 ? FLEET_SHADOW_RETRY_CAP_MS : wait * 2u;
    }
    wait = wait < FLEET_SHADOW_RETRY_CAP_MS ? wait : FLEET_SHADOW_RETRY_CAP_MS;
    /* murmur3's finalizer over seed and attempt: 16 well-mixed bits of jitter. */
    h = seed ^ ((uint32_t)attempt * 0x9E3779B1u);
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    h ^= h >> 16;
    half = wait / 2u;
    return half + (uint32_t)(((uint64_t)(wait - half) * (h & 0xFFFFu)) >> 16);
}

bool fleet_shadow_rejection_is_retryable(int code)
{
    return code == 500 || code == 429;
}

void fleet_shadow_merge_reported(cJSON *older, cJSON *newer)
{
    cJSON *item;

    if (older == NULL || newer == NULL) {
        cJSON_Delete(newer);
        return;
    }
    while ((item = newer->child) != NULL) {
        cJSON *mine;
        char *key = item->string;

        (void)cJSON_DetachItemViaPointer(newer, item);
        mine = key != NULL ? cJSON_GetObjectItemCaseSensitive(older, key) : NULL;
        if (key == NULL) {
            cJSON_Delete(item);
        } else if (cJSON_IsObject(mine) && cJSON_IsObject(item)) {
            fleet_shadow_merge_reported(mine, item);
        } else if (mine != NULL) {
            (void)cJSON_ReplaceItemViaPointer(older, mine, item);
        } else {
            cJSON_AddItemToObject(older, key, item);
        }
    }
    cJSON_Delete(newer);
}
