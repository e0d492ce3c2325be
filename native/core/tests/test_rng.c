#include <stdint.h>

#include "../fs_rng.h"
#include "runner.h"

/* Reference values from an independent Python implementation of splitmix64/xoshiro256**. */
static void test_rng_known_answers(void)
{
    fs_rng r;
    fs_rng_seed(&r, 0);
    CHECK(r.s[0] == 0xe220a8397b1dcdafULL);
    CHECK(r.s[1] == 0x6e789e6aa1b965f4ULL);
    CHECK(r.s[2] == 0x06c45d188009454fULL);
    CHECK(r.s[3] == 0xf88bb8a8724c81ecULL);
    static const uint64_t want0[] = {0x99ec5f36cb75f2b4ULL, 0xbf6e1f784956452aULL,
                                     0x1a5f849d4933e6e0ULL, 0x6aa594f1262d2d2cULL,
                                     0xbba5ad4a1f842e59ULL};
    for (int i = 0; i < 5; i++)
        CHECK(fs_rng_next(&r) == want0[i]);
    fs_rng_seed(&r, 42);
    static const uint64_t want42[] = {0x15780b2e0c2ec716ULL, 0x6104d9866d113a7eULL,
                                      0xae17533239e499a1ULL, 0xecb8ad4703b360a1ULL,
                                      0xfde6dc7fe2ec5e64ULL};
    for (int i = 0; i < 5; i++)
        CHECK(fs_rng_next(&r) == want42[i]);
}

static void test_rng_determinism(void)
{
    fs_rng a, b, c;
    fs_rng_seed(&a, 12345);
    fs_rng_seed(&b, 12345);
    fs_rng_seed(&c, 12346);
    int same_c = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = fs_rng_next(&a), y = fs_rng_next(&b), z = fs_rng_next(&c);
        CHECK(x == y);
        same_c += x == z;
    }
    CHECK(same_c == 0);
    /* Reseeding restarts the stream. */
    fs_rng_seed(&a, 12345);
    fs_rng_seed(&b, 12345);
    fs_rng_next(&b);
    fs_rng_seed(&b, 12345);
    CHECK(fs_rng_next(&a) == fs_rng_next(&b));
}

static void test_rng_nonzero_state(void)
{
    static const uint64_t seeds[] = {0, 1, UINT64_MAX, 0x9E3779B97F4A7C15ULL,
                                     (uint64_t)0 - 0x9E3779B97F4A7C15ULL};
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
        fs_rng r;
        fs_rng_seed(&r, seeds[i]);
        CHECK((r.s[0] | r.s[1] | r.s[2] | r.s[3]) != 0);
        uint64_t acc = 0;
        for (int j = 0; j < 8; j++)
            acc |= fs_rng_next(&r);
        CHECK(acc != 0);
    }
}

static void test_rng_uniform_bounds_and_distribution(void)
{
    enum { N = 200000, BUCKETS = 20 };
    fs_rng r;
    fs_rng_seed(&r, 7);
    int counts[BUCKETS] = {0};
    double sum = 0.0, lo = 1.0, hi = 0.0;
    for (int i = 0; i < N; i++) {
        double u = fs_rng_uniform(&r);
        CHECK(u >= 0.0 && u < 1.0);
        sum += u;
        lo = u < lo ? u : lo;
        hi = u > hi ? u : hi;
        counts[(int)(u * BUCKETS)]++;
    }
    CHECK_NEAR(sum / N, 0.5, 0.005);
    CHECK(lo < 1e-4);
    CHECK(hi > 1.0 - 1e-4);
    /* Chi-square, 19 dof: the 99.99th percentile is about 50. */
    double expect = (double)N / BUCKETS, chi = 0.0;
    for (int b = 0; b < BUCKETS; b++)
        chi += (counts[b] - expect) * (counts[b] - expect) / expect;
    CHECK(chi < 50.0);
}

static void test_rng_uniform_uses_53_bits(void)
{
    fs_rng r;
    fs_rng_seed(&r, 99);
    /* u * 2^53 must be an integer, and low bits must vary (not a 32-bit generator). */
    int odd = 0;
    for (int i = 0; i < 1000; i++) {
        double x = fs_rng_uniform(&r) * 0x1.0p53;
        CHECK(x == floor(x));
        odd += ((uint64_t)x & 1) != 0;
    }
    CHECK(odd > 400 && odd < 600);
    /* The top 53 bits, specifically. */
    fs_rng a, b;
    fs_rng_seed(&a, 5);
    fs_rng_seed(&b, 5);
    CHECK(fs_rng_uniform(&a) == (double)(fs_rng_next(&b) >> 11) * 0x1.0p-53);
}

static void test_rng_range(void)
{
    fs_rng r;
    fs_rng_seed(&r, 3);
    double sum = 0.0;
    for (int i = 0; i < 100000; i++) {
        double x = fs_rng_range(&r, 2.0, 5.0);
        CHECK(x >= 2.0 && x < 5.0);
        sum += x;
    }
    CHECK_NEAR(sum / 100000, 3.5, 0.02);
    CHECK(fs_rng_range(&r, 4.0, 4.0) == 4.0);
    CHECK(fs_rng_range(&r, 4.0, 1.0) == 4.0);
    CHECK(fs_rng_range(&r, 1.0, NAN) == 1.0);
    /* Tiny span: still half-open despite rounding. */
    double lo = 1.0, hi = nextafter(1.0, 2.0);
    for (int i = 0; i < 1000; i++)
        CHECK(fs_rng_range(&r, lo, hi) == lo);
    /* Huge span that overflows hi - lo. */
    for (int i = 0; i < 1000; i++) {
        double x = fs_rng_range(&r, -1.7e308, 1.7e308);
        CHECK(isfinite(x) && x >= -1.7e308 && x < 1.7e308);
    }
}

const fs_test rng_tests[] = {
    TEST_CASE(test_rng_known_answers),
    TEST_CASE(test_rng_determinism),
    TEST_CASE(test_rng_nonzero_state),
    TEST_CASE(test_rng_uniform_bounds_and_distribution),
    TEST_CASE(test_rng_uniform_uses_53_bits),
    TEST_CASE(test_rng_range),
    TEST_END,
};
