"""Adaptive load control rows: an admitted call through concurrency_limit (each algorithm) and
throttle, beside bulkhead and asyncio.Semaphore in the same run.

The limit has room to spare (one call at a time against an initial limit of 20) and samples
every call; the throttle sees only successes, so its refusal probability stays 0 and it observes
one call in 8 (the others are sent unobserved, counted as accepted).
"""

from __future__ import annotations

from typing import Any

from cases import ASYNC_WITH, Case, f


def _limit(**kw: Any) -> Any:
    from failsafe.adaptive import concurrency_limit

    return concurrency_limit(**kw)


def _throttle() -> Any:
    from failsafe.adaptive import throttle

    return throttle()


def _bulkhead() -> Any:
    from failsafe.bulkhead import bulkhead

    return bulkhead(100)


def _semaphore() -> dict[str, Any]:
    import asyncio

    return {"g": asyncio.Semaphore(100), "f": f}


CASES: list[Case] = [
    Case(
        "adaptive",
        "admitted",
        "failsafe @concurrency_limit() (gradient2)",
        lambda: _limit()(f),
        budget=2_000,
    ),
    Case(
        "adaptive",
        "admitted",
        "failsafe @concurrency_limit(algorithm='vegas')",
        lambda: _limit(algorithm="vegas")(f),
        budget=2_000,
    ),
    Case(
        "adaptive",
        "admitted",
        "failsafe @concurrency_limit(algorithm='aimd')",
        lambda: _limit(algorithm="aimd")(f),
        budget=2_000,
    ),
    Case(
        "adaptive",
        "admitted",
        "failsafe async with concurrency_limit() (shared)",
        lambda: {"g": _limit(), "f": f},
        ASYNC_WITH,
    ),
    Case("adaptive", "admitted", "failsafe @throttle()", lambda: _throttle()(f), budget=800),
    Case(
        "adaptive",
        "admitted",
        "failsafe async with throttle() (shared)",
        lambda: {"g": _throttle(), "f": f},
        ASYNC_WITH,
    ),
    Case("adaptive", "admitted", "failsafe @bulkhead(100)", lambda: _bulkhead()(f)),
    Case("adaptive", "admitted", "async with asyncio.Semaphore(100)", _semaphore, ASYNC_WITH),
]
