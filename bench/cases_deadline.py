"""Deadline rows: what a timeout costs while an ambient deadline is set (the C fast paths then
read the deadline's context variable), beside the same timeout inside an outer timeout of the
same length (the deadline's own: a second entry on the loop's heap, which a fired timeout
re-arms the loop timer for). Without a deadline every other row is unchanged: the only cost
there is one test of an int per timer entry."""

from __future__ import annotations

from typing import Any

from cases import ASYNC_WITH, FIRED, FIRED_ASYNC_WITH, FIRED_BODY, Case, f, slow

FAR = 3600.0  # a deadline never reached during a run


def _enter(manager: Any, bound: Any) -> Any:
    """Enters manager in the measuring task (setup runs in it, and these entries never
    suspend), so every measured call runs inside it; returns bound."""
    entry = manager.__aenter__().__await__()
    try:
        entry.send(None)
    except StopIteration:
        return bound
    raise RuntimeError("entering the block suspended")


def _under_deadline(bound: Any) -> Any:
    from failsafe.deadline import deadline

    return _enter(deadline(FAR), bound)


def _under_timeout(bound: Any) -> Any:
    return _enter(_timeout(FAR), bound)


def _timeout(seconds: float) -> Any:
    from failsafe.timeout import timeout

    return timeout(seconds)


CASES = [
    Case(
        "timeout",
        "not reached",
        "failsafe @timeout(10), under a deadline",
        lambda: _under_deadline(_timeout(10)(f)),
    ),
    Case(
        "timeout",
        "not reached",
        "failsafe async with T (shared), under a deadline",
        lambda: _under_deadline({"g": _timeout(10), "f": f}),
        ASYNC_WITH,
    ),
    Case(
        "timeout",
        "fired",
        "failsafe @timeout(0), under a deadline",
        lambda: _under_deadline(_timeout(0)(slow)),
        FIRED,
        expect="fired",
        baseline=FIRED_BODY,
    ),
    Case(
        "timeout",
        "fired",
        "failsafe async with T0 (shared), under a deadline",
        lambda: _under_deadline({"g": _timeout(0), "f": slow}),
        FIRED_ASYNC_WITH,
        expect="fired",
        baseline=FIRED_BODY,
    ),
]

CASES += [
    Case(
        "timeout",
        "not reached",
        "failsafe @timeout(10), under timeout(3600)",
        lambda: _under_timeout(_timeout(10)(f)),
    ),
    Case(
        "timeout",
        "fired",
        "failsafe @timeout(0), under timeout(3600)",
        lambda: _under_timeout(_timeout(0)(slow)),
        FIRED,
        expect="fired",
        baseline=FIRED_BODY,
    ),
]
