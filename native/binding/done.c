/* Awaitables that are done when they are made: the recycled StopIteration a guarded return
 * ends with, Ready (a value at once), RejectedCall (a refusal raised where it is awaited) and
 * CacheHit (a stored value). Apart from guard.c because every pattern returns them. */
#include "fs_binding.h"

#include <stddef.h>


/* The StopIteration an awaiting SEND receives for a non-None result. SEND reads .value and
 * drops the exception at once, so instances are recycled: the type's dealloc releases what the
 * instance holds (the value first, so nothing outlives the await) and keeps the memory for the
 * next result. Saves the allocation, GC bookkeeping and free of every guarded return. */
#define FS_STOP_FREELIST 8

typedef struct FsStop {
    PyStopIterationObject base;
    fs_state *st;       /* borrowed: the module outlives its types' instances */
} FsStop;

static void stop_dealloc(PyObject *self)
{
    PyStopIterationObject *e = (PyStopIterationObject *)self;
    PyTypeObject *tp = Py_TYPE(self);
    fs_state *st = ((FsStop *)self)->st;
    if (PyObject_GC_IsTracked(self)) {
        PyObject_GC_UnTrack(self);
    }
    Py_CLEAR(e->value);
    Py_CLEAR(e->dict);
    Py_CLEAR(e->args);
    Py_CLEAR(e->notes);
    Py_CLEAR(e->traceback);
    Py_CLEAR(e->context);
    Py_CLEAR(e->cause);
    e->suppress_context = 0;
    if (st != NULL && tp == st->StopIteration_Type && st->stop_free_count < FS_STOP_FREELIST) {
        /* PyObject_Init on reuse takes the type reference back. */
        e->value = st->stop_freelist;
        st->stop_freelist = self;
        st->stop_free_count++;
    }
    else {
        tp->tp_free(self);
    }
    Py_DECREF(tp);
}

void fs_stop_freelist_clear(fs_state *st)
{
    while (st->stop_freelist != NULL) {
        PyStopIterationObject *e = (PyStopIterationObject *)st->stop_freelist;
        st->stop_freelist = e->value;
        PyObject_GC_Del(e);
    }
    st->stop_free_count = 0;
}

PyObject *fs_stop_iteration_new(fs_state *st, PyObject *value)
{
    PyStopIterationObject *e = (PyStopIterationObject *)st->stop_freelist;
    if (e != NULL) {
        st->stop_freelist = e->value;
        st->stop_free_count--;
        PyObject_Init((PyObject *)e, st->StopIteration_Type);
    }
    else {
        e = (PyStopIterationObject *)PyObject_GC_New(FsStop, st->StopIteration_Type);
        if (e == NULL) {
            Py_DECREF(value);
            return NULL;
        }
        ((FsStop *)e)->st = st;
        e->dict = e->notes = e->traceback = e->context = e->cause = NULL;
        e->suppress_context = 0;
    }
    e->value = value;
    e->args = PyTuple_New(0);    /* the shared empty tuple */
    if (e->args == NULL) {
        Py_DECREF(e);
        return NULL;
    }
    /* Left untracked (tracking costs every guarded return ~50 instructions): it lives from
     * here to the SEND that consumes it. One that reaches Python code by hand (next() on a
     * guarded call) and is then kept in a reference cycle would not be collected, as with any
     * untracked object; an `except StopIteration as e` block drops e on exit. */
    return (PyObject *)e;
}

static int stop_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    return ((PyTypeObject *)PyExc_StopIteration)->tp_traverse(self, visit, arg);
}

static int stop_clear(PyObject *self)
{
    return ((PyTypeObject *)PyExc_StopIteration)->tp_clear(self);
}

static PyType_Slot stop_slots[] = {
    {Py_tp_dealloc, stop_dealloc},
    {Py_tp_traverse, stop_traverse},
    {Py_tp_clear, stop_clear},
    {Py_tp_doc, "StopIteration carrying a guarded call's result (recycled)."},
    {0, NULL},
};

static PyType_Spec stop_spec = {
    .name = "failsafe._native.StopIteration",
    .basicsize = sizeof(FsStop),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = stop_slots,
};

PyObject *fs_raise_thrown(PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *typ = args[0];
    PyObject *val = nargs > 1 ? args[1] : Py_None;
    if (PyExceptionInstance_Check(typ)) {
        PyErr_SetObject((PyObject *)Py_TYPE(typ), typ);
    }
    else if (PyExceptionClass_Check(typ)) {
        PyErr_SetObject(typ, val == Py_None ? NULL : val);
    }
    else {
        PyErr_SetString(PyExc_TypeError, "exceptions must derive from BaseException");
    }
    return NULL;
}

typedef struct ReadyObject {
    PyObject_HEAD
    PyObject *value;        /* NULL: None */
    PyObject *stop;         /* the StopIteration last raised, recycled once nobody holds it */
} ReadyObject;


/* ------------------------------------------------------------------------------------------ */
/* Ready: an awaitable that completes at once with its value */

PyObject *fs_ready_new(fs_state *st, PyObject *value)
{
    ReadyObject *r = PyObject_GC_New(ReadyObject, st->Ready_Type);
    if (r == NULL) {
        return NULL;
    }
    r->value = Py_XNewRef(value);
    r->stop = NULL;
    PyObject_GC_Track(r);
    return (PyObject *)r;
}

/* Ends with the value: a bare NULL for None, else a StopIteration instance (so tuples and
 * exceptions arrive intact). The value is handed out once. */
static PyObject *ready_iternext(PyObject *self)
{
    ReadyObject *r = (ReadyObject *)self;
    PyObject *v = r->value;
    if (v == NULL) {
        return NULL;
    }
    r->value = NULL;
    PyObject *stop = r->stop;
#ifndef Py_GIL_DISABLED
    /* The awaiting SEND reads .value and drops the exception: when that left it to us alone, it
     * serves again (allocating it is most of the cost of an `async with ... as`). */
    if (stop != NULL && Py_REFCNT(stop) == 1) {
        PyBaseExceptionObject *b = (PyBaseExceptionObject *)stop;
        if (b->traceback || b->context || b->cause || b->notes || b->dict) {
            Py_CLEAR(b->traceback);     /* it escaped into Python code once */
            Py_CLEAR(b->context);
            Py_CLEAR(b->cause);
            Py_CLEAR(b->notes);
            Py_CLEAR(b->dict);
        }
        b->suppress_context = 0;
        Py_XSETREF(((PyStopIterationObject *)stop)->value, v);
        PyErr_SetRaisedException(Py_NewRef(stop));
        return NULL;
    }
#endif
    fs_state *st = fs_state_from_type(Py_TYPE(self));
    stop = st != NULL ? fs_stop_iteration_new(st, v) : NULL;
    if (stop == NULL) {
        return NULL;
    }
#ifndef Py_GIL_DISABLED
    if (r->stop == NULL) {
        r->stop = Py_NewRef(stop);
    }
#endif
    PyErr_SetRaisedException(stop);
    return NULL;
}

/* Drops the recycled StopIteration's reference to value, so value can go when its user does. */
void fs_ready_forget(PyObject *ready, PyObject *value)
{
    PyObject *stop = ready ? ((ReadyObject *)ready)->stop : NULL;
    if (stop != NULL && Py_REFCNT(stop) == 1 && ((PyStopIterationObject *)stop)->value == value) {
        Py_CLEAR(((PyStopIterationObject *)stop)->value);
    }
}

static PySendResult ready_am_send(PyObject *self, PyObject *Py_UNUSED(arg), PyObject **presult)
{
    ReadyObject *r = (ReadyObject *)self;
    *presult = r->value ? r->value : Py_NewRef(Py_None);
    r->value = NULL;
    return PYGEN_RETURN;
}

static PyObject *ready_send(PyObject *self, PyObject *Py_UNUSED(arg))
{
    return ready_iternext(self);
}

static PyObject *ready_throw(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    ReadyObject *r = (ReadyObject *)self;
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "throw expected 1 to 3 arguments");
        return NULL;
    }
    Py_CLEAR(r->value);
    return fs_raise_thrown(args, nargs);
}

static PyObject *ready_close(PyObject *self, PyObject *Py_UNUSED(unused))
{
    Py_CLEAR(((ReadyObject *)self)->value);
    Py_RETURN_NONE;
}

static PyObject *ready_await(PyObject *self)
{
    return Py_NewRef(self);
}

static int ready_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(((ReadyObject *)self)->value);
    Py_VISIT(((ReadyObject *)self)->stop);
    return 0;
}

static int ready_clear(PyObject *self)
{
    Py_CLEAR(((ReadyObject *)self)->value);
    Py_CLEAR(((ReadyObject *)self)->stop);
    return 0;
}

static void ready_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    ready_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef ready_methods[] = {
    {"send", ready_send, METH_O, NULL},
    {"throw", (PyCFunction)(void (*)(void))ready_throw, METH_FASTCALL, NULL},
    {"close", ready_close, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot ready_slots[] = {
    {Py_am_await, ready_await},
    {Py_am_send, ready_am_send},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, ready_iternext},
    {Py_tp_methods, ready_methods},
    {Py_tp_traverse, ready_traverse},
    {Py_tp_clear, ready_clear},
    {Py_tp_dealloc, ready_dealloc},
    {0, NULL},
};

static PyType_Spec ready_spec = {
    .name = "failsafe._native.Ready",
    .basicsize = sizeof(ReadyObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = ready_slots,
};

/* ------------------------------------------------------------------------------------------ */
/* Rejected: what a refused call returns, an awaitable that raises the refusal when awaited (a
 * coroutine raises nothing when it is made: `create_task(f())`, `gather(f(), ...)` and outer
 * guards, which observe only what their awaitable raises, all see the refusal where they await) */

typedef struct FsRejected {
    PyObject_HEAD
    PyObject *exc;      /* raised at the first send, then NULL */
    PyObject *fn;       /* the guarded function (owned), for its names; NULL when unknown */
} FsRejected;

static PyObject *rejected_raise(FsRejected *r)
{
    PyObject *exc = r->exc;
    if (exc == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
        return NULL;
    }
    r->exc = NULL;
    PyErr_SetRaisedException(exc);
    return NULL;
}

static PySendResult rejected_am_send(PyObject *self, PyObject *Py_UNUSED(arg), PyObject **presult)
{
    *presult = NULL;
    rejected_raise((FsRejected *)self);
    return PYGEN_ERROR;
}

static PyObject *rejected_iternext(PyObject *self)
{
    return rejected_raise((FsRejected *)self);
}

static PyObject *rejected_send(PyObject *self, PyObject *Py_UNUSED(arg))
{
    return rejected_raise((FsRejected *)self);
}

/* Thrown in before it ran: the thrown exception surfaces and the refusal is dropped, as for a
 * coroutine that never started. */
static PyObject *rejected_throw(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "throw expected 1 to 3 arguments");
        return NULL;
    }
    Py_CLEAR(((FsRejected *)self)->exc);
    return fs_raise_thrown(args, nargs);
}

static PyObject *rejected_close(PyObject *self, PyObject *Py_UNUSED(unused))
{
    Py_CLEAR(((FsRejected *)self)->exc);
    Py_RETURN_NONE;
}

static int rejected_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(((FsRejected *)self)->exc);
    Py_VISIT(((FsRejected *)self)->fn);
    return 0;
}

static int rejected_clear(PyObject *self)
{
    Py_CLEAR(((FsRejected *)self)->exc);
    Py_CLEAR(((FsRejected *)self)->fn);
    return 0;
}

/* __name__ / __qualname__ of the refused function, for task reprs and debuggers. */
static PyObject *rejected_get_name_attr(PyObject *self, void *closure)
{
    FsRejected *r = (FsRejected *)self;
    if (r->fn != NULL) {
        PyObject *v = PyObject_GetAttrString(r->fn, (const char *)closure);
        if (v != NULL || !PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return v;
        }
        PyErr_Clear();
    }
    return PyUnicode_FromString("RejectedCall");
}

/* A refused call never runs: no frame, nothing awaited, never running or suspended. */
static PyObject *rejected_get_none(PyObject *Py_UNUSED(self), void *Py_UNUSED(closure))
{
    Py_RETURN_NONE;
}

static PyObject *rejected_get_false(PyObject *Py_UNUSED(self), void *Py_UNUSED(closure))
{
    Py_RETURN_FALSE;
}

static PyGetSetDef rejected_getset[] = {
    {"__name__", rejected_get_name_attr, NULL, "name of the refused function", "__name__"},
    {"__qualname__", rejected_get_name_attr, NULL, "qualified name of the refused function",
     "__qualname__"},
    {"cr_frame", rejected_get_none, NULL, "None: a refused call never runs", NULL},
    {"cr_await", rejected_get_none, NULL, "None: a refused call awaits nothing", NULL},
    {"cr_code", rejected_get_none, NULL, "None: a refused call runs no code", NULL},
    {"cr_running", rejected_get_false, NULL, "False", NULL},
    {"cr_suspended", rejected_get_false, NULL, "False", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static void rejected_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    rejected_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef rejected_methods[] = {
    {"send", rejected_send, METH_O, "send(value) -> raises the refusal."},
    {"throw", (PyCFunction)(void (*)(void))rejected_throw, METH_FASTCALL,
     "throw(exc) -> raises exc."},
    {"close", rejected_close, METH_NOARGS, "close() -> drops the refusal."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot rejected_slots[] = {
    {Py_am_await, PyObject_SelfIter},
    {Py_am_send, rejected_am_send},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, rejected_iternext},
    {Py_tp_methods, rejected_methods},
    {Py_tp_getset, rejected_getset},
    {Py_tp_traverse, rejected_traverse},
    {Py_tp_clear, rejected_clear},
    {Py_tp_dealloc, rejected_dealloc},
    {0, NULL},
};

static PyType_Spec rejected_spec = {
    .name = "failsafe._native.RejectedCall",
    .basicsize = sizeof(FsRejected),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = rejected_slots,
};

/* The awaitable of a call of fn refused with the pending exception: an Exception is deferred
 * to the await; anything else (KeyboardInterrupt from a listener) stays raised here. */
PyObject *fs_rejected_pending(fs_state *st, PyObject *fn)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
        return NULL;
    }
    PyObject *r = fs_rejected_new(st, PyErr_GetRaisedException());
    if (r != NULL) {
        ((FsRejected *)r)->fn = Py_NewRef(fn);
    }
    return r;
}

PyObject *fs_rejected_new(fs_state *st, PyObject *exc)
{
    if (exc == NULL) {
        return NULL;
    }
    FsRejected *r = PyObject_GC_New(FsRejected, st->Rejected_Type);
    if (r == NULL) {
        Py_DECREF(exc);
        return NULL;    /* MemoryError replaces the refusal */
    }
    r->exc = exc;
    r->fn = NULL;
    PyObject_GC_Track(r);
    return (PyObject *)r;
}

typedef struct CacheHit {
    PyObject_HEAD
    fs_state *st;           /* borrowed: the module outlives its objects */
    PyObject *value;        /* owned until handed out; next in the free list when recycled */
    int done;
} CacheHit;

#define HIT_FREELIST 32

/* ------------------------------------------------------------------------------------------ */
/* CacheHit: what a hit returns, an awaitable that completes at once with the value */

PyObject *fs_hit_new(fs_state *st, PyObject *value)
{
    CacheHit *h = st->hit_freelist;
    if (h != NULL) {
        st->hit_freelist = (CacheHit *)h->value;
        st->hit_free_count--;
        PyObject_Init((PyObject *)h, st->CacheHit_Type);
    }
    else if ((h = PyObject_GC_New(CacheHit, st->CacheHit_Type)) == NULL) {
        Py_DECREF(value);
        return NULL;
    }
    h->st = st;
    h->value = value;
    h->done = 0;
    PyObject_GC_Track(h);
    return (PyObject *)h;
}

static int hit_refuse_reuse(CacheHit *h)
{
    if (h->done) {
        PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
        return -1;
    }
    h->done = 1;
    return 0;
}

static PySendResult hit_am_send(PyObject *self, PyObject *arg, PyObject **presult)
{
    CacheHit *h = (CacheHit *)self;
    *presult = NULL;
    if (hit_refuse_reuse(h) < 0) {
        return PYGEN_ERROR;
    }
    if (arg != Py_None) {
        Py_CLEAR(h->value);
        PyErr_SetString(PyExc_TypeError, "can't send non-None value to a just-started coroutine");
        return PYGEN_ERROR;
    }
    *presult = h->value;
    h->value = NULL;
    return PYGEN_RETURN;
}

static PyObject *hit_send(PyObject *self, PyObject *arg)
{
    PyObject *v = NULL;
    if (hit_am_send(self, arg, &v) == PYGEN_ERROR) {
        return NULL;
    }
    fs_state *st = fs_state_from_type(Py_TYPE(self));
    PyObject *stop = st != NULL ? fs_stop_iteration_new(st, v) : NULL;
    if (stop != NULL) {
        PyErr_SetRaisedException(stop);
    }
    return NULL;
}

static PyObject *hit_iternext(PyObject *self)
{
    PyObject *v = NULL;
    if (hit_am_send(self, Py_None, &v) == PYGEN_ERROR) {
        return NULL;
    }
    if (v == Py_None) {
        Py_DECREF(v);
        return NULL;    /* a bare NULL ends iteration with value None */
    }
    fs_state *st = fs_state_from_type(Py_TYPE(self));
    PyObject *stop = st != NULL ? fs_stop_iteration_new(st, v) : NULL;
    if (stop != NULL) {
        PyErr_SetRaisedException(stop);
    }
    return NULL;
}

static PyObject *hit_throw(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    CacheHit *h = (CacheHit *)self;
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "throw expected 1 to 3 arguments");
        return NULL;
    }
    h->done = 1;
    Py_CLEAR(h->value);
    return fs_raise_thrown(args, nargs);
}

static PyObject *hit_close(PyObject *self, PyObject *Py_UNUSED(unused))
{
    CacheHit *h = (CacheHit *)self;
    h->done = 1;
    Py_CLEAR(h->value);
    Py_RETURN_NONE;
}

static PyObject *hit_await(PyObject *self)
{
    return Py_NewRef(self);
}

static int hit_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(((CacheHit *)self)->value);
    return 0;
}

static int hit_clear(PyObject *self)
{
    Py_CLEAR(((CacheHit *)self)->value);
    return 0;
}

static void hit_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    hit_clear(self);
    fs_state *st = ((CacheHit *)self)->st;
    if (st->hit_free_count < HIT_FREELIST && tp == st->CacheHit_Type) {
        /* Recycled untracked; PyObject_Init on reuse takes the type reference back. */
        ((CacheHit *)self)->value = (PyObject *)st->hit_freelist;
        st->hit_freelist = (CacheHit *)self;
        st->hit_free_count++;
    }
    else {
        tp->tp_free(self);
    }
    Py_DECREF(tp);
}

static PyObject *hit_repr(PyObject *self)
{
    CacheHit *h = (CacheHit *)self;
    return PyUnicode_FromFormat("<cached result%s>", h->done ? " (awaited)" : "");
}

static PyMethodDef hit_methods[] = {
    {"send", hit_send, METH_O, "send(None) -> StopIteration with the cached value."},
    {"throw", (PyCFunction)(void (*)(void))hit_throw, METH_FASTCALL, NULL},
    {"close", hit_close, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot hit_slots[] = {
    {Py_am_await, hit_await},
    {Py_am_send, hit_am_send},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, hit_iternext},
    {Py_tp_methods, hit_methods},
    {Py_tp_traverse, hit_traverse},
    {Py_tp_clear, hit_clear},
    {Py_tp_dealloc, hit_dealloc},
    {Py_tp_repr, hit_repr},
    {0, NULL},
};

static PyType_Spec hit_spec = {
    .name = "failsafe._native.CacheHit",
    .basicsize = sizeof(CacheHit),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = hit_slots,
};

void fs_hit_freelist_clear(fs_state *st)
{
    while (st->hit_freelist != NULL) {
        CacheHit *h = st->hit_freelist;
        st->hit_freelist = (CacheHit *)h->value;
        PyObject_GC_Del(h);
    }
    st->hit_free_count = 0;
}

/* ------------------------------------------------------------------------------------------ */

PyObject *fs_ready_spare(fs_state *st, PyObject **spare, PyObject *value)
{
    ReadyObject *r = (ReadyObject *)*spare;
    if (r != NULL && Py_REFCNT(r) == 1) {
        Py_XSETREF(r->value, Py_NewRef(value));
        return Py_NewRef(r);
    }
    PyObject *ready = fs_ready_new(st, value);
    if (ready != NULL && *spare == NULL) {
        *spare = Py_NewRef(ready);
    }
    return ready;
}

void fs_rejected_name(fs_state *st, PyObject *res, PyObject *fn)
{
    if (res != NULL && Py_IS_TYPE(res, st->Rejected_Type) && ((FsRejected *)res)->fn == NULL) {
        ((FsRejected *)res)->fn = Py_NewRef(fn);
    }
}

int fs_done_setup(PyObject *module, fs_state *st)
{
    st->StopIteration_Type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &stop_spec, PyExc_StopIteration);
    if (st->StopIteration_Type == NULL) {
        return -1;
    }
    st->Rejected_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &rejected_spec, NULL);
    st->Ready_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &ready_spec, NULL);
    st->CacheHit_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &hit_spec, NULL);
    if (st->Rejected_Type == NULL || st->Ready_Type == NULL || st->CacheHit_Type == NULL
        || PyModule_AddType(module, st->Rejected_Type) < 0
        || PyModule_AddType(module, st->CacheHit_Type) < 0) {
        return -1;
    }
    st->ready_none = fs_ready_new(st, NULL);
    return st->ready_none != NULL ? 0 : -1;
}
