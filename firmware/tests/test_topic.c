/* Topic building and parsing. */
#include "fleet/topic.h"
#include "harness.h"

HARNESS_DEFINE;

static const fleet_topics_t T = {"$aws/things", "fleet", "dev-1"};

TEST(test_builds_shadow_jobs_and_fleet_topics)
{
    char buf[256];

    CHECK(fleet_topic_build(buf, sizeof(buf), &T, FLEET_TOPIC_SHADOW_UPDATE, NULL) > 0);
    CHECK_EQ_STR(buf, "$aws/things/dev-1/shadow/update");
    fleet_topic_build(buf, sizeof(buf), &T, FLEET_TOPIC_SHADOW_DELTA, NULL);
    CHECK_EQ_STR(buf, "$aws/things/dev-1/shadow/update/delta");
    fleet_topic_build(buf, sizeof(buf), &T, FLEET_TOPIC_JOBS_UPDATE, "job-7");
    CHECK_EQ_STR(buf, "$aws/things/dev-1/jobs/job-7/update");
    fleet_topic_build(buf, sizeof(buf), &T, FLEET_TOPIC_JOBS_UPDATE_ACCEPTED, NULL);
    CHECK_EQ_STR(buf, "$aws/things/dev-1/jobs/+/update/accepted");
    fleet_topic_build(buf, sizeof(buf), &T, FLEET_TOPIC_PRESENCE, NULL);
    CHECK_EQ_STR(buf, "fleet/dev-1/presence");
    fleet_topic_build(buf, sizeof(buf), &T, FLEET_TOPIC_TELEMETRY, NULL);
    CHECK_EQ_STR(buf, "fleet/dev-1/telemetry");
}

TEST(test_build_refuses_small_buffers_and_bad_job_ids)
{
    char buf[10];
    char big[256];

    CHECK_EQ_INT(fleet_topic_build(buf, sizeof(buf), &T, FLEET_TOPIC_SHADOW_UPDATE, NULL), -1);
    CHECK_EQ_INT(fleet_topic_build(big, sizeof(big), &T, FLEET_TOPIC_JOBS_UPDATE, "a/b"), -1);
    CHECK_EQ_INT(fleet_topic_build(big, sizeof(big), &T, FLEET_TOPIC_JOBS_UPDATE, "#"), -1);
    CHECK_EQ_INT(fleet_topic_build(big, sizeof(big), &T, FLEET_TOPIC_JOBS_UPDATE, NULL), -1);
    CHECK_EQ_INT(fleet_topic_build(big, sizeof(big), &T, FLEET_TOPIC_UNKNOWN, NULL), -1);
}

static fleet_topic_id_t parse(const char *topic, char *job)
{
    return fleet_topic_parse(&T, topic, strlen(topic), job, 65);
}

TEST(test_parses_incoming_topics)
{
    char job[65];

    CHECK_EQ_INT(parse("$aws/things/dev-1/shadow/update/delta", job), FLEET_TOPIC_SHADOW_DELTA);
    CHECK_EQ_INT(parse("$aws/things/dev-1/shadow/get/accepted", job),
                 FLEET_TOPIC_SHADOW_GET_ACCEPTED);
    CHECK_EQ_INT(parse("$aws/things/dev-1/jobs/notify-next", job), FLEET_TOPIC_JOBS_NOTIFY_NEXT);
    CHECK_EQ_INT(parse("$aws/things/dev-1/jobs/start-next/accepted", job),
                 FLEET_TOPIC_JOBS_START_NEXT_ACCEPTED);
    CHECK_EQ_INT(parse("$aws/things/dev-1/jobs/job_42/update/rejected", job),
                 FLEET_TOPIC_JOBS_UPDATE_REJECTED);
    CHECK_EQ_STR(job, "job_42");
}

TEST(test_foreign_and_malformed_topics_are_unknown)
{
    char job[65];

    CHECK_EQ_INT(parse("$aws/things/dev-2/shadow/update/delta", job), FLEET_TOPIC_UNKNOWN);
    CHECK_EQ_INT(parse("$aws/things/dev-10/shadow/update/delta", job), FLEET_TOPIC_UNKNOWN);
    CHECK_EQ_INT(parse("$aws/things/dev-1/shadow/update/deltax", job), FLEET_TOPIC_UNKNOWN);
    CHECK_EQ_INT(parse("$aws/things/dev-1/jobs//update/accepted", job), FLEET_TOPIC_UNKNOWN);
    CHECK_EQ_INT(parse("$aws/things/dev-1/jobs/a+b/update/accepted", job), FLEET_TOPIC_UNKNOWN);
    CHECK_EQ_INT(parse("$aws/things/dev-1/jobs/x/get/accepted", job), FLEET_TOPIC_UNKNOWN);
    CHECK_EQ_INT(parse("$aws/things/dev-1", job), FLEET_TOPIC_UNKNOWN);
    CHECK_EQ_INT(parse("", job), FLEET_TOPIC_UNKNOWN);
    CHECK_EQ_INT(parse("fleet/dev-1/presence", job), FLEET_TOPIC_UNKNOWN);
}

TEST(test_name_validation_follows_aws_rules)
{
    CHECK(fleet_topic_thing_name_is_valid("esp32-c3:lab_1"));
    CHECK(!fleet_topic_thing_name_is_valid(""));
    CHECK(!fleet_topic_thing_name_is_valid("a/b"));
    CHECK(!fleet_topic_thing_name_is_valid("a+b"));
    CHECK(fleet_topic_job_id_is_valid("rollout-12_wave-3"));
    CHECK(!fleet_topic_job_id_is_valid("a:b"));
}

int main(void)
{
    RUN(test_builds_shadow_jobs_and_fleet_topics);
    RUN(test_build_refuses_small_buffers_and_bad_job_ids);
    RUN(test_parses_incoming_topics);
    RUN(test_foreign_and_malformed_topics_are_unknown);
    RUN(test_name_validation_follows_aws_rules);
    return HARNESS_RESULT();
}
