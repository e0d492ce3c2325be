/* Token bucket as GCRA (generic cell rate algorithm): exact, integer nanoseconds, no drift.
 * A bucket admits one token per interval_ns with bursts of up to `burst` tokens: in any
 * interval of length t it admits at most t/interval_ns + burst.
 *
 * The whole state of a bucket is one number, its theoretical arrival time (TAT). The _tat
 * functions work on a TAT kept elsewhere (one per key of a keyed limiter) with the parameters
 * of a shared fs_gcra. */
#ifndef FS_GCRA_H
#define FS_GCRA_H

#include <stdbool.h>
#include <stdint.h>

typedef struct fs_gcra {
    int64_t interval_ns;    /* emission interval: ns per token (>= 1) */
    int64_t tolerance_ns;   /* interval_ns * (burst - 1) */
    int64_t tat_ns;         /* theoretical arrival time of the next token */
} fs_gcra;

/* A TAT that means "full bucket" at any time, whatever the clock's origin. */
#define FS_GCRA_FULL (INT64_MIN / 2)

/* interval_ns >= 1, burst >= 1. Returns 0, or -1 when out of range (bucket untouched).
 * The bucket starts full at any time. */
int fs_gcra_init(fs_gcra *g, int64_t interval_ns, int64_t burst);

/* Takes one token at now_ns if available; returns whether it did. On false, *retry_after_ns
 * (if not NULL) is how long until one is available. */
bool fs_gcra_take(fs_gcra *g, int64_t now_ns, int64_t *retry_after_ns);

/* Reserves the next token of the bucket whose TAT is *tat, for use at now_ns + *wait_ns, when
 * that wait is at most max_wait_ns (>= 0; 0 takes only a token available now). Returns true
 * with *wait_ns >= 0 and *tat advanced (its new value identifies the reservation, see
 * fs_gcra_give_back), or false with *wait_ns the wait a token would need and *tat untouched.
 * Reservations are served in order: each one's time is interval_ns after the previous one. */
bool fs_gcra_reserve_tat(const fs_gcra *g, int64_t *tat, int64_t now_ns, int64_t max_wait_ns,
                         int64_t *wait_ns);

/* Gives back the reservation that left *tat at tat_after, if it is still the latest one (TATs
 * only grow, so equality proves no later take). Returns whether it did. An earlier reservation
 * cannot be given back without letting a later one run early, so its token stays spent. */
bool fs_gcra_give_back_tat(const fs_gcra *g, int64_t *tat, int64_t tat_after);

/* Pauses the bucket whose TAT is *tat until until_ns: no token is available before then, and
 * the bucket refills from empty at its rate after (a paused bucket never bursts when the pause
 * ends). A TAT already later is kept. A reservation made before is no longer the latest. */
void fs_gcra_pause_tat(const fs_gcra *g, int64_t *tat, int64_t until_ns);

/* The bucket's credit at now_ns in nanoseconds, between 0 and interval_ns * burst: divided by
 * interval_ns, the tokens available (a partial token as a fraction). */
int64_t fs_gcra_credit_ns(const fs_gcra *g, int64_t tat, int64_t now_ns);

/* A bucket whose TAT is tat is full at now_ns: it remembers nothing and may be forgotten. */
static inline bool fs_gcra_idle(int64_t tat, int64_t now_ns)
{
    return tat <= now_ns;
}

#endif
