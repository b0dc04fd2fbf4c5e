/* The AWS IoT Jobs client: pulling, every job type, reboot across boots, loop guards. */
#include <stdlib.h>

#include "fake_port.h"
#include "harness.h"

HARNESS_DEFINE;

typedef struct {
    fake_port_t f;
    fleet_port_t port;
    fleet_device_t dev;
} rig_t;

static rig_t *rig_with(void (*prepare)(fake_port_t *), fleet_reset_reason_t reset)
{
    rig_t *r = calloc(1, sizeof(*r));
    fleet_device_config_t cfg = fake_config();

    cfg.reset_reason = reset;
    fake_port_init(&r->f, &r->port);
    if (prepare != NULL) {
        prepare(&r->f);
    }
    if (fleet_device_init(&r->dev, &r->port, &cfg) != FLEET_OK) {
        abort();
    }
    fleet_device_on_connect(&r->dev);
    fake_accept_update(&r->dev); /* the boot report */
    r->f.auto_accept = true;
    return r;
}

static void rig_free(rig_t *r)
{
    fake_port_free(&r->f);
    free(r);
}

static void start_next_answer(rig_t *r, const char *job_id, const char *job_doc)
{
    char msg[1024];

    snprintf(msg, sizeof(msg),
             "{\"execution\":{\"jobId\":\"%s\",\"status\":\"IN_PROGRESS\",\"jobDocument\":%s,"
             "\"versionNumber\":2},\"clientToken\":\"t\"}",
             job_id, job_doc);
    fake_deliver(&r->dev, "jobs/start-next/accepted", msg);
}

static const char *str_at(const cJSON *doc, const char *path)
{
    const cJSON *item = fake_path(doc, path);

    return cJSON_IsString(item) ? item->valuestring : NULL;
}

TEST(test_connect_pulls_the_next_job)
{
    rig_t *r = rig_with(NULL, FLEET_RESET_POWERON);
    cJSON *doc = fake_last_json(&r->f, "jobs/start-next");

    CHECK_EQ_INT(r->dev.jobs.state, FLEET_JOBS_WAIT_START_NEXT);
    CHECK(str_at(doc, "clientToken") != NULL);
    CHECK(cJSON_IsObject(fake_path(doc, "statusDetails")));
    cJSON_Delete(doc);
    fake_deliver(&r->dev, "jobs/start-next/accepted", "{\"clientToken\":\"t\"}");
    CHECK_EQ_INT(r->dev.jobs.state, FLEET_JOBS_IDLE);
    rig_free(r);
}

TEST(test_diagnostic_succeeds_with_string_details_then_pulls_again)
{
    rig_t *r = rig_with(NULL, FLEET_RESET_POWERON);
    cJSON *update;
    const cJSON *item;

    start_next_answer(r, "diag-1", "{\"operation\":\"diagnostic\"}");
    CHECK_EQ_INT(r->dev.jobs.state, FLEET_JOBS_WAIT_UPDATE);
    update = fake_last_json(&r->f, "jobs/diag-1/update");
    CHECK_EQ_STR(str_at(update, "status"), "SUCCEEDED");
    CHECK(str_at(update, "clientToken") != NULL);
    cJSON_ArrayForEach(item, fake_path(update, "statusDetails")) {
        CHECK(cJSON_IsString(item)); /* AWS requires string values */
    }
    CHECK_EQ_STR(str_at(update, "statusDetails.firmware_version"), "2.2.0");
    CHECK(str_at(update, "statusDetails.heap_free") != NULL);
    CHECK(str_at(update, "statusDetails.uptime_s") != NULL);
    CHECK(str_at(update, "statusDetails.rssi") != NULL);
    CHECK(str_at(update, "statusDetails.temp_c") != NULL);
    cJSON_Delete(update);
    fake_deliver(&r->dev, "jobs/diag-1/update/accepted", "{\"clientToken\":\"t\"}");
    CHECK_EQ_INT(r->dev.jobs.state, FLEET_JOBS_WAIT_START_NEXT);
    CHECK_EQ_INT(fake_count(&r->f, "jobs/start-next"), 2);
    rig_free(r);
}

TEST(test_command_jobs)
{
    rig_t *r = rig_with(NULL, FLEET_RESET_POWERON);
    cJSON *doc;

    start_next_answer(r, "c1", "{\"operation\":\"command\",\"command\":\"led_on\"}");
    CHECK(r->dev.settings.led_is_on);
    doc = fake_last_json(&r->f, "jobs/c1/update");
    CHECK_EQ_STR(str_at(doc, "status"), "SUCCEEDED");
    cJSON_Delete(doc);
    doc = fake_last_json(&r->f, "shadow/update");
    CHECK(cJSON_IsTrue(fake_path(doc, "state.reported.led_is_on")));
    cJSON_Delete(doc);
    fake_deliver(&r->dev, "jobs/c1/update/accepted", "{}");

    start_next_answer(r, "c2", "{\"operation\":\"command\",\"command\":\"led_off\"}");
    CHECK(!r->dev.settings.led_is_on);
    fake_deliver(&r->dev, "jobs/c2/update/accepted", "{}");

    start_next_answer(r, "c3", "{\"operation\":\"command\",\"command\":\"fail\"}");
    doc = fake_last_json(&r->f, "jobs/c3/update");
    CHECK_EQ_STR(str_at(doc, "status"), "FAILED");
    CHECK(str_at(doc, "statusDetails.reason") != NULL);
    cJSON_Delete(doc);
    fake_deliver(&r->dev, "jobs/c3/update/accepted", "{}");

    start_next_answer(r, "c4", "{\"operation\":\"command\",\"command\":\"selfdestruct\"}");
    doc = fake_last_json(&r->f, "jobs/c4/update");
    CHECK_EQ_STR(str_at(doc, "status"), "FAILED");
    CHECK_EQ_STR(str_at(doc, "statusDetails.reason"), "unknown command: selfdestruct");
    cJSON_Delete(doc);
    fake_deliver(&r->dev, "jobs/c4/update/accepted", "{}");

    start_next_answer(r, "c5", "{\"operation\":\"command\",\"command\":7}");
    doc = fake_last_json(&r->f, "jobs/c5/update");
    CHECK_EQ_STR(str_at(doc, "status"), "FAILED");
    cJSON_Delete(doc);
    rig_free(r);
}

TEST(test_config_update_applies_or_fails_with_rejected_keys)
{
    rig_t *r = rig_with(NULL, FLEET_RESET_POWERON);
    cJSON *doc;

    start_next_answer(r, "cfg-1",
                      "{\"operation\":\"config_update\",\"config\":{\"telemetry_interval_s\":30}}");
    CHECK_EQ_INT(r->dev.settings.telemetry_interval_s, 30);
    doc = fake_last_json(&r->f, "jobs/cfg-1/update");
    CHECK_EQ_STR(str_at(doc, "status"), "SUCCEEDED");
    cJSON_Delete(doc);
    fake_deliver(&r->dev, "jobs/cfg-1/update/accepted", "{}");

    start_next_answer(r, "cfg-2",
                      "{\"operation\":\"config_update\",\"config\":{\"led_is_on\":true,"
                      "\"volume\":11,\"target_version\":\"9.9.9\"}}");
    CHECK(r->dev.settings.led_is_on); /* the valid part is applied */
    CHECK(!r->dev.ota.install_requested);
    doc = fake_last_json(&r->f, "jobs/cfg-2/update");
    CHECK_EQ_STR(str_at(doc, "status"), "FAILED");
    CHECK_EQ_STR(str_at(doc, "statusDetails.rejected_keys"), "volume,target_version");
    cJSON_Delete(doc);
    fake_deliver(&r->dev, "jobs/cfg-2/update/accepted", "{}");

    start_next_answer(r, "cfg-3", "{\"operation\":\"config_update\"}");
    doc = fake_last_json(&r->f, "jobs/cfg-3/update");
    CHECK_EQ_STR(str_at(doc, "status"), "FAILED");
    cJSON_Delete(doc);
    rig_free(r);
}

TEST(test_unknown_or_missing_operation_fails)
{
    rig_t *r = rig_with(NULL, FLEET_RESET_POWERON);
    cJSON *doc;

    start_next_answer(r, "u1", "{\"operation\":\"format_disk\"}");
    doc = fake_last_json(&r->f, "jobs/u1/update");
    CHECK_EQ_STR(str_at(doc, "status"), "FAILED");
    CHECK_EQ_STR(str_at(doc, "statusDetails.reason"), "unknown operation: format_disk");
    cJSON_Delete(doc);
    fake_deliver(&r->dev, "jobs/u1/update/accepted", "{}");
    start_next_answer(r, "u2", "{}");
    doc = fake_last_json(&r->f, "jobs/u2/update");
    CHECK_EQ_STR(str_at(doc, "statusDetails.reason"), "missing operation");
    cJSON_Delete(doc);
    fake_deliver(&r->dev, "jobs/u2/update/accepted", "{}");
    start_next_answer(r, "u3", "null");
    doc = fake_last_json(&r->f, "jobs/u3/update");
    CHECK_EQ_STR(str_at(doc, "statusDetails.reason"), "missing jobDocument");
    cJSON_Delete(doc);
    rig_free(r);
}

TEST(test_reboot_job_persists_reboots_and_succeeds_after_boot)
{
    rig_t *r = rig_with(NULL, FLEET_RESET_POWERON);
    rig_t *after;
    cJSON *doc;

    start_next_answer(r, "reboot-1", "{\"operation\":\"reboot\"}");
    CHECK_EQ_INT(r->f.reboots, 1);
    CHECK_EQ_STR(fake_nvs(&r->f, "job_reboot"), "reboot-1");
    CHECK_EQ_INT(fake_count(&r->f, "jobs/reboot-1/update"), 0);

    /* The next boot: NVS carries over. */
    after = calloc(1, sizeof(*after));
    after->f = r->f;
    after->f.publish_count = 0;
    {
        fleet_device_config_t cfg = fake_config();
        fake_port_init(&after->f, &after->port);
        memcpy(after->f.nvs_keys, r->f.nvs_keys, sizeof(r->f.nvs_keys));
        memcpy(after->f.nvs_values, r->f.nvs_values, sizeof(r->f.nvs_values));
        after->f.nvs_count = r->f.nvs_count;
        cfg.reset_reason = FLEET_RESET_SW_REBOOT;
        CHECK_EQ_INT(fleet_device_init(&after->dev, &after->port, &cfg), FLEET_OK);
        fleet_device_on_connect(&after->dev);
    }
    doc = fake_last_json(&after->f, "jobs/reboot-1/update");
    CHECK_EQ_STR(str_at(doc, "status"), "SUCCEEDED");
    CHECK_EQ_STR(str_at(doc, "statusDetails.reset_reason"), "sw_reboot");
    cJSON_Delete(doc);
    /* No start-next until the update is acknowledged: it would hand us the reboot again. */
    CHECK_EQ_INT(fake_count(&after->f, "jobs/start-next"), 0);
    fake_deliver(&after->dev, "jobs/reboot-1/update/accepted", "{}");
    CHECK(fake_nvs(&after->f, "job_reboot") == NULL);
    CHECK_EQ_INT(fake_count(&after->f, "jobs/start-next"), 1);
    CHECK_EQ_INT(after->f.reboots, 0);
    rig_free(after);
    rig_free(r);
}

static void reboot_pending(fake_port_t *f)
{
    fake_nvs_put(f, "job_reboot", "reboot-9");
}

TEST(test_reboot_job_handed_out_again_is_not_rerun)
{
    rig_t *r = rig_with(reboot_pending, FLEET_RESET_SW_REBOOT);

    /* Suppose the update was lost and the service hands the job out again. */
    fake_deliver(&r->dev, "jobs/reboot-9/update/rejected", "{\"code\":\"x\"}");
    CHECK_EQ_INT(r->dev.jobs.state, FLEET_JOBS_WAIT_START_NEXT);
    rig_free(r);

    r = rig_with(reboot_pending, FLEET_RESET_SW_REBOOT);
    r->dev.jobs.state = FLEET_JOBS_WAIT_START_NEXT;
    start_next_answer(r, "reboot-9", "{\"operation\":\"reboot\"}");
    CHECK_EQ_INT(r->f.reboots, 0);
    CHECK_EQ_INT(fake_count(&r->f, "jobs/reboot-9/update"), 2);
    rig_free(r);
}

TEST(test_rejected_update_does_not_loop)
{
    rig_t *r = rig_with(NULL, FLEET_RESET_POWERON);

    start_next_answer(r, "d1", "{\"operation\":\"diagnostic\"}");
    fake_deliver(&r->dev, "jobs/d1/update/rejected",
                 "{\"code\":\"InvalidStateTransition\",\"message\":\"canceled\"}");
    CHECK_EQ_INT(fake_count(&r->f, "jobs/start-next"), 2);
    start_next_answer(r, "d1", "{\"operation\":\"diagnostic\"}");
    CHECK_EQ_INT(fake_count(&r->f, "jobs/d1/update"), 1);
    CHECK_EQ_INT(r->dev.jobs.state, FLEET_JOBS_IDLE);
    CHECK_EQ_INT(r->dev.errors, 1);
    rig_free(r);
}

TEST(test_notify_next_while_busy_pulls_after_the_current_job)
{
    rig_t *r = rig_with(NULL, FLEET_RESET_POWERON);

    fake_deliver(&r->dev, "jobs/start-next/accepted", "{}");
    CHECK_EQ_INT(r->dev.jobs.state, FLEET_JOBS_IDLE);
    fake_deliver(&r->dev, "jobs/notify-next", "{\"timestamp\":1}");
    CHECK_EQ_INT(fake_count(&r->f, "jobs/start-next"), 1); /* empty queue: nothing to pull */
    fake_deliver(&r->dev, "jobs/notify-next", "{\"execution\":{\"jobId\":\"n1\"}}");
    CHECK_EQ_INT(fake_count(&r->f, "jobs/start-next"), 2);
    /* still waiting for the answer: the request may be lost, so ask again */
    fake_deliver(&r->dev, "jobs/notify-next", "{\"execution\":{\"jobId\":\"n1\"}}");
    CHECK_EQ_INT(fake_count(&r->f, "jobs/start-next"), 3);
    CHECK(!r->dev.jobs.pull_again);
    start_next_answer(r, "n1", "{\"operation\":\"diagnostic\"}");
    /* busy with the job: a notify-next only marks that more is queued */
    fake_deliver(&r->dev, "jobs/notify-next", "{\"execution\":{\"jobId\":\"n2\"}}");
    CHECK_EQ_INT(fake_count(&r->f, "jobs/start-next"), 3);
    CHECK(r->dev.jobs.pull_again);
    fake_deliver(&r->dev, "jobs/n1/update/accepted", "{}");
    CHECK_EQ_INT(fake_count(&r->f, "jobs/start-next"), 4);
    /* start-next rejected: back to idle */
    fake_deliver(&r->dev, "jobs/start-next/rejected", "{\"code\":\"Throttled\"}");
    CHECK_EQ_INT(r->dev.jobs.state, FLEET_JOBS_IDLE);
    /* late answers are ignored */
    start_next_answer(r, "late", "{\"operation\":\"reboot\"}");
    CHECK_EQ_INT(r->f.reboots, 0);
    rig_free(r);
}

TEST(test_update_for_another_job_is_ignored)
{
    rig_t *r = rig_with(NULL, FLEET_RESET_POWERON);

    start_next_answer(r, "mine", "{\"operation\":\"diagnostic\"}");
    fake_deliver(&r->dev, "jobs/other/update/accepted", "{}");
    CHECK_EQ_INT(r->dev.jobs.state, FLEET_JOBS_WAIT_UPDATE);
    rig_free(r);
}

int main(void)
{
    RUN(test_connect_pulls_the_next_job);
    RUN(test_diagnostic_succeeds_with_string_details_then_pulls_again);
    RUN(test_command_jobs);
    RUN(test_config_update_applies_or_fails_with_rejected_keys);
    RUN(test_unknown_or_missing_operation_fails);
    RUN(test_reboot_job_persists_reboots_and_succeeds_after_boot);
    RUN(test_reboot_job_handed_out_again_is_not_rerun);
    RUN(test_rejected_update_does_not_loop);
    RUN(test_notify_next_while_busy_pulls_after_the_current_job);
    RUN(test_update_for_another_job_is_ignored);
    return HARNESS_RESULT();
}
