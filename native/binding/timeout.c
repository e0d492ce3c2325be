/* timeout: deadlines of timed calls and scopes, kept in one C min-heap per event loop.
 *
 * Every loop has a TimerQueue with the deadlines of its live entries (embedded in the FsCall of a
 * decorated call, or in the TimeoutScope of an `async with`) and at most one armed loop timer, for
 * the earliest deadline. Entering arms a timer only when its deadline becomes the earliest;
 * leaving only unlinks the entry: a stale timer fires once, finds nothing due and re-arms for what
 * is left. A due entry's task is cancelled, and the exit turns the CancelledError into
 * failsafe.timeout.TimeoutError with the exact rules of asyncio.timeout (which differ between 3.12
 * and 3.13). No TimerHandle and no task is created per call. */
#include "fs_binding.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

/* 3.13 also converts CancelledError subclasses and inserts a TimeoutError into other chains. */
#if PY_VERSION_HEX >= 0x030D0000
#define TMO_RULES_313 1
#else
#define TMO_RULES_313 0
#endif

#define TMO_HEAP_MIN 16

/* ------------------------------------------------------------------------------------------ */
/* Objects */

struct TimeoutScope;

/* A slot of the task -> innermost scope map: task borrowed (the head scope's entry holds it),
 * head strong. */
typedef struct tmap_slot {
    PyObject *task;
    struct TimeoutScope *head;
} tmap_slot;

struct FsTimerQueue {
    PyObject_HEAD
    fs_state *st;
    PyObject *loop_ref;     /* weak reference to the loop; its callback drops this queue */
    PyObject *loop;         /* strong, only for a loop that cannot be weakly referenced */
    PyObject *key;          /* id(loop): the key of this queue in st->queues */
    PyObject *handle;       /* weak reference to the armed TimerHandle (a strong one would pin
                             * the loop through handle._loop), or NULL */
    PyObject *fire_cb;      /* bound _fire, made once (a cycle through this queue, for the GC) */
    PyObject *kw_context;   /* ("context",), the keyword names of every arm */
    PyObject *context;      /* an empty Context the timer runs in: one per loop, as a Context
                             * is entered by one thread at a time and loops run in threads */
    long arm_gen;           /* generation of the armed timer (mod 256, a small int): a stale
                             * handle that could not be cancelled fires as a no-op */
    PyObject *ready_spare;  /* a Ready reused by __aenter__ while nobody else holds it */
    PyObject *scope_spare;  /* an exited TimeoutScope nobody else held, reused by __aenter__ */
    tmap_slot *map;         /* task -> innermost scope of the `async with` form (open addressing,
                             * half full at most); NULL when cap is 0 */
    size_t map_cap;
    size_t map_used;
    double armed_when;      /* deadline of handle; -inf when armed with call_soon; +inf if none */
    double armed_for;       /* the deadline handle was armed for, even with call_soon: the loop
                             * runs it once it judges that deadline reached */
    double resolution;      /* loop._clock_resolution: _run_once runs handles due within it */
    Py_ssize_t live;        /* registered entries, in the heap or not (no deadline) */
    fs_heap heap;
    int clock;              /* TQ_CLOCK_*: how to read loop.time() */
    int firing;
};

typedef struct TimeoutObject {
    FsPolicy base;
    double seconds;         /* +inf when disabled */
    int enabled;            /* seconds is not None */
} TimeoutObject;

enum { SCOPE_ACTIVE = 0, SCOPE_EXPIRED, SCOPE_FINISHED };

typedef struct TimeoutScope {
    PyObject_HEAD
    FsTimerEntry entry;
    TimeoutObject *policy;          /* strong */
    struct TimeoutScope *outer;     /* strong: the task's next outer scope in the queue's map */
    uint8_t phase;                  /* SCOPE_*; while active, entry.state tells if it expires */
    uint8_t has_when;               /* when() is not None */
} TimeoutScope;

typedef struct ReadyObject {
    PyObject_HEAD
    PyObject *value;        /* NULL: None */
    PyObject *stop;         /* the StopIteration last raised, recycled once nobody holds it */
} ReadyObject;

static inline FsTimerEntry *entry_of(fs_heap_node *n)
{
    return (FsTimerEntry *)((char *)n - offsetof(FsTimerEntry, node));
}

/* ------------------------------------------------------------------------------------------ */
/* Clock, loop, task */

/* time.monotonic(), converted exactly as CPython converts it, so deadlines equal loop.time(). */
static double monotonic_s(void)
{
    int64_t ns = fs_monotonic_ns();
    volatile double d;  /* as PyTime_AsSecondsDouble: no excess precision */
    if (ns % 1000000000 == 0) {
        d = (double)(ns / 1000000000);
    }
    else {
        d = (double)ns;
        d /= 1e9;
    }
    return d;
}

/* How a queue reads its loop's time(): by calling it, or directly from the clock it is known
 * to read (checked once per loop). */
enum { TQ_CLOCK_CALL = 0, TQ_CLOCK_MONOTONIC, TQ_CLOCK_LIBUV };

#if defined(__linux__) && defined(CLOCK_MONOTONIC_COARSE)
#define TQ_HAVE_LIBUV_CLOCK 1

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
static double libuv_now_s(void)
{
    struct timespec ts;
    clock_gettime(libuv_fast_clock(), &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    return (double)ms / 1000.0;
}
#else
#define TQ_HAVE_LIBUV_CLOCK 0
#endif

static int tq_now(FsTimerQueue *q, PyObject *loop, double *now)
{
    if (q->clock == TQ_CLOCK_MONOTONIC) {
        *now = monotonic_s();
        return 0;
    }
#if TQ_HAVE_LIBUV_CLOCK
    if (q->clock == TQ_CLOCK_LIBUV) {
        *now = libuv_now_s();
        return 0;
    }
#endif
    PyObject *t = PyObject_CallMethodNoArgs(loop, q->st->str_time);
    if (t == NULL) {
        return -1;
    }
    *now = PyFloat_AsDouble(t);
    Py_DECREF(t);
    return (*now == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

/* The running loop and its current task, as new references; RuntimeError outside a task. */
static int running_task(fs_state *st, PyObject **ploop, PyObject **ptask)
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
static Py_ssize_t task_counter(fs_state *st, PyObject *task, PyCFunction direct, PyObject *name)
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

/* ------------------------------------------------------------------------------------------ */
/* TimerQueue */

static PyObject *tq_fire(PyObject *self, PyObject *unused);
static void entry_unlink(FsTimerEntry *e);
static PyObject *tq_loop_gone(PyObject *self, PyObject *ref);

static PyMethodDef tq_fire_def = {"_fire", tq_fire, METH_O, NULL};

typedef PyObject *(*fastcall_kw)(PyObject *, PyObject *const *, Py_ssize_t, PyObject *);
static PyMethodDef tq_loop_gone_def = {"_loop_gone", tq_loop_gone, METH_O, NULL};

/* The referent of a weak reference as a new reference, or NULL (no error) once it is gone. */
static PyObject *tq_deref(PyObject *ref)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *obj = NULL;
    if (PyWeakref_GetRef(ref, &obj) < 0) {
        PyErr_Clear();
        return NULL;
    }
    return obj;
#else
    PyObject *obj = PyWeakref_GET_OBJECT(ref);
    return obj == Py_None ? NULL : Py_NewRef(obj);
#endif
}

/* The queue's loop as a new reference, or NULL (no error) once it is gone. */
static PyObject *tq_loop(FsTimerQueue *q)
{
    if (q->loop != NULL) {
        return Py_NewRef(q->loop);
    }
    return q->loop_ref ? tq_deref(q->loop_ref) : NULL;
}

/* Arms the single loop timer for when: call_soon if already due (as asyncio.timeout does, to
 * keep its order against other ready callbacks), else call_at. Cancels the timer it replaces. */
static int tq_arm(FsTimerQueue *q, PyObject *loop, double when, double now)
{
    fs_state *st = q->st;
    if (st->empty_context == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "failsafe._native is finalized");
        return -1;
    }
    q->arm_gen = (q->arm_gen + 1) & 0xff;
    q->armed_when = INFINITY;
    q->armed_for = -INFINITY;
    PyObject *old = q->handle;
    if (old != NULL) {
        q->handle = NULL;
        PyObject *h = tq_deref(old);
        Py_DECREF(old);
        PyObject *r = h ? PyObject_CallMethodNoArgs(h, st->str_cancel) : Py_NewRef(Py_None);
        Py_XDECREF(h);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
    }
    if (q->fire_cb == NULL
        && (q->fire_cb = PyCMethod_New(&tq_fire_def, (PyObject *)q, NULL, NULL)) == NULL) {
        return -1;
    }
    if (q->kw_context == NULL && (q->kw_context = PyTuple_Pack(1, st->str_context)) == NULL) {
        return -1;
    }
    if (q->context == NULL && (q->context = PyContext_New()) == NULL) {
        return -1;
    }
    PyObject *cb = q->fire_cb, *kwnames = q->kw_context;
    PyObject *gen = PyLong_FromLong(q->arm_gen);
    PyObject *h = NULL;
    if (gen != NULL) {
        if (when <= now) {
            PyObject *args[] = {loop, cb, gen, q->context};
            h = PyObject_VectorcallMethod(st->str_call_soon, args, 3, kwnames);
        }
        else {
            PyObject *w = PyFloat_FromDouble(when);
            if (w != NULL) {
                PyObject *args[] = {loop, w, cb, gen, q->context};
                h = PyObject_VectorcallMethod(st->str_call_at, args, 4, kwnames);
                Py_DECREF(w);
            }
        }
    }
    Py_XDECREF(gen);
    if (h == NULL) {
        return -1;
    }
    /* Handles that cannot be weakly referenced are not kept: they run stale, as no-ops. */
    q->handle = PyWeakref_NewRef(h, NULL);
    Py_DECREF(h);
    if (q->handle == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_TypeError)) {
            return -1;
        }
        PyErr_Clear();
    }
    q->armed_when = when <= now ? -INFINITY : when;
    q->armed_for = when;
    return 0;
}

/* Arms for the earliest deadline if the armed timer would come too late. */
static int tq_rearm(FsTimerQueue *q, PyObject *loop, double now)
{
    fs_heap_node *top = fs_heap_peek(&q->heap);
    if (q->firing || top == NULL || !(top->when < q->armed_when)) {
        return 0;
    }
    return tq_arm(q, loop, top->when, now);
}

/* Inserts n. Like a loop TimerHandle holding its callback, the heap holds a reference to the
 * entry's owner (the call or scope, hence its await chain) until the deadline fires or the entry
 * leaves: a pending deadline is not lost with an otherwise unreferenced task. */
static int tq_push(FsTimerQueue *q, fs_heap_node *n)
{
    if (fs_heap_push(&q->heap, n) != 0) {
        size_t cap = q->heap.cap ? q->heap.cap * 2 : TMO_HEAP_MIN;
        fs_heap_node **slots = PyMem_Realloc(q->heap.slots, cap * sizeof(*slots));
        if (slots == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        q->heap.slots = slots;
        q->heap.cap = cap;
        if (fs_heap_push(&q->heap, n) != 0) {
            return -1;  /* cannot happen: there is room now */
        }
    }
    Py_INCREF(entry_of(n)->owner);
    return 0;
}

/* Takes e out of the heap if it is there, releasing the heap's reference to its owner. The
 * caller must hold its own reference to the owner. */
static void tq_remove(FsTimerQueue *q, FsTimerEntry *e)
{
    if (e->node.index != FS_HEAP_NONE) {
        fs_heap_remove(&q->heap, &e->node);
        Py_DECREF(e->owner);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Task -> scope map: the `async with` form finds the exiting task's scope of a shared Timeout.
 * A dict would do, at about twice the cost per entry and exit. */

static inline size_t tmap_home(PyObject *task, size_t mask)
{
    uint64_t h = (uint64_t)(uintptr_t)task * UINT64_C(0x9E3779B97F4A7C15);
    return (size_t)(h >> 32) & mask;
}

/* The slot of task, or the empty slot where it would go. */
static size_t tmap_index(const FsTimerQueue *q, PyObject *task)
{
    size_t mask = q->map_cap - 1, i = tmap_home(task, mask);
    while (q->map[i].task != NULL && q->map[i].task != task) {
        i = (i + 1) & mask;
    }
    return i;
}

static int tmap_grow(FsTimerQueue *q)
{
    size_t cap = q->map_cap ? q->map_cap * 2 : 8;
    tmap_slot *old = q->map, *map = PyMem_Calloc(cap, sizeof(*map));
    if (map == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    size_t old_cap = q->map_cap;
    q->map = map;
    q->map_cap = cap;
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].task != NULL) {
            q->map[tmap_index(q, old[i].task)] = old[i];
        }
    }
    PyMem_Free(old);
    return 0;
}

/* Empties slot i, shifting back the entries of its probe run (no tombstones). */
static void tmap_delete(FsTimerQueue *q, size_t i)
{
    size_t mask = q->map_cap - 1, j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (q->map[j].task == NULL) {
            break;
        }
        size_t k = tmap_home(q->map[j].task, mask);
        /* The entry at j moves to the hole unless its home lies cyclically in (i, j]. */
        if (i < j ? (k <= i || k > j) : (k <= i && k > j)) {
            q->map[i] = q->map[j];
            i = j;
        }
    }
    q->map[i].task = NULL;
    q->map[i].head = NULL;
    q->map_used--;
}

/* Makes s (not in the map) the innermost scope of task; the map takes a reference to s. */
static int tmap_push(FsTimerQueue *q, PyObject *task, TimeoutScope *s)
{
    if ((q->map_used + 1) * 2 > q->map_cap && tmap_grow(q) < 0) {
        return -1;
    }
    size_t i = tmap_index(q, task);
    if (q->map[i].task == NULL) {
        q->map[i].task = task;
        q->map_used++;
    }
    s->outer = q->map[i].head;      /* the map's reference to the old head passes to s */
    q->map[i].head = (TimeoutScope *)Py_NewRef(s);
    return 0;
}

/* Takes out the innermost scope of t in task's chain (the same object may be nested, and exits
 * of interleaved async generators may come out of order). The reference the chain held passes to
 * the caller. NULL when there is none (no error set). */
static TimeoutScope *tmap_pop(FsTimerQueue *q, PyObject *task, TimeoutObject *t)
{
    if (q->map_cap == 0) {
        return NULL;
    }
    size_t i = tmap_index(q, task);
    TimeoutScope *s = q->map[i].head, *inner = NULL;
    while (s != NULL && s->policy != t) {
        inner = s;
        s = s->outer;
    }
    if (s == NULL) {
        return NULL;
    }
    if (inner != NULL) {
        inner->outer = s->outer;
    }
    else if (s->outer != NULL) {
        q->map[i].head = s->outer;
    }
    else {
        tmap_delete(q, i);
    }
    s->outer = NULL;
    return s;
}

/* The single loop callback: cancels the task of every due entry, then arms for the rest.
 * task.cancel() may run arbitrary code (Task subclasses) that adds or removes entries: each
 * entry leaves the heap before the call, the top is re-read every turn, and arming waits for
 * the end of the pass.
 *
 * Due is what the loop itself judged due by running this timer (every deadline up to the one it
 * was armed for), what its clock has reached, and what _run_once would run now (within
 * loop._clock_resolution). Trusting the loop's decision matters where its clock is coarse or
 * cached (uvloop: whole milliseconds, and call_at rounds to them): a deadline not yet reached
 * by time() when the timer runs would otherwise re-arm call_soon until the clock ticks, and
 * timeout(0) would outlive the first suspension. */
static PyObject *tq_fire(PyObject *self, PyObject *gen)
{
    FsTimerQueue *q = (FsTimerQueue *)self;
    fs_state *st = q->st;
    if (PyLong_AsLong(gen) != q->arm_gen || st->str_cancel == NULL) {
        PyErr_Clear();
        Py_RETURN_NONE;     /* replaced by an earlier deadline but not cancelled, or the module
                             * state is already cleared (interpreter shutdown) */
    }
    Py_CLEAR(q->handle);
    double armed_for = q->armed_for;
    q->armed_when = INFINITY;
    q->armed_for = -INFINITY;
    PyObject *loop = tq_loop(q);
    if (loop == NULL) {
        Py_RETURN_NONE;
    }
    double now;
    if (tq_now(q, loop, &now) < 0) {
        PyErr_WriteUnraisable(self);
        Py_DECREF(loop);
        Py_RETURN_NONE;
    }
    double limit = now + q->resolution, reached = armed_for > now ? armed_for : now;
    q->firing = 1;
    fs_heap_node *top;
    while ((top = fs_heap_peek(&q->heap)) != NULL && (top->when <= reached || top->when < limit)) {
        fs_heap_pop(&q->heap);
        FsTimerEntry *e = entry_of(top);
        PyObject *owner = e->owner;     /* the heap's reference passes to this pass */
        if (Py_REFCNT(owner) == 1) {
            /* Only the heap kept the call: nobody awaits it, its task is not ours to cancel. */
            entry_unlink(e);
            Py_DECREF(owner);
            continue;
        }
        if (e->fire != NULL) {
            /* Not a cancelling deadline: the owner's own action (a hedge's next attempt). */
            if (e->fire(e) < 0) {
                PyErr_WriteUnraisable(owner);
            }
            Py_DECREF(owner);
            continue;
        }
        e->state = FS_TE_FIRED;
        PyObject *task = Py_NewRef(e->task);
        PyObject *r;
        if (st->task_cancel != NULL && Py_IS_TYPE(task, st->CTask_Type)) {
            r = ((fastcall_kw)(void (*)(void))st->task_cancel)(task, NULL, 0, NULL);
        }
        else {
            r = PyObject_CallMethodNoArgs(task, st->str_cancel);
        }
        if (r == NULL) {
            PyErr_WriteUnraisable(task);
        }
        Py_XDECREF(r);
        Py_DECREF(task);
        Py_DECREF(owner);
    }
    q->firing = 0;
    if (tq_rearm(q, loop, now) < 0) {
        PyErr_WriteUnraisable(self);
    }
    Py_DECREF(loop);
    Py_RETURN_NONE;
}

/* Weak reference callback: the loop is gone, so is its queue (entries still holding it keep it
 * alive until they leave). */
static PyObject *tq_loop_gone(PyObject *self, PyObject *Py_UNUSED(ref))
{
    FsTimerQueue *q = (FsTimerQueue *)self;
    fs_state *st = q->st;
    Py_CLEAR(q->loop_ref);
    if (st->last_queue == self) {
        st->last_loop = NULL;
        Py_CLEAR(st->last_queue);
    }
    if (st->queues != NULL && q->key != NULL) {
        PyObject *cur = PyDict_GetItemWithError(st->queues, q->key);
        if (cur == self && PyDict_DelItem(st->queues, q->key) < 0) {
            PyErr_WriteUnraisable(self);
        }
        else if (cur == NULL && PyErr_Occurred()) {
            PyErr_WriteUnraisable(self);
        }
    }
    Py_RETURN_NONE;
}

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
static int loop_clock(PyObject *loop)
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

/* Drops the queues of closed loops held strongly (those that cannot be weakly referenced). */
static int tq_prune(fs_state *st)
{
    PyObject *dead = NULL, *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(st->queues, &pos, &key, &value)) {
        FsTimerQueue *q = (FsTimerQueue *)value;
        if (q->loop == NULL) {
            continue;
        }
        PyObject *closed = PyObject_CallMethod(q->loop, "is_closed", NULL);
        int yes = closed ? PyObject_IsTrue(closed) : -1;
        Py_XDECREF(closed);
        if (yes < 0) {
            PyErr_Clear();
            continue;
        }
        if (yes && ((dead == NULL && (dead = PyList_New(0)) == NULL)
                    || PyList_Append(dead, key) < 0)) {
            Py_XDECREF(dead);
            return -1;
        }
    }
    if (dead == NULL) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(dead); i++) {
        PyObject *k = PyList_GET_ITEM(dead, i);
        PyObject *q = PyDict_GetItemWithError(st->queues, k);
        if (q == st->last_queue) {
            st->last_loop = NULL;
            Py_CLEAR(st->last_queue);
        }
        if (PyDict_DelItem(st->queues, k) < 0) {
            Py_DECREF(dead);
            return -1;
        }
    }
    Py_DECREF(dead);
    return 0;
}

static FsTimerQueue *tq_new(fs_state *st, PyObject *loop, PyObject *key)
{
    FsTimerQueue *q = PyObject_GC_New(FsTimerQueue, st->TimerQueue_Type);
    if (q == NULL) {
        return NULL;
    }
    q->st = st;
    q->loop_ref = NULL;
    q->loop = NULL;
    q->key = Py_NewRef(key);
    q->handle = NULL;
    q->fire_cb = NULL;
    q->kw_context = NULL;
    q->context = NULL;
    q->arm_gen = 0;
    q->armed_when = INFINITY;
    q->armed_for = -INFINITY;
    q->resolution = 0.0;
    q->live = 0;
    fs_heap_init(&q->heap, NULL, 0);
    q->clock = loop_clock(loop);
    q->firing = 0;
    q->ready_spare = NULL;
    q->scope_spare = NULL;
    q->map = NULL;
    q->map_cap = 0;
    q->map_used = 0;
    PyObject_GC_Track(q);
    PyObject *res = PyObject_GetAttrString(loop, "_clock_resolution");
    if (res != NULL) {
        double r = PyFloat_AsDouble(res);
        Py_DECREF(res);
        if (r >= 0.0 && isfinite(r)) {
            q->resolution = r;
        }
    }
    PyErr_Clear();
    PyObject *cb = PyCMethod_New(&tq_loop_gone_def, (PyObject *)q, NULL, NULL);
    if (cb == NULL) {
        Py_DECREF(q);
        return NULL;
    }
    q->loop_ref = PyWeakref_NewRef(loop, cb);
    Py_DECREF(cb);
    if (q->loop_ref == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_TypeError)) {
            Py_DECREF(q);
            return NULL;
        }
        PyErr_Clear();
        q->loop = Py_NewRef(loop);
    }
    return q;
}

static FsTimerQueue *tq_lookup(fs_state *st, PyObject *loop)
{
    PyObject *key = PyLong_FromVoidPtr(loop);
    if (key == NULL) {
        return NULL;
    }
    FsTimerQueue *q = (FsTimerQueue *)Py_XNewRef(PyDict_GetItemWithError(st->queues, key));
    if (q == NULL && !PyErr_Occurred()) {
        if (tq_prune(st) < 0 || (q = tq_new(st, loop, key)) == NULL
            || PyDict_SetItem(st->queues, key, (PyObject *)q) < 0) {
            Py_XDECREF(q);
            Py_DECREF(key);
            return NULL;
        }
    }
    Py_DECREF(key);
    if (q != NULL) {
        st->last_loop = loop;
        Py_XSETREF(st->last_queue, (PyObject *)q);
    }
    return q;
}

/* The queue of loop (borrowed). The one-slot cache is reset when its loop dies (tq_loop_gone),
 * so the pointer test cannot match a new loop at a recycled address. */
static inline FsTimerQueue *tq_for_loop(fs_state *st, PyObject *loop)
{
    if (loop == st->last_loop && st->last_queue != NULL) {
        return (FsTimerQueue *)st->last_queue;
    }
    return tq_lookup(st, loop);
}

static int tq_traverse(PyObject *self, visitproc visit, void *arg)
{
    FsTimerQueue *q = (FsTimerQueue *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(q->loop_ref);
    Py_VISIT(q->loop);
    Py_VISIT(q->handle);
    Py_VISIT(q->fire_cb);
    Py_VISIT(q->context);
    Py_VISIT(q->ready_spare);
    Py_VISIT(q->scope_spare);
    for (size_t i = 0; i < q->heap.len; i++) {
        Py_VISIT(entry_of(q->heap.slots[i])->owner);    /* held while registered */
    }
    for (size_t i = 0; i < q->map_cap; i++) {
        if (q->map[i].task != NULL) {
            Py_VISIT(q->map[i].head);
        }
    }
    return 0;
}

static int tq_clear(PyObject *self)
{
    FsTimerQueue *q = (FsTimerQueue *)self;
    /* Entries still registered leave the heap (dropping its references to their owners); they
     * find themselves out of it when they unlink. */
    fs_heap_node *n;
    while ((n = fs_heap_pop(&q->heap)) != NULL) {
        Py_DECREF(entry_of(n)->owner);   /* may free it: nothing of it is read after */
    }
    Py_CLEAR(q->loop_ref);
    Py_CLEAR(q->loop);
    Py_CLEAR(q->key);
    Py_CLEAR(q->handle);
    Py_CLEAR(q->fire_cb);
    Py_CLEAR(q->kw_context);
    Py_CLEAR(q->context);
    Py_CLEAR(q->ready_spare);
    Py_CLEAR(q->scope_spare);
    /* Detached first: releasing a scope may run code that looks at the map. */
    tmap_slot *map = q->map;
    size_t cap = q->map_cap;
    q->map = NULL;
    q->map_cap = 0;
    q->map_used = 0;
    for (size_t i = 0; i < cap; i++) {
        if (map[i].task != NULL) {
            Py_DECREF(map[i].head);
        }
    }
    PyMem_Free(map);
    return 0;
}

static void tq_dealloc(PyObject *self)
{
    FsTimerQueue *q = (FsTimerQueue *)self;
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    tq_clear(self);
    PyMem_Free(q->heap.slots);
    q->heap.slots = NULL;
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *tq_repr(PyObject *self)
{
    FsTimerQueue *q = (FsTimerQueue *)self;
    return PyUnicode_FromFormat("<failsafe timer queue: %zd live, %zd in heap>", q->live,
                                (Py_ssize_t)q->heap.len);
}

static PyType_Slot tq_slots[] = {
    {Py_tp_traverse, tq_traverse},
    {Py_tp_clear, tq_clear},
    {Py_tp_dealloc, tq_dealloc},
    {Py_tp_repr, tq_repr},
    {0, NULL},
};

static PyType_Spec tq_spec = {
    .name = "failsafe._native.TimerQueue",
    .basicsize = sizeof(FsTimerQueue),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = tq_slots,
};

/* ------------------------------------------------------------------------------------------ */
/* Entries */

static void entry_init(FsTimerEntry *e, PyObject *owner)
{
    fs_heap_node_init(&e->node);
    e->node.when = INFINITY;
    e->queue = NULL;
    e->task = NULL;
    e->owner = owner;
    e->fire = NULL;
    e->cancelling0 = 0;
    e->state = FS_TE_IDLE;
    e->by_deadline = 0;
}

static void entry_unlink(FsTimerEntry *e);

/* Registers e for task with deadline when (+inf: none yet), arming the loop timer if needed. */
static int entry_register(FsTimerEntry *e, FsTimerQueue *q, PyObject *loop, PyObject *task,
                          double when, double now)
{
    fs_state *st = q->st;
    /* Read at entry, not at fire: a cancel requested in between is not ours to swallow. */
    Py_ssize_t c0 = task_counter(st, task, st->task_cancelling, st->str_cancelling);
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
        && (tq_push(q, &e->node) < 0
            || (!q->firing && when < q->armed_when && tq_arm(q, loop, when, now) < 0))) {
        PyObject *exc = PyErr_GetRaisedException();
        entry_unlink(e);
        PyErr_SetRaisedException(exc);
        return -1;
    }
    return 0;
}

/* Takes e out of its queue without uncancelling. Never raises. */
static void entry_unlink(FsTimerEntry *e)
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
    PyObject *cls = st->errors[code] ? st->errors[code] : PyExc_TimeoutError;
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

enum { EXIT_KEEP = 0, EXIT_RAISE = 1, EXIT_INSERTED = 2 };

/* Leaves e as asyncio.timeout's __aexit__ does, given the exception leaving the block (exc_type
 * and exc borrowed, NULL or None when none). Returns EXIT_RAISE with *out the TimeoutError that
 * replaces exc, EXIT_INSERTED when a TimeoutError went into exc's chain (3.13), EXIT_KEEP when
 * exc goes on unchanged, or -1 with an exception set. */
static int entry_exit(fs_state *st, FsTimerEntry *e, PyObject *exc_type, PyObject *exc,
                      fs_err code, PyObject **out)
{
    *out = NULL;
    if (e->state != FS_TE_FIRED || e->task == NULL) {
        entry_unlink(e);
        return EXIT_KEEP;
    }
    code = fs_deadline_code(st, e, code);
    PyObject *task = Py_NewRef(e->task);
    Py_ssize_t c0 = e->cancelling0;
    entry_unlink(e);
    Py_ssize_t n = task_counter(st, task, st->task_uncancel, st->str_uncancel);
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

/* Counts and reports one timeout of t (after the state change; listeners cannot change the
 * outcome, their failures are logged by the dispatcher). */
static int timeout_fired(TimeoutObject *t)
{
    t->base.counters[0]++;
    if (fs_listening(&t->base)) {
        return fs_emit(&t->base, "on_timeout", NULL);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Entries of other policies (declared in fs_binding.h) */

void fs_timer_init(FsTimerEntry *e, PyObject *owner, fs_timer_fire_fn fire)
{
    entry_init(e, owner);
    e->fire = fire;
}

int fs_timer_enter(fs_state *st, FsTimerEntry *e, double delay, double *now)
{
    PyObject *loop, *task;
    delay = st->deadline_open ? fs_deadline_cap(st, e, delay) : delay;
    if (running_task(st, &loop, &task) < 0) {
        return -1;
    }
    int rc = -1;
    FsTimerQueue *q = tq_for_loop(st, loop);
    if (q != NULL && tq_now(q, loop, now) == 0) {
        rc = entry_register(e, q, loop, task, delay < INFINITY ? *now + delay : INFINITY, *now);
    }
    Py_DECREF(loop);
    Py_DECREF(task);
    return rc;
}

int fs_timer_exit(fs_state *st, FsTimerEntry *e, PyObject *exc, fs_err code, PyObject **out)
{
    return entry_exit(st, e, exc ? (PyObject *)Py_TYPE(exc) : NULL, exc, code, out);
}

void fs_timer_abandon(fs_state *st, FsTimerEntry *e)
{
    if (e->state == FS_TE_FIRED && e->task != NULL) {
        /* Closed after the deadline fired: take back our cancel request, as asyncio does. */
        PyObject *task = Py_NewRef(e->task);
        entry_unlink(e);
        if (st->str_uncancel != NULL
            && task_counter(st, task, st->task_uncancel, st->str_uncancel) < 0) {
            PyErr_WriteUnraisable(task);
        }
        Py_DECREF(task);
        return;
    }
    entry_unlink(e);
}

/* ------------------------------------------------------------------------------------------ */
/* Decorator: the FsCall hooks */

static int tmo_admit(FsPolicy *p, PyObject *const *Py_UNUSED(args), size_t Py_UNUSED(nargsf),
                     PyObject *Py_UNUSED(kwnames))
{
    TimeoutObject *t = (TimeoutObject *)p;
    return t->enabled && t->seconds < INFINITY;     /* never expires: fn's own coroutine */
}

static int tmo_init_call(FsCall *c)
{
    c->timeout_s = ((TimeoutObject *)c->policy)->seconds;
    entry_init(&c->entry, (PyObject *)c);
    return 0;
}

static int tmo_start(FsCall *c)
{
    double now;
    return fs_timer_enter(c->policy->st, &c->entry, c->timeout_s, &now);
}

static int tmo_finish(FsCall *c, PyObject *result, PyObject *exc, PyObject **out)
{
    PyObject *te;
    int r = entry_exit(c->policy->st, &c->entry, exc ? (PyObject *)Py_TYPE(exc) : NULL, exc,
                       FS_E_TIMEOUT, &te);
    if (r < 0) {
        return -1;
    }
    if (r != EXIT_KEEP && timeout_fired((TimeoutObject *)c->policy) < 0) {
        Py_XDECREF(te);
        return -1;      /* a listener's KeyboardInterrupt or SystemExit */
    }
    if (r == EXIT_RAISE) {
        *out = te;
        return FS_NEXT_RAISE;
    }
    if (exc != NULL) {
        *out = Py_NewRef(exc);
        return FS_NEXT_RAISE;
    }
    *out = Py_NewRef(result);
    return FS_NEXT_RETURN;
}

static void tmo_abandon(FsCall *c)
{
    fs_timer_abandon(c->policy->st, &c->entry);
}

static int tmo_traverse_call(FsCall *c, visitproc visit, void *arg)
{
    Py_VISIT(c->entry.task);
    Py_VISIT(c->entry.queue);
    return 0;
}

static const fs_policy_ops tmo_ops = {
    .admit = tmo_admit,
    .init_call = tmo_init_call,
    .start = tmo_start,
    .finish = tmo_finish,
    .abandon = tmo_abandon,
    .traverse = tmo_traverse_call,
};

/* ------------------------------------------------------------------------------------------ */
/* Ready: an awaitable that completes at once with its value */

PyObject *fs_ready_new(fs_state *st, PyObject *value)
{
    ReadyObject *r = PyObject_GC_New(ReadyObject, st->Ready_Type);
    if (r == NULL) {
        return NULL;
    }
    r->value = Py_XNewRef(value);
    r->stop = NULL;
    PyObject_GC_Track(r);
    return (PyObject *)r;
}

/* Ends with the value: a bare NULL for None, else a StopIteration instance (so tuples and
 * exceptions arrive intact). The value is handed out once. */
static PyObject *ready_iternext(PyObject *self)
{
    ReadyObject *r = (ReadyObject *)self;
    PyObject *v = r->value;
    if (v == NULL) {
        return NULL;
    }
    r->value = NULL;
    PyObject *stop = r->stop;
#ifndef Py_GIL_DISABLED
    /* The awaiting SEND reads .value and drops the exception: when that left it to us alone, it
     * serves again (allocating it is most of the cost of an `async with ... as`). */
    if (stop != NULL && Py_REFCNT(stop) == 1) {
        PyBaseExceptionObject *b = (PyBaseExceptionObject *)stop;
        if (b->traceback || b->context || b->cause || b->notes || b->dict) {
            Py_CLEAR(b->traceback);     /* it escaped into Python code once */
            Py_CLEAR(b->context);
            Py_CLEAR(b->cause);
            Py_CLEAR(b->notes);
            Py_CLEAR(b->dict);
        }
        b->suppress_context = 0;
        Py_XSETREF(((PyStopIterationObject *)stop)->value, v);
        PyErr_SetRaisedException(Py_NewRef(stop));
        return NULL;
    }
#endif
    fs_state *st = fs_state_from_type(Py_TYPE(self));
    stop = st != NULL ? fs_stop_iteration_new(st, v) : NULL;
    if (stop == NULL) {
        return NULL;
    }
#ifndef Py_GIL_DISABLED
    if (r->stop == NULL) {
        r->stop = Py_NewRef(stop);
    }
#endif
    PyErr_SetRaisedException(stop);
    return NULL;
}

/* Drops the recycled StopIteration's reference to value, so value can go when its user does. */
static void ready_forget(PyObject *ready, PyObject *value)
{
    PyObject *stop = ready ? ((ReadyObject *)ready)->stop : NULL;
    if (stop != NULL && Py_REFCNT(stop) == 1 && ((PyStopIterationObject *)stop)->value == value) {
        Py_CLEAR(((PyStopIterationObject *)stop)->value);
    }
}

static PySendResult ready_am_send(PyObject *self, PyObject *Py_UNUSED(arg), PyObject **presult)
{
    ReadyObject *r = (ReadyObject *)self;
    *presult = r->value ? r->value : Py_NewRef(Py_None);
    r->value = NULL;
    return PYGEN_RETURN;
}

static PyObject *ready_send(PyObject *self, PyObject *Py_UNUSED(arg))
{
    return ready_iternext(self);
}

static PyObject *ready_throw(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    ReadyObject *r = (ReadyObject *)self;
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "throw expected 1 to 3 arguments");
        return NULL;
    }
    Py_CLEAR(r->value);
    return fs_raise_thrown(args, nargs);
}

static PyObject *ready_close(PyObject *self, PyObject *Py_UNUSED(unused))
{
    Py_CLEAR(((ReadyObject *)self)->value);
    Py_RETURN_NONE;
}

static PyObject *ready_await(PyObject *self)
{
    return Py_NewRef(self);
}

static int ready_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(((ReadyObject *)self)->value);
    Py_VISIT(((ReadyObject *)self)->stop);
    return 0;
}

static int ready_clear(PyObject *self)
{
    Py_CLEAR(((ReadyObject *)self)->value);
    Py_CLEAR(((ReadyObject *)self)->stop);
    return 0;
}

static void ready_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    ready_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef ready_methods[] = {
    {"send", ready_send, METH_O, NULL},
    {"throw", (PyCFunction)(void (*)(void))ready_throw, METH_FASTCALL, NULL},
    {"close", ready_close, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot ready_slots[] = {
    {Py_am_await, ready_await},
    {Py_am_send, ready_am_send},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, ready_iternext},
    {Py_tp_methods, ready_methods},
    {Py_tp_traverse, ready_traverse},
    {Py_tp_clear, ready_clear},
    {Py_tp_dealloc, ready_dealloc},
    {0, NULL},
};

static PyType_Spec ready_spec = {
    .name = "failsafe._native.Ready",
    .basicsize = sizeof(ReadyObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = ready_slots,
};

/* ------------------------------------------------------------------------------------------ */
/* TimeoutScope: one `async with` entry of a Timeout */

static const char *scope_phase_name(TimeoutScope *s)
{
    switch (s->phase) {
    case SCOPE_EXPIRED:
        return "expired";
    case SCOPE_FINISHED:
        return "finished";
    default:
        return s->entry.state == FS_TE_FIRED ? "expiring" : "active";
    }
}

static PyObject *scope_when(PyObject *self, PyObject *Py_UNUSED(unused))
{
    TimeoutScope *s = (TimeoutScope *)self;
    if (!s->has_when) {
        Py_RETURN_NONE;
    }
    return PyFloat_FromDouble(s->entry.node.when);
}

static PyObject *scope_expired(PyObject *self, PyObject *Py_UNUSED(unused))
{
    TimeoutScope *s = (TimeoutScope *)self;
    return PyBool_FromLong(s->phase == SCOPE_EXPIRED
                           || (s->phase == SCOPE_ACTIVE && s->entry.state == FS_TE_FIRED));
}

/* asyncio.Timeout.reschedule: None disables, a past deadline expires at the next iteration. */
static PyObject *scope_reschedule(PyObject *self, PyObject *arg)
{
    TimeoutScope *s = (TimeoutScope *)self;
    if (s->phase != SCOPE_ACTIVE || s->entry.state != FS_TE_ARMED) {
        PyErr_Format(PyExc_RuntimeError, "Cannot change state of %s Timeout",
                     scope_phase_name(s));
        return NULL;
    }
    FsTimerQueue *q = s->entry.queue;
    if (arg == Py_None) {
        tq_remove(q, &s->entry);
        s->entry.node.when = INFINITY;
        s->has_when = 0;
        Py_RETURN_NONE;
    }
    double when = PyFloat_AsDouble(arg);
    if (when == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    if (isnan(when)) {
        PyErr_SetString(PyExc_ValueError, "when must not be NaN");
        return NULL;
    }
    PyObject *loop = PyObject_Vectorcall(q->st->get_running_loop, NULL, 0, NULL);
    if (loop == NULL) {
        return NULL;
    }
    double now;
    if (tq_now(q, loop, &now) < 0) {
        Py_DECREF(loop);
        return NULL;
    }
    s->has_when = 1;
    s->entry.by_deadline = 0;   /* a time of the caller's own now, not the deadline's */
    if (when == INFINITY) {
        tq_remove(q, &s->entry);
        s->entry.node.when = when;
    }
    else if (s->entry.node.index != FS_HEAP_NONE) {
        fs_heap_update(&q->heap, &s->entry.node, when);
    }
    else {
        s->entry.node.when = when;
        if (tq_push(q, &s->entry.node) < 0) {
            s->entry.node.when = INFINITY;
            s->has_when = 0;
            Py_DECREF(loop);
            return NULL;
        }
    }
    int rc = tq_rearm(q, loop, now);
    Py_DECREF(loop);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *scope_aenter(PyObject *self, PyObject *Py_UNUSED(unused))
{
    (void)self;
    PyErr_SetString(PyExc_RuntimeError, "Timeout has already been entered");
    return NULL;
}

static PyObject *scope_aexit(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    (void)args;
    (void)nargs;
    PyErr_SetString(PyExc_RuntimeError, "Timeout has already been entered");
    return NULL;
}

static PyObject *scope_repr(PyObject *self)
{
    TimeoutScope *s = (TimeoutScope *)self;
    PyObject *name = s->policy ? s->policy->base.name : Py_None;
    if (s->phase == SCOPE_ACTIVE && s->entry.state == FS_TE_ARMED) {
        if (!s->has_when) {
            return PyUnicode_FromFormat("<TimeoutScope %R [active] when=None>", name);
        }
        PyObject *w = PyFloat_FromDouble(round(s->entry.node.when * 1000.0) / 1000.0);
        if (w == NULL) {
            return NULL;
        }
        PyObject *r = PyUnicode_FromFormat("<TimeoutScope %R [active] when=%R>", name, w);
        Py_DECREF(w);
        return r;
    }
    return PyUnicode_FromFormat("<TimeoutScope %R [%s]>", name, scope_phase_name(s));
}

static int scope_traverse(PyObject *self, visitproc visit, void *arg)
{
    TimeoutScope *s = (TimeoutScope *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(s->entry.task);
    Py_VISIT(s->entry.queue);
    Py_VISIT(s->policy);
    Py_VISIT(s->outer);
    return 0;
}

static int scope_clear(PyObject *self)
{
    TimeoutScope *s = (TimeoutScope *)self;
    entry_unlink(&s->entry);
    Py_CLEAR(s->policy);
    Py_CLEAR(s->outer);
    return 0;
}

static void scope_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    scope_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef scope_methods[] = {
    {"when", scope_when, METH_NOARGS, "when() -> the deadline in the loop's clock, or None."},
    {"reschedule", scope_reschedule, METH_O,
     "reschedule(when) -> moves the deadline (loop clock); None disables it."},
    {"expired", scope_expired, METH_NOARGS, "expired() -> True once the deadline has fired."},
    {"__aenter__", scope_aenter, METH_NOARGS, NULL},
    {"__aexit__", (PyCFunction)(void (*)(void))scope_aexit, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot scope_slots[] = {
    {Py_tp_doc, "One `async with` entry of a Timeout: asyncio.Timeout's when(), reschedule() and "
                "expired()."},
    {Py_tp_methods, scope_methods},
    {Py_tp_repr, scope_repr},
    {Py_tp_traverse, scope_traverse},
    {Py_tp_clear, scope_clear},
    {Py_tp_dealloc, scope_dealloc},
    {0, NULL},
};

static PyType_Spec scope_spec = {
    .name = "failsafe._native.TimeoutScope",
    .basicsize = sizeof(TimeoutScope),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = scope_slots,
};

/* ------------------------------------------------------------------------------------------ */
/* Timeout: the policy, a decorator (through Guard) and an async context manager */

/* __aenter__: a new scope registered for the current task, innermost in the task's chain (the
 * object is shared by tasks: nothing per entry lives on it). Returns an awaitable of the scope. */
static PyObject *timeout_aenter(PyObject *self)
{
    TimeoutObject *t = (TimeoutObject *)self;
    fs_state *st = t->base.st;
    PyObject *loop, *task;
    if (running_task(st, &loop, &task) < 0) {
        return NULL;
    }
    PyObject *ready = NULL;
    TimeoutScope *s = NULL;
    double now = 0.0;
    FsTimerQueue *q = tq_for_loop(st, loop);
    if (q == NULL || (t->enabled && tq_now(q, loop, &now) < 0)) {
        goto done;
    }
    s = (TimeoutScope *)q->scope_spare;
    if (s != NULL) {
        q->scope_spare = NULL;      /* still tracked by the GC, holding nothing */
    }
    else {
        s = PyObject_GC_New(TimeoutScope, st->TimeoutScope_Type);
        if (s == NULL) {
            goto done;
        }
        PyObject_GC_Track(s);
    }
    entry_init(&s->entry, (PyObject *)s);
    double secs = st->deadline_open && t->enabled ? fs_deadline_cap(st, &s->entry, t->seconds)
                                                  : t->seconds;
    s->policy = (TimeoutObject *)Py_NewRef(t);
    s->outer = NULL;
    s->phase = SCOPE_ACTIVE;
    s->has_when = (uint8_t)t->enabled;
    if (entry_register(&s->entry, q, loop, task, t->enabled ? now + secs : INFINITY,
                       now) < 0) {
        goto done;
    }
    if (tmap_push(q, task, s) < 0) {
        entry_unlink(&s->entry);
        goto done;
    }
    /* The spare is free when only the queue holds it (awaiting consumed its value). */
    ReadyObject *r = (ReadyObject *)q->ready_spare;
    if (r != NULL && Py_REFCNT(r) == 1) {
        Py_XSETREF(r->value, Py_NewRef(s));
        ready = Py_NewRef(r);
    }
    else if ((ready = fs_ready_new(st, (PyObject *)s)) != NULL) {
        if (q->ready_spare == NULL) {
            q->ready_spare = Py_NewRef(ready);
        }
    }
    else {
        PyObject *exc = PyErr_GetRaisedException();
        Py_XDECREF(tmap_pop(q, task, t));
        entry_unlink(&s->entry);
        PyErr_SetRaisedException(exc);
    }
done:
    Py_XDECREF(s);
    Py_DECREF(loop);
    Py_DECREF(task);
    return ready;
}

/* The only active scope of t in any loop's map, taken out (its reference passes to the
 * caller), with its queue in *pq (borrowed); NULL when t has none or several. For exits that do
 * not run in the entering task: an async generator closed by the loop's finalizer task, or a
 * coroutine closed after its loop stopped. */
static TimeoutScope *tmap_pop_unique(fs_state *st, TimeoutObject *t, FsTimerQueue **pq)
{
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    FsTimerQueue *found_q = NULL;
    PyObject *found_task = NULL;
    int n = 0;
    while (st->queues != NULL && PyDict_Next(st->queues, &pos, &key, &value)) {
        FsTimerQueue *q = (FsTimerQueue *)value;
        for (size_t i = 0; i < q->map_cap; i++) {
            for (TimeoutScope *s = q->map[i].head; s != NULL; s = s->outer) {
                if (s->policy == t) {
                    n++;
                    found_q = q;
                    found_task = q->map[i].task;
                }
            }
        }
    }
    if (n != 1) {
        return NULL;
    }
    *pq = found_q;
    return tmap_pop(found_q, found_task, t);
}

static PyObject *timeout_aexit(PyObject *self, PyObject *const *args)
{
    TimeoutObject *t = (TimeoutObject *)self;
    fs_state *st = t->base.st;
    PyObject *loop, *task;
    FsTimerQueue *q = NULL;
    TimeoutScope *s = NULL;
    if (running_task(st, &loop, &task) == 0) {
        q = tq_for_loop(st, loop);
        s = q ? tmap_pop(q, task, t) : NULL;
        Py_DECREF(loop);
        Py_DECREF(task);
        if (s == NULL && PyErr_Occurred()) {
            return NULL;
        }
    }
    else if (PyErr_ExceptionMatches(PyExc_RuntimeError)) {
        PyErr_Clear();      /* no loop or no task: the fallback below decides */
    }
    else {
        return NULL;
    }
    if (s == NULL) {
        s = tmap_pop_unique(st, t, &q);
    }
    if (s == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Timeout.__aexit__ without a matching __aenter__ in this task");
        return NULL;
    }
    int fired = s->entry.state == FS_TE_FIRED;
    PyObject *te;
    int r = entry_exit(st, &s->entry, args[0], args[1], FS_E_TIMEOUT, &te);
    s->phase = fired ? SCOPE_EXPIRED : SCOPE_FINISHED;
    ready_forget(q->ready_spare, (PyObject *)s);
    if (Py_REFCNT(s) == 1 && q->scope_spare == NULL) {
        /* Nobody bound it (`as`): keep it for the next entry instead of freeing it. */
        q->scope_spare = (PyObject *)s;
        Py_CLEAR(s->policy);
    }
    else {
        Py_DECREF(s);
    }
    if (r < 0) {
        return NULL;
    }
    if (r != EXIT_KEEP && timeout_fired(t) < 0) {
        Py_XDECREF(te);
        return NULL;    /* a listener's KeyboardInterrupt or SystemExit */
    }
    if (r == EXIT_RAISE) {
        PyErr_SetRaisedException(te);
        return NULL;
    }
    return Py_NewRef(st->ready_none);
}

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
    return m->which == TM_AENTER ? timeout_aenter(self) : timeout_aexit(self, args);
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
static int tm_install(PyObject *module, PyTypeObject *timeout_type)
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

static int parse_seconds(PyObject *arg, double *seconds, int *enabled)
{
    if (arg == NULL || arg == Py_None) {
        *seconds = INFINITY;
        *enabled = 0;
        return 0;
    }
    if (PyBool_Check(arg) || !(PyFloat_Check(arg) || PyLong_Check(arg))) {
        PyErr_Format(PyExc_TypeError, "seconds must be a number or None, not %.200s",
                     Py_TYPE(arg)->tp_name);
        return -1;
    }
    double d = PyFloat_AsDouble(arg);
    if (d == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    if (isnan(d) || d < 0.0) {
        PyErr_Format(PyExc_ValueError, "seconds must be >= 0, got %R", arg);
        return -1;
    }
    *seconds = d;
    *enabled = 1;
    return 0;
}

/* Arguments are read by __init__, so Python subclasses may take their own. */
static PyObject *timeout_new(PyTypeObject *type, PyObject *Py_UNUSED(args),
                             PyObject *Py_UNUSED(kwargs))
{
    TimeoutObject *t = (TimeoutObject *)type->tp_alloc(type, 0);
    if (t == NULL) {
        return NULL;
    }
    t->seconds = INFINITY;
    t->enabled = 0;
    if (fs_policy_init(&t->base, &tmo_ops, FS_PATTERN_TIMEOUT, 0, "timeout") < 0) {
        Py_DECREF(t);
        return NULL;
    }
    return (PyObject *)t;
}

static int timeout_init(PyObject *self, PyObject *args, PyObject *kwargs)
{
    TimeoutObject *t = (TimeoutObject *)self;
    static char *kwlist[] = {"seconds", NULL};
    PyObject *arg = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:Timeout", kwlist, &arg)) {
        return -1;
    }
    return parse_seconds(arg, &t->seconds, &t->enabled);
}

static PyObject *timeout_get_seconds(PyObject *self, void *Py_UNUSED(closure))
{
    TimeoutObject *t = (TimeoutObject *)self;
    if (!t->enabled) {
        Py_RETURN_NONE;
    }
    return PyFloat_FromDouble(t->seconds);
}

static int timeout_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    return fs_policy_traverse((FsPolicy *)self, visit, arg);
}

static int timeout_clear(PyObject *self)
{
    fs_policy_clear_events((FsPolicy *)self);
    Py_CLEAR(((FsPolicy *)self)->name);
    return 0;
}

static void timeout_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    fs_policy_clear((FsPolicy *)self);
    timeout_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMemberDef timeout_members[] = {
    FS_POLICY_MEMBERS,
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef timeout_getset[] = {
    {"seconds", timeout_get_seconds, NULL, "the delay in seconds, or None when disabled", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef timeout_methods[] = {
    FS_POLICY_METHODS,
    {NULL, NULL, 0, NULL},
};

static PyType_Slot timeout_slots[] = {
    {Py_tp_doc, "Timeout(seconds): the C engine of failsafe.timeout.Timeout."},
    {Py_tp_new, timeout_new},
    {Py_tp_init, timeout_init},
    {Py_tp_members, timeout_members},
    {Py_tp_getset, timeout_getset},
    {Py_tp_methods, timeout_methods},
    {Py_tp_traverse, timeout_traverse},
    {Py_tp_clear, timeout_clear},
    {Py_tp_dealloc, timeout_dealloc},
    {0, NULL},
};

static PyType_Spec timeout_spec = {
    .name = "failsafe._native.Timeout",
    .basicsize = sizeof(TimeoutObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .slots = timeout_slots,
};

/* ------------------------------------------------------------------------------------------ */
/* Module level */

/* _timeout_pending(): live timeout entries of the running loop (for tests). */
static PyObject *mod_timeout_pending(PyObject *module, PyObject *Py_UNUSED(unused))
{
    fs_state *st = PyModule_GetState(module);
    PyObject *loop = PyObject_Vectorcall(st->get_running_loop, NULL, 0, NULL);
    if (loop == NULL) {
        return NULL;
    }
    FsTimerQueue *q = tq_for_loop(st, loop);
    Py_DECREF(loop);
    if (q == NULL) {
        return NULL;
    }
    return PyLong_FromSsize_t(q->live);
}

/* _timeout_clock(): how the running loop's queue reads its time (for tests). */
static PyObject *mod_timeout_clock(PyObject *module, PyObject *Py_UNUSED(unused))
{
    fs_state *st = PyModule_GetState(module);
    PyObject *loop = PyObject_Vectorcall(st->get_running_loop, NULL, 0, NULL);
    if (loop == NULL) {
        return NULL;
    }
    FsTimerQueue *q = tq_for_loop(st, loop);
    Py_DECREF(loop);
    if (q == NULL) {
        return NULL;
    }
    static const char *const names[] = {"call", "monotonic", "libuv"};
    return PyUnicode_FromString(names[q->clock]);
}

static PyMethodDef timeout_functions[] = {
    {"_timeout_pending", mod_timeout_pending, METH_NOARGS,
     "Live timeout entries of the running loop (testing aid)."},
    {"_timeout_clock", mod_timeout_clock, METH_NOARGS,
     "How the running loop's time is read: 'call' (loop.time()), 'monotonic' or 'libuv' "
     "(testing aid)."},
    {NULL, NULL, 0, NULL},
};

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
static int setup_asyncio(fs_state *st)
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

int fs_timeout_setup(PyObject *module, fs_state *st)
{
    if (setup_asyncio(st) < 0) {
        return -1;
    }
    st->TimerQueue_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &tq_spec, NULL);
    st->Ready_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &ready_spec, NULL);
    st->TimeoutScope_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &scope_spec, NULL);
    st->Timeout_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &timeout_spec, NULL);
    if (st->TimerQueue_Type == NULL || st->Ready_Type == NULL || st->TimeoutScope_Type == NULL
        || st->Timeout_Type == NULL || tm_install(module, st->Timeout_Type) < 0
        || fs_register_policy_type(st, st->Timeout_Type) < 0) {
        return -1;
    }
    st->queues = PyDict_New();
    st->ready_none = fs_ready_new(st, NULL);
    if (st->queues == NULL || st->ready_none == NULL) {
        return -1;
    }
    if (PyModule_AddType(module, st->Timeout_Type) < 0
        || PyModule_AddType(module, st->TimeoutScope_Type) < 0
        || PyModule_AddFunctions(module, timeout_functions) < 0) {
        return -1;
    }
    return 0;
}

int fs_timeout_traverse(fs_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->queues);
    Py_VISIT(st->last_queue);
    Py_VISIT(st->CTask_Type);
    Py_VISIT(st->ready_none);
    return 0;
}

void fs_timeout_clear(fs_state *st)
{
    st->last_loop = NULL;
    Py_CLEAR(st->last_queue);
    Py_CLEAR(st->queues);
    Py_CLEAR(st->CTask_Type);
    st->task_cancelling = NULL;
    st->task_uncancel = NULL;
    st->task_cancel = NULL;
    Py_CLEAR(st->ready_none);
}
