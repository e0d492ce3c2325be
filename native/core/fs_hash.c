#include "fs_hash.h"

uint64_t fs_fnv1a64(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

uint64_t fs_mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

uint32_t fs_rollout_bucket(const void *data, size_t len)
{
    return (uint32_t)(fs_mix64(fs_fnv1a64(data, len)) % FS_ROLLOUT_BUCKETS);
}

uint32_t fs_rollout_limit(double percent)
{
    if (!(percent > 0.0)) {     /* also NaN */
        return 0;
    }
    if (percent >= 100.0) {
        return FS_ROLLOUT_BUCKETS;
    }
    return (uint32_t)(percent * (FS_ROLLOUT_BUCKETS / 100) + 0.5);
}
