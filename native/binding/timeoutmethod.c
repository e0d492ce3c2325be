/* timeoutmethod: Timeout's __aenter__ and __aexit__ as descriptors that hand out bound
 * objects from a small freelist. `async with` binds both for every entry; as ordinary C
 * methods that is two bound-method objects created and freed per entry (a quarter of the cost). */
#include "fs_timers.h"

/* __aenter__ and __aexit__ of Timeout. `async with` binds both for every entry; as ordinary C
 * methods that is two bound-method objects created and freed per entry (a quarter of the cost).
 * These descriptors hand out bound objects from a small freelist of their own instead. */

enum { TM_AENTER = 0, TM_AEXIT = 1, TM_FREELIST_MAX = 16 };

typedef struct TimeoutMethod {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *self;                 /* bound: the Timeout (strong); NULL in a descriptor */
    struct TimeoutMethod *descr;    /* bound: its descriptor (strong) */
    struct TimeoutMethod *free;     /* descriptor: spare bound objects; spare: the next one */
    int nfree;
    int which;                      /* TM_* */
} TimeoutMethod;

static const char *const tm_names[] = {"__aenter__", "__aexit__"};

static PyObject *tm_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf,
                               PyObject *kwnames)
{
    TimeoutMethod *m = (TimeoutMethod *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *self = m->self;
    if (self == NULL) {     /* called on the class: self comes first */
        fs_state *st = PyType_GetModuleState(Py_TYPE(callable));
        if (nargs < 1 || !PyObject_TypeCheck(args[0], st->Timeout_Type)) {
            PyErr_Format(PyExc_TypeError, "%s() needs a Timeout as its first argument",
                         tm_names[m->which]);
            return NULL;
        }
        self = args[0];
        args++;
        nargs--;
    }
    Py_ssize_t want = m->which == TM_AENTER ? 0 : 3;
    if (nargs != want || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd positional arguments", tm_names[m->which],
                     want);
        return NULL;
    }
    return m->which == TM_AENTER ? fs_timeout_aenter(self) : fs_timeout_aexit(self, args);
}

static PyObject *tm_descr_get(PyObject *self, PyObject *obj, PyObject *Py_UNUSED(type))
{
    TimeoutMethod *d = (TimeoutMethod *)self;
    if (obj == NULL || obj == Py_None || d->self != NULL) {
        return Py_NewRef(self);
    }
    fs_state *st = PyType_GetModuleState(Py_TYPE(self));
    if (!PyObject_TypeCheck(obj, st->Timeout_Type)) {
        PyErr_Format(PyExc_TypeError, "%s() binds to a Timeout, not %.200s", tm_names[d->which],
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    TimeoutMethod *m = d->free;
    if (m != NULL) {
        d->free = m->free;
        d->nfree--;
        PyObject_Init((PyObject *)m, Py_TYPE(d));
    }
    else if ((m = PyObject_GC_New(TimeoutMethod, Py_TYPE(d))) == NULL) {
        return NULL;
    }
    m->vectorcall = tm_vectorcall;
    m->self = Py_NewRef(obj);
    m->descr = (TimeoutMethod *)Py_NewRef(d);
    m->free = NULL;
    m->nfree = 0;
    m->which = d->which;
    PyObject_GC_Track(m);
    return (PyObject *)m;
}

static int tm_traverse(PyObject *self, visitproc visit, void *arg)
{
    TimeoutMethod *m = (TimeoutMethod *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(m->self);
    Py_VISIT(m->descr);
    return 0;
}

static int tm_clear(PyObject *self)
{
    TimeoutMethod *m = (TimeoutMethod *)self;
    Py_CLEAR(m->self);
    Py_CLEAR(m->descr);
    return 0;
}

static void tm_dealloc(PyObject *self)
{
    TimeoutMethod *m = (TimeoutMethod *)self;
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Py_CLEAR(m->self);
    TimeoutMethod *d = m->descr;
    m->descr = NULL;
    if (d != NULL && d->nfree < TM_FREELIST_MAX) {
        m->free = d->free;
        d->free = m;
        d->nfree++;
        Py_DECREF(tp);      /* PyObject_Init takes it again on reuse */
        Py_DECREF(d);
        return;
    }
    Py_XDECREF(d);
    while (m->free != NULL) {  /* a descriptor: its spares go with it */
        TimeoutMethod *spare = m->free;
        m->free = spare->free;
        PyObject_GC_Del(spare);
    }
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *tm_repr(PyObject *self)
{
    TimeoutMethod *m = (TimeoutMethod *)self;
    if (m->self == NULL) {
        return PyUnicode_FromFormat("<method '%s' of 'Timeout' objects>", tm_names[m->which]);
    }
    return PyUnicode_FromFormat("<bound method %s of %R>", tm_names[m->which], m->self);
}

static PyObject *tm_get_name(PyObject *self, void *Py_UNUSED(closure))
{
    return PyUnicode_FromString(tm_names[((TimeoutMethod *)self)->which]);
}

static PyMemberDef tm_members[] = {
    {"__vectorcalloffset__", Py_T_PYSSIZET, offsetof(TimeoutMethod, vectorcall), Py_READONLY,
     NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyObject *tm_get_self(PyObject *self, void *Py_UNUSED(closure))
{
    PyObject *bound = ((TimeoutMethod *)self)->self;
    return Py_NewRef(bound ? bound : Py_None);
}

static PyGetSetDef tm_getset[] = {
    {"__name__", tm_get_name, NULL, NULL, NULL},
    {"__self__", tm_get_self, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot tm_slots[] = {
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_descr_get, tm_descr_get},
    {Py_tp_members, tm_members},
    {Py_tp_getset, tm_getset},
    {Py_tp_repr, tm_repr},
    {Py_tp_traverse, tm_traverse},
    {Py_tp_clear, tm_clear},
    {Py_tp_dealloc, tm_dealloc},
    {0, NULL},
};

static PyType_Spec tm_spec = {
    .name = "failsafe._native.TimeoutMethod",
    .basicsize = sizeof(TimeoutMethod),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION | Py_TPFLAGS_HAVE_VECTORCALL,
    .slots = tm_slots,
};

/* Installs __aenter__ and __aexit__ on the Timeout type. */
int fs_timeout_methods_install(PyObject *module, PyTypeObject *timeout_type)
{
    PyTypeObject *tp = (PyTypeObject *)PyType_FromModuleAndSpec(module, &tm_spec, NULL);
    if (tp == NULL) {
        return -1;
    }
    int rc = 0;
    for (int which = TM_AENTER; which <= TM_AEXIT && rc == 0; which++) {
        TimeoutMethod *d = PyObject_GC_New(TimeoutMethod, tp);
        if (d == NULL) {
            rc = -1;
            break;
        }
        d->vectorcall = tm_vectorcall;
        d->self = NULL;
        d->descr = NULL;
        d->free = NULL;
        d->nfree = 0;
        d->which = which;
        PyObject_GC_Track(d);
        rc = PyObject_SetAttrString((PyObject *)timeout_type, tm_names[which], (PyObject *)d);
        Py_DECREF(d);
    }
    Py_DECREF(tp);
    return rc;
}
