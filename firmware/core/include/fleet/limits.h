/* Sizes of the fixed buffers in the core. Everything is bounded; nothing grows with input. */
#ifndef FLEET_LIMITS_H
#define FLEET_LIMITS_H

#define FLEET_THING_MAX 128         /* AWS IoT thing name limit */
#define FLEET_PREFIX_MAX 64
#define FLEET_TOPIC_MAX 384
#define FLEET_VERSION_MAX 32
#define FLEET_HW_REV_MAX 32
#define FLEET_LOCATION_MAX 64
#define FLEET_URL_MAX 512
#define FLEET_SHA256_HEX_LEN 64
#define FLEET_JOB_ID_MAX 64         /* AWS IoT job id limit */
#define FLEET_TOKEN_MAX 32
#define FLEET_ERROR_MAX 200
#define FLEET_KEY_MAX 48            /* longest rejected key name we keep (truncated) */
#define FLEET_REJECTED_MAX 8        /* rejected keys listed per delta */
#define FLEET_REPORT_MAX 3072       /* a shadow update the device sends (kept for retries) */

#define FLEET_DOC_MAX_SIZE (32u * 1024u)  /* incoming JSON documents */
#define FLEET_DOC_MAX_DEPTH 16            /* bounds cJSON's recursion on a small stack */

#define FLEET_OTA_MAX_IMAGE (16u * 1024u * 1024u)
#define FLEET_TELEMETRY_MIN_S 1
#define FLEET_TELEMETRY_MAX_S 86400

#endif /* FLEET_LIMITS_H */
