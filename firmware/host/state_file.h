/* Files in the state dir: atomic replacement and whole-file reads. */
#ifndef HOST_STATE_FILE_H
#define HOST_STATE_FILE_H

#include <stddef.h>

#include "cJSON.h"

/* Writes data to path.tmp.<pid>, fsyncs, renames over path. 0 on success. */
int state_file_write_atomic(const char *path, const void *data, size_t len);

/* Reads and parses a JSON object file; NULL if missing or invalid. */
cJSON *state_file_read_json(const char *path);

/* Serialises doc (formatted) and writes it atomically. 0 on success. */
int state_file_write_json(const char *path, const cJSON *doc);

/* Creates dir and its parents (mode 0755). 0 on success. */
int state_file_mkdirs(const char *dir);

/* snprintf(out, len, "%s/%s", dir, name); -1 if it does not fit. */
int state_file_path(char *out, size_t len, const char *dir, const char *name);

#endif /* HOST_STATE_FILE_H */
