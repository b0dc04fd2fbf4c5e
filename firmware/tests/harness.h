/*
 * A minimal test harness: TEST(name) functions, CHECK macros that record the
 * failure and keep going, RUN_TESTS in main. Each test binary is one ctest test.
 */
#ifndef FLEET_TEST_HARNESS_H
#define FLEET_TEST_HARNESS_H

#include <stdio.h>
#include <string.h>

extern int harness_failures;
extern const char *harness_current;

#define TEST(name) static void name(void)

#define CHECK(cond)                                                                          \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "  FAIL %s:%d in %s: %s\n", __FILE__, __LINE__, harness_current, \
                    #cond);                                                                  \
            harness_failures++;                                                              \
        }                                                                                    \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                   \
    do {                                                                                     \
        long long va_ = (long long)(a);                                                      \
        long long vb_ = (long long)(b);                                                      \
        if (va_ != vb_) {                                                                    \
            fprintf(stderr, "  FAIL %s:%d in %s: %s == %s (%lld != %lld)\n", __FILE__,       \
                    __LINE__, harness_current, #a, #b, va_, vb_);                            \
            harness_failures++;                                                              \
        }                                                                                    \
    } while (0)

#define CHECK_EQ_STR(a, b)                                                                   \
    do {                                                                                     \
        const char *sa_ = (a);                                                               \
        const char *sb_ = (b);                                                               \
        if (sa_ == NULL || sb_ == NULL || strcmp(sa_, sb_) != 0) {                           \
            fprintf(stderr, "  FAIL %s:%d in %s: %s == %s (\"%s\" != \"%s\")\n", __FILE__,   \
                    __LINE__, harness_current, #a, #b, sa_ ? sa_ : "(null)",                 \
                    sb_ ? sb_ : "(null)");                                                   \
            harness_failures++;                                                              \
        }                                                                                    \
    } while (0)

#define RUN(name)                                                                            \
    do {                                                                                     \
        int before_ = harness_failures;                                                      \
        harness_current = #name;                                                             \
        name();                                                                              \
        fprintf(stderr, "%s %s\n", harness_failures == before_ ? "ok  " : "FAIL", #name);    \
    } while (0)

#define HARNESS_DEFINE                                                                       \
    int harness_failures;                                                                    \
    const char *harness_current

#define HARNESS_RESULT() (harness_failures == 0 ? 0 : 1)

#endif /* FLEET_TEST_HARNESS_H */
