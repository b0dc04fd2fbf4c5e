/*
 * fleet-device: an ESP32 fleet device on Linux. Without --app it is the
 * bootloader/supervisor; with --app (added by the supervisor) it is the
 * application running from the active slot.
 */
#include "app.h"
#include "host_log.h"
#include "options.h"
#include "supervisor.h"

int main(int argc, char **argv)
{
    host_options_t opts;
    int rc = options_parse(&opts, argc, argv);

    if (rc == 1) {
        return 0;
    }
    if (rc != 0) {
        return rc;
    }
    host_log_init(opts.log_level);
    return opts.app ? app_run(&opts) : supervisor_run(&opts, argc, argv);
}
