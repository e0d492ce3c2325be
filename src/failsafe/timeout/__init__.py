"""Timeout: bound how long a coroutine may run, with ``asyncio.timeout``'s semantics.

``timeout(seconds)`` gives a policy object usable as a decorator and as ``async with``; one
object may be shared by any number of concurrent tasks. At the deadline the task is cancelled,
and leaving the guarded code turns that cancellation into :class:`TimeoutError` (a subclass of
the builtin ``TimeoutError``) whose ``__cause__`` is the ``CancelledError``, exactly as
``asyncio.timeout`` does. A ``TimeoutError`` raised by the code itself passes through untouched,
and a cancellation requested by anybody else always wins. Deadlines live in a per-event-loop C
heap: no task and no loop timer are created per call.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import ClassVar, Final

from failsafe import _native, events
from failsafe._core import COMPONENT_SLOTS, Component
from failsafe._native import TimeoutScope
from failsafe.events import EventManager
from failsafe.stats import TimeoutStats
from failsafe.timeout._options import DEFAULT, check_seconds
from failsafe.timeout.exceptions import MaxDurationExceeded, TimeoutError

__all__ = [
    "MaxDurationExceeded",
    "Timeout",
    "TimeoutError",
    "TimeoutListener",
    "TimeoutScope",
    "TimeoutStats",
    "register_timeout_listener",
    "timeout",
]


class _Missing(enum.Enum):
    MISSING = enum.auto()


_MISSING: Final = _Missing.MISSING


class Timeout(Component, _native.Timeout):
    """``timeout(seconds)``: a timeout policy (``None``: disabled; ``0``: expires at the first
    suspension; ``math.inf``: never; ``timeout_secs=`` is failsafe-py 0.0.1's name of
    ``seconds``).

    ``@policy`` decorates an async function, ``async with policy:`` (or ``async with policy as
    scope:``) bounds a block; the scope has ``asyncio.Timeout``'s ``when()``, ``reschedule()``
    and ``expired()``. Per-call state never lives on the policy, so one object serves concurrent
    tasks, nested blocks and many functions at once.

    Metric: ``fired``, once per TimeoutError raised.
    """

    __slots__ = COMPONENT_SLOTS  # no __dict__: cheap to build per `async with timeout(...)`

    PATTERN: ClassVar[str] = "timeout"
    METRICS: ClassVar[tuple[str, ...]] = _native.METRICS["timeout"]

    def stats(self) -> TimeoutStats:
        """A snapshot of this policy's counters."""
        return TimeoutStats(**self._stat_values())

    def __init__(
        self,
        seconds: float | None = DEFAULT,
        *,
        timeout_secs: float | _Missing | None = _MISSING,
        name: str | None = None,
        listeners: Iterable[object] | None = None,
        event_manager: EventManager | None = None,
    ) -> None:
        if timeout_secs is not _MISSING:
            if seconds is not None:
                raise TypeError("timeout() takes seconds or timeout_secs, not both")
            seconds = check_seconds(timeout_secs, "timeout_secs")
        else:
            seconds = check_seconds(seconds, "seconds")
        _native.Timeout.__init__(self, seconds)
        self._init_component(name, listeners, event_manager)

    def __repr__(self) -> str:
        return f"<timeout {self._name!r} seconds={self.seconds!r} fired={self._counters()[0]}>"


# The factory is the class itself: `async with timeout(0.3):` builds a policy per use, so
# it must cost no extra call.
timeout = Timeout


class TimeoutListener:
    """Base class of timeout listeners: override the events you want (sync or async)."""

    def on_timeout(self, timeout: Timeout) -> None:
        """A TimeoutError was raised by ``timeout``."""


def register_timeout_listener(listener: object) -> None:
    """Adds a listener (or listener factory) of every timeout, existing or future."""
    events.register_listener("timeout", listener)
