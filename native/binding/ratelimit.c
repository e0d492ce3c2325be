/* ratelimit: token-bucket (exact GCRA) and sliding-window-log limiters, optionally per key.
 *
 * Limiter: one bucket (or one log) shared by every call. KeyedLimiter: one bucket per key,
 * key = key_fn(*args, **kwargs), in a bounded table (fs_keytab) whose key objects this file
 * owns (keys[i] is the key of entry i).
 *
 * An admitted call costs the admit hook only: it answers FS_ADMIT_PASS and the guard hands
 * back fn's own coroutine. A refusal is FS_ADMIT_REFUSE with RateLimitExceeded set (the guard
 * raises it where the call is awaited, as any failure of the call would be: fallback and retry
 * see it). A place reserved is FS_ADMIT_SLOW with the reservation in the admission record; the
 * slow hook hands it to the Python waiter `_waiting`, which sleeps until then. */
#include "fs_binding.h"

#include <math.h>
#include <stddef.h>

#include "fs_gcra.h"
#include "fs_keytab.h"
#include "fs_swlog.h"

enum { ALG_GCRA = 0, ALG_SLIDING = 1 };
enum { C_ADMITTED = 0, C_REJECTED = 1 };
static const char *const rl_metrics[] = {"admitted", "rejected", NULL};
/* Decisions of limiter_decide */
enum { DEC_ERROR = -1, DEC_REJECT = 0, DEC_NOW = 1, DEC_WAIT = 2 };

typedef struct FsLimiter {
    FsPolicy base;
    int algo;                   /* ALG_* */
    int configured;
    fs_gcra g;                  /* GCRA parameters; g.tat_ns is the unkeyed bucket */
    fs_swlog w;                 /* ALG_SLIDING (unkeyed only) */
    int64_t *ring;              /* owned: w's times */
    int64_t max_wait_ns;        /* 0: reject at once */
    int64_t resets;             /* _reset() calls: a GCRA ticket's b, so none outlives one */
    /* KeyedLimiter */
    PyObject *key_fn;
    fs_keytab kt;
    void *kt_mem;               /* owned */
    PyObject **keys;            /* owned array of kt.max_keys; entries < kt.count are strong */
} FsLimiter;

/* ------------------------------------------------------------------------------------------ */
/* Decisions */

/* Entry of key (a key equal to it) in the table: >= 0, -1 when absent, -2 with an exception. */
static int64_t keyed_find(FsLimiter *o, PyObject *key, uint64_t hash)
{
again:;
    uint64_t version = o->kt.version;
    uint32_t pos = fs_keytab_start(&o->kt, hash);
    int64_t e;
    while ((e = fs_keytab_next(&o->kt, hash, &pos)) >= 0) {
        PyObject *k = o->keys[e];
        if (k == key) {
            return e;
        }
        Py_INCREF(k);
        int eq = PyObject_RichCompareBool(k, key, Py_EQ);
        Py_DECREF(k);
        if (eq < 0) {
            return -2;
        }
        if (o->kt.version != version) {
            goto again;     /* a key's __eq__ changed the table */
        }
        if (eq) {
            return e;
        }
    }
    return -1;
}

/* Entry of key in the table, inserting it when absent. Returns the entry, or -1 with
 * *retry_after_ns > 0 when the table is full of limited keys, or -2 with an exception. The key
 * evicted to make room, if any, is returned in *dropped (a reference the caller releases once
 * done with the table: releasing it may run arbitrary code). */
static int64_t keyed_entry(FsLimiter *o, PyObject *key, int64_t now, int64_t *retry_after_ns,
                           PyObject **dropped)
{
    *dropped = NULL;
    Py_hash_t h = PyObject_Hash(key);
    if (h == -1 && PyErr_Occurred()) {
        return -2;
    }
    uint64_t hash = (uint64_t)h;
    int64_t e = keyed_find(o, key, hash);
    if (e != -1) {
        return e;
    }
    bool evicted;
    e = fs_keytab_insert(&o->kt, hash, now, &evicted, retry_after_ns);
    if (e < 0) {
        return -1;
    }
    if (evicted) {
        *dropped = o->keys[e];
    }
    o->keys[e] = Py_NewRef(key);
    return e;
}

/* Decides a call at now, for key (borrowed; NULL when unkeyed), waiting at most max_wait_ns.
 * DEC_NOW: admitted now; DEC_WAIT: a place reserved *wait_ns from now, identified by the
 * ticket (*a, *b) (GCRA: *a the TAT after it, *b the reset count; sliding: *a the sequence, *b
 * the time replaced);
 * DEC_REJECT: *wait_ns is when to come back; DEC_ERROR: exception set. */
static int limiter_decide(FsLimiter *o, PyObject *key, int64_t now, int64_t max_wait_ns,
                          int64_t *wait_ns, int64_t *a, int64_t *b)
{
    *a = *b = 0;
    if (o->algo == ALG_SLIDING) {
        uint64_t seq;
        if (!fs_swlog_reserve(&o->w, now, max_wait_ns, wait_ns, &seq, b)) {
            return DEC_REJECT;
        }
        *a = (int64_t)seq;
        return *wait_ns > 0 ? DEC_WAIT : DEC_NOW;
    }
    int64_t *tat = &o->g.tat_ns;
    PyObject *dropped = NULL;
    if (key != NULL) {
        int64_t e = keyed_entry(o, key, now, wait_ns, &dropped);
        if (e < 0) {
            return e == -1 ? DEC_REJECT : DEC_ERROR;
        }
        tat = &o->kt.tats[e];
    }
    int rc = DEC_REJECT;
    if (fs_gcra_reserve_tat(&o->g, tat, now, max_wait_ns, wait_ns)) {
        *a = *tat;
        *b = o->resets;
        rc = *wait_ns > 0 ? DEC_WAIT : DEC_NOW;
    }
    Py_XDECREF(dropped);
    return rc;
}

/* Gives back reservation (a, b) of key if it is still the latest one; returns whether. */
static int limiter_give_back(FsLimiter *o, PyObject *key, int64_t a, int64_t b)
{
    if (o->algo == ALG_SLIDING) {
        return fs_swlog_give_back(&o->w, (uint64_t)a, b);
    }
    if (b != o->resets) {
        return 0;   /* reserved before a reset: forgotten with it (a new one may equal it) */
    }
    if (key == NULL || key == Py_None) {
        return fs_gcra_give_back_tat(&o->g, &o->g.tat_ns, a);
    }
    if (o->kt_mem == NULL) {
        return 0;
    }
    Py_hash_t h = PyObject_Hash(key);
    if (h == -1 && PyErr_Occurred()) {
        return -1;
    }
    int64_t e = keyed_find(o, key, (uint64_t)h);
    if (e == -2) {
        return -1;
    }
    /* Absent: evicted once its bucket was full again, nothing left to give back. */
    if (e >= 0 && fs_gcra_give_back_tat(&o->g, &o->kt.tats[e], a)) {
        fs_keytab_lowered(&o->kt, (uint32_t)e);
        return 1;
    }
    return 0;
}

/* Counts and reports a rejection. 0, or -1 when a listener raised what must propagate. */
static int limiter_rejected(FsLimiter *o, int64_t retry_after_ns)
{
    o->base.counters[C_REJECTED]++;
    if (fs_event_wanted(&o->base, "on_rate_limited")) {
        PyObject *args = Py_BuildValue("(d)", (double)retry_after_ns / 1e9);
        if (args == NULL) {
            return -1;
        }
        return fs_emit(&o->base, "on_rate_limited", args);
    }
    return 0;
}

/* A call refused: counted, reported, RateLimitExceeded set (fs_refusal sets its one attribute
 * `_after`, from which its retry_after properties derive; deferred: unchained, for admit, see
 * fs_defer). Always -1. */
static int limiter_reject(FsLimiter *o, int64_t retry_after_ns, bool deferred)
{
    if (limiter_rejected(o, retry_after_ns) < 0) {
        return -1;
    }
    PyObject *exc = fs_refusal(o->base.st, FS_E_RATE_LIMIT_EXCEEDED, o->base.st->rl_args,
                               retry_after_ns);
    fs_raise_or_defer(exc, deferred);
    return -1;
}

/* Admit hooks: the whole decision (see the file comment). A place reserved rides in the
 * admission record (key, wait_ns, ticket) to the slow hook, which makes the call wait for it. */
static fs_verdict limiter_admit_decided(FsLimiter *o, fs_admission *ad, PyObject *key, int dec,
                                        int64_t wait, int64_t a, int64_t b)
{
    if (dec == DEC_NOW) {
        o->base.counters[C_ADMITTED]++;
        Py_XDECREF(key);
        return FS_ADMIT_PASS;
    }
    if (dec == DEC_WAIT) {
        ad->key = key;
        ad->wait_ns = wait;
        ad->ticket_a = a;
        ad->ticket_b = b;
        return FS_ADMIT_SLOW;
    }
    Py_XDECREF(key);
    if (dec == DEC_REJECT) {
        limiter_reject(o, wait, true);
    }
    return FS_ADMIT_REFUSE;
}

static fs_verdict limiter_admit(FsPolicy *p, fs_admission *ad, PyObject *const *Py_UNUSED(args),
                                size_t Py_UNUSED(nargsf), PyObject *Py_UNUSED(kwnames))
{
    FsLimiter *o = (FsLimiter *)p;
    int64_t now = fs_now_ns(p->st), wait, a, b;
    if (o->algo == ALG_GCRA) {
        /* The common case inline: a token now. */
        int64_t tat = o->g.tat_ns > now ? o->g.tat_ns : now;
        if (tat - o->g.tolerance_ns <= now) {
            o->g.tat_ns = tat + o->g.interval_ns;
            p->counters[C_ADMITTED]++;
            return FS_ADMIT_PASS;
        }
    }
    int dec = limiter_decide(o, NULL, now, o->max_wait_ns, &wait, &a, &b);
    return limiter_admit_decided(o, ad, NULL, dec, wait, a, b);
}

static fs_verdict keyed_admit(FsPolicy *p, fs_admission *ad, PyObject *const *args,
                              size_t nargsf, PyObject *kwnames)
{
    FsLimiter *o = (FsLimiter *)p;
    if (o->key_fn == NULL || o->kt_mem == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "keyed limiter used before it was configured");
        return FS_ADMIT_REFUSE;
    }
    PyObject *key = PyObject_Vectorcall(o->key_fn, args, nargsf, kwnames);
    if (key == NULL) {
        return FS_ADMIT_REFUSE;
    }
    int64_t now = fs_now_ns(p->st), wait, a, b;
    int dec = limiter_decide(o, key, now, o->max_wait_ns, &wait, &a, &b);
    return limiter_admit_decided(o, ad, key, dec, wait, a, b);
}

/* The call waits for the place admit reserved: self._waiting(due_ns, a, b, key, fn, *args,
 * **kwargs). Takes ad->key; gives the place back when the waiter cannot be made. */
static PyObject *limiter_slow(FsPolicy *p, fs_admission *ad, PyObject *fn, PyObject *const *args,
                              size_t nargsf, PyObject *kwnames)
{
    FsLimiter *o = (FsLimiter *)p;
    PyObject *key = ad->key;    /* owned from here */
    ad->key = NULL;
    PyObject *res = NULL;
    PyObject *due = PyLong_FromLongLong(fs_now_ns(p->st) + ad->wait_ns);
    PyObject *pa = PyLong_FromLongLong(ad->ticket_a);
    PyObject *pb = PyLong_FromLongLong(ad->ticket_b);
    if (due != NULL && pa != NULL && pb != NULL) {
        PyObject *head[5] = {due, pa, pb, key != NULL ? key : Py_None, fn};
        res = fs_call_method_with((PyObject *)o, p->st->str_waiting, head, 5, args, nargsf,
                                  kwnames);
    }
    if (res == NULL) {
        /* The waiter never started: its place is given back. */
        PyObject *err = PyErr_GetRaisedException();
        limiter_give_back(o, key, ad->ticket_a, ad->ticket_b);
        PyErr_SetRaisedException(err);
    }
    Py_XDECREF(due);
    Py_XDECREF(pa);
    Py_XDECREF(pb);
    Py_XDECREF(key);
    return res;
}

static const fs_policy_ops limiter_ops = {.admit = limiter_admit, .slow = limiter_slow};
static const fs_policy_ops keyed_ops = {.admit = keyed_admit, .slow = limiter_slow};

/* ------------------------------------------------------------------------------------------ */
/* Limiter methods */

/* _call_slow(fn, *args, **kwargs): the whole call of fn, decided now, as a decorated call. */
static PyObject *limiter_call_slow(PyObject *self, PyObject *const *args, size_t nargsf,
                                   PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "_call_slow(fn, *args, **kwargs)");
        return NULL;
    }
    return fs_guard_call((FsPolicy *)self, args[0], args + 1, (size_t)(nargs - 1), kwnames);
}

static int parse_key(FsLimiter *o, PyObject *key, PyObject **out)
{
    *out = NULL;
    if (o->key_fn != NULL) {
        if (key == Py_None) {
            PyErr_SetString(PyExc_TypeError, "a keyed limiter needs key=");
            return -1;
        }
        if (o->kt_mem == NULL) {
            PyErr_SetString(PyExc_RuntimeError, "keyed limiter used before it was configured");
            return -1;
        }
        *out = key;
    }
    else if (key != Py_None) {
        PyErr_SetString(PyExc_TypeError, "key= is only for a keyed limiter");
        return -1;
    }
    return 0;
}

/* _acquire(key=None, max_wait_ns=-1): None when admitted now; (due_ns, a, b) when a place
 * was reserved (the caller sleeps until due_ns and gives the ticket back if it stops waiting);
 * raises RateLimitExceeded (counted and reported) otherwise. max_wait_ns < 0: the policy's. */
static PyObject *limiter_acquire(PyObject *self, PyObject *args, PyObject *kwargs)
{
    FsLimiter *o = (FsLimiter *)self;
    PyObject *key_arg = Py_None, *key;
    long long max_wait = -1;
    static char *kwlist[] = {"key", "max_wait_ns", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|OL:_acquire", kwlist, &key_arg, &max_wait)
        || parse_key(o, key_arg, &key) < 0) {
        return NULL;
    }
    int64_t now = fs_now_ns(o->base.st), wait, a, b;
    int dec = limiter_decide(o, key, now, max_wait < 0 ? o->max_wait_ns : max_wait, &wait, &a,
                             &b);
    switch (dec) {
    case DEC_NOW:
        o->base.counters[C_ADMITTED]++;
        Py_RETURN_NONE;
    case DEC_WAIT:
        return Py_BuildValue("(LLL)", (long long)(now + wait), (long long)a, (long long)b);
    case DEC_REJECT:
        limiter_reject(o, wait, false);
        return NULL;
    default:
        return NULL;
    }
}

/* `async with limiter:` (unkeyed): __aenter__ answers a ready awaitable when admitted (no
 * coroutine), a Done raising RateLimitExceeded when refused, and the Python waiter
 * self._sleep_until(ticket, None) when a place was reserved. */
static PyObject *limiter_aenter_impl(PyObject *self)
{
    FsLimiter *o = (FsLimiter *)self;
    fs_state *st = o->base.st;
    if (o->key_fn != NULL) {
        PyErr_SetString(PyExc_TypeError,
                        "a keyed limiter needs a key: use `await limiter.acquire(key)`");
        return NULL;
    }
    int64_t now = fs_now_ns(st), wait, a, b;
    int dec = limiter_decide(o, NULL, now, o->max_wait_ns, &wait, &a, &b);
    if (dec == DEC_NOW && st->ready_none != NULL) {
        o->base.counters[C_ADMITTED]++;
        return Py_NewRef(st->ready_none);
    }
    if (dec == DEC_REJECT) {
        limiter_reject(o, wait, true);
        return fs_done_refused(st, NULL);
    }
    if (dec == DEC_ERROR) {
        return NULL;
    }
    if (dec == DEC_NOW) {
        /* No shared ready awaitable (module being torn down): a waiter with nothing to wait. */
        o->base.counters[C_ADMITTED]--;
        wait = 0;
    }
    PyObject *ticket = Py_BuildValue("(LLL)", (long long)(now + wait), (long long)a,
                                     (long long)b);
    if (ticket == NULL) {
        limiter_give_back(o, NULL, a, b);
        return NULL;
    }
    PyObject *res = PyObject_CallMethod(self, "_sleep_until", "OO", ticket, Py_None);
    Py_DECREF(ticket);
    if (res == NULL) {
        PyObject *err = PyErr_GetRaisedException();
        limiter_give_back(o, NULL, a, b);
        PyErr_SetRaisedException(err);
    }
    return res;
}

static PyObject *limiter_aenter(PyObject *self, PyObject *Py_UNUSED(unused))
{
    return fs_block_entered(&((FsLimiter *)self)->base, limiter_aenter_impl(self));
}

static PyObject *limiter_aexit(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    fs_state *st = ((FsLimiter *)self)->base.st;
    if (st->ready_none == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "failsafe is shutting down");
        return NULL;
    }
    fs_block_exited(&((FsLimiter *)self)->base, st->ready_none, nargs == 3 ? args[1] : Py_None);
    return Py_NewRef(st->ready_none);
}

/* try_acquire(key=None): takes a token now if there is one; never waits, never raises for
 * a refusal (counted and reported all the same). */
static PyObject *limiter_try_acquire(PyObject *self, PyObject *args, PyObject *kwargs)
{
    FsLimiter *o = (FsLimiter *)self;
    PyObject *key_arg = Py_None, *key;
    static char *kwlist[] = {"key", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:try_acquire", kwlist, &key_arg)
        || parse_key(o, key_arg, &key) < 0) {
        return NULL;
    }
    int64_t now = fs_now_ns(o->base.st), wait, a, b;
    int dec = limiter_decide(o, key, now, 0, &wait, &a, &b);
    if (dec == DEC_ERROR) {
        return NULL;
    }
    if (dec == DEC_NOW) {
        o->base.counters[C_ADMITTED]++;
        Py_RETURN_TRUE;
    }
    if (limiter_rejected(o, wait) < 0) {
        return NULL;
    }
    Py_RETURN_FALSE;
}

/* _give_back(a, b, key=None): returns whether the reservation was given back. */
static PyObject *limiter_give_back_m(PyObject *self, PyObject *args, PyObject *kwargs)
{
    long long a, b;
    PyObject *key = Py_None;
    static char *kwlist[] = {"a", "b", "key", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "LL|O:_give_back", kwlist, &a, &b, &key)) {
        return NULL;
    }
    int rc = limiter_give_back((FsLimiter *)self, key, a, b);
    if (rc < 0) {
        return NULL;
    }
    return PyBool_FromLong(rc);
}

/* _retry_after(key=None): seconds until a call would be admitted (0.0: now); takes nothing. */
static PyObject *limiter_retry_after(PyObject *self, PyObject *args, PyObject *kwargs)
{
    FsLimiter *o = (FsLimiter *)self;
    PyObject *key_arg = Py_None, *key;
    static char *kwlist[] = {"key", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:_retry_after", kwlist, &key_arg)
        || parse_key(o, key_arg, &key) < 0) {
        return NULL;
    }
    int64_t now = fs_now_ns(o->base.st), wait = 0;
    if (o->algo == ALG_SLIDING) {
        int64_t at = o->w.ring[o->w.head] + o->w.window_ns;
        wait = at > now ? at - now : 0;
    }
    else {
        int64_t tat = o->g.tat_ns;
        if (key != NULL) {
            Py_hash_t h = PyObject_Hash(key);
            if (h == -1 && PyErr_Occurred()) {
                return NULL;
            }
            int64_t e = keyed_find(o, key, (uint64_t)h);
            if (e == -2) {
                return NULL;
            }
            tat = e >= 0 ? o->kt.tats[e] : FS_GCRA_FULL;
        }
        int64_t t = tat > now ? tat : now;
        int64_t allow_at = t - o->g.tolerance_ns;
        wait = allow_at > now ? allow_at - now : 0;
    }
    return PyFloat_FromDouble((double)wait / 1e9);
}

/* _pause(until_ns, key=None): admits nothing (of key, when keyed) before until_ns. True, or
 * False when a keyed table full of limited keys has no place for key (a new key is refused
 * then anyway). A paused key is limited, so never forgotten before its pause ends. */
static PyObject *limiter_pause(PyObject *self, PyObject *args, PyObject *kwargs)
{
    FsLimiter *o = (FsLimiter *)self;
    PyObject *key_arg = Py_None, *key;
    long long until;
    static char *kwlist[] = {"until_ns", "key", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "L|O:_pause", kwlist, &until, &key_arg)
        || parse_key(o, key_arg, &key) < 0) {
        return NULL;
    }
    if (o->algo == ALG_SLIDING) {
        fs_swlog_pause(&o->w, (int64_t)until);
        Py_RETURN_TRUE;
    }
    if (key == NULL) {
        fs_gcra_pause_tat(&o->g, &o->g.tat_ns, (int64_t)until);
        Py_RETURN_TRUE;
    }
    int64_t wait;
    PyObject *dropped;
    int64_t e = keyed_entry(o, key, fs_now_ns(o->base.st), &wait, &dropped);
    if (e == -2) {
        return NULL;
    }
    if (e >= 0) {
        fs_gcra_pause_tat(&o->g, &o->kt.tats[e], (int64_t)until);
    }
    Py_XDECREF(dropped);
    return PyBool_FromLong(e >= 0);
}

/* _tokens(): calls admissible now without waiting (float for a bucket: its credit in tokens).
 * Unkeyed only. */
static PyObject *limiter_tokens(PyObject *self, PyObject *Py_UNUSED(unused))
{
    FsLimiter *o = (FsLimiter *)self;
    int64_t now = fs_now_ns(o->base.st);
    if (o->algo == ALG_SLIDING) {
        return PyFloat_FromDouble((double)fs_swlog_available(&o->w, now));
    }
    int64_t credit = fs_gcra_credit_ns(&o->g, o->g.tat_ns, now);
    return PyFloat_FromDouble((double)credit / (double)o->g.interval_ns);
}

/* _holds_state(): whether the limiter remembers anything that still limits (a bucket not full
 * again, a window not empty, a key still limited): forgetting it now would admit too much. */
static PyObject *limiter_holds_state(PyObject *self, PyObject *Py_UNUSED(unused))
{
    FsLimiter *o = (FsLimiter *)self;
    int64_t now = fs_now_ns(o->base.st);
    if (o->key_fn != NULL) {
        return PyBool_FromLong(o->kt_mem != NULL && fs_keytab_limited(&o->kt, now) > 0);
    }
    if (o->algo == ALG_SLIDING) {
        return PyBool_FromLong(!fs_swlog_idle(&o->w, now));
    }
    return PyBool_FromLong(!fs_gcra_idle(o->g.tat_ns, now));
}

/* _key_stats(): (keys held, keys still limited, max_keys, bytes of C memory per key). */
static PyObject *limiter_key_stats(PyObject *self, PyObject *Py_UNUSED(unused))
{
    FsLimiter *o = (FsLimiter *)self;
    if (o->kt_mem == NULL) {
        return Py_BuildValue("(IIIn)", 0u, 0u, 0u, (Py_ssize_t)0);
    }
    int64_t now = fs_now_ns(o->base.st);
    size_t bytes = fs_keytab_mem_size(o->kt.max_keys) + o->kt.max_keys * sizeof(PyObject *);
    return Py_BuildValue("(IIIn)", o->kt.count, fs_keytab_limited(&o->kt, now), o->kt.max_keys,
                         (Py_ssize_t)(bytes / o->kt.max_keys));
}

/* Empties the table, then releases its keys. A key's release may run code that inserts keys
 * again (a __del__ using the limiter): the old keys leave the array first, so new entries are
 * never released with them. */
static void keys_release(FsLimiter *o)
{
    if (o->keys == NULL || o->kt_mem == NULL) {
        return;
    }
    uint32_t n = o->kt.count;
    PyObject **old = o->keys;
    PyObject **fresh = PyMem_Calloc(o->kt.max_keys, sizeof(PyObject *));
    fs_keytab_clear(&o->kt);
    if (fresh == NULL) {
        /* No memory for a new array: released in place, the best left to do. */
        for (uint32_t i = 0; i < n; i++) {
            Py_CLEAR(old[i]);
        }
        return;
    }
    o->keys = fresh;
    for (uint32_t i = 0; i < n; i++) {
        Py_XDECREF(old[i]);
    }
    PyMem_Free(old);
}

/* _reset(): forgets every admission (a full bucket, an empty window, no keys). */
static PyObject *limiter_reset(PyObject *self, PyObject *Py_UNUSED(unused))
{
    FsLimiter *o = (FsLimiter *)self;
    o->g.tat_ns = FS_GCRA_FULL;
    o->resets++;
    if (o->algo == ALG_SLIDING) {
        /* Sequences go on past the reset, so no ticket of before it matches a later one. */
        uint64_t seq = o->w.seq;
        fs_swlog_init(&o->w, o->ring, o->w.limit, o->w.window_ns);
        o->w.seq = seq + 1;
    }
    keys_release(o);
    Py_RETURN_NONE;
}

/* _configure(*, interval_ns, burst, sliding=False, window_ns=0, max_wait_ns=0, key=None,
 * max_keys=0): once, from the Python constructor, with a LimitOptions' values (each parameter
 * checked there, naming it). Sliding: burst admissions per window_ns. */
static PyObject *limiter_configure(PyObject *self, PyObject *args, PyObject *kwargs)
{
    FsLimiter *o = (FsLimiter *)self;
    long long interval_ns = 1, burst = 1, window_ns = 0, max_wait_ns = 0, max_keys = 0;
    int sliding = 0;
    PyObject *key_fn = Py_None;
    static char *kwlist[] = {"interval_ns", "burst", "sliding", "window_ns", "max_wait_ns",
                             "key", "max_keys", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$LLpLLOL:_configure", kwlist, &interval_ns,
                                     &burst, &sliding, &window_ns, &max_wait_ns, &key_fn,
                                     &max_keys)) {
        return NULL;
    }
    if (o->configured) {
        PyErr_SetString(PyExc_RuntimeError, "limiter already configured");
        return NULL;
    }
    bool keyed = o->base.ops == &keyed_ops;
    if (keyed != (key_fn != Py_None) || (keyed && sliding)) {
        PyErr_SetString(PyExc_TypeError, keyed ? "KeyedLimiter needs key, and has no sliding form"
                                               : "Limiter takes no key");
        return NULL;
    }
    /* Kept for direct _native use: the core's contracts and the sizes allocated below. */
    if (max_wait_ns < 0 || (sliding && burst > (1 << 24))
        || (keyed && (max_keys < 1 || max_keys > FS_KEYTAB_MAX_KEYS))
        || fs_gcra_init(&o->g, interval_ns, burst) < 0) {
        PyErr_SetString(PyExc_ValueError, "_configure: out of the core's range");
        return NULL;
    }
    if (sliding) {
        o->ring = PyMem_Malloc((size_t)burst * sizeof(int64_t));
        if (o->ring == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        if (fs_swlog_init(&o->w, o->ring, (uint32_t)burst, window_ns) < 0) {
            PyMem_Free(o->ring);
            o->ring = NULL;
            PyErr_SetString(PyExc_ValueError, "_configure: out of the core's range");
            return NULL;
        }
        o->algo = ALG_SLIDING;
    }
    if (keyed) {
        size_t size = fs_keytab_mem_size((uint32_t)max_keys);
        o->kt_mem = PyMem_Malloc(size);
        o->keys = PyMem_Calloc((size_t)max_keys, sizeof(PyObject *));
        if (o->kt_mem == NULL || o->keys == NULL) {
            PyMem_Free(o->kt_mem);
            PyMem_Free(o->keys);
            o->kt_mem = NULL;
            o->keys = NULL;
            PyErr_NoMemory();
            return NULL;
        }
        fs_keytab_init(&o->kt, o->kt_mem, (uint32_t)max_keys);
        o->key_fn = Py_NewRef(key_fn);
    }
    o->max_wait_ns = max_wait_ns;
    o->configured = 1;
    Py_RETURN_NONE;
}

static PyObject *limiter_new(PyTypeObject *type, PyObject *Py_UNUSED(args),
                             PyObject *Py_UNUSED(kwargs))
{
    fs_state *st = fs_state_from_type(type);
    if (st == NULL) {
        return NULL;
    }
    FsLimiter *o = (FsLimiter *)type->tp_alloc(type, 0);
    if (o == NULL) {
        return NULL;
    }
    bool keyed = PyType_IsSubtype(type, st->KeyedLimiter_Type);
    fs_gcra_init(&o->g, 1, 1);
    if (fs_policy_init(&o->base, keyed ? &keyed_ops : &limiter_ops, FS_PATTERN_RATELIMIT, 0,
                       "ratelimit") < 0) {
        Py_DECREF(o);
        return NULL;
    }
    return (PyObject *)o;
}

static int limiter_traverse(PyObject *self, visitproc visit, void *arg)
{
    FsLimiter *o = (FsLimiter *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(o->key_fn);
    if (o->keys != NULL) {
        for (uint32_t i = 0; i < o->kt.count; i++) {
            Py_VISIT(o->keys[i]);
        }
    }
    return fs_policy_traverse(&o->base, visit, arg);
}

static int limiter_clear(PyObject *self)
{
    fs_policy_clear_events((FsPolicy *)self);
    FsLimiter *o = (FsLimiter *)self;
    Py_CLEAR(o->key_fn);
    keys_release(o);
    Py_CLEAR(o->base.name);
    return 0;
}

static void limiter_dealloc(PyObject *self)
{
    FsLimiter *o = (FsLimiter *)self;
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    fs_policy_clear(&o->base);
    limiter_clear(self);
    PyMem_Free(o->keys);
    PyMem_Free(o->kt_mem);
    PyMem_Free(o->ring);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *limiter_get_sliding(PyObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(((FsLimiter *)self)->algo == ALG_SLIDING);
}

static PyGetSetDef limiter_getset[] = {
    {"_sliding", limiter_get_sliding, NULL, "whether this is a sliding-window log", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef limiter_members[] = {
    FS_POLICY_MEMBERS,
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef limiter_methods[] = {
    FS_POLICY_METHODS,
    {"_call_slow", (PyCFunction)(void (*)(void))limiter_call_slow,
     METH_FASTCALL | METH_KEYWORDS, "The call admit could not let through at once."},
    {"_configure", (PyCFunction)(void (*)(void))limiter_configure, METH_VARARGS | METH_KEYWORDS,
     "Sets the limit (once)."},
    {"_acquire", (PyCFunction)(void (*)(void))limiter_acquire, METH_VARARGS | METH_KEYWORDS,
     "None: admitted now; (due_ns, a, b): a reserved place; raises RateLimitExceeded."},
    {"try_acquire", (PyCFunction)(void (*)(void))limiter_try_acquire,
     METH_VARARGS | METH_KEYWORDS, "Takes a token now if there is one; never waits or raises."},
    {"_give_back", (PyCFunction)(void (*)(void))limiter_give_back_m,
     METH_VARARGS | METH_KEYWORDS, "Gives a reservation back if it is still the latest."},
    {"_retry_after", (PyCFunction)(void (*)(void))limiter_retry_after,
     METH_VARARGS | METH_KEYWORDS, "Seconds until a call would be admitted."},
    {"_pause", (PyCFunction)(void (*)(void))limiter_pause, METH_VARARGS | METH_KEYWORDS,
     "Admits nothing (of key) before until_ns."},
    {"_tokens", limiter_tokens, METH_NOARGS, "Calls admissible now."},
    {"_holds_state", limiter_holds_state, METH_NOARGS,
     "Whether forgetting this limiter now would admit too much."},
    {"_key_stats", limiter_key_stats, METH_NOARGS,
     "(keys held, keys limited, max_keys, C bytes per key)."},
    {"_reset", limiter_reset, METH_NOARGS, "Forgets every admission."},
    {"__aenter__", limiter_aenter, METH_NOARGS, "Takes a token (or waits for its place)."},
    {"__aexit__", (PyCFunction)(void (*)(void))limiter_aexit, METH_FASTCALL, "Does nothing."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot limiter_slots[] = {
    {Py_tp_new, limiter_new},
    {Py_tp_members, limiter_members},
    {Py_tp_methods, limiter_methods},
    {Py_tp_getset, limiter_getset},
    {Py_tp_traverse, limiter_traverse},
    {Py_tp_clear, limiter_clear},
    {Py_tp_dealloc, limiter_dealloc},
    {0, NULL},
};

static PyType_Spec limiter_spec = {
    .name = "failsafe._native.Limiter",
    .basicsize = sizeof(FsLimiter),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .slots = limiter_slots,
};

/* Same layout and methods; its admit computes the key. */
static PyType_Slot keyed_slots[] = {
    {Py_tp_doc, "A limiter with one bucket per key, in a bounded table."},
    {Py_tp_traverse, limiter_traverse},
    {Py_tp_clear, limiter_clear},
    {Py_tp_dealloc, limiter_dealloc},
    {0, NULL},
};

static PyType_Spec keyed_spec = {
    .name = "failsafe._native.KeyedLimiter",
    .basicsize = sizeof(FsLimiter),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .slots = keyed_slots,
};

/* ------------------------------------------------------------------------------------------ */
/* Part */

static int ratelimit_setup(PyObject *module, fs_state *st)
{
    st->str_waiting = PyUnicode_InternFromString("_waiting");
    st->str_after = PyUnicode_InternFromString("_after");
    st->rl_args = Py_BuildValue("(s)", "Rate limit exceeded");
    if (st->str_waiting == NULL || st->str_after == NULL || st->rl_args == NULL) {
        return -1;
    }
    st->Limiter_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &limiter_spec, NULL);
    if (st->Limiter_Type == NULL) {
        return -1;
    }
    st->KeyedLimiter_Type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &keyed_spec, (PyObject *)st->Limiter_Type);
    if (st->KeyedLimiter_Type == NULL || fs_register_policy_type(st, st->Limiter_Type) < 0
        || fs_register_policy_type(st, st->KeyedLimiter_Type) < 0
        || PyModule_AddType(module, st->Limiter_Type) < 0
        || PyModule_AddType(module, st->KeyedLimiter_Type) < 0) {
        return -1;
    }
    return 0;
}

static int ratelimit_traverse(fs_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->Limiter_Type);
    Py_VISIT(st->KeyedLimiter_Type);
    return 0;
}

static void ratelimit_clear(fs_state *st)
{
    Py_CLEAR(st->Limiter_Type);
    Py_CLEAR(st->KeyedLimiter_Type);
    Py_CLEAR(st->str_waiting);
    Py_CLEAR(st->str_after);
    Py_CLEAR(st->rl_args);
}

const fs_part fs_ratelimit_part = {
    .name = "ratelimit",
    .pattern = FS_PATTERN_RATELIMIT,
    .metrics = rl_metrics,
    .setup = ratelimit_setup,
    .traverse = ratelimit_traverse,
    .clear = ratelimit_clear,
};
