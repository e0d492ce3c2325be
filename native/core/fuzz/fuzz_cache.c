/* Cache index driven as the binding drives it: drop expired entries, evict the least recently
 * used at maxsize, grow the arrays when full, touch on hits, remove, clear. A model keeps each
 * entry's hash, expiry and last use. Invariants: lookups find exactly the live entries of a
 * hash; the LRU walk visits every live entry, least recent first; expired entries come out
 * earliest first and only once expired; len <= maxsize; indexes stay put across growth. */
#include <stdlib.h>
#include <string.h>

#include "fs_cache.h"
#include "fuzz.h"

enum { MAX_CAP = 64 };

static struct {
    int live;
    uint64_t hash;
    int64_t expires;
    uint64_t used;      /* LRU stamp */
} model[MAX_CAP];

static uint64_t stamp;

static void check_all(const fs_cache *c, uint32_t maxsize)
{
    uint32_t live = 0;
    for (uint32_t i = 0; i < c->cap; i++) {
        live += model[i].live;
        FZ_CHECK(c->entries[i].live == model[i].live || (!model[i].live && i >= c->unused));
    }
    FZ_CHECK(c->len == live && c->len <= maxsize && c->len <= c->cap);
    /* The LRU walk: every live entry once, stamps increasing. */
    uint32_t seen = 0;
    uint64_t last = 0;
    for (int32_t i = fs_cache_oldest(c); i != FS_CACHE_NONE; i = fs_cache_newer(c, i)) {
        FZ_CHECK(i >= 0 && (uint32_t)i < c->cap && model[i].live);
        FZ_CHECK(seen == 0 || model[i].used > last);
        last = model[i].used;
        FZ_CHECK(++seen <= live);
    }
    FZ_CHECK(seen == live);
}

/* Entries whose hash is h, by the lookup protocol, against the model. */
static void check_find(const fs_cache *c, uint64_t h)
{
    uint32_t want = 0, got = 0;
    for (uint32_t i = 0; i < c->cap; i++) {
        want += model[i].live && model[i].hash == h;
    }
    for (int32_t i = fs_cache_find(c, h); i != FS_CACHE_NONE; i = fs_cache_find_next(c, i)) {
        FZ_CHECK(model[i].live && model[i].hash == h);
        FZ_CHECK(++got <= want);
    }
    FZ_CHECK(got == want);
}

/* The live entry with the earliest expiry (lowest index among ties is not promised). */
static int64_t earliest_expiry(const fs_cache *c)
{
    int64_t best = INT64_MAX;
    for (uint32_t i = 0; i < c->cap; i++) {
        if (model[i].live && model[i].expires < best) {
            best = model[i].expires;
        }
    }
    return best;
}

static void remove_entry(fs_cache *c, int32_t i)
{
    fs_cache_remove(c, i);
    model[i].live = 0;
}

static void grow(fs_cache *c, fs_cache_entry **entries, int32_t **buckets)
{
    uint32_t cap = c->cap * 2 > MAX_CAP ? MAX_CAP : c->cap * 2;
    if (cap == c->cap) {
        return;
    }
    fs_cache_entry *e = realloc(*entries, cap * sizeof **entries);
    uint32_t nb = fs_cache_buckets_for(cap);
    int32_t *b = malloc(nb * sizeof *b);
    FZ_CHECK(e && b);
    free(*buckets);
    *entries = e;
    *buckets = b;
    fs_cache_grow(c, e, cap, b, nb);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz f = {data, size};
    uint32_t cap = (uint32_t)fz_range(&f, 1, 16);
    uint32_t maxsize = (uint32_t)fz_range(&f, 1, MAX_CAP);
    uint64_t hash_mask = fz_range(&f, 0, 255);
    int64_t ttl = (int64_t)fz_range(&f, 1, 1000);
    fs_cache_entry *entries = malloc(cap * sizeof *entries);
    uint32_t nb = fs_cache_buckets_for(cap);
    int32_t *buckets = malloc(nb * sizeof *buckets);
    fs_cache c;
    fs_cache_init(&c, entries, cap, buckets, nb);
    memset(model, 0, sizeof model);
    stamp = 0;
    int64_t now = (int64_t)fz_range(&f, 0, (uint64_t)1 << 50);
    while (fz_more(&f)) {
        uint8_t op = fz_u8(&f) % 8;
        uint8_t arg = fz_u8(&f);
        if (op == 0) {
            fz_wait(&f, &now, ttl);
        }
        else if (op <= 2) {
            /* Store: drop the expired, evict the LRU entry at maxsize, grow when full. */
            int32_t i;
            while ((i = fs_cache_first_expired(&c, now)) != FS_CACHE_NONE) {
                FZ_CHECK(model[i].live && model[i].expires <= now);
                FZ_CHECK(model[i].expires == earliest_expiry(&c));
                remove_entry(&c, i);
            }
            FZ_CHECK(earliest_expiry(&c) > now);
            if (c.len == maxsize) {
                i = fs_cache_oldest(&c);
                FZ_CHECK(i != FS_CACHE_NONE);
                remove_entry(&c, i);
            }
            if (c.len == c.cap) {
                FZ_CHECK(fs_cache_insert(&c, 0, 0) == FS_CACHE_NONE);
                grow(&c, &entries, &buckets);
            }
            uint64_t h = (arg & hash_mask) * 0x9E3779B97F4A7C15ULL;
            int64_t expires = op == 1 ? FS_CACHE_NEVER : now + ttl * (arg % 4 + 1);
            i = fs_cache_insert(&c, h, expires);
            FZ_CHECK(i != FS_CACHE_NONE && (uint32_t)i < c.cap && !model[i].live);
            model[i].live = 1;
            model[i].hash = h;
            model[i].expires = expires;
            model[i].used = ++stamp;
            FZ_CHECK(c.entries[i].hash == h);
        }
        else if ((op == 3 || op == 4) && c.len > 0) {
            /* Hit (touch) or remove the arg-th live entry. */
            uint32_t k = arg % c.len;
            int32_t i = 0;
            for (;; i++) {
                if (model[i].live && k-- == 0) {
                    break;
                }
            }
            FZ_CHECK(fs_cache_expired(&c, i, now) == (now >= model[i].expires));
            if (op == 3) {
                fs_cache_touch(&c, i);
                model[i].used = ++stamp;
            }
            else {
                remove_entry(&c, i);
            }
        }
        else if (op == 5) {
            check_find(&c, (arg & hash_mask) * 0x9E3779B97F4A7C15ULL);
        }
        else if (op == 6) {
            if (arg < 16) {
                fs_cache_clear(&c);
                memset(model, 0, sizeof model);
            }
            else if (arg < 32) {
                grow(&c, &entries, &buckets);
            }
        }
        else {
            int32_t i = fs_cache_first_expired(&c, now);
            FZ_CHECK((i != FS_CACHE_NONE) == (earliest_expiry(&c) <= now));
        }
        check_all(&c, maxsize);
    }
    free(entries);
    free(buckets);
    return 0;
}
