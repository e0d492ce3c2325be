/* Fallback: the fallback policy type. A failure matching `on` is answered in C while nobody
 * listens: with the value, or with handler(exc, *args, **kwargs), whose awaitable (an async
 * handler's coroutine) the same FsCall drives. Otherwise, and for results (`if_`), the Python
 * subclass answers (`_on_error` / `_on_result`). */
#include "fs_outcome.h"

#include <stddef.h>

/* Counters, in the order of fallback_metrics. */
enum { FALLBACK_INVOKED = 0 };
static const char *const fallback_metrics[] = {"invoked", NULL};

/* How a handled exception is answered in C (when nobody listens). */
enum { ANSWER_NONE = 0, ANSWER_VALUE = 1, ANSWER_CALL = 2 };

typedef struct FsFallback {
    FsOutcome o;
    PyObject *answer;           /* the value (ANSWER_VALUE) or a callable (ANSWER_CALL) */
    int answer_kind;
} FsFallback;

/* c->pword while the call drives the handler's awaitable (c->pobj: the exception handled). */
#define FB_ANSWERING 1u

/* Answers a handled exception in C: the value, or handler(exc, *args, **kwargs). */
static int fallback_answer(FsFallback *f, FsCall *c, PyObject *exc, PyObject **out)
{
    c->policy->counters[FALLBACK_INVOKED]++;
    if (f->answer_kind == ANSWER_VALUE) {
        *out = Py_NewRef(f->answer);
        return FS_NEXT_RETURN;
    }
    PyObject *small[1 + FS_CALL_INLINE_ARGS];
    PyObject **stack = small;
    Py_ssize_t n = 1 + c->ntotal;
    if (n > (Py_ssize_t)(sizeof(small) / sizeof(small[0]))) {
        stack = PyMem_Malloc((size_t)n * sizeof(PyObject *));
        if (stack == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    PyObject *const *argv = fs_call_argv(c);
    stack[0] = exc;
    for (Py_ssize_t i = 0; i < c->ntotal; i++) {
        stack[1 + i] = argv[i];
    }
    PyObject *res = PyObject_Vectorcall(f->answer, stack, (size_t)(1 + c->nargs), c->kwnames);
    if (stack != small) {
        PyMem_Free(stack);
    }
    if (res == NULL) {
        /* As an except block would: the handler's error shows what it was handling. */
        PyObject *err = PyErr_GetRaisedException();
        if (err != exc) {
            PyObject *ctx = PyException_GetContext(err);
            if (ctx == NULL) {
                PyException_SetContext(err, Py_NewRef(exc));
            }
            Py_XDECREF(ctx);
        }
        *out = err;
        return FS_NEXT_RAISE;
    }
    PyAsyncMethods *am = Py_TYPE(res)->tp_as_async;
    if (am == NULL || am->am_await == NULL) {
        *out = res;
        return FS_NEXT_RETURN;
    }
    if (!PyCoro_CheckExact(res)) {
        Py_SETREF(res, fs_awaitable_iter(res));   /* e.g. a partial of an async function */
        if (res == NULL) {
            return -1;
        }
    }
    /* An awaitable answer: driven and observed once more, so that its error is chained. */
    Py_XSETREF(c->pobj, Py_NewRef(exc));
    c->pword = FB_ANSWERING;
    *out = res;
    return FS_NEXT_AGAIN;
}

/* The handler's awaitable ended: its result stands; its error shows what it was handling. */
static int fallback_answered(FsCall *c, PyObject *result, PyObject *exc, PyObject **out)
{
    c->pword = 0;
    if (exc == NULL) {
        *out = Py_NewRef(result);
        return FS_NEXT_RETURN;
    }
    PyObject *handled = c->pobj;
    if (exc != handled) {
        PyObject *ctx = PyException_GetContext(exc);
        if (ctx == NULL) {
            PyException_SetContext(exc, Py_NewRef(handled));
        }
        Py_XDECREF(ctx);
    }
    *out = Py_NewRef(exc);
    return FS_NEXT_RAISE;
}

static int fallback_finish(FsCall *c, PyObject *result, PyObject *exc, PyObject **out)
{
    FsFallback *f = (FsFallback *)c->policy;
    fs_state *st = c->policy->st;
    if (c->pword == FB_ANSWERING) {
        return fallback_answered(c, result, exc, out);
    }
    if (exc == NULL) {
        if (f->o.handoff_results) {
            return fs_outcome_slow_path(c, st->str_on_result, result, out);
        }
        *out = Py_NewRef(result);
        return FS_NEXT_RETURN;
    }
    if (!fs_outcome_covers(&f->o, exc, out)) {
        return FS_NEXT_RAISE;
    }
    if (f->answer_kind != ANSWER_NONE && !fs_listening(c->policy)) {
        return fallback_answer(f, c, exc, out);
    }
    return fs_outcome_slow_path(c, st->str_on_error, exc, out);
}

static const fs_policy_ops fallback_ops = {
    .admit = fs_outcome_admit,
    .finish = fallback_finish,
};

static PyObject *fallback_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0)) {
        PyErr_SetString(PyExc_TypeError, "Fallback() takes no arguments");
        return NULL;
    }
    FsFallback *f = (FsFallback *)type->tp_alloc(type, 0);
    if (f == NULL) {
        return NULL;
    }
    if (fs_policy_init(&f->o.base, &fallback_ops, FS_PATTERN_FALLBACK, FS_POL_KEEP_ARGS,
                       "fallback") < 0) {
        Py_DECREF(f);
        return NULL;
    }
    return (PyObject *)f;
}

/* _configure(on, on_pred, handoff_results, answer, call_answer): answer is the value, or with
 * call_answer the handler to call. */
static PyObject *fallback_configure(PyObject *self, PyObject *args, PyObject *kwargs)
{
    FsFallback *f = (FsFallback *)self;
    PyObject *on = Py_None, *on_pred = Py_None, *answer = NULL;
    int handoff_results = 0, call_answer = 0;
    static char *kwlist[] = {"on", "on_pred", "handoff_results", "answer", "call_answer", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$OOpOp:_configure", kwlist, &on, &on_pred,
                                     &handoff_results, &answer, &call_answer)) {
        return NULL;
    }
    if (call_answer && (answer == NULL || !PyCallable_Check(answer))) {
        PyErr_SetString(PyExc_TypeError, "answer must be callable with call_answer");
        return NULL;
    }
    int answer_kind = answer == NULL ? ANSWER_NONE : call_answer ? ANSWER_CALL : ANSWER_VALUE;
    if (fs_outcome_configure(&f->o, on, on_pred, handoff_results) < 0) {
        return NULL;
    }
    Py_XSETREF(f->answer, answer_kind == ANSWER_NONE ? NULL : Py_NewRef(answer));
    f->answer_kind = answer_kind;
    Py_RETURN_NONE;
}

static int fallback_traverse(PyObject *self, visitproc visit, void *arg)
{
    FsFallback *f = (FsFallback *)self;
    Py_VISIT(f->answer);
    return fs_outcome_traverse(&f->o, visit, arg);
}

static int fallback_clear(PyObject *self)
{
    FsFallback *f = (FsFallback *)self;
    Py_CLEAR(f->answer);
    fs_outcome_clear(&f->o);
    return 0;
}

static void fallback_dealloc(PyObject *self)
{
    fs_policy_dealloc(self, fallback_clear);
}

static PyMemberDef fallback_members[] = {
    FS_POLICY_MEMBERS,
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef fallback_methods[] = {
    FS_POLICY_METHODS,
    {"_configure", (PyCFunction)(void (*)(void))fallback_configure,
     METH_VARARGS | METH_KEYWORDS, "Sets what the C fast path needs to know."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot fallback_slots[] = {
    {Py_tp_new, fallback_new},
    {Py_tp_members, fallback_members},
    {Py_tp_methods, fallback_methods},
    {Py_tp_traverse, fallback_traverse},
    {Py_tp_clear, fallback_clear},
    {Py_tp_dealloc, fallback_dealloc},
    {0, NULL},
};

static PyType_Spec fallback_spec = {
    .name = "failsafe._native.Fallback",
    .basicsize = sizeof(FsFallback),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .slots = fallback_slots,
};

static int fallback_setup(PyObject *module, fs_state *st)
{
    return fs_policy_type_add(module, st, &fallback_spec, NULL);
}

const fs_part fs_fallback_part = {
    .name = "fallback",
    .pattern = FS_PATTERN_FALLBACK,
    .metrics = fallback_metrics,
    .setup = fallback_setup,
};
