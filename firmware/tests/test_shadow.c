/* Delta parsing: known keys, unknown keys, wrong types, nested values. */
#include "fleet/shadow.h"
#include "harness.h"

HARNESS_DEFINE;

#define SHA_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

static void parse(const char *json, bool allow_ota, fleet_delta_t *d)
{
    cJSON *state = cJSON_Parse(json);

    fleet_shadow_parse_delta(state, allow_ota, d);
    cJSON_Delete(state);
}

TEST(test_known_keys_are_applied)
{
    fleet_delta_t d;

    parse("{\"led_is_on\":true,\"telemetry_interval_s\":15}", true, &d);
    CHECK(d.has_led_is_on && d.led_is_on);
    CHECK(d.has_telemetry_interval_s);
    CHECK_EQ_INT(d.telemetry_interval_s, 15);
    CHECK_EQ_INT(d.rejected_count, 0);
    CHECK_EQ_STR(d.config_error, "");
    parse("{\"led_is_on\":false,\"telemetry_interval_s\":86400.0}", true, &d);
    CHECK(d.has_led_is_on && !d.led_is_on);
    CHECK_EQ_INT(d.telemetry_interval_s, 86400);
}

TEST(test_unknown_keys_are_rejected_by_name)
{
    fleet_delta_t d;
    char joined[128];

    parse("{\"led_is_on\":true,\"brightness\":80,\"mode\":\"eco\"}", true, &d);
    CHECK(d.has_led_is_on);
    CHECK_EQ_INT(d.rejected_count, 2);
    CHECK_EQ_STR(d.rejected[0], "brightness");
    CHECK_EQ_STR(d.rejected[1], "mode");
    fleet_shadow_rejected_join(&d, joined, sizeof(joined));
    CHECK_EQ_STR(joined, "brightness,mode");
    CHECK_EQ_STR(d.config_error, "brightness: unknown key; mode: unknown key");
}

TEST(test_wrong_types_are_rejected_not_applied)
{
    fleet_delta_t d;

    parse("{\"led_is_on\":\"yes\",\"telemetry_interval_s\":\"10\"}", true, &d);
    CHECK(!d.has_led_is_on);
    CHECK(!d.has_telemetry_interval_s);
    CHECK_EQ_INT(d.rejected_count, 2);
    parse("{\"led_is_on\":1,\"telemetry_interval_s\":1.5}", true, &d);
    CHECK_EQ_INT(d.rejected_count, 2);
    parse("{\"led_is_on\":null,\"telemetry_interval_s\":null}", true, &d);
    CHECK_EQ_INT(d.rejected_count, 2);
}

TEST(test_interval_bounds)
{
    fleet_delta_t d;

    parse("{\"telemetry_interval_s\":0}", true, &d);
    CHECK(!d.has_telemetry_interval_s);
    parse("{\"telemetry_interval_s\":86401}", true, &d);
    CHECK(!d.has_telemetry_interval_s);
    parse("{\"telemetry_interval_s\":-5}", true, &d);
    CHECK(!d.has_telemetry_interval_s);
    parse("{\"telemetry_interval_s\":1e300}", true, &d);
    CHECK(!d.has_telemetry_interval_s);
    parse("{\"telemetry_interval_s\":1}", true, &d);
    CHECK(d.has_telemetry_interval_s);
    CHECK_EQ_STR(d.config_error, "");
}

TEST(test_nested_values_are_rejected_whole)
{
    fleet_delta_t d;

    parse("{\"tags\":{\"location\":\"x\"},\"led_is_on\":{\"on\":true},\"cfg\":[1,{\"a\":2}]}",
          true, &d);
    CHECK(!d.has_led_is_on);
    CHECK_EQ_INT(d.rejected_count, 3);
    CHECK_EQ_STR(d.rejected[0], "tags");
    CHECK_EQ_STR(d.rejected[1], "led_is_on");
    CHECK_EQ_STR(d.rejected[2], "cfg");
}

TEST(test_ota_keys_are_validated)
{
    fleet_delta_t d;

    parse("{\"target_version\":\"2.3.0\",\"ota_url\":\"http://h:8000/fw.bin\",\"ota_sha256\":\"" SHA_A
          "\"}",
          true, &d);
    CHECK(fleet_shadow_delta_has_ota(&d));
    CHECK(d.has_target_version && d.has_ota_url && d.has_ota_sha256);
    CHECK_EQ_STR(d.ota.version, "2.3.0");
    CHECK_EQ_STR(d.ota.url, "http://h:8000/fw.bin");
    CHECK_EQ_INT(d.rejected_count, 0);

    parse("{\"target_version\":5,\"ota_url\":\"ftp://h/x\",\"ota_sha256\":\"abc\"}", true, &d);
    CHECK(!fleet_shadow_delta_has_ota(&d));
    CHECK_EQ_INT(d.rejected_count, 3);
    parse("{\"ota_url\":\"http://\",\"ota_sha256\":\"" SHA_A "0\"}", true, &d);
    CHECK_EQ_INT(d.rejected_count, 2);
    parse("{\"target_version\":\"2.3 beta\"}", true, &d);
    CHECK_EQ_INT(d.rejected_count, 1);
}

TEST(test_ota_keys_can_be_refused)
{
    fleet_delta_t d;

    parse("{\"target_version\":\"2.3.0\",\"led_is_on\":true}", false, &d);
    CHECK(!fleet_shadow_delta_has_ota(&d));
    CHECK(d.has_led_is_on);
    CHECK_EQ_INT(d.rejected_count, 1);
    CHECK_EQ_STR(d.rejected[0], "target_version");
}

TEST(test_many_rejections_are_bounded)
{
    fleet_delta_t d;
    char json[4096];
    char joined[512];
    size_t used = 0;
    int i;

    used += (size_t)snprintf(json + used, sizeof(json) - used, "{");
    for (i = 0; i < 40; i++) {
        used += (size_t)snprintf(json + used, sizeof(json) - used,
                                 "%s\"a_very_long_unknown_key_name_that_goes_on_and_on_%02d\":1",
                                 i ? "," : "", i);
    }
    snprintf(json + used, sizeof(json) - used, "}");
    parse(json, true, &d);
    CHECK_EQ_INT(d.rejected_count, 40);
    CHECK_EQ_INT(strlen(d.rejected[0]), FLEET_KEY_MAX);
    CHECK(strlen(d.config_error) < sizeof(d.config_error));
    fleet_shadow_rejected_join(&d, joined, sizeof(joined));
    CHECK(strlen(joined) > 0);
}

TEST(test_non_object_state_is_empty)
{
    fleet_delta_t d;

    fleet_shadow_parse_delta(NULL, true, &d);
    CHECK_EQ_INT(d.rejected_count, 0);
    parse("[1,2]", true, &d);
    CHECK_EQ_INT(d.rejected_count, 0);
}

TEST(test_merge_overlays_only_present_ota_keys)
{
    fleet_delta_t d;
    fleet_ota_target_t t;

    memset(&t, 0, sizeof(t));
    strcpy(t.version, "2.2.0");
    strcpy(t.url, "http://old/fw.bin");
    parse("{\"ota_sha256\":\"" SHA_A "\"}", true, &d);
    fleet_shadow_merge_ota(&t, &d);
    CHECK_EQ_STR(t.version, "2.2.0");
    CHECK_EQ_STR(t.url, "http://old/fw.bin");
    CHECK_EQ_STR(t.sha256, SHA_A);
}


TEST(test_retry_wait_doubles_per_attempt_up_to_the_cap)
{
    /* Jitter off the table: each wait within [w/2, w) of the doubling schedule. */
    static const struct { uint32_t base; unsigned attempt; uint32_t w; } cases[] = {
        {0, 1, FLEET_SHADOW_RETRY_DEFAULT_MS}, {2000, 1, 2000}, {2000, 2, 4000},
        {2000, 3, 8000}, {5000, 5, 60000}, {5000, 40, FLEET_SHADOW_RETRY_CAP_MS},
        {4000000000u, 1, FLEET_SHADOW_RETRY_CAP_MS},
    };
    size_t i;
    uint32_t seed;

    for (seed = 0; seed < 2000; seed += 7) {
        for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            uint32_t got = fleet_shadow_retry_wait_ms(cases[i].base, cases[i].attempt, seed);
            CHECK(got >= cases[i].w / 2 && got < cases[i].w);
        }
    }
}

TEST(test_retry_wait_is_the_devices_own_and_matches_the_simulator)
{
    uint32_t a = fleet_shadow_retry_seed("dev-001");
    uint32_t b = fleet_shadow_retry_seed("dev-002");

    CHECK_EQ_INT(fleet_shadow_retry_seed(""), 2166136261u);
    CHECK_EQ_INT(fleet_shadow_retry_seed("a"), 0xE40C292Cu); /* FNV-1a's test vector */
    CHECK(a != b);
    /* The same vectors are asserted for sim/protocol.py (tests/unit/test_sim_device.py). */
    CHECK_EQ_INT(fleet_shadow_retry_wait_ms(2000, 1, a), 1429);
    CHECK_EQ_INT(fleet_shadow_retry_wait_ms(2000, 2, a), 2664);
    CHECK_EQ_INT(fleet_shadow_retry_wait_ms(2000, 1, b), 1908);
    CHECK(fleet_shadow_retry_wait_ms(2000, 1, a) == fleet_shadow_retry_wait_ms(2000, 1, a));
}

TEST(test_only_500_and_429_are_retried)
{
    CHECK(fleet_shadow_rejection_is_retryable(500));
    CHECK(fleet_shadow_rejection_is_retryable(429));
    CHECK(!fleet_shadow_rejection_is_retryable(400));
    CHECK(!fleet_shadow_rejection_is_retryable(409));
    CHECK(!fleet_shadow_rejection_is_retryable(413));
    CHECK(!fleet_shadow_rejection_is_retryable(0));
}

TEST(test_merge_reported_overlays_newer_values_and_keeps_nulls)
{
    cJSON *older = cJSON_Parse("{\"ota_status\":\"verifying\",\"ota_error\":null,"
                               "\"tags\":{\"location\":\"lab\"},\"rejected_keys\":[\"a\",\"b\"]}");
    cJSON *newer = cJSON_Parse("{\"ota_status\":\"failed\",\"ota_error\":\"sha256 mismatch\","
                               "\"tags\":{\"room\":\"2\"},\"rejected_keys\":null,"
                               "\"led_is_on\":true}");
    char *text;

    fleet_shadow_merge_reported(older, newer);
    text = cJSON_PrintUnformatted(older);
    CHECK_EQ_STR(text, "{\"ota_status\":\"failed\",\"ota_error\":\"sha256 mismatch\","
                       "\"tags\":{\"location\":\"lab\",\"room\":\"2\"},\"rejected_keys\":null,"
                       "\"led_is_on\":true}");
    cJSON_free(text);
    cJSON_Delete(older);
}

int main(void)
{
    RUN(test_known_keys_are_applied);
    RUN(test_unknown_keys_are_rejected_by_name);
    RUN(test_wrong_types_are_rejected_not_applied);
    RUN(test_interval_bounds);
    RUN(test_nested_values_are_rejected_whole);
    RUN(test_ota_keys_are_validated);
    RUN(test_ota_keys_can_be_refused);
    RUN(test_many_rejections_are_bounded);
    RUN(test_non_object_state_is_empty);
    RUN(test_merge_overlays_only_present_ota_keys);
    RUN(test_retry_wait_doubles_per_attempt_up_to_the_cap);
    RUN(test_retry_wait_is_the_devices_own_and_matches_the_simulator);
    RUN(test_only_500_and_429_are_retried);
    RUN(test_merge_reported_overlays_newer_values_and_keeps_nulls);
    return HARNESS_RESULT();
}
