"""Fail-fast rows: a closed latch (the call runs and its outcome is counted) and an open one
(the call is refused). No peer library has a fail-fast latch; the peer is the check a user would
write by hand."""

from __future__ import annotations

from typing import Any

from cases import AsyncFn, Case, f

REJECTED = "try:\n    r = await g()\nexcept E:\n    r = 'rejected'"


class Open(Exception):
    pass


def _failsafe(fn: AsyncFn, *, open_: bool = False) -> Any:
    from failsafe.failfast import FailFastOpen, failfast

    policy = failfast(failure_threshold=5)
    if open_:
        policy.open()
    return {"g": policy(fn), "E": FailFastOpen}


def _hand_rolled(fn: AsyncFn, *, open_: bool = False) -> Any:
    """Consecutive failures counted in a closure; refuses while open."""
    state = {"failures": 0, "open": open_}

    async def guarded() -> Any:
        if state["open"]:
            raise Open
        try:
            result = await fn()
        except Exception:
            state["failures"] += 1
            if state["failures"] >= 5:
                state["open"] = True
            raise
        state["failures"] = 0
        return result

    return {"g": guarded, "E": Open}


CASES: list[Case] = [
    Case("failfast", "closed", "failsafe", lambda: _failsafe(f), budget=1_500),
    Case("failfast", "closed", "hand-rolled counter", lambda: _hand_rolled(f)),
    Case(
        "failfast",
        "open",
        "failsafe",
        lambda: _failsafe(f, open_=True),
        REJECTED,
        expect="rejected",
        budget=4_000,
    ),
    Case(
        "failfast",
        "open",
        "hand-rolled counter",
        lambda: _hand_rolled(f, open_=True),
        REJECTED,
        expect="rejected",
    ),
]
