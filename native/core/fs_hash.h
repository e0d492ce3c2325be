/* Stable hashing for percentage rollouts: the same bytes give the same bucket in every process,
 * on every platform and every run (unlike Python's randomised hash()). */
#ifndef FS_HASH_H
#define FS_HASH_H

#include <stddef.h>
#include <stdint.h>

/* Buckets of a rollout: parts per million, so percentages resolve to 0.0001 %. */
#define FS_ROLLOUT_BUCKETS 1000000u

/* 64-bit FNV-1a of len bytes at data (data may be NULL when len is 0). */
uint64_t fs_fnv1a64(const void *data, size_t len);

/* The splitmix64 finaliser: spreads FNV's weak low bits over the whole word. */
uint64_t fs_mix64(uint64_t x);

/* The rollout bucket of a key's bytes: fs_mix64(fs_fnv1a64(data, len)) % FS_ROLLOUT_BUCKETS. */
uint32_t fs_rollout_bucket(const void *data, size_t len);

/* How many buckets a rollout of percent (0..100, anything else clamped; NaN: 0) admits,
 * rounded to the nearest: a key is in when its bucket < this. 100 admits every bucket. */
uint32_t fs_rollout_limit(double percent);

#endif
