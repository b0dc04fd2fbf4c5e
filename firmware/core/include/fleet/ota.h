/*
 * Over-the-air update, driven by the shadow's desired target_version, ota_url
 * and ota_sha256 (the "OTA trio").
 *
 *   idle --desired target != running--> downloading --> verifying --> applying --> reboot
 *     ^                                      |              |             |
 *     |                                      +------> failed <------------+
 *     +-- boot into the new image: idle, report, confirm once the report is accepted
 *
 * A target that failed (same version and sha256) is remembered in NVS and not
 * retried; a bootloader rollback marks the target as failed on the next boot.
 */
#ifndef FLEET_OTA_H
#define FLEET_OTA_H

#include <stdbool.h>
#include <stdint.h>

#include "fleet/limits.h"
#include "fleet/port.h"

typedef enum {
    FLEET_OTA_IDLE = 0,
    FLEET_OTA_DOWNLOADING,
    FLEET_OTA_VERIFYING,
    FLEET_OTA_APPLYING,
    FLEET_OTA_FAILED,
} fleet_ota_status_t;

typedef struct {
    char version[FLEET_VERSION_MAX + 1];
    char url[FLEET_URL_MAX + 1];
    char sha256[FLEET_SHA256_HEX_LEN + 1];
} fleet_ota_target_t;

typedef enum {
    FLEET_OTA_ACTION_NONE = 0,     /* no or incomplete request: wait for the rest */
    FLEET_OTA_ACTION_CONVERGE,     /* already running the target: report the trio */
    FLEET_OTA_ACTION_SKIP_FAILED,  /* this exact target failed before: do not retry */
    FLEET_OTA_ACTION_START,        /* download and install */
} fleet_ota_action_t;

typedef struct {
    fleet_ota_status_t status;
    char error[FLEET_ERROR_MAX + 1];  /* "" when none */
    fleet_ota_target_t desired;       /* last known desired trio (get + deltas) */
    fleet_ota_target_t applied;       /* last applied trio, reported; empty when none */
    fleet_ota_target_t failed;        /* do not retry this version + sha256 */
    fleet_ota_target_t pending;       /* installed, awaiting the boot that confirms it */
    fleet_ota_target_t job;           /* being installed now */
    bool install_requested;           /* job is set; the device task runs the install */
} fleet_ota_t;

/* Called on every status change during an install so the device can report it. */
typedef void (*fleet_ota_status_fn)(void *ctx, const fleet_ota_t *ota);

const char *fleet_ota_status_str(fleet_ota_status_t status);

bool fleet_ota_target_is_empty(const fleet_ota_target_t *t);
bool fleet_ota_sha256_hex_is_valid(const char *hex);
bool fleet_ota_url_is_valid(const char *url);
/* Case-insensitive comparison of a digest with its hex spelling. */
bool fleet_ota_sha256_matches(const uint8_t digest[32], const char *hex);

/* What to do about a desired trio on a device running running_version. */
fleet_ota_action_t fleet_ota_decide(const char *running_version, const fleet_ota_target_t *desired,
                                    const fleet_ota_target_t *failed);

/* Checks a fully written image: sha256, header magic, header version; fills err. */
fleet_err_t fleet_ota_verify(const fleet_slot_image_t *image, const fleet_ota_target_t *target,
                             char *err, size_t err_len);

/*
 * Loads the persisted OTA memory and settles what the last boot means:
 * rolled back (rollback_reason non-NULL) -> failed "rolled back: <reason>";
 * running the pending target -> idle, applied = pending once confirmed.
 */
void fleet_ota_boot(fleet_ota_t *ota, const fleet_port_t *port, const char *running_version,
                    const char *rollback_reason);

/* The running image was confirmed: the pending target becomes the applied one. */
void fleet_ota_confirmed(fleet_ota_t *ota, const fleet_port_t *port);

/* Records target as converged (the device already runs it). */
void fleet_ota_converge(fleet_ota_t *ota, const fleet_port_t *port, const fleet_ota_target_t *target);

/* Schedules an install of target: status downloading. */
void fleet_ota_request(fleet_ota_t *ota, const fleet_ota_target_t *target);

/*
 * Runs the scheduled install synchronously: download into the inactive slot,
 * verify, persist the pending target and activate the slot. Returns FLEET_OK
 * when the device must now reboot (status applying); otherwise the status is
 * failed with the reason in ota->error and the target remembered.
 */
fleet_err_t fleet_ota_install(fleet_ota_t *ota, const fleet_port_t *port,
                              fleet_ota_status_fn on_status, void *status_ctx);

#endif /* FLEET_OTA_H */
