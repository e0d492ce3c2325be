#include "fs_ptrmap.h"

void fs_ptrmap_init(fs_ptrmap *m)
{
    m->slots = NULL;
    m->cap = 0;
    m->used = 0;
}

fs_ptrmap_slot *fs_ptrmap_rehash(fs_ptrmap *m, fs_ptrmap_slot *slots, size_t cap)
{
    fs_ptrmap_slot *old = m->slots;
    size_t old_cap = m->cap;
    m->slots = slots;
    m->cap = cap;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].key != NULL)
            m->slots[fs_ptrmap_probe(m, old[i].key)] = old[i];
    return old;
}
