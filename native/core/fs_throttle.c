#include "fs_throttle.h"

int fs_throttle_init(fs_throttle *t, double k, double max_reject, int64_t window_ns)
{
    if (!(k >= 1.0 && k <= 1e6) || !(max_reject > 0.0 && max_reject <= 1.0)
        || window_ns < FS_THROTTLE_BUCKETS) {
        return -1;
    }
    *t = (fs_throttle){
        .k = k,
        .max_reject = max_reject,
        .window_ns = window_ns,
        .bucket_ns = window_ns / FS_THROTTLE_BUCKETS,
    };
    return 0;
}

/* Moves the newest bucket to now_ns's, emptying those passed over (at most all of them). */
static void roll(fs_throttle *t, int64_t now_ns)
{
    int64_t epoch = now_ns / t->bucket_ns;
    if (epoch <= t->epoch) {
        return;
    }
    int64_t gap = epoch - t->epoch;
    if (gap >= FS_THROTTLE_BUCKETS) {
        for (uint32_t i = 0; i < FS_THROTTLE_BUCKETS; i++) {
            t->req[i] = t->acc[i] = 0;
        }
        t->requests = t->accepts = 0;
    }
    else {
        for (int64_t i = 0; i < gap; i++) {
            t->head = (t->head + 1) % FS_THROTTLE_BUCKETS;
            t->requests -= t->req[t->head];
            t->accepts -= t->acc[t->head];
            t->req[t->head] = t->acc[t->head] = 0;
        }
    }
    t->epoch = epoch;
}

static double probability(const fs_throttle *t)
{
    double excess = (double)t->requests - t->k * (double)t->accepts;
    if (excess <= 0.0) {
        return 0.0;
    }
    double p = excess / ((double)t->requests + 1.0);
    return p < t->max_reject ? p : t->max_reject;
}

double fs_throttle_probability(fs_throttle *t, int64_t now_ns)
{
    roll(t, now_ns);
    return probability(t);
}

bool fs_throttle_admit(fs_throttle *t, int64_t now_ns, fs_rng *rng)
{
    return fs_throttle_admit_scaled(t, now_ns, rng, 1.0);
}

bool fs_throttle_admit_scaled(fs_throttle *t, int64_t now_ns, fs_rng *rng, double scale)
{
    roll(t, now_ns);
    double p = probability(t);
    if (scale != 1.0) {
        p = scale > 0.0 ? p * scale : 0.0;  /* also NaN: never refused */
        if (p > t->max_reject) {
            p = t->max_reject;
        }
    }
    if (p <= 0.0 || fs_rng_uniform(rng) >= p) {
        return true;
    }
    t->req[t->head]++;
    t->requests++;
    return false;
}

void fs_throttle_record(fs_throttle *t, int64_t now_ns, bool accepted)
{
    roll(t, now_ns);
    t->req[t->head]++;
    t->requests++;
    if (accepted) {
        t->acc[t->head]++;
        t->accepts++;
    }
}

bool fs_throttle_pass_accepted(fs_throttle *t, int64_t now_ns)
{
    roll(t, now_ns);
    if (t->requests != t->accepts) {
        return false;
    }
    t->req[t->head]++;
    t->requests++;
    t->acc[t->head]++;
    t->accepts++;
    return true;
}

int64_t fs_throttle_next_change_ns(const fs_throttle *t, int64_t now_ns)
{
    int64_t end = (t->epoch + 1) * t->bucket_ns;
    int64_t d = end - now_ns;
    return d < 1 ? 1 : d;
}
