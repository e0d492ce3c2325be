#include <stdint.h>

#include "../fs_gcra.h"
#include "runner.h"

#define MS 1000000LL

static void gcra_rejects_bad_args(void)
{
    fs_gcra g;
    CHECK(fs_gcra_init(&g, 0, 1) == -1);
    CHECK(fs_gcra_init(&g, 1, 0) == -1);
    CHECK(fs_gcra_init(&g, INT64_MAX / 2, 3) == -1);   /* tolerance would overflow */
    CHECK(fs_gcra_init(&g, 10 * MS, 5) == 0);
}

static void gcra_burst_then_rate(void)
{
    fs_gcra g;
    fs_gcra_init(&g, 100 * MS, 3);                     /* 10/s, burst 3 */
    int64_t wait = -1;
    int64_t now = 5000 * MS;
    for (int i = 0; i < 3; i++) {
        CHECK(fs_gcra_take(&g, now, &wait));
        CHECK_EQ_INT(wait, 0);
    }
    CHECK(!fs_gcra_take(&g, now, &wait));
    CHECK_EQ_INT(wait, 100 * MS);
    CHECK(!fs_gcra_take(&g, now + 100 * MS - 1, &wait));
    CHECK_EQ_INT(wait, 1);
    CHECK(fs_gcra_take(&g, now + 100 * MS, &wait));
    CHECK(!fs_gcra_take(&g, now + 100 * MS, NULL));
}

static void gcra_pause_admits_nothing_until_then(void)
{
    fs_gcra g;
    fs_gcra_init(&g, 100 * MS, 3);                     /* 10/s, burst 3, full */
    int64_t now = 1000 * MS, wait = -1;
    fs_gcra_pause_tat(&g, &g.tat_ns, now + 5000 * MS);
    CHECK(!fs_gcra_take(&g, now, &wait));
    CHECK_EQ_INT(wait, 5000 * MS);
    CHECK(!fs_gcra_take(&g, now + 5000 * MS - 1, &wait));
    CHECK_EQ_INT(wait, 1);
    CHECK(fs_gcra_take(&g, now + 5000 * MS, &wait));   /* then one per interval, no burst */
    CHECK(!fs_gcra_take(&g, now + 5000 * MS, &wait));
    CHECK_EQ_INT(wait, 100 * MS);
    int64_t tat = g.tat_ns;
    fs_gcra_pause_tat(&g, &g.tat_ns, now);             /* an earlier end keeps the later TAT */
    CHECK(g.tat_ns == tat);
    CHECK(fs_gcra_credit_ns(&g, g.tat_ns, now + 10000 * MS) == 300 * MS);   /* full again */
}

/* In any window of length t at most rate*t + burst tokens: check over a long run. */
static void gcra_never_over_admits(void)
{
    fs_gcra g;
    const int64_t interval = 7 * MS;
    const int64_t burst = 4;
    fs_gcra_init(&g, interval, burst);
    enum { N = 20000 };
    static int64_t admitted[N];
    int n = 0;
    uint64_t x = 88172645463325252ULL;
    int64_t now = 0;
    for (int i = 0; i < 200000 && n < N; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        now += (int64_t)(x % (3 * MS));
        if (fs_gcra_take(&g, now, NULL)) {
            admitted[n++] = now;
        }
    }
    CHECK(n > 1000);
    for (int i = 0; i < n; i++) {
        for (int j = i; j < n && j < i + 64; j++) {
            int64_t t = admitted[j] - admitted[i];
            /* tokens in [admitted[i], admitted[j]] = j - i + 1 <= t/interval + burst */
            CHECK(j - i + 1 <= t / interval + burst);
        }
    }
}

/* Waiting reservations are spaced one interval apart, in order, and only the latest can be
 * given back. */
static void gcra_reserve_and_give_back(void)
{
    fs_gcra g;
    fs_gcra_init(&g, 10 * MS, 2);
    int64_t now = 1000 * MS, wait = -1;
    int64_t tat = FS_GCRA_FULL;
    CHECK(fs_gcra_reserve_tat(&g, &tat, now, 0, &wait) && wait == 0);
    CHECK(fs_gcra_reserve_tat(&g, &tat, now, 0, &wait) && wait == 0);
    CHECK(!fs_gcra_reserve_tat(&g, &tat, now, 5 * MS, &wait));
    CHECK_EQ_INT(wait, 10 * MS);
    CHECK(fs_gcra_reserve_tat(&g, &tat, now, 100 * MS, &wait));
    CHECK_EQ_INT(wait, 10 * MS);
    int64_t first = tat;
    CHECK(fs_gcra_reserve_tat(&g, &tat, now, 100 * MS, &wait));
    CHECK_EQ_INT(wait, 20 * MS);
    int64_t second = tat;
    CHECK(!fs_gcra_give_back_tat(&g, &tat, first));   /* a later one exists */
    CHECK(fs_gcra_give_back_tat(&g, &tat, second));
    CHECK(!fs_gcra_give_back_tat(&g, &tat, second));  /* only once */
    CHECK(fs_gcra_reserve_tat(&g, &tat, now, 100 * MS, &wait));
    CHECK_EQ_INT(wait, 20 * MS);                      /* the given-back place again */
    CHECK(!fs_gcra_idle(tat, now));
    CHECK(fs_gcra_idle(tat, now + 40 * MS));
    CHECK_EQ_INT(fs_gcra_credit_ns(&g, tat, now + 40 * MS), 20 * MS);
    CHECK_EQ_INT(fs_gcra_credit_ns(&g, tat, now), 0);
}

const fs_test gcra_tests[] = {
    TEST_CASE(gcra_reserve_and_give_back),
    TEST_CASE(gcra_pause_admits_nothing_until_then),
    TEST_CASE(gcra_rejects_bad_args),
    TEST_CASE(gcra_burst_then_rate),
    TEST_CASE(gcra_never_over_admits),
    TEST_END,
};
