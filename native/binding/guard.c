/* The guarded call's entry: Guard (what a decorator returns) and the one route of a call under
 * a policy (admit, then what the verdict names), timed into the policy's latency histogram. */
#include "fs_binding.h"
#include "call.h"
#include "done.h"
#include "fs_lathist.h"

#include <stddef.h>

/* ------------------------------------------------------------------------------------------ */
/* Guard */

/* The slow path of a call that must wait before it may start: the policy's slow hook with the
 * admission record, else policy._call_slow(fn, *args, **kwargs) (Python). */
static PyObject *guard_call_slow(FsPolicy *p, fs_admission *a, PyObject *fn,
                                 PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (p->ops->slow != NULL) {
        return p->ops->slow(p, a, fn, args, nargsf, kwnames);
    }
    return fs_call_method_with((PyObject *)p, p->st->str_call_slow, &fn, 1, args, nargsf,
                               kwnames);
}

/* Counts a call answered at once by d (a Done, or NULL with the exception that will raise in
 * its place, kept pending) into lat: it took no time. */
static void guard_count_at_once(FsPolicy *p, PyObject *lat, PyObject *d)
{
    if (d == NULL) {
        return;     /* not an Exception (admission was interrupted): nothing was called */
    }
    PyObject *exc = Py_IS_TYPE(d, p->st->Done_Type) ? ((FsDone *)d)->exc : NULL;
    fs_latency_count(lat, exc == NULL ? FS_LAT_SUCCESS : fs_latency_outcome(p->st, exc), 0, 0);
}

/* The FsCall of an admitted call (FS_ADMIT_CALL), timed into lat unless NULL, or NULL with an
 * exception. Inlined into each route, so the untimed one (lat a constant NULL) tests nothing. */
static inline Py_ALWAYS_INLINE PyObject *
guard_make_call(FsPolicy *p, fs_admission *a, PyObject *fn, PyObject *const *args, size_t nargsf,
                PyObject *kwnames, PyObject *lat)
{
    /* The call object comes first: if fn fails synchronously (bad arguments), deallocating it
     * runs the policy's abandon hook, which gives back whatever admit took. */
    fs_state *st = p->st;
    FsCall *c = fs_call_new(p);
    if (c == NULL) {
        if (p->ops->release != NULL) {
            p->ops->release(p, a);
        }
        return NULL;
    }
    c->pword = a->token;    /* from here the call's abandon gives it back */
    if (p->flags & FS_POL_KEEP_ARGS) {
        Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
        Py_ssize_t total = nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);
        if (total > FS_CALL_INLINE_ARGS) {
            PyObject *t = PyTuple_New(total);
            if (t == NULL) {
                Py_DECREF(c);
                return NULL;
            }
            for (Py_ssize_t i = 0; i < total; i++) {
                PyTuple_SET_ITEM(t, i, Py_NewRef(args[i]));
            }
            c->args = t;
        }
        else {
            for (Py_ssize_t i = 0; i < total; i++) {
                c->iargs[i] = Py_NewRef(args[i]);
            }
        }
        c->ntotal = total;
        c->fn = Py_NewRef(fn);
        c->kwnames = Py_XNewRef(kwnames);
        c->nargs = nargs;
    }
    if ((p->flags & FS_POL_NEEDS_T0) || lat != NULL) {
        c->t0_ns = fs_now_ns(st);
    }
    PyObject_GC_Track(c);
    if (p->ops->init_call != NULL && p->ops->init_call(c, a) < 0) {
        /* A refusal decided here is raised where the call is awaited, as admit's are. */
        Py_DECREF(c);
        PyObject *d = fs_done_refused(st, fn);
        if (lat != NULL) {
            guard_count_at_once(p, lat, d);
        }
        return d;
    }
    PyObject *coro = fs_call_fn(fn, args, nargsf, kwnames);
    if (coro != NULL && !PyCoro_CheckExact(coro)) {
        /* Another awaitable (a Future, an object with __await__): drive its iterator. */
        Py_SETREF(coro, fs_awaitable_iter(coro));
    }
    if (coro == NULL) {
        Py_DECREF(c);
        return NULL;
    }
    c->inner = coro;
    if (lat != NULL) {
        c->lat = Py_NewRef(lat);
        c->extra = FS_CX_TIMED;
    }
    return (PyObject *)c;
}

/* One call of fn under p: one admission decision, then the one route its verdict names. Every
 * refusal (FS_ADMIT_REFUSE, or init_call failing) becomes a Done raising it where it is
 * awaited (fs_done_refused). Timed into lat unless NULL: an admitted call by its FsCall, a
 * call passed through or sent down the slow path by a bare FsCall around it, and one answered
 * at once (a value, a refusal) at once, as taking no time. */
static inline Py_ALWAYS_INLINE PyObject *
guard_call(FsPolicy *p, PyObject *fn, PyObject *const *args, size_t nargsf, PyObject *kwnames,
           PyObject *lat)
{
    fs_admission a;
    a.key = NULL;
    a.stale = NULL;
    a.token = 0;
    PyObject *res;
    switch (p->ops->admit(p, &a, args, nargsf, kwnames)) {
    case FS_ADMIT_PASS:
        res = fs_call_fn(fn, args, nargsf, kwnames);
        return lat == NULL ? res : fs_call_timed_bare(p, lat, res);
    case FS_ADMIT_CALL:
        res = guard_make_call(p, &a, fn, args, nargsf, kwnames, lat);
        break;
    case FS_ADMIT_SLOW:
        res = guard_call_slow(p, &a, fn, args, nargsf, kwnames);
        fs_done_name(p->st, res, fn);   /* refused by the slow path */
        if (lat != NULL) {
            res = fs_call_timed_bare(p, lat, res);
        }
        break;
    case FS_ADMIT_VALUE:
        if (lat != NULL) {
            guard_count_at_once(p, lat, a.answer);
        }
        return a.answer;
    case FS_ADMIT_REFUSE:
    default:
        res = fs_done_refused(p->st, fn);
        if (lat != NULL) {
            guard_count_at_once(p, lat, res);
        }
        break;
    }
    if (a.key != NULL || a.stale != NULL) {
        Py_CLEAR(a.key);
        Py_CLEAR(a.stale);
    }
    return res;
}

PyObject *fs_guard_call(FsPolicy *p, PyObject *fn, PyObject *const *args, size_t nargsf,
                        PyObject *kwnames)
{
    return guard_call(p, fn, args, nargsf, kwnames, NULL);    /* timed by its caller's guard */
}

/* The timed route, apart: the untimed one pays only the test of p->latency. */
static PyObject *guard_call_lat(FsPolicy *p, PyObject *fn, PyObject *const *args,
                                size_t nargsf, PyObject *kwnames, PyObject *lat)
{
    return guard_call(p, fn, args, nargsf, kwnames, lat);
}

PyObject *fs_guard_call_timed(FsPolicy *p, PyObject *fn, PyObject *const *args, size_t nargsf,
                              PyObject *kwnames)
{
    PyObject *lat = p->latency;
    return lat == NULL ? guard_call(p, fn, args, nargsf, kwnames, NULL)
                       : guard_call_lat(p, fn, args, nargsf, kwnames, lat);
}

static PyObject *guard_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
                                  PyObject *kwnames)
{
    FsGuard *g = (FsGuard *)self;
    FsPolicy *p = g->policy;
    if (p == NULL || p->st->Call_Type == NULL) {
        /* Cleared by the GC, or called during interpreter shutdown after module teardown. */
        PyErr_SetString(PyExc_RuntimeError, "failsafe guard used after it was cleared");
        return NULL;
    }
    PyObject *lat = p->latency;
    return lat == NULL ? guard_call(p, g->fn, args, nargsf, kwnames, NULL)
                       : guard_call_lat(p, g->fn, args, nargsf, kwnames, lat);
}

static PyObject *guard_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *fn, *policy;
    static char *kwlist[] = {"fn", "policy", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:Guard", kwlist, &fn, &policy)) {
        return NULL;
    }
    fs_state *st = fs_state_from_type(type);
    if (st == NULL) {
        return NULL;
    }
    if (!PyCallable_Check(fn)) {
        PyErr_Format(PyExc_TypeError, "fn must be callable, not %.200s", Py_TYPE(fn)->tp_name);
        return NULL;
    }
    if (!fs_is_policy(st, policy)) {
        PyErr_Format(PyExc_TypeError, "policy must be a failsafe policy, not %.200s", Py_TYPE(policy)->tp_name);
        return NULL;
    }
    FsGuard *g = (FsGuard *)type->tp_alloc(type, 0);
    if (g == NULL) {
        return NULL;
    }
    g->fn = Py_NewRef(fn);
    g->policy = (FsPolicy *)Py_NewRef(policy);
    g->vectorcall = guard_vectorcall;
    return (PyObject *)g;
}

static PyObject *guard_descr_get(PyObject *self, PyObject *obj, PyObject *Py_UNUSED(type))
{
    if (obj == NULL || obj == Py_None) {
        return Py_NewRef(self);
    }
    return PyMethod_New(self, obj);
}

static int guard_traverse(PyObject *self, visitproc visit, void *arg)
{
    FsGuard *g = (FsGuard *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(g->fn);
    Py_VISIT(g->policy);
    Py_VISIT(g->dict);
    return 0;
}

static int guard_clear(PyObject *self)
{
    FsGuard *g = (FsGuard *)self;
    Py_CLEAR(g->fn);
    Py_CLEAR(g->policy);
    Py_CLEAR(g->dict);
    return 0;
}

static void guard_dealloc(PyObject *self)
{
    FsGuard *g = (FsGuard *)self;
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (g->weakreflist != NULL) {
        PyObject_ClearWeakRefs(self);
    }
    guard_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *guard_repr(PyObject *self)
{
    FsGuard *g = (FsGuard *)self;
    if (g->policy == NULL || g->fn == NULL) {
        return PyUnicode_FromString("<failsafe guard (cleared)>");
    }
    return PyUnicode_FromFormat("<failsafe guard %R of %R>", g->policy->name, g->fn);
}

/* `async with fn:` is the block form of fn's policy: these hand over to the policy's own
 * __aenter__ / __aexit__ (TypeError for a policy without a block form). */
static PyObject *guard_policy_method(PyObject *self, const char *name, PyObject *const *args,
                                     Py_ssize_t nargs)
{
    FsGuard *g = (FsGuard *)self;
    if (g->policy == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "failsafe guard used after it was cleared");
        return NULL;
    }
    PyObject *str = PyUnicode_InternFromString(name);
    if (str == NULL) {
        return NULL;
    }
    PyObject *meth = NULL;
    int found = fs_lookup_optional_attr((PyObject *)Py_TYPE(g->policy), str, &meth);
    Py_XDECREF(meth);
    PyObject *res = NULL;
    if (found == 0) {
        PyErr_Format(PyExc_TypeError,
                     "%.200s policies have no async with form, so neither has their guard",
                     Py_TYPE(g->policy)->tp_name);
    }
    else if (found > 0) {
        PyObject *stack[4] = {(PyObject *)g->policy, NULL, NULL, NULL};
        for (Py_ssize_t i = 0; i < nargs && i < 3; i++) {
            stack[1 + i] = args[i];
        }
        res = PyObject_VectorcallMethod(str, stack, (size_t)(1 + (nargs < 3 ? nargs : 3)), NULL);
    }
    Py_DECREF(str);
    return res;
}

static PyObject *guard_aenter(PyObject *self, PyObject *Py_UNUSED(unused))
{
    return guard_policy_method(self, "__aenter__", NULL, 0);
}

static PyObject *guard_aexit(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "__aexit__ takes 3 arguments");
        return NULL;
    }
    return guard_policy_method(self, "__aexit__", args, nargs);
}

static PyMethodDef guard_methods[] = {
    {"__aenter__", guard_aenter, METH_NOARGS, "Enters the policy's async with form."},
    {"__aexit__", (PyCFunction)(void (*)(void))guard_aexit, METH_FASTCALL,
     "Leaves the policy's async with form."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef guard_members[] = {
    {"policy", Py_T_OBJECT_EX, offsetof(FsGuard, policy), Py_READONLY,
     "the policy guarding the calls"},
    {"_fn", Py_T_OBJECT_EX, offsetof(FsGuard, fn), Py_READONLY, "the guarded callable"},
    {"__dictoffset__", Py_T_PYSSIZET, offsetof(FsGuard, dict), Py_READONLY, NULL},
    {"__weaklistoffset__", Py_T_PYSSIZET, offsetof(FsGuard, weakreflist), Py_READONLY, NULL},
    {"__vectorcalloffset__", Py_T_PYSSIZET, offsetof(FsGuard, vectorcall), Py_READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef guard_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot guard_slots[] = {
    {Py_tp_new, guard_new},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_descr_get, guard_descr_get},
    {Py_tp_members, guard_members},
    {Py_tp_methods, guard_methods},
    {Py_tp_getset, guard_getset},
    {Py_tp_traverse, guard_traverse},
    {Py_tp_clear, guard_clear},
    {Py_tp_dealloc, guard_dealloc},
    {Py_tp_repr, guard_repr},
    {0, NULL},
};

static PyType_Spec guard_spec = {
    .name = "failsafe._native.Guard",
    .basicsize = sizeof(FsGuard),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .slots = guard_slots,
};

int fs_guard_setup(PyObject *module, fs_state *st)
{
    if (fs_call_setup(module, st) < 0) {
        return -1;
    }
    st->Guard_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &guard_spec, NULL);
    if (st->Guard_Type == NULL || PyModule_AddType(module, st->Guard_Type) < 0) {
        return -1;
    }
    return fs_done_setup(module, st) < 0 || fs_series_setup(module, st) < 0 ? -1 : 0;
}
