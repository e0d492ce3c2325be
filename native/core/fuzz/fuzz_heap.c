/* Deadline heap with pushes, pops, removals and updates of random nodes (in and out of the
 * heap), deadlines from a small set with ties and infinities, and a slot array grown when full.
 * Invariants: heap order and back-indexes hold after every step; peek and pop give a node of
 * the earliest deadline; nodes not in the heap are untouched by remove and update. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fs_heap.h"
#include "fuzz.h"

enum { NODES = 64 };

static void check_heap(const fs_heap *h, const int *in, const fs_heap_node *nodes)
{
    size_t members = 0;
    for (size_t k = 0; k < NODES; k++) {
        members += (size_t)in[k];
        FZ_CHECK(in[k] ? nodes[k].index < h->len && h->slots[nodes[k].index] == &nodes[k]
                       : nodes[k].index == FS_HEAP_NONE);
    }
    FZ_CHECK(h->len == members && h->len <= h->cap);
    for (size_t i = 1; i < h->len; i++) {
        FZ_CHECK(h->slots[(i - 1) / 2]->when <= h->slots[i]->when);
    }
}

static double min_when(const fs_heap_node *nodes, const int *in)
{
    double m = INFINITY;
    int any = 0;
    for (size_t k = 0; k < NODES; k++) {
        if (in[k] && (!any || nodes[k].when < m)) {
            m = nodes[k].when;
            any = 1;
        }
    }
    return m;
}

static double deadline(uint8_t v)
{
    switch (v & 15) {
    case 0:
        return -INFINITY;
    case 1:
        return INFINITY;
    case 2:
        return -0.0;
    default:
        return (double)(v >> 2) * 0.25 - 4.0;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz f = {data, size};
    fs_heap_node nodes[NODES];
    int in[NODES] = {0};
    size_t cap = fz_u8(&f) % 4;
    fs_heap_node **slots = cap ? malloc(cap * sizeof *slots) : NULL;
    fs_heap h;
    fs_heap_init(&h, slots, cap);
    for (size_t k = 0; k < NODES; k++) {
        fs_heap_node_init(&nodes[k]);
        nodes[k].when = 0.0;
    }
    while (fz_more(&f)) {
        uint8_t op = fz_u8(&f) % 5;
        size_t k = fz_u8(&f) % NODES;
        fs_heap_node *n = &nodes[k];
        if (op == 0) {
            if (in[k]) {
                continue;   /* pushing a node twice is outside the contract */
            }
            n->when = deadline(fz_u8(&f));
            if (fs_heap_push(&h, n) < 0) {
                FZ_CHECK(h.len == h.cap && n->index == FS_HEAP_NONE);
                size_t ncap = h.cap * 2 + 1;
                fs_heap_node **grown = malloc(ncap * sizeof *grown);
                FZ_CHECK(grown != NULL);
                if (h.len) {
                    memcpy(grown, h.slots, h.len * sizeof *grown);
                }
                free(h.slots);
                h.slots = grown;
                h.cap = ncap;
                FZ_CHECK(fs_heap_push(&h, n) == 0);
            }
            in[k] = 1;
        }
        else if (op == 1) {
            double m = min_when(nodes, in);
            fs_heap_node *top = fs_heap_peek(&h);
            fs_heap_node *p = fs_heap_pop(&h);
            FZ_CHECK(top == p);
            if (p == NULL) {
                FZ_CHECK(h.len == 0);
            }
            else {
                FZ_CHECK(p->when == m && p->index == FS_HEAP_NONE);
                in[p - nodes] = 0;
            }
        }
        else if (op == 2) {
            fs_heap_remove(&h, n);
            FZ_CHECK(n->index == FS_HEAP_NONE);
            in[k] = 0;
        }
        else if (op == 3) {
            double before = n->when;
            double when = deadline(fz_u8(&f));
            fs_heap_update(&h, n, when);
            FZ_CHECK(n->when == (in[k] ? when : before));
        }
        else {
            fs_heap_node *top = fs_heap_peek(&h);
            FZ_CHECK(top ? top->when == min_when(nodes, in) : h.len == 0);
        }
        check_heap(&h, in, nodes);
    }
    free(h.slots);
    return 0;
}
