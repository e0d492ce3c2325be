"""Listener dispatch shared by every pattern: local and global listeners, listener factories,
and the tasks that run async listener methods.

The C core reports events only when somebody listens: the component has listeners of its own
(Component._local_listening) or its pattern has a global listener (_native._set_listening). So
nothing here runs on unobserved calls. It asks resolve() once per (component, event) which
handlers exist and calls them itself; emit() (both bound by failsafe/__init__.py with
_native._bind) delivers the events that involve a listener factory.

Entries of a listener list (local `listeners=` or a global registry) are of two kinds:

* a *listener*: an object with `on_*` methods (its class defines them, or `dir()` lists
  them). An event calls `listener.on_x(component, *args)`; a listener lacking `on_x` skips it.
* a *listener factory* (ListenerFactoryT): any other callable, classes included. It is called
  with the component at the component's first event and returns that component's listener (or
  None: no listener for it), directly or as an awaitable. It runs once per (factory, component).

Delivery: local listeners first, then the pattern's global ones, each in registration order.
A sync method runs inline. A method returning an awaitable runs as an eager task (its first
step runs before emit() returns) kept by an EventManager. Whatever a listener or factory
raises is logged on the "failsafe" logger and never reaches the guarded call.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import weakref
from collections import deque
from collections.abc import Awaitable, Coroutine
from typing import Any, Final, Protocol

from failsafe import _native
from failsafe._core import PATTERNS, name_from
from failsafe._listener_tasks import MAX_PENDING_TASKS as MAX_PENDING_TASKS
from failsafe._listener_tasks import EventManager, totals

__all__ = [
    "EventManager",
    "ListenerFactoryT",
    "ListenerRegistry",
    "check_event_manager",
    "check_listener",
    "emit",
    "get_default_name",
    "get_event_manager",
    "global_listeners",
    "is_listening",
    "register_listener",
    "set_event_manager",
    "totals",
    "unregister_listener",
]

logger: Final = logging.getLogger("failsafe")

# Events of a component that arrive while its async factory is still running wait for the
# listener, in order. A factory that never finishes must not grow memory without bound.
MAX_PENDING_EVENTS: Final = 1000


class ListenerFactoryT(Protocol):
    """Builds the listener of one component: `factory(component) -> listener | None`, or an
    awaitable of it. Deliberately not runtime-checkable: every callable would match."""

    def __call__(self, component: Any, /) -> Any: ...


# ------------------------------------------------------------------------------------------
# The event manager of listener tasks


_manager = EventManager()


def get_event_manager() -> EventManager:
    """The process-wide EventManager that tracks listener tasks."""
    return _manager


def set_event_manager(event_manager: EventManager) -> EventManager:
    """Replaces the process-wide EventManager (every call counts); returns the previous one."""
    global _manager
    checked = check_event_manager(event_manager)
    if checked is None:
        raise TypeError("event_manager must be an EventManager, not None")
    previous, _manager = _manager, checked
    return previous


def check_event_manager(event_manager: object) -> EventManager | None:
    """Validates the `event_manager=` argument of a pattern (None: use the global one)."""
    if event_manager is None or isinstance(event_manager, EventManager):
        return event_manager
    raise TypeError(f"event_manager must be an EventManager, not {type(event_manager).__name__}")


# ------------------------------------------------------------------------------------------
# Listeners and global registries


# Whether a class defines on_* methods, per class (dir() is slow); weak, so that classes made
# on the fly (mocks) are not kept.
_class_hooks: weakref.WeakKeyDictionary[type, bool] = weakref.WeakKeyDictionary()


def _class_has_hooks(cls: type) -> bool:
    has = _class_hooks.get(cls)
    if has is None:
        has = any(n.startswith("on_") and callable(getattr(cls, n, None)) for n in dir(cls))
        _class_hooks[cls] = has
    return has


def _is_listener(obj: object) -> bool:
    # A class is never a listener itself: calling its on_* would bind the component as self.
    if isinstance(obj, type):
        return False
    return _class_has_hooks(type(obj)) or any(n.startswith("on_") for n in dir(obj))


def check_listener(listener: object, param: str = "listener") -> object:
    """Validates a listener or listener factory, naming param in the error; returns it."""
    if _is_listener(listener):
        return listener
    if callable(listener):
        try:
            signature = inspect.signature(listener)
        except (TypeError, ValueError):  # some builtins have no signature: trust them
            return listener
        try:
            signature.bind(None)
        except TypeError:
            hint = (
                f"; pass an instance, {listener.__name__}()" if isinstance(listener, type) else ""
            )
            raise TypeError(
                f"{param} {listener!r} is not a listener factory: it cannot be called with the"
                f" component{hint}"
            ) from None
        return listener
    raise TypeError(
        f"{param} must be a listener (an object with on_* methods) or a listener factory"
        f" (a callable taking the component), not {listener!r}"
    )


def _pattern_index(pattern: object) -> int:
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a str, not {type(pattern).__name__}")
    try:
        return PATTERNS[pattern]
    except KeyError:
        raise ValueError(f"pattern must be one of {sorted(PATTERNS)}, not {pattern!r}") from None


class ListenerRegistry:
    """The global listeners of one pattern, in registration order.

    emit() reads the registry at every event, so a listener reaches components created before
    and after it was registered. The C core is told whether the registry is empty, so it only
    reports events when somebody listens. Use the module functions, which hold one registry per
    pattern.
    """

    def __init__(self, pattern: str) -> None:
        self._index = _pattern_index(pattern)
        self.pattern = pattern
        # By id, in registration order (dicts keep it); holding each listener keeps its id.
        self._by_id: dict[int, object] = {}
        # The snapshot emit() iterates, rebuilt at the first read after a change: replaced,
        # never mutated, so an emit() in progress keeps its own; registering stays O(1).
        self._snapshot: tuple[object, ...] | None = ()

    @property
    def listeners(self) -> tuple[object, ...]:
        snapshot = self._snapshot
        if snapshot is None:
            snapshot = self._snapshot = tuple(self._by_id.values())
        return snapshot

    def register(self, listener: object) -> None:
        """Adds listener; registering one already present (same object) does nothing."""
        check_listener(listener)
        if id(listener) not in self._by_id:
            self._by_id[id(listener)] = listener
            self._snapshot = None
            _native._set_listening(self._index, True)

    def unregister(self, listener: object) -> None:
        """Removes listener; ValueError if it is not registered."""
        if self._by_id.pop(id(listener), None) is None:
            raise ValueError(f"{listener!r} is not a registered {self.pattern} listener")
        self._snapshot = None
        _native._set_listening(self._index, bool(self._by_id))

    def __repr__(self) -> str:
        return f"<ListenerRegistry {self.pattern!r} listeners={list(self.listeners)!r}>"


_registries: dict[str, ListenerRegistry] = {}


def _registry(pattern: str) -> ListenerRegistry:
    registry = _registries.get(pattern)
    if registry is None:  # created on demand: PATTERNS grows as patterns are added
        registry = _registries[pattern] = ListenerRegistry(pattern)
    return registry


def register_listener(pattern: str, listener: object) -> None:
    """Adds a global listener (or factory) of every component of pattern, existing or future."""
    _registry(pattern).register(listener)


def unregister_listener(pattern: str, listener: object) -> None:
    """Removes a global listener of pattern; ValueError if it is not registered."""
    _registry(pattern).unregister(listener)


def global_listeners(pattern: str) -> tuple[object, ...]:
    """The global listeners of pattern, in registration order."""
    return _registry(pattern).listeners


def is_listening(component: Any) -> bool:
    """True when an event of component would reach a listener (lets Python slow paths skip
    building event arguments)."""
    registry = _registries.get(component.PATTERN)
    return bool(component._listeners) or (registry is not None and bool(registry.listeners))


def get_default_name(func: Any = None) -> str:
    """The default component name: func's qualified name made metric-safe, else "component"."""
    return "component" if func is None else name_from(func, "component")


# ------------------------------------------------------------------------------------------
# Dispatch


def emit(component: Any, method: str, args: tuple[Any, ...] = ()) -> None:
    """Delivers event `method` of component with args to its local, then global, listeners.

    Never raises an Exception: failures are logged on the "failsafe" logger. KeyboardInterrupt
    and SystemExit are not failures of a listener and propagate.
    """
    try:
        manager = _manager_of(component)
        for entry in component._listeners:
            _deliver(entry, component, method, args, manager)
        registry = _registries.get(component.PATTERN)
        if registry is not None:
            for entry in registry.listeners:
                _deliver(entry, component, method, args, manager)
    except Exception:
        logger.exception("failsafe: dispatching %s of %r failed", method, component)


def resolve(component: Any, method: str) -> tuple[object, ...] | None:
    """The handlers of event `method` of component, local then global, as a flat
    (listener, handler, ...) tuple, which the C core caches per (component, event) until a
    listener is added or removed anywhere, and calls itself: a listener without a handler for
    the event costs nothing then. None when an entry is a listener factory (or looking a
    handler up failed): those events go through emit().
    """
    entries: tuple[object, ...] = component._listeners
    registry = _registries.get(component.PATTERN)
    if registry is not None and registry.listeners:
        entries = (*entries, *registry.listeners)
    flat: list[object] = []
    try:
        for entry in entries:
            hook = None if isinstance(entry, type) else getattr(entry, method, None)
            if hook is not None:
                flat += (entry, hook)
            elif not _is_listener(entry):
                return None
    except Exception:
        return None
    return tuple(flat)


def finish(listener: object, component: Any, method: str, outcome: Any, raised: bool) -> None:
    """Takes over from the C core what a resolved handler returned (other than None) or raised,
    as _call() does: an awaitable runs as a tracked task, an error is logged."""
    try:
        if raised:
            raise outcome
        if inspect.isawaitable(outcome):
            _start(outcome, listener, component, method, _manager_of(component))
    except (Exception, asyncio.CancelledError):
        _log_failure(listener, component, method)


def _manager_of(component: Any) -> EventManager:
    """The component's own `event_manager=`, else the process-wide one."""
    manager: EventManager | None = getattr(component, "_event_manager", None)
    return _manager if manager is None else manager


def _deliver(
    entry: object, component: Any, method: str, args: tuple[Any, ...], manager: EventManager
) -> None:
    try:
        hook = None if isinstance(entry, type) else getattr(entry, method, None)
        if hook is not None:
            _call(entry, hook, component, method, args, manager)
            return
        built = _built_of(entry, component)
        if built is not None:
            built.deliver(component, method, args, manager)
        elif not _is_listener(entry):  # else a listener without this event's method
            _build(entry, component, method, args, manager)
    except Exception:
        _log_failure(entry, component, method)


def _call(
    listener: object,
    hook: Any,
    component: Any,
    method: str,
    args: tuple[Any, ...],
    manager: EventManager,
) -> None:
    # A CancelledError raised synchronously is a listener bug like any other: logged too.
    try:
        result = hook(component, *args)
        if inspect.isawaitable(result):
            _start(result, listener, component, method, manager)
    except (Exception, asyncio.CancelledError):
        _log_failure(listener, component, method)


def _start(
    awaitable: Awaitable[Any], listener: object, component: Any, method: str, manager: EventManager
) -> None:
    """Runs what an async listener method returned as a task tracked by manager."""
    _spawn(_run_async(awaitable, listener, component, method), awaitable, manager, method)


async def _run_async(
    awaitable: Awaitable[Any], listener: object, component: Any, method: str
) -> None:
    try:
        await awaitable
    except Exception:  # CancelledError is not a failure: the task just ends cancelled
        _log_failure(listener, component, method)


def _spawn(
    task_coro: Coroutine[Any, Any, None],
    awaitable: Awaitable[Any],
    manager: EventManager,
    what: str,
) -> bool:
    """Starts task_coro (which awaits awaitable) as an eager task tracked by manager.

    With no running loop (an event from sync code) there is nothing to run it on: both are
    closed unstarted, so no "never awaited" warning, and the skip is logged; so are they when
    the manager already runs max_pending tasks (counted as dropped). Returns whether the task
    started.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        task_coro.close()
        if inspect.iscoroutine(awaitable):
            awaitable.close()
        logger.warning("failsafe: %s is async but no event loop is running; skipped", what)
        return False
    if not manager.has_room():
        task_coro.close()
        if inspect.iscoroutine(awaitable):
            awaitable.close()
        return False
    # Eager: the listener's first step runs now, in the caller's context, like a sync
    # listener would, and a listener that never suspends costs no loop iteration.
    manager.add(asyncio.Task(task_coro, loop=loop, eager_start=True))
    return True


def _log_failure(listener: object, component: Any, method: str, kind: str = "listener") -> None:
    # Called inside an except block: logger.exception attaches the traceback.
    pattern = getattr(component, "PATTERN", "?")
    name = getattr(component, "_name", None) or getattr(component, "name", "?")
    logger.exception("failsafe: %s %r failed at %s of %s %r", kind, listener, method, pattern, name)


# ------------------------------------------------------------------------------------------
# Listener factories


class _Built:
    """What a factory built for one component: the listener, or the events waiting for it."""

    __slots__ = ("dropped", "factory", "listener", "pending")

    def __init__(self, factory: object) -> None:
        self.factory = factory  # strong: keeps id(factory) unique while this entry lives
        self.listener: object = None  # None: no listener (yet, or ever)
        self.pending: deque[tuple[str, tuple[Any, ...]]] | None = None  # async factory running
        self.dropped = 0

    def deliver(
        self, component: Any, method: str, args: tuple[Any, ...], manager: EventManager
    ) -> None:
        if self.pending is not None:
            if len(self.pending) < MAX_PENDING_EVENTS:
                self.pending.append((method, args))
            else:
                self.dropped += 1
                if self.dropped == 1:
                    logger.warning(
                        "failsafe: listener factory %r has not finished after %d events of"
                        " %r; dropping events until it does",
                        self.factory,
                        MAX_PENDING_EVENTS,
                        component,
                    )
        elif self.listener is not None:
            hook = getattr(self.listener, method, None)
            if hook is not None:
                _call(self.listener, hook, component, method, args, manager)

    def adopt(self, listener: object, component: Any) -> None:
        if listener is None or _is_listener(listener):
            self.listener = listener
        else:
            logger.error(
                "failsafe: listener factory %r returned %r for %r, not a listener; ignored",
                self.factory,
                listener,
                component,
            )

    def drain(self, component: Any, manager: EventManager) -> None:
        # pending stays set while draining, so an event raised by a listener meanwhile queues
        # behind the earlier ones instead of overtaking them.
        queue = self.pending
        while queue:
            method, args = queue.popleft()
            hook = getattr(self.listener, method, None) if self.listener is not None else None
            if hook is not None:
                _call(self.listener, hook, component, method, args, manager)
        self.pending = None


# Components without a __dict__ keep what factories built for them here instead.
_built_elsewhere: weakref.WeakKeyDictionary[Any, dict[int, _Built]] = weakref.WeakKeyDictionary()


def _built_map(component: Any) -> dict[int, _Built]:
    """{id(factory): _Built} of component, kept on the component itself.

    Not in a global weak-keyed map: a built listener usually references its component, and a
    value referencing its key keeps the entry, so the component, alive forever.
    """
    try:
        built: dict[int, _Built] = component._factory_listeners
    except AttributeError:
        built = {}
        try:
            component._factory_listeners = built
        except AttributeError:
            built = _built_elsewhere.setdefault(component, built)
    return built


def _built_of(factory: object, component: Any) -> _Built | None:
    built = _built_map(component).get(id(factory))
    return built if built is not None and built.factory is factory else None


def _forget(built: _Built, component: Any) -> None:
    per_component = _built_map(component)
    if per_component.get(id(built.factory)) is built:
        del per_component[id(built.factory)]


def _build(
    factory: object, component: Any, method: str, args: tuple[Any, ...], manager: EventManager
) -> None:
    """Runs factory for component at its first event (method, args) and delivers that event.

    Once per (factory, component): a factory that raises or returns a non-listener is logged
    and the component gets no listener from it.
    """
    built = _Built(factory)
    _built_map(component)[id(factory)] = built
    if not callable(factory):  # an unvalidated local entry: log once, then skip it for good
        logger.error("failsafe: %r is neither a listener nor a listener factory", factory)
        return
    try:
        made = factory(component)
    except Exception:
        _log_failure(factory, component, method, "listener factory")
        return
    if not inspect.isawaitable(made):
        built.adopt(made, component)
        built.deliver(component, method, args, manager)
        return
    # Queued before the task starts: an eager task whose factory never suspends delivers the
    # first event inline, before emit() returns.
    built.pending = deque([(method, args)])
    task = _finish_build(built, made, component, manager)
    if not _spawn(task, made, manager, f"listener factory {factory!r}"):
        _forget(built, component)  # never ran: the next event (maybe in a loop) retries
        built.pending = None


async def _finish_build(
    built: _Built, awaitable: Awaitable[Any], component: Any, manager: EventManager
) -> None:
    try:
        listener = await awaitable
    except asyncio.CancelledError:  # e.g. cancel_tasks(): build again at the next event
        _forget(built, component)
        built.pending = None
        raise
    except Exception:
        _log_failure(built.factory, component, "the first event", "listener factory")
        built.pending = None
        return
    built.adopt(listener, component)
    built.drain(component, manager)
