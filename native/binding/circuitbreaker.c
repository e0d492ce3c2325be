/* Breaker: the circuit breaker policy. The state machine is the core's (fs_breaker); this file
 * admits or rejects calls, tells the core how each admitted call ended, counts, and reports
 * events to Python when somebody listens.
 *
 * A call's admission token (its state period, and whether it holds a probe slot) lives in the
 * FsCall (pword), never on the policy. Outcomes: a result is a success; an Exception matching
 * `on` is a failure; anything else (a non-matching exception, CancelledError, GeneratorExit,
 * close()) ends the admission without an outcome, freeing its probe slot.
 *
 * A rejected call raises BreakerFailing when it is awaited, not when the function is called,
 * as an `async def` would (the guard's RejectedCall), so a guard stacked outside the breaker
 * (fallback, retry) sees the rejection as the outcome of the call it guards. */
#include "fs_binding.h"
#include "fs_breaker.h"

#include <stddef.h>
#include <string.h>

/* Counters, in the order of CircuitBreaker.METRICS. */
enum {
    C_WORKING = 0,
    C_RECOVERING = 1,
    C_FAILING = 2,
    C_SUCCESS = 3,
    C_FAILURE = 4,
    C_REJECTED = 5
};
static const char *const breaker_metrics[] = {"transition.working", "transition.recovering",
    "transition.failing", "success", "failure", "rejected", NULL};

/* Kinds of event report handed to the Python subclass's _events(). */
enum { EV_NONE = 0, EV_SUCCESS = 1, EV_FAILURE = 2, EV_REJECTED = 3 };

static const char REJECT_MSG[] = "Circuit Breaker is in the failing state";

/* The configuration a breaker and its copies (_copy) share; freed with its last user. */
typedef struct BreakerConf {
    Py_ssize_t users;
    fs_breaker_config cfg;
} BreakerConf;

typedef struct FsBreaker {
    FsPolicy base;
    fs_breaker core;
    BreakerConf *conf;          /* core.cfg's storage (shared), or NULL before the first */
    void *window;               /* the core's window storage (PyMem), or NULL */
    PyObject *on;               /* tuple of exception classes, or NULL */
    PyObject *on_pred;          /* predicate over the exception, or NULL */
    int time_at_end;            /* every outcome needs the time (windows, slow calls) */
    PyObject *entries;          /* `async with`: {task or None: [token, t0_ns, ...]}, or NULL */
    int shared;                 /* a store shares the state: a trip calls self._tripped() */
    int gate;                   /* the shared state is not closed: calls go to self._call_slow */
    PyObject *signal;           /* callable failure -> break in ns or None, or NULL */
    PyObject *refusal_args;     /* BreakerFailing's (REJECT_MSG,), built once */
} FsBreaker;

/* Reports on_success(state) of a call passing a working breaker, dispatched from C (the
 * Python subclass names its working state _WORKING). 0, or -1 as breaker_events. */
static int breaker_success_event(FsBreaker *b)
{
    PyObject *state = PyObject_GetAttrString((PyObject *)b, "_WORKING");
    if (state == NULL) {
        return fs_event_error((PyObject *)b);
    }
    PyObject *args = PyTuple_Pack(1, state);
    Py_DECREF(state);
    if (args == NULL) {
        return fs_event_error((PyObject *)b);
    }
    return fs_emit(&b->base, "on_success", args);
}

/* Bumps the transition counters of bits and, when somebody listens, hands the events to
 * self._events(kind, exc, old_state, bits). 0, or -1 with a KeyboardInterrupt / SystemExit
 * raised by a listener. */
static int breaker_events(FsBreaker *b, int kind, PyObject *exc, int old, unsigned bits)
{
    uint64_t *n = b->base.counters;
    if (bits & FS_BR_TO_RECOVERING) {
        n[C_RECOVERING]++;
    }
    if (bits & FS_BR_TO_FAILING) {
        n[C_FAILING]++;
    }
    if (bits & FS_BR_TO_WORKING) {
        n[C_WORKING]++;
    }
    if ((bits & FS_BR_TO_FAILING) && b->shared) {
        PyObject *t = PyObject_CallMethod((PyObject *)b, "_tripped", NULL);
        if (t == NULL) {
            return fs_event_error((PyObject *)b);
        }
        Py_DECREF(t);
    }
    if (!fs_listening(&b->base) || (kind == EV_NONE && bits == 0)) {
        return 0;
    }
    if (kind == EV_SUCCESS && bits == 0 && old == FS_BR_WORKING) {
        return fs_event_wanted(&b->base, "on_success") ? breaker_success_event(b) : 0;
    }
    PyObject *r = PyObject_CallMethod((PyObject *)b, "_events", "iOiI", kind,
                                      exc != NULL ? exc : Py_None, old, bits);
    if (r == NULL) {
        return fs_event_error((PyObject *)b);
    }
    Py_DECREF(r);
    return 0;
}

/* A call refused: counted, reported, BreakerFailing set (deferred: unchained, for admit, see
 * fs_defer). Always -1. */
static int breaker_reject(FsBreaker *b, int64_t retry_after_ns, bool deferred)
{
    b->base.counters[C_REJECTED]++;
    if (breaker_events(b, EV_REJECTED, NULL, b->core.state, 0) < 0) {
        return -1;
    }
    PyObject *exc = fs_refusal(b->base.st, FS_E_BREAKER_FAILING, b->refusal_args, retry_after_ns);
    fs_raise_or_defer(exc, deferred);
    return -1;
}

/* Admission: a token in *token, or -1 with BreakerFailing (or a listener's BaseException;
 * deferred: see breaker_reject). */
static int breaker_acquire(FsBreaker *b, uint64_t *token, bool deferred)
{
    if (b->core.state == FS_BR_WORKING) {
        *token = fs_breaker_working_token(&b->core);   /* no clock read on the hot path */
        return 0;
    }
    int64_t after = -1;
    unsigned tr = 0;
    int old = b->core.state;
    fs_br_admit a = fs_breaker_acquire(&b->core, fs_now_ns(b->base.st), token, &after, &tr);
    if (tr != 0 && breaker_events(b, EV_NONE, NULL, old, tr) < 0) {
        if (a == FS_BR_PROBE) {
            fs_breaker_release(&b->core, *token);
        }
        return -1;
    }
    if (a == FS_BR_REJECTED) {
        return breaker_reject(b, after, deferred);
    }
    return 0;
}

/* 1 when exc is a failure, 0 when it changes nothing, -1 on a predicate error (set). */
static int breaker_is_failure(FsBreaker *b, PyObject *exc)
{
    return fs_exception_matches(exc, b->on, b->on_pred, 0);
}

/* The break a failure asks for (b->signal(exc)): >= 0 ns, -1 for none, -2 with an error. */
static int64_t breaker_signal(FsBreaker *b, PyObject *exc)
{
    PyObject *r = PyObject_CallOneArg(b->signal, exc);
    if (r == NULL) {
        return -2;
    }
    int64_t ns = -1;
    if (r != Py_None) {
        long long v = PyLong_AsLongLong(r);
        if (v == -1 && PyErr_Occurred()) {
            Py_DECREF(r);
            return -2;
        }
        ns = v < 0 ? -1 : (int64_t)v;
    }
    Py_DECREF(r);
    return ns;
}

/* The admission token started at t0_ns ended with exc (NULL: a result). Returns 0, or -1 with
 * an exception set (the predicate's error, or a listener's KeyboardInterrupt / SystemExit). */
static int breaker_end(FsBreaker *b, uint64_t token, int64_t t0_ns, PyObject *exc)
{
    int failure = 0;
    int64_t asked_ns = -1;
    if (exc != NULL) {
        failure = breaker_is_failure(b, exc);
        if (failure > 0 && b->signal != NULL && (asked_ns = breaker_signal(b, exc)) == -2) {
            failure = -1;
        }
        if (failure <= 0) {
            fs_breaker_release(&b->core, token);
            return failure;
        }
    }
    /* A success of a consecutive breaker without slow-call detection needs no time; any
     * outcome that may open the breaker does (the break starts now). */
    int64_t now = 0, duration = 0;
    if (b->time_at_end || failure) {
        now = fs_now_ns(b->base.st);
        duration = now - t0_ns;
    }
    int old = b->core.state;
    unsigned tr = fs_breaker_record(&b->core, token, failure ? FS_BR_FAILURE : FS_BR_SUCCESS,
                                    duration, now);
    if (asked_ns >= 0) {
        tr |= fs_breaker_trip(&b->core, now, asked_ns);    /* the dependency's own break */
    }
    b->base.counters[failure ? C_FAILURE : C_SUCCESS]++;
    return breaker_events(b, failure ? EV_FAILURE : EV_SUCCESS, exc, old, tr);
}

/* ------------------------------------------------------------------------------------------ */
/* Policy hooks */

/* One decision: the admission itself (a token, or BreakerFailing) is taken here and rides in
 * the record into the call (c->pword), which gives it back if abandoned. */
static fs_verdict breaker_admit(FsPolicy *p, fs_admission *a, PyObject *const *Py_UNUSED(args),
                                size_t Py_UNUSED(nargsf), PyObject *Py_UNUSED(kwnames))
{
    FsBreaker *b = (FsBreaker *)p;
    if (b->gate) {
        return FS_ADMIT_SLOW;   /* the shared state decides, in Python */
    }
    return breaker_acquire(b, &a->token, true) < 0 ? FS_ADMIT_REFUSE : FS_ADMIT_CALL;
}

/* No FsCall could be made: the token goes back. */
static void breaker_release(FsPolicy *p, fs_admission *a)
{
    fs_breaker_release(&((FsBreaker *)p)->core, a->token);
}

static int breaker_finish(FsCall *c, PyObject *result, PyObject *exc, PyObject **out)
{
    FsBreaker *b = (FsBreaker *)c->policy;
    if (exc == NULL && fs_breaker_quick_success(&b->core, c->pword)) {
        b->base.counters[C_SUCCESS]++;
        if (fs_listening(&b->base) && breaker_events(b, EV_SUCCESS, NULL, FS_BR_WORKING, 0) < 0) {
            *out = PyErr_GetRaisedException();  /* a listener's interrupt */
            return FS_NEXT_RAISE;
        }
        *out = Py_NewRef(result);
        return FS_NEXT_RETURN;
    }
    if (breaker_end(b, c->pword, c->t0_ns, exc) < 0) {
        /* The predicate's error (or a listener's interrupt) wins, chained to the call's. */
        PyObject *err = PyErr_GetRaisedException();
        fs_chain(err, exc);
        *out = err;
        return FS_NEXT_RAISE;
    }
    if (exc != NULL) {
        *out = Py_NewRef(exc);
        return FS_NEXT_RAISE;
    }
    *out = Py_NewRef(result);
    return FS_NEXT_RETURN;
}

static void breaker_abandon(FsCall *c)
{
    fs_breaker_release(&((FsBreaker *)c->policy)->core, c->pword);
    c->pword = 0;
}

static const fs_policy_ops breaker_ops = {
    .admit = breaker_admit,
    .release = breaker_release,
    .finish = breaker_finish,
    .abandon = breaker_abandon,
};

/* ------------------------------------------------------------------------------------------ */
/* Type */

static void conf_release(BreakerConf *conf)
{
    if (conf != NULL && --conf->users == 0) {
        PyMem_Free(conf);
    }
}

/* Starts b's core afresh (working, empty window) on conf, which b then uses (one more user).
 * 0, or -1 with an exception (conf unchanged). */
static int breaker_start(FsBreaker *b, BreakerConf *conf)
{
    size_t need = fs_breaker_buffer_size(&conf->cfg);
    void *buf = NULL;
    if (need > 0) {
        buf = PyMem_Malloc(need);
        if (buf == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    if (fs_breaker_init(&b->core, &conf->cfg, buf, need) < 0) {
        PyMem_Free(buf);
        PyErr_SetString(PyExc_ValueError, "inconsistent circuit breaker configuration");
        return -1;
    }
    PyMem_Free(b->window);
    b->window = buf;
    conf->users++;
    conf_release(b->conf);
    b->conf = conf;
    return 0;
}

/* A fresh working breaker on a new configuration cfg (copied). 0, or -1 with an exception. */
static int breaker_setup_core(FsBreaker *b, const fs_breaker_config *cfg)
{
    if (fs_breaker_config_check(cfg) < 0) {
        PyErr_SetString(PyExc_ValueError, "inconsistent circuit breaker configuration");
        return -1;
    }
    BreakerConf *conf = PyMem_Malloc(sizeof(BreakerConf));
    if (conf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    conf->users = 0;
    conf->cfg = *cfg;
    if (breaker_start(b, conf) < 0) {
        PyMem_Free(conf);
        return -1;
    }
    return 0;
}

/* The `async with` entries of b (made on first use), borrowed, or NULL with an exception. */
static PyObject *breaker_entries(FsBreaker *b)
{
    if (b->entries == NULL) {
        b->entries = PyDict_New();
    }
    return b->entries;
}

/* Copies the slots of self's Python class (and of its Python bases down to the C type) into
 * copy, by reference: the settings a Python subclass keeps in __slots__; not the listeners built
 * for self by listener factories (_factory_listeners: each component builds its own). */
static void breaker_copy_slots(PyObject *self, PyObject *copy, PyTypeObject *c_type)
{
    for (PyTypeObject *tp = Py_TYPE(self); tp != NULL && tp != c_type; tp = tp->tp_base) {
        PyMemberDef *m = PyType_GetSlot(tp, Py_tp_members);
        for (; m != NULL && m->name != NULL; m++) {
            if (m->type != Py_T_OBJECT_EX || (m->flags & Py_READONLY)
                || m->offset < (Py_ssize_t)sizeof(FsBreaker)
                || strcmp(m->name, "_factory_listeners") == 0) {
                continue;
            }
            PyObject **from = (PyObject **)((char *)self + m->offset);
            PyObject **to = (PyObject **)((char *)copy + m->offset);
            Py_XSETREF(*to, Py_XNewRef(*from));
        }
    }
}

/* _copy(): a fresh working breaker of self's type and configuration (the core's configuration
 * and the exception filters, break reader, name, listeners, the Python subclass's slots shared
 * by reference; a shallow copy of its __dict__ when it has one that is not empty; the metrics
 * series and latency histogram joined), none of its state: what a keyed registry makes per key
 * from a template, without re-running the Python validation. New reference, or NULL with an
 * exception (a breaker shared through a store has state outside the process: TypeError). */
static PyObject *breaker_copy(PyObject *self, PyObject *Py_UNUSED(unused))
{
    FsBreaker *t = (FsBreaker *)self;
    PyTypeObject *type = Py_TYPE(self);
    if (t->shared) {
        PyErr_SetString(PyExc_TypeError, "a breaker shared through a store has no copies");
        return NULL;
    }
    FsBreaker *b = (FsBreaker *)type->tp_alloc(type, 0);
    if (b == NULL) {
        return NULL;
    }
    b->base.name = Py_NewRef(t->base.name);
    if (fs_policy_init(&b->base, &breaker_ops, FS_PATTERN_CIRCUITBREAKER, t->base.flags,
                       "circuitbreaker")
            < 0
        || breaker_start(b, t->conf) < 0) {
        Py_DECREF(b);
        return NULL;
    }
    b->base.local_listeners = t->base.local_listeners;
    b->on = Py_XNewRef(t->on);
    b->on_pred = Py_XNewRef(t->on_pred);
    b->signal = Py_XNewRef(t->signal);
    b->refusal_args = Py_XNewRef(t->refusal_args);
    b->time_at_end = t->time_at_end;
    breaker_copy_slots(self, (PyObject *)b, t->base.st->Breaker_Type);
    if (type->tp_dictoffset != 0) {
        PyObject *attrs = PyObject_GenericGetDict(self, NULL);
        if (attrs == NULL) {
            Py_DECREF(b);
            return NULL;
        }
        if (PyDict_GET_SIZE(attrs) > 0) {   /* only what a subclass keeps outside slots */
            PyObject *copy = PyDict_Copy(attrs);
            if (copy == NULL || PyObject_GenericSetDict((PyObject *)b, copy, NULL) < 0) {
                Py_XDECREF(copy);
                Py_DECREF(attrs);
                Py_DECREF(b);
                return NULL;
            }
            Py_DECREF(copy);
        }
        Py_DECREF(attrs);
    }
    if (t->base.series != NULL && fs_series_join(&b->base, t->base.series) < 0) {
        Py_DECREF(b);
        return NULL;
    }
    b->base.latency = Py_XNewRef(t->base.latency);
    return (PyObject *)b;
}

/* _adopt(other): self becomes a fresh working breaker configured as other (another breaker,
 * configured by _configure): the core's configuration, exception filters, break reader and
 * refusal arguments shared by reference, without parsing them again. */
static PyObject *breaker_adopt(PyObject *self, PyObject *arg)
{
    FsBreaker *b = (FsBreaker *)self;
    if (!PyObject_TypeCheck(arg, b->base.st->Breaker_Type)) {
        PyErr_Format(PyExc_TypeError, "_adopt takes a breaker, not %.200s", Py_TYPE(arg)->tp_name);
        return NULL;
    }
    FsBreaker *t = (FsBreaker *)arg;
    if (t != b && breaker_start(b, t->conf) < 0) {
        return NULL;
    }
    Py_XSETREF(b->on, Py_XNewRef(t->on));
    Py_XSETREF(b->on_pred, Py_XNewRef(t->on_pred));
    Py_XSETREF(b->signal, Py_XNewRef(t->signal));
    Py_XSETREF(b->refusal_args, Py_XNewRef(t->refusal_args));
    b->time_at_end = t->time_at_end;
    b->base.flags = (b->base.flags & ~FS_POL_NEEDS_T0) | (t->base.flags & FS_POL_NEEDS_T0);
    Py_RETURN_NONE;
}

static PyObject *breaker_new(PyTypeObject *type, PyObject *Py_UNUSED(args),
                             PyObject *Py_UNUSED(kwargs))
{
    FsBreaker *b = (FsBreaker *)type->tp_alloc(type, 0);
    if (b == NULL) {
        return NULL;
    }
    if (fs_policy_init(&b->base, &breaker_ops, FS_PATTERN_CIRCUITBREAKER, 0, "circuitbreaker")
        < 0) {
        Py_DECREF(b);
        return NULL;
    }
    b->refusal_args = Py_BuildValue("(s)", REJECT_MSG);
    if (b->refusal_args == NULL) {
        Py_DECREF(b);
        return NULL;
    }
    /* failsafe-py's consecutive_breaker defaults, until _configure. */
    fs_breaker_config cfg = {
        .mode = FS_BR_CONSECUTIVE,
        .failure_threshold = 5,
        .half_open_max_calls = 3,
        .recovery_threshold = 3,
        .recovery_ns = 30000000000LL,
        .recovery_growth = 1.0,
        .max_recovery_ns = 30000000000LL,
    };
    if (breaker_setup_core(b, &cfg) < 0) {
        Py_DECREF(b);
        return NULL;
    }
    return (PyObject *)b;
}

/* _configure(*, mode, failure_threshold, failure_rate, window_size, window_ns, min_calls,
 *            slow_ns, slow_rate, half_open_max_calls, recovery_threshold, recovery_ns,
 *            recovery_growth, max_recovery_ns, on, on_pred, signal): a fresh working breaker,
 * from a BreakerOptions' values (failsafe.circuitbreaker), each checked there, naming it.
 * on_pred: None, or a predicate over a failure; signal: None, or a callable failure -> break
 * in ns (an int) or None (both trusted to be callable: calling them reports otherwise). */
static PyObject *breaker_configure(PyObject *self, PyObject *args, PyObject *kwargs)
{
    FsBreaker *b = (FsBreaker *)self;
    int mode = FS_BR_CONSECUTIVE;
    fs_int_arg failure_threshold = {"failure_threshold", 0, UINT32_MAX, 1},
               window_size = {"window_size", 0, UINT32_MAX, 1},
               min_calls = {"min_calls", 0, UINT32_MAX, 1},
               half_open = {"half_open_max_calls", 0, UINT32_MAX, 1},
               recovery_threshold = {"recovery_threshold", 0, UINT32_MAX, 1};
    double failure_rate = 1.0, slow_rate = 0.0, growth = 1.0;
    long long window_ns = 1, slow_ns = 0, recovery_ns = 0, max_recovery_ns = -1;
    PyObject *on = Py_None, *on_pred = Py_None, *signal = Py_None;
    static char *kwlist[] = {"mode", "failure_threshold", "failure_rate", "window_size",
                             "window_ns", "min_calls", "slow_ns", "slow_rate",
                             "half_open_max_calls", "recovery_threshold", "recovery_ns",
                             "recovery_growth", "max_recovery_ns", "on", "on_pred", "signal",
                             NULL};
    if (!PyArg_ParseTupleAndKeywords(
            args, kwargs, "|$iO&dO&LO&LdO&O&LdLOOO:_configure", kwlist, &mode, fs_int_arg_conv,
            &failure_threshold, &failure_rate, fs_int_arg_conv, &window_size, &window_ns,
            fs_int_arg_conv, &min_calls, &slow_ns, &slow_rate, fs_int_arg_conv, &half_open,
            fs_int_arg_conv, &recovery_threshold, &recovery_ns, &growth, &max_recovery_ns, &on,
            &on_pred, &signal)) {
        return NULL;
    }
    /* Kept for direct _native use: the matching reads on as a tuple without checking. The
     * core's check (breaker_setup_core) refuses a mode or figures out of its range, under one
     * message; the uint32 counts are range-checked as they are converted. */
    if (on != Py_None && !PyTuple_Check(on)) {
        PyErr_SetString(PyExc_TypeError, "on must be a tuple of exception classes or None");
        return NULL;
    }
    fs_breaker_config cfg = {
        .mode = (fs_br_mode)mode,
        .failure_threshold = (uint32_t)failure_threshold.value,
        .failure_rate = failure_rate,
        .window_size = (uint32_t)window_size.value,
        .window_ns = window_ns,
        .min_calls = (uint32_t)min_calls.value,
        .slow_ns = slow_ns,
        .slow_rate = slow_rate,
        .half_open_max_calls = (uint32_t)half_open.value,
        .recovery_threshold = (uint32_t)recovery_threshold.value,
        .recovery_ns = recovery_ns,
        .recovery_growth = growth,
        .max_recovery_ns = max_recovery_ns < 0 ? recovery_ns : max_recovery_ns,
    };
    if (breaker_setup_core(b, &cfg) < 0) {
        return NULL;
    }
    Py_XSETREF(b->on, on == Py_None ? NULL : Py_NewRef(on));
    Py_XSETREF(b->on_pred, on_pred == Py_None ? NULL : Py_NewRef(on_pred));
    Py_XSETREF(b->signal, signal == Py_None ? NULL : Py_NewRef(signal));
    /* A window may trip on a success too, and the break starts at that time. */
    b->time_at_end = mode != FS_BR_CONSECUTIVE || slow_ns > 0;
    if (slow_ns > 0) {
        b->base.flags |= FS_POL_NEEDS_T0;
    }
    else {
        b->base.flags &= ~FS_POL_NEEDS_T0;
    }
    Py_RETURN_NONE;
}

/* The key of the running task's `async with` entries: the task, or None outside one (a
 * coroutine driven by hand). New reference, or NULL with an error. */
static PyObject *breaker_task_key(fs_state *st)
{
    PyObject *loop = PyObject_Vectorcall(st->get_running_loop, NULL, 0, NULL);
    if (loop == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_RuntimeError)) {
            return NULL;
        }
        PyErr_Clear();
        return Py_NewRef(Py_None);
    }
    PyObject *task;
    if (st->current_tasks != NULL) {
        task = Py_XNewRef(PyDict_GetItemWithError(st->current_tasks, loop));
        if (task == NULL && !PyErr_Occurred()) {
            task = Py_NewRef(Py_None);
        }
    }
    else {
        task = PyObject_CallOneArg(st->current_task, loop);
    }
    Py_DECREF(loop);
    return task;
}

/* __aenter__(): the admission (BreakerFailing when rejected), kept for this task's __aexit__
 * as two ints in its stack (token, t0_ns). Returns an awaitable that gives back self. */
static PyObject *breaker_aenter_impl(PyObject *self)
{
    FsBreaker *b = (FsBreaker *)self;
    fs_state *st = b->base.st;
    uint64_t token;
    if (breaker_acquire(b, &token, false) < 0) {
        return NULL;
    }
    int64_t t0 = (b->base.flags & FS_POL_NEEDS_T0) ? fs_now_ns(st) : 0;
    PyObject *key = breaker_task_key(st);
    PyObject *tok = PyLong_FromUnsignedLongLong(token);
    PyObject *start = PyLong_FromLongLong(t0);
    PyObject *stack = NULL;
    int ok = key != NULL && tok != NULL && start != NULL;
    if (ok) {
        PyObject *entries = breaker_entries(b);
        stack = entries == NULL ? NULL : Py_XNewRef(PyDict_GetItemWithError(entries, key));
        if (stack == NULL && !PyErr_Occurred()) {
            stack = PyList_New(0);
            ok = stack != NULL && PyDict_SetItem(entries, key, stack) == 0;
        }
        ok = ok && stack != NULL && PyList_Append(stack, tok) == 0
             && PyList_Append(stack, start) == 0;
    }
    Py_XDECREF(key);
    Py_XDECREF(tok);
    Py_XDECREF(start);
    Py_XDECREF(stack);
    if (!ok) {
        fs_breaker_release(&b->core, token);
        return NULL;
    }
    return fs_done_new(st, Py_NewRef(self));
}

static PyObject *breaker_aenter(PyObject *self, PyObject *Py_UNUSED(unused))
{
    return fs_block_entered(&((FsBreaker *)self)->base, breaker_aenter_impl(self));
}

/* __aexit__(exc_type, exc, tb): this task's innermost entry ends with exc (None: completed).
 * Never suppresses the exception. */
static PyObject *breaker_aexit_impl(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    FsBreaker *b = (FsBreaker *)self;
    fs_state *st = b->base.st;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "__aexit__ takes 3 arguments");
        return NULL;
    }
    PyObject *key = breaker_task_key(st);
    if (key == NULL) {
        return NULL;
    }
    PyObject *stack = b->entries == NULL ? NULL : PyDict_GetItemWithError(b->entries, key);
    Py_ssize_t n = stack != NULL ? PyList_GET_SIZE(stack) : 0;
    if (n < 2) {
        Py_DECREF(key);
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_RuntimeError,
                            "CircuitBreaker.__aexit__ without a matching __aenter__ in this task");
        }
        return NULL;
    }
    uint64_t token = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(stack, n - 2));
    int64_t t0 = PyLong_AsLongLong(PyList_GET_ITEM(stack, n - 1));
    int rc = n == 2 ? PyDict_DelItem(b->entries, key) : PyList_SetSlice(stack, n - 2, n, NULL);
    Py_DECREF(key);
    if (rc < 0) {
        return NULL;
    }
    PyObject *exc = args[1] == Py_None ? NULL : args[1];
    if (exc != NULL && !PyExceptionInstance_Check(exc)) {
        fs_breaker_release(&b->core, token);
        PyErr_SetString(PyExc_TypeError, "__aexit__: exc must be an exception or None");
        return NULL;
    }
    if (breaker_end(b, token, t0, exc) < 0) {
        return NULL;
    }
    return Py_NewRef(st->ready_none);
}

static PyObject *breaker_aexit(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *r = breaker_aexit_impl(self, args, nargs);
    fs_block_exited(&((FsBreaker *)self)->base, r, nargs == 3 ? args[1] : Py_None);
    return r;
}

/* _enter() -> token: admission of an `async with` block (BreakerFailing when rejected). */
static PyObject *breaker_enter(PyObject *self, PyObject *Py_UNUSED(unused))
{
    uint64_t token;
    if (breaker_acquire((FsBreaker *)self, &token, false) < 0) {
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(token);
}

/* _exit(token, t0_ns, exc): the end of an `async with` block (exc None: it completed). */
static PyObject *breaker_exit(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "_exit(token, t0_ns, exc) takes 3 arguments");
        return NULL;
    }
    unsigned long long token = PyLong_AsUnsignedLongLong(args[0]);
    if (token == (unsigned long long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    long long t0 = PyLong_AsLongLong(args[1]);
    if (t0 == -1 && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *exc = args[2] == Py_None ? NULL : args[2];
    if (exc != NULL && !PyExceptionInstance_Check(exc)) {
        PyErr_SetString(PyExc_TypeError, "exc must be an exception or None");
        return NULL;
    }
    if (breaker_end((FsBreaker *)self, (uint64_t)token, (int64_t)t0, exc) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *breaker_isolate(PyObject *self, PyObject *Py_UNUSED(unused))
{
    FsBreaker *b = (FsBreaker *)self;
    int old = b->core.state;
    unsigned tr = fs_breaker_isolate(&b->core, fs_now_ns(b->base.st));
    if (breaker_events(b, EV_NONE, NULL, old, tr) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* _trip(break_ns): opens the breaker now for break_ns (fs_breaker_trip). */
static PyObject *breaker_trip(PyObject *self, PyObject *arg)
{
    FsBreaker *b = (FsBreaker *)self;
    long long ns = PyLong_AsLongLong(arg);
    if (ns == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (ns < 0) {
        PyErr_SetString(PyExc_ValueError, "break_ns must be >= 0");
        return NULL;
    }
    int old = b->core.state;
    unsigned tr = fs_breaker_trip(&b->core, fs_now_ns(b->base.st), (int64_t)ns);
    if (breaker_events(b, EV_NONE, NULL, old, tr) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *breaker_reset(PyObject *self, PyObject *Py_UNUSED(unused))
{
    FsBreaker *b = (FsBreaker *)self;
    int old = b->core.state;
    unsigned tr = fs_breaker_reset(&b->core);
    if (breaker_events(b, EV_NONE, NULL, old, tr) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *breaker_state(PyObject *self, PyObject *Py_UNUSED(unused))
{
    return PyLong_FromLong(((FsBreaker *)self)->core.state);
}

static PyObject *breaker_holds_state(PyObject *self, PyObject *Py_UNUSED(unused))
{
    FsBreaker *b = (FsBreaker *)self;
    return PyBool_FromLong(fs_breaker_holds_state(&b->core, fs_now_ns(b->base.st)));
}

/* _snapshot() -> (state, isolated, consecutive, calls, failures, slow, probes,
 *                 probe_successes, retry_after_ns or -1, openings) at the current time. */
static PyObject *breaker_snapshot(PyObject *self, PyObject *Py_UNUSED(unused))
{
    FsBreaker *b = (FsBreaker *)self;
    fs_breaker *k = &b->core;
    int64_t now = fs_now_ns(b->base.st);
    fs_breaker_expire(k, now);
    return Py_BuildValue("(iiIIIIIILI)", (int)k->state, k->isolated, k->consecutive, k->calls,
                         k->failures, k->slow, k->probes, k->probe_successes,
                         (long long)fs_breaker_retry_after(k, now), k->openings);
}

static int breaker_traverse(PyObject *self, visitproc visit, void *arg)
{
    FsBreaker *b = (FsBreaker *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(b->on);
    Py_VISIT(b->on_pred);
    Py_VISIT(b->entries);
    Py_VISIT(b->signal);
    Py_VISIT(b->refusal_args);
    return fs_policy_traverse(&b->base, visit, arg);
}

static int breaker_clear(PyObject *self)
{
    fs_policy_clear_events((FsPolicy *)self);
    FsBreaker *b = (FsBreaker *)self;
    Py_CLEAR(b->on);
    Py_CLEAR(b->on_pred);
    Py_CLEAR(b->entries);
    Py_CLEAR(b->signal);
    Py_CLEAR(b->refusal_args);
    Py_CLEAR(b->base.name);
    return 0;
}

static void breaker_dealloc(PyObject *self)
{
    FsBreaker *b = (FsBreaker *)self;
    PyMem_Free(b->window);
    b->window = NULL;
    conf_release(b->conf);
    b->conf = NULL;
    fs_policy_dealloc(self, breaker_clear);
}

static PyMemberDef breaker_members[] = {
    FS_POLICY_MEMBERS,
    {"_entries", Py_T_OBJECT_EX, offsetof(FsBreaker, entries), Py_READONLY,
     "async with entries per task"},
    {"_shared", Py_T_INT, offsetof(FsBreaker, shared), 0, "1: a trip calls self._tripped()"},
    {"_gate", Py_T_INT, offsetof(FsBreaker, gate), 0, "1: calls go to self._call_slow"},
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef breaker_methods[] = {
    FS_POLICY_METHODS,
    {"_configure", (PyCFunction)(void (*)(void))breaker_configure, METH_VARARGS | METH_KEYWORDS,
     "Sets up a fresh working breaker."},
    {"_adopt", breaker_adopt, METH_O,
     "Becomes a fresh working breaker configured as the breaker given."},
    {"_copy", breaker_copy, METH_NOARGS,
     "A fresh working breaker of this one's type and configuration, none of its state."},
    {"__aenter__", breaker_aenter, METH_NOARGS, "Admission of an async with block."},
    {"__aexit__", (PyCFunction)(void (*)(void))breaker_aexit, METH_FASTCALL,
     "The end of an async with block: its outcome."},
    {"_enter", breaker_enter, METH_NOARGS, "Admission of an async with block: a token."},
    {"_exit", (PyCFunction)(void (*)(void))breaker_exit, METH_FASTCALL,
     "_exit(token, t0_ns, exc): the end of an async with block."},
    {"isolate", breaker_isolate, METH_NOARGS,
     "Forces the breaker open (failing) until reset(); rejections carry no retry_after."},
    {"_trip", breaker_trip, METH_O, "Opens the breaker now for break_ns nanoseconds."},
    {"reset", breaker_reset, METH_NOARGS,
     "Closes the breaker (working) with an empty window, ending any isolation."},
    {"_state", breaker_state, METH_NOARGS, "0 working, 1 recovering, 2 failing."},
    {"_holds_state", breaker_holds_state, METH_NOARGS,
     "True when forgetting this breaker would lose information."},
    {"_snapshot", breaker_snapshot, METH_NOARGS, "The state machine's figures."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot breaker_slots[] = {
    {Py_tp_new, breaker_new},
    {Py_tp_members, breaker_members},
    {Py_tp_methods, breaker_methods},
    {Py_tp_traverse, breaker_traverse},
    {Py_tp_clear, breaker_clear},
    {Py_tp_dealloc, breaker_dealloc},
    {0, NULL},
};

static PyType_Spec breaker_spec = {
    .name = "failsafe._native.Breaker",
    .basicsize = sizeof(FsBreaker),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .slots = breaker_slots,
};

/* The breaker's facts Python reads instead of restating: BREAKER_STATES (names by
 * fs_br_state), BREAKER_MODES, BREAKER_TRANSITIONS (the FS_BR_TO_* bits of _events) and
 * BREAKER_EVENTS (the event kinds of _events). */
static int breaker_add_facts(PyObject *module)
{
    static const char *const states[] = {
        [FS_BR_WORKING] = "working", [FS_BR_RECOVERING] = "recovering", [FS_BR_FAILING] = "failing"};
    PyObject *facts[4] = {
        Py_BuildValue("(sss)", states[0], states[1], states[2]),
        Py_BuildValue("{sisisi}", "consecutive", FS_BR_CONSECUTIVE, "count_window",
                      FS_BR_COUNT_WINDOW, "time_window", FS_BR_TIME_WINDOW),
        Py_BuildValue("{sIsIsI}", "working", FS_BR_TO_WORKING, "recovering", FS_BR_TO_RECOVERING,
                      "failing", FS_BR_TO_FAILING),
        Py_BuildValue("{sisisi}", "success", EV_SUCCESS, "failure", EV_FAILURE, "rejected",
                      EV_REJECTED),
    };
    static const char *const names[4] = {"BREAKER_STATES", "BREAKER_MODES",
                                         "BREAKER_TRANSITIONS", "BREAKER_EVENTS"};
    int rc = 0;
    for (int i = 0; i < 4; i++) {
        if (rc == 0 && (facts[i] == NULL || PyModule_AddObjectRef(module, names[i], facts[i]) < 0)) {
            rc = -1;
        }
        Py_XDECREF(facts[i]);
    }
    return rc;
}

static int breaker_part_setup(PyObject *module, fs_state *st)
{
    if (fs_breaker_failing_setup(module) < 0 || breaker_add_facts(module) < 0) {
        return -1;
    }
    return fs_policy_type_add(module, st, &breaker_spec, &st->Breaker_Type);
}

static int breaker_part_traverse(fs_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->Breaker_Type);
    return 0;
}

static void breaker_part_clear(fs_state *st)
{
    Py_CLEAR(st->Breaker_Type);
}

const fs_part fs_breaker_part = {
    .name = "circuitbreaker",
    .pattern = FS_PATTERN_CIRCUITBREAKER,
    .metrics = breaker_metrics,
    .setup = breaker_part_setup,
    .traverse = breaker_part_traverse,
    .clear = breaker_part_clear,
};
