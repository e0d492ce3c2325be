/* deadline: the ambient deadline of failsafe.deadline, as the C fast paths see it.
 *
 * failsafe.deadline keeps the deadline of the running context in a ContextVar whose value is
 * a frame list [when_ns, outer_frame, ...] (None: no deadline), when_ns a float (+inf: no
 * limit) on failsafe's clock (fs_now_ns): a float reads in one load where an int of 1e13 ns and
 * more takes PyLong's multi-digit path. Reading a ContextVar costs; so the module state counts the deadline scopes open
 * anywhere in the process (st->deadline_open), and callers read the variable only while that
 * count is non-zero: with no deadline the whole feature is one int test per call site. */
#include "fs_binding.h"

#include <math.h>

/* The current frame (new reference), or NULL when none is set. Never raises: a failed read
 * (only a broken variable can fail) reads as no deadline and is reported as unraisable. */
static PyObject *current_frame(fs_state *st)
{
    PyObject *frame = NULL;
    if (st->deadline_var == NULL) {
        return NULL;
    }
    if (PyContextVar_Get(st->deadline_var, NULL, &frame) < 0) {
        PyErr_WriteUnraisable(st->deadline_var);
        return NULL;
    }
    if (frame != NULL && (!PyList_CheckExact(frame) || PyList_GET_SIZE(frame) < 1)) {
        Py_CLEAR(frame);   /* None, or not one of ours */
    }
    return frame;
}

/* when_ns of frame (borrowed), or +inf when it is unreadable. */
static double frame_when(PyObject *frame)
{
    PyObject *v = PyList_GET_ITEM(frame, 0);
    if (PyFloat_CheckExact(v)) {
        return PyFloat_AS_DOUBLE(v);
    }
    double when = PyFloat_AsDouble(v);
    if (when == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return INFINITY;
    }
    return when;
}

double fs_deadline_left(fs_state *st)
{
    PyObject *frame = current_frame(st);
    if (frame == NULL) {
        return INFINITY;
    }
    double when = frame_when(frame);
    Py_DECREF(frame);
    if (when == INFINITY) {
        return INFINITY;
    }
    double left = when - (double)fs_now_ns(st);
    return left > 0.0 ? left / 1e9 : 0.0;
}

double fs_deadline_cap(fs_state *st, FsTimerEntry *e, double delay)
{
    e->by_deadline = 0;
    if (e->fire != NULL) {
        return delay;   /* not a cancelling deadline (a hedge's next attempt) */
    }
    double left = fs_deadline_left(st);
    if (left <= delay) {
        e->by_deadline = 1;
        return left;
    }
    return delay;
}

fs_err fs_deadline_code(fs_state *st, FsTimerEntry *e, fs_err code)
{
    if (!e->by_deadline) {
        return code;
    }
    /* The deadline has passed for this context, whatever the clocks' rounding: what is left
     * reads 0 from now on (retry then starts no attempt on a remainder of a few ns). */
    PyObject *frame = current_frame(st);
    if (frame != NULL) {
        double now = (double)fs_now_ns(st);
        if (frame_when(frame) > now) {
            PyObject *v = PyFloat_FromDouble(now);
            if (v == NULL || PyList_SetItem(frame, 0, v) < 0) {
                PyErr_WriteUnraisable(frame);
            }
        }
        Py_DECREF(frame);
    }
    return FS_E_DEADLINE;
}

/* ------------------------------------------------------------------------------------------ */
/* Module functions (failsafe.deadline's side) */

/* _deadline_bind(var): the ContextVar holding the current frame. */
static PyObject *mod_deadline_bind(PyObject *module, PyObject *var)
{
    if (!PyContextVar_CheckExact(var)) {
        PyErr_SetString(PyExc_TypeError, "_deadline_bind expects a ContextVar");
        return NULL;
    }
    fs_state *st = PyModule_GetState(module);
    Py_XSETREF(st->deadline_var, Py_NewRef(var));
    Py_RETURN_NONE;
}

/* _deadline_scopes(delta): adds delta (+1 on entry, -1 on exit) to the count of open deadline
 * scopes; returns the new count. The count never goes below 0. */
static PyObject *mod_deadline_scopes(PyObject *module, PyObject *arg)
{
    long delta = PyLong_AsLong(arg);
    if (delta == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (delta != 1 && delta != -1) {
        PyErr_SetString(PyExc_ValueError, "delta must be 1 or -1");
        return NULL;
    }
    fs_state *st = PyModule_GetState(module);
    if (delta > 0 || st->deadline_open > 0) {
        st->deadline_open += (Py_ssize_t)delta;
    }
    return PyLong_FromSsize_t(st->deadline_open);
}

/* _deadline_left(): fs_deadline_left for tests of the C side (inf: none). */
static PyObject *mod_deadline_left(PyObject *module, PyObject *Py_UNUSED(unused))
{
    fs_state *st = PyModule_GetState(module);
    return PyFloat_FromDouble(st->deadline_open ? fs_deadline_left(st) : INFINITY);
}

static PyMethodDef deadline_functions[] = {
    {"_deadline_bind", mod_deadline_bind, METH_O, "Binds failsafe.deadline's ContextVar."},
    {"_deadline_scopes", mod_deadline_scopes, METH_O,
     "Adds 1 or -1 to the count of open deadline scopes; returns the count."},
    {"_deadline_left", mod_deadline_left, METH_NOARGS,
     "Seconds left before the current deadline as C reads it (inf: none)."},
    {NULL, NULL, 0, NULL},
};

static int deadline_setup(PyObject *module, fs_state *st)
{
    st->deadline_open = 0;
    return PyModule_AddFunctions(module, deadline_functions);
}

static int deadline_traverse(fs_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->deadline_var);
    return 0;
}

static void deadline_clear(fs_state *st)
{
    Py_CLEAR(st->deadline_var);
}

const fs_part fs_deadline_part = {
    .setup = deadline_setup,
    .traverse = deadline_traverse,
    .clear = deadline_clear,
};
