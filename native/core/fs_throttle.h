/* Client-side adaptive throttling (Google SRE book, "Handling Overload"): over a sliding
 * window, a new request is rejected locally with probability
 *     p = max(0, (requests - k * accepts) / (requests + 1)),
 * capped at max_reject, where requests counts every request the client made (those it
 * rejected itself included) and accepts those the dependency accepted. While the dependency
 * accepts at least 1/k of them p is 0; as it accepts fewer, the client sends about k times
 * what it accepts and rejects the rest without a round trip.
 *
 * The window is FS_THROTTLE_BUCKETS buckets of window_ns / FS_THROTTLE_BUCKETS each; a bucket
 * leaves the window whole once it is older than the window. Requests are counted when they end
 * (admitted ones, with their outcome) or when they are refused, so a call that never ends
 * (cancelled) counts nothing. */
#ifndef FS_THROTTLE_H
#define FS_THROTTLE_H

#include <stdbool.h>
#include <stdint.h>

#include "fs_rng.h"

#define FS_THROTTLE_BUCKETS 40

typedef struct fs_throttle {
    double k;                   /* >= 1 */
    double max_reject;          /* (0, 1] */
    int64_t window_ns;          /* >= FS_THROTTLE_BUCKETS */
    int64_t bucket_ns;          /* window_ns / FS_THROTTLE_BUCKETS */
    int64_t epoch;              /* index of the newest bucket (now_ns / bucket_ns) */
    uint32_t head;              /* ring slot of the newest bucket */
    uint64_t requests;          /* sums over the window */
    uint64_t accepts;
    uint64_t req[FS_THROTTLE_BUCKETS];
    uint64_t acc[FS_THROTTLE_BUCKETS];
} fs_throttle;

/* k in [1, 1e6], max_reject in (0, 1], window_ns >= FS_THROTTLE_BUCKETS. Returns 0 (empty
 * window), or -1 when out of range (t untouched). */
int fs_throttle_init(fs_throttle *t, double k, double max_reject, int64_t window_ns);

/* The rejection probability at now_ns (drops buckets that left the window). now_ns must not go
 * back by more than a bucket between calls (an earlier time reads as the newest bucket). */
double fs_throttle_probability(fs_throttle *t, int64_t now_ns);

/* A new request: returns true to send it (nothing is counted yet: fs_throttle_record counts it
 * when it ends), or false to reject it locally, counted as a request now. Draws from rng only
 * when the probability is above 0. */
bool fs_throttle_admit(fs_throttle *t, int64_t now_ns, fs_rng *rng);

/* As fs_throttle_admit, with the probability multiplied by scale (>= 0) and capped at
 * max_reject: per-call priorities (a low priority above 1, a high one below). */
bool fs_throttle_admit_scaled(fs_throttle *t, int64_t now_ns, fs_rng *rng, double scale);

/* An admitted request ended at now_ns: counted as a request, and as an accept when accepted. */
void fs_throttle_record(fs_throttle *t, int64_t now_ns, bool accepted);

/* A new request sent without observing its outcome, when the window at now_ns holds only
 * accepted requests (so p is 0): counted at once as a request and an accept, and true. Else
 * nothing is counted and false: the request goes through fs_throttle_admit (and its outcome
 * through fs_throttle_record). Lets a caller observe only a sample of the calls while nothing
 * fails; a failure among the unobserved ones is counted as an accept. */
bool fs_throttle_pass_accepted(fs_throttle *t, int64_t now_ns);

/* Nanoseconds from now_ns until the oldest bucket leaves the window (>= 1): when the counts can
 * next change without new requests. */
int64_t fs_throttle_next_change_ns(const fs_throttle *t, int64_t now_ns);

#endif
