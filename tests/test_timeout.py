"""failsafe.timeout: asyncio.timeout semantics (checked differentially), no leaks, validation."""

from __future__ import annotations

import asyncio
import builtins
import collections.abc
import contextlib
import gc
import inspect
import logging
import math
import sys
import time
import types
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from failsafe import _native, events
from failsafe.exceptions import FailsafeError
from failsafe.timeout import (
    MaxDurationExceeded,
    Timeout,
    TimeoutError,
    TimeoutListener,
    TimeoutScope,
    register_timeout_listener,
    timeout,
)
from failsafe.timeout import exceptions as timeout_exceptions
from failsafe.timeout._options import check_seconds

SHORT = 0.01  # a deadline that fires ...
LONG = 10.0  # ... long before this sleep ends; never waited for in full
PAST = -1.0  # a deadline already passed at entry

Body = Callable[[], Awaitable[Any]]
Under = Callable[[float, Body], Awaitable[Any]]

# ------------------------------------------------------------------------------------------
# The forms compared: asyncio.timeout, and each form of failsafe's timeout.


async def under_asyncio(d: float, body: Body) -> Any:
    async with asyncio.timeout(d):
        return await body()


_SHARED: dict[float, Timeout] = {}


def _shared(d: float) -> Timeout:
    if d not in _SHARED:
        _SHARED[d] = timeout(max(d, 0.0), name="shared")
    return _SHARED[d]


async def _past(scope: TimeoutScope) -> None:
    scope.reschedule(asyncio.get_running_loop().time() + PAST)


async def under_shared(d: float, body: Body) -> Any:
    async with _shared(d) as scope:
        if d < 0:
            await _past(scope)
        return await body()


async def under_oneshot(d: float, body: Body) -> Any:
    async with timeout(max(d, 0.0)) as scope:
        if d < 0:
            await _past(scope)
        return await body()


async def _call(body: Body) -> Any:
    return await body()


_GUARDED: dict[float, Callable[[Body], Awaitable[Any]]] = {}


async def under_decorator(d: float, body: Body) -> Any:
    assert d >= 0, "a decorated call has no scope to move its deadline into the past"
    if d not in _GUARDED:
        _GUARDED[d] = timeout(d)(_call)
    return await _GUARDED[d](body)


FORMS: dict[str, Under] = {
    "shared": under_shared,
    "oneshot": under_oneshot,
    "decorator": under_decorator,
}

# ------------------------------------------------------------------------------------------
# Recording an outcome so that asyncio's and ours compare equal exactly when they behave alike.


def kind(e: BaseException | None) -> str | None:
    if e is None:
        return None
    if isinstance(e, builtins.TimeoutError):
        return f"TimeoutError({e})"
    if isinstance(e, BaseExceptionGroup):
        return f"{type(e).__name__}[{', '.join(str(describe(x)) for x in e.exceptions)}]"
    return type(e).__name__


def describe(e: BaseException) -> tuple[Any, ...]:
    chain: list[str | None] = []
    cur: BaseException | None = e
    while cur is not None and len(chain) < 8:
        chain.append(kind(cur))
        cur = cur.__context__
    return (kind(e), kind(e.__cause__), tuple(chain))


def check_timeout_classes(e: BaseException | None, ours: bool) -> None:
    """Every empty-message TimeoutError in a chain is failsafe's for our forms."""
    while e is not None:
        if isinstance(e, builtins.TimeoutError) and not str(e):
            assert isinstance(e, TimeoutError) == ours, e
        if isinstance(e, BaseExceptionGroup):
            for member in e.exceptions:
                check_timeout_classes(member, ours)
        e = e.__context__


async def record(under: Under, scenario: Callable[[Under], Awaitable[Any]], ours: bool) -> Any:
    async def runner() -> dict[str, Any]:
        out: dict[str, Any] = {}
        try:
            out["result"] = await scenario(under)
        except BaseException as e:  # every outcome is data here
            out["raised"] = describe(e)
            if scenario is not s_wait_for_fires_first:  # that one is wait_for's own error
                check_timeout_classes(e, ours)
        task = asyncio.current_task()
        assert task is not None
        out["cancelling"] = task.cancelling()
        try:
            await asyncio.sleep(0)
            out["usable"] = True
        except asyncio.CancelledError:
            out["usable"] = False
        return out

    return await asyncio.create_task(runner())


# ------------------------------------------------------------------------------------------
# Scenarios (c-timers list): each takes the form and returns a value or raises.


def me() -> asyncio.Task[Any]:
    task = asyncio.current_task()
    assert task is not None
    return task


async def sleep_long() -> None:
    await asyncio.sleep(LONG)


async def s_no_fire_no_suspend(under: Under) -> Any:
    async def body() -> int:
        return 1

    return await under(LONG, body)


async def s_no_fire_suspend(under: Under) -> Any:
    async def body() -> int:
        await asyncio.sleep(0)
        return 2

    return await under(LONG, body)


async def s_fire(under: Under) -> Any:
    return await under(SHORT, sleep_long)


async def s_zero(under: Under) -> Any:
    return await under(0, sleep_long)


async def s_zero_no_suspend(under: Under) -> Any:
    async def body() -> int:
        return 3

    return await under(0, body)


async def s_zero_one_yield(under: Under) -> Any:
    # Fires: the expiry is a ready callback queued before the task's next step.
    async def body() -> int:
        await asyncio.sleep(0)
        return 4

    return await under(0, body)


async def s_past(under: Under) -> Any:
    return await under(PAST, sleep_long)


async def s_own_timeout_before_fire(under: Under) -> Any:
    async def body() -> None:
        raise builtins.TimeoutError("mine")

    return await under(LONG, body)


async def s_own_timeout_after_fire(under: Under) -> Any:
    async def body() -> None:
        try:
            await sleep_long()
        except asyncio.CancelledError:
            raise builtins.TimeoutError("mine") from None

    return await under(SHORT, body)


async def s_own_timeout_after_fire_chained(under: Under) -> Any:
    async def body() -> None:
        try:
            await sleep_long()
        except asyncio.CancelledError:
            raise builtins.TimeoutError("mine")  # noqa: B904 - keeps the implicit context

    return await under(SHORT, body)


async def s_value_error(under: Under) -> Any:
    async def body() -> None:
        await asyncio.sleep(0)
        raise ValueError("bad")

    return await under(LONG, body)


async def s_value_error_after_fire(under: Under) -> Any:
    async def body() -> None:
        try:
            await sleep_long()
        except asyncio.CancelledError:
            raise ValueError("bad")  # noqa: B904 - keeps the implicit context

    return await under(SHORT, body)


async def s_own_cancelled(under: Under) -> Any:
    async def body() -> None:
        await asyncio.sleep(0)
        raise asyncio.CancelledError

    return await under(LONG, body)


class MyCancelled(asyncio.CancelledError):
    pass


async def s_cancelled_subclass_after_fire(under: Under) -> Any:
    async def body() -> None:
        try:
            await sleep_long()
        except asyncio.CancelledError:
            raise MyCancelled  # noqa: B904 - keeps the implicit context

    return await under(SHORT, body)


async def s_outer_cancel(under: Under) -> Any:
    async def body() -> None:
        asyncio.get_running_loop().call_soon(me().cancel)
        await sleep_long()

    return await under(LONG, body)


async def s_outer_cancel_and_deadline_same_iteration(under: Under) -> Any:
    async def body() -> None:
        asyncio.get_running_loop().call_soon(me().cancel)
        await sleep_long()

    return await under(0, body)


async def s_outer_cancel_before_entry(under: Under) -> Any:
    asyncio.get_running_loop().call_soon(me().cancel)
    return await under(0, sleep_long)


async def s_enter_while_cancelling(under: Under) -> Any:
    # A cancel caught without uncancel(): cancelling() is 1 at entry, and the fire is still ours.
    try:
        me().cancel()
        await asyncio.sleep(0)
    except asyncio.CancelledError:
        pass
    return await under(SHORT, sleep_long)


async def s_deadline_then_outer_cancel(under: Under) -> Any:
    async def body() -> None:
        try:
            await sleep_long()
        except asyncio.CancelledError:
            me().cancel()
            await asyncio.sleep(0)

    return await under(SHORT, body)


async def s_nested_inner_fires(under: Under) -> Any:
    async def inner() -> Any:
        return await under(SHORT, sleep_long)

    async def outer() -> Any:
        try:
            await inner()
        except builtins.TimeoutError as e:
            return f"inner: {kind(e)}"
        return "none"

    return await under(LONG, outer)


async def s_nested_outer_fires(under: Under) -> Any:
    async def outer() -> Any:
        return await under(LONG, sleep_long)

    return await under(SHORT, outer)


async def s_nested_both_fire(under: Under) -> Any:
    async def outer() -> Any:
        return await under(0, sleep_long)

    return await under(0, outer)


async def s_nested_both_fire_inner_caught(under: Under) -> Any:
    async def outer() -> Any:
        try:
            return await under(0, sleep_long)
        except asyncio.CancelledError:
            await asyncio.sleep(0)  # the outer cancel request is still pending
            return "survived"

    return await under(0, outer)


async def s_swallowed(under: Under) -> Any:
    async def body() -> str:
        try:
            await sleep_long()
        except asyncio.CancelledError:
            return "swallowed"
        return "slept"

    return await under(SHORT, body)


async def s_swallowed_keeps_running(under: Under) -> Any:
    async def body() -> str:
        with contextlib.suppress(asyncio.CancelledError):
            await sleep_long()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return "kept running"

    return await under(SHORT, body)


async def s_sequential_reuse(under: Under) -> Any:
    results = []
    for d, body in [(SHORT, sleep_long), (LONG, lambda: asyncio.sleep(0)), (SHORT, sleep_long)]:
        try:
            results.append(await under(d, body))
        except builtins.TimeoutError as e:
            results.append(describe(e))
    return results


async def s_task_group(under: Under) -> Any:
    async def body() -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(sleep_long())
            tg.create_task(sleep_long())

    return await under(SHORT, body)


async def s_task_group_child_fails_on_cancel(under: Under) -> Any:
    async def child() -> None:
        try:
            await sleep_long()
        except asyncio.CancelledError:
            raise ValueError("child")  # noqa: B904 - keeps the implicit context

    async def body() -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(child())
            await sleep_long()

    return await under(SHORT, body)


async def s_inside_wait_for(under: Under) -> Any:
    return await asyncio.wait_for(under(SHORT, sleep_long), LONG)


async def s_wait_for_fires_first(under: Under) -> Any:
    return await asyncio.wait_for(under(LONG, sleep_long), SHORT)


async def s_cause_and_context(under: Under) -> Any:
    try:
        await under(SHORT, sleep_long)
    except builtins.TimeoutError as e:
        return (
            type(e.__cause__).__name__,
            e.__cause__ is e.__context__,
            e.__suppress_context__,
        )
    return None


SCENARIOS = {name[2:]: fn for name, fn in globals().items() if name.startswith("s_")}


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_same_as_asyncio_timeout(scenario: str, form: str) -> None:
    if scenario == "past" and form == "decorator":
        pytest.skip("a decorated call has no scope to move its deadline into the past")
    expected = await record(under_asyncio, SCENARIOS[scenario], ours=False)
    got = await record(FORMS[form], SCENARIOS[scenario], ours=True)
    assert got == expected
    assert _native._timeout_pending() == 0


async def test_scenarios_cover_both_outcomes() -> None:
    fired = await record(under_shared, s_fire, ours=True)
    assert fired["raised"][0] == "TimeoutError()"
    assert fired["raised"][1] == "CancelledError"
    assert fired["cancelling"] == 0
    assert fired["usable"]
    won = await record(under_shared, s_outer_cancel_and_deadline_same_iteration, ours=True)
    assert won["raised"][0] == "CancelledError"


# ------------------------------------------------------------------------------------------
# Concurrency: one object shared by many tasks


@pytest.mark.parametrize("form", ["shared", "decorator"])
async def test_many_tasks_share_one_timeout(form: str) -> None:
    policy = timeout(0.5)  # the quick tasks must finish well within it, even on a slow machine

    async def body(i: int) -> int:
        await asyncio.sleep(LONG if i % 3 == 0 else 0)
        await asyncio.sleep(0)
        return i

    guarded = policy(body)

    async def one(i: int) -> Any:
        try:
            if form == "shared":
                async with policy as scope:
                    result = await body(i)
                assert not scope.expired()
                return result
            return await guarded(i)
        except TimeoutError:
            assert me().cancelling() == 0
            return "timeout"

    n = 240
    results = await asyncio.gather(*(one(i) for i in range(n)))
    assert results == ["timeout" if i % 3 == 0 else i for i in range(n)]
    assert policy.stats()["fired"] == n // 3
    assert _native._timeout_pending() == 0


async def test_interleaved_tasks_nest_one_object() -> None:
    policy = timeout(LONG)
    order: list[str] = []

    async def worker(tag: str, fire: bool) -> Any:
        async with policy as outer:
            await asyncio.sleep(0)
            async with policy as inner:
                if fire:
                    inner.reschedule(asyncio.get_running_loop().time())
                await asyncio.sleep(0)
                await asyncio.sleep(SHORT if fire else 0)
                order.append(tag)
            await asyncio.sleep(0)
        return outer.expired(), inner.expired()

    results = await asyncio.gather(
        *(worker(f"t{i}", i % 2 == 1) for i in range(20)), return_exceptions=True
    )
    for i, res in enumerate(results):
        if i % 2:
            assert isinstance(res, TimeoutError)
        else:
            assert res == (False, False)
    assert policy.stats()["fired"] == 10
    assert _native._timeout_pending() == 0


async def test_staggered_entries_fire_in_deadline_order() -> None:
    policy = timeout(0.03)
    fired: list[int] = []
    deadlines: dict[int, float] = {}

    async def worker(i: int) -> None:
        await asyncio.sleep(0.002 * i)
        try:
            async with policy as scope:
                when = scope.when()
                assert when is not None
                deadlines[i] = when
                await sleep_long()
        except TimeoutError:
            fired.append(i)

    await asyncio.gather(*(worker(i) for i in range(10)))
    assert sorted(fired) == list(range(10))
    # In deadline order; entries of one loop turn may share a deadline on a millisecond clock
    # (uvloop), and those have no order among them.
    order = [deadlines[i] for i in fired]
    assert order == sorted(order)


# ------------------------------------------------------------------------------------------
# Nothing stays registered, whatever ends the call


@pytest.mark.parametrize("form", ["shared", "decorator"])
@pytest.mark.parametrize("cancel_at", [0, 1, 2, 3, 4])
async def test_cancel_at_each_await_leaves_nothing(form: str, cancel_at: int) -> None:
    policy = timeout(LONG)
    progress: list[int] = []

    async def body() -> None:
        for i in range(4):
            progress.append(i)
            await asyncio.sleep(0)

    guarded = policy(body)

    async def run() -> None:
        if form == "shared":
            async with policy:
                await body()
        else:
            await guarded()

    task = asyncio.create_task(run())
    for _ in range(cancel_at):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(progress) == min(cancel_at, 4)
    assert _native._timeout_pending() == 0
    assert policy.stats()["fired"] == 0


async def test_abandoned_guarded_call_unlinks() -> None:
    policy = timeout(LONG)

    @policy
    async def f() -> None:
        await asyncio.sleep(LONG)

    coro = f()
    coro.send(None)  # first drive: registered for the current task, then suspended
    assert _native._timeout_pending() == 1
    coro.close()
    assert _native._timeout_pending() == 0

    # Dropped while pending: like a loop timer, the deadline keeps the call until it fires, and
    # then, since nobody awaits the call any more, cancels nothing.
    async def g() -> None:
        await asyncio.sleep(LONG)

    coro = timeout(SHORT)(g)()
    coro.send(None)
    del coro
    gc.collect()
    assert _native._timeout_pending() == 1
    await asyncio.sleep(SHORT * 5)
    gc.collect()
    assert _native._timeout_pending() == 0
    assert me().cancelling() == 0


async def test_unstarted_guarded_call_registers_nothing() -> None:
    policy = timeout(SHORT)

    @policy
    async def f() -> None:
        await asyncio.sleep(LONG)

    coro = f()
    assert _native._timeout_pending() == 0
    coro.close()
    await asyncio.sleep(SHORT * 2)
    assert me().cancelling() == 0


async def test_exit_out_of_order_unlinks_innermost_of_that_object() -> None:
    a, b = timeout(LONG), timeout(LONG)
    sa = await a.__aenter__()
    sb = await b.__aenter__()
    sa2 = await a.__aenter__()
    assert _native._timeout_pending() == 3
    await a.__aexit__(None, None, None)  # the innermost entry of a: sa2
    assert repr(sa2).endswith("[finished]>")
    assert "[active]" in repr(sa)
    await b.__aexit__(None, None, None)
    await a.__aexit__(None, None, None)
    assert _native._timeout_pending() == 0
    assert "[finished]" in repr(sb)
    with pytest.raises(RuntimeError, match="without a matching __aenter__"):
        await a.__aexit__(None, None, None)
    # a's entry is not the innermost one of the task: unlinked from the middle of the chain
    sa = await a.__aenter__()
    sb = await b.__aenter__()
    await a.__aexit__(None, None, None)
    assert "[finished]" in repr(sa)
    assert "[active]" in repr(sb)
    await b.__aexit__(None, None, None)
    assert _native._timeout_pending() == 0


async def test_dead_loops_are_not_kept_alive() -> None:
    policy = timeout(LONG)

    async def main() -> asyncio.AbstractEventLoop:
        async with policy:
            await asyncio.sleep(0)
        await policy(asyncio.sleep)(0)
        return asyncio.get_running_loop()

    def run_in_thread() -> weakref.ref[asyncio.AbstractEventLoop]:
        return weakref.ref(asyncio.run(main()))

    # A loop of its own (asyncio.run cannot nest): run it from a worker thread.
    refs = [await asyncio.to_thread(run_in_thread) for _ in range(3)]
    gc.collect()
    assert all(ref() is None for ref in refs)
    async with policy:  # this loop's queue still works
        await asyncio.sleep(0)


async def test_loop_with_its_own_clock() -> None:
    offset = 1000.0

    def shifted() -> float:
        return time.monotonic() + offset

    async def main() -> float | None:
        async with timeout(LONG) as scope:
            return scope.when()

    def run() -> tuple[float | None, float]:
        other = asyncio.new_event_loop()
        other.time = shifted  # type: ignore[method-assign]
        try:
            when = other.run_until_complete(main())
            return when, shifted()
        finally:
            other.close()

    when, after = await asyncio.to_thread(run)
    assert when is not None
    assert after - offset < when <= after + LONG


async def test_eager_tasks() -> None:
    loop = asyncio.get_running_loop()
    policy = timeout(SHORT)
    old = loop.get_task_factory()
    loop.set_task_factory(asyncio.eager_task_factory)
    try:

        async def body() -> str:
            try:
                async with policy:
                    await sleep_long()
            except TimeoutError:
                return "timeout"
            return "no"

        assert (
            await asyncio.gather(*(asyncio.create_task(body()) for _ in range(5)))
            == ["timeout"] * 5
        )
    finally:
        loop.set_task_factory(old)
    assert _native._timeout_pending() == 0


# ------------------------------------------------------------------------------------------
# Scope: asyncio.Timeout's when(), reschedule(), expired()


async def test_scope_when_reschedule_expired() -> None:
    loop = asyncio.get_running_loop()
    before = loop.time()
    async with timeout(LONG, name="db") as scope:
        after = loop.time()
        when = scope.when()
        assert when is not None
        assert before + LONG <= when <= after + LONG
        assert not scope.expired()
        assert repr(scope).startswith("<TimeoutScope 'db' [active] when=")
        scope.reschedule(None)
        assert scope.when() is None
        assert "when=None" in repr(scope)
        await asyncio.sleep(SHORT)
        scope.reschedule(loop.time() + LONG)
        await asyncio.sleep(0)
    assert not scope.expired()
    assert repr(scope) == "<TimeoutScope 'db' [finished]>"
    with pytest.raises(RuntimeError, match="finished"):
        scope.reschedule(None)

    async def rescheduled() -> TimeoutScope:
        async with timeout(LONG) as scope:
            scope.reschedule(loop.time() + SHORT)
            try:
                await sleep_long()
            finally:
                scopes.append(scope)
        return scope

    scopes: list[TimeoutScope] = []
    with pytest.raises(TimeoutError):
        await rescheduled()
    scope = scopes[0]
    assert scope.expired()
    assert "[expired]" in repr(scope)
    with pytest.raises(RuntimeError, match="expired"):
        scope.reschedule(loop.time() + LONG)


async def test_scope_expiring_and_reentry() -> None:
    async def expiring() -> TimeoutScope:
        async with timeout(0) as scope:
            try:
                await sleep_long()
            except asyncio.CancelledError:
                assert scope.expired()
                assert "[expiring]" in repr(scope)
                with pytest.raises(RuntimeError, match="expiring"):
                    scope.reschedule(None)
                scopes.append(scope)
                raise
        return scope

    scopes: list[TimeoutScope] = []
    with pytest.raises(TimeoutError):
        await expiring()
    scope = scopes[0]
    with pytest.raises(RuntimeError, match="already been entered"):
        async with scope:  # type: ignore[attr-defined]
            pass


async def test_reschedule_earlier_and_later() -> None:
    loop = asyncio.get_running_loop()
    policy = timeout(LONG)
    async with policy as scope:
        scope.reschedule(loop.time() + LONG * 2)
        await asyncio.sleep(0)

    async def earlier() -> None:
        async with policy as scope:
            scope.reschedule(loop.time() + LONG * 2)
            scope.reschedule(loop.time() + SHORT)
            await sleep_long()

    async def disabled_then_due() -> None:
        async with timeout(None) as scope:
            assert scope.when() is None
            scope.reschedule(loop.time())
            await sleep_long()

    with pytest.raises(TimeoutError):
        await earlier()
    with pytest.raises(TimeoutError):
        await disabled_then_due()
    async with timeout(math.inf) as scope:
        assert scope.when() == math.inf
        await asyncio.sleep(0)
    assert _native._timeout_pending() == 0


# ------------------------------------------------------------------------------------------
# Outside a task, disabled, infinite


async def test_outside_a_task() -> None:
    policy = timeout(LONG)

    @policy
    async def f() -> None:
        pass

    errors: list[BaseException] = []

    def callback() -> None:
        for attempt in (policy.__aenter__, lambda: f().send(None)):
            try:
                attempt()
            except RuntimeError as e:
                errors.append(e)

    asyncio.get_running_loop().call_soon(callback)
    await asyncio.sleep(0)
    assert [str(e) for e in errors] == ["Timeout should be used inside a task"] * 2


def test_outside_a_loop() -> None:
    policy = timeout(LONG)

    @policy
    async def f() -> None:
        pass

    with pytest.raises(RuntimeError, match="no running event loop"):
        policy.__aenter__()
    coro = f()
    with pytest.raises(RuntimeError, match="no running event loop"):
        coro.send(None)


async def test_disabled_and_infinite_return_the_function_coroutine() -> None:
    for policy in (timeout(None), timeout(), timeout(math.inf)):

        @policy
        async def f(x: int) -> int:
            await asyncio.sleep(0)
            return x

        coro = f(4)
        assert inspect.iscoroutine(coro)
        assert await coro == 4
    async with timeout(None) as scope:
        await asyncio.sleep(SHORT)
    assert not scope.expired()


# ------------------------------------------------------------------------------------------
# Decorator details


async def test_decorator_keeps_results_and_metadata() -> None:
    policy = timeout(LONG)

    @policy
    async def f(a: int, *, b: tuple[int, int]) -> tuple[int, tuple[int, int]]:
        """Doc."""
        return a, b

    assert await f(1, b=(2, 3)) == (1, (2, 3))
    assert f.__name__ == "f"
    assert f.__doc__ == "Doc."
    assert inspect.iscoroutinefunction(f)
    assert policy.name == "test_decorator_keeps_results_and_metadata.f"

    @policy
    async def g() -> None:
        pass

    assert policy.name == "test_decorator_keeps_results_and_metadata.f"  # the first adopted
    assert timeout(1, name="explicit")(g).policy.name == "explicit"  # type: ignore[attr-defined]


async def test_methods() -> None:
    class Client:
        def __init__(self) -> None:
            self.calls = 0

        @timeout(SHORT)
        async def slow(self) -> None:
            self.calls += 1
            await sleep_long()

        @timeout(LONG)
        async def fast(self, x: int) -> tuple[Client, int]:
            self.calls += 1
            return self, x

    c = Client()
    assert await c.fast(5) == (c, 5)
    with pytest.raises(TimeoutError):
        await c.slow()
    assert c.calls == 2
    assert inspect.iscoroutinefunction(Client.fast)


def test_sync_callable_rejected() -> None:
    def sync() -> None:
        pass

    with pytest.raises(TypeError, match="async function"):
        timeout(1)(sync)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="async function"):
        timeout(1)(42)  # type: ignore[arg-type]


async def test_timeout_error_raised_by_function_passes_untouched() -> None:
    policy = timeout(LONG)
    mine = builtins.TimeoutError("mine")

    @policy
    async def f() -> None:
        raise mine

    with pytest.raises(builtins.TimeoutError) as info:
        await f()
    assert info.value is mine
    assert policy.stats()["fired"] == 0


# ------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"seconds": "1"}, TypeError, "seconds must be a number"),
        ({"seconds": True}, TypeError, "seconds must be a number"),
        ({"seconds": [1]}, TypeError, "seconds must be a number"),
        ({"seconds": -1}, ValueError, "seconds must be >= 0"),
        ({"seconds": -0.5}, ValueError, "seconds must be >= 0"),
        ({"seconds": math.nan}, ValueError, "seconds must not be NaN"),
        ({"seconds": -math.inf}, ValueError, "seconds must be >= 0"),
        ({"timeout_secs": "1"}, TypeError, "timeout_secs must be a number"),
        ({"timeout_secs": -1}, ValueError, "timeout_secs must be >= 0"),
        ({"timeout_secs": math.nan}, ValueError, "timeout_secs must not be NaN"),
        ({"seconds": 1, "timeout_secs": 1}, TypeError, "not both"),
        ({"name": 3}, TypeError, "name must be a str"),
        ({"name": "no spaces"}, ValueError, "name"),
        ({"name": ""}, ValueError, "name"),
        ({"listeners": 3}, TypeError, "listeners"),
        ({"listeners": [3]}, TypeError, "listeners"),
        ({"event_manager": 3}, TypeError, "event_manager"),
    ],
)
def test_validation(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        timeout(**kwargs)


@pytest.mark.parametrize(
    ("args", "kwargs", "seconds"),
    [
        ((), {}, None),
        ((None,), {}, None),
        ((0,), {}, 0.0),
        ((0.25,), {}, 0.25),
        ((3,), {}, 3.0),
        ((math.inf,), {}, math.inf),
        ((), {"seconds": 2}, 2.0),
        ((), {"timeout_secs": 2}, 2.0),
        ((), {"timeout_secs": None}, None),
    ],
)
def test_accepted_values(args: tuple[Any, ...], kwargs: dict[str, Any], seconds: Any) -> None:
    policy = timeout(*args, **kwargs)
    assert policy.seconds == seconds
    assert isinstance(policy, Timeout)
    assert f"seconds={seconds!r}" in repr(policy)


def test_native_type_refuses_what_breaks_its_timer_queue() -> None:
    # check_seconds names the bad parameter; the C type keeps only its timer queue's contract.
    with pytest.raises(ValueError, match="seconds must be >= 0"):
        _native.Timeout(-1.0)
    with pytest.raises(ValueError, match="not NaN"):
        _native.Timeout(math.nan)
    with pytest.raises(TypeError):
        _native.Timeout("1")  # type: ignore[arg-type]
    assert _native.Timeout(math.inf).seconds == math.inf
    assert _native.Timeout(2).seconds == 2.0
    assert _native.Timeout().seconds is None


def test_exceptions() -> None:
    assert MaxDurationExceeded is TimeoutError
    assert issubclass(TimeoutError, builtins.TimeoutError)
    assert issubclass(TimeoutError, FailsafeError)
    assert timeout_exceptions.TimeoutError is TimeoutError
    assert timeout_exceptions.MaxDurationExceeded is TimeoutError


# ------------------------------------------------------------------------------------------
# Counters and listeners


async def test_fired_counts_once_per_timeout() -> None:
    policy = timeout(SHORT)
    guarded = policy(_call)
    for _ in range(3):
        with pytest.raises(TimeoutError):
            async with policy:
                await sleep_long()
        with pytest.raises(TimeoutError):
            await guarded(sleep_long)
    async with policy:
        await asyncio.sleep(0)
    assert policy.stats() == {"name": "call", "fired": 6}

    nested = timeout(0)

    async def both() -> None:
        async with nested, nested:  # both fire in one iteration: only the outer one raises
            await sleep_long()

    with pytest.raises(TimeoutError):
        await both()
    assert nested.stats()["fired"] == 1

    swallowed = timeout(SHORT)
    async with swallowed:
        with contextlib.suppress(asyncio.CancelledError):
            await sleep_long()
    assert swallowed.stats()["fired"] == 0


class Recorder(TimeoutListener):
    def __init__(self) -> None:
        self.seen: list[Any] = []

    def on_timeout(self, timeout: Timeout) -> None:
        self.seen.append(timeout)


class Exploding(TimeoutListener):
    def on_timeout(self, timeout: Timeout) -> None:
        raise RuntimeError("listener bug")


async def test_local_listeners(caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    policy = timeout(SHORT, name="guarded", listeners=[Exploding(), recorder])
    with caplog.at_level(logging.ERROR, logger="failsafe"):
        with pytest.raises(TimeoutError) as info:
            async with policy:
                await sleep_long()
        assert type(info.value.__cause__) is asyncio.CancelledError
        with pytest.raises(TimeoutError):
            await policy(_call)(sleep_long)
        async with policy:
            await asyncio.sleep(0)
    assert recorder.seen == [policy, policy]
    assert "listener bug" in caplog.text
    assert me().cancelling() == 0


async def test_async_listener() -> None:
    seen: list[str] = []

    class AsyncListener:
        async def on_timeout(self, timeout: Timeout) -> None:
            await asyncio.sleep(0)
            seen.append(timeout.name)

    policy = timeout(0, name="a", listeners=[AsyncListener()])
    with pytest.raises(TimeoutError):
        await policy(_call)(sleep_long)
    await events.get_event_manager().wait_for_tasks()
    assert seen == ["a"]


async def test_global_listener() -> None:
    recorder = Recorder()
    before = timeout(0, name="before")
    register_timeout_listener(recorder)
    try:
        after = timeout(0, name="after")
        for policy in (before, after):
            with pytest.raises(TimeoutError):
                async with policy:
                    await sleep_long()
    finally:
        events.unregister_listener("timeout", recorder)
    assert recorder.seen == [before, after]


def test_subclassable_native_type() -> None:
    assert Timeout.__mro__[1:3] == (
        sys.modules["failsafe._core"].Component,
        _native.Timeout,
    )


async def test_context_manager_methods() -> None:
    policy = timeout(LONG)
    enter: Any = policy.__aenter__
    assert enter.__name__ == "__aenter__"
    assert enter.__self__ is policy
    assert "bound method __aenter__" in repr(enter)
    scope = await enter()
    assert isinstance(scope, TimeoutScope)
    await _native.Timeout.__aexit__(policy, None, None, None)
    descr = vars(_native.Timeout)["__aexit__"]
    with pytest.raises(TypeError, match="binds to a Timeout"):
        descr.__get__(42)
    with pytest.raises(TypeError, match="first argument"):
        descr(42, None, None, None)
    with pytest.raises(TypeError, match="positional"):
        enter(None)
    assert _native._timeout_pending() == 0


async def test_pending_decorated_call_keeps_its_unreferenced_task_alive() -> None:
    """asyncio.timeout's TimerHandle keeps a pending task alive; so does the C deadline."""
    never = asyncio.get_running_loop().create_future()

    @timeout(SHORT)
    async def wait() -> None:
        await never

    outcomes: list[str] = []

    async def runner() -> None:
        try:
            await wait()
        except TimeoutError:
            outcomes.append("timeout")

    asyncio.ensure_future(runner())  # no reference kept  # noqa: RUF006
    await asyncio.sleep(0)
    gc.collect()
    await asyncio.sleep(SHORT * 5)
    assert outcomes == ["timeout"]


async def test_closing_a_fired_decorated_call_takes_back_the_cancel() -> None:
    @types.coroutine
    def bare() -> Any:
        yield

    async def body() -> int:
        await bare()
        return 1

    async def run() -> int:
        coro = timeout(SHORT)(body)()
        coro.send(None)  # registered, suspended at the bare yield
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(SHORT * 5)  # the deadline fires into this task
        coro.close()  # as leaving asyncio.timeout would: our cancel request is taken back
        return me().cancelling()

    assert await asyncio.create_task(run()) == 0


async def test_async_generator_closed_by_the_loop_leaves_its_scope() -> None:
    """The loop closes an abandoned async generator in another task: __aexit__ still finds the
    (only) scope of the policy, and nobody is cancelled later."""

    async def gen() -> collections.abc.AsyncIterator[int]:
        async with timeout(SHORT * 20):
            yield 1
            yield 2

    async for _ in gen():
        break
    await asyncio.sleep(SHORT * 40)  # past the deadline: nothing may fire into this task
    assert _native._timeout_pending() == 0
    assert me().cancelling() == 0


def test_check_seconds_is_the_one_check() -> None:
    assert check_seconds(None, "seconds") is None
    assert check_seconds(2, "seconds") == 2.0
    assert check_seconds(2**60, "seconds") == float(2**60)  # past the int fast path
    assert check_seconds(math.inf, "timeout_secs") == math.inf
    with pytest.raises(ValueError, match="timeout_secs must not be NaN"):
        check_seconds(math.nan, "timeout_secs")
    with pytest.raises(TypeError, match="seconds must be a number"):
        check_seconds(True, "seconds")
