/* The device: connect sequence, delta convergence, rejected keys, confirm, OTA end to end. */
#include <stdlib.h>

#include "fake_port.h"
#include "harness.h"

HARNESS_DEFINE;

#define SHA_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define SHA_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

typedef struct {
    fake_port_t f;
    fleet_port_t port;
    fleet_device_t dev;
} rig_t;

static rig_t *rig_new(const fleet_device_config_t *cfg, void (*prepare)(fake_port_t *))
{
    rig_t *r = calloc(1, sizeof(*r));

    fake_port_init(&r->f, &r->port);
    if (prepare != NULL) {
        prepare(&r->f);
    }
    if (fleet_device_init(&r->dev, &r->port, cfg) != FLEET_OK) {
        fprintf(stderr, "device init failed\n");
        abort();
    }
    return r;
}

static void rig_free(rig_t *r)
{
    fake_port_free(&r->f);
    free(r);
}

static rig_t *connected_rig(void)
{
    fleet_device_config_t cfg = fake_config();
    rig_t *r = rig_new(&cfg, NULL);

    fleet_device_on_connect(&r->dev);
    fake_accept_update(&r->dev); /* the boot report */
    r->f.auto_accept = true;
    fake_port_clear_publishes(&r->f);
    return r;
}

static const char *str_at(const cJSON *doc, const char *path)
{
    const cJSON *item = fake_path(doc, path);

    return cJSON_IsString(item) ? item->valuestring : NULL;
}

TEST(test_connect_subscribes_announces_gets_reports_and_pulls_jobs)
{
    fleet_device_config_t cfg = fake_config();
    rig_t *r = rig_new(&cfg, NULL);
    const fake_publish_t *presence;
    cJSON *report;
    cJSON *telemetry;

    fleet_device_on_connect(&r->dev);
    CHECK_EQ_INT(r->f.subscribe_count, 10);
    presence = fake_nth(&r->f, "fleet/dev-1/presence", 0);
    CHECK(presence != NULL && presence->retain && presence->qos == 1);
    CHECK(presence != NULL && strstr(presence->payload, "\"state\":\"online\"") != NULL);
    CHECK(presence != NULL && strstr(presence->payload, "\"firmware_version\":\"2.2.0\"") != NULL);
    CHECK_EQ_INT(fake_count(&r->f, "$aws/things/dev-1/shadow/get"), 1);
    CHECK_EQ_INT(fake_count(&r->f, "$aws/things/dev-1/jobs/start-next"), 1);
    report = fake_last_json(&r->f, "$aws/things/dev-1/shadow/update");
    CHECK_EQ_STR(str_at(report, "state.reported.firmware_version"), "2.2.0");
    CHECK_EQ_STR(str_at(report, "state.reported.hardware_rev"), "rev-a");
    CHECK_EQ_STR(str_at(report, "state.reported.tags.location"), "factory-A");
    CHECK_EQ_STR(str_at(report, "state.reported.ota_status"), "idle");
    CHECK(cJSON_IsNull(fake_path(report, "state.reported.ota_error")));
    CHECK(cJSON_IsNull(fake_path(report, "state.reported.ota_sha256")));
    CHECK(cJSON_IsFalse(fake_path(report, "state.reported.led_is_on")));
    CHECK_EQ_INT(fake_path(report, "state.reported.telemetry_interval_s")->valueint, 60);
    CHECK(str_at(report, "clientToken") != NULL);
    telemetry = fake_last_json(&r->f, "fleet/dev-1/telemetry");
    CHECK(telemetry != NULL);
    CHECK_EQ_STR(str_at(telemetry, "reset_reason"), "poweron");
    CHECK(cJSON_IsNumber(fake_path(telemetry, "heap_free")));
    CHECK(cJSON_IsNumber(fake_path(telemetry, "rssi")));
    CHECK(cJSON_IsNumber(fake_path(telemetry, "temp_c")));
    CHECK(cJSON_IsNumber(fake_path(telemetry, "cpu_pct")));
    CHECK(cJSON_IsNumber(fake_path(telemetry, "uptime_s")));
    CHECK(cJSON_IsNumber(fake_path(telemetry, "errors")));
    cJSON_Delete(report);
    cJSON_Delete(telemetry);
    rig_free(r);
}

TEST(test_telemetry_follows_the_interval)
{
    rig_t *r = connected_rig();

    r->f.now_ms += 59000;
    fleet_device_tick(&r->dev);
    CHECK_EQ_INT(fake_count(&r->f, "/telemetry"), 0);
    CHECK(fleet_device_next_wakeup_ms(&r->dev) <= 1000);
    r->f.now_ms += 1000;
    fleet_device_tick(&r->dev);
    CHECK_EQ_INT(fake_count(&r->f, "/telemetry"), 1);
    fake_deliver(&r->dev, "shadow/update/delta", "{\"state\":{\"telemetry_interval_s\":5},\"version\":2}");
    r->f.now_ms += 5000;
    fleet_device_tick(&r->dev);
    CHECK_EQ_INT(fake_count(&r->f, "/telemetry"), 2);
    CHECK_EQ_STR(fake_nvs(&r->f, "telem_intvl"), "5");
    rig_free(r);
}

TEST(test_delta_is_applied_persisted_and_reported)
{
    rig_t *r = connected_rig();
    cJSON *report;

    fake_deliver(&r->dev, "shadow/update/delta",
                 "{\"state\":{\"led_is_on\":true,\"telemetry_interval_s\":10},\"version\":7}");
    CHECK(r->dev.settings.led_is_on);
    CHECK(r->f.led);
    CHECK_EQ_STR(fake_nvs(&r->f, "led_is_on"), "1");
    report = fake_last_json(&r->f, "shadow/update");
    CHECK(cJSON_IsTrue(fake_path(report, "state.reported.led_is_on")));
    CHECK_EQ_INT(fake_path(report, "state.reported.telemetry_interval_s")->valueint, 10);
    CHECK(fake_path(report, "state.reported.firmware_version") == NULL);
    cJSON_Delete(report);
    rig_free(r);
}

TEST(test_settings_survive_a_reboot)
{
    fleet_device_config_t cfg = fake_config();
    rig_t *r = connected_rig();
    fleet_device_t again;

    fake_deliver(&r->dev, "shadow/update/delta",
                 "{\"state\":{\"led_is_on\":true,\"telemetry_interval_s\":42},\"version\":7}");
    CHECK_EQ_INT(fleet_device_init(&again, &r->port, &cfg), FLEET_OK);
    CHECK(again.settings.led_is_on);
    CHECK_EQ_INT(again.settings.telemetry_interval_s, 42);
    rig_free(r);
}

TEST(test_stale_delta_versions_are_ignored)
{
    rig_t *r = connected_rig();

    fake_deliver(&r->dev, "shadow/update/delta", "{\"state\":{\"led_is_on\":true},\"version\":7}");
    fake_deliver(&r->dev, "shadow/update/delta", "{\"state\":{\"led_is_on\":false},\"version\":7}");
    fake_deliver(&r->dev, "shadow/update/delta", "{\"state\":{\"led_is_on\":false},\"version\":3}");
    CHECK(r->dev.settings.led_is_on);
    CHECK_EQ_INT(fake_count(&r->f, "shadow/update"), 1);
    fake_deliver(&r->dev, "shadow/update/delta", "{\"state\":{\"led_is_on\":false},\"version\":8}");
    CHECK(!r->dev.settings.led_is_on);
    rig_free(r);
}

TEST(test_unknown_key_is_reported_once_not_looped)
{
    rig_t *r = connected_rig();
    cJSON *report;
    const cJSON *keys;
    int v;
    char msg[128];

    fake_deliver(&r->dev, "shadow/get/accepted",
                 "{\"state\":{\"desired\":{\"brightness\":80},\"delta\":{\"brightness\":80}},"
                 "\"version\":4}");
    CHECK_EQ_INT(fake_count(&r->f, "shadow/update"), 1);
    report = fake_last_json(&r->f, "shadow/update");
    keys = fake_path(report, "state.reported.rejected_keys");
    CHECK(cJSON_IsArray(keys) && cJSON_GetArraySize(keys) == 1);
    CHECK_EQ_STR(cJSON_GetArrayItem(keys, 0)->valuestring, "brightness");
    CHECK_EQ_STR(str_at(report, "state.reported.config_error"), "brightness: unknown key");
    cJSON_Delete(report);

    /* The service answers our report with the same delta at newer versions: no republish. */
    for (v = 5; v < 25; v++) {
        snprintf(msg, sizeof(msg), "{\"state\":{\"brightness\":80},\"version\":%d}", v);
        fake_deliver(&r->dev, "shadow/update/delta", msg);
    }
    CHECK_EQ_INT(fake_count(&r->f, "shadow/update"), 1);

    /* A different rejected value set is a distinct delta but the same keys: still quiet. */
    fake_deliver(&r->dev, "shadow/update/delta", "{\"state\":{\"brightness\":90},\"version\":30}");
    CHECK_EQ_INT(fake_count(&r->f, "shadow/update"), 1);

    /* A new unknown key changes the set: one report. */
    fake_deliver(&r->dev, "shadow/update/delta",
                 "{\"state\":{\"brightness\":90,\"mode\":1},\"version\":31}");
    CHECK_EQ_INT(fake_count(&r->f, "shadow/update"), 2);

    /* Known key alongside: applied and reported, rejected list unchanged so not repeated. */
    fake_deliver(&r->dev, "shadow/update/delta",
                 "{\"state\":{\"brightness\":90,\"mode\":1,\"led_is_on\":true},\"version\":32}");
    CHECK_EQ_INT(fake_count(&r->f, "shadow/update"), 3);
    report = fake_last_json(&r->f, "shadow/update");
    CHECK(cJSON_IsTrue(fake_path(report, "state.reported.led_is_on")));
    CHECK(fake_path(report, "state.reported.rejected_keys") == NULL);
    cJSON_Delete(report);
    rig_free(r);
}

TEST(test_rejected_keys_are_cleared_when_desired_drops_them)
{
    rig_t *r = connected_rig();
    cJSON *report;

    /* After a reconnect the shadow still lists a rejected key the desired no longer has. */
    fake_deliver(&r->dev, "shadow/get/accepted",
                 "{\"state\":{\"desired\":{\"led_is_on\":false},"
                 "\"reported\":{\"rejected_keys\":[\"brightness\"]}},\"version\":9}");
    report = fake_last_json(&r->f, "shadow/update");
    CHECK(cJSON_IsNull(fake_path(report, "state.reported.rejected_keys")));
    CHECK(cJSON_IsNull(fake_path(report, "state.reported.config_error")));
    cJSON_Delete(report);
    rig_free(r);
}

TEST(test_get_without_delta_and_nothing_rejected_publishes_nothing)
{
    rig_t *r = connected_rig();

    fake_deliver(&r->dev, "shadow/get/accepted",
                 "{\"state\":{\"desired\":{\"led_is_on\":false},\"reported\":{}},\"version\":9}");
    CHECK_EQ_INT(r->f.publish_count, 0);
    fake_deliver(&r->dev, "shadow/get/rejected",
                 "{\"code\":404,\"message\":\"No shadow exists\",\"clientToken\":\"x\"}");
    CHECK_EQ_INT(r->f.publish_count, 0);
    rig_free(r);
}

TEST(test_job_change_reopens_an_identical_delta)
{
    rig_t *r = connected_rig();

    fake_deliver(&r->dev, "shadow/update/delta", "{\"state\":{\"led_is_on\":true},\"version\":2}");
    r->dev.jobs.state = FLEET_JOBS_WAIT_START_NEXT;
    fake_deliver(&r->dev, "jobs/start-next/accepted",
                 "{\"execution\":{\"jobId\":\"j1\",\"jobDocument\":{\"operation\":\"command\","
                 "\"command\":\"led_off\"}}}");
    CHECK(!r->dev.settings.led_is_on);
    /* desired still says on: the same delta comes back and must be applied again */
    fake_deliver(&r->dev, "shadow/update/delta", "{\"state\":{\"led_is_on\":true},\"version\":4}");
    CHECK(r->dev.settings.led_is_on);
    rig_free(r);
}

TEST(test_boot_report_acceptance_confirms_a_pending_image)
{
    fleet_device_config_t cfg = fake_config();
    rig_t *r;
    cJSON *report;
    char accepted[128];

    cfg.image_pending_verify = true;
    r = rig_new(&cfg, NULL);
    fleet_device_on_connect(&r->dev);
    report = fake_last_json(&r->f, "shadow/update");
    fake_deliver(&r->dev, "shadow/update/accepted", "{\"clientToken\":\"someone-else\"}");
    CHECK_EQ_INT(r->f.confirms, 0);
    snprintf(accepted, sizeof(accepted), "{\"state\":{},\"clientToken\":\"%s\"}",
             str_at(report, "clientToken"));
    fake_deliver(&r->dev, "shadow/update/accepted", accepted);
    CHECK_EQ_INT(r->f.confirms, 1);
    fake_deliver(&r->dev, "shadow/update/accepted", accepted);
    CHECK_EQ_INT(r->f.confirms, 1);
    cJSON_Delete(report);
    rig_free(r);
}

static void desired_ota(rig_t *r, const char *sha, int version)
{
    char msg[512];

    snprintf(msg, sizeof(msg),
             "{\"state\":{\"target_version\":\"2.3.0\",\"ota_url\":\"http://h/fw\","
             "\"ota_sha256\":\"%s\"},\"version\":%d}",
             sha, version);
    fake_deliver(&r->dev, "shadow/update/delta", msg);
}

static void image_for_sha_a(fake_port_t *f)
{
    static const uint8_t body[200] = {0};

    f->body = body;
    f->body_len = sizeof(body);
    memset(f->image.sha256, 0xaa, 32);
    f->image.header_valid = true;
    strcpy(f->image.version, "2.3.0");
}

TEST(test_ota_delta_downloads_verifies_applies_and_reboots)
{
    rig_t *r = connected_rig();
    size_t n;
    const char *statuses[4];
    size_t i;

    image_for_sha_a(&r->f);
    desired_ota(r, SHA_A, 3);
    CHECK(r->dev.ota.install_requested);
    CHECK_EQ_INT(fleet_device_next_wakeup_ms(&r->dev), 0);
    fleet_device_tick(&r->dev);
    CHECK_EQ_INT(r->f.reboots, 1);
    CHECK(r->dev.rebooting);
    /* "downloading" is in flight during the install (its answer waits for it), so
     * "verifying" was queued and "applying" replaced it; the queue goes before the reboot. */
    n = fake_count(&r->f, "shadow/update");
    CHECK_EQ_INT(n, 2);
    for (i = 0; i < n && i < 4; i++) {
        cJSON *doc = cJSON_Parse(fake_nth(&r->f, "shadow/update", i)->payload);
        const cJSON *s = fake_path(doc, "state.reported.ota_status");
        statuses[i] = s != NULL ? (strcmp(s->valuestring, "downloading") == 0   ? "downloading"
                                   : strcmp(s->valuestring, "verifying") == 0 ? "verifying"
                                   : strcmp(s->valuestring, "applying") == 0  ? "applying"
                                                                              : "other")
                                : "none";
        cJSON_Delete(doc);
    }
    CHECK_EQ_STR(statuses[0], "downloading");
    CHECK_EQ_STR(statuses[1], "applying");
    /* Nothing else happens while rebooting. */
    fake_deliver(&r->dev, "shadow/update/delta", "{\"state\":{\"led_is_on\":true},\"version\":9}");
    CHECK(!r->dev.settings.led_is_on);
    rig_free(r);
}

TEST(test_ota_bad_sha_fails_once_and_is_not_retried)
{
    rig_t *r = connected_rig();
    cJSON *report;

    image_for_sha_a(&r->f);
    desired_ota(r, SHA_B, 3);
    fleet_device_tick(&r->dev);
    CHECK_EQ_INT(r->f.reboots, 0);
    /* "failed" waits for the answer to "downloading", in flight during the install. */
    report = fake_last_json(&r->f, "shadow/update");
    CHECK_EQ_STR(str_at(report, "state.reported.ota_status"), "downloading");
    cJSON_Delete(report);
    fake_accept_update(&r->dev);
    report = fake_last_json(&r->f, "shadow/update");
    CHECK_EQ_STR(str_at(report, "state.reported.ota_status"), "failed");
    CHECK_EQ_STR(str_at(report, "state.reported.ota_error"), "sha256 mismatch");
    cJSON_Delete(report);
    CHECK_EQ_INT(r->f.http_calls, 1);
    /* The same desired keeps coming back (the version still differs): no second download. */
    desired_ota(r, SHA_B, 4);
    desired_ota(r, SHA_B, 5);
    fleet_device_tick(&r->dev);
    CHECK_EQ_INT(r->f.http_calls, 1);
    /* A fixed sha256 is a new target. */
    desired_ota(r, SHA_A, 6);
    fleet_device_tick(&r->dev);
    CHECK_EQ_INT(r->f.http_calls, 2);
    CHECK_EQ_INT(r->f.reboots, 1);
    rig_free(r);
}

TEST(test_partial_ota_delta_is_completed_from_the_desired_document)
{
    rig_t *r = connected_rig();

    image_for_sha_a(&r->f);
    fake_deliver(&r->dev, "shadow/get/accepted",
                 "{\"state\":{\"desired\":{\"target_version\":\"2.3.0\",\"ota_url\":\"http://h/fw\","
                 "\"ota_sha256\":\"" SHA_B "\"},\"delta\":{}},\"version\":2}");
    CHECK(!r->dev.ota.install_requested);
    fake_deliver(&r->dev, "shadow/update/delta",
                 "{\"state\":{\"target_version\":\"2.3.0\"},\"version\":3}");
    CHECK(r->dev.ota.install_requested);
    CHECK_EQ_STR(r->dev.ota.job.url, "http://h/fw");
    CHECK_EQ_STR(r->dev.ota.job.sha256, SHA_B);
    rig_free(r);
}

TEST(test_ota_target_equal_to_running_version_converges)
{
    rig_t *r = connected_rig();
    cJSON *report;

    fake_deliver(&r->dev, "shadow/update/delta",
                 "{\"state\":{\"target_version\":\"2.2.0\",\"ota_url\":\"http://h/old\","
                 "\"ota_sha256\":\"" SHA_A "\"},\"version\":3}");
    CHECK(!r->dev.ota.install_requested);
    report = fake_last_json(&r->f, "shadow/update");
    CHECK_EQ_STR(str_at(report, "state.reported.target_version"), "2.2.0");
    CHECK_EQ_STR(str_at(report, "state.reported.ota_url"), "http://h/old");
    CHECK_EQ_STR(str_at(report, "state.reported.ota_sha256"), SHA_A);
    CHECK_EQ_STR(str_at(report, "state.reported.ota_status"), "idle");
    cJSON_Delete(report);
    rig_free(r);
}

static void pending_23(fake_port_t *f)
{
    fake_nvs_put(f, "ota_pend_ver", "2.3.0");
    fake_nvs_put(f, "ota_pend_url", "http://h/fw");
    fake_nvs_put(f, "ota_pend_sha", SHA_A);
}

TEST(test_boot_into_new_image_reports_new_version_and_applied_target)
{
    fleet_device_config_t cfg = fake_config();
    rig_t *r;
    cJSON *report;

    cfg.firmware_version = "2.3.0";
    cfg.image_pending_verify = true;
    cfg.reset_reason = FLEET_RESET_SW_REBOOT;
    r = rig_new(&cfg, pending_23);
    fleet_device_on_connect(&r->dev);
    report = fake_last_json(&r->f, "shadow/update");
    CHECK_EQ_STR(str_at(report, "state.reported.firmware_version"), "2.3.0");
    CHECK_EQ_STR(str_at(report, "state.reported.ota_status"), "idle");
    CHECK(cJSON_IsNull(fake_path(report, "state.reported.ota_error")));
    CHECK_EQ_STR(str_at(report, "state.reported.target_version"), "2.3.0");
    CHECK_EQ_STR(str_at(report, "state.reported.ota_sha256"), SHA_A);
    cJSON_Delete(report);
    rig_free(r);
}

TEST(test_boot_after_rollback_reports_failed_with_old_version)
{
    fleet_device_config_t cfg = fake_config();
    rig_t *r;
    cJSON *report;

    cfg.reset_reason = FLEET_RESET_OTA_ROLLBACK;
    cfg.rollback_reason = "not confirmed within 30 s";
    r = rig_new(&cfg, pending_23);
    fleet_device_on_connect(&r->dev);
    report = fake_last_json(&r->f, "shadow/update");
    CHECK_EQ_STR(str_at(report, "state.reported.firmware_version"), "2.2.0");
    CHECK_EQ_STR(str_at(report, "state.reported.ota_status"), "failed");
    CHECK_EQ_STR(str_at(report, "state.reported.ota_error"), "rolled back: not confirmed within 30 s");
    cJSON_Delete(report);
    report = fake_last_json(&r->f, "/telemetry");
    CHECK_EQ_STR(str_at(report, "reset_reason"), "ota_rollback");
    cJSON_Delete(report);
    /* and the desired target is not retried */
    fake_port_clear_publishes(&r->f);
    fake_deliver(&r->dev, "shadow/get/accepted",
                 "{\"state\":{\"desired\":{\"target_version\":\"2.3.0\",\"ota_url\":\"http://h/fw\","
                 "\"ota_sha256\":\"" SHA_A "\"},\"reported\":{},\"delta\":{\"target_version\":"
                 "\"2.3.0\",\"ota_url\":\"http://h/fw\",\"ota_sha256\":\"" SHA_A "\"}},\"version\":3}");
    CHECK(!r->dev.ota.install_requested);
    CHECK_EQ_INT(r->f.publish_count, 0);
    desired_ota(r, SHA_A, 4);
    CHECK(!r->dev.ota.install_requested);
    CHECK_EQ_INT(r->f.publish_count, 0);
    rig_free(r);
}

TEST(test_invalid_config_is_refused)
{
    fleet_device_config_t cfg = fake_config();
    fake_port_t f;
    fleet_port_t port;
    fleet_device_t dev;

    fake_port_init(&f, &port);
    cfg.thing = "bad/thing";
    CHECK_EQ_INT(fleet_device_init(&dev, &port, &cfg), FLEET_ERR_INVALID);
    cfg = fake_config();
    cfg.shadow_prefix = "things/#";
    CHECK_EQ_INT(fleet_device_init(&dev, &port, &cfg), FLEET_ERR_INVALID);
    cfg = fake_config();
    cfg.firmware_version = "";
    CHECK_EQ_INT(fleet_device_init(&dev, &port, &cfg), FLEET_ERR_INVALID);
    cfg = fake_config();
    cfg.hardware_rev = NULL;
    CHECK_EQ_INT(fleet_device_init(&dev, &port, &cfg), FLEET_ERR_INVALID);
    cfg = fake_config();
    cfg.shadow_prefix = "things"; /* amqtt-friendly prefix */
    cfg.location = NULL;
    CHECK_EQ_INT(fleet_device_init(&dev, &port, &cfg), FLEET_OK);
}

TEST(test_custom_prefixes_are_used)
{
    fleet_device_config_t cfg = fake_config();
    rig_t *r;

    cfg.shadow_prefix = "things";
    cfg.fleet_prefix = "lab";
    r = rig_new(&cfg, NULL);
    fleet_device_on_connect(&r->dev);
    CHECK_EQ_INT(fake_count(&r->f, "lab/dev-1/presence"), 1);
    CHECK(fake_nth(&r->f, "shadow/get", 0) != NULL &&
          strcmp(fake_nth(&r->f, "shadow/get", 0)->topic, "things/dev-1/shadow/get") == 0);
    rig_free(r);
}

TEST(test_power_off_publishes_offline_presence)
{
    rig_t *r = connected_rig();
    const fake_publish_t *p;

    fleet_device_power_off(&r->dev);
    p = fake_nth(&r->f, "fleet/dev-1/presence", 0);
    CHECK(p != NULL && p->retain && strcmp(p->payload, "{\"state\":\"offline\"}") == 0);
    rig_free(r);
}

TEST(test_disconnected_device_does_not_publish_telemetry)
{
    rig_t *r = connected_rig();

    fleet_device_on_disconnect(&r->dev);
    r->f.now_ms += 600000;
    fleet_device_tick(&r->dev);
    CHECK_EQ_INT(fake_count(&r->f, "/telemetry"), 0);
    CHECK_EQ_INT(fleet_device_next_wakeup_ms(&r->dev), 1000);
    rig_free(r);
}


/* ------------------------------------------------------------------ retry contract */

/* A connected device whose boot report was accepted; the test answers (or not) itself. */
static rig_t *quiet_rig(uint32_t retry_ms)
{
    fleet_device_config_t cfg = fake_config();
    rig_t *r;

    cfg.shadow_retry_ms = retry_ms;
    r = rig_new(&cfg, NULL);
    fleet_device_on_connect(&r->dev);
    fake_accept_update(&r->dev);
    fake_port_clear_publishes(&r->f);
    return r;
}

static void led_delta(rig_t *r, bool on, int version)
{
    char msg[96];

    snprintf(msg, sizeof(msg), "{\"state\":{\"led_is_on\":%s},\"version\":%d}",
             on ? "true" : "false", version);
    fake_deliver(&r->dev, "shadow/update/delta", msg);
}

static const char *update_payload(const rig_t *r, size_t n)
{
    const fake_publish_t *p = fake_nth(&r->f, "shadow/update", n);

    return p != NULL ? p->payload : NULL;
}

/* Advances the clock by ms and ticks the device as its task would. */
static void run_for(rig_t *r, uint64_t ms)
{
    uint64_t end = r->f.now_ms + ms;

    while (r->f.now_ms < end) {
        uint32_t wait = fleet_device_next_wakeup_ms(&r->dev);
        r->f.now_ms += wait == 0 ? 1 : wait;
        if (r->f.now_ms > end) {
            r->f.now_ms = end;
        }
        fleet_device_tick(&r->dev);
    }
}

TEST(test_unanswered_update_is_resent_with_the_same_token_and_payload)
{
    rig_t *r = quiet_rig(2000);
    /* This device's jittered waits: within [1, 2) s, then [2, 4) s. */
    uint32_t w1 = fleet_shadow_retry_wait_ms(2000, 1, r->dev.retry_seed);
    uint32_t w2 = fleet_shadow_retry_wait_ms(2000, 2, r->dev.retry_seed);

    CHECK(w1 >= 1000 && w1 < 2000 && w2 >= 2000 && w2 < 4000);
    led_delta(r, true, 2);
    CHECK_EQ_INT(fake_count(&r->f, "shadow/update"), 1);
    run_for(r, w1 - 1);
    CHECK_EQ_INT(fake_count(&r->f, "shadow/update"), 1);
    run_for(r, 1);
    CHECK_EQ_INT(fake_count(&r->f, "shadow/update"), 2);
    CHECK_EQ_STR(update_payload(r, 1), update_payload(r, 0));
    /* The next wait doubles (before its jitter). */
    run_for(r, w2 - 1);
    CHECK_EQ_INT(fake_count(&r->f, "shadow/update"), 2);
    run_for(r, 1);
    CHECK_EQ_INT(fake_count(&r->f, "shadow/update"), 3);
    CHECK_EQ_STR(update_payload(r, 2), update_payload(r, 0));
    /* Answered at last: no more resends, however long we wait. */
    fake_accept_update(&r->dev);
    run_for(r, 600000);
    CHECK_EQ_INT(fake_count(&r->f, "shadow/update"), 3);
    rig_free(r);
}

TEST(test_update_unanswered_after_the_last_attempt_is_given_up)
{
    rig_t *r = quiet_rig(2000);
    uint32_t errors;

    led_delta(r, true, 2);
    errors = r->dev.errors;
    run_for(r, 2000u + 4000u + 8000u + 16000u); /* attempts 2..5 */
    CHECK_EQ_INT(fake_count(&r->f, "shadow/update"), FLEET_SHADOW_ATTEMPTS_MAX);
    CHECK(r->dev.update_in_flight);
    run_for(r, 32000);
    CHECK(!r->dev.update_in_flight);
    CHECK_EQ_INT(r->dev.errors, errors + 1);
    run_for(r, 600000);
    CHECK_EQ_INT(fake_count(&r->f, "shadow/update"), FLEET_SHADOW_ATTEMPTS_MAX);
    rig_free(r);
}

TEST(test_update_rejected_500_or_429_is_resent_after_the_wait)
{
    rig_t *r = quiet_rig(2000);

    led_delta(r, true, 2);
    fake_reject_update(&r->dev, 500);
    CHECK_EQ_INT(fake_count(&r->f, "shadow/update"), 1); /* not at once: backoff */
    run_for(r, 2000);
    CHECK_EQ_INT(fake_count(&r->f, "shadow/update"), 2);
    CHECK_EQ_STR(update_payload(r, 1), update_payload(r, 0));
    fake_reject_update(&r->dev, 429);
    run_for(r, 4000);
    CHECK_EQ_INT(fake_count(&r->f, "shadow/update"), 3);
    CHECK_EQ_STR(update_payload(r, 2), update_payload(r, 0));
    fake_accept_update(&r->dev);
    run_for(r, 600000);
    CHECK_EQ_INT(fake_count(&r->f, "shadow/update"), 3);
    rig_free(r);
}

TEST(test_accepted_update_is_not_resent)
{
    rig_t *r = quiet_rig(2000);

    led_delta(r, true, 2);
    fake_accept_update(&r->dev);
    CHECK(!r->dev.update_in_flight);
    run_for(r, 600000);
    CHECK_EQ_INT(fake_count(&r->f, "shadow/update"), 1);
    rig_free(r);
}

TEST(test_update_rejected_400_or_409_is_not_resent)
{
    int codes[] = {400, 409};
    size_t i;

    for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        rig_t *r = quiet_rig(2000);

        led_delta(r, true, 2);
        fake_reject_update(&r->dev, codes[i]);
        CHECK(!r->dev.update_in_flight);
        run_for(r, 600000);
        CHECK_EQ_INT(fake_count(&r->f, "shadow/update"), 1);
        rig_free(r);
    }
}

TEST(test_another_clients_answer_does_not_finish_the_update_in_flight)
{
    rig_t *r = quiet_rig(2000);

    led_delta(r, true, 2);
    fake_deliver(&r->dev, "shadow/update/accepted", "{\"clientToken\":\"console-1\",\"version\":3}");
    fake_deliver(&r->dev, "shadow/update/rejected",
                 "{\"code\":400,\"message\":\"bad\",\"clientToken\":\"console-2\"}");
    CHECK(r->dev.update_in_flight);
    run_for(r, 2000);
    CHECK_EQ_INT(fake_count(&r->f, "shadow/update"), 2);
    rig_free(r);
}

TEST(test_one_update_in_flight_newer_reports_merge_into_the_queued_one)
{
    rig_t *r = quiet_rig(2000);
    cJSON *first;
    cJSON *next;

    led_delta(r, true, 2);
    fake_deliver(&r->dev, "shadow/update/delta", "{\"state\":{\"telemetry_interval_s\":9},\"version\":3}");
    led_delta(r, false, 4);
    CHECK_EQ_INT(fake_count(&r->f, "shadow/update"), 1); /* the others wait */
    /* A retry is still the first update, not the merged one. */
    run_for(r, 2000);
    CHECK_EQ_INT(fake_count(&r->f, "shadow/update"), 2);
    CHECK_EQ_STR(update_payload(r, 1), update_payload(r, 0));
    fake_accept_update(&r->dev);
    CHECK_EQ_INT(fake_count(&r->f, "shadow/update"), 3);
    first = cJSON_Parse(update_payload(r, 0));
    next = cJSON_Parse(update_payload(r, 2));
    CHECK(cJSON_IsTrue(fake_path(first, "state.reported.led_is_on")));
    CHECK(cJSON_IsFalse(fake_path(next, "state.reported.led_is_on")));
    CHECK_EQ_INT(fake_path(next, "state.reported.telemetry_interval_s")->valueint, 9);
    CHECK(strcmp(str_at(first, "clientToken"), str_at(next, "clientToken")) != 0);
    cJSON_Delete(first);
    cJSON_Delete(next);
    fake_accept_update(&r->dev);
    run_for(r, 600000);
    CHECK_EQ_INT(fake_count(&r->f, "shadow/update"), 3);
    rig_free(r);
}

TEST(test_reconnect_resends_the_update_in_flight_before_the_full_report)
{
    rig_t *r = quiet_rig(2000);
    cJSON *full;

    led_delta(r, true, 2);
    fleet_device_on_disconnect(&r->dev);
    run_for(r, 10000); /* offline: nothing sent */
    CHECK_EQ_INT(fake_count(&r->f, "shadow/update"), 1);
    fleet_device_on_connect(&r->dev);
    CHECK_EQ_INT(fake_count(&r->f, "shadow/update"), 2);
    CHECK_EQ_STR(update_payload(r, 1), update_payload(r, 0));
    fake_accept_update(&r->dev);
    CHECK_EQ_INT(fake_count(&r->f, "shadow/update"), 3);
    full = cJSON_Parse(update_payload(r, 2));
    CHECK_EQ_STR(str_at(full, "state.reported.firmware_version"), "2.2.0");
    cJSON_Delete(full);
    rig_free(r);
}

TEST(test_queued_boot_report_still_confirms_a_pending_image)
{
    fleet_device_config_t cfg = fake_config();
    rig_t *r;

    cfg.image_pending_verify = true;
    r = rig_new(&cfg, NULL);
    fleet_device_on_connect(&r->dev);
    fleet_device_on_disconnect(&r->dev); /* the boot report's answer is lost */
    fleet_device_on_connect(&r->dev);     /* resent; a second full report queues behind */
    CHECK_EQ_INT(fake_count(&r->f, "shadow/update"), 2);
    CHECK_EQ_STR(update_payload(r, 1), update_payload(r, 0));
    fake_accept_update(&r->dev);
    CHECK_EQ_INT(r->f.confirms, 1);
    rig_free(r);
}

int main(void)
{
    RUN(test_connect_subscribes_announces_gets_reports_and_pulls_jobs);
    RUN(test_telemetry_follows_the_interval);
    RUN(test_delta_is_applied_persisted_and_reported);
    RUN(test_settings_survive_a_reboot);
    RUN(test_stale_delta_versions_are_ignored);
    RUN(test_unknown_key_is_reported_once_not_looped);
    RUN(test_rejected_keys_are_cleared_when_desired_drops_them);
    RUN(test_get_without_delta_and_nothing_rejected_publishes_nothing);
    RUN(test_job_change_reopens_an_identical_delta);
    RUN(test_boot_report_acceptance_confirms_a_pending_image);
    RUN(test_ota_delta_downloads_verifies_applies_and_reboots);
    RUN(test_ota_bad_sha_fails_once_and_is_not_retried);
    RUN(test_partial_ota_delta_is_completed_from_the_desired_document);
    RUN(test_ota_target_equal_to_running_version_converges);
    RUN(test_boot_into_new_image_reports_new_version_and_applied_target);
    RUN(test_boot_after_rollback_reports_failed_with_old_version);
    RUN(test_invalid_config_is_refused);
    RUN(test_custom_prefixes_are_used);
    RUN(test_power_off_publishes_offline_presence);
    RUN(test_disconnected_device_does_not_publish_telemetry);
    RUN(test_unanswered_update_is_resent_with_the_same_token_and_payload);
    RUN(test_update_unanswered_after_the_last_attempt_is_given_up);
    RUN(test_update_rejected_500_or_429_is_resent_after_the_wait);
    RUN(test_accepted_update_is_not_resent);
    RUN(test_update_rejected_400_or_409_is_not_resent);
    RUN(test_another_clients_answer_does_not_finish_the_update_in_flight);
    RUN(test_one_update_in_flight_newer_reports_merge_into_the_queued_one);
    RUN(test_reconnect_resends_the_update_in_flight_before_the_full_report);
    RUN(test_queued_boot_report_still_confirms_a_pending_image);
    return HARNESS_RESULT();
}
