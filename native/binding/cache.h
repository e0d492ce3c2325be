/* What cache.c and cacheflight.c share: a call in flight. */
#ifndef FS_BINDING_CACHE_H
#define FS_BINDING_CACHE_H

#include "fs_binding.h"

typedef struct CacheFlight {
    PyObject_HEAD
    PyObject *waiters;      /* list of futures of the callers waiting for it, or NULL */
    int32_t slot;           /* its entry in the pending table, or -1 once detached */
    int settled;            /* its waiters were answered: a caller that found it in flight
                             * just before (in another thread) must look again */
    /* A refresh of a stale entry (stale_if_error): the entry, taken out of the ready table
     * while the call runs, answers an error and is put back if the call ends without a value. */
    PyObject *stale;        /* owned, or NULL */
    int64_t stale_fresh_until;
    int64_t stale_expires;
} CacheFlight;

/* The CacheFlight type's spec (cacheflight.c). */
extern PyType_Spec fs_cache_flight_spec;

#endif
