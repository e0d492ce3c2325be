/* hedge: the first attempt of a hedged call runs inline in the caller's task, under a deadline
 * in the per-loop C heap of timerqueue.c. When it answers before the hedge delay the call costs
 * about what a timeout costs: no task, no loop timer. When the delay passes first, the deadline
 * starts the Python race (failsafe.hedge._Race), which launches the next attempts as tasks while
 * the first one keeps running inline; when the first attempt ends, the race settles the call.
 *
 * The deadline is the hedge delay when another attempt may follow and comes before the call's
 * timeout; otherwise it is the timeout itself (or none), a cancelling deadline with
 * asyncio.timeout's rules that raises HedgeTimeout. */
#include "fs_binding.h"

#include <math.h>
#include <stddef.h>

#include "fs_quantile.h"

enum { H_SUCCESS = 0, H_FAILURE, H_ALL_FAILED, H_TIMEOUT, H_HEDGED };
static const char *const hedge_metrics[] = {"success", "failure", "all_failed", "timeout",
    "hedged", NULL};

/* c->pword of a call: its deadline starts the next attempt (else it cancels, or is none). */
#define H_CALL_HEDGES 1u

typedef struct HedgeObject {
    FsPolicy base;
    double delay;       /* seconds before the next attempt starts */
    double timeout;     /* seconds the whole call may take; +inf: unbounded */
    long attempts;      /* attempts in all, >= 1 */
    FsBudgetObject *budget; /* or NULL: every call deposits, every later attempt withdraws */
    /* Adaptive delay (lat != NULL): the pct-quantile of the latencies of successful attempts
     * in the window, or fallback while fewer than min_samples are in it. Recomputed every
     * H_REFRESH_SAMPLES samples or H_REFRESH_NS, not per call (at each new sample while
     * warming up, which only counts them). */
    fs_quantile *lat;       /* owned (PyMem) */
    double pct;             /* in (0, 1] */
    double fallback;        /* seconds */
    uint64_t min_samples;
    double cur;             /* the delay last computed, seconds */
    int64_t cur_at;         /* when, ns; -1: never */
    uint32_t since;         /* samples recorded since */
    int warm;               /* min_samples were in the window then: cur is a quantile */
} HedgeObject;

#define H_REFRESH_SAMPLES 16u
#define H_REFRESH_NS 100000000LL

/* The delay of a call starting at now_ns. */
static double hedge_delay(HedgeObject *h, int64_t now_ns)
{
    if (h->lat == NULL) {
        return h->delay;
    }
    if (h->since >= H_REFRESH_SAMPLES || (h->since && !h->warm) || h->cur_at < 0
        || now_ns - h->cur_at >= H_REFRESH_NS) {
        h->since = 0;
        h->cur_at = now_ns;
        h->cur = h->fallback;
        h->warm = fs_quantile_count(h->lat, now_ns) >= h->min_samples;
        if (h->warm) {
            int64_t v = fs_quantile_value(h->lat, now_ns, h->pct);
            if (v >= 0) {
                h->cur = (double)v / 1e9;
            }
        }
    }
    return h->cur;
}

static void hedge_record(HedgeObject *h, int64_t now_ns, int64_t latency_ns)
{
    fs_quantile_record(h->lat, now_ns, latency_ns);
    h->since++;
}

/* 0 (fn's own coroutine) never: every call is observed. All attempts at once (delay 0) start
 * as tasks from Python, and so does every hedged call while failsafe.testing changes how waits
 * go (fs_test_waits): its delays are then waited through failsafe.testing.sleep, on the clock
 * latencies are measured on. */
static fs_verdict hedge_admit(FsPolicy *p, fs_admission *Py_UNUSED(a),
                              PyObject *const *Py_UNUSED(args), size_t Py_UNUSED(nargsf),
                              PyObject *Py_UNUSED(kwnames))
{
    HedgeObject *h = (HedgeObject *)p;
    if (h->budget != NULL) {
        fs_budget_deposit(&h->budget->b, fs_now_ns(p->st));
    }
    return h->attempts > 1 && (h->delay <= 0.0 || fs_test_waits(p->st)) ? FS_ADMIT_SLOW : 1;
}

static int hedge_fire(FsTimerEntry *e);

static int hedge_init_call(FsCall *c, fs_admission *Py_UNUSED(a))
{
    HedgeObject *h = (HedgeObject *)c->policy;
    double delay = hedge_delay(h, c->t0_ns);
    int hedges = h->attempts > 1 && delay < h->timeout;
    c->timeout_s = hedges ? delay : h->timeout;  /* the deadline's delay, until started */
    c->pword = hedges ? H_CALL_HEDGES : 0;
    fs_timer_init(&c->entry, (PyObject *)c, hedges ? hedge_fire : NULL);
    return 0;
}

static int hedge_start(FsCall *c)
{
    double now;
    if (fs_timer_enter(c->policy->st, &c->entry, c->timeout_s, &now) < 0) {
        return -1;
    }
    c->timeout_s = now;     /* the call's start in the loop's clock, for the race */
    return 0;
}

/* policy._race(task, fn, args, kwargs, t0, c0, t0_ns): the Python race of call c (new
 * reference). */
static PyObject *hedge_race(FsCall *c, PyObject *task)
{
    PyObject *args, *kwargs;
    if (fs_call_unpack_args(c, &args, &kwargs) < 0) {
        return NULL;
    }
    PyObject *race = PyObject_CallMethod((PyObject *)c->policy, "_race", "OOOOdnL", task, c->fn,
                                         args, kwargs, c->timeout_s, c->entry.cancelling0,
                                         (long long)c->t0_ns);
    Py_DECREF(args);
    Py_DECREF(kwargs);
    return race;
}

/* The delay passed with the first attempt still running: start the race. Runs in a loop
 * callback; the owner (the call) is kept alive by the caller. */
static int hedge_fire(FsTimerEntry *e)
{
    FsCall *c = (FsCall *)e->owner;
    if (c->state != FS_CALL_RUNNING || c->pobj != NULL || e->task == NULL) {
        return 0;
    }
    PyObject *race = hedge_race(c, e->task);
    if (race == NULL) {
        return -1;
    }
    c->pobj = race;
    PyObject *r = PyObject_CallMethod(race, "_fire", NULL);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

static int hedge_finish(FsCall *c, PyObject *result, PyObject *exc, PyObject **out)
{
    HedgeObject *h = (HedgeObject *)c->policy;
    fs_state *st = h->base.st;
    PyObject *task = Py_XNewRef(c->entry.task);
    PyObject *te = NULL;
    int r = fs_timer_exit(st, &c->entry, exc, FS_E_HEDGE_TIMEOUT, &te);
    if (r < 0) {
        Py_XDECREF(task);
        return -1;
    }
    if (r != 0) {
        /* The call's timeout cancelled the only attempt. */
        Py_XDECREF(task);
        h->base.counters[H_TIMEOUT]++;
        if (fs_listening(&h->base) && fs_emit(&h->base, "on_hedge_timeout", NULL) < 0) {
            Py_XDECREF(te);
            return -1;
        }
        *out = te != NULL ? te : Py_NewRef(exc);
        return FS_NEXT_RAISE;
    }
    if (c->pobj != NULL) {
        /* Racing: the race decides, and awaits every attempt before it answers. */
        Py_XDECREF(task);
        *out = PyObject_CallMethod(c->pobj, "_settle", "OO", result ? result : Py_None,
                                   exc ? exc : Py_None);
        return *out == NULL ? -1 : FS_NEXT_CONTINUE;
    }
    if (exc == NULL) {
        Py_XDECREF(task);
        if (h->lat != NULL) {
            int64_t now = fs_now_ns(st);
            hedge_record(h, now, now - c->t0_ns);
        }
        h->base.counters[H_SUCCESS]++;
        if (fs_event_wanted(&h->base, "on_hedge_success")) {
            PyObject *args = PyTuple_Pack(1, result);
            if (args == NULL || fs_emit(&h->base, "on_hedge_success", args) < 0) {
                return -1;
            }
        }
        *out = Py_NewRef(result);
        return FS_NEXT_RETURN;
    }
    if (!PyErr_GivenExceptionMatches(exc, PyExc_Exception) || task == NULL) {
        /* Cancelled (never a failure), or KeyboardInterrupt and the like. */
        Py_XDECREF(task);
        *out = Py_NewRef(exc);
        return FS_NEXT_RAISE;
    }
    /* The first attempt failed: the next one starts at once, in the race. */
    PyObject *race = hedge_race(c, task);
    Py_DECREF(task);
    if (race == NULL) {
        return -1;
    }
    *out = PyObject_CallMethod(race, "_settle", "OO", Py_None, exc);
    Py_DECREF(race);
    return *out == NULL ? -1 : FS_NEXT_CONTINUE;
}

static void hedge_abandon(FsCall *c)
{
    fs_state *st = c->policy->st;
    if (c->pobj != NULL) {
        /* Closed while racing: the other attempts go too. */
        PyObject *r = PyObject_CallMethod(c->pobj, "_abandon", NULL);
        if (r == NULL) {
            PyErr_WriteUnraisable(c->pobj);
        }
        Py_XDECREF(r);
    }
    fs_timer_abandon(st, &c->entry);
}

static int hedge_traverse_call(FsCall *c, visitproc visit, void *arg)
{
    Py_VISIT(c->entry.task);
    Py_VISIT(c->entry.queue);
    return 0;
}

static const fs_policy_ops hedge_ops = {
    .admit = hedge_admit,
    .init_call = hedge_init_call,
    .start = hedge_start,
    .finish = hedge_finish,
    .abandon = hedge_abandon,
    .traverse = hedge_traverse_call,
};

/* ------------------------------------------------------------------------------------------ */
/* The policy type */

/* Arguments are read by __init__, so Python subclasses may take their own. */
static PyObject *hedge_new(PyTypeObject *type, PyObject *Py_UNUSED(args),
                           PyObject *Py_UNUSED(kwargs))
{
    HedgeObject *h = (HedgeObject *)type->tp_alloc(type, 0);
    if (h == NULL) {
        return NULL;
    }
    h->attempts = 2;
    h->delay = 0.0;
    h->timeout = INFINITY;
    h->cur_at = -1;
    if (fs_policy_init(&h->base, &hedge_ops, FS_PATTERN_HEDGE, FS_POL_KEEP_ARGS, "hedge") < 0) {
        Py_DECREF(h);
        return NULL;
    }
    return (PyObject *)h;
}

/* Hedge(attempts, delay, timeout, budget): a HedgeOptions' values, each checked there, naming
 * it (timeout None: none; budget None or a RetryBudget). */
static int hedge_init(PyObject *self, PyObject *args, PyObject *kwargs)
{
    HedgeObject *h = (HedgeObject *)self;
    static char *kwlist[] = {"attempts", "delay", "timeout", "budget", NULL};
    fs_int_arg attempts = {"attempts", 1, LONG_MAX, 2};
    double delay = 0.0;
    PyObject *timeout = Py_None, *budget = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O&dOO:Hedge", kwlist, fs_int_arg_conv,
                                     &attempts, &delay,
                                     &timeout, &budget)) {
        return -1;
    }
    /* Kept for direct _native use: the budget is read as a RetryBudget's struct, and the
     * delays become timer deadlines (a NaN or negative one is none). */
    if (budget != Py_None && !PyObject_TypeCheck(budget, h->base.st->Budget_Type)) {
        PyErr_SetString(PyExc_TypeError, "budget must be a RetryBudget or None");
        return -1;
    }
    double t = INFINITY;
    if (timeout != Py_None) {
        t = PyFloat_AsDouble(timeout);
        if (t == -1.0 && PyErr_Occurred()) {
            return -1;
        }
    }
    if (!(delay >= 0.0) || !isfinite(delay) || !(t > 0.0)) {
        PyErr_SetString(PyExc_ValueError, "Hedge: out of the core's range");
        return -1;
    }
    h->attempts = (long)attempts.value;
    h->delay = delay;
    h->timeout = t;
    Py_XSETREF(h->budget, budget == Py_None ? NULL : (FsBudgetObject *)Py_NewRef(budget));
    return 0;
}

static PyObject *hedge_get_attempts(PyObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(((HedgeObject *)self)->attempts);
}

static PyObject *hedge_get_delay(PyObject *self, void *Py_UNUSED(closure))
{
    HedgeObject *h = (HedgeObject *)self;
    return PyFloat_FromDouble(hedge_delay(h, h->lat ? fs_now_ns(h->base.st) : 0));
}

/* _adapt(pct, fallback, window_ns, min_samples): the delay follows the pct-quantile (0 < pct
 * <= 1) of successful attempts' latencies in the last window_ns, fallback (> 0 seconds) until
 * min_samples are in the window. Checked by failsafe.hedge's percentile(), naming each. */
static PyObject *hedge_adapt(PyObject *self, PyObject *args)
{
    HedgeObject *h = (HedgeObject *)self;
    double pct, fallback;
    long long window_ns;
    fs_int_arg min_samples = {"min_samples", 1, INT64_MAX, 0};
    if (!PyArg_ParseTuple(args, "ddLO&:_adapt", &pct, &fallback, &window_ns, fs_int_arg_conv,
                          &min_samples)) {
        return NULL;
    }
    /* Kept for direct _native use: the quantile's contract, and a delay that converts to ns. */
    if (!(pct > 0.0 && pct <= 1.0) || !(fallback > 0.0) || !isfinite(fallback)) {
        PyErr_SetString(PyExc_ValueError, "_adapt: out of the core's range");
        return NULL;
    }
    fs_quantile *lat = h->lat != NULL ? h->lat : PyMem_Malloc(sizeof(fs_quantile));
    if (lat == NULL) {
        return PyErr_NoMemory();
    }
    if (fs_quantile_init(lat, window_ns) < 0) {
        if (lat != h->lat) {
            PyMem_Free(lat);
        }
        PyErr_SetString(PyExc_ValueError, "_adapt: out of the core's range");
        return NULL;
    }
    h->lat = lat;
    h->pct = pct;
    h->fallback = fallback;
    h->delay = fallback;
    h->min_samples = (uint64_t)min_samples.value;
    h->cur_at = -1;
    h->since = 0;
    h->warm = 0;
    h->base.flags |= FS_POL_NEEDS_T0;
    Py_RETURN_NONE;
}

/* _record(latency_ns): one successful attempt's latency, from the Python race. */
static PyObject *hedge_record_py(PyObject *self, PyObject *arg)
{
    HedgeObject *h = (HedgeObject *)self;
    long long ns = PyLong_AsLongLong(arg);
    if (ns == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (h->lat != NULL) {
        hedge_record(h, fs_now_ns(h->base.st), ns);
    }
    Py_RETURN_NONE;
}

static PyObject *hedge_get_budget(PyObject *self, void *Py_UNUSED(closure))
{
    PyObject *b = (PyObject *)((HedgeObject *)self)->budget;
    return Py_NewRef(b != NULL ? b : Py_None);
}

static PyObject *hedge_get_timeout(PyObject *self, void *Py_UNUSED(closure))
{
    double t = ((HedgeObject *)self)->timeout;
    if (t == INFINITY) {
        Py_RETURN_NONE;
    }
    return PyFloat_FromDouble(t);
}

static int hedge_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(((HedgeObject *)self)->budget);
    return fs_policy_traverse((FsPolicy *)self, visit, arg);
}

static int hedge_clear(PyObject *self)
{
    fs_policy_clear_events((FsPolicy *)self);
    Py_CLEAR(((HedgeObject *)self)->budget);
    Py_CLEAR(((FsPolicy *)self)->name);
    return 0;
}

static void hedge_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    PyMem_Free(((HedgeObject *)self)->lat);
    fs_policy_clear((FsPolicy *)self);
    hedge_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMemberDef hedge_members[] = {
    FS_POLICY_MEMBERS,
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef hedge_getset[] = {
    {"attempts", hedge_get_attempts, NULL, "attempts in all, the first one included", NULL},
    {"delay", hedge_get_delay, NULL,
     "seconds without success before the next attempt (now, when it adapts)", NULL},
    {"timeout", hedge_get_timeout, NULL, "seconds the whole call may take, or None", NULL},
    {"budget", hedge_get_budget, NULL, "the RetryBudget later attempts draw from, or None", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef hedge_methods[] = {
    FS_POLICY_METHODS,
    {"_adapt", hedge_adapt, METH_VARARGS, "Makes the delay follow a latency quantile."},
    {"_record", hedge_record_py, METH_O, "Records a successful attempt's latency (ns)."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot hedge_slots[] = {
    {Py_tp_doc, "Hedge(attempts=2, delay=0.0, timeout=None): the C base of failsafe's hedge."},
    {Py_tp_new, hedge_new},
    {Py_tp_init, hedge_init},
    {Py_tp_members, hedge_members},
    {Py_tp_getset, hedge_getset},
    {Py_tp_methods, hedge_methods},
    {Py_tp_traverse, hedge_traverse},
    {Py_tp_clear, hedge_clear},
    {Py_tp_dealloc, hedge_dealloc},
    {0, NULL},
};

static PyType_Spec hedge_spec = {
    .name = "failsafe._native.Hedge",
    .basicsize = sizeof(HedgeObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .slots = hedge_slots,
};

static int hedge_setup(PyObject *module, fs_state *st)
{
    st->Hedge_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &hedge_spec, NULL);
    if (st->Hedge_Type == NULL || fs_register_policy_type(st, st->Hedge_Type) < 0) {
        return -1;
    }
    return PyModule_AddType(module, st->Hedge_Type);
}

static int hedge_part_traverse(fs_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->Hedge_Type);
    return 0;
}

static void hedge_part_clear(fs_state *st)
{
    Py_CLEAR(st->Hedge_Type);
}

const fs_part fs_hedge_part = {
    .name = "hedge",
    .pattern = FS_PATTERN_HEDGE,
    .metrics = hedge_metrics,
    .setup = hedge_setup,
    .traverse = hedge_part_traverse,
    .clear = hedge_part_clear,
};
