/* Circuit breaker state machine: see fs_breaker.h. */
#include "fs_breaker.h"

#include <string.h>

#define FS_BR_MAX_WINDOW (1u << 24)

/* Token: the epoch of the admission in the high bits, bit 0 set for a probe. */
static uint64_t make_token(uint32_t epoch, int probe)
{
    return ((uint64_t)epoch << 1) | (probe ? 1u : 0u);
}

static uint32_t token_epoch(uint64_t token)
{
    return (uint32_t)(token >> 1);
}

int fs_breaker_token_is_probe(uint64_t token)
{
    return (int)(token & 1u);
}

int fs_breaker_config_check(const fs_breaker_config *cfg)
{
    if (cfg->half_open_max_calls < 1 || cfg->recovery_threshold < 1 || cfg->recovery_ns < 0
        || !(cfg->recovery_growth >= 1.0) || cfg->recovery_growth > 1e9
        || cfg->max_recovery_ns < cfg->recovery_ns || cfg->slow_ns < 0
        || !(cfg->slow_rate >= 0.0 && cfg->slow_rate <= 1.0)) {
        return -1;
    }
    if (cfg->slow_rate > 0.0 && cfg->slow_ns == 0) {
        return -1;
    }
    switch (cfg->mode) {
    case FS_BR_CONSECUTIVE:
        return cfg->failure_threshold >= 1 && cfg->slow_rate == 0.0 ? 0 : -1;
    case FS_BR_COUNT_WINDOW:
    case FS_BR_TIME_WINDOW:
        if (!(cfg->failure_rate > 0.0 && cfg->failure_rate <= 1.0) || cfg->window_size < 1
            || cfg->window_size > FS_BR_MAX_WINDOW || cfg->min_calls < 1) {
            return -1;
        }
        if (cfg->mode == FS_BR_COUNT_WINDOW) {
            return cfg->min_calls <= cfg->window_size ? 0 : -1;
        }
        return cfg->window_ns >= (int64_t)cfg->window_size ? 0 : -1;
    }
    return -1;
}

size_t fs_breaker_buffer_size(const fs_breaker_config *cfg)
{
    switch (cfg->mode) {
    case FS_BR_COUNT_WINDOW:
        return (size_t)cfg->window_size;
    case FS_BR_TIME_WINDOW:
        return (size_t)cfg->window_size * sizeof(fs_br_bucket);
    default:
        return 0;
    }
}

static void clear_window(fs_breaker *b)
{
    b->consecutive = 0;
    b->calls = b->failures = b->slow = 0;
    b->ring_head = 0;
    if (b->ring != NULL) {
        memset(b->ring, 0, b->cfg->window_size);
    }
    if (b->buckets != NULL) {
        for (uint32_t i = 0; i < b->cfg->window_size; i++) {
            b->buckets[i].index = -1;
            b->buckets[i].calls = b->buckets[i].failures = b->buckets[i].slow = 0;
        }
    }
    b->last_index = -1;
}

int fs_breaker_init(fs_breaker *b, const fs_breaker_config *cfg, void *buf, size_t buf_len)
{
    if (fs_breaker_config_check(cfg) < 0) {
        return -1;
    }
    size_t need = fs_breaker_buffer_size(cfg);
    if (need > 0 && (buf == NULL || buf_len < need)) {
        return -1;
    }
    memset(b, 0, sizeof(*b));
    b->cfg = cfg;
    b->simple = cfg->mode == FS_BR_CONSECUTIVE && cfg->slow_ns == 0;
    b->state = FS_BR_WORKING;
    if (cfg->mode == FS_BR_COUNT_WINDOW) {
        b->ring = (uint8_t *)buf;
    }
    else if (cfg->mode == FS_BR_TIME_WINDOW) {
        b->buckets = (fs_br_bucket *)buf;
        b->bucket_ns = cfg->window_ns / (int64_t)cfg->window_size;
    }
    clear_window(b);
    return 0;
}

/* Break length of a new opening: recovery_ns for the first one since the last close, then
 * the previous break grown, capped. */
static int64_t next_break_ns(fs_breaker *b)
{
    double cap = (double)b->cfg->max_recovery_ns;
    if (b->openings <= 1) {
        b->break_ns = (double)b->cfg->recovery_ns;
    }
    else if (b->break_ns < cap) {
        b->break_ns *= b->cfg->recovery_growth;
    }
    if (b->break_ns >= cap) {
        b->break_ns = cap;
        return b->cfg->max_recovery_ns;
    }
    return (int64_t)b->break_ns;
}

static unsigned to_failing(fs_breaker *b, int64_t now_ns)
{
    b->state = FS_BR_FAILING;
    b->epoch++;
    if (b->openings < UINT32_MAX) {
        b->openings++;
    }
    int64_t d = next_break_ns(b);
    b->open_until_ns = now_ns > INT64_MAX - d ? INT64_MAX : now_ns + d;
    b->probes = b->probe_successes = 0;
    clear_window(b);
    return FS_BR_TO_FAILING;
}

static unsigned to_working(fs_breaker *b)
{
    b->state = FS_BR_WORKING;
    b->epoch++;
    b->openings = 0;
    b->probes = b->probe_successes = 0;
    clear_window(b);
    return FS_BR_TO_WORKING;
}

/* Moves failing -> recovering when the break is over (not when isolated). */
static unsigned maybe_recover(fs_breaker *b, int64_t now_ns)
{
    if (b->state == FS_BR_FAILING && !b->isolated && now_ns >= b->open_until_ns) {
        b->state = FS_BR_RECOVERING;
        b->epoch++;
        b->probes = b->probe_successes = 0;
        return FS_BR_TO_RECOVERING;
    }
    return 0;
}

int64_t fs_breaker_retry_after(const fs_breaker *b, int64_t now_ns)
{
    if (b->state != FS_BR_FAILING || b->isolated) {
        return -1;
    }
    return b->open_until_ns > now_ns ? b->open_until_ns - now_ns : 0;
}

int fs_breaker_would_reject(fs_breaker *b, int64_t now_ns, int64_t *retry_after_ns,
                            unsigned *transition)
{
    *transition = 0;
    if (b->state == FS_BR_WORKING) {
        return 0;
    }
    *transition = maybe_recover(b, now_ns);
    if (b->state == FS_BR_FAILING) {
        *retry_after_ns = fs_breaker_retry_after(b, now_ns);
        return 1;
    }
    if (b->probes >= b->cfg->half_open_max_calls) {
        *retry_after_ns = -1;
        return 1;
    }
    return 0;
}

fs_br_admit fs_breaker_acquire(fs_breaker *b, int64_t now_ns, uint64_t *token,
                               int64_t *retry_after_ns, unsigned *transition)
{
    if (fs_breaker_would_reject(b, now_ns, retry_after_ns, transition)) {
        return FS_BR_REJECTED;
    }
    if (b->state == FS_BR_WORKING) {
        *token = fs_breaker_working_token(b);
        return FS_BR_ADMITTED;
    }
    b->probes++;
    *token = make_token(b->epoch, 1);
    return FS_BR_PROBE;
}

int fs_breaker_token_current(const fs_breaker *b, uint64_t token)
{
    return token_epoch(token) == b->epoch;
}

void fs_breaker_expire(fs_breaker *b, int64_t now_ns)
{
    if (b->buckets == NULL || b->last_index < 0) {
        return;
    }
    int64_t idx = now_ns / b->bucket_ns;
    int64_t n = (int64_t)b->cfg->window_size;
    if (idx <= b->last_index) {
        return;
    }
    if (idx - b->last_index >= n) {
        /* Every bucket left the window. */
        clear_window(b);
        b->last_index = idx;
        return;
    }
    /* Only the slots of the indexes (last_index, idx] can hold buckets that left the window. */
    for (int64_t i = b->last_index + 1; i <= idx; i++) {
        fs_br_bucket *k = &b->buckets[i % n];
        if (k->index >= 0) {
            b->calls -= k->calls;
            b->failures -= k->failures;
            b->slow -= k->slow;
            k->index = -1;
            k->calls = k->failures = k->slow = 0;
        }
    }
    b->last_index = idx;
}

static int window_trips(const fs_breaker *b)
{
    if (b->calls < b->cfg->min_calls) {
        return 0;
    }
    double calls = (double)b->calls;
    /* Division, not multiplication: a ratio written as a decimal (0.3) compares exactly. */
    if ((double)b->failures / calls >= b->cfg->failure_rate) {
        return 1;
    }
    return b->cfg->slow_rate > 0.0 && (double)b->slow / calls >= b->cfg->slow_rate;
}

static unsigned record_working(fs_breaker *b, unsigned bits, int64_t now_ns)
{
    switch (b->cfg->mode) {
    case FS_BR_CONSECUTIVE:
        if (bits & FS_BR_BIT_FAILURE) {
            b->consecutive++;
            if (b->consecutive >= b->cfg->failure_threshold) {
                return to_failing(b, now_ns);
            }
        }
        else {
            b->consecutive = 0;
        }
        return 0;
    case FS_BR_COUNT_WINDOW: {
        uint32_t n = b->cfg->window_size;
        if (b->calls == n) {
            uint8_t old = b->ring[b->ring_head];
            b->calls--;
            b->failures -= (old & FS_BR_BIT_FAILURE) ? 1u : 0u;
            b->slow -= (old & FS_BR_BIT_SLOW) ? 1u : 0u;
        }
        b->ring[b->ring_head] = (uint8_t)bits;
        b->ring_head = b->ring_head + 1 == n ? 0 : b->ring_head + 1;
        break;
    }
    case FS_BR_TIME_WINDOW: {
        fs_breaker_expire(b, now_ns);
        int64_t idx = now_ns / b->bucket_ns;
        if (idx > b->last_index) {
            b->last_index = idx;
        }
        fs_br_bucket *k = &b->buckets[idx % (int64_t)b->cfg->window_size];
        if (k->index != idx) {
            /* Reached only through a bucket that expire() already emptied. */
            k->index = idx;
            k->calls = k->failures = k->slow = 0;
        }
        k->calls++;
        k->failures += (bits & FS_BR_BIT_FAILURE) ? 1u : 0u;
        k->slow += (bits & FS_BR_BIT_SLOW) ? 1u : 0u;
        break;
    }
    }
    b->calls++;
    b->failures += (bits & FS_BR_BIT_FAILURE) ? 1u : 0u;
    b->slow += (bits & FS_BR_BIT_SLOW) ? 1u : 0u;
    return window_trips(b) ? to_failing(b, now_ns) : 0;
}

unsigned fs_breaker_record(fs_breaker *b, uint64_t token, fs_br_outcome outcome,
                           int64_t duration_ns, int64_t now_ns)
{
    if (!fs_breaker_token_current(b, token)) {
        return 0;
    }
    int slow = outcome == FS_BR_SUCCESS && b->cfg->slow_ns > 0 && duration_ns >= b->cfg->slow_ns;
    if (fs_breaker_token_is_probe(token)) {
        /* Current probe token: the breaker is recovering. */
        if (b->probes > 0) {
            b->probes--;
        }
        if (outcome == FS_BR_FAILURE || slow) {
            return to_failing(b, now_ns);
        }
        b->probe_successes++;
        return b->probe_successes >= b->cfg->recovery_threshold ? to_working(b) : 0;
    }
    unsigned bits = 0;
    if (outcome == FS_BR_FAILURE) {
        bits = FS_BR_BIT_FAILURE;
    }
    else if (slow) {
        bits = b->cfg->slow_rate > 0.0 ? FS_BR_BIT_SLOW : FS_BR_BIT_FAILURE;
    }
    return record_working(b, bits, now_ns);
}

void fs_breaker_release(fs_breaker *b, uint64_t token)
{
    if (fs_breaker_token_is_probe(token) && fs_breaker_token_current(b, token) && b->probes > 0) {
        b->probes--;
    }
}

unsigned fs_breaker_isolate(fs_breaker *b, int64_t now_ns)
{
    b->isolated = 1;
    if (b->state == FS_BR_FAILING) {
        return 0;
    }
    b->state = FS_BR_FAILING;
    b->epoch++;
    b->open_until_ns = now_ns;
    b->probes = b->probe_successes = 0;
    clear_window(b);
    return FS_BR_TO_FAILING;
}

unsigned fs_breaker_trip(fs_breaker *b, int64_t now_ns, int64_t break_ns)
{
    if (b->isolated) {
        return 0;
    }
    int64_t until = now_ns > INT64_MAX - break_ns ? INT64_MAX : now_ns + break_ns;
    if (b->state == FS_BR_FAILING) {
        if (until > b->open_until_ns) {
            b->open_until_ns = until;
        }
        return 0;
    }
    unsigned bits = to_failing(b, now_ns);
    b->open_until_ns = until;   /* the dependency's break, not the grown one */
    return bits;
}

unsigned fs_breaker_reset(fs_breaker *b)
{
    int was_working = b->state == FS_BR_WORKING;
    b->isolated = 0;
    to_working(b);
    return was_working ? 0 : FS_BR_TO_WORKING;
}

int fs_breaker_holds_state(fs_breaker *b, int64_t now_ns)
{
    if (b->state != FS_BR_WORKING || b->isolated || b->consecutive > 0) {
        return 1;
    }
    fs_breaker_expire(b, now_ns);
    return b->failures > 0 || b->slow > 0;
}
