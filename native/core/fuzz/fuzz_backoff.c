/* Backoff schedules: any schedule that passes fs_backoff_check, run for many delays.
 * Invariants: every delay is finite, >= 0 and <= max; without jitter a capped expo, fibo or
 * softexp schedule stays at max; the same seed gives the same delays. */
#include <math.h>

#include "fs_backoff.h"
#include "fuzz.h"

static double number(fz *f)
{
    uint8_t k = fz_u8(f);
    switch (k % 8) {
    case 0:
        return 0.0;
    case 1:
        return INFINITY;
    case 2:
        return 1e300;
    case 3:
        return -1.0;
    case 4:
        return (double)fz_u8(f) / 16.0;
    default:
        return (double)fz_u16(f) / 256.0;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz f = {data, size};
    double seq[8];
    fs_backoff b = {0};
    b.kind = (fs_backoff_kind)(fz_u8(&f) % (FS_BACKOFF_KIND_COUNT + 1));
    b.jitter = (fs_jitter)(fz_u8(&f) % (FS_JITTER_COUNT + 1));
    b.a = number(&f);
    b.b = number(&f);
    b.c = number(&f);
    b.max = fz_u8(&f) & 1 ? INFINITY : number(&f);
    b.seq_len = fz_u8(&f) % 9;
    for (size_t i = 0; i < b.seq_len; i++) {
        seq[i] = number(&f);
    }
    b.seq = seq;
    if (fs_backoff_check(&b) != FS_BACKOFF_OK) {
        return 0;
    }
    fs_rng r1, r2;
    uint64_t seed = fz_u64(&f);
    fs_rng_seed(&r1, seed);
    fs_rng_seed(&r2, seed);
    fs_backoff_state s1, s2;
    fs_backoff_reset(&b, &s1);
    fs_backoff_reset(&b, &s2);
    int capped = 0;
    int sticky = b.jitter == FS_JITTER_NONE
                 && (b.kind == FS_BACKOFF_EXPO || b.kind == FS_BACKOFF_FIBO
                     || b.kind == FS_BACKOFF_SOFTEXP);
    unsigned steps = 1 + fz_u16(&f) % 2000;
    for (unsigned i = 0; i < steps; i++) {
        double d = fs_backoff_next(&b, &s1, &r1);
        FZ_CHECK(isfinite(d) && d >= 0.0 && d <= b.max);
        FZ_CHECK(fs_backoff_next(&b, &s2, &r2) == d);
        if (sticky) {
            FZ_CHECK(!capped || d == b.max);
            capped |= d == b.max;
        }
    }
    return 0;
}
