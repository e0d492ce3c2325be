#include "fs_alimit.h"

#include <math.h>
#include <stddef.h>

void fs_alimit_defaults(fs_alimit_config *cfg, int algo)
{
    *cfg = (fs_alimit_config){
        .algo = algo,
        .initial = 20.0,
        .min_limit = 1.0,
        .max_limit = 1000.0,
        .smoothing = algo == FS_AL_VEGAS ? 1.0 : 0.2,
        /* Not Netflix's 1.5 / 4 / 600: those let a lasting queue hold the limit up (the long RTT
         * follows it); these keep the RTT near the long one and the long one slow to move. */
        .tolerance = 1.0,
        .queue_size = 1.0,
        .long_window = 2000,
        .alpha = 3.0,
        .beta = 6.0,
        .probe_multiplier = 30,
        .backoff_ratio = 0.9,
        .timeout_ns = 5000000000LL,
    };
}

int fs_alimit_init(fs_alimit *l, const fs_alimit_config *c)
{
    /* Written as positive checks so NaN fails each of them. */
    if (!(c->algo >= FS_AL_GRADIENT2 && c->algo <= FS_AL_AIMD) || !(c->min_limit >= 1.0)
        || !(c->max_limit >= c->min_limit && c->max_limit <= 1e9)
        || !(c->initial >= c->min_limit && c->initial <= c->max_limit)
        || !(c->smoothing > 0.0 && c->smoothing <= 1.0) || !(c->tolerance >= 1.0 && c->tolerance <= 1e9)
        || !(c->queue_size >= 0.0 && c->queue_size <= 1e9) || c->long_window < 1
        || !(c->alpha >= 1.0 && c->beta >= c->alpha && c->beta <= 1e9)
        || !(c->backoff_ratio > 0.0 && c->backoff_ratio < 1.0)
        || c->timeout_ns < 1) {
        return -1;
    }
    *l = (fs_alimit){.cfg = *c, .limit = c->initial};
    return 0;
}

uint64_t fs_alimit_current(const fs_alimit *l)
{
    return (uint64_t)l->limit;  /* limit >= min_limit >= 1 */
}

bool fs_alimit_has_room(const fs_alimit *l)
{
    return l->inflight < fs_alimit_current(l);
}

bool fs_alimit_try_acquire(fs_alimit *l, uint64_t *inflight_at_start)
{
    if (l->inflight >= fs_alimit_current(l)) {
        return false;
    }
    if (inflight_at_start != NULL) {
        *inflight_at_start = l->inflight;
    }
    if (++l->inflight > l->peak_inflight) {
        l->peak_inflight = l->inflight;
    }
    return true;
}

void fs_alimit_force_acquire(fs_alimit *l)
{
    if (++l->inflight > l->peak_inflight) {
        l->peak_inflight = l->inflight;
    }
}

void fs_alimit_release(fs_alimit *l)
{
    if (l->inflight > 0) {
        l->inflight--;
    }
}

static double clamp(double v, double lo, double hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* Vegas's step: max(1, floor(log10(limit))). */
static double log10_step(double limit)
{
    double s = floor(log10(limit));
    return s < 1.0 ? 1.0 : s;
}

static double gradient2(fs_alimit *l, double rtt, bool app_limited)
{
    const fs_alimit_config *c = &l->cfg;
    /* The long RTT: plain average while warming up, then an exponential one. */
    if (l->long_count < FS_AL_WARMUP) {
        l->long_count++;
        l->long_rtt_ns += (rtt - l->long_rtt_ns) / l->long_count;
    }
    else {
        double f = 2.0 / ((double)c->long_window + 1.0);
        l->long_rtt_ns = l->long_rtt_ns * (1.0 - f) + rtt * f;
    }
    if (l->long_rtt_ns / rtt > 2.0) {
        l->long_rtt_ns *= 0.95;
    }
    if (app_limited) {
        return l->limit;
    }
    double gradient = clamp(c->tolerance * l->long_rtt_ns / rtt, 0.5, 1.0);
    double next = l->limit * gradient + c->queue_size;
    return l->limit * (1.0 - c->smoothing) + next * c->smoothing;
}

static double vegas(fs_alimit *l, double rtt, bool app_limited, bool drop)
{
    const fs_alimit_config *c = &l->cfg;
    if (c->probe_multiplier > 0
        && ++l->probe_count >= (uint64_t)c->probe_multiplier * fs_alimit_current(l)) {
        l->probe_count = 0;
        l->rtt_noload_ns = rtt;     /* probe: forget a minimum the dependency no longer gives */
        return l->limit;
    }
    if (l->rtt_noload_ns == 0.0 || rtt < l->rtt_noload_ns) {
        l->rtt_noload_ns = rtt;
        return l->limit;
    }
    double step = log10_step(l->limit);
    double next;
    if (drop) {
        next = l->limit - step;
    }
    else if (app_limited) {
        return l->limit;
    }
    else {
        double queue = ceil(l->limit * (1.0 - l->rtt_noload_ns / rtt));
        if (queue <= step) {
            next = l->limit + c->beta * step;
        }
        else if (queue < c->alpha * step) {
            next = l->limit + step;
        }
        else if (queue > c->beta * step) {
            next = l->limit - step;
        }
        else {
            return l->limit;
        }
    }
    next = clamp(next, c->min_limit, c->max_limit);
    return l->limit * (1.0 - c->smoothing) + next * c->smoothing;
}

static double aimd(fs_alimit *l, int64_t rtt_ns, bool app_limited, bool drop)
{
    if (drop || rtt_ns > l->cfg.timeout_ns) {
        return l->limit * l->cfg.backoff_ratio;
    }
    return app_limited ? l->limit : l->limit + 1.0;
}

void fs_alimit_sample(fs_alimit *l, int64_t rtt_ns, uint64_t inflight_at_start, bool drop)
{
    if (rtt_ns < 1) {
        rtt_ns = 1;
    }
    double rtt = (double)rtt_ns;
    /* The call counted itself in flight: inflight_at_start + 1 were running with it. */
    bool app_limited = (double)(inflight_at_start + 1) * 2.0 < l->limit;
    double next;
    switch (l->cfg.algo) {
    case FS_AL_VEGAS:
        next = vegas(l, rtt, app_limited, drop);
        break;
    case FS_AL_AIMD:
        next = aimd(l, rtt_ns, app_limited, drop);
        break;
    default:
        next = gradient2(l, rtt, app_limited);
        break;
    }
    l->limit = clamp(next, l->cfg.min_limit, l->cfg.max_limit);
    l->last_rtt_ns = rtt_ns;
    l->samples++;
    l->drops += drop;
}

void fs_alimit_complete(fs_alimit *l, int64_t rtt_ns, uint64_t inflight_at_start, bool drop)
{
    fs_alimit_release(l);
    fs_alimit_sample(l, rtt_ns, inflight_at_start, drop);
}
