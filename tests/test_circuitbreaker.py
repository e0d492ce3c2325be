"""Circuit breaker: states, detection modes, probes, cancellation, both forms, listeners, stats,
validation, stacking, and the C engine checked against a Python model."""

from __future__ import annotations

import asyncio
import logging
import math
import pickle
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
)

from failsafe import _native, events
from failsafe.circuitbreaker import (
    BreakerFailing,
    BreakerListener,
    BreakerState,
    CircuitBreaker,
    circuitbreaker,
    consecutive_breaker,
    register_breaker_listener,
)
from failsafe.circuitbreaker import exceptions as cb_exceptions
from failsafe.circuitbreaker._options import BreakerOptions
from failsafe.exceptions import FailsafeError
from failsafe.fallback import fallback
from failsafe.retry import AttemptsExceeded, retry
from failsafe.testing import FakeClock
from failsafe.timeout import TimeoutError as FsTimeoutError
from failsafe.timeout import timeout

S = 1_000_000_000


class Boom(Exception):
    pass


class Other(Exception):
    pass


async def ok() -> str:
    return "ok"


async def boom() -> str:
    raise Boom("boom")


def guarded(breaker: CircuitBreaker) -> Callable[[Callable[[], Awaitable[str]]], Awaitable[str]]:
    """A guarded function running whatever coroutine function it is given."""

    @breaker
    async def run(body: Callable[[], Awaitable[str]]) -> str:
        return await body()

    return run


async def fail_n(run: Any, n: int) -> None:
    for _ in range(n):
        with pytest.raises(Boom):
            await run(boom)


# ------------------------------------------------------------------------------------------
# States and transitions


async def test_consecutive_opens_rejects_recovers_closes(clock: FakeClock) -> None:
    br = consecutive_breaker(Boom, 3, 10, 2)
    run = guarded(br)
    await fail_n(run, 2)
    assert await run(ok) == "ok"  # a success ends the run of failures
    await fail_n(run, 2)
    assert br.state == "working"
    await fail_n(run, 1)
    assert br.state is BreakerState.failing
    clock.advance(4)
    with pytest.raises(BreakerFailing) as info:
        await run(ok)
    assert info.value.retry_after == pytest.approx(6.0)
    assert str(info.value) == "Circuit Breaker is in the failing state"
    clock.advance(6)
    assert br.state == "failing"  # the move to recovering waits for a call
    assert await run(ok) == "ok"
    assert br.state == "recovering"
    assert await run(ok) == "ok"
    assert br.state == "working"
    stats = br.stats()
    assert stats["transition.failing"] == 1
    assert stats["transition.recovering"] == 1
    assert stats["transition.working"] == 1
    assert stats["success"] == 3
    assert stats["failure"] == 5
    assert stats["rejected"] == 1


async def test_failed_probe_reopens_with_a_new_break(clock: FakeClock) -> None:
    br = consecutive_breaker(Boom, 1, 5, 2)
    run = guarded(br)
    await fail_n(run, 1)
    clock.advance(5)
    assert await run(ok) == "ok"
    await fail_n(run, 1)
    assert br.state == "failing"
    assert br.stats()["retry_after"] == pytest.approx(5.0)
    assert br.stats()["transition.failing"] == 2


async def test_recovery_backoff_grows_and_caps(clock: FakeClock) -> None:
    br = circuitbreaker(
        on=Boom,
        failure_threshold=1,
        recovery_time=1,
        recovery_backoff=3,
        max_recovery_time=5,
        recovery_threshold=1,
    )
    run = guarded(br)
    breaks = []
    await fail_n(run, 1)
    for _ in range(4):
        breaks.append(br.stats()["retry_after"])
        clock.advance(breaks[-1])
        await fail_n(run, 1)  # the probe fails: reopen
    assert breaks == [1.0, 3.0, 5.0, 5.0]
    clock.advance(5)
    assert await run(ok) == "ok"
    assert br.state == "working"
    await fail_n(run, 1)
    assert br.stats()["retry_after"] == 1.0  # a close starts the growth over


async def test_zero_recovery_time_probes_at_once(clock: FakeClock) -> None:
    br = consecutive_breaker(Boom, 1, 0, 1)
    run = guarded(br)
    await fail_n(run, 1)
    assert br.state == "failing"
    assert await run(ok) == "ok"
    assert br.state == "working"


async def test_non_matching_exceptions_change_nothing(clock: FakeClock) -> None:
    br = consecutive_breaker(Boom, 2, 10, 1)
    run = guarded(br)

    async def other() -> str:
        raise Other("x")

    await fail_n(run, 1)
    with pytest.raises(Other):
        await run(other)
    assert br.stats()["consecutive_failures"] == 1  # neither a success nor a failure
    await fail_n(run, 1)
    assert br.state == "failing"
    clock.advance(10)
    with pytest.raises(Other):
        await run(other)  # a probe ending so frees its slot and decides nothing
    assert br.state == "recovering"
    assert br.stats()["probes_in_flight"] == 0
    assert await run(ok) == "ok"
    assert br.state == "working"
    assert br.stats()["success"] == 1
    assert br.stats()["failure"] == 2


async def test_predicate_on(clock: FakeClock) -> None:
    br = circuitbreaker(on=lambda e: "count" in str(e), failure_threshold=1)

    @br
    async def f(msg: str) -> None:
        raise ValueError(msg)

    with pytest.raises(ValueError, match="ignore"):
        await f("ignore")
    assert br.state == "working"
    with pytest.raises(ValueError, match="count me"):
        await f("count me")
    assert br.state == "failing"


async def test_raising_predicate_wins_and_frees_the_probe(clock: FakeClock) -> None:
    def pred(e: BaseException) -> bool:
        raise RuntimeError("predicate bug")

    br = circuitbreaker(on=pred, failure_threshold=1, recovery_time=1, recovery_threshold=1)
    run = guarded(br)
    with pytest.raises(RuntimeError) as info:
        await run(boom)
    assert isinstance(info.value.__context__, Boom)
    assert br.state == "working"


async def test_stale_outcomes_change_nothing(clock: FakeClock) -> None:
    br = consecutive_breaker(Boom, 1, 10, 1)
    run = guarded(br)
    gate = asyncio.Event()

    async def slow_fail() -> str:
        await gate.wait()
        raise Boom("late")

    late = asyncio.create_task(run(slow_fail))
    await asyncio.sleep(0)
    await fail_n(run, 1)
    clock.advance(10)
    assert await run(ok) == "ok"
    assert br.state == "working"
    gate.set()
    with pytest.raises(Boom):
        await late  # admitted in an earlier period: its failure is not counted against now
    assert br.state == "working"
    assert br.stats()["consecutive_failures"] == 0
    assert br.stats()["failure"] == 2  # the metric still counts it


# ------------------------------------------------------------------------------------------
# Windows and slow calls


async def test_count_window(clock: FakeClock) -> None:
    br = circuitbreaker(on=Boom, failure_rate=0.5, window_calls=4, min_calls=4)
    run = guarded(br)
    await fail_n(run, 3)
    assert br.state == "working"  # below min_calls
    assert br.stats()["window_failures"] == 3
    assert await run(ok) == "ok"  # 3 of 4
    assert br.state == "failing"
    assert br.stats()["window_calls"] == 0  # a new period starts empty


async def test_count_window_slides(clock: FakeClock) -> None:
    br = circuitbreaker(on=Boom, failure_rate=0.5, window_calls=4, min_calls=4)
    run = guarded(br)
    await fail_n(run, 1)
    for _ in range(3):
        await run(ok)
    await run(ok)  # the failure leaves the window
    assert br.stats()["window_failures"] == 0
    await fail_n(run, 1)
    assert br.state == "working"
    await fail_n(run, 1)
    assert br.state == "failing"  # 2 of the last 4


async def test_time_window(clock: FakeClock) -> None:
    br = circuitbreaker(on=Boom, failure_rate=0.5, window_time=10, window_buckets=10, min_calls=3)
    run = guarded(br)
    await fail_n(run, 2)
    clock.advance(10)  # the failures of bucket 0 left the window
    await run(ok)
    assert br.stats()["window_calls"] == 1
    assert br._holds_state() is False
    await fail_n(run, 1)
    assert br._holds_state() is True
    assert br.state == "working"  # 1 of 2: below min_calls
    await fail_n(run, 1)
    assert br.state == "failing"  # 2 of 3


async def test_slow_calls_are_failures(clock: FakeClock) -> None:
    br = circuitbreaker(on=Boom, failure_threshold=2, slow_call_duration=1.0, recovery_time=5)
    run = guarded(br)

    def taking(seconds: float) -> Callable[[], Awaitable[str]]:
        async def body() -> str:
            clock.advance(seconds)
            return "done"

        return body

    assert await run(taking(0.5)) == "done"
    assert await run(taking(1.0)) == "done"  # slow: a failure
    assert br.stats()["consecutive_failures"] == 1
    assert await run(taking(2.0)) == "done"
    assert br.state == "failing"
    clock.advance(5)
    assert await run(taking(3.0)) == "done"  # a slow probe is a failed probe
    assert br.state == "failing"


async def test_slow_call_rate(clock: FakeClock) -> None:
    br = circuitbreaker(
        on=Boom,
        failure_rate=1.0,
        window_calls=4,
        min_calls=4,
        slow_call_duration=1,
        slow_call_rate=0.75,
    )

    async def body(seconds: float) -> str:
        clock.advance(seconds)
        return "done"

    @br
    async def f(seconds: float) -> str:
        return await body(seconds)

    for seconds in (1, 1, 0):
        await f(seconds)
    assert br.stats()["window_slow_calls"] == 2
    assert br.stats()["window_failures"] == 0
    assert br.state == "working"
    await f(1)
    assert br.state == "failing"


async def test_slow_call_in_async_with(clock: FakeClock) -> None:
    br = circuitbreaker(failure_threshold=1, slow_call_duration=1)
    async with br:
        clock.advance(0.5)
    assert br.state == "working"
    async with br:
        clock.advance(1)
    assert br.state == "failing"


# ------------------------------------------------------------------------------------------
# Half-open probes, concurrency and cancellation


async def open_then_recover(br: CircuitBreaker, clock: FakeClock, run: Any) -> None:
    await fail_n(run, br.stats()["consecutive_failures"] or 1)
    assert br.state == "failing"
    clock.advance(br.recovery_time)


async def test_probe_limit_under_1000_concurrent_tasks(clock: FakeClock) -> None:
    br = circuitbreaker(on=Boom, failure_threshold=1, recovery_time=1, recovery_threshold=5)
    run = guarded(br)
    await fail_n(run, 1)
    clock.advance(1)
    gate = asyncio.Event()
    started = 0

    async def probe() -> str:
        nonlocal started
        started += 1
        await gate.wait()
        return "ok"

    tasks = [asyncio.create_task(run(probe)) for _ in range(1000)]
    await asyncio.sleep(0)
    assert started == 5  # half_open_max_calls defaults to recovery_threshold
    assert br.stats()["probes_in_flight"] == 5
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results.count("ok") == 5
    assert sum(isinstance(r, BreakerFailing) for r in results) == 995
    assert all(r.retry_after is None for r in results if isinstance(r, BreakerFailing))
    assert br.state == "working"
    assert br.stats()["rejected"] == 995
    assert br.stats()["probes_in_flight"] == 0


async def test_1000_concurrent_calls_closed() -> None:
    br = circuitbreaker(on=Boom, failure_rate=0.5, window_calls=100)

    @br
    async def f(i: int) -> int:
        await asyncio.sleep(0)
        if i % 4 == 0:
            raise Boom(i)
        return i

    results = await asyncio.gather(*(f(i) for i in range(1000)), return_exceptions=True)
    assert sum(isinstance(r, Boom) for r in results) == 250
    stats = br.stats()
    assert stats["success"] == 750
    assert stats["failure"] == 250
    assert br.state == "working"
    assert stats["window_calls"] == 100
    assert stats["window_failures"] == 25


async def test_cancelled_probe_frees_its_slot(clock: FakeClock) -> None:
    br = consecutive_breaker(Boom, 1, 1, 1, half_open_max_calls=1)
    run = guarded(br)
    await fail_n(run, 1)
    clock.advance(1)

    async def forever() -> str:
        await asyncio.Event().wait()
        return "never"

    task = asyncio.create_task(run(forever))
    await asyncio.sleep(0)
    assert br.stats()["probes_in_flight"] == 1
    with pytest.raises(BreakerFailing):
        await run(ok)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert br.state == "recovering"
    assert br.stats()["probes_in_flight"] == 0
    assert br.stats()["success"] == 0
    assert br.stats()["failure"] == 1
    assert await run(ok) == "ok"
    assert br.state == "working"


async def test_cancelled_probe_in_async_with_frees_its_slot(clock: FakeClock) -> None:
    br = consecutive_breaker(Boom, 1, 1, 1, half_open_max_calls=1)
    with pytest.raises(Boom):
        async with br:
            raise Boom
    clock.advance(1)
    entered = asyncio.Event()

    async def hold() -> None:
        async with br:
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(hold())
    await entered.wait()
    with pytest.raises(BreakerFailing):
        async with br:
            pass
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert br.stats()["probes_in_flight"] == 0
    assert br._entries == {}
    async with br:
        pass
    assert br.state == "working"


async def test_cancelled_closed_call_records_nothing() -> None:
    br = consecutive_breaker(Boom, 1)
    run = guarded(br)

    async def forever() -> str:
        await asyncio.Event().wait()
        return "never"

    task = asyncio.create_task(run(forever))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert br.stats()["success"] == 0
    assert br.stats()["failure"] == 0
    assert br.state == "working"


async def test_unawaited_and_bad_argument_probes_free_their_slot(clock: FakeClock) -> None:
    br = consecutive_breaker(Boom, 1, 1, 1, half_open_max_calls=1)

    @br
    async def f(x: int) -> int:
        if x < 0:
            raise Boom
        return x

    with pytest.raises(Boom):
        await f(-1)
    clock.advance(1)
    call = f(1)  # takes the probe slot
    assert br.stats()["probes_in_flight"] == 1
    call.close()  # never awaited
    assert br.stats()["probes_in_flight"] == 0
    with pytest.raises(TypeError):
        f()  # type: ignore[call-arg]  # fn fails synchronously: the admission is given back
    assert br.stats()["probes_in_flight"] == 0
    assert await f(2) == 2
    assert br.state == "working"


async def test_throw_into_a_probe(clock: FakeClock) -> None:
    br = consecutive_breaker(Boom, 1, 1, 1)
    run = guarded(br)
    await fail_n(run, 1)
    clock.advance(1)
    gate = asyncio.Event()

    async def wait() -> str:
        await gate.wait()
        return "ok"

    coro = run(wait)
    fut = coro.send(None)  # suspended inside the probe
    assert fut is not None
    with pytest.raises(Boom):
        coro.throw(Boom("thrown"))
    assert br.state == "failing"  # the probe failed with a matching exception


async def test_rejection_is_raised_when_awaited(clock: FakeClock) -> None:
    br = consecutive_breaker(Boom, 1, 10)
    run = guarded(br)
    await fail_n(run, 1)
    call = run(ok)  # no exception yet: as an async def, the call fails when awaited
    assert asyncio.iscoroutine(call)
    with pytest.raises(BreakerFailing):
        await call
    with pytest.raises(RuntimeError, match="reuse"):
        await call
    unawaited = run(ok)
    unawaited.close()  # no "never awaited" warning (warnings are errors here)
    with pytest.raises(BreakerFailing):
        await asyncio.create_task(run(ok))
    thrown = run(ok)
    with pytest.raises(KeyError):
        thrown.throw(KeyError("in"))
    assert br.stats()["rejected"] == 4


# ------------------------------------------------------------------------------------------
# async with


async def test_async_with_form(clock: FakeClock) -> None:
    br = consecutive_breaker(Boom, 2, 10, 1)
    async with br as same:
        assert same is br
    for _ in range(2):
        with pytest.raises(Boom):
            async with br:
                raise Boom
    with pytest.raises(BreakerFailing) as info:
        async with br:
            raise AssertionError("not entered")
    assert info.value.retry_after == 10.0
    clock.advance(10)
    with pytest.raises(Other):
        async with br:
            raise Other  # changes nothing, frees the probe
    assert br.state == "recovering"
    async with br:
        pass
    assert br.state == "working"
    assert br.stats()["success"] == 2
    assert br.stats()["failure"] == 2
    assert br._entries == {}


async def test_async_with_nested_and_shared_with_decorator(clock: FakeClock) -> None:
    br = consecutive_breaker(Boom, 3)
    run = guarded(br)

    async def nested() -> None:
        async with br, br:
            await run(boom)

    with pytest.raises(Boom):
        await nested()
    assert br.stats()["failure"] == 3  # one per layer: the third opens it
    assert br.state == "failing"


async def test_async_with_entries_are_per_task(clock: FakeClock) -> None:
    br = circuitbreaker(on=Boom, failure_threshold=2, slow_call_duration=3)
    a_in, b_in, a_out = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def a() -> None:
        async with br:  # enters at 0 s, leaves at 6 s: slow
            a_in.set()
            await a_out.wait()

    async def b() -> None:
        await a_in.wait()
        clock.advance(5)
        async with br:  # enters at 5 s, leaves at 6 s: fast
            b_in.set()
            await a_out.wait()
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(a()), asyncio.create_task(b())]
    await b_in.wait()
    clock.advance(1)
    a_out.set()
    await asyncio.gather(*tasks)
    # a's slow call (a failure for the breaker), then b's fast one: the run of failures is
    # over. Swapped start times would leave one failure.
    assert br.stats()["consecutive_failures"] == 0
    assert br.stats()["success"] == 2  # the metrics say how calls ended: both returned
    assert br._entries == {}


def test_async_with_driven_by_hand() -> None:
    br = consecutive_breaker(Boom, 1)

    async def block() -> None:
        async with br:
            raise Boom

    coro = block()
    with pytest.raises(Boom):
        coro.send(None)
    assert br.state == "failing"
    assert br._entries == {}


async def test_aexit_wants_an_exception_instance() -> None:
    br = consecutive_breaker()
    await br.__aenter__()
    with pytest.raises(TypeError, match="exc"):
        await br.__aexit__(Boom, Boom, None)  # type: ignore[arg-type]
    assert br._entries == {}


async def test_aexit_without_aenter() -> None:
    br = consecutive_breaker()
    with pytest.raises(RuntimeError, match="without a matching __aenter__"):
        await br.__aexit__(None, None, None)


# ------------------------------------------------------------------------------------------
# isolate / reset


async def test_isolate_and_reset(clock: FakeClock) -> None:
    br = consecutive_breaker(Boom, 2, 1)
    run = guarded(br)
    await fail_n(run, 1)
    br.isolate()
    assert br.state == "failing"
    assert br.stats()["isolated"] is True
    clock.advance(1000)
    with pytest.raises(BreakerFailing) as info:
        await run(ok)
    assert info.value.retry_after is None
    assert br.state == "failing"  # no recovery while isolated
    br.reset()
    assert br.state == "working"
    assert br.stats()["isolated"] is False
    assert br.stats()["consecutive_failures"] == 0
    assert await run(ok) == "ok"
    br.reset()  # already working: no transition
    assert br.stats()["transition.working"] == 1
    assert br.stats()["transition.failing"] == 1


async def test_holds_state(clock: FakeClock) -> None:
    br = consecutive_breaker(Boom, 3, 1, 1)
    run = guarded(br)
    assert br._holds_state() is False
    await run(ok)
    assert br._holds_state() is False
    await fail_n(run, 1)
    assert br._holds_state() is True
    await run(ok)
    assert br._holds_state() is False
    br.isolate()
    assert br._holds_state() is True
    br.reset()
    assert br._holds_state() is False


# ------------------------------------------------------------------------------------------
# Listeners


class Recorder(BreakerListener):
    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []

    def on_working(self, breaker: CircuitBreaker, current: BreakerState, nxt: BreakerState) -> None:
        self.seen.append(("working", current.name, nxt.name))

    def on_recovering(
        self, breaker: CircuitBreaker, current: BreakerState, nxt: BreakerState
    ) -> None:
        self.seen.append(("recovering", current.NAME, nxt.NAME))

    def on_failing(self, breaker: CircuitBreaker, current: BreakerState, nxt: BreakerState) -> None:
        self.seen.append(("failing", str(current), str(nxt)))

    def on_success(self, breaker: CircuitBreaker, state: BreakerState) -> None:
        self.seen.append(("success", state.name))

    def on_failure(self, breaker: CircuitBreaker, exception: BaseException, state: Any) -> None:
        self.seen.append(("failure", type(exception).__name__, state.name))

    def on_rejected(self, breaker: CircuitBreaker, state: BreakerState) -> None:
        self.seen.append(("rejected", state.name))


class Exploding(BreakerListener):
    def on_success(self, breaker: CircuitBreaker, state: BreakerState) -> None:
        raise RuntimeError("listener bug")

    def on_failing(self, breaker: CircuitBreaker, current: BreakerState, nxt: BreakerState) -> None:
        raise RuntimeError("listener bug")


async def test_local_listeners_and_event_order(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder()
    br = consecutive_breaker(Boom, 1, 1, 1, listeners=[Exploding(), rec], name="svc")
    run = guarded(br)
    with caplog.at_level(logging.ERROR, logger="failsafe"):
        assert await run(ok) == "ok"
        await fail_n(run, 1)
        with pytest.raises(BreakerFailing):
            await run(ok)
        clock.advance(1)
        assert await run(ok) == "ok"
        br.isolate()
        br.reset()
    assert rec.seen == [
        ("success", "working"),
        ("failure", "Boom", "working"),
        ("failing", "working", "failing"),
        ("rejected", "failing"),
        ("recovering", "failing", "recovering"),
        ("success", "recovering"),  # before the transition it causes, as failsafe-py did
        ("working", "recovering", "working"),
        ("failing", "working", "failing"),
        ("working", "failing", "working"),
    ]
    assert "listener bug" in caplog.text
    assert br.state == "working"
    assert br.name == "svc"


async def test_global_listener_reaches_existing_breakers(global_listeners: None) -> None:
    br = consecutive_breaker(Boom, 1, name="early")
    rec = Recorder()
    register_breaker_listener(rec)
    run = guarded(br)
    await fail_n(run, 1)
    assert rec.seen == [("failure", "Boom", "working"), ("failing", "working", "failing")]


async def test_async_listener() -> None:
    seen: list[str] = []

    class AsyncListener:
        async def on_failing(self, breaker: CircuitBreaker, *states: BreakerState) -> None:
            await asyncio.sleep(0)
            seen.append(breaker.name)

    br = consecutive_breaker(Boom, 1, name="a", listeners=[AsyncListener()])
    await fail_n(guarded(br), 1)
    await events.get_event_manager().wait_for_tasks()
    assert seen == ["a"]


async def test_no_listener_work_when_nobody_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    br = consecutive_breaker(Boom, 1)
    calls: list[Any] = []
    monkeypatch.setattr(CircuitBreaker, "_events", lambda *a: calls.append(a))
    await fail_n(guarded(br), 1)
    assert calls == []


# ------------------------------------------------------------------------------------------
# Stacking, methods, guards


@pytest.mark.parametrize("breaker_outside", [True, False])
async def test_stacking_with_retry(clock: FakeClock, breaker_outside: bool) -> None:
    br = consecutive_breaker(Boom, 2, 10, 1)
    rt = retry(on=Boom, attempts=3, backoff=0)
    calls = 0

    async def f() -> str:
        nonlocal calls
        calls += 1
        raise Boom

    g = br(rt(f)) if breaker_outside else rt(br(f))
    if breaker_outside:
        with pytest.raises(AttemptsExceeded):
            await g()
        assert calls == 4  # one breaker call, four attempts inside it
        assert br.stats()["failure"] == 0  # AttemptsExceeded is not a Boom
        assert br.state == "working"
    else:
        with pytest.raises(BreakerFailing):
            await g()  # the third attempt is rejected, and retry does not retry that
        assert calls == 2
        assert br.state == "failing"


@pytest.mark.parametrize("breaker_outside", [True, False])
async def test_stacking_with_timeout(breaker_outside: bool) -> None:
    br = circuitbreaker(on=TimeoutError, failure_threshold=1)
    tm = timeout(0)

    async def slow() -> None:
        await asyncio.sleep(10)

    g = br(tm(slow)) if breaker_outside else tm(br(slow))
    with pytest.raises(FsTimeoutError):
        await g()
    # Outside, the breaker sees the TimeoutError; inside, it sees the cancellation only.
    assert br.state == ("failing" if breaker_outside else "working")
    assert br.stats()["failure"] == (1 if breaker_outside else 0)


@pytest.mark.parametrize("breaker_outside", [True, False])
async def test_stacking_with_fallback(breaker_outside: bool) -> None:
    br = consecutive_breaker(Boom, 1)
    fb = fallback("fallback")
    g = br(fb(boom)) if breaker_outside else fb(br(boom))
    assert await g() == "fallback"
    if breaker_outside:
        assert br.stats()["success"] == 1  # the fallback answered
    else:
        assert br.state == "failing"
        assert await g() == "fallback"  # the rejection is handled too
        assert br.stats()["rejected"] == 1


async def test_on_methods_sharing_one_breaker() -> None:
    br = consecutive_breaker(Boom, 2)

    class Client:
        def __init__(self) -> None:
            self.calls = 0

        @br
        async def get(self, x: int) -> int:
            self.calls += 1
            if x < 0:
                raise Boom
            return x

        @br
        async def put(self) -> None:
            raise Boom

    c = Client()
    assert await c.get(3) == 3
    with pytest.raises(Boom):
        await c.get(-1)
    with pytest.raises(Boom):
        await c.put()
    with pytest.raises(BreakerFailing):
        await c.get(1)
    assert c.calls == 2


def test_decorating_a_sync_function_is_refused() -> None:
    def sync() -> None:
        pass

    with pytest.raises(TypeError, match="async"):
        consecutive_breaker()(sync)  # type: ignore[arg-type]


def test_guard_looks_like_the_function() -> None:
    import inspect

    br = consecutive_breaker()

    @br
    async def fetch(x: int) -> int:
        """Doc."""
        return x

    assert inspect.iscoroutinefunction(fetch)
    assert fetch.__name__ == "fetch"
    assert fetch.__doc__ == "Doc."
    assert br.name.endswith("fetch")


# ------------------------------------------------------------------------------------------
# API surface


def test_breaker_failing() -> None:
    assert issubclass(BreakerFailing, FailsafeError)
    assert cb_exceptions.BreakerFailing is BreakerFailing
    e = BreakerFailing()
    assert str(e) == ""
    assert e.retry_after is None
    e = BreakerFailing("m", retry_after=1.5)
    assert e.retry_after == 1.5 == e.retry_after_seconds
    assert BreakerFailing(message="kw").args == ("kw",)
    e.add_note("note")
    copy = pickle.loads(pickle.dumps(e))
    assert type(copy) is BreakerFailing
    assert copy.args == ("m",)
    assert copy.retry_after == 1.5
    assert copy.__notes__ == ["note"]
    with pytest.raises(TypeError):
        BreakerFailing("m", 1.5)  # type: ignore[misc]


def test_state_enum() -> None:
    assert BreakerState.working == "working"
    assert BreakerState("failing") is BreakerState.failing
    assert BreakerState.recovering.name == BreakerState.recovering.NAME == "recovering"


def test_stats_and_repr(clock: FakeClock) -> None:
    br = circuitbreaker(on=Boom, failure_rate=0.5, window_time=60, name="pay")
    stats = br.stats()
    assert stats == {
        "name": "pay",
        "transition.working": 0,
        "transition.recovering": 0,
        "transition.failing": 0,
        "success": 0,
        "failure": 0,
        "rejected": 0,
        "state": "working",
        "isolated": False,
        "mode": "time_window",
        "consecutive_failures": 0,
        "window_calls": 0,
        "window_failures": 0,
        "window_slow_calls": 0,
        "probes_in_flight": 0,
        "probe_successes": 0,
        "retry_after": None,
    }
    assert repr(br) == (
        "<circuitbreaker 'pay' state=working mode=time_window success=0 failure=0 rejected=0>"
    )


def test_consecutive_breaker_signature_and_aliases(clock: FakeClock) -> None:
    br = consecutive_breaker(ValueError, 2, 7, 4, None, "legacy", None)
    assert br.name == "legacy"
    assert br.recovery_time == 7.0
    br = consecutive_breaker(on=KeyError, failure_threshold=1, recovery_time=3)
    assert br.recovery_time == 3.0
    with pytest.raises(TypeError, match="exceptions or on"):
        consecutive_breaker(ValueError, on=KeyError)
    with pytest.raises(TypeError, match="recovery_time_secs or recovery_time"):
        consecutive_breaker(recovery_time_secs=1, recovery_time=2)
    with pytest.raises(ValueError, match="recovery_time_secs"):
        consecutive_breaker(recovery_time_secs=-1)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"on": 3}, TypeError, "on"),
        ({"on": ()}, ValueError, "on"),
        ({"on": int}, TypeError, "on"),
        ({"failure_threshold": 0}, ValueError, "failure_threshold"),
        ({"failure_threshold": 1.5}, TypeError, "failure_threshold"),
        ({"failure_threshold": True}, TypeError, "failure_threshold"),
        ({"failure_rate": 0}, ValueError, "failure_rate"),
        ({"failure_rate": 1.5}, ValueError, "failure_rate"),
        ({"failure_rate": math.nan}, ValueError, "failure_rate"),
        ({"failure_rate": "0.5"}, TypeError, "failure_rate"),
        ({"failure_rate": 0.5, "failure_threshold": 3}, ValueError, "failure_threshold"),
        ({"window_calls": 10}, ValueError, "window_calls needs failure_rate"),
        ({"min_calls": 10}, ValueError, "min_calls needs failure_rate"),
        ({"failure_rate": 0.5, "window_calls": 0}, ValueError, "window_calls"),
        ({"failure_rate": 0.5, "window_calls": 10**7}, ValueError, "window_calls"),
        ({"failure_rate": 0.5, "window_calls": 5, "min_calls": 6}, ValueError, "min_calls"),
        ({"failure_rate": 0.5, "min_calls": 0}, ValueError, "min_calls"),
        ({"failure_rate": 0.5, "window_calls": 5, "window_time": 1}, ValueError, "exclude"),
        ({"failure_rate": 0.5, "window_time": 0}, ValueError, "window_time"),
        ({"failure_rate": 0.5, "window_time": math.inf}, ValueError, "window_time"),
        ({"failure_rate": 0.5, "window_time": 1, "window_buckets": 0}, ValueError, "buckets"),
        ({"failure_rate": 0.5, "window_time": 1e-9, "window_buckets": 2}, ValueError, "window"),
        ({"slow_call_duration": 0}, ValueError, "slow_call_duration"),
        ({"slow_call_duration": -1}, ValueError, "slow_call_duration"),
        ({"failure_rate": 0.5, "slow_call_rate": 0.5}, ValueError, "slow_call_duration"),
        ({"slow_call_duration": 1, "slow_call_rate": 0.5}, ValueError, "failure_rate"),
        (
            {"failure_rate": 0.5, "slow_call_duration": 1, "slow_call_rate": 2},
            ValueError,
            "slow_call_rate",
        ),
        ({"recovery_time": -1}, ValueError, "recovery_time"),
        ({"recovery_time": math.inf}, ValueError, "recovery_time"),
        ({"recovery_time": 1e10}, ValueError, "recovery_time"),
        ({"recovery_time": None}, TypeError, "recovery_time"),
        ({"recovery_threshold": 0}, ValueError, "recovery_threshold"),
        ({"half_open_max_calls": 0}, ValueError, "half_open_max_calls"),
        ({"recovery_backoff": 0.5}, ValueError, "recovery_backoff"),
        ({"recovery_backoff": math.nan}, ValueError, "recovery_backoff"),
        ({"max_recovery_time": 1, "recovery_time": 2}, ValueError, "max_recovery_time"),
        ({"name": "1bad"}, ValueError, "name"),
        ({"name": 3}, TypeError, "name"),
        ({"listeners": 3}, TypeError, "listeners"),
        ({"event_manager": 3}, TypeError, "event_manager"),
    ],
)
def test_validation(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        circuitbreaker(**kwargs)


def test_async_predicate_is_refused() -> None:
    async def pred(e: BaseException) -> bool:
        return True

    with pytest.raises(TypeError, match="sync predicate"):
        circuitbreaker(on=pred)


# ------------------------------------------------------------------------------------------
# The C engine against a Python model


class Model:
    """The breaker's specification in plain Python (fs_breaker.h), in nanoseconds."""

    WORKING, RECOVERING, FAILING = 0, 1, 2

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.state = self.WORKING
        self.isolated = False
        self.epoch = 0
        self.openings = 0
        self.break_ns = 0.0
        self.open_until = 0
        self.counters = [0] * 6
        self._clear()

    def _clear(self) -> None:
        self.consecutive = 0
        self.window: deque[tuple[int, bool, bool]] = deque()  # (bucket index, failure, slow)
        self.probes = 0
        self.successes = 0

    def _live(self, now: int) -> list[tuple[int, bool, bool]]:
        if self.cfg["mode"] != 2:
            return list(self.window)
        bucket = self.cfg["window_ns"] // self.cfg["window_size"]
        oldest = now // bucket - self.cfg["window_size"]
        return [e for e in self.window if e[0] > oldest]

    def figures(self, now: int) -> tuple[int, int, int]:
        live = self._live(now)
        return len(live), sum(e[1] for e in live), sum(e[2] for e in live)

    def _to_failing(self, now: int) -> None:
        self.state = self.FAILING
        self.epoch += 1
        self.openings += 1
        cap = float(self.cfg["max_recovery_ns"])
        if self.openings <= 1:
            self.break_ns = float(self.cfg["recovery_ns"])
        elif self.break_ns < cap:
            self.break_ns *= self.cfg["recovery_growth"]
        if self.break_ns >= cap:
            self.break_ns = cap
        self.open_until = min(now + int(self.break_ns), 2**63 - 1)
        self._clear()
        self.counters[2] += 1

    def _to_working(self) -> None:
        self.state = self.WORKING
        self.epoch += 1
        self.openings = 0
        self._clear()
        self.counters[0] += 1

    def retry_after(self, now: int) -> int:
        if self.state != self.FAILING or self.isolated:
            return -1
        return max(0, self.open_until - now)

    def acquire(self, now: int) -> tuple[str, int]:
        if self.state == self.FAILING and not self.isolated and now >= self.open_until:
            self.state = self.RECOVERING
            self.epoch += 1
            self._clear()
            self.counters[1] += 1
        if self.state == self.WORKING:
            return "admitted", self.epoch << 1
        if self.state == self.RECOVERING and self.probes < self.cfg["half_open_max_calls"]:
            self.probes += 1
            return "probe", self.epoch << 1 | 1
        self.counters[5] += 1
        return "rejected", self.retry_after(now)

    def end(self, token: int, outcome: str, duration: int, now: int) -> None:
        current = token >> 1 == self.epoch
        probe = bool(token & 1)
        if outcome == "ignored":
            if current and probe:
                self.probes -= 1
            return
        failure = outcome == "failure"
        self.counters[4 if failure else 3] += 1
        if not current:
            return
        slow = not failure and self.cfg["slow_ns"] > 0 and duration >= self.cfg["slow_ns"]
        if probe:
            self.probes -= 1
            if failure or slow:
                self._to_failing(now)
            else:
                self.successes += 1
                if self.successes >= self.cfg["recovery_threshold"]:
                    self._to_working()
            return
        if slow and self.cfg["slow_rate"] == 0:
            failure, slow = True, False
        mode = self.cfg["mode"]
        if mode == 0:
            if failure:
                self.consecutive += 1
                if self.consecutive >= self.cfg["failure_threshold"]:
                    self._to_failing(now)
            else:
                self.consecutive = 0
            return
        if mode == 1:
            self.window.append((0, failure, slow))
            if len(self.window) > self.cfg["window_size"]:
                self.window.popleft()
        else:
            bucket = self.cfg["window_ns"] // self.cfg["window_size"]
            self.window = deque(self._live(now))
            self.window.append((now // bucket, failure, slow))
        calls, failures, slows = self.figures(now)
        if calls >= self.cfg["min_calls"] and (
            failures / calls >= self.cfg["failure_rate"]
            or (self.cfg["slow_rate"] > 0 and slows / calls >= self.cfg["slow_rate"])
        ):
            self._to_failing(now)

    def isolate(self, now: int) -> None:
        self.isolated = True
        if self.state != self.FAILING:
            self.state = self.FAILING
            self.epoch += 1
            self.open_until = now
            self._clear()
            self.counters[2] += 1

    def reset(self) -> None:
        was_working = self.state == self.WORKING
        self.isolated = False
        self._to_working()
        if was_working:
            self.counters[0] -= 1


configs = st.one_of(
    st.fixed_dictionaries(
        {
            "mode": st.just(0),
            "failure_threshold": st.integers(1, 4),
            "slow_rate": st.just(0.0),
        }
    ),
    st.fixed_dictionaries(
        {
            "mode": st.just(1),
            "failure_rate": st.sampled_from([0.25, 0.3, 0.5, 1.0]),
            "window_size": st.integers(1, 6),
            "slow_rate": st.sampled_from([0.0, 0.5]),
        }
    ),
    st.fixed_dictionaries(
        {
            "mode": st.just(2),
            "failure_rate": st.sampled_from([0.3, 0.5, 1.0]),
            "window_size": st.integers(1, 4),
            "window_ns": st.sampled_from([4 * S, 10 * S]),
            "slow_rate": st.sampled_from([0.0, 0.5]),
        }
    ),
).flatmap(
    lambda base: st.fixed_dictionaries(
        {
            "min_calls": st.integers(1, base.get("window_size", 4)),
            "slow_ns": st.sampled_from([2 * S] if base["slow_rate"] else [0, 2 * S]),
            "half_open_max_calls": st.integers(1, 3),
            "recovery_threshold": st.integers(1, 3),
            "recovery_ns": st.sampled_from([0, 3 * S, 5 * S]),
            "recovery_growth": st.sampled_from([1.0, 1.5, 2.0]),
            "cap_factor": st.sampled_from([1, 3]),
        }
    ).map(lambda extra: {**base, **extra})
)


outcomes = st.sampled_from(["success", "success", "failure", "failure", "ignored", "cancelled"])
durations = st.sampled_from([0, 0, S, 2 * S])


class BreakerMachine(RuleBasedStateMachine):
    """Drives a CircuitBreaker's C engine (its async-with entry points) and the model with the
    same operations and fake clock, and compares them after every step."""

    calls = Bundle("calls")

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(start_ns=S)
        self.clock.install()

    def teardown(self) -> None:
        self.clock.uninstall()

    @initialize(cfg=configs)
    def setup(self, cfg: dict[str, Any]) -> None:
        cap_factor = cfg.pop("cap_factor")
        cfg["max_recovery_ns"] = cfg["recovery_ns"] * cap_factor
        kwargs: dict[str, Any] = {
            "on": Boom,
            "recovery_time": cfg["recovery_ns"] / S,
            "recovery_threshold": cfg["recovery_threshold"],
            "half_open_max_calls": cfg["half_open_max_calls"],
            "recovery_backoff": cfg["recovery_growth"],
            "max_recovery_time": cfg["max_recovery_ns"] / S,
        }
        if cfg["slow_ns"]:
            kwargs["slow_call_duration"] = cfg["slow_ns"] / S
        if cfg["slow_rate"]:
            kwargs["slow_call_rate"] = cfg["slow_rate"]
        if cfg["mode"] == 0:
            kwargs["failure_threshold"] = cfg["failure_threshold"]
        else:
            kwargs["failure_rate"] = cfg["failure_rate"]
            kwargs["min_calls"] = cfg["min_calls"]
            if cfg["mode"] == 1:
                kwargs["window_calls"] = cfg["window_size"]
            else:
                kwargs["window_time"] = cfg["window_ns"] / S
                kwargs["window_buckets"] = cfg["window_size"]
        self.breaker = circuitbreaker(**kwargs)
        self.model = Model(cfg)

    def _acquire(self) -> tuple[int, int] | None:
        now = _native.now_ns()  # the time the breaker sees
        expected = self.model.acquire(now)
        if expected[0] == "rejected":
            after = expected[1]
            with pytest.raises(BreakerFailing) as info:
                self.breaker._enter()
            assert info.value.retry_after == (None if after < 0 else after / S)
            return None
        token = self.breaker._enter()
        assert token == expected[1]
        return (token, now)

    def _finish(self, call: tuple[int, int], outcome: str, extra_ns: int) -> None:
        token, t0 = call
        now = _native.now_ns()
        exc: BaseException | None = {
            "success": None,
            "failure": Boom(),
            "ignored": Other(),
            "cancelled": asyncio.CancelledError(),
        }[outcome]
        self.breaker._exit(token, t0 - extra_ns, exc)
        kind = outcome if outcome in ("success", "failure") else "ignored"
        self.model.end(token, kind, now - t0 + extra_ns, now)

    @rule(outcome=outcomes, extra_ns=durations)
    def call(self, outcome: str, extra_ns: int) -> None:
        """A call that starts and ends before anything else happens (the common case)."""
        call = self._acquire()
        if call is not None:
            self._finish(call, outcome, extra_ns)

    @rule(target=calls)
    def start(self) -> Any:
        call = self._acquire()
        return multiple() if call is None else call

    @rule(call=consumes(calls), outcome=outcomes, extra_ns=durations)
    def end(self, call: tuple[int, int], outcome: str, extra_ns: int) -> None:
        self._finish(call, outcome, extra_ns)

    @rule(seconds=st.sampled_from([0.5, 1, 2, 3, 5]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(op=st.sampled_from(["isolate", "reset", "neither", "neither", "neither"]))
    def manual(self, op: str) -> None:
        if op == "isolate":
            self.breaker.isolate()
            self.model.isolate(_native.now_ns())
        elif op == "reset":
            self.breaker.reset()
            self.model.reset()

    @invariant()
    def same(self) -> None:
        if not hasattr(self, "model"):
            return
        now = _native.now_ns()
        m = self.model
        state, isolated, consecutive, calls, failures, slow, probes, successes, after, _ = (
            self.breaker._snapshot()
        )
        assert state == m.state
        assert bool(isolated) == m.isolated
        assert consecutive == m.consecutive
        assert (calls, failures, slow) == m.figures(now)
        assert (probes, successes) == (m.probes, m.successes)
        assert after == m.retry_after(now)
        assert list(self.breaker._counters()[:6]) == m.counters
        holds = m.state != m.WORKING or m.isolated or m.consecutive > 0 or failures or slow
        assert self.breaker._holds_state() == bool(holds)


TestBreakerModel = BreakerMachine.TestCase
TestBreakerModel.settings = settings(max_examples=200, stateful_step_count=50, deadline=None)


def test_native_type_is_registered() -> None:
    assert CircuitBreaker.__mro__[2] is _native.Breaker


def test_refusal_of_a_listeners_call_is_raised_when_awaited(clock: FakeClock) -> None:
    # The call that moves the breaker to recovering takes the only probe slot in the same
    # decision (one decision per call), then runs the listener, whose own call is refused: the
    # refusal must be raised where it is awaited (as every refusal is), not when the function
    # is called inside the listener.
    held: list[Awaitable[str]] = []

    class Probe(BreakerListener):
        def on_recovering(
            self, breaker: CircuitBreaker, current_state: BreakerState, next_state: BreakerState
        ) -> None:
            held.append(run(ok))

    br = CircuitBreaker(
        failure_threshold=1,
        recovery_time=1.0,
        half_open_max_calls=1,
        recovery_threshold=1,
        listeners=[Probe()],
    )
    run = guarded(br)

    async def main() -> None:
        await fail_n(run, 1)
        clock.advance(2.0)
        probe = run(ok)
        assert len(held) == 1
        with pytest.raises(BreakerFailing):
            await held[0]
        assert await probe == "ok"
        assert br.stats()["state"] == "working"

    asyncio.run(main())


def test_options_hold_the_checked_parameters() -> None:
    assert BreakerOptions.check() == BreakerOptions()  # one set of defaults
    o = BreakerOptions.check(failure_rate=0.5, window_time=2, window_buckets=4, min_calls=3)
    assert (o.mode, o.failure_threshold, o.failure_rate) == ("time_window", None, 0.5)
    assert (o.window_size, o.window_ns, o.min_calls) == (4, 2_000_000_000, 3)
    config = o.configuration()
    assert config["mode"] == _native.BREAKER_MODES["time_window"]
    assert "failure_threshold" not in config
    counted = BreakerOptions.check(failure_rate=1, window_calls=5)
    assert (counted.mode, counted.window_size, counted.min_calls) == ("count_window", 5, 5)
    backing_off = BreakerOptions.check(recovery_time=2, recovery_backoff=2)
    assert backing_off.max_recovery_time == 20.0  # 10 x recovery_time when backing off
    with pytest.raises(AttributeError):
        o.mode = "consecutive"  # type: ignore[misc]


def test_a_breaker_keeps_its_options_through_copies() -> None:
    breaker = CircuitBreaker(failure_threshold=2, recovery_time=4)
    clone = breaker._clone()
    assert clone._options is breaker._options
    assert (clone.failure_threshold, clone.recovery_time) == (2, 4.0)
