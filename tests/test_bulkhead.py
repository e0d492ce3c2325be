"""failsafe.bulkhead: admission, FIFO queue, max_wait, cancellation, listeners, stats,
concurrency, stacking, and the C engine against a Python model."""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

import failsafe.bulkhead.exceptions
from failsafe import _native, events
from failsafe.bulkhead import (
    Bulkhead,
    BulkheadFull,
    BulkheadListener,
    bulkhead,
    register_bulkhead_listener,
)
from failsafe.bulkhead._options import BulkheadOptions
from failsafe.exceptions import FailsafeError
from failsafe.fallback import fallback
from failsafe.retry import retry
from failsafe.timeout import timeout

IDLE = {"running": 0, "queued": 0}


def state(b: Bulkhead) -> dict[str, int]:
    return {"running": b.running, "queued": b.queued}


async def turns(n: int = 5) -> None:
    """Lets the loop run n iterations (enough for queued calls to move one step)."""
    for _ in range(n):
        await asyncio.sleep(0)


class Gate:
    """Calls that enter and then wait until released, recording the order they started in."""

    def __init__(self) -> None:
        self.started: list[Any] = []
        self.events: dict[Any, asyncio.Event] = {}

    async def hold(self, key: Any) -> Any:
        self.started.append(key)
        event = self.events.setdefault(key, asyncio.Event())
        await event.wait()
        return key

    def release(self, key: Any) -> None:
        self.events.setdefault(key, asyncio.Event()).set()


def decorated(b: Bulkhead, gate: Gate) -> Callable[[Any], Awaitable[Any]]:
    return b(gate.hold)


def with_block(b: Bulkhead, gate: Gate) -> Callable[[Any], Awaitable[Any]]:
    async def run(key: Any) -> Any:
        async with b:
            return await gate.hold(key)

    return run


FORMS = {"decorator": decorated, "async_with": with_block}


@pytest.fixture(params=list(FORMS))
def form(request: pytest.FixtureRequest) -> Callable[[Bulkhead, Gate], Any]:
    return FORMS[request.param]  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------------------
# Construction


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((0,), {}, ValueError, "max_concurrency must be > 0"),
        ((-1,), {}, ValueError, "max_concurrency"),
        ((1.5,), {}, TypeError, "max_concurrency must be an int"),
        ((True,), {}, TypeError, "max_concurrency"),
        (("2",), {}, TypeError, "max_concurrency"),
        ((None,), {}, TypeError, "max_concurrency"),
        ((2**63,), {}, ValueError, "max_concurrency"),
        ((2, 0), {}, ValueError, "max_capacity must be > 0"),
        ((2, 1), {}, ValueError, "max_capacity .* must be >= max_concurrency"),
        ((2, 2.0), {}, TypeError, "max_capacity must be an int"),
        ((2,), {"max_wait": -1}, ValueError, "max_wait"),
        ((2,), {"max_wait": float("nan")}, ValueError, "max_wait"),
        ((2,), {"max_wait": "1"}, TypeError, "max_wait"),
        ((2,), {"max_wait": True}, TypeError, "max_wait"),
        ((2,), {"name": "1bad"}, ValueError, "name"),
        ((2,), {"name": 3}, TypeError, "name"),
        ((2,), {"listeners": 3}, TypeError, "listeners"),
        ((2,), {"event_manager": 3}, TypeError, "event_manager"),
    ],
)
def test_validation(args: tuple[Any, ...], kwargs: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        bulkhead(*args, **kwargs)


def test_defaults_and_accepted_values() -> None:
    b = bulkhead(3)
    assert (b.max_concurrency, b.max_capacity, b.max_wait) == (3, 3, None)  # no queue
    assert b.name == "bulkhead"
    assert bulkhead(2, 5, max_wait=0).max_wait == 0.0
    assert bulkhead(2, 5, max_wait=1).max_wait == 1.0
    assert bulkhead(2, 5, max_wait=float("inf")).max_wait is None
    assert bulkhead(max_concurrency=2, max_capacity=4).max_capacity == 4
    assert isinstance(b, _native.Bulkhead)


def test_native_type_refuses_what_breaks_its_slots() -> None:
    # BulkheadOptions names the bad parameter; the C type keeps only its core's invariant.
    with pytest.raises(ValueError, match="max_concurrency <= max_capacity"):
        _native.Bulkhead(3, 2)
    with pytest.raises(ValueError, match="1 <= max_concurrency"):
        _native.Bulkhead(0)
    with pytest.raises(TypeError):
        _native.Bulkhead(1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _native.Bulkhead(1, 1, "1")  # type: ignore[arg-type]
    assert _native.Bulkhead(2, 3, float("inf")).max_wait is None


def test_options_hold_the_checked_limits() -> None:
    assert BulkheadOptions.check(3) == BulkheadOptions(3, 3, None)
    assert BulkheadOptions.check(2, 5, max_wait=1) == BulkheadOptions(2, 5, 1.0)
    assert BulkheadOptions.check(2, max_wait=2e9).max_wait is None  # beyond any loop timer
    with pytest.raises(AttributeError):
        BulkheadOptions.check(3).max_concurrency = 4  # type: ignore[misc]


async def test_reconfiguring_in_use_is_refused() -> None:
    b = bulkhead(1)
    async with b:
        with pytest.raises(RuntimeError, match="in use"):
            _native.Bulkhead.__init__(b, 2, 2)
    _native.Bulkhead.__init__(b, 2, 2)
    assert b.max_concurrency == 2


def test_sync_callable_rejected() -> None:
    def sync() -> None: ...

    with pytest.raises(TypeError, match="async"):
        bulkhead(1)(sync)


def test_exceptions() -> None:
    assert failsafe.bulkhead.exceptions.BulkheadFull is BulkheadFull
    assert issubclass(BulkheadFull, FailsafeError)
    plain = BulkheadFull()
    assert str(plain) == ""
    assert (plain.retry_after, plain.timed_out) == (None, False)
    e = BulkheadFull("msg", retry_after=2.0)
    assert (str(e), e.retry_after) == ("msg", 2.0)


# ------------------------------------------------------------------------------------------
# Admission


async def test_failsafe_py_example() -> None:
    """concurrency 2, capacity 3, five simultaneous calls: three run, two are refused."""
    b = bulkhead(2, 3)

    @b
    async def work(i: int) -> int:
        await asyncio.sleep(0.001)
        return i

    tasks = [asyncio.create_task(work(i)) for i in range(5)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results[:3] == [0, 1, 2]
    assert [type(r) for r in results[3:]] == [BulkheadFull, BulkheadFull]
    assert b.stats()["full"] == 2
    assert b.stats()["admitted"] == 3
    assert state(b) == IDLE


async def test_full_rejects_at_once_without_calling(form: Any) -> None:
    b = bulkhead(1, 2, name="db")
    gate = Gate()
    run = form(b, gate)
    first = asyncio.create_task(run("a"))
    second = asyncio.create_task(run("b"))
    await turns()
    assert state(b) == {"running": 1, "queued": 1}
    with pytest.raises(BulkheadFull) as info:
        await run("c")
    assert gate.started == ["a"]  # "c" never ran
    assert "'db' is full" in str(info.value)
    assert "max_concurrency=1, max_capacity=2" in str(info.value)
    assert not info.value.timed_out
    gate.release("a")
    gate.release("b")
    assert await asyncio.gather(first, second) == ["a", "b"]
    assert state(b) == IDLE


async def test_a_refusal_message_follows_the_name_and_the_sizes() -> None:
    b = bulkhead(1, 1, name="first")
    refused = b(Gate().hold)
    async with b:
        for name in ["first", "first", "second"]:
            b._name = name
            with pytest.raises(BulkheadFull, match=f"'{name}' is full: 1 running and 0 queued"):
                await refused("x")
            with pytest.raises(BulkheadFull, match=f"'{name}' is full"):
                async with b:
                    pass
    _native.Bulkhead.__init__(b, 2, 2)
    async with b, b:
        with pytest.raises(BulkheadFull, match=r"2 running .* \(max_concurrency=2, max_capacity=2"):
            await refused("x")
    _native.Bulkhead.__init__(b, 3, 4, 0)
    async with b, b, b:
        with pytest.raises(BulkheadFull, match=r"'second' has no .* \(max_concurrency=3\)$"):
            await refused("x")
    assert b.stats()["full"] == 8


async def test_decorated_call_is_refused_when_made_raises_when_awaited() -> None:
    b = bulkhead(1)
    calls = 0

    @b
    async def f() -> None:
        nonlocal calls
        calls += 1

    held = f()  # takes the only slot when made
    refused = f()  # refused now (counted, f not called), raises when awaited
    assert b.stats()["full"] == 1
    with pytest.raises(BulkheadFull):
        await refused
    with pytest.raises(RuntimeError, match="already awaited"):
        await refused
    assert calls == 0
    closed = f()
    closed.close()
    thrown = f()
    with pytest.raises(KeyError):
        thrown.throw(KeyError("k"))
    assert calls == 0
    await held
    assert calls == 1
    await f()
    assert state(b) == IDLE


async def test_free_slot_runs_inline() -> None:
    b = bulkhead(2)

    @b
    async def f(x: int, *, y: int = 0) -> tuple[int, int]:
        return x, y

    assert await f(1, y=2) == (1, 2)
    async with b:
        assert state(b) == {"running": 1, "queued": 0}
    assert state(b) == IDLE
    assert b.stats()["admitted"] == 2


async def test_exceptions_pass_through_and_release(form: Any) -> None:
    b = bulkhead(1, 3)

    async def boom(key: Any) -> None:
        await asyncio.sleep(0)
        raise KeyError(key)

    guarded = b(boom)

    async def block(key: Any) -> None:
        async with b:
            await boom(key)

    run = guarded if form is decorated else block
    results = await asyncio.gather(*(run(i) for i in range(3)), return_exceptions=True)
    assert [type(r) for r in results] == [KeyError] * 3
    assert state(b) == IDLE


async def test_fifo_order_and_no_barging(form: Any) -> None:
    b = bulkhead(1, 10)
    gate = Gate()
    run = form(b, gate)
    tasks = [asyncio.create_task(run(i)) for i in range(5)]
    await turns()
    assert gate.started == [0]
    assert state(b) == {"running": 1, "queued": 4}
    lates = []
    for i in range(4):
        gate.release(i)
        await tasks[i]
        # The slot went to the next waiter, which has not run yet: a newcomer queues behind.
        assert state(b) == {"running": 1, "queued": 3 - i + len(lates)}
        lates.append(asyncio.create_task(run(f"late{i}")))
        await turns()
        assert gate.started[-1] == i + 1
    gate.release(4)
    for i in range(4):
        gate.release(f"late{i}")
    await asyncio.gather(*tasks, *lates)
    assert gate.started == [0, 1, 2, 3, 4, "late0", "late1", "late2", "late3"]
    assert state(b) == IDLE


async def test_slot_passes_before_the_waiter_runs(form: Any) -> None:
    b = bulkhead(1, 3)
    gate = Gate()
    await b.__aenter__()
    waiting = asyncio.create_task(form(b, gate)("waiting"))
    await turns()
    await b.__aexit__(None, None, None)
    assert state(b) == {"running": 1, "queued": 0}  # "waiting" owns the slot, not yet resumed
    assert gate.started == []
    r = b.__aenter__()  # so a newcomer gets the slow path, not the slot
    assert inspect.iscoroutine(r)
    r.close()
    gate.release("waiting")
    assert await waiting == "waiting"
    assert state(b) == IDLE


async def test_thousand_tasks_never_exceed_concurrency(form: Any) -> None:
    b = bulkhead(10, 1000)
    now = 0
    peak = 0

    async def work(i: int) -> int:
        nonlocal now, peak
        now += 1
        peak = max(peak, now)
        for _ in range(i % 3 + 1):
            await asyncio.sleep(0)
        now -= 1
        return i

    guarded = b(work)

    async def block(i: int) -> int:
        async with b:
            return await work(i)

    run = guarded if form is decorated else block
    results = await asyncio.gather(*(asyncio.create_task(run(i)) for i in range(1000)))
    assert results == list(range(1000))
    assert peak == 10
    stats = b.stats()
    assert (stats["peak_running"], stats["admitted"], stats["full"]) == (10, 1000, 0)
    assert stats["waited"] >= 900
    assert state(b) == IDLE


async def test_shared_by_decorator_and_block() -> None:
    b = bulkhead(1, 2)
    gate = Gate()
    held = asyncio.create_task(with_block(b, gate)("block"))
    queued = asyncio.create_task(decorated(b, gate)("call"))
    await turns()
    assert state(b) == {"running": 1, "queued": 1}
    with pytest.raises(BulkheadFull):
        await decorated(b, gate)("refused")
    gate.release("block")
    gate.release("call")
    assert await asyncio.gather(held, queued) == ["block", "call"]
    assert state(b) == IDLE


async def test_release_without_acquire() -> None:
    b = bulkhead(1)
    with pytest.raises(RuntimeError, match="without a matching"):
        await b.__aexit__(None, None, None)
    with pytest.raises(RuntimeError, match="released more often"):
        b._release()
    with pytest.raises(TypeError, match="waiter of this bulkhead"):
        b._abandon(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="3 positional"):
        b.__aexit__()  # type: ignore[call-arg]


# ------------------------------------------------------------------------------------------
# max_wait


async def test_max_wait_expires(form: Any) -> None:
    b = bulkhead(1, 3, max_wait=0.01)
    gate = Gate()
    run = form(b, gate)
    held = asyncio.create_task(run("held"))
    await turns()
    with pytest.raises(BulkheadFull) as info:
        await run("late")
    assert info.value.timed_out
    assert "timed out waiting 0.01 s" in str(info.value)
    assert gate.started == ["held"]
    assert state(b) == {"running": 1, "queued": 0}
    stats = b.stats()
    assert (stats["full"], stats["timed_out"], stats["waited"]) == (1, 1, 1)
    gate.release("held")
    await held
    assert state(b) == IDLE


async def test_served_before_max_wait(form: Any) -> None:
    b = bulkhead(1, 3, max_wait=30)
    gate = Gate()
    run = form(b, gate)
    tasks = [asyncio.create_task(run(i)) for i in range(3)]
    await turns()
    for i in range(3):
        gate.release(i)
    assert await asyncio.gather(*tasks) == [0, 1, 2]
    assert b.stats()["timed_out"] == 0
    assert state(b) == IDLE


async def test_max_wait_zero_never_queues(form: Any) -> None:
    b = bulkhead(1, 5, max_wait=0)
    gate = Gate()
    run = form(b, gate)
    held = asyncio.create_task(run("held"))
    await turns()
    with pytest.raises(BulkheadFull, match="max_wait is 0"):
        await run("late")
    assert b.stats()["waited"] == 0
    gate.release("held")
    await held
    gate.release("next")
    assert await run("next") == "next"  # a free slot is still taken at once
    assert state(b) == IDLE


async def test_expiry_after_being_served_keeps_the_slot() -> None:
    b = bulkhead(1, 2, max_wait=30)
    async with b:
        waiter = b._enqueue()
        assert waiter is not None
    assert waiter.future.result() is True
    b._expire(waiter)  # a timer that fires late changes nothing
    assert state(b) == {"running": 1, "queued": 0}
    b._release()
    assert state(b) == IDLE


# ------------------------------------------------------------------------------------------
# Cancellation and abandoned calls: nothing leaks


@pytest.mark.parametrize("cancel_at", [0, 1, 2, 3, 4])
async def test_cancel_running_call_at_each_await(form: Any, cancel_at: int) -> None:
    b = bulkhead(1, 2)
    progress: list[int] = []

    async def body(_: Any) -> None:
        for i in range(4):
            progress.append(i)
            await asyncio.sleep(0)

    run = b(body) if form is decorated else _block_of(b, body)
    task = asyncio.create_task(run(None))
    follower = asyncio.create_task(run(None))
    for _ in range(cancel_at):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await follower  # the slot went on to the queued call
    assert state(b) == IDLE


def _block_of(b: Bulkhead, body: Callable[[Any], Awaitable[Any]]) -> Callable[[Any], Any]:
    async def run(arg: Any) -> Any:
        async with b:
            return await body(arg)

    return run


@pytest.mark.parametrize("cancel_at", [0, 1, 2, 3])
async def test_cancel_queued_call_at_each_await(form: Any, cancel_at: int) -> None:
    b = bulkhead(1, 3)
    gate = Gate()
    run = form(b, gate)
    held = asyncio.create_task(run("held"))
    victim = asyncio.create_task(run("victim"))
    after = asyncio.create_task(run("after"))
    for _ in range(cancel_at):
        await asyncio.sleep(0)
    victim.cancel()
    with pytest.raises(asyncio.CancelledError):
        await victim
    await turns()
    assert state(b) == {"running": 1, "queued": 1}
    gate.release("held")
    gate.release("after")
    assert await asyncio.gather(held, after) == ["held", "after"]
    assert "victim" not in gate.started
    assert state(b) == IDLE


async def test_cancel_after_being_served_passes_the_slot_on(form: Any) -> None:
    b = bulkhead(1, 3)
    gate = Gate()
    run = form(b, gate)
    await b.__aenter__()  # this task holds the slot
    served = asyncio.create_task(run("served"))
    nxt = asyncio.create_task(run("next"))
    await turns()
    assert state(b) == {"running": 1, "queued": 2}
    await b.__aexit__(None, None, None)  # the slot goes to "served", not resumed yet
    assert state(b) == {"running": 1, "queued": 1}
    served.cancel()
    with pytest.raises(asyncio.CancelledError):
        await served
    await turns()
    assert gate.started == ["next"]
    gate.release("next")
    assert await nxt == "next"
    assert state(b) == IDLE


async def test_cancelled_head_is_skipped_before_its_task_runs(form: Any) -> None:
    b = bulkhead(1, 4)
    gate = Gate()
    run = form(b, gate)
    held = asyncio.create_task(run("held"))
    first = asyncio.create_task(run("first"))
    second = asyncio.create_task(run("second"))
    await turns()
    # The head's future is cancelled, then the slot frees before its task can leave the queue.
    first.cancel()
    gate.release("held")
    await held
    assert state(b) == {"running": 1, "queued": 0}
    with pytest.raises(asyncio.CancelledError):
        await first
    gate.release("second")
    assert await second == "second"
    assert gate.started == ["held", "second"]
    assert state(b) == IDLE


async def test_cancel_all_queued_at_once() -> None:
    b = bulkhead(2, 200)
    gate = Gate()
    run = decorated(b, gate)
    tasks = [asyncio.create_task(run(i)) for i in range(200)]
    await turns()
    assert state(b) == {"running": 2, "queued": 198}
    for t in reversed(tasks):
        t.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert state(b) == IDLE


async def test_timeout_while_queued_frees_the_place(form: Any) -> None:
    b = bulkhead(1, 2)
    gate = Gate()
    run = form(b, gate)
    held = asyncio.create_task(run("held"))
    await turns()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await run("late")
    assert state(b) == {"running": 1, "queued": 0}
    gate.release("held")
    await held
    assert state(b) == IDLE


async def test_closed_or_collected_calls_give_the_slot_back() -> None:
    b = bulkhead(1, 2)

    @b
    async def f() -> int:
        await asyncio.sleep(0)
        return 1

    coro = f()
    assert state(b) == {"running": 1, "queued": 0}
    coro.close()  # never started
    assert state(b) == IDLE

    coro = f()
    coro.send(None)  # suspended inside
    coro.close()
    assert state(b) == IDLE

    coro = f()
    with pytest.raises(KeyError):
        coro.throw(KeyError("before start"))
    assert state(b) == IDLE

    coro = f()
    coro.send(None)
    del coro
    gc.collect()
    assert state(b) == IDLE

    # A call that must wait takes nothing until it runs: never awaited, nothing is held.
    held = f()
    slow = f()
    assert state(b) == {"running": 1, "queued": 0}
    slow.close()
    assert await held == 1
    assert state(b) == IDLE


async def test_closed_while_queued_gives_the_place_back() -> None:
    b = bulkhead(1, 2)

    @b
    async def f() -> None:
        await asyncio.sleep(0)

    held = f()
    slow = f()
    slow.send(None)  # queued now
    assert state(b) == {"running": 1, "queued": 1}
    slow.close()
    assert state(b) == {"running": 1, "queued": 0}
    await held
    assert state(b) == IDLE


async def test_sync_failure_of_fn_gives_the_slot_back() -> None:
    b = bulkhead(1, 2)

    @b
    async def f(x: int) -> int:
        return x

    with pytest.raises(TypeError):
        f()  # type: ignore[call-arg]
    assert state(b) == IDLE
    held = asyncio.create_task(f(1))
    slow = f()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        await slow  # the queued call runs fn after waiting: its failure releases too
    assert await held == 1
    assert state(b) == IDLE


async def test_abandon_is_idempotent() -> None:
    b = bulkhead(1, 3)
    async with b:
        w1 = b._enqueue()
        w2 = b._enqueue()
        assert w1 is not None
        assert w2 is not None
        assert "queued" in repr(w1)
        b._abandon(w1)
        b._abandon(w1)
        assert state(b) == {"running": 1, "queued": 1}
    assert w2.future.result() is True
    b._abandon(w2)  # served, then gives it up: the slot is freed
    b._abandon(w2)
    assert state(b) == IDLE


# ------------------------------------------------------------------------------------------
# Listeners, stats, repr


class Recorder(BulkheadListener):
    def __init__(self) -> None:
        self.seen: list[Any] = []

    def on_bulkhead_full(self, bulkhead: Bulkhead) -> None:
        self.seen.append((bulkhead, bulkhead.running, bulkhead.queued))


class Exploding(BulkheadListener):
    def on_bulkhead_full(self, bulkhead: Bulkhead) -> None:
        raise RuntimeError("listener bug")


async def test_local_listeners(caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    b = bulkhead(1, 2, max_wait=0.05, name="pool", listeners=[Exploding(), recorder])
    gate = Gate()
    held = asyncio.create_task(with_block(b, gate)("held"))
    await turns()
    queued = asyncio.create_task(decorated(b, gate)("queued"))
    await turns()
    with caplog.at_level(logging.ERROR, logger="failsafe"):
        with pytest.raises(BulkheadFull):
            await decorated(b, gate)("full")
        with pytest.raises(BulkheadFull):
            async with b:
                pass
        with pytest.raises(BulkheadFull) as info:
            await queued  # timed out
    assert info.value.timed_out
    assert "listener bug" in caplog.text
    assert recorder.seen == [(b, 1, 1), (b, 1, 1), (b, 1, 0)]
    gate.release("held")
    await held
    assert b.stats()["full"] == 3


async def test_async_and_global_listeners() -> None:
    seen: list[str] = []

    class AsyncListener:
        async def on_bulkhead_full(self, bulkhead: Bulkhead) -> None:
            await asyncio.sleep(0)
            seen.append(bulkhead.name)

    recorder = Recorder()
    before = bulkhead(1, name="before", listeners=[AsyncListener()])
    register_bulkhead_listener(recorder)
    try:
        after = bulkhead(1, name="after")
        for b in (before, after):
            async with b:
                with pytest.raises(BulkheadFull):
                    async with b:
                        pass
    finally:
        events.unregister_listener("bulkhead", recorder)
    await events.get_event_manager().wait_for_tasks()
    assert seen == ["before"]
    assert [r[0] for r in recorder.seen] == [before, after]


class Abort(BaseException):
    """A KeyboardInterrupt-like BaseException: not a listener failure, it propagates."""


async def test_listener_base_exception_propagates() -> None:
    class Aborting(BulkheadListener):
        def on_bulkhead_full(self, bulkhead: Bulkhead) -> None:
            raise Abort

    b = bulkhead(1, listeners=[Aborting()])

    @b
    async def f() -> None: ...

    async with b:
        with pytest.raises(Abort):
            f()
        with pytest.raises(Abort):
            async with b:
                pass
    assert b.stats()["full"] == 2
    assert state(b) == IDLE


async def test_refusal_is_a_plain_bulkhead_full() -> None:
    b = bulkhead(1, name="x")

    @b
    async def f() -> None: ...

    async with b:
        with pytest.raises(BulkheadFull) as info:
            await f()
    e = info.value
    assert type(e) is BulkheadFull
    assert e.args == (str(e),)
    assert (e.retry_after, e.timed_out) == (None, False)
    assert e.__traceback__ is not None


async def test_stats_and_repr() -> None:
    b = bulkhead(2, 5, max_wait=1.5, name="pool")
    gate = Gate()
    tasks = [asyncio.create_task(with_block(b, gate)(i)) for i in range(4)]
    await turns()
    stats = b.stats()
    assert stats == {
        "name": "pool",
        "full": 0,
        "admitted": 2,
        "waited": 2,
        "timed_out": 0,
        "running": 2,
        "queued": 2,
        "max_concurrency": 2,
        "max_capacity": 5,
        "max_wait": 1.5,
        "peak_running": 2,
        "peak_queued": 2,
    }
    assert repr(b) == "<bulkhead 'pool' running=2/2 queued=2/3 full=0>"
    for i in range(4):
        gate.release(i)
    await asyncio.gather(*tasks)
    assert b.stats()["admitted"] == 4
    assert state(b) == IDLE


def test_name_from_decorated_function() -> None:
    b = bulkhead(1)

    @b
    async def fetch() -> None: ...

    assert b.name == "test_name_from_decorated_function.fetch"
    assert bulkhead(1, name="explicit")(fetch).policy.name == "explicit"


# ------------------------------------------------------------------------------------------
# Methods, stacking


async def test_methods() -> None:
    b = bulkhead(1, 3)

    class Client:
        def __init__(self) -> None:
            self.calls = 0

        @b
        async def get(self, x: int) -> tuple[Client, int]:
            self.calls += 1
            await asyncio.sleep(0)
            return self, x

    c = Client()
    results = await asyncio.gather(c.get(1), c.get(2), c.get(3))
    assert results == [(c, 1), (c, 2), (c, 3)]
    assert c.calls == 3
    assert state(b) == IDLE


@pytest.mark.parametrize("outer", ["retry", "timeout", "fallback"])
async def test_stacked_outside_other_patterns(outer: str) -> None:
    b = bulkhead(1, 3)
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        if calls == 1:
            raise ValueError("once")
        return "ok"

    inner: Any = {
        "retry": retry(attempts=2, backoff=0)(flaky),
        "timeout": timeout(10)(flaky),
        "fallback": fallback("fb")(flaky),
    }[outer]
    guarded = b(inner)
    results = await asyncio.gather(guarded(), guarded(), return_exceptions=True)
    expected = {
        "retry": ["ok", "ok"],
        "timeout": [ValueError, "ok"],
        "fallback": ["fb", "ok"],
    }[outer]
    assert [r if isinstance(r, str) else type(r) for r in results] == expected
    assert state(b) == IDLE


@pytest.mark.parametrize("outer", ["retry", "timeout", "fallback"])
async def test_stacked_inside_other_patterns(outer: str) -> None:
    b = bulkhead(1, 3)
    calls = 0

    @b
    async def flaky() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        if calls == 1:
            raise ValueError("once")
        return "ok"

    guarded: Any = {
        "retry": retry(attempts=2, backoff=0),
        "timeout": timeout(10),
        "fallback": fallback("fb"),
    }[outer](flaky)
    results = await asyncio.gather(guarded(), guarded(), return_exceptions=True)
    expected = {
        "retry": ["ok", "ok"],
        "timeout": [ValueError, "ok"],
        "fallback": ["fb", "ok"],
    }[outer]
    assert [r if isinstance(r, str) else type(r) for r in results] == expected
    assert state(b) == IDLE


async def test_retry_around_bulkhead_retries_full() -> None:
    b = bulkhead(1)
    gate = Gate()
    held = asyncio.create_task(with_block(b, gate)("held"))
    await turns()

    async def f() -> str:
        return "ok"

    retried = retry(on=BulkheadFull, attempts=None, backoff=0.001)(b(f))
    task = asyncio.create_task(retried())
    await asyncio.sleep(0.01)
    assert not task.done()
    gate.release("held")
    assert await task == "ok"
    assert await held == "held"
    assert b.stats()["full"] >= 1
    assert state(b) == IDLE


async def test_timeout_around_queued_call() -> None:
    b = bulkhead(1, 2)
    gate = Gate()
    held = asyncio.create_task(with_block(b, gate)("held"))
    await turns()
    guarded = timeout(0.01)(decorated(b, gate))
    with pytest.raises(TimeoutError):
        await guarded("late")
    assert state(b) == {"running": 1, "queued": 0}
    gate.release("held")
    await held
    assert state(b) == IDLE


async def test_fallback_on_full() -> None:
    b = bulkhead(1)
    gate = Gate()
    held = asyncio.create_task(with_block(b, gate)("held"))
    await turns()
    busy = fallback("busy", on=BulkheadFull)(decorated(b, gate))
    assert await busy("x") == "busy"
    gate.release("held")
    await held
    gate.release("x")
    assert await busy("x") == "x"
    assert state(b) == IDLE


# ------------------------------------------------------------------------------------------
# Real tasks, random schedules: limits hold, FIFO holds, nothing leaks


async def _random_schedule(conc: int, extra: int, ops: list[tuple[str, int]]) -> None:
    b = bulkhead(conc, conc + extra)
    guarded = b(_hold)
    gates: list[asyncio.Event] = []
    tasks: list[asyncio.Task[Any]] = []
    arrivals: list[int] = []
    starts: list[int] = []
    inside = [0]

    async def call(i: int) -> None:
        arrivals.append(i)  # admission follows in this same step
        if i % 2:
            await guarded(i, gates[i], starts, inside)
        else:
            async with b:
                await _hold(i, gates[i], starts, inside)

    for op, k in ops:
        if op == "start":
            gates.append(asyncio.Event())
            tasks.append(asyncio.create_task(call(len(tasks))))
        elif op == "finish" and tasks:
            gates[k % len(tasks)].set()
        elif op == "cancel" and tasks:
            tasks[k % len(tasks)].cancel()
        else:
            await asyncio.sleep(0)
        assert inside[0] <= conc
        assert b.running <= conc
        assert b.running + b.queued <= conc + extra
        # No barging: a call waits only while every slot is taken (a slot handed to the head
        # waiter counts as taken), so a newcomer never overtakes the queue.
        assert b.queued == 0 or b.running == conc
    for gate in gates:
        gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(r is None or isinstance(r, (BulkheadFull, asyncio.CancelledError)) for r in results)
    assert state(b) == IDLE
    assert inside[0] == 0
    # Bodies start in arrival order, except that a waiter handed a slot runs a loop turn later
    # than a newcomer who found another slot free: so only check no call started twice.
    assert len(starts) == len(set(starts))
    assert b.stats()["admitted"] >= len(starts)


async def _hold(i: int, gate: asyncio.Event, starts: list[int], inside: list[int]) -> None:
    starts.append(i)
    inside[0] += 1
    try:
        await gate.wait()
    finally:
        inside[0] -= 1


@settings(max_examples=150, deadline=None)
@given(
    conc=st.integers(1, 3),
    extra=st.integers(0, 4),
    ops=st.lists(
        st.tuples(
            st.sampled_from(["start", "start", "finish", "cancel", "turn"]), st.integers(0, 50)
        ),
        max_size=60,
    ),
)
def test_random_schedules_of_real_tasks(conc: int, extra: int, ops: list[tuple[str, int]]) -> None:
    asyncio.run(_random_schedule(conc, extra, ops))


# ------------------------------------------------------------------------------------------
# The C engine against a Python model (queue, slots, counters), with real futures


class Model:
    def __init__(self, concurrency: int, capacity: int) -> None:
        self.concurrency = concurrency
        self.capacity = capacity
        self.holders = 0  # slots held by calls that run
        self.queue: list[int] = []  # waiter ids, FIFO
        self.state: dict[int, str] = {}  # queued / cancelled / granted / expired / gone
        self.full = self.admitted = self.waited = 0

    @property
    def granted(self) -> int:
        return sum(1 for s in self.state.values() if s == "granted")

    @property
    def running(self) -> int:
        return self.holders + self.granted

    def verdict(self) -> str:
        if self.running < self.concurrency and not self.queue:
            return "run"
        return "wait" if self.running + len(self.queue) < self.capacity else "full"

    def pass_on(self) -> None:
        """A slot's user ended: the slot goes to the first waiter still waiting, else frees."""
        while self.queue:
            head = self.queue.pop(0)
            if self.state[head] == "cancelled":
                self.state[head] = "gone"
                continue
            self.state[head] = "granted"
            self.admitted += 1
            return


class BulkheadMachine(RuleBasedStateMachine):
    waiters = Bundle("waiters")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.ids: dict[int, Any] = {}
        self.next_id = 0

    def teardown(self) -> None:
        self.loop.close()

    def call(self, fn: Callable[[], Any]) -> Any:
        async def inside() -> Any:
            return fn()

        return self.loop.run_until_complete(inside())

    @initialize(concurrency=st.integers(1, 3), queue=st.integers(0, 4))
    def make(self, concurrency: int, queue: int) -> None:
        self.b = bulkhead(concurrency, concurrency + queue)
        self.m = Model(concurrency, concurrency + queue)

    @rule(target=waiters)
    def enter(self) -> Any:
        """A call that may wait (the slow path's _enqueue)."""
        expected = self.m.verdict()
        try:
            w = self.call(self.b._enqueue)
        except BulkheadFull:
            assert expected == "full"
            self.m.full += 1
            return None
        if w is None:
            assert expected == "run"
            self.m.holders += 1
            self.m.admitted += 1
            return None
        assert expected == "wait"
        key = self.next_id
        self.next_id += 1
        self.ids[key] = w
        self.m.queue.append(key)
        self.m.state[key] = "queued"
        self.m.waited += 1
        return key

    @rule()
    def enter_now(self) -> None:
        """A call that runs only on a free slot (the fast path of __aenter__)."""
        expected = self.m.verdict()
        try:
            r = self.call(self.b.__aenter__)
        except BulkheadFull:
            assert expected == "full"
            self.m.full += 1
            return
        if inspect.iscoroutine(r):  # the slow path, which takes nothing until it runs
            assert expected == "wait"
            r.close()
            return
        assert expected == "run"
        self.m.holders += 1
        self.m.admitted += 1

    @precondition(lambda self: self.m.holders > 0)
    @rule()
    def finish(self) -> None:
        self.call(self.b._release)
        self.m.holders -= 1
        self.m.pass_on()

    @rule(key=waiters)
    def cancel_future(self, key: int | None) -> None:
        """The waiting task is cancelled; it has not run its handler yet."""
        if key is None:
            return
        self.ids[key].future.cancel()
        if self.m.state[key] == "queued":
            self.m.state[key] = "cancelled"

    @rule(key=consumes(waiters))
    def abandon(self, key: int | None) -> None:
        """The waiting task's handler runs (cancelled or closed)."""
        if key is None:
            return
        self.call(lambda: self.b._abandon(self.ids[key]))
        s = self.m.state[key]
        self.m.state[key] = "gone"
        if s in ("queued", "cancelled"):
            self.m.queue.remove(key)
        elif s == "granted":
            self.m.pass_on()

    @rule(key=waiters)
    def expire(self, key: int | None) -> None:
        if key is None:
            return
        self.call(lambda: self.b._expire(self.ids[key]))
        if self.m.state[key] in ("queued", "cancelled"):
            self.m.queue.remove(key)
            self.m.state[key] = "expired" if self.m.state[key] == "queued" else "gone"

    @rule(key=consumes(waiters))
    def resume(self, key: int | None) -> None:
        """A served waiter's task resumes: its call now holds the slot as a runner."""
        if key is None or self.m.state[key] != "granted":
            return
        assert self.ids[key].future.result() is True
        self.m.state[key] = "gone"
        self.m.holders += 1

    @invariant()
    def agrees(self) -> None:
        if not hasattr(self, "b"):
            return
        assert (self.b.running, self.b.queued) == (self.m.running, len(self.m.queue))
        assert self.b.running <= self.m.concurrency
        assert self.b.running + self.b.queued <= self.m.capacity
        stats = self.b.stats()
        assert (stats["full"], stats["admitted"], stats["waited"]) == (
            self.m.full,
            self.m.admitted,
            self.m.waited,
        )
        for key, s in self.m.state.items():
            fut = self.ids[key].future
            if s == "granted":
                assert fut.result() is True
            elif s == "expired":
                assert fut.result() is False
            elif s == "queued":
                assert not fut.done()


BulkheadMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)
TestBulkheadMachine = BulkheadMachine.TestCase
