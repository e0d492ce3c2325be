#include "fs_keytab.h"

#include <string.h>

#include "fs_gcra.h"

static uint32_t capacity_for(uint32_t max_keys)
{
    uint32_t cap = 4;
    while (cap < 2 * (uint64_t)max_keys) {
        cap <<= 1;
    }
    return cap;
}

size_t fs_keytab_mem_size(uint32_t max_keys)
{
    if (max_keys < 1 || max_keys > FS_KEYTAB_MAX_KEYS) {
        return 0;
    }
    size_t cap = capacity_for(max_keys);
    size_t buckets = (cap * sizeof(uint32_t) + 7) & ~(size_t)7;
    return buckets + (size_t)max_keys * (sizeof(uint64_t) + sizeof(int64_t));
}

int fs_keytab_init(fs_keytab *t, void *mem, uint32_t max_keys)
{
    if (mem == NULL || fs_keytab_mem_size(max_keys) == 0) {
        return -1;
    }
    uint32_t cap = capacity_for(max_keys);
    size_t buckets = ((size_t)cap * sizeof(uint32_t) + 7) & ~(size_t)7;
    t->buckets = mem;
    t->hashes = (uint64_t *)((char *)mem + buckets);
    t->tats = (int64_t *)(t->hashes + max_keys);
    t->mask = cap - 1;
    t->max_keys = max_keys;
    t->version = 0; /* the caller's struct need not be zeroed */
    fs_keytab_clear(t);
    return 0;
}

void fs_keytab_clear(fs_keytab *t)
{
    memset(t->buckets, 0, ((size_t)t->mask + 1) * sizeof(uint32_t));
    t->count = 0;
    t->hand = 0;
    t->busy_until = FS_GCRA_FULL;
    t->version++;
}

/* Spreads Python's hashes (small ints hash to themselves) over the slots. */
static inline uint32_t home_of(const fs_keytab *t, uint64_t hash)
{
    uint64_t x = hash * 0x9E3779B97F4A7C15ULL;
    return (uint32_t)(x >> 32) & t->mask;
}

uint32_t fs_keytab_start(const fs_keytab *t, uint64_t hash)
{
    return home_of(t, hash);
}

int64_t fs_keytab_next(const fs_keytab *t, uint64_t hash, uint32_t *pos)
{
    for (;;) {
        uint32_t e = t->buckets[*pos];
        if (e == 0) {
            return -1;
        }
        *pos = (*pos + 1) & t->mask;
        if (t->hashes[e - 1] == hash) {
            return (int64_t)(e - 1);
        }
    }
}

static void place(fs_keytab *t, uint32_t entry, uint64_t hash)
{
    uint32_t pos = home_of(t, hash);
    while (t->buckets[pos] != 0) {
        pos = (pos + 1) & t->mask;
    }
    t->buckets[pos] = entry + 1;
    t->hashes[entry] = hash;
}

/* Removes entry's slot, shifting back the slots after it that may move (no tombstones). */
static void unplace(fs_keytab *t, uint32_t entry)
{
    uint32_t pos = home_of(t, t->hashes[entry]);
    while (t->buckets[pos] != entry + 1) {
        pos = (pos + 1) & t->mask;
    }
    uint32_t hole = pos;
    for (;;) {
        pos = (pos + 1) & t->mask;
        uint32_t e = t->buckets[pos];
        if (e == 0) {
            break;
        }
        uint32_t home = home_of(t, t->hashes[e - 1]);
        /* e may fill the hole unless its home lies cyclically in (hole, pos]. */
        if (((pos - home) & t->mask) >= ((pos - hole) & t->mask)) {
            t->buckets[hole] = e;
            hole = pos;
        }
    }
    t->buckets[hole] = 0;
}

int64_t fs_keytab_insert(fs_keytab *t, uint64_t hash, int64_t now_ns, bool *evicted,
                         int64_t *retry_after_ns)
{
    *evicted = false;
    *retry_after_ns = 0;
    uint32_t entry;
    if (t->count < t->max_keys) {
        entry = t->count++;
    }
    else {
        if (now_ns < t->busy_until) {
            *retry_after_ns = t->busy_until - now_ns;
            return -1;
        }
        int64_t earliest = INT64_MAX;
        uint32_t i = t->hand;
        bool found = false;
        for (uint32_t n = 0; n < t->max_keys; n++) {
            if (fs_gcra_idle(t->tats[i], now_ns)) {
                found = true;
                break;
            }
            if (t->tats[i] < earliest) {
                earliest = t->tats[i];
            }
            i = i + 1 == t->max_keys ? 0 : i + 1;
        }
        if (!found) {
            t->busy_until = earliest;
            *retry_after_ns = earliest - now_ns;
            return -1;
        }
        t->hand = i + 1 == t->max_keys ? 0 : i + 1;
        unplace(t, i);
        entry = i;
        *evicted = true;
    }
    place(t, entry, hash);
    t->tats[entry] = FS_GCRA_FULL;
    t->version++;
    return (int64_t)entry;
}

void fs_keytab_lowered(fs_keytab *t, uint32_t i)
{
    if (t->tats[i] < t->busy_until) {
        t->busy_until = t->tats[i];
    }
}

uint32_t fs_keytab_limited(const fs_keytab *t, int64_t now_ns)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < t->count; i++) {
        n += !fs_gcra_idle(t->tats[i], now_ns);
    }
    return n;
}
