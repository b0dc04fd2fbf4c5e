#include "slot_file.h"

#include <stdio.h>

#include "state_file.h"

int slot_file_read_header(const char *path, fleet_image_header_t *out)
{
    uint8_t header[FLEET_IMAGE_HEADER_SIZE];
    FILE *f = fopen(path, "rb");
    size_t n;

    if (f == NULL) {
        return -1;
    }
    n = fread(header, 1, sizeof(header), f);
    fclose(f);
    return fleet_image_parse_header(header, n, out) == FLEET_OK ? 0 : -1;
}

int slot_file_write_factory(const char *path, const char *version)
{
    uint8_t header[FLEET_IMAGE_HEADER_SIZE];

    if (fleet_image_build_header(header, version, "", 0) != FLEET_OK) {
        return -1;
    }
    return state_file_write_atomic(path, header, sizeof(header));
}
