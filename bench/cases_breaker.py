"""Circuit breaker rows: a closed breaker passing a call, and an open one rejecting it.

Peers: purgatory, aiobreaker, hyx. pybreaker is left out: its only asyncio-free call path is
synchronous (``call`` would return the coroutine unobserved) and ``call_async`` needs tornado.
"""

from __future__ import annotations

from typing import Any

from cases import Case, f

REJECT = (
    "try:\n    r = await g()\nexcept ValueError:\n    r = 'called'\n"
    "except Exception:\n    r = 'rejected'"
)


async def _failing() -> int:
    raise ValueError("down")


def _trip(g: Any, n: int) -> Any:
    """Opens g's breaker with n failing calls, driven by hand (none of them suspends); the last
    may raise the breaker's own error (aiobreaker does)."""
    for _ in range(n):
        coro = g()
        try:
            coro.send(None)
        except StopIteration:
            raise RuntimeError("the call did not fail") from None
        except Exception:
            continue
        coro.close()
        raise RuntimeError("the call suspended")
    return g


def _failsafe(fn: Any) -> Any:
    from failsafe.circuitbreaker import consecutive_breaker

    return consecutive_breaker(failure_threshold=5, recovery_time_secs=1e6)(fn)


def _failsafe_window(fn: Any) -> Any:
    from failsafe.circuitbreaker import circuitbreaker

    return circuitbreaker(failure_rate=0.5, window_calls=100, recovery_time=1e6)(fn)


def _failsafe_async_with() -> dict[str, Any]:
    from failsafe.circuitbreaker import consecutive_breaker

    return {"g": consecutive_breaker(), "f": f}


def _purgatory(fn: Any) -> Any:
    from purgatory import AsyncCircuitBreakerFactory

    return AsyncCircuitBreakerFactory(default_threshold=5, default_ttl=1e6)("bench")(fn)


def _aiobreaker(fn: Any) -> Any:
    from datetime import timedelta

    from aiobreaker import CircuitBreaker

    return CircuitBreaker(fail_max=5, timeout_duration=timedelta(days=30))(fn)


def _hyx(fn: Any) -> Any:
    from hyx.circuitbreaker import consecutive_breaker

    return consecutive_breaker(failure_threshold=5, recovery_time_secs=1e6)(fn)


IMPLS = [
    ("failsafe consecutive_breaker", _failsafe, 1_500, 4_000),
    ("failsafe circuitbreaker (count window)", _failsafe_window, 1_500, 4_000),
    ("purgatory", _purgatory, None, None),
    ("aiobreaker", _aiobreaker, None, None),
    ("hyx", _hyx, None, None),
]

# Failures that open each breaker: 5 consecutive, or 10 (the window's min_calls) at ratio 1.
TRIP = {"failsafe circuitbreaker (count window)": 10}

CASES: list[Case] = []
for _impl, _setup, _closed, _open in IMPLS:
    CASES.append(Case("breaker", "closed", _impl, lambda s=_setup: s(f), budget=_closed))
CASES.append(
    Case(
        "breaker",
        "closed",
        "failsafe async with B (shared)",
        _failsafe_async_with,
        "async with g:\n    r = await f()",
    )
)
for _impl, _setup, _closed, _open in IMPLS:
    _n = TRIP.get(_impl, 5)
    CASES.append(
        Case(
            "breaker",
            "open (rejecting)",
            _impl,
            lambda s=_setup, n=_n: _trip(s(_failing), n),
            REJECT,
            expect="rejected",
            budget=_open,
        )
    )
