/* The FsCall constructor shared by call.c and the guard's route (inline: it is on every
 * admitted call's path), and what call.c gives the guard. */
#ifndef FS_CALL_H
#define FS_CALL_H

#include "fs_binding.h"

#include <string.h>

/* A fresh FsCall of p (GC-untracked, nothing driven yet), or NULL with MemoryError. */
static inline FsCall *fs_call_new(FsPolicy *p)
{
    fs_state *st = p->st;
    FsCall *c = st->call_freelist;
    if (c != NULL) {
        st->call_freelist = (FsCall *)c->inner;
        st->call_free_count--;
        PyObject_Init((PyObject *)c, st->Call_Type);
    }
    else {
        c = PyObject_GC_New(FsCall, st->Call_Type);
        if (c == NULL) {
            return NULL;
        }
    }
    c->inner = NULL;
    c->policy = (FsPolicy *)Py_NewRef(p);
    c->fn = NULL;
    c->args = NULL;
    c->kwnames = NULL;
    c->nargs = 0;
    c->ntotal = 0;
    c->t0_ns = 0;
    c->weakreflist = NULL;
    c->failures = 0;
    c->state = FS_CALL_FRESH;
    c->running = 0;
    c->extra = 0;
    c->lat = NULL;
    c->timeout_s = 0.0;
    c->pobj = NULL;
    c->pin = NULL;
    c->pword = 0;
    memset(&c->entry, 0, sizeof(c->entry));
    fs_heap_node_init(&c->entry.node);
    return c;
}

/* obj.name into *res (new reference), or *res NULL when it has none: 1 found, 0 not, -1 error. */
static inline int fs_lookup_optional_attr(PyObject *obj, PyObject *name, PyObject **res)
{
#if PY_VERSION_HEX >= 0x030D0000
    return PyObject_GetOptionalAttr(obj, name, res);
#else
    return _PyObject_LookupAttr(obj, name, res);
#endif
}

/* The bare FsCall timing what a route without a call returned (aw stolen: the function's own
 * coroutine, a slow path) into lat, or NULL with an exception (also when aw is NULL). */
PyObject *fs_call_timed_bare(FsPolicy *p, PyObject *lat, PyObject *aw);

/* Creates and adds the FsCall type (st->Call_Type). 0, or -1 with an exception. */
int fs_call_setup(PyObject *module, fs_state *st);

#endif
