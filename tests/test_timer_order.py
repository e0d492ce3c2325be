"""Deadlines that fall at the same instant fire in the order they were armed (the timer heap
breaks ties by arming order, as libuv does), so timeouts and hedges sharing a deadline behave
the same run to run. The loop's clock is frozen while the deadlines are armed, so they are
exactly equal, then moved past them."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from failsafe.hedge import hedge
from failsafe.timeout import timeout

N = 40


def _arming_order() -> list[int]:
    # Not creation order: the order must come from arming, not from ids or addresses.
    order = list(range(N))
    random.Random(12).shuffle(order)
    return order


def _freeze_clock() -> list[float]:
    loop = asyncio.get_running_loop()
    now = [loop.time()]
    loop.time = lambda: now[0]  # type: ignore[method-assign]
    return now


async def _until(cond: Callable[[], bool]) -> None:
    for _ in range(100):
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError("the tasks did not all arm their deadline")


def _enter_shared() -> Callable[[Awaitable[None]], Awaitable[None]]:
    shared = timeout(1.0)

    async def enter(aw: Awaitable[None]) -> None:
        async with shared:
            await aw

    return enter


def _enter_one_shot() -> Callable[[Awaitable[None]], Awaitable[None]]:
    async def enter(aw: Awaitable[None]) -> None:
        async with timeout(1.0):
            await aw

    return enter


def _enter_decorated() -> Callable[[Awaitable[None]], Awaitable[None]]:
    @timeout(1.0)
    async def body(aw: Awaitable[None]) -> None:
        await aw

    return body


@pytest.mark.parametrize("form", [_enter_shared, _enter_one_shot, _enter_decorated])
def test_timeouts_sharing_a_deadline_fire_in_arming_order(
    form: Callable[[], Callable[[Awaitable[None]], Awaitable[None]]],
) -> None:
    async def main() -> tuple[list[int], list[int]]:
        now = _freeze_clock()
        loop = asyncio.get_running_loop()
        enter = form()
        armed: list[int] = []
        fired: list[int] = []

        async def waiter(i: int) -> None:
            fut: asyncio.Future[None] = loop.create_future()

            async def body() -> None:
                armed.append(i)  # the deadline is armed once the body runs
                await fut

            try:
                await enter(body())
            except TimeoutError:
                fired.append(i)

        tasks = [loop.create_task(waiter(i)) for i in _arming_order()]
        await _until(lambda: len(armed) == N)
        now[0] += 2.0
        await asyncio.gather(*tasks)
        return armed, fired

    armed, fired = asyncio.run(main())
    assert armed == _arming_order()
    assert fired == armed


def test_hedges_sharing_a_deadline_start_in_arming_order() -> None:
    async def main() -> tuple[list[int], list[int]]:
        now = _freeze_clock()
        loop = asyncio.get_running_loop()
        armed: list[int] = []
        hedged: list[int] = []
        first = {i: loop.create_future() for i in range(N)}

        @hedge(attempts=2, delay=1.0)
        async def call(i: int) -> int:
            if i not in armed:
                armed.append(i)  # first attempt: its hedge deadline is armed
                await first[i]
                return -1
            hedged.append(i)  # second attempt, started by the deadline
            return i

        async def caller(i: int) -> Any:
            return await call(i)

        tasks = [loop.create_task(caller(i)) for i in _arming_order()]
        await _until(lambda: len(armed) == N)
        now[0] += 2.0
        results = await asyncio.gather(*tasks)
        assert sorted(results) == list(range(N))
        return armed, hedged

    armed, hedged = asyncio.run(main())
    assert armed == _arming_order()
    assert hedged == armed
