#include "fs_heap.h"

static void place(fs_heap *h, size_t i, fs_heap_node *n)
{
    h->slots[i] = n;
    n->index = i;
}

/* a pops before b: the earlier deadline, or the earlier push among equal deadlines. */
static inline int before(const fs_heap_node *a, const fs_heap_node *b)
{
    return a->when < b->when || (a->when == b->when && a->seq < b->seq);
}

/* Moves n up from hole i; returns its final position. */
static size_t sift_up(fs_heap *h, size_t i, fs_heap_node *n)
{
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        fs_heap_node *p = h->slots[parent];
        if (!before(n, p))
            break;
        place(h, i, p);
        i = parent;
    }
    place(h, i, n);
    return i;
}

static void sift_down(fs_heap *h, size_t i, fs_heap_node *n)
{
    size_t len = h->len;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= len)
            break;
        if (child + 1 < len && before(h->slots[child + 1], h->slots[child]))
            child++;
        if (!before(h->slots[child], n))
            break;
        place(h, i, h->slots[child]);
        i = child;
    }
    place(h, i, n);
}

/* Re-seats n at hole i, moving it whichever way the order requires. */
static void fix(fs_heap *h, size_t i, fs_heap_node *n)
{
    if (sift_up(h, i, n) == i)
        sift_down(h, i, n);
}

void fs_heap_init(fs_heap *h, fs_heap_node **slots, size_t cap)
{
    h->slots = slots;
    h->len = 0;
    h->cap = cap;
    h->next_seq = 0;
}

void fs_heap_node_init(fs_heap_node *n)
{
    n->index = FS_HEAP_NONE;
}

int fs_heap_push(fs_heap *h, fs_heap_node *n)
{
    if (h->len >= h->cap)
        return -1;
    n->seq = h->next_seq++;
    sift_up(h, h->len++, n);
    return 0;
}

fs_heap_node *fs_heap_peek(const fs_heap *h)
{
    return h->len ? h->slots[0] : NULL;
}

static int contains(const fs_heap *h, const fs_heap_node *n)
{
    return n->index < h->len && h->slots[n->index] == n;
}

void fs_heap_remove(fs_heap *h, fs_heap_node *n)
{
    if (!contains(h, n))
        return;
    size_t i = n->index;
    fs_heap_node *last = h->slots[--h->len];
    n->index = FS_HEAP_NONE;
    if (last != n)
        fix(h, i, last);
}

fs_heap_node *fs_heap_pop(fs_heap *h)
{
    fs_heap_node *top = fs_heap_peek(h);
    if (top)
        fs_heap_remove(h, top);
    return top;
}

void fs_heap_update(fs_heap *h, fs_heap_node *n, double when)
{
    if (!contains(h, n))
        return; /* writing when could corrupt another heap holding n */
    n->when = when;
    n->seq = h->next_seq++;
    fix(h, n->index, n);
}
