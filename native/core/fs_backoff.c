#include "fs_backoff.h"

#include <float.h>
#include <math.h>

static int finite_ge(double x, double lo)
{
    return isfinite(x) && x >= lo;
}

static int finite_gt(double x, double lo)
{
    return isfinite(x) && x > lo;
}

fs_backoff_err fs_backoff_check(const fs_backoff *b)
{
    int kind = (int)b->kind, jitter = (int)b->jitter;
    if (kind < 0 || kind >= FS_BACKOFF_KIND_COUNT || jitter < 0 || jitter >= FS_JITTER_COUNT)
        return FS_BACKOFF_EKIND;

    int uses_a = kind != FS_BACKOFF_INTERVAL;
    if (uses_a && !(kind == FS_BACKOFF_SOFTEXP ? finite_gt(b->a, 0.0) : finite_ge(b->a, 0.0)))
        return FS_BACKOFF_EA;

    int ok_b = 1;
    switch (kind) {
    case FS_BACKOFF_LINEAR:
    case FS_BACKOFF_FIBO: ok_b = finite_ge(b->b, 0.0); break;
    case FS_BACKOFF_EXPO:
    case FS_BACKOFF_DECORREXP: ok_b = finite_ge(b->b, 1.0); break;
    case FS_BACKOFF_SOFTEXP: ok_b = finite_gt(b->b, 0.0); break;
    default: break;
    }
    if (!ok_b)
        return FS_BACKOFF_EB;

    if (kind == FS_BACKOFF_SOFTEXP && !finite_gt(b->c, 0.0))
        return FS_BACKOFF_EC;

    if (isnan(b->max) || b->max < 0.0 || (uses_a && b->max < b->a) ||
        (kind == FS_BACKOFF_DECORREXP && !isfinite(b->max)))
        return FS_BACKOFF_EMAX;

    if (kind == FS_BACKOFF_INTERVAL) {
        if (b->seq == NULL || b->seq_len == 0)
            return FS_BACKOFF_ESEQ;
        for (size_t i = 0; i < b->seq_len; i++)
            if (!finite_ge(b->seq[i], 0.0))
                return FS_BACKOFF_ESEQ;
    }
    return FS_BACKOFF_OK;
}

void fs_backoff_reset(const fs_backoff *b, fs_backoff_state *st)
{
    st->k = 0;
    st->prev = 0.0;
    st->cur = 0.0;
    switch (b->kind) {
    case FS_BACKOFF_FIBO:
        /* d(-1) = b makes d1 = d0 + d(-1) = a + b, so one recurrence covers all k. */
        st->prev = b->b;
        st->cur = b->a;
        break;
    case FS_BACKOFF_DECORREXP:
        st->cur = b->a;
        break;
    default:
        break;
    }
}

double fs_jitter_apply(fs_jitter j, double d, fs_rng *rng)
{
    double r;
    switch (j) {
    case FS_JITTER_FULL:
        r = fs_rng_range(rng, 0.0, d);
        break;
    case FS_JITTER_EQUAL:
        r = d / 2.0 + fs_rng_range(rng, 0.0, d / 2.0);
        break;
    default:
        return d;
    }
    return r > d ? d : r; /* the sum can round up past d */
}

/* Polly V2's curve; increasing in t >= 0, f(0) = 0. Overflows to inf for t >= 1024. */
static double softexp_f(double t, double pfactor)
{
    return pow(2.0, t) * tanh(sqrt(pfactor * t));
}

double fs_backoff_next(const fs_backoff *b, fs_backoff_state *st, fs_rng *rng)
{
    /* No cap still means a finite result: the largest double stands in for infinity. */
    const double cap = isfinite(b->max) ? b->max : DBL_MAX;
    const uint64_t k = st->k;
    double d;

    switch (b->kind) {
    case FS_BACKOFF_CONST:
        d = b->a;
        break;
    case FS_BACKOFF_INTERVAL:
        d = b->seq[k % b->seq_len];
        break;
    case FS_BACKOFF_LINEAR:
        d = b->a + b->b * (double)k; /* may be inf; capped below */
        break;
    case FS_BACKOFF_EXPO:
        /* cur != 0 marks "capped": later k would only overflow further. a = 0 stays 0. */
        if (st->cur != 0.0)
            d = cap;
        else if (b->a == 0.0)
            d = 0.0;
        else if (!((d = b->a * pow(b->b, (double)k)) < cap))
            st->cur = 1.0;
        break;
    case FS_BACKOFF_FIBO:
        /* cur = this delay, prev = the one before; nondecreasing, so the cap is sticky. */
        d = st->cur;
        if (d < cap) {
            double next = st->cur + st->prev;
            st->prev = st->cur;
            st->cur = next < cap ? next : cap; /* stops the sum before it can reach inf */
        }
        break;
    case FS_BACKOFF_DECORREXP: {
        double hi = st->cur * b->b; /* cur <= max (finite), so at worst inf; fmin tames it */
        d = fs_rng_range(rng, b->a, fmin(hi, b->max));
        st->cur = d;
        break;
    }
    case FS_BACKOFF_SOFTEXP:
        /* Sticky cap: later terms only grow (and f overflows past t = 1024). */
        if (st->cur >= cap) {
            d = cap;
        } else {
            double f = softexp_f((double)k + fs_rng_uniform(rng), b->b);
            d = (f - st->prev) * b->c * b->a; /* inf or NaN (inf - inf) when f overflowed */
            st->prev = f;
            if (!(d < cap))
                d = cap;
            else if (!(d >= 0.0))
                d = 0.0;
            st->cur = d;
        }
        break;
    default:
        d = 0.0; /* unreachable after fs_backoff_check */
        break;
    }

    if (!(d <= cap)) /* inf or NaN */
        d = cap;
    if (k != UINT64_MAX) /* saturate: wrapping would restart the schedule */
        st->k = k + 1;
    return fs_jitter_apply(b->jitter, d, rng);
}
