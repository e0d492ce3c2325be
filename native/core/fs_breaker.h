/* Circuit breaker state machine.
 *
 * States: working (closed: calls pass, outcomes are judged), failing (open: calls are
 * rejected until the break ends), recovering (half-open: a limited number of concurrent probe
 * calls pass; recovery_threshold successes close the breaker, one failed probe reopens it).
 *
 * Failure detection (while working), one mode per breaker:
 *   CONSECUTIVE  failure_threshold failures in a row open it; a success resets the count.
 *   COUNT_WINDOW the last window_size outcomes are kept; once at least min_calls are in the
 *                window, a failure ratio >= failure_rate opens it.
 *   TIME_WINDOW  outcomes of the last window_ns, in window_size buckets of window_ns /
 *                window_size each (the window slides one bucket at a time, so it covers
 *                between (window_size - 1) and window_size buckets); same ratio test.
 * Slow calls (duration >= slow_ns, when slow_ns > 0): with slow_rate == 0 a slow call counts
 * as a failure (in every mode); with slow_rate > 0 (window modes only) slow calls are counted
 * apart, and a slow ratio >= slow_rate opens the breaker too. A failing call is never also
 * counted as slow. While recovering, a slow probe is a failed probe.
 *
 * Break duration: recovery_ns for the first opening, multiplied by recovery_growth for each
 * further opening without a close in between (a failed probe reopens), capped at
 * max_recovery_ns. The failing -> recovering move happens lazily, at the first admission after
 * the break ends.
 *
 * Every admission returns a token. Outcomes count only within the state period they were
 * admitted in (a period is identified by an epoch bumped at each transition): a call admitted
 * while working that ends after the breaker opened changes nothing, and so does a probe that
 * ends after its recovery period was closed by other probes.
 *
 * Time is an int64 nanosecond argument (monotonic, never decreasing). No allocation: the
 * window lives in a caller-provided buffer of fs_breaker_buffer_size() bytes. Not thread-safe:
 * the caller serialises (the GIL).
 */
#ifndef FS_BREAKER_H
#define FS_BREAKER_H

#include <stddef.h>
#include <stdint.h>

typedef enum fs_br_state {
    FS_BR_WORKING = 0,
    FS_BR_RECOVERING = 1,
    FS_BR_FAILING = 2
} fs_br_state;

typedef enum fs_br_mode {
    FS_BR_CONSECUTIVE = 0,
    FS_BR_COUNT_WINDOW = 1,
    FS_BR_TIME_WINDOW = 2
} fs_br_mode;

/* Outcome of an admitted call, for fs_breaker_record. */
typedef enum fs_br_outcome {
    FS_BR_SUCCESS = 0,
    FS_BR_FAILURE = 1
} fs_br_outcome;

/* Result of fs_breaker_acquire. */
typedef enum fs_br_admit {
    FS_BR_ADMITTED = 0,     /* a working-state call */
    FS_BR_PROBE = 1,        /* a recovering-state probe: holds a slot until recorded/released */
    FS_BR_REJECTED = 2
} fs_br_admit;

typedef struct fs_breaker_config {
    fs_br_mode mode;
    uint32_t failure_threshold;     /* CONSECUTIVE: >= 1 */
    double failure_rate;            /* windows: in (0, 1] */
    uint32_t window_size;           /* COUNT_WINDOW: calls; TIME_WINDOW: buckets; >= 1 */
    int64_t window_ns;              /* TIME_WINDOW: >= window_size (a bucket lasts >= 1 ns) */
    uint32_t min_calls;             /* windows: >= 1 (COUNT_WINDOW: <= window_size) */
    int64_t slow_ns;                /* 0: no slow-call detection */
    double slow_rate;               /* 0: slow calls are failures; (0, 1]: own threshold */
    uint32_t half_open_max_calls;   /* concurrent probes, >= 1 */
    uint32_t recovery_threshold;    /* probe successes to close, >= 1 */
    int64_t recovery_ns;            /* first break, >= 0 */
    double recovery_growth;         /* >= 1: break multiplier per further opening */
    int64_t max_recovery_ns;        /* cap of the break, >= recovery_ns */
} fs_breaker_config;

typedef struct fs_br_bucket {
    int64_t index;                  /* now / bucket_ns of the outcomes it holds, -1: empty */
    uint32_t calls, failures, slow;
} fs_br_bucket;

typedef struct fs_breaker {
    const fs_breaker_config *cfg;   /* borrowed: breakers of one configuration share it */
    fs_br_state state;
    int isolated;                   /* forced failing until fs_breaker_reset */
    uint32_t epoch;                 /* bumped at every transition */
    /* working */
    uint32_t consecutive;           /* CONSECUTIVE: failures in a row */
    uint32_t calls, failures, slow; /* windows: totals of the window */
    uint32_t simple;                /* consecutive without slow-call detection: a success in
                                     * the working period only ends the failure run */
    uint8_t *ring;                  /* COUNT_WINDOW: outcome bits per slot */
    uint32_t ring_head;             /* next slot to write */
    fs_br_bucket *buckets;          /* TIME_WINDOW */
    int64_t bucket_ns;
    int64_t last_index;             /* newest bucket index seen, -1: none */
    /* recovering */
    uint32_t probes;                /* probes in flight */
    uint32_t probe_successes;
    /* failing */
    int64_t open_until_ns;
    uint32_t openings;              /* openings since the last close (break growth) */
    double break_ns;                /* length of the current break */
} fs_breaker;

/* Bits of an outcome slot in the count window. */
#define FS_BR_BIT_FAILURE 0x1u
#define FS_BR_BIT_SLOW 0x2u

/* Transition bits reported by the operations below (at most one per call). */
#define FS_BR_TO_WORKING 0x1u
#define FS_BR_TO_RECOVERING 0x2u
#define FS_BR_TO_FAILING 0x4u

/* 0 when cfg is consistent (the ranges above), else -1. */
int fs_breaker_config_check(const fs_breaker_config *cfg);

/* Bytes of window storage cfg needs (0 for CONSECUTIVE). cfg must pass the check. */
size_t fs_breaker_buffer_size(const fs_breaker_config *cfg);

/* Initialises b working, with cfg (borrowed: it must outlive b and not change while b uses it;
 * breakers configured alike may share one) and buf (>= fs_breaker_buffer_size(cfg) bytes,
 * suitably aligned for int64_t, owned by the caller and outliving b; may be NULL when the size
 * is 0). Returns 0, or -1 when cfg fails the check or buf is too small. */
int fs_breaker_init(fs_breaker *b, const fs_breaker_config *cfg, void *buf, size_t buf_len);

/* Asks to start a call at now_ns. When failing and the break is over (and not isolated), moves
 * to recovering first (*transition gets FS_BR_TO_RECOVERING, else 0). On ADMITTED or PROBE,
 * *token identifies the admission for record/release; on REJECTED, *retry_after_ns is the
 * time left of the break, or -1 when unknown (isolated, or all probe slots taken). */
fs_br_admit fs_breaker_acquire(fs_breaker *b, int64_t now_ns, uint64_t *token,
                               int64_t *retry_after_ns, unsigned *transition);

/* Whether a call at now_ns would be rejected, without taking a slot; performs the same lazy
 * failing -> recovering move as acquire (reported in *transition). */
int fs_breaker_would_reject(fs_breaker *b, int64_t now_ns, int64_t *retry_after_ns,
                            unsigned *transition);

/* Records the outcome of the admission token, which took duration_ns (used only for slow-call
 * detection; pass 0 when unknown), ending at now_ns. Frees its probe slot. Returns the
 * transition bits (0 when none; also 0 when the token's period is over). */
unsigned fs_breaker_record(fs_breaker *b, uint64_t token, fs_br_outcome outcome,
                           int64_t duration_ns, int64_t now_ns);

/* Whether the token's outcome would count (its period is still the current one). */
int fs_breaker_token_current(const fs_breaker *b, uint64_t token);

/* The token of a working-state admission, for callers that checked b->state == FS_BR_WORKING
 * themselves (what fs_breaker_acquire answers then, without needing the time). */
static inline uint64_t fs_breaker_working_token(const fs_breaker *b)
{
    return (uint64_t)b->epoch << 1;
}

/* The common outcome in one step: a success of an admission made in the current working period
 * of a consecutive breaker without slow-call detection ends the failure run, and nothing else.
 * Returns 1 when recorded so, 0 when fs_breaker_record must judge the outcome. */
static inline int fs_breaker_quick_success(fs_breaker *b, uint64_t token)
{
    if (!b->simple || b->state != FS_BR_WORKING || token != fs_breaker_working_token(b)) {
        return 0;
    }
    b->consecutive = 0;
    return 1;
}

/* Whether a token was admitted as a probe. */
int fs_breaker_token_is_probe(uint64_t token);

/* Ends the admission token without an outcome (cancelled, or an exception that is not a
 * failure): frees its probe slot, records nothing. */
void fs_breaker_release(fs_breaker *b, uint64_t token);

/* Forces failing until reset (rejections carry no retry-after). Returns transition bits. */
unsigned fs_breaker_isolate(fs_breaker *b, int64_t now_ns);

/* Opens b at now_ns for break_ns (>= 0), a break asked for by the dependency itself: from
 * working or recovering it moves to failing (an opening, as a tripped threshold is); when
 * already failing, the break ends no earlier than now_ns + break_ns. No effect while isolated.
 * Returns transition bits. */
unsigned fs_breaker_trip(fs_breaker *b, int64_t now_ns, int64_t break_ns);

/* Back to working with an empty window, ending any isolation. Returns transition bits. */
unsigned fs_breaker_reset(fs_breaker *b);

/* Drops window buckets older than the window at now_ns (TIME_WINDOW; no-op otherwise). */
void fs_breaker_expire(fs_breaker *b, int64_t now_ns);

/* Whether forgetting b (and building a fresh one later) would lose information at now_ns:
 * not working, failures or slow calls in its window or run, or probes in flight. */
int fs_breaker_holds_state(fs_breaker *b, int64_t now_ns);

/* Nanoseconds of the break left at now_ns when failing (0 when over), -1 when isolated or not
 * failing. */
int64_t fs_breaker_retry_after(const fs_breaker *b, int64_t now_ns);

#endif
