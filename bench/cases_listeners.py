"""Listener rows: a call passing a closed consecutive breaker (its on_success event fires on
every call) with 0, 1 or 10 local listeners, whose classes either have no handler for the event
(they handle on_failure only) or a sync on_success that does nothing. No peer has listeners:
the rows measure what listening costs against the breaker alone."""

from __future__ import annotations

from typing import Any

from cases import Case, f


class Elsewhere:
    """A listener of other events: on_success is not its concern."""

    def on_failure(self, breaker: Any, exc: BaseException, state: Any) -> None:
        pass


class OnSuccess:
    def on_success(self, breaker: Any, state: Any) -> None:
        pass


def _breaker(listeners: list[Any]) -> Any:
    from failsafe.circuitbreaker import consecutive_breaker

    return consecutive_breaker(failure_threshold=5, listeners=listeners)(f)


CASES: list[Case] = [
    Case("listeners", "breaker ok", "failsafe, no listener", lambda: _breaker([])),
    Case(
        "listeners",
        "breaker ok",
        "failsafe, 1 listener, no handler",
        lambda: _breaker([Elsewhere()]),
    ),
    Case(
        "listeners",
        "breaker ok",
        "failsafe, 10 listeners, no handler",
        lambda: _breaker([Elsewhere() for _ in range(10)]),
    ),
    Case(
        "listeners",
        "breaker ok",
        "failsafe, 1 listener, sync on_success",
        lambda: _breaker([OnSuccess()]),
    ),
    Case(
        "listeners",
        "breaker ok",
        "failsafe, 10 listeners, sync on_success",
        lambda: _breaker([OnSuccess() for _ in range(10)]),
    ),
]
