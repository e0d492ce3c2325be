/* timeoutscope: TimeoutScope, one `async with` entry of a shared Timeout (asyncio.Timeout's
 * when(), reschedule() and expired()), and the per-loop task -> innermost scope map through
 * which __aexit__ finds the scope of the exiting task. */
#include "fs_timers.h"

/* ------------------------------------------------------------------------------------------ */
/* Task -> scope map: the `async with` form finds the exiting task's scope of a shared Timeout.
 * A dict would do, at about twice the cost per entry and exit. */

static inline size_t tmap_home(PyObject *task, size_t mask)
{
    uint64_t h = (uint64_t)(uintptr_t)task * UINT64_C(0x9E3779B97F4A7C15);
    return (size_t)(h >> 32) & mask;
}

/* The slot of task, or the empty slot where it would go. */
static size_t tmap_index(const FsTimerQueue *q, PyObject *task)
{
    size_t mask = q->map_cap - 1, i = tmap_home(task, mask);
    while (q->map[i].task != NULL && q->map[i].task != task) {
        i = (i + 1) & mask;
    }
    return i;
}

static int tmap_grow(FsTimerQueue *q)
{
    size_t cap = q->map_cap ? q->map_cap * 2 : 8;
    tmap_slot *old = q->map, *map = PyMem_Calloc(cap, sizeof(*map));
    if (map == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    size_t old_cap = q->map_cap;
    q->map = map;
    q->map_cap = cap;
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].task != NULL) {
            q->map[tmap_index(q, old[i].task)] = old[i];
        }
    }
    PyMem_Free(old);
    return 0;
}

/* Empties slot i, shifting back the entries of its probe run (no tombstones). */
static void tmap_delete(FsTimerQueue *q, size_t i)
{
    size_t mask = q->map_cap - 1, j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (q->map[j].task == NULL) {
            break;
        }
        size_t k = tmap_home(q->map[j].task, mask);
        /* The entry at j moves to the hole unless its home lies cyclically in (i, j]. */
        if (i < j ? (k <= i || k > j) : (k <= i && k > j)) {
            q->map[i] = q->map[j];
            i = j;
        }
    }
    q->map[i].task = NULL;
    q->map[i].head = NULL;
    q->map_used--;
}

/* Makes s (not in the map) the innermost scope of task; the map takes a reference to s. */
int fs_tmap_push(FsTimerQueue *q, PyObject *task, TimeoutScope *s)
{
    if ((q->map_used + 1) * 2 > q->map_cap && tmap_grow(q) < 0) {
        return -1;
    }
    size_t i = tmap_index(q, task);
    if (q->map[i].task == NULL) {
        q->map[i].task = task;
        q->map_used++;
    }
    s->outer = q->map[i].head;      /* the map's reference to the old head passes to s */
    q->map[i].head = (TimeoutScope *)Py_NewRef(s);
    return 0;
}

/* Takes out the innermost scope of t in task's chain (the same object may be nested, and exits
 * of interleaved async generators may come out of order). The reference the chain held passes to
 * the caller. NULL when there is none (no error set). */
TimeoutScope *fs_tmap_pop(FsTimerQueue *q, PyObject *task, TimeoutObject *t)
{
    if (q->map_cap == 0) {
        return NULL;
    }
    size_t i = tmap_index(q, task);
    TimeoutScope *s = q->map[i].head, *inner = NULL;
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
        q->map[i].head = s->outer;
    }
    else {
        tmap_delete(q, i);
    }
    s->outer = NULL;
    return s;
}

/* The only active scope of t in any loop's map, taken out (its reference passes to the
 * caller), with its queue in *pq (borrowed); NULL when t has none or several. For exits that do
 * not run in the entering task: an async generator closed by the loop's finalizer task, or a
 * coroutine closed after its loop stopped. */
TimeoutScope *fs_tmap_pop_unique(fs_state *st, TimeoutObject *t, FsTimerQueue **pq)
{
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    FsTimerQueue *found_q = NULL;
    PyObject *found_task = NULL;
    int n = 0;
    while (st->queues != NULL && PyDict_Next(st->queues, &pos, &key, &value)) {
        FsTimerQueue *q = (FsTimerQueue *)value;
        for (size_t i = 0; i < q->map_cap; i++) {
            for (TimeoutScope *s = q->map[i].head; s != NULL; s = s->outer) {
                if (s->policy == t) {
                    n++;
                    found_q = q;
                    found_task = q->map[i].task;
                }
            }
        }
    }
    if (n != 1) {
        return NULL;
    }
    *pq = found_q;
    return fs_tmap_pop(found_q, found_task, t);
}

/* ------------------------------------------------------------------------------------------ */
/* TimeoutScope: one `async with` entry of a Timeout */

static const char *scope_phase_name(TimeoutScope *s)
{
    switch (s->phase) {
    case SCOPE_EXPIRED:
        return "expired";
    case SCOPE_FINISHED:
        return "finished";
    default:
        return s->entry.state == FS_TE_FIRED ? "expiring" : "active";
    }
}

static PyObject *scope_when(PyObject *self, PyObject *Py_UNUSED(unused))
{
    TimeoutScope *s = (TimeoutScope *)self;
    if (!s->has_when) {
        Py_RETURN_NONE;
    }
    return PyFloat_FromDouble(s->entry.node.when);
}

static PyObject *scope_expired(PyObject *self, PyObject *Py_UNUSED(unused))
{
    TimeoutScope *s = (TimeoutScope *)self;
    return PyBool_FromLong(s->phase == SCOPE_EXPIRED
                           || (s->phase == SCOPE_ACTIVE && s->entry.state == FS_TE_FIRED));
}

/* asyncio.Timeout.reschedule: None disables, a past deadline expires at the next iteration. */
static PyObject *scope_reschedule(PyObject *self, PyObject *arg)
{
    TimeoutScope *s = (TimeoutScope *)self;
    if (s->phase != SCOPE_ACTIVE || s->entry.state != FS_TE_ARMED) {
        PyErr_Format(PyExc_RuntimeError, "Cannot change state of %s Timeout",
                     scope_phase_name(s));
        return NULL;
    }
    FsTimerQueue *q = s->entry.queue;
    if (arg == Py_None) {
        fs_tq_remove(q, &s->entry);
        s->entry.node.when = INFINITY;
        s->has_when = 0;
        Py_RETURN_NONE;
    }
    double when = PyFloat_AsDouble(arg);
    if (when == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    if (isnan(when)) {
        PyErr_SetString(PyExc_ValueError, "when must not be NaN");
        return NULL;
    }
    PyObject *loop = PyObject_Vectorcall(q->st->get_running_loop, NULL, 0, NULL);
    if (loop == NULL) {
        return NULL;
    }
    double now;
    if (fs_tq_now(q, loop, &now) < 0) {
        Py_DECREF(loop);
        return NULL;
    }
    s->has_when = 1;
    if (when == INFINITY) {
        fs_tq_remove(q, &s->entry);
        s->entry.node.when = when;
    }
    else if (s->entry.node.index != FS_HEAP_NONE) {
        fs_heap_update(&q->heap, &s->entry.node, when);
    }
    else {
        s->entry.node.when = when;
        if (fs_tq_push(q, &s->entry.node) < 0) {
            s->entry.node.when = INFINITY;
            s->has_when = 0;
            Py_DECREF(loop);
            return NULL;
        }
    }
    int rc = fs_tq_rearm(q, loop, now);
    Py_DECREF(loop);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *scope_aenter(PyObject *self, PyObject *Py_UNUSED(unused))
{
    (void)self;
    PyErr_SetString(PyExc_RuntimeError, "Timeout has already been entered");
    return NULL;
}

static PyObject *scope_aexit(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    (void)args;
    (void)nargs;
    PyErr_SetString(PyExc_RuntimeError, "Timeout has already been entered");
    return NULL;
}

static PyObject *scope_repr(PyObject *self)
{
    TimeoutScope *s = (TimeoutScope *)self;
    PyObject *name = s->policy ? s->policy->base.name : Py_None;
    if (s->phase == SCOPE_ACTIVE && s->entry.state == FS_TE_ARMED) {
        if (!s->has_when) {
            return PyUnicode_FromFormat("<TimeoutScope %R [active] when=None>", name);
        }
        PyObject *w = PyFloat_FromDouble(round(s->entry.node.when * 1000.0) / 1000.0);
        if (w == NULL) {
            return NULL;
        }
        PyObject *r = PyUnicode_FromFormat("<TimeoutScope %R [active] when=%R>", name, w);
        Py_DECREF(w);
        return r;
    }
    return PyUnicode_FromFormat("<TimeoutScope %R [%s]>", name, scope_phase_name(s));
}

static int scope_traverse(PyObject *self, visitproc visit, void *arg)
{
    TimeoutScope *s = (TimeoutScope *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(s->entry.task);
    Py_VISIT(s->entry.queue);
    Py_VISIT(s->policy);
    Py_VISIT(s->outer);
    return 0;
}

static int scope_clear(PyObject *self)
{
    TimeoutScope *s = (TimeoutScope *)self;
    fs_entry_unlink(&s->entry);
    Py_CLEAR(s->policy);
    Py_CLEAR(s->outer);
    return 0;
}

static void scope_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    scope_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef scope_methods[] = {
    {"when", scope_when, METH_NOARGS, "when() -> the deadline in the loop's clock, or None."},
    {"reschedule", scope_reschedule, METH_O,
     "reschedule(when) -> moves the deadline (loop clock); None disables it."},
    {"expired", scope_expired, METH_NOARGS, "expired() -> True once the deadline has fired."},
    {"__aenter__", scope_aenter, METH_NOARGS, NULL},
    {"__aexit__", (PyCFunction)(void (*)(void))scope_aexit, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot scope_slots[] = {
    {Py_tp_doc, "One `async with` entry of a Timeout: asyncio.Timeout's when(), reschedule() and "
                "expired()."},
    {Py_tp_methods, scope_methods},
    {Py_tp_repr, scope_repr},
    {Py_tp_traverse, scope_traverse},
    {Py_tp_clear, scope_clear},
    {Py_tp_dealloc, scope_dealloc},
    {0, NULL},
};

static PyType_Spec scope_spec = {
    .name = "failsafe._native.TimeoutScope",
    .basicsize = sizeof(TimeoutScope),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = scope_slots,
};

int fs_timeoutscope_setup(PyObject *module, fs_state *st)
{
    st->TimeoutScope_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &scope_spec, NULL);
    return st->TimeoutScope_Type == NULL ? -1 : 0;
}
