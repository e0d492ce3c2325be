/* Latency histogram by outcome: fixed log-spaced bucket bounds (1, 2, 5 per decade, 100 ns to
 * 1000 s), the explicit bounds an OpenTelemetry histogram exports. Fixed size, no allocation;
 * recording is a table lookup by the duration's log2, one comparison and a few additions.
 * Time is an argument (ns). */
#ifndef FS_LATHIST_H
#define FS_LATHIST_H

#include <stdint.h>

#define FS_LAT_BOUNDS 31                    /* upper bounds, 100 ns .. 1000 s */
#define FS_LAT_BUCKETS (FS_LAT_BOUNDS + 1)  /* the last one counts what lies above 1000 s */

/* Outcomes, in the order failsafe._core names them. */
enum {
    FS_LAT_SUCCESS = 0,
    FS_LAT_FAILURE,
    FS_LAT_REJECTED,    /* refused by a policy (breaker open, limit hit, bulkhead full, ...) */
    FS_LAT_CANCELLED,   /* cancelled or closed unfinished: never a failure */
    FS_LAT_OUTCOMES
};

/* Inclusive upper bound (ns) of each bucket but the last, strictly increasing. */
extern const int64_t fs_lat_bounds_ns[FS_LAT_BOUNDS];

typedef struct fs_lathist_series {
    uint64_t counts[FS_LAT_BUCKETS];
    uint64_t total;
    uint64_t sum_ns;        /* wraps after 584 years of summed latency */
    int64_t min_ns;         /* INT64_MAX while empty */
    int64_t max_ns;         /* -1 while empty */
} fs_lathist_series;

typedef struct fs_lathist {
    fs_lathist_series by_outcome[FS_LAT_OUTCOMES];
} fs_lathist;

/* Empties h. */
void fs_lathist_init(fs_lathist *h);

/* The bucket of a duration (ns): the first whose bound is >= it, as OpenTelemetry places a
 * value (bounds are inclusive upper bounds); negative counts as 0. */
int fs_lathist_bucket(int64_t duration_ns);

/* Records a call of outcome (FS_LAT_*; anything else is ignored) that ran from start_ns to
 * end_ns (an end before the start counts as 0 ns). */
static inline void fs_lathist_record(fs_lathist *h, int outcome, int64_t start_ns, int64_t end_ns)
{
    if ((unsigned)outcome >= FS_LAT_OUTCOMES) {
        return;
    }
    int64_t d = end_ns > start_ns ? end_ns - start_ns : 0;
    fs_lathist_series *s = &h->by_outcome[outcome];
    s->counts[fs_lathist_bucket(d)]++;
    s->total++;
    s->sum_ns += (uint64_t)d;
    if (d < s->min_ns) {
        s->min_ns = d;
    }
    if (d > s->max_ns) {
        s->max_ns = d;
    }
}

/* Adds src's counts into dst (a series summed over components). */
void fs_lathist_merge(fs_lathist *dst, const fs_lathist *src);

#endif
