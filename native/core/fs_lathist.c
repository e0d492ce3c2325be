#include "fs_lathist.h"

const int64_t fs_lat_bounds_ns[FS_LAT_BOUNDS] = {
    100LL,         200LL,         500LL,                                   /* ns */
    1000LL,        2000LL,        5000LL,                                  /* us */
    10000LL,       20000LL,       50000LL,
    100000LL,      200000LL,      500000LL,
    1000000LL,     2000000LL,     5000000LL,                               /* ms */
    10000000LL,    20000000LL,    50000000LL,
    100000000LL,   200000000LL,   500000000LL,
    1000000000LL,  2000000000LL,  5000000000LL,                            /* s */
    10000000000LL, 20000000000LL, 50000000000LL,
    100000000000LL, 200000000000LL, 500000000000LL,
    1000000000000LL,
};

void fs_lathist_init(fs_lathist *h)
{
    for (int o = 0; o < FS_LAT_OUTCOMES; o++) {
        fs_lathist_series *s = &h->by_outcome[o];
        for (int b = 0; b < FS_LAT_BUCKETS; b++) {
            s->counts[b] = 0;
        }
        s->total = 0;
        s->sum_ns = 0;
        s->min_ns = INT64_MAX;
        s->max_ns = -1;
    }
}

/* The first bound >= 2^k, for each k (a duration's floor(log2)). Consecutive bounds are at
 * least 2 apart, so [2^k, 2^(k+1)) reaches past one bound at most: one comparison decides. */
static const uint8_t first_at_log2[64] = {
    0,  0,  0,  0,  0,  0,  0,  1,  2,  3,  4,  5,  5,  6,  7,  8,
    9,  10, 11, 12, 13, 14, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
    23, 24, 25, 26, 27, 28, 29, 30, 31, 31, 31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31,
};

static int floor_log2(uint64_t v)   /* v > 0 */
{
#if defined(__GNUC__) || defined(__clang__)
    return 63 - __builtin_clzll(v);
#else
    int k = 0;
    while (v >>= 1) {
        k++;
    }
    return k;
#endif
}

int fs_lathist_bucket(int64_t duration_ns)
{
    if (duration_ns <= fs_lat_bounds_ns[0]) {
        return 0;   /* also what is negative */
    }
    int j = first_at_log2[floor_log2((uint64_t)duration_ns)];
    return j < FS_LAT_BOUNDS && fs_lat_bounds_ns[j] < duration_ns ? j + 1 : j;
}

void fs_lathist_merge(fs_lathist *dst, const fs_lathist *src)
{
    for (int o = 0; o < FS_LAT_OUTCOMES; o++) {
        fs_lathist_series *d = &dst->by_outcome[o];
        const fs_lathist_series *s = &src->by_outcome[o];
        for (int b = 0; b < FS_LAT_BUCKETS; b++) {
            d->counts[b] += s->counts[b];
        }
        d->total += s->total;
        d->sum_ns += s->sum_ns;
        if (s->min_ns < d->min_ns) {
            d->min_ns = s->min_ns;
        }
        if (s->max_ns > d->max_ns) {
            d->max_ns = s->max_ns;
        }
    }
}
