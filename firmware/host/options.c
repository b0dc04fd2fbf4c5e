#include "options.h"

#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fleet/topic.h"
#include "fleet/version.h"

enum {
    OPT_THING = 1000,
    OPT_BROKER,
    OPT_STATE_DIR,
    OPT_HARDWARE_REV,
    OPT_FIRMWARE_VERSION,
    OPT_SHADOW_PREFIX,
    OPT_FLEET_PREFIX,
    OPT_TELEMETRY_INTERVAL,
    OPT_CONFIRM_TIMEOUT,
    OPT_SHADOW_RETRY_TIMEOUT,
    OPT_KEEPALIVE,
    OPT_LOCATION,
    OPT_LOG_LEVEL,
    OPT_APP,
    OPT_RESET_REASON,
    OPT_CAFILE,
    OPT_CERT,
    OPT_KEY,
    OPT_TLS_INSECURE,
    OPT_PASSWORD_FILE,
};

void options_usage(const char *argv0, bool to_stderr)
{
    fprintf(to_stderr ? stderr : stdout,
            "usage: %s --thing ID --broker HOST:PORT --state-dir DIR --hardware-rev REV\n"
            "       --firmware-version VER [options]\n"
            "\n"
            "Runs an ESP32 fleet device on Linux: MQTT (AWS IoT shadow + jobs), OTA into\n"
            "A/B slot files in DIR, rollback of unconfirmed images, telemetry, presence.\n"
            "\n"
            "  --thing ID                 thing name and MQTT client id\n"
            "  --broker HOST:PORT         MQTT broker (port defaults to 1883)\n"
            "  --state-dir DIR            flash: slot_a.img, slot_b.img, otadata.json, nvs.json\n"
            "  --hardware-rev REV         hardware revision reported to the shadow\n"
            "  --firmware-version VER     factory image version (used when DIR is empty)\n"
            "  --shadow-prefix P          shadow/jobs topic prefix (default \"$aws/things\")\n"
            "  --fleet-prefix P           presence/telemetry topic prefix (default \"fleet\")\n"
            "  --telemetry-interval S     seconds between telemetry messages (default 60;\n"
            "                             a shadow-set value stored in NVS wins)\n"
            "  --confirm-timeout S        roll back an updated image not confirmed within S\n"
            "                             seconds (default 30)\n"
            "  --shadow-retry-timeout S   resend an unanswered shadow update (same clientToken)\n"
            "                             after S seconds, doubling per attempt (default 5)\n"
            "  --keepalive S              MQTT keepalive (default 30)\n"
            "  --location LOC             self-reported tags.location\n"
            "  --log-level LEVEL          debug, info or warn (default info)\n"
            "  --cafile FILE              TLS to the broker, verified against this CA\n"
            "  --cert FILE --key FILE     this device's client certificate (CN = thing)\n"
            "  --tls-insecure             skip the host name check (never the chain)\n"
            "  --password-file FILE       MQTT password (user name = thing name)\n"
            "  --help                     this text\n",
            argv0);
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
    char *end = NULL;
    long v = strtol(s, &end, 10);

    if (end == s || *end != '\0' || v < lo || v > hi) {
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_broker(host_options_t *o, const char *s)
{
    const char *colon = strrchr(s, ':');
    size_t host_len = colon != NULL ? (size_t)(colon - s) : strlen(s);

    if (host_len == 0 || host_len >= sizeof(o->broker_host)) {
        return -1;
    }
    memcpy(o->broker_host, s, host_len);
    o->broker_host[host_len] = '\0';
    o->broker_port = 1883;
    if (colon != NULL && parse_int(colon + 1, 1, 65535, &o->broker_port) != 0) {
        return -1;
    }
    return 0;
}

static int bad(const char *argv0, const char *what, const char *value)
{
    fprintf(stderr, "%s: invalid %s: %s\n", argv0, what, value != NULL ? value : "(missing)");
    fprintf(stderr, "try '%s --help'\n", argv0);
    return 2;
}

int options_parse(host_options_t *o, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"thing", required_argument, NULL, OPT_THING},
        {"broker", required_argument, NULL, OPT_BROKER},
        {"state-dir", required_argument, NULL, OPT_STATE_DIR},
        {"hardware-rev", required_argument, NULL, OPT_HARDWARE_REV},
        {"firmware-version", required_argument, NULL, OPT_FIRMWARE_VERSION},
        {"shadow-prefix", required_argument, NULL, OPT_SHADOW_PREFIX},
        {"fleet-prefix", required_argument, NULL, OPT_FLEET_PREFIX},
        {"telemetry-interval", required_argument, NULL, OPT_TELEMETRY_INTERVAL},
        {"confirm-timeout", required_argument, NULL, OPT_CONFIRM_TIMEOUT},
        {"shadow-retry-timeout", required_argument, NULL, OPT_SHADOW_RETRY_TIMEOUT},
        {"keepalive", required_argument, NULL, OPT_KEEPALIVE},
        {"location", required_argument, NULL, OPT_LOCATION},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"app", no_argument, NULL, OPT_APP},
        {"reset-reason", required_argument, NULL, OPT_RESET_REASON},
        {"cafile", required_argument, NULL, OPT_CAFILE},
        {"cert", required_argument, NULL, OPT_CERT},
        {"key", required_argument, NULL, OPT_KEY},
        {"tls-insecure", no_argument, NULL, OPT_TLS_INSECURE},
        {"password-file", required_argument, NULL, OPT_PASSWORD_FILE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *argv0 = argv[0];
    bool have_broker = false;
    int c;

    memset(o, 0, sizeof(*o));
    o->shadow_prefix = "$aws/things";
    o->fleet_prefix = "fleet";
    o->telemetry_interval_s = 60;
    o->confirm_timeout_s = 30;
    o->shadow_retry_s = 5;
    o->keepalive_s = 30;
    o->log_level = FLEET_LOG_INFO;
    o->reset_reason = FLEET_RESET_POWERON;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_THING: o->thing = optarg; break;
        case OPT_BROKER:
            if (parse_broker(o, optarg) != 0) {
                return bad(argv0, "--broker (HOST:PORT)", optarg);
            }
            have_broker = true;
            break;
        case OPT_STATE_DIR: o->state_dir = optarg; break;
        case OPT_HARDWARE_REV: o->hardware_rev = optarg; break;
        case OPT_FIRMWARE_VERSION: o->firmware_version = optarg; break;
        case OPT_SHADOW_PREFIX: o->shadow_prefix = optarg; break;
        case OPT_FLEET_PREFIX: o->fleet_prefix = optarg; break;
        case OPT_LOCATION: o->location = optarg; break;
        case OPT_TELEMETRY_INTERVAL:
            if (parse_int(optarg, FLEET_TELEMETRY_MIN_S, FLEET_TELEMETRY_MAX_S,
                          &o->telemetry_interval_s) != 0) {
                return bad(argv0, "--telemetry-interval (1..86400)", optarg);
            }
            break;
        case OPT_CONFIRM_TIMEOUT:
            if (parse_int(optarg, 1, 86400, &o->confirm_timeout_s) != 0) {
                return bad(argv0, "--confirm-timeout (1..86400)", optarg);
            }
            break;
        case OPT_SHADOW_RETRY_TIMEOUT:
            if (parse_int(optarg, 1, 3600, &o->shadow_retry_s) != 0) {
                return bad(argv0, "--shadow-retry-timeout (1..3600)", optarg);
            }
            break;
        case OPT_KEEPALIVE:
            if (parse_int(optarg, 5, 65535, &o->keepalive_s) != 0) {
                return bad(argv0, "--keepalive (5..65535)", optarg);
            }
            break;
        case OPT_LOG_LEVEL:
            if (strcmp(optarg, "debug") == 0) {
                o->log_level = FLEET_LOG_DEBUG;
            } else if (strcmp(optarg, "info") == 0) {
                o->log_level = FLEET_LOG_INFO;
            } else if (strcmp(optarg, "warn") == 0) {
                o->log_level = FLEET_LOG_WARN;
            } else {
                return bad(argv0, "--log-level (debug|info|warn)", optarg);
            }
            break;
        case OPT_APP: o->app = true; break;
        case OPT_CAFILE: o->cafile = optarg; break;
        case OPT_CERT: o->certfile = optarg; break;
        case OPT_KEY: o->keyfile = optarg; break;
        case OPT_TLS_INSECURE: o->tls_insecure = true; break;
        case OPT_PASSWORD_FILE: o->password_file = optarg; break;
        case OPT_RESET_REASON:
            if (fleet_reset_reason_parse(optarg, &o->reset_reason) != FLEET_OK) {
                return bad(argv0, "--reset-reason", optarg);
            }
            break;
        case 'h':
            options_usage(argv0, false);
            return 1;
        default:
            return bad(argv0, "option", optind > 0 && optind <= argc ? argv[optind - 1] : "?");
        }
    }
    if (optind < argc) {
        return bad(argv0, "argument", argv[optind]);
    }
    if (!fleet_topic_thing_name_is_valid(o->thing)) {
        return bad(argv0, "--thing ([a-zA-Z0-9:_-]{1,128})", o->thing);
    }
    if (!have_broker) {
        return bad(argv0, "--broker", NULL);
    }
    if (o->state_dir == NULL || o->state_dir[0] == '\0' || strlen(o->state_dir) > PATH_MAX - 32) {
        return bad(argv0, "--state-dir", o->state_dir);
    }
    if (o->hardware_rev == NULL || o->hardware_rev[0] == '\0' ||
        strlen(o->hardware_rev) > FLEET_HW_REV_MAX) {
        return bad(argv0, "--hardware-rev", o->hardware_rev);
    }
    if (!fleet_version_is_valid(o->firmware_version)) {
        return bad(argv0, "--firmware-version", o->firmware_version);
    }
    if (o->location != NULL && strlen(o->location) > FLEET_LOCATION_MAX) {
        return bad(argv0, "--location", o->location);
    }
    if ((o->certfile == NULL) != (o->keyfile == NULL)) {
        return bad(argv0, "--cert/--key (give both)", o->certfile != NULL ? o->certfile
                                                                          : o->keyfile);
    }
    if (o->certfile != NULL && o->cafile == NULL) {
        return bad(argv0, "--cert without --cafile (the server must be verified)", o->certfile);
    }
    if (o->tls_insecure && o->cafile == NULL) {
        return bad(argv0, "--tls-insecure without --cafile", NULL);
    }
    return 0;
}
