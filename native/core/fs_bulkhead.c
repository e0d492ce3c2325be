#include "fs_bulkhead.h"

int fs_bulkhead_init(fs_bulkhead *b, uint64_t max_concurrency, uint64_t max_capacity)
{
    if (max_concurrency < 1 || max_capacity < max_concurrency || max_capacity > INT64_MAX) {
        return -1;
    }
    *b = (fs_bulkhead){.max_concurrency = max_concurrency, .max_capacity = max_capacity};
    return 0;
}

fs_bh_verdict fs_bulkhead_peek(const fs_bulkhead *b)
{
    if (b->running < b->max_concurrency && b->queued == 0) {
        return FS_BH_RUN;
    }
    return b->running + b->queued < b->max_capacity ? FS_BH_WAIT : FS_BH_FULL;
}

fs_bh_verdict fs_bulkhead_try_run(fs_bulkhead *b)
{
    /* Slots pass straight to waiters, so a free slot means an empty queue; checking both keeps
     * a new call from overtaking a queued one whatever the caller did. */
    if (b->running < b->max_concurrency && b->queued == 0) {
        if (++b->running > b->peak_running) {
            b->peak_running = b->running;
        }
        return FS_BH_RUN;
    }
    return b->running + b->queued < b->max_capacity ? FS_BH_WAIT : FS_BH_FULL;
}

fs_bh_verdict fs_bulkhead_acquire(fs_bulkhead *b)
{
    fs_bh_verdict v = fs_bulkhead_try_run(b);
    if (v == FS_BH_WAIT && ++b->queued > b->peak_queued) {
        b->peak_queued = b->queued;
    }
    return v;
}

void fs_bulkhead_leave(fs_bulkhead *b)
{
    if (b->queued > 0) {
        b->queued--;
    }
}

bool fs_bulkhead_release(fs_bulkhead *b)
{
    if (b->queued > 0) {
        b->queued--;
        return true;
    }
    if (b->running > 0) {
        b->running--;
    }
    return false;
}
