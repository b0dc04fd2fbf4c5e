/*
 * The host firmware image format (what the Linux port keeps in its slots and
 * what tests serve over HTTP). Little-endian, 128 byte header then payload:
 *
 *   0..7    magic "FLTIMG01"
 *   8..39   version, ASCII, NUL padded
 *   40..71  crash_on_hw, ASCII, NUL padded: the app aborts during boot on that
 *           hardware revision (a test hook for crash-loop rollbacks)
 *   72..75  payload length, uint32 LE
 *   76..127 zero
 */
#ifndef FLEET_IMAGE_H
#define FLEET_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "fleet/limits.h"
#include "fleet/port.h"

#define FLEET_IMAGE_HEADER_SIZE 128u
#define FLEET_IMAGE_MAGIC "FLTIMG01"
#define FLEET_IMAGE_FIELD_LEN 32u

typedef struct {
    char version[FLEET_IMAGE_FIELD_LEN + 1];
    char crash_on_hw[FLEET_IMAGE_FIELD_LEN + 1];
    uint32_t payload_len;
} fleet_image_header_t;

/* FLEET_OK, or FLEET_ERR_INVALID for a short buffer, bad magic or unprintable fields. */
fleet_err_t fleet_image_parse_header(const uint8_t *buf, size_t len, fleet_image_header_t *out);

/* Fills a 128 byte header; strings longer than 32 bytes are refused. */
fleet_err_t fleet_image_build_header(uint8_t out[FLEET_IMAGE_HEADER_SIZE], const char *version,
                                     const char *crash_on_hw, uint32_t payload_len);

#endif /* FLEET_IMAGE_H */
