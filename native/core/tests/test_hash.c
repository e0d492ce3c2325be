#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../fs_hash.h"
#include "runner.h"

static void hash_fnv1a_vectors(void)
{
    /* Published FNV-1a 64-bit test vectors. */
    CHECK(fs_fnv1a64(NULL, 0) == 0xcbf29ce484222325ULL);
    CHECK(fs_fnv1a64("a", 1) == 0xaf63dc4c8601ec8cULL);
    CHECK(fs_fnv1a64("foobar", 6) == 0x85944171f73967e8ULL);
}

static void hash_mix_and_bucket(void)
{
    CHECK(fs_mix64(0) == 0);
    CHECK(fs_mix64(1) != 1);
    /* The bucket is a pure function of the bytes: fixed values pin it across builds. */
    CHECK_EQ_INT(fs_rollout_bucket("", 0), fs_mix64(0xcbf29ce484222325ULL) % FS_ROLLOUT_BUCKETS);
    CHECK(fs_rollout_bucket("user-1", 6) == fs_rollout_bucket("user-1", 6));
    CHECK(fs_rollout_bucket("user-1", 6) < FS_ROLLOUT_BUCKETS);
}

static void hash_limits(void)
{
    CHECK_EQ_INT(fs_rollout_limit(0.0), 0);
    CHECK_EQ_INT(fs_rollout_limit(-5.0), 0);
    CHECK_EQ_INT(fs_rollout_limit(NAN), 0);
    CHECK_EQ_INT(fs_rollout_limit(100.0), FS_ROLLOUT_BUCKETS);
    CHECK_EQ_INT(fs_rollout_limit(1e9), FS_ROLLOUT_BUCKETS);
    CHECK_EQ_INT(fs_rollout_limit(30.0), 300000);
    CHECK_EQ_INT(fs_rollout_limit(0.00005), 1);     /* rounds to the nearest bucket */
    CHECK_EQ_INT(fs_rollout_limit(12.34567), 123457);
}

/* 100,000 keys at 30 %: close to 30 %, and raising the percentage only adds keys. */
static void hash_distribution(void)
{
    uint32_t at30 = fs_rollout_limit(30.0), at50 = fs_rollout_limit(50.0);
    int in30 = 0, lost = 0;
    int deciles[10] = {0};
    char buf[32];
    for (int i = 0; i < 100000; i++) {
        int n = snprintf(buf, sizeof buf, "user-%d", i);
        uint32_t b = fs_rollout_bucket(buf, (size_t)n);
        in30 += b < at30;
        lost += b < at30 && !(b < at50);
        deciles[b / (FS_ROLLOUT_BUCKETS / 10)]++;
    }
    CHECK(in30 > 29000 && in30 < 31000);
    CHECK_EQ_INT(lost, 0);
    for (int d = 0; d < 10; d++) {
        CHECK(deciles[d] > 9400 && deciles[d] < 10600);
    }
}

const fs_test hash_tests[] = {
    TEST_CASE(hash_fnv1a_vectors),
    TEST_CASE(hash_mix_and_bucket),
    TEST_CASE(hash_limits),
    TEST_CASE(hash_distribution),
    TEST_END,
};
