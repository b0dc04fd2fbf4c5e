/* Image files in the A/B slots of the state dir. */
#ifndef HOST_SLOT_FILE_H
#define HOST_SLOT_FILE_H

#include "fleet/image.h"

/* Reads and validates the header of the image in path. 0 on success. */
int slot_file_read_header(const char *path, fleet_image_header_t *out);

/* Writes a factory image (header only, empty payload) atomically. 0 on success. */
int slot_file_write_factory(const char *path, const char *version);

#endif /* HOST_SLOT_FILE_H */
