/* Keyed policies (failsafe.keyed): the C route of a call to the policy of its key.
 *
 * KeyedEntry is one key's place in a registry: its policy, the guards of that policy per
 * decorated function (none for a C policy, which the route calls directly), and the pins of the
 * calls running through it (a pinned entry is never forgotten). KeyedRoute is a policy whose
 * admit hook routes: it computes the key, finds the entry in the registry's dict, and when the
 * entry's policy is a C policy it makes the call there and answers it (FS_ADMIT_VALUE), so a
 * known key costs the key function (none when it returns one of the arguments), the lookup, the
 * move of the key to the recent end of the registry's OrderedDict (exact LRU) and the inner
 * policy's own call. A key not there yet (or an idle check due) takes one call of the
 * registry's `_admit`, which makes the entry under the registry's lock and hands it back
 * pinned; the call then goes on in C. An observed call (an FsCall) carries the entry's pin and
 * drops it when it ends; a policy written in Python goes to the registry's `_routed`. The
 * registry (Python) creates and forgets entries under its lock; the route only reads the dict
 * and pins.
 *
 * A KeyedRoute made without a function is the registry's own component: it reports the
 * registry's counters (created, evicted, expired, refused) to the metrics series. */
#include "fs_binding.h"

#include <stddef.h>

typedef struct KeyedEntry {
    PyObject_HEAD
    PyObject *policy;       /* the key's policy (strong) */
    PyObject *fn0, *guard0; /* the first function decorated and its guard (strong), read by
                             * the C route without a lookup; guard0 is the policy itself when
                             * it is a C policy the route calls on fn0 directly */
    PyObject *guards;       /* dict: further decorated functions -> their guards (strong), made
                             * for a second function only */
    Py_ssize_t pins;        /* calls running through the registry with this entry */
    long long used_ns;      /* last call (failsafe's clock), kept when idle_after is set */
} KeyedEntry;

typedef struct KeyedRoute {
    FsPolicy base;
    PyObject *registry;     /* the Python Keyed (strong), or NULL for the counting component */
    PyObject *entries;      /* the registry's dict: key -> KeyedEntry (strong) */
    PyObject *key_of;       /* key(*args, **kwargs) (strong) */
    PyObject *move;         /* entries.move_to_end (strong): a known key becomes the newest */
    Py_ssize_t key_arg;     /* >= 0: key_of returns its positional argument key_arg of
                             * key_nargs (checked by Python), read without calling it */
    Py_ssize_t key_nargs;
    PyObject *fn;           /* the decorated function (strong) */
    PyObject *counts;       /* the registry's counting KeyedRoute (strong): holds check_at */
    int timed;              /* idle_after set: calls stamp used_ns and look at check_at */
    long long check_at;     /* counting component: when the registry next looks for idle keys */
} KeyedRoute;

enum { KEYED_CREATED = 0, KEYED_EVICTED, KEYED_EXPIRED, KEYED_REFUSED };
static const char *const keyed_metrics[] = {"created", "evicted", "expired", "refused", NULL};

/* ------------------------------------------------------------------------------------------ */
/* KeyedEntry */

static PyObject *entry_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *policy;
    /* Positional only: one is made per new key, and keyword parsing costs ~200 Ir. */
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) {
        PyErr_SetString(PyExc_TypeError, "KeyedEntry() takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_UnpackTuple(args, "KeyedEntry", 1, 1, &policy)) {
        return NULL;
    }
    KeyedEntry *e = (KeyedEntry *)type->tp_alloc(type, 0);
    if (e == NULL) {
        return NULL;
    }
    e->policy = Py_NewRef(policy);
    return (PyObject *)e;
}

void fs_keyed_unpin(PyObject *entry)
{
    ((KeyedEntry *)entry)->pins--;
}

/* The guard kept for fn (borrowed; the policy itself when called directly), or NULL (with an
 * exception only when fn's lookup failed). */
static PyObject *entry_find_guard(KeyedEntry *e, PyObject *fn)
{
    if (e->fn0 == fn) {
        return e->guard0;
    }
    return e->guards == NULL ? NULL : PyDict_GetItemWithError(e->guards, fn);
}

/* _set_guard(fn, guard): the policy applied to fn; guard None: the policy is a component
 * called on fn as its own guard would call it (a C policy: directly, with no guard kept). */
static PyObject *entry_set_guard(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    KeyedEntry *e = (KeyedEntry *)self;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_set_guard(fn, guard)");
        return NULL;
    }
    fs_state *st = fs_state_from_type(Py_TYPE(self));
    if (st == NULL) {
        return NULL;
    }
    PyObject *fn = args[0], *guard;
    if (args[1] != Py_None) {
        guard = Py_NewRef(args[1]);
    }
    else if (fs_is_policy(st, e->policy)) {
        guard = Py_NewRef(e->policy);
    }
    else {
        guard = PyObject_CallFunctionObjArgs((PyObject *)st->Guard_Type, fn, e->policy, NULL);
        if (guard == NULL) {
            return NULL;
        }
    }
    if (e->fn0 == NULL) {
        e->fn0 = Py_NewRef(fn);
        e->guard0 = guard;
        Py_RETURN_NONE;
    }
    if (e->guards == NULL && (e->guards = PyDict_New()) == NULL) {
        Py_DECREF(guard);
        return NULL;
    }
    int rc = PyDict_SetItem(e->guards, fn, guard);
    Py_DECREF(guard);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* _guard_of(fn): fn's guard (the policy itself when the route calls it directly), or None
 * when fn has none yet. */
static PyObject *entry_guard_of(PyObject *self, PyObject *fn)
{
    PyObject *g = entry_find_guard((KeyedEntry *)self, fn);
    if (g == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    return Py_NewRef(g);
}

static PyObject *entry_pin(PyObject *self, PyObject *Py_UNUSED(unused))
{
    ((KeyedEntry *)self)->pins++;
    Py_RETURN_NONE;
}

static PyObject *entry_unpin(PyObject *self, PyObject *Py_UNUSED(unused))
{
    ((KeyedEntry *)self)->pins--;
    Py_RETURN_NONE;
}

static int entry_traverse(PyObject *self, visitproc visit, void *arg)
{
    KeyedEntry *e = (KeyedEntry *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(e->policy);
    Py_VISIT(e->guards);
    Py_VISIT(e->fn0);
    Py_VISIT(e->guard0);
    return 0;
}

static int entry_clear(PyObject *self)
{
    KeyedEntry *e = (KeyedEntry *)self;
    Py_CLEAR(e->fn0);
    Py_CLEAR(e->guard0);
    Py_CLEAR(e->policy);
    Py_CLEAR(e->guards);
    return 0;
}

static void entry_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    entry_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMemberDef entry_members[] = {
    {"policy", Py_T_OBJECT_EX, offsetof(KeyedEntry, policy), Py_READONLY, "the key's policy"},
    {"pins", Py_T_PYSSIZET, offsetof(KeyedEntry, pins), Py_READONLY,
     "calls running through the registry with this entry"},
    {"used_ns", Py_T_LONGLONG, offsetof(KeyedEntry, used_ns), 0, "last call (failsafe's clock)"},
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef entry_methods[] = {
    {"_set_guard", (PyCFunction)(void (*)(void))entry_set_guard, METH_FASTCALL,
     "_set_guard(fn, guard): the policy applied to fn (None: the policy called directly)."},
    {"_guard_of", entry_guard_of, METH_O, "_guard_of(fn): fn's guard (the policy when called directly), or None."},
    {"_pin", entry_pin, METH_NOARGS, "A call runs through the entry."},
    {"_unpin", entry_unpin, METH_NOARGS, "That call ended."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot entry_slots[] = {
    {Py_tp_doc, "KeyedEntry(policy): one key's place in a keyed registry."},
    {Py_tp_new, entry_new},
    {Py_tp_members, entry_members},
    {Py_tp_methods, entry_methods},
    {Py_tp_traverse, entry_traverse},
    {Py_tp_clear, entry_clear},
    {Py_tp_dealloc, entry_dealloc},
    {0, NULL},
};

static PyType_Spec entry_spec = {
    .name = "failsafe._native.KeyedEntry",
    .basicsize = sizeof(KeyedEntry),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = entry_slots,
};

/* ------------------------------------------------------------------------------------------ */
/* KeyedRoute */

/* The call in Python: registry._routed(fn, key, *args, **kwargs) (key stolen). */
static fs_verdict route_slow(KeyedRoute *r, fs_admission *a, PyObject *key,
                             PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    PyObject *head[2] = {r->fn, key};
    a->answer = fs_call_method_with(r->registry, r->base.st->str_routed, head, 2, args, nargsf,
                                    kwnames);
    Py_DECREF(key);
    return a->answer != NULL ? FS_ADMIT_VALUE : FS_ADMIT_REFUSE;
}

/* registry._admit(fn, key): key's entry, pinned, with a guard for fn (made, under the
 * registry's lock, when missing; looks for idle keys when due). New reference, or NULL with the
 * exception (RegistryFull, the factory's). */
static PyObject *route_admit_key(KeyedRoute *r, PyObject *key)
{
    PyObject *args[3] = {r->registry, r->fn, key};
    PyObject *e = PyObject_VectorcallMethod(r->base.st->str_admit, args,
                                            3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (e != NULL && (!Py_IS_TYPE(e, r->base.st->KeyedEntry_Type)
                      || entry_find_guard((KeyedEntry *)e, r->fn) == NULL)) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_SystemError, "keyed registry: _admit gave no guarded entry");
        }
        if (Py_IS_TYPE(e, r->base.st->KeyedEntry_Type)) {
            ((KeyedEntry *)e)->pins--;
        }
        Py_CLEAR(e);
    }
    return e;
}

static fs_verdict route_admit(FsPolicy *p, fs_admission *a, PyObject *const *args,
                              size_t nargsf, PyObject *kwnames)
{
    KeyedRoute *r = (KeyedRoute *)p;
    fs_state *st = p->st;
    if (r->fn == NULL) {
        PyErr_SetString(PyExc_TypeError, "a keyed registry's counting component routes nothing");
        return FS_ADMIT_REFUSE;
    }
    PyObject *key;
    if (r->key_arg >= 0 && kwnames == NULL && PyVectorcall_NARGS(nargsf) == r->key_nargs) {
        key = Py_NewRef(args[r->key_arg]);
    }
    else {
        key = PyObject_Vectorcall(r->key_of, args, nargsf, kwnames);
    }
    if (key == NULL) {
        return FS_ADMIT_REFUSE;     /* raised where the call is awaited */
    }
    PyObject *found = PyDict_GetItemWithError(r->entries, key);
    PyObject *g = NULL;
    if (found != NULL) {
        if (!Py_IS_TYPE(found, st->KeyedEntry_Type)) {
            return route_slow(r, a, key, args, nargsf, kwnames);
        }
        g = ((KeyedEntry *)found)->fn0 == r->fn ? ((KeyedEntry *)found)->guard0
                                                : entry_find_guard((KeyedEntry *)found, r->fn);
    }
    if (g == NULL && PyErr_Occurred()) {    /* an unhashable key, or fn's lookup failed */
        Py_DECREF(key);
        return FS_ADMIT_REFUSE;
    }
    bool pinned = false;    /* pinned by _admit, which also made it the newest key */
    if (g != NULL && r->timed) {
        int64_t now = fs_now_ns(st);
        ((KeyedEntry *)found)->used_ns = now;
        if (now >= ((KeyedRoute *)r->counts)->check_at) {
            g = NULL;       /* _admit looks for idle keys */
        }
    }
    if (g == NULL) {        /* a new key (or new to fn), or a look for idle keys due */
        found = route_admit_key(r, key);
        if (found == NULL) {
            Py_DECREF(key);
            return FS_ADMIT_REFUSE;
        }
        pinned = true;      /* and found is a new reference: the pin's */
        g = entry_find_guard((KeyedEntry *)found, r->fn);
    }
    KeyedEntry *e = (KeyedEntry *)found;
    FsPolicy *inner;
    PyObject *fn;
    if (g == e->policy) {   /* a C policy called directly */
        inner = (FsPolicy *)g;
        fn = r->fn;
    }
    else if (Py_IS_TYPE(g, st->Guard_Type) && ((FsGuard *)g)->policy != NULL) {
        inner = ((FsGuard *)g)->policy;
        fn = ((FsGuard *)g)->fn;
    }
    else {                  /* a policy written in Python: its guard runs in _routed */
        if (pinned) {
            e->pins--;
            Py_DECREF(found);
        }
        return route_slow(r, a, key, args, nargsf, kwnames);
    }
    if (!pinned) {
        e->pins++;
        if (!PyUnicode_CheckExact(key) && !PyLong_CheckExact(key)) {
            /* The key's __eq__ ran Python code: another thread may have forgotten the entry
             * before it was pinned. */
            PyObject *again = PyDict_GetItemWithError(r->entries, key);
            if (again != found) {
                e->pins--;
                if (PyErr_Occurred()) {
                    Py_DECREF(key);
                    return FS_ADMIT_REFUSE;
                }
                return route_slow(r, a, key, args, nargsf, kwnames);
            }
        }
        /* The newest key now (exact LRU order, as the registry's own lookups keep it). */
        PyObject *moved = PyObject_Vectorcall(r->move, &key, 1, NULL);
        if (moved != NULL) {
            Py_DECREF(moved);
        }
        else if (PyErr_ExceptionMatches(PyExc_KeyError)) {
            PyErr_Clear();  /* taken out by a forgetter, which sees the pin and puts it back */
        }
        else {
            e->pins--;
            Py_DECREF(key);
            return FS_ADMIT_REFUSE;
        }
    }
    Py_DECREF(key);
    if (!pinned) {
        Py_INCREF(found);   /* the pin's reference, moved into the FsCall or dropped below */
    }
    Py_INCREF(inner);   /* fn: the route's, or the guard's the pinned entry holds */
    PyObject *res = fs_guard_call_timed(inner, fn, args, nargsf, kwnames);
    if (res != NULL && Py_IS_TYPE(res, st->Call_Type) && ((FsCall *)res)->pin == NULL
        && ((FsCall *)res)->state != FS_CALL_DONE) {
        ((FsCall *)res)->pin = found;   /* unpinned when the call ends (call.c) */
        ((FsCall *)res)->extra |= FS_CX_PIN;
    }
    else {
        e->pins--;
        if (res != NULL && !Py_IS_TYPE(res, st->Done_Type)) {
            /* The function's own coroutine or a slow path's: pinned while it runs. */
            PyObject *head[3] = {r->registry, found, res};
            Py_SETREF(res, PyObject_VectorcallMethod(st->str_hold, head, 3, NULL));
        }
        Py_DECREF(found);
    }
    Py_DECREF(inner);
    a->answer = res;
    return res != NULL ? FS_ADMIT_VALUE : FS_ADMIT_REFUSE;
}

static const fs_policy_ops route_ops = {
    .admit = route_admit,
};

static PyObject *route_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *registry = Py_None, *entries = Py_None, *key_of = Py_None, *fn = Py_None;
    PyObject *counts = Py_None;
    int timed = 0;
    Py_ssize_t key_arg = -1, key_nargs = 0;
    static char *kwlist[] = {"registry", "entries", "key", "fn",        "counts",
                             "timed",    "key_arg", "key_nargs", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|OOOOOpnn:KeyedRoute", kwlist, &registry,
                                     &entries, &key_of, &fn, &counts, &timed, &key_arg,
                                     &key_nargs)) {
        return NULL;
    }
    fs_state *st = fs_state_from_type(type);
    if (st == NULL) {
        return NULL;
    }
    bool routing = fn != Py_None;
    if (routing && (!PyODict_Check(entries) || !PyCallable_Check(key_of) || !PyCallable_Check(fn)
                    || counts == Py_None || !PyObject_TypeCheck(counts, st->KeyedRoute_Type))) {
        PyErr_SetString(PyExc_TypeError,
                        "KeyedRoute(registry, entries: OrderedDict, key: callable, fn: callable, "
                        "counts: KeyedRoute, timed)");
        return NULL;
    }
    if (key_arg >= key_nargs) {
        key_arg = -1;
    }
    PyObject *move = NULL;
    if (routing) {
        move = PyObject_GetAttrString(entries, "move_to_end");
        if (move == NULL) {
            return NULL;
        }
    }
    KeyedRoute *r = (KeyedRoute *)type->tp_alloc(type, 0);
    if (r == NULL) {
        Py_XDECREF(move);
        return NULL;
    }
    r->move = move;
    if (fs_policy_init(&r->base, &route_ops, FS_PATTERN_KEYED, 0, "keyed") < 0) {
        Py_DECREF(r);
        return NULL;
    }
    if (routing) {
        r->registry = Py_NewRef(registry);
        r->entries = Py_NewRef(entries);
        r->key_of = Py_NewRef(key_of);
        r->fn = Py_NewRef(fn);
        r->counts = Py_NewRef(counts);
    }
    r->timed = timed;
    r->key_arg = key_arg;
    r->key_nargs = key_nargs;
    r->check_at = 0;
    return (PyObject *)r;
}

static int route_traverse(PyObject *self, visitproc visit, void *arg)
{
    KeyedRoute *r = (KeyedRoute *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(r->registry);
    Py_VISIT(r->entries);
    Py_VISIT(r->key_of);
    Py_VISIT(r->move);
    Py_VISIT(r->fn);
    Py_VISIT(r->counts);
    return fs_policy_traverse(&r->base, visit, arg);
}

static int route_clear(PyObject *self)
{
    KeyedRoute *r = (KeyedRoute *)self;
    fs_policy_clear_events(&r->base);
    Py_CLEAR(r->registry);
    Py_CLEAR(r->entries);
    Py_CLEAR(r->key_of);
    Py_CLEAR(r->move);
    Py_CLEAR(r->fn);
    Py_CLEAR(r->counts);
    Py_CLEAR(r->base.name);
    return 0;
}

static void route_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    fs_policy_clear((FsPolicy *)self);
    route_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMemberDef route_members[] = {
    FS_POLICY_MEMBERS,
    {"_check_at", Py_T_LONGLONG, offsetof(KeyedRoute, check_at), 0,
     "when the registry next looks for idle keys (failsafe's clock, ns)"},
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef route_methods[] = {
    FS_POLICY_METHODS,
    {NULL, NULL, 0, NULL},
};

static PyType_Slot route_slots[] = {
    {Py_tp_doc, "KeyedRoute(registry, entries, key, fn, counts, timed): routes a decorated "
                "function's calls to the policy of their key; without fn, a registry's "
                "counters."},
    {Py_tp_new, route_new},
    {Py_tp_members, route_members},
    {Py_tp_methods, route_methods},
    {Py_tp_traverse, route_traverse},
    {Py_tp_clear, route_clear},
    {Py_tp_dealloc, route_dealloc},
    {0, NULL},
};

static PyType_Spec route_spec = {
    .name = "failsafe._native.KeyedRoute",
    .basicsize = sizeof(KeyedRoute),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .slots = route_slots,
};

static int keyed_setup(PyObject *module, fs_state *st)
{
    st->KeyedEntry_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &entry_spec, NULL);
    if (st->KeyedEntry_Type == NULL || PyModule_AddType(module, st->KeyedEntry_Type) < 0) {
        return -1;
    }
    st->KeyedRoute_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &route_spec, NULL);
    if (st->KeyedRoute_Type == NULL || fs_register_policy_type(st, st->KeyedRoute_Type) < 0) {
        return -1;
    }
    st->str_routed = PyUnicode_InternFromString("_routed");
    st->str_hold = PyUnicode_InternFromString("_hold");
    st->str_admit = PyUnicode_InternFromString("_admit");
    if (st->str_routed == NULL || st->str_hold == NULL || st->str_admit == NULL) {
        return -1;
    }
    return PyModule_AddType(module, st->KeyedRoute_Type);
}

static int keyed_part_traverse(fs_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->KeyedEntry_Type);
    Py_VISIT(st->KeyedRoute_Type);
    return 0;
}

static void keyed_part_clear(fs_state *st)
{
    Py_CLEAR(st->KeyedEntry_Type);
    Py_CLEAR(st->KeyedRoute_Type);
    Py_CLEAR(st->str_routed);
    Py_CLEAR(st->str_hold);
    Py_CLEAR(st->str_admit);
}

const fs_part fs_keyed_part = {
    .name = "keyed",
    .pattern = FS_PATTERN_KEYED,
    .metrics = keyed_metrics,
    .setup = keyed_setup,
    .traverse = keyed_part_traverse,
    .clear = keyed_part_clear,
};
