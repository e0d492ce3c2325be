#include <stdlib.h>
#include <string.h>

#include "../fs_cache.h"
#include "../fs_rng.h"
#include "runner.h"

/* Lists, chains and counts agree with each other. */
static int cache_valid(const fs_cache *c)
{
    uint32_t n = 0;
    int32_t prev = FS_CACHE_NONE;
    for (int32_t i = c->oldest; i != FS_CACHE_NONE; i = c->entries[i].newer) {
        if (!c->entries[i].live || c->entries[i].older != prev || n > c->cap)
            return 0;
        if (fs_cache_find(c, c->entries[i].hash) == FS_CACHE_NONE)
            return 0;
        prev = i;
        n++;
    }
    if (prev != c->newest || n != c->len)
        return 0;
    n = 0;
    prev = FS_CACHE_NONE;
    for (int32_t i = c->earliest; i != FS_CACHE_NONE; i = c->entries[i].exp_next) {
        if (c->entries[i].exp_prev != prev)
            return 0;
        if (prev != FS_CACHE_NONE && c->entries[prev].expires_ns > c->entries[i].expires_ns)
            return 0;
        prev = i;
        n++;
    }
    if (prev != c->latest || n != c->len)
        return 0;
    uint32_t chained = 0;
    for (uint32_t b = 0; b < c->nbuckets; b++)
        for (int32_t i = c->buckets[b]; i != FS_CACHE_NONE; i = c->entries[i].chain)
            chained++;
    return chained == c->len;
}

static void cache_basic(void)
{
    fs_cache_entry entries[4];
    int32_t buckets[8];
    fs_cache c;
    CHECK_EQ_INT(fs_cache_buckets_for(4), 8);
    CHECK_EQ_INT(fs_cache_buckets_for(9), 16);
    fs_cache_init(&c, entries, 4, buckets, 8);
    CHECK(fs_cache_find(&c, 1) == FS_CACHE_NONE);
    CHECK(fs_cache_oldest(&c) == FS_CACHE_NONE);
    int32_t a = fs_cache_insert(&c, 10, FS_CACHE_NEVER);
    int32_t b = fs_cache_insert(&c, 20, FS_CACHE_NEVER);
    int32_t b2 = fs_cache_insert(&c, 20, FS_CACHE_NEVER); /* same hash, another key */
    int32_t d = fs_cache_insert(&c, 30, FS_CACHE_NEVER);
    CHECK(a >= 0 && b >= 0 && b2 >= 0 && d >= 0);
    CHECK(fs_cache_insert(&c, 40, FS_CACHE_NEVER) == FS_CACHE_NONE); /* full */
    CHECK(cache_valid(&c) && c.len == 4);
    CHECK(fs_cache_find(&c, 10) == a);
    int32_t first = fs_cache_find(&c, 20);
    int32_t second = fs_cache_find_next(&c, first);
    CHECK((first == b && second == b2) || (first == b2 && second == b));
    CHECK(fs_cache_find_next(&c, second) == FS_CACHE_NONE);
    /* LRU: a is oldest; touching it makes b oldest. */
    CHECK(fs_cache_oldest(&c) == a);
    fs_cache_touch(&c, a);
    CHECK(fs_cache_oldest(&c) == b && c.newest == a);
    fs_cache_touch(&c, a); /* already newest */
    CHECK(cache_valid(&c));
    fs_cache_remove(&c, b);
    CHECK(fs_cache_find(&c, 20) == b2 && c.len == 3 && cache_valid(&c));
    CHECK(fs_cache_insert(&c, 50, FS_CACHE_NEVER) == b); /* the freed index is reused */
    /* oldest to newest: b2, d, a, b */
    int32_t order[4], n = 0;
    for (int32_t i = fs_cache_oldest(&c); i != FS_CACHE_NONE; i = fs_cache_newer(&c, i))
        order[n++] = i;
    CHECK(n == 4 && order[0] == b2 && order[1] == d && order[2] == a && order[3] == b);
    fs_cache_clear(&c);
    CHECK(c.len == 0 && fs_cache_find(&c, 10) == FS_CACHE_NONE && cache_valid(&c));
}

static void cache_expiry(void)
{
    fs_cache_entry entries[8];
    int32_t buckets[8];
    fs_cache c;
    fs_cache_init(&c, entries, 8, buckets, 8);
    int32_t a = fs_cache_insert(&c, 1, 100);
    int32_t b = fs_cache_insert(&c, 2, 300);
    int32_t d = fs_cache_insert(&c, 3, 200); /* out of order: linked before b */
    int32_t e = fs_cache_insert(&c, 4, FS_CACHE_NEVER);
    CHECK(cache_valid(&c));
    CHECK(!fs_cache_expired(&c, a, 99) && fs_cache_expired(&c, a, 100));
    CHECK(!fs_cache_expired(&c, e, INT64_MAX - 1));
    CHECK(fs_cache_first_expired(&c, 99) == FS_CACHE_NONE);
    CHECK(fs_cache_first_expired(&c, 250) == a);
    fs_cache_remove(&c, a);
    CHECK(fs_cache_first_expired(&c, 250) == d);
    fs_cache_remove(&c, d);
    CHECK(fs_cache_first_expired(&c, 250) == FS_CACHE_NONE);
    CHECK(fs_cache_first_expired(&c, 300) == b);
    /* touching changes the LRU order, never the expiry order */
    fs_cache_touch(&c, b);
    CHECK(fs_cache_first_expired(&c, 300) == b && cache_valid(&c));
}

static void cache_grow(void)
{
    fs_cache_entry *entries = malloc(4 * sizeof *entries);
    int32_t *buckets = malloc(8 * sizeof *buckets);
    fs_cache c;
    fs_cache_init(&c, entries, 4, buckets, fs_cache_buckets_for(4));
    int32_t idx[40];
    for (int k = 0; k < 40; k++) {
        idx[k] = fs_cache_insert(&c, (uint64_t)k * 7u, 1000 + k);
        if (idx[k] == FS_CACHE_NONE) {
            uint32_t cap = c.cap * 2;
            fs_cache_entry *ne = realloc(c.entries, cap * sizeof *ne);
            int32_t *nb = malloc(fs_cache_buckets_for(cap) * sizeof *nb);
            free(c.buckets);
            fs_cache_grow(&c, ne, cap, nb, fs_cache_buckets_for(cap));
            idx[k] = fs_cache_insert(&c, (uint64_t)k * 7u, 1000 + k);
        }
        CHECK(idx[k] >= 0);
        if (k == 10)
            fs_cache_remove(&c, idx[3]); /* a free-list entry across growths */
    }
    CHECK(c.cap == 64 && c.len == 39 && cache_valid(&c));
    for (int k = 0; k < 40; k++)
        if (k != 3)
            CHECK(fs_cache_find(&c, (uint64_t)k * 7u) == idx[k]);
    CHECK(fs_cache_find(&c, 21) == FS_CACHE_NONE);
    free(c.entries);
    free(c.buckets);
}

/* Random operations against a plain array model: presence, LRU order, expiry order. */
static void cache_random(void)
{
    enum { CAP = 16, KEYS = 40 };
    fs_cache_entry entries[CAP];
    int32_t buckets[CAP];
    fs_cache c;
    fs_cache_init(&c, entries, CAP, buckets, fs_cache_buckets_for(CAP));
    int32_t where[KEYS];   /* model: entry index of each key, or -1 */
    int64_t stamp[KEYS];   /* model: last use */
    for (int k = 0; k < KEYS; k++)
        where[k] = -1;
    fs_rng rng;
    fs_rng_seed(&rng, 7);
    int64_t clock = 0;
    for (int step = 0; step < 20000; step++) {
        clock++;
        int k = (int)(fs_rng_next(&rng) % KEYS);
        uint64_t hash = (uint64_t)(k % 10); /* many collisions */
        int op = (int)(fs_rng_next(&rng) % 4);
        /* find k among equal hashes, as the binding does with its keys */
        int32_t i = fs_cache_find(&c, hash);
        while (i != FS_CACHE_NONE && i != where[k])
            i = fs_cache_find_next(&c, i);
        CHECK(i == where[k]);
        if (op == 0 && where[k] >= 0) {
            fs_cache_remove(&c, where[k]);
            where[k] = -1;
        }
        else if (where[k] >= 0) {
            fs_cache_touch(&c, where[k]);
            stamp[k] = clock;
        }
        else {
            if (c.len == CAP) {
                int32_t old = fs_cache_oldest(&c);
                int victim = -1;
                int64_t best = INT64_MAX;
                for (int m = 0; m < KEYS; m++)
                    if (where[m] >= 0 && stamp[m] < best) {
                        best = stamp[m];
                        victim = m;
                    }
                CHECK(victim >= 0 && where[victim] == old);
                fs_cache_remove(&c, old);
                where[victim] = -1;
            }
            where[k] = fs_cache_insert(&c, hash, clock + (int64_t)(fs_rng_next(&rng) % 50));
            stamp[k] = clock;
            CHECK(where[k] >= 0);
        }
        if (step % 97 == 0)
            CHECK(cache_valid(&c));
    }
    CHECK(cache_valid(&c));
}

const fs_test cache_tests[] = {
    TEST_CASE(cache_basic),
    TEST_CASE(cache_expiry),
    TEST_CASE(cache_grow),
    TEST_CASE(cache_random),
    TEST_END,
};
