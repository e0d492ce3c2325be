"""Deadline rows: what a timeout costs while an ambient deadline is set (the C fast paths then
read the deadline's context variable). Without a deadline every other row is unchanged: the
only cost there is one test of an int per timer entry."""

from __future__ import annotations

from typing import Any

from cases import ASYNC_WITH, FIRED, FIRED_ASYNC_WITH, FIRED_BODY, Case, f, slow

FAR = 3600.0  # a deadline never reached during a run


def _under_deadline(bound: Any) -> Any:
    """Enters deadline(FAR) in the measuring task (setup runs in it, and the deadline's entry
    never suspends), so every measured call runs under it; returns bound."""
    from failsafe.deadline import deadline

    entry = deadline(FAR).__aenter__()
    try:
        entry.send(None)
    except StopIteration:
        return bound
    entry.close()
    raise RuntimeError("entering a deadline suspended")


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
