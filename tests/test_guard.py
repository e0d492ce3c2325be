"""The C guard and its awaitable: protocol, identity, cancellation, references."""

from __future__ import annotations

import asyncio
import gc
import inspect
import sys
import traceback
import types
import weakref
from typing import Any

import pytest

from failsafe import _native
from failsafe.fallback import fallback
from failsafe.retry import retry


async def ident(x: Any) -> Any:
    return x


@types.coroutine
def suspend() -> Any:
    """Suspends the awaiting coroutine once, yielding None to whoever drives it."""
    yield


def guarded(**kw: Any) -> Any:
    return retry(attempts=2, backoff=0, **kw)(ident)


def test_guard_looks_like_the_function() -> None:
    g = guarded()
    assert inspect.iscoroutinefunction(g)
    assert g.__wrapped__ is ident
    assert g.__name__ == "ident"
    assert g.__qualname__ == ident.__qualname__
    assert inspect.signature(g) == inspect.signature(ident)
    assert isinstance(g, _native.Guard)
    assert "ident" in repr(g)
    # what FastAPI and Starlette look at before deciding to await a dependency or endpoint
    assert inspect.isroutine(g)
    assert asyncio.iscoroutinefunction(g)
    assert inspect.iscoroutinefunction(inspect.unwrap(g))


def test_guard_does_not_expose_func_so_marking_stays_on_the_guard() -> None:
    g = guarded()
    assert not hasattr(g, "__func__")
    assert not inspect.iscoroutinefunction(lambda: None)


@pytest.mark.parametrize(
    "value", [None, 0, "s", (1, 2), (), ValueError("as value"), StopIteration(3), [1]]
)
async def test_any_return_value_survives(value: Any) -> None:
    assert await guarded()(value) is value


async def test_awaitable_protocol_by_hand() -> None:
    call = guarded()(5)
    assert isinstance(call, _native.GuardedCall)
    assert inspect.isawaitable(call)
    assert asyncio.iscoroutine(call)
    with pytest.raises(StopIteration) as stop:
        call.send(None)
    assert stop.value.value == 5
    with pytest.raises(RuntimeError, match="already awaited"):
        call.send(None)


async def test_send_non_none_to_fresh_call_is_rejected() -> None:
    call = guarded()(1)
    with pytest.raises(TypeError, match="non-None"):
        call.send(1)
    call.close()


async def test_values_sent_reach_the_inner_coroutine() -> None:
    @types.coroutine
    def echo() -> Any:
        got = yield "first"
        got2 = yield got
        return ("done", got2)

    async def inner() -> Any:
        return await echo()

    call = retry(attempts=0)(inner)()
    assert call.send(None) == "first"
    assert call.send("a") == "a"
    with pytest.raises(StopIteration) as stop:
        call.send("b")
    assert stop.value.value == ("done", "b")


async def test_throw_recovered_inside_continues() -> None:
    @types.coroutine
    def suspend() -> Any:
        yield "x"

    async def inner() -> str:
        try:
            await suspend()
        except KeyError:
            await suspend()
            return "recovered"
        return "plain"

    call = retry(attempts=0)(inner)()
    assert call.send(None) == "x"
    assert call.throw(KeyError("k")) == "x"
    with pytest.raises(StopIteration) as stop:
        call.send(None)
    assert stop.value.value == "recovered"


async def test_throw_into_finished_call_reraises() -> None:
    call = guarded()(1)
    with pytest.raises(StopIteration):
        call.send(None)
    with pytest.raises(ValueError, match="late"):
        call.throw(ValueError("late"))


async def test_close_runs_inner_finally_and_counts_nothing() -> None:
    ran: list[str] = []

    async def inner() -> None:
        try:
            await suspend()
        finally:
            ran.append("finally")

    g = retry(attempts=3, backoff=0)(inner)
    call = g()
    call.send(None)
    call.close()
    assert ran == ["finally"]
    call.close()  # idempotent
    s = g.policy.stats()
    assert (s["attempt"], s["success"], s["giveup"]) == (0, 0, 0)


async def test_dealloc_of_suspended_call_runs_inner_finally() -> None:
    ran: list[str] = []

    async def inner() -> None:
        try:
            await suspend()
        finally:
            ran.append("finally")

    call = retry(attempts=0)(inner)()
    call.send(None)
    del call
    gc.collect()
    assert ran == ["finally"]


async def test_closing_a_fresh_call_leaves_no_never_awaited_warning() -> None:
    call = guarded()(1)
    call.close()
    del call
    gc.collect()


async def test_exception_traceback_keeps_inner_frames() -> None:
    async def deep() -> None:
        raise KeyError("deep")

    g = retry(on=ValueError, attempts=3)(deep)
    with pytest.raises(KeyError) as info:
        await g()
    names = [f.f_code.co_name for f, _ in traceback.walk_tb(info.value.__traceback__)]
    assert "deep" in names


async def test_cancellation_propagates_and_is_not_a_failure() -> None:
    started = asyncio.Event()

    async def slow() -> None:
        started.set()
        await asyncio.sleep(3600)

    g = retry(on=BaseException, attempts=5, backoff=0)(slow)
    task = asyncio.create_task(g())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    s = g.policy.stats()
    assert (s["attempt"], s["success"], s["giveup"]) == (0, 0, 0)


async def test_guarded_call_runs_as_a_task_gather_and_wait_for() -> None:
    g = guarded()
    assert await asyncio.create_task(g(1)) == 1
    assert await asyncio.gather(g(1), g(2), g(3)) == [1, 2, 3]
    assert await asyncio.wait_for(g(4), 10) == 4
    async with asyncio.TaskGroup() as tg:
        t = tg.create_task(g(5))
    assert t.result() == 5


async def test_eager_task_factory() -> None:
    loop = asyncio.get_running_loop()
    loop.set_task_factory(asyncio.eager_task_factory)
    try:
        g = guarded()
        assert await asyncio.create_task(g(7)) == 7
    finally:
        loop.set_task_factory(None)


class Box:
    def __init__(self, v: int) -> None:
        self.v = v

    @retry(attempts=1, backoff=0)
    async def get(self, plus: int = 0) -> int:
        return self.v + plus

    @classmethod
    @fallback(-1)
    async def make(cls, v: int) -> Box:
        return cls(v)

    @staticmethod
    @retry(attempts=0)
    async def static(v: int) -> int:
        return v * 2


async def test_methods_bind_self() -> None:
    b = Box(3)
    assert await b.get() == 3
    assert await b.get(plus=2) == 5
    assert await Box.get(b, 1) == 4
    made = await Box.make(9)
    assert isinstance(made, Box)
    assert made.v == 9
    assert await Box.static(4) == 8
    assert await b.static(4) == 8
    assert inspect.iscoroutinefunction(b.get)


async def test_no_reference_leaks_on_hot_paths() -> None:
    g = guarded()
    f = fallback(0)(ident)

    async def boom() -> None:
        raise ValueError

    fb = fallback(0)(boom)
    sentinel = object()
    for _ in range(200):
        await g(sentinel)
        await fb()
    gc.collect()
    before = (sys.getrefcount(sentinel), sys.getrefcount(g), sys.getrefcount(ident))
    for _ in range(2000):
        await g(sentinel)
        await f(sentinel)
        await fb()
    gc.collect()
    after = (sys.getrefcount(sentinel), sys.getrefcount(g), sys.getrefcount(ident))
    assert before == after


async def test_policy_and_guard_are_collectable() -> None:
    async def fn() -> int:
        return 1

    policy = retry(attempts=1)
    g = policy(fn)
    await g()
    refs = [weakref.ref(policy), weakref.ref(g)]
    del policy, g
    gc.collect()
    assert all(r() is None for r in refs)


def test_guard_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError, match="fn must be callable"):
        _native.Guard(1, retry())
    with pytest.raises(TypeError, match="policy"):
        _native.Guard(ident, object())


def test_sync_callable_rejected_at_decoration() -> None:
    def sync() -> None:
        return None

    with pytest.raises(TypeError, match="async"):
        retry()(sync)
    with pytest.raises(TypeError, match="async"):
        fallback(0)(sync)


async def test_guarded_call_names_and_weakrefs() -> None:
    call = guarded()(1)
    assert call.__name__ == "ident"
    assert call.__qualname__ == ident.__qualname__
    ref = weakref.ref(call)
    assert ref() is call
    assert await call == 1
    del call
    gc.collect()
    assert ref() is None


async def test_callable_object_with_async_call_is_accepted() -> None:
    class Handler:
        async def __call__(self, x: int) -> int:
            return x + 1

    assert await retry(attempts=0)(Handler())(1) == 2


# -- regressions: the awaitable behaves as a coroutine would ---------------------------------


async def test_reentrant_close_from_inside_the_call_is_refused() -> None:
    holder: dict[str, Any] = {}

    @retry(on=KeyError, attempts=0, backoff=0)
    async def f() -> int:
        await asyncio.sleep(0)
        holder["c"].close()
        return 1

    call = f()
    holder["c"] = call
    with pytest.raises(ValueError, match="already executing"):
        await call


async def test_predicate_closing_the_call_is_refused_not_a_crash() -> None:
    holder: dict[str, Any] = {}

    def pred(exc: BaseException) -> bool:
        holder["c"].close()
        return True

    @retry(on=pred, attempts=1, backoff=0)
    async def f() -> None:
        raise KeyError

    call = f()
    holder["c"] = call
    with pytest.raises(ValueError, match="already executing") as info:
        await call
    assert isinstance(info.value.__context__, KeyError)


async def test_stop_iteration_from_policy_code_becomes_runtime_error() -> None:
    def handler(exc: BaseException) -> None:
        raise StopIteration("leaked")

    @fallback(handler)
    async def f() -> None:
        raise ValueError

    with pytest.raises(RuntimeError, match="raised StopIteration"):
        await f()

    @retry(on=lambda e: next(iter([])), attempts=1, backoff=0)
    async def g() -> None:
        raise ValueError

    with pytest.raises(RuntimeError, match="raised StopIteration"):
        await g()


async def test_awaiting_the_same_call_twice_is_refused() -> None:
    async def slow() -> int:
        await asyncio.sleep(0)
        return 1

    call = retry(attempts=0)(slow)()

    async def aw() -> Any:
        return await call

    results = await asyncio.gather(aw(), aw(), return_exceptions=True)
    assert results[0] == 1
    assert isinstance(results[1], RuntimeError)
    assert "awaited already" in str(results[1])


async def test_function_returning_a_future_is_awaited_through_its_iterator() -> None:
    loop = asyncio.get_running_loop()
    calls = 0

    def returns_future() -> asyncio.Future[int]:
        nonlocal calls
        calls += 1
        fut = loop.create_future()
        loop.call_soon(fut.set_result, 5)
        return fut

    inspect.markcoroutinefunction(returns_future)
    assert await retry(attempts=2, backoff=0)(returns_future)() == 5
    assert await fallback(0)(returns_future)() == 5
    assert calls == 2


async def test_throw_into_a_fresh_call_never_runs_the_function_or_policy() -> None:
    ran: list[str] = []

    async def f() -> str:
        ran.append("body")
        return "ran"

    g = fallback("fallback")(f)
    call = g()
    with pytest.raises(ValueError, match="boom"):
        call.throw(ValueError("boom"))
    assert ran == []
    assert g.policy.stats()["invoked"] == 0


async def test_close_propagates_errors_from_the_coroutine_finally() -> None:
    async def f() -> None:
        try:
            await suspend()
        finally:
            raise AttributeError("from finally")

    call = retry(attempts=0)(f)()
    call.send(None)
    with pytest.raises(AttributeError, match="from finally"):
        call.close()


@pytest.mark.skipif(sys.version_info < (3, 13), reason="close() returns a value since 3.13")
async def test_close_returns_the_coroutine_value() -> None:
    async def f() -> int:
        try:
            await suspend()
        except GeneratorExit:
            return 42
        return 0

    call = retry(attempts=0)(f)()
    call.send(None)
    assert call.close() == 42


async def test_predicate_reraising_the_exception_keeps_a_sane_context() -> None:
    def pred(exc: BaseException) -> bool:
        raise exc

    @retry(on=pred, attempts=1, backoff=0)
    async def f() -> None:
        raise KeyError("k")

    with pytest.raises(KeyError) as info:
        await f()
    assert info.value.__context__ is not info.value


async def test_keyboard_interrupt_from_a_listener_propagates() -> None:
    class Listener:
        def on_success(self, *args: Any) -> None:
            raise KeyboardInterrupt

    g = retry(attempts=0, listeners=[Listener()])(ident)
    with pytest.raises(KeyboardInterrupt):
        await g(1)


async def test_bad_arguments_fail_at_call_time_and_leave_nothing_behind() -> None:
    from failsafe.timeout import timeout

    async def one(x: int) -> int:
        return x

    for g in (retry(attempts=3, backoff=0)(one), fallback(0)(one), timeout(5)(one)):
        with pytest.raises(TypeError):
            g(1, 2)  # the function's own TypeError, raised synchronously as by a plain call
        assert await g(3) == 3
    assert _native._timeout_pending() == 0
    s = retry(attempts=3, backoff=0)(one).policy.stats()
    assert (s["attempt"], s["giveup"]) == (0, 0)
