#include "fs_rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

void fs_rng_seed(fs_rng *rng, uint64_t seed)
{
    /* splitmix64 is a bijection of distinct counters, so at most one word is zero. */
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        rng->s[i] = splitmix64(&x);
}

uint64_t fs_rng_next(fs_rng *rng)
{
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double fs_rng_uniform(fs_rng *rng)
{
    return (double)(fs_rng_next(rng) >> 11) * 0x1.0p-53;
}

double fs_rng_range(fs_rng *rng, double lo, double hi)
{
    if (!(hi > lo)) /* also catches NaN */
        return lo;
    double u = fs_rng_uniform(rng);
    double span = hi - lo;
    double r = isfinite(span) ? lo + span * u : lo * (1.0 - u) + hi * u; /* span overflowed */
    /* Rounding can land on hi (or just under lo); keep the half-open contract. */
    if (r >= hi)
        r = nextafter(hi, lo);
    if (r < lo)
        r = lo;
    return r;
}
