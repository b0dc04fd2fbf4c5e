#include "fake_port.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *dup_n(const void *data, size_t len)
{
    char *s = malloc(len + 1);

    if (s != NULL) {
        memcpy(s, data, len);
        s[len] = '\0';
    }
    return s;
}

static int f_publish(void *ctx, const char *topic, const void *payload, size_t len, int qos,
                     bool retain)
{
    fake_port_t *f = ctx;
    fake_publish_t *p;

    if (!f->connected) {
        return FLEET_ERR_NO_CONN;
    }
    if (f->publish_count >= FAKE_MAX_PUBLISHES) {
        return FLEET_ERR;
    }
    p = &f->publishes[f->publish_count++];
    p->topic = dup_n(topic, strlen(topic));
    p->payload = dup_n(payload, len);
    p->qos = qos;
    p->retain = retain;
    return FLEET_OK;
}

static int f_subscribe(void *ctx, const char *topic_filter, int qos)
{
    fake_port_t *f = ctx;

    (void)topic_filter;
    (void)qos;
    f->subscribe_count++;
    return FLEET_OK;
}

static int f_http_get(void *ctx, const char *url, fleet_http_sink_fn sink, void *sink_ctx,
                      char *err, size_t err_len)
{
    fake_port_t *f = ctx;
    static const uint8_t zeros[65536];
    size_t total = f->fake_huge_len > 0 ? f->fake_huge_len : f->body_len;
    size_t off = 0;
    size_t chunk = f->chunk > 0 ? f->chunk : 7;

    f->http_calls++;
    snprintf(f->last_url, sizeof(f->last_url), "%s", url);
    while (off < total) {
        size_t n = total - off < chunk ? total - off : chunk;
        const uint8_t *data;
        int rc;
        if (f->fake_huge_len > 0) {
            n = n > sizeof(zeros) ? sizeof(zeros) : n;
            data = zeros;
        } else {
            data = f->body + off;
        }
        rc = sink(sink_ctx, data, n);
        if (rc != FLEET_OK) {
            return rc;
        }
        off += n;
    }
    if (f->http_rc != FLEET_OK && f->http_err != NULL) {
        snprintf(err, err_len, "%s", f->http_err);
    }
    return f->http_rc;
}

static int f_slot_begin(void *ctx)
{
    fake_port_t *f = ctx;

    f->slot_begins++;
    f->slot_written = 0;
    return f->slot_begin_rc;
}

static int f_slot_write(void *ctx, const void *data, size_t len)
{
    fake_port_t *f = ctx;

    (void)data;
    if (f->slot_write_rc != FLEET_OK) {
        return f->slot_write_rc;
    }
    f->slot_written += len;
    return FLEET_OK;
}

static int f_slot_end(void *ctx, fleet_slot_image_t *image)
{
    fake_port_t *f = ctx;

    *image = f->image;
    image->size = (uint32_t)f->slot_written;
    return f->slot_end_rc;
}

static int f_slot_activate(void *ctx, bool activate)
{
    fake_port_t *f = ctx;

    if (!activate) {
        f->slot_discards++;
        return FLEET_OK;
    }
    if (f->slot_activate_rc == FLEET_OK) {
        f->slot_activations++;
    }
    return f->slot_activate_rc;
}

static int f_slot_confirm(void *ctx)
{
    ((fake_port_t *)ctx)->confirms++;
    return FLEET_OK;
}

static void f_reboot(void *ctx)
{
    ((fake_port_t *)ctx)->reboots++;
}

static uint64_t f_uptime_ms(void *ctx)
{
    return ((fake_port_t *)ctx)->now_ms;
}

static double f_epoch_s(void *ctx)
{
    return 1700000000.0 + (double)((fake_port_t *)ctx)->now_ms / 1000.0;
}

static int nvs_index(const fake_port_t *f, const char *key)
{
    size_t i;

    for (i = 0; i < f->nvs_count; i++) {
        if (strcmp(f->nvs_keys[i], key) == 0) {
            return (int)i;
        }
    }
    return -1;
}

static int f_nvs_get(void *ctx, const char *key, char *buf, size_t len)
{
    fake_port_t *f = ctx;
    int i = nvs_index(f, key);

    if (i < 0) {
        return FLEET_ERR_NOT_FOUND;
    }
    if (strlen(f->nvs_values[i]) >= len) {
        return FLEET_ERR_TOO_LARGE;
    }
    strcpy(buf, f->nvs_values[i]);
    return FLEET_OK;
}

static int f_nvs_set(void *ctx, const char *key, const char *value)
{
    fake_port_t *f = ctx;
    int i = nvs_index(f, key);

    if (strlen(key) > 15) {
        return FLEET_ERR_INVALID; /* ESP-IDF NVS key limit */
    }
    if (value == NULL) {
        if (i >= 0) {
            f->nvs_count--;
            memmove(f->nvs_keys[i], f->nvs_keys[f->nvs_count], sizeof(f->nvs_keys[0]));
            memmove(f->nvs_values[i], f->nvs_values[f->nvs_count], sizeof(f->nvs_values[0]));
        }
        return FLEET_OK;
    }
    if (strlen(value) >= sizeof(f->nvs_values[0])) {
        return FLEET_ERR_TOO_LARGE;
    }
    if (i < 0) {
        if (f->nvs_count >= FAKE_MAX_NVS) {
            return FLEET_ERR;
        }
        i = (int)f->nvs_count++;
        strcpy(f->nvs_keys[i], key);
    }
    strcpy(f->nvs_values[i], value);
    return FLEET_OK;
}

static uint32_t f_random(void *ctx)
{
    fake_port_t *f = ctx;

    f->rng = f->rng * 1664525u + 1013904223u;
    return f->rng;
}

static void f_set_led(void *ctx, bool on)
{
    ((fake_port_t *)ctx)->led = on;
}

static void f_log(void *ctx, fleet_log_level_t level, const char *tag, const char *msg)
{
    fake_port_t *f = ctx;

    if (f->verbose || getenv("FLEET_TEST_VERBOSE") != NULL) {
        fprintf(stderr, "    %c %s: %s\n", "EWID"[level], tag, msg);
    }
}

void fake_port_init(fake_port_t *f, fleet_port_t *port)
{
    memset(f, 0, sizeof(*f));
    memset(port, 0, sizeof(*port));
    f->connected = true;
    f->rng = 12345u;
    f->now_ms = 1000;
    port->ctx = f;
    port->publish = f_publish;
    port->subscribe = f_subscribe;
    port->http_get = f_http_get;
    port->slot_begin = f_slot_begin;
    port->slot_write = f_slot_write;
    port->slot_end = f_slot_end;
    port->slot_activate = f_slot_activate;
    port->slot_confirm = f_slot_confirm;
    port->reboot = f_reboot;
    port->uptime_ms = f_uptime_ms;
    port->epoch_s = f_epoch_s;
    port->nvs_get = f_nvs_get;
    port->nvs_set = f_nvs_set;
    port->random = f_random;
    port->set_led = f_set_led;
    port->log = f_log;
}

void fake_port_clear_publishes(fake_port_t *f)
{
    size_t i;

    for (i = 0; i < f->publish_count; i++) {
        free(f->publishes[i].topic);
        free(f->publishes[i].payload);
    }
    f->publish_count = 0;
}

void fake_port_free(fake_port_t *f)
{
    fake_port_clear_publishes(f);
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s);
    size_t m = strlen(suffix);

    return n >= m && strcmp(s + n - m, suffix) == 0;
}

size_t fake_count(const fake_port_t *f, const char *suffix)
{
    size_t i;
    size_t n = 0;

    for (i = 0; i < f->publish_count; i++) {
        n += ends_with(f->publishes[i].topic, suffix);
    }
    return n;
}

const fake_publish_t *fake_nth(const fake_port_t *f, const char *suffix, size_t n)
{
    size_t i;

    for (i = 0; i < f->publish_count; i++) {
        if (ends_with(f->publishes[i].topic, suffix) && n-- == 0) {
            return &f->publishes[i];
        }
    }
    return NULL;
}

cJSON *fake_last_json(const fake_port_t *f, const char *suffix)
{
    size_t n = fake_count(f, suffix);
    const fake_publish_t *p = n > 0 ? fake_nth(f, suffix, n - 1) : NULL;

    return p != NULL ? cJSON_Parse(p->payload) : NULL;
}

const cJSON *fake_path(const cJSON *doc, const char *path)
{
    char buf[128];
    char *save = NULL;
    char *part;
    const cJSON *cur = doc;

    snprintf(buf, sizeof(buf), "%s", path);
    for (part = strtok_r(buf, ".", &save); part != NULL && cur != NULL;
         part = strtok_r(NULL, ".", &save)) {
        cur = cJSON_GetObjectItemCaseSensitive(cur, part);
    }
    return cur;
}

const char *fake_nvs(const fake_port_t *f, const char *key)
{
    int i = nvs_index(f, key);

    return i >= 0 ? f->nvs_values[i] : NULL;
}

void fake_nvs_put(fake_port_t *f, const char *key, const char *value)
{
    (void)f_nvs_set(f, key, value);
}

static void deliver_answer(fleet_device_t *dev, const char *suffix, const char *json)
{
    char topic[FLEET_TOPIC_MAX];

    snprintf(topic, sizeof(topic), "%s/%s/%s", dev->shadow_prefix, dev->thing, suffix);
    fleet_device_on_message(dev, topic, strlen(topic), json, strlen(json));
}

void fake_accept_update(fleet_device_t *dev)
{
    fake_port_t *f = dev->port->ctx;
    char json[128];

    if (!dev->update_in_flight) {
        return;
    }
    snprintf(json, sizeof(json), "{\"state\":{},\"version\":%d,\"clientToken\":\"%s\"}",
             ++f->accepted_version, dev->update_token);
    deliver_answer(dev, "shadow/update/accepted", json);
}

void fake_reject_update(fleet_device_t *dev, int code)
{
    char json[128];

    if (!dev->update_in_flight) {
        return;
    }
    snprintf(json, sizeof(json), "{\"code\":%d,\"message\":\"test\",\"clientToken\":\"%s\"}",
             code, dev->update_token);
    deliver_answer(dev, "shadow/update/rejected", json);
}

static void answer_updates(fleet_device_t *dev)
{
    fake_port_t *f = dev->port->ctx;
    int n;

    /* Not while an OTA install is due: the device blocks in it before any answer. */
    for (n = 0; f->auto_accept && dev->update_in_flight && !dev->ota.install_requested && n < 8;
         n++) {
        fake_accept_update(dev);
    }
}

void fake_deliver(fleet_device_t *dev, const char *suffix, const char *json)
{
    char topic[FLEET_TOPIC_MAX];

    snprintf(topic, sizeof(topic), "%s/%s/%s", dev->shadow_prefix, dev->thing, suffix);
    fleet_device_on_message(dev, topic, strlen(topic), json, strlen(json));
    answer_updates(dev);
}

fleet_device_config_t fake_config(void)
{
    fleet_device_config_t c;

    memset(&c, 0, sizeof(c));
    c.thing = "dev-1";
    c.hardware_rev = "rev-a";
    c.firmware_version = "2.2.0";
    c.location = "factory-A";
    c.telemetry_interval_s = 60;
    c.reset_reason = FLEET_RESET_POWERON;
    return c;
}
