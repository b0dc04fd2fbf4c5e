/* Firmware version strings: dotted numbers with an optional "-prerelease" suffix. */
#ifndef FLEET_VERSION_H
#define FLEET_VERSION_H

#include <stdbool.h>

/*
 * Compares versions like semantic versions: numeric components left to right
 * ("2.10.0" > "2.9.1"), missing components count as 0 ("2.3" == "2.3.0"), a
 * leading "v" is ignored, and a prerelease sorts before its release
 * ("2.3.0-rc1" < "2.3.0"); prereleases compare as plain strings. Returns <0,
 * 0 or >0. Strings that are not versions compare as plain strings after
 * valid ones.
 */
int fleet_version_compare(const char *a, const char *b);

/* Printable ASCII without spaces or quotes, 1..FLEET_VERSION_MAX characters. */
bool fleet_version_is_valid(const char *v);

#endif /* FLEET_VERSION_H */
