"""failsafe.events: dispatch order, global registries, factories, listener tasks, failures."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import warnings
import weakref
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from failsafe import _native, events
from failsafe._core import PATTERNS
from failsafe.events import (
    EventManager,
    check_event_manager,
    check_listener,
    emit,
    get_default_name,
    get_event_manager,
    global_listeners,
    is_listening,
    register_listener,
    set_event_manager,
    unregister_listener,
)


class Component:
    """Just what emit() reads from a policy."""

    PATTERN = "retry"

    def __init__(self, *listeners: Any, name: str = "dummy", event_manager: Any = None) -> None:
        self._listeners = listeners
        self._local_listening = 1 if listeners else 0
        self._name = name
        self._event_manager = event_manager

    @property
    def name(self) -> str:
        return self._name


class Recorder:
    """A sync listener that records (tag, method, component, args)."""

    def __init__(self, log: list[Any], tag: str) -> None:
        self.log = log
        self.tag = tag

    def on_retry(self, component: Any, *args: Any) -> None:
        self.log.append((self.tag, "on_retry", component, args))

    def on_success(self, component: Any, *args: Any) -> None:
        self.log.append((self.tag, "on_success", component, args))


class Failing:
    def on_retry(self, component: Any, *args: Any) -> None:
        raise RuntimeError("listener boom")


@pytest.fixture(autouse=True)
def _isolate() -> Iterator[None]:
    """Leaves the global registries and the default EventManager as they were."""
    before = {pattern: global_listeners(pattern) for pattern in PATTERNS}
    manager = get_event_manager()
    yield
    set_event_manager(manager)
    for pattern, kept in before.items():
        for listener in global_listeners(pattern):
            if not any(listener is k for k in kept):
                unregister_listener(pattern, listener)


@pytest.fixture
def flags(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool]]:
    """Records what events tells the C module (and still tells it)."""
    calls: list[tuple[int, bool]] = []
    real = _native._set_listening

    def spy(index: int, on: bool) -> None:
        calls.append((index, on))
        real(index, on)

    monkeypatch.setattr(_native, "_set_listening", spy)
    return calls


def failsafe_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "failsafe" and r.levelno >= logging.ERROR]


# ------------------------------------------------------------------------------------------
# Dispatch order and the global registries


def test_local_listeners_then_global_in_registration_order() -> None:
    log: list[Any] = []
    component = Component(Recorder(log, "local1"), Recorder(log, "local2"))
    register_listener("retry", Recorder(log, "global1"))
    register_listener("retry", Recorder(log, "global2"))

    emit(component, "on_retry", (ValueError, 2, 0.5))

    assert [entry[0] for entry in log] == ["local1", "local2", "global1", "global2"]
    assert all(entry[1:] == ("on_retry", component, (ValueError, 2, 0.5)) for entry in log)


def test_global_listener_registered_late_reaches_existing_components() -> None:
    log: list[Any] = []
    component = Component(Recorder(log, "local"))
    emit(component, "on_retry", ())  # the component's first event, before the global listener
    register_listener("retry", Recorder(log, "global"))

    emit(component, "on_retry", ())

    assert [entry[0] for entry in log] == ["local", "local", "global"]


def test_global_listener_only_reaches_its_pattern() -> None:
    log: list[Any] = []
    register_listener("timeout", Recorder(log, "timeout"))

    emit(Component(), "on_retry", ())

    assert log == []


def test_unregister_stops_delivery_and_clears_the_c_flag(flags: list[tuple[int, bool]]) -> None:
    log: list[Any] = []
    first, second = Recorder(log, "first"), Recorder(log, "second")
    component = Component()
    register_listener("retry", first)
    register_listener("retry", second)
    assert global_listeners("retry")[-2:] == (first, second)

    unregister_listener("retry", first)
    emit(component, "on_retry", ())
    assert [entry[0] for entry in log] == ["second"]

    unregister_listener("retry", second)
    emit(component, "on_retry", ())
    assert [entry[0] for entry in log] == ["second"]
    retry = PATTERNS["retry"]
    assert flags[0] == (retry, True)
    assert all(on for _, on in flags[:-1])  # on while anybody is left
    assert flags[-1] == (retry, False)


def test_registering_twice_is_one_registration() -> None:
    log: list[Any] = []
    listener = Recorder(log, "g")
    register_listener("retry", listener)
    register_listener("retry", listener)

    emit(Component(), "on_retry", ())

    assert len(log) == 1
    unregister_listener("retry", listener)
    assert listener not in global_listeners("retry")


def test_unregister_unknown_listener_raises() -> None:
    with pytest.raises(ValueError, match="not a registered retry listener"):
        unregister_listener("retry", Recorder([], "x"))


def test_is_listening() -> None:
    component = Component()
    assert not is_listening(component)
    assert is_listening(Component(Recorder([], "local")))
    listener = Recorder([], "g")
    register_listener("retry", listener)
    assert is_listening(component)
    unregister_listener("retry", listener)
    assert not is_listening(component)


def test_listener_without_the_method_is_skipped() -> None:
    log: list[Any] = []

    class OnlySuccess:
        def on_success(self, component: Any) -> None:
            log.append("success")

    component = Component(OnlySuccess(), Recorder(log, "rec"))
    emit(component, "on_retry", ())
    emit(component, "on_success", ())

    assert log == [
        ("rec", "on_retry", component, ()),
        "success",
        ("rec", "on_success", component, ()),
    ]


# ------------------------------------------------------------------------------------------
# Failures never reach the caller


def test_sync_listener_error_is_logged_and_later_listeners_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log: list[Any] = []
    component = Component(Failing(), Recorder(log, "after"), name="fetch")

    emit(component, "on_retry", ())  # must not raise

    assert [entry[0] for entry in log] == ["after"]
    [record] = failsafe_errors(caplog)
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == "listener boom"
    assert "on_retry of retry 'fetch'" in record.getMessage()


def test_sync_cancelled_error_is_a_listener_failure(caplog: pytest.LogCaptureFixture) -> None:
    class Cancelling:
        def on_retry(self, component: Any) -> None:
            raise asyncio.CancelledError

    emit(Component(Cancelling()), "on_retry", ())

    [record] = failsafe_errors(caplog)
    assert record.exc_info is not None
    assert record.exc_info[0] is asyncio.CancelledError


def test_keyboard_interrupt_propagates() -> None:
    class Interrupting:
        def on_retry(self, component: Any) -> None:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        emit(Component(Interrupting()), "on_retry", ())


def test_broken_component_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    class NoListeners:
        PATTERN = "retry"

    emit(NoListeners(), "on_retry", ())

    [record] = failsafe_errors(caplog)
    assert isinstance(record.exc_info and record.exc_info[1], AttributeError)


def test_listener_with_raising_getattr_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    log: list[Any] = []

    class Weird:
        def on_success(self, component: Any) -> None: ...

        def __getattr__(self, name: str) -> Any:
            raise RuntimeError(name)

    emit(Component(Weird(), Recorder(log, "after")), "on_retry", ())

    assert len(log) == 1
    assert len(failsafe_errors(caplog)) == 1


def test_non_listener_local_entry_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    component = Component(42)
    emit(component, "on_retry", ())
    emit(component, "on_retry", ())

    assert len(failsafe_errors(caplog)) == 1


# ------------------------------------------------------------------------------------------
# Async listeners and the EventManager


async def test_async_listener_starts_eagerly_and_is_tracked() -> None:
    steps: list[str] = []
    gate = asyncio.Event()

    class Async:
        async def on_retry(self, component: Any, attempt: int) -> None:
            steps.append(f"start {attempt}")
            await gate.wait()
            steps.append(f"end {attempt}")

    manager = EventManager()
    set_event_manager(manager)
    emit(Component(Async()), "on_retry", (1,))

    assert steps == ["start 1"]  # the first step ran before emit returned
    assert manager.pending == 1
    gate.set()
    assert await manager.wait_for_tasks() == 1
    assert steps == ["start 1", "end 1"]
    assert manager.pending == 0


async def test_async_listener_that_never_suspends_is_not_kept() -> None:
    done: list[int] = []

    class Quick:
        async def on_retry(self, component: Any) -> None:
            done.append(1)

    manager = EventManager()
    set_event_manager(manager)
    emit(Component(Quick()), "on_retry", ())

    assert done == [1]
    assert manager.pending == 0
    assert await manager.wait_for_tasks() == 0


async def test_async_listener_error_is_logged_and_wait_completes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class AsyncFailing:
        async def on_retry(self, component: Any) -> None:
            await asyncio.sleep(0)
            raise RuntimeError("async boom")

    manager = EventManager()
    set_event_manager(manager)
    emit(Component(AsyncFailing()), "on_retry", ())
    assert failsafe_errors(caplog) == []

    assert await manager.wait_for_tasks() == 1  # does not re-raise

    [record] = failsafe_errors(caplog)
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == "async boom"


async def test_wait_for_tasks_includes_tasks_started_while_waiting() -> None:
    seen: list[int] = []
    component = Component()

    class Chain:
        async def on_retry(self, component: Any, n: int) -> None:
            await asyncio.sleep(0)
            seen.append(n)
            if n < 3:
                emit(component, "on_retry", (n + 1,))

    component._listeners = (Chain(),)
    manager = EventManager()
    set_event_manager(manager)
    emit(component, "on_retry", (1,))

    # Tasks 2 and 3 start while we wait (how many are still pending when looked at depends on
    # the loop's scheduling, so the count is only bounded).
    assert 1 <= await manager.wait_for_tasks() <= 3
    assert seen == [1, 2, 3]
    assert manager.pending == 0


async def test_cancel_tasks_cancels_without_logging(caplog: pytest.LogCaptureFixture) -> None:
    class Forever:
        async def on_retry(self, component: Any) -> None:
            await asyncio.Event().wait()

    manager = EventManager()
    set_event_manager(manager)
    emit(Component(Forever()), "on_retry", ())
    emit(Component(Forever()), "on_retry", ())

    assert await manager.cancel_tasks() == 2
    assert manager.pending == 0
    assert await manager.wait_for_tasks() == 0
    assert failsafe_errors(caplog) == []


async def test_component_event_manager_takes_precedence() -> None:
    gate = asyncio.Event()

    class Slow:
        async def on_retry(self, component: Any) -> None:
            await gate.wait()

    own, default = EventManager(), EventManager()
    set_event_manager(default)
    emit(Component(Slow(), event_manager=own), "on_retry", ())
    emit(Component(Slow()), "on_retry", ())

    assert (own.pending, default.pending) == (1, 1)
    gate.set()
    assert await own.wait_for_tasks() == 1
    assert default.pending == 0  # it ran meanwhile: tracking does not delay anything


def test_set_event_manager_replaces_and_returns_previous() -> None:
    first, second = EventManager(), EventManager()
    set_event_manager(first)
    assert set_event_manager(second) is first  # a second call is not ignored
    assert get_event_manager() is second
    with pytest.raises(TypeError, match="event_manager must be an EventManager"):
        set_event_manager("nope")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="event_manager"):
        set_event_manager(None)  # type: ignore[arg-type]
    assert get_event_manager() is second


def test_check_event_manager() -> None:
    manager = EventManager()
    assert check_event_manager(manager) is manager
    assert check_event_manager(None) is None
    with pytest.raises(TypeError, match="event_manager must be an EventManager, not int"):
        check_event_manager(3)


def test_event_manager_add_validates() -> None:
    with pytest.raises(TypeError, match="task must be"):
        EventManager().add("task")  # type: ignore[arg-type]


def test_async_listener_without_running_loop_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    class Async:
        async def on_retry(self, component: Any) -> None: ...

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine ... was never awaited" would fail here
        emit(Component(Async()), "on_retry", ())
        gc.collect()

    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1
    assert "no event loop is running" in warning[0].getMessage()


# ------------------------------------------------------------------------------------------
# Listener factories


def test_sync_factory_runs_once_per_component() -> None:
    log: list[Any] = []
    built_for: list[Any] = []

    def factory(component: Any) -> Recorder:
        built_for.append(component)
        return Recorder(log, component.name)

    a, b = Component(factory, name="a"), Component(name="b")
    register_listener("retry", factory)  # the same factory, local to a and global for both
    emit(a, "on_retry", ())
    emit(a, "on_retry", ())
    emit(b, "on_retry", ())

    assert built_for == [a, b]  # one listener per (factory, component), reused
    assert [entry[0] for entry in log] == ["a", "a", "a", "a", "b"]


def test_class_is_a_factory() -> None:
    class PerComponent:
        instances: ClassVar[list[PerComponent]] = []

        def __init__(self, component: Any) -> None:
            self.component = component
            self.events = 0
            PerComponent.instances.append(self)

        def on_retry(self, component: Any) -> None:
            assert component is self.component
            self.events += 1

    register_listener("retry", PerComponent)
    component = Component()
    emit(component, "on_retry", ())
    emit(component, "on_retry", ())

    [instance] = PerComponent.instances
    assert instance.events == 2


def test_raising_factory_is_logged_once_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    log: list[Any] = []
    calls = 0

    def factory(component: Any) -> Recorder:
        nonlocal calls
        calls += 1
        raise ValueError("bad metric name")

    component = Component(factory, Recorder(log, "after"))
    emit(component, "on_retry", ())
    emit(component, "on_retry", ())

    assert calls == 1
    assert [entry[0] for entry in log] == ["after", "after"]
    [record] = failsafe_errors(caplog)
    assert "listener factory" in record.getMessage()


def test_factory_returning_none_or_junk(caplog: pytest.LogCaptureFixture) -> None:
    emit(Component(lambda component: None), "on_retry", ())
    assert failsafe_errors(caplog) == []

    emit(Component(lambda component: 42), "on_retry", ())
    [record] = failsafe_errors(caplog)
    assert "not a listener" in record.getMessage()


def test_factory_cache_does_not_keep_components_alive() -> None:
    component = Component(lambda component: Recorder([], "x"))
    emit(component, "on_retry", ())
    ref = weakref.ref(component)
    del component
    gc.collect()
    assert ref() is None


def test_factory_listener_of_slotted_component() -> None:
    log: list[Any] = []

    class Slotted:
        __slots__ = ("__weakref__", "_event_manager", "_listeners", "_name")
        PATTERN = "retry"

        def __init__(self, *listeners: Any) -> None:
            self._listeners = listeners
            self._name = "slotted"
            self._event_manager = None

    calls = 0

    def factory(component: Any) -> Recorder:
        nonlocal calls
        calls += 1
        return Recorder(log, "built")

    component = Slotted(factory)
    emit(component, "on_retry", ())
    emit(component, "on_retry", ())

    assert calls == 1
    assert len(log) == 2


async def test_async_factory_delivers_early_events_in_order() -> None:
    log: list[Any] = []
    gate = asyncio.Event()

    async def factory(component: Any) -> Recorder:
        await gate.wait()
        return Recorder(log, "built")

    manager = EventManager()
    set_event_manager(manager)
    component = Component(factory)
    emit(component, "on_retry", (1,))
    emit(component, "on_success", (2,))
    emit(component, "on_retry", (3,))
    assert log == []

    gate.set()
    assert await manager.wait_for_tasks() == 1
    assert [(m, a) for _, m, _, a in log] == [
        ("on_retry", (1,)),
        ("on_success", (2,)),
        ("on_retry", (3,)),
    ]

    emit(component, "on_retry", (4,))  # once built, events go straight to the listener
    assert log[-1][3] == (4,)


async def test_async_factory_that_never_suspends_delivers_inline() -> None:
    log: list[Any] = []

    async def factory(component: Any) -> Recorder:
        return Recorder(log, "built")

    emit(Component(factory), "on_retry", (1,))

    assert [entry[3] for entry in log] == [(1,)]


async def test_failing_async_factory_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def factory(component: Any) -> Recorder:
        await asyncio.sleep(0)
        raise RuntimeError("factory boom")

    manager = EventManager()
    set_event_manager(manager)
    component = Component(factory)
    emit(component, "on_retry", ())
    emit(component, "on_retry", ())
    assert await manager.wait_for_tasks() == 1

    emit(component, "on_retry", ())  # not built again
    assert manager.pending == 0
    [record] = failsafe_errors(caplog)
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == "factory boom"


async def test_cancelled_async_factory_is_built_again() -> None:
    log: list[Any] = []
    gate = asyncio.Event()
    calls = 0

    async def factory(component: Any) -> Recorder:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.Event().wait()
        await gate.wait()
        return Recorder(log, "built")

    manager = EventManager()
    set_event_manager(manager)
    component = Component(factory)
    emit(component, "on_retry", (1,))
    assert await manager.cancel_tasks() == 1

    emit(component, "on_retry", (2,))
    gate.set()
    await manager.wait_for_tasks()
    assert calls == 2
    assert [entry[3] for entry in log] == [(2,)]


async def test_pending_events_are_capped(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(events, "MAX_PENDING_EVENTS", 2)
    log: list[Any] = []
    gate = asyncio.Event()

    async def factory(component: Any) -> Recorder:
        await gate.wait()
        return Recorder(log, "built")

    manager = EventManager()
    set_event_manager(manager)
    component = Component(factory)
    for n in range(5):
        emit(component, "on_retry", (n,))
    gate.set()
    await manager.wait_for_tasks()

    assert [entry[3] for entry in log] == [(0,), (1,)]
    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1
    assert "dropping events" in warning[0].getMessage()


def test_async_factory_without_running_loop_is_retried_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log: list[Any] = []

    async def factory(component: Any) -> Recorder:
        return Recorder(log, "built")

    component = Component(factory)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        emit(component, "on_retry", (1,))
        gc.collect()
    assert log == []

    async def later() -> None:
        emit(component, "on_retry", (2,))

    asyncio.run(later())
    assert [entry[3] for entry in log] == [(2,)]


# ------------------------------------------------------------------------------------------
# Validation and names


def test_unknown_or_bad_pattern() -> None:
    with pytest.raises(ValueError, match=r"pattern must be one of .*'nope'"):
        register_listener("nope", Recorder([], "x"))
    with pytest.raises(TypeError, match="pattern must be a str"):
        register_listener(3, Recorder([], "x"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pattern"):
        global_listeners("nope")


def test_listener_validation() -> None:
    with pytest.raises(TypeError, match=r"listener must be a listener .* not 42"):
        register_listener("retry", 42)

    class NeedsInstance:
        def on_retry(self, component: Any) -> None: ...

    with pytest.raises(TypeError, match=r"pass an instance, NeedsInstance\(\)"):
        register_listener("retry", NeedsInstance)

    def no_args() -> None: ...

    with pytest.raises(TypeError, match="cannot be called with the component"):
        register_listener("retry", no_args)
    with pytest.raises(TypeError, match="listeners"):
        check_listener(object(), "listeners")
    assert global_listeners("retry") == ()


def test_listener_with_instance_hooks_is_a_listener() -> None:
    log: list[Any] = []

    class Bag:
        pass

    bag = Bag()
    bag.on_retry = lambda component: log.append(component)  # type: ignore[attr-defined]
    register_listener("retry", bag)
    component = Component()
    emit(component, "on_retry", ())
    emit(component, "on_success", ())  # a listener lacking a method, not a factory

    assert log == [component]


def test_get_default_name() -> None:
    def fetch() -> None: ...

    assert get_default_name(fetch) == "test_get_default_name.fetch"
    assert get_default_name() == "component"


# ------------------------------------------------------------------------------------------
# Through the C core, with a real policy


async def test_global_listener_reaches_a_real_policy_through_c() -> None:
    from failsafe.retry import retry

    log: list[Any] = []

    class Listener:
        def on_retry(self, component: Any, exc: Any, counter: Any, delay: float) -> None:
            log.append(("retry", component.name, type(exc).__name__))

        def on_success(self, component: Any, counter: Any) -> None:
            log.append(("success", component.name, counter.current_attempt))

    calls = 0

    @retry(attempts=2, backoff=0, name="flaky")
    async def flaky() -> int:
        nonlocal calls
        calls += 1
        if calls % 2:
            raise ValueError
        return calls

    assert await flaky() == 2  # created, called and finished before anybody listens
    listener = Listener()
    register_listener("retry", listener)
    assert await flaky() == 4
    assert log == [("retry", "flaky", "ValueError"), ("success", "flaky", 1)]

    unregister_listener("retry", listener)  # the C core stops reporting
    assert await flaky() == 6
    assert len(log) == 2


async def test_failing_listeners_do_not_change_a_real_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from failsafe.retry import retry

    def bad_factory(component: Any) -> Any:
        raise ValueError("bad metric name")

    calls = 0

    @retry(attempts=3, backoff=0, listeners=[Failing(), bad_factory])
    async def succeed() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("first attempt fails")
        return "ok"

    assert await succeed() == "ok"
    assert calls == 2  # a failing listener or factory never causes another attempt
    assert len(failsafe_errors(caplog)) == 2  # Failing.on_retry, then the factory (once)


def test_default_names_of_distinct_functions_stay_distinct() -> None:
    """Names cut to 63 characters or transliterated keep a hash of the qualified name: two
    functions never merge into one metrics series."""
    from failsafe.retry import retry

    async def compute_the_monthly_invoice_totals_for_every_customer_billing_period_v1() -> int:
        return 1

    async def compute_the_monthly_invoice_totals_for_every_customer_billing_period_v2() -> int:
        return 2

    async def 価格() -> int:
        return 3

    async def 在庫() -> int:
        return 4

    fns = [
        compute_the_monthly_invoice_totals_for_every_customer_billing_period_v1,
        compute_the_monthly_invoice_totals_for_every_customer_billing_period_v2,
        価格,
        在庫,
    ]
    names = [retry()(fn).policy.name for fn in fns]
    assert len(set(names)) == 4
    for name in names:
        assert len(name) <= 63
        assert retry(name=name).name == name  # each is a valid explicit name too
    assert names[0].startswith("test_default_names_of_distinct_functions")
    # At module level, where the qualified name is the bare function name.
    価格.__qualname__, 在庫.__qualname__ = "価格", "在庫"
    top = [retry()(fn).policy.name for fn in (価格, 在庫)]
    assert top[0] != top[1]
    assert all(name.startswith("retry-") for name in top)
    # Stable: the same function gets the same name again.
    assert retry()(fns[0]).policy.name == names[0]
    assert get_default_name(fns[2]) != get_default_name(fns[3])


def test_registering_many_global_listeners_takes_linear_time() -> None:
    """40,000 global listeners register, all hear an event, and unregister in well under the
    time a quadratic registry needs (about a minute for this many)."""
    from failsafe.retry import retry

    heard: list[int] = []

    class Counting:
        def on_retry(self, component: Any, *args: Any) -> None:
            heard.append(1)

    listeners = [Counting() for _ in range(40_000)]
    start = time.perf_counter()
    for listener in listeners:
        register_listener("retry", listener)
    register_listener("retry", listeners[0])  # again: still once
    registered = time.perf_counter() - start
    assert global_listeners("retry")[-1] is listeners[-1]
    assert len(global_listeners("retry")) >= 40_000
    emit(retry(name="many_listeners"), "on_retry", (None, None, 0.0))
    assert len(heard) == 40_000
    for listener in listeners:
        unregister_listener("retry", listener)
    assert registered < 8.0, f"{registered:.1f} s to register 40,000 listeners"


# ------------------------------------------------------------------------------------------
# Listener tasks: closed loops, shutdown, and a cap


class SlowListener:
    """An async listener of retry successes that takes `seconds` to handle each."""

    def __init__(self, seconds: float = 0.05, gate: asyncio.Event | None = None) -> None:
        self.seconds = seconds
        self.gate = gate
        self.delivered = 0

    async def on_success(self, component: Any, counter: Any) -> None:
        if self.gate is not None:
            await self.gate.wait()
        else:
            await asyncio.sleep(self.seconds)
        self.delivered += 1


def test_events_pending_at_asyncio_run_shutdown_are_logged_as_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from failsafe.retry import retry

    listener = SlowListener()
    manager = EventManager()

    @retry(attempts=1, listeners=[listener], event_manager=manager, name="shutdown_events")
    async def work() -> int:
        return 1

    async def main() -> None:
        for _ in range(5):
            await work()  # returns before its listener task is done

    with caplog.at_level(logging.WARNING, logger="failsafe"):
        asyncio.run(main())
    assert listener.delivered == 0
    assert manager.stats()["lost"] == 5
    assert manager.pending == 0
    lost = [r for r in caplog.records if "lost" in r.getMessage()]
    assert len(lost) == 1  # once, with the count
    assert "5 listener event(s) lost" in lost[0].getMessage()


def test_tasks_of_closed_loops_are_dropped(caplog: pytest.LogCaptureFixture) -> None:
    """Loops closed with listener tasks still pending (each test building its own loop): the
    manager lets their tasks go instead of keeping them forever."""
    from failsafe.retry import retry

    manager = EventManager()
    listener = SlowListener(gate=None, seconds=3600)

    @retry(attempts=1, listeners=[listener], event_manager=manager, name="closed_loops")
    async def work() -> int:
        return 1

    with caplog.at_level(logging.WARNING, logger="failsafe"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        for _ in range(300):
            loop = asyncio.new_event_loop()
            loop.run_until_complete(work())
            loop.close()  # its listener task never ran to the end
    assert manager.pending < 130  # bounded, not 300
    assert manager.stats()["lost"] >= 170
    assert any("lost" in r.getMessage() for r in caplog.records)


async def test_async_listener_tasks_are_capped_and_drops_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from failsafe.retry import retry

    gate = asyncio.Event()
    listener = SlowListener(gate=gate)
    manager = EventManager(max_pending=100)
    before = events.totals()["dropped"]

    @retry(attempts=1, listeners=[listener], event_manager=manager, name="capped_events")
    async def work() -> int:
        return 1

    with caplog.at_level(logging.WARNING, logger="failsafe"):
        for _ in range(1000):
            await work()
    assert manager.stats() == {"pending": 100, "max_pending": 100, "dropped": 900, "lost": 0}
    assert events.totals()["dropped"] - before == 900
    assert len([r for r in caplog.records if "dropping" in r.getMessage()]) == 1
    gate.set()
    await manager.wait_for_tasks()
    assert listener.delivered == 100
    await work()  # room again
    await manager.wait_for_tasks()
    assert listener.delivered == 101
    assert manager.stats()["dropped"] == 900


def test_event_manager_validates_max_pending() -> None:
    with pytest.raises(ValueError, match="max_pending"):
        EventManager(max_pending=0)
    with pytest.raises(TypeError, match="max_pending"):
        EventManager(max_pending=1.5)  # type: ignore[arg-type]
