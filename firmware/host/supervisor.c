#include "supervisor.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "host_log.h"
#include "otadata.h"
#include "slot_file.h"
#include "state_file.h"

static const char *TAG = "boot";

#define CRASH_LOOP_BOOTS 3
#define POLL_MS 50
#define POWER_OFF_GRACE_MS 5000

static volatile sig_atomic_t s_power_off;

static void on_power_off(int sig)
{
    (void)sig;
    s_power_off = 1;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    (void)nanosleep(&ts, NULL); /* a signal may cut it short; callers re-check */
}

static int file_exists(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0;
}

/* First boot: write the factory image into slot A and a fresh otadata. */
static int ensure_flash(const host_options_t *o, otadata_t *ota)
{
    char path[PATH_MAX];

    if (state_file_mkdirs(o->state_dir) != 0) {
        HOST_LOGE(TAG, "cannot create state dir %s", o->state_dir);
        return -1;
    }
    if (otadata_load(o->state_dir, ota) == 0) {
        return 0;
    }
    if (otadata_slot_path(path, sizeof(path), o->state_dir, 'a') != 0) {
        return -1;
    }
    if (!file_exists(path)) {
        HOST_LOGI(TAG, "empty flash: writing factory image %s to slot a", o->firmware_version);
        if (slot_file_write_factory(path, o->firmware_version) != 0) {
            HOST_LOGE(TAG, "cannot write %s", path);
            return -1;
        }
    } else {
        HOST_LOGW(TAG, "otadata missing or corrupt; booting slot a");
    }
    memset(ota, 0, sizeof(*ota));
    ota->active = 'a';
    return otadata_save(o->state_dir, ota);
}

static void rollback(const host_options_t *o, otadata_t *ota, const char *reason)
{
    if (ota->previous == 0) {
        HOST_LOGE(TAG, "slot %c failed (%s) and there is no slot to roll back to", ota->active,
                  reason);
        ota->pending = false;
        ota->boot_attempts = 0;
    } else {
        HOST_LOGW(TAG, "rolling back from slot %c to slot %c: %s", ota->active, ota->previous,
                  reason);
        ota->active = ota->previous;
        ota->previous = 0;
        ota->pending = false;
        ota->boot_attempts = 0;
        snprintf(ota->rollback_reason, sizeof(ota->rollback_reason), "%s", reason);
    }
    if (otadata_save(o->state_dir, ota) != 0) {
        HOST_LOGE(TAG, "cannot write otadata");
    }
}

static pid_t boot_app(int argc, char **argv, fleet_reset_reason_t reset_reason)
{
    pid_t parent = getpid();
    pid_t pid;
    char **args;
    int i;

    args = calloc((size_t)argc + 4, sizeof(*args));
    if (args == NULL) {
        return -1;
    }
    for (i = 0; i < argc; i++) {
        args[i] = argv[i];
    }
    args[argc] = "--app";
    args[argc + 1] = "--reset-reason";
    args[argc + 2] = (char *)fleet_reset_reason_str(reset_reason);
    args[argc + 3] = NULL;

    fflush(NULL);
    pid = fork();
    if (pid == 0) {
        /* The app dies with its "bootloader" (kill -9 of fleet-device powers it off). */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) {
            _exit(1);
        }
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        execv("/proc/self/exe", args);
        fprintf(stderr, "E (0) boot: exec failed: %s\n", strerror(errno));
        _exit(127);
    }
    free(args);
    return pid;
}

static unsigned long long now_ms(void)
{
    return host_log_uptime_ms();
}

static void power_off(pid_t pid)
{
    unsigned long long deadline = now_ms() + POWER_OFF_GRACE_MS;
    int status;

    HOST_LOGI(TAG, "power off");
    kill(pid, SIGTERM);
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (now_ms() >= deadline) {
            kill(pid, SIGKILL);
            (void)waitpid(pid, &status, 0);
            break;
        }
        sleep_ms(POLL_MS);
    }
}

int supervisor_run(const host_options_t *o, int argc, char **argv)
{
    fleet_reset_reason_t reset_reason = FLEET_RESET_POWERON;
    struct sigaction sa;
    int crash_streak = 0;
    otadata_t ota;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_power_off;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    if (ensure_flash(o, &ota) != 0) {
        return 1;
    }
    while (!s_power_off) {
        char path[PATH_MAX];
        fleet_image_header_t header;
        unsigned long long deadline = 0;
        char booted;
        pid_t pid;
        int status = 0;
        bool timed_out = false;

        if (otadata_load(o->state_dir, &ota) != 0 && ensure_flash(o, &ota) != 0) {
            return 1;
        }
        booted = ota.active;
        if (otadata_slot_path(path, sizeof(path), o->state_dir, booted) != 0 ||
            slot_file_read_header(path, &header) != 0) {
            if (ota.pending) {
                rollback(o, &ota, "invalid image in slot");
                reset_reason = FLEET_RESET_OTA_ROLLBACK;
                continue;
            }
            HOST_LOGE(TAG, "no valid image in slot %c (%s)", booted, path);
            return 1;
        }
        if (ota.pending) {
            ota.boot_attempts++;
            if (otadata_save(o->state_dir, &ota) != 0) {
                HOST_LOGE(TAG, "cannot write otadata");
            }
            deadline = now_ms() + (unsigned long long)o->confirm_timeout_s * 1000ULL;
        }
        HOST_LOGI(TAG, "booting slot %c: firmware %s (%s%s)", booted, header.version,
                  fleet_reset_reason_str(reset_reason),
                  ota.pending ? ", pending verification" : "");
        pid = boot_app(argc, argv, reset_reason);
        if (pid < 0) {
            HOST_LOGE(TAG, "cannot start the app: %s", strerror(errno));
            return 1;
        }
        for (;;) {
            pid_t r = waitpid(pid, &status, WNOHANG);
            if (r == pid || (r < 0 && errno != EINTR)) {
                break;
            }
            if (s_power_off) {
                power_off(pid);
                return 0;
            }
            if (deadline != 0 && now_ms() >= deadline) {
                otadata_t now;
                deadline = 0;
                if (otadata_load(o->state_dir, &now) == 0 && now.pending && now.active == booted) {
                    HOST_LOGW(TAG, "firmware %s not confirmed within %d s", header.version,
                              o->confirm_timeout_s);
                    kill(pid, SIGKILL);
                    (void)waitpid(pid, &status, 0);
                    timed_out = true;
                    break;
                }
            }
            sleep_ms(POLL_MS);
        }
        if (timed_out) {
            char reason[64];
            otadata_t now;
            snprintf(reason, sizeof(reason), "not confirmed within %d s", o->confirm_timeout_s);
            (void)otadata_load(o->state_dir, &now);
            rollback(o, &now, reason);
            reset_reason = FLEET_RESET_OTA_ROLLBACK;
            continue;
        }
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
            HOST_LOGI(TAG, "app halted");
            return 0;
        }
        if (WIFEXITED(status) && WEXITSTATUS(status) == APP_EXIT_REBOOT) {
            reset_reason = FLEET_RESET_SW_REBOOT;
            crash_streak = 0;
            continue;
        }
        if (WIFSIGNALED(status)) {
            HOST_LOGE(TAG, "app crashed: signal %d", WTERMSIG(status));
        } else {
            HOST_LOGE(TAG, "app crashed: exit %d", WEXITSTATUS(status));
        }
        reset_reason = FLEET_RESET_PANIC;
        crash_streak++;
        if (otadata_load(o->state_dir, &ota) == 0 && ota.pending && ota.active == booted &&
            ota.boot_attempts >= CRASH_LOOP_BOOTS) {
            rollback(o, &ota, "crash loop on boot");
            reset_reason = FLEET_RESET_OTA_ROLLBACK;
            crash_streak = 0;
        }
        /* Reboot at once like a panic would, but do not spin on a broken image. */
        sleep_ms(crash_streak <= 3 ? 200 : (crash_streak > 8 ? 5000 : 200L << (crash_streak - 3)));
    }
    return 0;
}
