#include "otadata.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "state_file.h"

#define OTADATA_FILE "otadata.json"

static char slot_from(const cJSON *item)
{
    if (cJSON_IsString(item) && (strcmp(item->valuestring, "a") == 0 ||
                                 strcmp(item->valuestring, "b") == 0)) {
        return item->valuestring[0];
    }
    return 0;
}

int otadata_load(const char *state_dir, otadata_t *out)
{
    char path[PATH_MAX];
    cJSON *doc;
    const cJSON *attempts;
    const cJSON *reason;

    memset(out, 0, sizeof(*out));
    out->active = 'a';
    if (state_file_path(path, sizeof(path), state_dir, OTADATA_FILE) != 0 ||
        (doc = state_file_read_json(path)) == NULL) {
        return -1;
    }
    out->active = slot_from(cJSON_GetObjectItemCaseSensitive(doc, "active"));
    if (out->active == 0) {
        out->active = 'a';
        cJSON_Delete(doc);
        return -1;
    }
    out->previous = slot_from(cJSON_GetObjectItemCaseSensitive(doc, "previous"));
    out->pending = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(doc, "pending"));
    attempts = cJSON_GetObjectItemCaseSensitive(doc, "boot_attempts");
    out->boot_attempts = cJSON_IsNumber(attempts) && attempts->valueint > 0 ? attempts->valueint : 0;
    reason = cJSON_GetObjectItemCaseSensitive(doc, "rollback_reason");
    if (cJSON_IsString(reason)) {
        snprintf(out->rollback_reason, sizeof(out->rollback_reason), "%s", reason->valuestring);
    }
    cJSON_Delete(doc);
    return 0;
}

int otadata_save(const char *state_dir, const otadata_t *data)
{
    char path[PATH_MAX];
    char slot[2] = {0, 0};
    cJSON *doc = cJSON_CreateObject();
    int rc;

    if (doc == NULL || state_file_path(path, sizeof(path), state_dir, OTADATA_FILE) != 0) {
        cJSON_Delete(doc);
        return -1;
    }
    slot[0] = data->active;
    cJSON_AddStringToObject(doc, "active", slot);
    if (data->previous != 0) {
        slot[0] = data->previous;
        cJSON_AddStringToObject(doc, "previous", slot);
    } else {
        cJSON_AddNullToObject(doc, "previous");
    }
    cJSON_AddBoolToObject(doc, "pending", data->pending);
    cJSON_AddNumberToObject(doc, "boot_attempts", data->boot_attempts);
    if (data->rollback_reason[0] != '\0') {
        cJSON_AddStringToObject(doc, "rollback_reason", data->rollback_reason);
    } else {
        cJSON_AddNullToObject(doc, "rollback_reason");
    }
    rc = state_file_write_json(path, doc);
    cJSON_Delete(doc);
    return rc;
}

int otadata_slot_path(char *out, size_t len, const char *state_dir, char slot)
{
    char name[16];

    snprintf(name, sizeof(name), "slot_%c.img", slot);
    return state_file_path(out, len, state_dir, name);
}

char otadata_other_slot(char slot)
{
    return slot == 'a' ? 'b' : 'a';
}
