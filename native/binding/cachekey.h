/* Cache keys: how cache.c derives, hashes, compares and shows the key of a call. */
#ifndef FS_CACHEKEY_H
#define FS_CACHEKEY_H

#include "fs_binding.h"

/* How a key was derived; entries of different kinds never match. */
enum {
    KEY_SINGLE = 0,     /* one positional argument, no keyword: the argument itself */
    KEY_ARGS = 1,       /* positional arguments only (not one): their tuple */
    KEY_KW = 2,         /* with keyword arguments: (args, names, values) */
    KEY_FUNC = 3        /* key_func(*args, **kwargs) */
};

/* The key of one call while it is looked up. */
typedef struct KeyProbe {
    int kind;
    uint64_t hash;
    PyObject *fkey;         /* KEY_FUNC: key_func's result, owned */
} KeyProbe;

/* Fills kp from a call's arguments (borrowed, vectorcall convention), through key_func when
 * not NULL. 0, or -1 with TypeError naming the unhashable argument (or key_func's error). */
int probe_init(PyObject *key_func, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
               KeyProbe *kp);
/* Releases what probe_init holds. */
void probe_release(KeyProbe *kp);
/* The key to store for kp (new reference), or NULL with an exception. */
PyObject *probe_key(KeyProbe *kp, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
/* The stored key of kind as listeners see it (new reference), or NULL with an exception. */
PyObject *public_key(PyObject *key, int kind);
/* Whether the stored key is the probe's: 1, 0, or -1 with an exception (runs keys' __eq__). */
int key_equal(PyObject *stored, KeyProbe *kp, PyObject *const *args, Py_ssize_t nargs,
              PyObject *kwnames);

#endif
