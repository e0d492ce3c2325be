/* Edge contracts of several engines that the per-engine files leave out: argument checks that
 * must refuse, saturation points, clamps, and lookups through crowded chains. */
#include <stdint.h>
#include <string.h>

#include "../fs_breaker.h"
#include "../fs_cache.h"
#include "../fs_failfast.h"
#include "../fs_gcra.h"
#include "../fs_keytab.h"
#include "../fs_quantile.h"
#include "../fs_rng.h"
#include "../fs_swlog.h"
#include "runner.h"

#define MS 1000000LL

static fs_breaker_config window_cfg(void)
{
    fs_breaker_config c;
    memset(&c, 0, sizeof c);
    c.mode = FS_BR_COUNT_WINDOW;
    c.failure_rate = 0.5;
    c.window_size = 4;
    c.min_calls = 2;
    c.half_open_max_calls = 1;
    c.recovery_threshold = 1;
    c.recovery_ns = 10 * MS;
    c.recovery_growth = 2.0;
    c.max_recovery_ns = 100 * MS;
    return c;
}

/* Each field out of its range alone is refused, and init then leaves the breaker untouched. */
static void breaker_refuses_each_bad_field(void)
{
    fs_breaker_config ok = window_cfg();
    CHECK(fs_breaker_config_check(&ok) == 0);
    fs_breaker_config c;
#define REFUSED(field, value) \
    do { \
        c = ok; \
        c.field = value; \
        CHECK(fs_breaker_config_check(&c) < 0); \
    } while (0)
    REFUSED(half_open_max_calls, 0);
    REFUSED(recovery_threshold, 0);
    REFUSED(recovery_ns, -1);
    REFUSED(recovery_growth, 2e9);
    REFUSED(slow_ns, -1);
    REFUSED(slow_rate, 1.5);
    REFUSED(slow_rate, 0.5);            /* a slow rate without a slow duration */
    REFUSED(window_size, 0);
    REFUSED(window_size, (1u << 24) + 1);
    REFUSED(min_calls, 0);
    REFUSED(failure_rate, 1.01);
    REFUSED(mode, (fs_br_mode)3);
#undef REFUSED
    fs_breaker b;
    memset(&b, 0x5a, sizeof b);
    fs_breaker before = b;
    c = ok;
    c.recovery_threshold = 0;
    uint8_t buf[4];
    CHECK(fs_breaker_init(&b, &c, buf, sizeof buf) < 0);
    CHECK(memcmp(&b, &before, sizeof b) == 0);
    CHECK(fs_breaker_init(&b, &ok, NULL, 4) < 0);     /* a window needs its buffer */
    CHECK(fs_breaker_init(&b, &ok, buf, sizeof buf) == 0);
}

/* Releasing a probe whose slot its own outcome already freed cannot push the count below 0. */
static void breaker_probe_count_never_wraps(void)
{
    fs_breaker_config c = window_cfg();
    c.recovery_threshold = 2;
    c.half_open_max_calls = 2;
    uint8_t buf[4];
    fs_breaker b;
    CHECK(fs_breaker_init(&b, &c, buf, sizeof buf) == 0);
    uint64_t t;
    int64_t ra;
    unsigned tr;
    for (int i = 0; i < 2; i++) {
        CHECK(fs_breaker_acquire(&b, 0, &t, &ra, &tr) == FS_BR_ADMITTED);
        fs_breaker_record(&b, t, FS_BR_FAILURE, 0, 0);
    }
    CHECK(b.state == FS_BR_FAILING);
    CHECK(fs_breaker_acquire(&b, 10 * MS, &t, &ra, &tr) == FS_BR_PROBE);
    CHECK(tr == FS_BR_TO_RECOVERING && b.probes == 1);
    CHECK(fs_breaker_record(&b, t, FS_BR_SUCCESS, 0, 10 * MS) == 0);
    CHECK(b.probes == 0 && b.probe_successes == 1);
    fs_breaker_release(&b, t);      /* already ended: nothing to free */
    CHECK(b.probes == 0);
    /* A probe token recorded twice (the binding never does, but the count must hold). */
    b.probes = 0;
    CHECK(fs_breaker_record(&b, t, FS_BR_SUCCESS, 0, 10 * MS) == FS_BR_TO_WORKING);
    CHECK(b.probes == 0 && b.state == FS_BR_WORKING);
}

/* Colliding chains: lookups step over other hashes in the same bucket and find every entry
 * of their own hash, in any insertion order. */
static void cache_chain_with_mixed_hashes(void)
{
    fs_cache_entry entries[8];
    int32_t buckets[8];
    fs_cache c;
    fs_cache_init(&c, entries, 8, buckets, fs_cache_buckets_for(8));
    /* Two different hashes that share a bucket: the top 3 bits of hash * phi agree. */
    uint64_t h1 = 1, h2 = 2;
    while (((h2 * UINT64_C(0x9E3779B97F4A7C15)) >> 61) != ((h1 * UINT64_C(0x9E3779B97F4A7C15)) >> 61)) {
        h2++;
    }
    int32_t a = fs_cache_insert(&c, h1, FS_CACHE_NEVER);
    int32_t x = fs_cache_insert(&c, h2, FS_CACHE_NEVER);
    int32_t b = fs_cache_insert(&c, h1, FS_CACHE_NEVER);
    int32_t y = fs_cache_insert(&c, h2, FS_CACHE_NEVER);
    /* The chain is y, b, x, a: each walk skips the other hash. */
    int32_t first = fs_cache_find(&c, h1);
    int32_t second = fs_cache_find_next(&c, first);
    CHECK((first == a && second == b) || (first == b && second == a));
    CHECK(fs_cache_find_next(&c, second) == FS_CACHE_NONE);
    first = fs_cache_find(&c, h2);
    second = fs_cache_find_next(&c, first);
    CHECK((first == x && second == y) || (first == y && second == x));
    CHECK(fs_cache_find_next(&c, second) == FS_CACHE_NONE);
    fs_cache_remove(&c, b);
    CHECK(fs_cache_find(&c, h1) == a && fs_cache_find_next(&c, a) == FS_CACHE_NONE);
}

/* The failure count saturates instead of wrapping to 0 (which would let a latch whose threshold
 * is UINT64_MAX never open). */
static void failfast_failure_count_saturates(void)
{
    fs_failfast f;
    CHECK(fs_failfast_init(&f, UINT64_MAX, 10 * MS) == 0);
    f.failures = UINT64_MAX - 1;
    CHECK(fs_failfast_failure(&f, 0));
    CHECK(f.failures == UINT64_MAX && f.open);
    CHECK(!fs_failfast_failure(&f, 1));
    CHECK(f.failures == UINT64_MAX);
}

/* Lowering an entry's TAT above what busy_until already says changes nothing; lowering it
 * below moves busy_until down, so a refusal never outlasts the real refill. */
static void keytab_lowered_keeps_lower_bound(void)
{
    uint64_t mem[16];
    fs_keytab t;
    memset(&t, 0, sizeof t);
    CHECK(fs_keytab_init(&t, NULL, 2) < 0);
    CHECK(fs_keytab_mem_size(2) <= sizeof mem);
    CHECK(fs_keytab_init(&t, mem, 2) == 0);
    bool ev;
    int64_t ra;
    CHECK(fs_keytab_insert(&t, 11, 0, &ev, &ra) == 0);
    CHECK(fs_keytab_insert(&t, 22, 0, &ev, &ra) == 1);
    t.tats[0] = 50;
    t.tats[1] = 80;
    CHECK(fs_keytab_insert(&t, 33, 10, &ev, &ra) == -1);
    CHECK(ra == 40 && t.busy_until == 50);
    fs_keytab_lowered(&t, 1);           /* 80 is no lower bound news */
    CHECK(t.busy_until == 50);
    t.tats[1] = 20;
    fs_keytab_lowered(&t, 1);
    CHECK(t.busy_until == 20);
    CHECK(fs_keytab_insert(&t, 33, 20, &ev, &ra) == 1 && ev);
}

/* A half-window slot stops counting at UINT32_MAX samples instead of wrapping to 0; the ranks
 * of p near 0 and p = 1 clamp to the smallest and largest sample. */
static void quantile_saturates_and_clamps_rank(void)
{
    fs_quantile q;
    CHECK(fs_quantile_init(&q, 1) < 0);
    CHECK(fs_quantile_init(&q, 2 * MS) == 0);
    fs_quantile_record(&q, 0, 5000);
    fs_quantile_record(&q, 0, 900000);
    CHECK(fs_quantile_value(&q, 0, 1e-12) == fs_quantile_bucket_upper(fs_quantile_bucket(5000)));
    CHECK(fs_quantile_value(&q, 0, 1.0) == fs_quantile_bucket_upper(fs_quantile_bucket(900000)));
    q.total[0] = UINT32_MAX - 1;
    q.counts[0][0] += UINT32_MAX - 3;   /* consistent: the totals match the buckets */
    fs_quantile_record(&q, 0, 1);
    CHECK(q.total[0] == UINT32_MAX);
    fs_quantile_record(&q, 0, 1);
    CHECK(q.total[0] == UINT32_MAX);
    CHECK(fs_quantile_count(&q, 0) == UINT32_MAX);
}

/* An empty or reversed range gives its low end; a range wider than DBL_MAX stays inside. */
static void rng_range_edges(void)
{
    fs_rng r;
    fs_rng_seed(&r, 3);
    CHECK(fs_rng_range(&r, 5.0, 5.0) == 5.0);
    CHECK(fs_rng_range(&r, 5.0, 1.0) == 5.0);
    for (int i = 0; i < 100; i++) {
        double v = fs_rng_range(&r, -1.5e308, 1.5e308);
        CHECK(v >= -1.5e308 && v < 1.5e308);
    }
}

/* Bad arguments are refused; give-back needs a reservation; availability reads the ring
 * across its wrap point. */
static void swlog_refusals_and_wrap(void)
{
    int64_t ring[3];
    fs_swlog w;
    CHECK(fs_swlog_init(&w, NULL, 3, 10) < 0);
    CHECK(fs_swlog_init(&w, ring, 0, 10) < 0);
    CHECK(fs_swlog_init(&w, ring, 3, 0) < 0);
    CHECK(fs_swlog_init(&w, ring, 3, INT64_MAX / 2) < 0);
    CHECK(fs_swlog_init(&w, ring, 3, 100) == 0);
    CHECK(!fs_swlog_give_back(&w, 0, 0));   /* nothing reserved yet */
    int64_t wait, ev;
    uint64_t seq;
    /* Uses at 0, 10, 20, then 100 (the first slot again): head sits mid-ring. */
    CHECK(fs_swlog_reserve(&w, 0, 0, &wait, &seq, &ev));
    CHECK(fs_swlog_reserve(&w, 10, 0, &wait, &seq, &ev));
    CHECK(fs_swlog_reserve(&w, 20, 0, &wait, &seq, &ev));
    CHECK(fs_swlog_reserve(&w, 100, 0, &wait, &seq, &ev));
    CHECK(w.head == 1);
    CHECK(fs_swlog_available(&w, 109) == 0);
    CHECK(fs_swlog_available(&w, 110) == 1);
    CHECK(fs_swlog_available(&w, 120) == 2);
    CHECK(fs_swlog_available(&w, 200) == 3);
    CHECK(!fs_swlog_idle(&w, 199) && fs_swlog_idle(&w, 200));
}

const fs_test edge_tests[] = {
    TEST_CASE(breaker_refuses_each_bad_field),
    TEST_CASE(breaker_probe_count_never_wraps),
    TEST_CASE(cache_chain_with_mixed_hashes),
    TEST_CASE(failfast_failure_count_saturates),
    TEST_CASE(keytab_lowered_keeps_lower_bound),
    TEST_CASE(quantile_saturates_and_clamps_rank),
    TEST_CASE(rng_range_edges),
    TEST_CASE(swlog_refusals_and_wrap),
    TEST_END,
};
