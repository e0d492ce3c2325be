"""Hundreds of tasks on one policy, some cancelled at each point a call can wait: before its first
step, while its function runs, while queued or waiting (bulkhead, limiter), while a flight's
leader runs (cache), while hedging. Cancelled calls raise CancelledError and free what they held;
the others answer as if alone, and the policy is idle afterwards."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from failsafe.bulkhead import Bulkhead
from failsafe.cache import cache
from failsafe.hedge import hedge
from failsafe.ratelimit import RateLimitExceeded, tokenbucket
from failsafe.testing import FakeClock
from failsafe.timeout import TimeoutError, timeout

N = 300


async def turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def settle(tasks: list[asyncio.Task[Any]]) -> list[Any]:
    return await asyncio.gather(*tasks, return_exceptions=True)


def spawn(make: Any, cancel_at_once: set[int]) -> list[asyncio.Task[Any]]:
    tasks = [asyncio.create_task(make(i)) for i in range(N)]
    for i in cancel_at_once:
        tasks[i].cancel()  # before the task's first step
    return tasks


def check(results: list[Any], cancelled: set[int], expected: Any) -> None:
    for i, r in enumerate(results):
        if i in cancelled:
            assert isinstance(r, asyncio.CancelledError), (i, r)
        else:
            assert r == expected(i), (i, r)


async def test_timeouts_not_reached_and_cancelled_at_each_point() -> None:
    gate = asyncio.Event()
    running = 0

    @timeout(3600)
    async def work(i: int) -> int:
        nonlocal running
        running += 1
        try:
            await gate.wait()
            return i
        finally:
            running -= 1

    at_once, inside = set(range(0, N, 3)), set(range(1, N, 3))
    tasks = spawn(work, at_once)
    await turns()
    assert running == N - len(at_once)
    for i in inside:
        tasks[i].cancel()
    await turns()
    assert running == N - len(at_once) - len(inside)
    gate.set()
    check(await settle(tasks), at_once | inside, lambda i: i)
    assert running == 0
    assert all(t.cancelling() == 0 for i, t in enumerate(tasks) if i not in at_once | inside)
    assert await work(7) == 7  # the policy and the loop's timers are idle and reusable


async def test_timeouts_fired_and_cancelled_at_each_point() -> None:
    @timeout(0)
    async def forever(i: int) -> int:
        await asyncio.Event().wait()
        return i

    at_once = set(range(0, N, 2))
    tasks = spawn(forever, at_once)
    results = await settle(tasks)
    for i, r in enumerate(results):
        expected = asyncio.CancelledError if i in at_once else TimeoutError
        assert isinstance(r, expected), (i, r)
    # A cancel racing the expiry: the cancel wins, the timeout neither fires nor swallows it.
    tasks = spawn(forever, set())
    await asyncio.sleep(0)
    for t in tasks[::2]:
        t.cancel()
    results = await settle(tasks)
    for i, r in enumerate(results):
        assert isinstance(r, asyncio.CancelledError if i % 2 == 0 else TimeoutError), (i, r)


async def test_hedges_cancelled_at_each_point_await_every_attempt() -> None:
    gate = asyncio.Event()
    alive = 0

    @hedge(attempts=2, delay=0)
    async def work(i: int) -> int:
        nonlocal alive
        alive += 1
        try:
            await gate.wait()
            return i
        finally:
            alive -= 1

    at_once, hedging = set(range(0, N, 3)), set(range(1, N, 3))
    tasks = spawn(work, at_once)
    await turns()
    assert alive == 2 * (N - len(at_once))  # both attempts of every started call
    for i in hedging:
        tasks[i].cancel()
    await turns()
    assert alive == 2 * (N - len(at_once) - len(hedging))  # a cancelled call awaited both
    gate.set()
    check(await settle(tasks), at_once | hedging, lambda i: i)
    await turns()
    assert alive == 0
    assert work.policy.stats()["success"] == N - len(at_once) - len(hedging)  # type: ignore[attr-defined]


async def test_cache_flights_with_cancelled_followers_run_each_key_once() -> None:
    gate = asyncio.Event()
    runs: dict[int, int] = {}

    @cache()
    async def load(key: int) -> int:
        runs[key] = runs.get(key, 0) + 1
        await gate.wait()
        return key * 10

    keys = 30
    at_once = {i for i in range(keys, N) if i % 4 == 0}  # followers only: leaders are 0..keys-1
    waiting = {i for i in range(keys, N) if i % 4 == 1}
    tasks = spawn(lambda i: load(i % keys), at_once)
    await turns()
    for i in waiting:
        tasks[i].cancel()
    await turns()
    gate.set()
    check(await settle(tasks), at_once | waiting, lambda i: (i % keys) * 10)
    assert runs == dict.fromkeys(range(keys), 1)
    assert load.policy.stats()["in_flight"] == 0  # type: ignore[attr-defined]
    assert await load(3) == 30  # a hit now


async def test_cache_flights_whose_every_caller_is_cancelled_cache_nothing() -> None:
    gate = asyncio.Event()
    runs: list[int] = []

    @cache()
    async def load(key: int) -> int:
        runs.append(key)
        await gate.wait()
        return key

    tasks = spawn(lambda i: load(i % 10), set(range(0, N, 2)))
    await turns()
    for t in tasks:
        t.cancel()
    results = await settle(tasks)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert load.policy.stats()["in_flight"] == 0  # type: ignore[attr-defined]
    gate.set()
    assert [await load(k) for k in range(10)] == list(range(10))
    # Even keys had only callers cancelled before their first step: their loads never ran. Odd
    # keys ran, were cancelled mid-load, and run again: nothing was cached by the cancelled.
    assert sorted(runs) == sorted([1, 3, 5, 7, 9, *range(10)])


async def test_bulkhead_cancelled_running_queued_and_unstarted_frees_every_slot() -> None:
    b = Bulkhead(10, N)  # 10 run, the rest queue
    gate = asyncio.Event()
    running = peak = 0

    @b
    async def work(i: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await gate.wait()
            return i
        finally:
            running -= 1

    at_once = set(range(0, N, 3))
    tasks = spawn(work, at_once)
    await turns()
    assert (b.running, b.queued) == (10, N - len(at_once) - 10)
    started = [i for i in range(N) if i not in at_once]
    in_slot, queued = set(started[:5]), set(started[10::2])
    for i in in_slot | queued:
        tasks[i].cancel()
    await turns()
    assert b.running == 10  # the freed slots went to the next in the queue
    gate.set()
    check(await settle(tasks), at_once | in_slot | queued, lambda i: i)
    assert (b.running, b.queued, running) == (0, 0, 0)
    assert peak == 10


async def test_limiter_waiters_cancelled_give_back_their_places(clock: FakeClock) -> None:
    limiter = tokenbucket(1, 3600, max_wait=10**7)
    ran: list[int] = []

    @limiter
    async def work(i: int) -> int:
        ran.append(i)
        return i

    assert await work(-1) == -1  # the bucket is empty now: every later call waits
    tasks = spawn(work, set())
    await turns()
    for t in reversed(tasks):  # latest first: every place goes back
        t.cancel()
    results = await settle(tasks)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    clock.advance(3600)
    # No place is still reserved by a cancelled waiter: the next token goes to the next call.
    assert await asyncio.wait_for(work(0), 60) == 0
    assert ran == [-1, 0]
    assert limiter.stats()["admitted"] == 2
    # Waiters cancelled before their first step never run, whatever their order.
    tasks = spawn(work, set(range(N)))
    assert all(isinstance(r, asyncio.CancelledError) for r in await settle(tasks))
    assert ran == [-1, 0]


@pytest.mark.parametrize("cancel_every", [2, 3])
async def test_limiter_rejections_and_admissions_under_load(
    clock: FakeClock, cancel_every: int
) -> None:
    limiter = tokenbucket(N // 2, 3600)

    @limiter
    async def work(i: int) -> int:
        await asyncio.sleep(0)
        return i

    at_once = set(range(0, N, cancel_every))
    results = await settle(spawn(work, at_once))
    # Each call is decided when it is made: the first N // 2 are admitted, the rest refused;
    # a task cancelled before its first step raises CancelledError either way.
    for i, r in enumerate(results):
        if i in at_once:
            assert isinstance(r, asyncio.CancelledError), (i, r)
        elif i < N // 2:
            assert r == i
        else:
            assert isinstance(r, RateLimitExceeded), (i, r)
    assert limiter.stats()["admitted"] == N // 2
    assert limiter.stats()["rejected"] == N - N // 2


class Interrupting:
    """A listener whose every event raises KeyboardInterrupt (not a listener failure: it
    propagates)."""

    def __init__(self) -> None:
        self.calls = 0

    def _raise(self, *args: Any) -> None:
        self.calls += 1
        raise KeyboardInterrupt

    on_timeout = on_rate_limited = on_bulkhead_full = _raise


async def test_an_interrupting_timeout_listener_leaves_the_scope_released() -> None:
    listener = Interrupting()
    t = timeout(0, listeners=[listener])
    with pytest.raises(KeyboardInterrupt):
        async with t:
            await asyncio.Event().wait()
    assert listener.calls == 1
    t2 = timeout(3600)
    # The task's scope chain and the loop's timer queue are consistent: nested entries work.
    async with t2, t2:
        await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="without a matching __aenter__"):
        await t.__aexit__(None, None, None)  # the interrupted scope was taken out


@pytest.mark.parametrize("pattern", ["ratelimit", "bulkhead"])
async def test_an_interrupting_refusal_listener_raises_at_the_call(pattern: str) -> None:
    listener = Interrupting()
    gate = asyncio.Event()

    async def work() -> int:
        await gate.wait()
        return 1

    if pattern == "ratelimit":
        guarded = tokenbucket(1, 3600, listeners=[listener])(work)
    else:
        guarded = Bulkhead(1, 1, listeners=[listener])(work)
    held = asyncio.create_task(guarded())
    await turns()
    with pytest.raises(KeyboardInterrupt):
        guarded()  # raised where the call is made, not deferred to the await
    assert listener.calls == 1
    gate.set()
    assert await held == 1
