/* The OTA state machine: decisions, every install transition, every failure, boot outcomes. */
#include "fake_port.h"
#include "fleet/ota.h"
#include "harness.h"

HARNESS_DEFINE;

#define SHA_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define SHA_A_UPPER "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
#define SHA_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

static fleet_ota_target_t target(const char *version, const char *url, const char *sha)
{
    fleet_ota_target_t t;

    memset(&t, 0, sizeof(t));
    snprintf(t.version, sizeof(t.version), "%s", version);
    snprintf(t.url, sizeof(t.url), "%s", url);
    snprintf(t.sha256, sizeof(t.sha256), "%s", sha);
    return t;
}

/* A fake port whose download yields a valid 2.3.0 image hashing to SHA_A. */
static void good_image(fake_port_t *f)
{
    static const uint8_t body[300] = {1, 2, 3};

    f->body = body;
    f->body_len = sizeof(body);
    f->chunk = 64;
    memset(f->image.sha256, 0xaa, sizeof(f->image.sha256));
    f->image.header_valid = true;
    strcpy(f->image.version, "2.3.0");
}

typedef struct {
    fleet_ota_status_t seen[8];
    size_t n;
} status_log_t;

static void record(void *ctx, const fleet_ota_t *ota)
{
    status_log_t *log = ctx;

    if (log->n < 8) {
        log->seen[log->n++] = ota->status;
    }
}

TEST(test_decide_covers_every_action)
{
    fleet_ota_target_t none = target("", "", "");
    fleet_ota_target_t t = target("2.3.0", "http://h/fw", SHA_A);
    fleet_ota_target_t failed = target("2.3.0", "", SHA_A_UPPER);
    fleet_ota_target_t other_sha = target("2.3.0", "", SHA_B);
    fleet_ota_target_t no_url = target("2.3.0", "", SHA_A);
    fleet_ota_target_t same = target("v2.2.0", "", "");

    CHECK_EQ_INT(fleet_ota_decide("2.2.0", &none, NULL), FLEET_OTA_ACTION_NONE);
    CHECK_EQ_INT(fleet_ota_decide("2.2.0", &t, NULL), FLEET_OTA_ACTION_START);
    CHECK_EQ_INT(fleet_ota_decide("2.2.0", &t, &none), FLEET_OTA_ACTION_START);
    CHECK_EQ_INT(fleet_ota_decide("2.2.0", &t, &failed), FLEET_OTA_ACTION_SKIP_FAILED);
    CHECK_EQ_INT(fleet_ota_decide("2.2.0", &t, &other_sha), FLEET_OTA_ACTION_START);
    CHECK_EQ_INT(fleet_ota_decide("2.2.0", &no_url, NULL), FLEET_OTA_ACTION_NONE);
    CHECK_EQ_INT(fleet_ota_decide("2.2.0", &same, NULL), FLEET_OTA_ACTION_CONVERGE);
    CHECK_EQ_INT(fleet_ota_decide("2.3.0", &t, &failed), FLEET_OTA_ACTION_CONVERGE);
    /* Downgrades are updates too. */
    CHECK_EQ_INT(fleet_ota_decide("2.4.0", &t, NULL), FLEET_OTA_ACTION_START);
}

TEST(test_sha256_hex_helpers)
{
    uint8_t d[32];

    memset(d, 0xaa, sizeof(d));
    CHECK(fleet_ota_sha256_matches(d, SHA_A));
    CHECK(fleet_ota_sha256_matches(d, SHA_A_UPPER));
    CHECK(!fleet_ota_sha256_matches(d, SHA_B));
    CHECK(!fleet_ota_sha256_matches(d, "aa"));
    CHECK(!fleet_ota_sha256_hex_is_valid(SHA_A "a"));
    CHECK(!fleet_ota_sha256_hex_is_valid("gaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
    CHECK(fleet_ota_url_is_valid("https://example.com/a.bin?x=1"));
    CHECK(!fleet_ota_url_is_valid("file:///etc/passwd"));
    CHECK(!fleet_ota_url_is_valid("http:///x"));
    CHECK(!fleet_ota_url_is_valid("http://a b"));
}

TEST(test_install_success_goes_downloading_verifying_applying)
{
    fake_port_t f;
    fleet_port_t port;
    fleet_ota_t ota;
    status_log_t log = {{0}, 0};
    fleet_ota_target_t t = target("2.3.0", "http://h/fw", SHA_A);

    fake_port_init(&f, &port);
    good_image(&f);
    fleet_ota_boot(&ota, &port, "2.2.0", NULL);
    fleet_ota_request(&ota, &t);
    CHECK_EQ_INT(ota.status, FLEET_OTA_DOWNLOADING);
    CHECK(ota.install_requested);
    CHECK_EQ_INT(fleet_ota_install(&ota, &port, record, &log), FLEET_OK);
    CHECK(!ota.install_requested);
    CHECK_EQ_INT(log.n, 2);
    CHECK_EQ_INT(log.seen[0], FLEET_OTA_VERIFYING);
    CHECK_EQ_INT(log.seen[1], FLEET_OTA_APPLYING);
    CHECK_EQ_STR(f.last_url, "http://h/fw");
    CHECK_EQ_INT(f.slot_written, 300);
    CHECK_EQ_INT(f.slot_activations, 1);
    CHECK_EQ_INT(f.slot_discards, 0);
    CHECK_EQ_STR(fake_nvs(&f, "ota_pend_ver"), "2.3.0");
    CHECK_EQ_STR(fake_nvs(&f, "ota_pend_sha"), SHA_A);
    CHECK_EQ_STR(fake_nvs(&f, "ota_pend_url"), "http://h/fw");
    fake_port_free(&f);
}

/* Runs one install against a port prepared by setup; returns the recorded error. */
static void expect_failure(void (*setup)(fake_port_t *), const char *sha, const char *error,
                           size_t discards)
{
    fake_port_t f;
    fleet_port_t port;
    fleet_ota_t ota;
    status_log_t log = {{0}, 0};
    fleet_ota_target_t t = target("2.3.0", "http://h/fw", sha);

    fake_port_init(&f, &port);
    good_image(&f);
    setup(&f);
    fleet_ota_boot(&ota, &port, "2.2.0", NULL);
    fleet_ota_request(&ota, &t);
    CHECK_EQ_INT(fleet_ota_install(&ota, &port, record, &log), FLEET_ERR);
    CHECK_EQ_INT(ota.status, FLEET_OTA_FAILED);
    CHECK_EQ_STR(ota.error, error);
    CHECK_EQ_INT(log.seen[log.n - 1], FLEET_OTA_FAILED);
    CHECK_EQ_INT(f.slot_activations, 0);
    CHECK_EQ_INT(f.slot_discards, discards);
    /* The failure is remembered and persisted: this target is not retried. */
    CHECK_EQ_STR(ota.failed.version, "2.3.0");
    CHECK_EQ_STR(fake_nvs(&f, "ota_fail_ver"), "2.3.0");
    CHECK_EQ_STR(fake_nvs(&f, "ota_status"), "failed");
    CHECK_EQ_STR(fake_nvs(&f, "ota_error"), error);
    CHECK(fake_nvs(&f, "ota_pend_ver") == NULL);
    CHECK_EQ_INT(fleet_ota_decide("2.2.0", &t, &ota.failed), FLEET_OTA_ACTION_SKIP_FAILED);
    fake_port_free(&f);
}

static void nothing(fake_port_t *f) { (void)f; }
static void http_404(fake_port_t *f) { f->http_rc = FLEET_ERR; f->http_err = "HTTP 404"; }
static void http_silent(fake_port_t *f) { f->http_rc = FLEET_ERR; f->http_err = NULL; }
static void huge(fake_port_t *f) { f->fake_huge_len = FLEET_OTA_MAX_IMAGE + 1; f->chunk = 65536; }
static void write_error(fake_port_t *f) { f->slot_write_rc = FLEET_ERR; }
static void begin_error(fake_port_t *f) { f->slot_begin_rc = FLEET_ERR; }
static void end_error(fake_port_t *f) { f->slot_end_rc = FLEET_ERR; }
static void bad_magic(fake_port_t *f) { f->image.header_valid = false; }
static void wrong_version(fake_port_t *f) { strcpy(f->image.version, "2.4.0"); }
static void activate_error(fake_port_t *f) { f->slot_activate_rc = FLEET_ERR; }

TEST(test_install_failures_each_have_a_reason)
{
    expect_failure(http_404, SHA_A, "download failed: HTTP 404", 1);
    expect_failure(http_silent, SHA_A, "download failed: unknown error", 1);
    expect_failure(huge, SHA_A, "download failed: image larger than 16777216 bytes", 1);
    expect_failure(write_error, SHA_A, "download failed: flash write error", 1);
    expect_failure(begin_error, SHA_A, "download failed: cannot open update slot", 0);
    expect_failure(end_error, SHA_A, "verify failed: cannot read image", 1);
    expect_failure(nothing, SHA_B, "sha256 mismatch", 1);
    expect_failure(bad_magic, SHA_A, "bad image magic", 1);
    expect_failure(wrong_version, SHA_A, "image version 2.4.0 != target 2.3.0", 1);
    expect_failure(activate_error, SHA_A, "apply failed: cannot activate slot", 1);
}

TEST(test_sha256_check_is_case_insensitive)
{
    fake_port_t f;
    fleet_port_t port;
    fleet_ota_t ota;
    fleet_ota_target_t t = target("2.3.0", "http://h/fw", SHA_A_UPPER);

    fake_port_init(&f, &port);
    good_image(&f);
    fleet_ota_boot(&ota, &port, "2.2.0", NULL);
    fleet_ota_request(&ota, &t);
    CHECK_EQ_INT(fleet_ota_install(&ota, &port, NULL, NULL), FLEET_OK);
    fake_port_free(&f);
}

TEST(test_boot_into_pending_target_is_idle_until_confirmed)
{
    fake_port_t f;
    fleet_port_t port;
    fleet_ota_t ota;

    fake_port_init(&f, &port);
    fake_nvs_put(&f, "ota_pend_ver", "2.3.0");
    fake_nvs_put(&f, "ota_pend_url", "http://h/fw");
    fake_nvs_put(&f, "ota_pend_sha", SHA_A);
    fake_nvs_put(&f, "ota_status", "failed");
    fake_nvs_put(&f, "ota_error", "old error");
    fleet_ota_boot(&ota, &port, "2.3.0", NULL);
    CHECK_EQ_INT(ota.status, FLEET_OTA_IDLE);
    CHECK_EQ_STR(ota.error, "");
    CHECK_EQ_STR(ota.applied.version, "2.3.0"); /* reported right away */
    CHECK(fake_nvs(&f, "ota_app_ver") == NULL);  /* persisted only once confirmed */
    CHECK(fake_nvs(&f, "ota_status") == NULL);
    fleet_ota_confirmed(&ota, &port);
    CHECK_EQ_STR(fake_nvs(&f, "ota_app_ver"), "2.3.0");
    CHECK_EQ_STR(fake_nvs(&f, "ota_app_sha"), SHA_A);
    CHECK(fake_nvs(&f, "ota_pend_ver") == NULL);
    CHECK(ota.pending.version[0] == '\0');
    fake_port_free(&f);
}

TEST(test_boot_after_rollback_reports_failure_and_remembers_target)
{
    fake_port_t f;
    fleet_port_t port;
    fleet_ota_t ota;
    fleet_ota_target_t t = target("2.3.0", "http://h/fw", SHA_A);

    fake_port_init(&f, &port);
    fake_nvs_put(&f, "ota_pend_ver", "2.3.0");
    fake_nvs_put(&f, "ota_pend_url", "http://h/fw");
    fake_nvs_put(&f, "ota_pend_sha", SHA_A);
    fleet_ota_boot(&ota, &port, "2.2.0", "crash loop on boot");
    CHECK_EQ_INT(ota.status, FLEET_OTA_FAILED);
    CHECK_EQ_STR(ota.error, "rolled back: crash loop on boot");
    CHECK_EQ_STR(ota.failed.version, "2.3.0");
    CHECK(fake_nvs(&f, "ota_pend_ver") == NULL);
    CHECK_EQ_STR(fake_nvs(&f, "ota_fail_ver"), "2.3.0");
    CHECK_EQ_INT(fleet_ota_decide("2.2.0", &t, &ota.failed), FLEET_OTA_ACTION_SKIP_FAILED);

    /* The failure survives the next ordinary reboot. */
    fleet_ota_boot(&ota, &port, "2.2.0", NULL);
    CHECK_EQ_INT(ota.status, FLEET_OTA_FAILED);
    CHECK_EQ_STR(ota.error, "rolled back: crash loop on boot");
    CHECK_EQ_INT(fleet_ota_decide("2.2.0", &t, &ota.failed), FLEET_OTA_ACTION_SKIP_FAILED);

    /* Converging on the running version clears it. */
    t = target("2.2.0", "http://h/old", SHA_B);
    fleet_ota_converge(&ota, &port, &t);
    CHECK_EQ_INT(ota.status, FLEET_OTA_IDLE);
    CHECK(fake_nvs(&f, "ota_status") == NULL);
    CHECK_EQ_STR(fake_nvs(&f, "ota_app_sha"), SHA_B);
    fake_port_free(&f);
}

TEST(test_boot_drops_a_pending_target_that_is_not_running)
{
    fake_port_t f;
    fleet_port_t port;
    fleet_ota_t ota;

    fake_port_init(&f, &port);
    fake_nvs_put(&f, "ota_pend_ver", "2.3.0");
    fleet_ota_boot(&ota, &port, "2.2.0", NULL);
    CHECK_EQ_INT(ota.status, FLEET_OTA_IDLE);
    CHECK(fake_nvs(&f, "ota_pend_ver") == NULL);
    CHECK(ota.failed.version[0] == '\0');
    fake_port_free(&f);
}

TEST(test_boot_ignores_corrupt_nvs_values)
{
    fake_port_t f;
    fleet_port_t port;
    fleet_ota_t ota;

    fake_port_init(&f, &port);
    fake_nvs_put(&f, "ota_app_ver", "bad version");
    fake_nvs_put(&f, "ota_app_url", "gopher://x");
    fake_nvs_put(&f, "ota_app_sha", "xyz");
    fleet_ota_boot(&ota, &port, "2.2.0", NULL);
    CHECK(fleet_ota_target_is_empty(&ota.applied));
    fake_port_free(&f);
}

int main(void)
{
    RUN(test_decide_covers_every_action);
    RUN(test_sha256_hex_helpers);
    RUN(test_install_success_goes_downloading_verifying_applying);
    RUN(test_install_failures_each_have_a_reason);
    RUN(test_sha256_check_is_case_insensitive);
    RUN(test_boot_into_pending_target_is_idle_until_confirmed);
    RUN(test_boot_after_rollback_reports_failure_and_remembers_target);
    RUN(test_boot_drops_a_pending_target_that_is_not_running);
    RUN(test_boot_ignores_corrupt_nvs_values);
    return HARNESS_RESULT();
}
