/*
 * The gate every incoming JSON document passes before cJSON sees it: bounded
 * size, bounded nesting (cJSON recurses per level and the device task's stack
 * is small), valid UTF-8 without NUL bytes, and a JSON object at the top.
 */
#ifndef FLEET_DOCUMENT_H
#define FLEET_DOCUMENT_H

#include <stddef.h>

#include "cJSON.h"

typedef enum {
    FLEET_DOC_OK = 0,
    FLEET_DOC_EMPTY,
    FLEET_DOC_TOO_LARGE,
    FLEET_DOC_TOO_DEEP,
    FLEET_DOC_BAD_UTF8,
    FLEET_DOC_SYNTAX,
    FLEET_DOC_NOT_OBJECT,
} fleet_doc_error_t;

/* Parses payload (not NUL terminated). Returns NULL and sets *error on rejection. */
cJSON *fleet_document_parse(const void *payload, size_t len, fleet_doc_error_t *error);

const char *fleet_document_error_str(fleet_doc_error_t error);

/* Helpers for reading fields with the right type; NULL/false when absent or mistyped. */
const char *fleet_document_string(const cJSON *object, const char *key);
const cJSON *fleet_document_object(const cJSON *object, const char *key);

#endif /* FLEET_DOCUMENT_H */
