/* asyncio_fast: the running loop, its current task and the loop's clock, read the cheap way
 * where asyncio itself would give the same answer (_asyncio's C task and task dict, the C
 * methods of its Task, the clock behind loop.time()), else through the ordinary calls. Separate
 * from the timer queue: these are facts about asyncio, not about deadlines. */
#include "fs_timers.h"

#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* Clock */

#if TQ_HAVE_LIBUV_CLOCK
/* libuv's fast clock on Linux: CLOCK_MONOTONIC_COARSE when its resolution is 1 ms or finer,
 * else CLOCK_MONOTONIC (the rule of libuv's uv__hrtime(UV_CLOCK_FAST)). */
static clockid_t libuv_fast_clock(void)
{
    static int chosen = -1;     /* read under the GIL */
    if (chosen < 0) {
        struct timespec res;
        chosen = clock_getres(CLOCK_MONOTONIC_COARSE, &res) == 0 && res.tv_sec == 0
                         && res.tv_nsec <= 1000000
                     ? 1 : 0;
    }
    return chosen ? CLOCK_MONOTONIC_COARSE : CLOCK_MONOTONIC;
}

/* uvloop's Loop.time(): uv_update_time() then uv_now() / 1000, i.e. whole milliseconds of
 * libuv's fast clock, divided as a double (exact for any uptime below 2**53 ms). */
double fs_libuv_now_s(void)
{
    struct timespec ts;
    clock_gettime(libuv_fast_clock(), &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    return (double)ms / 1000.0;
}
#endif

/* True when meth (loop.time) is uvloop's own Loop.time bound to loop: the instance does not
 * shadow it and the class does not override it. Only when uvloop is already imported. */
static int loop_has_uvloop_clock(PyObject *loop, PyObject *meth)
{
#if TQ_HAVE_LIBUV_CLOCK
    if (!PyMethod_Check(meth) || PyMethod_GET_SELF(meth) != loop) {
        return 0;
    }
    PyObject *name = PyUnicode_FromString("uvloop.loop");
    PyObject *mod = name ? PyImport_GetModule(name) : NULL;
    Py_XDECREF(name);
    PyObject *cls = mod ? PyObject_GetAttrString(mod, "Loop") : NULL;
    PyObject *dict = cls && PyType_Check(cls) ? PyObject_GetAttrString(cls, "__dict__") : NULL;
    PyObject *deftime = dict ? PyMapping_GetItemString(dict, "time") : NULL;
    int ok = deftime != NULL && PyMethod_GET_FUNCTION(meth) == deftime
             && PyObject_TypeCheck(loop, (PyTypeObject *)cls);
    PyErr_Clear();
    Py_XDECREF(mod);
    Py_XDECREF(cls);
    Py_XDECREF(dict);
    Py_XDECREF(deftime);
    return ok;
#else
    (void)loop;
    (void)meth;
    return 0;
#endif
}

/* TQ_CLOCK_MONOTONIC when loop.time is BaseEventLoop.time over the real time.monotonic,
 * TQ_CLOCK_LIBUV when it is uvloop's, checked once per loop; else TQ_CLOCK_CALL (other loops,
 * test clocks): then loop.time() is called. */
int fs_loop_clock(PyObject *loop)
{
    int ok = TQ_CLOCK_CALL;
    PyObject *be = PyImport_ImportModule("asyncio.base_events");
    PyObject *base = be ? PyObject_GetAttrString(be, "BaseEventLoop") : NULL;
    PyObject *deftime = base ? PyObject_GetAttrString(base, "time") : NULL;
    PyObject *meth = PyObject_GetAttrString(loop, "time");
    PyObject *tmod = meth && be ? PyObject_GetAttrString(be, "time") : NULL;
    PyObject *mono = tmod ? PyObject_GetAttrString(tmod, "monotonic") : NULL;
    if (mono != NULL && PyMethod_Check(meth) && PyMethod_GET_FUNCTION(meth) == deftime
        && PyMethod_GET_SELF(meth) == loop && PyCFunction_Check(mono)
        && PyCFunction_GET_SELF(mono) == tmod
        && strcmp(((PyCFunctionObject *)mono)->m_ml->ml_name, "monotonic") == 0
        && PyModule_Check(tmod)) {
        const char *name = PyModule_GetName(tmod);
        ok = name != NULL && strcmp(name, "time") == 0 ? TQ_CLOCK_MONOTONIC : TQ_CLOCK_CALL;
    }
    PyErr_Clear();
    if (ok == TQ_CLOCK_CALL && meth != NULL && loop_has_uvloop_clock(loop, meth)) {
        ok = TQ_CLOCK_LIBUV;
    }
    PyErr_Clear();
    Py_XDECREF(be);
    Py_XDECREF(base);
    Py_XDECREF(deftime);
    Py_XDECREF(meth);
    Py_XDECREF(tmod);
    Py_XDECREF(mono);
    return ok;
}

/* ------------------------------------------------------------------------------------------ */
/* Loop, task */

/* The running loop and its current task, as new references; RuntimeError outside a task. */
int fs_running_task(fs_state *st, PyObject **ploop, PyObject **ptask)
{
    PyObject *loop = PyObject_Vectorcall(st->get_running_loop, NULL, 0, NULL);
    if (loop == NULL) {
        return -1;
    }
    PyObject *task;
    if (st->current_tasks != NULL) {
        task = Py_XNewRef(PyDict_GetItemWithError(st->current_tasks, loop));
    }
    else {
        task = PyObject_CallOneArg(st->current_task, loop);
        if (task == Py_None) {
            Py_CLEAR(task);
        }
    }
    if (task == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_RuntimeError, "Timeout should be used inside a task");
        }
        Py_DECREF(loop);
        return -1;
    }
    *ploop = loop;
    *ptask = task;
    return 0;
}

/* task.cancelling() or task.uncancel(): a direct C call on exact C tasks. -1 with an error. */
Py_ssize_t fs_task_counter(fs_state *st, PyObject *task, PyCFunction direct, PyObject *name)
{
    PyObject *r;
    if (direct != NULL && Py_IS_TYPE(task, st->CTask_Type)) {
        r = direct(task, NULL);
    }
    else {
        r = PyObject_CallMethodNoArgs(task, name);
    }
    if (r == NULL) {
        return -1;
    }
    Py_ssize_t n = PyLong_AsSsize_t(r);
    Py_DECREF(r);
    if (n < 0 && !PyErr_Occurred()) {
        PyErr_Format(PyExc_ValueError, "task.%U() returned a negative count", name);
        return -1;
    }
    return n;
}

/* The direct C function of a method of type with exactly these flags, or NULL. */
static PyCFunction c_method(PyTypeObject *type, const char *name, int flags)
{
    PyObject *d = PyObject_GetAttrString((PyObject *)type, name);
    PyCFunction f = NULL;
    if (d != NULL && Py_IS_TYPE(d, &PyMethodDescr_Type)) {
        PyMethodDef *ml = ((PyMethodDescrObject *)d)->d_method;
        f = (ml->ml_flags & ~METH_COEXIST) == flags ? ml->ml_meth : NULL;
    }
    PyErr_Clear();
    Py_XDECREF(d);
    return f;
}

/* Fast paths into _asyncio, used only when asyncio itself uses them (asyncio is already imported,
 * by module exec: importing _asyncio first would make asyncio fall back to its Python tasks). */
int fs_asyncio_setup(fs_state *st)
{
    PyObject *casyncio = PyImport_ImportModule("_asyncio");
    if (casyncio == NULL) {
        PyErr_Clear();
        return 0;
    }
    PyObject *tasks = PyImport_ImportModule("asyncio.tasks");
    PyObject *py_current = tasks ? PyObject_GetAttrString(tasks, "current_task") : NULL;
    PyObject *c_current = py_current ? PyObject_GetAttrString(casyncio, "current_task") : NULL;
    PyObject *dict = c_current ? PyObject_GetAttrString(casyncio, "_current_tasks") : NULL;
    PyObject *ctask = PyObject_GetAttrString(casyncio, "Task");
    PyObject *py_task = tasks ? PyObject_GetAttrString(tasks, "Task") : NULL;
    PyErr_Clear();
    if (dict != NULL && py_current == c_current && PyDict_CheckExact(dict)) {
        st->current_tasks = Py_NewRef(dict);
    }
    if (ctask != NULL && PyType_Check(ctask) && ctask == py_task) {
        st->CTask_Type = (PyTypeObject *)Py_NewRef(ctask);
        st->task_cancelling = c_method(st->CTask_Type, "cancelling", METH_NOARGS);
        st->task_uncancel = c_method(st->CTask_Type, "uncancel", METH_NOARGS);
        st->task_cancel = c_method(st->CTask_Type, "cancel", METH_FASTCALL | METH_KEYWORDS);
    }
    Py_DECREF(casyncio);
    Py_XDECREF(tasks);
    Py_XDECREF(py_current);
    Py_XDECREF(c_current);
    Py_XDECREF(dict);
    Py_XDECREF(ctask);
    Py_XDECREF(py_task);
    return 0;
}
