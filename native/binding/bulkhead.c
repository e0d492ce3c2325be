/* bulkhead: at most max_concurrency calls run at once, at most max_capacity are inside (running
 * plus queued), queued calls are served in FIFO order.
 *
 * The counts and every admission decision are the core's (fs_bulkhead). A call that finds a
 * free slot takes it in C and runs in an FsCall (decorator) or at once (`async with`); one that
 * must queue goes to the Python slow path (`_queued_call` / `_acquire_slow`), which decides
 * again when it first runs (`_enqueue`: a slow coroutine never awaited takes nothing).
 *
 * A decorated call refused because the bulkhead is full raises when awaited, not when made: an
 * outer policy stacked on it (fallback or retry on BulkheadFull) then sees the refusal as the
 * outcome of the call, as with any other exception of an async function.
 *
 * The queue is a C list of Waiter objects, each with the future its call awaits, so the queue
 * and the core's `queued` count change together and cannot drift. A slot released while calls
 * wait never becomes free: it passes to the head waiter (its future gets True). A head waiter
 * whose future was cancelled before its task could leave the queue is skipped, and the slot it
 * was given is released again on its behalf. A waiter that leaves (cancelled, timed out) before
 * being served gives its place back; one cancelled after being served passes its slot on.
 *
 * One bulkhead may be shared by threads each running its own event loop: a waiter is woken on
 * its own loop (call_soon_threadsafe when that is not the running one), and a waiter whose loop
 * is closed can never run, so it is treated as cancelled and the slot goes on. */
#include "fs_binding.h"

#include <math.h>
#include <stddef.h>

#include "fs_bulkhead.h"

/* Counters, in failsafe.bulkhead.Bulkhead.METRICS order. */
enum { BH_FULL = 0, BH_ADMITTED, BH_WAITED, BH_TIMED_OUT };
static const char *const bh_metrics[] = {"full", "admitted", "waited", "timed_out", NULL};

/* Waiter states */
enum {
    W_QUEUED = 0,   /* in the queue (the queue holds a reference) */
    W_GRANTED,      /* handed a slot: its call owns the slot */
    W_EXPIRED,      /* left the queue at max_wait, without a slot */
    W_GONE          /* left the queue without a slot, or passed its slot on */
};

typedef struct BulkheadWaiter {
    PyObject_HEAD
    struct BulkheadWaiter *prev, *next;     /* queue links while W_QUEUED */
    PyObject *owner;                        /* the Bulkhead (strong) */
    PyObject *future;                       /* what the waiting call awaits (strong) */
    PyObject *loop;                         /* the loop of future (strong) */
    int state;
} BulkheadWaiter;

typedef struct BulkheadObject {
    FsPolicy base;
    fs_bulkhead core;
    BulkheadWaiter *head, *tail;            /* FIFO of queued calls; queued == its length */
    double max_wait;                        /* seconds; < 0: wait as long as it takes */
    /* BulkheadFull arguments (a message in a tuple) and the name each was built for
     * (fs_named_refusal_args: built again when a decorator gives its function's name). */
    PyObject *args_full;                    /* full: running + queued = max_capacity */
    PyObject *args_full_name;
    PyObject *args_no_wait;                 /* no free slot, and max_wait is 0 */
    PyObject *args_no_wait_name;
} BulkheadObject;

/* ------------------------------------------------------------------------------------------ */
/* The queue */

/* Appends w; the queue takes a reference. */
static void queue_push(BulkheadObject *b, BulkheadWaiter *w)
{
    w->prev = b->tail;
    w->next = NULL;
    if (b->tail != NULL) {
        b->tail->next = w;
    }
    else {
        b->head = w;
    }
    b->tail = w;
    Py_INCREF(w);
}

/* Takes w out; the queue's reference passes to the caller. */
static void queue_unlink(BulkheadObject *b, BulkheadWaiter *w)
{
    if (w->prev != NULL) {
        w->prev->next = w->next;
    }
    else {
        b->head = w->next;
    }
    if (w->next != NULL) {
        w->next->prev = w->prev;
    }
    else {
        b->tail = w->prev;
    }
    w->prev = w->next = NULL;
}

/* 1 when fut is done, 0 when not, -1 with an exception set. */
static int future_done(PyObject *fut)
{
    PyObject *r = PyObject_CallMethod(fut, "done", NULL);
    if (r == NULL) {
        return -1;
    }
    int done = PyObject_IsTrue(r);
    Py_DECREF(r);
    return done;
}

/* Resolves fut with value unless it is done already; errors are written as unraisable (a
 * loop closed under a waiter): never raises. */
static void future_resolve(PyObject *fut, PyObject *value)
{
    int done = future_done(fut);
    if (done == 0) {
        PyObject *r = PyObject_CallMethod(fut, "set_result", "O", value);
        if (r == NULL) {
            done = -1;
        }
        Py_XDECREF(r);
    }
    if (done < 0) {
        PyErr_WriteUnraisable(fut);
    }
}

/* Resolves w's future with value on w's own loop: at once when that loop is the running one,
 * else through its call_soon_threadsafe (the waiter's _wake). Returns 0 when woken or
 * scheduled, -1 when w can never be woken (its loop is closed, or the wake failed: written as
 * unraisable). Never raises. */
static int waiter_wake(BulkheadObject *b, BulkheadWaiter *w, PyObject *value)
{
    fs_state *st = b->base.st;
    PyObject *running = PyObject_CallNoArgs(st->running_loop_or_none);
    if (running == w->loop) {   /* the common case: the waiter's loop released the slot */
        Py_DECREF(running);
        future_resolve(w->future, value);
        return 0;
    }
    if (running == NULL) {
        PyErr_WriteUnraisable((PyObject *)w);
    }
    Py_XDECREF(running);
    PyObject *wake = PyObject_GetAttrString((PyObject *)w, "_wake");
    PyObject *args[3] = {w->loop, wake, value};
    PyObject *r = wake == NULL ? NULL
        : PyObject_VectorcallMethod(st->str_threadsafe, args, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                    NULL);
    Py_XDECREF(wake);
    if (r != NULL) {
        Py_DECREF(r);
        return 0;
    }
    /* A closed loop refuses callbacks: nobody waits there any more (no report). */
    PyObject *exc = PyErr_GetRaisedException();
    PyObject *closed = PyObject_CallMethod(w->loop, "is_closed", NULL);
    int quiet = closed != NULL && PyErr_GivenExceptionMatches(exc, PyExc_RuntimeError)
        && PyObject_IsTrue(closed) == 1;
    Py_XDECREF(closed);
    PyErr_Clear();
    if (quiet) {
        Py_DECREF(exc);
    }
    else {
        PyErr_SetRaisedException(exc);
        PyErr_WriteUnraisable((PyObject *)w);
    }
    return -1;
}

/* Ends a slot's use: frees it, or passes it to the first waiter still waiting. Never raises
 * (runs from abandon and from finish, which keep the call's own outcome). */
static void bh_release_slot(BulkheadObject *b)
{
    if (!fs_bulkhead_release(&b->core)) {
        return;
    }
    PyObject *saved = PyErr_GetRaisedException();
    bool pass = true;
    while (pass) {
        BulkheadWaiter *w = b->head;
        if (w == NULL) {
            /* Unreachable: the queue's length is the core's queued count. Free the slot. */
            if (b->core.running > 0) {
                b->core.running--;
            }
            break;
        }
        queue_unlink(b, w);     /* the queue's reference is ours now */
        int done = future_done(w->future);
        if (done == 0) {
            /* State first: whatever the wake runs (loop code, other threads) sees it served. */
            w->state = W_GRANTED;
            b->base.counters[BH_ADMITTED]++;
            if (waiter_wake(b, w, Py_True) == 0 || w->state != W_GRANTED) {
                Py_DECREF(w);   /* woken, or it left meanwhile (passing the slot on itself) */
                break;
            }
        }
        else if (done < 0) {
            PyErr_WriteUnraisable(w->future);
        }
        /* Cancelled while queued, its task not yet told, or its loop closed: it gets nothing;
         * the slot it was given goes on to the next one. */
        w->state = W_GONE;
        Py_DECREF(w);
        pass = fs_bulkhead_release(&b->core);
    }
    PyErr_SetRaisedException(saved);
}

/* ------------------------------------------------------------------------------------------ */
/* Refusals */

/* The arguments of BulkheadFull: full (running + queued = max_capacity), or no free slot with
 * max_wait 0 (no_wait). Borrowed, or NULL with an exception. */
static PyObject *bh_refusal_args(BulkheadObject *b, bool no_wait)
{
    PyObject *name = b->base.name;
    unsigned long long conc = b->core.max_concurrency, cap = b->core.max_capacity;
    if (no_wait) {
        return fs_named_refusal_args(
            &b->args_no_wait, &b->args_no_wait_name, name,
            "bulkhead %R has no free slot and max_wait is 0 (max_concurrency=%llu)", name, conc);
    }
    return fs_named_refusal_args(
        &b->args_full, &b->args_full_name, name,
        "bulkhead %R is full: %llu running and %llu queued (max_concurrency=%llu, "
        "max_capacity=%llu)", name, conc, cap - conc, conc, cap);
}

/* A call refused: counted, reported, BulkheadFull set (deferred: unchained, for admit, see
 * fs_defer; its other attributes keep their class defaults, retry_after None, timed_out False).
 * Always -1. */
static int bh_reject(BulkheadObject *b, bool no_wait, bool deferred)
{
    FsPolicy *p = &b->base;
    p->counters[BH_FULL]++;
    if (fs_listening(p) && fs_emit(p, "on_bulkhead_full", NULL) < 0) {
        return -1;
    }
    PyObject *args = bh_refusal_args(b, no_wait);
    PyObject *exc = args == NULL ? NULL : fs_refusal(p->st, FS_E_BULKHEAD_FULL, args, -1);
    fs_raise_or_defer(exc, deferred);
    return -1;
}

/* ------------------------------------------------------------------------------------------ */
/* Decorator: the FsCall hooks */

/* One decision: a slot now (the call runs), a place to wait for (the slow path queues it), or
 * a refusal (full, or not allowed to wait): counted and reported now, raised when awaited. */
static fs_verdict bh_admit(FsPolicy *p, fs_admission *Py_UNUSED(a),
                           PyObject *const *Py_UNUSED(args), size_t Py_UNUSED(nargsf),
                           PyObject *Py_UNUSED(kwnames))
{
    BulkheadObject *b = (BulkheadObject *)p;
    fs_bh_verdict v = fs_bulkhead_try_run(&b->core);
    if (v == FS_BH_RUN) {
        p->counters[BH_ADMITTED]++;
        return FS_ADMIT_CALL;
    }
    if (v == FS_BH_FULL || b->max_wait == 0.0) {
        bh_reject(b, v == FS_BH_WAIT, true);
        return FS_ADMIT_REFUSE;
    }
    return FS_ADMIT_SLOW;
}

/* A call that may wait for a slot: self._queued_call(fn, *args, **kwargs), which queues when it
 * first runs. */
static PyObject *bh_slow(FsPolicy *p, fs_admission *Py_UNUSED(a), PyObject *fn,
                         PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    return fs_call_method_with((PyObject *)p, p->st->str_queued_call, &fn, 1, args, nargsf,
                               kwnames);
}

static int bh_finish(FsCall *c, PyObject *result, PyObject *exc, PyObject **out)
{
    bh_release_slot((BulkheadObject *)c->policy);
    if (exc != NULL) {
        *out = Py_NewRef(exc);
        return FS_NEXT_RAISE;
    }
    *out = Py_NewRef(result);
    return FS_NEXT_RETURN;
}

/* Closed, thrown into before it started, or collected unfinished: the slot goes back. */
static void bh_abandon(FsCall *c)
{
    bh_release_slot((BulkheadObject *)c->policy);
}

/* Admitted, but no FsCall could be made (no memory): the slot goes back. */
static void bh_release_admission(FsPolicy *p, fs_admission *Py_UNUSED(a))
{
    bh_release_slot((BulkheadObject *)p);
}

static const fs_policy_ops bh_ops = {
    .admit = bh_admit,
    .slow = bh_slow,
    .release = bh_release_admission,
    .finish = bh_finish,
    .abandon = bh_abandon,
};

/* _call_slow(fn, *args, **kwargs): the whole call of fn, decided now, as a decorated call. */
static PyObject *bh_call_slow(PyObject *self, PyObject *const *args, size_t nargsf,
                              PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "_call_slow(fn, *args, **kwargs)");
        return NULL;
    }
    return fs_guard_call((FsPolicy *)self, args[0], args + 1, (size_t)(nargs - 1), kwnames);
}

/* ------------------------------------------------------------------------------------------ */
/* Waiter */

static PyObject *waiter_get_future(PyObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(((BulkheadWaiter *)self)->future);
}

/* _wake(value): resolves the future unless it is done (a callback run on the waiter's loop). */
static PyObject *waiter_wake_method(PyObject *self, PyObject *value)
{
    future_resolve(((BulkheadWaiter *)self)->future, value);
    Py_RETURN_NONE;
}

static PyMethodDef waiter_methods[] = {
    {"_wake", waiter_wake_method, METH_O, "Resolves the future unless it is done."},
    {NULL, NULL, 0, NULL},
};

static PyObject *waiter_repr(PyObject *self)
{
    static const char *names[] = {"queued", "granted", "expired", "gone"};
    return PyUnicode_FromFormat("<bulkhead waiter %s>", names[((BulkheadWaiter *)self)->state & 3]);
}

static int waiter_traverse(PyObject *self, visitproc visit, void *arg)
{
    BulkheadWaiter *w = (BulkheadWaiter *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(w->owner);
    Py_VISIT(w->future);
    Py_VISIT(w->loop);
    return 0;
}

static int waiter_clear(PyObject *self)
{
    BulkheadWaiter *w = (BulkheadWaiter *)self;
    Py_CLEAR(w->owner);
    Py_CLEAR(w->future);
    Py_CLEAR(w->loop);
    return 0;
}

static void waiter_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    waiter_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyGetSetDef waiter_getset[] = {
    {"future", waiter_get_future, NULL, "the future the queued call awaits: True when served, "
     "False when max_wait expired", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot waiter_slots[] = {
    {Py_tp_getset, waiter_getset},
    {Py_tp_methods, waiter_methods},
    {Py_tp_repr, waiter_repr},
    {Py_tp_traverse, waiter_traverse},
    {Py_tp_clear, waiter_clear},
    {Py_tp_dealloc, waiter_dealloc},
    {0, NULL},
};

static PyType_Spec waiter_spec = {
    .name = "failsafe._native.BulkheadWaiter",
    .basicsize = sizeof(BulkheadWaiter),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = waiter_slots,
};

/* The waiter w, checked to be one of b's; NULL with TypeError otherwise. */
static BulkheadWaiter *bh_own_waiter(BulkheadObject *b, PyObject *w)
{
    if (!Py_IS_TYPE(w, b->base.st->BulkheadWaiter_Type) || ((BulkheadWaiter *)w)->owner != (PyObject *)b) {
        PyErr_Format(PyExc_TypeError, "expected a waiter of this bulkhead, got %R", w);
        return NULL;
    }
    return (BulkheadWaiter *)w;
}

/* ------------------------------------------------------------------------------------------ */
/* Bulkhead: slow-path primitives (called by failsafe.bulkhead) */

/* _enqueue(): admission of a call that may wait, in its own task. None: a slot is taken;
 * a waiter: the call is queued and must await waiter.future; BulkheadFull otherwise. */
static PyObject *bh_enqueue(PyObject *self, PyObject *Py_UNUSED(unused))
{
    BulkheadObject *b = (BulkheadObject *)self;
    fs_state *st = b->base.st;
    fs_bh_verdict v = fs_bulkhead_try_run(&b->core);
    if (v == FS_BH_RUN) {
        b->base.counters[BH_ADMITTED]++;
        Py_RETURN_NONE;
    }
    if (v == FS_BH_FULL || b->max_wait == 0.0) {
        bh_reject(b, v == FS_BH_WAIT, false);
        return NULL;
    }
    PyObject *loop = PyObject_CallNoArgs(st->get_running_loop);
    if (loop == NULL) {
        return NULL;
    }
    PyObject *fut = PyObject_CallMethod(loop, "create_future", NULL);
    if (fut == NULL) {
        Py_DECREF(loop);
        return NULL;
    }
    BulkheadWaiter *w = PyObject_GC_New(BulkheadWaiter, st->BulkheadWaiter_Type);
    if (w == NULL) {
        Py_DECREF(loop);
        Py_DECREF(fut);
        return NULL;
    }
    w->prev = w->next = NULL;
    w->owner = Py_NewRef(self);
    w->future = fut;
    w->loop = loop;
    w->state = W_GONE;
    PyObject_GC_Track(w);
    /* Decided again: creating the future ran the loop's code. */
    v = fs_bulkhead_acquire(&b->core);
    if (v == FS_BH_RUN) {
        Py_DECREF(w);
        b->base.counters[BH_ADMITTED]++;
        Py_RETURN_NONE;
    }
    if (v == FS_BH_FULL) {
        Py_DECREF(w);
        bh_reject(b, false, false);
        return NULL;
    }
    w->state = W_QUEUED;
    queue_push(b, w);
    b->base.counters[BH_WAITED]++;
    return (PyObject *)w;
}

/* _abandon(waiter): the waiting call ends before running (cancelled, closed): a place in the
 * queue is given back, a slot already handed to it is passed on. Idempotent. */
static PyObject *bh_abandon_waiter(PyObject *self, PyObject *arg)
{
    BulkheadObject *b = (BulkheadObject *)self;
    BulkheadWaiter *w = bh_own_waiter(b, arg);
    if (w == NULL) {
        return NULL;
    }
    int state = w->state;
    w->state = W_GONE;
    if (state == W_QUEUED) {
        queue_unlink(b, w);
        fs_bulkhead_leave(&b->core);
        Py_DECREF(w);   /* the queue's reference */
    }
    else if (state == W_GRANTED) {
        bh_release_slot(b);
    }
    Py_RETURN_NONE;
}

/* _expire(waiter): max_wait elapsed (a loop timer). A waiter still queued leaves the queue and
 * its future says False; a served one keeps its slot. */
static PyObject *bh_expire(PyObject *self, PyObject *arg)
{
    BulkheadObject *b = (BulkheadObject *)self;
    BulkheadWaiter *w = bh_own_waiter(b, arg);
    if (w == NULL) {
        return NULL;
    }
    if (w->state == W_QUEUED) {
        w->state = W_EXPIRED;
        queue_unlink(b, w);
        fs_bulkhead_leave(&b->core);
        future_resolve(w->future, Py_False);
        Py_DECREF(w);
    }
    Py_RETURN_NONE;
}

/* _release(): a call that ran ends; its slot is freed or passed on. */
static PyObject *bh_release(PyObject *self, PyObject *Py_UNUSED(unused))
{
    BulkheadObject *b = (BulkheadObject *)self;
    if (b->core.running == 0) {
        PyErr_SetString(PyExc_RuntimeError, "bulkhead released more often than acquired");
        return NULL;
    }
    bh_release_slot(b);
    Py_RETURN_NONE;
}

/* _holds_state(): whether calls hold slots or wait (for keyed registries: forgetting the
 * bulkhead then would let a second one admit past the limit). */
static PyObject *bh_holds_state(PyObject *self, PyObject *Py_UNUSED(unused))
{
    BulkheadObject *b = (BulkheadObject *)self;
    return PyBool_FromLong(b->core.running != 0 || b->core.queued != 0);
}

/* ------------------------------------------------------------------------------------------ */
/* async with */

/* A free slot is taken at once (a ready awaitable); otherwise the slow path waits for one. */
static PyObject *bh_aenter_impl(PyObject *self)
{
    BulkheadObject *b = (BulkheadObject *)self;
    fs_state *st = b->base.st;
    fs_bh_verdict v = fs_bulkhead_try_run(&b->core);
    if (v == FS_BH_RUN) {
        b->base.counters[BH_ADMITTED]++;
        return Py_NewRef(st->ready_none);
    }
    if (v == FS_BH_WAIT && b->max_wait != 0.0) {
        return PyObject_CallMethodNoArgs(self, st->str_acquire_slow);
    }
    bh_reject(b, v == FS_BH_WAIT, false);
    return NULL;
}

static PyObject *bh_aenter(PyObject *self, PyObject *Py_UNUSED(unused))
{
    return fs_block_entered(&((BulkheadObject *)self)->base, bh_aenter_impl(self));
}

static PyObject *bh_aexit_impl(PyObject *self, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "__aexit__() takes 3 positional arguments");
        return NULL;
    }
    BulkheadObject *b = (BulkheadObject *)self;
    if (b->core.running == 0) {
        PyErr_SetString(PyExc_RuntimeError, "Bulkhead.__aexit__ without a matching __aenter__");
        return NULL;
    }
    bh_release_slot(b);
    return Py_NewRef(b->base.st->ready_none);
}

static PyObject *bh_aexit(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *r = bh_aexit_impl(self, nargs);
    fs_block_exited(&((BulkheadObject *)self)->base, r, nargs == 3 ? args[1] : Py_None);
    return r;
}

/* ------------------------------------------------------------------------------------------ */
/* Bulkhead: construction, attributes, GC */

static PyObject *bh_new(PyTypeObject *type, PyObject *Py_UNUSED(args), PyObject *Py_UNUSED(kw))
{
    BulkheadObject *b = (BulkheadObject *)type->tp_alloc(type, 0);
    if (b == NULL) {
        return NULL;
    }
    fs_bulkhead_init(&b->core, 1, 1);
    b->max_wait = -1.0;
    if (fs_policy_init(&b->base, &bh_ops, FS_PATTERN_BULKHEAD, 0, "bulkhead") < 0) {
        Py_DECREF(b);
        return NULL;
    }
    return (PyObject *)b;
}

/* Bulkhead(max_concurrency, max_capacity=max_concurrency, max_wait=None): the limits of
 * failsafe.bulkhead's BulkheadOptions, checked there (max_wait None or inf: no limit). */
static int bh_init(PyObject *self, PyObject *args, PyObject *kwargs)
{
    BulkheadObject *b = (BulkheadObject *)self;
    static char *kwlist[] = {"max_concurrency", "max_capacity", "max_wait", NULL};
    long long conc;
    PyObject *cap_arg = Py_None, *wait_arg = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "L|OO:Bulkhead", kwlist, &conc, &cap_arg,
                                     &wait_arg)) {
        return -1;
    }
    long long cap = cap_arg == Py_None ? conc : PyLong_AsLongLong(cap_arg);
    if (cap == -1 && PyErr_Occurred()) {
        return -1;
    }
    double wait = wait_arg == Py_None ? -1.0 : PyFloat_AsDouble(wait_arg);
    if (wait == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    if (isinf(wait)) {
        wait = -1.0;
    }
    /* Kept for direct _native use: the core's slot arithmetic needs 1 <= conc <= cap. */
    if (conc < 1 || cap < conc) {
        PyErr_SetString(PyExc_ValueError, "Bulkhead: 1 <= max_concurrency <= max_capacity");
        return -1;
    }
    if (b->core.running != 0 || b->core.queued != 0) {
        PyErr_SetString(PyExc_RuntimeError, "cannot reconfigure a bulkhead in use");
        return -1;
    }
    fs_bulkhead_init(&b->core, (uint64_t)conc, (uint64_t)cap);
    b->max_wait = wait;
    Py_CLEAR(b->args_full_name);     /* the messages name the sizes: built again */
    Py_CLEAR(b->args_no_wait_name);
    return 0;
}

static PyObject *get_u64(PyObject *self, void *closure)
{
    return PyLong_FromUnsignedLongLong(
        *(uint64_t *)((char *)&((BulkheadObject *)self)->core + (size_t)closure));
}

static PyObject *bh_get_max_wait(PyObject *self, void *Py_UNUSED(closure))
{
    double w = ((BulkheadObject *)self)->max_wait;
    if (w < 0) {
        Py_RETURN_NONE;
    }
    return PyFloat_FromDouble(w);
}

#define CORE_FIELD(name, doc)                                                                    \
    {#name, get_u64, NULL, doc, (void *)offsetof(fs_bulkhead, name)}

static PyGetSetDef bh_getset[] = {
    CORE_FIELD(max_concurrency, "how many calls may run at once"),
    CORE_FIELD(max_capacity, "how many calls may be inside, running plus queued"),
    CORE_FIELD(running, "calls holding a slot now"),
    CORE_FIELD(queued, "calls waiting for a slot now"),
    CORE_FIELD(peak_running, "the most calls that held a slot at once"),
    CORE_FIELD(peak_queued, "the most calls that waited at once"),
    {"max_wait", bh_get_max_wait, NULL, "seconds a call may wait in the queue, None: no limit",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static int bh_traverse(PyObject *self, visitproc visit, void *arg)
{
    BulkheadObject *b = (BulkheadObject *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(b->args_full);
    Py_VISIT(b->args_full_name);
    Py_VISIT(b->args_no_wait);
    Py_VISIT(b->args_no_wait_name);
    for (BulkheadWaiter *w = b->head; w != NULL; w = w->next) {
        Py_VISIT(w);
    }
    return fs_policy_traverse(&b->base, visit, arg);
}

/* Drops the queue (its calls are unreachable too when the GC clears us). */
static void bh_drop_queue(BulkheadObject *b)
{
    while (b->head != NULL) {
        BulkheadWaiter *w = b->head;
        queue_unlink(b, w);
        w->state = W_GONE;
        fs_bulkhead_leave(&b->core);
        Py_DECREF(w);
    }
}

static int bh_clear(PyObject *self)
{
    fs_policy_clear_events((FsPolicy *)self);
    BulkheadObject *b = (BulkheadObject *)self;
    bh_drop_queue(b);
    Py_CLEAR(b->args_full);
    Py_CLEAR(b->args_full_name);
    Py_CLEAR(b->args_no_wait);
    Py_CLEAR(b->args_no_wait_name);
    Py_CLEAR(b->base.name);
    return 0;
}

static void bh_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    fs_policy_clear((FsPolicy *)self);
    bh_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMemberDef bh_members[] = {
    FS_POLICY_MEMBERS,
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef bh_methods[] = {
    FS_POLICY_METHODS,
    {"__aenter__", bh_aenter, METH_NOARGS, "Takes a slot, waiting in the queue if needed."},
    {"__aexit__", (PyCFunction)(void (*)(void))bh_aexit, METH_FASTCALL, "Gives the slot back."},
    {"_call_slow", (PyCFunction)(void (*)(void))bh_call_slow, METH_FASTCALL | METH_KEYWORDS,
     "A decorated call with no free slot: the queued call, or an awaitable raising BulkheadFull."},
    {"_enqueue", bh_enqueue, METH_NOARGS,
     "Admits a call that may wait: None (slot taken), a waiter (queued), or BulkheadFull."},
    {"_abandon", bh_abandon_waiter, METH_O, "A waiter leaves: its place or slot goes back."},
    {"_expire", bh_expire, METH_O, "max_wait elapsed for a waiter."},
    {"_release", bh_release, METH_NOARGS, "A call holding a slot ended."},
    {"_holds_state", bh_holds_state, METH_NOARGS, "Whether calls run or wait."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot bh_slots[] = {
    {Py_tp_doc, "Bulkhead(max_concurrency, max_capacity=None, max_wait=None): the C engine of "
                "failsafe.bulkhead.Bulkhead."},
    {Py_tp_new, bh_new},
    {Py_tp_init, bh_init},
    {Py_tp_members, bh_members},
    {Py_tp_getset, bh_getset},
    {Py_tp_methods, bh_methods},
    {Py_tp_traverse, bh_traverse},
    {Py_tp_clear, bh_clear},
    {Py_tp_dealloc, bh_dealloc},
    {0, NULL},
};

static PyType_Spec bh_spec = {
    .name = "failsafe._native.Bulkhead",
    .basicsize = sizeof(BulkheadObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .slots = bh_slots,
};

/* ------------------------------------------------------------------------------------------ */
/* Part */

static int bh_setup(PyObject *module, fs_state *st)
{
    st->str_acquire_slow = PyUnicode_InternFromString("_acquire_slow");
    st->str_queued_call = PyUnicode_InternFromString("_queued_call");
    st->str_threadsafe = PyUnicode_InternFromString("call_soon_threadsafe");
    PyObject *asyncio = PyImport_ImportModule("asyncio");
    if (asyncio != NULL) {
        st->running_loop_or_none = PyObject_GetAttrString(asyncio, "_get_running_loop");
        Py_DECREF(asyncio);
    }
    if (st->str_acquire_slow == NULL || st->str_queued_call == NULL
        || st->str_threadsafe == NULL || st->running_loop_or_none == NULL) {
        return -1;
    }
    st->BulkheadWaiter_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &waiter_spec, NULL);
    st->Bulkhead_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &bh_spec, NULL);
    if (st->BulkheadWaiter_Type == NULL || st->Bulkhead_Type == NULL
        || fs_register_policy_type(st, st->Bulkhead_Type) < 0) {
        return -1;
    }
    return PyModule_AddType(module, st->Bulkhead_Type);
}

static int bh_part_traverse(fs_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->Bulkhead_Type);
    Py_VISIT(st->BulkheadWaiter_Type);
    Py_VISIT(st->running_loop_or_none);
    return 0;
}

static void bh_part_clear(fs_state *st)
{
    Py_CLEAR(st->Bulkhead_Type);
    Py_CLEAR(st->BulkheadWaiter_Type);
    Py_CLEAR(st->str_acquire_slow);
    Py_CLEAR(st->str_queued_call);
    Py_CLEAR(st->str_threadsafe);
    Py_CLEAR(st->running_loop_or_none);
}

const fs_part fs_bulkhead_part = {
    .name = "bulkhead",
    .pattern = FS_PATTERN_BULKHEAD,
    .metrics = bh_metrics,
    .setup = bh_setup,
    .traverse = bh_part_traverse,
    .clear = bh_part_clear,
};
