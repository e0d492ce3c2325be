"""Handlers resolved once per (component, event) and called from C: the same listeners get the
same events, in the same order, as through emit(), and changes at run time are seen."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from failsafe import events
from failsafe.circuitbreaker import BreakerState, consecutive_breaker
from failsafe.events import (
    EventManager,
    get_event_manager,
    register_listener,
    unregister_listener,
)

WORKING = BreakerState.working


async def ok() -> int:
    return 1


class Handles:
    """Handles on_success, recording (tag, component, args)."""

    def __init__(self, log: list[Any], tag: str) -> None:
        self.log, self.tag = log, tag

    def on_success(self, component: Any, *args: Any) -> None:
        self.log.append((self.tag, component, args))


class Elsewhere:
    """A listener of another event only; counts lookups of the handlers it lacks."""

    def __init__(self) -> None:
        self.lookups: list[str] = []

    def on_failure(self, component: Any, *args: Any) -> None:
        raise AssertionError("no call failed")

    def __getattr__(self, name: str) -> Any:
        self.lookups.append(name)
        raise AttributeError(name)


@pytest.fixture
def globals_cleanup() -> Iterator[list[Any]]:
    added: list[Any] = []
    yield added
    for listener in added:
        unregister_listener("circuitbreaker", listener)


async def test_local_then_global_handlers_in_order_skipping_listeners_without_one(
    globals_cleanup: list[Any],
) -> None:
    log: list[Any] = []
    g = Handles(log, "global")
    register_listener("circuitbreaker", g)
    globals_cleanup.append(g)
    breaker = consecutive_breaker(
        listeners=[Handles(log, "a"), Elsewhere(), Handles(log, "b")], name="dispatch-order"
    )
    guarded = breaker(ok)
    for _ in range(3):
        assert await guarded() == 1
    expected = [(tag, breaker, (WORKING,)) for tag in ("a", "b", "global")]
    assert log == expected * 3


async def test_handlers_are_resolved_once_until_listeners_change(
    globals_cleanup: list[Any],
) -> None:
    log: list[Any] = []
    quiet = Elsewhere()
    breaker = consecutive_breaker(listeners=[quiet], name="dispatch-cache")
    guarded = breaker(ok)
    for _ in range(50):
        await guarded()
    assert quiet.lookups.count("on_success") == 1
    assert log == []

    breaker.add_listener(Handles(log, "added"))  # at run time: seen by the next call
    await guarded()
    assert log == [("added", breaker, (WORKING,))]
    assert quiet.lookups.count("on_success") == 2

    g = Handles(log, "global")
    register_listener("circuitbreaker", g)
    globals_cleanup.append(g)
    log.clear()
    await guarded()
    assert [tag for tag, _, _ in log] == ["added", "global"]

    unregister_listener("circuitbreaker", g)
    globals_cleanup.remove(g)
    log.clear()
    await guarded()
    assert [tag for tag, _, _ in log] == ["added"]


async def test_async_and_failing_handlers_called_from_c(caplog: pytest.LogCaptureFixture) -> None:
    log: list[Any] = []

    class Failing:
        def on_success(self, component: Any, state: Any) -> None:
            raise ValueError("listener bug")

    class Async:
        async def on_success(self, component: Any, state: Any) -> None:
            log.append(("async", state))

    breaker = consecutive_breaker(
        listeners=[Failing(), Async(), Handles(log, "after")], name="dispatch-errors"
    )
    with caplog.at_level(logging.ERROR, logger="failsafe"):
        assert await breaker(ok)() == 1
    await get_event_manager().wait_for_tasks()
    assert log == [("async", WORKING), ("after", breaker, (WORKING,))]
    failures = [r for r in caplog.records if "listener bug" in str(r.exc_info)]
    assert len(failures) == 1
    assert "on_success" in failures[0].getMessage()


async def test_keyboard_interrupt_from_a_handler_propagates() -> None:
    class Interrupting:
        def on_success(self, component: Any, state: Any) -> None:
            raise KeyboardInterrupt

    breaker = consecutive_breaker(listeners=[Interrupting()], name="dispatch-interrupt")
    with pytest.raises(KeyboardInterrupt):
        await breaker(ok)()


async def test_factories_still_build_their_listener_once() -> None:
    log: list[Any] = []
    built: list[Any] = []

    def factory(component: Any) -> Handles:
        built.append(component)
        return Handles(log, "built")

    breaker = consecutive_breaker(listeners=[factory, Handles(log, "plain")], name="dispatch-f")
    guarded = breaker(ok)
    for _ in range(3):
        await guarded()
    assert built == [breaker]
    assert [tag for tag, _, _ in log] == ["built", "plain"] * 3


def test_resolve_answers_none_for_factories_and_pairs_otherwise() -> None:
    log: list[Any] = []
    h = Handles(log, "h")
    breaker = consecutive_breaker(listeners=[Elsewhere(), h], name="dispatch-resolve")
    resolved = events.resolve(breaker, "on_success")
    assert resolved == (h, h.on_success)
    assert resolved[0] is h
    assert events.resolve(breaker, "on_rejected") == ()
    with_factory = consecutive_breaker(listeners=[lambda c: None], name="dispatch-resolve2")
    assert events.resolve(with_factory, "on_success") is None


async def test_hundreds_of_concurrent_calls_with_async_handlers_and_cancellation() -> None:
    """400 calls at once through a breaker whose listener's handler (resolved once, called
    from C) is async: a quarter of the calls are cancelled while inside (never a failure, and
    no event), each other call starts one tracked task, the manager's cap drops what is over
    it, and cancel_tasks() ends the rest without counting them lost."""
    manager = EventManager(max_pending=200)
    gate = asyncio.Event()
    started: list[int] = []
    finished: list[int] = []

    class Slow:
        async def on_success(self, component: Any, state: Any) -> None:
            started.append(1)  # the eager first step runs in the call
            await gate.wait()
            finished.append(1)

    breaker = consecutive_breaker(
        listeners=[Slow()], name="dispatch-concurrent", event_manager=manager
    )
    release = asyncio.Event()

    @breaker
    async def call(i: int) -> int:
        await release.wait()
        return i

    tasks = [asyncio.create_task(call(i)) for i in range(400)]
    await asyncio.sleep(0)  # every call is inside, waiting
    for t in tasks[::4]:
        t.cancel()
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert sum(isinstance(r, asyncio.CancelledError) for r in results) == 100
    assert [r for r in results if isinstance(r, int)] == [i for i in range(400) if i % 4]
    stats = breaker.stats()
    assert (stats.success, stats.failure, stats.state) == (300, 0, "working")

    assert len(started) == 200  # one task per event until the cap, the rest dropped
    assert manager.stats().pending == 200
    assert manager.stats().dropped == 100
    assert await manager.cancel_tasks() == 200
    assert (manager.pending, manager.stats().lost, finished) == (0, 0, [])

    # Below the cap again: the next events' tasks run to their end.
    gate.set()
    assert await asyncio.gather(*(call(i) for i in range(50))) == list(range(50))
    assert await manager.wait_for_tasks() >= 0
    assert (len(finished), manager.pending, manager.stats().dropped) == (50, 0, 100)
