/*
 * The host "bootloader": boots the app from the active slot as a child
 * process (same binary, --app), reboots it when it asks (exit 3) or crashes,
 * counts boots of an unconfirmed slot and rolls back after three crashes or
 * when it is not confirmed in time. SIGTERM/SIGINT power the device off.
 */
#ifndef HOST_SUPERVISOR_H
#define HOST_SUPERVISOR_H

#include "options.h"

#define APP_EXIT_REBOOT 3

int supervisor_run(const host_options_t *o, int argc, char **argv);

#endif /* HOST_SUPERVISOR_H */
