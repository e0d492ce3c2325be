/* Cache index: a hash table of entries with an LRU order and expiry times. It never sees keys
 * or values: an entry is a 64-bit hash plus bookkeeping, and its index names the caller's slot
 * holding the key and value. Equal hashes are walked with fs_cache_find / fs_cache_find_next
 * and the caller compares keys itself. The caller owns both arrays and grows them
 * (fs_cache_grow); the index never allocates. Time is int64 nanoseconds, passed in. */
#ifndef FS_CACHE_H
#define FS_CACHE_H

#include <stdint.h>

#define FS_CACHE_NONE ((int32_t)-1)
#define FS_CACHE_NEVER INT64_MAX        /* expiry of an entry that never expires */
#define FS_CACHE_MAX_CAP ((uint32_t)1 << 30)

typedef struct fs_cache_entry {
    uint64_t hash;
    int64_t expires_ns;     /* FS_CACHE_NEVER: never; an entry expires when now >= expires_ns */
    int32_t chain;          /* next entry of the bucket (or of the free list), or FS_CACHE_NONE */
    int32_t older, newer;   /* LRU list */
    int32_t exp_prev, exp_next;   /* expiry list, earliest first */
    int32_t live;           /* 1 while the entry is in the index */
} fs_cache_entry;

typedef struct fs_cache {
    fs_cache_entry *entries;    /* caller-owned, cap entries */
    int32_t *buckets;           /* caller-owned, nbuckets heads (a power of two) */
    uint32_t cap;
    uint32_t nbuckets;
    unsigned shift;             /* 64 - log2(nbuckets) */
    uint32_t len;
    uint32_t unused;            /* entries [unused, cap) were never used */
    int32_t free;               /* freed entries, linked through chain */
    int32_t newest, oldest;     /* LRU ends */
    int32_t earliest, latest;   /* expiry list ends */
} fs_cache;

/* Bucket count to pair with cap entries: a power of two >= cap, at least 8. */
uint32_t fs_cache_buckets_for(uint32_t cap);

/* Empty index over caller-owned arrays: entries of cap items (1 <= cap <= FS_CACHE_MAX_CAP),
 * buckets of nbuckets items (fs_cache_buckets_for(cap)). */
void fs_cache_init(fs_cache *c, fs_cache_entry *entries, uint32_t cap, int32_t *buckets,
                   uint32_t nbuckets);

/* Moves the index onto larger arrays: entries (cap > c->cap) must already hold the old
 * entries at the same indexes (realloc does that), buckets is fresh (nbuckets =
 * fs_cache_buckets_for(cap)). Entry indexes are kept, so the caller's slots stay valid. */
void fs_cache_grow(fs_cache *c, fs_cache_entry *entries, uint32_t cap, int32_t *buckets,
                   uint32_t nbuckets);

/* The first entry (in no particular order) whose hash is hash, or FS_CACHE_NONE. */
int32_t fs_cache_find(const fs_cache *c, uint64_t hash);

/* The next entry after i with the same hash as i, or FS_CACHE_NONE. */
int32_t fs_cache_find_next(const fs_cache *c, int32_t i);

/* Whether live entry i has expired at now_ns. */
static inline int fs_cache_expired(const fs_cache *c, int32_t i, int64_t now_ns)
{
    return now_ns >= c->entries[i].expires_ns;
}

/* Makes live entry i the most recently used. */
void fs_cache_touch(fs_cache *c, int32_t i);

/* Adds an entry (the most recently used) and returns its index, or FS_CACHE_NONE when the
 * index is full (len == cap: the caller removes an entry or grows first). */
int32_t fs_cache_insert(fs_cache *c, uint64_t hash, int64_t expires_ns);

/* Removes live entry i; its index may be handed out again by a later insert. */
void fs_cache_remove(fs_cache *c, int32_t i);

/* Empties the index (the caller releases its slots first). */
void fs_cache_clear(fs_cache *c);

/* The least recently used entry, or FS_CACHE_NONE when empty. */
int32_t fs_cache_oldest(const fs_cache *c);

/* The next more recently used entry after i, or FS_CACHE_NONE (iterates oldest to newest). */
int32_t fs_cache_newer(const fs_cache *c, int32_t i);

/* The entry with the earliest expiry if it has expired at now_ns, else FS_CACHE_NONE: call
 * repeatedly, removing each, to drop every expired entry. */
int32_t fs_cache_first_expired(const fs_cache *c, int64_t now_ns);

#endif
