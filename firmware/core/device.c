#include "fleet/device.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device_internal.h"
#include "fleet/document.h"
#include "fleet/version.h"
#include "log.h"
#include "text.h"

static const char *TAG = "fleet_device";

#define KEY_LED "led_is_on"
#define KEY_INTERVAL "telem_intvl"
#define DEFAULT_INTERVAL_S 60

const char *fleet_reset_reason_str(fleet_reset_reason_t r)
{
    switch (r) {
    case FLEET_RESET_POWERON: return "poweron";
    case FLEET_RESET_SW_REBOOT: return "sw_reboot";
    case FLEET_RESET_PANIC: return "panic";
    case FLEET_RESET_OTA_ROLLBACK: return "ota_rollback";
    default: return "poweron";
    }
}

fleet_err_t fleet_reset_reason_parse(const char *s, fleet_reset_reason_t *out)
{
    static const fleet_reset_reason_t all[] = {FLEET_RESET_POWERON, FLEET_RESET_SW_REBOOT,
                                               FLEET_RESET_PANIC, FLEET_RESET_OTA_ROLLBACK};
    size_t i;

    for (i = 0; s != NULL && i < sizeof(all) / sizeof(all[0]); i++) {
        if (strcmp(s, fleet_reset_reason_str(all[i])) == 0) {
            *out = all[i];
            return FLEET_OK;
        }
    }
    return FLEET_ERR_INVALID;
}

/* Printable ASCII without quotes/backslashes, 1..max characters (empty allowed if asked). */
static bool is_plain_text(const char *s, size_t max, bool allow_empty)
{
    size_t i;

    if (s == NULL || s[0] == '\0') {
        return allow_empty;
    }
    for (i = 0; s[i] != '\0'; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i >= max || c < 0x20 || c >= 0x7f || c == '"' || c == '\\') {
            return false;
        }
    }
    return true;
}

static bool is_topic_prefix(const char *s)
{
    size_t n = s != NULL ? strlen(s) : 0;

    return n > 0 && n <= FLEET_PREFIX_MAX && strpbrk(s, "+# ") == NULL && s[0] != '/' &&
           s[n - 1] != '/' && is_plain_text(s, FLEET_PREFIX_MAX, false);
}

static bool interval_is_valid(long v)
{
    return v >= FLEET_TELEMETRY_MIN_S && v <= FLEET_TELEMETRY_MAX_S;
}

static void load_settings(fleet_device_t *dev, int default_interval)
{
    const fleet_port_t *port = dev->port;
    char buf[16];

    dev->settings.led_is_on = false;
    dev->settings.telemetry_interval_s =
        interval_is_valid(default_interval) ? default_interval : DEFAULT_INTERVAL_S;
    if (port->nvs_get(port->ctx, KEY_LED, buf, sizeof(buf)) == FLEET_OK) {
        dev->settings.led_is_on = strcmp(buf, "1") == 0;
    }
    if (port->nvs_get(port->ctx, KEY_INTERVAL, buf, sizeof(buf)) == FLEET_OK) {
        char *end = NULL;
        long v = strtol(buf, &end, 10);
        if (end != buf && *end == '\0' && interval_is_valid(v)) {
            dev->settings.telemetry_interval_s = (int)v;
        }
    }
}

fleet_err_t fleet_device_init(fleet_device_t *dev, const fleet_port_t *port,
                              const fleet_device_config_t *cfg)
{
    const char *shadow_prefix;
    const char *fleet_prefix;

    if (dev == NULL || port == NULL || cfg == NULL) {
        return FLEET_ERR_INVALID;
    }
    memset(dev, 0, sizeof(*dev));
    dev->port = port;
    shadow_prefix = cfg->shadow_prefix != NULL ? cfg->shadow_prefix : "$aws/things";
    fleet_prefix = cfg->fleet_prefix != NULL ? cfg->fleet_prefix : "fleet";
    if (!fleet_topic_thing_name_is_valid(cfg->thing) ||
        !is_plain_text(cfg->hardware_rev, FLEET_HW_REV_MAX, false) ||
        !fleet_version_is_valid(cfg->firmware_version) ||
        !is_plain_text(cfg->location != NULL ? cfg->location : "", FLEET_LOCATION_MAX, true) ||
        !is_topic_prefix(shadow_prefix) || !is_topic_prefix(fleet_prefix)) {
        FLEET_LOGE(port, TAG, "invalid device configuration");
        return FLEET_ERR_INVALID;
    }
    (void)fleet_strlcpy(dev->thing, cfg->thing, sizeof(dev->thing));
    (void)fleet_strlcpy(dev->hardware_rev, cfg->hardware_rev, sizeof(dev->hardware_rev));
    (void)fleet_strlcpy(dev->firmware_version, cfg->firmware_version,
                        sizeof(dev->firmware_version));
    (void)fleet_strlcpy(dev->location, cfg->location, sizeof(dev->location));
    (void)fleet_strlcpy(dev->shadow_prefix, shadow_prefix, sizeof(dev->shadow_prefix));
    (void)fleet_strlcpy(dev->fleet_prefix, fleet_prefix, sizeof(dev->fleet_prefix));
    dev->topics.thing = dev->thing;
    dev->topics.shadow_prefix = dev->shadow_prefix;
    dev->topics.fleet_prefix = dev->fleet_prefix;
    dev->reset_reason = cfg->reset_reason;
    dev->pending_verify = cfg->image_pending_verify;
    dev->token_salt = port->random(port->ctx);
    dev->shadow_retry_ms = cfg->shadow_retry_ms != 0 ? cfg->shadow_retry_ms
                                                     : FLEET_SHADOW_RETRY_DEFAULT_MS;
    dev->retry_seed = fleet_shadow_retry_seed(dev->thing);

    load_settings(dev, cfg->telemetry_interval_s);
    if (port->set_led != NULL) {
        port->set_led(port->ctx, dev->settings.led_is_on);
    }
    fleet_telemetry_init(&dev->telemetry);
    fleet_ota_boot(&dev->ota, port, dev->firmware_version, cfg->rollback_reason);
    if (!dev->pending_verify) {
        fleet_ota_confirmed(&dev->ota, port); /* confirmed before the last NVS write landed */
    }
    fleet_jobs_init(dev);
    FLEET_LOGI(port, TAG, "%s firmware %s hw %s reset %s%s", dev->thing, dev->firmware_version,
               dev->hardware_rev, fleet_reset_reason_str(dev->reset_reason),
               dev->pending_verify ? " (image pending verification)" : "");
    return FLEET_OK;
}

int fleet_device_will_topic(const fleet_device_t *dev, char *buf, size_t len)
{
    return fleet_topic_build(buf, len, &dev->topics, FLEET_TOPIC_PRESENCE, NULL);
}

const char *fleet_device_will_payload(void)
{
    return FLEET_PRESENCE_OFFLINE_PAYLOAD;
}

void fleet_device_new_token(fleet_device_t *dev, char *buf)
{
    dev->token_seq++;
    (void)snprintf(buf, FLEET_TOKEN_MAX, "%08lx-%lu", (unsigned long)dev->token_salt,
                   (unsigned long)dev->token_seq);
}

static bool token_is_ours(const fleet_device_t *dev, const char *token)
{
    char salt[12];

    if (token == NULL) {
        return false;
    }
    (void)snprintf(salt, sizeof(salt), "%08lx-", (unsigned long)dev->token_salt);
    return strncmp(token, salt, strlen(salt)) == 0;
}

void fleet_device_publish_json(fleet_device_t *dev, fleet_topic_id_t id, const char *job_id,
                               cJSON *doc, int qos, bool retain)
{
    char topic[FLEET_TOPIC_MAX];
    char *text;
    int rc;

    if (doc == NULL) {
        FLEET_LOGE(dev->port, TAG, "out of memory building a message");
        dev->errors++;
        return;
    }
    text = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    if (text == NULL || fleet_topic_build(topic, sizeof(topic), &dev->topics, id, job_id) < 0) {
        FLEET_LOGE(dev->port, TAG, "cannot build message");
        dev->errors++;
        cJSON_free(text);
        return;
    }
    rc = dev->port->publish(dev->port->ctx, topic, text, strlen(text), qos, retain);
    if (rc != FLEET_OK) {
        FLEET_LOGW(dev->port, TAG, "publish to %s failed (%d)", topic, rc);
    } else {
        FLEET_LOGD(dev->port, TAG, "-> %s %s", topic, text);
    }
    cJSON_free(text);
}

static void publish_update_text(fleet_device_t *dev)
{
    char topic[FLEET_TOPIC_MAX];
    int rc;

    if (fleet_topic_build(topic, sizeof(topic), &dev->topics, FLEET_TOPIC_SHADOW_UPDATE, NULL) <
        0) {
        dev->errors++;
        return;
    }
    rc = dev->port->publish(dev->port->ctx, topic, dev->update_text, strlen(dev->update_text),
                            1, false);
    if (rc != FLEET_OK) {
        FLEET_LOGW(dev->port, TAG, "publish to %s failed (%d)", topic, rc);
    } else {
        FLEET_LOGD(dev->port, TAG, "-> %s %s (attempt %u)", topic, dev->update_text,
                   dev->update_attempts);
    }
}

/* Sends reported as the new update in flight (takes ownership). full: the boot report. */
static void send_update(fleet_device_t *dev, cJSON *reported, bool full)
{
    char token[FLEET_TOKEN_MAX];
    cJSON *doc = cJSON_CreateObject();
    cJSON *state = cJSON_AddObjectToObject(doc, "state");

    if (state == NULL || reported == NULL) {
        FLEET_LOGE(dev->port, TAG, "out of memory building a shadow update");
        cJSON_Delete(doc);
        cJSON_Delete(reported);
        dev->errors++;
        return;
    }
    cJSON_AddItemToObject(state, "reported", reported);
    fleet_device_new_token(dev, token);
    (void)cJSON_AddStringToObject(doc, "clientToken", token);
    if (!cJSON_PrintPreallocated(doc, dev->update_text, (int)sizeof(dev->update_text), false)) {
        FLEET_LOGE(dev->port, TAG, "shadow update larger than %d bytes; dropped",
                   FLEET_REPORT_MAX);
        cJSON_Delete(doc);
        dev->update_in_flight = false;
        dev->errors++;
        return;
    }
    cJSON_Delete(doc);
    (void)fleet_strlcpy(dev->update_token, token, sizeof(dev->update_token));
    if (full) {
        (void)fleet_strlcpy(dev->boot_report_token, token, sizeof(dev->boot_report_token));
    }
    dev->update_in_flight = true;
    dev->update_attempts = 1;
    dev->update_deadline_ms = dev->port->uptime_ms(dev->port->ctx) +
                              fleet_shadow_retry_wait_ms(dev->shadow_retry_ms, 1, dev->retry_seed);
    publish_update_text(dev);
}

/* Sends the queued patch, if any, as the next update in flight. */
static void send_queued(fleet_device_t *dev)
{
    cJSON *reported;

    if (!dev->update_queued) {
        return;
    }
    dev->update_queued = false;
    reported = cJSON_Parse(dev->update_queued_text);
    send_update(dev, reported, dev->update_queued_full);
    dev->update_queued_full = false;
}

/* The update in flight is done (answered, refused or given up): the queued one goes. */
static void finish_update(fleet_device_t *dev)
{
    dev->update_in_flight = false;
    dev->update_attempts = 0;
    send_queued(dev);
}

/* Another attempt of the update in flight, or giving it up after the last one. */
static void retry_update(fleet_device_t *dev, uint64_t now_ms)
{
    if (dev->update_attempts >= FLEET_SHADOW_ATTEMPTS_MAX) {
        FLEET_LOGW(dev->port, TAG, "shadow update %s unanswered after %u attempts; giving up",
                   dev->update_token, dev->update_attempts);
        dev->errors++;
        finish_update(dev);
        return;
    }
    dev->update_attempts++;
    dev->update_deadline_ms =
        now_ms + fleet_shadow_retry_wait_ms(dev->shadow_retry_ms, dev->update_attempts,
                                            dev->retry_seed);
    FLEET_LOGI(dev->port, TAG, "shadow update %s: attempt %u", dev->update_token,
               dev->update_attempts);
    publish_update_text(dev);
}

/* One update in flight per shadow: a report made meanwhile waits, merged into the queue. */
static void submit_report(fleet_device_t *dev, cJSON *reported, bool full)
{
    cJSON *queued;

    if (reported == NULL) {
        FLEET_LOGE(dev->port, TAG, "out of memory building a shadow update");
        dev->errors++;
        return;
    }
    if (!dev->update_in_flight) {
        send_update(dev, reported, full);
        return;
    }
    queued = dev->update_queued ? cJSON_Parse(dev->update_queued_text) : cJSON_CreateObject();
    fleet_shadow_merge_reported(queued, reported);
    if (queued == NULL || !cJSON_PrintPreallocated(queued, dev->update_queued_text,
                                                   (int)sizeof(dev->update_queued_text), false)) {
        FLEET_LOGE(dev->port, TAG, "cannot queue a shadow update; dropped");
        dev->update_queued = false;
        dev->update_queued_full = false;
        dev->errors++;
    } else {
        dev->update_queued = true;
        dev->update_queued_full = dev->update_queued_full || full;
    }
    cJSON_Delete(queued);
}

void fleet_device_report(fleet_device_t *dev, cJSON *reported)
{
    submit_report(dev, reported, false);
}

void fleet_device_flush_reports(fleet_device_t *dev)
{
    send_queued(dev);
}

static void add_string_or_null(cJSON *obj, const char *key, const char *value)
{
    if (value != NULL && value[0] != '\0') {
        (void)cJSON_AddStringToObject(obj, key, value);
    } else {
        (void)cJSON_AddNullToObject(obj, key);
    }
}

static void add_ota_status(const fleet_device_t *dev, cJSON *reported)
{
    (void)cJSON_AddStringToObject(reported, "ota_status", fleet_ota_status_str(dev->ota.status));
    add_string_or_null(reported, "ota_error", dev->ota.error);
}

static void add_ota_trio(cJSON *reported, const fleet_ota_target_t *t)
{
    add_string_or_null(reported, "target_version", t->version);
    add_string_or_null(reported, "ota_url", t->url);
    add_string_or_null(reported, "ota_sha256", t->sha256);
}

static void publish_full_report(fleet_device_t *dev)
{
    cJSON *reported = cJSON_CreateObject();
    cJSON *tags;

    if (reported == NULL) {
        submit_report(dev, NULL, true);
        return;
    }
    (void)cJSON_AddStringToObject(reported, "firmware_version", dev->firmware_version);
    (void)cJSON_AddStringToObject(reported, "hardware_rev", dev->hardware_rev);
    (void)cJSON_AddBoolToObject(reported, "led_is_on", dev->settings.led_is_on);
    (void)cJSON_AddNumberToObject(reported, "telemetry_interval_s",
                                  dev->settings.telemetry_interval_s);
    if (dev->location[0] != '\0' && (tags = cJSON_AddObjectToObject(reported, "tags")) != NULL) {
        (void)cJSON_AddStringToObject(tags, "location", dev->location);
    }
    add_ota_status(dev, reported);
    add_ota_trio(reported, &dev->ota.applied);
    submit_report(dev, reported, true);
}

static void publish_telemetry(fleet_device_t *dev, uint64_t now_ms)
{
    const fleet_port_t *port = dev->port;

    fleet_telemetry_step(&dev->telemetry, port->random(port->ctx));
    fleet_device_publish_json(dev, FLEET_TOPIC_TELEMETRY, NULL,
                              fleet_telemetry_payload(&dev->telemetry, port->epoch_s(port->ctx),
                                                      now_ms / 1000u,
                                                      fleet_reset_reason_str(dev->reset_reason),
                                                      dev->errors),
                              0, false);
    dev->telemetry_last_ms = now_ms;
    dev->telemetry_due_ms = now_ms + (uint64_t)dev->settings.telemetry_interval_s * 1000u;
}

void fleet_device_on_connect(fleet_device_t *dev)
{
    const fleet_port_t *port = dev->port;
    const fleet_topic_id_t *subs;
    size_t count;
    size_t i;
    char topic[FLEET_TOPIC_MAX];
    char token[FLEET_TOKEN_MAX];
    cJSON *get;

    if (dev->rebooting) {
        return;
    }
    dev->connected = true;
    dev->have_delta_version = false;
    dev->last_delta_fingerprint = 0;
    dev->reported_rejected_known = false;
    FLEET_LOGI(port, TAG, "connected; subscribing and reporting state");

    subs = fleet_topic_subscriptions(&count);
    for (i = 0; i < count; i++) {
        if (fleet_topic_build(topic, sizeof(topic), &dev->topics, subs[i], NULL) < 0 ||
            port->subscribe(port->ctx, topic, 1) != FLEET_OK) {
            FLEET_LOGE(port, TAG, "subscribe to %s failed", topic);
            dev->errors++;
        }
    }
    fleet_device_publish_json(dev, FLEET_TOPIC_PRESENCE, NULL,
                              fleet_presence_online_payload(dev->firmware_version,
                                                            dev->hardware_rev,
                                                            port->epoch_s(port->ctx)),
                              1, true);
    get = cJSON_CreateObject();
    fleet_device_new_token(dev, token);
    (void)cJSON_AddStringToObject(get, "clientToken", token);
    fleet_device_publish_json(dev, FLEET_TOPIC_SHADOW_GET, NULL, get, 1, false);
    if (dev->update_in_flight) {
        /* Its answer may have been lost with the link: send it again before the report. */
        retry_update(dev, port->uptime_ms(port->ctx));
    }
    publish_full_report(dev);
    fleet_jobs_on_connect(dev);
    publish_telemetry(dev, port->uptime_ms(port->ctx));
}

void fleet_device_on_disconnect(fleet_device_t *dev)
{
    if (dev->connected) {
        FLEET_LOGW(dev->port, TAG, "disconnected");
    }
    dev->connected = false;
}

void fleet_device_apply_settings(fleet_device_t *dev, const fleet_delta_t *d, cJSON *patch)
{
    const fleet_port_t *port = dev->port;
    char buf[16];

    if (d->has_led_is_on) {
        if (d->led_is_on != dev->settings.led_is_on) {
            FLEET_LOGI(port, TAG, "led_is_on -> %s", d->led_is_on ? "true" : "false");
        }
        dev->settings.led_is_on = d->led_is_on;
        if (port->nvs_set(port->ctx, KEY_LED, d->led_is_on ? "1" : "0") != FLEET_OK) {
            FLEET_LOGE(port, TAG, "cannot persist %s", KEY_LED);
        }
        if (port->set_led != NULL) {
            port->set_led(port->ctx, d->led_is_on);
        }
        (void)cJSON_AddBoolToObject(patch, "led_is_on", d->led_is_on);
    }
    if (d->has_telemetry_interval_s) {
        if (d->telemetry_interval_s != dev->settings.telemetry_interval_s) {
            FLEET_LOGI(port, TAG, "telemetry_interval_s -> %d", d->telemetry_interval_s);
        }
        dev->settings.telemetry_interval_s = d->telemetry_interval_s;
        (void)snprintf(buf, sizeof(buf), "%d", d->telemetry_interval_s);
        if (port->nvs_set(port->ctx, KEY_INTERVAL, buf) != FLEET_OK) {
            FLEET_LOGE(port, TAG, "cannot persist %s", KEY_INTERVAL);
        }
        dev->telemetry_due_ms =
            dev->telemetry_last_ms + (uint64_t)d->telemetry_interval_s * 1000u;
        (void)cJSON_AddNumberToObject(patch, "telemetry_interval_s", d->telemetry_interval_s);
    }
}

/* FNV-1a over the delta's canonical text; never 0 (0 means "none"). */
static uint32_t fingerprint(const cJSON *state)
{
    char *text = state != NULL ? cJSON_PrintUnformatted(state) : NULL;
    uint32_t h = 2166136261u;
    const char *p;

    for (p = text != NULL ? text : "{}"; *p != '\0'; p++) {
        h ^= (uint8_t)*p;
        h *= 16777619u;
    }
    cJSON_free(text);
    return h != 0 ? h : 1u;
}

static void reconcile_rejected(fleet_device_t *dev, const fleet_delta_t *d, cJSON *patch)
{
    char joined[sizeof(dev->reported_rejected)];
    cJSON *keys;
    size_t i;
    size_t n = d->rejected_count < FLEET_REJECTED_MAX ? d->rejected_count : FLEET_REJECTED_MAX;

    fleet_shadow_rejected_join(d, joined, sizeof(joined));
    if (dev->reported_rejected_known && strcmp(joined, dev->reported_rejected) == 0) {
        return;
    }
    if (n > 0) {
        FLEET_LOGW(dev->port, TAG, "rejected desired keys: %s", d->config_error);
        keys = cJSON_AddArrayToObject(patch, "rejected_keys");
        for (i = 0; keys != NULL && i < n; i++) {
            cJSON_AddItemToArray(keys, cJSON_CreateString(d->rejected[i]));
        }
        (void)cJSON_AddStringToObject(patch, "config_error", d->config_error);
    } else {
        (void)cJSON_AddNullToObject(patch, "rejected_keys");
        (void)cJSON_AddNullToObject(patch, "config_error");
    }
    memcpy(dev->reported_rejected, joined, sizeof(joined));
    dev->reported_rejected_known = true;
}

static void handle_ota_request(fleet_device_t *dev, const fleet_delta_t *d, cJSON *patch)
{
    const fleet_port_t *port = dev->port;
    fleet_ota_t *ota = &dev->ota;

    fleet_shadow_merge_ota(&ota->desired, d);
    switch (fleet_ota_decide(dev->firmware_version, &ota->desired, &ota->failed)) {
    case FLEET_OTA_ACTION_CONVERGE:
        fleet_ota_converge(ota, port, &ota->desired);
        add_ota_trio(patch, &ota->applied);
        add_ota_status(dev, patch);
        break;
    case FLEET_OTA_ACTION_START:
        FLEET_LOGI(port, TAG, "update requested: %s -> %s", dev->firmware_version,
                   ota->desired.version);
        fleet_ota_request(ota, &ota->desired);
        add_ota_status(dev, patch);
        break;
    case FLEET_OTA_ACTION_SKIP_FAILED:
        FLEET_LOGI(port, TAG, "target %s failed before; not retrying", ota->desired.version);
        break;
    case FLEET_OTA_ACTION_NONE:
    default:
        FLEET_LOGW(port, TAG, "incomplete OTA request (needs target_version, ota_url, ota_sha256)");
        break;
    }
}

/* state may be NULL (a get without delta): only the rejected keys are reconciled. */
static void handle_delta(fleet_device_t *dev, const cJSON *state, const cJSON *version,
                         bool from_get)
{
    const fleet_port_t *port = dev->port;
    fleet_delta_t *d;
    cJSON *patch;
    uint32_t fp;

    if (cJSON_IsNumber(version) && version->valuedouble >= 0 && version->valuedouble < 9e15) {
        long long v = (long long)version->valuedouble;
        if (!from_get && dev->have_delta_version && v <= dev->last_delta_version) {
            FLEET_LOGD(port, TAG, "ignoring stale delta version %lld", v);
            return;
        }
        dev->last_delta_version = v;
        dev->have_delta_version = true;
    }
    fp = fingerprint(state);
    if (!from_get && fp == dev->last_delta_fingerprint) {
        FLEET_LOGD(port, TAG, "delta already handled");
        return;
    }
    dev->last_delta_fingerprint = fp;

    d = malloc(sizeof(*d)); /* ~1 KiB: keep it off the device task's stack */
    patch = cJSON_CreateObject();
    if (d == NULL || patch == NULL) {
        free(d);
        cJSON_Delete(patch);
        dev->errors++;
        return;
    }
    fleet_shadow_parse_delta(state, true, d);
    fleet_device_apply_settings(dev, d, patch);
    reconcile_rejected(dev, d, patch);
    if (fleet_shadow_delta_has_ota(d)) {
        handle_ota_request(dev, d, patch);
    }
    free(d);
    if (patch->child != NULL) {
        fleet_device_report(dev, patch);
    } else {
        cJSON_Delete(patch);
    }
}

static void handle_get_accepted(fleet_device_t *dev, const cJSON *doc)
{
    const cJSON *state = fleet_document_object(doc, "state");
    const cJSON *desired = fleet_document_object(state, "desired");
    const cJSON *reported = fleet_document_object(state, "reported");
    const cJSON *rejected = cJSON_GetObjectItemCaseSensitive(reported, "rejected_keys");
    fleet_delta_t *d = malloc(sizeof(*d));
    const cJSON *list = cJSON_IsArray(rejected) ? rejected : NULL;
    const cJSON *item;

    if (d == NULL) {
        dev->errors++;
        return;
    }
    /* The full desired OTA trio, so a delta naming only part of it can be completed. */
    fleet_shadow_parse_delta(desired, true, d);
    fleet_shadow_merge_ota(&dev->ota.desired, d);
    /* What the shadow holds as rejected keys, so we only rewrite it when it changes. */
    memset(d, 0, sizeof(*d));
    cJSON_ArrayForEach(item, list) {
        if (cJSON_IsString(item) && d->rejected_count < FLEET_REJECTED_MAX) {
            (void)fleet_strlcpy(d->rejected[d->rejected_count++], item->valuestring,
                                FLEET_KEY_MAX + 1);
        }
    }
    fleet_shadow_rejected_join(d, dev->reported_rejected, sizeof(dev->reported_rejected));
    dev->reported_rejected_known = true;
    free(d);
    handle_delta(dev, fleet_document_object(state, "delta"),
                 cJSON_GetObjectItemCaseSensitive(doc, "version"), true);
}

static void log_rejection(fleet_device_t *dev, const char *what, const cJSON *doc)
{
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(doc, "code");
    const char *message = fleet_document_string(doc, "message");

    FLEET_LOGW(dev->port, TAG, "%s rejected: %d %s", what,
               cJSON_IsNumber(code) ? code->valueint : 0, message != NULL ? message : "");
}

static bool is_update_in_flight(const fleet_device_t *dev, const char *token)
{
    return dev->update_in_flight && token != NULL && strcmp(token, dev->update_token) == 0;
}

static void handle_update_rejected(fleet_device_t *dev, const cJSON *doc)
{
    const char *token = fleet_document_string(doc, "clientToken");
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(doc, "code");

    if (!token_is_ours(dev, token)) {
        return;
    }
    log_rejection(dev, "shadow update", doc);
    dev->errors++;
    if (!is_update_in_flight(dev, token)) {
        return;
    }
    if (cJSON_IsNumber(code) && fleet_shadow_rejection_is_retryable(code->valueint)) {
        return; /* sent again when this attempt's wait ends (the backoff) */
    }
    finish_update(dev); /* 400, 409, 413: the same request would be refused again */
}

static void handle_update_accepted(fleet_device_t *dev, const cJSON *doc)
{
    const char *token = fleet_document_string(doc, "clientToken");
    bool confirms = token != NULL && dev->boot_report_token[0] != '\0' &&
                    strcmp(token, dev->boot_report_token) == 0;

    if (is_update_in_flight(dev, token)) {
        finish_update(dev);
    }
    if (!confirms || !dev->pending_verify) {
        return;
    }
    if (dev->port->slot_confirm(dev->port->ctx) != FLEET_OK) {
        FLEET_LOGE(dev->port, TAG, "cannot mark firmware %s valid", dev->firmware_version);
        dev->errors++;
        return;
    }
    dev->pending_verify = false;
    fleet_ota_confirmed(&dev->ota, dev->port);
    FLEET_LOGI(dev->port, TAG, "firmware %s confirmed", dev->firmware_version);
}

void fleet_device_on_message(fleet_device_t *dev, const char *topic, size_t topic_len,
                             const void *payload, size_t len)
{
    char job_id[FLEET_JOB_ID_MAX + 1];
    fleet_topic_id_t kind;
    fleet_doc_error_t err;
    cJSON *doc;

    if (dev->rebooting) {
        return;
    }
    kind = fleet_topic_parse(&dev->topics, topic, topic_len, job_id, sizeof(job_id));
    if (kind == FLEET_TOPIC_UNKNOWN) {
        FLEET_LOGD(dev->port, TAG, "ignoring message on an unknown topic");
        return;
    }
    doc = fleet_document_parse(payload, len, &err);
    if (doc == NULL) {
        FLEET_LOGW(dev->port, TAG, "dropping message on %.*s: %s", (int)topic_len, topic,
                   fleet_document_error_str(err));
        dev->errors++;
        return;
    }
    switch (kind) {
    case FLEET_TOPIC_SHADOW_DELTA:
        handle_delta(dev, fleet_document_object(doc, "state"),
                     cJSON_GetObjectItemCaseSensitive(doc, "version"), false);
        break;
    case FLEET_TOPIC_SHADOW_GET_ACCEPTED:
        handle_get_accepted(dev, doc);
        break;
    case FLEET_TOPIC_SHADOW_GET_REJECTED:
        if (token_is_ours(dev, fleet_document_string(doc, "clientToken"))) {
            log_rejection(dev, "shadow get", doc);
            dev->reported_rejected[0] = '\0'; /* no shadow: nothing rejected in it */
            dev->reported_rejected_known = true;
        }
        break;
    case FLEET_TOPIC_SHADOW_UPDATE_ACCEPTED:
        handle_update_accepted(dev, doc);
        break;
    case FLEET_TOPIC_SHADOW_UPDATE_REJECTED:
        handle_update_rejected(dev, doc);
        break;
    default:
        fleet_jobs_on_message(dev, kind, job_id, doc);
        break;
    }
    cJSON_Delete(doc);
}

static void on_ota_status(void *ctx, const fleet_ota_t *ota)
{
    fleet_device_t *dev = ctx;
    cJSON *patch = cJSON_CreateObject();

    (void)ota;
    if (patch == NULL) {
        dev->errors++;
        return;
    }
    add_ota_status(dev, patch);
    fleet_device_report(dev, patch);
}

void fleet_device_tick(fleet_device_t *dev)
{
    const fleet_port_t *port = dev->port;
    uint64_t now;

    if (dev->rebooting) {
        return;
    }
    if (dev->ota.install_requested) {
        if (fleet_ota_install(&dev->ota, port, on_ota_status, dev) == FLEET_OK) {
            fleet_device_flush_reports(dev);
            dev->rebooting = true;
            port->reboot(port->ctx);
            return;
        }
        dev->errors++;
    }
    now = port->uptime_ms(port->ctx);
    if (dev->connected && now >= dev->telemetry_due_ms) {
        publish_telemetry(dev, now);
    }
    if (dev->update_in_flight && now >= dev->update_deadline_ms &&
        (dev->connected || dev->update_attempts >= FLEET_SHADOW_ATTEMPTS_MAX)) {
        retry_update(dev, now); /* offline: on_connect sends it again */
    }
}

uint32_t fleet_device_next_wakeup_ms(const fleet_device_t *dev)
{
    uint64_t now;
    uint64_t due;

    if (dev->ota.install_requested) {
        return 0;
    }
    if (!dev->connected) {
        return 1000;
    }
    now = dev->port->uptime_ms(dev->port->ctx);
    due = dev->telemetry_due_ms;
    if (dev->update_in_flight && dev->update_deadline_ms < due) {
        due = dev->update_deadline_ms;
    }
    if (now >= due) {
        return 0;
    }
    return due - now > 1000u ? 1000u : (uint32_t)(due - now);
}

void fleet_device_power_off(fleet_device_t *dev)
{
    char topic[FLEET_TOPIC_MAX];
    const char *payload = FLEET_PRESENCE_OFFLINE_PAYLOAD;

    if (!dev->connected || fleet_device_will_topic(dev, topic, sizeof(topic)) < 0) {
        return;
    }
    FLEET_LOGI(dev->port, TAG, "powering off");
    (void)dev->port->publish(dev->port->ctx, topic, payload, strlen(payload), 1, true);
}
