/* Minimal test runner: each test file exports a NULL-terminated array of fs_test; run_tests.c
 * runs them all. A test fails if any CHECK in it fails; checks keep going after a failure so
 * one run shows every broken expectation. */
#ifndef FS_TEST_RUNNER_H
#define FS_TEST_RUNNER_H

#include <math.h>
#include <stdio.h>

typedef struct fs_test {
    const char *name;
    void (*fn)(void);
} fs_test;

#define TEST_CASE(fn) { #fn, fn }
#define TEST_END { NULL, NULL }

/* Failed checks in the running test (defined in run_tests.c). */
extern int fs_test_failures;

void fs_test_fail(const char *file, int line, const char *fmt, ...);

#define CHECK(cond) \
    do { \
        if (!(cond)) \
            fs_test_fail(__FILE__, __LINE__, "CHECK(%s)", #cond); \
    } while (0)

/* NaN never passes: a NaN result is always a bug here. */
#define CHECK_NEAR(a, b, eps) \
    do { \
        double a_ = (a), b_ = (b), e_ = (eps); \
        if (!(fabs(a_ - b_) <= e_)) \
            fs_test_fail(__FILE__, __LINE__, "CHECK_NEAR(%s, %s, %s): %.17g vs %.17g", #a, #b, \
                         #eps, a_, b_); \
    } while (0)

#define CHECK_EQ_INT(a, b) \
    do { \
        long long a_ = (long long)(a), b_ = (long long)(b); \
        if (a_ != b_) \
            fs_test_fail(__FILE__, __LINE__, "CHECK_EQ_INT(%s, %s): %lld vs %lld", #a, #b, a_, \
                         b_); \
    } while (0)

extern const fs_test rng_tests[];
extern const fs_test backoff_tests[];
extern const fs_test budget_tests[];
extern const fs_test heap_tests[];
extern const fs_test gcra_tests[];
extern const fs_test failfast_tests[];
extern const fs_test hash_tests[];
extern const fs_test cache_tests[];
extern const fs_test bulkhead_tests[];
extern const fs_test quantile_tests[];
extern const fs_test swlog_tests[];
extern const fs_test keytab_tests[];
extern const fs_test ptrmap_tests[];
extern const fs_test breaker_tests[];
extern const fs_test edge_tests[];
extern const fs_test alimit_tests[];
extern const fs_test lathist_tests[];

#endif
