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

int fs_lathist_bucket(int64_t duration_ns)
{
    /* The first bound >= duration_ns, by bisection over [lo, hi). */
    int lo = 0, hi = FS_LAT_BOUNDS;
    while (lo < hi) {
        int mid = (lo + hi) >> 1;
        if (fs_lat_bounds_ns[mid] < duration_ns) {
            lo = mid + 1;
        }
        else {
            hi = mid;
        }
    }
    return lo;
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
