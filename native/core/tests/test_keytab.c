#include <stdint.h>
#include <stdlib.h>

#include "../fs_gcra.h"
#include "../fs_keytab.h"
#include "runner.h"

#define MS 1000000LL

static int64_t find(const fs_keytab *t, const uint64_t *keys, uint64_t key, uint64_t hash)
{
    uint32_t pos = fs_keytab_start(t, hash);
    int64_t e;
    while ((e = fs_keytab_next(t, hash, &pos)) >= 0) {
        if (keys[e] == key) {
            return e;
        }
    }
    return -1;
}

static void keytab_rejects_bad_args(void)
{
    fs_keytab t;
    CHECK(fs_keytab_mem_size(0) == 0);
    CHECK(fs_keytab_mem_size(FS_KEYTAB_MAX_KEYS + 1) == 0);
    CHECK(fs_keytab_init(&t, NULL, 4) == -1);
}

/* Keys found after inserts and evictions; a limited key is never evicted; a full table of
 * limited keys refuses new ones until the first refills. */
static void keytab_bounded_never_drops_limited(void)
{
    enum { MAXK = 64 };
    fs_keytab t;
    void *mem = malloc(fs_keytab_mem_size(MAXK));
    CHECK(fs_keytab_init(&t, mem, MAXK) == 0);
    fs_gcra g;
    fs_gcra_init(&g, 10 * MS, 1);
    uint64_t keys[MAXK];
    int64_t now = 1000 * MS, wait;
    bool evicted;
    for (uint64_t k = 0; k < MAXK; k++) {
        /* Colliding hashes (k / 4) exercise probing and key comparison. */
        int64_t e = fs_keytab_insert(&t, k / 4, now, &evicted, &wait);
        CHECK(e == (int64_t)k && !evicted);
        keys[e] = k;
        CHECK(fs_gcra_reserve_tat(&g, &t.tats[e], now + (int64_t)k * MS, 0, &wait));
    }
    for (uint64_t k = 0; k < MAXK; k++) {
        int64_t e = -1;
        uint32_t pos = fs_keytab_start(&t, k / 4);
        while ((e = fs_keytab_next(&t, k / 4, &pos)) >= 0 && keys[e] != k) {
        }
        CHECK(e == (int64_t)k);
    }
    CHECK(fs_keytab_limited(&t, now) == MAXK);
    CHECK(fs_keytab_insert(&t, 999, now, &evicted, &wait) == -1);
    CHECK_EQ_INT(wait, 10 * MS);           /* key 0 refills first */
    CHECK(fs_keytab_insert(&t, 999, now + 5 * MS, &evicted, &wait) == -1);
    CHECK_EQ_INT(wait, 5 * MS);
    /* At +10.5 ms only key 0 is full again: it is the one evicted. */
    int64_t e = fs_keytab_insert(&t, 999, now + 10 * MS + MS / 2, &evicted, &wait);
    CHECK(e == 0 && evicted);
    keys[0] = 999;
    CHECK(find(&t, keys, 999, 999) == 0);
    for (uint64_t k = 1; k < MAXK; k++) {
        uint32_t pos = fs_keytab_start(&t, k / 4);
        int64_t f;
        while ((f = fs_keytab_next(&t, k / 4, &pos)) >= 0 && keys[f] != k) {
        }
        CHECK(f == (int64_t)k);
    }
    CHECK(fs_keytab_limited(&t, now + 10 * MS + MS / 2) == MAXK - 1);
    fs_keytab_clear(&t);
    CHECK(find(&t, keys, 999, 999) == -1);
    free(mem);
}

/* Random churn against a plain array model: lookups always agree with it. */
static void keytab_matches_model(void)
{
    enum { MAXK = 257 };
    fs_keytab t;
    void *mem = malloc(fs_keytab_mem_size(MAXK));
    fs_keytab_init(&t, mem, MAXK);
    uint64_t keys[MAXK];
    uint64_t x = 0x2545F4914F6CDD1DULL;
    int64_t now = 0, wait;
    bool evicted;
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        uint64_t key = x % 1000;
        now += (int64_t)(x % 5);
        int64_t e = find(&t, keys, key, key % 97);
        if (e < 0) {
            e = fs_keytab_insert(&t, key % 97, now, &evicted, &wait);
            if (e < 0) {
                CHECK(wait > 0);
                continue;
            }
            keys[e] = key;
        }
        /* Stay limited for a random while. */
        t.tats[e] = now + (int64_t)(x % 400);
        /* Model: every stored key is unique, and each is found where it is. */
        if (i % 1000 == 0) {
            for (uint32_t j = 0; j < t.count; j++) {
                CHECK(find(&t, keys, keys[j], keys[j] % 97) == (int64_t)j);
            }
        }
    }
    free(mem);
}

const fs_test keytab_tests[] = {
    TEST_CASE(keytab_rejects_bad_args),
    TEST_CASE(keytab_bounded_never_drops_limited),
    TEST_CASE(keytab_matches_model),
    TEST_END,
};
