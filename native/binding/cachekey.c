/* Cache key derivation: a call's arguments (or key_func's answer) as a hash, a stored key, and
 * the key listeners see. Apart from cache.c, which owns the tables the keys index. */
#include "cachekey.h"

/* ------------------------------------------------------------------------------------------ */
/* Keys */

#define P1 UINT64_C(11400714785074694791)
#define P2 UINT64_C(14029467366897019727)
#define P5 UINT64_C(2870177450012600261)

static inline uint64_t mix(uint64_t acc, uint64_t h)
{
    acc += h * P2;
    acc = (acc << 31) | (acc >> 33);
    return acc * P1;
}

static int hash_of(PyObject *obj, const char *what, Py_ssize_t index, PyObject *name,
                   uint64_t *out)
{
    Py_hash_t h = PyObject_Hash(obj);
    if (h == -1 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyObject *cause = PyErr_GetRaisedException();
            if (name != NULL) {
                PyErr_Format(PyExc_TypeError,
                             "cache: keyword argument %R is unhashable (%.200s): cached calls "
                             "need hashable arguments, or a key_func",
                             name, Py_TYPE(obj)->tp_name);
            }
            else if (index < 0) {
                PyErr_Format(PyExc_TypeError, "cache: %s an unhashable key (%.200s)", what,
                             Py_TYPE(obj)->tp_name);
            }
            else {
                PyErr_Format(PyExc_TypeError,
                             "cache: %s %zd is unhashable (%.200s): cached calls need hashable "
                             "arguments, or a key_func",
                             what, index, Py_TYPE(obj)->tp_name);
            }
            PyObject *err = PyErr_GetRaisedException();
            PyException_SetCause(err, Py_NewRef(cause));
            PyException_SetContext(err, cause);
            PyErr_SetRaisedException(err);
        }
        return -1;
    }
    *out = (uint64_t)h;
    return 0;
}

/* Fills kp from a call's arguments (borrowed, vectorcall convention). 0 or -1 with TypeError. */
int probe_init(PyObject *key_func, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
               KeyProbe *kp)
{
    Py_ssize_t nkw = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
    kp->fkey = NULL;
    uint64_t h = 0;
    if (key_func != NULL) {
        kp->kind = KEY_FUNC;
        kp->fkey = PyObject_Vectorcall(key_func, args, (size_t)nargs, kwnames);
        if (kp->fkey == NULL) {
            return -1;
        }
        if (hash_of(kp->fkey, "key_func returned", -1, NULL, &h) < 0) {
            Py_CLEAR(kp->fkey);
            return -1;
        }
        kp->hash = h;
        return 0;
    }
    if (nkw == 0 && nargs == 1) {
        kp->kind = KEY_SINGLE;
        if (hash_of(args[0], "argument", 0, NULL, &h) < 0) {
            return -1;
        }
        kp->hash = h;
        return 0;
    }
    uint64_t acc = P5 + (uint64_t)nargs;
    for (Py_ssize_t i = 0; i < nargs; i++) {
        if (hash_of(args[i], "argument", i, NULL, &h) < 0) {
            return -1;
        }
        acc = mix(acc, h);
    }
    if (nkw == 0) {
        kp->kind = KEY_ARGS;
        kp->hash = acc ^ UINT64_C(0x5bd1e995);
        return 0;
    }
    /* Keyword arguments in any order give the same key: their pairs are summed. */
    uint64_t sum = 0;
    for (Py_ssize_t j = 0; j < nkw; j++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, j);
        uint64_t hn = 0;
        if (hash_of(name, "keyword", j, NULL, &hn) < 0
            || hash_of(args[nargs + j], "keyword argument", j, name, &h) < 0) {
            return -1;
        }
        sum += mix(mix(P5, hn), h);
    }
    kp->kind = KEY_KW;
    kp->hash = mix(acc, sum) ^ (uint64_t)nkw;
    return 0;
}

void probe_release(KeyProbe *kp)
{
    Py_CLEAR(kp->fkey);
}

static PyObject *tuple_of(PyObject *const *items, Py_ssize_t n)
{
    PyObject *t = PyTuple_New(n);
    if (t != NULL) {
        for (Py_ssize_t i = 0; i < n; i++) {
            PyTuple_SET_ITEM(t, i, Py_NewRef(items[i]));
        }
    }
    return t;
}

/* The key to store for kp (new reference): see KEY_*. */
PyObject *probe_key(KeyProbe *kp, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    switch (kp->kind) {
    case KEY_FUNC:
        return Py_NewRef(kp->fkey);
    case KEY_SINGLE:
        return Py_NewRef(args[0]);
    case KEY_ARGS:
        return tuple_of(args, nargs);
    default: {
        Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames);
        PyObject *pos = tuple_of(args, nargs);
        PyObject *vals = tuple_of(args + nargs, nkw);
        PyObject *key = NULL;
        if (pos != NULL && vals != NULL) {
            key = PyTuple_Pack(3, pos, kwnames, vals);
        }
        Py_XDECREF(pos);
        Py_XDECREF(vals);
        return key;
    }
    }
}

/* The key as listeners see it: key_func's result, else failsafe-py's
 * (args, frozenset(kwargs.items())). New reference. */
PyObject *public_key(PyObject *key, int kind)
{
    if (kind == KEY_FUNC) {
        return Py_NewRef(key);
    }
    PyObject *pos, *kw;
    if (kind == KEY_KW) {
        pos = Py_NewRef(PyTuple_GET_ITEM(key, 0));
        PyObject *names = PyTuple_GET_ITEM(key, 1);
        PyObject *vals = PyTuple_GET_ITEM(key, 2);
        PyObject *items = PyList_New(0);
        if (items == NULL) {
            Py_DECREF(pos);
            return NULL;
        }
        for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(names); j++) {
            PyObject *pair = PyTuple_Pack(2, PyTuple_GET_ITEM(names, j), PyTuple_GET_ITEM(vals, j));
            if (pair == NULL || PyList_Append(items, pair) < 0) {
                Py_XDECREF(pair);
                Py_DECREF(items);
                Py_DECREF(pos);
                return NULL;
            }
            Py_DECREF(pair);
        }
        kw = PyFrozenSet_New(items);
        Py_DECREF(items);
    }
    else {
        pos = kind == KEY_SINGLE ? PyTuple_Pack(1, key) : Py_NewRef(key);
        kw = PyFrozenSet_New(NULL);
    }
    PyObject *res = NULL;
    if (pos != NULL && kw != NULL) {
        res = PyTuple_Pack(2, pos, kw);
    }
    Py_XDECREF(pos);
    Py_XDECREF(kw);
    return res;
}

static inline int obj_eq(PyObject *a, PyObject *b)
{
    return a == b ? 1 : PyObject_RichCompareBool(a, b, Py_EQ);
}

/* Whether the stored key (held by the caller) is the probe's key: 1, 0, or -1 on error. Runs
 * the keys' __eq__, which may do anything to the cache. */
int key_equal(PyObject *stored, KeyProbe *kp, PyObject *const *args, Py_ssize_t nargs,
              PyObject *kwnames)
{
    switch (kp->kind) {
    case KEY_FUNC:
        return obj_eq(stored, kp->fkey);
    case KEY_SINGLE:
        return obj_eq(stored, args[0]);
    case KEY_ARGS:
        if (PyTuple_GET_SIZE(stored) != nargs) {
            return 0;
        }
        for (Py_ssize_t i = 0; i < nargs; i++) {
            int r = obj_eq(PyTuple_GET_ITEM(stored, i), args[i]);
            if (r <= 0) {
                return r;
            }
        }
        return 1;
    default:
        break;
    }
    PyObject *pos = PyTuple_GET_ITEM(stored, 0);
    PyObject *names = PyTuple_GET_ITEM(stored, 1);
    PyObject *vals = PyTuple_GET_ITEM(stored, 2);
    Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames);
    if (PyTuple_GET_SIZE(pos) != nargs || PyTuple_GET_SIZE(names) != nkw) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        int r = obj_eq(PyTuple_GET_ITEM(pos, i), args[i]);
        if (r <= 0) {
            return r;
        }
    }
    for (Py_ssize_t j = 0; j < nkw; j++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, j);
        Py_ssize_t m = 0;
        while (m < nkw && PyTuple_GET_ITEM(names, m) != name
               && PyUnicode_Compare(PyTuple_GET_ITEM(names, m), name) != 0) {
            m++;
        }
        if (m == nkw) {
            return 0;
        }
        int r = obj_eq(PyTuple_GET_ITEM(vals, m), args[nargs + j]);
        if (r <= 0) {
            return r;
        }
    }
    return 1;
}

