/* Key table of a keyed limiter: open addressing (linear probing, backward-shift deletion) from
 * a key's hash to an entry index, with one GCRA TAT per entry. The caller owns the keys
 * themselves (entry i's key lives at index i of its own array) and compares them: the table
 * only narrows a lookup to the entries whose hash matches.
 *
 * Bounded: at most max_keys entries. A new key takes a free entry, else the entry of a key
 * whose bucket is full again (TAT <= now: it remembers nothing), found by a clock hand sweeping
 * the entries. A key that is still limited is never evicted: when every entry holds one, new
 * keys are refused until the earliest of them refills (fs_keytab_insert reports when). */
#ifndef FS_KEYTAB_H
#define FS_KEYTAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct fs_keytab {
    uint32_t *buckets;      /* capacity slots: entry index + 1, or 0 when empty */
    uint64_t *hashes;       /* per entry: the key's hash */
    int64_t *tats;          /* per entry: the key's GCRA TAT */
    uint32_t mask;          /* capacity - 1 (capacity a power of 2 >= 2 * max_keys) */
    uint32_t max_keys;
    uint32_t count;         /* entries in use: indexes 0 .. count-1 */
    uint32_t hand;          /* next entry the eviction sweep looks at */
    int64_t busy_until;     /* after a sweep found no idle entry: none is idle before this */
    uint64_t version;       /* bumped whenever an entry changes key */
} fs_keytab;

#define FS_KEYTAB_MAX_KEYS (1u << 30)

/* Bytes of memory a table of max_keys (1 .. FS_KEYTAB_MAX_KEYS) needs, 0 when out of range. */
size_t fs_keytab_mem_size(uint32_t max_keys);

/* Lays the table out in mem (fs_keytab_mem_size(max_keys) bytes, 8-byte aligned, owned by the
 * caller and outliving t). Returns 0, or -1 when max_keys is out of range. Starts empty. */
int fs_keytab_init(fs_keytab *t, void *mem, uint32_t max_keys);

/* Lookup: starts at *pos = fs_keytab_start(t, hash); each fs_keytab_next returns the next entry
 * whose hash equals hash (the caller compares its key) or -1 when there is none. */
uint32_t fs_keytab_start(const fs_keytab *t, uint64_t hash);
int64_t fs_keytab_next(const fs_keytab *t, uint64_t hash, uint32_t *pos);

/* Adds a key of hash hash (known to be absent) at now_ns with a full bucket. Returns its entry
 * index; *evicted is true when the entry belonged to another key, evicted because its bucket was
 * full (the caller then drops that key). Returns -1 when all max_keys entries hold limited keys:
 * *retry_after_ns is then the wait until the first of them refills. */
int64_t fs_keytab_insert(fs_keytab *t, uint64_t hash, int64_t now_ns, bool *evicted,
                         int64_t *retry_after_ns);

/* A TAT of entry i went down (a reservation given back): keeps busy_until a lower bound. */
void fs_keytab_lowered(fs_keytab *t, uint32_t i);

/* Entries whose key is still limited at now_ns. */
uint32_t fs_keytab_limited(const fs_keytab *t, int64_t now_ns);

/* Forgets every key. */
void fs_keytab_clear(fs_keytab *t);

#endif
