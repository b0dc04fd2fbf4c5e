#include "port_esp32.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "driver/gpio.h"
#include "esp_app_desc.h"
#include "esp_crt_bundle.h"
#include "esp_http_client.h"
#include "esp_log.h"
#include "esp_ota_ops.h"
#include "esp_random.h"
#include "esp_system.h"
#include "esp_timer.h"
#include "freertos/FreeRTOS.h"
#include "freertos/queue.h"
#include "freertos/task.h"
#include "mbedtls/sha256.h"
#include "mqtt_client.h"
#include "nvs.h"
#include "nvs_flash.h"

static const char *TAG = "port";

#define NVS_NAMESPACE "fleet"
#define EVENT_QUEUE_LEN 32
#define HTTP_TIMEOUT_MS 60000
#define HTTP_CHUNK 2048
#define MQTT_BUFFER_SIZE 8192

static nvs_handle_t s_nvs;
static QueueHandle_t s_events;
static esp_mqtt_client_handle_t s_mqtt;

/* The slot being written. */
static const esp_partition_t *s_update_partition;
static esp_ota_handle_t s_ota_handle;
static bool s_ota_open;
static bool s_ota_staged;
static mbedtls_sha256_context s_sha;

/* ---- MQTT (esp-mqtt's task) ---- */

static void queue_event(port_event_type_t type, const char *topic, size_t topic_len,
                        const char *data, size_t len)
{
    port_event_t ev = {.type = type};

    if (type == PORT_EVENT_MESSAGE) {
        ev.topic = malloc(topic_len + 1);
        ev.payload = malloc(len > 0 ? len : 1);
        if (ev.topic == NULL || ev.payload == NULL) {
            port_esp32_free_event(&ev);
            return;
        }
        memcpy(ev.topic, topic, topic_len);
        ev.topic[topic_len] = '\0';
        memcpy(ev.payload, data, len);
        ev.len = len;
    }
    if (xQueueSend(s_events, &ev, 0) != pdTRUE) {
        ESP_LOGW(TAG, "event queue full; dropping event");
        port_esp32_free_event(&ev);
    }
}

static void on_mqtt_event(void *arg, esp_event_base_t base, int32_t id, void *data)
{
    esp_mqtt_event_handle_t event = data;

    (void)arg;
    (void)base;
    switch ((esp_mqtt_event_id_t)id) {
    case MQTT_EVENT_CONNECTED:
        queue_event(PORT_EVENT_CONNECTED, NULL, 0, NULL, 0);
        break;
    case MQTT_EVENT_DISCONNECTED:
        queue_event(PORT_EVENT_DISCONNECTED, NULL, 0, NULL, 0);
        break;
    case MQTT_EVENT_DATA:
        /* Documents larger than the buffer arrive in pieces; the core's limit is below it. */
        if (event->current_data_offset != 0 || event->data_len != event->total_data_len) {
            ESP_LOGW(TAG, "dropping fragmented message (%d bytes)", event->total_data_len);
            break;
        }
        queue_event(PORT_EVENT_MESSAGE, event->topic, (size_t)event->topic_len, event->data,
                    (size_t)event->data_len);
        break;
    default:
        break;
    }
}

esp_err_t port_esp32_start_mqtt(const char *client_id, const char *will_topic,
                                const char *will_payload)
{
    const esp_mqtt_client_config_t config = {
        .broker.address.uri = CONFIG_FLEET_BROKER_URI,
        .broker.verification.crt_bundle_attach = esp_crt_bundle_attach,
        .credentials.client_id = client_id,
        .session.keepalive = CONFIG_FLEET_MQTT_KEEPALIVE_S,
        .session.last_will.topic = will_topic,
        .session.last_will.msg = will_payload,
        .session.last_will.qos = 1,
        .session.last_will.retain = 1,
        .network.reconnect_timeout_ms = 2000,
        .buffer.size = MQTT_BUFFER_SIZE,
    };

    s_mqtt = esp_mqtt_client_init(&config);
    if (s_mqtt == NULL) {
        return ESP_FAIL;
    }
    ESP_ERROR_CHECK(esp_mqtt_client_register_event(s_mqtt, ESP_EVENT_ANY_ID, on_mqtt_event, NULL));
    return esp_mqtt_client_start(s_mqtt);
}

bool port_esp32_next_event(port_event_t *ev, uint32_t timeout_ms)
{
    return xQueueReceive(s_events, ev, pdMS_TO_TICKS(timeout_ms)) == pdTRUE;
}

void port_esp32_free_event(port_event_t *ev)
{
    free(ev->topic);
    free(ev->payload);
    ev->topic = NULL;
    ev->payload = NULL;
}

static int port_publish(void *ctx, const char *topic, const void *payload, size_t len, int qos,
                        bool retain)
{
    (void)ctx;
    return esp_mqtt_client_publish(s_mqtt, topic, payload, (int)len, qos, retain) < 0
               ? FLEET_ERR_NO_CONN
               : FLEET_OK;
}

static int port_subscribe(void *ctx, const char *topic_filter, int qos)
{
    (void)ctx;
    return esp_mqtt_client_subscribe(s_mqtt, topic_filter, qos) < 0 ? FLEET_ERR : FLEET_OK;
}

/* ---- HTTP ---- */

static int port_http_get(void *ctx, const char *url, fleet_http_sink_fn sink, void *sink_ctx,
                         char *err, size_t err_len)
{
    const esp_http_client_config_t config = {
        .url = url,
        .timeout_ms = 10000,
        .crt_bundle_attach = esp_crt_bundle_attach,
        .buffer_size = HTTP_CHUNK,
    };
    esp_http_client_handle_t client = esp_http_client_init(&config);
    int64_t deadline = esp_timer_get_time() + (int64_t)HTTP_TIMEOUT_MS * 1000;
    char *buf = malloc(HTTP_CHUNK);
    int rc = FLEET_OK;
    int status;

    (void)ctx;
    if (client == NULL || buf == NULL) {
        snprintf(err, err_len, "out of memory");
        rc = FLEET_ERR;
        goto done;
    }
    if (esp_http_client_open(client, 0) != ESP_OK) {
        snprintf(err, err_len, "cannot connect");
        rc = FLEET_ERR;
        goto done;
    }
    (void)esp_http_client_fetch_headers(client);
    status = esp_http_client_get_status_code(client);
    if (status != 200) {
        snprintf(err, err_len, "HTTP %d", status);
        rc = FLEET_ERR;
        goto done;
    }
    for (;;) {
        int n = esp_http_client_read(client, buf, HTTP_CHUNK);
        if (n < 0) {
            snprintf(err, err_len, "read error");
            rc = FLEET_ERR;
            break;
        }
        if (n == 0) {
            if (!esp_http_client_is_complete_data_received(client)) {
                snprintf(err, err_len, "connection closed early");
                rc = FLEET_ERR;
            }
            break;
        }
        rc = sink(sink_ctx, buf, (size_t)n);
        if (rc != FLEET_OK) {
            break;
        }
        if (esp_timer_get_time() > deadline) {
            snprintf(err, err_len, "timed out after %d s", HTTP_TIMEOUT_MS / 1000);
            rc = FLEET_ERR;
            break;
        }
    }
done:
    free(buf);
    if (client != NULL) {
        esp_http_client_close(client);
        esp_http_client_cleanup(client);
    }
    return rc;
}

/* ---- OTA slots (the bootloader's A/B partitions) ---- */

static int port_slot_begin(void *ctx)
{
    (void)ctx;
    s_update_partition = esp_ota_get_next_update_partition(NULL);
    if (s_update_partition == NULL ||
        esp_ota_begin(s_update_partition, OTA_WITH_SEQUENTIAL_WRITES, &s_ota_handle) != ESP_OK) {
        return FLEET_ERR;
    }
    s_ota_open = true;
    s_ota_staged = false;
    mbedtls_sha256_init(&s_sha);
    (void)mbedtls_sha256_starts(&s_sha, 0);
    ESP_LOGI(TAG, "writing partition %s", s_update_partition->label);
    return FLEET_OK;
}

static int port_slot_write(void *ctx, const void *data, size_t len)
{
    (void)ctx;
    if (!s_ota_open || esp_ota_write(s_ota_handle, data, len) != ESP_OK) {
        return FLEET_ERR;
    }
    (void)mbedtls_sha256_update(&s_sha, data, len);
    return FLEET_OK;
}

static int port_slot_end(void *ctx, fleet_slot_image_t *image)
{
    esp_app_desc_t desc;
    esp_err_t err;

    (void)ctx;
    memset(image, 0, sizeof(*image));
    if (!s_ota_open) {
        return FLEET_ERR;
    }
    (void)mbedtls_sha256_finish(&s_sha, image->sha256);
    mbedtls_sha256_free(&s_sha);
    s_ota_open = false;
    /* esp_ota_end validates the app image (magic, segments, checksum/hash). */
    err = esp_ota_end(s_ota_handle);
    if (err == ESP_OK &&
        esp_ota_get_partition_description(s_update_partition, &desc) == ESP_OK) {
        image->header_valid = true;
        strlcpy(image->version, desc.version, sizeof(image->version));
        s_ota_staged = true;
    } else if (err != ESP_ERR_OTA_VALIDATE_FAILED) {
        return FLEET_ERR;
    }
    return FLEET_OK;
}

static int port_slot_activate(void *ctx, bool activate)
{
    (void)ctx;
    if (s_ota_open) {
        mbedtls_sha256_free(&s_sha);
        esp_ota_abort(s_ota_handle);
        s_ota_open = false;
    }
    if (!activate) {
        s_ota_staged = false;
        return FLEET_OK;
    }
    if (!s_ota_staged || esp_ota_set_boot_partition(s_update_partition) != ESP_OK) {
        return FLEET_ERR;
    }
    s_ota_staged = false;
    return FLEET_OK;
}

static int port_slot_confirm(void *ctx)
{
    (void)ctx;
    return esp_ota_mark_app_valid_cancel_rollback() == ESP_OK ? FLEET_OK : FLEET_ERR;
}

/* ---- system ---- */

static void port_reboot(void *ctx)
{
    (void)ctx;
    ESP_LOGI(TAG, "rebooting");
    vTaskDelay(pdMS_TO_TICKS(500)); /* let esp-mqtt push out the last report */
    esp_restart();
}

static uint64_t port_uptime_ms(void *ctx)
{
    (void)ctx;
    return (uint64_t)(esp_timer_get_time() / 1000);
}

static double port_epoch_s(void *ctx)
{
    struct timeval tv;

    (void)ctx;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

esp_err_t port_esp32_nvs_get(const char *key, char *buf, size_t len)
{
    size_t n = len;

    return nvs_get_str(s_nvs, key, buf, &n);
}

esp_err_t port_esp32_nvs_set(const char *key, const char *value)
{
    esp_err_t err;

    if (value == NULL) {
        err = nvs_erase_key(s_nvs, key);
        if (err == ESP_ERR_NVS_NOT_FOUND) {
            return ESP_OK;
        }
    } else {
        err = nvs_set_str(s_nvs, key, value);
    }
    return err == ESP_OK ? nvs_commit(s_nvs) : err;
}

static int port_nvs_get(void *ctx, const char *key, char *buf, size_t len)
{
    esp_err_t err = port_esp32_nvs_get(key, buf, len);

    (void)ctx;
    if (err == ESP_ERR_NVS_NOT_FOUND) {
        return FLEET_ERR_NOT_FOUND;
    }
    return err == ESP_OK ? FLEET_OK : FLEET_ERR;
}

static int port_nvs_set(void *ctx, const char *key, const char *value)
{
    (void)ctx;
    return port_esp32_nvs_set(key, value) == ESP_OK ? FLEET_OK : FLEET_ERR;
}

static uint32_t port_random(void *ctx)
{
    (void)ctx;
    return esp_random();
}

static void port_set_led(void *ctx, bool on)
{
    (void)ctx;
    gpio_set_level((gpio_num_t)CONFIG_FLEET_LED_GPIO, on ? 1 : 0);
}

static void port_log(void *ctx, fleet_log_level_t level, const char *tag, const char *msg)
{
    (void)ctx;
    switch (level) {
    case FLEET_LOG_ERROR: ESP_LOGE(tag, "%s", msg); break;
    case FLEET_LOG_WARN: ESP_LOGW(tag, "%s", msg); break;
    case FLEET_LOG_INFO: ESP_LOGI(tag, "%s", msg); break;
    default: ESP_LOGD(tag, "%s", msg); break;
    }
}

esp_err_t port_esp32_init(fleet_port_t *port)
{
    esp_err_t err = nvs_flash_init();

    if (err == ESP_ERR_NVS_NO_FREE_PAGES || err == ESP_ERR_NVS_NEW_VERSION_FOUND) {
        ESP_ERROR_CHECK(nvs_flash_erase());
        err = nvs_flash_init();
    }
    ESP_ERROR_CHECK(err);
    ESP_ERROR_CHECK(nvs_open(NVS_NAMESPACE, NVS_READWRITE, &s_nvs));
    s_events = xQueueCreate(EVENT_QUEUE_LEN, sizeof(port_event_t));
    if (s_events == NULL) {
        return ESP_ERR_NO_MEM;
    }

    memset(port, 0, sizeof(*port));
    port->publish = port_publish;
    port->subscribe = port_subscribe;
    port->http_get = port_http_get;
    port->slot_begin = port_slot_begin;
    port->slot_write = port_slot_write;
    port->slot_end = port_slot_end;
    port->slot_activate = port_slot_activate;
    port->slot_confirm = port_slot_confirm;
    port->reboot = port_reboot;
    port->uptime_ms = port_uptime_ms;
    port->epoch_s = port_epoch_s;
    port->nvs_get = port_nvs_get;
    port->nvs_set = port_nvs_set;
    port->random = port_random;
    port->log = port_log;
#if CONFIG_FLEET_LED_GPIO >= 0
    gpio_reset_pin((gpio_num_t)CONFIG_FLEET_LED_GPIO);
    gpio_set_direction((gpio_num_t)CONFIG_FLEET_LED_GPIO, GPIO_MODE_OUTPUT);
    port->set_led = port_set_led;
#else
    (void)port_set_led;
#endif
    return ESP_OK;
}
