#include <math.h>
#include <stdint.h>

#include "../fs_alimit.h"
#include "../fs_rng.h"
#include "../fs_throttle.h"
#include "runner.h"

#define MS 1000000LL

static fs_alimit make(int algo, double initial)
{
    fs_alimit_config c;
    fs_alimit_defaults(&c, algo);
    if (algo == FS_AL_GRADIENT2) {
        /* Gradient2Limit's published parameters, which the rule tests below follow. */
        c.tolerance = 1.5;
        c.queue_size = 4.0;
        c.long_window = 600;
    }
    c.initial = initial;
    fs_alimit l;
    fs_alimit_init(&l, &c);
    return l;
}

static void alimit_rejects_bad_config(void)
{
    fs_alimit_config c;
    fs_alimit l;
    fs_alimit_defaults(&c, FS_AL_GRADIENT2);
    CHECK(fs_alimit_init(&l, &c) == 0);
    fs_alimit_config bad = c;
    bad.min_limit = 0.5;
    CHECK(fs_alimit_init(&l, &bad) == -1);
    bad = c;
    bad.initial = 2000;
    CHECK(fs_alimit_init(&l, &bad) == -1);
    bad = c;
    bad.smoothing = NAN;
    CHECK(fs_alimit_init(&l, &bad) == -1);
    bad = c;
    bad.tolerance = 0.9;
    CHECK(fs_alimit_init(&l, &bad) == -1);
    bad = c;
    bad.algo = 3;
    CHECK(fs_alimit_init(&l, &bad) == -1);
    bad = c;
    bad.backoff_ratio = 1.0;
    CHECK(fs_alimit_init(&l, &bad) == -1);
    bad = c;
    bad.alpha = 0.5;
    CHECK(fs_alimit_init(&l, &bad) == -1);
    bad = c;
    bad.beta = 2;   /* < alpha */
    CHECK(fs_alimit_init(&l, &bad) == -1);
    bad = c;
    bad.long_window = 0;
    CHECK(fs_alimit_init(&l, &bad) == -1);
}

static void alimit_admits_up_to_floor(void)
{
    fs_alimit l = make(FS_AL_AIMD, 2.7);
    uint64_t at = 99;
    CHECK_EQ_INT(fs_alimit_current(&l), 2);
    CHECK(fs_alimit_try_acquire(&l, &at));
    CHECK_EQ_INT(at, 0);
    CHECK(fs_alimit_try_acquire(&l, &at));
    CHECK_EQ_INT(at, 1);
    CHECK(!fs_alimit_try_acquire(&l, &at));
    CHECK_EQ_INT(at, 1);    /* untouched */
    CHECK(!fs_alimit_has_room(&l));
    fs_alimit_force_acquire(&l);
    CHECK_EQ_INT(l.inflight, 3);
    CHECK_EQ_INT(l.peak_inflight, 3);
    fs_alimit_release(&l);
    fs_alimit_release(&l);
    fs_alimit_release(&l);
    fs_alimit_release(&l);  /* extra: stays 0 */
    CHECK_EQ_INT(l.inflight, 0);
    CHECK_NEAR(l.limit, 2.7, 0);  /* releases without a sample leave the limit */
}

/* AIMDLimit: +1 when at least half the limit was in flight, x0.9 on a drop or a slow call. */
static void alimit_aimd_rule(void)
{
    fs_alimit l = make(FS_AL_AIMD, 10);
    fs_alimit_sample(&l, 10 * MS, 9, false);
    CHECK_NEAR(l.limit, 11, 1e-12);
    fs_alimit_sample(&l, 10 * MS, 1, false);     /* 2 in flight < 11/2: app limited */
    CHECK_NEAR(l.limit, 11, 1e-12);
    fs_alimit_sample(&l, 10 * MS, 1, true);
    CHECK_NEAR(l.limit, 9.9, 1e-12);
    fs_alimit_sample(&l, 6000 * MS, 9, false);   /* over the 5 s timeout */
    CHECK_NEAR(l.limit, 8.91, 1e-12);
    for (int i = 0; i < 100; i++) {
        fs_alimit_sample(&l, 1, 0, true);
    }
    CHECK_NEAR(l.limit, 1, 0);                   /* min_limit */
    CHECK_EQ_INT(l.drops, 101);
    CHECK_EQ_INT(l.samples, 104);
}

/* Gradient2Limit, step by step against the formulas. */
static void alimit_gradient2_rule(void)
{
    fs_alimit l = make(FS_AL_GRADIENT2, 20);
    /* First sample: long = 100 ms (warm-up average), gradient clamp(1.5 * 1, .5, 1) = 1:
     * new = 20 + 4, smoothed 20 * 0.8 + 24 * 0.2 = 20.8 */
    fs_alimit_sample(&l, 100 * MS, 19, false);
    CHECK_NEAR(l.long_rtt_ns, 100.0 * MS, 1e-6);
    CHECK_NEAR(l.limit, 20.8, 1e-9);
    /* 300 ms: long = (100 + 300) / 2 = 200; gradient 1.5 * 200 / 300 = 1 -> 24.8 smoothed */
    fs_alimit_sample(&l, 300 * MS, 19, false);
    CHECK_NEAR(l.long_rtt_ns, 200.0 * MS, 1e-6);
    CHECK_NEAR(l.limit, 20.8 * 0.8 + (20.8 + 4) * 0.2, 1e-9);
    double before = l.limit;
    /* 900 ms: long = (400 + 900) / 3 = 433.3; gradient 1.5 * 433.3 / 900 = 0.7222 */
    fs_alimit_sample(&l, 900 * MS, 19, false);
    double lg = 1300.0 / 3.0;
    CHECK_NEAR(l.long_rtt_ns, lg * MS, 1e-3);
    double g = 1.5 * lg / 900.0;
    CHECK_NEAR(l.limit, before * 0.8 + (before * g + 4) * 0.2, 1e-9);
    /* App limited (2 in flight): the long RTT moves, the limit does not. */
    before = l.limit;
    fs_alimit_sample(&l, 900 * MS, 1, false);
    CHECK_NEAR(l.limit, before, 0);
    CHECK_NEAR(l.long_rtt_ns, (1300.0 + 900.0) / 4.0 * MS, 1e-3);
}

/* After the warm-up the long RTT is an EMA with factor 2 / (window + 1), and it decays 5 % a
 * sample while over twice the short RTT. The gradient never goes below 0.5. */
static void alimit_gradient2_long_rtt(void)
{
    fs_alimit l = make(FS_AL_GRADIENT2, 100);
    for (int i = 0; i < FS_AL_WARMUP; i++) {
        fs_alimit_sample(&l, 100 * MS, 99, false);
    }
    CHECK_NEAR(l.long_rtt_ns, 100.0 * MS, 1e-3);
    double f = 2.0 / 601.0;
    fs_alimit_sample(&l, 40 * MS, 99, false);
    double expect = 100.0 * (1 - f) + 40.0 * f;     /* 99.8 ms > 2 * 40: decays */
    expect *= 0.95;
    CHECK_NEAR(l.long_rtt_ns, expect * MS, 1e-3);
    fs_alimit m = make(FS_AL_GRADIENT2, 100);
    for (int i = 0; i < FS_AL_WARMUP - 1; i++) {
        fs_alimit_sample(&m, 1 * MS, 99, false);
    }
    double lim = m.limit;
    fs_alimit_sample(&m, 100000 * MS, 99, false);   /* a huge RTT: gradient floors at 0.5 */
    CHECK_NEAR(m.limit, lim * 0.8 + (lim * 0.5 + 4) * 0.2, 1e-9);
}

/* VegasLimit: a new minimum only records rtt_noload; then the queue estimate picks the step. */
static void alimit_vegas_rule(void)
{
    fs_alimit l = make(FS_AL_VEGAS, 100);   /* log10(100) = 2: alpha 6, beta 12 */
    fs_alimit_sample(&l, 100 * MS, 99, false);
    CHECK_NEAR(l.rtt_noload_ns, 100.0 * MS, 0);
    CHECK_NEAR(l.limit, 100, 0);
    fs_alimit_sample(&l, 101 * MS, 99, false);  /* queue ceil(100 * (1 - 100/101)) = 1 <= 2 */
    CHECK_NEAR(l.limit, 112, 1e-9);
    fs_alimit_sample(&l, 103 * MS, 99, false);  /* ceil(112 * 3/103) = 4 < 6: + 2 */
    CHECK_NEAR(l.limit, 114, 1e-9);
    fs_alimit_sample(&l, 200 * MS, 99, false);  /* ceil(114 / 2) = 57 > 12: - 2 */
    CHECK_NEAR(l.limit, 112, 1e-9);
    fs_alimit_sample(&l, 108 * MS, 99, false);  /* ceil(112 * 8/108) = 9: between, kept */
    CHECK_NEAR(l.limit, 112, 1e-9);
    fs_alimit_sample(&l, 108 * MS, 9, true);    /* a drop counts even app limited */
    CHECK_NEAR(l.limit, 110, 1e-9);
    fs_alimit_sample(&l, 200 * MS, 9, false);   /* app limited: kept */
    CHECK_NEAR(l.limit, 110, 1e-9);
}

/* Vegas forgets its minimum every probe_multiplier * limit samples. */
static void alimit_vegas_probe(void)
{
    fs_alimit_config c;
    fs_alimit_defaults(&c, FS_AL_VEGAS);
    c.initial = 2;
    c.max_limit = 2;
    c.probe_multiplier = 3;
    fs_alimit l;
    fs_alimit_init(&l, &c);
    fs_alimit_sample(&l, 10 * MS, 1, false);
    for (int i = 0; i < 4; i++) {
        fs_alimit_sample(&l, 50 * MS, 1, false);
    }
    CHECK_NEAR(l.rtt_noload_ns, 10.0 * MS, 0);
    fs_alimit_sample(&l, 50 * MS, 1, false);    /* sixth sample: 3 * 2 */
    CHECK_NEAR(l.rtt_noload_ns, 50.0 * MS, 0);
}

/* Latency rising with the limit (a dependency with 10 servers, queueing beyond): vegas (without
 * probes, which would take the queued RTT for the minimum) settles
 * where its queue estimate limit - 10 lies between alpha (3) and beta (6). Gradient2 does not
 * settle there: its long RTT follows a lasting queue, so the gradient returns to 1. */
static void alimit_settles_on_a_queue(void)
{
    fs_alimit_config c;
    fs_alimit_defaults(&c, FS_AL_VEGAS);
    c.initial = 5;  /* starts where it can see the no-load RTT */
    c.probe_multiplier = 0;
    fs_alimit v;
    fs_alimit_init(&v, &c);
    fs_alimit g = make(FS_AL_GRADIENT2, 50);
    for (int i = 0; i < 3000; i++) {
        fs_alimit *ls[2] = {&v, &g};
        for (int j = 0; j < 2; j++) {
            double conc = floor(ls[j]->limit);
            double rtt = conc <= 10 ? 50.0 : 50.0 * conc / 10.0;
            fs_alimit_sample(ls[j], (int64_t)(rtt * MS), (uint64_t)conc - 1, false);
        }
    }
    CHECK(v.limit >= 13 && v.limit <= 16);
    CHECK(g.limit > 100);
}

static void throttle_rejects_bad_args(void)
{
    fs_throttle t;
    CHECK(fs_throttle_init(&t, 0.5, 1, 1000000000) == -1);
    CHECK(fs_throttle_init(&t, 2, 0, 1000000000) == -1);
    CHECK(fs_throttle_init(&t, 2, 1.5, 1000000000) == -1);
    CHECK(fs_throttle_init(&t, NAN, 1, 1000000000) == -1);
    CHECK(fs_throttle_init(&t, 2, 1, 39) == -1);
    CHECK(fs_throttle_init(&t, 2, 1, 40) == 0);
}

/* p = max(0, (requests - k * accepts) / (requests + 1)) over the window. */
static void throttle_probability_rule(void)
{
    fs_throttle t;
    fs_throttle_init(&t, 2.0, 1.0, 40 * MS);    /* 1 ms buckets */
    CHECK_NEAR(fs_throttle_probability(&t, 0), 0, 0);
    for (int i = 0; i < 10; i++) {
        fs_throttle_record(&t, 0, i < 5);       /* 10 requests, 5 accepts */
    }
    CHECK_NEAR(fs_throttle_probability(&t, 0), 0, 0);
    for (int i = 0; i < 10; i++) {
        fs_throttle_record(&t, 5 * MS, false);  /* 20 requests, 5 accepts */
    }
    CHECK_NEAR(fs_throttle_probability(&t, 5 * MS), (20 - 10) / 21.0, 1e-12);
    /* At 40 ms the bucket of 0 ms has left: 10 requests, 0 accepts. */
    CHECK_NEAR(fs_throttle_probability(&t, 40 * MS), 10 / 11.0, 1e-12);
    CHECK_NEAR(fs_throttle_probability(&t, 44 * MS + 999999), 10 / 11.0, 1e-12);
    CHECK_NEAR(fs_throttle_probability(&t, 45 * MS), 0, 0);
    CHECK_EQ_INT(t.requests, 0);
    fs_throttle_record(&t, 46 * MS, false);
    CHECK_NEAR(fs_throttle_probability(&t, 10000 * MS), 0, 0);  /* a long gap: all gone */
    CHECK_EQ_INT(fs_throttle_next_change_ns(&t, 10000 * MS + 300000), 700000);
}

static void throttle_max_reject_and_admit(void)
{
    fs_throttle t;
    fs_rng rng;
    fs_rng_seed(&rng, 7);
    fs_throttle_init(&t, 2.0, 0.5, 40 * MS);
    for (int i = 0; i < 1000; i++) {
        fs_throttle_record(&t, 0, false);
    }
    CHECK_NEAR(fs_throttle_probability(&t, 0), 0.5, 0);
    int sent = 0;
    for (int i = 0; i < 10000; i++) {
        sent += fs_throttle_admit(&t, 0, &rng);
    }
    CHECK(sent > 4700 && sent < 5300);
    CHECK_EQ_INT(t.requests, 1000 + (10000 - sent));    /* refusals count, admissions not yet */
    /* Scaled: half the probability, or capped at max_reject. */
    int sent2 = 0, sent3 = 0;
    for (int i = 0; i < 10000; i++) {
        sent2 += fs_throttle_admit_scaled(&t, 0, &rng, 0.5);
    }
    CHECK(sent2 > 7200 && sent2 < 7800);
    for (int i = 0; i < 1000; i++) {
        sent3 += fs_throttle_admit_scaled(&t, 0, &rng, 0.0);
    }
    CHECK_EQ_INT(sent3, 1000);
    /* No rejection while the dependency accepts: the RNG is not drawn. */
    fs_throttle u;
    fs_throttle_init(&u, 2.0, 1.0, 40 * MS);
    fs_rng before = rng;
    CHECK(fs_throttle_admit(&u, 0, &rng));
    CHECK(rng.s[0] == before.s[0] && rng.s[3] == before.s[3]);
}

/* A request passed unobserved counts as a request and an accept at once, only while the window
 * holds nothing but accepts. */
static void throttle_pass_accepted(void)
{
    fs_throttle t;
    fs_throttle_init(&t, 2.0, 1.0, 40 * MS);
    CHECK(fs_throttle_pass_accepted(&t, 0));
    CHECK(fs_throttle_pass_accepted(&t, 1 * MS));
    CHECK_EQ_INT(t.requests, 2);
    CHECK_EQ_INT(t.accepts, 2);
    fs_throttle_record(&t, 2 * MS, false);
    CHECK(!fs_throttle_pass_accepted(&t, 3 * MS));  /* a failure in the window */
    CHECK_EQ_INT(t.requests, 3);
    CHECK_EQ_INT(t.accepts, 2);
    CHECK(fs_throttle_pass_accepted(&t, 42 * MS));  /* the failure's bucket has left */
    CHECK_EQ_INT(t.requests, 1);
    CHECK_EQ_INT(t.accepts, 1);
}

const fs_test alimit_tests[] = {
    TEST_CASE(alimit_rejects_bad_config),
    TEST_CASE(alimit_admits_up_to_floor),
    TEST_CASE(alimit_aimd_rule),
    TEST_CASE(alimit_gradient2_rule),
    TEST_CASE(alimit_gradient2_long_rtt),
    TEST_CASE(alimit_vegas_rule),
    TEST_CASE(alimit_vegas_probe),
    TEST_CASE(alimit_settles_on_a_queue),
    TEST_CASE(throttle_rejects_bad_args),
    TEST_CASE(throttle_probability_rule),
    TEST_CASE(throttle_max_reject_and_admit),
    TEST_CASE(throttle_pass_accepted),
    TEST_END,
};
