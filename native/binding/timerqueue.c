/* timerqueue: one TimerQueue per event loop, holding the deadlines of its live entries in a C
 * min-heap and at most one armed loop timer, for the earliest deadline. Entering arms a timer
 * only when its deadline becomes the earliest; leaving only unlinks the entry: a stale timer
 * fires once, finds nothing due and re-arms for what is left. No TimerHandle per call. */
#include "fs_timers.h"

#define TMO_HEAP_MIN 16

/* ------------------------------------------------------------------------------------------ */
/* TimerQueue */

static PyObject *tq_fire(PyObject *self, PyObject *unused);
static PyObject *tq_loop_gone(PyObject *self, PyObject *ref);

static PyMethodDef tq_fire_def = {"_fire", tq_fire, METH_O, NULL};

typedef PyObject *(*fastcall_kw)(PyObject *, PyObject *const *, Py_ssize_t, PyObject *);
static PyMethodDef tq_loop_gone_def = {"_loop_gone", tq_loop_gone, METH_O, NULL};

/* The referent of a weak reference as a new reference, or NULL (no error) once it is gone. */
static PyObject *tq_deref(PyObject *ref)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *obj = NULL;
    if (PyWeakref_GetRef(ref, &obj) < 0) {
        PyErr_Clear();
        return NULL;
    }
    return obj;
#else
    PyObject *obj = PyWeakref_GET_OBJECT(ref);
    return obj == Py_None ? NULL : Py_NewRef(obj);
#endif
}

/* The queue's loop as a new reference, or NULL (no error) once it is gone. */
static PyObject *tq_loop(FsTimerQueue *q)
{
    if (q->loop != NULL) {
        return Py_NewRef(q->loop);
    }
    return q->loop_ref ? tq_deref(q->loop_ref) : NULL;
}

/* Arms the single loop timer for when: call_soon if already due (as asyncio.timeout does, to
 * keep its order against other ready callbacks), else call_at. Cancels the timer it replaces. */
int fs_tq_arm(FsTimerQueue *q, PyObject *loop, double when, double now)
{
    fs_state *st = q->st;
    if (st->empty_context == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "failsafe._native is finalized");
        return -1;
    }
    q->arm_gen = (q->arm_gen + 1) & 0xff;
    q->armed_when = INFINITY;
    q->armed_for = -INFINITY;
    PyObject *old = q->handle;
    if (old != NULL) {
        q->handle = NULL;
        PyObject *h = tq_deref(old);
        Py_DECREF(old);
        PyObject *r = h ? PyObject_CallMethodNoArgs(h, st->str_cancel) : Py_NewRef(Py_None);
        Py_XDECREF(h);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
    }
    if (q->fire_cb == NULL
        && (q->fire_cb = PyCMethod_New(&tq_fire_def, (PyObject *)q, NULL, NULL)) == NULL) {
        return -1;
    }
    if (q->kw_context == NULL && (q->kw_context = PyTuple_Pack(1, st->str_context)) == NULL) {
        return -1;
    }
    if (q->context == NULL && (q->context = PyContext_New()) == NULL) {
        return -1;
    }
    PyObject *cb = q->fire_cb, *kwnames = q->kw_context;
    PyObject *gen = PyLong_FromLong(q->arm_gen);
    PyObject *h = NULL;
    if (gen != NULL) {
        if (when <= now) {
            PyObject *args[] = {loop, cb, gen, q->context};
            h = PyObject_VectorcallMethod(st->str_call_soon, args, 3, kwnames);
        }
        else {
            PyObject *w = PyFloat_FromDouble(when);
            if (w != NULL) {
                PyObject *args[] = {loop, w, cb, gen, q->context};
                h = PyObject_VectorcallMethod(st->str_call_at, args, 4, kwnames);
                Py_DECREF(w);
            }
        }
    }
    Py_XDECREF(gen);
    if (h == NULL) {
        return -1;
    }
    /* A call_soon handle is never cancelled (no deadline comes before it): not kept. Handles
     * that cannot be weakly referenced are not kept either: they run stale, as no-ops. */
    q->handle = when <= now ? NULL : PyWeakref_NewRef(h, NULL);
    Py_DECREF(h);
    if (q->handle == NULL && when > now) {
        if (!PyErr_ExceptionMatches(PyExc_TypeError)) {
            return -1;
        }
        PyErr_Clear();
    }
    q->armed_when = when <= now ? -INFINITY : when;
    q->armed_for = when;
    return 0;
}

/* Arms for the earliest deadline if the armed timer would come too late. */
int fs_tq_rearm(FsTimerQueue *q, PyObject *loop, double now)
{
    fs_heap_node *top = fs_heap_peek(&q->heap);
    if (q->firing || top == NULL || !(top->when < q->armed_when)) {
        return 0;
    }
    return fs_tq_arm(q, loop, top->when, now);
}

/* Inserts n. Like a loop TimerHandle holding its callback, the heap holds a reference to the
 * entry's owner (the call or scope, hence its await chain) until the deadline fires or the entry
 * leaves: a pending deadline is not lost with an otherwise unreferenced task. */
int fs_tq_push(FsTimerQueue *q, fs_heap_node *n)
{
    if (fs_heap_push(&q->heap, n) != 0) {
        size_t cap = q->heap.cap ? q->heap.cap * 2 : TMO_HEAP_MIN;
        fs_heap_node **slots = PyMem_Realloc(q->heap.slots, cap * sizeof(*slots));
        if (slots == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        q->heap.slots = slots;
        q->heap.cap = cap;
        if (fs_heap_push(&q->heap, n) != 0) {
            return -1;  /* cannot happen: there is room now */
        }
    }
    Py_INCREF(entry_of(n)->owner);
    return 0;
}

/* Takes e out of the heap if it is there, releasing the heap's reference to its owner. The
 * caller must hold its own reference to the owner. */
void fs_tq_remove(FsTimerQueue *q, FsTimerEntry *e)
{
    if (e->node.index != FS_HEAP_NONE) {
        fs_heap_remove(&q->heap, &e->node);
        Py_DECREF(e->owner);
    }
}

/* The single loop callback: cancels the task of every due entry, then arms for the rest.
 * task.cancel() may run arbitrary code (Task subclasses) that adds or removes entries: each
 * entry leaves the heap before the call, the top is re-read every turn, and arming waits for
 * the end of the pass.
 *
 * Due is what the loop itself judged due by running this timer (every deadline up to the one it
 * was armed for), what its clock has reached, and what _run_once would run now (within
 * loop._clock_resolution). Trusting the loop's decision matters where its clock is coarse or
 * cached (uvloop: whole milliseconds, and call_at rounds to them): a deadline not yet reached
 * by time() when the timer runs would otherwise re-arm call_soon until the clock ticks, and
 * timeout(0) would outlive the first suspension. */
static PyObject *tq_fire(PyObject *self, PyObject *gen)
{
    FsTimerQueue *q = (FsTimerQueue *)self;
    fs_state *st = q->st;
    if (PyLong_AsLong(gen) != q->arm_gen || st->str_cancel == NULL) {
        PyErr_Clear();
        Py_RETURN_NONE;     /* replaced by an earlier deadline but not cancelled, or the module
                             * state is already cleared (interpreter shutdown) */
    }
    Py_CLEAR(q->handle);
    double armed_for = q->armed_for;
    q->armed_when = INFINITY;
    q->armed_for = -INFINITY;
    PyObject *loop = tq_loop(q);
    if (loop == NULL) {
        Py_RETURN_NONE;
    }
    double now;
    if (fs_tq_now(q, loop, &now) < 0) {
        PyErr_WriteUnraisable(self);
        Py_DECREF(loop);
        Py_RETURN_NONE;
    }
    double limit = now + q->resolution, reached = armed_for > now ? armed_for : now;
    q->firing = 1;
    fs_heap_node *top;
    while ((top = fs_heap_peek(&q->heap)) != NULL && (top->when <= reached || top->when < limit)) {
        fs_heap_pop(&q->heap);
        FsTimerEntry *e = entry_of(top);
        PyObject *owner = e->owner;     /* the heap's reference passes to this pass */
        if (Py_REFCNT(owner) == 1) {
            /* Only the heap kept the call: nobody awaits it, its task is not ours to cancel. */
            fs_entry_unlink(e);
            Py_DECREF(owner);
            continue;
        }
        if (e->fire != NULL) {
            /* Not a cancelling deadline: the owner's own action (a hedge's next attempt). */
            if (e->fire(e) < 0) {
                PyErr_WriteUnraisable(owner);
            }
            Py_DECREF(owner);
            continue;
        }
        e->state = FS_TE_FIRED;
        PyObject *task = Py_NewRef(e->task);
        PyObject *r;
        if (st->task_cancel != NULL && Py_IS_TYPE(task, st->CTask_Type)) {
            r = ((fastcall_kw)(void (*)(void))st->task_cancel)(task, NULL, 0, NULL);
        }
        else {
            r = PyObject_CallMethodNoArgs(task, st->str_cancel);
        }
        if (r == NULL) {
            PyErr_WriteUnraisable(task);
        }
        Py_XDECREF(r);
        Py_DECREF(task);
        Py_DECREF(owner);
    }
    q->firing = 0;
    if (fs_tq_rearm(q, loop, now) < 0) {
        PyErr_WriteUnraisable(self);
    }
    Py_DECREF(loop);
    Py_RETURN_NONE;
}

/* Weak reference callback: the loop is gone, so is its queue (entries still holding it keep it
 * alive until they leave). */
static PyObject *tq_loop_gone(PyObject *self, PyObject *Py_UNUSED(ref))
{
    FsTimerQueue *q = (FsTimerQueue *)self;
    fs_state *st = q->st;
    Py_CLEAR(q->loop_ref);
    if (st->last_queue == self) {
        st->last_loop = NULL;
        Py_CLEAR(st->last_queue);
    }
    if (st->queues != NULL && q->key != NULL) {
        PyObject *cur = PyDict_GetItemWithError(st->queues, q->key);
        if (cur == self && PyDict_DelItem(st->queues, q->key) < 0) {
            PyErr_WriteUnraisable(self);
        }
        else if (cur == NULL && PyErr_Occurred()) {
            PyErr_WriteUnraisable(self);
        }
    }
    Py_RETURN_NONE;
}

/* Drops the queues of closed loops held strongly (those that cannot be weakly referenced). */
static int tq_prune(fs_state *st)
{
    PyObject *dead = NULL, *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(st->queues, &pos, &key, &value)) {
        FsTimerQueue *q = (FsTimerQueue *)value;
        if (q->loop == NULL) {
            continue;
        }
        PyObject *closed = PyObject_CallMethod(q->loop, "is_closed", NULL);
        int yes = closed ? PyObject_IsTrue(closed) : -1;
        Py_XDECREF(closed);
        if (yes < 0) {
            PyErr_Clear();
            continue;
        }
        if (yes && ((dead == NULL && (dead = PyList_New(0)) == NULL)
                    || PyList_Append(dead, key) < 0)) {
            Py_XDECREF(dead);
            return -1;
        }
    }
    if (dead == NULL) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(dead); i++) {
        PyObject *k = PyList_GET_ITEM(dead, i);
        PyObject *q = PyDict_GetItemWithError(st->queues, k);
        if (q == st->last_queue) {
            st->last_loop = NULL;
            Py_CLEAR(st->last_queue);
        }
        if (PyDict_DelItem(st->queues, k) < 0) {
            Py_DECREF(dead);
            return -1;
        }
    }
    Py_DECREF(dead);
    return 0;
}

static FsTimerQueue *tq_new(fs_state *st, PyObject *loop, PyObject *key)
{
    FsTimerQueue *q = PyObject_GC_New(FsTimerQueue, st->TimerQueue_Type);
    if (q == NULL) {
        return NULL;
    }
    q->st = st;
    q->loop_ref = NULL;
    q->loop = NULL;
    q->key = Py_NewRef(key);
    q->handle = NULL;
    q->fire_cb = NULL;
    q->kw_context = NULL;
    q->context = NULL;
    q->arm_gen = 0;
    q->armed_when = INFINITY;
    q->armed_for = -INFINITY;
    q->resolution = 0.0;
    q->live = 0;
    fs_heap_init(&q->heap, NULL, 0);
    q->clock = fs_loop_clock(loop);
    q->firing = 0;
    q->ready_spare = NULL;
    q->spares = NULL;
    q->nspares = 0;
    fs_ptrmap_init(&q->map);
    PyObject_GC_Track(q);
    PyObject *res = PyObject_GetAttrString(loop, "_clock_resolution");
    if (res != NULL) {
        double r = PyFloat_AsDouble(res);
        Py_DECREF(res);
        if (r >= 0.0 && isfinite(r)) {
            q->resolution = r;
        }
    }
    PyErr_Clear();
    PyObject *cb = PyCMethod_New(&tq_loop_gone_def, (PyObject *)q, NULL, NULL);
    if (cb == NULL) {
        Py_DECREF(q);
        return NULL;
    }
    q->loop_ref = PyWeakref_NewRef(loop, cb);
    Py_DECREF(cb);
    if (q->loop_ref == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_TypeError)) {
            Py_DECREF(q);
            return NULL;
        }
        PyErr_Clear();
        q->loop = Py_NewRef(loop);
    }
    return q;
}

FsTimerQueue *fs_tq_lookup(fs_state *st, PyObject *loop)
{
    PyObject *key = PyLong_FromVoidPtr(loop);
    if (key == NULL) {
        return NULL;
    }
    FsTimerQueue *q = (FsTimerQueue *)Py_XNewRef(PyDict_GetItemWithError(st->queues, key));
    if (q == NULL && !PyErr_Occurred()) {
        if (tq_prune(st) < 0 || (q = tq_new(st, loop, key)) == NULL
            || PyDict_SetItem(st->queues, key, (PyObject *)q) < 0) {
            Py_XDECREF(q);
            Py_DECREF(key);
            return NULL;
        }
    }
    Py_DECREF(key);
    if (q != NULL) {
        st->last_loop = loop;
        Py_XSETREF(st->last_queue, (PyObject *)q);
    }
    return q;
}

static int tq_traverse(PyObject *self, visitproc visit, void *arg)
{
    FsTimerQueue *q = (FsTimerQueue *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(q->loop_ref);
    Py_VISIT(q->loop);
    Py_VISIT(q->handle);
    Py_VISIT(q->fire_cb);
    Py_VISIT(q->context);
    Py_VISIT(q->ready_spare);
    for (size_t i = 0; i < q->heap.len; i++) {
        Py_VISIT(entry_of(q->heap.slots[i])->owner);    /* held while registered */
    }
    for (size_t i = 0; i < q->map.cap; i++) {
        if (q->map.slots[i].key != NULL) {
            Py_VISIT((PyObject *)q->map.slots[i].value);
        }
    }
    return 0;
}

static int tq_clear(PyObject *self)
{
    FsTimerQueue *q = (FsTimerQueue *)self;
    /* Entries still registered leave the heap (dropping its references to their owners); they
     * find themselves out of it when they unlink. */
    fs_heap_node *n;
    while ((n = fs_heap_pop(&q->heap)) != NULL) {
        Py_DECREF(entry_of(n)->owner);   /* may free it: nothing of it is read after */
    }
    Py_CLEAR(q->loop_ref);
    Py_CLEAR(q->loop);
    Py_CLEAR(q->key);
    Py_CLEAR(q->handle);
    Py_CLEAR(q->fire_cb);
    Py_CLEAR(q->kw_context);
    Py_CLEAR(q->context);
    Py_CLEAR(q->ready_spare);
    while (q->spares != NULL) {    /* one by one: freeing the head must not free the list */
        TimeoutScope *s = q->spares;
        q->spares = s->outer;
        q->nspares--;
        s->outer = NULL;
        Py_DECREF(s);
    }
    /* Detached first: releasing a scope may run code that looks at the map. */
    fs_ptrmap map = q->map;
    fs_ptrmap_init(&q->map);
    for (size_t i = 0; i < map.cap; i++) {
        if (map.slots[i].key != NULL) {
            Py_DECREF((PyObject *)map.slots[i].value);
        }
    }
    PyMem_Free(map.slots);
    return 0;
}

static void tq_dealloc(PyObject *self)
{
    FsTimerQueue *q = (FsTimerQueue *)self;
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    tq_clear(self);
    PyMem_Free(q->heap.slots);
    q->heap.slots = NULL;
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *tq_repr(PyObject *self)
{
    FsTimerQueue *q = (FsTimerQueue *)self;
    return PyUnicode_FromFormat("<failsafe timer queue: %zd live, %zd in heap>", q->live,
                                (Py_ssize_t)q->heap.len);
}

static PyType_Slot tq_slots[] = {
    {Py_tp_traverse, tq_traverse},
    {Py_tp_clear, tq_clear},
    {Py_tp_dealloc, tq_dealloc},
    {Py_tp_repr, tq_repr},
    {0, NULL},
};

static PyType_Spec tq_spec = {
    .name = "failsafe._native.TimerQueue",
    .basicsize = sizeof(FsTimerQueue),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = tq_slots,
};

/* ------------------------------------------------------------------------------------------ */
/* Module level */

/* _timeout_pending(): live timeout entries of the running loop (for tests). */
static PyObject *mod_timeout_pending(PyObject *module, PyObject *Py_UNUSED(unused))
{
    fs_state *st = PyModule_GetState(module);
    PyObject *loop = PyObject_Vectorcall(st->get_running_loop, NULL, 0, NULL);
    if (loop == NULL) {
        return NULL;
    }
    FsTimerQueue *q = fs_tq_for_loop(st, loop);
    Py_DECREF(loop);
    if (q == NULL) {
        return NULL;
    }
    return PyLong_FromSsize_t(q->live);
}

/* _timeout_clock(): how the running loop's queue reads its time (for tests). */
static PyObject *mod_timeout_clock(PyObject *module, PyObject *Py_UNUSED(unused))
{
    fs_state *st = PyModule_GetState(module);
    PyObject *loop = PyObject_Vectorcall(st->get_running_loop, NULL, 0, NULL);
    if (loop == NULL) {
        return NULL;
    }
    FsTimerQueue *q = fs_tq_for_loop(st, loop);
    Py_DECREF(loop);
    if (q == NULL) {
        return NULL;
    }
    static const char *const names[] = {"call", "monotonic", "libuv"};
    return PyUnicode_FromString(names[q->clock]);
}

static PyMethodDef timeout_functions[] = {
    {"_timeout_pending", mod_timeout_pending, METH_NOARGS,
     "Live timeout entries of the running loop (testing aid)."},
    {"_timeout_clock", mod_timeout_clock, METH_NOARGS,
     "How the running loop's time is read: 'call' (loop.time()), 'monotonic' or 'libuv' "
     "(testing aid)."},
    {NULL, NULL, 0, NULL},
};

int fs_timerqueue_setup(PyObject *module, fs_state *st)
{
    st->TimerQueue_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &tq_spec, NULL);
    if (st->TimerQueue_Type == NULL || PyModule_AddFunctions(module, timeout_functions) < 0) {
        return -1;
    }
    return 0;
}
