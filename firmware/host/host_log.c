#include "host_log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

static fleet_log_level_t s_max_level = FLEET_LOG_INFO;
static struct timespec s_start;
static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;

void host_log_init(fleet_log_level_t max_level)
{
    s_max_level = max_level;
    clock_gettime(CLOCK_MONOTONIC, &s_start);
}

unsigned long long host_log_uptime_ms(void)
{
    struct timespec now;
    long long ms;

    clock_gettime(CLOCK_MONOTONIC, &now);
    ms = (long long)(now.tv_sec - s_start.tv_sec) * 1000LL +
         (now.tv_nsec - s_start.tv_nsec) / 1000000LL;
    return ms < 0 ? 0ULL : (unsigned long long)ms;
}

void host_log_line(fleet_log_level_t level, const char *tag, const char *msg)
{
    static const char letters[] = {'E', 'W', 'I', 'D'};

    if (level > s_max_level || (int)level < 0 || level > FLEET_LOG_DEBUG) {
        return;
    }
    /* One write per line so lines from two threads never interleave. */
    pthread_mutex_lock(&s_lock);
    fprintf(stderr, "%c (%llu) %s: %s\n", letters[level], host_log_uptime_ms(), tag, msg);
    fflush(stderr);
    pthread_mutex_unlock(&s_lock);
}

void host_log(fleet_log_level_t level, const char *tag, const char *fmt, ...)
{
    char line[512];
    va_list ap;

    if (level > s_max_level) {
        return;
    }
    va_start(ap, fmt);
    (void)vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    host_log_line(level, tag, line);
}
