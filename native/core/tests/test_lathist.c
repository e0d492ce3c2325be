#include "../fs_lathist.h"
#include "runner.h"

static fs_lathist h;

static void test_lathist_bounds(void)
{
    /* Strictly increasing, 1-2-5 per decade from 100 ns to 1000 s. */
    CHECK_EQ_INT(fs_lat_bounds_ns[0], 100);
    CHECK_EQ_INT(fs_lat_bounds_ns[FS_LAT_BOUNDS - 1], 1000000000000LL);
    for (int i = 1; i < FS_LAT_BOUNDS; i++) {
        CHECK(fs_lat_bounds_ns[i] > fs_lat_bounds_ns[i - 1]);
        int64_t r = fs_lat_bounds_ns[i] * 10 / fs_lat_bounds_ns[i - 1];
        CHECK(r == 20 || r == 25);  /* x2 or x2.5 */
    }
}

static void test_lathist_bucket(void)
{
    CHECK_EQ_INT(fs_lathist_bucket(INT64_MIN), 0);
    CHECK_EQ_INT(fs_lathist_bucket(-1), 0);
    CHECK_EQ_INT(fs_lathist_bucket(0), 0);
    CHECK_EQ_INT(fs_lathist_bucket(100), 0);        /* bounds are inclusive */
    CHECK_EQ_INT(fs_lathist_bucket(101), 1);
    CHECK_EQ_INT(fs_lathist_bucket(1000000), 12);   /* 1 ms */
    CHECK_EQ_INT(fs_lathist_bucket(1000001), 13);
    CHECK_EQ_INT(fs_lathist_bucket(1000000000000LL), FS_LAT_BOUNDS - 1);
    CHECK_EQ_INT(fs_lathist_bucket(1000000000001LL), FS_LAT_BOUNDS);
    CHECK_EQ_INT(fs_lathist_bucket(INT64_MAX), FS_LAT_BOUNDS);
    /* Against a linear scan, around every bound. */
    for (int i = 0; i < FS_LAT_BOUNDS; i++) {
        for (int64_t d = -1; d <= 1; d++) {
            int64_t v = fs_lat_bounds_ns[i] + d;
            int want = 0;
            while (want < FS_LAT_BOUNDS && fs_lat_bounds_ns[want] < v) {
                want++;
            }
            CHECK_EQ_INT(fs_lathist_bucket(v), want);
        }
    }
    /* And around every power of two (the lookup goes by a duration's log2). */
    for (int k = 1; k < 63; k++) {
        for (int64_t d = -1; d <= 1; d++) {
            int64_t v = ((int64_t)1 << k) + d;
            int want = 0;
            while (want < FS_LAT_BOUNDS && fs_lat_bounds_ns[want] < v) {
                want++;
            }
            CHECK_EQ_INT(fs_lathist_bucket(v), want);
        }
    }
}

static void test_lathist_record(void)
{
    fs_lathist_init(&h);
    CHECK(h.by_outcome[FS_LAT_SUCCESS].total == 0);
    CHECK(h.by_outcome[FS_LAT_SUCCESS].min_ns == INT64_MAX);
    CHECK(h.by_outcome[FS_LAT_SUCCESS].max_ns == -1);
    fs_lathist_record(&h, FS_LAT_SUCCESS, 1000, 1000 + 3000000);        /* 3 ms */
    fs_lathist_record(&h, FS_LAT_SUCCESS, 5000, 5000 + 40);             /* 40 ns */
    fs_lathist_record(&h, FS_LAT_FAILURE, 0, 2000000000);               /* 2 s */
    fs_lathist_record(&h, FS_LAT_CANCELLED, 10, 5);                     /* end before start */
    fs_lathist_record(&h, FS_LAT_OUTCOMES, 0, 1);                       /* ignored */
    fs_lathist_record(&h, -1, 0, 1);                                    /* ignored */
    const fs_lathist_series *ok = &h.by_outcome[FS_LAT_SUCCESS];
    CHECK(ok->total == 2);
    CHECK(ok->counts[0] == 1);
    CHECK(ok->counts[fs_lathist_bucket(3000000)] == 1);
    CHECK(ok->sum_ns == 3000040);
    CHECK_EQ_INT(ok->min_ns, 40);
    CHECK_EQ_INT(ok->max_ns, 3000000);
    CHECK(h.by_outcome[FS_LAT_FAILURE].total == 1);
    CHECK(h.by_outcome[FS_LAT_FAILURE].counts[22] == 1);                /* (1 s, 2 s] */
    CHECK(h.by_outcome[FS_LAT_REJECTED].total == 0);
    CHECK(h.by_outcome[FS_LAT_CANCELLED].total == 1);
    CHECK(h.by_outcome[FS_LAT_CANCELLED].counts[0] == 1);
    CHECK_EQ_INT(h.by_outcome[FS_LAT_CANCELLED].max_ns, 0);
    uint64_t n = 0;
    for (int b = 0; b < FS_LAT_BUCKETS; b++) {
        n += ok->counts[b];
    }
    CHECK(n == ok->total);
}

static void test_lathist_merge(void)
{
    static fs_lathist a, b;
    fs_lathist_init(&a);
    fs_lathist_init(&b);
    fs_lathist_record(&a, FS_LAT_SUCCESS, 0, 500);
    fs_lathist_record(&b, FS_LAT_SUCCESS, 0, 7000);
    fs_lathist_record(&b, FS_LAT_REJECTED, 0, 50);
    fs_lathist_merge(&a, &b);
    CHECK(a.by_outcome[FS_LAT_SUCCESS].total == 2);
    CHECK(a.by_outcome[FS_LAT_SUCCESS].sum_ns == 7500);
    CHECK_EQ_INT(a.by_outcome[FS_LAT_SUCCESS].min_ns, 500);
    CHECK_EQ_INT(a.by_outcome[FS_LAT_SUCCESS].max_ns, 7000);
    CHECK(a.by_outcome[FS_LAT_REJECTED].total == 1);
    CHECK(a.by_outcome[FS_LAT_FAILURE].total == 0);
    CHECK(a.by_outcome[FS_LAT_FAILURE].min_ns == INT64_MAX);            /* empty stays empty */
}

const fs_test lathist_tests[] = {
    TEST_CASE(test_lathist_bounds),
    TEST_CASE(test_lathist_bucket),
    TEST_CASE(test_lathist_record),
    TEST_CASE(test_lathist_merge),
    TEST_END,
};
