/* The guarded call: Guard (what a decorator returns) and FsCall (the awaitable that lets a
 * policy observe the outcome of one call), plus the parts every policy type shares. */
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

static void series_leave(FsPolicy *p);

void fs_policy_clear(FsPolicy *p)
{
    if (p->series != NULL) {
        series_leave(p);
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

/* ------------------------------------------------------------------------------------------ */
/* FsCall: drives the inner awaitable, reports its end to the policy */

static void call_release(FsCall *c)
{
    Py_CLEAR(c->inner);
    Py_CLEAR(c->fn);
    if (c->args == NULL) {
        for (Py_ssize_t i = 0; i < c->ntotal; i++) {
            Py_CLEAR(c->iargs[i]);
        }
    }
    c->ntotal = 0;
    Py_CLEAR(c->args);
    Py_CLEAR(c->kwnames);
    Py_CLEAR(c->pobj);
}


int fs_call_unpack_args(FsCall *c, PyObject **args, PyObject **kwargs)
{
    PyObject *const *argv = fs_call_argv(c);
    *args = PyTuple_New(c->nargs);
    *kwargs = PyDict_New();
    if (*args == NULL || *kwargs == NULL) {
        goto error;
    }
    for (Py_ssize_t i = 0; i < c->nargs; i++) {
        PyTuple_SET_ITEM(*args, i, Py_NewRef(argv[i]));
    }
    for (Py_ssize_t i = c->nargs; i < c->ntotal; i++) {
        if (PyDict_SetItem(*kwargs, PyTuple_GET_ITEM(c->kwnames, i - c->nargs), argv[i]) < 0) {
            goto error;
        }
    }
    return 0;
error:
    Py_CLEAR(*args);
    Py_CLEAR(*kwargs);
    return -1;
}

PyObject *fs_awaitable_iter(PyObject *aw)
{
    if (PyCoro_CheckExact(aw) || PyGen_CheckExact(aw)) {
        return Py_NewRef(aw);
    }
    PyAsyncMethods *am = Py_TYPE(aw)->tp_as_async;
    if (am == NULL || am->am_await == NULL) {
        PyErr_Format(PyExc_TypeError, "expected an awaitable, got %.200s", Py_TYPE(aw)->tp_name);
        return NULL;
    }
    return am->am_await(aw);
}

static PySendResult call_drive(FsCall *c, PyObject *arg, PyObject **presult);

/* 1 and *res set when obj has the attribute, 0 when not, -1 on another error. */
static int lookup_optional_attr(PyObject *obj, PyObject *name, PyObject **res)
{
#if PY_VERSION_HEX >= 0x030D0000
    return PyObject_GetOptionalAttr(obj, name, res);
#else
    return _PyObject_LookupAttr(obj, name, res);
#endif
}

/* The inner awaitable ended with result (owned) or exc (owned). */
static PySendResult call_finished(FsCall *c, PyObject *result, PyObject *exc, PyObject **presult)
{
    if (c->state == FS_CALL_HANDOFF) {
        c->state = FS_CALL_DONE;
        call_release(c);
        if (exc != NULL) {
            PyErr_SetRaisedException(exc);
            return PYGEN_ERROR;
        }
        *presult = result;
        return PYGEN_RETURN;
    }
    PyObject *out = NULL;
    int next = c->policy->ops->finish(c, result, exc, &out);
    Py_XDECREF(result);
    Py_XDECREF(exc);
    if (next == FS_NEXT_AGAIN) {
        Py_SETREF(c->inner, out);
        return call_drive(c, Py_None, presult);
    }
    if (next == FS_NEXT_CONTINUE) {
        PyObject *it = fs_awaitable_iter(out);
        Py_DECREF(out);
        if (it == NULL) {
            c->state = FS_CALL_DONE;
            call_release(c);
            return PYGEN_ERROR;
        }
        Py_SETREF(c->inner, it);
        c->state = FS_CALL_HANDOFF;
        return call_drive(c, Py_None, presult);
    }
    c->state = FS_CALL_DONE;
    call_release(c);
    if (next == FS_NEXT_RETURN) {
        *presult = out;
        return PYGEN_RETURN;
    }
    if (next == FS_NEXT_RAISE) {
        PyErr_SetRaisedException(out);
    }
    if (PyErr_ExceptionMatches(PyExc_StopIteration)) {
        PyObject *si = PyErr_GetRaisedException();
        PyErr_SetString(PyExc_RuntimeError, "coroutine raised StopIteration");
        PyObject *rt = PyErr_GetRaisedException();
        PyException_SetCause(rt, Py_NewRef(si));
        PyException_SetContext(rt, si);
        PyErr_SetRaisedException(rt);
    }
    return PYGEN_ERROR;
}

static int call_begin(FsCall *c, PyObject *arg)
{
    if (c->state == FS_CALL_DONE) {
        PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
        return -1;
    }
    if (c->state == FS_CALL_FRESH) {
        if (arg != Py_None) {
            PyErr_SetString(PyExc_TypeError,
                            "can't send non-None value to a just-started coroutine");
            return -1;
        }
        c->state = FS_CALL_RUNNING;
        if (c->policy->ops->start != NULL && c->policy->ops->start(c) < 0) {
            /* Nothing ran yet: end the call with the start error, closing the inner coroutine. */
            PyObject *err = PyErr_GetRaisedException();
            c->state = FS_CALL_DONE;
            if (c->policy->ops->abandon != NULL) {
                c->policy->ops->abandon(c);
            }
            /* Close the never-started coroutine: no "never awaited" warning. */
            PyObject *r = PyObject_CallMethod(c->inner, "close", NULL);
            if (r == NULL) {
                PyErr_WriteUnraisable(c->inner);
            }
            Py_XDECREF(r);
            call_release(c);
            PyErr_SetRaisedException(err);
            return -1;
        }
    }
    return 0;
}

static PySendResult call_drive(FsCall *c, PyObject *arg, PyObject **presult)
{
    PyObject *val = NULL;
    PySendResult r = PyIter_Send(c->inner, arg, &val);
    if (r == PYGEN_NEXT) {
        *presult = val;
        return PYGEN_NEXT;
    }
    if (r == PYGEN_RETURN) {
        return call_finished(c, val, NULL, presult);
    }
    return call_finished(c, NULL, PyErr_GetRaisedException(), presult);
}

static int call_refuse_running(FsCall *c)
{
    if (c->running) {
        PyErr_SetString(PyExc_ValueError, "coroutine already executing");
        return -1;
    }
    return 0;
}

static PySendResult call_am_send(PyObject *self, PyObject *arg, PyObject **presult)
{
    FsCall *c = (FsCall *)self;
    *presult = NULL;
    if (call_refuse_running(c) < 0) {
        return PYGEN_ERROR;
    }
    c->running = 1;
    if (call_begin(c, arg) < 0) {
        c->running = 0;
        return PYGEN_ERROR;
    }
    PySendResult r = call_drive(c, arg, presult);
    c->running = 0;
    return r;
}

/* Raises StopIteration(value), wrapping the value so tuples and exceptions survive intact. */
static void set_stop_iteration(PyObject *value)
{
    PyObject *e = PyObject_CallOneArg(PyExc_StopIteration, value);
    if (e != NULL) {
        PyErr_SetRaisedException(e);
    }
}

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

static PyObject *send_result(fs_state *st, PySendResult r, PyObject *res, int from_await)
{
    if (r == PYGEN_NEXT) {
        return res;
    }
    if (r == PYGEN_RETURN) {
        if (from_await) {
            if (res == Py_None) {
                Py_DECREF(res);
                return NULL;    /* a bare NULL ends iteration with value None */
            }
            PyObject *e = fs_stop_iteration_new(st, res);
            if (e != NULL) {
                PyErr_SetRaisedException(e);
            }
            return NULL;
        }
        set_stop_iteration(res);
        Py_DECREF(res);
    }
    return NULL;
}

static PyObject *call_iternext(PyObject *self)
{
    PyObject *res = NULL;
    PySendResult r = call_am_send(self, Py_None, &res);
    return send_result(((FsCall *)self)->policy->st, r, res, 1);
}

static PyObject *call_send(PyObject *self, PyObject *arg)
{
    PyObject *res = NULL;
    PySendResult r = call_am_send(self, arg, &res);
    return send_result(NULL, r, res, 0);
}

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

static PyObject *call_throw_impl(FsCall *c, PyObject *const *args, Py_ssize_t nargs);
static PyObject *call_throw(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    FsCall *c = (FsCall *)self;
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "throw expected 1 to 3 arguments");
        return NULL;
    }
    if (call_refuse_running(c) < 0) {
        return NULL;
    }
    if (c->state == FS_CALL_DONE || c->inner == NULL) {
        /* Finished: the thrown exception surfaces as is, as for a finished coroutine. */
        return fs_raise_thrown(args, nargs);
    }
    if (c->state == FS_CALL_FRESH) {
        /* Thrown in before it ever ran: the function's body never runs, so neither does the
         * policy; whatever comes out passes through. */
        if (c->policy->ops->abandon != NULL) {
            c->policy->ops->abandon(c);
        }
        c->state = FS_CALL_HANDOFF;
    }
    c->running = 1;
    PyObject *r_ = call_throw_impl(c, args, nargs);
    c->running = 0;
    return r_;
}

static PyObject *call_throw_impl(FsCall *c, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *res = NULL;
    PyObject *meth = NULL;
    PyObject *str_throw = c->policy->st->str_throw;
    if (PyCoro_CheckExact(c->inner) || PyGen_CheckExact(c->inner)) {
        /* The common case: no bound method object. */
        PyObject *stack[4] = {c->inner, args[0], nargs > 1 ? args[1] : NULL,
                              nargs > 2 ? args[2] : NULL};
        res = PyObject_VectorcallMethod(str_throw, stack, (size_t)nargs + 1, NULL);
        if (res != NULL) {
            return res;
        }
    }
    else if (lookup_optional_attr(c->inner, str_throw, &meth) < 0) {
        return NULL;
    }
    else if (meth != NULL) {
        res = PyObject_Vectorcall(meth, args, (size_t)nargs, NULL);
        Py_DECREF(meth);
        if (res != NULL) {
            return res;     /* the inner awaitable caught it and yielded again */
        }
    }
    else {
        /* An awaitable without throw: the exception ends it. */
        PyErr_Clear();
        if (PyExceptionInstance_Check(args[0])) {
            PyErr_SetObject((PyObject *)Py_TYPE(args[0]), args[0]);
        }
        else {
            PyErr_SetObject(args[0], nargs > 1 && args[1] != Py_None ? args[1] : NULL);
        }
    }
    PyObject *exc = PyErr_GetRaisedException();
    PyObject *out = NULL;
    PySendResult r;
    if (exc != NULL && PyErr_GivenExceptionMatches(exc, PyExc_StopIteration)) {
        PyObject *value = PyObject_GetAttrString(exc, "value");
        Py_DECREF(exc);
        if (value == NULL) {
            return NULL;
        }
        r = call_finished(c, value, NULL, &out);
    }
    else {
        r = call_finished(c, NULL, exc, &out);
    }
    return send_result(NULL, r, out, 0);
}

static PyObject *call_close(PyObject *self, PyObject *Py_UNUSED(unused))
{
    FsCall *c = (FsCall *)self;
    if (call_refuse_running(c) < 0) {
        return NULL;
    }
    int state = c->state;
    if (state == FS_CALL_DONE) {
        Py_RETURN_NONE;
    }
    c->state = FS_CALL_DONE;
    c->running = 1;
    PyObject *res = Py_NewRef(Py_None);
    if (c->inner != NULL) {
        PyObject *close = NULL;
        if (lookup_optional_attr(c->inner, c->policy->st->str_close, &close) < 0) {
            Py_CLEAR(res);
        }
        else if (close != NULL) {
            /* 3.13: close() returns the value the coroutine returned on GeneratorExit. */
            Py_SETREF(res, PyObject_CallNoArgs(close));
            Py_DECREF(close);
        }
    }
    if (state != FS_CALL_HANDOFF && c->policy->ops->abandon != NULL) {
        PyObject *err = PyErr_GetRaisedException();
        c->policy->ops->abandon(c);
        PyErr_SetRaisedException(err);
    }
    call_release(c);
    c->running = 0;
    return res;
}

static PyObject *call_await(PyObject *self)
{
    FsCall *c = (FsCall *)self;
    if (c->state == FS_CALL_RUNNING || c->state == FS_CALL_HANDOFF) {
        PyErr_SetString(PyExc_RuntimeError, "coroutine is being awaited already");
        return NULL;
    }
    return Py_NewRef(self);
}

static int call_traverse(PyObject *self, visitproc visit, void *arg)
{
    FsCall *c = (FsCall *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(c->inner);
    Py_VISIT(c->policy);
    Py_VISIT(c->fn);
    Py_VISIT(c->args);
    Py_VISIT(c->kwnames);
    Py_VISIT(c->pobj);
    if (c->args == NULL) {
        for (Py_ssize_t i = 0; i < c->ntotal; i++) {
            Py_VISIT(c->iargs[i]);
        }
    }
    if (c->policy != NULL && c->policy->ops->traverse != NULL) {
        return c->policy->ops->traverse(c, visit, arg);
    }
    return 0;
}

static void call_abandon_if_open(FsCall *c)
{
    if ((c->state == FS_CALL_FRESH || c->state == FS_CALL_RUNNING) && c->policy != NULL
        && c->policy->ops->abandon != NULL) {
        PyObject *err = PyErr_GetRaisedException();
        c->state = FS_CALL_DONE;
        c->policy->ops->abandon(c);
        PyErr_SetRaisedException(err);
    }
    c->state = FS_CALL_DONE;
}

static int call_clear(PyObject *self)
{
    FsCall *c = (FsCall *)self;
    call_abandon_if_open(c);
    call_release(c);
    Py_CLEAR(c->policy);
    return 0;
}

static void call_dealloc(PyObject *self)
{
    FsCall *c = (FsCall *)self;
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (c->weakreflist != NULL) {
        PyObject_ClearWeakRefs(self);
    }
    call_abandon_if_open(c);
    call_release(c);
    fs_state *st = c->policy != NULL ? c->policy->st : NULL;
    Py_CLEAR(c->policy);
    if (st != NULL && st->call_free_count < FS_CALL_FREELIST && tp == st->Call_Type) {
        /* Recycled untracked; PyObject_Init on reuse takes the type reference back. */
        c->inner = (PyObject *)st->call_freelist;
        st->call_freelist = c;
        st->call_free_count++;
    }
    else {
        tp->tp_free(self);
    }
    Py_DECREF(tp);
}

void fs_call_freelist_clear(fs_state *st)
{
    while (st->call_freelist != NULL) {
        FsCall *c = st->call_freelist;
        st->call_freelist = (FsCall *)c->inner;
        PyObject_GC_Del(c);
    }
    st->call_free_count = 0;
}

static PyObject *call_repr(PyObject *self)
{
    FsCall *c = (FsCall *)self;
    static const char *states[] = {"fresh", "running", "slow path", "done"};
    return PyUnicode_FromFormat("<failsafe call of %R, %s>",
                                c->policy ? c->policy->name : Py_None, states[c->state & 3]);
}

/* __name__ / __qualname__ of the guarded coroutine, for task reprs and debuggers. */
static PyObject *call_get_name_attr(PyObject *self, void *closure)
{
    FsCall *c = (FsCall *)self;
    const char *attr = (const char *)closure;
    if (c->inner != NULL) {
        PyObject *v = PyObject_GetAttrString(c->inner, attr);
        if (v != NULL || !PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return v;
        }
        PyErr_Clear();
    }
    return PyUnicode_FromString("GuardedCall");
}

/* cr_frame / cr_code / cr_suspended: the guarded coroutine's (None or False once done, or for
 * an awaitable that has none), so Task.get_stack(), print_stack() and task reprs show the
 * guarded function where it is suspended. Read only on introspection. */
static PyObject *call_get_inner_attr(PyObject *self, void *closure)
{
    FsCall *c = (FsCall *)self;
    const char *attr = (const char *)closure;
    int is_flag = strcmp(attr, "cr_suspended") == 0;
    if (c->inner != NULL) {
        PyObject *v = PyObject_GetAttrString(c->inner, attr);
        if (v != NULL || !PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return v;
        }
        PyErr_Clear();
    }
    return Py_NewRef(is_flag ? Py_False : Py_None);
}

/* cr_await: what the call awaits now, the guarded coroutine itself (None once done). */
static PyObject *call_get_await(PyObject *self, void *Py_UNUSED(closure))
{
    FsCall *c = (FsCall *)self;
    return Py_NewRef(c->inner != NULL && c->state != FS_CALL_FRESH ? c->inner : Py_None);
}

static PyObject *call_get_running(PyObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(((FsCall *)self)->running);
}

static PyGetSetDef call_getset[] = {
    {"__name__", call_get_name_attr, NULL, "name of the guarded coroutine", "__name__"},
    {"__qualname__", call_get_name_attr, NULL, "qualified name of the guarded coroutine",
     "__qualname__"},
    {"cr_frame", call_get_inner_attr, NULL, "frame of the guarded coroutine", "cr_frame"},
    {"cr_code", call_get_inner_attr, NULL, "code of the guarded coroutine", "cr_code"},
    {"cr_suspended", call_get_inner_attr, NULL, "the guarded coroutine is suspended",
     "cr_suspended"},
    {"cr_await", call_get_await, NULL, "the awaitable this call is driving", NULL},
    {"cr_running", call_get_running, NULL, "the call is executing", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef call_members[] = {
    {"__weaklistoffset__", Py_T_PYSSIZET, offsetof(FsCall, weakreflist), Py_READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef call_methods[] = {
    {"send", call_send, METH_O, "send(value) -> next yielded value or StopIteration."},
    {"throw", (PyCFunction)(void (*)(void))call_throw, METH_FASTCALL,
     "throw(exc) -> raise an exception into the guarded coroutine."},
    {"close", call_close, METH_NOARGS, "close() -> raise GeneratorExit inside the coroutine."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot call_slots[] = {
    {Py_am_await, call_await},
    {Py_am_send, call_am_send},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, call_iternext},
    {Py_tp_methods, call_methods},
    {Py_tp_getset, call_getset},
    {Py_tp_members, call_members},
    {Py_tp_traverse, call_traverse},
    {Py_tp_clear, call_clear},
    {Py_tp_dealloc, call_dealloc},
    {Py_tp_repr, call_repr},
    {0, NULL},
};

static PyType_Spec call_spec = {
    .name = "failsafe._native.GuardedCall",
    .basicsize = sizeof(FsCall),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = call_slots,
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
static PyObject *guard_rejected(fs_state *st, PyObject *fn)
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

/* ------------------------------------------------------------------------------------------ */
/* Guard */

/* policy._call_slow(fn, *args, **kwargs): a call that must wait before it may start. */
static PyObject *guard_call_slow(FsGuard *g, PyObject *const *args, size_t nargsf,
                                 PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t total = nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);
    PyObject *small[2 + FS_CALL_INLINE_ARGS];
    PyObject **stack = small;
    if (total + 2 > (Py_ssize_t)(sizeof(small) / sizeof(small[0]))) {
        stack = PyMem_Malloc((size_t)(total + 2) * sizeof(PyObject *));
        if (stack == NULL) {
            return PyErr_NoMemory();
        }
    }
    stack[0] = (PyObject *)g->policy;
    stack[1] = g->fn;
    for (Py_ssize_t i = 0; i < total; i++) {
        stack[2 + i] = args[i];
    }
    PyObject *res = PyObject_VectorcallMethod(g->policy->st->str_call_slow, stack,
                                              (size_t)(nargs + 2), kwnames);
    if (stack != small) {
        PyMem_Free(stack);
    }
    if (res != NULL && Py_IS_TYPE(res, g->policy->st->Rejected_Type)
        && ((FsRejected *)res)->fn == NULL) {
        ((FsRejected *)res)->fn = Py_NewRef(g->fn);     /* refused by the slow path */
    }
    return res;
}

static inline PyObject *guard_call(PyObject *self, PyObject *const *args, size_t nargsf,
                                   PyObject *kwnames)
{
    FsGuard *g = (FsGuard *)self;
    FsPolicy *p = g->policy;
    if (p == NULL || p->st->Call_Type == NULL) {
        /* Cleared by the GC, or called during interpreter shutdown after module teardown. */
        PyErr_SetString(PyExc_RuntimeError, "failsafe guard used after it was cleared");
        return NULL;
    }
    int mode = p->ops->admit(p, args, nargsf, kwnames);
    if (mode <= 0) {
        return mode < 0 ? guard_rejected(p->st, g->fn)
                        : PyObject_Vectorcall(g->fn, args, nargsf, kwnames);
    }
    if (mode == FS_ADMIT_SLOW) {
        return guard_call_slow(g, args, nargsf, kwnames);
    }
    if (mode == FS_ADMIT_VALUE) {
        PyObject *answer = p->st->admit_value;
        p->st->admit_value = NULL;
        return answer;
    }
    /* The call object comes first: if fn fails synchronously (bad arguments), deallocating it
     * runs the policy's abandon hook, which gives back whatever admit took. */
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
    c->timeout_s = 0.0;
    c->pobj = NULL;
    c->pword = 0;
    memset(&c->entry, 0, sizeof(c->entry));
    fs_heap_node_init(&c->entry.node);
    if (p->flags & FS_POL_KEEP_ARGS) {
        Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
        Py_ssize_t total = nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);
        if (total > FS_CALL_INLINE_ARGS) {
            PyObject *t = PyTuple_New(total);
            if (t == NULL) {
                Py_DECREF(c);
                return NULL;
            }
            for (Py_ssize_t i = 0; i < total; i++) {
                PyTuple_SET_ITEM(t, i, Py_NewRef(args[i]));
            }
            c->args = t;
        }
        else {
            for (Py_ssize_t i = 0; i < total; i++) {
                c->iargs[i] = Py_NewRef(args[i]);
            }
        }
        c->ntotal = total;
        c->fn = Py_NewRef(g->fn);
        c->kwnames = Py_XNewRef(kwnames);
        c->nargs = nargs;
    }
    if (p->flags & FS_POL_NEEDS_T0) {
        c->t0_ns = fs_now_ns(st);
    }
    PyObject_GC_Track(c);
    if (p->ops->init_call != NULL && p->ops->init_call(c) < 0) {
        /* A refusal decided here (a listener run by admit used the policy in between) is
         * raised where the call is awaited, as admit's are. */
        Py_DECREF(c);
        return guard_rejected(st, g->fn);
    }
    PyObject *coro = PyObject_Vectorcall(g->fn, args, nargsf, kwnames);
    if (coro != NULL && !PyCoro_CheckExact(coro)) {
        /* Another awaitable (a Future, an object with __await__): drive its iterator. */
        Py_SETREF(coro, fs_awaitable_iter(coro));
    }
    if (coro == NULL) {
        Py_DECREF(c);
        return NULL;
    }
    c->inner = coro;
    return (PyObject *)c;
}

static PyObject *guard_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
                                  PyObject *kwnames)
{
    PyObject *aw = guard_call(self, args, nargsf, kwnames);
    FsPolicy *p = ((FsGuard *)self)->policy;
    return aw == NULL || p == NULL || p->latency == NULL ? aw : fs_latency_wrap(p, aw);
}

static PyObject *guard_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *fn, *policy;
    static char *kwlist[] = {"fn", "policy", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:Guard", kwlist, &fn, &policy)) {
        return NULL;
    }
    fs_state *st = fs_state_from_type(type);
    if (st == NULL) {
        return NULL;
    }
    if (!PyCallable_Check(fn)) {
        PyErr_Format(PyExc_TypeError, "fn must be callable, not %.200s", Py_TYPE(fn)->tp_name);
        return NULL;
    }
    if (!fs_is_policy(st, policy)) {
        PyErr_Format(PyExc_TypeError, "policy must be a failsafe policy, not %.200s", Py_TYPE(policy)->tp_name);
        return NULL;
    }
    FsGuard *g = (FsGuard *)type->tp_alloc(type, 0);
    if (g == NULL) {
        return NULL;
    }
    g->fn = Py_NewRef(fn);
    g->policy = (FsPolicy *)Py_NewRef(policy);
    g->vectorcall = guard_vectorcall;
    return (PyObject *)g;
}

static PyObject *guard_descr_get(PyObject *self, PyObject *obj, PyObject *Py_UNUSED(type))
{
    if (obj == NULL || obj == Py_None) {
        return Py_NewRef(self);
    }
    return PyMethod_New(self, obj);
}

static int guard_traverse(PyObject *self, visitproc visit, void *arg)
{
    FsGuard *g = (FsGuard *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(g->fn);
    Py_VISIT(g->policy);
    Py_VISIT(g->dict);
    return 0;
}

static int guard_clear(PyObject *self)
{
    FsGuard *g = (FsGuard *)self;
    Py_CLEAR(g->fn);
    Py_CLEAR(g->policy);
    Py_CLEAR(g->dict);
    return 0;
}

static void guard_dealloc(PyObject *self)
{
    FsGuard *g = (FsGuard *)self;
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (g->weakreflist != NULL) {
        PyObject_ClearWeakRefs(self);
    }
    guard_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *guard_repr(PyObject *self)
{
    FsGuard *g = (FsGuard *)self;
    if (g->policy == NULL || g->fn == NULL) {
        return PyUnicode_FromString("<failsafe guard (cleared)>");
    }
    return PyUnicode_FromFormat("<failsafe guard %R of %R>", g->policy->name, g->fn);
}

/* `async with fn:` is the block form of fn's policy: these hand over to the policy's own
 * __aenter__ / __aexit__ (TypeError for a policy without a block form). */
static PyObject *guard_policy_method(PyObject *self, const char *name, PyObject *const *args,
                                     Py_ssize_t nargs)
{
    FsGuard *g = (FsGuard *)self;
    if (g->policy == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "failsafe guard used after it was cleared");
        return NULL;
    }
    PyObject *str = PyUnicode_InternFromString(name);
    if (str == NULL) {
        return NULL;
    }
    PyObject *meth = NULL;
    int found = lookup_optional_attr((PyObject *)Py_TYPE(g->policy), str, &meth);
    Py_XDECREF(meth);
    PyObject *res = NULL;
    if (found == 0) {
        PyErr_Format(PyExc_TypeError,
                     "%.200s policies have no async with form, so neither has their guard",
                     Py_TYPE(g->policy)->tp_name);
    }
    else if (found > 0) {
        PyObject *stack[4] = {(PyObject *)g->policy, NULL, NULL, NULL};
        for (Py_ssize_t i = 0; i < nargs && i < 3; i++) {
            stack[1 + i] = args[i];
        }
        res = PyObject_VectorcallMethod(str, stack, (size_t)(1 + (nargs < 3 ? nargs : 3)), NULL);
    }
    Py_DECREF(str);
    return res;
}

static PyObject *guard_aenter(PyObject *self, PyObject *Py_UNUSED(unused))
{
    return guard_policy_method(self, "__aenter__", NULL, 0);
}

static PyObject *guard_aexit(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "__aexit__ takes 3 arguments");
        return NULL;
    }
    return guard_policy_method(self, "__aexit__", args, nargs);
}

static PyMethodDef guard_methods[] = {
    {"__aenter__", guard_aenter, METH_NOARGS, "Enters the policy's async with form."},
    {"__aexit__", (PyCFunction)(void (*)(void))guard_aexit, METH_FASTCALL,
     "Leaves the policy's async with form."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef guard_members[] = {
    {"policy", Py_T_OBJECT_EX, offsetof(FsGuard, policy), Py_READONLY,
     "the policy guarding the calls"},
    {"_fn", Py_T_OBJECT_EX, offsetof(FsGuard, fn), Py_READONLY, "the guarded callable"},
    {"__dictoffset__", Py_T_PYSSIZET, offsetof(FsGuard, dict), Py_READONLY, NULL},
    {"__weaklistoffset__", Py_T_PYSSIZET, offsetof(FsGuard, weakreflist), Py_READONLY, NULL},
    {"__vectorcalloffset__", Py_T_PYSSIZET, offsetof(FsGuard, vectorcall), Py_READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef guard_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot guard_slots[] = {
    {Py_tp_new, guard_new},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_descr_get, guard_descr_get},
    {Py_tp_members, guard_members},
    {Py_tp_methods, guard_methods},
    {Py_tp_getset, guard_getset},
    {Py_tp_traverse, guard_traverse},
    {Py_tp_clear, guard_clear},
    {Py_tp_dealloc, guard_dealloc},
    {Py_tp_repr, guard_repr},
    {0, NULL},
};

static PyType_Spec guard_spec = {
    .name = "failsafe._native.Guard",
    .basicsize = sizeof(FsGuard),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .slots = guard_slots,
};

/* ------------------------------------------------------------------------------------------ */
/* Series: the metrics of every component sharing one name and pattern (failsafe._core keeps one
 * per pair). Members are linked through their headers (borrowed; each member holds the series
 * strongly); a member leaving (deallocated) adds its counters to `retired`, so read() never goes
 * backwards. Holds no Python references: not GC-tracked. */

typedef struct FsSeries {
    PyObject_HEAD
    FsPolicy *head;                         /* live members, borrowed */
    Py_ssize_t live;
    uint64_t retired[FS_MAX_COUNTERS];      /* counts of the members that are gone */
} FsSeries;

static void series_leave(FsPolicy *p)
{
    FsSeries *s = p->series;
    for (int i = 0; i < FS_MAX_COUNTERS; i++) {
        s->retired[i] += p->counters[i];
    }
    if (p->series_prev != NULL) {
        p->series_prev->series_next = p->series_next;
    }
    else {
        s->head = p->series_next;
    }
    if (p->series_next != NULL) {
        p->series_next->series_prev = p->series_prev;
    }
    s->live--;
    p->series = NULL;
    p->series_prev = p->series_next = NULL;
    Py_DECREF(s);
}

/* attach(policy): makes policy a member. Joining the series it is in already does nothing; a
 * component belongs to one series for life (ValueError otherwise), so no series loses counts. */
static PyObject *series_attach(PyObject *self, PyObject *obj)
{
    FsSeries *s = (FsSeries *)self;
    fs_state *st = fs_state_from_type(Py_TYPE(self));
    if (st == NULL) {
        return NULL;
    }
    if (!fs_is_policy(st, obj)) {
        PyErr_Format(PyExc_TypeError, "attach() takes a policy, not %s", Py_TYPE(obj)->tp_name);
        return NULL;
    }
    FsPolicy *p = (FsPolicy *)obj;
    if (p->series == s) {
        Py_RETURN_NONE;
    }
    if (p->series != NULL) {
        PyErr_SetString(PyExc_ValueError, "the component reports to another series already");
        return NULL;
    }
    p->series = (FsSeries *)Py_NewRef(self);
    p->series_prev = NULL;
    p->series_next = s->head;
    if (s->head != NULL) {
        s->head->series_prev = p;
    }
    s->head = p;
    s->live++;
    Py_RETURN_NONE;
}

/* read(): per counter, the retired counts plus those of every live member. */
static PyObject *series_read(PyObject *self, PyObject *Py_UNUSED(unused))
{
    FsSeries *s = (FsSeries *)self;
    uint64_t sum[FS_MAX_COUNTERS];
    memcpy(sum, s->retired, sizeof(sum));
    for (FsPolicy *p = s->head; p != NULL; p = p->series_next) {
        for (int i = 0; i < FS_MAX_COUNTERS; i++) {
            sum[i] += p->counters[i];
        }
    }
    PyObject *t = PyTuple_New(FS_MAX_COUNTERS);
    if (t == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < FS_MAX_COUNTERS; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(sum[i]);
        if (v == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, v);
    }
    return t;
}

static PyObject *series_get_live(PyObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(((FsSeries *)self)->live);
}

static void series_dealloc(PyObject *self)
{
    /* Members hold the series strongly: none is left here. */
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef series_methods[] = {
    {"attach", series_attach, METH_O, "attach(policy): the policy reports to this series"},
    {"read", series_read, METH_NOARGS, "the summed counters of members live and gone"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef series_getset[] = {
    {"live", series_get_live, NULL, "number of live members", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot series_slots[] = {
    {Py_tp_doc, "Series(): summed counters of the components sharing a name and pattern."},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_methods, series_methods},
    {Py_tp_getset, series_getset},
    {Py_tp_dealloc, series_dealloc},
    {0, NULL},
};

static PyType_Spec series_spec = {
    .name = "failsafe._native.Series",
    .basicsize = sizeof(FsSeries),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = series_slots,
};

int fs_guard_setup(PyObject *module, fs_state *st)
{
    st->Call_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &call_spec, NULL);
    if (st->Call_Type == NULL) {
        return -1;
    }
    st->Guard_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &guard_spec, NULL);
    if (st->Guard_Type == NULL) {
        return -1;
    }
    st->StopIteration_Type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &stop_spec, PyExc_StopIteration);
    if (st->StopIteration_Type == NULL) {
        return -1;
    }
    st->Rejected_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &rejected_spec, NULL);
    if (st->Rejected_Type == NULL) {
        return -1;
    }
    if (PyModule_AddType(module, st->Guard_Type) < 0
        || PyModule_AddType(module, st->Call_Type) < 0
        || PyModule_AddType(module, st->Rejected_Type) < 0) {
        return -1;
    }
    /* The module's dict keeps Series alive; its methods find the state through the type. */
    PyObject *series = PyType_FromModuleAndSpec(module, &series_spec, NULL);
    if (series == NULL) {
        return -1;
    }
    int rc = PyModule_AddType(module, (PyTypeObject *)series);
    Py_DECREF(series);
    return rc;
}
