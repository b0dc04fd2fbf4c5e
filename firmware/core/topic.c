#include "fleet/topic.h"

#include <stdio.h>
#include <string.h>

#include "fleet/limits.h"

static const fleet_topic_id_t k_subscriptions[] = {
    FLEET_TOPIC_SHADOW_DELTA,
    FLEET_TOPIC_SHADOW_UPDATE_ACCEPTED,
    FLEET_TOPIC_SHADOW_UPDATE_REJECTED,
    FLEET_TOPIC_SHADOW_GET_ACCEPTED,
    FLEET_TOPIC_SHADOW_GET_REJECTED,
    FLEET_TOPIC_JOBS_NOTIFY_NEXT,
    FLEET_TOPIC_JOBS_START_NEXT_ACCEPTED,
    FLEET_TOPIC_JOBS_START_NEXT_REJECTED,
    FLEET_TOPIC_JOBS_UPDATE_ACCEPTED,
    FLEET_TOPIC_JOBS_UPDATE_REJECTED,
};

/* Suffixes after "{shadow_prefix}/{thing}/" for the fixed shadow and jobs topics. */
static const char *thing_suffix(fleet_topic_id_t id)
{
    switch (id) {
    case FLEET_TOPIC_SHADOW_UPDATE: return "shadow/update";
    case FLEET_TOPIC_SHADOW_GET: return "shadow/get";
    case FLEET_TOPIC_JOBS_START_NEXT: return "jobs/start-next";
    case FLEET_TOPIC_SHADOW_DELTA: return "shadow/update/delta";
    case FLEET_TOPIC_SHADOW_UPDATE_ACCEPTED: return "shadow/update/accepted";
    case FLEET_TOPIC_SHADOW_UPDATE_REJECTED: return "shadow/update/rejected";
    case FLEET_TOPIC_SHADOW_GET_ACCEPTED: return "shadow/get/accepted";
    case FLEET_TOPIC_SHADOW_GET_REJECTED: return "shadow/get/rejected";
    case FLEET_TOPIC_JOBS_NOTIFY_NEXT: return "jobs/notify-next";
    case FLEET_TOPIC_JOBS_START_NEXT_ACCEPTED: return "jobs/start-next/accepted";
    case FLEET_TOPIC_JOBS_START_NEXT_REJECTED: return "jobs/start-next/rejected";
    default: return NULL;
    }
}

const fleet_topic_id_t *fleet_topic_subscriptions(size_t *count)
{
    *count = sizeof(k_subscriptions) / sizeof(k_subscriptions[0]);
    return k_subscriptions;
}

static int finish(int n, size_t buf_len)
{
    return (n < 0 || (size_t)n >= buf_len) ? -1 : n;
}

int fleet_topic_build(char *buf, size_t buf_len, const fleet_topics_t *t, fleet_topic_id_t id,
                      const char *job_id)
{
    const char *suffix;
    const char *job = (job_id != NULL) ? job_id : "+";

    if (buf == NULL || buf_len == 0 || t == NULL || t->thing == NULL ||
        t->shadow_prefix == NULL || t->fleet_prefix == NULL) {
        return -1;
    }
    buf[0] = '\0';
    if (job_id != NULL && !fleet_topic_job_id_is_valid(job_id)) {
        return -1;
    }
    switch (id) {
    case FLEET_TOPIC_PRESENCE:
        return finish(snprintf(buf, buf_len, "%s/%s/presence", t->fleet_prefix, t->thing),
                      buf_len);
    case FLEET_TOPIC_TELEMETRY:
        return finish(snprintf(buf, buf_len, "%s/%s/telemetry", t->fleet_prefix, t->thing),
                      buf_len);
    case FLEET_TOPIC_JOBS_UPDATE:
        if (job_id == NULL) {
            return -1;
        }
        return finish(snprintf(buf, buf_len, "%s/%s/jobs/%s/update", t->shadow_prefix,
                               t->thing, job),
                      buf_len);
    case FLEET_TOPIC_JOBS_UPDATE_ACCEPTED:
        return finish(snprintf(buf, buf_len, "%s/%s/jobs/%s/update/accepted",
                               t->shadow_prefix, t->thing, job),
                      buf_len);
    case FLEET_TOPIC_JOBS_UPDATE_REJECTED:
        return finish(snprintf(buf, buf_len, "%s/%s/jobs/%s/update/rejected",
                               t->shadow_prefix, t->thing, job),
                      buf_len);
    default:
        suffix = thing_suffix(id);
        if (suffix == NULL) {
            return -1;
        }
        return finish(snprintf(buf, buf_len, "%s/%s/%s", t->shadow_prefix, t->thing, suffix),
                      buf_len);
    }
}

/* Does [s, s+len) start with prefix? Advances *s and *len past it. */
static int eat(const char **s, size_t *len, const char *prefix)
{
    size_t n = strlen(prefix);

    if (*len < n || memcmp(*s, prefix, n) != 0) {
        return 0;
    }
    *s += n;
    *len -= n;
    return 1;
}

static int equals(const char *s, size_t len, const char *lit)
{
    return strlen(lit) == len && memcmp(s, lit, len) == 0;
}

fleet_topic_id_t fleet_topic_parse(const fleet_topics_t *t, const char *topic, size_t topic_len,
                                   char *job_id, size_t job_id_len)
{
    static const fleet_topic_id_t fixed[] = {
        FLEET_TOPIC_SHADOW_DELTA,          FLEET_TOPIC_SHADOW_UPDATE_ACCEPTED,
        FLEET_TOPIC_SHADOW_UPDATE_REJECTED, FLEET_TOPIC_SHADOW_GET_ACCEPTED,
        FLEET_TOPIC_SHADOW_GET_REJECTED,   FLEET_TOPIC_JOBS_NOTIFY_NEXT,
        FLEET_TOPIC_JOBS_START_NEXT_ACCEPTED, FLEET_TOPIC_JOBS_START_NEXT_REJECTED,
    };
    const char *s = topic;
    size_t len = topic_len;
    size_t i;

    if (job_id != NULL && job_id_len > 0) {
        job_id[0] = '\0';
    }
    if (t == NULL || topic == NULL || !eat(&s, &len, t->shadow_prefix) || !eat(&s, &len, "/") ||
        !eat(&s, &len, t->thing) || !eat(&s, &len, "/")) {
        return FLEET_TOPIC_UNKNOWN;
    }
    for (i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        if (equals(s, len, thing_suffix(fixed[i]))) {
            return fixed[i];
        }
    }
    if (eat(&s, &len, "jobs/")) {
        const char *slash = memchr(s, '/', len);
        size_t id_len;
        char id[FLEET_JOB_ID_MAX + 1];
        fleet_topic_id_t kind;

        if (slash == NULL) {
            return FLEET_TOPIC_UNKNOWN;
        }
        id_len = (size_t)(slash - s);
        if (id_len == 0 || id_len > FLEET_JOB_ID_MAX) {
            return FLEET_TOPIC_UNKNOWN;
        }
        memcpy(id, s, id_len);
        id[id_len] = '\0';
        if (!fleet_topic_job_id_is_valid(id)) {
            return FLEET_TOPIC_UNKNOWN;
        }
        s = slash;
        len -= id_len;
        if (equals(s, len, "/update/accepted")) {
            kind = FLEET_TOPIC_JOBS_UPDATE_ACCEPTED;
        } else if (equals(s, len, "/update/rejected")) {
            kind = FLEET_TOPIC_JOBS_UPDATE_REJECTED;
        } else {
            return FLEET_TOPIC_UNKNOWN;
        }
        if (job_id != NULL && job_id_len > id_len) {
            memcpy(job_id, id, id_len + 1);
        }
        return kind;
    }
    return FLEET_TOPIC_UNKNOWN;
}

static int is_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

int fleet_topic_thing_name_is_valid(const char *thing)
{
    size_t i;

    if (thing == NULL || thing[0] == '\0') {
        return 0;
    }
    for (i = 0; thing[i] != '\0'; i++) {
        char c = thing[i];
        if (i >= FLEET_THING_MAX || !(is_alnum(c) || c == ':' || c == '_' || c == '-')) {
            return 0;
        }
    }
    return 1;
}

int fleet_topic_job_id_is_valid(const char *job_id)
{
    size_t i;

    if (job_id == NULL || job_id[0] == '\0') {
        return 0;
    }
    for (i = 0; job_id[i] != '\0'; i++) {
        char c = job_id[i];
        if (i >= FLEET_JOB_ID_MAX || !(is_alnum(c) || c == '_' || c == '-')) {
            return 0;
        }
    }
    return 1;
}
