/* Adaptive concurrency limit: how many calls may be in flight at once, moved by the latency and
 * the drops of the calls that finish. Three update rules, each as published:
 *
 * - gradient2 (Netflix concurrency-limits Gradient2Limit): a long RTT (an exponential average
 *   over long_window samples, a plain average over the first 10) against the short RTT (the last
 *   sample); gradient = clamp(tolerance * long / short, 0.5, 1); new = limit * gradient +
 *   queue_size, smoothed: limit = limit * (1 - smoothing) + new * smoothing. A long RTT over twice
 *   the short one decays by 5 % a sample (latency back to normal after long overload).
 * - vegas (VegasLimit): rtt_noload is the least RTT seen (reset to the current sample every
 *   probe_multiplier * limit samples, 0: never; under a lasting queue a probe takes the queued
 *   RTT as the new minimum, so the limit ratchets up); queue = ceil(limit * (1 - rtt_noload / rtt)); with
 *   l = max(1, floor(log10(limit))): queue <= l: limit + beta * l; queue < alpha * l: limit + l;
 *   queue > beta * l: limit - l; a drop: limit - l; smoothed as gradient2 (alpha 3, beta 6 as
 *   published).
 * - aimd (AIMDLimit): a drop, or an RTT over timeout, multiplies the limit by backoff_ratio;
 *   otherwise + 1.
 *
 * Every rule leaves the limit alone while the dependency is not the bottleneck (fewer than half
 * the limit in flight when the call started: "app limited"), except that a drop always counts,
 * and keeps it within [min_limit, max_limit]. The limit is a real number; calls are admitted
 * while in flight < floor(limit). Who waits, and in what order, belongs to the caller. */
#ifndef FS_ALIMIT_H
#define FS_ALIMIT_H

#include <stdbool.h>
#include <stdint.h>

typedef enum fs_alimit_algo {
    FS_AL_GRADIENT2 = 0,
    FS_AL_VEGAS = 1,
    FS_AL_AIMD = 2
} fs_alimit_algo;

/* Warm-up of gradient2's long RTT: the first samples are averaged plainly. */
#define FS_AL_WARMUP 10

typedef struct fs_alimit_config {
    int algo;                   /* fs_alimit_algo */
    double initial;             /* first limit, within [min_limit, max_limit] */
    double min_limit;           /* >= 1 */
    double max_limit;           /* >= min_limit, <= 1e9 */
    double smoothing;           /* gradient2, vegas: (0, 1] */
    double tolerance;           /* gradient2: >= 1, how much latency growth is no queueing */
    double queue_size;          /* gradient2: >= 0, calls allowed to queue at the dependency */
    uint32_t long_window;       /* gradient2: >= 1 samples of the long RTT average */
    double alpha;               /* vegas: >= 1, queue below alpha * l grows the limit */
    double beta;                /* vegas: >= alpha, queue above beta * l shrinks it */
    uint32_t probe_multiplier;  /* vegas: rtt_noload re-measured every this * limit samples; 0: never */
    double backoff_ratio;       /* aimd: (0, 1) */
    int64_t timeout_ns;         /* aimd: >= 1, an RTT above it counts as a drop */
} fs_alimit_config;

typedef struct fs_alimit {
    fs_alimit_config cfg;
    double limit;               /* within [min_limit, max_limit] */
    uint64_t inflight;          /* calls admitted and not yet released */
    double long_rtt_ns;         /* gradient2: the long average; 0 before the first sample */
    uint32_t long_count;        /* gradient2: samples in the warm-up average (<= FS_AL_WARMUP) */
    double rtt_noload_ns;       /* vegas: the least RTT since the last probe; 0: none yet */
    uint64_t probe_count;       /* vegas: samples since the last probe */
    int64_t last_rtt_ns;        /* the last sample's RTT; 0 before any */
    uint64_t samples;           /* samples taken */
    uint64_t drops;             /* of which drops */
    uint64_t peak_inflight;
} fs_alimit;

/* Fills cfg with the defaults for algo: initial 20, limits [1, 1000], smoothing 0.2 (vegas 1.0),
 * tolerance 1.0, queue_size 1, long_window 2000 (gradient2's published 1.5, 4, 600 let a lasting
 * queue raise the limit), alpha 3, beta 6, probe_multiplier 30, backoff 0.9, timeout 5 s. */
void fs_alimit_defaults(fs_alimit_config *cfg, int algo);

/* Checks cfg (ranges above) and starts l at cfg->initial with nothing in flight. Returns 0, or
 * -1 when out of range (l untouched). */
int fs_alimit_init(fs_alimit *l, const fs_alimit_config *cfg);

/* The whole calls allowed in flight now: floor(limit), >= 1. */
uint64_t fs_alimit_current(const fs_alimit *l);

/* Whether a new call may run now (in flight < current limit); changes nothing. */
bool fs_alimit_has_room(const fs_alimit *l);

/* A new call: takes a place (in flight + 1) and returns true when there is room, else false
 * with nothing changed. *inflight_at_start (may be NULL) gets the count it found, for the
 * call's sample. */
bool fs_alimit_try_acquire(fs_alimit *l, uint64_t *inflight_at_start);

/* Takes a place whatever the limit (a waiting call handed a place by the caller's queue). */
void fs_alimit_force_acquire(fs_alimit *l);

/* A call ends without a sample (cancelled, or its outcome says nothing of the dependency):
 * in flight - 1, the limit unchanged. in flight must be > 0 (0 stays 0). */
void fs_alimit_release(fs_alimit *l);

/* A call ends with a sample: its RTT (rtt_ns >= 0; 0 reads as 1 ns), the in-flight count
 * found when it started, and whether it was a drop (timed out, refused by the dependency).
 * Releases its place and updates the limit by the configured rule. */
void fs_alimit_complete(fs_alimit *l, int64_t rtt_ns, uint64_t inflight_at_start, bool drop);

/* Only the update rule of fs_alimit_complete (no place released): for tests and simulators. */
void fs_alimit_sample(fs_alimit *l, int64_t rtt_ns, uint64_t inflight_at_start, bool drop);

#endif
