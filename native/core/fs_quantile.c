#include "fs_quantile.h"

#include <math.h>
#include <string.h>

int fs_quantile_init(fs_quantile *q, int64_t window_ns)
{
    if (window_ns < FS_Q_SLOTS) {
        return -1;
    }
    memset(q, 0, sizeof *q);
    q->slot_ns = window_ns / FS_Q_SLOTS;
    q->head = 0;
    return 0;
}

/* Index of the highest set bit of v != 0. */
static int msb64(uint64_t v)
{
#if defined(__GNUC__) || defined(__clang__)
    return 63 - __builtin_clzll(v);
#else
    int m = 0;
    while (v >>= 1) {
        m++;
    }
    return m;
#endif
}

int fs_quantile_bucket(int64_t value_ns)
{
    if (value_ns < ((int64_t)1 << FS_Q_MIN_SHIFT)) {
        return 0;
    }
    int m = msb64((uint64_t)value_ns);
    int sub = (int)(((uint64_t)value_ns >> (m - FS_Q_SUB_BITS)) & ((1u << FS_Q_SUB_BITS) - 1));
    int b = ((m - FS_Q_MIN_SHIFT) << FS_Q_SUB_BITS) | sub;
    return b < FS_Q_BUCKETS ? b : FS_Q_BUCKETS - 1;
}

int64_t fs_quantile_bucket_upper(int b)
{
    int m = FS_Q_MIN_SHIFT + (b >> FS_Q_SUB_BITS);
    int64_t sub = b & ((1 << FS_Q_SUB_BITS) - 1);
    /* [ (8 + sub) << (m - 3), (9 + sub) << (m - 3) ) */
    return (((int64_t)(1 << FS_Q_SUB_BITS) + sub + 1) << (m - FS_Q_SUB_BITS)) - 1;
}

/* Moves the newest slot to now_ns, emptying the slots that fell out of the window. */
static void advance(fs_quantile *q, int64_t now_ns)
{
    int64_t idx = now_ns > 0 ? now_ns / q->slot_ns : 0;
    if (idx <= q->head) {
        return;
    }
    if (idx - q->head >= FS_Q_SLOTS) {
        memset(q->total, 0, sizeof q->total);
        memset(q->counts, 0, sizeof q->counts);
    }
    else {
        for (int64_t i = q->head + 1; i <= idx; i++) {
            int s = (int)(i % FS_Q_SLOTS);
            q->total[s] = 0;
            memset(q->counts[s], 0, sizeof q->counts[s]);
        }
    }
    q->head = idx;
}

void fs_quantile_record(fs_quantile *q, int64_t now_ns, int64_t value_ns)
{
    advance(q, now_ns);
    int s = (int)(q->head % FS_Q_SLOTS);
    if (q->total[s] == UINT32_MAX) {
        return;     /* saturated: four billion samples in half a window */
    }
    q->total[s]++;
    q->counts[s][fs_quantile_bucket(value_ns)]++;
}

uint64_t fs_quantile_count(fs_quantile *q, int64_t now_ns)
{
    advance(q, now_ns);
    uint64_t n = 0;
    for (int s = 0; s < FS_Q_SLOTS; s++) {
        n += q->total[s];
    }
    return n;
}

int64_t fs_quantile_value(fs_quantile *q, int64_t now_ns, double p)
{
    uint64_t n = fs_quantile_count(q, now_ns);
    if (n == 0) {
        return -1;
    }
    double r = ceil(p * (double)n);
    uint64_t rank = r < 1.0 ? 1 : (r >= (double)n ? n : (uint64_t)r);
    uint64_t seen = 0;
    for (int b = 0; b < FS_Q_BUCKETS; b++) {
        for (int s = 0; s < FS_Q_SLOTS; s++) {
            seen += q->counts[s][b];
        }
        if (seen >= rank) {
            return fs_quantile_bucket_upper(b);
        }
    }
    return fs_quantile_bucket_upper(FS_Q_BUCKETS - 1);
}
