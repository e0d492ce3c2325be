#include <stdint.h>

#include "../fs_bulkhead.h"
#include "runner.h"

static void bulkhead_rejects_bad_args(void)
{
    fs_bulkhead b;
    CHECK(fs_bulkhead_init(&b, 0, 1) == -1);
    CHECK(fs_bulkhead_init(&b, 3, 2) == -1);
    CHECK(fs_bulkhead_init(&b, 1, (uint64_t)INT64_MAX + 1) == -1);
    CHECK(fs_bulkhead_init(&b, 2, 2) == 0);
    CHECK_EQ_INT(b.running, 0);
    CHECK_EQ_INT(b.queued, 0);
}

/* failsafe-py's example: concurrency 2, capacity 3, five calls: 2 run, 1 waits, 2 rejected. */
static void bulkhead_run_wait_full(void)
{
    fs_bulkhead b;
    fs_bulkhead_init(&b, 2, 3);
    CHECK(fs_bulkhead_peek(&b) == FS_BH_RUN);
    CHECK_EQ_INT(b.running, 0);
    CHECK(fs_bulkhead_acquire(&b) == FS_BH_RUN);
    CHECK(fs_bulkhead_acquire(&b) == FS_BH_RUN);
    CHECK(fs_bulkhead_peek(&b) == FS_BH_WAIT);
    CHECK(fs_bulkhead_try_run(&b) == FS_BH_WAIT);   /* takes nothing */
    CHECK_EQ_INT(b.queued, 0);
    CHECK(fs_bulkhead_acquire(&b) == FS_BH_WAIT);
    CHECK(fs_bulkhead_acquire(&b) == FS_BH_FULL);
    CHECK(fs_bulkhead_try_run(&b) == FS_BH_FULL);
    CHECK(fs_bulkhead_peek(&b) == FS_BH_FULL);
    CHECK_EQ_INT(b.running, 2);
    CHECK_EQ_INT(b.queued, 1);
    CHECK_EQ_INT(b.peak_running, 2);
    CHECK_EQ_INT(b.peak_queued, 1);
}

/* A freed slot goes to the queue, never to a newcomer. */
static void bulkhead_release_hands_over(void)
{
    fs_bulkhead b;
    fs_bulkhead_init(&b, 1, 3);
    CHECK(fs_bulkhead_acquire(&b) == FS_BH_RUN);
    CHECK(fs_bulkhead_acquire(&b) == FS_BH_WAIT);
    CHECK(fs_bulkhead_acquire(&b) == FS_BH_WAIT);
    CHECK(fs_bulkhead_release(&b));                 /* to the first waiter */
    CHECK_EQ_INT(b.running, 1);
    CHECK_EQ_INT(b.queued, 1);
    CHECK(fs_bulkhead_try_run(&b) == FS_BH_WAIT);   /* no barging */
    CHECK(fs_bulkhead_release(&b));
    CHECK_EQ_INT(b.queued, 0);
    CHECK(!fs_bulkhead_release(&b));                /* nobody waits: freed */
    CHECK_EQ_INT(b.running, 0);
    CHECK(fs_bulkhead_try_run(&b) == FS_BH_RUN);
}

static void bulkhead_leave_frees_a_place(void)
{
    fs_bulkhead b;
    fs_bulkhead_init(&b, 1, 2);
    CHECK(fs_bulkhead_acquire(&b) == FS_BH_RUN);
    CHECK(fs_bulkhead_acquire(&b) == FS_BH_WAIT);
    CHECK(fs_bulkhead_acquire(&b) == FS_BH_FULL);
    fs_bulkhead_leave(&b);
    CHECK_EQ_INT(b.queued, 0);
    CHECK(fs_bulkhead_acquire(&b) == FS_BH_WAIT);
    fs_bulkhead_leave(&b);
    CHECK(!fs_bulkhead_release(&b));
    CHECK_EQ_INT(b.running, 0);
    /* Misuse does not wrap around. */
    fs_bulkhead_leave(&b);
    CHECK(!fs_bulkhead_release(&b));
    CHECK_EQ_INT(b.running, 0);
    CHECK_EQ_INT(b.queued, 0);
}

/* Random operations against the invariants: running <= max_concurrency, running + queued <=
 * max_capacity, and a queue only while every slot is taken. */
static void bulkhead_invariants_hold(void)
{
    fs_bulkhead b;
    fs_bulkhead_init(&b, 4, 9);
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    uint64_t admitted = 0, rejected = 0;
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        switch (x % 4) {
        case 0:
        case 1: {
            fs_bh_verdict v = fs_bulkhead_acquire(&b);
            admitted += v != FS_BH_FULL;
            rejected += v == FS_BH_FULL;
            CHECK(v != FS_BH_FULL || b.running + b.queued == b.max_capacity);
            break;
        }
        case 2:
            if (b.running > 0) {
                uint64_t q = b.queued;
                CHECK(fs_bulkhead_release(&b) == (q > 0));
            }
            break;
        default:
            if (b.queued > 0) {
                fs_bulkhead_leave(&b);
            }
        }
        CHECK(b.running <= b.max_concurrency);
        CHECK(b.running + b.queued <= b.max_capacity);
        CHECK(b.queued == 0 || b.running == b.max_concurrency);
        fs_bulkhead copy = b;
        fs_bh_verdict peeked = fs_bulkhead_peek(&copy);
        CHECK(fs_bulkhead_try_run(&copy) == peeked);
    }
    CHECK(admitted > 1000 && rejected > 1000);
    CHECK_EQ_INT(b.peak_running, 4);
    CHECK_EQ_INT(b.peak_queued, 5);
}

const fs_test bulkhead_tests[] = {
    TEST_CASE(bulkhead_rejects_bad_args),
    TEST_CASE(bulkhead_run_wait_full),
    TEST_CASE(bulkhead_release_hands_over),
    TEST_CASE(bulkhead_leave_frees_a_place),
    TEST_CASE(bulkhead_invariants_hold),
    TEST_END,
};
