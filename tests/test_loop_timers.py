"""Deadlines on every event loop: the per-loop timer queue follows the loop's own clock and
expiry decisions, on the default loop and on uvloop (whole-millisecond clock, call_at rounded to
milliseconds, due timers run before the ready callbacks of the same turn)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from failsafe import _native
from failsafe.hedge import hedge
from failsafe.timeout import timeout

uvloop = pytest.importorskip("uvloop")


class _ArmCounter:
    """Counts how often failsafe's timer queue arms the loop timer (its `_fire` callback)."""

    arms = 0

    def _note(self, callback: Any) -> None:
        if getattr(callback, "__name__", "") == "_fire":
            self.arms += 1


class CountingUvloop(uvloop.Loop, _ArmCounter):  # type: ignore[misc]
    def call_soon(self, callback: Any, *args: Any, context: Any = None) -> Any:
        self._note(callback)
        return super().call_soon(callback, *args, context=context)

    def call_at(self, when: float, callback: Any, *args: Any, context: Any = None) -> Any:
        self._note(callback)
        return super().call_at(when, callback, *args, context=context)


class CountingDefault(asyncio.SelectorEventLoop, _ArmCounter):
    def call_soon(self, callback: Any, *args: Any, context: Any = None) -> Any:
        self._note(callback)
        return super().call_soon(callback, *args, context=context)

    def call_at(self, when: float, callback: Any, *args: Any, context: Any = None) -> Any:
        self._note(callback)
        return super().call_at(when, callback, *args, context=context)


LOOPS = {"uvloop": CountingUvloop, "asyncio": CountingDefault}


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """Runs a coroutine to completion on a fresh loop of the parametrized kind."""

    def runner(coro: Coroutine[Any, Any, Any]) -> Any:
        with asyncio.Runner(loop_factory=LOOPS[request.param]) as r:
            return r.run(coro)

    return runner


def arms() -> int:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, _ArmCounter)
    return loop.arms


async def steps_before_expiry(cm: Any, past: bool) -> int | None:
    """How many `sleep(0)` a body under cm passes before it expires (None: never); past moves
    the deadline one second into the past first."""
    steps = 0
    try:
        async with cm as scope:
            if past:
                scope.reschedule(asyncio.get_running_loop().time() - 1.0)
            for _ in range(5):
                await asyncio.sleep(0)
                steps += 1
    except TimeoutError:
        return steps
    return None


SHARED = timeout(0, name="shared")


@pytest.mark.parametrize("shared", [False, True], ids=["oneshot", "shared"])
@pytest.mark.parametrize("past", [False, True], ids=["zero", "past"])
def test_an_expired_deadline_fires_at_the_first_suspension(
    run: Callable[[Coroutine[Any, Any, Any]], Any], shared: bool, past: bool
) -> None:
    async def main() -> tuple[int | None, int | None]:
        ours = await steps_before_expiry(SHARED if shared else timeout(0), past)
        theirs = await steps_before_expiry(asyncio.timeout(0), past)
        return ours, theirs

    assert run(main()) == (0, 0)


def test_a_decorated_call_with_no_time_left_fires_at_its_first_suspension(
    run: Callable[[Coroutine[Any, Any, Any]], Any],
) -> None:
    steps: list[int] = []

    @timeout(0)
    async def body() -> None:
        for i in range(5):
            await asyncio.sleep(0)
            steps.append(i)

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await body()

    run(main())
    assert steps == []


def test_each_expiry_arms_the_loop_timer_about_once(
    run: Callable[[Coroutine[Any, Any, Any]], Any],
) -> None:
    # A deadline the loop's clock has not quite reached when the loop runs its timer (uvloop:
    # millisecond clock and rounding) must fire then, not re-arm until the clock ticks.
    n = 50

    @timeout(0.002)
    async def slow() -> None:
        await asyncio.sleep(10)

    async def main() -> int:
        before = arms()
        for _ in range(n):
            with pytest.raises(TimeoutError):
                await slow()
        assert _native._timeout_pending() == 0
        return arms() - before

    assert run(main()) <= 2 * n


def test_each_hedge_delay_arms_the_loop_timer_about_once(
    run: Callable[[Coroutine[Any, Any, Any]], Any],
) -> None:
    n = 30
    calls = [0]

    @hedge(attempts=2, delay=0.002)
    async def fn() -> str:
        calls[0] += 1
        if calls[0] % 2:
            await asyncio.sleep(10)  # the first attempt hangs: the second one answers
        return "hedged"

    async def main() -> int:
        before = arms()
        for _ in range(n):
            assert await fn() == "hedged"
        return arms() - before

    assert run(main()) <= 2 * n
    assert calls[0] == 2 * n


async def _nested(outer: float, inner: float, body: Callable[[], Awaitable[Any]]) -> str:
    try:
        async with timeout(outer):
            try:
                async with timeout(inner):
                    await body()
            except TimeoutError:
                return "inner"
    except TimeoutError:
        return "outer"
    return "none"


class CoarseVirtualLoop(asyncio.SelectorEventLoop):
    """A loop on a coarse clock of its own: time() counts whole milliseconds of a virtual clock
    that moves only when the loop would wait (by the wait, rounded up to whole milliseconds).
    Deadlines fall due in their order whatever the machine's load: no stall brings two
    together."""

    def __init__(self) -> None:
        super().__init__()
        self._ms = 0
        select = self._selector.select

        def virtual_select(timeout: float | None = None) -> Any:
            events = select(0 if timeout is not None else None)
            if not events and timeout is not None and timeout > 0:
                self._ms += max(1, math.ceil(timeout * 1000))
            return events

        self._selector.select = virtual_select  # type: ignore[method-assign]

    def time(self) -> float:
        return self._ms / 1000


def test_deadlines_fire_in_their_order_on_a_coarse_clock() -> None:
    async def main() -> tuple[list[str], float]:
        assert _native._timeout_clock() == "call"  # the queue reads this loop's own time()
        start = asyncio.get_running_loop().time()
        order = [
            await _nested(0.05, 0.002, lambda: asyncio.sleep(10)),
            await _nested(0.002, 0.05, lambda: asyncio.sleep(10)),
            await _nested(0.05, 0.05, lambda: asyncio.sleep(0)),
            await _nested(0.003, 0.002, lambda: asyncio.sleep(10)),
        ]
        return order, asyncio.get_running_loop().time() - start

    with asyncio.Runner(loop_factory=CoarseVirtualLoop) as r:
        order, elapsed = r.run(main())
    assert order == ["inner", "outer", "none", "inner"]
    # Each expiry came at its own deadline, on the first tick of the clock at or after it.
    assert elapsed == pytest.approx(0.002 + 0.002 + 0.002)


def test_deadlines_fire_in_their_order_on_every_loop(
    run: Callable[[Coroutine[Any, Any, Any]], Any],
) -> None:
    # On the loops' real clocks, with the later deadline far enough that no stall of a loaded
    # machine makes both due in one turn (the coarse clock test has close ones).
    async def main() -> list[str]:
        return [
            await _nested(600, 0.002, lambda: asyncio.sleep(10)),
            await _nested(0.002, 600, lambda: asyncio.sleep(10)),
            await _nested(600, 600, lambda: asyncio.sleep(0)),
        ]

    assert run(main()) == ["inner", "outer", "none"]


# ------------------------------------------------------------------------------------------
# The loop's clock, read without calling loop.time() where it is known


def test_the_queue_reads_the_loops_own_clock(
    run: Callable[[Coroutine[Any, Any, Any]], Any], request: pytest.FixtureRequest
) -> None:
    # Deadlines are loop.time() + seconds exactly as if loop.time() had been called at entry.
    async def main() -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        policy = timeout(10)
        outside = 0
        for _ in range(20_000):
            before = loop.time()
            async with policy as scope:
                when = scope.when()
            after = loop.time()
            assert when is not None
            outside += not (before + 10 <= when <= after + 10)
        return _native._timeout_clock(), outside

    kind = request.node.callspec.params["run"]
    assert run(main()) == ({"uvloop": "libuv", "asyncio": "monotonic"}[kind], 0)


def test_a_patched_loop_clock_is_called(run: Callable[[Coroutine[Any, Any, Any]], Any]) -> None:
    async def main() -> tuple[str, float, float | None, float]:
        loop = asyncio.get_running_loop()
        real = loop.time
        loop.time = lambda: real() + 1000.0  # type: ignore[method-assign]
        before = loop.time()
        async with timeout(10) as scope:
            when = scope.when()
        return _native._timeout_clock(), before, when, loop.time()

    kind, before, when, after = run(main())
    assert kind == "call"
    assert when is not None
    assert before + 10 <= when <= after + 10


def test_a_loop_subclass_overriding_time_is_called() -> None:
    class Shifted(uvloop.Loop):  # type: ignore[misc]
        def time(self) -> float:
            return float(super().time()) + 5000.0

    async def main() -> tuple[str, float, float | None]:
        async with timeout(10) as scope:
            when = scope.when()
        return _native._timeout_clock(), asyncio.get_running_loop().time(), when

    with asyncio.Runner(loop_factory=Shifted) as r:
        kind, now, when = r.run(main())
    assert kind == "call"
    assert when is not None
    assert now <= when <= now + 10
