#include "app.h"

#include <curl/curl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "fleet/device.h"
#include "host_log.h"
#include "otadata.h"
#include "port_linux.h"
#include "slot_file.h"

static const char *TAG = "app";

#define MAX_WAIT_MS 200u
#define POWER_OFF_FLUSH_MS 2000u

static volatile sig_atomic_t s_power_off;

static void on_power_off(int sig)
{
    (void)sig;
    s_power_off = 1;
}

static void handle_event(fleet_device_t *dev, const port_event_t *ev)
{
    switch (ev->type) {
    case PORT_EVENT_CONNECTED:
        fleet_device_on_connect(dev);
        break;
    case PORT_EVENT_DISCONNECTED:
        fleet_device_on_disconnect(dev);
        break;
    case PORT_EVENT_MESSAGE:
        fleet_device_on_message(dev, ev->topic, strlen(ev->topic), ev->payload, ev->len);
        break;
    }
}

int app_run(const host_options_t *o)
{
    static host_port_t ctx;
    static fleet_port_t port;
    static fleet_device_t dev;
    fleet_device_config_t cfg;
    fleet_image_header_t image;
    otadata_t ota;
    char path[PATH_MAX];
    char will_topic[FLEET_TOPIC_MAX];
    char rollback_reason[sizeof(ota.rollback_reason)];
    struct sigaction sa;
    struct rlimit no_core = {0, 0};

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_power_off;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    (void)setrlimit(RLIMIT_CORE, &no_core); /* simulated panics must not litter core files */

    if (otadata_load(o->state_dir, &ota) != 0) {
        HOST_LOGE(TAG, "no otadata in %s", o->state_dir);
        return 1;
    }
    if (otadata_slot_path(path, sizeof(path), o->state_dir, ota.active) != 0 ||
        slot_file_read_header(path, &image) != 0) {
        HOST_LOGE(TAG, "invalid image in slot %c", ota.active);
        return 1;
    }
    if (image.crash_on_hw[0] != '\0' && strcmp(image.crash_on_hw, o->hardware_rev) == 0) {
        HOST_LOGE(TAG, "firmware %s panics on hardware %s", image.version, o->hardware_rev);
        abort();
    }
    memcpy(rollback_reason, ota.rollback_reason, sizeof(rollback_reason));

    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (port_linux_init(&ctx, &port, o, ota.active) != 0) {
        HOST_LOGE(TAG, "cannot initialise the port");
        return 1;
    }
    memset(&cfg, 0, sizeof(cfg));
    cfg.thing = o->thing;
    cfg.hardware_rev = o->hardware_rev;
    cfg.firmware_version = image.version;
    cfg.location = o->location;
    cfg.shadow_prefix = o->shadow_prefix;
    cfg.fleet_prefix = o->fleet_prefix;
    cfg.telemetry_interval_s = o->telemetry_interval_s;
    cfg.shadow_retry_ms = (uint32_t)o->shadow_retry_s * 1000u;
    cfg.reset_reason = o->reset_reason;
    cfg.image_pending_verify = ota.pending;
    cfg.rollback_reason = rollback_reason[0] != '\0' ? rollback_reason : NULL;
    if (fleet_device_init(&dev, &port, &cfg) != FLEET_OK) {
        return 1;
    }
    if (rollback_reason[0] != '\0') {
        /* The core persisted the failure in NVS; the rollback is now reported. */
        ota.rollback_reason[0] = '\0';
        if (otadata_save(o->state_dir, &ota) != 0) {
            HOST_LOGE(TAG, "cannot write otadata");
        }
    }
    if (fleet_device_will_topic(&dev, will_topic, sizeof(will_topic)) < 0 ||
        port_linux_start_mqtt(&ctx, will_topic, fleet_device_will_payload()) != 0) {
        return 1;
    }

    while (!s_power_off) {
        uint32_t wait = fleet_device_next_wakeup_ms(&dev);
        port_event_t *ev = port_linux_next_event(&ctx, wait < MAX_WAIT_MS ? wait : MAX_WAIT_MS);

        while (ev != NULL) {
            handle_event(&dev, ev);
            port_linux_free_event(ev);
            ev = port_linux_next_event(&ctx, 0);
        }
        fleet_device_tick(&dev);
        port_linux_service(&ctx);
    }
    fleet_device_power_off(&dev);
    port_linux_stop(&ctx, POWER_OFF_FLUSH_MS);
    curl_global_cleanup();
    HOST_LOGI(TAG, "powered off");
    return 0;
}
