"""Bulkhead rows: a free slot (beside asyncio.Semaphore and hyx) and a full bulkhead (hyx).

Every bulkhead has room to spare on the free path (limit 100, one call at a time). On the full
path its only slot is taken once in setup, so every measured call is refused.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from cases import ASYNC_WITH, Case, f

FULL = "try:\n    r = await g()\nexcept E:\n    r = 'full'"
FULL_ASYNC_WITH = "try:\n    async with g:\n        r = await f()\nexcept E:\n    r = 'full'"


def _drive(coro: Coroutine[Any, Any, Any]) -> None:
    """Runs a coroutine that completes without suspending (a free semaphore's acquire)."""
    try:
        coro.send(None)
    except StopIteration:
        return
    raise AssertionError("expected to complete at once")


def _failsafe(limit: int) -> Any:
    from failsafe.bulkhead import bulkhead

    return bulkhead(limit)


def _failsafe_full() -> dict[str, Any]:
    from failsafe.bulkhead import BulkheadFull, bulkhead

    b = bulkhead(1)
    b.__aenter__()  # takes the only slot for good
    return {"g": b(f), "E": BulkheadFull}


def _failsafe_full_block() -> dict[str, Any]:
    from failsafe.bulkhead import BulkheadFull, bulkhead

    b = bulkhead(1)
    b.__aenter__()
    return {"g": b, "f": f, "E": BulkheadFull}


def _semaphore() -> dict[str, Any]:
    import asyncio

    return {"g": asyncio.Semaphore(100), "f": f}


def _hyx(limit: int) -> Any:
    from hyx.bulkhead import bulkhead

    return bulkhead(max_concurrency=limit, max_capacity=limit)


def _hyx_full() -> dict[str, Any]:
    from hyx.bulkhead.exceptions import BulkheadFull

    b = _hyx(1)
    _drive(b._manager._total_execs_limiter.acquire())
    return {"g": b(f), "E": BulkheadFull}


CASES: list[Case] = [
    Case("bulkhead", "free", "failsafe @bulkhead(100)", lambda: _failsafe(100)(f), budget=1_500),
    Case(
        "bulkhead",
        "free",
        "failsafe async with B (shared)",
        lambda: {"g": _failsafe(100), "f": f},
        ASYNC_WITH,
    ),
    Case("bulkhead", "free", "async with asyncio.Semaphore(100)", _semaphore, ASYNC_WITH),
    Case("bulkhead", "free", "hyx @bulkhead(100, 100)", lambda: _hyx(100)(f)),
    Case(
        "bulkhead",
        "free",
        "hyx async with B (shared)",
        lambda: {"g": _hyx(100), "f": f},
        ASYNC_WITH,
    ),
    Case(
        "bulkhead",
        "full",
        "failsafe @bulkhead(1), slot taken",
        _failsafe_full,
        FULL,
        expect="full",
        budget=4_000,
    ),
    Case(
        "bulkhead",
        "full",
        "failsafe async with B, slot taken",
        _failsafe_full_block,
        FULL_ASYNC_WITH,
        expect="full",
    ),
    Case("bulkhead", "full", "hyx @bulkhead(1, 1), slot taken", _hyx_full, FULL, expect="full"),
]
