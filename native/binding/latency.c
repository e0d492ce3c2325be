/* Latency histograms of guarded calls (failsafe._native.Latency). A policy records only while a
 * Latency is attached to it (FsPolicy.latency): its guard then times each call (guard.c) and
 * counts the duration in the bucket of its outcome (fs_lathist). Unattached policies pay one
 * pointer test per call. */
#include "fs_binding.h"
#include "fs_lathist.h"
#include "done.h"
#include "fs_timers.h"

#include <stddef.h>

typedef struct FsLatency {
    PyObject_HEAD
    fs_lathist h;
} FsLatency;

struct fs_latency_state {
    PyTypeObject *Latency_Type;
    /* task -> list of (policy, Latency, t0_ns) of its timed `async with` blocks, innermost last */
    PyObject *blocks;
};

/* ------------------------------------------------------------------------------------------ */
/* Outcomes */

int fs_latency_outcome(fs_state *st, PyObject *exc)
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

void fs_latency_count(PyObject *lat, int outcome, int64_t t0_ns, int64_t end_ns)
{
    fs_lathist_record(&((FsLatency *)lat)->h, outcome, t0_ns, end_ns);
}

/* ------------------------------------------------------------------------------------------ */
/* async with blocks: timed per task, from __aenter__ to the end of __aexit__ */

/* The current task (new reference), or NULL without an exception outside one. */
static PyObject *block_task(fs_state *st)
{
    PyObject *loop, *task;
    if (fs_running_task(st, &loop, &task) < 0) {
        PyErr_Clear();
        return NULL;
    }
    Py_DECREF(loop);
    return task;
}

void fs_latency_block_open(FsPolicy *p, PyObject *lat, int64_t t0_ns)
{
    fs_state *st = p->st;
    PyObject *blocks = st->latency != NULL ? st->latency->blocks : NULL;
    PyObject *task = blocks != NULL ? block_task(st) : NULL;
    if (task == NULL) {
        return;
    }
    PyObject *stack = Py_XNewRef(PyDict_GetItemWithError(blocks, task));
    if (stack == NULL && !PyErr_Occurred()) {
        stack = PyList_New(0);
        if (stack != NULL && PyDict_SetItem(blocks, task, stack) < 0) {
            Py_CLEAR(stack);
        }
    }
    PyObject *entry = stack != NULL ? Py_BuildValue("(OOL)", p, lat, (long long)t0_ns) : NULL;
    if (entry != NULL && PyList_Append(stack, entry) == 0) {
        st->blocks_timed++;
    }
    else {
        PyErr_Clear();  /* not kept: the block goes untimed */
    }
    Py_XDECREF(entry);
    Py_XDECREF(stack);
    Py_DECREF(task);
}

PyObject *fs_latency_block_enter(FsPolicy *p, PyObject *aw)
{
    fs_state *st = p->st;
    PyObject *lat = p->latency;
    if (aw == NULL) {
        /* Refused (or failed) on the spot: counted as taking no time, the error kept. */
        PyObject *exc = PyErr_GetRaisedException();
        if (exc != NULL && PyErr_GivenExceptionMatches(exc, PyExc_Exception)) {
            fs_latency_count(lat, fs_latency_outcome(st, exc), 0, 0);
        }
        PyErr_SetRaisedException(exc);
        return NULL;
    }
    if (Py_IS_TYPE(aw, st->Done_Type)) {
        PyObject *exc = ((FsDone *)aw)->exc;
        if (exc != NULL) {
            fs_latency_count(lat, fs_latency_outcome(st, exc), 0, 0);
        }
        else {
            fs_latency_block_open(p, lat, fs_now_ns(st));
        }
        return aw;
    }
    return fs_call_timed_enter(p, lat, aw);    /* entered after a wait, or refused by it */
}

/* The outcome of a block that ended with raised (what __aexit__ raised) or else exc. */
static int block_outcome(fs_state *st, PyObject *raised, PyObject *exc)
{
    PyObject *end = raised != NULL ? raised : (exc == Py_None ? NULL : exc);
    return end == NULL ? FS_LAT_SUCCESS : fs_latency_outcome(st, end);
}

void fs_latency_block_end(FsPolicy *p, PyObject *lat, uint32_t gen, int64_t t0_ns, PyObject *r,
                          PyObject *exc)
{
    if (p->latency != lat || p->lat_gen != gen) {
        return;     /* detached while the block ran: it ends untimed */
    }
    fs_state *st = p->st;
    int64_t end_ns = fs_now_ns(st);
    if (r != NULL) {
        fs_latency_count(lat, block_outcome(st, NULL, exc), t0_ns, end_ns);
        return;
    }
    PyObject *raised = PyErr_GetRaisedException();
    fs_latency_count(lat, block_outcome(st, raised, exc), t0_ns, end_ns);
    PyErr_SetRaisedException(raised);
}

void fs_latency_block_exit(FsPolicy *p, PyObject *r, PyObject *exc)
{
    fs_state *st = p->st;
    PyObject *blocks = st->latency != NULL ? st->latency->blocks : NULL;
    PyObject *raised = r == NULL ? PyErr_GetRaisedException() : NULL;
    PyObject *task = blocks != NULL ? block_task(st) : NULL;
    PyObject *stack = task != NULL ? PyDict_GetItemWithError(blocks, task) : NULL;  /* borrowed */
    Py_ssize_t i = stack != NULL ? PyList_GET_SIZE(stack) : 0;
    while (--i >= 0 && PyTuple_GET_ITEM(PyList_GET_ITEM(stack, i), 0) != (PyObject *)p) {
    }
    if (i >= 0) {
        PyObject *entry = Py_NewRef(PyList_GET_ITEM(stack, i));
        int64_t t0 = PyLong_AsLongLong(PyTuple_GET_ITEM(entry, 2));
        int rc = PyList_GET_SIZE(stack) == 1 ? PyDict_DelItem(blocks, task)
                                             : PyList_SetSlice(stack, i, i + 1, NULL);
        if (rc == 0) {
            st->blocks_timed--;
            /* What the block ended with, as its user sees it: what __aexit__ raised, else exc. */
            fs_latency_count(PyTuple_GET_ITEM(entry, 1), block_outcome(st, raised, exc), t0,
                             fs_now_ns(st));
        }
        Py_DECREF(entry);
    }
    Py_XDECREF(task);
    PyErr_Clear();
    if (raised != NULL) {
        PyErr_SetRaisedException(raised);
    }
}

/* Stops timing p's open blocks (its latency detached): they end untimed. */
static void block_forget(fs_state *st, FsPolicy *p)
{
    PyObject *blocks = st->latency != NULL ? st->latency->blocks : NULL;
    if (blocks == NULL || st->blocks_timed == 0) {
        return;
    }
    PyObject *tasks = PyDict_Keys(blocks);
    for (Py_ssize_t k = 0; tasks != NULL && k < PyList_GET_SIZE(tasks); k++) {
        PyObject *task = PyList_GET_ITEM(tasks, k);
        PyObject *stack = PyDict_GetItemWithError(blocks, task);
        for (Py_ssize_t i = stack != NULL ? PyList_GET_SIZE(stack) : 0; --i >= 0;) {
            if (PyTuple_GET_ITEM(PyList_GET_ITEM(stack, i), 0) == (PyObject *)p
                && PyList_SetSlice(stack, i, i + 1, NULL) == 0) {
                st->blocks_timed--;
            }
        }
        if (stack != NULL && PyList_GET_SIZE(stack) == 0) {
            (void)PyDict_DelItem(blocks, task);
        }
    }
    Py_XDECREF(tasks);
    PyErr_Clear();
}

PyObject *fs_policy_block_open(PyObject *self, PyObject *t0)
{
    FsPolicy *p = (FsPolicy *)self;
    long long t = PyLong_AsLongLong(t0);
    if (t == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (p->latency != NULL) {
        fs_latency_block_open(p, p->latency, t);
    }
    Py_RETURN_NONE;
}

PyObject *fs_policy_block_refused(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    FsPolicy *p = (FsPolicy *)self;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_block_refused(t0_ns, exc)");
        return NULL;
    }
    long long t = PyLong_AsLongLong(args[0]);
    if (t == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (p->latency != NULL) {
        fs_latency_count(p->latency, fs_latency_outcome(p->st, args[1]), t, fs_now_ns(p->st));
    }
    Py_RETURN_NONE;
}

PyObject *fs_policy_block_exited(PyObject *self, PyObject *exc)
{
    FsPolicy *p = (FsPolicy *)self;
    fs_block_exited(p, Py_None, exc);
    Py_RETURN_NONE;
}

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
        p->lat_gen++;
        block_forget(p->st, p);
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
    if (ls->Latency_Type == NULL || PyModule_AddType(module, ls->Latency_Type) < 0) {
        return -1;
    }
    if ((ls->blocks = PyDict_New()) == NULL) {
        return -1;
    }
    return lat_add_constants(module);
}

static int lat_part_traverse(fs_state *st, visitproc visit, void *arg)
{
    if (st->latency != NULL) {
        Py_VISIT(st->latency->Latency_Type);
        Py_VISIT(st->latency->blocks);
    }
    return 0;
}

static void lat_part_clear(fs_state *st)
{
    struct fs_latency_state *ls = st->latency;
    if (ls == NULL) {
        return;
    }
    Py_CLEAR(ls->Latency_Type);
    Py_CLEAR(ls->blocks);
    st->blocks_timed = 0;
    st->latency = NULL;
    PyMem_Free(ls);
}

const fs_part fs_latency_part = {
    .setup = lat_setup,
    .traverse = lat_part_traverse,
    .clear = lat_part_clear,
};
