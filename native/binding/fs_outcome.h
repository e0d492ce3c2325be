/* What retry and fallback share (outcome.c): a policy whose handled exceptions, and results
 * when asked, go to the Python subclass's slow path (`_on_error` / `_on_result`, declared by
 * failsafe._native's OutcomeSlowPaths protocol), whose awaitable the same FsCall then drives. */
#ifndef FS_OUTCOME_H
#define FS_OUTCOME_H

#include "fs_binding.h"

/* Header of the retry and fallback policy objects (and of the plain Outcome base). */
typedef struct FsOutcome {
    FsPolicy base;
    PyObject *on;           /* tuple of exception classes, or NULL */
    PyObject *on_pred;      /* predicate over the exception, or NULL */
    PyObject *matched_type; /* the last exception type `on` (a tuple) covered, or NULL */
    int handoff_results;    /* every result goes to _on_result */
} FsOutcome;

/* Sets on / on_pred / handoff_results from _configure's arguments (Py_None: unset). 0, or -1
 * with TypeError naming the parameter. */
int fs_outcome_configure(FsOutcome *o, PyObject *on, PyObject *on_pred, int handoff_results);

/* Hands the call over to policy.<method>(value, fn, args, kwargs, t0_ns, failures) (method:
 * st->str_on_error or st->str_on_result; value borrowed): FS_NEXT_CONTINUE with *out the slow
 * path's awaitable (new reference), or -1 with an exception. */
int fs_outcome_slow_path(FsCall *c, PyObject *method, PyObject *value, PyObject **out);

/* admit of the outcome policies without admission of their own: every call is observed. */
fs_verdict fs_outcome_admit(FsPolicy *p, fs_admission *a, PyObject *const *args, size_t nargsf,
                            PyObject *kwnames);

/* The shared part of finish for an exception exc: 1 when `on` covers it (the caller handles it;
 * a type `on` covered once is not matched again),
 * or 0 with *out the exception to raise (FS_NEXT_RAISE) when it propagates: exc itself, or a
 * failing predicate's error chained to it. */
int fs_outcome_match(FsOutcome *o, PyObject *exc, PyObject **out);
/* fs_outcome_match with its common answer inline: the type `on` covered last time. */
static inline int fs_outcome_covers(FsOutcome *o, PyObject *exc, PyObject **out)
{
    return (PyObject *)Py_TYPE(exc) == o->matched_type || fs_outcome_match(o, exc, out);
}

int fs_outcome_traverse(FsOutcome *o, visitproc visit, void *arg);
void fs_outcome_clear(FsOutcome *o);

#endif
