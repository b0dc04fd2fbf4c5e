#include "fleet/document.h"

#include <stdbool.h>
#include <stdint.h>

#include "fleet/limits.h"

/* Strict UTF-8 (no overlongs, no surrogates, max U+10FFFF) and no NUL bytes. */
static bool utf8_is_valid(const uint8_t *s, size_t len)
{
    size_t i = 0;

    while (i < len) {
        uint8_t c = s[i];
        size_t n;
        uint32_t cp;
        size_t k;

        if (c == 0) {
            return false;
        }
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1fu;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0fu;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07u;
        } else {
            return false;
        }
        if (len - i <= n) {
            return false;
        }
        for (k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0u) != 0x80u) {
                return false;
            }
            cp = (cp << 6) | (s[i + k] & 0x3fu);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff)) {
            return false;
        }
        i += n + 1;
    }
    return true;
}

/* Deepest nesting of objects/arrays outside strings. Stops counting past the limit. */
static bool depth_is_bounded(const uint8_t *s, size_t len, int max_depth)
{
    int depth = 0;
    bool in_string = false;
    size_t i;

    for (i = 0; i < len; i++) {
        uint8_t c = s[i];
        if (in_string) {
            if (c == '\\') {
                i++; /* skip the escaped character */
            } else if (c == '"') {
                in_string = false;
            }
            continue;
        }
        if (c == '"') {
            in_string = true;
        } else if (c == '{' || c == '[') {
            if (++depth > max_depth) {
                return false;
            }
        } else if ((c == '}' || c == ']') && depth > 0) {
            depth--;
        }
    }
    return true;
}

cJSON *fleet_document_parse(const void *payload, size_t len, fleet_doc_error_t *error)
{
    fleet_doc_error_t dummy;
    cJSON *doc;

    if (error == NULL) {
        error = &dummy;
    }
    if (payload == NULL || len == 0) {
        *error = FLEET_DOC_EMPTY;
        return NULL;
    }
    if (len > FLEET_DOC_MAX_SIZE) {
        *error = FLEET_DOC_TOO_LARGE;
        return NULL;
    }
    if (!utf8_is_valid(payload, len)) {
        *error = FLEET_DOC_BAD_UTF8;
        return NULL;
    }
    if (!depth_is_bounded(payload, len, FLEET_DOC_MAX_DEPTH)) {
        *error = FLEET_DOC_TOO_DEEP;
        return NULL;
    }
    /* The buffer is not NUL terminated; cJSON stops at len. */
    doc = cJSON_ParseWithLengthOpts((const char *)payload, len, NULL, false);
    if (doc == NULL) {
        *error = FLEET_DOC_SYNTAX;
        return NULL;
    }
    if (!cJSON_IsObject(doc)) {
        cJSON_Delete(doc);
        *error = FLEET_DOC_NOT_OBJECT;
        return NULL;
    }
    *error = FLEET_DOC_OK;
    return doc;
}

const char *fleet_document_error_str(fleet_doc_error_t error)
{
    switch (error) {
    case FLEET_DOC_OK: return "ok";
    case FLEET_DOC_EMPTY: return "empty document";
    case FLEET_DOC_TOO_LARGE: return "document too large";
    case FLEET_DOC_TOO_DEEP: return "document nested too deeply";
    case FLEET_DOC_BAD_UTF8: return "document is not valid UTF-8";
    case FLEET_DOC_SYNTAX: return "malformed JSON";
    case FLEET_DOC_NOT_OBJECT: return "document is not a JSON object";
    default: return "unknown document error";
    }
}

const char *fleet_document_string(const cJSON *object, const char *key)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(object, key);

    return cJSON_IsString(item) ? item->valuestring : NULL;
}

const cJSON *fleet_document_object(const cJSON *object, const char *key)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(object, key);

    return cJSON_IsObject(item) ? item : NULL;
}
