#include "fleet/jobs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device_internal.h"
#include "fleet/document.h"
#include "log.h"
#include "text.h"

static const char *TAG = "fleet_jobs";

#define KEY_REBOOT_JOB "job_reboot"

const char *fleet_jobs_state_str(fleet_jobs_state_t state)
{
    switch (state) {
    case FLEET_JOBS_IDLE: return "idle";
    case FLEET_JOBS_WAIT_START_NEXT: return "wait_start_next";
    case FLEET_JOBS_WAIT_UPDATE: return "wait_update";
    default: return "idle";
    }
}

void fleet_jobs_init(fleet_device_t *dev)
{
    fleet_jobs_t *jobs = &dev->jobs;
    const fleet_port_t *port = dev->port;

    memset(jobs, 0, sizeof(*jobs));
    if (port->nvs_get(port->ctx, KEY_REBOOT_JOB, jobs->reboot_job, sizeof(jobs->reboot_job)) !=
            FLEET_OK ||
        !fleet_topic_job_id_is_valid(jobs->reboot_job)) {
        jobs->reboot_job[0] = '\0';
    }
}

static void start_next(fleet_device_t *dev)
{
    char token[FLEET_TOKEN_MAX];
    cJSON *doc = cJSON_CreateObject();

    fleet_device_new_token(dev, token);
    (void)cJSON_AddStringToObject(doc, "clientToken", token);
    (void)cJSON_AddObjectToObject(doc, "statusDetails");
    dev->jobs.state = FLEET_JOBS_WAIT_START_NEXT;
    dev->jobs.pull_again = false;
    fleet_device_publish_json(dev, FLEET_TOPIC_JOBS_START_NEXT, NULL, doc, 1, false);
}

/* Publishes the execution's terminal status; details (string values) are consumed. */
static void publish_update(fleet_device_t *dev, const char *job_id, const char *status,
                           cJSON *details)
{
    char token[FLEET_TOKEN_MAX];
    cJSON *doc = cJSON_CreateObject();

    if (details == NULL) {
        details = cJSON_CreateObject();
    }
    (void)cJSON_AddStringToObject(doc, "status", status);
    if (!cJSON_AddItemToObject(doc, "statusDetails", details)) {
        cJSON_Delete(details);
    }
    fleet_device_new_token(dev, token);
    (void)cJSON_AddStringToObject(doc, "clientToken", token);
    (void)fleet_strlcpy(dev->jobs.current_job, job_id, sizeof(dev->jobs.current_job));
    dev->jobs.state = FLEET_JOBS_WAIT_UPDATE;
    FLEET_LOGI(dev->port, TAG, "job %s %s", job_id, status);
    fleet_device_publish_json(dev, FLEET_TOPIC_JOBS_UPDATE, job_id, doc, 1, false);
}

static cJSON *details_with(const char *key, const char *value)
{
    cJSON *details = cJSON_CreateObject();

    (void)cJSON_AddStringToObject(details, key, value);
    return details;
}

static void add_string_number(cJSON *obj, const char *key, long long v)
{
    char buf[24];

    (void)snprintf(buf, sizeof(buf), "%lld", v);
    (void)cJSON_AddStringToObject(obj, key, buf);
}

static void run_diagnostic(fleet_device_t *dev, const char *job_id)
{
    const fleet_port_t *port = dev->port;
    cJSON *details = cJSON_CreateObject();
    char buf[24];

    add_string_number(details, "heap_free", dev->telemetry.heap_free);
    add_string_number(details, "uptime_s", (long long)(port->uptime_ms(port->ctx) / 1000u));
    add_string_number(details, "rssi", dev->telemetry.rssi);
    (void)snprintf(buf, sizeof(buf), "%.2f", dev->telemetry.temp_c);
    (void)cJSON_AddStringToObject(details, "temp_c", buf);
    (void)cJSON_AddStringToObject(details, "firmware_version", dev->firmware_version);
    publish_update(dev, job_id, "SUCCEEDED", details);
}

/* Applies a local change and tells the shadow; the next delta must be re-evaluated. */
static void apply_local(fleet_device_t *dev, const fleet_delta_t *d)
{
    cJSON *patch = cJSON_CreateObject();

    fleet_device_apply_settings(dev, d, patch);
    dev->last_delta_fingerprint = 0;
    if (patch != NULL && patch->child != NULL) {
        fleet_device_report(dev, patch);
    } else {
        cJSON_Delete(patch);
    }
}

static void run_command(fleet_device_t *dev, const char *job_id, const cJSON *job_doc)
{
    const char *command = fleet_document_string(job_doc, "command");
    char reason[FLEET_ERROR_MAX];
    fleet_delta_t d;

    memset(&d, 0, sizeof(d));
    if (command != NULL && (strcmp(command, "led_on") == 0 || strcmp(command, "led_off") == 0)) {
        d.has_led_is_on = true;
        d.led_is_on = strcmp(command, "led_on") == 0;
        apply_local(dev, &d);
        publish_update(dev, job_id, "SUCCEEDED",
                       details_with("led_is_on", d.led_is_on ? "true" : "false"));
    } else if (command != NULL && strcmp(command, "fail") == 0) {
        publish_update(dev, job_id, "FAILED", details_with("reason", "command failed as requested"));
    } else {
        (void)snprintf(reason, sizeof(reason), "unknown command: %.64s",
                       command != NULL ? command : "(missing)");
        publish_update(dev, job_id, "FAILED", details_with("reason", reason));
    }
}

static void run_config_update(fleet_device_t *dev, const char *job_id, const cJSON *job_doc)
{
    const cJSON *config = fleet_document_object(job_doc, "config");
    fleet_delta_t *d;
    cJSON *details;
    char joined[FLEET_REJECTED_MAX * (FLEET_KEY_MAX + 1)];

    if (config == NULL) {
        publish_update(dev, job_id, "FAILED",
                       details_with("reason", "config_update needs a config object"));
        return;
    }
    d = malloc(sizeof(*d));
    if (d == NULL) {
        publish_update(dev, job_id, "FAILED", details_with("reason", "out of memory"));
        return;
    }
    fleet_shadow_parse_delta(config, false, d);
    apply_local(dev, d);
    if (d->rejected_count > 0) {
        fleet_shadow_rejected_join(d, joined, sizeof(joined));
        details = details_with("reason", d->config_error);
        (void)cJSON_AddStringToObject(details, "rejected_keys", joined);
        publish_update(dev, job_id, "FAILED", details);
    } else {
        publish_update(dev, job_id, "SUCCEEDED", details_with("applied", "true"));
    }
    free(d);
}

static void finish_reboot_job(fleet_device_t *dev)
{
    publish_update(dev, dev->jobs.reboot_job, "SUCCEEDED",
                   details_with("reset_reason", fleet_reset_reason_str(dev->reset_reason)));
}

static void run_reboot(fleet_device_t *dev, const char *job_id)
{
    const fleet_port_t *port = dev->port;

    if (port->nvs_set(port->ctx, KEY_REBOOT_JOB, job_id) != FLEET_OK) {
        publish_update(dev, job_id, "FAILED", details_with("reason", "cannot persist job id"));
        return;
    }
    (void)fleet_strlcpy(dev->jobs.reboot_job, job_id, sizeof(dev->jobs.reboot_job));
    FLEET_LOGI(port, TAG, "job %s: rebooting", job_id);
    fleet_device_flush_reports(dev);
    dev->rebooting = true;
    port->reboot(port->ctx);
}

static void run_execution(fleet_device_t *dev, const cJSON *execution)
{
    fleet_jobs_t *jobs = &dev->jobs;
    const char *job_id = fleet_document_string(execution, "jobId");
    const cJSON *job_doc = fleet_document_object(execution, "jobDocument");
    const char *operation = fleet_document_string(job_doc, "operation");
    char reason[FLEET_ERROR_MAX];

    if (!fleet_topic_job_id_is_valid(job_id)) {
        FLEET_LOGW(dev->port, TAG, "execution without a valid jobId");
        dev->errors++;
        jobs->state = FLEET_JOBS_IDLE;
        return;
    }
    if (strcmp(job_id, jobs->rejected_job) == 0) {
        /* Its update was refused; running it again would loop. Wait for notify-next. */
        FLEET_LOGW(dev->port, TAG, "job %s was rejected before; not running it again", job_id);
        jobs->state = FLEET_JOBS_IDLE;
        return;
    }
    if (strcmp(job_id, jobs->reboot_job) == 0) {
        finish_reboot_job(dev); /* the reboot already happened */
        return;
    }
    FLEET_LOGI(dev->port, TAG, "job %s: %s", job_id, operation != NULL ? operation : "?");
    if (job_doc == NULL) {
        publish_update(dev, job_id, "FAILED", details_with("reason", "missing jobDocument"));
    } else if (operation == NULL) {
        publish_update(dev, job_id, "FAILED", details_with("reason", "missing operation"));
    } else if (strcmp(operation, "reboot") == 0) {
        run_reboot(dev, job_id);
    } else if (strcmp(operation, "diagnostic") == 0) {
        run_diagnostic(dev, job_id);
    } else if (strcmp(operation, "command") == 0) {
        run_command(dev, job_id, job_doc);
    } else if (strcmp(operation, "config_update") == 0) {
        run_config_update(dev, job_id, job_doc);
    } else {
        (void)snprintf(reason, sizeof(reason), "unknown operation: %.64s", operation);
        publish_update(dev, job_id, "FAILED", details_with("reason", reason));
    }
}

void fleet_jobs_on_connect(fleet_device_t *dev)
{
    if (dev->jobs.reboot_job[0] != '\0') {
        finish_reboot_job(dev);
    } else {
        start_next(dev);
    }
}

static void finished(fleet_device_t *dev, const char *job_id, bool accepted, const cJSON *doc)
{
    fleet_jobs_t *jobs = &dev->jobs;
    const fleet_port_t *port = dev->port;

    if (jobs->state != FLEET_JOBS_WAIT_UPDATE || strcmp(job_id, jobs->current_job) != 0) {
        return; /* not the update we are waiting for */
    }
    if (!accepted) {
        const char *message = fleet_document_string(doc, "message");
        FLEET_LOGW(port, TAG, "update of job %s rejected: %s", job_id,
                   message != NULL ? message : "");
        (void)fleet_strlcpy(jobs->rejected_job, job_id, sizeof(jobs->rejected_job));
        dev->errors++;
    }
    if (strcmp(job_id, jobs->reboot_job) == 0) {
        jobs->reboot_job[0] = '\0';
        if (port->nvs_set(port->ctx, KEY_REBOOT_JOB, NULL) != FLEET_OK) {
            FLEET_LOGE(port, TAG, "cannot clear %s", KEY_REBOOT_JOB);
        }
    }
    jobs->current_job[0] = '\0';
    start_next(dev);
}

void fleet_jobs_on_message(fleet_device_t *dev, fleet_topic_id_t kind, const char *job_id,
                           const cJSON *doc)
{
    fleet_jobs_t *jobs = &dev->jobs;
    const cJSON *execution = fleet_document_object(doc, "execution");

    switch (kind) {
    case FLEET_TOPIC_JOBS_NOTIFY_NEXT:
        if (execution == NULL) {
            break; /* queue empty */
        }
        if (jobs->state == FLEET_JOBS_IDLE || jobs->state == FLEET_JOBS_WAIT_START_NEXT) {
            /* Waiting for start-next: its answer may be lost (a service that restarted
             * after taking the request); asking again is safe, the service answers with
             * the execution already in progress. */
            start_next(dev);
        } else {
            jobs->pull_again = true;
        }
        break;
    case FLEET_TOPIC_JOBS_START_NEXT_ACCEPTED:
        if (jobs->state != FLEET_JOBS_WAIT_START_NEXT) {
            break; /* an answer to an older request */
        }
        if (execution == NULL) {
            jobs->state = FLEET_JOBS_IDLE;
            if (jobs->pull_again) {
                start_next(dev);
            }
            break;
        }
        run_execution(dev, execution);
        break;
    case FLEET_TOPIC_JOBS_START_NEXT_REJECTED:
        if (jobs->state == FLEET_JOBS_WAIT_START_NEXT) {
            const char *message = fleet_document_string(doc, "message");
            FLEET_LOGW(dev->port, TAG, "start-next rejected: %s", message != NULL ? message : "");
            dev->errors++;
            jobs->state = FLEET_JOBS_IDLE;
        }
        break;
    case FLEET_TOPIC_JOBS_UPDATE_ACCEPTED:
        finished(dev, job_id, true, doc);
        break;
    case FLEET_TOPIC_JOBS_UPDATE_REJECTED:
        finished(dev, job_id, false, doc);
        break;
    default:
        break;
    }
}
