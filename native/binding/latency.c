/* Latency histograms of guarded calls (failsafe._native.Latency) and the awaitable that times
 * one call (LatencyCall). A policy records only while a Latency is attached to it
 * (FsPolicy.latency): the guard then wraps whatever it would return (the function's coroutine,
 * a GuardedCall, a slow path, a refusal, a cache hit) in a LatencyCall, which reads the clock
 * when the call is first driven and again when it ends, and counts the duration in the bucket of
 * its outcome (fs_lathist). Unattached policies pay one pointer test per call. */
#include "fs_binding.h"
#include "fs_lathist.h"

#include <stddef.h>
#include <string.h>

#define FS_LATCALL_FREELIST 64

enum { LC_FRESH = 0, LC_RUNNING, LC_UNTIMED, LC_DONE };

typedef struct FsLatency {
    PyObject_HEAD
    fs_lathist h;
} FsLatency;

typedef struct FsLatencyCall {
    PyObject_HEAD
    PyObject *inner;        /* the awaitable's iterator (owned), NULL once done */
    FsLatency *lat;         /* owned */
    fs_state *st;           /* borrowed: the module outlives its types' instances */
    int64_t t0_ns;
    uint8_t state;          /* LC_*; LC_UNTIMED: thrown into before it ran, not counted */
    uint8_t running;
} FsLatencyCall;

struct fs_latency_state {
    PyTypeObject *Latency_Type;
    PyTypeObject *Call_Type;
    FsLatencyCall *freelist;    /* linked through ->inner, GC-untracked */
    int free_count;
};

/* ------------------------------------------------------------------------------------------ */
/* Outcomes */

/* The outcome of a call that raised exc: what is not an Exception (CancelledError, a close)
 * is a cancellation, never a failure; a policy's refusal is a rejection. */
static int outcome_of(fs_state *st, PyObject *exc)
{
    if (exc == NULL || !PyErr_GivenExceptionMatches(exc, PyExc_Exception)) {
        return FS_LAT_CANCELLED;
    }
    static const fs_err refusals[] = {FS_E_BREAKER_FAILING, FS_E_FAILFAST_OPEN,
                                      FS_E_BULKHEAD_FULL, FS_E_RATE_LIMIT_EXCEEDED,
                                      FS_E_FEATURE_DISABLED};
    for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++) {
        PyObject *cls = st->errors[refusals[i]];
        if (cls != NULL && PyObject_TypeCheck(exc, (PyTypeObject *)cls)) {
            return FS_LAT_REJECTED;
        }
    }
    return FS_LAT_FAILURE;
}

/* Ends the timing of c with outcome and lets its inner awaitable go. */
static void lc_end(FsLatencyCall *c, int outcome)
{
    if (c->state == LC_RUNNING) {
        fs_lathist_record(&c->lat->h, outcome, c->t0_ns, fs_now_ns(c->st));
    }
    c->state = LC_DONE;
    Py_CLEAR(c->inner);
}

/* Ends c with the pending exception (kept pending). */
static void lc_end_raised(FsLatencyCall *c)
{
    PyObject *exc = PyErr_GetRaisedException();
    lc_end(c, outcome_of(c->st, exc));
    PyErr_SetRaisedException(exc);
}

/* ------------------------------------------------------------------------------------------ */
/* LatencyCall: the coroutine protocol, delegated to the inner awaitable */

static int lc_refuse_running(FsLatencyCall *c)
{
    if (c->running) {
        PyErr_SetString(PyExc_ValueError, "coroutine already executing");
        return -1;
    }
    return 0;
}

static PySendResult lc_am_send(PyObject *self, PyObject *arg, PyObject **presult)
{
    FsLatencyCall *c = (FsLatencyCall *)self;
    *presult = NULL;
    if (lc_refuse_running(c) < 0) {
        return PYGEN_ERROR;
    }
    if (c->state == LC_DONE) {
        PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
        return PYGEN_ERROR;
    }
    if (c->state == LC_FRESH) {
        if (arg != Py_None) {
            PyErr_SetString(PyExc_TypeError,
                            "can't send non-None value to a just-started coroutine");
            return PYGEN_ERROR;
        }
        c->state = LC_RUNNING;
        c->t0_ns = fs_now_ns(c->st);
    }
    c->running = 1;
    PySendResult r = PyIter_Send(c->inner, arg, presult);
    c->running = 0;
    if (r == PYGEN_RETURN) {
        lc_end(c, FS_LAT_SUCCESS);
    }
    else if (r == PYGEN_ERROR) {
        lc_end_raised(c);
    }
    return r;
}

static PyObject *lc_iternext(PyObject *self)
{
    PyObject *res = NULL;
    PySendResult r = lc_am_send(self, Py_None, &res);
    if (r == PYGEN_NEXT) {
        return res;
    }
    if (r == PYGEN_RETURN) {
        if (res == Py_None) {
            Py_DECREF(res);
            return NULL;    /* a bare NULL ends iteration with value None */
        }
        PyObject *e = fs_stop_iteration_new(((FsLatencyCall *)self)->st, res);
        if (e != NULL) {
            PyErr_SetRaisedException(e);
        }
    }
    return NULL;
}

/* Raises StopIteration(value) (value stolen), keeping tuples and exceptions intact. */
static PyObject *lc_stop(PyObject *value)
{
    PyObject *e = PyObject_CallOneArg(PyExc_StopIteration, value);
    Py_DECREF(value);
    if (e != NULL) {
        PyErr_SetRaisedException(e);
    }
    return NULL;
}

static PyObject *lc_send(PyObject *self, PyObject *arg)
{
    PyObject *res = NULL;
    PySendResult r = lc_am_send(self, arg, &res);
    if (r == PYGEN_NEXT) {
        return res;
    }
    return r == PYGEN_RETURN ? lc_stop(res) : NULL;
}

/* 1 and *res set when obj has the attribute, 0 when not, -1 on another error. */
static int lc_lookup(PyObject *obj, PyObject *name, PyObject **res)
{
#if PY_VERSION_HEX >= 0x030D0000
    return PyObject_GetOptionalAttr(obj, name, res);
#else
    return _PyObject_LookupAttr(obj, name, res);
#endif
}

/* inner.throw(*args): what it yields (new reference), or NULL with what it raised. */
static PyObject *lc_throw_inner(FsLatencyCall *c, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *meth = NULL;
    if (lc_lookup(c->inner, c->st->str_throw, &meth) < 0) {
        return NULL;
    }
    if (meth == NULL) {
        return fs_raise_thrown(args, nargs);    /* no throw(): the exception ends it */
    }
    PyObject *res = PyObject_Vectorcall(meth, args, (size_t)nargs, NULL);
    Py_DECREF(meth);
    return res;
}

static PyObject *lc_throw(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    FsLatencyCall *c = (FsLatencyCall *)self;
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "throw expected 1 to 3 arguments");
        return NULL;
    }
    if (lc_refuse_running(c) < 0) {
        return NULL;
    }
    if (c->state == LC_DONE || c->inner == NULL) {
        return fs_raise_thrown(args, nargs);
    }
    if (c->state == LC_FRESH) {
        c->state = LC_UNTIMED;  /* thrown in before it ran: not a call that took time */
    }
    c->running = 1;
    PyObject *res = lc_throw_inner(c, args, nargs);
    c->running = 0;
    if (res != NULL) {
        return res;
    }
    if (PyErr_ExceptionMatches(PyExc_StopIteration)) {
        PyObject *exc = PyErr_GetRaisedException();
        PyObject *value = PyObject_GetAttrString(exc, "value");
        Py_DECREF(exc);
        lc_end(c, FS_LAT_SUCCESS);
        return value == NULL ? NULL : lc_stop(value);
    }
    lc_end_raised(c);
    return NULL;
}

static PyObject *lc_close(PyObject *self, PyObject *Py_UNUSED(unused))
{
    FsLatencyCall *c = (FsLatencyCall *)self;
    if (lc_refuse_running(c) < 0) {
        return NULL;
    }
    if (c->state == LC_DONE || c->inner == NULL) {
        Py_RETURN_NONE;
    }
    PyObject *res = Py_NewRef(Py_None);
    PyObject *close = NULL;
    c->running = 1;
    if (lc_lookup(c->inner, c->st->str_close, &close) < 0) {
        Py_CLEAR(res);
    }
    else if (close != NULL) {
        Py_SETREF(res, PyObject_CallNoArgs(close));     /* 3.13: may return a value */
        Py_DECREF(close);
    }
    c->running = 0;
    PyObject *err = PyErr_GetRaisedException();
    lc_end(c, FS_LAT_CANCELLED);
    PyErr_SetRaisedException(err);
    return res;
}

static PyObject *lc_await(PyObject *self)
{
    FsLatencyCall *c = (FsLatencyCall *)self;
    if (c->state == LC_RUNNING || c->state == LC_UNTIMED) {
        PyErr_SetString(PyExc_RuntimeError, "coroutine is being awaited already");
        return NULL;
    }
    return Py_NewRef(self);
}

/* __name__, __qualname__, cr_frame, cr_code, cr_suspended of the inner awaitable, for task
 * reprs and stacks (None, or False for cr_suspended, when it has none). */
static PyObject *lc_get_inner_attr(PyObject *self, void *closure)
{
    FsLatencyCall *c = (FsLatencyCall *)self;
    const char *attr = (const char *)closure;
    if (c->inner != NULL) {
        PyObject *v = PyObject_GetAttrString(c->inner, attr);
        if (v != NULL || !PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return v;
        }
        PyErr_Clear();
    }
    if (attr[0] == '_') {
        return PyUnicode_FromString("GuardedCall");
    }
    return Py_NewRef(strcmp(attr, "cr_suspended") == 0 ? Py_False : Py_None);
}

static PyObject *lc_get_await(PyObject *self, void *Py_UNUSED(closure))
{
    FsLatencyCall *c = (FsLatencyCall *)self;
    return Py_NewRef(c->inner != NULL && c->state != LC_FRESH ? c->inner : Py_None);
}

static PyObject *lc_get_running(PyObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(((FsLatencyCall *)self)->running);
}

static int lc_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(((FsLatencyCall *)self)->inner);
    return 0;
}

static int lc_clear(PyObject *self)
{
    FsLatencyCall *c = (FsLatencyCall *)self;
    if (c->inner != NULL) {
        lc_end(c, FS_LAT_CANCELLED);    /* let go unfinished: never a failure */
    }
    return 0;
}

static void lc_dealloc(PyObject *self)
{
    FsLatencyCall *c = (FsLatencyCall *)self;
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    lc_clear(self);
    Py_CLEAR(c->lat);
    struct fs_latency_state *ls = c->st->latency;
    if (ls != NULL && ls->free_count < FS_LATCALL_FREELIST && tp == ls->Call_Type) {
        c->inner = (PyObject *)ls->freelist;   /* PyObject_Init on reuse takes tp back */
        ls->freelist = c;
        ls->free_count++;
    }
    else {
        tp->tp_free(self);
    }
    Py_DECREF(tp);
}

static PyObject *lc_repr(PyObject *self)
{
    static const char *states[] = {"fresh", "running", "running", "done"};
    return PyUnicode_FromFormat("<failsafe timed call, %s>",
                                states[((FsLatencyCall *)self)->state & 3]);
}

PyObject *fs_latency_wrap(FsPolicy *p, PyObject *aw)
{
    if (aw == NULL) {
        return NULL;
    }
    fs_state *st = p->st;
    struct fs_latency_state *ls = st->latency;
    PyObject *it = fs_awaitable_iter(aw);
    Py_DECREF(aw);
    if (it == NULL) {
        return NULL;
    }
    FsLatencyCall *c = ls->freelist;
    if (c != NULL) {
        ls->freelist = (FsLatencyCall *)c->inner;
        ls->free_count--;
        PyObject_Init((PyObject *)c, ls->Call_Type);
    }
    else {
        c = PyObject_GC_New(FsLatencyCall, ls->Call_Type);
        if (c == NULL) {
            Py_DECREF(it);
            return NULL;
        }
    }
    c->inner = it;
    c->lat = (FsLatency *)Py_NewRef(p->latency);
    c->st = st;
    c->t0_ns = 0;
    c->state = LC_FRESH;
    c->running = 0;
    PyObject_GC_Track(c);
    return (PyObject *)c;
}

static PyGetSetDef lc_getset[] = {
    {"__name__", lc_get_inner_attr, NULL, "name of the guarded coroutine", "__name__"},
    {"__qualname__", lc_get_inner_attr, NULL, "qualified name of the guarded coroutine",
     "__qualname__"},
    {"cr_frame", lc_get_inner_attr, NULL, "frame of the guarded coroutine", "cr_frame"},
    {"cr_code", lc_get_inner_attr, NULL, "code of the guarded coroutine", "cr_code"},
    {"cr_suspended", lc_get_inner_attr, NULL, "the guarded coroutine is suspended",
     "cr_suspended"},
    {"cr_await", lc_get_await, NULL, "the awaitable this call is driving", NULL},
    {"cr_running", lc_get_running, NULL, "the call is executing", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef lc_methods[] = {
    {"send", lc_send, METH_O, "send(value) -> next yielded value or StopIteration."},
    {"throw", (PyCFunction)(void (*)(void))lc_throw, METH_FASTCALL,
     "throw(exc) -> raise an exception into the guarded call."},
    {"close", lc_close, METH_NOARGS, "close() -> raise GeneratorExit inside the guarded call."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot lc_slots[] = {
    {Py_am_await, lc_await},
    {Py_am_send, lc_am_send},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, lc_iternext},
    {Py_tp_methods, lc_methods},
    {Py_tp_getset, lc_getset},
    {Py_tp_traverse, lc_traverse},
    {Py_tp_clear, lc_clear},
    {Py_tp_dealloc, lc_dealloc},
    {Py_tp_repr, lc_repr},
    {0, NULL},
};

static PyType_Spec lc_spec = {
    .name = "failsafe._native.TimedCall",
    .basicsize = sizeof(FsLatencyCall),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = lc_slots,
};

/* ------------------------------------------------------------------------------------------ */
/* Latency: one histogram, shared by the components reporting under one name and pattern */

static PyObject *lat_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0)) {
        PyErr_SetString(PyExc_TypeError, "Latency() takes no arguments");
        return NULL;
    }
    FsLatency *self = (FsLatency *)type->tp_alloc(type, 0);
    if (self != NULL) {
        fs_lathist_init(&self->h);
    }
    return (PyObject *)self;
}

static FsPolicy *lat_policy_arg(PyObject *self, PyObject *obj)
{
    fs_state *st = fs_state_from_type(Py_TYPE(self));
    if (st == NULL) {
        return NULL;
    }
    if (!fs_is_policy(st, obj)) {
        PyErr_Format(PyExc_TypeError, "expected a policy, not %s", Py_TYPE(obj)->tp_name);
        return NULL;
    }
    return (FsPolicy *)obj;
}

/* attach(policy): the policy's decorated calls are timed into this histogram from now on. */
static PyObject *lat_attach(PyObject *self, PyObject *obj)
{
    FsPolicy *p = lat_policy_arg(self, obj);
    if (p == NULL) {
        return NULL;
    }
    Py_XSETREF(p->latency, Py_NewRef(self));
    Py_RETURN_NONE;
}

/* detach(policy): stops timing the policy's calls into this histogram (calls in flight still
 * count here when they end). */
static PyObject *lat_detach(PyObject *self, PyObject *obj)
{
    FsPolicy *p = lat_policy_arg(self, obj);
    if (p == NULL) {
        return NULL;
    }
    if (p->latency == self) {
        Py_CLEAR(p->latency);
    }
    Py_RETURN_NONE;
}

/* record(outcome, start_ns, end_ns): counts one call timed elsewhere (a block form). */
static PyObject *lat_record(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    fs_int_arg outcome = {"outcome", 0, FS_LAT_OUTCOMES - 1, 0};
    fs_int_arg start = {"start_ns", INT64_MIN, INT64_MAX, 0};
    fs_int_arg end = {"end_ns", INT64_MIN, INT64_MAX, 0};
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "record() takes outcome, start_ns and end_ns");
        return NULL;
    }
    if (!fs_int_arg_conv(args[0], &outcome) || !fs_int_arg_conv(args[1], &start)
        || !fs_int_arg_conv(args[2], &end)) {
        return NULL;
    }
    fs_lathist_record(&((FsLatency *)self)->h, (int)outcome.value, start.value, end.value);
    Py_RETURN_NONE;
}

/* One outcome's (counts, count, sum_ns, min_ns, max_ns); min and max are 0 while empty. */
static PyObject *series_tuple(const fs_lathist_series *s)
{
    PyObject *counts = PyTuple_New(FS_LAT_BUCKETS);
    if (counts == NULL) {
        return NULL;
    }
    for (Py_ssize_t b = 0; b < FS_LAT_BUCKETS; b++) {
        PyObject *v = PyLong_FromUnsignedLongLong(s->counts[b]);
        if (v == NULL) {
            Py_DECREF(counts);
            return NULL;
        }
        PyTuple_SET_ITEM(counts, b, v);
    }
    int empty = s->total == 0;
    return Py_BuildValue("(NKKLL)", counts, (unsigned long long)s->total,
                         (unsigned long long)s->sum_ns, (long long)(empty ? 0 : s->min_ns),
                         (long long)(empty ? 0 : s->max_ns));
}

/* read(): per outcome (LATENCY_OUTCOMES order), (bucket counts, count, sum_ns, min_ns, max_ns). */
static PyObject *lat_read(PyObject *self, PyObject *Py_UNUSED(unused))
{
    const fs_lathist *h = &((FsLatency *)self)->h;
    PyObject *t = PyTuple_New(FS_LAT_OUTCOMES);
    if (t == NULL) {
        return NULL;
    }
    for (Py_ssize_t o = 0; o < FS_LAT_OUTCOMES; o++) {
        PyObject *s = series_tuple(&h->by_outcome[o]);
        if (s == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, o, s);
    }
    return t;
}

static void lat_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef lat_methods[] = {
    {"attach", lat_attach, METH_O, "attach(policy): time the policy's calls into this"},
    {"detach", lat_detach, METH_O, "detach(policy): stop timing the policy's calls into this"},
    {"record", (PyCFunction)(void (*)(void))lat_record, METH_FASTCALL,
     "record(outcome, start_ns, end_ns): count one call"},
    {"read", lat_read, METH_NOARGS,
     "per outcome: (bucket counts, count, sum_ns, min_ns, max_ns)"},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot lat_slots[] = {
    {Py_tp_doc, "Latency(): a histogram of call durations by outcome (fixed buckets)."},
    {Py_tp_new, lat_new},
    {Py_tp_methods, lat_methods},
    {Py_tp_dealloc, lat_dealloc},
    {0, NULL},
};

static PyType_Spec lat_spec = {
    .name = "failsafe._native.Latency",
    .basicsize = sizeof(FsLatency),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = lat_slots,
};

/* ------------------------------------------------------------------------------------------ */
/* Module part */

static int lat_add_constants(PyObject *module)
{
    PyObject *bounds = PyTuple_New(FS_LAT_BOUNDS);
    if (bounds == NULL) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < FS_LAT_BOUNDS; i++) {
        PyObject *v = PyLong_FromLongLong(fs_lat_bounds_ns[i]);
        if (v == NULL) {
            Py_DECREF(bounds);
            return -1;
        }
        PyTuple_SET_ITEM(bounds, i, v);
    }
    int rc = PyModule_AddObjectRef(module, "LATENCY_BOUNDS_NS", bounds);
    Py_DECREF(bounds);
    PyObject *outcomes = Py_BuildValue("(ssss)", "success", "failure", "rejected", "cancelled");
    if (rc < 0 || outcomes == NULL) {
        Py_XDECREF(outcomes);
        return -1;
    }
    rc = PyModule_AddObjectRef(module, "LATENCY_OUTCOMES", outcomes);
    Py_DECREF(outcomes);
    return rc;
}

static int lat_setup(PyObject *module, fs_state *st)
{
    st->latency = PyMem_Calloc(1, sizeof(struct fs_latency_state));
    if (st->latency == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    struct fs_latency_state *ls = st->latency;
    ls->Latency_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &lat_spec, NULL);
    ls->Call_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &lc_spec, NULL);
    if (ls->Latency_Type == NULL || ls->Call_Type == NULL
        || PyModule_AddType(module, ls->Latency_Type) < 0) {
        return -1;
    }
    return lat_add_constants(module);
}

static int lat_part_traverse(fs_state *st, visitproc visit, void *arg)
{
    if (st->latency != NULL) {
        Py_VISIT(st->latency->Latency_Type);
        Py_VISIT(st->latency->Call_Type);
    }
    return 0;
}

static void lat_part_clear(fs_state *st)
{
    struct fs_latency_state *ls = st->latency;
    if (ls == NULL) {
        return;
    }
    while (ls->freelist != NULL) {
        FsLatencyCall *c = ls->freelist;
        ls->freelist = (FsLatencyCall *)c->inner;
        PyObject_GC_Del(c);
    }
    ls->free_count = 0;
    Py_CLEAR(ls->Latency_Type);
    Py_CLEAR(ls->Call_Type);
    st->latency = NULL;
    PyMem_Free(ls);
}

const fs_part fs_latency_part = {
    .setup = lat_setup,
    .traverse = lat_part_traverse,
    .clear = lat_part_clear,
};
