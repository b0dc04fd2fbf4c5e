#include "fleet/version.h"

#include <string.h>

#include "fleet/limits.h"

/* Parses "N(.N)*" from *s; stops at '-', '+' or the end. Returns component count or -1. */
static int parse_numbers(const char **s, unsigned long nums[8])
{
    int count = 0;
    const char *p = *s;

    for (;;) {
        unsigned long v = 0;
        int digits = 0;

        while (*p >= '0' && *p <= '9') {
            if (v > 100000000ul) {
                return -1; /* absurd component: not a version */
            }
            v = v * 10u + (unsigned long)(*p - '0');
            p++;
            digits++;
        }
        if (digits == 0 || count == 8) {
            return -1;
        }
        nums[count++] = v;
        if (*p == '.') {
            p++;
            continue;
        }
        break;
    }
    if (*p != '\0' && *p != '-' && *p != '+') {
        return -1;
    }
    *s = p;
    return count;
}

/* Prerelease text after '-', without build metadata after '+'; length in *len. */
static const char *prerelease(const char *rest, size_t *len)
{
    const char *plus;

    if (*rest != '-') {
        *len = 0;
        return NULL;
    }
    rest++;
    plus = strchr(rest, '+');
    *len = plus != NULL ? (size_t)(plus - rest) : strlen(rest);
    return rest;
}

int fleet_version_compare(const char *a, const char *b)
{
    unsigned long na[8] = {0};
    unsigned long nb[8] = {0};
    const char *pa = a;
    const char *pb = b;
    int ca;
    int cb;
    int i;
    const char *ra;
    const char *rb;
    size_t la;
    size_t lb;
    int c;

    if (a == NULL || b == NULL) {
        return (a != NULL) - (b != NULL); /* NULL sorts first */
    }
    if (*pa == 'v' || *pa == 'V') {
        pa++;
    }
    if (*pb == 'v' || *pb == 'V') {
        pb++;
    }
    ca = parse_numbers(&pa, na);
    cb = parse_numbers(&pb, nb);
    if (ca < 0 || cb < 0) {
        /* Valid versions sort before garbage; garbage compares as text. */
        if (ca >= 0) {
            return -1;
        }
        if (cb >= 0) {
            return 1;
        }
        c = strcmp(a, b);
        return (c > 0) - (c < 0);
    }
    for (i = 0; i < 8; i++) {
        if (na[i] != nb[i]) {
            return na[i] < nb[i] ? -1 : 1;
        }
    }
    ra = prerelease(pa, &la);
    rb = prerelease(pb, &lb);
    if (ra == NULL || rb == NULL) {
        /* A release sorts after any of its prereleases. */
        return (ra == NULL) == (rb == NULL) ? 0 : (ra == NULL ? 1 : -1);
    }
    c = strncmp(ra, rb, la < lb ? la : lb);
    if (c != 0) {
        return (c > 0) - (c < 0);
    }
    return (la > lb) - (la < lb);
}

bool fleet_version_is_valid(const char *v)
{
    size_t i;

    if (v == NULL || v[0] == '\0') {
        return false;
    }
    for (i = 0; v[i] != '\0'; i++) {
        unsigned char c = (unsigned char)v[i];
        if (i >= FLEET_VERSION_MAX || c <= ' ' || c >= 0x7f || c == '"' || c == '\\') {
            return false;
        }
    }
    return true;
}
