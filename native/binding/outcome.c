/* The part retry and fallback share: `on` matching and the hand-over to the Python slow path;
 * and Outcome, the plain policy base of components that only count (the stores' metrics). */
#include "fs_outcome.h"

#include <stddef.h>

int fs_outcome_configure(FsOutcome *o, PyObject *on, PyObject *on_pred, int handoff_results)
{
    /* on and on_pred are checked in Python (failsafe._core.check_exceptions, naming `on`).
     * Kept for direct _native use: the matching reads on as a tuple without checking; on_pred
     * is trusted to be callable (calling it reports otherwise). */
    if (on != Py_None && !PyTuple_Check(on)) {
        PyErr_SetString(PyExc_TypeError, "on must be a tuple of exception classes or None");
        return -1;
    }
    Py_XSETREF(o->on, on == Py_None ? NULL : Py_NewRef(on));
    Py_XSETREF(o->on_pred, on_pred == Py_None ? NULL : Py_NewRef(on_pred));
    Py_CLEAR(o->matched_type);
    o->handoff_results = handoff_results;
    return 0;
}

int fs_outcome_slow_path(FsCall *c, PyObject *method, PyObject *value, PyObject **out)
{
    PyObject *args, *kwargs;
    if (fs_call_unpack_args(c, &args, &kwargs) < 0) {
        *out = NULL;
        return -1;
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
    *out = res;
    return res == NULL ? -1 : FS_NEXT_CONTINUE;
}

int fs_outcome_match(FsOutcome *o, PyObject *exc, PyObject **out)
{
    /* Retries see the same type again and again: `on` is a tuple of classes, so a type it
     * covered once it covers always (a predicate is asked every time). */
    PyObject *tp = (PyObject *)Py_TYPE(exc);
    if (tp == o->matched_type) {
        return 1;
    }
    int m = fs_exception_matches(exc, o->on, o->on_pred, 0);
    if (m > 0) {
        if (o->on != NULL) {
            Py_XSETREF(o->matched_type, Py_NewRef(tp));
        }
        return 1;
    }
    if (m < 0) {
        /* The predicate failed: its error wins, chained to the call's exception. */
        PyObject *err = PyErr_GetRaisedException();
        if (err != exc) {
            PyException_SetContext(err, Py_NewRef(exc));
        }
        *out = err;
        return 0;
    }
    *out = Py_NewRef(exc);
    return 0;
}

int fs_outcome_traverse(FsOutcome *o, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(o));
    Py_VISIT(o->on);
    Py_VISIT(o->on_pred);
    Py_VISIT(o->matched_type);
    return fs_policy_traverse(&o->base, visit, arg);
}

void fs_outcome_clear(FsOutcome *o)
{
    fs_policy_clear_events(&o->base);
    Py_CLEAR(o->on);
    Py_CLEAR(o->on_pred);
    Py_CLEAR(o->matched_type);
    Py_CLEAR(o->base.name);
}

/* ------------------------------------------------------------------------------------------ */
/* Outcome: a policy that hands matched exceptions (none unless configured) to Python */

static int outcome_finish(FsCall *c, PyObject *result, PyObject *exc, PyObject **out)
{
    FsOutcome *o = (FsOutcome *)c->policy;
    if (exc == NULL) {
        if (o->handoff_results) {
            return fs_outcome_slow_path(c, c->policy->st->str_on_result, result, out);
        }
        *out = Py_NewRef(result);
        return FS_NEXT_RETURN;
    }
    if (!fs_outcome_match(o, exc, out)) {
        return FS_NEXT_RAISE;
    }
    return fs_outcome_slow_path(c, c->policy->st->str_on_error, exc, out);
}

fs_verdict fs_outcome_admit(FsPolicy *Py_UNUSED(p), fs_admission *Py_UNUSED(a),
                            PyObject *const *Py_UNUSED(args), size_t Py_UNUSED(nargsf),
                            PyObject *Py_UNUSED(kwnames))
{
    return FS_ADMIT_CALL;
}

static const fs_policy_ops outcome_ops = {
    .admit = fs_outcome_admit,
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
    if (fs_policy_init(&o->base, &outcome_ops, pattern, FS_POL_KEEP_ARGS, "outcome") < 0) {
        Py_DECREF(o);
        return NULL;
    }
    return (PyObject *)o;
}

/* _configure(on, on_pred, handoff_results) */
static PyObject *outcome_configure(PyObject *self, PyObject *args, PyObject *kwargs)
{
    PyObject *on = Py_None, *on_pred = Py_None;
    int handoff_results = 0;
    static char *kwlist[] = {"on", "on_pred", "handoff_results", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$OOp:_configure", kwlist, &on, &on_pred,
                                     &handoff_results)
        || fs_outcome_configure((FsOutcome *)self, on, on_pred, handoff_results) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static int outcome_traverse(PyObject *self, visitproc visit, void *arg)
{
    return fs_outcome_traverse((FsOutcome *)self, visit, arg);
}

static int outcome_clear(PyObject *self)
{
    fs_outcome_clear((FsOutcome *)self);
    return 0;
}

static void outcome_dealloc(PyObject *self)
{
    fs_policy_dealloc(self, outcome_clear);
}

static PyMemberDef outcome_members[] = {
    FS_POLICY_MEMBERS,
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef outcome_methods[] = {
    FS_POLICY_METHODS,
    {"_configure", (PyCFunction)(void (*)(void))outcome_configure, METH_VARARGS | METH_KEYWORDS,
     "Sets the exceptions (and whether results) handed to the slow path."},
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

static int outcome_setup(PyObject *module, fs_state *st)
{
    return fs_policy_type_add(module, st, &outcome_spec, NULL);
}

const fs_part fs_outcome_part = {
    .name = "outcome",
    .setup = outcome_setup,
};
