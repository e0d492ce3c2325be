/* CacheFlight: a cache miss in flight, as the callers waiting for its outcome see it (join,
 * leave, waiting). Apart from cache.c, which registers and settles flights. */
#include "cache.h"

/* join(fut): True when fut will get the call's outcome; False when the call has ended since
 * the caller found it (another thread ran meanwhile): the caller looks again. */
static PyObject *flight_join(PyObject *self, PyObject *fut)
{
    CacheFlight *f = (CacheFlight *)self;
    if (f->settled) {
        Py_RETURN_FALSE;
    }
    if (f->waiters == NULL && (f->waiters = PyList_New(0)) == NULL) {
        return NULL;
    }
    if (PyList_Append(f->waiters, fut) < 0) {
        return NULL;
    }
    Py_RETURN_TRUE;
}

static PyObject *flight_leave(PyObject *self, PyObject *fut)
{
    CacheFlight *f = (CacheFlight *)self;
    if (f->waiters != NULL) {
        for (Py_ssize_t i = PyList_GET_SIZE(f->waiters) - 1; i >= 0; i--) {
            if (PyList_GET_ITEM(f->waiters, i) == fut) {
                return PySequence_DelItem(f->waiters, i) < 0 ? NULL : Py_NewRef(Py_None);
            }
        }
    }
    Py_RETURN_NONE;
}

static PyObject *flight_get_waiting(PyObject *self, void *Py_UNUSED(closure))
{
    CacheFlight *f = (CacheFlight *)self;
    return PyLong_FromSsize_t(f->waiters != NULL ? PyList_GET_SIZE(f->waiters) : 0);
}

static int flight_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(((CacheFlight *)self)->waiters);
    Py_VISIT(((CacheFlight *)self)->stale);
    return 0;
}

static int flight_clear(PyObject *self)
{
    Py_CLEAR(((CacheFlight *)self)->waiters);
    Py_CLEAR(((CacheFlight *)self)->stale);
    return 0;
}

static void flight_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    flight_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *flight_repr(PyObject *self)
{
    CacheFlight *f = (CacheFlight *)self;
    return PyUnicode_FromFormat("<cache call in flight, %zd waiting%s>",
                                f->waiters != NULL ? PyList_GET_SIZE(f->waiters) : 0,
                                f->slot < 0 ? ", detached" : "");
}

static PyMethodDef flight_methods[] = {
    {"join", flight_join, METH_O,
     "join(future): True when future will get the call's outcome, False when it has ended"},
    {"leave", flight_leave, METH_O, "leave(future): a cancelled waiter leaves"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef flight_getset[] = {
    {"waiting", flight_get_waiting, NULL, "how many callers wait for it", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot flight_slots[] = {
    {Py_tp_methods, flight_methods},
    {Py_tp_getset, flight_getset},
    {Py_tp_traverse, flight_traverse},
    {Py_tp_clear, flight_clear},
    {Py_tp_dealloc, flight_dealloc},
    {Py_tp_repr, flight_repr},
    {0, NULL},
};

PyType_Spec fs_cache_flight_spec = {
    .name = "failsafe._native.CacheFlight",
    .basicsize = sizeof(CacheFlight),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = flight_slots,
};
