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

int fs_series_join(FsPolicy *p, FsSeries *s)
{
    if (p->series == s) {
        return 0;
    }
    if (p->series != NULL) {
        PyErr_SetString(PyExc_ValueError, "the component reports to another series already");
        return -1;
    }
    p->series = (FsSeries *)Py_NewRef((PyObject *)s);
    p->series_prev = NULL;
    p->series_next = s->head;
    if (s->head != NULL) {
        s->head->series_prev = p;
    }
    s->head = p;
    s->live++;
    return 0;
}

/* attach(policy): makes policy a member (fs_series_join). */
static PyObject *series_attach(PyObject *self, PyObject *obj)
{
    fs_state *st = fs_state_from_type(Py_TYPE(self));
    if (st == NULL) {
        return NULL;
    }
    if (!fs_is_policy(st, obj)) {
        PyErr_Format(PyExc_TypeError, "attach() takes a policy, not %s", Py_TYPE(obj)->tp_name);
        return NULL;
    }
    if (fs_series_join((FsPolicy *)obj, (FsSeries *)self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* members(): the live members, newest first (new list). */
static PyObject *series_members(PyObject *self, PyObject *Py_UNUSED(unused))
{
    FsSeries *s = (FsSeries *)self;
    PyObject *list = PyList_New(s->live);
    if (list == NULL) {
        return NULL;
    }
    Py_ssize_t i = 0;
    for (FsPolicy *p = s->head; p != NULL && i < s->live; p = p->series_next) {
        PyList_SET_ITEM(list, i++, Py_NewRef((PyObject *)p));
    }
    return list;
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
    {"members", series_members, METH_NOARGS, "the live members (a new list)"},
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
