/* Functions shared between device.c and jobs.c (internal to the core). */
#ifndef FLEET_DEVICE_INTERNAL_H
#define FLEET_DEVICE_INTERNAL_H

#include "cJSON.h"
#include "fleet/device.h"

/* Serialises doc, publishes it and deletes it. */
void fleet_device_publish_json(fleet_device_t *dev, fleet_topic_id_t id, const char *job_id,
                               cJSON *doc, int qos, bool retain);
/* A fresh clientToken in buf (FLEET_TOKEN_MAX bytes). */
void fleet_device_new_token(fleet_device_t *dev, char *buf);
/*
 * Reports {"state":{"reported":reported},"clientToken":...} under the retry contract
 * (one update in flight; a report made meanwhile is merged into the queued one); takes
 * ownership.
 */
void fleet_device_report(fleet_device_t *dev, cJSON *reported);
/* Before a reboot: sends the queued report now (no retry can follow a reset). */
void fleet_device_flush_reports(fleet_device_t *dev);
/* Applies the known settings of d, persists them and adds them to patch. */
void fleet_device_apply_settings(fleet_device_t *dev, const fleet_delta_t *d, cJSON *patch);

void fleet_jobs_init(fleet_device_t *dev);
void fleet_jobs_on_connect(fleet_device_t *dev);
void fleet_jobs_on_message(fleet_device_t *dev, fleet_topic_id_t kind, const char *job_id,
                           const cJSON *doc);

#endif /* FLEET_DEVICE_INTERNAL_H */
