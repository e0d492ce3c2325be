/* Streaming latency quantiles over a sliding window: a log-bucketed histogram (8 buckets per
 * power of two, so a value is known to within 12.5 %) in two rotating half-window slots, so a
 * sample counts for between half the window and the whole window. Fixed size, no allocation;
 * recording is O(1), a quantile query scans the buckets (callers cache its answer). */
#ifndef FS_QUANTILE_H
#define FS_QUANTILE_H

#include <stdint.h>

#define FS_Q_SUB_BITS 3                                 /* 2^3 buckets per power of two */
#define FS_Q_MIN_SHIFT 10                               /* values below 2^10 ns share bucket 0 */
#define FS_Q_OCTAVES 28                                 /* up to 2^38 ns (about 275 s) */
#define FS_Q_BUCKETS (FS_Q_OCTAVES << FS_Q_SUB_BITS)
#define FS_Q_SLOTS 2

typedef struct fs_quantile {
    int64_t slot_ns;                                /* half the window */
    int64_t head;                                   /* now_ns / slot_ns of the newest slot */
    uint32_t total[FS_Q_SLOTS];
    uint32_t counts[FS_Q_SLOTS][FS_Q_BUCKETS];
} fs_quantile;

/* window_ns >= 2. Returns 0, or -1 (q untouched) when out of range. Starts empty. */
int fs_quantile_init(fs_quantile *q, int64_t window_ns);

/* The bucket of a value in ns (negative counts as 0; values past the last bucket go in it). */
int fs_quantile_bucket(int64_t value_ns);

/* The largest value (ns) bucket b holds: what a quantile falling in b answers. */
int64_t fs_quantile_bucket_upper(int b);

/* Records one value (ns) at now_ns (monotonic, never decreasing between calls; an earlier time
 * counts in the newest slot). */
void fs_quantile_record(fs_quantile *q, int64_t now_ns, int64_t value_ns);

/* Values recorded in the window ending at now_ns. */
uint64_t fs_quantile_count(fs_quantile *q, int64_t now_ns);

/* The p-quantile (0 < p <= 1) of the window ending at now_ns, as the upper bound of the bucket
 * holding the ceil(p * count)-th smallest value, in ns; -1 when the window is empty. */
int64_t fs_quantile_value(fs_quantile *q, int64_t now_ns, double p);

#endif
