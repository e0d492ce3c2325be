/* Sliding-window log against a model (the use times of the last `limit` admissions): every
 * wait, availability and idleness answer must match it exactly, at most `limit` uses fall in
 * any window, uses are in order, and only the latest reservation can be given back. */
#include <string.h>

#include "fs_gcra.h"
#include "fs_swlog.h"
#include "fuzz.h"

enum { MAX_LIMIT = 48, MAX_USES = 4096 };

static int64_t uses[MAX_USES];      /* every admission still spent, in order */
static uint64_t seqs[MAX_USES];
static int64_t evicteds[MAX_USES];
static size_t n;

/* The model's oldest time that still limits: the limit-th newest use, or far past. */
static int64_t model_oldest(uint32_t limit)
{
    return n >= limit ? uses[n - limit] : FS_GCRA_FULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz f = {data, size};
    int64_t ring[MAX_LIMIT];
    fs_swlog w;
    uint32_t limit = (uint32_t)fz_range(&f, 0, MAX_LIMIT);
    int64_t window = (int64_t)fz_range(&f, 0, (uint64_t)1 << 40);
    if (fs_swlog_init(&w, ring, limit, window) < 0) {
        FZ_CHECK(limit == 0 || window == 0);
        return 0;
    }
    int64_t unit = window / limit + 1;
    int64_t now = (int64_t)fz_range(&f, 0, (uint64_t)1 << 50);
    n = 0;
    while (fz_more(&f) && n < MAX_USES) {
        uint8_t op = fz_u8(&f) % 5;
        if (op == 0) {
            fz_wait(&f, &now, unit);
        }
        else if (op == 1) {
            int64_t max_wait = fz_u8(&f) & 1 ? 0 : (int64_t)(fz_u16(&f) % 512) * unit / 16;
            int64_t oldest = model_oldest(limit);
            int64_t expect = oldest + window > now ? oldest + window - now : 0;
            int64_t wait = -1, evicted = 0;
            uint64_t seq = 0;
            fs_swlog before = w;
            bool ok = fs_swlog_reserve(&w, now, max_wait, &wait, &seq, &evicted);
            FZ_CHECK(wait == expect);
            FZ_CHECK(ok == (expect <= max_wait));
            if (ok) {
                int64_t use = now + wait;
                FZ_CHECK(n == 0 || use >= uses[n - 1]);
                FZ_CHECK(n < limit || use - uses[n - limit] >= window);
                FZ_CHECK(evicted == oldest && seq == w.seq);
                uses[n] = use;
                seqs[n] = seq;
                evicteds[n] = evicted;
                n++;
            }
            else {
                FZ_CHECK(memcmp(&w, &before, sizeof w) == 0);
            }
        }
        else if (op == 2 && n > 0) {
            size_t k = n - 1 - fz_u8(&f) % (n < 3 ? n : 3);
            bool ok = fs_swlog_give_back(&w, seqs[k], evicteds[k]);
            FZ_CHECK(ok == (k == n - 1));
            if (ok) {
                n--;
            }
        }
        else if (op == 3) {
            uint32_t avail = 0;
            for (uint32_t i = 0; i < limit; i++) {
                /* The i-th oldest of the last `limit` uses, empty slots first. */
                int64_t t = n + i >= limit ? uses[n + i - limit] : FS_GCRA_FULL;
                if (t + window > now) {
                    break;
                }
                avail++;
            }
            FZ_CHECK(fs_swlog_available(&w, now) == avail);
        }
        else {
            int64_t newest = n > 0 ? uses[n - 1] : FS_GCRA_FULL;
            FZ_CHECK(fs_swlog_idle(&w, now) == (newest + window <= now));
        }
    }
    return 0;
}
