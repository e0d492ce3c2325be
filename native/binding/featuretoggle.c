/* FeatureToggle: the feature-toggle policy type. A call runs when the toggle is enabled, its
 * predicate (if any) accepts the call's arguments and the call's key (if a rollout is set)
 * falls in the rollout's share of buckets (the core's stable hash, fs_hash.h). Nothing about a
 * call's outcome matters, so an admitted call is the function's own coroutine. An async
 * predicate is awaited by the Python subclass (`_call_slow`), which then asks `_decide`. */
#include "fs_binding.h"

#include "fs_hash.h"


enum { TG_ENABLED = 0, TG_DISABLED = 1 };
static const char *const tg_metrics[] = {"enabled", "disabled", NULL};

typedef struct FsToggle {
    FsPolicy base;
    PyObject *predicate;    /* predicate over the call's arguments, or NULL */
    PyObject *key;          /* key function of the rollout, or NULL: no rollout */
    uint32_t limit;         /* rollout: buckets admitted (a key is in when bucket < limit) */
    int enabled;
    int pred_async;         /* the predicate must be awaited: admission goes to Python */
    PyObject *refusal_args; /* FeatureDisabled's (msg,), for refusal_name (fs_named_refusal_args) */
    PyObject *refusal_name;
} FsToggle;

/* The rollout bucket of a key value: a str (its UTF-8), bytes, or an int (its decimal digits).
 * -1 with an exception for anything else. */
static long key_bucket(PyObject *k)
{
    if (PyUnicode_Check(k)) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(k, &n);
        return s == NULL ? -1 : (long)fs_rollout_bucket(s, (size_t)n);
    }
    if (PyBytes_Check(k)) {
        return (long)fs_rollout_bucket(PyBytes_AS_STRING(k), (size_t)PyBytes_GET_SIZE(k));
    }
    if (PyLong_Check(k) && !PyBool_Check(k)) {
        PyObject *digits = PyLong_Type.tp_repr(k);
        if (digits == NULL) {
            return -1;
        }
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(digits, &n);
        long b = s == NULL ? -1 : (long)fs_rollout_bucket(s, (size_t)n);
        Py_DECREF(digits);
        return b;
    }
    PyErr_Format(PyExc_TypeError, "a rollout key must be a str, bytes or int, not %.200s",
                 Py_TYPE(k)->tp_name);
    return -1;
}

/* A call refused: counted, reported, FeatureDisabled set (deferred: unchained, for admit, see
 * fs_defer). Always -1. */
static int tg_reject(FsToggle *t, bool deferred)
{
    t->base.counters[TG_DISABLED]++;
    if (fs_listening(&t->base) && fs_emit(&t->base, "on_feature_disabled", NULL) < 0) {
        return -1;
    }
    PyObject *args = fs_named_refusal_args(&t->refusal_args, &t->refusal_name, t->base.name,
                                           "feature %.64S is disabled", t->base.name);
    PyObject *exc = args == NULL ? NULL : fs_refusal(t->base.st, FS_E_FEATURE_DISABLED, args, -1);
    fs_raise_or_defer(exc, deferred);
    return -1;
}

/* A call admitted: counted and reported. 0, or -1 for a listener's KeyboardInterrupt. */
static int tg_accept(FsToggle *t)
{
    t->base.counters[TG_ENABLED]++;
    if (fs_listening(&t->base)) {
        return fs_emit(&t->base, "on_feature_enabled", NULL);
    }
    return 0;
}

/* 1 when the key (the key function's value, owned by the caller) is in the rollout. */
static int tg_in_rollout(FsToggle *t, PyObject *k)
{
    long b = key_bucket(k);
    return b < 0 ? -1 : (uint32_t)b < t->limit;
}

static fs_verdict tg_admit(FsPolicy *p, fs_admission *Py_UNUSED(a), PyObject *const *args,
                           size_t nargsf, PyObject *kwnames)
{
    FsToggle *t = (FsToggle *)p;
    if (!t->enabled) {
        return tg_reject(t, true);
    }
    if (t->predicate != NULL) {
        if (t->pred_async) {
            return FS_ADMIT_SLOW;
        }
        int ok = fs_predicate_verdict(t->predicate, args, nargsf, kwnames);
        if (ok <= 0) {
            return ok < 0 ? -1 : tg_reject(t, true);
        }
    }
    if (t->key != NULL) {
        PyObject *k = PyObject_Vectorcall(t->key, args, nargsf, kwnames);
        if (k == NULL) {
            return -1;
        }
        int in = tg_in_rollout(t, k);
        Py_DECREF(k);
        if (in <= 0) {
            return in < 0 ? -1 : tg_reject(t, true);
        }
    }
    return tg_accept(t);
}

static const fs_policy_ops tg_ops = {
    .admit = tg_admit,
};

/* ------------------------------------------------------------------------------------------ */
/* Type */

static PyObject *tg_new(PyTypeObject *type, PyObject *Py_UNUSED(args),
                        PyObject *Py_UNUSED(kwargs))
{
    /* Arguments belong to the subclass's __init__, which calls _configure. */
    FsToggle *t = (FsToggle *)type->tp_alloc(type, 0);
    if (t == NULL) {
        return NULL;
    }
    t->enabled = 1;
    if (fs_policy_init(&t->base, &tg_ops, FS_PATTERN_FEATURETOGGLE, 0, "featuretoggle") < 0) {
        Py_DECREF(t);
        return NULL;
    }
    return (PyObject *)t;
}

/* _configure(*, enabled, predicate, pred_async, key, rollout) */
static PyObject *tg_configure(PyObject *self, PyObject *args, PyObject *kwargs)
{
    FsToggle *t = (FsToggle *)self;
    int enabled = 1, pred_async = 0;
    PyObject *predicate = Py_None, *key = Py_None;
    double rollout = 100.0;
    static char *kwlist[] = {"enabled", "predicate", "pred_async", "key", "rollout", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$pOpOd:_configure", kwlist, &enabled,
                                     &predicate, &pred_async, &key, &rollout)) {
        return NULL;
    }
    if ((predicate != Py_None && !PyCallable_Check(predicate))
        || (key != Py_None && !PyCallable_Check(key))) {
        PyErr_SetString(PyExc_TypeError, "predicate and key must be callable or None");
        return NULL;
    }
    t->enabled = enabled;
    t->pred_async = pred_async;
    t->limit = fs_rollout_limit(rollout);
    Py_XSETREF(t->predicate, predicate == Py_None ? NULL : Py_NewRef(predicate));
    Py_XSETREF(t->key, key == Py_None ? NULL : Py_NewRef(key));
    Py_RETURN_NONE;
}

/* Sets the flag; a change is reported as on_feature_toggled(toggle, enabled). */
static int tg_set(FsToggle *t, int enabled)
{
    if (t->enabled == enabled) {
        return 0;
    }
    t->enabled = enabled;
    if (fs_event_wanted(&t->base, "on_feature_toggled")) {
        PyObject *args = Py_BuildValue("(O)", enabled ? Py_True : Py_False);
        if (args == NULL) {
            return -1;
        }
        return fs_emit(&t->base, "on_feature_toggled", args);
    }
    return 0;
}

/* enable() / disable(): take effect at once and return an awaitable that is already done, so
 * both `toggle.enable()` and failsafe-py's `await toggle.enable()` work. */
static PyObject *tg_switch(PyObject *self, int enabled)
{
    FsToggle *t = (FsToggle *)self;
    if (tg_set(t, enabled) < 0) {
        return NULL;
    }
    return Py_NewRef(t->base.st->ready_none);
}

static PyObject *tg_enable(PyObject *self, PyObject *Py_UNUSED(unused))
{
    return tg_switch(self, 1);
}

static PyObject *tg_disable(PyObject *self, PyObject *Py_UNUSED(unused))
{
    return tg_switch(self, 0);
}

static PyObject *tg_get_enabled(PyObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(((FsToggle *)self)->enabled);
}

static int tg_set_enabled(PyObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "enabled cannot be deleted");
        return -1;
    }
    if (!PyBool_Check(value)) {
        PyErr_Format(PyExc_TypeError, "enabled must be a bool, not %.200s",
                     Py_TYPE(value)->tp_name);
        return -1;
    }
    return tg_set((FsToggle *)self, value == Py_True);
}

/* _decide(passed, args, kwargs): the rest of an admission after the Python side ran the
 * predicate (passed is its verdict): flag, rollout key, counters, events. Returns None or
 * raises FeatureDisabled. */
static PyObject *tg_decide(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    FsToggle *t = (FsToggle *)self;
    if (nargs != 3 || !PyTuple_Check(args[1]) || !PyDict_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "_decide(passed, args: tuple, kwargs: dict)");
        return NULL;
    }
    int passed = PyObject_IsTrue(args[0]);
    if (passed < 0) {
        return NULL;
    }
    if (!t->enabled || !passed) {
        tg_reject(t, false);
        return NULL;
    }
    if (t->key != NULL) {
        PyObject *k = PyObject_Call(t->key, args[1], args[2]);
        if (k == NULL) {
            return NULL;
        }
        int in = tg_in_rollout(t, k);
        Py_DECREF(k);
        if (in <= 0) {
            if (in == 0) {
                tg_reject(t, false);
            }
            return NULL;
        }
    }
    if (tg_accept(t) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* in_rollout(key): whether a key value falls in this toggle's rollout (the flag and the
 * predicate aside; every key is in without a rollout). */
static PyObject *tg_in_rollout_py(PyObject *self, PyObject *k)
{
    FsToggle *t = (FsToggle *)self;
    int in = tg_in_rollout(t, k);
    if (in < 0) {
        return NULL;
    }
    return PyBool_FromLong(t->key == NULL || in);
}

static int tg_traverse(PyObject *self, visitproc visit, void *arg)
{
    FsToggle *t = (FsToggle *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(t->predicate);
    Py_VISIT(t->key);
    Py_VISIT(t->refusal_args);
    Py_VISIT(t->refusal_name);
    return fs_policy_traverse(&t->base, visit, arg);
}

static int tg_clear(PyObject *self)
{
    fs_policy_clear_events((FsPolicy *)self);
    FsToggle *t = (FsToggle *)self;
    Py_CLEAR(t->predicate);
    Py_CLEAR(t->key);
    Py_CLEAR(t->refusal_args);
    Py_CLEAR(t->refusal_name);
    Py_CLEAR(t->base.name);
    return 0;
}

static void tg_dealloc(PyObject *self)
{
    fs_policy_dealloc(self, tg_clear);
}

static PyMemberDef tg_members[] = {
    FS_POLICY_MEMBERS,
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef tg_getset[] = {
    {"enabled", tg_get_enabled, tg_set_enabled, "whether the feature is switched on", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef tg_methods[] = {
    FS_POLICY_METHODS,
    {"_configure", (PyCFunction)(void (*)(void))tg_configure, METH_VARARGS | METH_KEYWORDS,
     "Sets what the C fast path needs to know."},
    {"enable", tg_enable, METH_NOARGS, "Switches the feature on (awaiting the result is optional)."},
    {"disable", tg_disable, METH_NOARGS,
     "Switches the feature off (awaiting the result is optional)."},
    {"_decide", (PyCFunction)(void (*)(void))tg_decide, METH_FASTCALL,
     "Completes an admission whose predicate ran in Python."},
    {"in_rollout", tg_in_rollout_py, METH_O, "Whether a key value falls in the rollout."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot tg_slots[] = {
    {Py_tp_new, tg_new},
    {Py_tp_members, tg_members},
    {Py_tp_getset, tg_getset},
    {Py_tp_methods, tg_methods},
    {Py_tp_traverse, tg_traverse},
    {Py_tp_clear, tg_clear},
    {Py_tp_dealloc, tg_dealloc},
    {0, NULL},
};

static PyType_Spec tg_spec = {
    .name = "failsafe._native.FeatureToggle",
    .basicsize = sizeof(FsToggle),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .slots = tg_slots,
};

/* _rollout_bucket(key): the stable bucket (0 .. 999,999) of a key value. */
static PyObject *mod_rollout_bucket(PyObject *Py_UNUSED(module), PyObject *k)
{
    long b = key_bucket(k);
    return b < 0 ? NULL : PyLong_FromLong(b);
}

static PyMethodDef tg_module_methods[] = {
    {"_rollout_bucket", mod_rollout_bucket, METH_O,
     "The stable rollout bucket (0 .. 999,999) of a str, bytes or int key."},
    {NULL, NULL, 0, NULL},
};

static int tg_setup(PyObject *module, fs_state *st)
{
    if (PyModule_AddFunctions(module, tg_module_methods) < 0) {
        return -1;
    }
    return fs_policy_type_add(module, st, &tg_spec, &st->Toggle_Type);
}

static int tg_part_traverse(fs_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->Toggle_Type);
    return 0;
}

static void tg_part_clear(fs_state *st)
{
    Py_CLEAR(st->Toggle_Type);
}

const fs_part fs_featuretoggle_part = {
    .name = "featuretoggle",
    .pattern = FS_PATTERN_FEATURETOGGLE,
    .metrics = tg_metrics,
    .setup = tg_setup,
    .traverse = tg_part_traverse,
    .clear = tg_part_clear,
};
