/* Retry: the retry policy type. The first attempt runs in C; a failure matching `on` (or, when
 * asked, every result) goes to the Python subclass's retry loop (`_on_error` / `_on_result`),
 * which the same FsCall then drives to the end. Re-attempts with no wait run in C while nobody
 * listens; tests/test_retry_paths.py drives both loops against each other. */
#include "fs_outcome.h"

#include <stddef.h>

/* Counters, in the order of retry_metrics. */
enum { RETRY_ATTEMPT = 0, RETRY_SUCCESS, RETRY_GIVEUP };
static const char *const retry_metrics[] = {"attempt", "success", "giveup", NULL};

typedef struct FsRetry {
    FsOutcome o;
    PyObject *budget;           /* FsBudgetObject or NULL: one deposit per call */
    /* Retries with no wait run in C while nobody listens: */
    long immediate;             /* re-attempts allowed (-1: until success), or FS_IMMEDIATE_OFF */
    /* Server signals: an exception that may carry a delay goes to Python, never at once. */
    PyObject *signal_check;     /* callable type -> bool, or NULL: signals ignored in C */
    PyObject *plain_type;       /* the last type signal_check answered False for, or NULL */
} FsRetry;

#define FS_IMMEDIATE_OFF (-2)
/* Every so many failures a C retry loop hands over to Python, whose wait of 0 s lets the
 * event loop turn: a runaway retry of a function that never suspends stays cancellable.
 * Exported as _native.YIELD_EVERY for the Python loop. */
#define FS_YIELD_EVERY 16u

static fs_verdict retry_admit(FsPolicy *p, fs_admission *Py_UNUSED(a),
                              PyObject *const *Py_UNUSED(args), size_t Py_UNUSED(nargsf),
                              PyObject *Py_UNUSED(kwnames))
{
    FsRetry *r = (FsRetry *)p;
    if (r->budget != NULL) {
        FsBudgetObject *b = (FsBudgetObject *)r->budget;
        fs_budget_deposit(&b->b, fs_now_ns(p->st));
    }
    return FS_ADMIT_CALL;
}

/* 1 when exc carries no server signal (may be re-attempted at once), 0 when it may, -1 on an
 * error. The caller asks only for a type other than the last plain one (r->plain_type), so
 * signal_check runs once per new exception type. */
static int retry_plain(FsRetry *r, PyObject *exc)
{
    PyObject *res = PyObject_CallOneArg(r->signal_check, (PyObject *)Py_TYPE(exc));
    if (res == NULL) {
        return -1;
    }
    int signal = PyObject_IsTrue(res);
    Py_DECREF(res);
    if (signal < 0) {
        return -1;
    }
    if (!signal) {
        Py_XSETREF(r->plain_type, Py_NewRef((PyObject *)Py_TYPE(exc)));
    }
    return !signal;
}

static int retry_succeeded(FsCall *c, PyObject *result, PyObject **out)
{
    c->policy->counters[RETRY_SUCCESS]++;
    if (fs_event_wanted(c->policy, "on_success")) {
        PyObject *r = PyObject_CallMethod((PyObject *)c->policy, "_first_success", "I",
                                          (unsigned int)c->failures);
        if (r == NULL && fs_event_error((PyObject *)c->policy) < 0) {
            return -1;  /* a listener's KeyboardInterrupt or SystemExit */
        }
        Py_XDECREF(r);
    }
    *out = Py_NewRef(result);
    return FS_NEXT_RETURN;
}

static int retry_finish(FsCall *c, PyObject *result, PyObject *exc, PyObject **out)
{
    FsRetry *r = (FsRetry *)c->policy;
    fs_state *st = c->policy->st;
    if (exc == NULL) {
        if (r->o.handoff_results) {
            return fs_outcome_slow_path(c, st->str_on_result, result, out);
        }
        return retry_succeeded(c, result, out);
    }
    if (!fs_outcome_covers(&r->o, exc, out)) {
        return FS_NEXT_RAISE;
    }
    c->failures++;
    if (r->immediate != FS_IMMEDIATE_OFF && (r->immediate < 0 || (long)c->failures <= r->immediate)
        && c->failures % FS_YIELD_EVERY != 0 && !fs_listening(c->policy)
        && !(st->deadline_open && fs_deadline_left(st) <= 0.0)) {
        if (r->signal_check != NULL && (PyObject *)Py_TYPE(exc) != r->plain_type) {
            int plain = retry_plain(r, exc);
            if (plain < 0) {
                return -1;
            }
            if (!plain) {
                goto slow;  /* the Python loop reads the delay the exception carries */
            }
        }
        /* Re-attempt at once: call fn again with the kept arguments, observe the new coroutine. */
        PyObject *coro = fs_call_fn(c->fn, fs_call_argv(c), (size_t)c->nargs, c->kwnames);
        if (coro != NULL && !PyCoro_CheckExact(coro)) {
            Py_SETREF(coro, fs_awaitable_iter(coro));
        }
        if (coro == NULL) {
            return -1;
        }
        c->policy->counters[RETRY_ATTEMPT]++;
        *out = coro;
        return FS_NEXT_AGAIN;
    }
slow:
    return fs_outcome_slow_path(c, st->str_on_error, exc, out);
}

static const fs_policy_ops retry_ops = {
    .admit = retry_admit,
    .finish = retry_finish,
};

static PyObject *retry_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0)) {
        PyErr_SetString(PyExc_TypeError, "Retry() takes no arguments");
        return NULL;
    }
    FsRetry *r = (FsRetry *)type->tp_alloc(type, 0);
    if (r == NULL) {
        return NULL;
    }
    r->immediate = FS_IMMEDIATE_OFF;
    if (fs_policy_init(&r->o.base, &retry_ops, FS_PATTERN_RETRY, FS_POL_KEEP_ARGS, "retry") < 0) {
        Py_DECREF(r);
        return NULL;
    }
    return (PyObject *)r;
}

/* _configure(on, on_pred, budget, handoff_results, needs_t0, immediate, signal_check): what a
 * RetryOptions (failsafe.retry) holds, each parameter checked there, naming it. immediate is
 * the re-attempts C may make at once (-1: until success), None: none; signal_check is trusted
 * to be callable (calling it reports otherwise). */
static PyObject *retry_configure(PyObject *self, PyObject *args, PyObject *kwargs)
{
    FsRetry *r = (FsRetry *)self;
    PyObject *on = Py_None, *on_pred = Py_None, *budget = Py_None, *signal_check = Py_None;
    PyObject *immediate_arg = Py_None;
    int handoff_results = 0, needs_t0 = 0;
    long immediate = FS_IMMEDIATE_OFF;
    static char *kwlist[] = {"on", "on_pred", "budget", "handoff_results", "needs_t0",
                             "immediate", "signal_check", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$OOOppOO:_configure", kwlist, &on,
                                     &on_pred, &budget, &handoff_results, &needs_t0,
                                     &immediate_arg, &signal_check)) {
        return NULL;
    }
    if (immediate_arg != Py_None) {
        immediate = PyLong_AsLong(immediate_arg);
        if (immediate == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (immediate < -1) {
            PyErr_SetString(PyExc_ValueError, "immediate must be >= -1 or None");
            return NULL;
        }
    }
    /* Kept for direct _native use: budget is read as the C budget type. */
    if (budget != Py_None && !PyObject_TypeCheck(budget, r->o.base.st->Budget_Type)) {
        PyErr_SetString(PyExc_TypeError, "budget must be a RetryBudget or None");
        return NULL;
    }
    if (fs_outcome_configure(&r->o, on, on_pred, handoff_results) < 0) {
        return NULL;
    }
    Py_XSETREF(r->budget, budget == Py_None ? NULL : Py_NewRef(budget));
    Py_XSETREF(r->signal_check, signal_check == Py_None ? NULL : Py_NewRef(signal_check));
    Py_CLEAR(r->plain_type);
    r->immediate = immediate;
    if (needs_t0) {
        r->o.base.flags |= FS_POL_NEEDS_T0;
    }
    else {
        r->o.base.flags &= ~FS_POL_NEEDS_T0;
    }
    Py_RETURN_NONE;
}

static int retry_traverse(PyObject *self, visitproc visit, void *arg)
{
    FsRetry *r = (FsRetry *)self;
    Py_VISIT(r->budget);
    Py_VISIT(r->signal_check);
    Py_VISIT(r->plain_type);
    return fs_outcome_traverse(&r->o, visit, arg);
}

static int retry_clear(PyObject *self)
{
    FsRetry *r = (FsRetry *)self;
    Py_CLEAR(r->budget);
    Py_CLEAR(r->signal_check);
    Py_CLEAR(r->plain_type);
    fs_outcome_clear(&r->o);
    return 0;
}

static void retry_dealloc(PyObject *self)
{
    fs_policy_dealloc(self, retry_clear);
}

static PyMemberDef retry_members[] = {
    FS_POLICY_MEMBERS,
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef retry_methods[] = {
    FS_POLICY_METHODS,
    {"_configure", (PyCFunction)(void (*)(void))retry_configure, METH_VARARGS | METH_KEYWORDS,
     "Sets what the C fast path needs to know."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot retry_slots[] = {
    {Py_tp_new, retry_new},
    {Py_tp_members, retry_members},
    {Py_tp_methods, retry_methods},
    {Py_tp_traverse, retry_traverse},
    {Py_tp_clear, retry_clear},
    {Py_tp_dealloc, retry_dealloc},
    {0, NULL},
};

static PyType_Spec retry_spec = {
    .name = "failsafe._native.Retry",
    .basicsize = sizeof(FsRetry),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .slots = retry_slots,
};

static int retry_setup(PyObject *module, fs_state *st)
{
    if (fs_policy_type_add(module, st, &retry_spec, NULL) < 0) {
        return -1;
    }
    return PyModule_AddIntConstant(module, "YIELD_EVERY", FS_YIELD_EVERY) < 0 ? -1 : 0;
}

const fs_part fs_retry_part = {
    .name = "retry",
    .pattern = FS_PATTERN_RETRY,
    .metrics = retry_metrics,
    .setup = retry_setup,
};
