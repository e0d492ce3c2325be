#include "fs_ptrmap.h"

#include <stdint.h>

/* Fibonacci hashing of the address: the high bits mix every bit of it (allocations are
 * aligned, so the low bits alone would crowd a few slots). */
static size_t home(const void *key, size_t mask)
{
    uint64_t h = (uint64_t)(uintptr_t)key * UINT64_C(0x9E3779B97F4A7C15);
    return (size_t)(h >> 32) & mask;
}

/* The slot of key, or the empty slot where it would go (cap > 0, the map not full). */
static size_t probe(const fs_ptrmap *m, const void *key)
{
    size_t mask = m->cap - 1, i = home(key, mask);
    while (m->slots[i].key != NULL && m->slots[i].key != key)
        i = (i + 1) & mask;
    return i;
}

void fs_ptrmap_init(fs_ptrmap *m)
{
    m->slots = NULL;
    m->cap = 0;
    m->used = 0;
}

size_t fs_ptrmap_grow_cap(const fs_ptrmap *m)
{
    if ((m->used + 1) * 2 <= m->cap)
        return 0;
    return m->cap ? m->cap * 2 : FS_PTRMAP_MIN_CAP;
}

fs_ptrmap_slot *fs_ptrmap_rehash(fs_ptrmap *m, fs_ptrmap_slot *slots, size_t cap)
{
    fs_ptrmap_slot *old = m->slots;
    size_t old_cap = m->cap;
    m->slots = slots;
    m->cap = cap;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].key != NULL)
            m->slots[probe(m, old[i].key)] = old[i];
    return old;
}

size_t fs_ptrmap_find(const fs_ptrmap *m, const void *key)
{
    if (m->cap == 0)
        return FS_PTRMAP_NONE;
    size_t i = probe(m, key);
    return m->slots[i].key != NULL ? i : FS_PTRMAP_NONE;
}

size_t fs_ptrmap_insert(fs_ptrmap *m, const void *key)
{
    if (m->cap == 0)
        return FS_PTRMAP_NONE;
    size_t i = probe(m, key);
    if (m->slots[i].key == NULL) {
        if ((m->used + 1) * 2 > m->cap)
            return FS_PTRMAP_NONE;
        m->slots[i].key = key;
        m->slots[i].value = NULL;
        m->used++;
    }
    return i;
}

void fs_ptrmap_delete(fs_ptrmap *m, size_t i)
{
    size_t mask = m->cap - 1, j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (m->slots[j].key == NULL)
            break;
        size_t k = home(m->slots[j].key, mask);
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
