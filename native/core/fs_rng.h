/* Seeded pseudo-random numbers for jitter (xoshiro256**, seeded through splitmix64).
 * Not cryptographic. Deterministic for a given seed, so tests can pin delays. */
#ifndef FS_RNG_H
#define FS_RNG_H

#include <stdint.h>

typedef struct fs_rng {
    uint64_t s[4];
} fs_rng;

/* Seeds the generator; every seed, 0 included, gives a valid non-zero state. */
void fs_rng_seed(fs_rng *rng, uint64_t seed);

/* Next 64 random bits. */
uint64_t fs_rng_next(fs_rng *rng);

/* Uniform double in [0, 1) with 53 random bits. */
double fs_rng_uniform(fs_rng *rng);

/* Uniform double in [lo, hi); returns lo when hi <= lo. */
double fs_rng_range(fs_rng *rng, double lo, double hi);

#endif
