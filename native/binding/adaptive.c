/* Adaptive load control: the adaptive concurrency limit (fs_alimit) and client-side throttling
 * (fs_throttle), as the engines of failsafe.adaptive.
 *
 * Limit: a decorated call that finds room (in flight < the current limit, and nobody queued)
 * takes a place in C and runs in an FsCall; when it ends its RTT (from the call to its end) is
 * a sample for the limit: a result is a plain sample, an exception matching drop_on a drop,
 * any other exception (CancelledError included) gives the place back without a sample. Calls
 * that find no room, and every call of a limit with priorities or tenants, go to the Python
 * slow path (_call_slow), which queues them by priority and tells C how many wait (_queued);
 * a place freed while calls wait is offered to them through self._grant().
 *
 * Throttle: a decorated call is sent (an FsCall that records its outcome when it ends: an
 * accept, or a request the dependency did not accept) or refused with the SRE probability,
 * drawn from the module's seedable RNG: admit's refusal (FS_ADMIT_REFUSE) is the Throttled
 * that failsafe.adaptive's _refusal() makes (and reports). A call that never ends (cancelled,
 * closed) counts nothing. While the window holds only accepts, most calls are sent unobserved
 * (fn's own coroutine, counted as accepted when sent; see TH_SAMPLE). */
#include "fs_binding.h"

#include <math.h>
#include <stddef.h>

#include "fs_alimit.h"
#include "fs_throttle.h"

/* Counters, and their metric names in that order (Python reads them as _native.METRICS). */
enum { AL_ADMITTED = 0, AL_REJECTED, AL_WAITED, AL_TIMED_OUT, AL_DROPPED, AL_SHED };
static const char *const al_metrics[] = {"admitted", "rejected", "waited", "timed_out",
                                         "dropped", "shed", NULL};
enum { TH_SENT = 0, TH_THROTTLED, TH_ACCEPTED, TH_NOT_ACCEPTED };
static const char *const th_metrics[] = {"sent", "throttled", "accepted", "not_accepted", NULL};

#define NS_PER_S 1e9

/* The end of both finish hooks: the call's own outcome, unchanged. */
static int ad_pass(PyObject *result, PyObject *exc, PyObject **out)
{
    if (exc != NULL) {
        *out = Py_NewRef(exc);
        return FS_NEXT_RAISE;
    }
    *out = Py_NewRef(result);
    return FS_NEXT_RETURN;
}

/* A read-only attribute of either type: get's closure is its index. */
#define AD_FIELD(get, name, i, doc) {name, get, NULL, doc, (void *)(intptr_t)(i)}

typedef struct LimitObject {
    FsPolicy base;
    fs_alimit core;
    Py_ssize_t queued;      /* calls waiting in the Python queue (kept by failsafe.adaptive) */
    int slow;               /* 1: every call goes to _call_slow (priorities, tenants) */
    PyObject *drop_on;      /* tuple of exception classes, or NULL */
    PyObject *drop_pred;    /* predicate over the exception, or NULL */
} LimitObject;

/* While every request in the throttle's window was accepted, one decorated call in TH_SAMPLE is
 * observed (an FsCall) and the others are sent as they are, counted as accepted when sent: an
 * observed call costs about twice a passed one. The first observed failure makes every call
 * observed until the window holds only accepts again. With an accept predicate every call is
 * observed (its outcome is what the predicate says of it). */
#define TH_SAMPLE 8

typedef struct ThrottleObject {
    FsPolicy base;
    fs_throttle core;
    int slow;               /* 1: every call goes to _call_slow (priorities) */
    unsigned int unobserved; /* calls that may still be sent unobserved before the next sample */
    PyObject *accept;       /* accept(result, exc) -> bool, or NULL: accepted iff it returned */
} ThrottleObject;

/* ------------------------------------------------------------------------------------------ */
/* Limit: the FsCall hooks */

/* Offers freed places to the queued calls (Python). Never raises: runs from finish and
 * abandon, which keep the call's own outcome. */
static void al_grant(LimitObject *l)
{
    if (l->queued <= 0 || !fs_alimit_has_room(&l->core)) {
        return;
    }
    PyObject *saved = PyErr_GetRaisedException();
    PyObject *r = PyObject_CallMethod((PyObject *)l, "_grant", NULL);
    if (r == NULL) {
        PyErr_WriteUnraisable((PyObject *)l);
    }
    Py_XDECREF(r);
    PyErr_SetRaisedException(saved);
}

/* A place given back without a sample, offered to the queue. */
static void al_give_back(LimitObject *l)
{
    fs_alimit_release(&l->core);
    al_grant(l);
}

static fs_verdict al_admit(FsPolicy *p, fs_admission *Py_UNUSED(a),
                           PyObject *const *Py_UNUSED(args), size_t Py_UNUSED(nargsf),
                           PyObject *Py_UNUSED(kwnames))
{
    LimitObject *l = (LimitObject *)p;
    if (l->slow || l->queued > 0 || !fs_alimit_try_acquire(&l->core, NULL)) {
        return FS_ADMIT_SLOW;
    }
    p->counters[AL_ADMITTED]++;
    return FS_ADMIT_CALL;
}

static int al_init_call(FsCall *c, fs_admission *Py_UNUSED(a))
{
    /* The calls in flight when this one started, itself not counted. */
    uint64_t n = ((LimitObject *)c->policy)->core.inflight;
    c->pword = n > 0 ? n - 1 : 0;
    return 0;
}

/* A call holding a place ended: exc NULL (returned), else what it raised (borrowed). Samples
 * or releases, then offers the place to the queue. -1 only when a drop_on predicate failed
 * with what must propagate; its other errors are written as unraisable. */
static int al_end(LimitObject *l, int64_t t0_ns, uint64_t at, PyObject *exc)
{
    int drop = 0;
    if (exc != NULL) {
        drop = fs_exception_matches(exc, l->drop_on, l->drop_pred, 0);
        if (drop < 0) {
            if (fs_event_error((PyObject *)l) < 0) {
                al_give_back(l);
                return -1;
            }
            drop = 0;
        }
    }
    if (exc == NULL || drop) {
        fs_alimit_complete(&l->core, fs_now_ns(l->base.st) - t0_ns, at, drop != 0);
        l->base.counters[AL_DROPPED] += (uint64_t)drop;
    }
    else {
        fs_alimit_release(&l->core);
    }
    al_grant(l);
    return 0;
}

static int al_finish(FsCall *c, PyObject *result, PyObject *exc, PyObject **out)
{
    if (al_end((LimitObject *)c->policy, c->t0_ns, c->pword, exc) < 0) {
        return -1;
    }
    return ad_pass(result, exc, out);
}

/* Closed, thrown into before it started, or collected unfinished: no sample. */
static void al_abandon(FsCall *c)
{
    al_give_back((LimitObject *)c->policy);
}

/* Admitted, but no FsCall could be made: the place goes back. */
static void al_release_admission(FsPolicy *p, fs_admission *Py_UNUSED(a))
{
    al_give_back((LimitObject *)p);
}

static const fs_policy_ops al_ops = {
    .admit = al_admit,
    .release = al_release_admission,
    .init_call = al_init_call,
    .finish = al_finish,
    .abandon = al_abandon,
};

/* ------------------------------------------------------------------------------------------ */
/* Limit: primitives of the slow path and of `async with` (failsafe.adaptive) */

/* _take(): a place whatever the queue (a queued call being served, or a call of a limit with
 * priorities that found room): the calls in flight it found, or -1 when there is no room. */
static PyObject *al_take(PyObject *self, PyObject *Py_UNUSED(unused))
{
    LimitObject *l = (LimitObject *)self;
    uint64_t at = 0;
    if (!fs_alimit_try_acquire(&l->core, &at)) {
        return PyLong_FromLong(-1);
    }
    l->base.counters[AL_ADMITTED]++;
    return PyLong_FromUnsignedLongLong(at);
}

/* _end(t0_ns, at, exc): a call that held a place ended (exc None: it returned). */
static PyObject *al_end_method(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "_end(t0_ns, at, exc) takes 3 arguments");
        return NULL;
    }
    LimitObject *l = (LimitObject *)self;
    int64_t t0 = PyLong_AsLongLong(args[0]);
    unsigned long long at = PyLong_AsUnsignedLongLong(args[1]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (l->core.inflight == 0) {
        PyErr_SetString(PyExc_RuntimeError, "concurrency limit released more often than acquired");
        return NULL;
    }
    if (al_end(l, t0, (uint64_t)at, args[2] == Py_None ? NULL : args[2]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* _release(): a place given back without a sample (a granted call that left before running). */
static PyObject *al_release(PyObject *self, PyObject *Py_UNUSED(unused))
{
    al_give_back((LimitObject *)self);
    Py_RETURN_NONE;
}

/* _has_room(): whether a call may run now. */
static PyObject *al_has_room(PyObject *self, PyObject *Py_UNUSED(unused))
{
    return PyBool_FromLong(fs_alimit_has_room(&((LimitObject *)self)->core));
}

/* ------------------------------------------------------------------------------------------ */
/* Limit: construction, attributes, GC */

static PyObject *al_new(PyTypeObject *type, PyObject *Py_UNUSED(args), PyObject *Py_UNUSED(kw))
{
    LimitObject *l = (LimitObject *)type->tp_alloc(type, 0);
    if (l == NULL) {
        return NULL;
    }
    fs_alimit_config c;
    fs_alimit_defaults(&c, FS_AL_GRADIENT2);
    fs_alimit_init(&l->core, &c);
    if (fs_policy_init(&l->base, &al_ops, FS_PATTERN_CONCURRENCY_LIMIT, FS_POL_NEEDS_T0,
                       "concurrency_limit") < 0) {
        Py_DECREF(l);
        return NULL;
    }
    return (PyObject *)l;
}

/* AdaptiveLimit(algorithm, initial, min_limit, max_limit, smoothing, tolerance, queue_size,
 * long_window, alpha, beta, probe_multiplier, backoff_ratio, timeout, drop_on, drop_pred): numbers checked
 * by failsafe.adaptive first; out of range here is a ValueError. */
static int al_init(PyObject *self, PyObject *args, PyObject *kwargs)
{
    LimitObject *l = (LimitObject *)self;
    static char *kwlist[] = {"algorithm", "initial", "min_limit", "max_limit", "smoothing",
                             "tolerance", "queue_size", "long_window", "alpha", "beta",
                             "probe_multiplier", "backoff_ratio", "timeout", "drop_on",
                             "drop_pred", NULL};
    fs_alimit_config c;
    unsigned int long_window, probe;
    double timeout;
    PyObject *drop_on = Py_None, *drop_pred = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iddddddIddIdd|OO:AdaptiveLimit", kwlist,
                                     &c.algo, &c.initial, &c.min_limit, &c.max_limit,
                                     &c.smoothing, &c.tolerance, &c.queue_size, &long_window,
                                     &c.alpha, &c.beta, &probe, &c.backoff_ratio, &timeout, &drop_on, &drop_pred)) {
        return -1;
    }
    c.long_window = long_window;
    c.probe_multiplier = probe;
    if (!(timeout > 0.0 && timeout <= 1e9)) {
        PyErr_SetString(PyExc_ValueError, "timeout must be in (0, 1e9] seconds");
        return -1;
    }
    c.timeout_ns = (int64_t)(timeout * NS_PER_S);
    if (c.timeout_ns < 1) {
        c.timeout_ns = 1;
    }
    if (l->core.inflight != 0 || l->queued != 0) {
        PyErr_SetString(PyExc_RuntimeError, "cannot reconfigure a concurrency limit in use");
        return -1;
    }
    fs_alimit fresh;
    if (fs_alimit_init(&fresh, &c) < 0) {
        PyErr_SetString(PyExc_ValueError, "adaptive limit parameters out of range");
        return -1;
    }
    if (drop_on != Py_None && !PyTuple_Check(drop_on)) {
        PyErr_SetString(PyExc_TypeError, "drop_on must be a tuple of exception classes or None");
        return -1;
    }
    if (drop_pred != Py_None && !PyCallable_Check(drop_pred)) {
        PyErr_SetString(PyExc_TypeError, "drop_pred must be callable or None");
        return -1;
    }
    l->core = fresh;
    Py_XSETREF(l->drop_on, drop_on == Py_None ? NULL : Py_NewRef(drop_on));
    Py_XSETREF(l->drop_pred, drop_pred == Py_None ? NULL : Py_NewRef(drop_pred));
    return 0;
}

static PyObject *al_get(PyObject *self, void *closure)
{
    const fs_alimit *a = &((LimitObject *)self)->core;
    switch ((intptr_t)closure) {
    case 0:
        return PyLong_FromUnsignedLongLong(fs_alimit_current(a));
    case 1:
        return PyFloat_FromDouble(a->limit);
    case 2:
        return PyLong_FromUnsignedLongLong(a->inflight);
    case 3:
        return PyLong_FromUnsignedLongLong(a->peak_inflight);
    case 4:
        return PyLong_FromUnsignedLongLong(a->samples);
    case 5:
        return PyFloat_FromDouble((double)a->last_rtt_ns / NS_PER_S);
    case 6:
        return PyFloat_FromDouble(a->long_rtt_ns / NS_PER_S);
    case 7:
        return PyFloat_FromDouble(a->rtt_noload_ns / NS_PER_S);
    case 8:
        return PyFloat_FromDouble(a->cfg.min_limit);
    case 9:
        return PyFloat_FromDouble(a->cfg.max_limit);
    default:
        return PyLong_FromLong(a->cfg.algo);
    }
}

#define AL_FIELD(name, i, doc) AD_FIELD(al_get, name, i, doc)

static PyGetSetDef al_getset[] = {
    AL_FIELD("current", 0, "calls allowed in flight now (the limit, rounded down)"),
    AL_FIELD("limit_estimate", 1, "the limit as the algorithm keeps it (a real number)"),
    AL_FIELD("inflight", 2, "calls holding a place now"),
    AL_FIELD("peak_inflight", 3, "the most calls that held a place at once"),
    AL_FIELD("samples", 4, "samples the limit was updated with"),
    AL_FIELD("last_rtt", 5, "the last sample's RTT in seconds (0 before any)"),
    AL_FIELD("long_rtt", 6, "gradient2's long RTT average in seconds (0 before any)"),
    AL_FIELD("rtt_noload", 7, "vegas's no-load RTT in seconds (0 before any)"),
    AL_FIELD("min_limit", 8, "the lowest the limit goes"),
    AL_FIELD("max_limit", 9, "the highest the limit goes"),
    AL_FIELD("_algorithm", 10, "0 gradient2, 1 vegas, 2 aimd"),
    {NULL, NULL, NULL, NULL, NULL},
};

static int al_traverse(PyObject *self, visitproc visit, void *arg)
{
    LimitObject *l = (LimitObject *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(l->drop_on);
    Py_VISIT(l->drop_pred);
    return fs_policy_traverse(&l->base, visit, arg);
}

static int al_clear(PyObject *self)
{
    fs_policy_clear_events((FsPolicy *)self);
    LimitObject *l = (LimitObject *)self;
    Py_CLEAR(l->drop_on);
    Py_CLEAR(l->drop_pred);
    Py_CLEAR(l->base.name);
    return 0;
}

static void al_dealloc(PyObject *self)
{
    fs_policy_dealloc(self, al_clear);
}

static PyMemberDef al_members[] = {
    FS_POLICY_MEMBERS,
    {"_queued", Py_T_PYSSIZET, offsetof(LimitObject, queued), 0,
     "calls waiting in the queue (kept by the Python slow path)"},
    {"_slow", Py_T_INT, offsetof(LimitObject, slow), 0, "1: every call goes to _call_slow"},
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef al_methods[] = {
    FS_POLICY_METHODS,
    {"_take", al_take, METH_NOARGS, "A place when there is room: the calls in flight found, or -1."},
    {"_end", (PyCFunction)(void (*)(void))al_end_method, METH_FASTCALL,
     "_end(t0_ns, at, exc): a call that held a place ended."},
    {"_release", al_release, METH_NOARGS, "A place given back without a sample."},
    {"_has_room", al_has_room, METH_NOARGS, "Whether a call may run now."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot al_slots[] = {
    {Py_tp_doc, "AdaptiveLimit(...): the C engine of failsafe.adaptive.ConcurrencyLimit."},
    {Py_tp_new, al_new},
    {Py_tp_init, al_init},
    {Py_tp_members, al_members},
    {Py_tp_getset, al_getset},
    {Py_tp_methods, al_methods},
    {Py_tp_traverse, al_traverse},
    {Py_tp_clear, al_clear},
    {Py_tp_dealloc, al_dealloc},
    {0, NULL},
};

static PyType_Spec al_spec = {
    .name = "failsafe._native.AdaptiveLimit",
    .basicsize = sizeof(LimitObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .slots = al_slots,
};

/* ------------------------------------------------------------------------------------------ */
/* Throttle */

/* Whether the outcome counts as accepted: accept(result, exc) when given, else "it returned".
 * 1 or 0, or -1 with an exception that must propagate (others are written as unraisable and
 * read as not accepted). */
static int th_accepted(ThrottleObject *t, PyObject *result, PyObject *exc)
{
    if (t->accept == NULL) {
        return exc == NULL;
    }
    PyObject *args[2] = {result != NULL ? result : Py_None, exc != NULL ? exc : Py_None};
    PyObject *r = PyObject_Vectorcall(t->accept, args, 2, NULL);
    int v = r == NULL ? -1 : PyObject_IsTrue(r);
    Py_XDECREF(r);
    if (v < 0) {
        return fs_event_error((PyObject *)t) < 0 ? -1 : 0;
    }
    return v;
}

/* Records an ended call's outcome; nothing for what is not an Exception (cancelled). */
static int th_end(ThrottleObject *t, PyObject *result, PyObject *exc)
{
    if (exc != NULL && !PyObject_TypeCheck(exc, (PyTypeObject *)PyExc_Exception)) {
        return 0;
    }
    int ok = th_accepted(t, result, exc);
    if (ok < 0) {
        return -1;
    }
    fs_throttle_record(&t->core, fs_now_ns(t->base.st), ok != 0);
    t->base.counters[ok ? TH_ACCEPTED : TH_NOT_ACCEPTED]++;
    return 0;
}

static fs_verdict th_admit(FsPolicy *p, fs_admission *Py_UNUSED(a),
                           PyObject *const *Py_UNUSED(args), size_t Py_UNUSED(nargsf),
                           PyObject *Py_UNUSED(kwnames))
{
    ThrottleObject *t = (ThrottleObject *)p;
    if (t->slow) {
        return FS_ADMIT_SLOW;
    }
    int64_t now = fs_now_ns(p->st);
    if (t->unobserved > 0 && fs_throttle_pass_accepted(&t->core, now)) {
        t->unobserved--;
        p->counters[TH_SENT]++;
        p->counters[TH_ACCEPTED]++;
        return FS_ADMIT_PASS;
    }
    t->unobserved = t->accept == NULL ? TH_SAMPLE - 1 : 0;
    if (!fs_throttle_admit(&t->core, now, &p->st->rng)) {
        p->counters[TH_THROTTLED]++;
        /* Raised where the call is awaited; NULL: _refusal's own error stands. */
        fs_defer(PyObject_CallMethod((PyObject *)t, "_refusal", NULL));
        return FS_ADMIT_REFUSE;
    }
    p->counters[TH_SENT]++;
    return FS_ADMIT_CALL;
}

static int th_finish(FsCall *c, PyObject *result, PyObject *exc, PyObject **out)
{
    if (th_end((ThrottleObject *)c->policy, result, exc) < 0) {
        return -1;
    }
    return ad_pass(result, exc, out);
}

static const fs_policy_ops th_ops = {
    .admit = th_admit,
    .finish = th_finish,
};

/* _admit(scale=1.0): True to send a new call (counted as sent), False when it is refused
 * (counted as throttled and as a request of the window; the caller raises Throttled). scale
 * multiplies the refusal probability (per-call priorities). */
static PyObject *th_admit_method(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    ThrottleObject *t = (ThrottleObject *)self;
    double scale = 1.0;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "_admit(scale=1.0) takes at most 1 argument");
        return NULL;
    }
    if (nargs == 1) {
        scale = PyFloat_AsDouble(args[0]);
        if (scale == -1.0 && PyErr_Occurred()) {
            return NULL;
        }
    }
    if (!fs_throttle_admit_scaled(&t->core, fs_now_ns(t->base.st), &t->base.st->rng, scale)) {
        t->base.counters[TH_THROTTLED]++;
        Py_RETURN_FALSE;
    }
    t->base.counters[TH_SENT]++;
    Py_RETURN_TRUE;
}

/* _end(result, exc): a sent call ended (exc None: it returned result). */
static PyObject *th_end_method(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_end(result, exc) takes 2 arguments");
        return NULL;
    }
    if (th_end((ThrottleObject *)self, args[0], args[1] == Py_None ? NULL : args[1]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *th_new(PyTypeObject *type, PyObject *Py_UNUSED(args), PyObject *Py_UNUSED(kw))
{
    ThrottleObject *t = (ThrottleObject *)type->tp_alloc(type, 0);
    if (t == NULL) {
        return NULL;
    }
    fs_throttle_init(&t->core, 2.0, 1.0, (int64_t)120e9);
    if (fs_policy_init(&t->base, &th_ops, FS_PATTERN_THROTTLE, 0, "throttle") < 0) {
        Py_DECREF(t);
        return NULL;
    }
    return (PyObject *)t;
}

/* AdaptiveThrottle(k, max_reject, window, accept=None): numbers checked by failsafe.adaptive
 * first; out of range here is a ValueError. */
static int th_init(PyObject *self, PyObject *args, PyObject *kwargs)
{
    ThrottleObject *t = (ThrottleObject *)self;
    static char *kwlist[] = {"k", "max_reject", "window", "accept", NULL};
    double k, max_reject, window;
    PyObject *accept = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "ddd|O:AdaptiveThrottle", kwlist, &k,
                                     &max_reject, &window, &accept)) {
        return -1;
    }
    fs_throttle fresh;
    if (!(window > 0.0 && window <= 1e9)
        || fs_throttle_init(&fresh, k, max_reject, (int64_t)(window * NS_PER_S)) < 0) {
        PyErr_SetString(PyExc_ValueError, "throttle parameters out of range");
        return -1;
    }
    if (accept != Py_None && !PyCallable_Check(accept)) {
        PyErr_SetString(PyExc_TypeError, "accept must be callable or None");
        return -1;
    }
    t->core = fresh;
    Py_XSETREF(t->accept, accept == Py_None ? NULL : Py_NewRef(accept));
    return 0;
}

static PyObject *th_get(PyObject *self, void *closure)
{
    ThrottleObject *t = (ThrottleObject *)self;
    int64_t now = fs_now_ns(t->base.st);
    double p = fs_throttle_probability(&t->core, now);  /* rolls the window first */
    switch ((intptr_t)closure) {
    case 0:
        return PyFloat_FromDouble(p);
    case 1:
        return PyLong_FromUnsignedLongLong(t->core.requests);
    case 2:
        return PyLong_FromUnsignedLongLong(t->core.accepts);
    case 3:
        return PyFloat_FromDouble(t->core.k);
    case 4:
        return PyFloat_FromDouble(t->core.max_reject);
    case 5:
        return PyFloat_FromDouble((double)t->core.window_ns / NS_PER_S);
    default:
        return PyFloat_FromDouble((double)fs_throttle_next_change_ns(&t->core, now) / NS_PER_S);
    }
}

#define TH_FIELD(name, i, doc) AD_FIELD(th_get, name, i, doc)

static PyGetSetDef th_getset[] = {
    TH_FIELD("probability", 0, "the probability a new call is refused now"),
    TH_FIELD("requests", 1, "requests in the window (refused ones included)"),
    TH_FIELD("accepts", 2, "requests the dependency accepted in the window"),
    TH_FIELD("k", 3, "requests allowed per accept before refusing"),
    TH_FIELD("max_reject", 4, "the highest refusal probability"),
    TH_FIELD("window", 5, "seconds of history"),
    TH_FIELD("_retry_after", 6, "seconds until the window next moves"),
    {NULL, NULL, NULL, NULL, NULL},
};

static int th_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(((ThrottleObject *)self)->accept);
    return fs_policy_traverse(&((ThrottleObject *)self)->base, visit, arg);
}

static int th_clear(PyObject *self)
{
    fs_policy_clear_events((FsPolicy *)self);
    ThrottleObject *t = (ThrottleObject *)self;
    Py_CLEAR(t->accept);
    Py_CLEAR(t->base.name);
    return 0;
}

static void th_dealloc(PyObject *self)
{
    fs_policy_dealloc(self, th_clear);
}

static PyMemberDef th_members[] = {
    FS_POLICY_MEMBERS,
    {"_slow", Py_T_INT, offsetof(ThrottleObject, slow), 0, "1: every call goes to _call_slow"},
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef th_methods[] = {
    FS_POLICY_METHODS,
    {"_admit", (PyCFunction)(void (*)(void))th_admit_method, METH_FASTCALL,
     "_admit(scale=1.0): True to send a new call, False: refused."},
    {"_end", (PyCFunction)(void (*)(void))th_end_method, METH_FASTCALL,
     "_end(result, exc): a sent call ended."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot th_slots[] = {
    {Py_tp_doc, "AdaptiveThrottle(k, max_reject, window, accept=None): the C engine of "
                "failsafe.adaptive.Throttle."},
    {Py_tp_new, th_new},
    {Py_tp_init, th_init},
    {Py_tp_members, th_members},
    {Py_tp_getset, th_getset},
    {Py_tp_methods, th_methods},
    {Py_tp_traverse, th_traverse},
    {Py_tp_clear, th_clear},
    {Py_tp_dealloc, th_dealloc},
    {0, NULL},
};

static PyType_Spec th_spec = {
    .name = "failsafe._native.AdaptiveThrottle",
    .basicsize = sizeof(ThrottleObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .slots = th_slots,
};

/* ------------------------------------------------------------------------------------------ */
/* Part */

static int ad_setup(PyObject *module, fs_state *st)
{
    st->AdaptiveLimit_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &al_spec, NULL);
    st->AdaptiveThrottle_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &th_spec, NULL);
    if (st->AdaptiveLimit_Type == NULL || st->AdaptiveThrottle_Type == NULL
        || fs_register_policy_type(st, st->AdaptiveLimit_Type) < 0
        || fs_register_policy_type(st, st->AdaptiveThrottle_Type) < 0
        || PyModule_AddType(module, st->AdaptiveLimit_Type) < 0) {
        return -1;
    }
    return PyModule_AddType(module, st->AdaptiveThrottle_Type);
}

static int ad_part_traverse(fs_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->AdaptiveLimit_Type);
    Py_VISIT(st->AdaptiveThrottle_Type);
    return 0;
}

static void ad_part_clear(fs_state *st)
{
    Py_CLEAR(st->AdaptiveLimit_Type);
    Py_CLEAR(st->AdaptiveThrottle_Type);
}

const fs_part fs_adaptive_part = {
    .name = "concurrency_limit",
    .pattern = FS_PATTERN_CONCURRENCY_LIMIT,
    .metrics = al_metrics,
    .setup = ad_setup,
    .traverse = ad_part_traverse,
    .clear = ad_part_clear,
};

/* The throttle's facts (its type is set up with the limit's, above). */
const fs_part fs_throttle_part = {
    .name = "throttle",
    .pattern = FS_PATTERN_THROTTLE,
    .metrics = th_metrics,
};
