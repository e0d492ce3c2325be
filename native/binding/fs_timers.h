/* The private interface of the timer files: the per-loop timer queue (timerqueue.c), its
 * entries (timerentry.c), the _asyncio fast paths and loop clocks (asyncio_fast.c), and the
 * Timeout policy (timeout.c, timeoutscope.c). Other binding files use timers only through
 * fs_timer_* in fs_binding.h. */
#ifndef FS_TIMERS_H
#define FS_TIMERS_H

#include "fs_binding.h"
#include "fs_ptrmap.h"

#include <math.h>
#include <stddef.h>

/* How a queue reads its loop's time(): by calling it, or directly from the clock it is known
 * to read (checked once per loop). */
enum { TQ_CLOCK_CALL = 0, TQ_CLOCK_MONOTONIC, TQ_CLOCK_LIBUV };

/* Exited scopes a queue keeps for reuse: a batch of that many entries allocates no scope and
 * leaves the cyclic GC's allocation count alone (each allocation counts toward a collection,
 * and a collection while the batch is pending walks all of it). */
enum { TQ_SCOPE_SPARES = 1024 };

#if defined(__linux__) && defined(CLOCK_MONOTONIC_COARSE)
#define TQ_HAVE_LIBUV_CLOCK 1
#else
#define TQ_HAVE_LIBUV_CLOCK 0
#endif

struct TimeoutScope;

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
    PyObject *ready_spare;  /* a Done reused by __aenter__ while nobody else holds it */
    struct TimeoutScope *spares;    /* exited scopes nobody else held, untracked and holding
                                     * nothing, linked through outer: __aenter__ reuses them */
    Py_ssize_t nspares;             /* at most TQ_SCOPE_SPARES */
    fs_ptrmap map;          /* task (borrowed: the head scope's entry holds it) -> innermost
                             * scope of the `async with` form (strong) */
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
    uint32_t lat_gen;               /* policy->lat_gen when the block's timing began */
    int64_t lat_t0;                 /* when the block was entered, when timed */
    PyObject *lat;                  /* the Latency timing the block (strong), or NULL */
} TimeoutScope;

static inline FsTimerEntry *entry_of(fs_heap_node *n)
{
    return (FsTimerEntry *)((char *)n - offsetof(FsTimerEntry, node));
}

/* How fs_entry_exit leaves an entry (see there). */
enum { EXIT_KEEP = 0, EXIT_RAISE = 1, EXIT_INSERTED = 2 };

/* asyncio_fast.c */

/* time.monotonic(), converted exactly as CPython converts it, so deadlines equal loop.time(). */
static inline double fs_monotonic_s(void)
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

#if TQ_HAVE_LIBUV_CLOCK
/* uvloop's Loop.time(), read from libuv's clock. */
double fs_libuv_now_s(void);
#endif
/* TQ_CLOCK_* for loop, checked once per loop (see asyncio_fast.c). */
int fs_loop_clock(PyObject *loop);
/* The running loop and its current task, as new references; RuntimeError outside a task. */
int fs_running_task(fs_state *st, PyObject **ploop, PyObject **ptask);
/* task.cancelling() or task.uncancel(): a direct C call on exact C tasks. -1 with an error. */
Py_ssize_t fs_task_counter(fs_state *st, PyObject *task, PyCFunction direct, PyObject *name);
/* Binds the _asyncio fast paths usable in this interpreter into st. 0 (never fails). */
int fs_asyncio_setup(fs_state *st);

/* timerqueue.c */

/* Arms the single loop timer for when (call_soon if already due), cancelling the one it
 * replaces. 0, or -1 with an exception. */
int fs_tq_arm(FsTimerQueue *q, PyObject *loop, double when, double now);
/* Arms for the earliest deadline if the armed timer would come too late. 0 or -1. */
int fs_tq_rearm(FsTimerQueue *q, PyObject *loop, double now);
/* Inserts n into the heap, which takes a reference to its entry's owner. 0 or -1. */
int fs_tq_push(FsTimerQueue *q, fs_heap_node *n);
/* Takes e out of the heap if it is there, releasing the heap's reference to its owner. */
void fs_tq_remove(FsTimerQueue *q, FsTimerEntry *e);
/* The queue of loop, made on first use (borrowed: st holds it). NULL with an exception. */
FsTimerQueue *fs_tq_lookup(fs_state *st, PyObject *loop);
/* The TimerQueue type and the testing functions. 0 or -1 with an exception. */
int fs_timerqueue_setup(PyObject *module, fs_state *st);

/* The loop's time() as the queue reads it (see TQ_CLOCK_*). 0, or -1 with an exception. */
static inline int fs_tq_now(FsTimerQueue *q, PyObject *loop, double *now)
{
    if (q->clock == TQ_CLOCK_MONOTONIC) {
        *now = fs_monotonic_s();
        return 0;
    }
#if TQ_HAVE_LIBUV_CLOCK
    if (q->clock == TQ_CLOCK_LIBUV) {
        *now = fs_libuv_now_s();
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

/* The queue of loop (borrowed). The one-slot cache is reset when its loop dies, so the pointer
 * test cannot match a new loop at a recycled address. */
static inline FsTimerQueue *fs_tq_for_loop(fs_state *st, PyObject *loop)
{
    if (loop == st->last_loop && st->last_queue != NULL) {
        return (FsTimerQueue *)st->last_queue;
    }
    return fs_tq_lookup(st, loop);
}

/* timerentry.c */

/* Prepares e, embedded in owner, as not registered. */
static inline void fs_entry_init(FsTimerEntry *e, PyObject *owner)
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

/* Registers e for task with deadline when (+inf: none yet), arming the loop timer if needed.
 * Records task.cancelling(). 0, or -1 with an exception (e left unregistered). */
int fs_entry_register(FsTimerEntry *e, FsTimerQueue *q, PyObject *loop, PyObject *task,
                      double when, double now);
/* Takes e out of its queue without uncancelling. Never raises. */
void fs_entry_unlink(FsTimerEntry *e);
/* Leaves e as asyncio.timeout's __aexit__ does: EXIT_RAISE with *out the error to raise,
 * EXIT_INSERTED, EXIT_KEEP, or -1 with an exception. */
int fs_entry_exit(fs_state *st, FsTimerEntry *e, PyObject *exc_type, PyObject *exc, fs_err code,
                  PyObject **out);

/* timeoutscope.c */

/* The TimeoutScope type. 0 or -1 with an exception. */
int fs_timeoutscope_setup(PyObject *module, fs_state *st);

#endif
