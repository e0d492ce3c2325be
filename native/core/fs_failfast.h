/* Fail-fast latch: opens after `threshold` consecutive failures (or by hand), rejects every call
 * while open, and closes again `recovery_ns` after opening (checked lazily, at the next
 * admission) or by hand. Time is monotonic nanoseconds passed in by the caller. */
#ifndef FS_FAILFAST_H
#define FS_FAILFAST_H

#include <stdbool.h>
#include <stdint.h>

typedef struct fs_failfast {
    uint64_t threshold;     /* consecutive failures that open it; 0: failures never open it */
    int64_t recovery_ns;    /* how long it stays open; < 0: until closed by hand */
    uint64_t failures;      /* consecutive failures since the last success or closing */
    int64_t open_until_ns;  /* while open with a recovery time: when it closes */
    bool open;
} fs_failfast;

/* Verdicts of fs_failfast_admit. */
enum {
    FS_FF_ADMIT = 0,        /* closed: the call may run */
    FS_FF_REJECT = 1,       /* open: the call must not run */
    FS_FF_ADMIT_CLOSED = 2  /* the recovery time had passed: it closed now, the call may run */
};

/* threshold >= 0 (0: only fs_failfast_trip opens it), recovery_ns > 0, or < 0 for no automatic
 * recovery. Returns 0, or -1 when recovery_ns == 0 (the latch is then untouched). Starts
 * closed with no failure counted. */
int fs_failfast_init(fs_failfast *f, uint64_t threshold, int64_t recovery_ns);

/* Whether a call may start at now_ns (one of FS_FF_*). An open latch whose recovery time has
 * passed closes here (failures back to 0) and answers FS_FF_ADMIT_CLOSED. On FS_FF_REJECT,
 * *retry_after_ns (if not NULL) is the time left until it closes, or -1 when only
 * fs_failfast_reset closes it. */
int fs_failfast_admit(fs_failfast *f, int64_t now_ns, int64_t *retry_after_ns);

/* A call failed at now_ns. Returns true when this failure opened the latch (the threshold was
 * reached while closed); failures arriving while open are counted but open nothing. */
bool fs_failfast_failure(fs_failfast *f, int64_t now_ns);

/* A call succeeded: the consecutive count starts again (an open latch stays open). */
void fs_failfast_success(fs_failfast *f);

/* Opens by hand at now_ns (for the recovery time, if any). Returns true when it was closed;
 * opening an open latch changes nothing. */
bool fs_failfast_trip(fs_failfast *f, int64_t now_ns);

/* Closes by hand, failures back to 0. Returns true when it was open (even if its recovery time
 * had passed without an admission to notice). */
bool fs_failfast_reset(fs_failfast *f);

/* Whether a call at now_ns would be rejected (nothing changes). */
bool fs_failfast_is_open(const fs_failfast *f, int64_t now_ns);

#endif
