/* The device application booted by the supervisor from the active slot. */
#ifndef HOST_APP_H
#define HOST_APP_H

#include "options.h"

/* Runs until powered off (returns 0) or exits 3 to reboot. */
int app_run(const host_options_t *o);

#endif /* HOST_APP_H */
