#include <stdint.h>

#include "../fs_failfast.h"
#include "runner.h"

#define MS 1000000LL

static void failfast_rejects_bad_args(void)
{
    fs_failfast f;
    CHECK(fs_failfast_init(&f, 3, 0) == -1);
    CHECK(fs_failfast_init(&f, 3, -1) == 0);
    CHECK(fs_failfast_init(&f, 0, 5 * MS) == 0);
}

static void failfast_opens_after_consecutive_failures(void)
{
    fs_failfast f;
    fs_failfast_init(&f, 3, -1);
    CHECK(!fs_failfast_failure(&f, 1));
    CHECK(!fs_failfast_failure(&f, 2));
    fs_failfast_success(&f);                    /* the run starts again */
    CHECK_EQ_INT(f.failures, 0);
    CHECK(!fs_failfast_failure(&f, 3));
    CHECK(!fs_failfast_failure(&f, 4));
    CHECK_EQ_INT(fs_failfast_admit(&f, 5, NULL), FS_FF_ADMIT);
    CHECK(fs_failfast_failure(&f, 6));          /* the third in a row opens it */
    CHECK(fs_failfast_is_open(&f, 7));
    int64_t after = 0;
    CHECK_EQ_INT(fs_failfast_admit(&f, 7, &after), FS_FF_REJECT);
    CHECK_EQ_INT(after, -1);                    /* no recovery: only a reset closes it */
    CHECK(!fs_failfast_failure(&f, 8));         /* already open: no second opening */
    CHECK_EQ_INT(fs_failfast_admit(&f, INT64_MAX, NULL), FS_FF_REJECT);
    CHECK(fs_failfast_reset(&f));
    CHECK(!fs_failfast_reset(&f));
    CHECK_EQ_INT(f.failures, 0);
    CHECK_EQ_INT(fs_failfast_admit(&f, 9, NULL), FS_FF_ADMIT);
}

static void failfast_recovers_lazily(void)
{
    fs_failfast f;
    fs_failfast_init(&f, 1, 100 * MS);
    CHECK(fs_failfast_failure(&f, 1000 * MS));
    int64_t after = 0;
    CHECK_EQ_INT(fs_failfast_admit(&f, 1000 * MS, &after), FS_FF_REJECT);
    CHECK_EQ_INT(after, 100 * MS);
    CHECK_EQ_INT(fs_failfast_admit(&f, 1100 * MS - 1, &after), FS_FF_REJECT);
    CHECK_EQ_INT(after, 1);
    CHECK(!fs_failfast_is_open(&f, 1100 * MS));
    CHECK(f.open);                              /* nothing noticed yet */
    CHECK_EQ_INT(fs_failfast_admit(&f, 1100 * MS, NULL), FS_FF_ADMIT_CLOSED);
    CHECK(!f.open);
    CHECK_EQ_INT(f.failures, 0);
    CHECK_EQ_INT(fs_failfast_admit(&f, 1100 * MS, NULL), FS_FF_ADMIT);
    CHECK(fs_failfast_failure(&f, 2000 * MS));  /* threshold 1: opens again */
}

static void failfast_threshold_zero_only_trips_by_hand(void)
{
    fs_failfast f;
    fs_failfast_init(&f, 0, 10 * MS);
    for (int i = 0; i < 1000; i++) {
        CHECK(!fs_failfast_failure(&f, i));
    }
    CHECK_EQ_INT(f.failures, 1000);
    CHECK_EQ_INT(fs_failfast_admit(&f, 1000, NULL), FS_FF_ADMIT);
    CHECK(fs_failfast_trip(&f, 2000));
    CHECK(!fs_failfast_trip(&f, 3000));         /* stays with the first opening's deadline */
    CHECK_EQ_INT(fs_failfast_admit(&f, 2000 + 10 * MS - 1, NULL), FS_FF_REJECT);
    CHECK_EQ_INT(fs_failfast_admit(&f, 2000 + 10 * MS, NULL), FS_FF_ADMIT_CLOSED);
}

static void failfast_deadline_saturates(void)
{
    fs_failfast f;
    fs_failfast_init(&f, 1, INT64_MAX);
    CHECK(fs_failfast_failure(&f, INT64_MAX - 5));
    CHECK_EQ_INT(f.open_until_ns, INT64_MAX);
    CHECK_EQ_INT(fs_failfast_admit(&f, INT64_MAX - 1, NULL), FS_FF_REJECT);
    /* A reset of a latch whose time ran out still reports that it was open. */
    fs_failfast_init(&f, 1, 5);
    fs_failfast_failure(&f, 0);
    CHECK(fs_failfast_reset(&f));
}

const fs_test failfast_tests[] = {
    TEST_CASE(failfast_rejects_bad_args),
    TEST_CASE(failfast_opens_after_consecutive_failures),
    TEST_CASE(failfast_recovers_lazily),
    TEST_CASE(failfast_threshold_zero_only_trips_by_hand),
    TEST_CASE(failfast_deadline_saturates),
    TEST_END,
};
