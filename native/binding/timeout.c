/* timeout: the Timeout policy, as a decorator (the FsCall hooks) and as a shared `async with`
 * (a TimeoutScope per entry, found again at exit through the queue's task map). A due deadline
 * cancels the task and the exit turns the CancelledError into failsafe.timeout.TimeoutError
 * with the rules of asyncio.timeout; the queue and its entries are in timerqueue.c and
 * timerentry.c. */
#include "fs_timers.h"


/* Counts and reports one timeout of t (after the state change; listeners cannot change the
 * outcome, their failures are logged by the dispatcher). */
static int timeout_fired(TimeoutObject *t)
{
    t->base.counters[0]++;
    if (fs_listening(&t->base)) {
        return fs_emit(&t->base, "on_timeout", NULL);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Decorator: the FsCall hooks */

static fs_verdict tmo_admit(FsPolicy *p, fs_admission *Py_UNUSED(a),
                            PyObject *const *Py_UNUSED(args), size_t Py_UNUSED(nargsf),
                            PyObject *Py_UNUSED(kwnames))
{
    TimeoutObject *t = (TimeoutObject *)p;
    return t->enabled && t->seconds < INFINITY;     /* never expires: fn's own coroutine */
}

static int tmo_init_call(FsCall *c, fs_admission *Py_UNUSED(a))
{
    c->timeout_s = ((TimeoutObject *)c->policy)->seconds;
    fs_entry_init(&c->entry, (PyObject *)c);
    return 0;
}

static int tmo_start(FsCall *c)
{
    double now;
    return fs_timer_enter(c->policy->st, &c->entry, c->timeout_s, &now);
}

static int tmo_finish(FsCall *c, PyObject *result, PyObject *exc, PyObject **out)
{
    PyObject *te;
    int r = fs_entry_exit(c->policy->st, &c->entry, exc ? (PyObject *)Py_TYPE(exc) : NULL, exc,
                       FS_E_TIMEOUT, &te);
    if (r < 0) {
        return -1;
    }
    if (r != EXIT_KEEP && timeout_fired((TimeoutObject *)c->policy) < 0) {
        Py_XDECREF(te);
        return -1;      /* a listener's KeyboardInterrupt or SystemExit */
    }
    if (r == EXIT_RAISE) {
        *out = te;
        return FS_NEXT_RAISE;
    }
    if (exc != NULL) {
        *out = Py_NewRef(exc);
        return FS_NEXT_RAISE;
    }
    *out = Py_NewRef(result);
    return FS_NEXT_RETURN;
}

static void tmo_abandon(FsCall *c)
{
    fs_timer_abandon(c->policy->st, &c->entry);
}

static int tmo_traverse_call(FsCall *c, visitproc visit, void *arg)
{
    Py_VISIT(c->entry.task);
    Py_VISIT(c->entry.queue);
    return 0;
}

static const fs_policy_ops tmo_ops = {
    .admit = tmo_admit,
    .init_call = tmo_init_call,
    .start = tmo_start,
    .finish = tmo_finish,
    .abandon = tmo_abandon,
    .traverse = tmo_traverse_call,
};

/* ------------------------------------------------------------------------------------------ */
/* Task -> scope map: the `async with` form finds the exiting task's scope of a shared Timeout.
 * The table is the core's fs_ptrmap; the references it holds are kept here. A dict would do,
 * at about twice the cost per entry and exit. */

/* Makes s (not in the map) the innermost scope of task; the map takes a reference to s. */
static int tmap_push(FsTimerQueue *q, PyObject *task, TimeoutScope *s)
{
    size_t cap = fs_ptrmap_grow_cap(&q->map);
    if (cap != 0) {
        fs_ptrmap_slot *slots = PyMem_Calloc(cap, sizeof(*slots));
        if (slots == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        PyMem_Free(fs_ptrmap_rehash(&q->map, slots, cap));
    }
    fs_ptrmap_slot *slot = &q->map.slots[fs_ptrmap_insert(&q->map, task)];
    s->outer = slot->value;      /* the map's reference to the old head passes to s */
    slot->value = Py_NewRef(s);
    return 0;
}

/* Takes out the innermost scope of t in task's chain (the same object may be nested, and exits
 * of interleaved async generators may come out of order). The reference the chain held passes to
 * the caller. NULL when there is none (no error set). */
static TimeoutScope *tmap_pop(FsTimerQueue *q, PyObject *task, TimeoutObject *t)
{
    size_t i = fs_ptrmap_find(&q->map, task);
    if (i == FS_PTRMAP_NONE) {
        return NULL;
    }
    TimeoutScope *s = q->map.slots[i].value, *inner = NULL;
    while (s != NULL && s->policy != t) {
        inner = s;
        s = s->outer;
    }
    if (s == NULL) {
        return NULL;
    }
    if (inner != NULL) {
        inner->outer = s->outer;
    }
    else if (s->outer != NULL) {
        q->map.slots[i].value = s->outer;
    }
    else {
        fs_ptrmap_delete(&q->map, i);
    }
    s->outer = NULL;
    return s;
}

/* The only active scope of t in any loop's map, taken out (its reference passes to the
 * caller), with its queue in *pq (borrowed); NULL when t has none or several. For exits that do
 * not run in the entering task: an async generator closed by the loop's finalizer task, or a
 * coroutine closed after its loop stopped. */
static TimeoutScope *tmap_pop_unique(fs_state *st, TimeoutObject *t, FsTimerQueue **pq)
{
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    FsTimerQueue *found_q = NULL;
    PyObject *found_task = NULL;
    int n = 0;
    while (st->queues != NULL && PyDict_Next(st->queues, &pos, &key, &value)) {
        FsTimerQueue *q = (FsTimerQueue *)value;
        for (size_t i = 0; i < q->map.cap; i++) {
            if (q->map.slots[i].key == NULL) {
                continue;
            }
            for (TimeoutScope *s = q->map.slots[i].value; s != NULL; s = s->outer) {
                if (s->policy == t) {
                    n++;
                    found_q = q;
                    found_task = (PyObject *)q->map.slots[i].key;
                }
            }
        }
    }
    if (n != 1) {
        return NULL;
    }
    *pq = found_q;
    return tmap_pop(found_q, found_task, t);
}

/* ------------------------------------------------------------------------------------------ */
/* Timeout: the policy, a decorator (through Guard) and an async context manager */

/* __aenter__: a new scope registered for the current task, innermost in the task's chain (the
 * object is shared by tasks: nothing per entry lives on it). Returns an awaitable of the scope. */
static PyObject *timeout_aenter(PyObject *self)
{
    TimeoutObject *t = (TimeoutObject *)self;
    fs_state *st = t->base.st;
    PyObject *loop, *task;
    if (fs_running_task(st, &loop, &task) < 0) {
        return NULL;
    }
    PyObject *ready = NULL;
    TimeoutScope *s = NULL;
    double now = 0.0;
    FsTimerQueue *q = fs_tq_for_loop(st, loop);
    if (q == NULL || (t->enabled && fs_tq_now(q, loop, &now) < 0)) {
        goto done;
    }
    s = q->spares;
    if (s != NULL) {
        q->spares = s->outer;
        q->nspares--;
        PyObject_GC_Track(s);
    }
    else {
        s = PyObject_GC_New(TimeoutScope, st->TimeoutScope_Type);
        if (s == NULL) {
            goto done;
        }
        s->lat = NULL;
        PyObject_GC_Track(s);
    }
    fs_entry_init(&s->entry, (PyObject *)s);
    double secs = st->deadline_open && t->enabled ? fs_deadline_cap(st, &s->entry, t->seconds)
                                                  : t->seconds;
    s->policy = (TimeoutObject *)Py_NewRef(t);
    s->outer = NULL;
    s->phase = SCOPE_ACTIVE;
    s->has_when = (uint8_t)t->enabled;
    if (fs_entry_register(&s->entry, q, loop, task, t->enabled ? now + secs : INFINITY,
                       now) < 0) {
        goto done;
    }
    if (tmap_push(q, task, s) < 0) {
        fs_entry_unlink(&s->entry);
        goto done;
    }
    /* The spare is free when only the queue holds it (awaiting consumed its value). */
    if ((ready = fs_done_spare(st, &q->ready_spare, (PyObject *)s)) == NULL) {
        PyObject *exc = PyErr_GetRaisedException();
        Py_XDECREF(tmap_pop(q, task, t));
        fs_entry_unlink(&s->entry);
        PyErr_SetRaisedException(exc);
    }
    else if (t->base.latency != NULL) {
        /* Timed by the scope itself, the block's own record, until __aexit__. */
        Py_XSETREF(s->lat, Py_NewRef(t->base.latency));
        s->lat_gen = t->base.lat_gen;
        s->lat_t0 = fs_now_ns(st);
    }
done:
    Py_XDECREF(s);
    Py_DECREF(loop);
    Py_DECREF(task);
    return ready != NULL ? ready : fs_block_entered(&t->base, NULL);   /* refused: counted */
}

/* The scope's timing (its Latency, stolen, or NULL) goes to *lat, *t0 and *gen. */
static PyObject *timeout_aexit_impl(PyObject *self, PyObject *const *args, PyObject **lat,
                                    int64_t *t0, uint32_t *gen)
{
    TimeoutObject *t = (TimeoutObject *)self;
    fs_state *st = t->base.st;
    PyObject *loop, *task;
    FsTimerQueue *q = NULL;
    TimeoutScope *s = NULL;
    if (fs_running_task(st, &loop, &task) == 0) {
        q = fs_tq_for_loop(st, loop);
        s = q ? tmap_pop(q, task, t) : NULL;
        Py_DECREF(loop);
        Py_DECREF(task);
        if (s == NULL && PyErr_Occurred()) {
            return NULL;
        }
    }
    else if (PyErr_ExceptionMatches(PyExc_RuntimeError)) {
        PyErr_Clear();      /* no loop or no task: the fallback below decides */
    }
    else {
        return NULL;
    }
    if (s == NULL) {
        s = tmap_pop_unique(st, t, &q);
    }
    if (s == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Timeout.__aexit__ without a matching __aenter__ in this task");
        return NULL;
    }
    *lat = s->lat;
    s->lat = NULL;
    *t0 = s->lat_t0;
    *gen = s->lat_gen;
    int fired = s->entry.state == FS_TE_FIRED;
    PyObject *te;
    int r = fs_entry_exit(st, &s->entry, args[0], args[1], FS_E_TIMEOUT, &te);
    s->phase = fired ? SCOPE_EXPIRED : SCOPE_FINISHED;
    fs_done_forget(q->ready_spare, (PyObject *)s);
    if (Py_REFCNT(s) == 1 && q->nspares < TQ_SCOPE_SPARES) {
        /* Nobody bound it (`as`): keep it for a next entry instead of freeing it. Holding
         * nothing, it is in no cycle: untracked until reused. */
        Py_CLEAR(s->policy);
        PyObject_GC_UnTrack(s);
        s->outer = q->spares;
        q->spares = s;
        q->nspares++;
    }
    else {
        Py_DECREF(s);
    }
    if (r < 0) {
        return NULL;
    }
    if (r != EXIT_KEEP && timeout_fired(t) < 0) {
        Py_XDECREF(te);
        return NULL;    /* a listener's KeyboardInterrupt or SystemExit */
    }
    if (r == EXIT_RAISE) {
        PyErr_SetRaisedException(te);
        return NULL;
    }
    return Py_NewRef(st->ready_none);
}

static PyObject *timeout_aexit(PyObject *self, PyObject *const *args)
{
    PyObject *lat = NULL;
    int64_t t0 = 0;
    uint32_t gen = 0;
    PyObject *r = timeout_aexit_impl(self, args, &lat, &t0, &gen);
    if (lat != NULL) {
        fs_latency_block_end(&((TimeoutObject *)self)->base, lat, gen, t0, r, args[1]);
        Py_DECREF(lat);
    }
    return r;
}

/* __aenter__ and __aexit__ of Timeout. `async with` binds both for every entry; as ordinary C
 * methods that is two bound-method objects created and freed per entry (a quarter of the cost).
 * These descriptors hand out bound objects from a freelist of their own instead. The bound
 * __aexit__ lives as long as its block: the freelist is as deep as the queue's spare scopes, so
 * that many blocks pending together (a batch of expiries) allocate nothing either. */

enum { TM_AENTER = 0, TM_AEXIT = 1, TM_FREELIST_MAX = TQ_SCOPE_SPARES };

typedef struct TimeoutMethod {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *self;                 /* bound: the Timeout (strong); NULL in a descriptor */
    struct TimeoutMethod *descr;    /* bound: its descriptor (strong) */
    struct TimeoutMethod *free;     /* descriptor: spare bound objects; spare: the next one */
    int nfree;
    int which;                      /* TM_* */
} TimeoutMethod;

static const char *const tm_names[] = {"__aenter__", "__aexit__"};

static PyObject *tm_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf,
                               PyObject *kwnames)
{
    TimeoutMethod *m = (TimeoutMethod *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *self = m->self;
    if (self == NULL) {     /* called on the class: self comes first */
        fs_state *st = PyType_GetModuleState(Py_TYPE(callable));
        if (nargs < 1 || !PyObject_TypeCheck(args[0], st->Timeout_Type)) {
            PyErr_Format(PyExc_TypeError, "%s() needs a Timeout as its first argument",
                         tm_names[m->which]);
            return NULL;
        }
        self = args[0];
        args++;
        nargs--;
    }
    Py_ssize_t want = m->which == TM_AENTER ? 0 : 3;
    if (nargs != want || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd positional arguments", tm_names[m->which],
                     want);
        return NULL;
    }
    return m->which == TM_AENTER ? timeout_aenter(self) : timeout_aexit(self, args);
}

static PyObject *tm_descr_get(PyObject *self, PyObject *obj, PyObject *Py_UNUSED(type))
{
    TimeoutMethod *d = (TimeoutMethod *)self;
    if (obj == NULL || obj == Py_None || d->self != NULL) {
        return Py_NewRef(self);
    }
    fs_state *st = PyType_GetModuleState(Py_TYPE(self));
    if (!PyObject_TypeCheck(obj, st->Timeout_Type)) {
        PyErr_Format(PyExc_TypeError, "%s() binds to a Timeout, not %.200s", tm_names[d->which],
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    TimeoutMethod *m = d->free;
    if (m != NULL) {
        d->free = m->free;
        d->nfree--;
        PyObject_Init((PyObject *)m, Py_TYPE(d));
    }
    else if ((m = PyObject_GC_New(TimeoutMethod, Py_TYPE(d))) == NULL) {
        return NULL;
    }
    m->vectorcall = tm_vectorcall;
    m->self = Py_NewRef(obj);
    m->descr = (TimeoutMethod *)Py_NewRef(d);
    m->free = NULL;
    m->nfree = 0;
    m->which = d->which;
    PyObject_GC_Track(m);
    return (PyObject *)m;
}

static int tm_traverse(PyObject *self, visitproc visit, void *arg)
{
    TimeoutMethod *m = (TimeoutMethod *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(m->self);
    Py_VISIT(m->descr);
    return 0;
}

static int tm_clear(PyObject *self)
{
    TimeoutMethod *m = (TimeoutMethod *)self;
    Py_CLEAR(m->self);
    Py_CLEAR(m->descr);
    return 0;
}

static void tm_dealloc(PyObject *self)
{
    TimeoutMethod *m = (TimeoutMethod *)self;
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Py_CLEAR(m->self);
    TimeoutMethod *d = m->descr;
    m->descr = NULL;
    if (d != NULL && d->nfree < TM_FREELIST_MAX) {
        m->free = d->free;
        d->free = m;
        d->nfree++;
        Py_DECREF(tp);      /* PyObject_Init takes it again on reuse */
        Py_DECREF(d);
        return;
    }
    Py_XDECREF(d);
    while (m->free != NULL) {  /* a descriptor: its spares go with it */
        TimeoutMethod *spare = m->free;
        m->free = spare->free;
        PyObject_GC_Del(spare);
    }
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *tm_repr(PyObject *self)
{
    TimeoutMethod *m = (TimeoutMethod *)self;
    if (m->self == NULL) {
        return PyUnicode_FromFormat("<method '%s' of 'Timeout' objects>", tm_names[m->which]);
    }
    return PyUnicode_FromFormat("<bound method %s of %R>", tm_names[m->which], m->self);
}

static PyObject *tm_get_name(PyObject *self, void *Py_UNUSED(closure))
{
    return PyUnicode_FromString(tm_names[((TimeoutMethod *)self)->which]);
}

static PyMemberDef tm_members[] = {
    {"__vectorcalloffset__", Py_T_PYSSIZET, offsetof(TimeoutMethod, vectorcall), Py_READONLY,
     NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyObject *tm_get_self(PyObject *self, void *Py_UNUSED(closure))
{
    PyObject *bound = ((TimeoutMethod *)self)->self;
    return Py_NewRef(bound ? bound : Py_None);
}

static PyGetSetDef tm_getset[] = {
    {"__name__", tm_get_name, NULL, NULL, NULL},
    {"__self__", tm_get_self, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot tm_slots[] = {
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_descr_get, tm_descr_get},
    {Py_tp_members, tm_members},
    {Py_tp_getset, tm_getset},
    {Py_tp_repr, tm_repr},
    {Py_tp_traverse, tm_traverse},
    {Py_tp_clear, tm_clear},
    {Py_tp_dealloc, tm_dealloc},
    {0, NULL},
};

static PyType_Spec tm_spec = {
    .name = "failsafe._native.TimeoutMethod",
    .basicsize = sizeof(TimeoutMethod),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION | Py_TPFLAGS_HAVE_VECTORCALL,
    .slots = tm_slots,
};

/* Installs __aenter__ and __aexit__ on the Timeout type. */
static int tm_install(PyObject *module, PyTypeObject *timeout_type)
{
    PyTypeObject *tp = (PyTypeObject *)PyType_FromModuleAndSpec(module, &tm_spec, NULL);
    if (tp == NULL) {
        return -1;
    }
    int rc = 0;
    for (int which = TM_AENTER; which <= TM_AEXIT && rc == 0; which++) {
        TimeoutMethod *d = PyObject_GC_New(TimeoutMethod, tp);
        if (d == NULL) {
            rc = -1;
            break;
        }
        d->vectorcall = tm_vectorcall;
        d->self = NULL;
        d->descr = NULL;
        d->free = NULL;
        d->nfree = 0;
        d->which = which;
        PyObject_GC_Track(d);
        rc = PyObject_SetAttrString((PyObject *)timeout_type, tm_names[which], (PyObject *)d);
        Py_DECREF(d);
    }
    Py_DECREF(tp);
    return rc;
}

/* seconds as failsafe.timeout's check_seconds (or hedge's HedgeOptions) gave it, checked there,
 * naming the parameter: None (disabled) or a float >= 0 (inf: never expires). */
static int parse_seconds(PyObject *arg, double *seconds, int *enabled)
{
    if (arg == NULL || arg == Py_None) {
        *seconds = INFINITY;
        *enabled = 0;
        return 0;
    }
    double d = PyFloat_AsDouble(arg);
    if (d == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    /* Kept for direct _native use: the timer queue orders deadlines, which NaN breaks. */
    if (!(d >= 0.0)) {
        PyErr_SetString(PyExc_ValueError, "Timeout: seconds must be >= 0 (not NaN)");
        return -1;
    }
    *seconds = d;
    *enabled = 1;
    return 0;
}

/* Arguments are read by __init__, so Python subclasses may take their own. */
static PyObject *timeout_new(PyTypeObject *type, PyObject *Py_UNUSED(args),
                             PyObject *Py_UNUSED(kwargs))
{
    TimeoutObject *t = (TimeoutObject *)type->tp_alloc(type, 0);
    if (t == NULL) {
        return NULL;
    }
    t->seconds = INFINITY;
    t->enabled = 0;
    if (fs_policy_init(&t->base, &tmo_ops, FS_PATTERN_TIMEOUT, 0, "timeout") < 0) {
        Py_DECREF(t);
        return NULL;
    }
    return (PyObject *)t;
}

static int timeout_init(PyObject *self, PyObject *args, PyObject *kwargs)
{
    TimeoutObject *t = (TimeoutObject *)self;
    static char *kwlist[] = {"seconds", NULL};
    PyObject *arg = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:Timeout", kwlist, &arg)) {
        return -1;
    }
    return parse_seconds(arg, &t->seconds, &t->enabled);
}

static PyObject *timeout_get_seconds(PyObject *self, void *Py_UNUSED(closure))
{
    TimeoutObject *t = (TimeoutObject *)self;
    if (!t->enabled) {
        Py_RETURN_NONE;
    }
    return PyFloat_FromDouble(t->seconds);
}

static int timeout_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    return fs_policy_traverse((FsPolicy *)self, visit, arg);
}

static int timeout_clear(PyObject *self)
{
    fs_policy_clear_events((FsPolicy *)self);
    Py_CLEAR(((FsPolicy *)self)->name);
    return 0;
}

static void timeout_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    fs_policy_clear((FsPolicy *)self);
    timeout_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMemberDef timeout_members[] = {
    FS_POLICY_MEMBERS,
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef timeout_getset[] = {
    {"seconds", timeout_get_seconds, NULL, "the delay in seconds, or None when disabled", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef timeout_methods[] = {
    FS_POLICY_METHODS,
    {NULL, NULL, 0, NULL},
};

static PyType_Slot timeout_slots[] = {
    {Py_tp_doc, "Timeout(seconds): the C engine of failsafe.timeout.Timeout."},
    {Py_tp_new, timeout_new},
    {Py_tp_init, timeout_init},
    {Py_tp_members, timeout_members},
    {Py_tp_getset, timeout_getset},
    {Py_tp_methods, timeout_methods},
    {Py_tp_traverse, timeout_traverse},
    {Py_tp_clear, timeout_clear},
    {Py_tp_dealloc, timeout_dealloc},
    {0, NULL},
};

static PyType_Spec timeout_spec = {
    .name = "failsafe._native.Timeout",
    .basicsize = sizeof(TimeoutObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .slots = timeout_slots,
};

int fs_timeout_setup(PyObject *module, fs_state *st)
{
    if (fs_asyncio_setup(st) < 0 || fs_timerqueue_setup(module, st) < 0) {
        return -1;
    }
    st->Timeout_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &timeout_spec, NULL);
    if (fs_timeoutscope_setup(module, st) < 0
        || st->Timeout_Type == NULL || tm_install(module, st->Timeout_Type) < 0
        || fs_register_policy_type(st, st->Timeout_Type) < 0) {
        return -1;
    }
    st->queues = PyDict_New();
    if (st->queues == NULL) {
        return -1;
    }
    if (PyModule_AddType(module, st->Timeout_Type) < 0
        || PyModule_AddType(module, st->TimeoutScope_Type) < 0) {
        return -1;
    }
    return 0;
}

int fs_timeout_traverse(fs_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->queues);
    Py_VISIT(st->last_queue);
    Py_VISIT(st->CTask_Type);
    return 0;
}

void fs_timeout_clear(fs_state *st)
{
    st->last_loop = NULL;
    Py_CLEAR(st->last_queue);
    Py_CLEAR(st->queues);
    Py_CLEAR(st->CTask_Type);
    st->task_cancelling = NULL;
    st->task_uncancel = NULL;
    st->task_cancel = NULL;
}
