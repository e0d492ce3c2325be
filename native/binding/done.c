/* Awaitables that are done when they are made (Done: a value at once, a refusal raised where
 * it is awaited) and the recycled StopIteration a guarded return ends with. Apart from guard.c
 * because every pattern returns them. */
#include "fs_binding.h"
#include "done.h"

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

/* Frees the recycled StopIteration instances (fs_done_clear). */
static void stop_freelist_clear(fs_state *st)
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

/* ------------------------------------------------------------------------------------------ */
/* Done: an awaitable done when it is made. It answers its value, or raises its exception, at the
 * first await; that spends it, as it spends a coroutine (a coroutine raises nothing when it is
 * made: `create_task(f())`, `gather(f(), ...)` and outer guards, which observe only what their
 * awaitable raises, all see a refusal where they await). */

#define DONE_FREELIST 32

PyObject *fs_done_fresh(fs_state *st, PyObject *value)
{
    FsDone *d = PyObject_GC_New(FsDone, st->Done_Type);
    if (d == NULL) {
        Py_XDECREF(value);
        return NULL;
    }
    d->st = st;
    d->value = value;
    d->exc = NULL;
    d->fn = NULL;
    d->stop = NULL;
    d->spent = 0;
    d->kept = 0;
    PyObject_GC_Track(d);
    return (PyObject *)d;
}

PyObject *fs_done_new(fs_state *st, PyObject *value)
{
    return fs_done_answer(st, value);
}

PyObject *fs_done_raise(fs_state *st, PyObject *exc)
{
    if (exc == NULL) {
        return NULL;
    }
    PyObject *d = fs_done_answer(st, NULL);
    if (d == NULL) {
        Py_DECREF(exc);
        return NULL;    /* MemoryError replaces the refusal */
    }
    ((FsDone *)d)->exc = exc;
    return d;
}

PyObject *fs_done_refused(fs_state *st, PyObject *fn)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
        return NULL;
    }
    PyObject *d = fs_done_raise(st, PyErr_GetRaisedException());
    if (d != NULL) {
        ((FsDone *)d)->fn = Py_XNewRef(fn);
    }
    return d;
}

void fs_done_name(fs_state *st, PyObject *res, PyObject *fn)
{
    if (res != NULL && Py_IS_TYPE(res, st->Done_Type) && ((FsDone *)res)->fn == NULL) {
        ((FsDone *)res)->fn = Py_NewRef(fn);
    }
}

PyObject *fs_done_spare(fs_state *st, PyObject **spare, PyObject *value)
{
    FsDone *d = (FsDone *)*spare;
    if (d != NULL && Py_REFCNT(d) == 1) {
        Py_XSETREF(d->value, Py_NewRef(value));
        d->spent = 0;
        return Py_NewRef(d);
    }
    PyObject *res = fs_done_new(st, Py_NewRef(value));
    if (res != NULL && *spare == NULL) {
        *spare = Py_NewRef(res);
    }
    return res;
}

void fs_done_forget(PyObject *done, PyObject *value)
{
    PyObject *stop = done ? ((FsDone *)done)->stop : NULL;
    if (stop != NULL && Py_REFCNT(stop) == 1 && ((PyStopIterationObject *)stop)->value == value) {
        Py_CLEAR(((PyStopIterationObject *)stop)->value);
    }
}

/* Spends d. 0, or -1 with RuntimeError when it was spent already. */
static int done_spend(FsDone *d)
{
    if (d->spent) {
        PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
        return -1;
    }
    d->spent = !d->kept;
    return 0;
}

/* The end of the first await: PYGEN_RETURN with *presult the answer, or PYGEN_ERROR with the
 * refusal (or the reuse error) set. */
static PySendResult done_am_send(PyObject *self, PyObject *arg, PyObject **presult)
{
    FsDone *d = (FsDone *)self;
    *presult = NULL;
    if (done_spend(d) < 0) {
        return PYGEN_ERROR;
    }
    if (d->exc != NULL) {
        PyObject *exc = d->exc;
        d->exc = NULL;
        fs_raise(exc);     /* chained where it is awaited, as a coroutine's raise is */
        return PYGEN_ERROR;
    }
    if (arg != Py_None) {
        Py_CLEAR(d->value);
        PyErr_SetString(PyExc_TypeError, "can't send non-None value to a just-started coroutine");
        return PYGEN_ERROR;
    }
    if (d->kept) {
        *presult = Py_NewRef(d->value != NULL ? d->value : Py_None);
        return PYGEN_RETURN;
    }
    *presult = d->value != NULL ? d->value : Py_NewRef(Py_None);
    d->value = NULL;
    return PYGEN_RETURN;
}

/* Ends iteration with v (stolen): a bare NULL for None, else a StopIteration instance (so
 * tuples and exceptions arrive intact). */
static inline PyObject *done_stop(FsDone *d, PyObject *v)
{
    if (v == Py_None) {
        Py_DECREF(v);
        return NULL;
    }
    PyObject *stop = d->stop;
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
    stop = fs_stop_iteration_new(d->st, v);
    if (stop == NULL) {
        return NULL;
    }
#ifndef Py_GIL_DISABLED
    if (d->stop == NULL) {
        d->stop = Py_NewRef(stop);
    }
#endif
    PyErr_SetRaisedException(stop);
    return NULL;
}

static PyObject *done_send(PyObject *self, PyObject *arg)
{
    PyObject *v = NULL;
    if (done_am_send(self, arg, &v) == PYGEN_ERROR) {
        return NULL;
    }
    return done_stop((FsDone *)self, v);
}

/* What an awaiting SEND calls: the common answer (unspent, not kept, no refusal) without the
 * checks of done_am_send. */
static PyObject *done_iternext(PyObject *self)
{
    FsDone *d = (FsDone *)self;
    if ((d->spent | d->kept) || d->exc != NULL) {
        return done_send(self, Py_None);
    }
    d->spent = 1;
    PyObject *v = d->value;
    if (v == NULL) {
        return NULL;    /* a bare NULL ends iteration with None */
    }
    d->value = NULL;
    return done_stop(d, v);
}

/* Thrown in before it ran: the thrown exception surfaces and the answer is dropped, as for a
 * coroutine that never started. */
static PyObject *done_throw(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    FsDone *d = (FsDone *)self;
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "throw expected 1 to 3 arguments");
        return NULL;
    }
    if (!d->kept) {
        d->spent = 1;
        Py_CLEAR(d->value);
    }
    Py_CLEAR(d->exc);
    return fs_raise_thrown(args, nargs);
}

static PyObject *done_close(PyObject *self, PyObject *Py_UNUSED(unused))
{
    FsDone *d = (FsDone *)self;
    if (!d->kept) {
        d->spent = 1;
        Py_CLEAR(d->value);
    }
    Py_CLEAR(d->exc);
    Py_RETURN_NONE;
}

static int done_traverse(PyObject *self, visitproc visit, void *arg)
{
    FsDone *d = (FsDone *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(d->value);
    Py_VISIT(d->exc);
    Py_VISIT(d->fn);
    Py_VISIT(d->stop);
    return 0;
}

static int done_clear(PyObject *self)
{
    FsDone *d = (FsDone *)self;
    Py_CLEAR(d->value);
    Py_CLEAR(d->exc);
    Py_CLEAR(d->fn);
    Py_CLEAR(d->stop);
    return 0;
}

static void done_dealloc(PyObject *self)
{
    FsDone *d = (FsDone *)self;
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    fs_state *st = d->st;
    if (st->done_free_count < DONE_FREELIST && tp == st->Done_Type) {
        Py_CLEAR(d->value);
        Py_CLEAR(d->exc);
        Py_CLEAR(d->fn);
        PyObject *stop = d->stop;
        if (stop != NULL) {
            if (Py_REFCNT(stop) == 1) {
                /* Kept for the next answer (done_stop scrubs the rest); its value goes now,
                 * so nothing outlives the await. */
                Py_CLEAR(((PyStopIterationObject *)stop)->value);
            }
            else {
                Py_CLEAR(d->stop);
            }
        }
        /* Recycled untracked and clear but for its stop (fs_done_answer sets only the value);
         * PyObject_Init on reuse takes the type reference back. */
        d->spent = 0;
        d->kept = 0;
        d->value = (PyObject *)st->done_freelist;
        st->done_freelist = d;
        st->done_free_count++;
    }
    else {
        done_clear(self);
        tp->tp_free(self);
    }
    Py_DECREF(tp);
}

/* Frees the recycled Done objects (module clear). */
static void done_freelist_clear(fs_state *st)
{
    while (st->done_freelist != NULL) {
        FsDone *d = st->done_freelist;
        st->done_freelist = (FsDone *)d->value;
        Py_CLEAR(d->stop);
        PyObject_GC_Del(d);
    }
    st->done_free_count = 0;
}

int fs_done_traverse(fs_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->Done_Type);
    Py_VISIT(st->StopIteration_Type);
    Py_VISIT(st->ready_none);
    return 0;
}

void fs_done_clear(fs_state *st)
{
    Py_CLEAR(st->ready_none);       /* first: it goes to the free list */
    done_freelist_clear(st);        /* then: recycled Done objects give back their stops */
    stop_freelist_clear(st);
    Py_CLEAR(st->Done_Type);
    Py_CLEAR(st->StopIteration_Type);
}

static PyObject *done_repr(PyObject *self)
{
    FsDone *d = (FsDone *)self;
    return PyUnicode_FromFormat("<failsafe done awaitable%s%s>",
                                d->exc != NULL ? " raising" : "", d->spent ? " (awaited)" : "");
}

/* __name__ / __qualname__ of the function whose call it answers, for task reprs and debuggers. */
static PyObject *done_get_name_attr(PyObject *self, void *closure)
{
    FsDone *d = (FsDone *)self;
    if (d->fn != NULL) {
        PyObject *v = PyObject_GetAttrString(d->fn, (const char *)closure);
        if (v != NULL || !PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return v;
        }
        PyErr_Clear();
    }
    return PyUnicode_FromString("Done");
}

/* A done call never runs: no frame, nothing awaited, never running or suspended. */
static PyObject *done_get_none(PyObject *Py_UNUSED(self), void *Py_UNUSED(closure))
{
    Py_RETURN_NONE;
}

static PyObject *done_get_false(PyObject *Py_UNUSED(self), void *Py_UNUSED(closure))
{
    Py_RETURN_FALSE;
}

static PyGetSetDef done_getset[] = {
    {"__name__", done_get_name_attr, NULL, "name of the function called", "__name__"},
    {"__qualname__", done_get_name_attr, NULL, "qualified name of the function called",
     "__qualname__"},
    {"cr_frame", done_get_none, NULL, "None: a done call runs no more", NULL},
    {"cr_await", done_get_none, NULL, "None: a done call awaits nothing", NULL},
    {"cr_code", done_get_none, NULL, "None: a done call runs no code", NULL},
    {"cr_running", done_get_false, NULL, "False", NULL},
    {"cr_suspended", done_get_false, NULL, "False", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef done_methods[] = {
    {"send", done_send, METH_O, "send(None) -> StopIteration with the answer, or the refusal."},
    {"throw", (PyCFunction)(void (*)(void))done_throw, METH_FASTCALL, "throw(exc) -> raises exc."},
    {"close", done_close, METH_NOARGS, "close() -> drops the answer."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot done_slots[] = {
    {Py_am_await, PyObject_SelfIter},
    {Py_am_send, done_am_send},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, done_iternext},
    {Py_tp_methods, done_methods},
    {Py_tp_getset, done_getset},
    {Py_tp_traverse, done_traverse},
    {Py_tp_clear, done_clear},
    {Py_tp_dealloc, done_dealloc},
    {Py_tp_repr, done_repr},
    {0, NULL},
};

static PyType_Spec done_spec = {
    .name = "failsafe._native.Done",
    .basicsize = sizeof(FsDone),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = done_slots,
};

int fs_done_setup(PyObject *module, fs_state *st)
{
    st->StopIteration_Type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &stop_spec, PyExc_StopIteration);
    st->Done_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &done_spec, NULL);
    if (st->StopIteration_Type == NULL || st->Done_Type == NULL
        || PyModule_AddType(module, st->Done_Type) < 0) {
        return -1;
    }
    st->ready_none = fs_done_new(st, NULL);
    if (st->ready_none == NULL) {
        return -1;
    }
    ((FsDone *)st->ready_none)->kept = 1;
    return 0;
}
