#include "fleet/ota.h"

#include <stdio.h>
#include <string.h>

#include "fleet/version.h"
#include "log.h"
#include "text.h"

static const char *TAG = "fleet_ota";

/* NVS keys (ESP-IDF NVS allows at most 15 characters). */
#define KEY_STATUS "ota_status"
#define KEY_ERROR "ota_error"
#define KEY_APPLIED_VER "ota_app_ver"
#define KEY_APPLIED_URL "ota_app_url"
#define KEY_APPLIED_SHA "ota_app_sha"
#define KEY_FAILED_VER "ota_fail_ver"
#define KEY_FAILED_SHA "ota_fail_sha"
#define KEY_PENDING_VER "ota_pend_ver"
#define KEY_PENDING_URL "ota_pend_url"
#define KEY_PENDING_SHA "ota_pend_sha"

const char *fleet_ota_status_str(fleet_ota_status_t status)
{
    switch (status) {
    case FLEET_OTA_IDLE: return "idle";
    case FLEET_OTA_DOWNLOADING: return "downloading";
    case FLEET_OTA_VERIFYING: return "verifying";
    case FLEET_OTA_APPLYING: return "applying";
    case FLEET_OTA_FAILED: return "failed";
    default: return "idle";
    }
}

bool fleet_ota_target_is_empty(const fleet_ota_target_t *t)
{
    return t->version[0] == '\0' && t->url[0] == '\0' && t->sha256[0] == '\0';
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

bool fleet_ota_sha256_hex_is_valid(const char *hex)
{
    size_t i;

    if (hex == NULL) {
        return false;
    }
    for (i = 0; i < FLEET_SHA256_HEX_LEN; i++) {
        if (hex_value(hex[i]) < 0) {
            return false;
        }
    }
    return hex[FLEET_SHA256_HEX_LEN] == '\0';
}

bool fleet_ota_url_is_valid(const char *url)
{
    size_t i;
    size_t scheme;

    if (url == NULL) {
        return false;
    }
    if (strncmp(url, "http://", 7) == 0) {
        scheme = 7;
    } else if (strncmp(url, "https://", 8) == 0) {
        scheme = 8;
    } else {
        return false;
    }
    if (url[scheme] == '\0' || url[scheme] == '/') {
        return false;
    }
    for (i = 0; url[i] != '\0'; i++) {
        unsigned char c = (unsigned char)url[i];
        if (i >= FLEET_URL_MAX || c <= ' ' || c >= 0x7f) {
            return false;
        }
    }
    return true;
}

bool fleet_ota_sha256_matches(const uint8_t digest[32], const char *hex)
{
    size_t i;

    if (!fleet_ota_sha256_hex_is_valid(hex)) {
        return false;
    }
    for (i = 0; i < 32; i++) {
        int v = (hex_value(hex[2 * i]) << 4) | hex_value(hex[2 * i + 1]);
        if ((uint8_t)v != digest[i]) {
            return false;
        }
    }
    return true;
}

static bool same_sha(const char *a, const char *b)
{
    size_t i;

    for (i = 0; i < FLEET_SHA256_HEX_LEN; i++) {
        if (hex_value(a[i]) != hex_value(b[i]) || a[i] == '\0' || b[i] == '\0') {
            return false;
        }
    }
    return true;
}

fleet_ota_action_t fleet_ota_decide(const char *running_version, const fleet_ota_target_t *desired,
                                    const fleet_ota_target_t *failed)
{
    if (desired->version[0] == '\0') {
        return FLEET_OTA_ACTION_NONE;
    }
    if (fleet_version_compare(desired->version, running_version) == 0) {
        return FLEET_OTA_ACTION_CONVERGE;
    }
    if (desired->url[0] == '\0' || desired->sha256[0] == '\0') {
        return FLEET_OTA_ACTION_NONE;
    }
    if (failed != NULL && failed->version[0] != '\0' &&
        fleet_version_compare(failed->version, desired->version) == 0 &&
        same_sha(failed->sha256, desired->sha256)) {
        return FLEET_OTA_ACTION_SKIP_FAILED;
    }
    return FLEET_OTA_ACTION_START;
}

fleet_err_t fleet_ota_verify(const fleet_slot_image_t *image, const fleet_ota_target_t *target,
                             char *err, size_t err_len)
{
    if (!fleet_ota_sha256_matches(image->sha256, target->sha256)) {
        (void)snprintf(err, err_len, "sha256 mismatch");
        return FLEET_ERR_INVALID;
    }
    if (!image->header_valid) {
        (void)snprintf(err, err_len, "bad image magic");
        return FLEET_ERR_INVALID;
    }
    if (fleet_version_compare(image->version, target->version) != 0) {
        (void)snprintf(err, err_len, "image version %.32s != target %.32s", image->version,
                       target->version);
        return FLEET_ERR_INVALID;
    }
    return FLEET_OK;
}

/* Reads a string from NVS; "" when missing or when valid() refuses it. */
static void nvs_load(const fleet_port_t *port, const char *key, char *buf, size_t len,
                     bool (*valid)(const char *))
{
    if (port->nvs_get(port->ctx, key, buf, len) != FLEET_OK ||
        (buf[0] != '\0' && valid != NULL && !valid(buf))) {
        buf[0] = '\0';
    }
}

static void nvs_store(const fleet_port_t *port, const char *key, const char *value)
{
    if (port->nvs_set(port->ctx, key, (value != NULL && value[0] != '\0') ? value : NULL) !=
        FLEET_OK) {
        FLEET_LOGE(port, TAG, "cannot persist %s", key);
    }
}

static void store_status(const fleet_ota_t *ota, const fleet_port_t *port)
{
    nvs_store(port, KEY_STATUS, ota->status == FLEET_OTA_FAILED ? "failed" : NULL);
    nvs_store(port, KEY_ERROR, ota->error);
}

static void store_target(const fleet_port_t *port, const char *kver, const char *kurl,
                         const char *ksha, const fleet_ota_target_t *t)
{
    nvs_store(port, kver, t->version);
    if (kurl != NULL) {
        nvs_store(port, kurl, t->url);
    }
    nvs_store(port, ksha, t->sha256);
}

static void load_target(const fleet_port_t *port, const char *kver, const char *kurl,
                        const char *ksha, fleet_ota_target_t *t)
{
    nvs_load(port, kver, t->version, sizeof(t->version), fleet_version_is_valid);
    if (kurl != NULL) {
        nvs_load(port, kurl, t->url, sizeof(t->url), fleet_ota_url_is_valid);
    }
    nvs_load(port, ksha, t->sha256, sizeof(t->sha256), fleet_ota_sha256_hex_is_valid);
}

void fleet_ota_boot(fleet_ota_t *ota, const fleet_port_t *port, const char *running_version,
                    const char *rollback_reason)
{
    char status[16];

    memset(ota, 0, sizeof(*ota));
    load_target(port, KEY_APPLIED_VER, KEY_APPLIED_URL, KEY_APPLIED_SHA, &ota->applied);
    load_target(port, KEY_FAILED_VER, NULL, KEY_FAILED_SHA, &ota->failed);
    load_target(port, KEY_PENDING_VER, KEY_PENDING_URL, KEY_PENDING_SHA, &ota->pending);
    nvs_load(port, KEY_STATUS, status, sizeof(status), NULL);
    nvs_load(port, KEY_ERROR, ota->error, sizeof(ota->error), NULL);
    ota->status = strcmp(status, "failed") == 0 ? FLEET_OTA_FAILED : FLEET_OTA_IDLE;
    if (ota->status != FLEET_OTA_FAILED) {
        ota->error[0] = '\0';
    }

    if (rollback_reason != NULL && rollback_reason[0] != '\0') {
        if (ota->pending.version[0] != '\0') {
            ota->failed = ota->pending;
            store_target(port, KEY_FAILED_VER, NULL, KEY_FAILED_SHA, &ota->failed);
        }
        ota->status = FLEET_OTA_FAILED;
        (void)snprintf(ota->error, sizeof(ota->error), "rolled back: %.160s", rollback_reason);
        FLEET_LOGW(port, TAG, "booted after rollback from %s: %s",
                   ota->pending.version[0] != '\0' ? ota->pending.version : "?", rollback_reason);
        memset(&ota->pending, 0, sizeof(ota->pending));
        store_target(port, KEY_PENDING_VER, KEY_PENDING_URL, KEY_PENDING_SHA, &ota->pending);
        store_status(ota, port);
    } else if (ota->pending.version[0] != '\0') {
        if (fleet_version_compare(ota->pending.version, running_version) == 0) {
            FLEET_LOGI(port, TAG, "running updated firmware %s, awaiting confirmation",
                       running_version);
            ota->status = FLEET_OTA_IDLE;
            ota->error[0] = '\0';
            ota->applied = ota->pending; /* reported now, persisted once confirmed */
            store_status(ota, port);
        } else {
            FLEET_LOGW(port, TAG, "pending update %s is not running (%s); dropping it",
                       ota->pending.version, running_version);
            memset(&ota->pending, 0, sizeof(ota->pending));
            store_target(port, KEY_PENDING_VER, KEY_PENDING_URL, KEY_PENDING_SHA,
                         &ota->pending);
        }
    }
    ota->desired = ota->applied;
}

void fleet_ota_confirmed(fleet_ota_t *ota, const fleet_port_t *port)
{
    if (ota->pending.version[0] == '\0') {
        return;
    }
    ota->applied = ota->pending;
    store_target(port, KEY_APPLIED_VER, KEY_APPLIED_URL, KEY_APPLIED_SHA, &ota->applied);
    memset(&ota->pending, 0, sizeof(ota->pending));
    store_target(port, KEY_PENDING_VER, KEY_PENDING_URL, KEY_PENDING_SHA, &ota->pending);
}

void fleet_ota_converge(fleet_ota_t *ota, const fleet_port_t *port,
                        const fleet_ota_target_t *target)
{
    ota->applied = *target;
    store_target(port, KEY_APPLIED_VER, KEY_APPLIED_URL, KEY_APPLIED_SHA, &ota->applied);
    if (ota->status != FLEET_OTA_IDLE || ota->error[0] != '\0') {
        ota->status = FLEET_OTA_IDLE;
        ota->error[0] = '\0';
        store_status(ota, port);
    }
}

void fleet_ota_request(fleet_ota_t *ota, const fleet_ota_target_t *target)
{
    ota->job = *target;
    ota->status = FLEET_OTA_DOWNLOADING;
    ota->error[0] = '\0';
    ota->install_requested = true;
}

typedef struct {
    const fleet_port_t *port;
    uint32_t bytes;
    bool too_large;
    bool write_failed;
} download_t;

static int download_sink(void *sink_ctx, const void *data, size_t len)
{
    download_t *dl = sink_ctx;

    if (len > FLEET_OTA_MAX_IMAGE - dl->bytes) {
        dl->too_large = true;
        return FLEET_ERR_TOO_LARGE;
    }
    if (dl->port->slot_write(dl->port->ctx, data, len) != FLEET_OK) {
        dl->write_failed = true;
        return FLEET_ERR;
    }
    dl->bytes += (uint32_t)len;
    return FLEET_OK;
}

static void set_status(fleet_ota_t *ota, fleet_ota_status_t status, fleet_ota_status_fn on_status,
                       void *ctx)
{
    ota->status = status;
    if (on_status != NULL) {
        on_status(ctx, ota);
    }
}

static fleet_err_t fail(fleet_ota_t *ota, const fleet_port_t *port, bool slot_open,
                        fleet_ota_status_fn on_status, void *ctx)
{
    if (slot_open) {
        (void)port->slot_activate(port->ctx, false);
    }
    FLEET_LOGE(port, TAG, "update to %s failed: %s", ota->job.version, ota->error);
    ota->failed = ota->job;
    store_target(port, KEY_FAILED_VER, NULL, KEY_FAILED_SHA, &ota->failed);
    ota->status = FLEET_OTA_FAILED;
    store_status(ota, port);
    set_status(ota, FLEET_OTA_FAILED, on_status, ctx);
    return FLEET_ERR;
}

fleet_err_t fleet_ota_install(fleet_ota_t *ota, const fleet_port_t *port,
                              fleet_ota_status_fn on_status, void *status_ctx)
{
    download_t dl = {port, 0, false, false};
    char err[FLEET_ERROR_MAX - 24];
    fleet_slot_image_t image;
    int rc;

    ota->install_requested = false;
    ota->error[0] = '\0';
    FLEET_LOGI(port, TAG, "downloading %s from %s", ota->job.version, ota->job.url);
    if (ota->status != FLEET_OTA_DOWNLOADING) {
        set_status(ota, FLEET_OTA_DOWNLOADING, on_status, status_ctx);
    }
    if (port->slot_begin(port->ctx) != FLEET_OK) {
        (void)snprintf(ota->error, sizeof(ota->error), "download failed: cannot open update slot");
        return fail(ota, port, false, on_status, status_ctx);
    }
    err[0] = '\0';
    rc = port->http_get(port->ctx, ota->job.url, download_sink, &dl, err, sizeof(err));
    if (dl.too_large) {
        (void)snprintf(ota->error, sizeof(ota->error),
                       "download failed: image larger than %u bytes", (unsigned)FLEET_OTA_MAX_IMAGE);
        return fail(ota, port, true, on_status, status_ctx);
    }
    if (dl.write_failed) {
        (void)snprintf(ota->error, sizeof(ota->error), "download failed: flash write error");
        return fail(ota, port, true, on_status, status_ctx);
    }
    if (rc != FLEET_OK) {
        (void)snprintf(ota->error, sizeof(ota->error), "download failed: %s",
                       err[0] != '\0' ? err : "unknown error");
        return fail(ota, port, true, on_status, status_ctx);
    }
    FLEET_LOGI(port, TAG, "downloaded %u bytes, verifying", (unsigned)dl.bytes);
    set_status(ota, FLEET_OTA_VERIFYING, on_status, status_ctx);

    memset(&image, 0, sizeof(image));
    if (port->slot_end(port->ctx, &image) != FLEET_OK) {
        (void)snprintf(ota->error, sizeof(ota->error), "verify failed: cannot read image");
        return fail(ota, port, true, on_status, status_ctx);
    }
    image.version[sizeof(image.version) - 1] = '\0';
    if (fleet_ota_verify(&image, &ota->job, ota->error, sizeof(ota->error)) != FLEET_OK) {
        return fail(ota, port, true, on_status, status_ctx);
    }

    ota->pending = ota->job;
    store_target(port, KEY_PENDING_VER, KEY_PENDING_URL, KEY_PENDING_SHA, &ota->pending);
    if (port->slot_activate(port->ctx, true) != FLEET_OK) {
        memset(&ota->pending, 0, sizeof(ota->pending));
        store_target(port, KEY_PENDING_VER, KEY_PENDING_URL, KEY_PENDING_SHA, &ota->pending);
        (void)snprintf(ota->error, sizeof(ota->error), "apply failed: cannot activate slot");
        return fail(ota, port, true, on_status, status_ctx);
    }
    FLEET_LOGI(port, TAG, "image %s verified and activated; rebooting", ota->job.version);
    set_status(ota, FLEET_OTA_APPLYING, on_status, status_ctx);
    return FLEET_OK;
}
