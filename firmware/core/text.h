/* Bounded string copies (internal to the core). */
#ifndef FLEET_TEXT_H
#define FLEET_TEXT_H

#include <stdbool.h>
#include <stddef.h>

/* Copies src (NULL = "") into dst and always terminates; false if truncated. */
bool fleet_strlcpy(char *dst, const char *src, size_t dst_len);

#endif /* FLEET_TEXT_H */
