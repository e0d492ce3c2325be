"""Fallback: answer with a default (or an alternative call) when the guarded call fails.

``handler`` is a value, or a sync or async callable ``(result_or_exc, *args, **kwargs)``.
A handler that raises propagates; it is never handled again.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from failsafe import _core, _native, events
from failsafe.stats import FallbackStats

__all__ = [
    "Fallback",
    "FallbackListener",
    "FallbackStats",
    "fallback",
    "register_fallback_listener",
]

INVOKED = 0
_ANSWER_NONE, _ANSWER_VALUE, _ANSWER_CALL = 0, 1, 2


class FallbackListener:
    """Fallback events. Methods may be sync or async."""

    def on_fallback(self, fallback: Fallback, result_or_exc: Any, *args: Any) -> Any:
        """The handler is about to answer for a failed call (args are the call's positional
        arguments)."""


def register_fallback_listener(listener: Any) -> None:
    """Adds a listener to every fallback component, existing and future."""
    events.register_listener("fallback", listener)


# failsafe-py exported the fallback registrar under this misleading name: importable for old
# code, kept out of __all__ and the docs.
register_timeout_listener = register_fallback_listener


class Fallback(_core.Component, _native.Outcome):
    """A fallback policy; decorate an async function with it."""

    PATTERN: ClassVar[str] = "fallback"
    METRICS: ClassVar[tuple[str, ...]] = ("invoked",)

    def stats(self) -> FallbackStats:
        """A snapshot of this policy's counters."""
        return FallbackStats(**self._stat_values())

    def __new__(cls, *args: Any, **kwargs: Any) -> Fallback:
        return super().__new__(cls, _core.PATTERNS["fallback"])

    def __init__(
        self,
        handler: Any,
        *,
        on: Any = Exception,
        if_: Callable[..., Any] | None = None,
        name: str | None = None,
        listeners: Iterable[Any] | None = None,
        event_manager: Any = None,
    ) -> None:
        self._init_component(name, listeners, event_manager)
        types = None
        if on is not None:
            types = _core.check_exceptions(on)
        if if_ is not None and not callable(if_):
            raise TypeError(f"if_ must be a predicate (sync or async), not {if_!r}")
        if on is None and if_ is None:
            raise ValueError("fallback needs on= or if_= (both are None: it would never act)")
        self._handler = handler
        self._call_handler = callable(handler)
        self._if = if_
        # Without listeners, a value or a sync handler answers in C (no Python frame); an
        # async handler, or any handler while somebody listens, takes the slow path below.
        kind = _ANSWER_NONE
        if not callable(handler):
            kind = _ANSWER_VALUE
        elif not _core.is_async_callable(handler):
            kind = _ANSWER_CALL
        self._configure(
            on=types,
            on_pred=on if on is not None and types is None else None,
            handoff_results=if_ is not None,
            answer=handler,
            answer_kind=kind,
            answer_counter=INVOKED,
        )

    async def _answer(self, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self._count(INVOKED)
        events.emit(self, "on_fallback", (value, *args))
        if not self._call_handler:
            return self._handler
        out = self._handler(value, *args, **kwargs)
        if inspect.isawaitable(out):
            out = await out
        return out

    async def _on_error(
        self,
        exc: BaseException,
        fn: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        t0: int,
        failures: int,
    ) -> Any:
        try:
            return await self._answer(exc, args, kwargs)
        except BaseException as e:
            # As an `except` block would: a failing handler's error shows what it handled.
            if e is not exc and e.__context__ is None:
                e.__context__ = exc
            raise

    async def _on_result(
        self,
        result: Any,
        fn: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        t0: int,
        failures: int,
    ) -> Any:
        assert self._if is not None
        verdict = self._if(result, *args, **kwargs)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        if verdict:
            return await self._answer(result, args, kwargs)
        return result


def fallback(
    handler: Any,
    *,
    on: Any = Exception,
    if_: Callable[..., Any] | None = None,
    name: str | None = None,
    listeners: Iterable[Any] | None = None,
    event_manager: Any = None,
) -> Fallback:
    """A fallback policy: ``@fallback(default)`` or ``@fallback(handler, on=ConnectionError)``.

    ``on`` (an exception class, tuple or sync predicate; None to ignore exceptions) selects the
    failures handled; ``if_`` (sync or async ``(result, *args, **kwargs)``) selects results to
    replace. Cancellation is never handled.
    """
    return Fallback(
        handler, on=on, if_=if_, name=name, listeners=listeners, event_manager=event_manager
    )
