"""retry, timeout and fallback stacked in every order, on functions and methods."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import pytest

from failsafe.fallback import fallback
from failsafe.retry import AttemptsExceeded, retry
from failsafe.timeout import TimeoutError as FsTimeoutError
from failsafe.timeout import timeout

ORDERS = list(itertools.permutations(["retry", "timeout", "fallback"]))


def build(
    order: tuple[str, ...], fn: Callable[..., Any], **opts: Any
) -> tuple[Any, dict[str, Any]]:
    """Decorates fn with the patterns, order[0] outermost; returns the guard and policies."""
    policies = {
        "retry": retry(on=opts.get("retry_on", ValueError), attempts=2, backoff=0),
        "timeout": timeout(opts.get("seconds", 10.0)),
        "fallback": fallback("fallback", on=opts.get("fallback_on", Exception)),
    }
    guarded = fn
    for name in reversed(order):
        guarded = policies[name](guarded)
    return guarded, policies


@pytest.mark.parametrize("order", ORDERS, ids="-".join)
async def test_all_passing(order: tuple[str, ...]) -> None:
    async def ok(x: int) -> int:
        return x * 2

    g, p = build(order, ok)
    assert await g(21) == 42
    assert p["retry"].stats()["success"] == 1
    assert p["fallback"].stats()["invoked"] == 0
    assert p["timeout"].stats()["fired"] == 0


@pytest.mark.parametrize("order", ORDERS, ids="-".join)
async def test_transient_failure(order: tuple[str, ...]) -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("once")
        return "ok"

    g, p = build(order, flaky)
    result = await g()
    if order.index("fallback") > order.index("retry"):
        # fallback inside retry answers the first failure itself
        assert result == "fallback"
        assert calls == 1
        assert p["retry"].stats()["attempt"] == 0
    else:
        assert result == "ok"
        assert calls == 2
        assert p["retry"].stats()["attempt"] == 1
        assert p["fallback"].stats()["invoked"] == 0


@pytest.mark.parametrize("order", ORDERS, ids="-".join)
async def test_permanent_failure(order: tuple[str, ...]) -> None:
    calls = 0

    async def broken() -> str:
        nonlocal calls
        calls += 1
        raise ValueError("always")

    g, p = build(order, broken)
    assert await g() == "fallback"
    assert p["fallback"].stats()["invoked"] == 1
    if order.index("fallback") < order.index("retry"):
        assert calls == 3
        assert p["retry"].stats()["giveup"] == 1
    else:
        assert calls == 1


@pytest.mark.parametrize("order", ORDERS, ids="-".join)
async def test_timeout_fires_inside_any_order(order: tuple[str, ...]) -> None:
    calls = 0

    async def slow() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(10)
        return "late"

    g, p = build(order, slow, seconds=0.01, retry_on=FsTimeoutError)
    t, r, f = (order.index(n) for n in ("timeout", "retry", "fallback"))
    # The fallback sees the TimeoutError only from outside the timeout; inside it sees the
    # cancellation, which it never handles.
    if t > r:  # each attempt is bounded and retried on TimeoutError
        if r < f < t:
            expected, expected_calls = "fallback", 1
        elif f < r:
            expected, expected_calls = "fallback", 3
        else:
            expected, expected_calls = AttemptsExceeded, 3
    else:  # one deadline for the whole call: cancellation is never retried
        expected, expected_calls = ("fallback" if f < t else FsTimeoutError), 1
    if isinstance(expected, str):
        assert await g() == expected
    else:
        with pytest.raises(expected):
            await g()
    assert calls == expected_calls
    assert p["timeout"].stats()["fired"] == expected_calls


@pytest.mark.parametrize("order", ORDERS, ids="-".join)
async def test_cancellation_crosses_every_layer(order: tuple[str, ...]) -> None:
    entered = asyncio.Event()
    cleaned = []

    async def hang() -> None:
        entered.set()
        try:
            await asyncio.sleep(3600)
        finally:
            cleaned.append(True)

    g, p = build(order, hang, retry_on=BaseException, fallback_on=BaseException)
    task = asyncio.create_task(g())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == [True]
    assert p["retry"].stats()["attempt"] == 0
    assert p["fallback"].stats()["invoked"] == 0
    assert p["timeout"].stats()["fired"] == 0


async def test_retry_gives_up_with_timeout_as_last_error() -> None:
    @retry(on=FsTimeoutError, attempts=1, backoff=0)
    @timeout(0.01)
    async def slow() -> None:
        await asyncio.sleep(10)

    with pytest.raises(AttemptsExceeded) as info:
        await slow()
    assert isinstance(info.value.__cause__, FsTimeoutError)
    assert isinstance(info.value.__cause__, TimeoutError)


class Service:
    def __init__(self) -> None:
        self.calls = 0

    @fallback(-1)
    @retry(attempts=1, backoff=0)
    @timeout(5)
    async def get(self, x: int) -> int:
        self.calls += 1
        if self.calls == 1:
            raise ValueError
        return x + self.calls


async def test_stacked_on_a_method() -> None:
    s = Service()
    assert await s.get(10) == 12
    assert s.calls == 2


async def test_many_tasks_share_a_stack() -> None:
    async def work(i: int) -> int:
        await asyncio.sleep(0)
        if i % 3 == 0:
            raise ValueError(i)
        return i

    g, p = build(("fallback", "retry", "timeout"), work)
    results = await asyncio.gather(*(g(i) for i in range(300)))
    assert results == ["fallback" if i % 3 == 0 else i for i in range(300)]
    assert p["fallback"].stats()["invoked"] == 100
    assert p["retry"].stats()["giveup"] == 100
    assert p["retry"].stats()["attempt"] == 200
