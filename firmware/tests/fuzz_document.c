/*
 * libFuzzer target: the first byte picks a topic, the rest is the payload fed
 * to the device (document gate, shadow, jobs). Any crash, leak or UB fails.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "fake_port.h"
#include "fleet/document.h"

static const char *const k_suffixes[] = {
    "shadow/update/delta",      "shadow/get/accepted",      "shadow/get/rejected",
    "shadow/update/accepted",   "shadow/update/rejected",   "jobs/notify-next",
    "jobs/start-next/accepted", "jobs/start-next/rejected", "jobs/j1/update/accepted",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static fake_port_t f;
    static fleet_port_t port;
    static fleet_device_t dev;
    fleet_device_config_t cfg = fake_config();
    char topic[FLEET_TOPIC_MAX];
    cJSON *doc;

    if (size < 1) {
        return 0;
    }
    doc = fleet_document_parse(data + 1, size - 1, NULL);
    cJSON_Delete(doc);

    fake_port_init(&f, &port);
    if (fleet_device_init(&dev, &port, &cfg) != FLEET_OK) {
        return 0;
    }
    fleet_device_on_connect(&dev);
    dev.jobs.state = (data[0] & 0x80) ? FLEET_JOBS_WAIT_START_NEXT : FLEET_JOBS_WAIT_UPDATE;
    snprintf(topic, sizeof(topic), "$aws/things/dev-1/%s",
             k_suffixes[data[0] % (sizeof(k_suffixes) / sizeof(k_suffixes[0]))]);
    fleet_device_on_message(&dev, topic, strlen(topic), data + 1, size - 1);
    fleet_device_tick(&dev);
    fake_port_free(&f);
    return 0;
}
