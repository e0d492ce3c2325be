/* Pointer-keyed map: open addressing (linear probing, backward-shift deletion, no tombstones)
 * from an address to a caller's pointer. Keys are compared by address only and never
 * dereferenced; the map owns neither keys nor values (a binding keeps their references).
 * The caller owns the slot array and grows it: fs_ptrmap_insert refuses a key that would make
 * the map more than half full, fs_ptrmap_grow_cap says the capacity to grow to, and
 * fs_ptrmap_rehash moves the entries into the new array. Iterate with
 * `for (i = 0; i < m->cap; i++) if (m->slots[i].key != NULL) ...`.
 * Lookups are inline: they run on every `async with` entry and exit of a shared timeout. */
#ifndef FS_PTRMAP_H
#define FS_PTRMAP_H

#include <stddef.h>
#include <stdint.h>

#define FS_PTRMAP_NONE ((size_t)-1)
#define FS_PTRMAP_MIN_CAP 8

typedef struct fs_ptrmap_slot {
    const void *key;        /* NULL: empty */
    void *value;
} fs_ptrmap_slot;

typedef struct fs_ptrmap {
    fs_ptrmap_slot *slots;  /* caller-owned array of cap slots, or NULL when cap is 0 */
    size_t cap;             /* 0 or a power of 2 */
    size_t used;
} fs_ptrmap;

/* Empty map with no storage. */
void fs_ptrmap_init(fs_ptrmap *m);

/* Moves every entry into slots (cap slots, all empty: zeroed; cap a power of 2 and at least
 * twice the entries) and returns the old array (NULL if none) for the caller to free. */
fs_ptrmap_slot *fs_ptrmap_rehash(fs_ptrmap *m, fs_ptrmap_slot *slots, size_t cap);

/* Home slot of key: Fibonacci hashing of the address, whose high bits mix every bit of it
 * (allocations are aligned, so the low bits alone would crowd a few slots). */
static inline size_t fs_ptrmap_home(const void *key, size_t mask)
{
    uint64_t h = (uint64_t)(uintptr_t)key * UINT64_C(0x9E3779B97F4A7C15);
    return (size_t)(h >> 32) & mask;
}

/* The slot of key, or the empty slot where it would go (cap > 0, the map not full). */
static inline size_t fs_ptrmap_probe(const fs_ptrmap *m, const void *key)
{
    size_t mask = m->cap - 1, i = fs_ptrmap_home(key, mask);
    while (m->slots[i].key != NULL && m->slots[i].key != key)
        i = (i + 1) & mask;
    return i;
}

/* 0 when one more key fits, else the capacity (a power of 2, at least FS_PTRMAP_MIN_CAP) to
 * rehash into before inserting it. */
static inline size_t fs_ptrmap_grow_cap(const fs_ptrmap *m)
{
    if ((m->used + 1) * 2 <= m->cap)
        return 0;
    return m->cap ? m->cap * 2 : FS_PTRMAP_MIN_CAP;
}

/* The slot index of key (not NULL), or FS_PTRMAP_NONE when absent. */
static inline size_t fs_ptrmap_find(const fs_ptrmap *m, const void *key)
{
    if (m->cap == 0)
        return FS_PTRMAP_NONE;
    size_t i = fs_ptrmap_probe(m, key);
    return m->slots[i].key != NULL ? i : FS_PTRMAP_NONE;
}

/* The slot index of key (not NULL), added with value NULL when absent. FS_PTRMAP_NONE (map
 * untouched) when key is absent and would make the map more than half full: grow first. */
static inline size_t fs_ptrmap_insert(fs_ptrmap *m, const void *key)
{
    if (m->cap == 0)
        return FS_PTRMAP_NONE;
    size_t i = fs_ptrmap_probe(m, key);
    if (m->slots[i].key == NULL) {
        if ((m->used + 1) * 2 > m->cap)
            return FS_PTRMAP_NONE;
        m->slots[i].key = key;
        m->slots[i].value = NULL;
        m->used++;
    }
    return i;
}

/* Empties slot i (an occupied slot), moving back the entries of its probe run: indexes of other
 * keys may change, so find them again afterwards. */
static inline void fs_ptrmap_delete(fs_ptrmap *m, size_t i)
{
    size_t mask = m->cap - 1, j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (m->slots[j].key == NULL)
            break;
        size_t k = fs_ptrmap_home(m->slots[j].key, mask);
        /* The entry at j moves to the hole unless its home lies cyclically in (i, j]. */
        if (i < j ? (k <= i || k > j) : (k <= i && k > j)) {
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    m->slots[i].key = NULL;
    m->slots[i].value = NULL;
    m->used--;
}

#endif
