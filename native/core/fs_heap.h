/* Intrusive binary min-heap of deadlines. Nodes are embedded in their owners' structs; the heap
 * stores borrowed pointers and never allocates: the caller owns the slot array and grows it
 * (copying the contents and updating slots/cap) when fs_heap_push reports it full.
 * Deadlines are doubles in the caller's clock (seconds of the event loop's clock). Equal
 * deadlines pop in the order they were pushed (or last given a deadline by fs_heap_update):
 * each push takes the next number of a per-heap sequence, and the order is (when, seq), as in
 * libuv's timer heap, so what shares a deadline fires the same way run to run. */
#ifndef FS_HEAP_H
#define FS_HEAP_H

#include <stddef.h>
#include <stdint.h>

#define FS_HEAP_NONE ((size_t)-1)

typedef struct fs_heap_node {
    double when;
    uint64_t seq;           /* tie-break among equal deadlines: set by push and update */
    size_t index;           /* position in the heap, FS_HEAP_NONE when not in a heap */
} fs_heap_node;

typedef struct fs_heap {
    fs_heap_node **slots;   /* caller-owned array of cap pointers */
    size_t len;
    size_t cap;
    uint64_t next_seq;      /* the seq of the next push or update (2**64 of them never wrap in
                             * practice: one per nanosecond lasts 584 years) */
} fs_heap;

/* Empty heap over a caller-owned array (slots may be NULL when cap is 0). */
void fs_heap_init(fs_heap *h, fs_heap_node **slots, size_t cap);

/* Marks a node as in no heap; call once before its first push. */
void fs_heap_node_init(fs_heap_node *n);

/* Inserts n (not in a heap) keyed by n->when, which must not be NaN, after every node already
 * in h with the same deadline. Returns 0, or -1 if the heap is full (n untouched). */
int fs_heap_push(fs_heap *h, fs_heap_node *n);

/* The earliest node, or NULL when empty. */
fs_heap_node *fs_heap_peek(const fs_heap *h);

/* Removes and returns the earliest node, or NULL when empty. */
fs_heap_node *fs_heap_pop(fs_heap *h);

/* Removes n if it is in h (no-op otherwise). */
void fs_heap_remove(fs_heap *h, fs_heap_node *n);

/* Changes the deadline of n, which must be in h, and restores heap order (either direction);
 * n then pops after the nodes already in h with the same deadline, as if pushed anew.
 * No-op if n is not in h: writing it could corrupt another heap holding n. */
void fs_heap_update(fs_heap *h, fs_heap_node *n, double when);

#endif
