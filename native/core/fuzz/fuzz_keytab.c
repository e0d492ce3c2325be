/* Key table of a keyed limiter, driven as the binding drives it (look a key up, insert it when
 * absent, take tokens from its TAT, give the latest back) with hashes that collide often.
 * Invariants: every key the caller holds is found, and found only at its own entry; a key is
 * evicted only when its bucket is full again; a refusal happens only when every entry is
 * limited, with a retry-after that does not overshoot the earliest refill. */
#include <stdlib.h>
#include <string.h>

#include "fs_gcra.h"
#include "fs_keytab.h"
#include "fuzz.h"

enum { MAX_KEYS = 40 };

static uint64_t key_hash(uint64_t key, uint64_t mask)
{
    return (key & mask) * 0x100000001ULL;    /* many keys, few distinct hashes */
}

/* The entry holding key, or -1, by the table's lookup protocol. */
static int64_t lookup(const fs_keytab *t, const uint64_t *keys, uint64_t key, uint64_t mask)
{
    uint64_t h = key_hash(key, mask);
    uint32_t pos = fs_keytab_start(t, h);
    int64_t e;
    int64_t found = -1;
    uint32_t steps = 0;
    while ((e = fs_keytab_next(t, h, &pos)) >= 0) {
        FZ_CHECK(e < (int64_t)t->count && t->hashes[e] == h);
        FZ_CHECK(++steps <= t->count);
        if (keys[e] == key) {
            FZ_CHECK(found < 0);    /* a key lives in one entry only */
            found = e;
        }
    }
    return found;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz f = {data, size};
    uint32_t max_keys = (uint32_t)fz_range(&f, 1, MAX_KEYS);
    uint64_t mask = fz_range(&f, 0, 63);
    fs_gcra g;
    if (fs_gcra_init(&g, (int64_t)fz_range(&f, 1, 1000000), (int64_t)fz_range(&f, 1, 4)) < 0) {
        return 0;
    }
    size_t mem_size = fs_keytab_mem_size(max_keys);
    FZ_CHECK(mem_size > 0);
    void *mem = malloc(mem_size);
    fs_keytab t;
    memset(&t, 0, sizeof t);
    FZ_CHECK(fs_keytab_init(&t, mem, max_keys) == 0);
    uint64_t keys[MAX_KEYS];        /* the caller's keys, by entry */
    int64_t last_tat[MAX_KEYS];     /* TAT left by each entry's latest reservation */
    int64_t now = (int64_t)fz_range(&f, 0, (uint64_t)1 << 50);
    while (fz_more(&f)) {
        uint8_t op = fz_u8(&f) % 6;
        uint64_t key = fz_u8(&f);
        if (op == 0) {
            fz_wait(&f, &now, g.interval_ns);
        }
        else if (op <= 2) {
            /* A call for key: find or insert it, then take (or reserve) a token. */
            int64_t e = lookup(&t, keys, key, mask);
            if (e < 0) {
                uint32_t count = t.count;
                bool evicted = true;
                int64_t retry = -1;
                e = fs_keytab_insert(&t, key_hash(key, mask), now, &evicted, &retry);
                if (e < 0) {
                    FZ_CHECK(count == max_keys && retry > 0 && !evicted);
                    for (uint32_t i = 0; i < count; i++) {
                        FZ_CHECK(!fs_gcra_idle(t.tats[i], now));
                        FZ_CHECK(now + retry <= t.tats[i]);
                    }
                    continue;
                }
                FZ_CHECK(retry == 0);
                if (evicted) {
                    FZ_CHECK(count == max_keys && (uint32_t)e < count);
                    FZ_CHECK(fs_gcra_idle(t.tats[e], now) || t.tats[e] == FS_GCRA_FULL);
                }
                else {
                    FZ_CHECK((uint32_t)e == count && t.count == count + 1);
                }
                FZ_CHECK(t.tats[e] == FS_GCRA_FULL);
                keys[e] = key;
                last_tat[e] = INT64_MIN;
                FZ_CHECK(lookup(&t, keys, key, mask) == e);
            }
            int64_t wait;
            if (fs_gcra_reserve_tat(&g, &t.tats[e], now, op == 1 ? 0 : 4 * g.interval_ns, &wait)) {
                last_tat[e] = t.tats[e];
            }
        }
        else if (op == 3 && t.count > 0) {
            /* A waiter gives its reservation back (the latest one of its key). */
            uint32_t i = (uint32_t)(key % t.count);
            if (fs_gcra_give_back_tat(&g, &t.tats[i], last_tat[i])) {
                last_tat[i] = INT64_MIN;
                fs_keytab_lowered(&t, i);
            }
        }
        else if (op == 4) {
            uint32_t limited = 0;
            for (uint32_t i = 0; i < t.count; i++) {
                limited += !fs_gcra_idle(t.tats[i], now);
            }
            FZ_CHECK(fs_keytab_limited(&t, now) == limited);
        }
        else if (key == 0) {
            fs_keytab_clear(&t);
            FZ_CHECK(t.count == 0);
        }
        /* Every key the caller holds is found at its entry. */
        FZ_CHECK(t.count <= max_keys);
        for (uint32_t i = 0; i < t.count; i++) {
            FZ_CHECK(lookup(&t, keys, keys[i], mask) == (int64_t)i);
        }
    }
    free(mem);
    return 0;
}
