/* timerentry: a deadline embedded in the object it belongs to (a decorated call, a scope, a
 * hedged call), registered in its loop's TimerQueue, and left with the exact rules of
 * asyncio.timeout's exit (which differ between 3.12 and 3.13). */
#include "fs_timers.h"

/* 3.13 also converts CancelledError subclasses and inserts a TimeoutError into other chains. */
#if PY_VERSION_HEX >= 0x030D0000
#define TMO_RULES_313 1
#else
#define TMO_RULES_313 0
#endif

/* ------------------------------------------------------------------------------------------ */
/* Entries */

/* Registers e for task with deadline when (+inf: none yet), arming the loop timer if needed. */
int fs_entry_register(FsTimerEntry *e, FsTimerQueue *q, PyObject *loop, PyObject *task,
                      double when, double now)
{
    fs_state *st = q->st;
    /* Read at entry, not at fire: a cancel requested in between is not ours to swallow. */
    Py_ssize_t c0 = fs_task_counter(st, task, st->task_cancelling, st->str_cancelling);
    if (c0 < 0) {
        return -1;
    }
    e->cancelling0 = c0;
    e->node.when = when;
    e->task = Py_NewRef(task);
    e->queue = (FsTimerQueue *)Py_NewRef(q);
    e->state = FS_TE_ARMED;
    q->live++;
    if (when < INFINITY
        && (fs_tq_push(q, &e->node) < 0
            || (!q->firing && when < q->armed_when && fs_tq_arm(q, loop, when, now) < 0))) {
        PyObject *exc = PyErr_GetRaisedException();
        fs_entry_unlink(e);
        PyErr_SetRaisedException(exc);
        return -1;
    }
    return 0;
}

/* Takes e out of its queue without uncancelling. Never raises. */
void fs_entry_unlink(FsTimerEntry *e)
{
    FsTimerQueue *q = e->queue;
    if (q == NULL) {
        return;
    }
    PyObject *owner = e->owner;
    int held = e->node.index != FS_HEAP_NONE;
    fs_heap_remove(&q->heap, &e->node);
    q->live--;
    e->queue = NULL;
    e->state = FS_TE_DONE;
    PyObject *task = e->task;
    e->task = NULL;
    Py_XDECREF(task);
    Py_DECREF(q);
    if (held) {
        Py_DECREF(owner);   /* the heap's reference; may be the last: e is not touched after */
    }
}

/* A new error of code (failsafe.timeout.TimeoutError for FS_E_TIMEOUT) whose __cause__ and
 * __context__ are cause. */
static PyObject *timeout_error(fs_state *st, fs_err code, PyObject *cause)
{
    /* The class fs_error() raises for code, instantiated directly: raising it would chain it to
     * the handled exception, a walk whose result is replaced here anyway. */
    PyObject *cls = fs_error_class(st, code);
    PyObject *te = PyObject_CallNoArgs(cls);
    if (te == NULL) {
        return NULL;
    }
    if (!PyExceptionInstance_Check(te)) {
        Py_DECREF(te);
        return fs_error(st, code, NULL);
    }
    if (cause != NULL && cause != Py_None) {
        PyException_SetCause(te, Py_NewRef(cause));
        PyException_SetContext(te, Py_NewRef(cause));
    }
    return te;
}

#if TMO_RULES_313
/* asyncio 3.13 Timeout._insert_timeout_error: a TimeoutError above the first CancelledError of
 * exc's context chain. 1 if inserted, 0 if none, -1 on error. */
static int insert_timeout_error(fs_state *st, fs_err code, PyObject *exc)
{
    PyObject *cur = Py_NewRef(exc);
    for (;;) {
        PyObject *ctx = PyException_GetContext(cur);
        if (ctx == NULL) {
            Py_DECREF(cur);
            return 0;
        }
        if (PyObject_TypeCheck(ctx, (PyTypeObject *)st->CancelledError)) {
            PyObject *te = timeout_error(st, code, ctx);
            Py_DECREF(ctx);
            if (te == NULL) {
                Py_DECREF(cur);
                return -1;
            }
            PyException_SetContext(cur, te);
            Py_DECREF(cur);
            return 1;
        }
        Py_SETREF(cur, ctx);
    }
}

static int insert_timeout_errors(fs_state *st, fs_err code, PyObject *exc)
{
    int done = insert_timeout_error(st, code, exc);
    if (done < 0) {
        return -1;
    }
    PyObject *builtins = PyImport_ImportModule("builtins");
    PyObject *eg = builtins ? PyObject_GetAttrString(builtins, "ExceptionGroup") : NULL;
    Py_XDECREF(builtins);
    if (eg == NULL) {
        return -1;
    }
    int is_group = PyObject_IsInstance(exc, eg);
    Py_DECREF(eg);
    if (is_group <= 0) {
        return is_group < 0 ? -1 : done;
    }
    PyObject *members = PyObject_GetAttrString(exc, "exceptions");
    PyObject *seq = members ? PySequence_Fast(members, "exceptions must be a sequence") : NULL;
    Py_XDECREF(members);
    if (seq == NULL) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        int r = insert_timeout_error(st, code, PySequence_Fast_GET_ITEM(seq, i));
        if (r < 0) {
            Py_DECREF(seq);
            return -1;
        }
        done |= r;
    }
    Py_DECREF(seq);
    return done;
}
#endif

/* Leaves e as asyncio.timeout's __aexit__ does, given the exception leaving the block (exc_type
 * and exc borrowed, NULL or None when none). Returns EXIT_RAISE with *out the TimeoutError that
 * replaces exc, EXIT_INSERTED when a TimeoutError went into exc's chain (3.13), EXIT_KEEP when
 * exc goes on unchanged, or -1 with an exception set. */
int fs_entry_exit(fs_state *st, FsTimerEntry *e, PyObject *exc_type, PyObject *exc,
                  fs_err code, PyObject **out)
{
    *out = NULL;
    if (e->state != FS_TE_FIRED || e->task == NULL) {
        fs_entry_unlink(e);
        return EXIT_KEEP;
    }
    code = fs_deadline_code(st, e, code);
    PyObject *task = Py_NewRef(e->task);
    Py_ssize_t c0 = e->cancelling0;
    fs_entry_unlink(e);
    Py_ssize_t n = fs_task_counter(st, task, st->task_uncancel, st->str_uncancel);
    Py_DECREF(task);
    if (n < 0) {
        return -1;
    }
    /* More cancel requests than at entry: somebody else cancels too, and wins. */
    if (n > c0 || exc_type == NULL || exc_type == Py_None) {
        return EXIT_KEEP;
    }
#if TMO_RULES_313
    int sub = PyType_Check(exc_type)
              && PyType_IsSubtype((PyTypeObject *)exc_type, (PyTypeObject *)st->CancelledError);
    if (!sub) {
        if (exc == NULL || exc == Py_None) {
            return EXIT_KEEP;
        }
        int r = insert_timeout_errors(st, code, exc);
        return r < 0 ? -1 : (r ? EXIT_INSERTED : EXIT_KEEP);
    }
#else
    if (exc_type != st->CancelledError) {
        return EXIT_KEEP;
    }
#endif
    *out = timeout_error(st, code, exc);
    return *out ? EXIT_RAISE : -1;
}

/* ------------------------------------------------------------------------------------------ */
/* Entries of other policies (declared in fs_binding.h) */

void fs_timer_init(FsTimerEntry *e, PyObject *owner, fs_timer_fire_fn fire)
{
    fs_entry_init(e, owner);
    e->fire = fire;
}

int fs_timer_enter(fs_state *st, FsTimerEntry *e, double delay, double *now)
{
    PyObject *loop, *task;
    delay = st->deadline_open ? fs_deadline_cap(st, e, delay) : delay;
    if (fs_running_task(st, &loop, &task) < 0) {
        return -1;
    }
    int rc = -1;
    FsTimerQueue *q = fs_tq_for_loop(st, loop);
    if (q != NULL && fs_tq_now(q, loop, now) == 0) {
        rc = fs_entry_register(e, q, loop, task, delay < INFINITY ? *now + delay : INFINITY, *now);
    }
    Py_DECREF(loop);
    Py_DECREF(task);
    return rc;
}

int fs_timer_exit(fs_state *st, FsTimerEntry *e, PyObject *exc, fs_err code, PyObject **out)
{
    return fs_entry_exit(st, e, exc ? (PyObject *)Py_TYPE(exc) : NULL, exc, code, out);
}

void fs_timer_abandon(fs_state *st, FsTimerEntry *e)
{
    if (e->state == FS_TE_FIRED && e->task != NULL) {
        /* Closed after the deadline fired: take back our cancel request, as asyncio does. */
        PyObject *task = Py_NewRef(e->task);
        fs_entry_unlink(e);
        if (st->str_uncancel != NULL
            && fs_task_counter(st, task, st->task_uncancel, st->str_uncancel) < 0) {
            PyErr_WriteUnraisable(task);
        }
        Py_DECREF(task);
        return;
    }
    fs_entry_unlink(e);
}
