/* The Done object's layout and its inline constructor, for the hot paths that answer at once
 * (a cache hit): the same object fs_done_new makes, without the call into done.c. */
#ifndef FS_DONE_H
#define FS_DONE_H

#include "fs_binding.h"

typedef struct FsDone {
    PyObject_HEAD
    fs_state *st;       /* borrowed: the module outlives its objects */
    PyObject *value;    /* the answer (NULL: None); next in the free list when recycled */
    PyObject *exc;      /* raised in place of an answer, or NULL */
    PyObject *fn;       /* the function whose call it answers (owned), for its names, or NULL */
    PyObject *stop;     /* the StopIteration last raised, recycled once nobody holds it */
    uint8_t spent;      /* awaited, sent to, thrown into or closed */
    uint8_t kept;       /* never spent (st->ready_none) */
} FsDone;

/* A Done made fresh when the free list is empty (fs_done_answer's slow half). Same contract as
 * fs_done_new. */
PyObject *fs_done_fresh(fs_state *st, PyObject *value);

/* fs_done_new, inline, and the one constructor of a Done (done.c makes every Done with it): a
 * recycled Done comes off the free list clear but for the free-list link and a StopIteration
 * kept to answer with (done_dealloc leaves it so): only the answer is set. */
static inline PyObject *fs_done_answer(fs_state *st, PyObject *value)
{
    FsDone *d = st->done_freelist;
    if (d == NULL) {
        return fs_done_fresh(st, value);
    }
    st->done_freelist = (FsDone *)d->value;
    st->done_free_count--;
    PyObject_Init((PyObject *)d, st->Done_Type);
    d->value = value;
    PyObject_GC_Track(d);
    return (PyObject *)d;
}

#endif
