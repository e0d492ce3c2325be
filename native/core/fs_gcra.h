/* Token bucket as GCRA (generic cell rate algorithm): exact, integer nanoseconds, no drift.
 * A bucket admits `rate` tokens per second with bursts of up to `burst` tokens: in any interval
 * of length t it admits at most rate*t + burst. */
#ifndef FS_GCRA_H
#define FS_GCRA_H

#include <stdbool.h>
#include <stdint.h>

typedef struct fs_gcra {
    int64_t interval_ns;    /* emission interval: ns per token (>= 1) */
    int64_t tolerance_ns;   /* interval_ns * (burst - 1) */
    int64_t tat_ns;         /* theoretical arrival time of the next token */
} fs_gcra;

/* interval_ns >= 1, burst >= 1. Returns 0, or -1 when out of range (bucket untouched).
 * The bucket starts full at any time. */
int fs_gcra_init(fs_gcra *g, int64_t interval_ns, int64_t burst);

/* Takes one token at now_ns if available; returns whether it did. On false, *retry_after_ns
 * (if not NULL) is how long until one is available. */
bool fs_gcra_take(fs_gcra *g, int64_t now_ns, int64_t *retry_after_ns);

#endif
