/* FsCall: the awaitable that drives a guarded call's inner awaitable and lets its policy observe
 * the outcome (start, finish, abandon), counting its latency when timed. */
#include "fs_binding.h"
#include "call.h"
#include "done.h"
#include "fs_lathist.h"

#include <stddef.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* FsCall: drives the inner awaitable, reports its end to the policy */

/* Drops what the call holds. Every path that marks a call FS_CALL_DONE calls it (the dealloc
 * relies on it). */
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
    if (c->extra & (FS_CX_TIMED | FS_CX_PIN)) {
        c->extra &= (uint8_t)~(FS_CX_TIMED | FS_CX_PIN);
        Py_CLEAR(c->lat);
        if (c->pin != NULL) {
            fs_keyed_unpin(c->pin);
            Py_CLEAR(c->pin);
        }
    }
}

/* Counts the end of the timed call c (FS_CX_TIMED) with outcome into its histogram, once. */
static void call_count(FsCall *c, int outcome)
{
    PyObject *lat = c->lat;
    c->lat = NULL;
    c->extra &= (uint8_t)~FS_CX_TIMED;
    fs_latency_count(lat, outcome, c->t0_ns, fs_now_ns(c->policy->st));
    Py_DECREF(lat);
}

/* Counts the end of the timed call c by the pending exception (kept pending). */
static void call_count_raised(FsCall *c)
{
    PyObject *exc = PyErr_GetRaisedException();
    call_count(c, fs_latency_outcome(c->policy->st, exc));
    PyErr_SetRaisedException(exc);
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

/* call_settle's answer when the call goes on: drive c->inner again, sending None. */
#define FS_SETTLE_DRIVE 2

/* The end of a handed-over awaitable (FS_CALL_HANDOFF) with result or exc (owned): the call's. */
static PySendResult call_settle_handoff(FsCall *c, PyObject *result, PyObject *exc,
                                        PyObject **presult)
{
    c->state = FS_CALL_DONE;
    if (c->extra & FS_CX_TIMED) {
        if ((c->extra & FS_CX_BLOCK) && exc == NULL) {
            /* A block's entry admitted: its timing goes on until the block's __aexit__. */
            fs_latency_block_open(c->policy, c->lat, c->t0_ns);
        }
        else {
            call_count(c, exc == NULL ? FS_LAT_SUCCESS : fs_latency_outcome(c->policy->st, exc));
        }
    }
    call_release(c);
    if (exc != NULL) {
        PyErr_SetRaisedException(exc);
        return PYGEN_ERROR;
    }
    *presult = result;
    return PYGEN_RETURN;
}

/* What the finish hook's verdict next (all but FS_NEXT_AGAIN) with *out makes of the call: a
 * PySendResult, or FS_SETTLE_DRIVE. */
static int call_settle_next(FsCall *c, int next, PyObject *out, PyObject **presult)
{
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
        return FS_SETTLE_DRIVE;
    }
    c->state = FS_CALL_DONE;
    if (next == FS_NEXT_RETURN) {
        if (c->extra & FS_CX_TIMED) {
            call_count(c, FS_LAT_SUCCESS);
        }
        call_release(c);
        *presult = out;
        return PYGEN_RETURN;
    }
    if (c->extra & FS_CX_TIMED) {
        if (next == FS_NEXT_RAISE) {
            call_count(c, fs_latency_outcome(c->policy->st, out));
        }
        else {
            call_count_raised(c);
        }
    }
    call_release(c);
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

/* The inner awaitable ended with result (owned) or exc (owned): a PySendResult for the call's
 * end, or FS_SETTLE_DRIVE when c->inner is a new awaitable to drive. Inline: a re-attempt made
 * at once (FS_NEXT_AGAIN) goes through here and nothing else. */
static inline int call_settle(FsCall *c, PyObject *result, PyObject *exc, PyObject **presult)
{
    if (c->state == FS_CALL_HANDOFF) {
        return call_settle_handoff(c, result, exc, presult);
    }
    PyObject *out = NULL;
    int next = c->policy->ops->finish(c, result, exc, &out);
    Py_XDECREF(result);
    Py_XDECREF(exc);
    if (next == FS_NEXT_AGAIN) {
        Py_SETREF(c->inner, out);
        return FS_SETTLE_DRIVE;
    }
    return call_settle_next(c, next, out, presult);
}

/* Sends arg into c->inner, and None into each awaitable that follows it (a re-attempt, a slow
 * path), until one suspends or the call ends. A loop, not a recursion: re-attempts made at once
 * add no C frames. */
static PySendResult call_drive(FsCall *c, PyObject *arg, PyObject **presult)
{
    for (;;) {
        PyObject *val = NULL;
        PyObject *inner = c->inner;
        /* A coroutine's am_send directly: PyIter_Send's own look-up is one call more. */
        PySendResult r = PyCoro_CheckExact(inner)
                             ? Py_TYPE(inner)->tp_as_async->am_send(inner, arg, &val)
                             : PyIter_Send(inner, arg, &val);
        if (r == PYGEN_NEXT) {
            *presult = val;
            return PYGEN_NEXT;
        }
        int s = r == PYGEN_RETURN ? call_settle(c, val, NULL, presult)
                                  : call_settle(c, NULL, PyErr_GetRaisedException(), presult);
        if (s != FS_SETTLE_DRIVE) {
            return (PySendResult)s;
        }
        arg = Py_None;
    }
}

/* The inner awaitable ended with result (owned) or exc (owned): settles it, driving on what
 * follows. */
static PySendResult call_finished(FsCall *c, PyObject *result, PyObject *exc, PyObject **presult)
{
    int s = call_settle(c, result, exc, presult);
    return s == FS_SETTLE_DRIVE ? call_drive(c, Py_None, presult) : (PySendResult)s;
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
        if (c->extra & FS_CX_BARE) {
            /* A bare call runs no hooks: it only hands over to what it drives. */
            c->state = FS_CALL_HANDOFF;
            return 0;
        }
        c->state = FS_CALL_RUNNING;
        if (c->policy->ops->start != NULL && c->policy->ops->start(c) < 0) {
            /* Nothing ran yet: end the call with the start error, closing the inner coroutine. */
            if (c->extra & FS_CX_TIMED) {
                call_count_raised(c);   /* a refusal at the start: rejected */
            }
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
         * policy, and no time is counted; whatever comes out passes through. */
        c->extra &= (uint8_t)~FS_CX_TIMED;
        Py_CLEAR(c->lat);
        if (!(c->extra & FS_CX_BARE) && c->policy->ops->abandon != NULL) {
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
    else if (fs_lookup_optional_attr(c->inner, str_throw, &meth) < 0) {
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
        if (fs_lookup_optional_attr(c->inner, c->policy->st->str_close, &close) < 0) {
            Py_CLEAR(res);
        }
        else if (close != NULL) {
            /* 3.13: close() returns the value the coroutine returned on GeneratorExit. */
            Py_SETREF(res, PyObject_CallNoArgs(close));
            Py_DECREF(close);
        }
    }
    if (state != FS_CALL_HANDOFF && !(c->extra & FS_CX_BARE) && c->policy->ops->abandon != NULL) {
        PyObject *err = PyErr_GetRaisedException();
        c->policy->ops->abandon(c);
        PyErr_SetRaisedException(err);
    }
    if ((c->extra & FS_CX_TIMED) && state != FS_CALL_FRESH) {
        call_count(c, FS_LAT_CANCELLED);    /* closed unfinished (a fresh one never ran) */
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
    Py_VISIT(c->pin);
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

/* A call let go unfinished (not FS_CALL_DONE): counted as cancelled when timed, abandoned. */
static void call_abandon_open(FsCall *c)
{
    if ((c->extra & FS_CX_TIMED) && (c->state == FS_CALL_RUNNING || c->state == FS_CALL_HANDOFF)
        && c->policy != NULL) {
        call_count(c, FS_LAT_CANCELLED);    /* let go unfinished: never a failure */
    }
    if ((c->state == FS_CALL_FRESH || c->state == FS_CALL_RUNNING) && c->policy != NULL
        && !(c->extra & FS_CX_BARE) && c->policy->ops->abandon != NULL) {
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
    if (c->state != FS_CALL_DONE) {
        call_abandon_open(c);
        call_release(c);
    }
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
    if (c->state != FS_CALL_DONE) {
        /* Every way into FS_CALL_DONE releases what the call held: only an open one has any. */
        call_abandon_open(c);
        call_release(c);
    }
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

PyObject *fs_call_timed_bare(FsPolicy *p, PyObject *lat, PyObject *aw)
{
    if (aw == NULL) {
        return NULL;
    }
    PyObject *it = fs_awaitable_iter(aw);
    Py_DECREF(aw);
    FsCall *c = it != NULL ? fs_call_new(p) : NULL;
    if (c == NULL) {
        Py_XDECREF(it);
        return NULL;
    }
    c->inner = it;
    c->extra = FS_CX_BARE | FS_CX_TIMED;
    c->lat = Py_NewRef(lat);
    c->t0_ns = fs_now_ns(p->st);
    PyObject_GC_Track(c);
    return (PyObject *)c;
}

PyObject *fs_call_timed_enter(FsPolicy *p, PyObject *lat, PyObject *aw)
{
    PyObject *c = fs_call_timed_bare(p, lat, aw);
    if (c != NULL) {
        ((FsCall *)c)->extra |= FS_CX_BLOCK;
    }
    return c;
}

int fs_call_setup(PyObject *module, fs_state *st)
{
    st->Call_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &call_spec, NULL);
    if (st->Call_Type == NULL) {
        return -1;
    }
    return PyModule_AddType(module, st->Call_Type);
}
