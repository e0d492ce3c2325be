/* Shared by the libFuzzer harnesses: the fuzz input read as a stream of operations, and a check
 * that aborts (so libFuzzer keeps the input) when an engine breaks an invariant. */
#ifndef FS_FUZZ_H
#define FS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct fz {
    const uint8_t *p;
    size_t n;
} fz;

/* Whether input is left; every reader returns zeros once it runs out. */
static inline int fz_more(const fz *f)
{
    return f->n > 0;
}

static inline uint64_t fz_bytes(fz *f, unsigned k)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < k && f->n > 0; i++, f->p++, f->n--) {
        v |= (uint64_t)*f->p << (8 * i);
    }
    return v;
}

static inline uint8_t fz_u8(fz *f)
{
    return (uint8_t)fz_bytes(f, 1);
}

static inline uint16_t fz_u16(fz *f)
{
    return (uint16_t)fz_bytes(f, 2);
}

static inline uint32_t fz_u32(fz *f)
{
    return (uint32_t)fz_bytes(f, 4);
}

static inline uint64_t fz_u64(fz *f)
{
    return fz_bytes(f, 8);
}

/* A value in [lo, hi] (hi - lo < 2^64 - 1). */
static inline uint64_t fz_range(fz *f, uint64_t lo, uint64_t hi)
{
    return lo + fz_u64(f) % (hi - lo + 1);
}

/* Times stay below this, so no harness or engine sum of times overflows int64. */
#define FZ_TIME_MAX ((int64_t)1 << 62)

/* Moves *now on by a step of the input: mostly small in units of unit (an engine's natural
 * period, clamped to [1, 2^36]), sometimes zero or large, as a loaded event loop produces. */
static inline void fz_wait(fz *f, int64_t *now, int64_t unit)
{
    unit = unit < 1 ? 1 : unit > ((int64_t)1 << 36) ? ((int64_t)1 << 36) : unit;
    int64_t step;
    switch (fz_u8(f) & 3) {
    case 0:
        step = 0;
        break;
    case 1:
        step = (int64_t)(fz_u8(f) % 4) * unit / 2 + (int64_t)fz_u8(f);
        break;
    case 2:
        step = (int64_t)(fz_u16(f) % 64) * unit / 8;
        break;
    default:
        step = (int64_t)(fz_u32(f) % (1u << 20)) * (unit / 16 + 1);
        break;
    }
    *now = step < FZ_TIME_MAX - *now ? *now + step : FZ_TIME_MAX;
}

#define FZ_CHECK(cond) \
    do { \
        if (!(cond)) { \
            fprintf(stderr, "invariant violated: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
            abort(); \
        } \
    } while (0)

#endif
