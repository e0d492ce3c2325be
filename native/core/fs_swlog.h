/* Sliding-window log: at most `limit` admissions in any window of window_ns, exactly. The log
 * keeps the times of the last `limit` admissions (and reservations) in a ring, oldest first; an
 * admission at t needs t >= oldest + window_ns. Memory: limit * 8 bytes, given by the caller. */
#ifndef FS_SWLOG_H
#define FS_SWLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct fs_swlog {
    int64_t *ring;          /* limit times, ring[head] the oldest (borrowed memory) */
    int64_t window_ns;      /* >= 1 */
    uint32_t limit;         /* >= 1 */
    uint32_t head;
    uint64_t seq;           /* admissions and reservations made so far */
} fs_swlog;

/* ring holds limit (>= 1) int64_t and outlives w; window_ns >= 1. Returns 0, or -1 when out of
 * range. The log starts empty (every slot far in the past). */
int fs_swlog_init(fs_swlog *w, int64_t *ring, uint32_t limit, int64_t window_ns);

/* Admits (wait 0) or reserves a place at now_ns + *wait_ns when that wait is at most
 * max_wait_ns. Returns true with *wait_ns, and with *seq and *evicted (the time it replaced)
 * that identify the reservation for fs_swlog_give_back; false with *wait_ns the wait needed
 * and the log untouched. Times in the log never decrease, so reservations are served in order. */
bool fs_swlog_reserve(fs_swlog *w, int64_t now_ns, int64_t max_wait_ns, int64_t *wait_ns,
                      uint64_t *seq, int64_t *evicted);

/* Gives back reservation seq (evicted as returned) if it is still the latest; returns whether
 * it did. An earlier one stays spent: giving it back would let a later one run early. */
bool fs_swlog_give_back(fs_swlog *w, uint64_t seq, int64_t evicted);

/* Admits nothing before until_ns: every logged time moves up to until_ns - window_ns at least
 * (the log stays ordered), so the whole limit is available again at until_ns. Reservations
 * made before can no longer be given back. */
void fs_swlog_pause(fs_swlog *w, int64_t until_ns);

/* Admissions still possible at now_ns without waiting (0..limit). */
uint32_t fs_swlog_available(const fs_swlog *w, int64_t now_ns);

/* The log remembers nothing that still limits at now_ns. */
bool fs_swlog_idle(const fs_swlog *w, int64_t now_ns);

#endif
