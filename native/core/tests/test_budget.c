#include <float.h>
#include <string.h>

#include "../fs_budget.h"
#include "../fs_rng.h"
#include "runner.h"

#define SEC 1000000000LL

static void test_budget_init_errors(void)
{
    fs_budget b, snap;
    memset(&b, 0xAB, sizeof b);
    snap = b;
    CHECK(fs_budget_init(&b, NAN, 1, 10 * SEC) == -1);
    CHECK(fs_budget_init(&b, -0.1, 1, 10 * SEC) == -1);
    CHECK(fs_budget_init(&b, INFINITY, 1, 10 * SEC) == -1);
    CHECK(fs_budget_init(&b, 0.2, NAN, 10 * SEC) == -1);
    CHECK(fs_budget_init(&b, 0.2, -1, 10 * SEC) == -1);
    CHECK(fs_budget_init(&b, 0.2, INFINITY, 10 * SEC) == -1);
    CHECK(fs_budget_init(&b, 0.2, 1, FS_BUDGET_SLOTS - 1) == -1);
    CHECK(fs_budget_init(&b, 0.2, 1, 0) == -1);
    CHECK(fs_budget_init(&b, 0.2, 1, -10 * SEC) == -1);
    CHECK(fs_budget_init(&b, 0.2, DBL_MAX, INT64_MAX) == -1); /* floor overflows */
    CHECK(memcmp(&b, &snap, sizeof b) == 0);

    CHECK(fs_budget_init(&b, 0.0, 0.0, FS_BUDGET_SLOTS) == 0);
    CHECK(b.slot_ns == 1);
    CHECK(fs_budget_init(&b, 0.2, 10, 10 * SEC) == 0);
    CHECK(b.slot_ns == SEC);
    CHECK_NEAR(b.floor, 100.0, 1e-9);
    CHECK(b.ratio == 0.2);
    for (int i = 0; i < FS_BUDGET_SLOTS; i++)
        CHECK(b.deposits[i] == 0 && b.withdrawals[i] == 0);
}

static void test_budget_ratio(void)
{
    fs_budget b;
    CHECK(fs_budget_init(&b, 0.2, 0.0, 10 * SEC) == 0);
    int64_t t = 100 * SEC;
    CHECK(fs_budget_available(&b, t) == 0.0);
    CHECK(!fs_budget_try_withdraw(&b, t));
    for (int i = 0; i < 10; i++)
        fs_budget_deposit(&b, t);
    CHECK_NEAR(fs_budget_available(&b, t), 2.0, 1e-12);
    CHECK(fs_budget_try_withdraw(&b, t));
    CHECK_NEAR(fs_budget_available(&b, t), 1.0, 1e-12);
    CHECK(fs_budget_try_withdraw(&b, t));
    CHECK(!fs_budget_try_withdraw(&b, t));
    CHECK(fs_budget_available(&b, t) == 0.0);
    /* Refusals are not recorded: 5 more calls buy exactly one more retry. */
    for (int i = 0; i < 5; i++)
        fs_budget_deposit(&b, t + 1);
    CHECK(fs_budget_try_withdraw(&b, t + 2));
    CHECK(!fs_budget_try_withdraw(&b, t + 2));

    /* Fractional headroom below 1 allows nothing but is reported. */
    CHECK(fs_budget_init(&b, 0.5, 0.0, 10 * SEC) == 0);
    for (int i = 0; i < 3; i++)
        fs_budget_deposit(&b, t);
    CHECK(fs_budget_try_withdraw(&b, t));
    CHECK_NEAR(fs_budget_available(&b, t), 0.5, 1e-12);
    CHECK(!fs_budget_try_withdraw(&b, t));
}

static void test_budget_floor(void)
{
    fs_budget b;
    CHECK(fs_budget_init(&b, 0.0, 0.5, 10 * SEC) == 0); /* floor = 5 per window */
    int64_t t = 3 * SEC;
    CHECK_NEAR(fs_budget_available(&b, t), 5.0, 1e-12);
    for (int i = 0; i < 5; i++)
        CHECK(fs_budget_try_withdraw(&b, t));
    CHECK(!fs_budget_try_withdraw(&b, t));
    CHECK(fs_budget_available(&b, t) == 0.0);
    /* Withdrawals expire with the window, freeing the floor again. */
    CHECK(!fs_budget_try_withdraw(&b, t + 9 * SEC));
    CHECK(fs_budget_try_withdraw(&b, t + 10 * SEC));
    CHECK_NEAR(fs_budget_available(&b, t + 10 * SEC), 4.0, 1e-12);

    /* Floor and ratio add up. */
    CHECK(fs_budget_init(&b, 0.1, 0.1, 10 * SEC) == 0); /* floor 1 */
    for (int i = 0; i < 20; i++)
        fs_budget_deposit(&b, t);
    CHECK_NEAR(fs_budget_available(&b, t), 3.0, 1e-12);
    for (int i = 0; i < 3; i++)
        CHECK(fs_budget_try_withdraw(&b, t));
    CHECK(!fs_budget_try_withdraw(&b, t));
}

static void test_budget_expiry(void)
{
    fs_budget b;
    CHECK(fs_budget_init(&b, 0.2, 0.0, 10 * SEC) == 0);
    int64_t t0 = 5 * SEC + SEC / 2;
    for (int i = 0; i < 10; i++)
        fs_budget_deposit(&b, t0);
    /* Still inside the window 9 slots later (end of that slot too)... */
    CHECK_NEAR(fs_budget_available(&b, t0 + 9 * SEC), 2.0, 1e-12);
    CHECK_NEAR(fs_budget_available(&b, 15 * SEC - 1), 2.0, 1e-12);
    /* ...gone once ttl has passed. */
    CHECK(fs_budget_available(&b, 15 * SEC) == 0.0);
    CHECK(fs_budget_available(&b, t0 + 10 * SEC) == 0.0);

    /* Sliding: two batches leave one at a time. */
    CHECK(fs_budget_init(&b, 0.2, 0.0, 10 * SEC) == 0);
    for (int i = 0; i < 10; i++)
        fs_budget_deposit(&b, 0);
    for (int i = 0; i < 10; i++)
        fs_budget_deposit(&b, 5 * SEC);
    CHECK_NEAR(fs_budget_available(&b, 9 * SEC), 4.0, 1e-12);
    CHECK_NEAR(fs_budget_available(&b, 10 * SEC), 2.0, 1e-12);
    CHECK_NEAR(fs_budget_available(&b, 14 * SEC + SEC - 1), 2.0, 1e-12);
    CHECK(fs_budget_available(&b, 15 * SEC) == 0.0);

    /* A ttl that slots do not divide: expiry still happens by ttl. */
    CHECK(fs_budget_init(&b, 1.0, 0.0, 25) == 0); /* slot 2 ns, window 20 ns */
    fs_budget_deposit(&b, 1);
    CHECK_NEAR(fs_budget_available(&b, 19), 1.0, 1e-12);
    CHECK(fs_budget_available(&b, 20) == 0.0);
    CHECK(fs_budget_available(&b, 26) == 0.0);
}

static void test_budget_big_jumps(void)
{
    fs_budget b;
    CHECK(fs_budget_init(&b, 1.0, 0.0, 10 * SEC) == 0);
    for (int jump = FS_BUDGET_SLOTS - 1; jump <= FS_BUDGET_SLOTS + 1; jump++) {
        CHECK(fs_budget_init(&b, 1.0, 0.0, 10 * SEC) == 0);
        int64_t t = 7 * SEC;
        for (int i = 0; i < FS_BUDGET_SLOTS; i++)
            fs_budget_deposit(&b, t + i * SEC); /* one in every slot */
        t += (FS_BUDGET_SLOTS - 1) * SEC;
        double want = jump >= FS_BUDGET_SLOTS ? 0.0 : (double)(FS_BUDGET_SLOTS - jump);
        CHECK_NEAR(fs_budget_available(&b, t + jump * SEC), want, 1e-12);
    }
    /* Jumps across most of the int64 range. */
    CHECK(fs_budget_init(&b, 1.0, 0.0, 10 * SEC) == 0);
    fs_budget_deposit(&b, 1);
    CHECK_NEAR(fs_budget_available(&b, 1), 1.0, 1e-12);
    CHECK(fs_budget_available(&b, INT64_MAX / 2) == 0.0);
    fs_budget_deposit(&b, INT64_MAX / 2);
    CHECK(fs_budget_try_withdraw(&b, INT64_MAX / 2));
    CHECK(!fs_budget_try_withdraw(&b, INT64_MAX - 1));
    fs_budget_deposit(&b, INT64_MAX);
    fs_budget_deposit(&b, INT64_MAX);
    CHECK_NEAR(fs_budget_available(&b, INT64_MAX), 2.0, 1e-12);
    /* Time before the first slot (negative) is tolerated as "now". */
    CHECK(fs_budget_init(&b, 1.0, 0.0, 10 * SEC) == 0);
    fs_budget_deposit(&b, -5 * SEC);
    CHECK_NEAR(fs_budget_available(&b, -5 * SEC), 1.0, 1e-12);
    /* With ttl = slots, every ns is a slot: stress the ring's wraparound. */
    CHECK(fs_budget_init(&b, 1.0, 0.0, FS_BUDGET_SLOTS) == 0);
    for (int64_t t = 0; t < 1000; t++) {
        fs_budget_deposit(&b, t);
        double want = t + 1 < FS_BUDGET_SLOTS ? (double)(t + 1) : FS_BUDGET_SLOTS;
        CHECK_NEAR(fs_budget_available(&b, t), want, 1e-12);
    }
}

/* Naive reference: keep every event's slot index and count the ones inside the window. */
enum { MAXEV = 20000 };
static int64_t ev_slot[MAXEV];
static int ev_is_withdraw[MAXEV];

static void test_budget_against_reference(void)
{
    fs_rng rng;
    fs_rng_seed(&rng, 2024);
    for (int round = 0; round < 5; round++) {
        double ratio = round * 0.15, min_per_s = (round % 3) * 0.4;
        int64_t ttl = 10 * SEC + (int64_t)(fs_rng_next(&rng) % 7);
        fs_budget b;
        CHECK(fs_budget_init(&b, ratio, min_per_s, ttl) == 0);
        int n = 0;
        int64_t now = (int64_t)(fs_rng_next(&rng) % (100 * SEC));
        for (int op = 0; op < 4000 && n < MAXEV; op++) {
            uint64_t r = fs_rng_next(&rng);
            switch (r % 8) {
            case 0: break; /* equal time */
            case 1: now += (int64_t)(fs_rng_next(&rng) % (30 * SEC)); break; /* maybe a big jump */
            default: now += (int64_t)(fs_rng_next(&rng) % (SEC / 2)); break;
            }
            int64_t slot = now / b.slot_ns;
            uint64_t d = 0, w = 0;
            for (int i = 0; i < n; i++) {
                if (ev_slot[i] > slot - FS_BUDGET_SLOTS) {
                    d += !ev_is_withdraw[i];
                    w += ev_is_withdraw[i];
                }
            }
            double head = ratio * (double)d + b.floor - (double)w;
            switch ((r >> 8) % 3) {
            case 0:
                fs_budget_deposit(&b, now);
                ev_slot[n] = slot;
                ev_is_withdraw[n++] = 0;
                break;
            case 1: {
                int want = (double)w + 1.0 <= ratio * (double)d + b.floor;
                int got = fs_budget_try_withdraw(&b, now);
                CHECK(got == want);
                if (got) {
                    ev_slot[n] = slot;
                    ev_is_withdraw[n++] = 1;
                }
                break;
            }
            default:
                CHECK(fs_budget_available(&b, now) == (head > 0.0 ? head : 0.0));
                break;
            }
        }
    }
}

const fs_test budget_tests[] = {
    TEST_CASE(test_budget_init_errors),
    TEST_CASE(test_budget_ratio),
    TEST_CASE(test_budget_floor),
    TEST_CASE(test_budget_expiry),
    TEST_CASE(test_budget_big_jumps),
    TEST_CASE(test_budget_against_reference),
    TEST_END,
};
