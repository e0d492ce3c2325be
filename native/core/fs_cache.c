#include "fs_cache.h"

#include <stddef.h>

/* Fibonacci hashing: the top bits of hash * 2^64/phi spread the small consecutive hashes of
 * ints, which a mask of the low bits would put in consecutive buckets. */
static inline uint32_t bucket_of(const fs_cache *c, uint64_t hash)
{
    return (uint32_t)((hash * UINT64_C(0x9E3779B97F4A7C15)) >> c->shift);
}

uint32_t fs_cache_buckets_for(uint32_t cap)
{
    uint32_t n = 8;
    while (n < cap) {
        n <<= 1;
    }
    return n;
}

static void set_buckets(fs_cache *c, int32_t *buckets, uint32_t nbuckets)
{
    c->buckets = buckets;
    c->nbuckets = nbuckets;
    unsigned bits = 0;
    while (((uint32_t)1 << bits) < nbuckets) {
        bits++;
    }
    c->shift = 64u - bits;
    for (uint32_t b = 0; b < nbuckets; b++) {
        buckets[b] = FS_CACHE_NONE;
    }
}

void fs_cache_init(fs_cache *c, fs_cache_entry *entries, uint32_t cap, int32_t *buckets,
                   uint32_t nbuckets)
{
    c->entries = entries;
    c->cap = cap;
    set_buckets(c, buckets, nbuckets);
    c->len = 0;
    c->unused = 0;
    c->free = FS_CACHE_NONE;
    c->newest = c->oldest = FS_CACHE_NONE;
    c->earliest = c->latest = FS_CACHE_NONE;
}

static void chain_link(fs_cache *c, int32_t i)
{
    uint32_t b = bucket_of(c, c->entries[i].hash);
    c->entries[i].chain = c->buckets[b];
    c->buckets[b] = i;
}

void fs_cache_grow(fs_cache *c, fs_cache_entry *entries, uint32_t cap, int32_t *buckets,
                   uint32_t nbuckets)
{
    c->entries = entries;
    c->cap = cap;
    set_buckets(c, buckets, nbuckets);
    /* Every live entry is on the LRU list; the free list keeps its chain links. */
    for (int32_t i = c->oldest; i != FS_CACHE_NONE; i = entries[i].newer) {
        chain_link(c, i);
    }
}

int32_t fs_cache_find(const fs_cache *c, uint64_t hash)
{
    int32_t i = c->buckets[bucket_of(c, hash)];
    while (i != FS_CACHE_NONE && c->entries[i].hash != hash) {
        i = c->entries[i].chain;
    }
    return i;
}

int32_t fs_cache_find_next(const fs_cache *c, int32_t i)
{
    uint64_t hash = c->entries[i].hash;
    i = c->entries[i].chain;
    while (i != FS_CACHE_NONE && c->entries[i].hash != hash) {
        i = c->entries[i].chain;
    }
    return i;
}

static void lru_unlink(fs_cache *c, int32_t i)
{
    fs_cache_entry *e = &c->entries[i];
    if (e->older != FS_CACHE_NONE) {
        c->entries[e->older].newer = e->newer;
    }
    else {
        c->oldest = e->newer;
    }
    if (e->newer != FS_CACHE_NONE) {
        c->entries[e->newer].older = e->older;
    }
    else {
        c->newest = e->older;
    }
}

static void lru_push_newest(fs_cache *c, int32_t i)
{
    fs_cache_entry *e = &c->entries[i];
    e->older = c->newest;
    e->newer = FS_CACHE_NONE;
    if (c->newest != FS_CACHE_NONE) {
        c->entries[c->newest].newer = i;
    }
    else {
        c->oldest = i;
    }
    c->newest = i;
}

void fs_cache_touch(fs_cache *c, int32_t i)
{
    if (c->newest == i) {
        return;
    }
    lru_unlink(c, i);
    lru_push_newest(c, i);
}

/* Links i into the expiry list in order; walks from the latest end, so inserts with
 * non-decreasing expiries (one ttl, a monotonic clock) cost O(1). Ties keep insertion order. */
static void exp_link(fs_cache *c, int32_t i)
{
    fs_cache_entry *e = &c->entries[i];
    int32_t after = c->latest;
    while (after != FS_CACHE_NONE && c->entries[after].expires_ns > e->expires_ns) {
        after = c->entries[after].exp_prev;
    }
    e->exp_prev = after;
    if (after == FS_CACHE_NONE) {
        e->exp_next = c->earliest;
        c->earliest = i;
    }
    else {
        e->exp_next = c->entries[after].exp_next;
        c->entries[after].exp_next = i;
    }
    if (e->exp_next != FS_CACHE_NONE) {
        c->entries[e->exp_next].exp_prev = i;
    }
    else {
        c->latest = i;
    }
}

static void exp_unlink(fs_cache *c, int32_t i)
{
    fs_cache_entry *e = &c->entries[i];
    if (e->exp_prev != FS_CACHE_NONE) {
        c->entries[e->exp_prev].exp_next = e->exp_next;
    }
    else {
        c->earliest = e->exp_next;
    }
    if (e->exp_next != FS_CACHE_NONE) {
        c->entries[e->exp_next].exp_prev = e->exp_prev;
    }
    else {
        c->latest = e->exp_prev;
    }
}

int32_t fs_cache_insert(fs_cache *c, uint64_t hash, int64_t expires_ns)
{
    int32_t i;
    if (c->free != FS_CACHE_NONE) {
        i = c->free;
        c->free = c->entries[i].chain;
    }
    else if (c->unused < c->cap) {
        i = (int32_t)c->unused++;
    }
    else {
        return FS_CACHE_NONE;
    }
    fs_cache_entry *e = &c->entries[i];
    e->hash = hash;
    e->expires_ns = expires_ns;
    e->live = 1;
    chain_link(c, i);
    lru_push_newest(c, i);
    exp_link(c, i);
    c->len++;
    return i;
}

void fs_cache_remove(fs_cache *c, int32_t i)
{
    fs_cache_entry *e = &c->entries[i];
    int32_t *link = &c->buckets[bucket_of(c, e->hash)];
    while (*link != i) {
        link = &c->entries[*link].chain;
    }
    *link = e->chain;
    lru_unlink(c, i);
    exp_unlink(c, i);
    e->live = 0;
    e->chain = c->free;
    c->free = i;
    c->len--;
}

void fs_cache_clear(fs_cache *c)
{
    fs_cache_init(c, c->entries, c->cap, c->buckets, c->nbuckets);
}

int32_t fs_cache_oldest(const fs_cache *c)
{
    return c->oldest;
}

int32_t fs_cache_newer(const fs_cache *c, int32_t i)
{
    return c->entries[i].newer;
}

int32_t fs_cache_first_expired(const fs_cache *c, int64_t now_ns)
{
    int32_t i = c->earliest;
    return i != FS_CACHE_NONE && now_ns >= c->entries[i].expires_ns ? i : FS_CACHE_NONE;
}
