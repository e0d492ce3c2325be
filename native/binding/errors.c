/* Binding errors: the one place exception classes are bound, the one constructor of refusals
 * (and the cache of their message arguments), the one raise path and chaining rule, and the
 * integer-argument converter that names the parameter in its TypeError/ValueError. */
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
