/*
 * fleet-device on ESP32 / ESP32-C3: Wi-Fi, then the portable core (../core)
 * driven from this task. Rollback: a freshly updated image boots "pending
 * verify"; the core confirms it once its boot report is accepted, a timer
 * rolls it back if that does not happen in time, and a crash before that
 * makes the bootloader roll back on its own.
 */
#include <stdio.h>
#include <string.h>

#include "esp_app_desc.h"
#include "esp_log.h"
#include "esp_mac.h"
#include "esp_netif_sntp.h"
#include "esp_ota_ops.h"
#include "esp_system.h"
#include "esp_timer.h"
#include "fleet/device.h"
#include "fleet/version.h"
#include "port_esp32.h"
#include "wifi_station.h"

static const char *TAG = "fleet_main";

/* Why the previous image was rolled back, written before a deliberate rollback. */
#define KEY_ROLLBACK_REASON "rb_reason"
#define WIFI_WAIT_MS 30000

static fleet_port_t s_port;
static fleet_device_t s_dev;
static char s_thing[FLEET_THING_MAX + 1];
static char s_will_topic[FLEET_TOPIC_MAX];

static fleet_reset_reason_t reset_reason(void)
{
    switch (esp_reset_reason()) {
    case ESP_RST_SW:
        return FLEET_RESET_SW_REBOOT;
    case ESP_RST_PANIC:
    case ESP_RST_INT_WDT:
    case ESP_RST_TASK_WDT:
    case ESP_RST_WDT:
        return FLEET_RESET_PANIC;
    default:
        return FLEET_RESET_POWERON;
    }
}

/*
 * The bootloader rolled back if the target we installed (ota_pend_ver in NVS)
 * is not running and is the image it marked invalid. Returns the reason or NULL.
 */
static const char *detect_rollback(char *buf, size_t len)
{
    const esp_partition_t *invalid = esp_ota_get_last_invalid_partition();
    const esp_app_desc_t *running = esp_app_get_description();
    esp_app_desc_t desc;
    char pending[FLEET_VERSION_MAX + 1];
    esp_reset_reason_t why;

    if (port_esp32_nvs_get("ota_pend_ver", pending, sizeof(pending)) != ESP_OK ||
        fleet_version_compare(pending, running->version) == 0 || invalid == NULL ||
        esp_ota_get_partition_description(invalid, &desc) != ESP_OK ||
        fleet_version_compare(pending, desc.version) != 0) {
        return NULL;
    }
    if (port_esp32_nvs_get(KEY_ROLLBACK_REASON, buf, len) != ESP_OK) {
        why = esp_reset_reason();
        snprintf(buf, len, "%s",
                 (why == ESP_RST_PANIC || why == ESP_RST_INT_WDT || why == ESP_RST_TASK_WDT ||
                  why == ESP_RST_WDT)
                     ? "crash loop on boot"
                     : "not confirmed before reset");
    }
    (void)port_esp32_nvs_set(KEY_ROLLBACK_REASON, NULL);
    return buf;
}

static bool running_image_pending_verify(void)
{
    esp_ota_img_states_t state;

    return esp_ota_get_state_partition(esp_ota_get_running_partition(), &state) == ESP_OK &&
           state == ESP_OTA_IMG_PENDING_VERIFY;
}

static void on_confirm_timeout(void *arg)
{
    char reason[48];

    (void)arg;
    if (!running_image_pending_verify()) {
        return;
    }
    snprintf(reason, sizeof(reason), "not confirmed within %d s", CONFIG_FLEET_CONFIRM_TIMEOUT_S);
    ESP_LOGE(TAG, "%s; rolling back", reason);
    (void)port_esp32_nvs_set(KEY_ROLLBACK_REASON, reason);
    esp_ota_mark_app_invalid_rollback_and_reboot();
}

static void start_confirm_timer(void)
{
    const esp_timer_create_args_t args = {.callback = on_confirm_timeout, .name = "confirm"};
    esp_timer_handle_t timer;

    ESP_ERROR_CHECK(esp_timer_create(&args, &timer));
    ESP_ERROR_CHECK(esp_timer_start_once(timer, (uint64_t)CONFIG_FLEET_CONFIRM_TIMEOUT_S * 1000000ULL));
}

static void thing_name(void)
{
    uint8_t mac[6];

    if (CONFIG_FLEET_THING_NAME[0] != '\0') {
        strlcpy(s_thing, CONFIG_FLEET_THING_NAME, sizeof(s_thing));
        return;
    }
    ESP_ERROR_CHECK(esp_read_mac(mac, ESP_MAC_WIFI_STA));
    snprintf(s_thing, sizeof(s_thing), "esp32-%02x%02x%02x%02x%02x%02x", mac[0], mac[1], mac[2],
             mac[3], mac[4], mac[5]);
}

static void handle(const port_event_t *ev)
{
    switch (ev->type) {
    case PORT_EVENT_CONNECTED:
        fleet_device_on_connect(&s_dev);
        break;
    case PORT_EVENT_DISCONNECTED:
        fleet_device_on_disconnect(&s_dev);
        break;
    case PORT_EVENT_MESSAGE:
        fleet_device_on_message(&s_dev, ev->topic, strlen(ev->topic), ev->payload, ev->len);
        break;
    }
}

void app_main(void)
{
    static char rollback[96];
    fleet_device_config_t cfg = {0};
    esp_sntp_config_t sntp = ESP_NETIF_SNTP_DEFAULT_CONFIG("pool.ntp.org");
    port_event_t ev;

    ESP_ERROR_CHECK(port_esp32_init(&s_port));
    thing_name();
    cfg.thing = s_thing;
    cfg.hardware_rev = CONFIG_FLEET_HARDWARE_REV;
    cfg.firmware_version = esp_app_get_description()->version;
    cfg.location = CONFIG_FLEET_LOCATION;
    cfg.shadow_prefix = CONFIG_FLEET_SHADOW_PREFIX;
    cfg.fleet_prefix = CONFIG_FLEET_FLEET_PREFIX;
    cfg.telemetry_interval_s = CONFIG_FLEET_TELEMETRY_INTERVAL_S;
    cfg.shadow_retry_ms = (uint32_t)CONFIG_FLEET_SHADOW_RETRY_TIMEOUT_S * 1000u;
    cfg.image_pending_verify = running_image_pending_verify();
    cfg.rollback_reason = detect_rollback(rollback, sizeof(rollback));
    cfg.reset_reason = cfg.rollback_reason != NULL ? FLEET_RESET_OTA_ROLLBACK : reset_reason();
    if (fleet_device_init(&s_dev, &s_port, &cfg) != FLEET_OK) {
        ESP_LOGE(TAG, "invalid device configuration; check menuconfig");
        abort();
    }
    if (cfg.image_pending_verify) {
        start_confirm_timer();
    }

    if (wifi_station_start(WIFI_WAIT_MS) != ESP_OK) {
        ESP_LOGW(TAG, "no Wi-Fi yet; MQTT connects when it comes up");
    }
    (void)esp_netif_sntp_init(&sntp);
    if (fleet_device_will_topic(&s_dev, s_will_topic, sizeof(s_will_topic)) < 0) {
        abort();
    }
    ESP_ERROR_CHECK(port_esp32_start_mqtt(s_dev.thing, s_will_topic, fleet_device_will_payload()));

    for (;;) {
        if (port_esp32_next_event(&ev, fleet_device_next_wakeup_ms(&s_dev))) {
            do {
                handle(&ev);
                port_esp32_free_event(&ev);
            } while (port_esp32_next_event(&ev, 0));
        }
        fleet_device_tick(&s_dev);
    }
}
