#include "state_file.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fleet/limits.h"

static int write_all(int fd, const void *data, size_t len)
{
    const unsigned char *p = data;

    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int state_file_write_atomic(const char *path, const void *data, size_t len)
{
    char tmp[PATH_MAX];
    int fd;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp)) {
        return -1;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return -1;
    }
    if (write_all(fd, data, len) != 0 || fsync(fd) != 0) {
        close(fd);
        unlink(tmp);
        return -1;
    }
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

cJSON *state_file_read_json(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    size_t n;
    cJSON *doc;

    if (f == NULL) {
        return NULL;
    }
    buf = malloc(FLEET_DOC_MAX_SIZE + 1);
    if (buf == NULL) {
        fclose(f);
        return NULL;
    }
    n = fread(buf, 1, FLEET_DOC_MAX_SIZE, f);
    fclose(f);
    buf[n] = '\0';
    doc = cJSON_ParseWithLength(buf, n);
    free(buf);
    if (doc != NULL && !cJSON_IsObject(doc)) {
        cJSON_Delete(doc);
        return NULL;
    }
    return doc;
}

int state_file_write_json(const char *path, const cJSON *doc)
{
    char *text = cJSON_Print(doc);
    char *buf;
    size_t len;
    int rc;

    if (text == NULL) {
        return -1;
    }
    /* End the file with a newline for humans reading the state dir. */
    len = strlen(text);
    buf = malloc(len + 1);
    if (buf == NULL) {
        cJSON_free(text);
        return -1;
    }
    memcpy(buf, text, len);
    buf[len] = '\n';
    cJSON_free(text);
    rc = state_file_write_atomic(path, buf, len + 1);
    free(buf);
    return rc;
}

int state_file_mkdirs(const char *dir)
{
    char buf[PATH_MAX];
    size_t i;
    size_t n = strlen(dir);

    if (n == 0 || n >= sizeof(buf)) {
        return -1;
    }
    memcpy(buf, dir, n + 1);
    for (i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == '\0') {
            char saved = buf[i];
            buf[i] = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
                return -1;
            }
            buf[i] = saved;
        }
    }
    return 0;
}

int state_file_path(char *out, size_t len, const char *dir, const char *name)
{
    int n = snprintf(out, len, "%s/%s", dir, name);

    return (n < 0 || (size_t)n >= len) ? -1 : 0;
}
