/* Bulkhead admission: at most max_concurrency calls run at once, and at most max_capacity calls
 * are inside (running + queued). A call that cannot run at once takes a place in the queue when
 * there is room, else it is rejected. A slot freed while calls are queued passes to the queue's
 * head without ever being free, so a new call never overtakes a queued one. The queue itself
 * (who is first) belongs to the caller: this struct only counts. */
#ifndef FS_BULKHEAD_H
#define FS_BULKHEAD_H

#include <stdbool.h>
#include <stdint.h>

typedef struct fs_bulkhead {
    uint64_t max_concurrency;   /* slots, >= 1 */
    uint64_t max_capacity;      /* running + queued allowed, >= max_concurrency */
    uint64_t running;           /* calls holding a slot */
    uint64_t queued;            /* calls waiting for a slot */
    uint64_t peak_running;      /* highest running seen */
    uint64_t peak_queued;       /* highest queued seen */
} fs_bulkhead;

typedef enum fs_bh_verdict {
    FS_BH_RUN = 0,      /* a slot is taken: run now */
    FS_BH_WAIT = 1,     /* no slot free, room in the queue */
    FS_BH_FULL = 2      /* running + queued == max_capacity: reject */
} fs_bh_verdict;

/* 1 <= max_concurrency <= max_capacity <= INT64_MAX. Returns 0 (empty bulkhead), or -1 when out
 * of range (b untouched). */
int fs_bulkhead_init(fs_bulkhead *b, uint64_t max_concurrency, uint64_t max_capacity);

/* What a new call willing to wait would get now; changes nothing. */
fs_bh_verdict fs_bulkhead_peek(const fs_bulkhead *b);

/* A new call that may not wait: RUN takes a slot (running + 1); WAIT and FULL change nothing
 * (WAIT says a call willing to wait would be queued). A slot is free only when nobody is queued. */
fs_bh_verdict fs_bulkhead_try_run(fs_bulkhead *b);

/* A new call that may wait: RUN takes a slot, WAIT takes a place in the queue (queued + 1),
 * FULL changes nothing. */
fs_bh_verdict fs_bulkhead_acquire(fs_bulkhead *b);

/* A queued call gives up its place without a slot (cancelled, timed out). queued must be > 0. */
void fs_bulkhead_leave(fs_bulkhead *b);

/* A call holding a slot ends. Returns true when calls are queued: the slot then passes to the
 * queue's head (queued - 1, running unchanged), which the caller must wake (or, if that call is
 * gone, release again on its behalf). Returns false when the slot is freed (running - 1).
 * running must be > 0. */
bool fs_bulkhead_release(fs_bulkhead *b);

#endif
