/*
 * The Linux port: fleet_port_t over libmosquitto (threaded network loop),
 * libcurl, files in the state dir and OpenSSL's SHA-256. MQTT callbacks run
 * on libmosquitto's thread and only queue events; the app thread drains the
 * queue and calls the core, so the core stays single-threaded as on the ESP32.
 */
#ifndef HOST_PORT_LINUX_H
#define HOST_PORT_LINUX_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cJSON.h"
#include "fleet/port.h"
#include "options.h"

struct mosquitto;

typedef enum { PORT_EVENT_CONNECTED, PORT_EVENT_DISCONNECTED, PORT_EVENT_MESSAGE } port_event_type_t;

typedef struct port_event {
    struct port_event *next;
    port_event_type_t type;
    char *topic;
    void *payload;
    size_t len;
} port_event_t;

typedef struct {
    const host_options_t *opts;
    char active_slot;

    struct mosquitto *mosq;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    port_event_t *head;
    port_event_t *tail;
    size_t queued;
    int unacked;  /* publishes handed to libmosquitto and not yet sent/acknowledged */

    cJSON *nvs;
    char nvs_path[PATH_MAX];

    int slot_fd;
    char slot_tmp_path[PATH_MAX];
    char slot_path[PATH_MAX];
    void *sha;  /* EVP_MD_CTX */
    uint8_t header[128];
    uint32_t written;
    bool staged;

    uint32_t rng;

    /* libmosquitto only reconnects once a first connect got under way. */
    bool loop_started;
    unsigned long long next_connect_ms;
    unsigned connect_backoff_s;
} host_port_t;

/* Fills port (the function table) and ctx. 0 on success. */
int port_linux_init(host_port_t *ctx, fleet_port_t *port, const host_options_t *opts,
                    char active_slot);

/* Connects asynchronously (the network thread keeps reconnecting with backoff). */
int port_linux_start_mqtt(host_port_t *ctx, const char *will_topic, const char *will_payload);

/* Retries a failed first connect with backoff; call from the app loop. */
void port_linux_service(host_port_t *ctx);

/* Waits up to timeout_ms for an event; returns it (caller frees) or NULL. */
port_event_t *port_linux_next_event(host_port_t *ctx, uint32_t timeout_ms);
void port_linux_free_event(port_event_t *ev);

/* Waits until every publish is out (or timeout), then disconnects cleanly. */
void port_linux_stop(host_port_t *ctx, uint32_t flush_timeout_ms);

#endif /* HOST_PORT_LINUX_H */
