#include <float.h>
#include <string.h>

#include "../fs_backoff.h"
#include "runner.h"

static fs_backoff mk(fs_backoff_kind kind, double a, double b, double max)
{
    fs_backoff s;
    memset(&s, 0, sizeof s);
    s.kind = kind;
    s.jitter = FS_JITTER_NONE;
    s.a = a;
    s.b = b;
    s.max = max;
    return s;
}

/* Runs a fresh sequence and compares it exactly to want. */
static void check_seq(const fs_backoff *b, const double *want, size_t n)
{
    CHECK(fs_backoff_check(b) == FS_BACKOFF_OK);
    fs_rng rng;
    fs_rng_seed(&rng, 1);
    fs_backoff_state st;
    fs_backoff_reset(b, &st);
    for (size_t i = 0; i < n; i++) {
        double d = fs_backoff_next(b, &st, &rng);
        if (d != want[i])
            fs_test_fail(__FILE__, __LINE__, "kind %d step %zu: got %.17g want %.17g", (int)b->kind,
                         i, d, want[i]);
    }
    CHECK(st.k == n);
}

static int rng_equal(const fs_rng *x, const fs_rng *y)
{
    return memcmp(x->s, y->s, sizeof x->s) == 0;
}

static void test_backoff_const(void)
{
    fs_backoff b = mk(FS_BACKOFF_CONST, 0.25, 0, INFINITY);
    static const double want[] = {0.25, 0.25, 0.25, 0.25};
    check_seq(&b, want, 4);
    b.a = 0.0;
    static const double zero[] = {0, 0};
    check_seq(&b, zero, 2);
}

static void test_backoff_interval(void)
{
    static const double seq[] = {1.0, 2.0, 3.0};
    fs_backoff b = mk(FS_BACKOFF_INTERVAL, 0, 0, INFINITY);
    b.seq = seq;
    b.seq_len = 3;
    static const double want[] = {1, 2, 3, 1, 2, 3, 1};
    check_seq(&b, want, 7);
    b.max = 2.5;
    static const double capped[] = {1, 2, 2.5, 1, 2, 2.5};
    check_seq(&b, capped, 6);
    b.seq_len = 1;
    static const double one[] = {1, 1, 1};
    check_seq(&b, one, 3);
}

static void test_backoff_linear(void)
{
    fs_backoff b = mk(FS_BACKOFF_LINEAR, 1.0, 0.5, INFINITY);
    static const double want[] = {1, 1.5, 2, 2.5, 3, 3.5};
    check_seq(&b, want, 6);
    b.max = 2.25;
    static const double capped[] = {1, 1.5, 2, 2.25, 2.25, 2.25};
    check_seq(&b, capped, 6);
    b.b = 0.0;
    static const double flat[] = {1, 1, 1};
    check_seq(&b, flat, 3);

    /* Huge k and huge slope: finite, and k saturates instead of wrapping to 0. */
    fs_rng rng;
    fs_rng_seed(&rng, 1);
    fs_backoff_state st;
    b = mk(FS_BACKOFF_LINEAR, 1.0, 1e308, INFINITY);
    fs_backoff_reset(&b, &st);
    st.k = UINT64_MAX;
    for (int i = 0; i < 3; i++) {
        double d = fs_backoff_next(&b, &st, &rng);
        CHECK(isfinite(d) && d == DBL_MAX);
        CHECK(st.k == UINT64_MAX);
    }
    b.max = 60.0;
    st.k = 1000000;
    CHECK(fs_backoff_next(&b, &st, &rng) == 60.0);
}

static void test_backoff_expo(void)
{
    fs_backoff b = mk(FS_BACKOFF_EXPO, 0.5, 2.0, INFINITY);
    static const double want[] = {0.5, 1, 2, 4, 8, 16, 32};
    check_seq(&b, want, 7);
    b.max = 5.0;
    static const double capped[] = {0.5, 1, 2, 4, 5, 5, 5, 5};
    check_seq(&b, capped, 8);
    b = mk(FS_BACKOFF_EXPO, 0.1, 3.0, INFINITY);
    static const double three[] = {0.1, 0.1 * 3, 0.1 * 9, 0.1 * 27};
    check_seq(&b, three, 4);
    b = mk(FS_BACKOFF_EXPO, 2.0, 1.0, INFINITY);
    static const double flat[] = {2, 2, 2};
    check_seq(&b, flat, 3);

    fs_rng rng;
    fs_rng_seed(&rng, 1);
    fs_backoff_state st;
    /* Jump straight to k = 10^6. */
    b = mk(FS_BACKOFF_EXPO, 0.5, 2.0, 30.0);
    fs_backoff_reset(&b, &st);
    st.k = 1000000;
    CHECK(fs_backoff_next(&b, &st, &rng) == 30.0);
    b.max = INFINITY;
    fs_backoff_reset(&b, &st);
    st.k = 1000000;
    CHECK(fs_backoff_next(&b, &st, &rng) == DBL_MAX);
    /* a = 0 never becomes 0 * inf = NaN. */
    b.a = 0.0;
    fs_backoff_reset(&b, &st);
    st.k = 1000000;
    CHECK(fs_backoff_next(&b, &st, &rng) == 0.0);

    /* Walk through the overflow point: nondecreasing, finite, and capped stays capped. */
    b = mk(FS_BACKOFF_EXPO, 1.0, 10.0, INFINITY);
    fs_backoff_reset(&b, &st);
    double prev = 0.0;
    int capped_at = -1;
    for (int i = 0; i < 2000; i++) {
        double d = fs_backoff_next(&b, &st, &rng);
        CHECK(isfinite(d) && d >= prev);
        if (d == DBL_MAX && capped_at < 0)
            capped_at = i;
        if (capped_at >= 0)
            CHECK(d == DBL_MAX);
        prev = d;
    }
    CHECK(capped_at >= 300 && capped_at <= 310); /* 10^308 is the last finite power */
}

static void test_backoff_fibo(void)
{
    fs_backoff b = mk(FS_BACKOFF_FIBO, 1.0, 1.0, INFINITY);
    static const double want[] = {1, 2, 3, 5, 8, 13, 21, 34};
    check_seq(&b, want, 8);
    b = mk(FS_BACKOFF_FIBO, 2.0, 0.5, INFINITY);
    static const double half[] = {2, 2.5, 4.5, 7, 11.5, 18.5};
    check_seq(&b, half, 6);
    b = mk(FS_BACKOFF_FIBO, 1.0, 0.0, INFINITY);
    static const double classic[] = {1, 1, 2, 3, 5, 8};
    check_seq(&b, classic, 6);
    b = mk(FS_BACKOFF_FIBO, 1.0, 1.0, 10.0);
    static const double capped[] = {1, 2, 3, 5, 8, 10, 10, 10};
    check_seq(&b, capped, 8);
    b = mk(FS_BACKOFF_FIBO, 0.0, 0.0, INFINITY);
    static const double zero[] = {0, 0, 0};
    check_seq(&b, zero, 3);

    /* 10^6 steps uncapped: finite all the way, ends pinned at the largest double. */
    fs_rng rng;
    fs_rng_seed(&rng, 1);
    fs_backoff_state st;
    b = mk(FS_BACKOFF_FIBO, 1.0, 1.0, INFINITY);
    fs_backoff_reset(&b, &st);
    double prev = 0.0, d = 0.0;
    int bad = 0;
    for (int i = 0; i < 1000000; i++) {
        d = fs_backoff_next(&b, &st, &rng);
        bad += !(isfinite(d) && d >= prev);
        prev = d;
    }
    CHECK(bad == 0);
    CHECK(d == DBL_MAX);
    CHECK(isfinite(st.cur) && isfinite(st.prev));
}

static void test_backoff_no_rng_without_jitter(void)
{
    static const double seq[] = {1.0};
    fs_backoff_kind kinds[] = {FS_BACKOFF_CONST, FS_BACKOFF_INTERVAL, FS_BACKOFF_LINEAR,
                               FS_BACKOFF_EXPO, FS_BACKOFF_FIBO};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        fs_backoff b = mk(kinds[i], 1.0, 2.0, INFINITY);
        b.seq = seq;
        b.seq_len = 1;
        fs_rng rng, before;
        fs_rng_seed(&rng, 8);
        before = rng;
        fs_backoff_state st;
        fs_backoff_reset(&b, &st);
        for (int j = 0; j < 5; j++)
            fs_backoff_next(&b, &st, &rng);
        CHECK(rng_equal(&rng, &before));
    }
}

static void test_backoff_reset_and_independent_states(void)
{
    fs_backoff b = mk(FS_BACKOFF_FIBO, 1.0, 1.0, INFINITY);
    fs_rng rng;
    fs_rng_seed(&rng, 1);
    fs_backoff_state s1, s2;
    fs_backoff_reset(&b, &s1);
    fs_backoff_reset(&b, &s2);
    CHECK(fs_backoff_next(&b, &s1, &rng) == 1.0);
    CHECK(fs_backoff_next(&b, &s1, &rng) == 2.0);
    CHECK(fs_backoff_next(&b, &s2, &rng) == 1.0); /* s2 unaffected by s1 */
    CHECK(fs_backoff_next(&b, &s1, &rng) == 3.0);
    fs_backoff_reset(&b, &s1);
    CHECK(fs_backoff_next(&b, &s1, &rng) == 1.0);
    CHECK(s1.k == 1);
}

static void test_backoff_decorrexp(void)
{
    fs_backoff b = mk(FS_BACKOFF_DECORREXP, 1.0, 3.0, 20.0);
    CHECK(fs_backoff_check(&b) == FS_BACKOFF_OK);
    fs_rng rng;
    fs_rng_seed(&rng, 11);
    int near_max = 0, below_prev = 0;
    for (int run = 0; run < 200; run++) {
        fs_backoff_state st;
        fs_backoff_reset(&b, &st);
        double cur = b.a;
        for (int i = 0; i < 30; i++) {
            double d = fs_backoff_next(&b, &st, &rng);
            double hi = fmin(cur * b.b, b.max);
            CHECK(d >= b.a && d <= hi);
            CHECK(d < hi || hi == b.a); /* half-open draw */
            near_max += d > 19.0;
            below_prev += d < cur;
            cur = d;
        }
    }
    CHECK(near_max > 0);    /* the range really reaches up to max */
    CHECK(below_prev > 0);  /* and really draws from a, not from cur */

    /* Same seed, same sequence; different seed, different sequence. */
    fs_rng r1, r2, r3;
    fs_rng_seed(&r1, 5);
    fs_rng_seed(&r2, 5);
    fs_rng_seed(&r3, 6);
    fs_backoff_state s1, s2, s3;
    fs_backoff_reset(&b, &s1);
    fs_backoff_reset(&b, &s2);
    fs_backoff_reset(&b, &s3);
    int diff = 0;
    for (int i = 0; i < 10; i++) {
        double x = fs_backoff_next(&b, &s1, &r1);
        CHECK(x == fs_backoff_next(&b, &s2, &r2));
        diff += x != fs_backoff_next(&b, &s3, &r3);
    }
    CHECK(diff > 0);

    /* Degenerate: a == max pins every delay; a = 0 stays 0; huge base is tamed by max. */
    b = mk(FS_BACKOFF_DECORREXP, 2.0, 3.0, 2.0);
    fs_backoff_state st;
    fs_backoff_reset(&b, &st);
    for (int i = 0; i < 5; i++)
        CHECK(fs_backoff_next(&b, &st, &rng) == 2.0);
    b = mk(FS_BACKOFF_DECORREXP, 0.0, 3.0, 2.0);
    fs_backoff_reset(&b, &st);
    for (int i = 0; i < 5; i++)
        CHECK(fs_backoff_next(&b, &st, &rng) == 0.0);
    b = mk(FS_BACKOFF_DECORREXP, 1.0, 1e308, 1e300);
    fs_backoff_reset(&b, &st);
    for (int i = 0; i < 50; i++) {
        double d = fs_backoff_next(&b, &st, &rng);
        CHECK(isfinite(d) && d >= 1.0 && d <= 1e300);
    }
}

static double softexp_f(double t, double p)
{
    return pow(2.0, t) * tanh(sqrt(p * t));
}

static void test_backoff_softexp_formula(void)
{
    const double a = 1.0, p = 4.0, c = 1.0 / 1.4;
    fs_backoff b = mk(FS_BACKOFF_SOFTEXP, a, p, INFINITY);
    b.c = c;
    CHECK(fs_backoff_check(&b) == FS_BACKOFF_OK);
    /* Replay the uniform draws on a twin generator and recompute Polly's formula. */
    fs_rng rng, twin;
    fs_rng_seed(&rng, 21);
    fs_rng_seed(&twin, 21);
    fs_backoff_state st;
    fs_backoff_reset(&b, &st);
    double prevf = 0.0, sum = 0.0;
    for (int k = 0; k < 20; k++) {
        double d = fs_backoff_next(&b, &st, &rng);
        double t = k + fs_rng_uniform(&twin);
        double f = softexp_f(t, p);
        CHECK_NEAR(d, (f - prevf) * c * a, 1e-12 * (f + 1.0));
        CHECK(d > 0.0);
        prevf = f;
        sum += d;
        /* Telescoping: the total so far is c*a*f(t_k) with t_k in [k, k+1). */
        CHECK(sum >= c * a * softexp_f(k, p) * (1 - 1e-12));
        CHECK(sum <= c * a * softexp_f(k + 1, p) * (1 + 1e-12));
    }
    CHECK(rng_equal(&rng, &twin));

    /* The first delay's median is roughly the configured median (about 0.9 * a for Polly). */
    enum { RUNS = 4001 };
    int below = 0;
    b.a = 2.0;
    for (int i = 0; i < RUNS; i++) {
        fs_backoff_reset(&b, &st);
        below += fs_backoff_next(&b, &st, &rng) < 0.9 * b.a;
    }
    CHECK(below > RUNS * 0.4 && below < RUNS * 0.6);
}

static void test_backoff_softexp_cap_and_overflow(void)
{
    fs_backoff b = mk(FS_BACKOFF_SOFTEXP, 1.0, 4.0, 30.0);
    b.c = 1.0 / 1.4;
    fs_rng rng;
    fs_rng_seed(&rng, 4);
    fs_backoff_state st;
    for (int run = 0; run < 100; run++) {
        fs_backoff_reset(&b, &st);
        int capped = 0;
        for (int i = 0; i < 40; i++) {
            double d = fs_backoff_next(&b, &st, &rng);
            CHECK(isfinite(d) && d >= 0.0 && d <= 30.0);
            if (capped)
                CHECK(d == 30.0); /* once at max, stays at max */
            capped |= d == 30.0;
        }
        CHECK(capped);
    }
    /* Uncapped: walks past t = 1024 where 2^t overflows; every delay stays finite. */
    b.max = INFINITY;
    fs_backoff_reset(&b, &st);
    int bad = 0;
    double d = 0.0;
    for (int i = 0; i < 3000; i++) {
        d = fs_backoff_next(&b, &st, &rng);
        bad += !(isfinite(d) && d >= 0.0);
    }
    CHECK(bad == 0);
    CHECK(d == DBL_MAX);
    /* Jump to k = 10^6 directly. */
    fs_backoff_reset(&b, &st);
    st.k = 1000000;
    d = fs_backoff_next(&b, &st, &rng);
    CHECK(isfinite(d) && d == DBL_MAX);
    b.max = 45.0;
    fs_backoff_reset(&b, &st);
    st.k = 1000000;
    CHECK(fs_backoff_next(&b, &st, &rng) == 45.0);
    /* Huge a * c overflows the product even when f is finite. */
    b = mk(FS_BACKOFF_SOFTEXP, 1e300, 4.0, INFINITY);
    b.c = 1e300;
    fs_backoff_reset(&b, &st);
    for (int i = 0; i < 5; i++) {
        d = fs_backoff_next(&b, &st, &rng);
        CHECK(isfinite(d) && d >= 0.0);
    }
}

static void test_jitter_apply(void)
{
    enum { N = 100000 };
    fs_rng rng;
    fs_rng_seed(&rng, 77);
    double d = 8.0, sf = 0.0, se = 0.0, minf = d, mine = d, maxe = 0.0;
    for (int i = 0; i < N; i++) {
        double f = fs_jitter_apply(FS_JITTER_FULL, d, &rng);
        double e = fs_jitter_apply(FS_JITTER_EQUAL, d, &rng);
        CHECK(f >= 0.0 && f < d);
        CHECK(e >= d / 2 && e <= d);
        sf += f;
        se += e;
        minf = fmin(minf, f);
        mine = fmin(mine, e);
        maxe = fmax(maxe, e);
    }
    CHECK_NEAR(sf / N, d / 2, 0.05);
    CHECK_NEAR(se / N, 3 * d / 4, 0.03);
    CHECK(minf < 0.01);
    CHECK(mine < d / 2 + 0.01 && maxe > d - 0.01);

    fs_rng before = rng;
    CHECK(fs_jitter_apply(FS_JITTER_NONE, d, &rng) == d);
    CHECK(rng_equal(&rng, &before));
    CHECK(fs_jitter_apply(FS_JITTER_FULL, 0.0, &rng) == 0.0);
    CHECK(fs_jitter_apply(FS_JITTER_EQUAL, 0.0, &rng) == 0.0);
    for (int i = 0; i < 1000; i++) {
        double x = fs_jitter_apply(FS_JITTER_EQUAL, DBL_MAX, &rng);
        CHECK(isfinite(x) && x >= DBL_MAX / 2);
        x = fs_jitter_apply(FS_JITTER_FULL, DBL_MAX, &rng);
        CHECK(isfinite(x) && x >= 0.0);
    }
}

static void test_backoff_jitter_after_cap(void)
{
    fs_rng rng;
    fs_rng_seed(&rng, 13);
    fs_backoff_state st;
    fs_backoff b = mk(FS_BACKOFF_EXPO, 1.0, 2.0, 5.0);
    for (int j = FS_JITTER_FULL; j <= FS_JITTER_EQUAL; j++) {
        b.jitter = (fs_jitter)j;
        double hi = 0.0;
        for (int run = 0; run < 500; run++) {
            fs_backoff_reset(&b, &st);
            for (int k = 0; k < 10; k++) {
                double raw = fmin(pow(2.0, k), 5.0);
                double d = fs_backoff_next(&b, &st, &rng);
                CHECK(d >= (j == FS_JITTER_EQUAL ? raw / 2 : 0.0) && d <= raw);
                hi = fmax(hi, d);
            }
        }
        CHECK(hi > 4.9); /* jitter spans up to the capped value */
    }
    /* Jitter on an uncapped, overflowed delay is still finite. */
    b = mk(FS_BACKOFF_EXPO, 1.0, 2.0, INFINITY);
    b.jitter = FS_JITTER_FULL;
    fs_backoff_reset(&b, &st);
    st.k = 1000000;
    for (int i = 0; i < 10; i++) {
        double d = fs_backoff_next(&b, &st, &rng);
        CHECK(isfinite(d) && d >= 0.0);
    }
}

static void test_backoff_check(void)
{
    static const double good_seq[] = {1.0, 0.0};
    static const double neg_seq[] = {1.0, -1.0};
    static const double nan_seq[] = {NAN};
    static const double inf_seq[] = {1.0, INFINITY};
    fs_backoff b;

#define EXPECT(err, ...) \
    do { \
        b = mk(FS_BACKOFF_EXPO, 1.0, 2.0, INFINITY); \
        __VA_ARGS__; \
        CHECK_EQ_INT(fs_backoff_check(&b), err); \
    } while (0)

    EXPECT(FS_BACKOFF_OK, (void)0);
    EXPECT(FS_BACKOFF_EKIND, b.kind = FS_BACKOFF_KIND_COUNT);
    EXPECT(FS_BACKOFF_EKIND, b.kind = (fs_backoff_kind)-1);
    EXPECT(FS_BACKOFF_EKIND, b.jitter = FS_JITTER_COUNT);
    EXPECT(FS_BACKOFF_EKIND, b.jitter = (fs_jitter)-1);
    EXPECT(FS_BACKOFF_EKIND, b.kind = (fs_backoff_kind)99; b.a = NAN); /* kind comes first */

    /* a, for every kind that uses it. */
    fs_backoff_kind uses_a[] = {FS_BACKOFF_CONST, FS_BACKOFF_LINEAR, FS_BACKOFF_EXPO,
                                FS_BACKOFF_FIBO, FS_BACKOFF_DECORREXP, FS_BACKOFF_SOFTEXP};
    double bad_a[] = {-1.0, -0.0 - 1e-300, NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof uses_a / sizeof uses_a[0]; i++) {
        for (size_t j = 0; j < sizeof bad_a / sizeof bad_a[0]; j++) {
            EXPECT(FS_BACKOFF_EA, b.kind = uses_a[i]; b.c = 1.0; b.max = 10.0; b.a = bad_a[j]);
        }
        if (uses_a[i] != FS_BACKOFF_SOFTEXP)
            EXPECT(FS_BACKOFF_OK, b.kind = uses_a[i]; b.c = 1.0; b.max = 10.0; b.a = 0.0);
    }
    EXPECT(FS_BACKOFF_EA, b.kind = FS_BACKOFF_SOFTEXP; b.c = 1.0; b.a = 0.0);

    /* b, per kind. */
    EXPECT(FS_BACKOFF_EB, b.b = 0.999);
    EXPECT(FS_BACKOFF_EB, b.b = NAN);
    EXPECT(FS_BACKOFF_EB, b.b = INFINITY);
    EXPECT(FS_BACKOFF_OK, b.b = 1.0);
    EXPECT(FS_BACKOFF_EB, b.kind = FS_BACKOFF_LINEAR; b.b = -0.5);
    EXPECT(FS_BACKOFF_EB, b.kind = FS_BACKOFF_LINEAR; b.b = NAN);
    EXPECT(FS_BACKOFF_EB, b.kind = FS_BACKOFF_LINEAR; b.b = INFINITY);
    EXPECT(FS_BACKOFF_OK, b.kind = FS_BACKOFF_LINEAR; b.b = 0.0);
    EXPECT(FS_BACKOFF_EB, b.kind = FS_BACKOFF_FIBO; b.b = -1.0);
    EXPECT(FS_BACKOFF_EB, b.kind = FS_BACKOFF_FIBO; b.b = NAN);
    EXPECT(FS_BACKOFF_OK, b.kind = FS_BACKOFF_FIBO; b.b = 0.0);
    EXPECT(FS_BACKOFF_EB, b.kind = FS_BACKOFF_DECORREXP; b.max = 10; b.b = 0.5);
    EXPECT(FS_BACKOFF_EB, b.kind = FS_BACKOFF_DECORREXP; b.max = 10; b.b = NAN);
    EXPECT(FS_BACKOFF_EB, b.kind = FS_BACKOFF_SOFTEXP; b.c = 1; b.b = 0.0);
    EXPECT(FS_BACKOFF_EB, b.kind = FS_BACKOFF_SOFTEXP; b.c = 1; b.b = -4.0);
    EXPECT(FS_BACKOFF_EB, b.kind = FS_BACKOFF_SOFTEXP; b.c = 1; b.b = INFINITY);
    /* b and c are ignored where unused. */
    EXPECT(FS_BACKOFF_OK, b.kind = FS_BACKOFF_CONST; b.b = NAN; b.c = NAN);
    EXPECT(FS_BACKOFF_OK, b.c = -1.0);

    /* c: softexp only. */
    EXPECT(FS_BACKOFF_EC, b.kind = FS_BACKOFF_SOFTEXP; b.c = 0.0);
    EXPECT(FS_BACKOFF_EC, b.kind = FS_BACKOFF_SOFTEXP; b.c = -1.0);
    EXPECT(FS_BACKOFF_EC, b.kind = FS_BACKOFF_SOFTEXP; b.c = NAN);
    EXPECT(FS_BACKOFF_EC, b.kind = FS_BACKOFF_SOFTEXP; b.c = INFINITY);
    EXPECT(FS_BACKOFF_OK, b.kind = FS_BACKOFF_SOFTEXP; b.c = 1.0 / 1.4);

    /* max. */
    EXPECT(FS_BACKOFF_EMAX, b.max = NAN);
    EXPECT(FS_BACKOFF_EMAX, b.max = -1.0);
    EXPECT(FS_BACKOFF_EMAX, b.max = -INFINITY);
    EXPECT(FS_BACKOFF_EMAX, b.max = 0.5); /* below a */
    EXPECT(FS_BACKOFF_OK, b.max = 1.0);   /* equal to a */
    EXPECT(FS_BACKOFF_EMAX, b.kind = FS_BACKOFF_DECORREXP; b.max = INFINITY);
    EXPECT(FS_BACKOFF_OK, b.kind = FS_BACKOFF_DECORREXP; b.max = 1.0);
    EXPECT(FS_BACKOFF_EMAX, b.kind = FS_BACKOFF_SOFTEXP; b.c = 1; b.max = 0.5);
    EXPECT(FS_BACKOFF_EMAX, b.kind = FS_BACKOFF_CONST; b.max = 0.5);

    /* interval: a is unused; max still validated; then the sequence. */
    EXPECT(FS_BACKOFF_OK, b.kind = FS_BACKOFF_INTERVAL; b.a = NAN; b.seq = good_seq; b.seq_len = 2);
    EXPECT(FS_BACKOFF_OK, b.kind = FS_BACKOFF_INTERVAL; b.seq = good_seq; b.seq_len = 2; b.max = 0.5);
    EXPECT(FS_BACKOFF_EMAX, b.kind = FS_BACKOFF_INTERVAL; b.seq = good_seq; b.seq_len = 2; b.max = NAN);
    EXPECT(FS_BACKOFF_EMAX, b.kind = FS_BACKOFF_INTERVAL; b.seq = good_seq; b.seq_len = 2; b.max = -1);
    EXPECT(FS_BACKOFF_ESEQ, b.kind = FS_BACKOFF_INTERVAL; b.seq = good_seq; b.seq_len = 0);
    EXPECT(FS_BACKOFF_ESEQ, b.kind = FS_BACKOFF_INTERVAL; b.seq = NULL; b.seq_len = 2);
    EXPECT(FS_BACKOFF_ESEQ, b.kind = FS_BACKOFF_INTERVAL; b.seq = neg_seq; b.seq_len = 2);
    EXPECT(FS_BACKOFF_ESEQ, b.kind = FS_BACKOFF_INTERVAL; b.seq = nan_seq; b.seq_len = 1);
    EXPECT(FS_BACKOFF_ESEQ, b.kind = FS_BACKOFF_INTERVAL; b.seq = inf_seq; b.seq_len = 2);
    EXPECT(FS_BACKOFF_OK, b.kind = FS_BACKOFF_INTERVAL; b.seq = neg_seq; b.seq_len = 1);

    /* First invalid field wins. */
    EXPECT(FS_BACKOFF_EA, b.a = -1.0; b.b = 0.0; b.max = NAN);
    EXPECT(FS_BACKOFF_EB, b.b = 0.0; b.max = NAN);
#undef EXPECT
}

const fs_test backoff_tests[] = {
    TEST_CASE(test_backoff_const),
    TEST_CASE(test_backoff_interval),
    TEST_CASE(test_backoff_linear),
    TEST_CASE(test_backoff_expo),
    TEST_CASE(test_backoff_fibo),
    TEST_CASE(test_backoff_no_rng_without_jitter),
    TEST_CASE(test_backoff_reset_and_independent_states),
    TEST_CASE(test_backoff_decorrexp),
    TEST_CASE(test_backoff_softexp_formula),
    TEST_CASE(test_backoff_softexp_cap_and_overflow),
    TEST_CASE(test_jitter_apply),
    TEST_CASE(test_backoff_jitter_after_cap),
    TEST_CASE(test_backoff_check),
    TEST_END,
};
