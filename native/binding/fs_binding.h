/* Shared declarations of the failsafe._native binding: module state, the policy header every
 * policy type starts with, the guarded-call awaitable (FsCall) and its policy hooks, and the
 * one place where error codes become exceptions. */
#ifndef FS_BINDING_H
#define FS_BINDING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdbool.h>
#include <stdint.h>

#if defined(__linux__)
#include <time.h>
#endif

#include "fs_backoff.h"
#include "fs_budget.h"
#include "fs_heap.h"
#include "fs_rng.h"

/* The patterns, in the order of their indexes (FS_PATTERN_*): the global "somebody listens"
 * flags. Python reads the list as _native.PATTERNS (name -> index). */
#define FS_PATTERN_LIST(X)                                                                       \
    X(RETRY, "retry") X(TIMEOUT, "timeout") X(FALLBACK, "fallback")                            \
    X(CIRCUITBREAKER, "circuitbreaker") X(FAILFAST, "failfast") X(BULKHEAD, "bulkhead")        \
    X(RATELIMIT, "ratelimit") X(CACHE, "cache") X(HEDGE, "hedge")                              \
    X(FEATURETOGGLE, "featuretoggle") X(CONCURRENCY_LIMIT, "concurrency_limit")                \
    X(THROTTLE, "throttle") X(KEYED, "keyed")
#define FS_PATTERN_ENUM(id, name) FS_PATTERN_##id,
enum {
    FS_PATTERN_LIST(FS_PATTERN_ENUM)
    FS_PATTERN_COUNT = 16   /* room for the patterns still to come */
};
#undef FS_PATTERN_ENUM

/* Errors the binding raises, mapped to exception classes in fs_error(). The failsafe-specific
 * classes are defined in Python and handed over once by failsafe._core (_native._bind). */
typedef enum fs_err {
    FS_E_TIMEOUT = 0,           /* failsafe.timeout.TimeoutError */
    FS_E_BREAKER_FAILING,       /* failsafe.circuitbreaker.BreakerFailing */
    FS_E_FAILFAST_OPEN,         /* failsafe.failfast.FailFastOpen */
    FS_E_BULKHEAD_FULL,         /* failsafe.bulkhead.BulkheadFull */
    FS_E_RATE_LIMIT_EXCEEDED,   /* failsafe.ratelimit.RateLimitExceeded */
    FS_E_HEDGE_TIMEOUT,         /* failsafe.hedge.HedgeTimeout */
    FS_E_FEATURE_DISABLED,      /* failsafe.featuretoggle.FeatureDisabled */
    FS_E_DEADLINE,              /* failsafe.deadline.DeadlineExceeded */
    FS_E_COUNT
} fs_err;

/* The keyword of _native._bind() that hands over the class of each fs_err, in enum order. */
#define FS_ERR_BIND_NAMES                                                                        \
    "timeout_error", "breaker_failing", "failfast_open", "bulkhead_full",                        \
        "rate_limit_exceeded", "hedge_timeout", "feature_disabled", "deadline_exceeded"

#define FS_MAX_COUNTERS 8
#define FS_MAX_POLICY_TYPES 16

typedef struct fs_state {
    /* types (every policy type must be listed in fs_is_policy, guard.c) */
    PyTypeObject *Guard_Type;
    PyTypeObject *Call_Type;
    PyTypeObject *Done_Type;       /* done awaitables: answers and refusals (done.c) */
    PyObject *ready_none;          /* the kept Done answering None (done.c) */
    PyTypeObject *StopIteration_Type;   /* recycled StopIteration of guarded returns (done.c) */
    PyTypeObject *Backoff_Type;
    PyTypeObject *BackoffIter_Type;
    PyTypeObject *Budget_Type;
    PyTypeObject *Timeout_Type;
    PyTypeObject *TimeoutScope_Type;
    PyTypeObject *TimerQueue_Type;
    /* Every policy type, for fs_is_policy (fs_register_policy_type). */
    PyTypeObject *policy_types[FS_MAX_POLICY_TYPES];
    int n_policy_types;
    /* Types and state of the later parts; each part traverses and clears its own fields. */
    /* circuitbreaker.c */
    PyTypeObject *Breaker_Type;
    /* failfast.c */
    PyTypeObject *FailFast_Type;
    /* bulkhead.c */
    PyTypeObject *Bulkhead_Type;
    PyTypeObject *BulkheadWaiter_Type;
    PyObject *str_acquire_slow;     /* "_acquire_slow" */
    PyObject *str_queued_call;      /* "_queued_call" */
    PyObject *running_loop_or_none; /* asyncio._get_running_loop */
    PyObject *str_threadsafe;       /* "call_soon_threadsafe" */
    /* ratelimit.c */
    PyTypeObject *Limiter_Type;
    PyTypeObject *KeyedLimiter_Type;
    PyObject *str_waiting;          /* "_waiting" */
    PyObject *str_after;            /* "_after": RateLimitExceeded's one attribute */
    PyObject *rl_args;              /* ("Rate limit exceeded",): its args */
    /* cache.c */
    PyTypeObject *Cache_Type;
    PyTypeObject *CacheFlight_Type;
    /* hedge.c */
    PyTypeObject *Hedge_Type;
    /* featuretoggle.c */
    PyTypeObject *Toggle_Type;
    /* adaptive.c */
    PyTypeObject *AdaptiveLimit_Type;
    PyTypeObject *AdaptiveThrottle_Type;
    /* keyed.c */
    PyTypeObject *KeyedEntry_Type;
    PyTypeObject *KeyedRoute_Type;
    PyObject *str_routed;           /* "_routed" */
    PyObject *str_hold;             /* "_hold" */
    PyObject *str_admit;            /* "_admit" */
    /* imports from asyncio (asyncio is imported before _asyncio; see asyncio_fast.c) */
    PyObject *CancelledError;
    PyObject *get_running_loop;
    PyObject *current_task;         /* asyncio.current_task */
    PyObject *current_tasks;        /* _asyncio._current_tasks dict when usable, else NULL */
    PyObject *empty_context;        /* contextvars.Context() used to arm loop timers */
    /* failsafe's exception classes, bound from Python */
    PyObject *errors[FS_E_COUNT];
    /* failsafe.events dispatcher: emit(component, method_name, args_tuple); NULL until bound */
    PyObject *emit;
    /* events.resolve(component, method_name) -> flat (listener, handler, ...) tuple, or None
     * when emit() must run (a listener factory is among the entries); events.finish(listener,
     * component, method_name, outcome, raised) takes over what a handler returned or raised */
    PyObject *resolve;
    PyObject *finish;
    /* bumped whenever a listener is added or removed anywhere: invalidates every event cache */
    uint64_t listeners_gen;
    /* interned strings */
    PyObject *str_on_error;
    PyObject *str_on_result;
    PyObject *str_time;
    PyObject *str_call_at;
    PyObject *str_call_soon;
    PyObject *str_cancel;
    PyObject *str_cancelling;
    PyObject *str_uncancel;
    PyObject *str_context;
    PyObject *str_throw;
    PyObject *str_close;
    PyObject *str_retry_after;
    PyObject *str_call_slow;
    /* time: a fake clock, when set, replaces CLOCK_MONOTONIC for every policy; the real clock
     * reads CLOCK_MONOTONIC + real_offset_ns (>= 0), raised when a fake clock that ran ahead
     * is removed, so time as policies see it never goes back */
    int fake_clock;
    int64_t fake_now_ns;
    int64_t real_offset_ns;
    /* failsafe.testing's instant-waits context variable (strong), once instant waits were
     * first enabled; NULL before. See fs_test_waits(). */
    PyObject *instant_var;
    /* jitter RNG, seeded from the OS at import, reseeded by failsafe.testing */
    fs_rng rng;
    /* per pattern: non-zero while a global listener is registered */
    int listening[FS_PATTERN_COUNT];
    /* recycled GuardedCall objects (GC-untracked, linked through ->inner) */
    struct FsCall *call_freelist;
    int call_free_count;
    /* recycled Done objects (GC-untracked, linked through ->value) */
    struct FsDone *done_freelist;
    int done_free_count;
    /* recycled StopIteration_Type instances (untracked, linked through ->value) */
    PyObject *stop_freelist;
    int stop_free_count;
    /* timeout: per-loop queues, see timerqueue.c */
    PyObject *queues;               /* dict loop -> TimerQueue (weak keys handled by loop close) */
    PyObject *last_loop;            /* one-slot cache: borrowed key of last_queue */
    PyObject *last_queue;           /* strong */
    /* timeout: _asyncio.Task and its cancelling()/uncancel() C functions, called directly on
     * exact C tasks (NULL when not usable) */
    PyTypeObject *CTask_Type;
    PyCFunction task_cancelling;
    PyCFunction task_uncancel;
    PyCFunction task_cancel;        /* METH_FASTCALL | METH_KEYWORDS, or NULL */
    /* deadline.c: failsafe.deadline's ContextVar (strong, NULL until bound) and the count of
     * deadline scopes open in the process (the ContextVar is read only while it is non-zero) */
    PyObject *deadline_var;
    Py_ssize_t deadline_open;
    struct fs_latency_state *latency;   /* latency.c */
    Py_ssize_t blocks_timed;        /* timed `async with` blocks open (latency.c): 0 skips exits */
} fs_state;

/* Whether failsafe.testing changes how waits go for the running context: a fake clock is
 * installed, or instant waits are on in this context (hedge delays are then waited from Python,
 * through failsafe.testing.sleep). 1 yes, 0 no; never fails (an error reads as no). */
int fs_test_waits(fs_state *st);

/* time.monotonic() in integer nanoseconds: the clock asyncio's default loop.time() reads.
 * Linux reads CLOCK_MONOTONIC directly (what CPython reads there); elsewhere (macOS
 * mach_absolute_time, Windows QueryPerformanceCounter) CPython's own clock keeps them equal. */
static inline int64_t fs_monotonic_ns(void)
{
#if defined(__linux__)
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
#elif PY_VERSION_HEX >= 0x030D0000
    PyTime_t t = 0;
    (void)PyTime_MonotonicRaw(&t);  /* fails only on a broken system clock; 0 then */
    return (int64_t)t;
#else
    return (int64_t)_PyTime_GetMonotonicClock();
#endif
}

/* Current time in monotonic nanoseconds (the fake clock when one is set). Inline: a timed call
 * reads it twice. */
static inline int64_t fs_now_ns(fs_state *st)
{
    if (st->fake_clock) {
        return st->fake_now_ns;
    }
    int64_t real = fs_monotonic_ns();
    /* Saturates instead of overflowing after a fake clock near INT64_MAX. */
    return real > INT64_MAX - st->real_offset_ns ? INT64_MAX : real + st->real_offset_ns;
}

/* The class of code (borrowed): the one bound by _bind, else imported once from where failsafe
 * defines it (errors.c's table); the builtin it stands for when that fails (interpreter
 * shutdown). Keeps any pending exception. */
PyObject *fs_error_class(fs_state *st, fs_err code);

/* Sets the exception for code, with a message (may be NULL). Always returns NULL. */
PyObject *fs_error(fs_state *st, fs_err code, const char *msg);

/* The one constructor of refusals: a new instance of code's bound class, made by the class's
 * __new__ with args (a tuple, borrowed) without running its Python __init__ (most of a
 * refusal's cost; bound classes keep __init__ to storing the message and retry_after), with
 * retry_after set to retry_after_ns in seconds when >= 0 (else the class default, None,
 * stands). New reference, or NULL with an exception. */
PyObject *fs_refusal(fs_state *st, fs_err code, PyObject *args, int64_t retry_after_ns);

/* Adds BreakerFailingBase (the C base of failsafe.circuitbreaker.BreakerFailing: an Exception
 * with a retry_after field) to module. 0, or -1 with an exception. */
int fs_breaker_failing_setup(PyObject *module);
/* Sets exc (stolen; NULL: the error already set stands) as the current exception, chained by
 * fs_chain to the exception being handled, as a `raise` would chain it. Always returns NULL. */
PyObject *fs_raise(PyObject *exc);
/* fs_raise for a refusal admit hands to the guard (FS_ADMIT_REFUSE): exc (stolen; NULL: the
 * error already set stands) is set unchained, because the guard defers it to a Done that
 * chains it where it is awaited (fs_done_refused): the handled exception is looked up once.
 * Always returns NULL. */
PyObject *fs_defer(PyObject *exc);
/* fs_defer(exc) for a refusal made by admit (deferred), else fs_raise(exc). Returns NULL. */
static inline PyObject *fs_raise_or_defer(PyObject *exc, bool deferred)
{
    return deferred ? fs_defer(exc) : fs_raise(exc);
}
/* The arguments (msg,) of a refusal whose message names its policy: *args, built from fmt and
 * the arguments after it (the name among them, as fmt places it) again only when name is not
 * *for_name (both owned by the policy), so a refusal formats nothing. Borrowed reference, or
 * NULL with an exception. A macro: the check inline, fs_named_refusal_args_build (which
 * builds them unconditionally) out of line. */
PyObject *fs_named_refusal_args_build(PyObject **args, PyObject **for_name, PyObject *name,
                                      const char *fmt, ...);
#define fs_named_refusal_args(args, for_name, name, ...)                                     \
    (*(args) != NULL && *(for_name) == (name)                                                \
         ? *(args)                                                                           \
         : fs_named_refusal_args_build((args), (for_name), (name), __VA_ARGS__))

/* The one chaining rule, for an exception failsafe raises while another is in hand (a policy's
 * own error, a predicate's, a listener's, beside the call's exception): exc gets context as
 * __context__ only when it has none, so a chain it already carries is kept, never overwritten
 * (and never made a cycle). __cause__ is set only where exc is raised *because of* the other
 * (FailFastOpen from the failure that opened it, TimeoutError from its CancelledError). */
void fs_chain(PyObject *exc, PyObject *context);

/* ------------------------------------------------------------------------------------------ */
/* Policies */

typedef struct FsPolicy FsPolicy;
typedef struct FsCall FsCall;

/* What an FsCall does when its inner awaitable has finished. */
typedef enum fs_next {
    FS_NEXT_RETURN = 0,     /* *out is the value to return (new reference) */
    FS_NEXT_RAISE = 1,      /* *out is the exception to raise (new reference) */
    FS_NEXT_CONTINUE = 2,   /* *out is a new awaitable to drive to the end, unobserved (new reference) */
    FS_NEXT_AGAIN = 3       /* *out is a new awaitable to drive and observe again (new reference):
                             * an attempt retried in C */
} fs_next;

/* The admission verdict: what admit decided for one call, one decision per call. */
typedef enum fs_verdict {
    FS_ADMIT_REFUSE = -1,   /* refused (or admit failed): the exception is set, fn is not called */
    FS_ADMIT_PASS = 0,      /* fn's own coroutine is handed back: nothing observed */
    FS_ADMIT_CALL = 1,      /* fn's coroutine is wrapped in an FsCall the policy observes */
    FS_ADMIT_SLOW = 2,      /* must wait (a slot, a token, an async predicate): the slow path
                             * makes the whole call */
    FS_ADMIT_VALUE = 3      /* answered without calling fn: the record's answer is returned */
} fs_verdict;

/* The admission record: what admit hands over, for one call, to init_call (FS_ADMIT_CALL), the
 * slow path (FS_ADMIT_SLOW) or the guard (FS_ADMIT_VALUE). It lives on the caller's stack for
 * the C call only; nothing per call is kept in module state or in the shared policy. The guard
 * sets key, stale and token before admit; admit fills what its verdict needs. A reference
 * field left non-NULL after init_call or the slow path is released by the guard. */
typedef struct fs_admission {
    PyObject *answer;           /* VALUE: the awaitable returned in place of fn's (owned) */
    PyObject *key;              /* a keyed policy's key (owned) or NULL: the cache's miss,
                                 * the keyed limiter's reserved place */
    PyObject *stale;            /* cache: the stale value a refresh carries (owned) or NULL */
    uint64_t hash;              /* cache: key's hash */
    uint64_t token;             /* CALL: what admit took for the call, moved into c->pword
                                 * before init_call (the breaker's admission token) */
    int64_t wait_ns;            /* SLOW, limiter: how long until the place it reserved */
    int64_t ticket_a, ticket_b; /* limiter: the reservation ticket; cache: the stale value's
                                 * fresh_until and expiry */
    int kind;                   /* cache: how key was derived */
} fs_admission;

typedef struct fs_policy_ops {
    /* Before fn is called, with the call's arguments (vectorcall convention, borrowed: keyed
     * policies compute their key here): decides the call once (see fs_verdict), filling a.
     * A refusal (FS_ADMIT_REFUSE) that is an Exception is raised where the call is awaited, as
     * a coroutine would raise it (so outer policies see it); anything else (KeyboardInterrupt)
     * at once. If fn then fails synchronously, the FsCall of FS_ADMIT_CALL is abandoned, so
     * abandon must give back what admit took. */
    fs_verdict (*admit)(FsPolicy *p, fs_admission *a, PyObject *const *args, size_t nargsf,
                        PyObject *kwnames);
    /* Sets up the FsCall right after it is filled in, before it is returned, taking what it
     * needs from a (set the reference fields it takes to NULL). May be NULL. -1 on error. */
    int (*init_call)(FsCall *c, fs_admission *a);
    /* FS_ADMIT_SLOW: the whole call of fn (arguments borrowed) as an awaitable, from a (take
     * the references used). May be NULL: the guard then returns policy._call_slow(fn, *args,
     * **kwargs), a Python awaitable that decides again. New reference, or NULL with an error. */
    PyObject *(*slow)(FsPolicy *p, fs_admission *a, PyObject *fn, PyObject *const *args,
                      size_t nargsf, PyObject *kwnames);
    /* FS_ADMIT_CALL but no FsCall could be made (no memory): gives back what admit took into
     * a. May be NULL. Must not raise. */
    void (*release)(FsPolicy *p, fs_admission *a);
    /* First time the FsCall is driven, inside the task that awaits it. May be NULL. -1 on error. */
    int (*start)(FsCall *c);
    /* The inner awaitable finished: with result (borrowed) and exc == NULL, or result == NULL and
     * exc the raised exception (owned by the caller; keep a reference to reuse it). Returns an
     * fs_next with *out set, or -1 with an exception set (which the call then raises). */
    int (*finish)(FsCall *c, PyObject *result, PyObject *exc, PyObject **out);
    /* The FsCall is closed or deallocated before finishing. May be NULL. Must not raise. */
    void (*abandon)(FsCall *c);
    /* GC support for fields of the FsCall payload owned by the policy. May be NULL. */
    int (*traverse)(FsCall *c, visitproc visit, void *arg);
} fs_policy_ops;

/* The whole call of fn (arguments borrowed, vectorcall convention) under p: admit, then what
 * the verdict says. What a guard's call does; also a policy's _call_slow called from Python.
 * New reference, or NULL with an exception. */
PyObject *fs_guard_call(FsPolicy *p, PyObject *fn, PyObject *const *args, size_t nargsf,
                        PyObject *kwnames);

/* fs_guard_call timed into p's own latency histogram when it has one, as p's guard would time
 * it: for a router handing the call to p (keyed). Same contract as fs_guard_call. */
PyObject *fs_guard_call_timed(FsPolicy *p, PyObject *fn, PyObject *const *args, size_t nargsf,
                              PyObject *kwnames);

/* Flags of FsPolicy.flags */
#define FS_POL_KEEP_ARGS  0x1u  /* FsCall keeps the call's arguments (slow paths re-call or pass them) */
#define FS_POL_NEEDS_T0   0x2u  /* FsCall records its start time in t0_ns */

/* Header of every policy object. Python subclasses of a policy type keep it. */
struct FsPolicy {
    PyObject_HEAD
    const fs_policy_ops *ops;
    fs_state *st;           /* borrowed: the module outlives every instance of its types */
    PyObject *name;         /* str */
    PyObject *weakreflist;
    unsigned flags;
    int pattern;            /* FS_PATTERN_* */
    int local_listeners;    /* non-zero when the component has listeners of its own */
    struct fs_event_cache *events;  /* resolved handlers per event (owned), NULL until an event */
    uint64_t counters[FS_MAX_COUNTERS];
    /* The metrics series this component reports to (a failsafe._native.Series, strong), or
     * NULL; the series lists its live members through series_prev/series_next (borrowed).
     * fs_policy_clear folds the counters into the series and unlinks, so a collected component
     * keeps its counts in the series. */
    struct FsSeries *series;
    FsPolicy *series_prev;
    FsPolicy *series_next;
    PyObject *latency;      /* failsafe._native.Latency timing its calls (strong), or NULL */
    uint32_t lat_gen;       /* detaches of latency so far: a block timed across one is not */
};

/* Every policy type embeds these in its own tables (one Py_tp_members / Py_tp_methods slot per
 * type), so Python sees the same _name, _local_listening, _counters(), _count() on all of them,
 * and calls fs_policy_init / fs_policy_traverse / fs_policy_clear from its own slots. */
#define FS_POLICY_MEMBERS                                                                        \
    {"_name", Py_T_OBJECT_EX, offsetof(FsPolicy, name), 0, "component name"},                    \
    {"_local_listening", Py_T_INT, offsetof(FsPolicy, local_listeners), 0,                        \
     "non-zero when the component has listeners of its own"},                                    \
    {"__weaklistoffset__", Py_T_PYSSIZET, offsetof(FsPolicy, weakreflist), Py_READONLY, NULL}, \
    /* None when untimed: a slot read, so block forms written in Python test it for free */     \
    {"_latency", _Py_T_OBJECT, offsetof(FsPolicy, latency), Py_READONLY,                        \
     "the Latency timing this component, or None"}
#define FS_POLICY_METHODS                                                                        \
    {"_counters", (PyCFunction)fs_policy_counters, METH_NOARGS, "the C counters, in order"},     \
    {"_count", (PyCFunction)(void (*)(void))fs_policy_count, METH_FASTCALL,                      \
     "_count(index, n=1): adds n to a counter"},                                                 \
    {"_block_open", (PyCFunction)fs_policy_block_open, METH_O,                                   \
     "_block_open(t0_ns): a block entered at t0_ns is timed until _block_exited"},                \
    {"_block_refused", (PyCFunction)(void (*)(void))fs_policy_block_refused, METH_FASTCALL,      \
     "_block_refused(t0_ns, exc): a block's entry begun at t0_ns ended with exc"},                \
    {"_block_exited", (PyCFunction)fs_policy_block_exited, METH_O,                               \
     "_block_exited(exc): this task's innermost timed block of the component ended with exc"}

PyObject *fs_policy_counters(PyObject *self, PyObject *unused);
PyObject *fs_policy_count(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
/* Block timing of the `async with` forms written in Python (latency.c), used while _latency is
 * set: _block_open(t0_ns) after an entry admitted, _block_refused(t0_ns, exc) when the entry
 * raised exc, _block_exited(exc) (exc None: success) at the block's end. */
PyObject *fs_policy_block_open(PyObject *self, PyObject *t0);
PyObject *fs_policy_block_refused(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *fs_policy_block_exited(PyObject *self, PyObject *exc);
/* Fills the header of a new policy object (called from tp_new / tp_init); name defaults to the
 * pattern name given. 0 or -1 with exception. */
int fs_policy_init(FsPolicy *p, const fs_policy_ops *ops, int pattern, unsigned flags,
                   const char *default_name);
int fs_policy_traverse(FsPolicy *p, visitproc visit, void *arg);
/* Also clears weak references and leaves the metrics series (folding the counters into it):
 * every policy type calls it first in tp_dealloc. */
void fs_policy_clear(FsPolicy *p);
/* Whether exc is one a policy's `on` covers: a class tuple (on) or a predicate (on_pred, called
 * with exc), else `otherwise`. Never for what is not an Exception (CancelledError,
 * KeyboardInterrupt, SystemExit, GeneratorExit). 1 or 0, or -1 with the predicate's error set. */
int fs_exception_matches(PyObject *exc, PyObject *on, PyObject *on_pred, int otherwise);

/* tp_dealloc of a policy type whose tp_clear (clear) releases all it holds: untracks self,
 * leaves the series (fs_policy_clear), clears, frees, and drops the heap type's reference. */
void fs_policy_dealloc(PyObject *self, inquiry clear);
/* Makes a policy type from spec, lists it (fs_register_policy_type) and adds it to module; a
 * part that keeps it in its state passes keep (a new reference is stored there), else the list
 * and the module hold it. 0, or -1 with an exception. */
int fs_policy_type_add(PyObject *module, fs_state *st, PyType_Spec *spec, PyTypeObject **keep);
/* A sync predicate's verdict on a call's arguments (vectorcall convention, borrowed): 1
 * truthy, 0 falsy, -1 with an exception: the predicate's, or TypeError when it returned an
 * awaitable (closed if a coroutine: it was meant to be declared async). */
int fs_predicate_verdict(PyObject *predicate, PyObject *const *args, size_t nargsf,
                         PyObject *kwnames);

/* True when obj is an instance of one of this module's policy types. */
bool fs_is_policy(fs_state *st, PyObject *obj);
/* Lists tp as a policy type (from a part's setup). 0, or -1 with an exception when full. */
int fs_register_policy_type(fs_state *st, PyTypeObject *tp);

/* True when an event of p would reach at least one listener. */
static inline bool fs_listening(const FsPolicy *p)
{
    return p->local_listeners || p->st->listening[p->pattern];
}

/* Reports event `method` (a listener method name) of component p with args (a tuple, stolen;
 * NULL means no extra arguments). Returns 0; listener errors are the dispatcher's to log, and any
 * other Exception is written as unraisable. Returns -1 with the exception set only for what must
 * stop the program (a BaseException that is not an Exception: KeyboardInterrupt, SystemExit).
 * An exception pending on entry is kept. */
int fs_emit(FsPolicy *p, const char *method, PyObject *args);

/* Whether event `method` (a string literal: slots are found by its address) of p would reach a
 * handler or a listener factory, so that callers build the event's arguments only then. The
 * handlers are resolved once per (component, event) and cached until a listener is added or
 * removed anywhere. Keeps any pending exception; never fails (a failed resolution answers 1,
 * and fs_emit reports it). fs_event_handled is the same without the fs_listening test. */
bool fs_event_handled(FsPolicy *p, const char *method);
static inline bool fs_event_wanted(FsPolicy *p, const char *method)
{
    return fs_listening(p) && fs_event_handled(p, method);
}

/* Frees p's resolved-handler cache (every policy type calls it from tp_clear; fs_policy_clear
 * calls it too). fs_policy_traverse visits it. */
void fs_policy_clear_events(FsPolicy *p);

/* After a failed call into Python from an event hook: 0 with the error written as unraisable
 * when it is an Exception, -1 with it still set when it must propagate. */
int fs_event_error(PyObject *where);
/* Visits the handlers held by an event cache (c may be NULL). */
int fs_event_cache_traverse(struct fs_event_cache *c, visitproc visit, void *arg);

/* ------------------------------------------------------------------------------------------ */
/* Timer entries (timeout deadlines), embedded in the objects that own them. See timerentry.c. */

typedef struct FsTimerQueue FsTimerQueue;

enum { FS_TE_IDLE = 0, FS_TE_ARMED, FS_TE_FIRED, FS_TE_DONE };

typedef struct FsTimerEntry FsTimerEntry;

/* What a due entry does instead of cancelling its task, called from the loop callback with the
 * entry out of the heap but still registered (e->task and e->queue set) and its owner alive.
 * 0, or -1 with an exception (written as unraisable). */
typedef int (*fs_timer_fire_fn)(FsTimerEntry *e);

struct FsTimerEntry {
    fs_heap_node node;      /* when = deadline in the loop's clock */
    FsTimerQueue *queue;    /* strong while registered */
    PyObject *task;         /* strong while registered */
    PyObject *owner;        /* borrowed: the object embedding the entry */
    fs_timer_fire_fn fire;  /* NULL: the deadline cancels the task (timeout semantics) */
    Py_ssize_t cancelling0; /* task.cancelling() at entry */
    uint8_t state;          /* FS_TE_* */
    uint8_t by_deadline;    /* due at the ambient deadline (fs_deadline_cap): it raises that */
};

/* Prepares e, embedded in owner, before fs_timer_enter; fire as in FsTimerEntry. */
void fs_timer_init(FsTimerEntry *e, PyObject *owner, fs_timer_fire_fn fire);
/* Registers e for the running task, due delay seconds from now (+inf: never) in the loop's
 * clock, arming the loop's timer if needed; *now gets the loop's time. Records
 * task.cancelling(). 0, or -1 with an exception (RuntimeError outside a task). */
int fs_timer_enter(fs_state *st, FsTimerEntry *e, double delay, double *now);
/* Unregisters e as asyncio.timeout's exit does, the body having ended with exc (borrowed; NULL
 * when it returned): after a cancelling fire, uncancels and, when the CancelledError was ours,
 * returns 1 with *out a new error of code's class (cause: the CancelledError) to raise instead;
 * 2 when such an error went into exc's context chain (3.13 rules); 0 when exc (or the result)
 * goes on unchanged; -1 with an exception. */
int fs_timer_exit(fs_state *st, FsTimerEntry *e, PyObject *exc, fs_err code, PyObject **out);
/* Unregisters e of a call closed before its end, uncancelling if it fired. Never raises. */
void fs_timer_abandon(fs_state *st, FsTimerEntry *e);

/* The ambient deadline (deadline.c). Call sites test st->deadline_open first (no deadline
 * scope open anywhere: nothing to read), so these run only while deadlines are in use. */
/* Seconds left before the current context's deadline (>= 0), +inf when it has none. Never
 * raises. */
double fs_deadline_left(fs_state *st);
/* delay (seconds) capped at what is left of the deadline, for a cancelling entry e (e->fire
 * NULL; others are returned delay unchanged); sets e->by_deadline when the deadline is the
 * nearer. Never raises. */
double fs_deadline_cap(fs_state *st, FsTimerEntry *e, double delay);
/* The error code a fired e raises: FS_E_DEADLINE when it was due at the deadline (the current
 * deadline then reads as passed), else code. Never raises. */
fs_err fs_deadline_code(fs_state *st, FsTimerEntry *e, fs_err code);

/* ------------------------------------------------------------------------------------------ */
/* The guarded call */

typedef struct FsGuard {
    PyObject_HEAD
    PyObject *fn;           /* the wrapped async callable */
    FsPolicy *policy;
    PyObject *dict;         /* for functools.update_wrapper and inspect.markcoroutinefunction */
    PyObject *weakreflist;
    vectorcallfunc vectorcall;
} FsGuard;

#define FS_CALL_INLINE_ARGS 4
#define FS_CALL_FREELIST 64

enum { FS_CALL_FRESH = 0, FS_CALL_RUNNING, FS_CALL_HANDOFF, FS_CALL_DONE };

/* FsCall.extra: what an untimed call of the off path never has (one byte tested, not four). */
enum {
    FS_CX_TIMED = 0x1,  /* lat is set: the call is counted into it when it ends */
    FS_CX_BARE = 0x2,   /* only times what a route without a call returned: no hooks run */
    FS_CX_BLOCK = 0x4,  /* bare, timing a block's entry: success opens the block's timing */
    FS_CX_PIN = 0x8     /* pin is set: unpinned when the call ends */
};

struct FsCall {
    PyObject_HEAD
    PyObject *inner;        /* the awaitable being driven (owned), NULL once done */
    FsPolicy *policy;       /* owned */
    PyObject *fn;           /* owned when FS_POL_KEEP_ARGS, else NULL */
    /* Kept arguments (FS_POL_KEEP_ARGS): positional then keyword values, ntotal in all; up to
     * FS_CALL_INLINE_ARGS held inline (no tuple per call), more in the tuple args. */
    PyObject *iargs[FS_CALL_INLINE_ARGS];
    PyObject *args;         /* owned tuple when ntotal > FS_CALL_INLINE_ARGS, else NULL */
    PyObject *kwnames;      /* owned or NULL */
    Py_ssize_t nargs;       /* positional count */
    Py_ssize_t ntotal;      /* positional + keyword values kept */
    int64_t t0_ns;          /* start time when FS_POL_NEEDS_T0 or timed */
    uint8_t state;          /* FS_CALL_* */
    uint8_t running;        /* inside send/throw/close: re-entry is refused */
    /* FS_CX_* flags: 0 for an untimed, unpinned call, so its path tests this byte alone */
    uint8_t extra;
    uint32_t failures;      /* retry: attempts of this call that failed so far */
    PyObject *lat;          /* the Latency timing this call (owned) while FS_CX_TIMED, else NULL */
    PyObject *weakreflist;
    /* policy payload */
    double timeout_s;       /* timeout: the delay of this call */
    FsTimerEntry entry;     /* timeout: the deadline of this call */
    PyObject *pobj;         /* owned by the policy's hooks (cleared with the call, visited) */
    PyObject *pin;          /* a keyed registry's entry pinned while the call runs (owned,
                             * FS_CX_PIN), or NULL: unpinned when the call ends (keyed.c) */
    uint64_t pword;         /* policy scratch (e.g. a key hash, a probe flag) */
};

/* The retry budget object (shared by the policies that use it). */
typedef struct FsBudgetObject {
    PyObject_HEAD
    fs_state *st;
    fs_budget b;
} FsBudgetObject;

/* The iterator that drives an awaitable: exact coroutines and generators as they are, others
 * through __await__ (new reference), or NULL with TypeError. */
PyObject *fs_awaitable_iter(PyObject *aw);

/* throw(typ[, val[, tb]]) into an awaitable that is not running (finished, or never started):
 * raises what was thrown, as a coroutine does (nargs is 1 to 3). Always returns NULL. */
PyObject *fs_raise_thrown(PyObject *const *args, Py_ssize_t nargs);

/* Done awaitables (done.c): one type, failsafe._native.Done, an awaitable that is done when it
 * is made. It answers a value (a cache hit, an `async with` entry) or raises a refusal where it
 * is awaited, as a coroutine would. One reuse rule, a coroutine's: the first await (or send,
 * throw, close) spends it, and a later one raises RuntimeError("cannot reuse already awaited
 * coroutine"). The shared st->ready_none, whose answer None many `__aenter__`s return, is made
 * kept: it is never spent. */

/* A Done answering value (stolen; NULL: None). New reference, or NULL with an exception set
 * (value released). */
PyObject *fs_done_new(fs_state *st, PyObject *value);
/* A Done raising exc (stolen) where it is awaited. New reference, or NULL with an exception set
 * (exc released; also when exc is NULL, its maker's error standing). */
PyObject *fs_done_raise(fs_state *st, PyObject *exc);
/* The Done of a call of fn (NULL: an `async with` entry) refused with the pending exception:
 * an Exception is deferred to the await; anything else (KeyboardInterrupt from a listener)
 * stays raised (NULL). */
PyObject *fs_done_refused(fs_state *st, PyObject *fn);
/* Gives a Done made without its function (res, borrowed; anything else is left alone) the
 * names of fn, for task reprs. */
void fs_done_name(fs_state *st, PyObject *res, PyObject *fn);
/* A Done answering value (borrowed), reusing *spare (a strong slot the caller owns, filled on
 * first use) while nobody else holds it: re-armed, the owner's one exception to the reuse rule.
 * New reference, or NULL with an exception set. */
PyObject *fs_done_spare(fs_state *st, PyObject **spare, PyObject *value);
/* Drops a spare Done's recycled StopIteration reference to value (done may be NULL). */
void fs_done_forget(PyObject *done, PyObject *value);
/* GC of the module-state fields done.c owns (its types, st->ready_none, its free lists), from
 * the guard's part; clear frees the recycled Done and StopIteration objects. */
int fs_done_traverse(fs_state *st, visitproc visit, void *arg);
void fs_done_clear(fs_state *st);

/* An integer argument with its C range, parsed by the "O&" unit with fs_int_arg_conv:
 *     fs_int_arg n = {"min_samples", 1, INT64_MAX, 0};
 *     PyArg_ParseTuple(args, "O&", fs_int_arg_conv, &n) ... n.value
 * An int outside [min, max] is a ValueError naming `name`, a non-int (or a bool) a TypeError:
 * never a silent wrap ("K", "I") or an OverflowError ("L", "l"). */
typedef struct fs_int_arg {
    const char *name;
    long long min;
    long long max;
    long long value;
} fs_int_arg;

/* The "O&" converter of an fs_int_arg (arg points to it). 1 on success, 0 with an exception. */
int fs_int_arg_conv(PyObject *obj, void *arg);

/* Frees the recycled GuardedCall objects (module clear). */
void fs_call_freelist_clear(fs_state *st);

/* fn(*args), the call of the guarded function that makes its coroutine: a Python function's
 * own vectorcall straight, as CALL does from bytecode (PyObject_Vectorcall would add a thread
 * state lookup and a result check the function makes needless: it sets an error whenever it
 * returns NULL); any other callable through PyObject_Vectorcall. New reference, or NULL with
 * an exception. */
static inline PyObject *fs_call_fn(PyObject *fn, PyObject *const *args, size_t nargsf,
                                   PyObject *kwnames)
{
    if (PyFunction_Check(fn)) {
        return ((PyFunctionObject *)fn)->vectorcall(fn, args, nargsf, kwnames);
    }
    return PyObject_Vectorcall(fn, args, nargsf, kwnames);
}

/* The kept arguments (FS_POL_KEEP_ARGS) as a vectorcall array of c->ntotal items (borrowed). */
static inline PyObject *const *fs_call_argv(FsCall *c)
{
    return c->args != NULL ? &PyTuple_GET_ITEM(c->args, 0) : c->iargs;
}

/* A new StopIteration carrying value (stolen) for an awaiting SEND, which reads only .value and
 * drops it: an instance of a recycled StopIteration subclass, built without __init__. NULL with
 * an exception set on failure. */
PyObject *fs_stop_iteration_new(fs_state *st, PyObject *value);

/* self.name(*head, *args, **kwargs), args in the vectorcall convention (all borrowed). New
 * reference, or NULL with an exception. */
PyObject *fs_call_method_with(PyObject *self, PyObject *name, PyObject *const *head,
                              Py_ssize_t nhead, PyObject *const *args, size_t nargsf,
                              PyObject *kwnames);

/* Builds the (args tuple, kwargs dict) pair of a call that kept its arguments, for a slow path. */
int fs_call_unpack_args(FsCall *c, PyObject **args, PyObject **kwargs);

/* One binding file's share of module exec / traverse / clear, listed in module.c's table of
 * parts. setup: 0 or -1 with an exception; traverse and clear cover the module-state fields the
 * part owns (each may be NULL). A part that implements a pattern names its counters: metrics
 * (NULL-terminated, in counter order) for pattern (FS_PATTERN_*), read by Python as
 * _native.METRICS[pattern name]; metrics is NULL for the other parts. */
typedef struct fs_part {
    const char *name;
    int pattern;
    const char *const *metrics;
    int (*setup)(PyObject *module, fs_state *st);
    int (*traverse)(fs_state *st, visitproc visit, void *arg);
    void (*clear)(fs_state *st);
} fs_part;

/* The parts, one per binding file (module.c runs them in its table's order). */
extern const fs_part fs_outcome_part, fs_retry_part, fs_fallback_part, fs_backoff_part,
    fs_breaker_part, fs_failfast_part, fs_bulkhead_part, fs_ratelimit_part, fs_cache_part,
    fs_hedge_part, fs_featuretoggle_part, fs_adaptive_part, fs_throttle_part,
    fs_deadline_part, fs_latency_part, fs_keyed_part;

/* Drops one pin of a keyed registry's entry (a KeyedEntry, borrowed): its call ended. */
void fs_keyed_unpin(PyObject *entry);

/* Latency histograms (latency.c). The outcome (FS_LAT_*) of a call that raised exc: what is not
 * an Exception (NULL, CancelledError, a close) is a cancellation, never a failure; a policy's
 * refusal is a rejection. Never raises. */
int fs_latency_outcome(fs_state *st, PyObject *exc);
/* Counts one call of outcome that ran from t0_ns to end_ns into lat (a failsafe._native.Latency,
 * borrowed). Never raises. */
void fs_latency_count(PyObject *lat, int outcome, int64_t t0_ns, int64_t end_ns);
/* `async with` blocks of a policy with a Latency attached are timed from __aenter__ to the end
 * of __aexit__, per task (latency.c). fs_block_entered takes what __aenter__ returns (aw,
 * stolen; NULL with the exception pending) and returns it, or the awaitable timing its entry:
 * an entry refused counts at once (or when its wait ends), one admitted opens the block's
 * timing. fs_block_exited ends the innermost timed block of p in the current task, by what
 * __aexit__ returned (r, borrowed; NULL with the exception pending, kept) or else the block's
 * exc (None: success). Neither raises; untimed policies pay a pointer test. */
PyObject *fs_latency_block_enter(FsPolicy *p, PyObject *aw);
void fs_latency_block_exit(FsPolicy *p, PyObject *r, PyObject *exc);
static inline PyObject *fs_block_entered(FsPolicy *p, PyObject *aw)
{
    return p->latency == NULL ? aw : fs_latency_block_enter(p, aw);
}
static inline void fs_block_exited(FsPolicy *p, PyObject *r, PyObject *exc)
{
    if (p->st->blocks_timed != 0) {
        fs_latency_block_exit(p, r, exc);
    }
}
/* Ends the timing of a block of p begun at t0_ns into lat (borrowed) when p->lat_gen was gen,
 * by what __aexit__ returned (r, borrowed; NULL with the exception pending, kept) or else the
 * block's exc (None: success): counted unless p's latency was detached since. Never raises. */
void fs_latency_block_end(FsPolicy *p, PyObject *lat, uint32_t gen, int64_t t0_ns, PyObject *r,
                          PyObject *exc);
/* Opens the timing of p's block entered at t0_ns into lat (borrowed) in the current task.
 * Never raises: a block that cannot be kept (no task, no memory) goes untimed. */
void fs_latency_block_open(FsPolicy *p, PyObject *lat, int64_t t0_ns);
/* The bare FsCall driving aw (stolen; a block's entry that waits), timed from now into lat:
 * success opens the block's timing, an error or a cancellation counts. NULL with an exception. */
PyObject *fs_call_timed_enter(FsPolicy *p, PyObject *lat, PyObject *aw);

/* Type setup of the guard and timeout files, called once from module exec through module.c's
 * table. 0 or -1 with exception. */
int fs_guard_setup(PyObject *module, fs_state *st);
/* done.c's and series.c's types (called from fs_guard_setup). */
int fs_done_setup(PyObject *module, fs_state *st);
int fs_series_setup(PyObject *module, fs_state *st);
/* A policy leaves its series, folding its counters into it (fs_policy_clear). */
void fs_series_leave(FsPolicy *p);
/* p reports to s from now on (a component belongs to one series for life: joining its own
 * does nothing, another is a ValueError). 0, or -1 with the exception. */
int fs_series_join(FsPolicy *p, struct FsSeries *s);
int fs_timeout_setup(PyObject *module, fs_state *st);
/* GC of module-state fields owned by timeout.c */
int fs_timeout_traverse(fs_state *st, visitproc visit, void *arg);
void fs_timeout_clear(fs_state *st);

/* Module state from a heap type defined by this module (or a Python subclass of one). */
fs_state *fs_state_from_type(PyTypeObject *tp);

#endif
