/* Binding errors: the one place exception classes are bound, the one constructor of refusals
 * (and the cache of their message arguments), the one raise path and chaining rule, and the
 * integer-argument converter that names the parameter in its TypeError/ValueError; and
 * BreakerFailingBase, the C base of the breaker's refusal. */
#include <stdarg.h>

#include "fs_binding.h"

/* Where the class of each fs_err is defined, in enum order: the one place exception classes
 * are bound. Imported on first use (its pattern's package is loaded by then) and kept. */
static const char *const error_homes[FS_E_COUNT][2] = {
    {"failsafe.timeout.exceptions", "TimeoutError"},
    {"failsafe.circuitbreaker.exceptions", "BreakerFailing"},
    {"failsafe.failfast.exceptions", "FailFastOpen"},
    {"failsafe.bulkhead.exceptions", "BulkheadFull"},
    {"failsafe.ratelimit.exceptions", "RateLimitExceeded"},
    {"failsafe.hedge.exceptions", "HedgeTimeout"},
    {"failsafe.featuretoggle.exceptions", "FeatureDisabled"},
    {"failsafe.deadline", "DeadlineExceeded"},
};

PyObject *fs_error_class(fs_state *st, fs_err code)
{
    if ((int)code < 0 || code >= FS_E_COUNT) {
        return PyExc_RuntimeError;
    }
    if (st->errors[code] == NULL) {
        PyObject *saved = PyErr_GetRaisedException();
        PyObject *mod = PyImport_ImportModule(error_homes[code][0]);
        PyObject *cls = mod != NULL ? PyObject_GetAttrString(mod, error_homes[code][1]) : NULL;
        Py_XDECREF(mod);
        if (cls != NULL && PyType_Check(cls)) {
            st->errors[code] = cls;
        }
        else {
            Py_XDECREF(cls);
            PyErr_Clear();
        }
        PyErr_SetRaisedException(saved);
    }
    if (st->errors[code] != NULL) {
        return st->errors[code];
    }
    return code == FS_E_TIMEOUT ? PyExc_TimeoutError : PyExc_RuntimeError;
}

PyObject *fs_error(fs_state *st, fs_err code, const char *msg)
{
    PyObject *cls = fs_error_class(st, code);
    if (msg != NULL) {
        PyErr_SetString(cls, msg);
    }
    else {
        PyErr_SetNone(cls);
    }
    return NULL;
}

PyObject *fs_refusal(fs_state *st, fs_err code, PyObject *args, int64_t retry_after_ns)
{
    PyObject *cls = fs_error_class(st, code);
    PyObject *exc;
    if (PyType_Check(cls)
        && PyType_IsSubtype((PyTypeObject *)cls, (PyTypeObject *)PyExc_BaseException)) {
        exc = ((PyTypeObject *)cls)->tp_new((PyTypeObject *)cls, args, NULL);
    }
    else {
        exc = PyObject_Call(cls, args, NULL);   /* a factory bound in place of a class */
    }
    if (exc != NULL && retry_after_ns >= 0) {
        /* RateLimitExceeded derives its retry_after properties from _after. */
        PyObject *name = code == FS_E_RATE_LIMIT_EXCEEDED && st->str_after != NULL
                             ? st->str_after
                             : st->str_retry_after;
        PyObject *after = PyFloat_FromDouble((double)retry_after_ns / 1e9);
        if (after == NULL || PyObject_SetAttr(exc, name, after) < 0) {
            Py_CLEAR(exc);
        }
        Py_XDECREF(after);
    }
    return exc;
}

PyObject *fs_named_refusal_args_build(PyObject **args, PyObject **for_name, PyObject *name,
                                      const char *fmt, ...)
{
    va_list va;
    va_start(va, fmt);
    PyObject *msg = PyUnicode_FromFormatV(fmt, va);
    va_end(va);
    PyObject *t = msg != NULL ? PyTuple_Pack(1, msg) : NULL;
    Py_XDECREF(msg);
    if (t == NULL) {
        return NULL;
    }
    Py_XSETREF(*args, t);
    Py_XSETREF(*for_name, Py_XNewRef(name));
    return t;
}

PyObject *fs_defer(PyObject *exc)
{
    if (exc != NULL) {
        PyErr_SetRaisedException(exc);
    }
    return NULL;
}

PyObject *fs_raise(PyObject *exc)
{
    if (exc != NULL) {
        PyObject *handled = PyErr_GetHandledException();
        fs_chain(exc, handled);
        Py_XDECREF(handled);
        PyErr_SetRaisedException(exc);
    }
    return NULL;
}

void fs_chain(PyObject *exc, PyObject *context)
{
    if (exc == NULL || context == NULL || exc == context) {
        return;
    }
    PyObject *own = PyException_GetContext(exc);
    if (own != NULL) {
        Py_DECREF(own);     /* kept: the chain it already has is its own story */
        return;
    }
    /* No cycle: exc must not be in context's own chain. */
    PyObject *o = context;
    for (int depth = 0; o != NULL && depth < 100; depth++) {
        if (o == exc) {
            return;
        }
        PyObject *next = PyException_GetContext(o);
        Py_XDECREF(next);   /* borrowed use: the chain holds it */
        o = next;
    }
    PyException_SetContext(exc, Py_NewRef(context));
}

int fs_int_arg_conv(PyObject *obj, void *arg)
{
    fs_int_arg *a = (fs_int_arg *)arg;
    if (!PyLong_Check(obj) || PyBool_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int, not %.200s", a->name,
                     Py_TYPE(obj)->tp_name);
        return 0;
    }
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (v == -1 && !overflow && PyErr_Occurred()) {
        return 0;
    }
    if (overflow != 0 || v < a->min || v > a->max) {
        PyErr_Format(PyExc_ValueError, "%s must be between %lld and %lld, got %R", a->name,
                     a->min, a->max, obj);
        return 0;
    }
    a->value = v;
    return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* BreakerFailingBase: the C base of failsafe.circuitbreaker.BreakerFailing. Its tp_init takes
 * (message="", *, retry_after=None), so raising a rejection runs no Python frame; retry_after
 * is a field that reads None until set, so a refusal built without __init__ needs no default
 * stored in it. */
typedef struct FsBreakerFailing {
    PyBaseExceptionObject base;
    PyObject *retry_after;      /* float seconds, None, or NULL (reads None) */
} FsBreakerFailing;

static PyObject *bfb_get_retry_after(PyObject *self, void *Py_UNUSED(closure))
{
    PyObject *v = ((FsBreakerFailing *)self)->retry_after;
    return Py_NewRef(v != NULL ? v : Py_None);
}

static int bfb_set_retry_after(PyObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    Py_XSETREF(((FsBreakerFailing *)self)->retry_after, Py_XNewRef(value));
    return 0;
}

static int bfb_init(PyObject *self, PyObject *args, PyObject *kwds)
{
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    if (n > 1) {
        PyErr_Format(PyExc_TypeError,
                     "%.200s() takes at most 1 positional argument (%zd given)",
                     Py_TYPE(self)->tp_name, n);
        return -1;
    }
    PyObject *message = n == 1 ? PyTuple_GET_ITEM(args, 0) : NULL;
    PyObject *after = Py_None;
    if (kwds != NULL) {
        PyObject *key, *value;
        Py_ssize_t pos = 0;
        while (PyDict_Next(kwds, &pos, &key, &value)) {
            if (PyUnicode_Check(key) && PyUnicode_CompareWithASCIIString(key, "retry_after") == 0) {
                after = value;
            }
            else if (message == NULL && PyUnicode_Check(key)
                     && PyUnicode_CompareWithASCIIString(key, "message") == 0) {
                /* BaseException.__new__ took args from the positional arguments only. */
                PyObject *t = PyTuple_Pack(1, value);
                if (t == NULL) {
                    return -1;
                }
                Py_XSETREF(((PyBaseExceptionObject *)self)->args, t);
                message = value;
            }
            else {
                PyErr_Format(PyExc_TypeError, "%.200s() got an unexpected keyword argument %R",
                             Py_TYPE(self)->tp_name, key);
                return -1;
            }
        }
    }
    return bfb_set_retry_after(self, after, NULL);
}

static int bfb_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(((FsBreakerFailing *)self)->retry_after);
    return ((PyTypeObject *)PyExc_Exception)->tp_traverse(self, visit, arg);
}

static int bfb_clear(PyObject *self)
{
    Py_CLEAR(((FsBreakerFailing *)self)->retry_after);
    return ((PyTypeObject *)PyExc_Exception)->tp_clear(self);
}

static void bfb_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Py_CLEAR(((FsBreakerFailing *)self)->retry_after);
    ((PyTypeObject *)PyExc_Exception)->tp_dealloc(self);
    Py_DECREF(tp);  /* a heap type's instances own a reference to it */
}

static PyGetSetDef bfb_getset[] = {
    {"retry_after", bfb_get_retry_after, bfb_set_retry_after,
     "seconds until the breaker probes again, or None (isolated, or unknown)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot bfb_slots[] = {
    {Py_tp_init, bfb_init},
    {Py_tp_traverse, bfb_traverse},
    {Py_tp_clear, bfb_clear},
    {Py_tp_dealloc, bfb_dealloc},
    {Py_tp_getset, bfb_getset},
    {Py_tp_doc, "Base of BreakerFailing: __init__(message='', *, retry_after=None) in C."},
    {0, NULL},
};

static PyType_Spec bfb_spec = {
    .name = "failsafe._native.BreakerFailingBase",
    .basicsize = sizeof(FsBreakerFailing),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = bfb_slots,
};

int fs_breaker_failing_setup(PyObject *module)
{
    PyObject *base = PyType_FromModuleAndSpec(module, &bfb_spec, PyExc_Exception);
    if (base == NULL) {
        return -1;
    }
    int r = PyModule_AddObjectRef(module, "BreakerFailingBase", base);
    Py_DECREF(base);
    return r;
}
