#include "fleet/image.h"

#include <string.h>

/* Copies a NUL padded ASCII field; rejects unprintable bytes and junk after the padding. */
static fleet_err_t read_field(const uint8_t *field, char out[FLEET_IMAGE_FIELD_LEN + 1])
{
    size_t i;
    bool ended = false;

    for (i = 0; i < FLEET_IMAGE_FIELD_LEN; i++) {
        uint8_t c = field[i];
        if (c == 0) {
            ended = true;
        } else if (ended || c < 0x21 || c > 0x7e) {
            return FLEET_ERR_INVALID;
        }
        out[i] = (char)c;
    }
    out[FLEET_IMAGE_FIELD_LEN] = '\0';
    return FLEET_OK;
}

fleet_err_t fleet_image_parse_header(const uint8_t *buf, size_t len, fleet_image_header_t *out)
{
    if (buf == NULL || out == NULL || len < FLEET_IMAGE_HEADER_SIZE ||
        memcmp(buf, FLEET_IMAGE_MAGIC, 8) != 0) {
        return FLEET_ERR_INVALID;
    }
    if (read_field(buf + 8, out->version) != FLEET_OK || out->version[0] == '\0' ||
        read_field(buf + 40, out->crash_on_hw) != FLEET_OK) {
        return FLEET_ERR_INVALID;
    }
    out->payload_len = (uint32_t)buf[72] | ((uint32_t)buf[73] << 8) | ((uint32_t)buf[74] << 16) |
                       ((uint32_t)buf[75] << 24);
    return FLEET_OK;
}

fleet_err_t fleet_image_build_header(uint8_t out[FLEET_IMAGE_HEADER_SIZE], const char *version,
                                     const char *crash_on_hw, uint32_t payload_len)
{
    size_t vlen = version != NULL ? strlen(version) : 0;
    size_t clen = crash_on_hw != NULL ? strlen(crash_on_hw) : 0;

    if (vlen == 0 || vlen > FLEET_IMAGE_FIELD_LEN || clen > FLEET_IMAGE_FIELD_LEN) {
        return FLEET_ERR_INVALID;
    }
    memset(out, 0, FLEET_IMAGE_HEADER_SIZE);
    memcpy(out, FLEET_IMAGE_MAGIC, 8);
    memcpy(out + 8, version, vlen);
    if (clen > 0) {
        memcpy(out + 40, crash_on_hw, clen);
    }
    out[72] = (uint8_t)(payload_len & 0xffu);
    out[73] = (uint8_t)((payload_len >> 8) & 0xffu);
    out[74] = (uint8_t)((payload_len >> 16) & 0xffu);
    out[75] = (uint8_t)((payload_len >> 24) & 0xffu);
    return FLEET_OK;
}
