"""failsafe.deadline: the C side's error paths (its ContextVar bound to another variable or
holding what is not a frame, bad arguments) and many tasks sharing, nesting and cancelling
deadlines."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import pytest

from failsafe import _native
from failsafe import deadline as deadline_module
from failsafe.deadline import DeadlineExceeded, deadline
from failsafe.testing import FakeClock


def open_scopes() -> int:
    """Deadline scopes open in the process, as the C fast paths count them."""
    _native._deadline_scopes(1)
    return _native._deadline_scopes(-1)


@pytest.fixture
def foreign() -> Iterator[ContextVar[Any]]:
    """C bound to another variable, one scope counted open; both undone after the test."""
    var: ContextVar[Any] = ContextVar("foreign")
    _native._deadline_bind(var)
    _native._deadline_scopes(1)
    try:
        yield var
    finally:
        _native._deadline_scopes(-1)
        _native._deadline_bind(deadline_module._frame)


def test_bind_and_scopes_refuse_bad_arguments() -> None:
    with pytest.raises(TypeError, match="ContextVar"):
        _native._deadline_bind(object())
    with pytest.raises(TypeError):
        _native._deadline_scopes("1")
    with pytest.raises(ValueError, match="1 or -1"):
        _native._deadline_scopes(2)
    with pytest.raises(OverflowError):
        _native._deadline_scopes(2**80)
    # Below 0 it stays at 0.
    assert open_scopes() == 0
    assert _native._deadline_scopes(-1) == 0
    assert open_scopes() == 0


@pytest.mark.parametrize("value", ["not a frame", [], ("tuple",), None])
def test_what_is_not_a_frame_reads_as_no_deadline(foreign: ContextVar[Any], value: Any) -> None:
    foreign.set(value)
    assert _native._deadline_left() == math.inf


def test_an_unset_variable_reads_as_no_deadline(foreign: ContextVar[Any]) -> None:
    assert _native._deadline_left() == math.inf


@pytest.mark.parametrize(
    ("when", "left"),
    [("soon", math.inf), (object(), math.inf), (math.inf, math.inf), (-5.0, 0.0)],
)
def test_an_unreadable_when_reads_as_no_limit(
    foreign: ContextVar[Any], clock: FakeClock, when: Any, left: float
) -> None:
    foreign.set([when, None])
    assert _native._deadline_left() == left


def test_an_int_when_is_read_as_a_number(foreign: ContextVar[Any], clock: FakeClock) -> None:
    foreign.set([_native.now_ns() + 2_000_000_000, None])
    assert _native._deadline_left() == 2.0
    clock.advance(0.5)
    assert _native._deadline_left() == 1.5


def test_the_real_variable_is_bound_again_after_a_foreign_one(clock: FakeClock) -> None:
    async def main() -> float:
        async with deadline(4.0):
            return _native._deadline_left()

    assert asyncio.run(main()) == 4.0


# ------------------------------------------------------------------------------------------
# Many tasks


async def test_hundreds_of_tasks_inside_one_block_are_cut_together() -> None:
    started = 0

    async def child() -> None:
        nonlocal started
        started += 1
        await asyncio.sleep(3600)

    children: list[asyncio.Task[None]] = []

    async def block() -> None:
        async with deadline(0.05):
            children.extend(asyncio.create_task(child()) for _ in range(200))
            await asyncio.gather(*children)

    with pytest.raises(DeadlineExceeded):
        await block()
    assert started == 200
    assert all(t.cancelled() for t in children)
    assert open_scopes() == 0
    assert deadline.remaining() is None


async def test_hundreds_of_tasks_share_one_deadline_object_and_cancellations(
    clock: FakeClock,
) -> None:
    shared = deadline(3.0)
    seen: list[float] = []
    gate = asyncio.Event()

    async def use(i: int) -> None:
        async with shared:
            await gate.wait()
            left = deadline.remaining()
            assert left is not None
            seen.append(left)
            if i % 5 == 0:
                async with deadline(1.0):  # nested: shrinks only this task's deadline
                    inner = deadline.remaining()
                    assert inner is not None
                    assert inner <= 1.0
                assert deadline.remaining() == left

    tasks = [asyncio.create_task(use(i)) for i in range(300)]
    for t in tasks[::4]:
        t.cancel()  # before entering the block
    await asyncio.sleep(0)
    assert open_scopes() == 225
    for t in tasks[1::4]:
        t.cancel()  # inside the block, waiting
    await asyncio.sleep(0)
    clock.advance(1.0)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert sum(isinstance(r, asyncio.CancelledError) for r in results) == 150
    assert not any(isinstance(r, DeadlineExceeded) for r in results)
    assert len(seen) == 150
    assert all(s == 2.0 for s in seen)
    assert open_scopes() == 0


async def test_a_child_task_nests_its_own_deadline_without_moving_its_parents(
    clock: FakeClock,
) -> None:
    async def child(seconds: float) -> tuple[float | None, float | None]:
        async with deadline(seconds):
            inner = deadline.remaining()
        return inner, deadline.remaining()

    async with deadline(2.0):
        longer = await asyncio.create_task(child(10.0))
        shorter = await asyncio.create_task(child(0.5))
        assert deadline.remaining() == 2.0
    assert longer == (2.0, 2.0)  # an inner deadline only shrinks it
    assert shorter == (0.5, 2.0)
    assert open_scopes() == 0


async def test_cancelling_a_nested_block_from_outside_is_no_deadline() -> None:
    entered = asyncio.Event()

    async def body() -> None:
        async with deadline(30), deadline(20):
            entered.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(body())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert open_scopes() == 0


def test_nested_deadlines_in_threads_are_their_own() -> None:
    results: dict[int, tuple[float | None, float | None, float | None]] = {}
    barrier = threading.Barrier(4)

    async def main(i: int) -> None:
        async with deadline(100.0 + i):
            async with deadline(200.0):
                await asyncio.sleep(0)
                barrier.wait(timeout=30)  # every thread inside both at once
                inner = deadline.remaining()
            outer = deadline.remaining()
        results[i] = (inner, outer, deadline.remaining())

    threads = [threading.Thread(target=asyncio.run, args=(main(i),)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0, 1, 2, 3]
    for i, (inner, outer, after) in results.items():
        assert inner is not None
        assert outer is not None
        assert 99.0 + i < inner <= 100.0 + i  # the outer, nearer deadline holds inside
        assert 99.0 + i < outer <= 100.0 + i
        assert after is None
    assert open_scopes() == 0
