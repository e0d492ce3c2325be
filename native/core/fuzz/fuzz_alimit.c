/* Adaptive limit and throttle under arbitrary configurations, RTTs, drops and times.
 * Invariants: the limit stays finite within [min_limit, max_limit] whatever the samples (huge,
 * zero, drops); admissions stop at floor(limit); in flight counts match the model; the
 * throttle's window sums equal its buckets, accepts never exceed requests, and its refusal
 * probability stays within [0, max_reject]. */
#include <math.h>

#include "fs_alimit.h"
#include "fs_throttle.h"
#include "fuzz.h"

static void fuzz_limit(fz *f)
{
    fs_alimit_config c;
    fs_alimit_defaults(&c, fz_u8(f) % 4);   /* 3: out of range */
    c.min_limit = 1 + fz_range(f, 0, 20);
    c.max_limit = c.min_limit + fz_range(f, 0, 2000);
    c.initial = c.min_limit + fz_range(f, 0, 2000);
    c.smoothing = (fz_range(f, 0, 100)) / 100.0;
    c.queue_size = fz_range(f, 0, 50);
    c.long_window = (uint32_t)fz_range(f, 0, 1000);
    c.probe_multiplier = (uint32_t)fz_range(f, 0, 40);
    c.alpha = 1 + fz_range(f, 0, 10);
    c.beta = c.alpha + fz_range(f, 0, 10);
    fs_alimit l;
    if (fs_alimit_init(&l, &c) < 0) {
        return;
    }
    uint64_t inflight = 0;
    while (fz_more(f)) {
        uint8_t op = fz_u8(f) % 4;
        if (op == 0) {
            uint64_t at = 0;
            bool ok = fs_alimit_try_acquire(&l, &at);
            FZ_CHECK(ok == (inflight < (uint64_t)l.limit));
            if (ok) {
                FZ_CHECK(at == inflight);
                inflight++;
            }
        }
        else if (op == 1 && inflight > 0) {
            fs_alimit_release(&l);
            inflight--;
        }
        else if (op == 2 && inflight > 0) {
            int64_t rtt = (int64_t)(fz_u64(f) >> (fz_u8(f) % 64));
            fs_alimit_complete(&l, rtt, fz_range(f, 0, 5000), fz_u8(f) & 1);
            inflight--;
        }
        else if (op == 3) {
            fs_alimit_sample(&l, (int64_t)fz_u64(f), fz_u64(f), fz_u8(f) & 1);
        }
        FZ_CHECK(isfinite(l.limit) && l.limit >= c.min_limit && l.limit <= c.max_limit);
        FZ_CHECK(l.inflight == inflight);
        FZ_CHECK(fs_alimit_current(&l) >= 1);
    }
}

static void fuzz_throttle(fz *f)
{
    fs_throttle t;
    double k = 1 + fz_range(f, 0, 10) / 2.0;
    double max_reject = (1 + fz_range(f, 0, 99)) / 100.0;
    int64_t window = (int64_t)fz_range(f, 0, 100000);
    if (fs_throttle_init(&t, k, max_reject, window) < 0) {
        FZ_CHECK(window < FS_THROTTLE_BUCKETS);
        return;
    }
    fs_rng rng;
    fs_rng_seed(&rng, fz_u64(f));
    int64_t now = 0;
    while (fz_more(f)) {
        uint8_t op = fz_u8(f) % 4;
        if (op == 0) {
            now += (int64_t)fz_range(f, 0, 5000);
        }
        else if (op == 1) {
            fs_throttle_record(&t, now, fz_u8(f) & 1);
        }
        else if (op == 2) {
            (void)fs_throttle_admit_scaled(&t, now, &rng, fz_range(f, 0, 8) / 2.0);
        }
        else {
            double p = fs_throttle_probability(&t, now);
            FZ_CHECK(p >= 0.0 && p <= max_reject);
            FZ_CHECK(fs_throttle_next_change_ns(&t, now) >= 1);
        }
        uint64_t r = 0, a = 0;
        for (int i = 0; i < FS_THROTTLE_BUCKETS; i++) {
            r += t.req[i];
            a += t.acc[i];
        }
        FZ_CHECK(r == t.requests && a == t.accepts && t.accepts <= t.requests);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz f = {data, size};
    if (fz_u8(&f) & 1) {
        fuzz_limit(&f);
    }
    else {
        fuzz_throttle(&f);
    }
    return 0;
}
