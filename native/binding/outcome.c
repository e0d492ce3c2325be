/* Outcome: the policy base of retry and fallback. The first attempt runs in C; an exception
 * matching `on` (or, when asked, every result) is handed to the Python subclass's slow path
 * (`_on_error` / `_on_result`), whose coroutine the same FsCall then drives to the end. */
#include "fs_binding.h"

#include <stddef.h>

typedef struct FsOutcome {
    FsPolicy base;
    PyObject *on;               /* tuple of exception classes, or NULL */
    PyObject *on_pred;          /* predicate over the exception, or NULL */
    PyObject *budget;           /* FsBudgetObject or NULL: one deposit per call */
    int handoff_results;        /* every result goes to _on_result */
    int success_counter;        /* counter bumped on a first-attempt success, or -1 */
    /* A handled exception answered in C (fallback) when nobody listens: */
    PyObject *answer;           /* the value (ANSWER_VALUE) or a sync callable (ANSWER_CALL) */
    int answer_kind;
    int answer_counter;         /* counter bumped per answer */
    /* Retries with no wait run in C while nobody listens: */
    long immediate;             /* re-attempts allowed (-1: until success), or -2: none in C */
    int attempt_counter;        /* counter bumped per re-attempt */
    /* Server signals: an exception that may carry a delay goes to Python, never at once. */
    PyObject *signal_check;     /* callable type -> bool, or NULL: signals ignored in C */
    PyObject *plain_type;       /* the last type signal_check answered False for, or NULL */
} FsOutcome;

#define FS_IMMEDIATE_OFF (-2)
/* Every so many failures a C retry loop hands over to Python, whose wait of 0 s lets the
 * event loop turn: a runaway retry of a function that never suspends stays cancellable. */
#define FS_YIELD_EVERY 16u

enum { ANSWER_NONE = 0, ANSWER_VALUE = 1, ANSWER_CALL = 2 };

/* Answers a handled exception in C: the value, or handler(exc, *args, **kwargs). */
static int outcome_answer(FsOutcome *o, FsCall *c, PyObject *exc, PyObject **out)
{
    c->policy->counters[o->answer_counter]++;
    if (o->answer_kind == ANSWER_VALUE) {
        *out = Py_NewRef(o->answer);
        return FS_NEXT_RETURN;
    }
    PyObject *small[1 + FS_CALL_INLINE_ARGS];
    PyObject **stack = small;
    Py_ssize_t n = 1 + c->ntotal;
    if (n > (Py_ssize_t)(sizeof(small) / sizeof(small[0]))) {
        stack = PyMem_Malloc((size_t)n * sizeof(PyObject *));
        if (stack == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    PyObject *const *argv = fs_call_argv(c);
    stack[0] = exc;
    for (Py_ssize_t i = 0; i < c->ntotal; i++) {
        stack[1 + i] = argv[i];
    }
    PyObject *res = PyObject_Vectorcall(o->answer, stack, (size_t)(1 + c->nargs), c->kwnames);
    if (stack != small) {
        PyMem_Free(stack);
    }
    if (res == NULL) {
        /* As an except block would: the handler's error shows what it was handling. */
        PyObject *err = PyErr_GetRaisedException();
        if (err != exc) {
            PyObject *ctx = PyException_GetContext(err);
            if (ctx == NULL) {
                PyException_SetContext(err, Py_NewRef(exc));
            }
            Py_XDECREF(ctx);
        }
        *out = err;
        return FS_NEXT_RAISE;
    }
    PyAsyncMethods *am = Py_TYPE(res)->tp_as_async;
    if (am != NULL && am->am_await != NULL) {
        *out = res;     /* an awaitable answer (e.g. a partial of an async function) */
        return FS_NEXT_CONTINUE;
    }
    *out = res;
    return FS_NEXT_RETURN;
}

static int outcome_admit(FsPolicy *p, PyObject *const *Py_UNUSED(args),
                         size_t Py_UNUSED(nargsf), PyObject *Py_UNUSED(kwnames))
{
    FsOutcome *o = (FsOutcome *)p;
    if (o->budget != NULL) {
        FsBudgetObject *b = (FsBudgetObject *)o->budget;
        fs_budget_deposit(&b->b, fs_now_ns(p->st));
    }
    return 1;
}

/* Calls self.<method>(value, fn, args, kwargs, t0_ns, failures) and returns the slow path's
 * awaitable. */
static PyObject *outcome_slow_path(FsCall *c, PyObject *method, PyObject *value)
{
    PyObject *args, *kwargs;
    if (fs_call_unpack_args(c, &args, &kwargs) < 0) {
        return NULL;
    }
    PyObject *t0 = PyLong_FromLongLong(c->t0_ns);
    PyObject *failures = PyLong_FromUnsignedLong(c->failures);
    PyObject *res = NULL;
    if (t0 != NULL && failures != NULL) {
        PyObject *stack[7] = {(PyObject *)c->policy, value, c->fn, args, kwargs, t0, failures};
        res = PyObject_VectorcallMethod(method, stack, 7, NULL);
    }
    Py_XDECREF(t0);
    Py_XDECREF(failures);
    Py_DECREF(args);
    Py_DECREF(kwargs);
    return res;
}

/* 1 when exc should go to the slow path, 0 when it propagates, -1 on a predicate error. */
static int outcome_matches(FsOutcome *o, PyObject *exc)
{
    return fs_exception_matches(exc, o->on, o->on_pred, 0);
}

/* 1 when exc carries no server signal (may be re-attempted at once), 0 when it may, -1 on an
 * error. The caller asks only for a type other than the last plain one (o->plain_type), so
 * signal_check runs once per new exception type. */
static int outcome_plain(FsOutcome *o, PyObject *exc)
{
    PyObject *r = PyObject_CallOneArg(o->signal_check, (PyObject *)Py_TYPE(exc));
    if (r == NULL) {
        return -1;
    }
    int signal = PyObject_IsTrue(r);
    Py_DECREF(r);
    if (signal < 0) {
        return -1;
    }
    if (!signal) {
        Py_XSETREF(o->plain_type, Py_NewRef((PyObject *)Py_TYPE(exc)));
    }
    return !signal;
}

static int outcome_finish(FsCall *c, PyObject *result, PyObject *exc, PyObject **out)
{
    FsOutcome *o = (FsOutcome *)c->policy;
    fs_state *st = c->policy->st;
    if (exc == NULL) {
        if (o->handoff_results) {
            *out = outcome_slow_path(c, st->str_on_result, result);
            return *out == NULL ? -1 : FS_NEXT_CONTINUE;
        }
        if (o->success_counter >= 0) {
            c->policy->counters[o->success_counter]++;
            if (fs_event_wanted(c->policy, "on_success")) {
                PyObject *r = PyObject_CallMethod((PyObject *)o, "_first_success", "I",
                                                  (unsigned int)c->failures);
                if (r == NULL && fs_event_error((PyObject *)o) < 0) {
                    return -1;  /* a listener's KeyboardInterrupt or SystemExit */
                }
                Py_XDECREF(r);
            }
        }
        *out = Py_NewRef(result);
        return FS_NEXT_RETURN;
    }
    int m = outcome_matches(o, exc);
    if (m < 0) {
        /* The predicate failed: its error wins, chained to the call's exception. */
        PyObject *err = PyErr_GetRaisedException();
        if (err != exc) {
            PyException_SetContext(err, Py_NewRef(exc));
        }
        *out = err;
        return FS_NEXT_RAISE;
    }
    if (m == 0) {
        *out = Py_NewRef(exc);
        return FS_NEXT_RAISE;
    }
    if (o->answer_kind != ANSWER_NONE && !fs_listening(c->policy)) {
        return outcome_answer(o, c, exc, out);
    }
    c->failures++;
    if (o->immediate != FS_IMMEDIATE_OFF && (o->immediate < 0 || (long)c->failures <= o->immediate)
        && c->failures % FS_YIELD_EVERY != 0 && !fs_listening(c->policy)
        && !(st->deadline_open && fs_deadline_left(st) <= 0.0)) {
        if (o->signal_check != NULL && (PyObject *)Py_TYPE(exc) != o->plain_type) {
            int plain = outcome_plain(o, exc);
            if (plain < 0) {
                return -1;
            }
            if (!plain) {
                goto slow;  /* the Python loop reads the delay the exception carries */
            }
        }
        /* Re-attempt at once: call fn again with the kept arguments, observe the new coroutine. */
        PyObject *coro =
            PyObject_Vectorcall(c->fn, fs_call_argv(c), (size_t)c->nargs, c->kwnames);
        if (coro != NULL && !PyCoro_CheckExact(coro)) {
            Py_SETREF(coro, fs_awaitable_iter(coro));
        }
        if (coro == NULL) {
            return -1;
        }
        c->policy->counters[o->attempt_counter]++;
        *out = coro;
        return FS_NEXT_AGAIN;
    }
slow:
    *out = outcome_slow_path(c, st->str_on_error, exc);
    return *out == NULL ? -1 : FS_NEXT_CONTINUE;
}

static const fs_policy_ops outcome_ops = {
    .admit = outcome_admit,
    .finish = outcome_finish,
};

static PyObject *outcome_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    int pattern;
    static char *kwlist[] = {"pattern", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "i:Outcome", kwlist, &pattern)) {
        return NULL;
    }
    if (pattern < 0 || pattern >= FS_PATTERN_COUNT) {
        PyErr_Format(PyExc_ValueError, "pattern index %d out of range", pattern);
        return NULL;
    }
    FsOutcome *o = (FsOutcome *)type->tp_alloc(type, 0);
    if (o == NULL) {
        return NULL;
    }
    o->success_counter = -1;
    o->immediate = FS_IMMEDIATE_OFF;
    if (fs_policy_init(&o->base, &outcome_ops, pattern, FS_POL_KEEP_ARGS, "outcome") < 0) {
        Py_DECREF(o);
        return NULL;
    }
    return (PyObject *)o;
}

/* _configure(on, on_pred, budget, handoff_results, success_counter, needs_t0, answer,
 * answer_kind, answer_counter, immediate, attempt_counter, signal_check) */
static PyObject *outcome_configure(PyObject *self, PyObject *args, PyObject *kwargs)
{
    FsOutcome *o = (FsOutcome *)self;
    PyObject *on = Py_None, *on_pred = Py_None, *budget = Py_None, *answer = NULL;
    PyObject *signal_check = Py_None;
    int handoff_results = 0, success_counter = -1, needs_t0 = 0;
    int answer_kind = ANSWER_NONE, answer_counter = 0, attempt_counter = 0;
    long immediate = FS_IMMEDIATE_OFF;
    static char *kwlist[] = {"on", "on_pred", "budget", "handoff_results", "success_counter",
                             "needs_t0", "answer", "answer_kind", "answer_counter",
                             "immediate", "attempt_counter", "signal_check", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$OOOpipOiiliO:_configure", kwlist, &on,
                                     &on_pred, &budget, &handoff_results, &success_counter,
                                     &needs_t0, &answer, &answer_kind, &answer_counter,
                                     &immediate, &attempt_counter, &signal_check)) {
        return NULL;
    }
    if (signal_check != Py_None && !PyCallable_Check(signal_check)) {
        PyErr_SetString(PyExc_TypeError, "signal_check must be callable or None");
        return NULL;
    }
    if (immediate < FS_IMMEDIATE_OFF || attempt_counter < 0
        || attempt_counter >= FS_MAX_COUNTERS) {
        PyErr_SetString(PyExc_ValueError, "invalid immediate retry configuration");
        return NULL;
    }
    if (answer_kind < ANSWER_NONE || answer_kind > ANSWER_CALL
        || (answer_kind != ANSWER_NONE && answer == NULL)
        || (answer_kind == ANSWER_CALL && !PyCallable_Check(answer))
        || answer_counter < 0 || answer_counter >= FS_MAX_COUNTERS) {
        PyErr_SetString(PyExc_ValueError, "invalid answer configuration");
        return NULL;
    }
    if (on != Py_None && !PyTuple_Check(on)) {
        PyErr_SetString(PyExc_TypeError, "on must be a tuple of exception classes or None");
        return NULL;
    }
    if (on_pred != Py_None && !PyCallable_Check(on_pred)) {
        PyErr_SetString(PyExc_TypeError, "on_pred must be callable or None");
        return NULL;
    }
    if (budget != Py_None && !PyObject_TypeCheck(budget, o->base.st->Budget_Type)) {
        PyErr_SetString(PyExc_TypeError, "budget must be a RetryBudget or None");
        return NULL;
    }
    if (success_counter < -1 || success_counter >= FS_MAX_COUNTERS) {
        PyErr_SetString(PyExc_ValueError, "success_counter out of range");
        return NULL;
    }
    Py_XSETREF(o->on, on == Py_None ? NULL : Py_NewRef(on));
    Py_XSETREF(o->on_pred, on_pred == Py_None ? NULL : Py_NewRef(on_pred));
    Py_XSETREF(o->budget, budget == Py_None ? NULL : Py_NewRef(budget));
    Py_XSETREF(o->signal_check, signal_check == Py_None ? NULL : Py_NewRef(signal_check));
    Py_CLEAR(o->plain_type);
    Py_XSETREF(o->answer, answer_kind == ANSWER_NONE ? NULL : Py_NewRef(answer));
    o->answer_kind = answer_kind;
    o->immediate = immediate;
    o->attempt_counter = attempt_counter;
    o->answer_counter = answer_counter;
    o->handoff_results = handoff_results;
    o->success_counter = success_counter;
    if (needs_t0) {
        o->base.flags |= FS_POL_NEEDS_T0;
    }
    else {
        o->base.flags &= ~FS_POL_NEEDS_T0;
    }
    Py_RETURN_NONE;
}

static int outcome_traverse(PyObject *self, visitproc visit, void *arg)
{
    FsOutcome *o = (FsOutcome *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(o->on);
    Py_VISIT(o->on_pred);
    Py_VISIT(o->budget);
    Py_VISIT(o->answer);
    Py_VISIT(o->signal_check);
    Py_VISIT(o->plain_type);
    return fs_policy_traverse(&o->base, visit, arg);
}

static int outcome_clear(PyObject *self)
{
    fs_policy_clear_events((FsPolicy *)self);
    FsOutcome *o = (FsOutcome *)self;
    Py_CLEAR(o->on);
    Py_CLEAR(o->on_pred);
    Py_CLEAR(o->budget);
    Py_CLEAR(o->answer);
    Py_CLEAR(o->signal_check);
    Py_CLEAR(o->plain_type);
    Py_CLEAR(o->base.name);
    return 0;
}

static void outcome_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    fs_policy_clear((FsPolicy *)self);
    outcome_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMemberDef outcome_members[] = {
    FS_POLICY_MEMBERS,
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef outcome_methods[] = {
    FS_POLICY_METHODS,
    {"_configure", (PyCFunction)(void (*)(void))outcome_configure, METH_VARARGS | METH_KEYWORDS,
     "Sets what the C fast path needs to know."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot outcome_slots[] = {
    {Py_tp_new, outcome_new},
    {Py_tp_members, outcome_members},
    {Py_tp_methods, outcome_methods},
    {Py_tp_traverse, outcome_traverse},
    {Py_tp_clear, outcome_clear},
    {Py_tp_dealloc, outcome_dealloc},
    {0, NULL},
};

static PyType_Spec outcome_spec = {
    .name = "failsafe._native.Outcome",
    .basicsize = sizeof(FsOutcome),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .slots = outcome_slots,
};

int fs_outcome_setup(PyObject *module, fs_state *st)
{
    st->Outcome_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &outcome_spec, NULL);
    if (st->Outcome_Type == NULL || fs_register_policy_type(st, st->Outcome_Type) < 0) {
        return -1;
    }
    return PyModule_AddType(module, st->Outcome_Type);
}
