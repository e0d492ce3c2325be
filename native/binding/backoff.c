/* Backoff schedules (Backoff, BackoffIter) and the retry budget (RetryBudget): thin objects over
 * the core's fs_backoff and fs_budget. Every iter() of a Backoff starts a fresh sequence. */
#include "fs_binding.h"

#include "fs_gcra.h"

#include <math.h>
#include <stddef.h>

typedef struct FsBackoffObject {
    PyObject_HEAD
    fs_state *st;
    fs_backoff b;
    double *seq;                /* owned copy for interval schedules */
} FsBackoffObject;

typedef struct FsBackoffIter {
    PyObject_HEAD
    FsBackoffObject *owner;
    fs_backoff_state s;
} FsBackoffIter;

static const char *backoff_field[] = {
    [FS_BACKOFF_EKIND] = "kind or jitter",
    [FS_BACKOFF_EA] = "first delay (a)",
    [FS_BACKOFF_EB] = "growth parameter (b)",
    [FS_BACKOFF_EC] = "scaling parameter (c)",
    [FS_BACKOFF_EMAX] = "maximum delay",
    [FS_BACKOFF_ESEQ] = "delay sequence",
};

static PyObject *backoff_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    int kind, jitter;
    double a = 0.0, b = 0.0, c = 0.0, max = INFINITY;
    PyObject *seq = Py_None;
    static char *kwlist[] = {"kind", "jitter", "a", "b", "c", "max", "seq", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "ii|ddddO:Backoff", kwlist, &kind, &jitter,
                                     &a, &b, &c, &max, &seq)) {
        return NULL;
    }
    fs_state *st = fs_state_from_type(type);
    if (st == NULL) {
        return NULL;
    }
    FsBackoffObject *o = (FsBackoffObject *)type->tp_alloc(type, 0);
    if (o == NULL) {
        return NULL;
    }
    o->st = st;
    o->b = (fs_backoff){.kind = (fs_backoff_kind)kind, .jitter = (fs_jitter)jitter,
                        .a = a, .b = b, .c = c, .max = max};
    if (seq != Py_None) {
        PyObject *fast = PySequence_Fast(seq, "seq must be a sequence of numbers");
        if (fast == NULL) {
            Py_DECREF(o);
            return NULL;
        }
        Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
        o->seq = PyMem_Calloc(n > 0 ? (size_t)n : 1, sizeof(double));
        if (o->seq == NULL) {
            Py_DECREF(fast);
            Py_DECREF(o);
            return PyErr_NoMemory();
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            o->seq[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(fast, i));
            if (o->seq[i] == -1.0 && PyErr_Occurred()) {
                Py_DECREF(fast);
                Py_DECREF(o);
                return NULL;
            }
        }
        Py_DECREF(fast);
        o->b.seq = o->seq;
        o->b.seq_len = (size_t)n;
    }
    /* Kept for direct _native use: fs_backoff_next needs a schedule that passed the core's
     * check. failsafe.retry.backoffs checks every field first, naming it (Backoff(kind, ...)
     * its fields, each schedule its own parameters), so Python never meets this message. */
    fs_backoff_err err = fs_backoff_check(&o->b);
    if (err != FS_BACKOFF_OK) {
        PyErr_Format(PyExc_ValueError, "Backoff: out of the core's range (%s)", backoff_field[err]);
        Py_DECREF(o);
        return NULL;
    }
    return (PyObject *)o;
}

static PyObject *backoff_iter(PyObject *self)
{
    FsBackoffObject *o = (FsBackoffObject *)self;
    FsBackoffIter *it = PyObject_New(FsBackoffIter, o->st->BackoffIter_Type);
    if (it == NULL) {
        return NULL;
    }
    it->owner = (FsBackoffObject *)Py_NewRef(self);
    fs_backoff_reset(&o->b, &it->s);
    return (PyObject *)it;
}

static PyObject *backoff_apply_jitter(PyObject *type, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "apply_jitter(kind, delay)");
        return NULL;
    }
    fs_state *st = fs_state_from_type((PyTypeObject *)type);
    if (st == NULL) {
        return NULL;
    }
    long kind = PyLong_AsLong(args[0]);
    if (kind == -1 && PyErr_Occurred()) {
        return NULL;
    }
    double d = PyFloat_AsDouble(args[1]);
    if (d == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    if (kind < 0 || kind >= FS_JITTER_COUNT) {
        PyErr_SetString(PyExc_ValueError, "unknown jitter kind");
        return NULL;
    }
    if (!isfinite(d) || d < 0) {
        PyErr_SetString(PyExc_ValueError, "delay must be a finite number >= 0");
        return NULL;
    }
    return PyFloat_FromDouble(fs_jitter_apply((fs_jitter)kind, d, &st->rng));
}

static void backoff_dealloc(PyObject *self)
{
    FsBackoffObject *o = (FsBackoffObject *)self;
    PyTypeObject *tp = Py_TYPE(self);
    PyMem_Free(o->seq);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef backoff_methods[] = {
    {"apply_jitter", (PyCFunction)(void (*)(void))backoff_apply_jitter,
     METH_FASTCALL | METH_CLASS, "apply_jitter(kind, delay) -> jittered delay"},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot backoff_slots[] = {
    {Py_tp_new, backoff_new},
    {Py_tp_iter, backoff_iter},
    {Py_tp_methods, backoff_methods},
    {Py_tp_dealloc, backoff_dealloc},
    {0, NULL},
};

static PyType_Spec backoff_spec = {
    .name = "failsafe._native.Backoff",
    .basicsize = sizeof(FsBackoffObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = backoff_slots,
};

/* BackoffIter holds only its owner (which holds no Python references): no GC needed. */
static PyObject *backoff_iter_next(PyObject *self)
{
    FsBackoffIter *it = (FsBackoffIter *)self;
    return PyFloat_FromDouble(fs_backoff_next(&it->owner->b, &it->s, &it->owner->st->rng));
}

static PyObject *backoff_iter_count(PyObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(((FsBackoffIter *)self)->s.k);
}

static void backoff_iter_dealloc(PyObject *self)
{
    FsBackoffIter *it = (FsBackoffIter *)self;
    PyTypeObject *tp = Py_TYPE(self);
    Py_CLEAR(it->owner);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyGetSetDef backoff_iter_getset[] = {
    {"count", backoff_iter_count, NULL, "delays produced so far", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot backoff_iter_slots[] = {
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, backoff_iter_next},
    {Py_tp_getset, backoff_iter_getset},
    {Py_tp_dealloc, backoff_iter_dealloc},
    {0, NULL},
};

static PyType_Spec backoff_iter_spec = {
    .name = "failsafe._native.BackoffIter",
    .basicsize = sizeof(FsBackoffIter),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = backoff_iter_slots,
};

/* ------------------------------------------------------------------------------------------ */
/* RetryBudget */

static PyObject *budget_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    double ratio, min_per_s, ttl_s;
    static char *kwlist[] = {"ratio", "min_per_s", "ttl_s", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "ddd:RetryBudget", kwlist, &ratio, &min_per_s,
                                     &ttl_s)) {
        return NULL;
    }
    fs_state *st = fs_state_from_type(type);
    if (st == NULL) {
        return NULL;
    }
    /* Kept for direct _native use (BudgetOptions checks each parameter, naming it): ttl_s
     * becomes int64 nanoseconds, and the core's init has its contract. */
    if (!isfinite(ttl_s) || ttl_s <= 0 || ttl_s > 1e9) {
        PyErr_SetString(PyExc_ValueError, "RetryBudget: out of the core's range");
        return NULL;
    }
    FsBudgetObject *o = (FsBudgetObject *)type->tp_alloc(type, 0);
    if (o == NULL) {
        return NULL;
    }
    o->st = st;
    if (fs_budget_init(&o->b, ratio, min_per_s, (int64_t)(ttl_s * 1e9)) < 0) {
        Py_DECREF(o);
        PyErr_SetString(PyExc_ValueError, "RetryBudget: out of the core's range");
        return NULL;
    }
    return (PyObject *)o;
}

static PyObject *budget_try_withdraw(PyObject *self, PyObject *Py_UNUSED(unused))
{
    FsBudgetObject *o = (FsBudgetObject *)self;
    return PyBool_FromLong(fs_budget_try_withdraw(&o->b, fs_now_ns(o->st)));
}

static PyObject *budget_deposit(PyObject *self, PyObject *Py_UNUSED(unused))
{
    FsBudgetObject *o = (FsBudgetObject *)self;
    fs_budget_deposit(&o->b, fs_now_ns(o->st));
    Py_RETURN_NONE;
}

static PyObject *budget_available(PyObject *self, PyObject *Py_UNUSED(unused))
{
    FsBudgetObject *o = (FsBudgetObject *)self;
    return PyFloat_FromDouble(fs_budget_available(&o->b, fs_now_ns(o->st)));
}

static void budget_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef budget_methods[] = {
    {"try_withdraw", budget_try_withdraw, METH_NOARGS, "Takes one retry if the budget allows."},
    {"deposit", budget_deposit, METH_NOARGS, "Records one call."},
    {"available", budget_available, METH_NOARGS, "Retries currently allowed."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot budget_slots[] = {
    {Py_tp_new, budget_new},
    {Py_tp_methods, budget_methods},
    {Py_tp_dealloc, budget_dealloc},
    {0, NULL},
};

static PyType_Spec budget_spec = {
    .name = "failsafe._native.RetryBudget",
    .basicsize = sizeof(FsBudgetObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = budget_slots,
};

/* ------------------------------------------------------------------------------------------ */
/* TokenBucket: GCRA tokens for bucket_retry's attempts */

typedef struct FsBucketObject {
    PyObject_HEAD
    fs_state *st;
    fs_gcra g;
} FsBucketObject;

static PyObject *bucket_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    long long interval_ns, burst;
    static char *kwlist[] = {"interval_ns", "burst", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "LL:TokenBucket", kwlist, &interval_ns,
                                     &burst)) {
        return NULL;
    }
    fs_state *st = fs_state_from_type(type);
    if (st == NULL) {
        return NULL;
    }
    FsBucketObject *o = (FsBucketObject *)type->tp_alloc(type, 0);
    if (o == NULL) {
        return NULL;
    }
    o->st = st;
    /* The core's contract, for direct _native use (bucket_retry checks its parameters). */
    if (fs_gcra_init(&o->g, interval_ns, burst) < 0) {
        Py_DECREF(o);
        PyErr_SetString(PyExc_ValueError, "TokenBucket: out of the core's range");
        return NULL;
    }
    return (PyObject *)o;
}

/* 0.0 when a token was taken, else the seconds until one is available. */
static PyObject *bucket_try_take(PyObject *self, PyObject *Py_UNUSED(unused))
{
    FsBucketObject *o = (FsBucketObject *)self;
    int64_t wait_ns = 0;
    if (fs_gcra_take(&o->g, fs_now_ns(o->st), &wait_ns)) {
        return PyFloat_FromDouble(0.0);
    }
    return PyFloat_FromDouble((double)wait_ns / 1e9);
}

/* _holds_state(): whether tokens were taken that have not come back yet. */
static PyObject *bucket_holds_state(PyObject *self, PyObject *Py_UNUSED(unused))
{
    FsBucketObject *o = (FsBucketObject *)self;
    return PyBool_FromLong(!fs_gcra_idle(o->g.tat_ns, fs_now_ns(o->st)));
}

static PyMethodDef bucket_methods[] = {
    {"try_take", bucket_try_take, METH_NOARGS,
     "Takes a token: 0.0 if taken, else seconds until one is available."},
    {"_holds_state", bucket_holds_state, METH_NOARGS, "Whether tokens are missing."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot bucket_slots[] = {
    {Py_tp_new, bucket_new},
    {Py_tp_methods, bucket_methods},
    {Py_tp_dealloc, budget_dealloc},
    {0, NULL},
};

static PyType_Spec bucket_spec = {
    .name = "failsafe._native.TokenBucket",
    .basicsize = sizeof(FsBucketObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = bucket_slots,
};

static int backoff_setup(PyObject *module, fs_state *st)
{
    PyObject *bucket = PyType_FromModuleAndSpec(module, &bucket_spec, NULL);
    if (bucket == NULL) {
        return -1;
    }
    int rc = PyModule_AddType(module, (PyTypeObject *)bucket);
    Py_DECREF(bucket);
    if (rc < 0) {
        return -1;
    }
    st->Backoff_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &backoff_spec, NULL);
    st->BackoffIter_Type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &backoff_iter_spec, NULL);
    st->Budget_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &budget_spec, NULL);
    if (st->Backoff_Type == NULL || st->BackoffIter_Type == NULL || st->Budget_Type == NULL) {
        return -1;
    }
    if (PyModule_AddType(module, st->Backoff_Type) < 0
        || PyModule_AddType(module, st->BackoffIter_Type) < 0
        || PyModule_AddType(module, st->Budget_Type) < 0) {
        return -1;
    }
    return 0;
}

static int backoff_traverse(fs_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->Backoff_Type);
    Py_VISIT(st->BackoffIter_Type);
    Py_VISIT(st->Budget_Type);
    return 0;
}

static void backoff_clear(fs_state *st)
{
    Py_CLEAR(st->Backoff_Type);
    Py_CLEAR(st->BackoffIter_Type);
    Py_CLEAR(st->Budget_Type);
}

const fs_part fs_backoff_part = {
    .name = "backoff",
    .setup = backoff_setup,
    .traverse = backoff_traverse,
    .clear = backoff_clear,
};
