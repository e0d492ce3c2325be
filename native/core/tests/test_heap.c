#include <string.h>

#include "../fs_heap.h"
#include "../fs_rng.h"
#include "runner.h"

/* Every slot's index points back to it, and no child is earlier than its parent. */
static int heap_valid(const fs_heap *h)
{
    if (h->len > h->cap)
        return 0;
    for (size_t i = 0; i < h->len; i++) {
        if (h->slots[i] == NULL || h->slots[i]->index != i)
            return 0;
        if (i > 0 && h->slots[i]->when < h->slots[(i - 1) / 2]->when)
            return 0;
    }
    return 1;
}

static void test_heap_basic(void)
{
    fs_heap_node *slots[8];
    fs_heap h;
    fs_heap_init(&h, slots, 8);
    CHECK(fs_heap_peek(&h) == NULL);
    CHECK(fs_heap_pop(&h) == NULL);

    fs_heap_node n[8];
    static const double whens[] = {5, 3, 8, 1, 9, 2, 7, 4};
    for (int i = 0; i < 8; i++) {
        fs_heap_node_init(&n[i]);
        CHECK(n[i].index == FS_HEAP_NONE);
        n[i].when = whens[i];
        CHECK(fs_heap_push(&h, &n[i]) == 0);
        CHECK(heap_valid(&h));
    }
    fs_heap_node extra;
    fs_heap_node_init(&extra);
    extra.when = 0;
    CHECK(fs_heap_push(&h, &extra) == -1); /* full */
    CHECK(extra.index == FS_HEAP_NONE);
    CHECK(h.len == 8);
    CHECK(fs_heap_peek(&h) == &n[3]);

    fs_heap_remove(&h, &extra); /* not in the heap: no-op */
    CHECK(h.len == 8 && heap_valid(&h));
    fs_heap_remove(&h, &n[5]); /* when 2 */
    CHECK(n[5].index == FS_HEAP_NONE && h.len == 7 && heap_valid(&h));
    fs_heap_remove(&h, &n[5]); /* twice: no-op */
    CHECK(h.len == 7);
    fs_heap_update(&h, &n[4], 0.5); /* 9 -> 0.5: decrease to the top */
    CHECK(fs_heap_peek(&h) == &n[4] && heap_valid(&h));
    fs_heap_update(&h, &n[4], 100); /* increase to the bottom */
    CHECK(heap_valid(&h));

    static const double order[] = {1, 3, 4, 5, 7, 8, 100};
    for (int i = 0; i < 7; i++) {
        fs_heap_node *top = fs_heap_pop(&h);
        CHECK(top != NULL && top->when == order[i]);
        CHECK(top->index == FS_HEAP_NONE);
        CHECK(heap_valid(&h));
    }
    CHECK(fs_heap_pop(&h) == NULL && h.len == 0);

    /* A popped node can be pushed again. */
    CHECK(fs_heap_push(&h, &n[0]) == 0 && n[0].index == 0);
}

static void test_heap_zero_cap_and_growth(void)
{
    fs_heap h;
    fs_heap_init(&h, NULL, 0);
    fs_heap_node a, b, c;
    fs_heap_node_init(&a);
    fs_heap_node_init(&b);
    fs_heap_node_init(&c);
    a.when = 3;
    b.when = 1;
    c.when = 2;
    CHECK(fs_heap_push(&h, &a) == -1);
    CHECK(fs_heap_peek(&h) == NULL);
    fs_heap_remove(&h, &a);

    /* The caller grows by copying into a bigger array. */
    fs_heap_node *small[1], *big[4];
    h.slots = small;
    h.cap = 1;
    CHECK(fs_heap_push(&h, &a) == 0);
    CHECK(fs_heap_push(&h, &b) == -1);
    memcpy(big, small, sizeof small);
    h.slots = big;
    h.cap = 4;
    CHECK(fs_heap_push(&h, &b) == 0);
    CHECK(fs_heap_push(&h, &c) == 0);
    CHECK(heap_valid(&h));
    CHECK(fs_heap_pop(&h) == &b && fs_heap_pop(&h) == &c && fs_heap_pop(&h) == &a);
}

static void test_heap_two_heaps(void)
{
    /* A node in another heap is "not in h": remove and update leave both heaps alone. */
    fs_heap_node *s1[4], *s2[4];
    fs_heap h1, h2;
    fs_heap_init(&h1, s1, 4);
    fs_heap_init(&h2, s2, 4);
    fs_heap_node x, y;
    fs_heap_node_init(&x);
    fs_heap_node_init(&y);
    x.when = 1;
    y.when = 2;
    CHECK(fs_heap_push(&h1, &x) == 0);
    CHECK(fs_heap_push(&h2, &y) == 0);
    fs_heap_remove(&h1, &y);
    CHECK(h1.len == 1 && h2.len == 1 && y.index == 0);
    fs_heap_update(&h1, &y, 0.0);
    CHECK(y.when == 2 && heap_valid(&h2));
}

enum { NODES = 300, OPS = 20000 };

/* Randomized against a reference "set": in[i] says whether node i is in the heap. */
static void test_heap_randomized(void)
{
    static fs_heap_node n[NODES];
    static fs_heap_node *slots[NODES];
    int in[NODES] = {0};
    size_t count = 0;
    fs_heap h;
    fs_heap_init(&h, slots, NODES);
    for (int i = 0; i < NODES; i++)
        fs_heap_node_init(&n[i]);
    fs_rng rng;
    fs_rng_seed(&rng, 31337);
    int invalid = 0, mismatch = 0;

    for (int op = 0; op < OPS; op++) {
        uint64_t r = fs_rng_next(&rng);
        size_t i = (size_t)((r >> 8) % NODES);
        /* Few distinct keys, so ties are common; some fractional ones for variety. */
        double when = (r >> 32) % 4 == 0 ? fs_rng_uniform(&rng) * 50 : (double)((r >> 40) % 50);
        switch (r % 6) {
        case 0:
        case 1:
            if (!in[i]) {
                n[i].when = when;
                CHECK(fs_heap_push(&h, &n[i]) == 0);
                in[i] = 1;
                count++;
            }
            break;
        case 2:
            fs_heap_remove(&h, &n[i]);
            if (in[i]) {
                in[i] = 0;
                count--;
            }
            break;
        case 3:
            if (in[i])
                fs_heap_update(&h, &n[i], when);
            break;
        case 4: {
            fs_heap_node *top = fs_heap_pop(&h);
            if (count == 0) {
                CHECK(top == NULL);
                break;
            }
            double min = 1e300;
            for (int j = 0; j < NODES; j++)
                if (in[j] && n[j].when < min)
                    min = n[j].when;
            if (top == NULL || top->when != min) {
                mismatch++;
                break;
            }
            size_t t = (size_t)(top - n);
            CHECK(in[t]);
            in[t] = 0;
            count--;
            break;
        }
        default: {
            fs_heap_node *top = fs_heap_peek(&h);
            double min = 1e300;
            for (int j = 0; j < NODES; j++)
                if (in[j] && n[j].when < min)
                    min = n[j].when;
            if (count ? (top == NULL || top->when != min) : top != NULL)
                mismatch++;
            break;
        }
        }
        invalid += !heap_valid(&h);
        if (h.len != count)
            mismatch++;
        for (int j = 0; j < NODES; j++)
            if (!in[j] && n[j].index != FS_HEAP_NONE)
                mismatch++;
    }
    CHECK(invalid == 0);
    CHECK(mismatch == 0);

    /* Drain: pops come out sorted and every node ends outside the heap. */
    double last = -1e300;
    while (h.len) {
        fs_heap_node *top = fs_heap_pop(&h);
        CHECK(top->when >= last);
        last = top->when;
    }
    for (int j = 0; j < NODES; j++)
        CHECK(n[j].index == FS_HEAP_NONE);
}

/* Equal deadlines pop in push order (libuv's tie-break), also after removals shuffled the
 * array, and a node given a deadline by update goes after those already holding it. */
static void test_heap_ties_fifo(void)
{
    enum { NODES = 64 };
    fs_heap_node *slots[NODES];
    fs_heap_node n[NODES];
    int order[NODES]; /* push rank of each node */
    fs_heap h;
    fs_heap_init(&h, slots, NODES);
    fs_rng rng;
    fs_rng_seed(&rng, 5);
    for (int i = 0; i < NODES; i++) {
        fs_heap_node_init(&n[i]);
        n[i].when = (double)(fs_rng_next(&rng) % 3); /* many ties */
        order[i] = i;
        CHECK(fs_heap_push(&h, &n[i]) == 0);
    }
    for (int i = 0; i < NODES; i += 7)
        fs_heap_remove(&h, &n[i]);
    /* n[1] moves to deadline 1 after every node already at 1. */
    fs_heap_update(&h, &n[1], 1.0);
    order[1] = NODES;
    double last_when = -1;
    int last_rank = -1, popped = 0, bad = 0;
    fs_heap_node *top;
    while ((top = fs_heap_pop(&h)) != NULL) {
        int rank = order[top - n];
        if (top->when == last_when)
            bad += rank < last_rank;
        else
            bad += top->when < last_when;
        last_when = top->when;
        last_rank = rank;
        popped++;
    }
    CHECK(bad == 0);
    CHECK_EQ_INT(popped, NODES - (NODES + 6) / 7);

    /* All equal: strictly first in, first out, whatever the interleaving of pushes and pops. */
    fs_heap_init(&h, slots, NODES);
    int next_in = 0, next_out = 0;
    bad = 0;
    for (int step = 0; step < 200; step++) {
        if (h.len < NODES && (h.len == 0 || fs_rng_next(&rng) % 2)) {
            fs_heap_node *x = &n[next_in++ % NODES];
            x->when = 42.0;
            CHECK(fs_heap_push(&h, x) == 0);
        }
        else {
            bad += fs_heap_pop(&h) != &n[next_out++ % NODES];
        }
    }
    CHECK(bad == 0);
}

const fs_test heap_tests[] = {
    TEST_CASE(test_heap_basic),
    TEST_CASE(test_heap_zero_cap_and_growth),
    TEST_CASE(test_heap_two_heaps),
    TEST_CASE(test_heap_randomized),
    TEST_CASE(test_heap_ties_fifo),
    TEST_END,
};
