#include "port_linux.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <mosquitto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "fleet/image.h"
#include "host_log.h"
#include "otadata.h"
#include "state_file.h"
#include "supervisor.h"

static const char *TAG = "port";

#define MAX_QUEUED_EVENTS 10000
#define HTTP_TIMEOUT_S 60L
#define REBOOT_FLUSH_MS 3000u
#define RECONNECT_MIN_S 1u
#define RECONNECT_MAX_S 16u

/* ---- event queue (filled by libmosquitto's thread) ---- */

static void push_event(host_port_t *p, port_event_type_t type, const char *topic,
                       const void *payload, size_t len)
{
    port_event_t *ev = calloc(1, sizeof(*ev));

    if (ev == NULL) {
        return;
    }
    ev->type = type;
    if (topic != NULL) {
        ev->topic = strdup(topic);
        ev->payload = malloc(len > 0 ? len : 1);
        if (ev->topic == NULL || ev->payload == NULL) {
            port_linux_free_event(ev);
            return;
        }
        if (len > 0) {
            memcpy(ev->payload, payload, len);
        }
        ev->len = len;
    }
    pthread_mutex_lock(&p->lock);
    if (type == PORT_EVENT_MESSAGE && p->queued >= MAX_QUEUED_EVENTS) {
        pthread_mutex_unlock(&p->lock);
        HOST_LOGW(TAG, "event queue full; dropping message on %s", topic);
        port_linux_free_event(ev);
        return;
    }
    if (p->tail != NULL) {
        p->tail->next = ev;
    } else {
        p->head = ev;
    }
    p->tail = ev;
    p->queued++;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

port_event_t *port_linux_next_event(host_port_t *p, uint32_t timeout_ms)
{
    struct timespec deadline;
    port_event_t *ev;

    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000u;
    deadline.tv_nsec += (long)(timeout_ms % 1000u) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&p->lock);
    while (p->head == NULL && timeout_ms > 0) {
        if (pthread_cond_timedwait(&p->cond, &p->lock, &deadline) == ETIMEDOUT) {
            break;
        }
    }
    ev = p->head;
    if (ev != NULL) {
        p->head = ev->next;
        if (p->head == NULL) {
            p->tail = NULL;
        }
        p->queued--;
    }
    pthread_mutex_unlock(&p->lock);
    return ev;
}

void port_linux_free_event(port_event_t *ev)
{
    if (ev != NULL) {
        free(ev->topic);
        free(ev->payload);
        free(ev);
    }
}

/* ---- libmosquitto callbacks (network thread) ---- */

static void on_connect(struct mosquitto *mosq, void *obj, int rc)
{
    host_port_t *p = obj;

    (void)mosq;
    if (rc != 0) {
        HOST_LOGW(TAG, "broker refused the connection: %s", mosquitto_connack_string(rc));
        return;
    }
    push_event(p, PORT_EVENT_CONNECTED, NULL, NULL, 0);
}

static void on_disconnect(struct mosquitto *mosq, void *obj, int rc)
{
    host_port_t *p = obj;

    (void)mosq;
    (void)rc;
    pthread_mutex_lock(&p->lock);
    p->unacked = 0; /* clean session: what was in flight is gone */
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    push_event(p, PORT_EVENT_DISCONNECTED, NULL, NULL, 0);
}

static void on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *m)
{
    (void)mosq;
    push_event(obj, PORT_EVENT_MESSAGE, m->topic, m->payload, (size_t)(m->payloadlen > 0 ? m->payloadlen : 0));
}

static void on_publish(struct mosquitto *mosq, void *obj, int mid)
{
    host_port_t *p = obj;

    (void)mosq;
    (void)mid;
    pthread_mutex_lock(&p->lock);
    if (p->unacked > 0) {
        p->unacked--;
    }
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

static void wait_unacked(host_port_t *p, uint32_t timeout_ms)
{
    unsigned long long deadline = host_log_uptime_ms() + timeout_ms;

    pthread_mutex_lock(&p->lock);
    while (p->unacked > 0 && host_log_uptime_ms() < deadline) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        (void)pthread_cond_timedwait(&p->cond, &p->lock, &ts);
    }
    pthread_mutex_unlock(&p->lock);
}

/* ---- fleet_port_t: MQTT ---- */

static int port_publish(void *ctx, const char *topic, const void *payload, size_t len, int qos,
                        bool retain)
{
    host_port_t *p = ctx;
    int rc;

    if (len > (size_t)INT32_MAX) {
        return FLEET_ERR_TOO_LARGE;
    }
    pthread_mutex_lock(&p->lock);
    p->unacked++; /* before publishing: the ack may arrive before mosquitto_publish returns */
    pthread_mutex_unlock(&p->lock);
    rc = mosquitto_publish(p->mosq, NULL, topic, (int)len, payload, qos, retain);
    if (rc != MOSQ_ERR_SUCCESS) {
        pthread_mutex_lock(&p->lock);
        if (p->unacked > 0) {
            p->unacked--;
        }
        pthread_mutex_unlock(&p->lock);
        return rc == MOSQ_ERR_NO_CONN ? FLEET_ERR_NO_CONN : FLEET_ERR;
    }
    return FLEET_OK;
}

static int port_subscribe(void *ctx, const char *topic_filter, int qos)
{
    host_port_t *p = ctx;

    return mosquitto_subscribe(p->mosq, NULL, topic_filter, qos) == MOSQ_ERR_SUCCESS ? FLEET_OK
                                                                                   : FLEET_ERR;
}

/* ---- fleet_port_t: HTTP ---- */

typedef struct {
    fleet_http_sink_fn sink;
    void *sink_ctx;
    int sink_rc;
} curl_sink_t;

static size_t curl_write(char *data, size_t size, size_t nmemb, void *userdata)
{
    curl_sink_t *s = userdata;
    size_t len = size * nmemb;

    s->sink_rc = s->sink(s->sink_ctx, data, len);
    return s->sink_rc == FLEET_OK ? len : 0;
}

static int port_http_get(void *ctx, const char *url, fleet_http_sink_fn sink, void *sink_ctx,
                         char *err, size_t err_len)
{
    curl_sink_t s = {sink, sink_ctx, FLEET_OK};
    CURL *curl = curl_easy_init();
    CURLcode rc;
    long status = 0;

    (void)ctx;
    if (curl == NULL) {
        snprintf(err, err_len, "curl init failed");
        return FLEET_ERR;
    }
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, HTTP_TIMEOUT_S);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "fleet-device");
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, curl_write);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &s);
    rc = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(curl);
    if (rc == CURLE_OK) {
        return FLEET_OK;
    }
    if (s.sink_rc != FLEET_OK) {
        return s.sink_rc;
    }
    if (rc == CURLE_HTTP_RETURNED_ERROR) {
        snprintf(err, err_len, "HTTP %ld", status);
    } else {
        snprintf(err, err_len, "%s", curl_easy_strerror(rc));
    }
    return FLEET_ERR;
}

/* ---- fleet_port_t: flash slots ---- */

static void slot_reset(host_port_t *p)
{
    if (p->slot_fd >= 0) {
        close(p->slot_fd);
        p->slot_fd = -1;
    }
    if (p->sha != NULL) {
        EVP_MD_CTX_free(p->sha);
        p->sha = NULL;
    }
    p->written = 0;
    p->staged = false;
}

static int port_slot_begin(void *ctx)
{
    host_port_t *p = ctx;
    char target = otadata_other_slot(p->active_slot);

    slot_reset(p);
    if (otadata_slot_path(p->slot_path, sizeof(p->slot_path), p->opts->state_dir, target) != 0 ||
        snprintf(p->slot_tmp_path, sizeof(p->slot_tmp_path), "%s.download", p->slot_path) >=
            (int)sizeof(p->slot_tmp_path)) {
        return FLEET_ERR;
    }
    p->slot_fd = open(p->slot_tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    p->sha = EVP_MD_CTX_new();
    if (p->slot_fd < 0 || p->sha == NULL || EVP_DigestInit_ex(p->sha, EVP_sha256(), NULL) != 1) {
        HOST_LOGE(TAG, "cannot open %s: %s", p->slot_tmp_path, strerror(errno));
        slot_reset(p);
        return FLEET_ERR;
    }
    memset(p->header, 0, sizeof(p->header));
    HOST_LOGD(TAG, "writing slot %c", target);
    return FLEET_OK;
}

static int port_slot_write(void *ctx, const void *data, size_t len)
{
    host_port_t *p = ctx;
    const uint8_t *bytes = data;
    size_t done = 0;

    if (p->slot_fd < 0) {
        return FLEET_ERR;
    }
    if (p->written < sizeof(p->header)) {
        size_t n = sizeof(p->header) - p->written;
        memcpy(p->header + p->written, bytes, n < len ? n : len);
    }
    if (EVP_DigestUpdate(p->sha, data, len) != 1) {
        return FLEET_ERR;
    }
    while (done < len) {
        ssize_t n = write(p->slot_fd, bytes + done, len - done);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return FLEET_ERR;
        }
        done += (size_t)n;
    }
    p->written += (uint32_t)len;
    return FLEET_OK;
}

static int port_slot_end(void *ctx, fleet_slot_image_t *image)
{
    host_port_t *p = ctx;
    fleet_image_header_t header;
    unsigned int digest_len = 0;

    memset(image, 0, sizeof(*image));
    if (p->slot_fd < 0 || fsync(p->slot_fd) != 0 ||
        EVP_DigestFinal_ex(p->sha, image->sha256, &digest_len) != 1 || digest_len != 32) {
        return FLEET_ERR;
    }
    close(p->slot_fd);
    p->slot_fd = -1;
    image->size = p->written;
    if (fleet_image_parse_header(p->header,
                                 p->written < sizeof(p->header) ? p->written : sizeof(p->header),
                                 &header) == FLEET_OK) {
        image->header_valid = true;
        snprintf(image->version, sizeof(image->version), "%s", header.version);
    }
    p->staged = true;
    return FLEET_OK;
}

static int port_slot_activate(void *ctx, bool activate)
{
    host_port_t *p = ctx;
    otadata_t ota;
    char target = otadata_other_slot(p->active_slot);
    bool staged = p->staged;

    slot_reset(p);
    if (!activate || !staged) {
        unlink(p->slot_tmp_path);
        return activate ? FLEET_ERR : FLEET_OK;
    }
    if (rename(p->slot_tmp_path, p->slot_path) != 0) {
        HOST_LOGE(TAG, "cannot install %s: %s", p->slot_path, strerror(errno));
        unlink(p->slot_tmp_path);
        return FLEET_ERR;
    }
    (void)otadata_load(p->opts->state_dir, &ota);
    ota.previous = p->active_slot;
    ota.active = target;
    ota.pending = true;
    ota.boot_attempts = 0;
    ota.rollback_reason[0] = '\0';
    if (otadata_save(p->opts->state_dir, &ota) != 0) {
        HOST_LOGE(TAG, "cannot write otadata");
        return FLEET_ERR;
    }
    HOST_LOGI(TAG, "slot %c activated for the next boot", target);
    return FLEET_OK;
}

static int port_slot_confirm(void *ctx)
{
    host_port_t *p = ctx;
    otadata_t ota;

    if (otadata_load(p->opts->state_dir, &ota) != 0) {
        return FLEET_ERR;
    }
    if (ota.active != p->active_slot) {
        return FLEET_OK; /* another slot was activated meanwhile; it confirms itself */
    }
    ota.pending = false;
    ota.boot_attempts = 0;
    return otadata_save(p->opts->state_dir, &ota) == 0 ? FLEET_OK : FLEET_ERR;
}

/* ---- fleet_port_t: system ---- */

static void port_reboot(void *ctx)
{
    host_port_t *p = ctx;

    wait_unacked(p, REBOOT_FLUSH_MS);
    pthread_mutex_lock(&p->lock);
    if (p->unacked > 0) {
        HOST_LOGW(TAG, "%d publishes still unacknowledged", p->unacked);
    }
    pthread_mutex_unlock(&p->lock);
    HOST_LOGI(TAG, "rebooting");
    /* No DISCONNECT: like a real reset, the broker sees the link drop (last will). */
    _exit(APP_EXIT_REBOOT);
}

static uint64_t port_uptime_ms(void *ctx)
{
    (void)ctx;
    return host_log_uptime_ms();
}

static double port_epoch_s(void *ctx)
{
    struct timespec ts;

    (void)ctx;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int port_nvs_get(void *ctx, const char *key, char *buf, size_t buf_len)
{
    host_port_t *p = ctx;
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(p->nvs, key);

    if (!cJSON_IsString(item)) {
        return FLEET_ERR_NOT_FOUND;
    }
    if (strlen(item->valuestring) >= buf_len) {
        return FLEET_ERR_TOO_LARGE;
    }
    memcpy(buf, item->valuestring, strlen(item->valuestring) + 1);
    return FLEET_OK;
}

static int port_nvs_set(void *ctx, const char *key, const char *value)
{
    host_port_t *p = ctx;
    const cJSON *old = cJSON_GetObjectItemCaseSensitive(p->nvs, key);

    if (value == NULL) {
        if (old == NULL) {
            return FLEET_OK;
        }
        cJSON_DeleteItemFromObjectCaseSensitive(p->nvs, key);
    } else {
        cJSON *item;
        if (cJSON_IsString(old) && strcmp(old->valuestring, value) == 0) {
            return FLEET_OK; /* unchanged: spare the "flash" */
        }
        item = cJSON_CreateString(value);
        if (item == NULL) {
            return FLEET_ERR;
        }
        if (old != NULL) {
            cJSON_ReplaceItemInObjectCaseSensitive(p->nvs, key, item);
        } else {
            cJSON_AddItemToObject(p->nvs, key, item);
        }
    }
    return state_file_write_json(p->nvs_path, p->nvs) == 0 ? FLEET_OK : FLEET_ERR;
}

static uint32_t port_random(void *ctx)
{
    host_port_t *p = ctx;
    uint32_t x = p->rng;

    /* xorshift32: plausible telemetry, not cryptography */
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    p->rng = x;
    return x;
}

static void port_set_led(void *ctx, bool on)
{
    (void)ctx;
    HOST_LOGI("led", "LED %s", on ? "on" : "off");
}

static void port_log(void *ctx, fleet_log_level_t level, const char *tag, const char *msg)
{
    (void)ctx;
    host_log_line(level, tag, msg);
}

int port_linux_init(host_port_t *p, fleet_port_t *port, const host_options_t *opts,
                    char active_slot)
{
    memset(p, 0, sizeof(*p));
    memset(port, 0, sizeof(*port));
    p->opts = opts;
    p->active_slot = active_slot;
    p->slot_fd = -1;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    if (getrandom(&p->rng, sizeof(p->rng), 0) != (ssize_t)sizeof(p->rng) || p->rng == 0) {
        p->rng = (uint32_t)time(NULL) | 1u;
    }
    if (state_file_path(p->nvs_path, sizeof(p->nvs_path), opts->state_dir, "nvs.json") != 0) {
        return -1;
    }
    p->nvs = state_file_read_json(p->nvs_path);
    if (p->nvs == NULL) {
        p->nvs = cJSON_CreateObject();
        if (p->nvs == NULL) {
            return -1;
        }
    }

    port->ctx = p;
    port->publish = port_publish;
    port->subscribe = port_subscribe;
    port->http_get = port_http_get;
    port->slot_begin = port_slot_begin;
    port->slot_write = port_slot_write;
    port->slot_end = port_slot_end;
    port->slot_activate = port_slot_activate;
    port->slot_confirm = port_slot_confirm;
    port->reboot = port_reboot;
    port->uptime_ms = port_uptime_ms;
    port->epoch_s = port_epoch_s;
    port->nvs_get = port_nvs_get;
    port->nvs_set = port_nvs_set;
    port->random = port_random;
    port->set_led = port_set_led;
    port->log = port_log;
    return 0;
}

/* Reads the first line of a password file; 0 on success. */
static int read_password(const char *path, char *out, size_t size)
{
    FILE *f = fopen(path, "r");
    size_t len;

    if (f == NULL) {
        HOST_LOGE(TAG, "cannot read --password-file %s: %s", path, strerror(errno));
        return -1;
    }
    if (fgets(out, (int)size, f) == NULL) {
        out[0] = '\0';
    }
    fclose(f);
    len = strcspn(out, "\r\n");
    out[len] = '\0';
    return 0;
}

/* TLS (server always verified against --cafile) and password auth from the options. */
static int configure_security(host_port_t *p)
{
    const host_options_t *o = p->opts;
    int rc;

    if (o->cafile != NULL) {
        rc = mosquitto_tls_set(p->mosq, o->cafile, NULL, o->certfile, o->keyfile, NULL);
        if (rc == MOSQ_ERR_SUCCESS) {
            rc = mosquitto_tls_opts_set(p->mosq, 1 /* SSL_VERIFY_PEER */, "tlsv1.2", NULL);
        }
        if (rc == MOSQ_ERR_SUCCESS && o->tls_insecure) {
            rc = mosquitto_tls_insecure_set(p->mosq, true);
        }
        if (rc != MOSQ_ERR_SUCCESS) {
            HOST_LOGE(TAG, "TLS setup failed: %s",
                      rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
            return -1;
        }
        HOST_LOGI(TAG, "TLS on (CA %s%s%s)", o->cafile, o->certfile != NULL ? ", client cert" : "",
                  o->tls_insecure ? ", host name not checked" : "");
    }
    if (o->password_file != NULL) {
        char password[256];

        if (read_password(o->password_file, password, sizeof(password)) != 0) {
            return -1;
        }
        rc = mosquitto_username_pw_set(p->mosq, o->thing, password);
        memset(password, 0, sizeof(password));
        if (rc != MOSQ_ERR_SUCCESS) {
            HOST_LOGE(TAG, "cannot set the MQTT credentials: %s", mosquitto_strerror(rc));
            return -1;
        }
    }
    return 0;
}

int port_linux_start_mqtt(host_port_t *p, const char *will_topic, const char *will_payload)
{
    mosquitto_lib_init();
    p->mosq = mosquitto_new(p->opts->thing, true, p);
    if (p->mosq == NULL) {
        HOST_LOGE(TAG, "mosquitto_new failed");
        return -1;
    }
    mosquitto_connect_callback_set(p->mosq, on_connect);
    mosquitto_disconnect_callback_set(p->mosq, on_disconnect);
    mosquitto_message_callback_set(p->mosq, on_message);
    mosquitto_publish_callback_set(p->mosq, on_publish);
    if (mosquitto_will_set(p->mosq, will_topic, (int)strlen(will_payload), will_payload, 1,
                           true) != MOSQ_ERR_SUCCESS) {
        HOST_LOGE(TAG, "cannot set the last will");
        return -1;
    }
    (void)mosquitto_int_option(p->mosq, MOSQ_OPT_TCP_NODELAY, 1);
    if (configure_security(p) != 0) {
        return -1;
    }
    (void)mosquitto_reconnect_delay_set(p->mosq, RECONNECT_MIN_S, RECONNECT_MAX_S, true);
    HOST_LOGI(TAG, "connecting to %s:%d as %s", p->opts->broker_host, p->opts->broker_port,
              p->opts->thing);
    p->connect_backoff_s = RECONNECT_MIN_S;
    port_linux_service(p);
    return 0;
}

void port_linux_service(host_port_t *p)
{
    int rc;

    if (p->mosq == NULL || p->loop_started || host_log_uptime_ms() < p->next_connect_ms) {
        return;
    }
    rc = mosquitto_connect_async(p->mosq, p->opts->broker_host, p->opts->broker_port,
                                 p->opts->keepalive_s);
    if (rc != MOSQ_ERR_SUCCESS) {
        /* The network thread would not retry a first connect that failed at once. */
        HOST_LOGW(TAG, "connect failed: %s; retrying in %u s",
                  rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc),
                  p->connect_backoff_s);
        p->next_connect_ms = host_log_uptime_ms() + p->connect_backoff_s * 1000ULL;
        p->connect_backoff_s = p->connect_backoff_s * 2 > RECONNECT_MAX_S ? RECONNECT_MAX_S
                                                                          : p->connect_backoff_s * 2;
        return;
    }
    rc = mosquitto_loop_start(p->mosq);
    if (rc != MOSQ_ERR_SUCCESS) {
        HOST_LOGE(TAG, "cannot start the MQTT thread: %s", mosquitto_strerror(rc));
        return;
    }
    p->loop_started = true;
}

void port_linux_stop(host_port_t *p, uint32_t flush_timeout_ms)
{
    if (p->mosq == NULL) {
        return;
    }
    if (p->loop_started) {
        wait_unacked(p, flush_timeout_ms);
        mosquitto_disconnect(p->mosq);
        mosquitto_loop_stop(p->mosq, false);
    }
    mosquitto_destroy(p->mosq);
    p->mosq = NULL;
    mosquitto_lib_cleanup();
}
