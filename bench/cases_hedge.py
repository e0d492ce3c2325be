"""Hedge rows: the first attempt answers before the delay (the common case, budgeted), and the
first attempt is slow so a second one starts after the delay and wins."""

from __future__ import annotations

import asyncio
from typing import Any

from cases import AsyncFn, Case, f

HEDGE_DELAY = 1e-4  # primary slow: the real wait both implementations pay


def slow_first() -> AsyncFn:
    """A fresh function whose odd calls (each hedged call's first attempt) hang until
    cancelled, and whose even calls (the second attempt) return 1 at once."""
    calls = [0]

    async def fn() -> int:
        calls[0] += 1
        if calls[0] % 2:
            await asyncio.sleep(10)
        return 1

    return fn


def _failsafe_hedge(fn: AsyncFn, delay: float) -> Any:
    from failsafe.hedge import hedge

    return hedge(attempts=2, delay=delay)(fn)


def _failsafe_adaptive(fn: AsyncFn) -> Any:
    from failsafe.hedge import hedge, percentile

    return hedge(attempts=2, delay=percentile(95, fallback=10))(fn)


def _hand_hedge(fn: AsyncFn, delay: float) -> Any:
    """The usual hand-written hedge: a task per attempt, asyncio.wait with the delay."""

    async def hedged() -> Any:
        tasks = [asyncio.ensure_future(fn())]
        try:
            while True:
                done, _ = await asyncio.wait(
                    tasks,
                    timeout=delay if len(tasks) < 2 else None,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                for t in done:
                    if not t.cancelled() and t.exception() is None:
                        return t.result()
                if len(tasks) < 2:
                    tasks.append(asyncio.ensure_future(fn()))
                elif all(t.done() for t in tasks):
                    return tasks[-1].result()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.wait(tasks)

    return hedged


CASES: list[Case] = [
    Case(
        "hedge",
        "primary fast",
        "failsafe @hedge(attempts=2, delay=10)",
        lambda: _failsafe_hedge(f, 10),
        budget=4_000,
    ),
    Case(
        "hedge",
        "primary fast",
        "failsafe @hedge(attempts=2, delay=percentile(95))",
        lambda: _failsafe_adaptive(f),
        budget=4_000,
    ),
    Case(
        "hedge",
        "primary fast",
        "hand-written (create_task + asyncio.wait)",
        lambda: _hand_hedge(f, 10),
        divisor=10,
    ),
    Case(
        "hedge",
        "primary slow",
        f"failsafe @hedge(attempts=2, delay={HEDGE_DELAY})",
        lambda: _failsafe_hedge(slow_first(), HEDGE_DELAY),
        divisor=50,
    ),
    Case(
        "hedge",
        "primary slow",
        "hand-written (create_task + asyncio.wait)",
        lambda: _hand_hedge(slow_first(), HEDGE_DELAY),
        divisor=50,
    ),
]
