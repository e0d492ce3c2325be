"""failsafe.fallback: handlers (value, sync, async), `on` and `if_` selection, a raising
handler or predicate propagating untouched, listeners, stats, methods, concurrency,
cancellation and asyncio integration. Stacking with retry is in test_retry.py."""

from __future__ import annotations

import asyncio
import inspect
import logging
import traceback
from collections.abc import Iterator
from typing import Any

import pytest

import failsafe.fallback
from failsafe.events import EventManager, get_event_manager
from failsafe.fallback import (
    Fallback,
    FallbackListener,
    fallback,
    register_fallback_listener,
    register_timeout_listener,
)

NAN = float("nan")


class Abort(BaseException):
    """A KeyboardInterrupt-like BaseException: never handled."""


class Recorder(FallbackListener):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_fallback(self, fallback: Any, result_or_exc: Any, *args: Any) -> None:
        self.events.append((fallback, result_or_exc, args))


def invoked(guarded: Any) -> int:
    count: int = guarded.policy.stats()["invoked"]
    return count


def _raise(exc: BaseException) -> None:
    raise exc


# ------------------------------------------------------------------------------------------
# Public names and validation


def test_exported_names() -> None:
    for name in ("fallback", "FallbackListener", "register_fallback_listener"):
        assert name in failsafe.fallback.__all__
    # failsafe-py's misnamed registrar keeps working
    assert register_timeout_listener is register_fallback_listener
    assert isinstance(fallback(1), Fallback)


async def _apred(*args: Any) -> bool:
    return True


def _cases() -> Iterator[Any]:
    bad: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"on": 5}, TypeError, "on"),
        ({"on": "ValueError"}, TypeError, "on"),
        ({"on": ()}, ValueError, "on"),
        ({"on": (ValueError, 1)}, TypeError, "on"),
        ({"on": (ValueError, str)}, TypeError, "on"),
        ({"on": _apred}, TypeError, "on"),
        ({"on": None}, ValueError, "on"),  # and no if_: it would never act
        ({"on": None, "if_": None}, ValueError, "if_"),
        ({"if_": 5}, TypeError, "if_"),
        ({"if_": "x"}, TypeError, "if_"),
        ({"name": ""}, ValueError, "name"),
        ({"name": "9lives"}, ValueError, "name"),
        ({"name": "a b"}, ValueError, "name"),
        ({"name": 3}, TypeError, "name"),
        ({"listeners": 5}, TypeError, "listeners"),
        ({"listeners": "abc"}, TypeError, "listeners"),
        ({"event_manager": 5}, TypeError, "event_manager"),
    ]
    for kwargs, err, match in bad:
        yield pytest.param(kwargs, err, match, id=repr(kwargs))


@pytest.mark.parametrize(("kwargs", "err", "match"), list(_cases()))
def test_fallback_validates_every_parameter(
    kwargs: dict[str, Any], err: type[Exception], match: str
) -> None:
    with pytest.raises(err, match=match):
        fallback("default", **kwargs)


def test_valid_edge_values_are_accepted() -> None:
    fallback(None)
    fallback(0)
    fallback("x", on=None, if_=lambda r: r is None)
    fallback("x", on=None, if_=_apred)
    fallback("x", on=BaseException)
    fallback("x", on=lambda e: True)
    fallback("x", event_manager=EventManager(), listeners=[Recorder()], name="a.b")


def test_sync_callables_are_rejected_at_decoration() -> None:
    def sync() -> int:
        return 1

    async def agen() -> Any:
        yield 1

    for target in (sync, agen, lambda: None, 5, None):
        with pytest.raises(TypeError, match="fallback"):
            fallback("x")(target)


async def test_guard_looks_like_the_async_function() -> None:
    async def lookup(key: str, *, default: int = 0) -> int:
        """Docs."""
        return len(key)

    guarded = fallback(-1)(lookup)
    assert inspect.iscoroutinefunction(guarded)
    assert guarded.__wrapped__ is lookup
    assert guarded.__name__ == "lookup"
    assert guarded.__doc__ == "Docs."
    assert inspect.signature(guarded) == inspect.signature(lookup)
    assert guarded.policy.name == "test_guard_looks_like_the_async_function.lookup"
    assert await guarded("abc") == 3
    assert await asyncio.create_task(guarded("ab")) == 2
    assert invoked(guarded) == 0


# ------------------------------------------------------------------------------------------
# Handlers


@pytest.mark.parametrize("value", [42, None, "", 0, (1, 2), ValueError("as a value")])
async def test_value_handler_is_returned_as_is(value: Any) -> None:
    @fallback(value)
    async def work() -> Any:
        raise ConnectionError

    assert await work() is value
    assert invoked(work) == 1


async def test_mutable_value_handler_is_the_same_object_every_time() -> None:
    default: list[int] = []

    @fallback(default)
    async def work() -> list[int]:
        raise ConnectionError

    assert await work() is default
    assert await work() is default
    assert invoked(work) == 2


async def test_sync_handler_receives_the_exception_and_the_call_arguments() -> None:
    got: list[Any] = []

    def handler(exc: BaseException, *args: Any, **kwargs: Any) -> str:
        got.append((exc, args, kwargs))
        return "handled"

    @fallback(handler)
    async def work(a: int, b: int = 0, *, c: str = "") -> str:
        raise KeyError(a)

    assert await work(1, 2, c="x") == "handled"
    assert await work(3) == "handled"
    (e1, args1, kw1), (e2, args2, kw2) = got
    assert isinstance(e1, KeyError)
    assert e1.args == (1,)
    assert (args1, kw1) == ((1, 2), {"c": "x"})
    assert isinstance(e2, KeyError)
    assert e2.args == (3,)
    assert (args2, kw2) == ((3,), {})
    assert invoked(work) == 2


async def test_async_handler_receives_the_exception_and_the_call_arguments() -> None:
    async def handler(exc: BaseException, key: str, *, region: str) -> str:
        await asyncio.sleep(0)
        return f"{type(exc).__name__}:{key}:{region}"

    @fallback(handler)
    async def work(key: str, *, region: str) -> str:
        raise TimeoutError

    assert await work("k", region="eu") == "TimeoutError:k:eu"


async def test_handler_sees_the_original_exception_with_its_traceback() -> None:
    seen: list[BaseException] = []

    def boom() -> None:
        raise LookupError("deep")

    @fallback(lambda e: seen.append(e))
    async def work() -> None:
        boom()

    await work()
    frames = [f.name for f in traceback.extract_tb(seen[0].__traceback__)]
    assert frames[-2:] == ["work", "boom"]


async def test_callable_object_handler() -> None:
    class Handler:
        def __init__(self) -> None:
            self.calls = 0

        async def __call__(self, exc: BaseException) -> str:
            self.calls += 1
            return "obj"

    h = Handler()

    @fallback(h)
    async def work() -> str:
        raise ValueError

    assert await work() == "obj"
    assert h.calls == 1


# ------------------------------------------------------------------------------------------
# Which failures: on


@pytest.mark.parametrize(
    "on",
    [ConnectionError, OSError, (KeyError, ConnectionError), lambda e: "handle" in str(e)],
)
async def test_on_selects_handled_exceptions(on: Any) -> None:
    @fallback("fallback", on=on)
    async def work(exc: BaseException) -> str:
        raise exc

    assert await work(ConnectionError("handle me")) == "fallback"
    with pytest.raises(ValueError, match="other"):
        await work(ValueError("other"))
    assert invoked(work) == 1


async def test_non_matching_exception_propagates_with_its_traceback() -> None:
    def deep() -> None:
        raise KeyError("passes")

    @fallback("fallback", on=ValueError)
    async def work() -> None:
        deep()

    with pytest.raises(KeyError) as info:
        await work()
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert frames[-2:] == ["work", "deep"]
    assert invoked(work) == 0


@pytest.mark.parametrize("exc", [Abort, asyncio.CancelledError, GeneratorExit, SystemExit])
async def test_base_exceptions_are_never_handled(exc: type[BaseException]) -> None:
    handled: list[Any] = []

    @fallback(handled.append, on=BaseException)
    async def work() -> None:
        raise exc("stop")

    with pytest.raises(exc):
        await work()
    assert handled == []
    assert invoked(work) == 0


async def test_a_raising_on_predicate_propagates() -> None:
    def pred(e: BaseException) -> bool:
        raise RuntimeError("bad predicate")

    handled: list[Any] = []

    @fallback(handled.append, on=pred)
    async def work() -> None:
        raise ValueError("orig")

    with pytest.raises(RuntimeError, match="bad predicate") as info:
        await work()
    assert isinstance(info.value.__context__, ValueError)
    assert handled == []


# ------------------------------------------------------------------------------------------
# Which results: if_


@pytest.mark.parametrize("is_async", [False, True])
async def test_if_replaces_selected_results(is_async: bool) -> None:
    seen: list[Any] = []

    def check(result: Any, *args: Any, **kwargs: Any) -> bool:
        seen.append((result, args, kwargs))
        return result is None

    async def acheck(result: Any, *args: Any, **kwargs: Any) -> bool:
        await asyncio.sleep(0)
        return check(result, *args, **kwargs)

    handled: list[Any] = []

    def handler(result: Any, *args: Any, **kwargs: Any) -> str:
        handled.append((result, args, kwargs))
        return "replaced"

    @fallback(handler, if_=acheck if is_async else check)
    async def work(x: Any, *, flag: bool = False) -> Any:
        return x

    assert await work(None, flag=True) == "replaced"
    assert await work(5) == 5
    assert seen == [(None, (None,), {"flag": True}), (5, (5,), {})]
    assert handled == [(None, (None,), {"flag": True})]
    assert invoked(work) == 1


async def test_if_and_on_together() -> None:
    @fallback("fallback", on=ValueError, if_=lambda r, x: r < 0)
    async def work(x: int) -> int:
        if x == 0:
            raise ValueError
        if x == 1:
            raise KeyError
        return x

    assert await work(0) == "fallback"
    assert await work(-5) == "fallback"
    assert await work(5) == 5
    with pytest.raises(KeyError):
        await work(1)
    assert invoked(work) == 2


async def test_on_none_with_if_lets_exceptions_through() -> None:
    @fallback("fallback", on=None, if_=lambda r, fail: r is None)
    async def work(fail: bool) -> Any:
        if fail:
            raise ValueError("through")
        return None

    assert await work(False) == "fallback"
    with pytest.raises(ValueError, match="through"):
        await work(True)
    assert invoked(work) == 1


@pytest.mark.parametrize("is_async", [False, True])
async def test_a_raising_if_predicate_propagates_and_is_not_handled(is_async: bool) -> None:
    def check(result: Any) -> bool:
        raise ValueError("bad check")

    async def acheck(result: Any) -> bool:
        raise ValueError("bad check")

    handled: list[Any] = []

    @fallback(handled.append, on=ValueError, if_=acheck if is_async else check)
    async def work() -> int:
        return 1

    with pytest.raises(ValueError, match="bad check"):
        await work()
    assert handled == []  # B-FB1: the predicate's error does not trigger the fallback
    assert invoked(work) == 0


# ------------------------------------------------------------------------------------------
# A raising handler propagates and is never handled again (B-FB1)


@pytest.mark.parametrize("is_async", [False, True])
@pytest.mark.parametrize("path", ["exception", "result"])
async def test_a_raising_handler_propagates_once(is_async: bool, path: str) -> None:
    calls: list[Any] = []

    def handler(value: Any) -> Any:
        calls.append(value)
        raise ValueError("handler failed")

    async def ahandler(value: Any) -> Any:
        calls.append(value)
        await asyncio.sleep(0)
        raise ValueError("handler failed")

    @fallback(ahandler if is_async else handler, on=Exception, if_=lambda r: r == "bad")
    async def work() -> str:
        if path == "exception":
            raise ValueError("original")
        return "bad"

    with pytest.raises(ValueError, match="handler failed") as info:
        await work()
    assert len(calls) == 1
    assert invoked(work) == 1
    if path == "exception":
        # as in an `except` block: the handler's error shows what it was handling
        assert isinstance(info.value.__context__, ValueError)
        assert str(info.value.__context__) == "original"


async def test_handler_re_raising_the_original() -> None:
    @fallback(_raise)
    async def work() -> None:
        raise KeyError("again")

    with pytest.raises(KeyError, match="again"):
        await work()
    assert invoked(work) == 1


async def test_fallback_over_fallback_handles_the_inner_handlers_error() -> None:
    @fallback(lambda e: f"outer:{e}", on=RuntimeError)
    @fallback(lambda e: _raise(RuntimeError("inner handler")), on=ValueError)
    async def work() -> str:
        raise ValueError

    assert await work() == "outer:inner handler"
    assert invoked(work) == 1
    assert invoked(work.__wrapped__) == 1


# ------------------------------------------------------------------------------------------
# Listeners and stats


async def test_listener_gets_the_policy_the_value_and_the_positional_arguments() -> None:
    rec = Recorder()

    @fallback("fb", listeners=[rec], if_=lambda r, *a, **k: r == 0)
    async def work(x: int, y: int = 1, *, z: int = 2) -> int:
        if x < 0:
            raise ValueError(x)
        return x

    await work(-1, 5, z=3)
    await work(0)
    await work(1)
    assert len(rec.events) == 2
    (p1, v1, a1), (p2, v2, a2) = rec.events
    assert p1 is p2 is work.policy
    assert isinstance(v1, ValueError)
    assert a1 == (-1, 5)
    assert (v2, a2) == (0, (0,))


async def test_async_listener_and_event_manager() -> None:
    got: list[Any] = []
    release = asyncio.Event()

    class Slow(FallbackListener):
        async def on_fallback(self, fallback: Any, value: Any, *args: Any) -> None:
            await release.wait()
            got.append(type(value).__name__)

    manager = EventManager()

    @fallback("fb", listeners=[Slow()], event_manager=manager)
    async def work() -> str:
        raise KeyError

    assert await work() == "fb"
    assert manager.pending == 1
    release.set()
    assert await manager.wait_for_tasks() == 1
    assert got == ["KeyError"]


class _Raising(FallbackListener):
    def on_fallback(self, *args: Any) -> None:
        raise RuntimeError("listener boom")


class _AsyncRaising(FallbackListener):
    async def on_fallback(self, *args: Any) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("listener boom")


def _raising_factory(component: Any) -> Any:
    raise RuntimeError("listener boom")


@pytest.mark.parametrize("listener", [_Raising(), _AsyncRaising(), _raising_factory])
async def test_a_raising_listener_never_changes_the_outcome(
    listener: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="failsafe")
    handled: list[Any] = []
    rec = Recorder()

    @fallback(lambda e: handled.append(e) or "fb", listeners=[listener, rec])
    async def work() -> str:
        raise ValueError

    assert await work() == "fb"
    await get_event_manager().wait_for_tasks()
    assert len(handled) == 1
    assert len(rec.events) == 1
    assert invoked(work) == 1
    assert any(
        r.name == "failsafe" and "listener boom" in (r.exc_text or "") for r in caplog.records
    )


@pytest.mark.parametrize("register", [register_fallback_listener, register_timeout_listener])
async def test_global_listener(register: Any, global_listeners: None) -> None:
    @fallback("fb")
    async def existing() -> str:
        raise ValueError

    rec = Recorder()
    register(rec)
    await existing()

    @fallback("fb")
    async def later() -> str:
        raise KeyError

    await later()
    assert [type(v).__name__ for _, v, _ in rec.events] == ["ValueError", "KeyError"]


async def test_stats_and_repr() -> None:
    @fallback("fb", name="svc.lookup", on=ValueError)
    async def work(x: int) -> int:
        if x:
            raise ValueError
        return x

    assert work.policy.stats() == {"name": "svc.lookup", "invoked": 0}
    for x in (0, 1, 1, 0, 1):
        await work(x)
    assert work.policy.stats() == {"name": "svc.lookup", "invoked": 3}
    assert "svc.lookup" in repr(work.policy)
    assert "invoked=3" in repr(work.policy)


# ------------------------------------------------------------------------------------------
# Methods


async def test_methods_bind_self_and_the_handler_receives_it() -> None:
    got: list[Any] = []

    def handler(exc: BaseException, this: Any, key: str) -> Any:
        got.append((this, key))
        return ("fallback", key)

    class Repo:
        @fallback(handler)
        async def get(self, key: str) -> Any:
            raise LookupError(key)

        @classmethod
        @fallback(lambda e, cls, x: (cls, x))
        async def build(cls, x: int) -> Any:
            raise ValueError

        @staticmethod
        @fallback(lambda e, x: -x)
        async def pure(x: int) -> int:
            raise ValueError

    repo = Repo()
    assert await repo.get("k") == ("fallback", "k")
    assert got == [(repo, "k")]
    assert await Repo.build(1) == (Repo, 1)
    assert await repo.build(2) == (Repo, 2)
    assert await Repo.pure(3) == -3
    assert await repo.pure(4) == -4
    assert inspect.iscoroutinefunction(repo.get)
    assert list(inspect.signature(repo.get).parameters) == ["key"]


# ------------------------------------------------------------------------------------------
# Concurrency


async def test_concurrent_calls_get_their_own_answers() -> None:
    async def handler(value: Any, i: int) -> tuple[str, int, Any]:
        await asyncio.sleep(0)
        return ("fb", i, value.args[0] if isinstance(value, ValueError) else value)

    @fallback(handler, on=ValueError, if_=lambda r, i: r is None)
    async def work(i: int) -> Any:
        await asyncio.sleep(0)
        if i % 3 == 0:
            raise ValueError(i)
        await asyncio.sleep(0)
        return None if i % 3 == 1 else i

    results = await asyncio.gather(*(work(i) for i in range(300)))
    for i, r in enumerate(results):
        if i % 3 == 0:
            assert r == ("fb", i, i)
        elif i % 3 == 1:
            assert r == ("fb", i, None)  # the rejected result, and the call's own argument
        else:
            assert r == i
    assert invoked(work) == 200


# ------------------------------------------------------------------------------------------
# Cancellation


async def test_cancel_during_the_call_is_not_handled() -> None:
    entered = asyncio.Event()
    cleaned: list[str] = []
    handled: list[Any] = []

    @fallback(handled.append, on=BaseException)
    async def work() -> None:
        try:
            entered.set()
            await asyncio.Event().wait()
        finally:
            cleaned.append("work")

    task = asyncio.create_task(work())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["work"]
    assert handled == []
    assert invoked(work) == 0


async def test_cancel_during_an_async_handler() -> None:
    entered = asyncio.Event()
    cleaned: list[str] = []
    calls = 0

    async def handler(exc: BaseException, block: bool) -> str:
        try:
            entered.set()
            await asyncio.Event().wait()
            return "never"
        finally:
            cleaned.append("handler")

    @fallback(handler)
    async def work(block: bool) -> str:
        nonlocal calls
        calls += 1
        if block:
            raise ValueError
        return "ok"

    task = asyncio.create_task(work(True))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert cleaned == ["handler"]
    assert calls == 1  # the call is not run again
    assert invoked(work) == 1  # the handler did start
    assert await work(False) == "ok"  # the policy still works
    assert invoked(work) == 1


async def test_cancel_during_an_async_if_predicate() -> None:
    entered = asyncio.Event()
    cleaned: list[str] = []
    handled: list[Any] = []

    async def check(result: Any) -> bool:
        try:
            entered.set()
            await asyncio.Event().wait()
            return True
        finally:
            cleaned.append("check")

    @fallback(handled.append, if_=check)
    async def work() -> int:
        return 1

    task = asyncio.create_task(work())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["check"]
    assert handled == []
    assert invoked(work) == 0


async def test_wait_for_and_task_group() -> None:
    @fallback(lambda e, i: -i)
    async def work(i: int) -> int:
        await asyncio.sleep(0)
        if i % 2:
            raise ValueError
        return i

    assert await asyncio.wait_for(work(3), timeout=5) == -3
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(work(i)) for i in range(6)]
    assert [t.result() for t in tasks] == [0, -1, 2, -3, 4, -5]

    @fallback("never")
    async def slow() -> str:
        await asyncio.Event().wait()
        return "x"

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(slow(), timeout=0.01)
    assert invoked(slow) == 0  # the timeout's cancellation is not a failure


# -- the C answer path (no listeners): value and sync handlers never enter Python slow paths --


async def test_sync_handler_in_c_receives_many_positional_and_keyword_arguments() -> None:
    seen: list[Any] = []

    def handler(exc: BaseException, *args: Any, **kwargs: Any) -> str:
        seen.append((type(exc), args, kwargs))
        return "handled"

    @fallback(handler)
    async def many(a: int, b: int, c: int, d: int, e: int, *, f: int, g: int) -> str:
        raise KeyError(a)

    assert await many(1, 2, 3, 4, 5, f=6, g=7) == "handled"
    assert seen == [(KeyError, (1, 2, 3, 4, 5), {"f": 6, "g": 7})]
    assert many.policy.stats()["invoked"] == 1


async def test_sync_handler_returning_an_awaitable_is_awaited() -> None:
    import functools

    async def later(exc: BaseException, x: int) -> int:
        await asyncio.sleep(0)
        return x * 10

    @fallback(functools.partial(later))
    async def boom(x: int) -> int:
        raise ValueError

    assert await boom(4) == 40


async def test_raising_sync_handler_in_c_chains_the_handled_error() -> None:
    def handler(exc: BaseException) -> None:
        raise RuntimeError("handler failed")

    @fallback(handler)
    async def boom() -> None:
        raise ValueError("original")

    with pytest.raises(RuntimeError, match="handler failed") as info:
        await boom()
    assert isinstance(info.value.__context__, ValueError)


async def test_value_answer_switches_to_the_slow_path_when_listened() -> None:
    class Rec:
        def __init__(self) -> None:
            self.events: list[Any] = []

        def on_fallback(self, fb: Any, value: Any, *args: Any) -> None:
            self.events.append((type(value), args))

    policy = fallback(0)

    @policy
    async def boom(x: int) -> int:
        raise ValueError

    assert await boom(1) == 0  # answered in C
    rec = Rec()
    policy.add_listener(rec)
    assert await boom(2) == 0  # answered by the slow path, which emits
    assert rec.events == [(ValueError, (2,))]
    assert policy.stats()["invoked"] == 2


# ------------------------------------------------------------------------------------------
# An async handler answers in C while nobody listens, in Python while somebody does: the same


@pytest.mark.parametrize("listening", [False, True])
async def test_async_handler_same_answer_either_path(listening: bool) -> None:
    seen: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
    loop = asyncio.get_running_loop()

    async def handler(exc: BaseException, *args: Any, **kwargs: Any) -> Any:
        seen.append((str(exc), args, kwargs))
        await asyncio.sleep(0)
        if kwargs.get("mode") == "raise":
            raise KeyError("handler")
        if kwargs.get("mode") == "future":
            fut = loop.create_future()
            loop.call_soon(fut.set_result, "from future")
            return await fut
        return ("answer", args)

    rec = Recorder()
    policy = fallback(handler, on=ValueError, listeners=[rec] if listening else None)

    @policy
    async def work(x: int, *, mode: str) -> Any:
        raise ValueError(f"failed {x}")

    assert await work(1, mode="value") == ("answer", (1,))
    assert await work(2, mode="future") == "from future"
    with pytest.raises(KeyError, match="handler") as info:
        await work(3, mode="raise")
    # as in an `except` block: the handler's error shows what it was handling
    assert isinstance(info.value.__context__, ValueError)
    assert str(info.value.__context__) == "failed 3"
    assert seen == [
        ("failed 1", (1,), {"mode": "value"}),
        ("failed 2", (2,), {"mode": "future"}),
        ("failed 3", (3,), {"mode": "raise"}),
    ]
    assert invoked(work) == 3
    assert len(rec.events) == (3 if listening else 0)
