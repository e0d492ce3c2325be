/* FailFast: the fail-fast policy type. The latch itself is the core's fs_failfast; this file
 * admits or rejects calls by it (and by an optional predicate on the call's arguments), feeds it
 * each observed outcome, counts transitions and rejections, and reports them to listeners.
 * An async predicate is awaited by the Python subclass (`_call_slow`), which uses the same
 * methods (`_check_open`, `_reject`, `_exit`) as the `async with` form. */
#include "fs_binding.h"

#include "fs_failfast.h"

#include <stddef.h>

enum { FF_OPENED = 0, FF_CLOSED = 1, FF_REJECTED = 2 };
static const char *const ff_metrics[] = {"opened", "closed", "rejected", NULL};

typedef struct FsFailFast {
    FsPolicy base;
    fs_failfast ff;
    PyObject *on;           /* tuple of exception classes counted as failures, or NULL */
    PyObject *on_pred;      /* predicate over an exception (instead of on), or NULL */
    PyObject *predicate;    /* predicate over the call's arguments: truthy rejects; or NULL */
    int pred_async;         /* the predicate must be awaited: admission goes to Python */
    int observe;            /* failures can open the latch: calls are wrapped to see outcomes */
    int shared;             /* a store shares the latch: an opening calls self._tripped() */
    int gate;               /* the shared latch is open (or unknown): calls go to _call_slow */
    PyObject *refusal_args; /* FailFastOpen's (msg,), for refusal_name (fs_named_refusal_args) */
    PyObject *refusal_name;
} FsFailFast;

static double ns_to_s(int64_t ns)
{
    return (double)ns / 1e9;
}

/* Reports event method when somebody listens. 0, or -1 for what must propagate. */
static int ff_emit(FsFailFast *f, const char *method)
{
    if (!fs_listening(&f->base)) {
        return 0;
    }
    return fs_emit(&f->base, method, NULL);
}

/* The latch opened: tells the store's side (when shared), then the listeners. 0, or -1 for
 * what must propagate. */
static int ff_opened(FsFailFast *f)
{
    if (f->shared) {
        PyObject *t = PyObject_CallMethod((PyObject *)f, "_tripped", NULL);
        if (t == NULL) {
            return fs_event_error((PyObject *)f);
        }
        Py_DECREF(t);
    }
    return ff_emit(f, "on_failfast_open");
}

/* A new FailFastOpen(retry_after=...); retry_after_ns < 0: None. NULL with an exception when
 * it cannot be made. */
static PyObject *ff_open_error(FsFailFast *f, int64_t retry_after_ns)
{
    PyObject *args = fs_named_refusal_args(&f->refusal_args, &f->refusal_name, f->base.name,
                                           "fail-fast %.64S is open", f->base.name);
    return args == NULL ? NULL : fs_refusal(f->base.st, FS_E_FAILFAST_OPEN, args, retry_after_ns);
}

/* A call refused: counted, reported, FailFastOpen set (deferred: unchained, for admit, see
 * fs_defer). Always -1. */
static int ff_reject(FsFailFast *f, int64_t retry_after_ns, bool deferred)
{
    f->base.counters[FF_REJECTED]++;
    if (ff_emit(f, "on_failfast_rejected") < 0) {
        return -1;
    }
    PyObject *exc = ff_open_error(f, retry_after_ns);
    fs_raise_or_defer(exc, deferred);
    return -1;
}

/* The latch says whether a call may start now (closing it when its time ran out). 0: it may;
 * -1 with FailFastOpen (or a listener's KeyboardInterrupt) set (deferred: see ff_reject): it
 * may not. */
static int ff_check(FsFailFast *f, bool deferred)
{
    if (!f->ff.open) {
        return 0;
    }
    int64_t after = -1;
    /* Closed only by hand: no clock to read. */
    int64_t now = f->ff.recovery_ns < 0 ? 0 : fs_now_ns(f->base.st);
    int v = fs_failfast_admit(&f->ff, now, &after);
    if (v == FS_FF_REJECT) {
        return ff_reject(f, after, deferred);
    }
    if (v == FS_FF_ADMIT_CLOSED) {
        f->base.counters[FF_CLOSED]++;
        return ff_emit(f, "on_failfast_close");
    }
    return 0;
}

/* 1 when exc counts as a failure, 0 when not, -1 when the `on` predicate raised. */
static int ff_matches(FsFailFast *f, PyObject *exc)
{
    return fs_exception_matches(exc, f->on, f->on_pred, 1);
}

/* The outcome of a call or block: exc NULL for a success. Returns NULL when nothing changes the
 * exception; a new FailFastOpen raised from exc when this failure opened the latch; or NULL
 * with an exception set (the `on` predicate failed, or a listener's KeyboardInterrupt). */
static PyObject *ff_outcome(FsFailFast *f, PyObject *exc)
{
    if (exc == NULL) {
        fs_failfast_success(&f->ff);
        return NULL;
    }
    int m = ff_matches(f, exc);
    if (m < 0) {
        /* The predicate's error wins, chained to the call's exception. */
        PyObject *err = PyErr_GetRaisedException();
        fs_chain(err, exc);
        PyErr_SetRaisedException(err);
        return NULL;
    }
    if (m == 0 || !fs_failfast_failure(&f->ff, fs_now_ns(f->base.st))) {
        return NULL;
    }
    f->base.counters[FF_OPENED]++;
    if (ff_opened(f) < 0) {
        return NULL;
    }
    fs_raise(ff_open_error(f, f->ff.recovery_ns));
    PyObject *err = PyErr_GetRaisedException();
    if (err != NULL) {
        PyException_SetCause(err, Py_NewRef(exc));
        fs_chain(err, exc);
    }
    return err;
}

/* ------------------------------------------------------------------------------------------ */
/* Policy hooks */

static fs_verdict ff_admit(FsPolicy *p, fs_admission *Py_UNUSED(a), PyObject *const *args,
                          size_t nargsf, PyObject *kwnames)
{
    FsFailFast *f = (FsFailFast *)p;
    if (f->gate) {
        return FS_ADMIT_SLOW;   /* the shared latch decides, in Python */
    }
    if (f->ff.open && ff_check(f, true) < 0) {
        return FS_ADMIT_REFUSE;
    }
    if (f->predicate != NULL) {
        if (f->pred_async) {
            return FS_ADMIT_SLOW;
        }
        int t = fs_predicate_verdict(f->predicate, args, nargsf, kwnames);
        if (t != 0) {
            if (t > 0) {
                ff_reject(f, -1, true);
            }
            return FS_ADMIT_REFUSE;
        }
    }
    return f->observe ? FS_ADMIT_CALL : FS_ADMIT_PASS;
}

static int ff_finish(FsCall *c, PyObject *result, PyObject *exc, PyObject **out)
{
    FsFailFast *f = (FsFailFast *)c->policy;
    if (exc == NULL) {
        fs_failfast_success(&f->ff);
        *out = Py_NewRef(result);
        return FS_NEXT_RETURN;
    }
    PyObject *err = ff_outcome(f, exc);
    if (err == NULL && PyErr_Occurred()) {
        return -1;
    }
    *out = err != NULL ? err : Py_NewRef(exc);
    return FS_NEXT_RAISE;
}

static const fs_policy_ops ff_ops = {
    .admit = ff_admit,
    .finish = ff_finish,
};

/* ------------------------------------------------------------------------------------------ */
/* Type */

static PyObject *ff_new(PyTypeObject *type, PyObject *Py_UNUSED(args),
                        PyObject *Py_UNUSED(kwargs))
{
    /* Arguments belong to the subclass's __init__, which calls _configure. */
    FsFailFast *f = (FsFailFast *)type->tp_alloc(type, 0);
    if (f == NULL) {
        return NULL;
    }
    fs_failfast_init(&f->ff, 0, -1);
    if (fs_policy_init(&f->base, &ff_ops, FS_PATTERN_FAILFAST, 0, "failfast") < 0) {
        Py_DECREF(f);
        return NULL;
    }
    return (PyObject *)f;
}

/* _configure(*, threshold, recovery_ns, on, on_pred, predicate, pred_async): a
 * FailFastOptions' values, each checked there, naming it. */
static PyObject *ff_configure(PyObject *self, PyObject *args, PyObject *kwargs)
{
    FsFailFast *f = (FsFailFast *)self;
    fs_int_arg threshold = {"threshold", 0, INT64_MAX, 0};
    long long recovery_ns = -1;
    PyObject *on = Py_None, *on_pred = Py_None, *predicate = Py_None;
    int pred_async = 0;
    static char *kwlist[] = {"threshold", "recovery_ns", "on", "on_pred", "predicate",
                             "pred_async", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$O&LOOOp:_configure", kwlist,
                                     fs_int_arg_conv, &threshold,
                                     &recovery_ns, &on, &on_pred, &predicate, &pred_async)) {
        return NULL;
    }
    /* Kept for direct _native use: the matching reads on as a tuple without checking. */
    if (on != Py_None && !PyTuple_Check(on)) {
        PyErr_SetString(PyExc_TypeError, "on must be a tuple of exception classes or None");
        return NULL;
    }
    fs_failfast ff;
    if (fs_failfast_init(&ff, (uint64_t)threshold.value, recovery_ns) < 0) {
        PyErr_SetString(PyExc_ValueError, "_configure: out of the core's range");
        return NULL;
    }
    f->ff = ff;
    Py_XSETREF(f->on, on == Py_None ? NULL : Py_NewRef(on));
    Py_XSETREF(f->on_pred, on_pred == Py_None ? NULL : Py_NewRef(on_pred));
    Py_XSETREF(f->predicate, predicate == Py_None ? NULL : Py_NewRef(predicate));
    f->pred_async = pred_async;
    f->observe = threshold.value > 0;
    Py_RETURN_NONE;
}

/* open(): opens by hand (for recovery_time, if set). */
static PyObject *ff_open(PyObject *self, PyObject *Py_UNUSED(unused))
{
    FsFailFast *f = (FsFailFast *)self;
    if (fs_failfast_trip(&f->ff, fs_now_ns(f->base.st))) {
        f->base.counters[FF_OPENED]++;
        if (ff_opened(f) < 0) {
            return NULL;
        }
    }
    Py_RETURN_NONE;
}

/* close(): closes by hand, the failure count back to 0. */
static PyObject *ff_close(PyObject *self, PyObject *Py_UNUSED(unused))
{
    FsFailFast *f = (FsFailFast *)self;
    if (fs_failfast_reset(&f->ff)) {
        f->base.counters[FF_CLOSED]++;
        if (ff_emit(f, "on_failfast_close") < 0) {
            return NULL;
        }
    }
    Py_RETURN_NONE;
}

/* _check_open(): raises FailFastOpen if a call may not start now. */
static PyObject *ff_check_open(PyObject *self, PyObject *Py_UNUSED(unused))
{
    if (ff_check((FsFailFast *)self, false) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* _reject(): the predicate refused a call: counts it and raises FailFastOpen. */
static PyObject *ff_reject_py(PyObject *self, PyObject *Py_UNUSED(unused))
{
    ff_reject((FsFailFast *)self, -1, false);
    return NULL;
}

/* _exit(exc): records the outcome of a call or block (exc None: success). Raises FailFastOpen
 * from exc when this failure opened the latch, else returns None. */
static PyObject *ff_exit(PyObject *self, PyObject *exc)
{
    if (exc != Py_None && !PyExceptionInstance_Check(exc)) {
        PyErr_SetString(PyExc_TypeError, "_exit takes an exception or None");
        return NULL;
    }
    PyObject *err = ff_outcome((FsFailFast *)self, exc == Py_None ? NULL : exc);
    if (err != NULL) {
        PyErr_SetRaisedException(err);
        return NULL;
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *ff_get_is_open(PyObject *self, void *Py_UNUSED(closure))
{
    FsFailFast *f = (FsFailFast *)self;
    return PyBool_FromLong(fs_failfast_is_open(&f->ff, fs_now_ns(f->base.st)));
}

/* _holds_state(): whether forgetting the latch would lose something (for keyed registries):
 * open, or counting failures towards opening. */
static PyObject *ff_holds_state(PyObject *self, PyObject *Py_UNUSED(unused))
{
    FsFailFast *f = (FsFailFast *)self;
    fs_failfast *ff = &f->ff;
    return PyBool_FromLong(fs_failfast_is_open(ff, fs_now_ns(f->base.st))
                           || (!ff->open && ff->failures > 0));
}

static PyObject *ff_get_failures(PyObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(((FsFailFast *)self)->ff.failures);
}

/* Seconds until an open latch closes by itself; None when closed or closed only by hand. */
static PyObject *ff_get_retry_after(PyObject *self, void *Py_UNUSED(closure))
{
    FsFailFast *f = (FsFailFast *)self;
    int64_t now = fs_now_ns(f->base.st);
    if (!fs_failfast_is_open(&f->ff, now) || f->ff.recovery_ns < 0) {
        Py_RETURN_NONE;
    }
    return PyFloat_FromDouble(ns_to_s(f->ff.open_until_ns - now));
}

static int ff_traverse(PyObject *self, visitproc visit, void *arg)
{
    FsFailFast *f = (FsFailFast *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(f->on);
    Py_VISIT(f->on_pred);
    Py_VISIT(f->predicate);
    Py_VISIT(f->refusal_args);
    Py_VISIT(f->refusal_name);
    return fs_policy_traverse(&f->base, visit, arg);
}

static int ff_clear(PyObject *self)
{
    fs_policy_clear_events((FsPolicy *)self);
    FsFailFast *f = (FsFailFast *)self;
    Py_CLEAR(f->on);
    Py_CLEAR(f->on_pred);
    Py_CLEAR(f->predicate);
    Py_CLEAR(f->refusal_args);
    Py_CLEAR(f->refusal_name);
    Py_CLEAR(f->base.name);
    return 0;
}

static void ff_dealloc(PyObject *self)
{
    fs_policy_dealloc(self, ff_clear);
}

static PyMemberDef ff_members[] = {
    FS_POLICY_MEMBERS,
    {"_shared", Py_T_INT, offsetof(FsFailFast, shared), 0, "1: an opening calls self._tripped()"},
    {"_gate", Py_T_INT, offsetof(FsFailFast, gate), 0, "1: calls go to self._call_slow"},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef ff_getset[] = {
    {"is_open", ff_get_is_open, NULL, "whether a call now would be rejected", NULL},
    {"failures", ff_get_failures, NULL, "consecutive failures counted so far", NULL},
    {"retry_after", ff_get_retry_after, NULL,
     "seconds until it closes by itself (None: closed, or closed only by hand)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef ff_methods[] = {
    FS_POLICY_METHODS,
    {"_configure", (PyCFunction)(void (*)(void))ff_configure, METH_VARARGS | METH_KEYWORDS,
     "Sets the latch and what the C fast path needs to know."},
    {"open", ff_open, METH_NOARGS, "Opens: calls are rejected until it closes."},
    {"close", ff_close, METH_NOARGS, "Closes: calls run again; the failure count restarts."},
    {"_check_open", ff_check_open, METH_NOARGS, "Raises FailFastOpen if a call may not start."},
    {"_reject", ff_reject_py, METH_NOARGS, "Counts a refused call and raises FailFastOpen."},
    {"_exit", ff_exit, METH_O, "Records an outcome (None: success)."},
    {"_holds_state", ff_holds_state, METH_NOARGS,
     "Whether forgetting it would lose state: open, or failures counted."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot ff_slots[] = {
    {Py_tp_new, ff_new},
    {Py_tp_members, ff_members},
    {Py_tp_getset, ff_getset},
    {Py_tp_methods, ff_methods},
    {Py_tp_traverse, ff_traverse},
    {Py_tp_clear, ff_clear},
    {Py_tp_dealloc, ff_dealloc},
    {0, NULL},
};

static PyType_Spec ff_spec = {
    .name = "failsafe._native.FailFast",
    .basicsize = sizeof(FsFailFast),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .slots = ff_slots,
};

static int ff_setup(PyObject *module, fs_state *st)
{
    return fs_policy_type_add(module, st, &ff_spec, &st->FailFast_Type);
}

static int ff_part_traverse(fs_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->FailFast_Type);
    return 0;
}

static void ff_part_clear(fs_state *st)
{
    Py_CLEAR(st->FailFast_Type);
}

const fs_part fs_failfast_part = {
    .name = "failfast",
    .pattern = FS_PATTERN_FAILFAST,
    .metrics = ff_metrics,
    .setup = ff_setup,
    .traverse = ff_part_traverse,
    .clear = ff_part_clear,
};
