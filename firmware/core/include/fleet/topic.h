/*
 * MQTT topic names: AWS IoT classic shadow and Jobs topics under the shadow
 * prefix (default "$aws/things"), and the fleet's own presence and telemetry
 * topics under the fleet prefix (default "fleet").
 */
#ifndef FLEET_TOPIC_H
#define FLEET_TOPIC_H

#include <stddef.h>

typedef struct {
    const char *shadow_prefix;  /* "$aws/things" */
    const char *fleet_prefix;   /* "fleet" */
    const char *thing;
} fleet_topics_t;

typedef enum {
    FLEET_TOPIC_UNKNOWN = 0,
    /* device -> cloud */
    FLEET_TOPIC_SHADOW_UPDATE,
    FLEET_TOPIC_SHADOW_GET,
    FLEET_TOPIC_JOBS_START_NEXT,
    FLEET_TOPIC_JOBS_UPDATE,          /* needs a job id */
    FLEET_TOPIC_PRESENCE,
    FLEET_TOPIC_TELEMETRY,
    /* cloud -> device */
    FLEET_TOPIC_SHADOW_DELTA,
    FLEET_TOPIC_SHADOW_UPDATE_ACCEPTED,
    FLEET_TOPIC_SHADOW_UPDATE_REJECTED,
    FLEET_TOPIC_SHADOW_GET_ACCEPTED,
    FLEET_TOPIC_SHADOW_GET_REJECTED,
    FLEET_TOPIC_JOBS_NOTIFY_NEXT,
    FLEET_TOPIC_JOBS_START_NEXT_ACCEPTED,
    FLEET_TOPIC_JOBS_START_NEXT_REJECTED,
    FLEET_TOPIC_JOBS_UPDATE_ACCEPTED, /* carries a job id, or "+" as a filter */
    FLEET_TOPIC_JOBS_UPDATE_REJECTED,
} fleet_topic_id_t;

/* The filters the device subscribes to, in order; count in *count. */
const fleet_topic_id_t *fleet_topic_subscriptions(size_t *count);

/*
 * Writes the topic into buf. job_id is used by the JOBS_UPDATE* topics (NULL
 * gives the "+" wildcard). Returns the length, or -1 if it does not fit or an
 * argument is invalid.
 */
int fleet_topic_build(char *buf, size_t buf_len, const fleet_topics_t *topics,
                      fleet_topic_id_t id, const char *job_id);

/*
 * Classifies an incoming topic. For job update responses the job id is copied
 * into job_id (which may be NULL). Returns FLEET_TOPIC_UNKNOWN for anything
 * that is not ours.
 */
fleet_topic_id_t fleet_topic_parse(const fleet_topics_t *topics, const char *topic,
                                   size_t topic_len, char *job_id, size_t job_id_len);

/* AWS rules: thing name [a-zA-Z0-9:_-]{1,128}; job id [a-zA-Z0-9_-]{1,64}. */
int fleet_topic_thing_name_is_valid(const char *thing);
int fleet_topic_job_id_is_valid(const char *job_id);

#endif /* FLEET_TOPIC_H */
