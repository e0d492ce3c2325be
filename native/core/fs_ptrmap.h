/* Pointer-keyed map: open addressing (linear probing, backward-shift deletion, no tombstones)
 * from an address to a caller's pointer. Keys are compared by address only and never
 * dereferenced; the map owns neither keys nor values (a binding keeps their references).
 * The caller owns the slot array and grows it: fs_ptrmap_insert refuses a key that would make
 * the map more than half full, fs_ptrmap_grow_cap says the capacity to grow to, and
 * fs_ptrmap_rehash moves the entries into the new array. Iterate with
 * `for (i = 0; i < m->cap; i++) if (m->slots[i].key != NULL) ...`. */
#ifndef FS_PTRMAP_H
#define FS_PTRMAP_H

#include <stddef.h>

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

/* 0 when one more key fits, else the capacity (a power of 2, at least FS_PTRMAP_MIN_CAP) to
 * rehash into before inserting it. */
size_t fs_ptrmap_grow_cap(const fs_ptrmap *m);

/* Moves every entry into slots (cap slots, all empty: zeroed; cap a power of 2 and at least
 * twice the entries) and returns the old array (NULL if none) for the caller to free. */
fs_ptrmap_slot *fs_ptrmap_rehash(fs_ptrmap *m, fs_ptrmap_slot *slots, size_t cap);

/* The slot index of key (not NULL), or FS_PTRMAP_NONE when absent. */
size_t fs_ptrmap_find(const fs_ptrmap *m, const void *key);

/* The slot index of key (not NULL), added with value NULL when absent. FS_PTRMAP_NONE (map
 * untouched) when key is absent and would make the map more than half full: grow first. */
size_t fs_ptrmap_insert(fs_ptrmap *m, const void *key);

/* Empties slot i (an occupied slot), moving back the entries of its probe run: indexes of other
 * keys may change, so find them again afterwards. */
void fs_ptrmap_delete(fs_ptrmap *m, size_t i);

#endif
