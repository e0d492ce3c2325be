/* Backoff schedules and jitter for retry. Delays are seconds (double). A schedule (fs_backoff)
 * is immutable and shared by every call of a policy; each call owns an fs_backoff_state, so
 * concurrent calls never disturb each other's sequence. No allocation, no clock. */
#ifndef FS_BACKOFF_H
#define FS_BACKOFF_H

#include <stddef.h>
#include <stdint.h>

#include "fs_rng.h"

typedef enum fs_backoff_kind {
    FS_BACKOFF_CONST = 0,   /* d = a */
    FS_BACKOFF_INTERVAL,    /* d = seq[k % seq_len] */
    FS_BACKOFF_LINEAR,      /* d = a + b*k */
    FS_BACKOFF_EXPO,        /* d = a * b^k */
    FS_BACKOFF_FIBO,        /* d0 = a, d1 = a + b, d(k+1) = d(k) + d(k-1) */
    FS_BACKOFF_DECORREXP,   /* cur0 = a; d = uniform(a, min(cur*b, max)); cur = d (AWS decorrelated) */
    FS_BACKOFF_SOFTEXP,     /* Polly's DecorrelatedJitterBackoffV2: a = median, b = pfactor, c = rp scaling */
    FS_BACKOFF_KIND_COUNT
} fs_backoff_kind;

typedef enum fs_jitter {
    FS_JITTER_NONE = 0,
    FS_JITTER_FULL,         /* uniform(0, d) */
    FS_JITTER_EQUAL,        /* d/2 + uniform(0, d/2) */
    FS_JITTER_COUNT
} fs_jitter;

typedef struct fs_backoff {
    fs_backoff_kind kind;
    fs_jitter jitter;
    double a;               /* const: delay; linear/expo/fibo/decorrexp: minimum; softexp: median */
    double b;               /* linear: additive; expo: base; fibo: factor; decorrexp: base; softexp: pfactor */
    double c;               /* softexp: rp scaling factor; unused otherwise */
    double max;             /* cap in seconds; INFINITY for none (delays then saturate at DBL_MAX) */
    const double *seq;      /* interval: borrowed, owned by whoever owns the fs_backoff */
    size_t seq_len;
} fs_backoff;

typedef struct fs_backoff_state {
    uint64_t k;             /* number of delays produced so far; saturates at UINT64_MAX */
    double prev;            /* kind-specific memory: fibo previous delay (b before the first); */
    double cur;             /* fibo next delay; decorrexp cur; softexp f(prev t) in prev and last
                             * delay in cur; expo: non-zero once capped */
} fs_backoff_state;

/* Error codes of fs_backoff_check: which field is invalid. */
typedef enum fs_backoff_err {
    FS_BACKOFF_OK = 0,
    FS_BACKOFF_EKIND,       /* kind or jitter out of range */
    FS_BACKOFF_EA,          /* a negative, NaN or infinite (softexp: median must be > 0) */
    FS_BACKOFF_EB,          /* b out of range (expo base < 1, decorrexp base < 1, softexp pfactor <= 0, negative or NaN) */
    FS_BACKOFF_EC,          /* softexp rp scaling <= 0 or not finite */
    FS_BACKOFF_EMAX,        /* max NaN, negative, or below a */
    FS_BACKOFF_ESEQ         /* interval: empty sequence or an element negative/NaN/inf */
} fs_backoff_err;

/* Validates a schedule; returns FS_BACKOFF_OK or the first invalid field, in struct order
 * (kind/jitter, a, b, c, max, seq). Only fields a kind uses are checked: interval ignores a
 * (and "max below a"), const and interval ignore b, only softexp reads c. b, where used, must
 * be finite. decorrexp with a = 0 is valid and yields only zeros. */
fs_backoff_err fs_backoff_check(const fs_backoff *b);

/* Starts a fresh sequence for one call. */
void fs_backoff_reset(const fs_backoff *b, fs_backoff_state *st);

/* Next delay in seconds: finite, >= 0, <= max (jitter is applied after the cap).
 * b must have passed fs_backoff_check. Draws from rng only for jitter, decorrexp and softexp.
 * Caps are sticky for expo, fibo and softexp: once a delay reaches max, every later one is max
 * (softexp's raw terms can dip after a peak; we don't let them, and 2^t overflows anyway). */
double fs_backoff_next(const fs_backoff *b, fs_backoff_state *st, fs_rng *rng);

/* Applies a jitter to a delay d >= 0; the result lies in [0, d]. */
double fs_jitter_apply(fs_jitter j, double d, fs_rng *rng);

#endif
