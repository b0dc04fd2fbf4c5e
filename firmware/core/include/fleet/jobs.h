/*
 * AWS IoT Jobs client: one execution at a time, pulled with start-next.
 *
 *   idle --connect / notify-next--> wait_start_next --accepted with execution--> run
 *   run --update published--> wait_update --update accepted/rejected--> start-next again
 *
 * A reboot job persists its id, reboots, and reports SUCCEEDED after the boot.
 */
#ifndef FLEET_JOBS_H
#define FLEET_JOBS_H

#include <stdbool.h>

#include "fleet/limits.h"

typedef enum {
    FLEET_JOBS_IDLE = 0,
    FLEET_JOBS_WAIT_START_NEXT,
    FLEET_JOBS_WAIT_UPDATE,
} fleet_jobs_state_t;

typedef struct {
    fleet_jobs_state_t state;
    char current_job[FLEET_JOB_ID_MAX + 1];   /* execution being reported */
    char rejected_job[FLEET_JOB_ID_MAX + 1];  /* its update was rejected: do not rerun */
    char reboot_job[FLEET_JOB_ID_MAX + 1];    /* reboot job to report after the boot */
    bool pull_again;                          /* notify-next arrived while busy */
} fleet_jobs_t;

const char *fleet_jobs_state_str(fleet_jobs_state_t state);

#endif /* FLEET_JOBS_H */
