/* Cache: an LRU + TTL index of a function's results (fs_cache in the core) with single-flight
 * misses. The core indexes entries by a 64-bit hash; this file derives the hash from the call's
 * arguments, keeps each entry's key and value in a slot array parallel to the core's entries,
 * and compares keys itself.
 *
 * A call whose key is stored answers at once: admit returns FS_ADMIT_VALUE with a Done (an
 * awaitable already holding the value), so fn is not called and no coroutine is created. A
 * miss (FS_ADMIT_CALL, its key in the admission record) runs fn in an FsCall and registers a
 * CacheFlight (cacheflight.c) in a second index of calls in flight; a concurrent miss of the
 * same key finds it there and waits in Python (_call_slow) for the leader's outcome. */
#include "fs_binding.h"

#include <stddef.h>

#include "cache.h"
#include "cachekey.h"
#include "done.h"
#include "fs_cache.h"

/* Counters, in the order of failsafe.cache.Cache.METRICS. */
enum { C_HIT = 0, C_MISS, C_SET, C_EVICT, C_EXPIRED, C_SHARED, C_STALE };
static const char *const cache_metrics[] = {"hit", "miss", "set", "evict", "expired", "shared",
    "stale", NULL};

/* How waiters learn the leader's outcome (_settle), read by Python as _native.CACHE_SETTLE. */
enum { SETTLE_VALUE = 0, SETTLE_ERROR = 1, SETTLE_RETRY = 2 };

#define PENDING_INITIAL 8
#define READY_INITIAL_MAX 1024  /* entries allocated up front; more as misses need them */
#define LOOKUP_RESTARTS 8

typedef struct CacheSlot {
    PyObject *key;      /* stored key (see KEY_*), owned */
    PyObject *value;    /* ready: the value; in flight: the CacheFlight; owned */
    int kind;
    int64_t fresh_until;    /* ready, with stale_if_error: the end of its ttl (the index's
                             * expiry is the end of the stale window) */
} CacheSlot;

typedef struct CacheTable {
    fs_cache idx;
    CacheSlot *slots;       /* idx.cap slots, parallel to idx.entries */
    uint32_t limit;         /* most entries it may hold */
} CacheTable;

typedef struct FsCacheObject {
    FsPolicy base;
    CacheTable ready;       /* stored results */
    CacheTable pending;     /* calls in flight */
    PyObject *key_func;     /* or NULL */
    int64_t ttl_ns;         /* -1: entries never expire */
    int64_t stale_ns;       /* stale_if_error window after the ttl, or -1 */
    uint64_t version;       /* bumped by every change of either table (lookups restart) */
} FsCacheObject;

/* ------------------------------------------------------------------------------------------ */
/* Tables */

static int table_init(CacheTable *t, uint32_t cap, uint32_t limit)
{
    uint32_t nb = fs_cache_buckets_for(cap);
    fs_cache_entry *entries = PyMem_Malloc(cap * sizeof(*entries));
    int32_t *buckets = PyMem_Malloc(nb * sizeof(*buckets));
    CacheSlot *slots = PyMem_Calloc(cap, sizeof(*slots));
    if (entries == NULL || buckets == NULL || slots == NULL) {
        PyMem_Free(entries);
        PyMem_Free(buckets);
        PyMem_Free(slots);
        PyErr_NoMemory();
        return -1;
    }
    fs_cache_init(&t->idx, entries, cap, buckets, nb);
    t->slots = slots;
    t->limit = limit;
    return 0;
}

/* Frees the arrays; the slots must be empty. */
static void table_free(CacheTable *t)
{
    PyMem_Free(t->idx.entries);
    PyMem_Free(t->idx.buckets);
    PyMem_Free(t->slots);
    t->idx.entries = NULL;
    t->idx.buckets = NULL;
    t->slots = NULL;
}

/* Doubles the capacity (up to limit). 0 or -1 with MemoryError (table unchanged). */
static int table_grow(CacheTable *t)
{
    uint32_t old = t->idx.cap;
    uint32_t cap = old > t->limit / 2 ? t->limit : old * 2;
    if (cap <= old) {
        PyErr_SetString(PyExc_MemoryError, "cache: table at its largest size");
        return -1;
    }
    uint32_t nb = fs_cache_buckets_for(cap);
    int32_t *buckets = PyMem_Malloc(nb * sizeof(*buckets));
    CacheSlot *slots = PyMem_Realloc(t->slots, cap * sizeof(*slots));
    if (slots != NULL) {
        t->slots = slots;
    }
    fs_cache_entry *entries = NULL;
    if (buckets != NULL && slots != NULL) {
        entries = PyMem_Realloc(t->idx.entries, cap * sizeof(*entries));
    }
    if (entries == NULL) {
        PyMem_Free(buckets);
        PyErr_NoMemory();
        return -1;
    }
    memset(&t->slots[old], 0, (cap - old) * sizeof(*slots));
    PyMem_Free(t->idx.buckets);
    fs_cache_grow(&t->idx, entries, cap, buckets, nb);
    return 0;
}

/* Entry of t whose key is kp's, FS_CACHE_NONE, or -2 with an exception. */
static int32_t table_lookup(FsCacheObject *cc, CacheTable *t, KeyProbe *kp,
                            PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    int restarts = 0;
restart:;
    uint64_t version = cc->version;
    for (int32_t i = fs_cache_find(&t->idx, kp->hash); i != FS_CACHE_NONE;
         i = fs_cache_find_next(&t->idx, i)) {
        CacheSlot *s = &t->slots[i];
        if (s->kind != kp->kind) {
            continue;
        }
        /* The common hit: the very object (a small int, an interned str, self). */
        if ((kp->kind == KEY_SINGLE && s->key == args[0])
            || (kp->kind == KEY_FUNC && s->key == kp->fkey)) {
            return i;
        }
        PyObject *stored = Py_NewRef(s->key);
        int eq = key_equal(stored, kp, args, nargs, kwnames);
        Py_DECREF(stored);
        if (eq < 0) {
            return -2;
        }
        if (cc->version != version) {
            /* An __eq__ changed the cache: the walk is stale. */
            if (++restarts > LOOKUP_RESTARTS) {
                return FS_CACHE_NONE;
            }
            goto restart;
        }
        if (eq) {
            return i;
        }
    }
    return FS_CACHE_NONE;
}

/* Removes entry i of t; the caller gets its slot's references. */
static CacheSlot table_take(FsCacheObject *cc, CacheTable *t, int32_t i)
{
    CacheSlot s = t->slots[i];
    t->slots[i].key = NULL;
    t->slots[i].value = NULL;
    fs_cache_remove(&t->idx, i);
    cc->version++;
    return s;
}

/* Drops entry i of the ready table (the references go last: they may run any code). */
static void ready_drop(FsCacheObject *cc, int32_t i)
{
    CacheSlot s = table_take(cc, &cc->ready, i);
    Py_XDECREF(s.key);
    Py_XDECREF(s.value);
}

static void drop_expired(FsCacheObject *cc)
{
    if (cc->ttl_ns < 0) {
        return;
    }
    int64_t now = fs_now_ns(cc->base.st);
    int32_t i;
    while ((i = fs_cache_first_expired(&cc->ready.idx, now)) != FS_CACHE_NONE) {
        cc->base.counters[C_EXPIRED]++;
        ready_drop(cc, i);
    }
}

/* Stores key (stolen) -> value (borrowed), making room first; fresh_until and expires are
 * absolute (see CacheSlot), or both -1 for a new result (now + ttl, + the stale window).
 * Returns the entry, or -1 with an exception. */
static int32_t ready_store(FsCacheObject *cc, uint64_t hash, int kind, PyObject *key,
                           PyObject *value, int64_t fresh_until, int64_t expires)
{
    CacheTable *t = &cc->ready;
    int64_t now = cc->ttl_ns >= 0 ? fs_now_ns(cc->base.st) : 0;
    for (;;) {
        /* Each drop may run code (a value's __del__): the state is read again after it. */
        int32_t i = cc->ttl_ns >= 0 ? fs_cache_first_expired(&t->idx, now) : FS_CACHE_NONE;
        if (i != FS_CACHE_NONE) {
            cc->base.counters[C_EXPIRED]++;
            ready_drop(cc, i);
            continue;
        }
        if (t->idx.len >= t->limit) {
            cc->base.counters[C_EVICT]++;
            ready_drop(cc, fs_cache_oldest(&t->idx));
            continue;
        }
        if (t->idx.len == t->idx.cap && table_grow(t) < 0) {
            Py_DECREF(key);
            return -1;
        }
        break;
    }
    if (expires < 0) {
        fresh_until = expires = FS_CACHE_NEVER;
        if (cc->ttl_ns >= 0) {
            fresh_until = now > INT64_MAX - cc->ttl_ns ? FS_CACHE_NEVER : now + cc->ttl_ns;
            expires = fresh_until;
            if (cc->stale_ns >= 0) {
                expires = fresh_until > INT64_MAX - cc->stale_ns ? FS_CACHE_NEVER
                                                                 : fresh_until + cc->stale_ns;
            }
        }
    }
    int32_t i = fs_cache_insert(&t->idx, hash, expires);
    t->slots[i].key = key;
    t->slots[i].value = Py_NewRef(value);
    t->slots[i].kind = kind;
    t->slots[i].fresh_until = fresh_until;
    cc->version++;
    return i;
}

/* Empties a table, releasing its references after the table is consistent again. */
static void table_clear(FsCacheObject *cc, CacheTable *t)
{
    while (t->idx.len > 0) {
        int32_t i = fs_cache_oldest(&t->idx);
        CacheSlot s = table_take(cc, t, i);
        if (t == &cc->pending && s.value != NULL) {
            ((CacheFlight *)s.value)->slot = -1;
            Py_CLEAR(((CacheFlight *)s.value)->stale);
        }
        Py_XDECREF(s.key);
        Py_XDECREF(s.value);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Flights */

static void flight_detach(FsCacheObject *cc, CacheFlight *f, PyObject **key, uint64_t *hash,
                          int *kind)
{
    if (f->slot < 0) {
        return;
    }
    int32_t i = f->slot;
    f->slot = -1;
    if (hash != NULL) {
        *hash = cc->pending.idx.entries[i].hash;
    }
    CacheSlot s = table_take(cc, &cc->pending, i);
    if (kind != NULL) {
        *kind = s.kind;
    }
    if (key != NULL) {
        *key = s.key;
    }
    else {
        Py_XDECREF(s.key);
    }
    Py_XDECREF(s.value);    /* f itself: the FsCall still holds it */
}

/* Hands the leader's outcome to its waiters (self._settle(waiters, obj, how)). waiters is
 * stolen (NULL: nobody waits). 0, or -1 with an exception that must propagate. */
static int flight_settle(FsCacheObject *cc, PyObject *waiters, PyObject *obj, int how)
{
    if (waiters == NULL) {
        return 0;
    }
    int rc = 0;
    if (PyList_GET_SIZE(waiters) > 0) {
        PyObject *saved = PyErr_GetRaisedException();
        PyObject *r = PyObject_CallMethod((PyObject *)cc, "_settle", "OOi", waiters,
                                          obj != NULL ? obj : Py_None, how);
        if (r == NULL) {
            rc = fs_event_error((PyObject *)cc);
        }
        Py_XDECREF(r);
        if (rc == 0) {
            PyErr_SetRaisedException(saved);
        }
        else {
            Py_XDECREF(saved);
        }
    }
    Py_DECREF(waiters);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Policy hooks */

/* Reports an event with (public key, value?) when somebody listens. 0, or -1 with an exception
 * that must propagate (KeyboardInterrupt from a listener). */
static int cache_event(FsCacheObject *cc, const char *method, PyObject *key, int kind,
                       PyObject *value)
{
    if (!fs_event_wanted(&cc->base, method)) {
        return 0;
    }
    PyObject *pk = public_key(key, kind);
    if (pk == NULL) {
        return fs_event_error((PyObject *)cc);
    }
    PyObject *args = value != NULL ? PyTuple_Pack(2, pk, value) : PyTuple_Pack(1, pk);
    Py_DECREF(pk);
    if (args == NULL) {
        return fs_event_error((PyObject *)cc);
    }
    return fs_emit(&cc->base, method, args);
}

/* A hit on entry i: touches it, counts and reports it. New reference to the value, or NULL. */
static PyObject *ready_hit(FsCacheObject *cc, int32_t i)
{
    fs_cache_touch(&cc->ready.idx, i);
    cc->base.counters[C_HIT]++;
    CacheSlot *s = &cc->ready.slots[i];
    PyObject *value = Py_NewRef(s->value);
    if (fs_listening(&cc->base)) {
        PyObject *key = Py_NewRef(s->key);
        int rc = cache_event(cc, "on_cache_hit", key, s->kind, value);
        Py_DECREF(key);
        if (rc < 0) {
            Py_DECREF(value);
            return NULL;
        }
    }
    return value;
}

/* Looks the call's key up in the ready table, dropping it when expired. Returns the entry of
 * a fresh value, FS_CACHE_NONE, or -2 on error; *stale (when not NULL) is set to the entry of
 * a value past its ttl but in its stale_if_error window (else FS_CACHE_NONE). */
static int32_t ready_find(FsCacheObject *cc, KeyProbe *kp, PyObject *const *args,
                          Py_ssize_t nargs, PyObject *kwnames, int32_t *stale)
{
    if (stale != NULL) {
        *stale = FS_CACHE_NONE;
    }
    int32_t i = table_lookup(cc, &cc->ready, kp, args, nargs, kwnames);
    if (i < 0 || cc->ttl_ns < 0) {
        return i;
    }
    int64_t now = fs_now_ns(cc->base.st);
    if (fs_cache_expired(&cc->ready.idx, i, now)) {
        cc->base.counters[C_EXPIRED]++;
        ready_drop(cc, i);
        return FS_CACHE_NONE;
    }
    if (cc->stale_ns >= 0 && now >= cc->ready.slots[i].fresh_until) {
        if (stale != NULL) {
            *stale = i;
        }
        return FS_CACHE_NONE;
    }
    return i;
}

static fs_verdict cache_admit(FsPolicy *p, fs_admission *a, PyObject *const *args,
                              size_t nargsf, PyObject *kwnames)
{
    FsCacheObject *cc = (FsCacheObject *)p;
    fs_state *st = p->st;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    KeyProbe kp;
    if (probe_init(cc->key_func, args, nargs, kwnames, &kp) < 0) {
        return FS_ADMIT_REFUSE;
    }
    int32_t stale;
    int32_t i = ready_find(cc, &kp, args, nargs, kwnames, &stale);
    if (i >= 0) {
        PyObject *value = ready_hit(cc, i);
        probe_release(&kp);
        if (value == NULL || (a->answer = fs_done_answer(st, value)) == NULL) {
            return FS_ADMIT_REFUSE;
        }
        return FS_ADMIT_VALUE;
    }
    if (i == -2) {
        goto error;
    }
    uint64_t version = cc->version;
    i = table_lookup(cc, &cc->pending, &kp, args, nargs, kwnames);
    if (i == -2) {
        goto error;
    }
    if (i >= 0 || (stale >= 0 && cc->version != version)) {
        /* A call for this key is in flight: wait for it. (Or an __eq__ changed the cache
         * under the stale entry found: the slow path looks again.) */
        probe_release(&kp);
        return FS_ADMIT_SLOW;
    }
    if (stale >= 0) {
        /* A refresh: the stale entry rides with the call (its key is this call's key). */
        a->ticket_a = cc->ready.slots[stale].fresh_until;
        a->ticket_b = cc->ready.idx.entries[stale].expires_ns;
        CacheSlot s = table_take(cc, &cc->ready, stale);
        a->key = s.key;
        a->stale = s.value;
    }
    else if ((a->key = probe_key(&kp, args, nargs, kwnames)) == NULL) {
        goto error;
    }
    a->hash = kp.hash;
    a->kind = kp.kind;
    probe_release(&kp);
    return FS_ADMIT_CALL;
error:
    probe_release(&kp);
    return FS_ADMIT_REFUSE;
}

/* The leader of a miss: registers its flight. */
static int cache_init_call(FsCall *c, fs_admission *a)
{
    FsCacheObject *cc = (FsCacheObject *)c->policy;
    fs_state *st = cc->base.st;
    CacheTable *t = &cc->pending;
    CacheFlight *f = NULL;
    if ((t->idx.len == t->idx.cap && table_grow(t) < 0)
        || (f = PyObject_GC_New(CacheFlight, st->CacheFlight_Type)) == NULL) {
        return -1;  /* the guard releases the key and the stale value */
    }
    PyObject *key = a->key;
    a->key = NULL;
    f->waiters = NULL;
    f->settled = 0;
    f->stale = a->stale;
    a->stale = NULL;
    f->stale_fresh_until = a->ticket_a;
    f->stale_expires = a->ticket_b;
    PyObject_GC_Track(f);
    int32_t i = fs_cache_insert(&t->idx, a->hash, FS_CACHE_NEVER);
    t->slots[i].key = key;
    t->slots[i].value = Py_NewRef(f);
    t->slots[i].kind = a->kind;
    f->slot = i;
    cc->version++;
    c->pobj = (PyObject *)f;
    cc->base.counters[C_MISS]++;
    if (fs_listening(&cc->base)) {
        PyObject *k = Py_NewRef(key);
        int rc = cache_event(cc, "on_cache_miss", k, a->kind, NULL);
        Py_DECREF(k);
        return rc;
    }
    return 0;
}

/* Puts a refreshed stale entry back when its refresh ended without a value (if its key was
 * not invalidated meanwhile and its window has not passed). key is borrowed. */
static void flight_restore_stale(FsCacheObject *cc, CacheFlight *f, PyObject *key,
                                 uint64_t hash, int kind)
{
    if (f->stale == NULL || key == NULL || fs_now_ns(cc->base.st) >= f->stale_expires) {
        return;
    }
    if (ready_store(cc, hash, kind, Py_NewRef(key), f->stale, f->stale_fresh_until,
                    f->stale_expires) < 0) {
        PyErr_Clear();  /* no room to keep it: only a fallback is lost */
    }
}

static int cache_finish(FsCall *c, PyObject *result, PyObject *exc, PyObject **out)
{
    FsCacheObject *cc = (FsCacheObject *)c->policy;
    CacheFlight *f = (CacheFlight *)c->pobj;
    PyObject *waiters = f->waiters;
    f->waiters = NULL;
    f->settled = 1;
    PyObject *key = NULL;   /* set when the flight was still registered (not invalidated) */
    uint64_t hash = 0;
    int kind = 0;
    flight_detach(cc, f, &key, &hash, &kind);
    int rc;
    if (exc != NULL) {
        /* Not cached. Waiters share an error; a cancelled or interrupted leader (not an
         * Exception) sends them back to be admitted again. A refresh that failed answers
         * with the stale value. */
        flight_restore_stale(cc, f, key, hash, kind);
        int is_error = PyObject_TypeCheck(exc, (PyTypeObject *)PyExc_Exception);
        if (is_error && f->stale != NULL) {
            cc->base.counters[C_STALE]++;
            PyObject *stale = f->stale;
            f->stale = NULL;
            rc = flight_settle(cc, waiters, stale, SETTLE_VALUE);
            *out = stale;
            Py_XDECREF(key);
            if (rc < 0) {
                Py_CLEAR(*out);
                return -1;
            }
            return FS_NEXT_RETURN;
        }
        Py_CLEAR(f->stale);
        rc = flight_settle(cc, waiters, is_error ? exc : NULL,
                           is_error ? SETTLE_ERROR : SETTLE_RETRY);
        Py_XDECREF(key);
        if (rc < 0) {
            return -1;
        }
        *out = Py_NewRef(exc);
        return FS_NEXT_RAISE;
    }
    Py_CLEAR(f->stale);
    if (key != NULL) {
        if (ready_store(cc, hash, kind, Py_NewRef(key), result, -1, -1) < 0) {
            Py_DECREF(key);
            PyObject *err = PyErr_GetRaisedException();
            if (flight_settle(cc, waiters, err, SETTLE_ERROR) < 0) {
                Py_DECREF(err);
                return -1;
            }
            *out = err;
            return FS_NEXT_RAISE;
        }
        cc->base.counters[C_SET]++;
    }
    rc = flight_settle(cc, waiters, result, SETTLE_VALUE);
    if (rc == 0 && key != NULL) {
        rc = cache_event(cc, "on_cache_set", key, kind, result);
    }
    Py_XDECREF(key);
    if (rc < 0) {
        return -1;
    }
    *out = Py_NewRef(result);
    return FS_NEXT_RETURN;
}

/* Closed or collected before it finished: waiters are admitted again. Must not raise. */
static void cache_abandon(FsCall *c)
{
    FsCacheObject *cc = (FsCacheObject *)c->policy;
    CacheFlight *f = (CacheFlight *)c->pobj;
    if (f == NULL) {
        return;
    }
    PyObject *waiters = f->waiters;
    f->waiters = NULL;
    f->settled = 1;
    PyObject *key = NULL;
    uint64_t hash = 0;
    int kind = 0;
    flight_detach(cc, f, &key, &hash, &kind);
    flight_restore_stale(cc, f, key, hash, kind);
    Py_XDECREF(key);
    Py_CLEAR(f->stale);
    if (flight_settle(cc, waiters, NULL, SETTLE_RETRY) < 0) {
        PyErr_WriteUnraisable((PyObject *)cc);
    }
}

static const fs_policy_ops cache_ops = {
    .admit = cache_admit,
    .init_call = cache_init_call,
    .finish = cache_finish,
    .abandon = cache_abandon,
};

/* ------------------------------------------------------------------------------------------ */
/* Cache type */

static PyObject *cache_new(PyTypeObject *type, PyObject *Py_UNUSED(args),
                           PyObject *Py_UNUSED(kwargs))
{
    FsCacheObject *cc = (FsCacheObject *)type->tp_alloc(type, 0);
    if (cc == NULL) {
        return NULL;
    }
    cc->ttl_ns = -1;
    cc->stale_ns = -1;
    if (fs_policy_init(&cc->base, &cache_ops, FS_PATTERN_CACHE, 0, "cache") < 0
        || table_init(&cc->ready, 16, FS_CACHE_MAX_CAP) < 0
        || table_init(&cc->pending, PENDING_INITIAL, FS_CACHE_MAX_CAP) < 0) {
        Py_DECREF(cc);
        return NULL;
    }
    return (PyObject *)cc;
}

/* _configure(maxsize, ttl_ns, key_func, stale_ns=-1): a CacheOptions' values
 * (failsafe.cache), each checked there, naming it. maxsize 0 = unbounded, ttl_ns -1 = never
 * expires, stale_ns -1 = no stale answers; key_func None = the call's arguments, else trusted
 * to be callable (calling it reports otherwise). Only while empty (from __init__). */
static PyObject *cache_configure(PyObject *self, PyObject *args)
{
    FsCacheObject *cc = (FsCacheObject *)self;
    long long maxsize, ttl_ns, stale_ns = -1;
    PyObject *key_func;
    if (!PyArg_ParseTuple(args, "LLO|L:_configure", &maxsize, &ttl_ns, &key_func, &stale_ns)) {
        return NULL;
    }
    /* Kept for direct _native use: the table's uint32 sizes, and the encodings above. */
    if (maxsize < 0 || maxsize > (long long)FS_CACHE_MAX_CAP || ttl_ns < -1 || stale_ns < -1) {
        PyErr_SetString(PyExc_ValueError, "invalid cache configuration");
        return NULL;
    }
    if (cc->ready.idx.len > 0 || cc->pending.idx.len > 0) {
        PyErr_SetString(PyExc_RuntimeError, "cache: configured while in use");
        return NULL;
    }
    uint32_t limit = maxsize == 0 ? FS_CACHE_MAX_CAP : (uint32_t)maxsize;
    uint32_t cap = limit < READY_INITIAL_MAX ? limit : READY_INITIAL_MAX;
    if (maxsize == 0) {
        cap = 16;
    }
    CacheTable fresh;
    if (table_init(&fresh, cap, limit) < 0) {
        return NULL;
    }
    table_free(&cc->ready);
    cc->ready = fresh;
    cc->ttl_ns = ttl_ns;
    cc->stale_ns = stale_ns;
    Py_XSETREF(cc->key_func, key_func == Py_None ? NULL : Py_NewRef(key_func));
    Py_RETURN_NONE;
}

/* invalidate(*args, **kwargs) -> bool: forgets the entry of that call, and makes a call of
 * that key in flight not store its result. */
static PyObject *cache_invalidate(PyObject *self, PyObject *const *args, size_t nargsf,
                                  PyObject *kwnames)
{
    FsCacheObject *cc = (FsCacheObject *)self;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    KeyProbe kp;
    if (probe_init(cc->key_func, args, nargs, kwnames, &kp) < 0) {
        return NULL;
    }
    int found = 0;
    int32_t i = table_lookup(cc, &cc->ready, &kp, args, nargs, kwnames);
    if (i >= 0) {
        ready_drop(cc, i);
        found = 1;
    }
    if (i != -2) {
        i = table_lookup(cc, &cc->pending, &kp, args, nargs, kwnames);
        if (i >= 0) {
            CacheFlight *f = (CacheFlight *)Py_NewRef(cc->pending.slots[i].value);
            flight_detach(cc, f, NULL, NULL, NULL);
            Py_CLEAR(f->stale);     /* forgotten: not an answer to a failed refresh either */
            Py_DECREF(f);
            found = 1;
        }
    }
    probe_release(&kp);
    if (i == -2) {
        return NULL;
    }
    return PyBool_FromLong(found);
}

/* clear(): forgets every entry; calls in flight will not store their results. */
static PyObject *cache_clear_method(PyObject *self, PyObject *Py_UNUSED(unused))
{
    FsCacheObject *cc = (FsCacheObject *)self;
    table_clear(cc, &cc->ready);
    table_clear(cc, &cc->pending);
    Py_RETURN_NONE;
}

/* _probe's verdicts, read by Python as _native.CACHE_PROBE. */
enum { PROBE_HIT = 0, PROBE_IN_FLIGHT = 1, PROBE_NONE = 2 };

/* _probe(*args, **kwargs) -> (PROBE_HIT, value) a hit (counted and reported), (PROBE_IN_FLIGHT,
 * flight) a call in flight, (PROBE_NONE, None) neither. */
static PyObject *cache_probe(PyObject *self, PyObject *const *args, size_t nargsf,
                             PyObject *kwnames)
{
    FsCacheObject *cc = (FsCacheObject *)self;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    KeyProbe kp;
    if (probe_init(cc->key_func, args, nargs, kwnames, &kp) < 0) {
        return NULL;
    }
    PyObject *res = NULL;
    /* A stale entry is a miss here: the caller is admitted again, and refreshes it. */
    int32_t i = ready_find(cc, &kp, args, nargs, kwnames, NULL);
    if (i >= 0) {
        PyObject *value = ready_hit(cc, i);
        if (value != NULL) {
            res = Py_BuildValue("(iN)", PROBE_HIT, value);
        }
    }
    else if (i == FS_CACHE_NONE) {
        i = table_lookup(cc, &cc->pending, &kp, args, nargs, kwnames);
        if (i >= 0) {
            res = Py_BuildValue("(iO)", PROBE_IN_FLIGHT, cc->pending.slots[i].value);
        }
        else if (i == FS_CACHE_NONE) {
            res = Py_BuildValue("(iO)", PROBE_NONE, Py_None);
        }
    }
    probe_release(&kp);
    return res;
}

static PyObject *cache_size(PyObject *self, PyObject *Py_UNUSED(unused))
{
    FsCacheObject *cc = (FsCacheObject *)self;
    drop_expired(cc);
    return PyLong_FromUnsignedLong(cc->ready.idx.len);
}

static PyObject *cache_in_flight(PyObject *self, PyObject *Py_UNUSED(unused))
{
    return PyLong_FromUnsignedLong(((FsCacheObject *)self)->pending.idx.len);
}

/* _keys() -> the stored keys as listeners see them, least recently used first. */
static PyObject *cache_keys(PyObject *self, PyObject *Py_UNUSED(unused))
{
    FsCacheObject *cc = (FsCacheObject *)self;
    drop_expired(cc);
    /* Snapshot first: building public keys allocates, which must not see a changing list. */
    PyObject *stored = PyList_New(0);
    if (stored == NULL) {
        return NULL;
    }
    for (int32_t i = fs_cache_oldest(&cc->ready.idx); i != FS_CACHE_NONE;
         i = fs_cache_newer(&cc->ready.idx, i)) {
        PyObject *pair = Py_BuildValue("(Oi)", cc->ready.slots[i].key, cc->ready.slots[i].kind);
        if (pair == NULL || PyList_Append(stored, pair) < 0) {
            Py_XDECREF(pair);
            Py_DECREF(stored);
            return NULL;
        }
        Py_DECREF(pair);
    }
    Py_ssize_t n = PyList_GET_SIZE(stored);
    PyObject *res = PyList_New(n);
    for (Py_ssize_t j = 0; res != NULL && j < n; j++) {
        PyObject *pair = PyList_GET_ITEM(stored, j);
        PyObject *pk = public_key(PyTuple_GET_ITEM(pair, 0),
                                  (int)PyLong_AsLong(PyTuple_GET_ITEM(pair, 1)));
        if (pk == NULL) {
            Py_CLEAR(res);
            break;
        }
        PyList_SET_ITEM(res, j, pk);
    }
    Py_DECREF(stored);
    return res;
}

static int cache_traverse(PyObject *self, visitproc visit, void *arg)
{
    FsCacheObject *cc = (FsCacheObject *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(cc->key_func);
    CacheTable *tables[2] = {&cc->ready, &cc->pending};
    for (int k = 0; k < 2; k++) {
        CacheTable *t = tables[k];
        if (t->slots == NULL) {
            continue;
        }
        for (int32_t i = fs_cache_oldest(&t->idx); i != FS_CACHE_NONE;
             i = fs_cache_newer(&t->idx, i)) {
            Py_VISIT(t->slots[i].key);
            Py_VISIT(t->slots[i].value);
        }
    }
    return fs_policy_traverse(&cc->base, visit, arg);
}

static int cache_tp_clear(PyObject *self)
{
    fs_policy_clear_events((FsPolicy *)self);
    FsCacheObject *cc = (FsCacheObject *)self;
    if (cc->ready.slots != NULL) {
        table_clear(cc, &cc->ready);
    }
    if (cc->pending.slots != NULL) {
        table_clear(cc, &cc->pending);
    }
    Py_CLEAR(cc->key_func);
    Py_CLEAR(cc->base.name);
    return 0;
}

static void cache_dealloc(PyObject *self)
{
    FsCacheObject *cc = (FsCacheObject *)self;
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    fs_policy_clear(&cc->base);
    cache_tp_clear(self);
    table_free(&cc->ready);
    table_free(&cc->pending);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMemberDef cache_members[] = {
    FS_POLICY_MEMBERS,
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef cache_methods[] = {
    FS_POLICY_METHODS,
    {"_configure", cache_configure, METH_VARARGS,
     "_configure(maxsize, ttl_ns, key_func, stale_ns=-1)"},
    {"invalidate", (PyCFunction)(void (*)(void))cache_invalidate,
     METH_FASTCALL | METH_KEYWORDS,
     "invalidate(*args, **kwargs) -> bool: forgets the result of the call with these "
     "arguments (a call of them in flight will not store its result)."},
    {"clear", cache_clear_method, METH_NOARGS,
     "clear(): forgets every result (calls in flight will not store theirs)."},
    {"_probe", (PyCFunction)(void (*)(void))cache_probe, METH_FASTCALL | METH_KEYWORDS,
     "_probe(*args, **kwargs) -> (kind, value): kinds in CACHE_PROBE"},
    {"_size", cache_size, METH_NOARGS, "entries stored (expired ones dropped first)"},
    {"_in_flight", cache_in_flight, METH_NOARGS, "calls in flight"},
    {"_keys", cache_keys, METH_NOARGS, "stored keys, least recently used first"},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot cache_slots[] = {
    {Py_tp_new, cache_new},
    {Py_tp_members, cache_members},
    {Py_tp_methods, cache_methods},
    {Py_tp_traverse, cache_traverse},
    {Py_tp_clear, cache_tp_clear},
    {Py_tp_dealloc, cache_dealloc},
    {0, NULL},
};

static PyType_Spec cache_spec = {
    .name = "failsafe._native.Cache",
    .basicsize = sizeof(FsCacheObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .slots = cache_slots,
};

static int cache_part_setup(PyObject *module, fs_state *st)
{
    st->Cache_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &cache_spec, NULL);
    st->CacheFlight_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &fs_cache_flight_spec, NULL);
    if (st->Cache_Type == NULL || st->CacheFlight_Type == NULL
        || fs_register_policy_type(st, st->Cache_Type) < 0) {
        return -1;
    }
    if (PyModule_AddType(module, st->Cache_Type) < 0
        || PyModule_AddType(module, st->CacheFlight_Type) < 0) {
        return -1;
    }
    PyObject *probe = Py_BuildValue("{sisisi}", "hit", PROBE_HIT, "in_flight", PROBE_IN_FLIGHT,
                                    "none", PROBE_NONE);
    PyObject *settle = Py_BuildValue("{sisisi}", "value", SETTLE_VALUE, "error", SETTLE_ERROR,
                                     "retry", SETTLE_RETRY);
    int rc = probe == NULL || settle == NULL
                     || PyModule_AddObjectRef(module, "CACHE_PROBE", probe) < 0
                     || PyModule_AddObjectRef(module, "CACHE_SETTLE", settle) < 0
                 ? -1
                 : 0;
    Py_XDECREF(probe);
    Py_XDECREF(settle);
    return rc;
}

static int cache_part_traverse(fs_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->Cache_Type);
    Py_VISIT(st->CacheFlight_Type);
    return 0;
}

static void cache_part_clear(fs_state *st)
{
    Py_CLEAR(st->Cache_Type);
    Py_CLEAR(st->CacheFlight_Type);
}

const fs_part fs_cache_part = {
    .name = "cache",
    .pattern = FS_PATTERN_CACHE,
    .metrics = cache_metrics,
    .setup = cache_part_setup,
    .traverse = cache_part_traverse,
    .clear = cache_part_clear,
};
