"""failsafe.hedge: the first attempt inline, later attempts after the delay or a failure, the
first success wins, every loser cancelled and awaited, timeout, cancellation, listeners."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import inspect
import logging
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from failsafe import _native, events
from failsafe.exceptions import FailsafeError
from failsafe.fallback import fallback
from failsafe.hedge import (
    Hedge,
    HedgeAllFailed,
    HedgeListener,
    HedgeTimeout,
    Percentile,
    hedge,
    percentile,
    register_hedge_listener,
)
from failsafe.hedge import exceptions as hedge_exceptions
from failsafe.hedge._options import HedgeOptions
from failsafe.retry import RetryBudget, retry
from failsafe.testing import FakeClock
from failsafe.timeout import TimeoutError as FsTimeoutError
from failsafe.timeout import timeout

DELAY = 0.01  # a hedge delay that passes while an attempt hangs
LONG = 10.0  # never waited for in full


class Hang:
    """An attempt that waits until cancelled (or until released, then answers `then`)."""

    def __init__(self, then: Any = None) -> None:
        self.gate = asyncio.Event()
        self.then = then

    def release(self) -> None:
        self.gate.set()


class Script:
    """An async function whose k-th call follows plans[k]: a value (returned), an exception
    (raised), or a Hang. Records starts, ends (its finally ran) and cancellations."""

    def __init__(self, *plans: Any) -> None:
        self.plans = list(plans)
        self.started: list[tuple[Any, ...]] = []
        self.ended: list[int] = []
        self.cancelled: list[int] = []
        self.tasks: list[asyncio.Task[Any] | None] = []

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        k = len(self.started)
        self.started.append((*args, *sorted(kwargs.items())))
        self.tasks.append(asyncio.current_task())
        plan = self.plans[k] if k < len(self.plans) else self.plans[-1]
        try:
            if isinstance(plan, Hang):
                await plan.gate.wait()
                plan = plan.then
            else:
                await asyncio.sleep(0)
            if isinstance(plan, BaseException):
                raise plan
            return plan
        except asyncio.CancelledError:
            self.cancelled.append(k)
            raise
        finally:
            self.ended.append(k)


async def until(predicate: Any, turns: int = 2000) -> None:
    """Lets the loop run until predicate() holds (real time passes in small steps)."""
    for _ in range(turns):
        if predicate():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition never reached")


@pytest.fixture(autouse=True)
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """Fails the test when the loop reports an error ("Task exception was never retrieved",
    an exception in a callback), or a deadline is left in the C heap."""
    seen: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    yield seen
    await asyncio.sleep(0)
    gc.collect()
    await asyncio.sleep(0)
    loop.set_exception_handler(None)
    assert seen == []
    assert _native._timeout_pending() == 0


def stats(fn: Any) -> dict[str, Any]:
    result: dict[str, Any] = fn.policy.stats()
    return result


# ------------------------------------------------------------------------------------------
# The race


async def test_primary_fast_is_one_call_and_no_task() -> None:
    script = Script(1)
    guarded = hedge(attempts=3, delay=LONG)(script)
    before = len(asyncio.all_tasks())
    assert await guarded("a", k=2) == 1
    assert script.started == [("a", ("k", 2))]
    assert script.tasks == [asyncio.current_task()]  # ran inline, in the caller's task
    assert len(asyncio.all_tasks()) == before
    assert stats(guarded) == {
        "name": "hedge",
        "success": 1,
        "failure": 0,
        "all_failed": 0,
        "timeout": 0,
        "hedged": 0,
    }


async def test_primary_slow_second_attempt_wins_loser_cancelled_and_awaited() -> None:
    script = Script(Hang(), "second")
    guarded = hedge(attempts=2, delay=DELAY)(script)
    assert await guarded(7) == "second"
    # The first attempt was cancelled and its finally ran before the call answered.
    assert script.cancelled == [0]
    assert sorted(script.ended) == [0, 1]
    assert script.started == [(7,), (7,)]
    me = asyncio.current_task()
    assert me is not None
    assert me.cancelling() == 0
    assert script.tasks[0] is me
    assert script.tasks[1] is not me
    assert stats(guarded)["success"] == 1
    assert stats(guarded)["hedged"] == 1


async def test_third_attempt_after_two_delays() -> None:
    script = Script(Hang(), Hang(), "third")
    guarded = hedge(attempts=3, delay=DELAY)(script)
    assert await guarded() == "third"
    assert sorted(script.cancelled) == [0, 1]
    assert sorted(script.ended) == [0, 1, 2]
    assert stats(guarded)["hedged"] == 2


async def test_primary_wins_late_hedge_cancelled() -> None:
    primary = Hang("primary")
    script = Script(primary, Hang())
    guarded = hedge(attempts=2, delay=DELAY)(script)
    task = asyncio.create_task(guarded())
    await until(lambda: len(script.started) == 2)
    primary.release()
    assert await task == "primary"
    assert script.cancelled == [1]
    assert sorted(script.ended) == [0, 1]
    assert task.cancelling() == 0


async def test_failure_starts_the_next_attempt_at_once() -> None:
    script = Script(ValueError("first"), "second")
    guarded = hedge(attempts=2, delay=LONG)(script)
    assert await guarded() == "second"
    assert stats(guarded)["failure"] == 1
    assert stats(guarded)["success"] == 1


async def test_failure_while_hedging_starts_the_next() -> None:
    # The primary hangs, the second attempt fails: the third starts at once, not after a delay.
    script = Script(Hang(), ValueError("second"), "third")
    guarded = hedge(attempts=3, delay=0.05)(script)
    assert await guarded() == "third"
    assert script.cancelled == [0]
    assert stats(guarded)["failure"] == 1


async def test_hedge_fails_primary_answers() -> None:
    primary = Hang("primary")
    script = Script(primary, ValueError("hedge"))
    guarded = hedge(attempts=2, delay=DELAY)(script)
    task = asyncio.create_task(guarded())
    await until(lambda: len(script.ended) == 1)
    primary.release()
    assert await task == "primary"
    assert stats(guarded)["failure"] == 1
    assert stats(guarded)["success"] == 1


async def test_attempts_bound() -> None:
    script = Script(Hang())
    guarded = hedge(attempts=3, delay=DELAY / 2, timeout=0.2)(script)
    with pytest.raises(HedgeTimeout):
        await guarded()
    assert len(script.started) == 3
    assert sorted(script.cancelled) == [0, 1, 2]


@pytest.mark.parametrize("delay", [LONG, DELAY, 0.0])
async def test_all_failed_carries_every_error(delay: float) -> None:
    errors = [ValueError("a"), KeyError("b"), OSError("c")]
    script = Script(*errors)
    guarded = hedge(attempts=3, delay=delay)(script)
    with pytest.raises(HedgeAllFailed) as info:
        await guarded()
    assert set(map(id, info.value.errors)) == set(map(id, errors))
    assert info.value.__cause__ is info.value.errors[-1]
    assert isinstance(info.value, FailsafeError)
    assert stats(guarded)["failure"] == 3
    assert stats(guarded)["all_failed"] == 1
    assert stats(guarded)["success"] == 0


async def test_single_attempt_failure_is_all_failed() -> None:
    error = ValueError("only")
    guarded = hedge(attempts=1)(Script(error))
    with pytest.raises(HedgeAllFailed) as info:
        await guarded()
    assert info.value.errors == (error,)
    assert info.value.__cause__ is error


async def test_all_failed_order_with_a_slow_primary() -> None:
    first = Hang(ValueError("primary, last"))
    script = Script(first, ValueError("hedge, first"))
    guarded = hedge(attempts=2, delay=DELAY)(script)
    task = asyncio.create_task(guarded())
    await until(lambda: len(script.ended) == 1)
    first.release()
    with pytest.raises(HedgeAllFailed) as info:
        await task
    assert [str(e) for e in info.value.errors] == ["hedge, first", "primary, last"]


async def test_delay_zero_starts_every_attempt_at_once() -> None:
    script = Script(Hang(), Hang(), "third")
    guarded = hedge(attempts=3, delay=0)(script)
    assert await guarded() == "third"
    assert len(script.started) == 3
    assert sorted(script.cancelled) == [0, 1]
    assert sorted(script.ended) == [0, 1, 2]
    assert stats(guarded)["hedged"] == 2


# ------------------------------------------------------------------------------------------
# Timeout


async def test_timeout_before_delay_cancels_the_inline_attempt() -> None:
    script = Script(Hang())
    guarded = hedge(attempts=2, delay=LONG, timeout=DELAY)(script)
    with pytest.raises(HedgeTimeout) as info:
        await guarded()
    assert isinstance(info.value.__cause__, asyncio.CancelledError)
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, FailsafeError)
    assert script.cancelled == [0]
    assert len(script.started) == 1
    assert stats(guarded)["timeout"] == 1
    me = asyncio.current_task()
    assert me is not None
    assert me.cancelling() == 0


async def test_timeout_while_hedging_cancels_and_awaits_all() -> None:
    script = Script(Hang(), Hang())
    guarded = hedge(attempts=2, delay=DELAY, timeout=DELAY * 5)(script)
    with pytest.raises(HedgeTimeout):
        await guarded()
    assert sorted(script.cancelled) == [0, 1]
    assert sorted(script.ended) == [0, 1]
    assert stats(guarded)["timeout"] == 1
    assert stats(guarded)["success"] == 0
    me = asyncio.current_task()
    assert me is not None
    assert me.cancelling() == 0


async def test_timeout_after_the_primary_failed() -> None:
    script = Script(ValueError("x"), Hang())
    guarded = hedge(attempts=2, delay=LONG, timeout=DELAY * 3)(script)
    with pytest.raises(HedgeTimeout):
        await guarded()
    assert script.cancelled == [1]
    assert stats(guarded)["failure"] == 1
    assert stats(guarded)["timeout"] == 1


async def test_timeout_with_delay_zero() -> None:
    script = Script(Hang(), Hang())
    guarded = hedge(attempts=2, delay=0, timeout=DELAY)(script)
    with pytest.raises(HedgeTimeout):
        await guarded()
    assert sorted(script.cancelled) == [0, 1]


async def test_the_functions_own_timeout_error_is_a_failure() -> None:
    script = Script(TimeoutError("own"), "second")
    guarded = hedge(attempts=2, delay=LONG, timeout=LONG)(script)
    assert await guarded() == "second"
    assert stats(guarded)["timeout"] == 0
    assert stats(guarded)["failure"] == 1


# ------------------------------------------------------------------------------------------
# Cancellation


async def _cancelled(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_caller_cancelled_before_the_delay() -> None:
    script = Script(Hang())
    guarded = hedge(attempts=2, delay=LONG)(script)
    task = asyncio.create_task(guarded())
    await until(lambda: len(script.started) == 1)
    await _cancelled(task)
    assert script.cancelled == [0]
    assert len(script.started) == 1
    assert stats(guarded) == {
        "name": "hedge",
        "success": 0,
        "failure": 0,
        "all_failed": 0,
        "timeout": 0,
        "hedged": 0,
    }


async def test_caller_cancelled_while_hedging() -> None:
    script = Script(Hang(), Hang(), Hang())
    guarded = hedge(attempts=3, delay=DELAY)(script)
    task = asyncio.create_task(guarded())
    await until(lambda: len(script.started) == 3)
    await _cancelled(task)
    assert sorted(script.cancelled) == [0, 1, 2]
    assert sorted(script.ended) == [0, 1, 2]
    assert stats(guarded)["success"] == 0
    assert stats(guarded)["failure"] == 0


async def test_caller_cancelled_after_the_primary_failed() -> None:
    script = Script(ValueError("x"), Hang())
    guarded = hedge(attempts=2, delay=LONG)(script)
    task = asyncio.create_task(guarded())
    await until(lambda: len(script.started) == 2)
    await _cancelled(task)
    assert script.cancelled == [1]
    assert sorted(script.ended) == [0, 1]


async def test_caller_cancelled_with_delay_zero() -> None:
    script = Script(Hang(), Hang())
    guarded = hedge(attempts=2, delay=0)(script)
    task = asyncio.create_task(guarded())
    await until(lambda: len(script.started) == 2)
    await _cancelled(task)
    assert sorted(script.cancelled) == [0, 1]


async def test_outer_cancel_just_after_the_hedge_won_propagates() -> None:
    # The hedge's win cancels the caller (to stop the inline attempt); an outer cancel
    # arriving before the caller runs again must not be swallowed with ours.
    loop = asyncio.get_running_loop()
    caller: list[asyncio.Task[Any]] = []

    async def second() -> str:
        loop.call_soon(loop.call_soon, caller[0].cancel)  # type: ignore[arg-type]
        return "second"

    script = Script(Hang(), None)

    async def fn() -> Any:
        if len(script.started) == 1:
            script.started.append(())
            return await second()
        return await script()

    guarded = hedge(attempts=2, delay=DELAY)(fn)
    task = asyncio.create_task(guarded())
    caller.append(task)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert script.cancelled == [0]


async def test_outer_cancel_just_before_the_hedge_won_propagates() -> None:
    caller: list[asyncio.Task[Any]] = []

    async def fn() -> str:
        if not caller[1:]:
            caller.append(caller[0])
            await asyncio.sleep(LONG)
        caller[0].cancel()  # the outer cancel, then this attempt wins
        return "second"

    guarded = hedge(attempts=2, delay=DELAY)(fn)
    task = asyncio.create_task(guarded())
    caller.append(task)
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_outer_timeout_while_hedging() -> None:
    script = Script(Hang(), Hang())
    guarded = hedge(attempts=2, delay=DELAY)(script)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(DELAY * 5):
            await guarded()
    assert sorted(script.cancelled) == [0, 1]
    me = asyncio.current_task()
    assert me is not None
    assert me.cancelling() == 0


async def test_primary_swallowing_our_cancel_still_returns_the_winner() -> None:
    stubborn_done = asyncio.Event()

    calls = [0]

    async def fn() -> str:
        calls[0] += 1
        if calls[0] == 1:
            try:
                await asyncio.sleep(LONG)
            except asyncio.CancelledError:
                await asyncio.sleep(0)
                stubborn_done.set()
                return "stubborn"  # swallowed
        return "winner"

    guarded = hedge(attempts=2, delay=DELAY)(fn)
    assert await guarded() == "winner"
    assert stubborn_done.is_set()
    me = asyncio.current_task()
    assert me is not None
    assert me.cancelling() == 0


async def test_closing_the_call_while_hedging_cancels_the_attempts() -> None:
    script = Script(Hang(), Hang())
    guarded = hedge(attempts=2, delay=DELAY)(script)
    holder: list[Any] = []

    async def driver() -> None:
        call = guarded()
        holder.append(call)
        await call

    task = asyncio.create_task(driver())
    await until(lambda: len(script.started) == 2)
    # The call is closed under its awaiting task: the hedge attempt goes too.
    holder[0].close()
    await until(lambda: 1 in script.cancelled)
    task.cancel()
    (outcome,) = await asyncio.gather(task, return_exceptions=True)
    assert isinstance(outcome, (RuntimeError, asyncio.CancelledError))
    assert script.cancelled == [1]  # the inline attempt was closed, not cancelled
    assert sorted(script.ended) == [0, 1]


class Stop(BaseException):
    """An application's own BaseException: neither a failure nor a cancellation."""


def idle_counters(fn: Any) -> None:
    counters = stats(fn)
    assert (counters["success"], counters["failure"], counters["all_failed"]) == (0, 0, 0)


async def test_base_exception_from_the_hedge_attempt_ends_the_call() -> None:
    # The first attempt would answer later: the second one's BaseException ends the call.
    first = Hang(then="late")
    script = Script(first, Stop("second"))
    guarded = hedge(attempts=2, delay=DELAY)(script)
    asyncio.get_running_loop().call_later(0.2, first.release)
    with pytest.raises(Stop, match="second"):
        await guarded()
    assert script.cancelled == [0]
    assert sorted(script.ended) == [0, 1]
    me = asyncio.current_task()
    assert me is not None
    assert me.cancelling() == 0
    idle_counters(guarded)


async def test_base_exception_from_the_inline_attempt_ends_the_call() -> None:
    first = Hang(then=Stop("first"))
    script = Script(first, Hang())
    guarded = hedge(attempts=2, delay=DELAY)(script)
    task = asyncio.create_task(guarded())
    await until(lambda: len(script.started) == 2)
    first.release()
    with pytest.raises(Stop, match="first"):
        await task
    assert script.cancelled == [1]
    assert sorted(script.ended) == [0, 1]


async def test_base_exception_raised_on_our_cancel_ends_the_call() -> None:
    # The hedge won; the inline attempt answers our cancellation with a BaseException.
    calls = [0]

    async def fn() -> str:
        calls[0] += 1
        if calls[0] == 1:
            try:
                await asyncio.sleep(LONG)
            except asyncio.CancelledError:
                raise Stop("while cancelled") from None
        return "winner"

    with pytest.raises(Stop, match="while cancelled"):
        await hedge(attempts=2, delay=DELAY)(fn)()
    me = asyncio.current_task()
    assert me is not None
    assert me.cancelling() == 0


async def test_base_exception_from_a_loser_ends_the_call() -> None:
    calls = [0]

    async def fn() -> str:
        calls[0] += 1
        if calls[0] == 1:
            try:
                await asyncio.sleep(LONG)
            finally:
                raise Stop("loser")
        return "winner"

    with pytest.raises(Stop, match="loser"):
        await hedge(attempts=2, delay=0)(fn)()


async def test_base_exception_with_delay_zero_ends_the_call_not_all_failed() -> None:
    late = Hang(then=ValueError("late"))
    script = Script(late, Stop("second"), Hang())
    guarded = hedge(attempts=3, delay=0)(script)
    asyncio.get_running_loop().call_later(0.2, late.release)
    with pytest.raises(Stop, match="second"):
        await guarded()
    assert sorted(script.cancelled) == [0, 2]
    assert sorted(script.ended) == [0, 1, 2]
    idle_counters(guarded)


@pytest.mark.parametrize("delay", [0.0, LONG])
async def test_base_exception_is_not_retried_or_replaced_by_outer_policies(delay: float) -> None:
    script = Script(ValueError("a"), Stop("b"), "ok")
    retried = retry(on=HedgeAllFailed, attempts=2, backoff=0)(
        hedge(attempts=2, delay=delay)(script)
    )
    with pytest.raises(Stop, match="b"):
        await retried()
    assert len(script.started) == 2
    script = Script(ValueError("a"), Stop("b"), "ok")
    replaced = fallback(0)(hedge(attempts=2, delay=delay)(script))
    with pytest.raises(Stop, match="b"):
        await replaced()


async def test_base_exception_starting_an_attempt_ends_the_call() -> None:
    script = Script(Hang())
    calls = [0]

    def fn() -> Any:
        calls[0] += 1
        if calls[0] == 2:
            raise Stop("at start")
        return script()

    inspect.markcoroutinefunction(fn)
    with pytest.raises(Stop, match="at start"):
        await hedge(attempts=3, delay=DELAY)(fn)()
    assert script.cancelled == [0]
    assert calls[0] == 2


async def test_closing_a_delay_zero_call_mid_flight_is_quiet() -> None:
    script = Script(Hang(), Hang())
    guarded = hedge(attempts=2, delay=0)(script)
    call = guarded()

    async def driver() -> None:
        await call

    task = asyncio.create_task(driver())
    await until(lambda: len(script.started) == 2)
    call.close()  # no "coroutine ignored GeneratorExit"
    await until(lambda: sorted(script.ended) == [0, 1])
    assert sorted(script.cancelled) == [0, 1]
    task.cancel()  # the driver still awaits the closed call
    (outcome,) = await asyncio.gather(task, return_exceptions=True)
    assert isinstance(outcome, (RuntimeError, asyncio.CancelledError))


async def test_closing_a_call_awaiting_its_hedge_is_quiet() -> None:
    # The inline attempt failed: the call now waits in the race for the hedge attempt.
    script = Script(ValueError("first"), Hang())
    guarded = hedge(attempts=2, delay=LONG)(script)
    call = guarded()

    async def driver() -> None:
        await call

    task = asyncio.create_task(driver())
    await until(lambda: len(script.started) == 2)
    call.close()
    await until(lambda: 1 in script.ended)
    assert script.cancelled == [1]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_after_a_cancel_the_policy_is_idle() -> None:
    script = Script(Hang(), Hang(), "ok")
    guarded = hedge(attempts=2, delay=DELAY)(script)
    task = asyncio.create_task(guarded())
    await until(lambda: len(script.started) == 2)
    await _cancelled(task)
    assert await guarded() == "ok"


# ------------------------------------------------------------------------------------------
# Scale, context, stacking, methods


async def test_thousand_concurrent_calls_on_one_policy() -> None:
    policy = hedge(attempts=2, delay=0.005, name="many")
    n = 1000

    async def fn(i: int, slow: bool) -> int:
        if slow:
            await asyncio.sleep(LONG)
        # Answers in its first step: never hedged, however long the loop takes to start 1000
        # tasks (uvloop runs due timers before the ready callbacks of the same turn).
        return i

    attempts: dict[int, int] = {}

    async def counted(i: int) -> int:
        attempts[i] = attempts.get(i, 0) + 1
        # Odd calls: the first attempt hangs and the hedge answers; even calls answer inline.
        return await fn(i, slow=i % 2 == 1 and attempts[i] == 1)

    guarded = policy(counted)
    results = await asyncio.gather(*(guarded(i) for i in range(n)))
    assert results == list(range(n))
    assert policy.stats()["success"] == n
    assert policy.stats()["hedged"] == n // 2
    assert all(attempts[i] == (2 if i % 2 else 1) for i in range(n))


async def test_context_is_copied_into_hedge_attempts() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    seen: list[str] = []

    async def fn() -> str:
        seen.append(var.get())
        if len(seen) == 1:
            await asyncio.sleep(LONG)
        return var.get()

    guarded = hedge(attempts=2, delay=DELAY)(fn)
    var.set("caller")
    assert await guarded() == "caller"
    assert seen == ["caller", "caller"]


async def test_seed_example_hedge_over_retry_with_arguments() -> None:
    calls: list[str] = []

    @hedge(name="price_quote", attempts=3, delay=0.03, timeout=0.25)
    @retry(name="price_quote", attempts=3, backoff=0)
    async def fetch_price(venue: str) -> float:
        calls.append(venue)
        await asyncio.sleep(0.001)
        return 123.45

    assert await fetch_price("xnas") == 123.45
    assert await fetch_price(venue="xnys") == 123.45
    assert calls == ["xnas", "xnys"]


async def test_hedge_over_retry_hedged_attempts_retry_too() -> None:
    script = Script(Hang(), ValueError("retried"), "ok")
    guarded = hedge(attempts=2, delay=DELAY)(retry(attempts=2, backoff=0)(script))
    assert await guarded() == "ok"
    assert script.cancelled == [0]


async def test_retry_over_hedge_retries_all_failed() -> None:
    script = Script(ValueError("1"), ValueError("2"), "ok")
    guarded = retry(on=HedgeAllFailed, attempts=1, backoff=0)(hedge(attempts=2)(script))
    assert await guarded() == "ok"


async def test_fallback_over_hedge() -> None:
    guarded = fallback(0)(hedge(attempts=2, delay=LONG)(Script(ValueError("a"), KeyError("b"))))
    assert await guarded() == 0
    timed = fallback(-1)(hedge(attempts=2, delay=LONG, timeout=DELAY)(Script(Hang())))
    assert await timed() == -1


async def test_hedge_over_fallback() -> None:
    guarded = hedge(attempts=2, delay=DELAY)(fallback(0)(Script(ValueError("a"))))
    assert await guarded() == 0


async def test_timeout_inside_hedge_is_a_failed_attempt() -> None:
    script = Script(Hang(), "second")
    guarded = hedge(attempts=2, delay=LONG)(timeout(DELAY)(script))
    assert await guarded() == "second"
    assert stats(guarded)["failure"] == 1


async def test_timeout_outside_hedge() -> None:
    script = Script(Hang(), Hang())
    guarded = timeout(DELAY * 5)(hedge(attempts=2, delay=DELAY)(script))
    with pytest.raises(FsTimeoutError):
        await guarded()
    assert sorted(script.cancelled) == [0, 1]
    ok = timeout(LONG)(hedge(attempts=2, delay=DELAY)(Script(Hang(), "fine")))
    assert await ok() == "fine"


async def test_methods() -> None:
    class Client:
        def __init__(self) -> None:
            self.calls = 0

        @hedge(attempts=2, delay=DELAY)
        async def get(self, x: int) -> tuple[int, int]:
            self.calls += 1
            if self.calls == 1:
                await asyncio.sleep(LONG)
            return x, self.calls

    client = Client()
    assert await client.get(5) == (5, 2)
    assert await client.get(6) == (6, 3)


async def test_decorator_keeps_metadata() -> None:
    async def fetch(x: int) -> int:
        """Docs."""
        return x

    guarded = hedge(attempts=2, delay=DELAY)(fetch)
    assert guarded.__name__ == "fetch"
    assert guarded.__doc__ == "Docs."
    assert inspect.iscoroutinefunction(guarded)
    assert guarded.__wrapped__ is fetch  # type: ignore[attr-defined]
    assert await guarded(3) == 3


async def test_eager_task_factory() -> None:
    loop = asyncio.get_running_loop()
    loop.set_task_factory(asyncio.eager_task_factory)
    try:
        script = Script(Hang(), "second")
        guarded = hedge(attempts=2, delay=DELAY)(script)
        assert await guarded() == "second"
        assert script.cancelled == [0]
        quick = hedge(attempts=2, delay=0)(Script(ValueError("a"), "b"))
        assert await quick() == "b"
    finally:
        loop.set_task_factory(None)


async def test_non_coroutine_awaitable_attempts() -> None:
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[str]] = []

    def fn() -> asyncio.Future[str]:
        fut: asyncio.Future[str] = loop.create_future()
        futures.append(fut)
        if len(futures) == 2:
            fut.set_result("second")
        return fut

    async def wrapper() -> str:
        return await fn()

    guarded = hedge(attempts=2, delay=DELAY)(wrapper)
    assert await guarded() == "second"
    assert futures[0].cancelled()


# ------------------------------------------------------------------------------------------
# async with


async def test_async_with_no_timeout_is_a_no_op() -> None:
    policy = hedge()
    async with policy:
        await asyncio.sleep(0)
    with pytest.raises(ValueError, match="inner"):
        async with policy:
            raise ValueError("inner")


async def test_async_with_timeout() -> None:
    policy = hedge(timeout=DELAY, name="block")
    with pytest.raises(HedgeTimeout) as info:
        async with policy:
            await asyncio.sleep(LONG)
    assert isinstance(info.value.__cause__, asyncio.CancelledError)
    assert policy.stats()["timeout"] == 1
    async with policy:
        await asyncio.sleep(0)
    with pytest.raises(KeyError):
        async with policy:
            raise KeyError("passes")
    assert policy.stats()["timeout"] == 1


async def test_async_with_shared_by_concurrent_tasks() -> None:
    # Odd blocks end at their first loop turn, even ones never: a second of headroom keeps a
    # loaded (or sanitized) loop from timing out the odd ones too.
    policy = hedge(timeout=1.0)

    async def block(i: int) -> int:
        async with policy:
            await asyncio.sleep(0 if i % 2 else LONG)
        return i

    results = await asyncio.gather(*(block(i) for i in range(50)), return_exceptions=True)
    assert all(r == i for i, r in enumerate(results) if i % 2)
    assert all(isinstance(r, HedgeTimeout) for i, r in enumerate(results) if not i % 2)
    assert policy.stats()["timeout"] == 25


async def test_async_with_does_not_report_to_timeout_listeners(global_listeners: None) -> None:
    from failsafe.timeout import register_timeout_listener

    seen: list[str] = []

    class L:
        def on_timeout(self, t: Any) -> None:
            seen.append("timeout")

    register_timeout_listener(L())
    with pytest.raises(HedgeTimeout):
        async with hedge(timeout=DELAY):
            await asyncio.sleep(LONG)
    assert seen == []


# ------------------------------------------------------------------------------------------
# Listeners


class Recorder(HedgeListener):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_hedge_success(self, hedge: Hedge, result: Any) -> None:
        self.events.append(("success", result))

    def on_hedge_failure(self, hedge: Hedge, exception: BaseException) -> None:
        self.events.append(("failure", str(exception)))

    def on_hedge_all_failed(self, hedge: Hedge) -> None:
        self.events.append(("all_failed", hedge.name))

    def on_hedge_timeout(self, hedge: Hedge) -> None:
        self.events.append(("timeout", hedge.name))


async def test_local_listener_sees_every_event() -> None:
    rec = Recorder()
    # A timeout no answer races (a loaded machine may stall the loop for long), and one of
    # the same name and listener whose attempts never answer: its timeout is the only end.
    policy = hedge(attempts=2, delay=DELAY, timeout=LONG, name="h", listeners=[rec])
    timed = hedge(attempts=2, delay=DELAY, timeout=DELAY * 5, name="h", listeners=[rec])
    assert await policy(Script("fast"))() == "fast"
    assert await policy(Script(Hang(), "slow"))() == "slow"
    with pytest.raises(HedgeAllFailed):
        await policy(Script(ValueError("a"), ValueError("b")))()
    with pytest.raises(HedgeTimeout):
        await timed(Script(Hang()))()
    assert rec.events == [
        ("success", "fast"),
        ("success", "slow"),
        ("failure", "a"),
        ("failure", "b"),
        ("all_failed", "h"),
        ("timeout", "h"),
    ]


async def test_global_listener_reaches_existing_policies(global_listeners: None) -> None:
    policy = hedge(attempts=2, delay=LONG, name="g")
    rec = Recorder()
    register_hedge_listener(rec)
    assert await policy(Script(ValueError("x"), 2))() == 2
    assert rec.events == [("failure", "x"), ("success", 2)]


async def test_raising_listener_changes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    class Bad(HedgeListener):
        def on_hedge_success(self, hedge: Hedge, result: Any) -> None:
            raise RuntimeError("listener broke")

        def on_hedge_failure(self, hedge: Hedge, exception: BaseException) -> None:
            raise RuntimeError("listener broke")

    policy = hedge(attempts=2, delay=DELAY, listeners=[Bad()])
    with caplog.at_level(logging.ERROR, logger="failsafe"):
        assert await policy(Script(1))() == 1
        assert await policy(Script(ValueError("x"), 2))() == 2
        assert await policy(Script(Hang(), 3))() == 3
    assert "listener broke" in caplog.text
    assert policy.stats()["success"] == 3


async def test_async_listener() -> None:
    seen: list[Any] = []

    class Async:
        async def on_hedge_success(self, hedge: Hedge, result: Any) -> None:
            await asyncio.sleep(0)
            seen.append(result)

    policy = hedge(attempts=2, delay=DELAY, listeners=[Async()])
    assert await policy(Script(5))() == 5
    await events.get_event_manager().wait_for_tasks()
    assert seen == [5]


# ------------------------------------------------------------------------------------------
# API, validation


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"attempts": 0}, ValueError, "attempts"),
        ({"attempts": -1}, ValueError, "attempts"),
        ({"attempts": 1.5}, TypeError, "attempts"),
        ({"attempts": True}, TypeError, "attempts"),
        ({"delay": -0.1}, ValueError, "delay"),
        ({"delay": math.nan}, ValueError, "delay"),
        ({"delay": math.inf}, ValueError, "delay"),
        ({"delay": "1"}, TypeError, "delay"),
        ({"timeout": 0}, ValueError, "timeout"),
        ({"timeout": -1}, ValueError, "timeout"),
        ({"timeout": math.nan}, ValueError, "timeout"),
        ({"timeout": "1"}, TypeError, "timeout"),
        ({"name": "1bad"}, ValueError, "name"),
        ({"name": 3}, TypeError, "name"),
        ({"listeners": 3}, TypeError, "listeners"),
    ],
)
def test_validation(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        hedge(**kwargs)


def test_positional_arguments_rejected() -> None:
    with pytest.raises(TypeError):
        hedge(2)  # type: ignore[call-arg]


def test_sync_callable_rejected() -> None:
    def sync() -> int:
        return 1

    with pytest.raises(TypeError, match="async"):
        hedge()(sync)  # type: ignore[arg-type]


def test_native_type_refuses_what_it_cannot_run() -> None:
    # HedgeOptions names the bad parameter; the C type keeps what its timers need.
    with pytest.raises(ValueError, match="attempts must be between 1 and"):
        _native.Hedge(0, 0.0, None)
    with pytest.raises(ValueError, match="out of the core's range"):
        _native.Hedge(2, -1.0, None)
    with pytest.raises(ValueError, match="out of the core's range"):
        _native.Hedge(2, 0.0, 0)


def test_options_hold_the_checked_parameters() -> None:
    assert HedgeOptions.check() == HedgeOptions()  # one set of defaults
    o = HedgeOptions.check(attempts=3, delay=1, timeout=float("inf"), max_hedged_ratio=0.2)
    assert (o.attempts, o.delay, o.timeout, o.percentile) == (3, 1.0, float("inf"), None)
    assert isinstance(o.budget, RetryBudget)
    adaptive = HedgeOptions.check(delay=percentile(90, fallback=0.5, window=2))
    assert (adaptive.delay, adaptive.percentile) == (0.5, percentile(90, fallback=0.5, window=2))
    assert adaptive.percentile is not None
    assert adaptive.percentile.window_ns == 2 * 10**9
    # A Percentile built by hand is checked like percentile()'s.
    with pytest.raises(ValueError, match="window"):
        HedgeOptions.check(delay=Percentile(90.0, 0.5, 0.0, 20))
    with pytest.raises(ValueError, match="p must be in"):
        hedge(delay=Percentile(0.0, 0.5, 1.0, 20))


def test_properties_stats_repr() -> None:
    policy = hedge(attempts=3, delay=0.05, timeout=1, name="quote")
    assert (policy.attempts, policy.delay, policy.timeout) == (3, 0.05, 1.0)
    assert hedge().timeout is None
    assert hedge().attempts == 2
    assert hedge().delay == 0.0
    assert policy.stats() == {
        "name": "quote",
        "success": 0,
        "failure": 0,
        "all_failed": 0,
        "timeout": 0,
        "hedged": 0,
    }
    assert repr(policy) == (
        "<hedge 'quote' attempts=3 delay=0.05 timeout=1.0 success=0, failure=0, all_failed=0,"
        " timeout=0, hedged=0>"
    )
    assert policy.name == "quote"
    assert hedge().name == "hedge"


def test_exceptions() -> None:
    assert hedge_exceptions.HedgeTimeout is HedgeTimeout
    assert hedge_exceptions.HedgeAllFailed is HedgeAllFailed
    assert issubclass(HedgeTimeout, TimeoutError)
    assert issubclass(HedgeTimeout, FailsafeError)
    assert issubclass(HedgeAllFailed, FailsafeError)
    assert not issubclass(HedgeAllFailed, BaseExceptionGroup)
    assert HedgeAllFailed().errors == ()
    err = HedgeAllFailed([ValueError("v")])
    assert "1" in str(err)
    assert "ValueError" in str(err)


# ------------------------------------------------------------------------------------------
# A cap on extra load


async def test_max_hedged_ratio_caps_later_attempts() -> None:
    # Every call deposits, every hedge withdraws: at most half the calls may hedge.
    policy = hedge(attempts=2, delay=DELAY, timeout=DELAY * 4, max_hedged_ratio=0.5)
    outcomes = []
    for _ in range(10):
        try:
            outcomes.append(await policy(Script(Hang(), "hedge"))())
        except HedgeTimeout:
            outcomes.append("refused")
    assert outcomes == ["refused", "hedge"] * 5  # a hedge needs a whole unit of budget
    assert policy.stats()["hedged"] == 5
    assert policy.stats()["timeout"] == 5


async def test_budget_refusal_after_a_failure_ends_the_call() -> None:
    from failsafe.retry import RetryBudget

    budget = RetryBudget(0.0, min_per_second=0.0)
    guarded = hedge(attempts=3, delay=LONG, budget=budget)(Script(ValueError("only"), "never"))
    with pytest.raises(HedgeAllFailed) as info:
        await guarded()
    assert len(info.value.errors) == 1
    assert stats(guarded)["hedged"] == 0
    assert guarded.policy.budget is budget  # type: ignore[attr-defined]


async def test_budget_refusal_with_delay_zero() -> None:
    script = Script(Hang("first"), "second")
    guarded = hedge(attempts=2, delay=0, max_hedged_ratio=0)(script)
    task = asyncio.create_task(guarded())
    await until(lambda: len(script.started) == 1)
    await asyncio.sleep(DELAY)
    assert len(script.started) == 1
    script.plans[0].release()
    assert await task == "first"


async def test_budget_shared_with_retry() -> None:
    from failsafe.retry import RetryBudget

    budget = RetryBudget(1.0, min_per_second=0.0)
    guarded = hedge(attempts=2, delay=DELAY, budget=budget)(
        retry(attempts=1, backoff=0, budget=budget)(Script(Hang(), "second"))
    )
    assert await guarded() == "second"
    assert stats(guarded)["hedged"] == 1


def test_budget_validation() -> None:
    from failsafe.retry import RetryBudget

    with pytest.raises(TypeError, match="not both"):
        hedge(budget=RetryBudget(), max_hedged_ratio=0.1)
    with pytest.raises(TypeError, match="budget"):
        hedge(budget=0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_hedged_ratio"):
        hedge(max_hedged_ratio=-1)
    with pytest.raises(TypeError, match="budget"):
        _native.Hedge(2, 0.0, None, object())  # type: ignore[arg-type]
    assert hedge().budget is None


# ------------------------------------------------------------------------------------------
# Adaptive delay


def _timed(clock: FakeClock, seconds: float) -> Any:
    """An attempt that takes `seconds` on the fake clock (the one latencies are measured on)."""

    async def fn() -> str:
        clock.advance(seconds)
        await asyncio.sleep(0)
        return "ok"

    return fn


async def test_percentile_delay_learns_from_fast_calls(clock: FakeClock) -> None:
    policy = hedge(attempts=2, delay=percentile(95, fallback=LONG, min_samples=20))
    fast = policy(_timed(clock, 0.002))
    for _ in range(19):
        assert await fast() == "ok"
    assert policy.delay == LONG  # fallback: too few samples
    assert await fast() == "ok"
    assert 0.002 <= policy.delay <= 0.002 * 1.125
    assert "p95(" in repr(policy)
    # A slow first attempt is now hedged after the learnt delay (on the fake clock, where
    # latencies are measured), not the fallback's 10 s.
    call = asyncio.ensure_future(policy(Script(Hang(), "second"))())
    for _ in range(5):  # the call starts its first attempt and waits for the delay
        await asyncio.sleep(0)
    clock.advance(0.003)
    async with asyncio.timeout(5):
        assert await call == "second"
    assert policy.stats()["hedged"] == 1


async def test_percentile_follows_the_tail(clock: FakeClock) -> None:
    policy = hedge(attempts=2, delay=hedge.percentile(90, fallback=LONG, min_samples=10))
    fast, slow = policy(_timed(clock, 0.001)), policy(_timed(clock, 0.050))
    for i in range(100):
        await (slow() if i % 10 == 0 else fast())
    clock.advance(0.1)  # the delay is refreshed every 16 samples or 100 ms
    assert 0.001 <= policy.delay <= 0.001 * 1.125  # 90 % of calls take 1 ms
    for _ in range(20):
        await slow()
    clock.advance(0.1)
    assert 0.050 <= policy.delay <= 0.050 * 1.125  # now more than 10 % take 50 ms


async def test_percentile_window_forgets(clock: FakeClock) -> None:
    policy = hedge(attempts=2, delay=percentile(50, fallback=0.5, window=1.0, min_samples=5))
    fast = policy(_timed(clock, 0.001))
    for _ in range(5):
        await fast()
    assert policy.delay < 0.5
    clock.advance(1.0)
    assert policy.delay == 0.5


async def test_percentile_records_winning_hedges(clock: FakeClock) -> None:
    policy = hedge(attempts=2, delay=percentile(50, fallback=DELAY, min_samples=1))
    calls = [0]

    async def fn() -> str:
        calls[0] += 1
        if calls[0] == 1:
            clock.advance(DELAY)  # slow on the clock the delay is waited on
            await asyncio.sleep(LONG)
        clock.advance(0.004)
        return "second"

    assert await policy(fn)() == "second"
    assert 0.004 <= policy.delay <= 0.004 * 1.125


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((0,), {"fallback": 1}, ValueError, "p must"),
        ((101,), {"fallback": 1}, ValueError, "p must"),
        ((math.nan,), {"fallback": 1}, ValueError, "p must"),
        (("95",), {"fallback": 1}, TypeError, "p must"),
        ((95,), {"fallback": 0}, ValueError, "fallback"),
        ((95,), {"fallback": math.inf}, ValueError, "fallback"),
        ((95,), {"fallback": 1, "window": 0}, ValueError, "window"),
        ((95,), {"fallback": 1, "window": 1e-9}, ValueError, "window"),
        ((95,), {"fallback": 1, "min_samples": 0}, ValueError, "min_samples"),
        ((95,), {"fallback": 1, "min_samples": 1.5}, TypeError, "min_samples"),
    ],
)
def test_percentile_validation(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        percentile(*args, **kwargs)


def test_percentile_native_validation() -> None:
    policy = hedge()
    with pytest.raises(ValueError, match="_adapt"):
        policy._adapt(0.0, 1.0, 10**9, 1)
    with pytest.raises(ValueError, match="_adapt: out of the core's range"):
        policy._adapt(0.5, 1.0, 1, 1)  # the quantile's window is at least 2 ns
    assert policy.delay == 0.0


# ------------------------------------------------------------------------------------------
# The C latency histogram against a Python model (stateful)

_SUB, _MIN_SHIFT, _BUCKETS = 3, 10, 28 << 3


def _bucket(ns: int) -> int:
    if ns < 1 << _MIN_SHIFT:
        return 0
    m = ns.bit_length() - 1
    b = ((m - _MIN_SHIFT) << _SUB) | ((ns >> (m - _SUB)) & 7)
    return min(b, _BUCKETS - 1)


def _upper(b: int) -> int:
    m = _MIN_SHIFT + (b >> _SUB)
    return ((8 + (b & 7) + 1) << (m - _SUB)) - 1


class _Model:
    """The adaptive delay as specified: two half-window slots of a log histogram, the
    ceil(p * n)-th smallest sample's bucket bound, refreshed every 16 samples or 100 ms (and at
    each sample while fewer than min_samples are in the window)."""

    def __init__(self, pct: float, fallback: float, window_ns: int, min_samples: int) -> None:
        self.pct, self.fallback, self.min_samples = pct, fallback, min_samples
        self.slot_ns = window_ns // 2
        self.head = 0
        self.slots: list[list[int]] = [[], []]
        self.cur, self.cur_at, self.since, self.warm = fallback, -1, 0, False

    def _advance(self, now: int) -> None:
        idx = now // self.slot_ns
        if idx <= self.head:
            return
        if idx - self.head >= 2:
            self.slots = [[], []]
        else:
            for i in range(self.head + 1, idx + 1):
                self.slots[i % 2] = []
        self.head = idx

    def record(self, now: int, ns: int) -> None:
        self._advance(now)
        self.slots[self.head % 2].append(ns)
        self.since += 1

    def delay(self, now: int) -> float:
        if (
            self.since >= 16
            or (self.since and not self.warm)
            or self.cur_at < 0
            or now - self.cur_at >= 100_000_000
        ):
            self.since, self.cur_at, self.cur = 0, now, self.fallback
            self._advance(now)
            values = sorted(_bucket(v) for s in self.slots for v in s)
            self.warm = len(values) >= self.min_samples
            if self.warm:
                rank = max(1, min(len(values), math.ceil(self.pct * len(values))))
                self.cur = _upper(values[rank - 1]) / 1e9
        return self.cur


class HistogramMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(10**9).install()
        self.policy: Hedge | None = None
        self.model: _Model | None = None

    @initialize(
        p=st.sampled_from([1.0, 50.0, 90.0, 99.9, 100.0]),
        window_ms=st.integers(1, 2000),
        min_samples=st.integers(1, 30),
    )
    def build(self, p: float, window_ms: int, min_samples: int) -> None:
        self.policy = hedge(
            attempts=2,
            delay=percentile(p, fallback=0.25, window=window_ms / 1000, min_samples=min_samples),
        )
        self.model = _Model(p / 100, 0.25, window_ms * 1_000_000, min_samples)

    @rule(ns=st.one_of(st.integers(0, 5000), st.integers(0, 2**40)))
    def record(self, ns: int) -> None:
        assert self.policy is not None
        assert self.model is not None
        self.policy._record(ns)
        self.model.record(_native.now_ns(), ns)  # the time the policy sees

    @rule(ms=st.integers(0, 3000))
    def advance(self, ms: int) -> None:
        self.clock.advance(ms / 1000)

    @invariant()
    def same_delay(self) -> None:
        if self.policy is not None and self.model is not None:
            assert self.policy.delay == self.model.delay(_native.now_ns())

    def teardown(self) -> None:
        self.clock.uninstall()


TestHistogram = HistogramMachine.TestCase
TestHistogram.settings = settings(max_examples=60, stateful_step_count=60, deadline=None)


async def test_caller_cancelled_while_losers_clean_up() -> None:
    # The first attempt wins late; the hedge attempt, cancelled, takes a while to clean up, and
    # the caller is cancelled while waiting for it: the cancellation propagates, and the loser
    # still finishes (its outcome retrieved).
    primary = Hang("primary")
    cleaned = asyncio.Event()
    calls: list[int] = []

    async def fn() -> str:
        calls.append(len(calls))
        if len(calls) == 1:
            await primary.gate.wait()
            return "primary"
        try:
            await asyncio.sleep(LONG)
        finally:
            await asyncio.sleep(DELAY)
            cleaned.set()
        return "never"

    guarded = hedge(attempts=2, delay=DELAY)(fn)
    task = asyncio.create_task(guarded())
    await asyncio.sleep(DELAY * 3)  # the hedge attempt is running
    primary.release()
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the call now waits for the loser's cleanup
    await _cancelled(task)
    await asyncio.wait_for(cleaned.wait(), LONG)


async def test_races_do_not_outlive_their_calls() -> None:
    from failsafe.hedge import _Race

    guarded = hedge(attempts=3, delay=0.001, timeout=LONG)(Script(Hang(), Hang(), "third"))
    for _ in range(3):
        await guarded()
    failing = hedge(attempts=2, delay=LONG)(Script(ValueError("x")))
    with pytest.raises(HedgeAllFailed):
        await failing()
    await asyncio.sleep(0)
    gc.collect()
    assert not [o for o in gc.get_objects() if type(o) is _Race]


async def test_hedge_over_hedge() -> None:
    # Both hedges run their first attempt inline in the same task; each takes back only its own
    # cancellation.
    script = Script(Hang(), Hang(), "inner hedge", "outer hedge")
    inner = hedge(attempts=2, delay=DELAY)(script)
    outer = hedge(attempts=2, delay=DELAY * 3)(inner)
    assert await outer() in {"inner hedge", "outer hedge"}
    assert 0 in script.cancelled
    me = asyncio.current_task()
    assert me is not None
    assert me.cancelling() == 0


async def test_guarded_attempt_cancelled_before_it_starts() -> None:
    # A later attempt that is a guarded call (hedge over retry), cancelled by somebody else
    # before its task ever ran: closed, not left "never awaited"; the call goes on.
    loop = asyncio.get_running_loop()

    def cancel_at_once(
        loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any
    ) -> asyncio.Task[Any]:
        task = asyncio.Task(coro, loop=loop, **kwargs)
        if getattr(coro, "__name__", "") == "_await":  # the hedge's task of a guarded call
            task.cancel()
        return task

    primary = Hang("primary")
    script = Script(primary, "never")
    guarded = hedge(attempts=2, delay=DELAY)(retry(attempts=1, backoff=0)(script))
    loop.set_task_factory(cancel_at_once)  # type: ignore[arg-type]
    try:
        call = asyncio.create_task(guarded())
        await asyncio.sleep(DELAY * 3)
    finally:
        loop.set_task_factory(None)
    primary.release()
    assert await call == "primary"
    assert len(script.started) == 1
    gc.collect()
