#include <string.h>

#include "../fs_quantile.h"
#include "runner.h"

#define MS 1000000LL
#define SEC 1000000000LL

static fs_quantile q;   /* large: static rather than on the stack */

static void test_quantile_init(void)
{
    memset(&q, 0xAB, sizeof q);
    CHECK(fs_quantile_init(&q, 1) == -1);
    CHECK(fs_quantile_init(&q, 0) == -1);
    CHECK(fs_quantile_init(&q, -SEC) == -1);
    CHECK(q.slot_ns != SEC);    /* untouched */
    CHECK(fs_quantile_init(&q, 2 * SEC) == 0);
    CHECK(q.slot_ns == SEC);
    CHECK(fs_quantile_count(&q, 0) == 0);
    CHECK(fs_quantile_value(&q, 0, 0.5) == -1);
}

static void test_quantile_buckets(void)
{
    CHECK_EQ_INT(fs_quantile_bucket(-5), 0);
    CHECK_EQ_INT(fs_quantile_bucket(0), 0);
    CHECK_EQ_INT(fs_quantile_bucket(1151), 0);
    CHECK_EQ_INT(fs_quantile_bucket(1152), 1);
    CHECK_EQ_INT(fs_quantile_bucket(2047), 7);
    CHECK_EQ_INT(fs_quantile_bucket(2048), 8);
    CHECK_EQ_INT(fs_quantile_bucket(INT64_MAX), FS_Q_BUCKETS - 1);
    CHECK_EQ_INT(fs_quantile_bucket_upper(0), 1151);
    CHECK_EQ_INT(fs_quantile_bucket_upper(7), 2047);
    /* Every value lies in its bucket, whose bound is at most 12.5 % above it. */
    int last = 0;
    for (int64_t v = 1024; v < ((int64_t)1 << 38); v += v / 7 + 1) {
        int b = fs_quantile_bucket(v);
        CHECK(b >= last);
        last = b;
        int64_t up = fs_quantile_bucket_upper(b);
        CHECK(up >= v);
        CHECK((double)up <= (double)v * 1.125);
        CHECK(b == 0 || fs_quantile_bucket_upper(b - 1) < v);
    }
}

static void test_quantile_values(void)
{
    CHECK(fs_quantile_init(&q, 10 * SEC) == 0);
    for (int64_t i = 1; i <= 100; i++) {
        fs_quantile_record(&q, SEC, i * MS);
    }
    CHECK(fs_quantile_count(&q, SEC) == 100);
    int64_t p50 = fs_quantile_value(&q, SEC, 0.5);
    CHECK(p50 >= 50 * MS && p50 <= 50 * MS * 9 / 8);
    int64_t p95 = fs_quantile_value(&q, SEC, 0.95);
    CHECK(p95 >= 95 * MS && p95 <= 95 * MS * 9 / 8);
    CHECK(fs_quantile_value(&q, SEC, 1.0) >= 100 * MS);
    CHECK(fs_quantile_value(&q, SEC, 1e-9) >= 1 * MS);
    CHECK(fs_quantile_value(&q, SEC, 1e-9) <= 1 * MS * 9 / 8);
}

static void test_quantile_window(void)
{
    CHECK(fs_quantile_init(&q, 2 * SEC) == 0);    /* slots of 1 s */
    fs_quantile_record(&q, 0, 10 * MS);
    fs_quantile_record(&q, SEC / 2, 10 * MS);
    CHECK(fs_quantile_count(&q, SEC / 2) == 2);
    fs_quantile_record(&q, SEC, 500 * MS);          /* the next slot */
    CHECK(fs_quantile_count(&q, SEC) == 3);
    CHECK(fs_quantile_value(&q, SEC, 0.5) < 20 * MS);
    CHECK(fs_quantile_count(&q, 2 * SEC) == 1);     /* the first slot left the window */
    CHECK(fs_quantile_value(&q, 2 * SEC, 0.5) >= 500 * MS);
    fs_quantile_record(&q, SEC, 1 * MS);            /* a time gone back counts as the newest */
    CHECK(fs_quantile_count(&q, 2 * SEC) == 2);
    CHECK(fs_quantile_count(&q, 10 * SEC) == 0);    /* a long gap empties everything */
    CHECK(fs_quantile_value(&q, 10 * SEC, 0.5) == -1);
}

const fs_test quantile_tests[] = {
    TEST_CASE(test_quantile_init),
    TEST_CASE(test_quantile_buckets),
    TEST_CASE(test_quantile_values),
    TEST_CASE(test_quantile_window),
    TEST_END,
};
