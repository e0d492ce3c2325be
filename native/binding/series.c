/* Metrics series: the summed counters of the components sharing a name and pattern. Apart
 * from the guarded call because only metrics export reads them. */
#include "fs_binding.h"

#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* Series: the metrics of every component sharing one name and pattern (failsafe._core keeps one
 * per pair). Members are linked through their headers (borrowed; each member holds the series
 * strongly); a member leaving (deallocated) adds its counters to `retired`, so read() never goes
 * backwards. Holds no Python references: not GC-tracked. */

typedef struct FsSeries {
    PyObject_HEAD
    FsPolicy *head;                         /* live members, borrowed */
    Py_ssize_t live;
    uint64_t retired[FS_MAX_COUNTERS];      /* counts of the members that are gone */
} FsSeries;

void fs_series_leave(FsPolicy *p)
{
    FsSeries *s = p->series;
    for (int i = 0; i < FS_MAX_COUNTERS; i++) {
        s->retired[i] += p->counters[i];
    }
    if (p->series_prev != NULL) {
        p->series_prev->series_next = p->series_next;
    }
    else {
        s->head = p->series_next;
    }
    if (p->series_next != NULL) {
        p->series_next->series_prev = p->series_prev;
    }
    s->live--;
    p->series = NULL;
    p->series_prev = p->series_next = NULL;
    Py_DECREF(s);
}

/* attach(policy): makes policy a member. Joining the series it is in already does nothing; a
 * component belongs to one series for life (ValueError otherwise), so no series loses counts. */
static PyObject *series_attach(PyObject *self, PyObject *obj)
{
    FsSeries *s = (FsSeries *)self;
    fs_state *st = fs_state_from_type(Py_TYPE(self));
    if (st == NULL) {
        return NULL;
    }
    if (!fs_is_policy(st, obj)) {
        PyErr_Format(PyExc_TypeError, "attach() takes a policy, not %s", Py_TYPE(obj)->tp_name);
        return NULL;
    }
    FsPolicy *p = (FsPolicy *)obj;
    if (p->series == s) {
        Py_RETURN_NONE;
    }
    if (p->series != NULL) {
        PyErr_SetString(PyExc_ValueError, "the component reports to another series already");
        return NULL;
    }
    p->series = (FsSeries *)Py_NewRef(self);
    p->series_prev = NULL;
    p->series_next = s->head;
    if (s->head != NULL) {
        s->head->series_prev = p;
    }
    s->head = p;
    s->live++;
    Py_RETURN_NONE;
}

/* read(): per counter, the retired counts plus those of every live member. */
static PyObject *series_read(PyObject *self, PyObject *Py_UNUSED(unused))
{
    FsSeries *s = (FsSeries *)self;
    uint64_t sum[FS_MAX_COUNTERS];
    memcpy(sum, s->retired, sizeof(sum));
    for (FsPolicy *p = s->head; p != NULL; p = p->series_next) {
        for (int i = 0; i < FS_MAX_COUNTERS; i++) {
            sum[i] += p->counters[i];
        }
    }
    PyObject *t = PyTuple_New(FS_MAX_COUNTERS);
    if (t == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < FS_MAX_COUNTERS; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(sum[i]);
        if (v == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, v);
    }
    return t;
}

static PyObject *series_get_live(PyObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(((FsSeries *)self)->live);
}

static void series_dealloc(PyObject *self)
{
    /* Members hold the series strongly: none is left here. */
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef series_methods[] = {
    {"attach", series_attach, METH_O, "attach(policy): the policy reports to this series"},
    {"read", series_read, METH_NOARGS, "the summed counters of members live and gone"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef series_getset[] = {
    {"live", series_get_live, NULL, "number of live members", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot series_slots[] = {
    {Py_tp_doc, "Series(): summed counters of the components sharing a name and pattern."},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_methods, series_methods},
    {Py_tp_getset, series_getset},
    {Py_tp_dealloc, series_dealloc},
    {0, NULL},
};

static PyType_Spec series_spec = {
    .name = "failsafe._native.Series",
    .basicsize = sizeof(FsSeries),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = series_slots,
};

int fs_series_setup(PyObject *module, fs_state *st)
{
    (void)st;
    /* The module's dict keeps Series alive; its methods find the state through the type. */
    PyObject *series = PyType_FromModuleAndSpec(module, &series_spec, NULL);
    if (series == NULL) {
        return -1;
    }
    int rc = PyModule_AddType(module, (PyTypeObject *)series);
    Py_DECREF(series);
    return rc;
}
