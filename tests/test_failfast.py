"""failsafe.failfast: the latch, predicates, recovery, manual control, block form, listeners,
stats, concurrency, cancellation, composition, and the C engine against a Python model."""

from __future__ import annotations

import asyncio
import gc
import importlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from failsafe.events import EventManager
from failsafe.exceptions import FailsafeError
from failsafe.failfast import (
    FailFast,
    FailFastListener,
    FailFastManager,
    FailFastOpen,
    failfast,
    register_failfast_listener,
)
from failsafe.failfast._options import FailFastOptions
from failsafe.fallback import fallback
from failsafe.retry import AttemptsExceeded, retry
from failsafe.testing import FakeClock
from failsafe.timeout import TimeoutError as FsTimeoutError
from failsafe.timeout import timeout


class Recorder(FailFastListener):
    def __init__(self) -> None:
        self.events: list[str] = []

    def on_failfast_open(self, failfast: FailFast) -> None:
        self.events.append("open")

    def on_failfast_close(self, failfast: FailFast) -> None:
        self.events.append("close")

    def on_failfast_rejected(self, failfast: FailFast) -> None:
        self.events.append("rejected")


class Service:
    """An async function that fails while `failing` is set, counting its calls."""

    def __init__(self) -> None:
        self.failing = False
        self.calls = 0
        self.args: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    async def __call__(self, *args: Any, **kwargs: Any) -> str:
        self.calls += 1
        self.args.append((args, kwargs))
        await asyncio.sleep(0)
        if self.failing:
            raise ValueError(f"call {self.calls}")
        return "ok"


def guarded(policy: FailFast, svc: Service) -> Callable[..., Coroutine[Any, Any, str]]:
    async def call(*args: Any, **kwargs: Any) -> str:
        return await svc(*args, **kwargs)

    return policy(call)


def counts(policy: FailFast) -> tuple[int, int, int]:
    s = policy.stats()
    return s["opened"], s["closed"], s["rejected"]


async def fail(fn: Callable[[], Awaitable[Any]]) -> BaseException:
    """The exception the call raises (the tests check its exact type)."""
    try:
        await fn()
    except Exception as e:
        return e
    raise AssertionError("the call did not fail")


# ------------------------------------------------------------------------------------------
# Names and validation


def test_public_names_and_exceptions() -> None:
    exc_mod = importlib.import_module("failsafe.failfast.exceptions")
    assert exc_mod.FailFastOpen is FailFastOpen
    assert issubclass(FailFastOpen, FailsafeError)
    assert FailFastManager is FailFast
    e = FailFastOpen()
    assert str(e) == ""
    assert e.retry_after is None
    e = FailFastOpen("open", retry_after=2.5)
    assert str(e) == "open"
    assert e.retry_after == 2.5


@pytest.mark.parametrize(
    ("kwargs", "error", "param"),
    [
        ({"failure_threshold": 0}, ValueError, "failure_threshold"),
        ({"failure_threshold": -1}, ValueError, "failure_threshold"),
        ({"failure_threshold": 1.5}, TypeError, "failure_threshold"),
        ({"failure_threshold": "3"}, TypeError, "failure_threshold"),
        ({"failure_threshold": True}, TypeError, "failure_threshold"),
        ({"recovery_time": 0}, ValueError, "recovery_time"),
        ({"recovery_time": -1}, ValueError, "recovery_time"),
        ({"recovery_time": float("nan")}, ValueError, "recovery_time"),
        ({"recovery_time": float("inf")}, ValueError, "recovery_time"),
        ({"recovery_time": 1e10}, ValueError, "recovery_time"),
        ({"recovery_time": "1"}, TypeError, "recovery_time"),
        ({"on": int}, TypeError, "on"),
        ({"on": ()}, ValueError, "on"),
        ({"on": 3}, TypeError, "on"),
        ({"predicate": 3}, TypeError, "predicate"),
        ({"name": "1bad"}, ValueError, "name"),
        ({"name": 3}, TypeError, "name"),
        ({"listeners": 3}, TypeError, "listeners"),
        ({"event_manager": object()}, TypeError, "event_manager"),
    ],
)
def test_every_parameter_is_validated(kwargs: dict[str, Any], error: type, param: str) -> None:
    with pytest.raises(error, match=param):
        failfast(**kwargs)


def test_async_on_predicate_is_rejected() -> None:
    async def is_failure(exc: BaseException) -> bool:
        return True

    with pytest.raises(TypeError, match="on"):
        failfast(on=is_failure)


def test_sync_functions_are_rejected_at_decoration() -> None:
    def sync() -> int:
        return 1

    with pytest.raises(TypeError, match="async"):
        failfast()(sync)  # type: ignore[arg-type]


async def test_guard_looks_like_the_function_and_exposes_its_policy() -> None:
    policy = failfast(failure_threshold=2)

    async def fetch(x: int) -> int:
        """Doc."""
        return x

    g = policy(fetch)
    assert inspect.iscoroutinefunction(g)
    assert g.__name__ == "fetch"
    assert g.__doc__ == "Doc."
    assert g.__wrapped__ is fetch
    assert g.policy is policy
    assert g._manager is policy
    assert policy._manager is policy
    assert policy.name == "test_guard_looks_like_the_function_and_exposes_its_policy.fetch"
    assert await g(3) == 3
    assert failfast(name="explicit")(fetch).policy.name == "explicit"


async def test_bare_decorator() -> None:
    @failfast
    async def f() -> int:
        return 1

    assert await f() == 1
    assert isinstance(f.policy, FailFast)


# ------------------------------------------------------------------------------------------
# The latch


async def test_opens_after_threshold_consecutive_failures() -> None:
    svc = Service()
    policy = failfast(failure_threshold=3)
    g = guarded(policy, svc)
    svc.failing = True
    for i in (1, 2):
        e = await fail(g)
        assert type(e) is ValueError
        assert str(e) == f"call {i}"
    assert policy.failures == 2
    assert policy.state == "closed"
    tripped = await fail(g)
    assert type(tripped) is FailFastOpen
    assert type(tripped.__cause__) is ValueError
    assert str(tripped.__cause__) == "call 3"
    assert tripped.retry_after is None
    assert policy.is_open
    assert policy.state == "open"
    # Open: rejected without calling, however the function would do now.
    svc.failing = False
    for _ in range(5):
        e = await fail(g)
        assert type(e) is FailFastOpen
        assert e.__cause__ is None
    assert svc.calls == 3
    assert counts(policy) == (1, 0, 5)


async def test_a_success_resets_the_count() -> None:
    svc = Service()
    policy = failfast(failure_threshold=2)
    g = guarded(policy, svc)
    for _ in range(10):
        svc.failing = True
        assert type(await fail(g)) is ValueError
        svc.failing = False
        assert await g() == "ok"
    assert not policy.is_open
    assert policy.failures == 0
    assert counts(policy) == (0, 0, 0)


async def test_only_matching_exceptions_count() -> None:
    class Transient(Exception):
        pass

    policy = failfast(failure_threshold=1, on=Transient)

    @policy
    async def f(exc: BaseException) -> None:
        raise exc

    for _ in range(3):
        with pytest.raises(KeyError):
            await f(KeyError("x"))
    assert policy.failures == 0
    assert not policy.is_open
    with pytest.raises(FailFastOpen):
        await f(Transient())


async def test_on_predicate_decides_what_is_a_failure() -> None:
    seen: list[BaseException] = []

    def is_failure(exc: BaseException) -> bool:
        seen.append(exc)
        return isinstance(exc, OSError)

    policy = failfast(failure_threshold=2, on=is_failure)

    @policy
    async def f(exc: BaseException) -> None:
        raise exc

    with pytest.raises(ValueError, match="v"):
        await f(ValueError("v"))
    with pytest.raises(OSError, match="o"):
        await f(OSError("o"))
    assert policy.failures == 1
    with pytest.raises(FailFastOpen):
        await f(OSError())
    assert len(seen) == 3


async def test_a_raising_on_predicate_propagates_chained() -> None:
    def broken(exc: BaseException) -> bool:
        raise RuntimeError("predicate bug")

    @failfast(failure_threshold=1, on=broken)
    async def f() -> None:
        raise ValueError("original")

    with pytest.raises(RuntimeError, match="predicate bug") as info:
        await f()
    assert isinstance(info.value.__context__, ValueError)


@pytest.mark.parametrize("exc", [asyncio.CancelledError, KeyboardInterrupt, GeneratorExit])
async def test_base_exceptions_are_never_failures(exc: type[BaseException]) -> None:
    policy = failfast(failure_threshold=1, on=BaseException)

    @policy
    async def f() -> None:
        raise exc()

    with pytest.raises(exc):
        await f()
    assert policy.failures == 0
    assert not policy.is_open


async def test_without_threshold_it_never_opens_on_failures() -> None:
    svc = Service()
    svc.failing = True
    policy = failfast()
    g = guarded(policy, svc)
    for _ in range(50):
        assert type(await fail(g)) is ValueError
    assert not policy.is_open
    assert svc.calls == 50
    # The call is not even wrapped: the guard hands back fn's own coroutine.
    coro = g()
    assert inspect.iscoroutine(coro)
    coro.close()


async def test_failures_of_calls_in_flight_while_open_do_not_reopen() -> None:
    policy = failfast(failure_threshold=1)
    gate = asyncio.Event()

    @policy
    async def slow_fail() -> None:
        await gate.wait()
        raise ValueError("late")

    pending = [asyncio.create_task(slow_fail()) for _ in range(3)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*pending, return_exceptions=True)
    assert [type(r) for r in results] == [FailFastOpen, ValueError, ValueError]
    assert counts(policy) == (1, 0, 0)
    assert policy.failures == 3


async def test_a_success_while_open_does_not_close() -> None:
    policy = failfast(failure_threshold=1)
    gate = asyncio.Event()

    @policy
    async def f(ok: bool) -> str:
        await gate.wait()
        if not ok:
            raise ValueError
        return "ok"

    late = asyncio.create_task(f(True))
    failing = asyncio.create_task(f(False))
    await asyncio.sleep(0)
    gate.set()
    assert await late == "ok"
    with pytest.raises(FailFastOpen):
        await failing
    # The success finished first, then the failure opened it: it stays open.
    assert policy.is_open


# ------------------------------------------------------------------------------------------
# Recovery, manual control (fake clock)


async def test_recovery_time_closes_it_at_the_next_call(clock: FakeClock) -> None:
    svc = Service()
    rec = Recorder()
    policy = failfast(failure_threshold=1, recovery_time=10, listeners=[rec])
    g = guarded(policy, svc)
    svc.failing = True
    tripped = await fail(g)
    assert isinstance(tripped, FailFastOpen)
    assert tripped.retry_after == 10.0
    clock.advance(4)
    e = await fail(g)
    assert isinstance(e, FailFastOpen)
    assert e.retry_after == pytest.approx(6.0)
    assert policy.retry_after == pytest.approx(6.0)
    clock.advance(6 - 1e-9)
    assert type(await fail(g)) is FailFastOpen
    clock.advance(1e-9)
    # Time ran out: no call noticed yet, but none would be rejected.
    assert not policy.is_open
    assert policy.retry_after is None
    assert counts(policy) == (1, 0, 2)
    svc.failing = False
    assert await g() == "ok"
    assert counts(policy) == (1, 1, 2)
    assert rec.events == ["open", "rejected", "rejected", "close"]
    # It can open again later.
    svc.failing = True
    assert type(await fail(g)) is FailFastOpen
    assert counts(policy) == (2, 1, 2)


async def test_close_and_open_by_hand() -> None:
    svc = Service()
    rec = Recorder()
    policy = failfast(failure_threshold=2, listeners=[rec])
    g = guarded(policy, svc)
    policy.close()  # closed already: no transition
    assert rec.events == []
    assert counts(policy) == (0, 0, 0)
    assert policy.open() is None
    policy.open()
    assert type(await fail(g)) is FailFastOpen
    assert svc.calls == 0
    assert policy.close() is None
    policy.close()
    assert rec.events == ["open", "rejected", "close"]
    assert counts(policy) == (1, 1, 1)
    assert await g() == "ok"
    # failsafe-py's way: the decorated function's manager.
    g._manager.open()  # type: ignore[attr-defined]
    assert policy.is_open
    g.policy.close()  # type: ignore[attr-defined]
    assert not policy.is_open


async def test_close_resets_the_failure_count() -> None:
    svc = Service()
    svc.failing = True
    policy = failfast(failure_threshold=3)
    g = guarded(policy, svc)
    await fail(g)
    await fail(g)
    policy.open()
    policy.close()
    assert policy.failures == 0
    await fail(g)
    await fail(g)
    assert not policy.is_open


async def test_manual_open_uses_the_recovery_time(clock: FakeClock) -> None:
    policy = failfast(recovery_time=2)
    policy.open()
    assert policy.is_open
    assert policy.retry_after == 2.0
    clock.advance(2)
    assert not policy.is_open


# ------------------------------------------------------------------------------------------
# Predicates


async def test_sync_predicate_sees_the_arguments_and_rejects_when_truthy() -> None:
    svc = Service()
    seen: list[tuple[Any, ...]] = []

    def maintenance(*args: Any, **kwargs: Any) -> int:
        seen.append((args, kwargs))
        return len(args) > 1

    policy = failfast(predicate=maintenance)
    g = guarded(policy, svc)
    assert await g(1, k=2) == "ok"
    e = await fail(lambda: g(1, 2))
    assert type(e) is FailFastOpen
    assert e.retry_after is None
    assert seen == [((1,), {"k": 2}), ((1, 2), {})]
    assert svc.calls == 1
    assert counts(policy) == (0, 0, 1)
    assert not policy.is_open  # a predicate refusal opens nothing


async def test_async_predicate_is_awaited() -> None:
    svc = Service()
    seen: list[Any] = []

    async def blocked(user: str) -> bool:
        seen.append(user)
        await asyncio.sleep(0)
        return user == "mallory"

    policy = failfast(predicate=blocked, failure_threshold=2)
    g = guarded(policy, svc)
    assert await g("alice") == "ok"
    assert type(await fail(lambda: g("mallory"))) is FailFastOpen
    assert seen == ["alice", "mallory"]
    assert svc.calls == 1
    # Outcomes of calls that went through the async path still count.
    svc.failing = True
    assert type(await fail(lambda: g("alice"))) is ValueError
    tripped = await fail(lambda: g("alice"))
    assert type(tripped) is FailFastOpen
    assert type(tripped.__cause__) is ValueError
    # Open: rejected before the predicate runs.
    assert type(await fail(lambda: g("alice"))) is FailFastOpen
    assert len(seen) == 4
    assert counts(policy) == (1, 0, 2)


async def test_callable_object_with_async_call_is_an_async_predicate() -> None:
    class Blocked:
        async def __call__(self, x: int) -> bool:
            return x > 1

    @failfast(predicate=Blocked())
    async def f(x: int) -> int:
        return x

    assert await f(1) == 1
    with pytest.raises(FailFastOpen):
        await f(2)


async def test_a_sync_predicate_returning_an_awaitable_is_a_type_error() -> None:
    async def verdict() -> bool:
        return False

    @failfast(predicate=lambda: verdict())
    async def f() -> int:
        return 1

    with pytest.raises(TypeError, match="async def"):
        await f()


async def test_a_raising_predicate_propagates_without_calling() -> None:
    svc = Service()

    def broken(*args: Any) -> bool:
        raise LookupError("flag store down")

    g = guarded(failfast(predicate=broken), svc)
    with pytest.raises(LookupError):
        await g()
    assert svc.calls == 0


# ------------------------------------------------------------------------------------------
# Block form


async def test_block_form_counts_and_opens() -> None:
    policy = failfast(failure_threshold=2)
    with pytest.raises(ValueError, match="1"):
        async with policy:
            raise ValueError("1")
    async with policy as entered:
        assert entered is policy
    assert policy.failures == 0  # a clean exit resets
    with pytest.raises(ValueError, match="2"):
        async with policy:
            raise ValueError("2")
    with pytest.raises(FailFastOpen) as info:
        async with policy:
            raise ValueError("3")
    assert str(info.value.__cause__) == "3"
    ran = False
    with pytest.raises(FailFastOpen):
        async with policy:
            ran = True
    assert not ran
    assert counts(policy) == (1, 0, 1)


async def test_block_form_ignores_cancellation_and_other_exceptions() -> None:
    policy = failfast(failure_threshold=1, on=ValueError)
    with pytest.raises(KeyError):
        async with policy:
            raise KeyError
    with pytest.raises(asyncio.CancelledError):
        async with policy:
            raise asyncio.CancelledError
    assert policy.failures == 0
    assert not policy.is_open


@pytest.mark.parametrize("is_async", [False, True])
async def test_block_form_calls_the_predicate_without_arguments(is_async: bool) -> None:
    flag = {"down": False}

    def sync_pred() -> bool:
        return flag["down"]

    async def async_pred() -> bool:
        return flag["down"]

    policy = failfast(predicate=async_pred if is_async else sync_pred)
    async with policy:
        pass
    flag["down"] = True
    with pytest.raises(FailFastOpen):
        async with policy:
            pytest.fail("must not run")
    assert counts(policy) == (0, 0, 1)


async def test_async_with_the_decorated_function() -> None:
    @failfast(failure_threshold=1)
    async def f() -> int:
        return 1

    with pytest.raises(FailFastOpen):
        async with f:  # type: ignore[attr-defined]
            raise ValueError
    with pytest.raises(FailFastOpen):
        await f()
    f.policy.close()  # type: ignore[attr-defined]
    async with f:  # type: ignore[attr-defined]
        assert await f() == 1


async def test_async_with_a_guard_whose_policy_has_no_block_form() -> None:
    @retry(attempts=1)
    async def f() -> int:
        return 1

    with pytest.raises(TypeError, match="async with"):
        async with f:  # type: ignore[attr-defined]
            pass


# ------------------------------------------------------------------------------------------
# Listeners and stats


async def test_global_listeners_reach_existing_and_future_policies(global_listeners: None) -> None:
    before = failfast(failure_threshold=1)
    rec = Recorder()
    register_failfast_listener(rec)
    after = failfast(failure_threshold=1)
    for p in (before, after):
        with pytest.raises(FailFastOpen):
            async with p:
                raise ValueError
        with pytest.raises(FailFastOpen):
            async with p:
                pass
        p.close()
    assert rec.events == ["open", "rejected", "close"] * 2


async def test_async_listeners_and_factories(global_listeners: None) -> None:
    got: list[tuple[str, str]] = []
    manager = EventManager()

    class AsyncListener:
        async def on_failfast_open(self, failfast: FailFast) -> None:
            await asyncio.sleep(0)
            got.append(("open", failfast.name))

    def factory(component: Any) -> Any:
        return AsyncListener()

    policy = failfast(name="svc", failure_threshold=1, listeners=[factory], event_manager=manager)
    policy.open()
    await manager.wait_for_tasks()
    assert got == [("open", "svc")]


class Raising(FailFastListener):
    def on_failfast_open(self, failfast: FailFast) -> None:
        raise RuntimeError("listener bug")

    def on_failfast_close(self, failfast: FailFast) -> None:
        raise RuntimeError("listener bug")

    def on_failfast_rejected(self, failfast: FailFast) -> None:
        raise RuntimeError("listener bug")


async def test_a_raising_listener_changes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="failsafe")
    svc = Service()
    svc.failing = True
    policy = failfast(failure_threshold=1, recovery_time=1, listeners=[Raising()])
    g = guarded(policy, svc)
    tripped = await fail(g)
    assert type(tripped) is FailFastOpen
    assert type(tripped.__cause__) is ValueError
    assert type(await fail(g)) is FailFastOpen
    policy.close()
    svc.failing = False
    assert await g() == "ok"
    assert counts(policy) == (1, 1, 1)
    assert len([r for r in caplog.records if r.name == "failsafe"]) == 3


async def test_stats_and_repr() -> None:
    policy = failfast(name="db", failure_threshold=2, recovery_time=5)
    assert policy.stats() == {
        "name": "db",
        "opened": 0,
        "closed": 0,
        "rejected": 0,
        "state": "closed",
        "failures": 0,
    }
    policy.open()
    assert policy.stats()["state"] == "open"
    assert repr(policy) == (
        "<failfast 'db' opened=1, closed=0, rejected=0, state='open', failures=0>"
    )
    assert policy.failure_threshold == 2
    assert policy.recovery_time == 5.0


# ------------------------------------------------------------------------------------------
# Concurrency and cancellation


async def test_thousand_concurrent_tasks_share_one_latch() -> None:
    policy = failfast(failure_threshold=500)
    gate = asyncio.Event()

    @policy
    async def f(i: int) -> int:
        await gate.wait()
        if i % 2:
            raise ValueError(i)
        return i

    tasks = [asyncio.create_task(f(i)) for i in range(1000)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    # Successes and failures alternate: the count never reaches 500.
    assert sum(isinstance(r, ValueError) for r in results) == 500
    assert not policy.is_open
    assert policy.failures == 1

    @policy
    async def g(i: int) -> int:
        await gate.wait()
        raise ValueError(i)

    results = await asyncio.gather(*(g(i) for i in range(1000)), return_exceptions=True)
    kinds = [type(r) for r in results]
    assert kinds.count(FailFastOpen) == 1
    assert kinds.count(ValueError) == 999
    assert kinds.index(FailFastOpen) == 498  # the 500th consecutive failure (1 carried over)
    assert counts(policy) == (1, 0, 0)
    rejected = await asyncio.gather(*(g(i) for i in range(1000)), return_exceptions=True)
    assert all(type(r) is FailFastOpen for r in rejected)
    assert counts(policy) == (1, 0, 1000)


async def test_cancellation_while_running_counts_nothing() -> None:
    policy = failfast(failure_threshold=1)
    started = asyncio.Event()

    @policy
    async def f() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(f())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert policy.failures == 0
    assert not policy.is_open
    assert counts(policy) == (0, 0, 0)


async def test_cancellation_during_an_async_predicate() -> None:
    svc = Service()
    entered = asyncio.Event()

    async def pred() -> bool:
        entered.set()
        await asyncio.Event().wait()
        return False

    policy = failfast(predicate=pred, failure_threshold=1)
    g = guarded(policy, svc)
    task = asyncio.create_task(g())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert svc.calls == 0
    assert counts(policy) == (0, 0, 0)
    assert policy.failures == 0


async def test_cancellation_inside_the_block_form() -> None:
    policy = failfast(failure_threshold=1)
    entered = asyncio.Event()

    async def body() -> None:
        async with policy:
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(body())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not policy.is_open
    assert policy.failures == 0


async def test_unawaited_call_leaves_nothing_behind() -> None:
    policy = failfast(failure_threshold=1)

    @policy
    async def f() -> int:
        return 1

    coro = f()
    coro.close()
    del coro
    gc.collect()
    assert policy.failures == 0
    assert counts(policy) == (0, 0, 0)


# ------------------------------------------------------------------------------------------
# Methods and composition


async def test_methods() -> None:
    class Client:
        ff = failfast(failure_threshold=1)

        def __init__(self) -> None:
            self.fail = False

        @ff
        async def get(self, x: int) -> tuple[Client, int]:
            if self.fail:
                raise ValueError
            return self, x

    c = Client()
    assert await c.get(2) == (c, 2)
    c.fail = True
    with pytest.raises(FailFastOpen):
        await c.get(1)
    with pytest.raises(FailFastOpen):
        await Client().get(1)


async def test_retry_over_failfast_stops_retrying_once_open() -> None:
    svc = Service()
    svc.failing = True
    inner = failfast(failure_threshold=2)
    g = retry(attempts=5, backoff=0, on=ValueError)(guarded(inner, svc))
    with pytest.raises(FailFastOpen):
        await g()
    assert svc.calls == 2
    # FailFastOpen is not a ValueError: no retry ran against the open latch.
    with pytest.raises(FailFastOpen):
        await g()
    assert svc.calls == 2


async def test_failfast_over_retry_counts_one_failure_per_exhausted_call() -> None:
    svc = Service()
    svc.failing = True
    outer = failfast(failure_threshold=2)
    g = outer(retry(attempts=2, backoff=0)(svc))
    assert type(await fail(g)) is AttemptsExceeded
    assert outer.failures == 1
    assert svc.calls == 3
    tripped = await fail(g)
    assert type(tripped) is FailFastOpen
    assert type(tripped.__cause__) is AttemptsExceeded


async def test_fallback_over_failfast_answers_when_open() -> None:
    svc = Service()
    svc.failing = True
    ff = failfast(failure_threshold=1)
    g = fallback("cached", on=FailFastOpen)(guarded(ff, svc))
    assert await g() == "cached"  # the tripping call
    assert await g() == "cached"  # rejected
    assert svc.calls == 1


async def test_failfast_over_fallback_sees_only_unhandled_failures() -> None:
    svc = Service()
    svc.failing = True
    ff = failfast(failure_threshold=1)
    g = ff(fallback("cached", on=ValueError)(svc))
    for _ in range(3):
        assert await g() == "cached"
    assert not ff.is_open


async def test_timeouts_count_as_failures_in_both_orders() -> None:
    async def hang() -> None:
        await asyncio.sleep(10)

    ff = failfast(failure_threshold=1)
    g = ff(timeout(0.001)(hang))
    tripped = await fail(g)
    assert type(tripped) is FailFastOpen
    assert isinstance(tripped.__cause__, FsTimeoutError)

    ff2 = failfast(failure_threshold=2)
    g2 = timeout(0.001)(ff2(hang))
    # The timeout cancels the inner call: a cancellation is no failure of the latch.
    assert type(await fail(g2)) is FsTimeoutError
    assert ff2.failures == 0


# ------------------------------------------------------------------------------------------
# The C engine against a model


def drive(coro: Any) -> Any:
    """Runs a guarded call that never suspends to its end, synchronously."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("the call suspended")


class Model:
    def __init__(self, threshold: int | None, recovery_ns: int | None) -> None:
        self.threshold = threshold
        self.recovery_ns = recovery_ns
        self.open = False
        self.until = 0
        self.failures = 0
        self.opened = self.closed = self.rejected = 0

    def would_reject(self, now: int) -> bool:
        return self.open and (self.recovery_ns is None or now < self.until)

    def admit(self, now: int) -> bool:
        if self.would_reject(now):
            self.rejected += 1
            return False
        if self.open:
            self.open = False
            self.failures = 0
            self.closed += 1
        return True

    def _open(self, now: int) -> None:
        self.open = True
        if self.recovery_ns is not None:
            self.until = now + self.recovery_ns
        self.opened += 1

    def failure(self, now: int) -> bool:
        if self.threshold is None:
            return False
        self.failures += 1
        if not self.open and self.failures >= self.threshold:
            self._open(now)
            return True
        return False

    def trip(self, now: int) -> None:
        if not self.open:
            self._open(now)

    def reset(self) -> None:
        if self.open:
            self.closed += 1
        self.open = False
        self.failures = 0


class FailFastMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(10**9).install()

    def teardown(self) -> None:
        self.clock.uninstall()

    @initialize(
        threshold=st.none() | st.integers(1, 4),
        recovery_ns=st.none() | st.integers(1, 50),
    )
    def setup(self, threshold: int | None, recovery_ns: int | None) -> None:
        self.model = Model(threshold, recovery_ns)
        self.policy = failfast(
            failure_threshold=threshold,
            recovery_time=None if recovery_ns is None else recovery_ns / 1e9,
        )

        async def call(ok: bool) -> str:
            if not ok:
                raise ValueError
            return "ok"

        self.fn = self.policy(call)

    @rule(ok=st.booleans())
    def call(self, ok: bool) -> None:
        now = self.clock.now_ns
        admitted = self.model.admit(now)
        try:
            result = drive(self.fn(ok))
        except FailFastOpen as e:
            cause = e.__cause__
            assert not admitted or (not ok and self.model.failure(now))
            assert (cause is None) == (not admitted)
            return
        except ValueError:
            assert admitted
            assert not ok
            assert not self.model.failure(now)
            return
        assert admitted
        assert ok
        assert result == "ok"
        self.model.failures = 0

    @rule(ns=st.integers(0, 60))
    def advance(self, ns: int) -> None:
        self.clock.advance_ns(ns)

    @rule()
    def open(self) -> None:
        self.policy.open()
        self.model.trip(self.clock.now_ns)

    @rule()
    def close(self) -> None:
        self.policy.close()
        self.model.reset()

    @invariant()
    def agrees(self) -> None:
        if not hasattr(self, "model"):
            return
        m = self.model
        s = self.policy.stats()
        assert (s["opened"], s["closed"], s["rejected"]) == (m.opened, m.closed, m.rejected)
        assert s["failures"] == m.failures
        assert self.policy.is_open == m.would_reject(self.clock.now_ns)


FailFastMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)
test_engine_matches_the_model = FailFastMachine.TestCase


def test_options_hold_the_checked_parameters() -> None:
    assert FailFastOptions.check() == FailFastOptions()  # one set of defaults
    o = FailFastOptions.check(failure_threshold=3, recovery_time=0.5, on=ValueError)
    assert (o.failure_threshold, o.recovery_time, o.recovery_ns) == (3, 0.5, 500_000_000)
    assert (o.on, o.on_pred) == ((ValueError,), None)

    def broken(exc: BaseException) -> bool:
        return True

    by_pred = FailFastOptions.check(on=broken)
    assert (by_pred.on, by_pred.on_pred) == (None, broken)
    with pytest.raises(AttributeError):
        o.recovery_ns = 1  # type: ignore[misc]
