/* fleet-device command line. */
#ifndef HOST_OPTIONS_H
#define HOST_OPTIONS_H

#include <stdbool.h>

#include "fleet/device.h"
#include "fleet/port.h"

typedef struct {
    const char *thing;
    char broker_host[256];
    int broker_port;
    const char *state_dir;
    const char *hardware_rev;
    const char *firmware_version;
    const char *shadow_prefix;
    const char *fleet_prefix;
    const char *location;
    int telemetry_interval_s;
    int confirm_timeout_s;
    int shadow_retry_s;
    int keepalive_s;
    fleet_log_level_t log_level;
    /* TLS: the broker's CA (turns TLS on; the server certificate is always verified),
     * this device's certificate and key, and skipping only the host name check. */
    const char *cafile;
    const char *certfile;
    const char *keyfile;
    bool tls_insecure;
    /* Password auth: user name = thing name, password read from this file. */
    const char *password_file;
    /* Set by the supervisor for the app it boots (hidden flags). */
    bool app;
    fleet_reset_reason_t reset_reason;
} host_options_t;

/* Returns 0 to run, 1 when --help was printed, 2 on a usage error (already reported). */
int options_parse(host_options_t *o, int argc, char **argv);
void options_usage(const char *argv0, bool to_stderr);

#endif /* HOST_OPTIONS_H */
