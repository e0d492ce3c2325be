"""Handlers resolved once per (component, event) and called from C: the same listeners get the
same events, in the same order, as through emit(), and changes at run time are seen."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from failsafe import events
from failsafe.circuitbreaker import BreakerState, consecutive_breaker
from failsafe.events import get_event_manager, register_listener, unregister_listener

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
