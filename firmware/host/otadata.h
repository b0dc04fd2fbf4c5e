/*
 * otadata.json: which slot boots, whether it is still unconfirmed, how often
 * it was tried, and why the last rollback happened. The host stand-in for the
 * ESP32's otadata partition; written by the supervisor between boots and by
 * the app when it activates or confirms a slot.
 */
#ifndef HOST_OTADATA_H
#define HOST_OTADATA_H

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    char active;        /* 'a' or 'b' */
    char previous;      /* slot to roll back to, or 0 */
    bool pending;       /* active slot not confirmed yet */
    int boot_attempts;  /* boots of the pending slot so far */
    char rollback_reason[128]; /* set by a rollback, cleared by the next app boot */
} otadata_t;

/* 0 on success; -1 if missing or invalid (out is then the factory default). */
int otadata_load(const char *state_dir, otadata_t *out);
int otadata_save(const char *state_dir, const otadata_t *data);

/* "slot_a.img" path for slot 'a'; -1 if it does not fit. */
int otadata_slot_path(char *out, size_t len, const char *state_dir, char slot);
char otadata_other_slot(char slot);

#endif /* HOST_OTADATA_H */
