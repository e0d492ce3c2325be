#include <stdint.h>

#include "../fs_swlog.h"
#include "runner.h"

#define MS 1000000LL

static void swlog_rejects_bad_args(void)
{
    fs_swlog w;
    int64_t ring[3];
    CHECK(fs_swlog_init(&w, NULL, 3, 10) == -1);
    CHECK(fs_swlog_init(&w, ring, 0, 10) == -1);
    CHECK(fs_swlog_init(&w, ring, 3, 0) == -1);
    CHECK(fs_swlog_init(&w, ring, 3, 10) == 0);
}

static void swlog_limit_per_window(void)
{
    fs_swlog w;
    int64_t ring[3];
    fs_swlog_init(&w, ring, 3, 100 * MS);
    int64_t now = 50 * MS, wait;
    uint64_t seq;
    int64_t ev;
    CHECK(fs_swlog_available(&w, now) == 3);
    CHECK(fs_swlog_idle(&w, now));
    CHECK(fs_swlog_reserve(&w, now, 0, &wait, &seq, &ev));
    CHECK(fs_swlog_reserve(&w, now + 10 * MS, 0, &wait, &seq, &ev));
    CHECK(fs_swlog_reserve(&w, now + 20 * MS, 0, &wait, &seq, &ev));
    CHECK(!fs_swlog_idle(&w, now + 20 * MS));
    CHECK(fs_swlog_available(&w, now + 20 * MS) == 0);
    CHECK(!fs_swlog_reserve(&w, now + 99 * MS, 0, &wait, &seq, &ev));
    CHECK_EQ_INT(wait, 1 * MS);
    CHECK(fs_swlog_reserve(&w, now + 100 * MS, 0, &wait, &seq, &ev));
    CHECK(fs_swlog_available(&w, now + 115 * MS) == 1);
    /* Waiting: the next place is when the oldest leaves the window. */
    CHECK(fs_swlog_reserve(&w, now + 100 * MS, 50 * MS, &wait, &seq, &ev));
    CHECK_EQ_INT(wait, 10 * MS);
    uint64_t s1 = seq;
    int64_t e1 = ev;
    CHECK(fs_swlog_reserve(&w, now + 100 * MS, 50 * MS, &wait, &seq, &ev));
    CHECK_EQ_INT(wait, 20 * MS);
    CHECK(!fs_swlog_give_back(&w, s1, e1));
    CHECK(fs_swlog_give_back(&w, seq, ev));
    CHECK(fs_swlog_reserve(&w, now + 100 * MS, 50 * MS, &wait, &seq, &ev));
    CHECK_EQ_INT(wait, 20 * MS);
    CHECK(fs_swlog_idle(&w, now + 220 * MS));
}

/* Never more than limit admissions in any window, over a long random run. */
static void swlog_never_over_admits(void)
{
    fs_swlog w;
    int64_t ring[5];
    const int64_t window = 50 * MS;
    fs_swlog_init(&w, ring, 5, window);
    enum { N = 20000 };
    static int64_t at[N];
    int n = 0;
    uint64_t x = 88172645463325252ULL;
    int64_t now = 0;
    for (int i = 0; i < 200000 && n < N; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        now += (int64_t)(x % (12 * MS));
        int64_t wait, ev;
        uint64_t seq;
        if (fs_swlog_reserve(&w, now, (int64_t)(x % 3) * 5 * MS, &wait, &seq, &ev)) {
            at[n++] = now + wait;
        }
    }
    CHECK(n > 1000);
    for (int i = 0; i + 5 < n; i++) {
        CHECK(at[i + 5] - at[i] >= window);
        CHECK(at[i + 1] >= at[i]);
    }
}

static void swlog_pause_admits_nothing_until_then(void)
{
    fs_swlog w;
    int64_t ring[3];
    fs_swlog_init(&w, ring, 3, 100 * MS);
    int64_t now = 50 * MS, wait, ev;
    uint64_t seq;
    CHECK(fs_swlog_reserve(&w, now, 0, &wait, &seq, &ev));
    fs_swlog_pause(&w, now + 1000 * MS);
    CHECK(!fs_swlog_give_back(&w, seq, ev));           /* made before the pause */
    CHECK(fs_swlog_available(&w, now + 1000 * MS - 1) == 0);
    CHECK(!fs_swlog_reserve(&w, now + 999 * MS, 0, &wait, &seq, &ev));
    CHECK_EQ_INT(wait, MS);
    CHECK(fs_swlog_available(&w, now + 1000 * MS) == 3);
    CHECK(!fs_swlog_idle(&w, now + 999 * MS));
}

const fs_test swlog_tests[] = {
    TEST_CASE(swlog_pause_admits_nothing_until_then),
    TEST_CASE(swlog_rejects_bad_args),
    TEST_CASE(swlog_limit_per_window),
    TEST_CASE(swlog_never_over_admits),
    TEST_END,
};
