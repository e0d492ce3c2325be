"""Fail-fast: stop calling what is known to be failing.

``failfast(failure_threshold=3, recovery_time=30)`` opens after 3 consecutive failures (the call
that opens it raises :class:`FailFastOpen` ``from`` its own exception), rejects every call at
once while open, and closes again ``recovery_time`` seconds later (noticed at the next call) or
on ``close()``. A ``predicate`` over the call's arguments (sync or async) rejects calls whose
verdict is truthy. The latch is the C core's; one policy serves any number of concurrent tasks
and functions. ``async with policy:`` guards a block the same way (the predicate is called with
no arguments).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Self, overload

from failsafe import _core, _native, events
from failsafe._types import Decorated
from failsafe.failfast._options import FailFastOptions
from failsafe.failfast.exceptions import FailFastOpen
from failsafe.stats import FailFastStats

__all__ = [
    "FailFast",
    "FailFastListener",
    "FailFastManager",
    "FailFastOpen",
    "FailFastStats",
    "failfast",
    "register_failfast_listener",
]


OPENED, CLOSED, REJECTED = _core.counter_indexes("failfast", "opened", "closed", "rejected")


class FailFastListener:
    """Fail-fast events. Methods may be sync or async; override the ones you need."""

    def on_failfast_open(self, failfast: FailFast) -> Any:
        """It opened: after the threshold of consecutive failures, or by ``open()``."""

    def on_failfast_close(self, failfast: FailFast) -> Any:
        """It closed: its recovery time passed (noticed at the next call), or ``close()``."""

    def on_failfast_rejected(self, failfast: FailFast) -> Any:
        """A call was refused (open, or the predicate said so)."""


def register_failfast_listener(listener: Any) -> None:
    """Adds a listener (or listener factory) to every fail-fast, existing and future."""
    events.register_listener("failfast", listener)


class FailFast(_core.Component, _native.FailFast):
    """A fail-fast policy: decorate async functions with it, or ``async with`` it.

    Metrics: ``opened`` and ``closed`` (transitions), ``rejected`` (refused calls).
    ``open()`` and ``close()`` switch it by hand; ``is_open``, ``state``, ``failures`` and
    ``retry_after`` tell where it stands.
    """

    PATTERN: ClassVar[str] = "failfast"
    METRICS: ClassVar[tuple[str, ...]] = _native.METRICS["failfast"]

    def __new__(cls, *args: Any, store: Any = None, **kw: Any) -> Self:
        # The latch shared through a store: a SharedFailFast.
        where = "failsafe.stores._failfast:SharedFailFast"
        return super().__new__(_core.store_variant(cls, FailFast, store, where))

    def __init__(
        self,
        *,
        failure_threshold: int | None = None,
        predicate: Callable[..., Any] | None = None,
        recovery_time: float | None = None,
        on: Any = Exception,
        name: str | None = None,
        listeners: Iterable[Any] | None = None,
        event_manager: events.EventManager | None = None,
        store: Any = None,
    ) -> None:
        if store is not None:
            raise TypeError("store= is not supported by subclasses of FailFast")
        self._init_component(name, listeners, event_manager)
        o = FailFastOptions.check(
            failure_threshold=failure_threshold,
            predicate=predicate,
            recovery_time=recovery_time,
            on=on,
        )
        self._failure_threshold: int | None = o.failure_threshold
        self._recovery_time: float | None = o.recovery_time
        self._predicate = o.predicate
        self._observe = o.failure_threshold is not None
        self._configure(**o.configuration())

    # -- decorator and block form ------------------------------------------------------------

    async def __aenter__(self) -> Self:
        # Timed (latency histograms) only while _latency is set: a slot read otherwise.
        t0 = None if self._latency is None else _native.now_ns()
        try:
            self._check_open()
            if self._predicate is not None:
                verdict = self._predicate()
                if inspect.isawaitable(verdict):
                    verdict = await verdict
                if verdict:
                    self._reject()
        except BaseException as exc:
            if t0 is not None:
                self._block_refused(t0, exc)
            raise
        if t0 is not None:
            self._block_open(t0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._latency is not None:
            self._block_exited(exc)
        # Raises FailFastOpen from exc when this failure opened it; never suppresses.
        if self._observe:
            self._exit(exc)

    async def _call_slow(
        self, fn: Callable[..., Awaitable[Any]], /, *args: Any, **kwargs: Any
    ) -> Any:
        """A call whose predicate is async (the C guard checked the latch already)."""
        assert self._predicate is not None
        if await self._predicate(*args, **kwargs):
            self._reject()
        self._check_open()  # it may have opened while the predicate ran
        if not self._observe:
            return await fn(*args, **kwargs)
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self._exit(exc)
            raise
        self._exit(None)
        return result

    # -- state -------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """``"open"`` while calls are rejected, else ``"closed"``."""
        return "open" if self.is_open else "closed"

    @property
    def failure_threshold(self) -> int | None:
        return self._failure_threshold

    @property
    def recovery_time(self) -> float | None:
        return self._recovery_time

    @property
    def _manager(self) -> Self:
        """failsafe-py's manager object: the policy itself (``_manager.close()`` works)."""
        return self

    def _stat_values(self) -> dict[str, Any]:
        return {**super()._stat_values(), "state": self.state, "failures": self.failures}

    def stats(self) -> FailFastStats:
        return FailFastStats(**self._stat_values())


_core.show_init_signature(FailFast)

# failsafe-py's name of the object holding the state.
FailFastManager = FailFast


if TYPE_CHECKING:  # the methods C calls by name
    _slow_call: type[_native.SlowCall] = FailFast


@overload
def failfast[**P, T](fn: Callable[P, Awaitable[T]], /) -> Decorated[P, T, FailFast]: ...
@overload
def failfast(
    fn: None = None,
    /,
    *,
    failure_threshold: int | None = ...,
    predicate: Callable[..., Any] | None = ...,
    recovery_time: float | None = ...,
    on: Any = ...,
    name: str | None = ...,
    listeners: Iterable[Any] | None = ...,
    event_manager: events.EventManager | None = ...,
    store: Any = ...,
) -> FailFast: ...
def failfast(
    fn: Callable[..., Awaitable[Any]] | None = None,
    /,
    *,
    failure_threshold: int | None = None,
    predicate: Callable[..., Any] | None = None,
    recovery_time: float | None = None,
    on: Any = Exception,
    name: str | None = None,
    listeners: Iterable[Any] | None = None,
    event_manager: events.EventManager | None = None,
    store: Any = None,
) -> FailFast | Decorated[..., Any, FailFast]:
    """A fail-fast policy: ``@failfast(failure_threshold=3, recovery_time=30)``.

    ``on`` (an exception class, a tuple of them or a predicate) says which exceptions are
    failures; ``predicate(*args, **kwargs)`` (sync or async) rejects a call when truthy.
    With ``store=`` (and ``name=``) the latch is shared by every process.
    """
    policy = FailFast(
        failure_threshold=failure_threshold,
        predicate=predicate,
        recovery_time=recovery_time,
        on=on,
        name=name,
        listeners=listeners,
        event_manager=event_manager,
        store=store,
    )
    return policy if fn is None else policy(fn)
