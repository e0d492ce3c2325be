/* failsafe._native: module definition, module state, clock, RNG and listener flags (binding
 * errors become exceptions in errors.c). */
#include "fs_binding.h"

#include <string.h>

static struct PyModuleDef fs_module_def;

fs_state *fs_state_from_type(PyTypeObject *tp)
{
    PyObject *mod = PyType_GetModuleByDef(tp, &fs_module_def);
    if (mod == NULL) {
        return NULL;
    }
    return (fs_state *)PyModule_GetState(mod);
}

int fs_event_error(PyObject *where)
{
    if (PyErr_ExceptionMatches(PyExc_Exception)) {
        PyErr_WriteUnraisable(where);
        return 0;
    }
    return -1;
}

/* Handlers resolved per (component, event): events are few per pattern, and method names are
 * string literals, so a slot is found by comparing pointers. */
#define FS_EVENT_SLOTS 8
struct fs_event_cache {
    uint64_t gen;           /* st->listeners_gen the slots were resolved under */
    int n;
    struct {
        const char *method;
        PyObject *handlers;     /* flat (listener, handler, ...) tuple, or None: call emit() */
    } slot[FS_EVENT_SLOTS];
};

static void event_cache_reset(struct fs_event_cache *c)
{
    int n = c->n;
    c->n = 0;
    for (int i = 0; i < n; i++) {
        Py_CLEAR(c->slot[i].handlers);
    }
}

int fs_event_cache_traverse(struct fs_event_cache *c, visitproc visit, void *arg)
{
    if (c != NULL) {
        for (int i = 0; i < c->n; i++) {
            Py_VISIT(c->slot[i].handlers);
        }
    }
    return 0;
}

void fs_policy_clear_events(FsPolicy *p)
{
    struct fs_event_cache *c = p->events;
    if (c != NULL) {
        p->events = NULL;
        event_cache_reset(c);
        PyMem_Free(c);
    }
}

/* The handlers of event method of p (new reference): a flat tuple, or None when emit() must
 * run. NULL with an exception on failure. */
static PyObject *event_handlers(FsPolicy *p, const char *method)
{
    fs_state *st = p->st;
    struct fs_event_cache *c = p->events;
    if (c == NULL) {
        c = PyMem_Calloc(1, sizeof *c);
        if (c == NULL) {
            return PyErr_NoMemory();
        }
        c->gen = st->listeners_gen;
        p->events = c;
    }
    else if (c->gen != st->listeners_gen) {
        event_cache_reset(c);
        c->gen = st->listeners_gen;
    }
    for (int i = 0; i < c->n; i++) {
        if (c->slot[i].method == method) {
            return Py_NewRef(c->slot[i].handlers);
        }
    }
    uint64_t gen = c->gen;
    PyObject *name = PyUnicode_InternFromString(method);
    if (name == NULL) {
        return NULL;
    }
    PyObject *stack[2] = {(PyObject *)p, name};
    PyObject *handlers = PyObject_Vectorcall(st->resolve, stack, 2, NULL);
    Py_DECREF(name);
    if (handlers == NULL) {
        return NULL;
    }
    if (handlers != Py_None && !PyTuple_CheckExact(handlers)) {
        Py_SETREF(handlers, Py_NewRef(Py_None));
    }
    /* The resolver ran Python: the cache may have been reset or freed meanwhile. */
    c = p->events;
    if (c != NULL && c->gen == gen && st->listeners_gen == gen && c->n < FS_EVENT_SLOTS) {
        c->slot[c->n].method = method;
        c->slot[c->n].handlers = Py_NewRef(handlers);
        c->n++;
    }
    return handlers;
}

bool fs_event_handled(FsPolicy *p, const char *method)
{
    fs_state *st = p->st;
    if (st->emit == NULL) {
        return false;
    }
    if (st->resolve == NULL || st->finish == NULL) {
        return true;
    }
    struct fs_event_cache *c = p->events;
    if (c != NULL && c->gen == st->listeners_gen) {
        for (int i = 0; i < c->n; i++) {
            if (c->slot[i].method == method) {
                PyObject *h = c->slot[i].handlers;
                return h == Py_None || PyTuple_GET_SIZE(h) > 0;
            }
        }
    }
    PyObject *saved = PyErr_GetRaisedException();
    PyObject *h = event_handlers(p, method);
    bool wanted = h == NULL || h == Py_None || PyTuple_GET_SIZE(h) > 0;
    Py_XDECREF(h);
    PyErr_Clear();  /* only the resolver's MemoryError and the like: fs_emit meets it again */
    PyErr_SetRaisedException(saved);
    return wanted;
}

/* Calls each resolved handler as handler(p, *args), in order. 0, or -1 for what must propagate. */
static int event_dispatch(FsPolicy *p, PyObject *handlers, const char *method, PyObject *args)
{
    fs_state *st = p->st;
    Py_ssize_t n = PyTuple_GET_SIZE(handlers);
    Py_ssize_t na = args != NULL ? PyTuple_GET_SIZE(args) : 0;
    PyObject *small[8];
    PyObject **stack = small;
    if (na + 1 > (Py_ssize_t)(sizeof small / sizeof small[0])) {
        stack = PyMem_Malloc((size_t)(na + 1) * sizeof(PyObject *));
        if (stack == NULL) {
            PyErr_NoMemory();
            return fs_event_error(NULL);
        }
    }
    stack[0] = (PyObject *)p;
    for (Py_ssize_t i = 0; i < na; i++) {
        stack[i + 1] = PyTuple_GET_ITEM(args, i);
    }
    int rc = 0;
    for (Py_ssize_t i = 0; i + 1 < n; i += 2) {
        PyObject *listener = PyTuple_GET_ITEM(handlers, i);
        PyObject *res = PyObject_Vectorcall(PyTuple_GET_ITEM(handlers, i + 1), stack,
                                            (size_t)(na + 1), NULL);
        if (res == Py_None) {
            Py_DECREF(res);
            continue;
        }
        /* An awaitable to run, or an error to log: Python's part. */
        PyObject *raised = res == NULL ? Py_True : Py_False;
        PyObject *outcome = res != NULL ? res : PyErr_GetRaisedException();
        PyObject *name = PyUnicode_InternFromString(method);
        PyObject *done = NULL;
        if (name != NULL) {
            PyObject *fargs[5] = {listener, (PyObject *)p, name, outcome, raised};
            done = PyObject_Vectorcall(st->finish, fargs, 5, NULL);
            Py_DECREF(name);
        }
        Py_XDECREF(outcome);
        if (done == NULL) {
            rc = fs_event_error(st->finish);
            if (rc < 0) {
                break;
            }
        }
        Py_XDECREF(done);
    }
    if (stack != small) {
        PyMem_Free(stack);
    }
    return rc;
}

static int event_emit_py(FsPolicy *p, const char *method, PyObject *args)
{
    fs_state *st = p->st;
    PyObject *name = PyUnicode_InternFromString(method);
    PyObject *empty = NULL;
    if (args == NULL) {
        args = empty = PyTuple_New(0);
    }
    int rc = 0;
    if (name != NULL && args != NULL) {
        PyObject *stack[3] = {(PyObject *)p, name, args};
        PyObject *res = PyObject_Vectorcall(st->emit, stack, 3, NULL);
        if (res == NULL) {
            rc = fs_event_error(st->emit);
        }
        Py_XDECREF(res);
    }
    else {
        rc = fs_event_error(NULL);
    }
    Py_XDECREF(name);
    Py_XDECREF(empty);
    return rc;
}

int fs_emit(FsPolicy *p, const char *method, PyObject *args)
{
    fs_state *st = p->st;
    if (st->emit == NULL) {
        Py_XDECREF(args);
        return 0;
    }
    PyObject *handlers = NULL;
    if (st->resolve != NULL && st->finish != NULL) {
        struct fs_event_cache *c = p->events;
        /* The common case, a listener without a handler for this event: nothing to do. */
        if (c != NULL && c->gen == st->listeners_gen) {
            for (int i = 0; i < c->n; i++) {
                if (c->slot[i].method == method) {
                    PyObject *h = c->slot[i].handlers;
                    if (h != Py_None && PyTuple_GET_SIZE(h) == 0) {
                        Py_XDECREF(args);
                        return 0;
                    }
                    break;
                }
            }
        }
    }
    /* Listeners run with no exception pending; the caller's pending one is restored after. */
    PyObject *saved = PyErr_GetRaisedException();
    int rc;
    if (st->resolve != NULL && st->finish != NULL) {
        handlers = event_handlers(p, method);
    }
    if (handlers == NULL && PyErr_Occurred()) {
        rc = fs_event_error(st->resolve);
    }
    else if (handlers == NULL || handlers == Py_None) {
        rc = event_emit_py(p, method, args);
    }
    else {
        rc = event_dispatch(p, handlers, method, args);
    }
    Py_XDECREF(handlers);
    Py_XDECREF(args);
    if (rc < 0) {
        Py_XDECREF(saved);  /* KeyboardInterrupt / SystemExit win */
        return -1;
    }
    PyErr_SetRaisedException(saved);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Module functions */

static PyObject *mod_now_ns(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLongLong(fs_now_ns(PyModule_GetState(module)));
}

static PyObject *mod_set_clock(PyObject *module, PyObject *arg)
{
    fs_state *st = PyModule_GetState(module);
    if (arg == Py_None) {
        if (st->fake_clock) {
            /* Back to the real clock, which resumes where the fake one stopped if that is
             * later: state taken on the fake clock never lies in the future. */
            int64_t real = fs_monotonic_ns();
            if (st->fake_now_ns - real > st->real_offset_ns) {
                st->real_offset_ns = st->fake_now_ns - real;
            }
            st->fake_clock = 0;
        }
        Py_RETURN_NONE;
    }
    if (!PyLong_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "now_ns must be an int or None, not %.200s", Py_TYPE(arg)->tp_name);
        return NULL;
    }
    long long ns = PyLong_AsLongLong(arg);
    if (ns == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (ns < 0) {
        PyErr_SetString(PyExc_ValueError, "now_ns must be >= 0");
        return NULL;
    }
    st->fake_now_ns = ns;
    st->fake_clock = 1;
    Py_RETURN_NONE;
}

/* For a test suite only: the real clock restarts from the machine's monotonic time, undoing
 * the shift left by fake clocks run far ahead (time goes back: state taken before is void). */
static PyObject *mod_restart_clock(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    fs_state *st = PyModule_GetState(module);
    if (st->fake_clock) {
        PyErr_SetString(PyExc_RuntimeError, "a FakeClock is installed");
        return NULL;
    }
    st->real_offset_ns = 0;
    Py_RETURN_NONE;
}

int fs_test_waits(fs_state *st)
{
    if (st->fake_clock) {
        return 1;
    }
    if (st->instant_var == NULL) {
        return 0;
    }
    PyObject *value = NULL;
    if (PyContextVar_Get(st->instant_var, Py_False, &value) < 0) {
        PyErr_Clear();
        return 0;
    }
    int on = value == Py_True;
    Py_DECREF(value);
    return on;
}

static PyObject *mod_set_instant_var(PyObject *module, PyObject *arg)
{
    if (!PyContextVar_CheckExact(arg)) {
        PyErr_Format(PyExc_TypeError, "expected a ContextVar, not %.200s", Py_TYPE(arg)->tp_name);
        return NULL;
    }
    fs_state *st = PyModule_GetState(module);
    Py_XSETREF(st->instant_var, Py_NewRef(arg));
    Py_RETURN_NONE;
}

static PyObject *mod_seed(PyObject *module, PyObject *arg)
{
    fs_state *st = PyModule_GetState(module);
    if (!PyLong_Check(arg) || PyBool_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "seed must be an int, not %.200s", Py_TYPE(arg)->tp_name);
        return NULL;
    }
    unsigned long long seed = PyLong_AsUnsignedLongLong(arg);
    if (seed == (unsigned long long)-1 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_SetString(PyExc_ValueError, "seed must be in [0, 2**64)");
        }
        return NULL;
    }
    fs_rng_seed(&st->rng, (uint64_t)seed);
    Py_RETURN_NONE;
}

static PyObject *mod_uniform(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    fs_state *st = PyModule_GetState(module);
    return PyFloat_FromDouble(fs_rng_uniform(&st->rng));
}

static PyObject *mod_set_listening(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    fs_state *st = PyModule_GetState(module);
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_set_listening(pattern, on) takes 2 arguments");
        return NULL;
    }
    Py_ssize_t pattern = PyLong_AsSsize_t(args[0]);
    if (pattern == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (pattern < 0 || pattern >= FS_PATTERN_COUNT) {
        PyErr_Format(PyExc_ValueError, "pattern index %zd out of range", pattern);
        return NULL;
    }
    int on = PyObject_IsTrue(args[1]);
    if (on < 0) {
        return NULL;
    }
    st->listening[pattern] = on;
    st->listeners_gen++;
    Py_RETURN_NONE;
}

static PyObject *mod_listeners_changed(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    fs_state *st = PyModule_GetState(module);
    st->listeners_gen++;
    Py_RETURN_NONE;
}

static int bind_one(PyObject **slot, PyObject *value)
{
    if (value == Py_None) {
        Py_CLEAR(*slot);
        return 0;
    }
    Py_XSETREF(*slot, Py_NewRef(value));
    return 0;
}

static PyObject *mod_bind(PyObject *module, PyObject *args, PyObject *kwargs)
{
    fs_state *st = PyModule_GetState(module);
    static char *kwlist[] = {"emit", "resolve", "finish", FS_ERR_BIND_NAMES, NULL};
    PyObject *emit = NULL, *resolve = NULL, *finish = NULL;
    PyObject *errors[FS_E_COUNT] = {NULL};
    _Static_assert(FS_E_COUNT == 8, "one _bind keyword and format unit per fs_err");
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$OOOOOOOOOOO:_bind", kwlist, &emit, &resolve,
                                     &finish, &errors[0],
                                     &errors[1], &errors[2], &errors[3], &errors[4], &errors[5],
                                     &errors[6], &errors[7])) {
        return NULL;
    }
    PyObject *fns[3] = {emit, resolve, finish};
    for (int i = 0; i < 3; i++) {
        if (fns[i] != NULL && fns[i] != Py_None && !PyCallable_Check(fns[i])) {
            PyErr_Format(PyExc_TypeError, "%s must be callable", kwlist[i]);
            return NULL;
        }
    }
    for (int i = 0; i < FS_E_COUNT; i++) {
        PyObject *cls = errors[i];
        PyObject *base = i == FS_E_TIMEOUT ? PyExc_TimeoutError : PyExc_Exception;
        if (cls != NULL && cls != Py_None
            && !(PyType_Check(cls) && PyType_IsSubtype((PyTypeObject *)cls, (PyTypeObject *)base))) {
            PyErr_Format(PyExc_TypeError, "%s must be a %s subclass", kwlist[i + 3],
                         ((PyTypeObject *)base)->tp_name);
            return NULL;
        }
    }
    if (emit != NULL) {
        bind_one(&st->emit, emit);
    }
    if (resolve != NULL) {
        bind_one(&st->resolve, resolve);
    }
    if (finish != NULL) {
        bind_one(&st->finish, finish);
    }
    st->listeners_gen++;
    for (int i = 0; i < FS_E_COUNT; i++) {
        if (errors[i] != NULL) {
            bind_one(&st->errors[i], errors[i]);
        }
    }
    Py_RETURN_NONE;
}

static PyMethodDef fs_module_methods[] = {
    {"now_ns", mod_now_ns, METH_NOARGS, "Monotonic time in ns as failsafe sees it (the fake clock when set)."},
    {"_set_clock", mod_set_clock, METH_O, "Sets the fake clock to ns, or None for the real clock (shifted forward, never back, to"
     " resume after the fake time)."},
    {"_restart_clock", mod_restart_clock, METH_NOARGS,
     "Test suites only: the real clock restarts unshifted (time goes back)."},
    {"_set_instant_var", mod_set_instant_var, METH_O,
     "The ContextVar saying whether waits are instant (hedge delays then wait from Python)."},
    {"seed", mod_seed, METH_O, "Seeds the jitter RNG."},
    {"_uniform", mod_uniform, METH_NOARGS, "A uniform draw in [0, 1) from the jitter RNG."},
    {"_set_listening", (PyCFunction)(void (*)(void))mod_set_listening, METH_FASTCALL,
     "Marks whether a global listener exists for a pattern index."},
    {"_listeners_changed", mod_listeners_changed, METH_NOARGS,
     "Drops every component's resolved event handlers (a listener was added or removed)."},
    {"_bind", (PyCFunction)(void (*)(void))mod_bind, METH_VARARGS | METH_KEYWORDS,
     "Binds the Python-side dispatcher and exception classes."},
    {NULL, NULL, 0, NULL},
};

/* ------------------------------------------------------------------------------------------ */
/* Module lifecycle */

static int intern(PyObject **slot, const char *s)
{
    *slot = PyUnicode_InternFromString(s);
    return *slot == NULL ? -1 : 0;
}

/* The guard's and the timeout's share of module state (their files predate the parts table;
 * their types are set up by fs_guard_setup / fs_timeout_setup). */
static int guard_traverse(fs_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->Guard_Type);
    Py_VISIT(st->Call_Type);
    return fs_done_traverse(st, visit, arg);
}

static void guard_clear(fs_state *st)
{
    fs_call_freelist_clear(st);
    fs_done_clear(st);
    Py_CLEAR(st->Guard_Type);
    Py_CLEAR(st->Call_Type);
}

static int timeout_traverse(fs_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->Timeout_Type);
    Py_VISIT(st->TimeoutScope_Type);
    Py_VISIT(st->TimerQueue_Type);
    return fs_timeout_traverse(st, visit, arg);
}

static void timeout_clear(fs_state *st)
{
    fs_timeout_clear(st);
    Py_CLEAR(st->Timeout_Type);
    Py_CLEAR(st->TimeoutScope_Type);
    Py_CLEAR(st->TimerQueue_Type);
}

static const char *const timeout_metrics[] = {"fired", NULL};  /* timeout.c's counter 0 */

static const fs_part guard_part = {
    .name = "guard", .setup = fs_guard_setup, .traverse = guard_traverse, .clear = guard_clear,
};
static const fs_part timeout_part = {
    .name = "timeout",
    .pattern = FS_PATTERN_TIMEOUT,
    .metrics = timeout_metrics,
    .setup = fs_timeout_setup,
    .traverse = timeout_traverse,
    .clear = timeout_clear,
};

/* Every binding file, set up in this order (the guard first: policies need its types), cleared
 * in the reverse order. Policy types register as they are set up: the most used first, since
 * fs_is_policy tries them in turn. */
static const fs_part *const parts[] = {
    &guard_part,         &fs_backoff_part,   &fs_retry_part,    &fs_fallback_part,
    &timeout_part,       &fs_breaker_part,   &fs_failfast_part, &fs_bulkhead_part,
    &fs_ratelimit_part,  &fs_cache_part,     &fs_hedge_part,    &fs_featuretoggle_part,
    &fs_outcome_part,    &fs_adaptive_part,  &fs_throttle_part, &fs_deadline_part,
    &fs_latency_part,    &fs_keyed_part,
};
#define N_PARTS (sizeof(parts) / sizeof(parts[0]))

static const char *const pattern_names[] = {
#define FS_PATTERN_NAME(id, name) [FS_PATTERN_##id] = name,
    FS_PATTERN_LIST(FS_PATTERN_NAME)
#undef FS_PATTERN_NAME
};
#define N_PATTERNS (sizeof(pattern_names) / sizeof(pattern_names[0]))

/* The counters the Python stores keep on a _native.Outcome: a store's own, and a cache's shared
 * through a store (in counter order, as _native.STORE_METRICS[...]). */
static const char *const store_metrics[] = {"round_trips", "decisions", "errors", "fallbacks",
                                            "opened", NULL};
static const char *const shared_cache_metrics[] = {"hit", "miss", "set", "shared", "rejected",
                                                   "fallback", NULL};

/* A tuple of interned names from a NULL-terminated list; NULL with an exception set. */
static PyObject *names_tuple(const char *const *m)
{
    Py_ssize_t n = 0;
    while (m[n] != NULL) {
        n++;
    }
    PyObject *names = PyTuple_New(n);
    for (Py_ssize_t k = 0; names != NULL && k < n; k++) {
        PyObject *name = PyUnicode_InternFromString(m[k]);
        if (name == NULL) {
            Py_CLEAR(names);
            break;
        }
        PyTuple_SET_ITEM(names, k, name);
    }
    return names;
}

/* Sets d[key] = names_tuple(m). Returns 0, or -1 with an exception set. */
static int set_names(PyObject *d, const char *key, const char *const *m)
{
    PyObject *names = names_tuple(m);
    int rc = names == NULL ? -1 : PyDict_SetItemString(d, key, names);
    Py_XDECREF(names);
    return rc;
}

/* _native.PATTERNS (pattern name -> FS_PATTERN_* index), _native.METRICS (pattern name -> its
 * counter names, in counter order), from the pattern list and the parts, and
 * _native.STORE_METRICS. */
static int add_facts(PyObject *module)
{
    PyObject *patterns = PyDict_New();
    PyObject *metrics = PyDict_New();
    PyObject *stores = PyDict_New();
    int rc = patterns == NULL || metrics == NULL || stores == NULL ? -1 : 0;
    for (size_t i = 0; rc == 0 && i < N_PATTERNS; i++) {
        PyObject *index = PyLong_FromSize_t(i);
        rc = index == NULL ? -1 : PyDict_SetItemString(patterns, pattern_names[i], index);
        Py_XDECREF(index);
    }
    for (size_t i = 0; rc == 0 && i < N_PARTS; i++) {
        const char *const *m = parts[i]->metrics;
        if (m == NULL) {
            continue;
        }
        if (parts[i]->pattern < 0 || (size_t)parts[i]->pattern >= N_PATTERNS) {
            PyErr_Format(PyExc_SystemError, "part %s: pattern out of range", parts[i]->name);
            rc = -1;
            break;
        }
        rc = set_names(metrics, pattern_names[parts[i]->pattern], m);
    }
    if (rc == 0) {
        rc = set_names(stores, "store", store_metrics) < 0
                     || set_names(stores, "cache", shared_cache_metrics) < 0
                 ? -1
                 : 0;
    }
    if (rc == 0) {
        rc = PyModule_AddObjectRef(module, "PATTERNS", patterns);
    }
    if (rc == 0) {
        rc = PyModule_AddObjectRef(module, "METRICS", metrics);
    }
    if (rc == 0) {
        rc = PyModule_AddObjectRef(module, "STORE_METRICS", stores);
    }
    Py_XDECREF(patterns);
    Py_XDECREF(metrics);
    Py_XDECREF(stores);
    return rc;
}

/* 8 bytes of os.urandom() (getrandom, getentropy or BCryptGenRandom, whichever the platform
 * has) for the jitter RNG's seed. Returns 0, or -1 with an exception set. */
static int os_random_seed(uint64_t *seed)
{
    PyObject *os = PyImport_ImportModule("os");
    PyObject *b = os ? PyObject_CallMethod(os, "urandom", "i", (int)sizeof(*seed)) : NULL;
    Py_XDECREF(os);
    if (b == NULL) {
        return -1;
    }
    int ok = PyBytes_Check(b) && PyBytes_GET_SIZE(b) == (Py_ssize_t)sizeof(*seed);
    if (ok) {
        memcpy(seed, PyBytes_AS_STRING(b), sizeof(*seed));
    }
    Py_DECREF(b);
    if (!ok) {
        PyErr_SetString(PyExc_RuntimeError, "os.urandom returned an unexpected value");
        return -1;
    }
    return 0;
}

static int fs_exec(PyObject *module)
{
    fs_state *st = PyModule_GetState(module);
    /* asyncio must be imported before _asyncio (see asyncio_fast.c). */
    PyObject *asyncio = PyImport_ImportModule("asyncio");
    if (asyncio == NULL) {
        return -1;
    }
    st->CancelledError = PyObject_GetAttrString(asyncio, "CancelledError");
    st->get_running_loop = PyObject_GetAttrString(asyncio, "get_running_loop");
    st->current_task = PyObject_GetAttrString(asyncio, "current_task");
    Py_DECREF(asyncio);
    if (st->CancelledError == NULL || st->get_running_loop == NULL || st->current_task == NULL) {
        return -1;
    }
    PyObject *contextvars = PyImport_ImportModule("contextvars");
    if (contextvars == NULL) {
        return -1;
    }
    st->empty_context = PyObject_CallMethod(contextvars, "Context", NULL);
    Py_DECREF(contextvars);
    if (st->empty_context == NULL) {
        return -1;
    }
    if (intern(&st->str_on_error, "_on_error") < 0 || intern(&st->str_on_result, "_on_result") < 0
        || intern(&st->str_time, "time") < 0 || intern(&st->str_call_at, "call_at") < 0
        || intern(&st->str_call_soon, "call_soon") < 0 || intern(&st->str_cancel, "cancel") < 0
        || intern(&st->str_cancelling, "cancelling") < 0
        || intern(&st->str_uncancel, "uncancel") < 0 || intern(&st->str_context, "context") < 0 || intern(&st->str_throw, "throw") < 0 || intern(&st->str_close, "close") < 0
        || intern(&st->str_retry_after, "retry_after") < 0
        || intern(&st->str_call_slow, "_call_slow") < 0) {
        return -1;
    }
    uint64_t seed = 0;
    if (os_random_seed(&seed) < 0) {
        return -1;
    }
    fs_rng_seed(&st->rng, seed);
    for (size_t i = 0; i < N_PARTS; i++) {
        if (parts[i]->setup != NULL && parts[i]->setup(module, st) < 0) {
            return -1;
        }
    }
    return add_facts(module);
}

static int fs_traverse(PyObject *module, visitproc visit, void *arg)
{
    fs_state *st = PyModule_GetState(module);
    if (st == NULL) {
        return 0;
    }
    Py_VISIT(st->CancelledError);
    Py_VISIT(st->get_running_loop);
    Py_VISIT(st->current_task);
    Py_VISIT(st->current_tasks);
    Py_VISIT(st->empty_context);
    for (int i = 0; i < FS_E_COUNT; i++) {
        Py_VISIT(st->errors[i]);
    }
    Py_VISIT(st->emit);
    Py_VISIT(st->instant_var);
    Py_VISIT(st->resolve);
    Py_VISIT(st->finish);
    for (int i = 0; i < st->n_policy_types; i++) {
        Py_VISIT(st->policy_types[i]);
    }
    for (size_t i = 0; i < N_PARTS; i++) {
        if (parts[i]->traverse != NULL) {
            int r = parts[i]->traverse(st, visit, arg);
            if (r != 0) {
                return r;
            }
        }
    }
    return 0;
}

static int fs_clear(PyObject *module)
{
    fs_state *st = PyModule_GetState(module);
    if (st == NULL) {
        return 0;
    }
    for (size_t i = N_PARTS; i-- > 0;) {
        if (parts[i]->clear != NULL) {
            parts[i]->clear(st);
        }
    }
    for (int i = 0; i < st->n_policy_types; i++) {
        Py_CLEAR(st->policy_types[i]);
    }
    st->n_policy_types = 0;
    Py_CLEAR(st->instant_var);
    Py_CLEAR(st->CancelledError);
    Py_CLEAR(st->get_running_loop);
    Py_CLEAR(st->current_task);
    Py_CLEAR(st->current_tasks);
    Py_CLEAR(st->empty_context);
    for (int i = 0; i < FS_E_COUNT; i++) {
        Py_CLEAR(st->errors[i]);
    }
    Py_CLEAR(st->emit);
    Py_CLEAR(st->resolve);
    Py_CLEAR(st->finish);
    Py_CLEAR(st->str_on_error);
    Py_CLEAR(st->str_on_result);
    Py_CLEAR(st->str_time);
    Py_CLEAR(st->str_call_at);
    Py_CLEAR(st->str_call_soon);
    Py_CLEAR(st->str_cancel);
    Py_CLEAR(st->str_cancelling);
    Py_CLEAR(st->str_uncancel);
    Py_CLEAR(st->str_context);
    Py_CLEAR(st->str_throw);
    Py_CLEAR(st->str_close);
    Py_CLEAR(st->str_retry_after);
    Py_CLEAR(st->str_call_slow);
    return 0;
}

static void fs_free(void *module)
{
    fs_clear((PyObject *)module);
}

static PyModuleDef_Slot fs_slots[] = {
    {Py_mod_exec, fs_exec},
    /* All state is per module, but policies are shared by tasks without locks: one GIL. */
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_SUPPORTED},
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef fs_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "failsafe._native",
    .m_doc = "The C engine of failsafe.",
    .m_size = sizeof(fs_state),
    .m_methods = fs_module_methods,
    .m_slots = fs_slots,
    .m_traverse = fs_traverse,
    .m_clear = fs_clear,
    .m_free = fs_free,
};

PyMODINIT_FUNC PyInit__native(void)
{
    return PyModuleDef_Init(&fs_module_def);
}
