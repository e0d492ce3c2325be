#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../fs_ptrmap.h"
#include "../fs_rng.h"
#include "runner.h"

/* Keys are never dereferenced: aligned fake addresses do. */
#define KEY(k) ((const void *)(uintptr_t)(((uintptr_t)(k) + 1) * 16))

/* Rehashes into a fresh zeroed array when the next insert needs it. */
static void make_room(fs_ptrmap *m)
{
    size_t cap = fs_ptrmap_grow_cap(m);
    if (cap) {
        fs_ptrmap_slot *slots = calloc(cap, sizeof(*slots));
        free(fs_ptrmap_rehash(m, slots, cap));
    }
}

/* Every key is found at its slot, no probe run has a hole, used counts the keys. */
static int map_valid(const fs_ptrmap *m)
{
    size_t n = 0;
    for (size_t i = 0; i < m->cap; i++) {
        if (m->slots[i].key == NULL)
            continue;
        n++;
        if (fs_ptrmap_find(m, m->slots[i].key) != i)
            return 0;
    }
    return n == m->used && m->used * 2 <= m->cap;
}

static void test_ptrmap_basic(void)
{
    fs_ptrmap m;
    fs_ptrmap_init(&m);
    CHECK(fs_ptrmap_find(&m, KEY(1)) == FS_PTRMAP_NONE);
    CHECK(fs_ptrmap_insert(&m, KEY(1)) == FS_PTRMAP_NONE); /* no storage yet */
    CHECK_EQ_INT(fs_ptrmap_grow_cap(&m), FS_PTRMAP_MIN_CAP);
    make_room(&m);
    CHECK_EQ_INT(m.cap, FS_PTRMAP_MIN_CAP);

    int vals[8];
    size_t i = fs_ptrmap_insert(&m, KEY(1));
    CHECK(i != FS_PTRMAP_NONE && m.slots[i].value == NULL && m.used == 1);
    m.slots[i].value = &vals[1];
    CHECK(fs_ptrmap_insert(&m, KEY(1)) == i && m.used == 1); /* present: same slot, kept */
    CHECK(m.slots[i].value == &vals[1]);
    CHECK(fs_ptrmap_find(&m, KEY(1)) == i);
    CHECK(fs_ptrmap_find(&m, KEY(2)) == FS_PTRMAP_NONE);

    /* Half full at most: the 5th key of 8 slots is refused, the map untouched. */
    for (int k = 2; k <= 4; k++)
        CHECK(fs_ptrmap_insert(&m, KEY(k)) != FS_PTRMAP_NONE);
    CHECK(fs_ptrmap_grow_cap(&m) == 16);
    CHECK(fs_ptrmap_insert(&m, KEY(5)) == FS_PTRMAP_NONE);
    CHECK(m.used == 4 && map_valid(&m));
    make_room(&m);
    CHECK(m.cap == 16 && m.used == 4 && map_valid(&m));
    CHECK(m.slots[fs_ptrmap_find(&m, KEY(1))].value == &vals[1]); /* values move along */
    CHECK(fs_ptrmap_insert(&m, KEY(5)) != FS_PTRMAP_NONE);

    fs_ptrmap_delete(&m, fs_ptrmap_find(&m, KEY(1)));
    CHECK(fs_ptrmap_find(&m, KEY(1)) == FS_PTRMAP_NONE && m.used == 4 && map_valid(&m));
    free(m.slots);
}

/* Keys sharing a home slot, with the probe run wrapping past the end of the array: deleting
 * from the middle of the run leaves every other key findable. */
static void test_ptrmap_collisions(void)
{
    enum { CAP = 64, WANT = 4 };
    fs_ptrmap_slot slots[CAP];
    memset(slots, 0, sizeof(slots));
    fs_ptrmap m;
    fs_ptrmap_init(&m);
    fs_ptrmap_rehash(&m, slots, CAP);
    /* Keys whose home is the last slot. */
    const void *keys[WANT];
    int found = 0;
    for (uintptr_t k = 0; found < WANT && k < 1000000; k++) {
        if (fs_ptrmap_home(KEY(k), CAP - 1) == CAP - 1)
            keys[found++] = KEY(k);
    }
    CHECK(found == WANT);
    for (int j = 0; j < WANT; j++)
        CHECK(fs_ptrmap_insert(&m, keys[j]) == (size_t)((CAP - 1 + j) % CAP));
    CHECK(map_valid(&m));
    fs_ptrmap_delete(&m, fs_ptrmap_find(&m, keys[1]));
    CHECK(map_valid(&m));
    CHECK(fs_ptrmap_find(&m, keys[1]) == FS_PTRMAP_NONE);
    for (int j = 0; j < WANT; j++)
        if (j != 1)
            CHECK(fs_ptrmap_find(&m, keys[j]) != FS_PTRMAP_NONE);
    /* The run closed up: the wrapped keys moved back one slot each. */
    CHECK(fs_ptrmap_find(&m, keys[2]) == 0);
    CHECK(fs_ptrmap_find(&m, keys[3]) == 1);
}

/* Random inserts and deletes against a plain array of flags. */
static void test_ptrmap_randomized(void)
{
    enum { KEYS = 300, STEPS = 20000 };
    fs_rng rng;
    fs_rng_seed(&rng, 12);
    fs_ptrmap m;
    fs_ptrmap_init(&m);
    int in[KEYS] = {0};
    int bad = 0;
    for (int s = 0; s < STEPS; s++) {
        int k = (int)(fs_rng_next(&rng) % KEYS);
        if (in[k]) {
            size_t i = fs_ptrmap_find(&m, KEY(k));
            bad += i == FS_PTRMAP_NONE || m.slots[i].value != (void *)&in[k];
            if (i != FS_PTRMAP_NONE)
                fs_ptrmap_delete(&m, i);
            in[k] = 0;
        }
        else {
            bad += fs_ptrmap_find(&m, KEY(k)) != FS_PTRMAP_NONE;
            make_room(&m);
            size_t i = fs_ptrmap_insert(&m, KEY(k));
            bad += i == FS_PTRMAP_NONE;
            if (i != FS_PTRMAP_NONE)
                m.slots[i].value = &in[k];
            in[k] = 1;
        }
        if (s % 97 == 0)
            bad += !map_valid(&m);
    }
    size_t n = 0;
    for (int k = 0; k < KEYS; k++) {
        n += in[k];
        bad += (fs_ptrmap_find(&m, KEY(k)) != FS_PTRMAP_NONE) != in[k];
    }
    CHECK(bad == 0);
    CHECK(n == m.used && map_valid(&m));
    free(m.slots);
}

const fs_test ptrmap_tests[] = {
    TEST_CASE(test_ptrmap_basic),
    TEST_CASE(test_ptrmap_collisions),
    TEST_CASE(test_ptrmap_randomized),
    TEST_END,
};
