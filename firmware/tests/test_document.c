/* Malformed documents are rejected without a crash, at the parser and at the device. */
#include <stdlib.h>

#include "fake_port.h"
#include "fleet/document.h"
#include "fleet/image.h"
#include "harness.h"

HARNESS_DEFINE;

static fleet_doc_error_t parse_err(const char *s, size_t len)
{
    fleet_doc_error_t err = FLEET_DOC_OK;
    cJSON *doc = fleet_document_parse(s, len, &err);

    cJSON_Delete(doc);
    return err;
}

#define PARSE(s) parse_err((s), sizeof(s) - 1)

TEST(test_valid_object_parses)
{
    CHECK_EQ_INT(PARSE("{\"state\":{\"led_is_on\":true},\"version\":3}"), FLEET_DOC_OK);
    CHECK_EQ_INT(PARSE("{\"s\":\"caf\xc3\xa9 \xf0\x9f\x98\x80\"}"), FLEET_DOC_OK);
}

TEST(test_truncated_json_is_a_syntax_error)
{
    CHECK_EQ_INT(PARSE("{\"state\":{\"led_is_on\":tr"), FLEET_DOC_SYNTAX);
    CHECK_EQ_INT(PARSE("{\"state\":"), FLEET_DOC_SYNTAX);
    CHECK_EQ_INT(PARSE("{"), FLEET_DOC_SYNTAX);
    CHECK_EQ_INT(PARSE("{\"a\":\"unterminated"), FLEET_DOC_SYNTAX);
    CHECK_EQ_INT(PARSE("{\"a\":1}garbage"), FLEET_DOC_OK); /* cJSON stops after the value */
}

TEST(test_payload_is_not_read_past_its_length)
{
    /* Length excludes the closing brace: must not parse as complete. */
    CHECK_EQ_INT(parse_err("{\"a\":1}", 6), FLEET_DOC_SYNTAX);
}

TEST(test_non_objects_and_empty_are_rejected)
{
    CHECK_EQ_INT(PARSE("[1,2]"), FLEET_DOC_NOT_OBJECT);
    CHECK_EQ_INT(PARSE("42"), FLEET_DOC_NOT_OBJECT);
    CHECK_EQ_INT(PARSE("\"x\""), FLEET_DOC_NOT_OBJECT);
    CHECK_EQ_INT(PARSE("null"), FLEET_DOC_NOT_OBJECT);
    CHECK_EQ_INT(parse_err("", 0), FLEET_DOC_EMPTY);
    CHECK_EQ_INT(parse_err(NULL, 5), FLEET_DOC_EMPTY);
}

TEST(test_non_utf8_and_nul_bytes_are_rejected)
{
    CHECK_EQ_INT(PARSE("{\"a\":\"\xff\"}"), FLEET_DOC_BAD_UTF8);
    CHECK_EQ_INT(PARSE("{\"a\":\"\xc3\"}"), FLEET_DOC_BAD_UTF8);          /* truncated sequence */
    CHECK_EQ_INT(PARSE("{\"a\":\"\xc0\xaf\"}"), FLEET_DOC_BAD_UTF8);      /* overlong */
    CHECK_EQ_INT(PARSE("{\"a\":\"\xed\xa0\x80\"}"), FLEET_DOC_BAD_UTF8);  /* surrogate */
    CHECK_EQ_INT(PARSE("{\"a\":\"\xf4\x90\x80\x80\"}"), FLEET_DOC_BAD_UTF8); /* > U+10FFFF */
    CHECK_EQ_INT(PARSE("{\"a\":\"x\0y\"}"), FLEET_DOC_BAD_UTF8);
    CHECK_EQ_INT(PARSE("{\"a\":\"\xe2\x82\"}"), FLEET_DOC_BAD_UTF8);
}

TEST(test_deep_nesting_is_rejected_before_parsing)
{
    char *s = malloc(200001);
    size_t i;

    for (i = 0; i < 100000; i++) {
        s[i] = '[';
        s[200000 - 1 - i] = ']';
    }
    s[0] = '{';
    s[200000 - 1] = '}';
    s[200000] = '\0';
    CHECK_EQ_INT(parse_err(s, 200000), FLEET_DOC_TOO_LARGE);
    /* Within the size limit but too deep. */
    CHECK_EQ_INT(parse_err("{\"a\":[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]}", 44),
                 FLEET_DOC_TOO_DEEP);
    /* Brackets inside strings do not count. */
    CHECK_EQ_INT(PARSE("{\"a\":\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\\"[[[[[\"}"), FLEET_DOC_OK);
    free(s);
}

TEST(test_huge_documents_are_rejected)
{
    size_t n = FLEET_DOC_MAX_SIZE + 1;
    char *s = malloc(n);

    memset(s, ' ', n);
    s[0] = '{';
    s[n - 1] = '}';
    CHECK_EQ_INT(parse_err(s, n), FLEET_DOC_TOO_LARGE);
    CHECK_EQ_INT(parse_err(s, n - 1), FLEET_DOC_SYNTAX);
    free(s);
}

TEST(test_error_strings_exist)
{
    CHECK_EQ_STR(fleet_document_error_str(FLEET_DOC_TOO_DEEP), "document nested too deeply");
    CHECK_EQ_STR(fleet_document_error_str((fleet_doc_error_t)99), "unknown document error");
}

/* Every malformed input on every topic: no crash, no publish, errors counted. */
TEST(test_device_drops_malformed_messages_on_every_topic)
{
    static const char *suffixes[] = {
        "shadow/update/delta",      "shadow/get/accepted",      "shadow/get/rejected",
        "shadow/update/accepted",   "shadow/update/rejected",   "jobs/notify-next",
        "jobs/start-next/accepted", "jobs/start-next/rejected", "jobs/j1/update/accepted",
    };
    static const char *bad[] = {
        "", "{", "[]", "\"x\"", "{\"state\":\xff}", "{\"state\":{\"led_is_on\":",
        "nul\0", "{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
    };
    fake_port_t f;
    fleet_port_t port;
    fleet_device_t dev;
    fleet_device_config_t cfg = fake_config();
    size_t i;
    size_t j;

    fake_port_init(&f, &port);
    CHECK_EQ_INT(fleet_device_init(&dev, &port, &cfg), FLEET_OK);
    for (i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        for (j = 0; j < sizeof(bad) / sizeof(bad[0]); j++) {
            fake_deliver(&dev, suffixes[i], bad[j]);
        }
    }
    CHECK_EQ_INT(f.publish_count, 0);
    CHECK_EQ_INT(dev.errors, (sizeof(suffixes) / sizeof(suffixes[0])) * (sizeof(bad) / sizeof(bad[0])));
    fake_port_free(&f);
}

/* Well-formed JSON with the wrong shapes: no crash, nothing applied. */
TEST(test_device_survives_wrong_shapes)
{
    static const char *docs[] = {
        "{\"state\":5}", "{\"state\":[1,2]}", "{\"state\":null}", "{\"version\":\"x\"}",
        "{\"state\":{},\"version\":-5}", "{\"state\":{},\"version\":1e300}",
        "{\"execution\":5}", "{\"execution\":{\"jobId\":5}}", "{\"execution\":{\"jobId\":\"a/b\"}}",
        "{\"execution\":{\"jobId\":\"j\",\"jobDocument\":[1]}}", "{\"clientToken\":7}",
        "{\"state\":{\"desired\":7,\"reported\":[],\"delta\":\"x\"}}",
        "{\"state\":{\"reported\":{\"rejected_keys\":[1,{\"a\":2},\"k\"]}}}",
    };
    static const char *suffixes[] = {"shadow/update/delta", "shadow/get/accepted",
                                     "jobs/notify-next", "jobs/start-next/accepted",
                                     "shadow/update/accepted"};
    fake_port_t f;
    fleet_port_t port;
    fleet_device_t dev;
    fleet_device_config_t cfg = fake_config();
    size_t i;
    size_t j;

    fake_port_init(&f, &port);
    CHECK_EQ_INT(fleet_device_init(&dev, &port, &cfg), FLEET_OK);
    for (i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        for (j = 0; j < sizeof(docs) / sizeof(docs[0]); j++) {
            dev.jobs.state = FLEET_JOBS_WAIT_START_NEXT;
            fake_deliver(&dev, suffixes[i], docs[j]);
        }
    }
    CHECK(!dev.settings.led_is_on);
    CHECK_EQ_INT(f.reboots, 0);
    CHECK_EQ_INT(f.confirms, 0);
    fake_port_free(&f);
}

TEST(test_image_header_round_trip_and_rejections)
{
    uint8_t h[FLEET_IMAGE_HEADER_SIZE];
    fleet_image_header_t out;

    CHECK_EQ_INT(fleet_image_build_header(h, "2.3.0", "rev-b", 4096), FLEET_OK);
    CHECK_EQ_INT(fleet_image_parse_header(h, sizeof(h), &out), FLEET_OK);
    CHECK_EQ_STR(out.version, "2.3.0");
    CHECK_EQ_STR(out.crash_on_hw, "rev-b");
    CHECK_EQ_INT(out.payload_len, 4096);
    CHECK_EQ_INT(fleet_image_parse_header(h, 127, &out), FLEET_ERR_INVALID);
    h[0] = 'X';
    CHECK_EQ_INT(fleet_image_parse_header(h, sizeof(h), &out), FLEET_ERR_INVALID);
    CHECK_EQ_INT(fleet_image_build_header(h, "2.3.0", NULL, 0), FLEET_OK);
    h[8 + 6] = 'z'; /* junk after the NUL padding */
    CHECK_EQ_INT(fleet_image_parse_header(h, sizeof(h), &out), FLEET_ERR_INVALID);
    CHECK_EQ_INT(fleet_image_build_header(h, "", NULL, 0), FLEET_ERR_INVALID);
    CHECK_EQ_INT(fleet_image_build_header(h, "123456789012345678901234567890123", NULL, 0),
                 FLEET_ERR_INVALID);
}

int main(void)
{
    RUN(test_valid_object_parses);
    RUN(test_truncated_json_is_a_syntax_error);
    RUN(test_payload_is_not_read_past_its_length);
    RUN(test_non_objects_and_empty_are_rejected);
    RUN(test_non_utf8_and_nul_bytes_are_rejected);
    RUN(test_deep_nesting_is_rejected_before_parsing);
    RUN(test_huge_documents_are_rejected);
    RUN(test_error_strings_exist);
    RUN(test_device_drops_malformed_messages_on_every_topic);
    RUN(test_device_survives_wrong_shapes);
    RUN(test_image_header_round_trip_and_rejections);
    return HARNESS_RESULT();
}
