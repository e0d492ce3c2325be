/* timeoutscope: TimeoutScope, one `async with` entry of a Timeout, with asyncio.Timeout's
 * when(), reschedule() and expired(). Separate from the policy: it is what `as` binds, and its
 * methods move a live deadline in the queue. */
#include "fs_timers.h"

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
    s->entry.by_deadline = 0;   /* a time of the caller's own now, not the deadline's */
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
    Py_CLEAR(s->lat);
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
