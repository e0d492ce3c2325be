/* The header every policy type starts with (FsPolicy): set-up, GC, the counters Python reads,
 * exception matching and the list of policy types. Apart from guard.c, which drives calls. */
#include "fs_binding.h"

#include <stddef.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* Shared policy header */

int fs_policy_init(FsPolicy *p, const fs_policy_ops *ops, int pattern, unsigned flags,
                   const char *default_name)
{
    fs_state *st = fs_state_from_type(Py_TYPE(p));
    if (st == NULL) {
        return -1;
    }
    p->ops = ops;
    p->st = st;
    p->pattern = pattern;
    p->flags = flags;
    if (p->name == NULL) {
        p->name = PyUnicode_FromString(default_name);
        if (p->name == NULL) {
            return -1;
        }
    }
    return 0;
}

int fs_policy_traverse(FsPolicy *p, visitproc visit, void *arg)
{
    Py_VISIT(p->name);
    return fs_event_cache_traverse(p->events, visit, arg);
}


void fs_policy_clear(FsPolicy *p)
{
    if (p->series != NULL) {
        fs_series_leave(p);
    }
    if (p->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)p);
    }
    fs_policy_clear_events(p);
    Py_CLEAR(p->latency);
    Py_CLEAR(p->name);
}

PyObject *fs_policy_counters(PyObject *self, PyObject *Py_UNUSED(unused))
{
    FsPolicy *p = (FsPolicy *)self;
    PyObject *t = PyTuple_New(FS_MAX_COUNTERS);
    if (t == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < FS_MAX_COUNTERS; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(p->counters[i]);
        if (v == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, v);
    }
    return t;
}

PyObject *fs_policy_count(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    FsPolicy *p = (FsPolicy *)self;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "_count(index, n=1)");
        return NULL;
    }
    Py_ssize_t i = PyLong_AsSsize_t(args[0]);
    if (i == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (i < 0 || i >= FS_MAX_COUNTERS) {
        PyErr_Format(PyExc_IndexError, "counter index %zd out of range", i);
        return NULL;
    }
    unsigned long long n = 1;
    if (nargs == 2) {
        n = PyLong_AsUnsignedLongLong(args[1]);
        if (n == (unsigned long long)-1 && PyErr_Occurred()) {
            return NULL;
        }
    }
    p->counters[i] += n;
    Py_RETURN_NONE;
}

int fs_exception_matches(PyObject *exc, PyObject *on, PyObject *on_pred, int otherwise)
{
    /* CancelledError, KeyboardInterrupt, SystemExit, GeneratorExit: never. */
    if (!PyObject_TypeCheck(exc, (PyTypeObject *)PyExc_Exception)) {
        return 0;
    }
    if (on != NULL) {
        return PyErr_GivenExceptionMatches(exc, on);
    }
    if (on_pred != NULL) {
        PyObject *r = PyObject_CallOneArg(on_pred, exc);
        if (r == NULL) {
            return -1;
        }
        int t = PyObject_IsTrue(r);
        Py_DECREF(r);
        return t;
    }
    return otherwise;
}

void fs_policy_dealloc(PyObject *self, inquiry clear)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    fs_policy_clear((FsPolicy *)self);
    clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

int fs_policy_type_add(PyObject *module, fs_state *st, PyType_Spec *spec, PyTypeObject **keep)
{
    PyTypeObject *tp = (PyTypeObject *)PyType_FromModuleAndSpec(module, spec, NULL);
    int rc = tp == NULL || fs_register_policy_type(st, tp) < 0 || PyModule_AddType(module, tp) < 0;
    if (keep != NULL) {
        Py_XSETREF(*keep, tp);
    }
    else {
        Py_XDECREF(tp);     /* the policy type list and the module hold it */
    }
    return rc ? -1 : 0;
}

/* -1 with TypeError set (the awaitable closed) when r is awaitable, else 0. */
static int refuse_awaitable(PyObject *r)
{
    PyAsyncMethods *am = Py_TYPE(r)->tp_as_async;
    if (am == NULL || am->am_await == NULL) {
        return 0;
    }
    if (PyCoro_CheckExact(r)) {
        PyObject *res = PyObject_CallMethod(r, "close", NULL);
        Py_XDECREF(res);
        PyErr_Clear();
    }
    PyErr_Format(PyExc_TypeError,
                 "predicate returned an awaitable (%.200s) but was not recognised as async:"
                 " declare it with async def", Py_TYPE(r)->tp_name);
    return -1;
}

int fs_predicate_verdict(PyObject *predicate, PyObject *const *args, size_t nargsf,
                         PyObject *kwnames)
{
    PyObject *r = PyObject_Vectorcall(predicate, args, nargsf, kwnames);
    if (r == NULL) {
        return -1;
    }
    /* Its verdict is unknown, so the call fails instead of taking the (always truthy)
     * awaitable as the answer. */
    int t = refuse_awaitable(r) < 0 ? -1 : PyObject_IsTrue(r);
    Py_DECREF(r);
    return t;
}

bool fs_is_policy(fs_state *st, PyObject *obj)
{
    for (int i = 0; i < st->n_policy_types; i++) {
        if (PyObject_TypeCheck(obj, st->policy_types[i])) {
            return ((FsPolicy *)obj)->ops != NULL;
        }
    }
    return false;
}

int fs_register_policy_type(fs_state *st, PyTypeObject *tp)
{
    if (st->n_policy_types >= FS_MAX_POLICY_TYPES) {
        PyErr_SetString(PyExc_RuntimeError, "too many policy types");
        return -1;
    }
    st->policy_types[st->n_policy_types++] = (PyTypeObject *)Py_NewRef(tp);
    return 0;
}


PyObject *fs_call_method_with(PyObject *self, PyObject *name, PyObject *const *head,
                              Py_ssize_t nhead, PyObject *const *args, size_t nargsf,
                              PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t total = nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);
    PyObject *small[8 + FS_CALL_INLINE_ARGS];
    PyObject **stack = small;
    if (1 + nhead + total > (Py_ssize_t)(sizeof(small) / sizeof(small[0]))) {
        stack = PyMem_Malloc((size_t)(1 + nhead + total) * sizeof(PyObject *));
        if (stack == NULL) {
            return PyErr_NoMemory();
        }
    }
    stack[0] = self;
    memcpy(stack + 1, head, (size_t)nhead * sizeof(PyObject *));
    memcpy(stack + 1 + nhead, args, (size_t)total * sizeof(PyObject *));
    PyObject *res = PyObject_VectorcallMethod(name, stack, (size_t)(1 + nhead + nargs), kwnames);
    if (stack != small) {
        PyMem_Free(stack);
    }
    return res;
}
