"""Hedge: cut tail latency by starting another attempt when the first one is slow.

``hedge(attempts=2, delay=0.05, timeout=None)`` decorates an async function. A call starts its
first attempt; whenever no attempt has succeeded ``delay`` seconds after the last start, or right
after an attempt fails, the next attempt starts, up to ``attempts`` in all. The first success
wins; the other attempts are cancelled *and awaited* before the call returns. ``timeout``
bounds the whole call (:class:`HedgeTimeout`, a builtin ``TimeoutError`` too); when every
attempt fails the call raises :class:`HedgeAllFailed`, carrying their errors in ``errors``.
Cancelling the caller cancels and awaits every attempt. ``delay=0`` starts every attempt at
once.

The first attempt runs inline in the caller's task under a deadline kept in the per-loop C heap
of the timeout pattern: a call whose first attempt answers within ``delay`` creates no task and
no loop timer. Only when the delay passes does the race below start the next attempts as tasks
(each in a copy of the caller's context), while the first one keeps running inline.

``async with hedge(timeout=...)`` bounds a block by ``timeout`` (raising ``HedgeTimeout``),
without hedging (a block cannot be run twice); with ``timeout=None`` it does nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar

from failsafe import _native, events
from failsafe._core import Component
from failsafe.events import EventManager
from failsafe.hedge._options import HedgeOptions, Percentile, percentile
from failsafe.hedge._race import TIMEOUT, _Race
from failsafe.hedge.exceptions import HedgeAllFailed, HedgeTimeout
from failsafe.retry import RetryBudget
from failsafe.stats import HedgeStats
from failsafe.timeout.exceptions import TimeoutError as _FsTimeoutError

__all__ = [
    "Hedge",
    "HedgeAllFailed",
    "HedgeListener",
    "HedgeStats",
    "HedgeTimeout",
    "Percentile",
    "hedge",
    "percentile",
    "register_hedge_listener",
]


class _BlockTimeout(_native.Timeout):
    """The deadline of ``async with hedge(timeout=...)``; its events are the hedge's."""

    __slots__ = ("_listeners",)

    PATTERN: ClassVar[str] = "hedge.block"  # no registry: reports nothing itself

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self._listeners: tuple[object, ...] = ()


class Hedge(Component, _native.Hedge):
    """``hedge(*, attempts=2, delay=0.0, timeout=None)``: a hedging policy.

    ``attempts`` counts every attempt, the first included; ``delay`` is how long an attempt may
    go without a success before the next one starts (0: all at once; ``percentile(95,
    fallback=0.05)``: adapts to the observed latency); ``timeout`` (seconds or
    None) bounds the whole call. ``@policy`` decorates an async function or method; ``async
    with policy:`` bounds a block by ``timeout`` only. One policy serves any number of
    concurrent calls.

    Extra load is capped with ``max_hedged_ratio`` (attempts after the first stay at or below
    that fraction of the calls of the last 10 seconds) or a shared ``budget`` (a
    :class:`failsafe.retry.RetryBudget`, which retry policies may draw from too): every call
    deposits, every later attempt withdraws, and an attempt the budget refuses is not started.

    Metrics: ``success`` (calls answered), ``failure`` (failed attempts), ``all_failed``,
    ``timeout`` (calls or blocks that ran out of time), ``hedged`` (attempts started after the
    first).
    """

    PATTERN: ClassVar[str] = "hedge"
    METRICS: ClassVar[tuple[str, ...]] = _native.METRICS["hedge"]

    def stats(self) -> HedgeStats:
        """A snapshot of this policy's counters."""
        return HedgeStats(**self._stat_values())

    def __init__(
        self,
        *,
        attempts: int = 2,
        delay: float | Percentile = 0.0,
        timeout: float | None = None,
        name: str | None = None,
        listeners: Iterable[object] | None = None,
        event_manager: EventManager | None = None,
        budget: RetryBudget | None = None,
        max_hedged_ratio: float | None = None,
    ) -> None:
        o = HedgeOptions.check(
            attempts=attempts,
            delay=delay,
            timeout=timeout,
            budget=budget,
            max_hedged_ratio=max_hedged_ratio,
        )
        self._percentile = o.percentile
        _native.Hedge.__init__(self, o.attempts, o.delay, o.timeout, o.budget)
        if o.percentile is not None:
            pct = o.percentile
            self._adapt(pct.percentile / 100, pct.fallback, pct.window_ns, pct.min_samples)
        self._init_component(name, listeners, event_manager)
        self._block = None if o.timeout is None else _BlockTimeout(o.timeout)

    def _race(
        self,
        task: asyncio.Task[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        t0: float,
        c0: int,
        t0_ns: int,
    ) -> _Race:
        return _Race(self, task, fn, args, kwargs, t0, c0, t0_ns)

    async def _call_slow(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """delay 0: every attempt starts at once, as a task. While failsafe.testing changes
        how waits go, every hedged call comes here: its attempts are tasks, and the delays
        between them are waited through failsafe.testing.sleep."""
        loop = asyncio.get_running_loop()
        race = _Race(self, asyncio.current_task(), fn, args, kwargs, loop.time(), 0)
        race.inline = False
        race._launched = 0
        race._launch()
        return await race._wait()

    async def __aenter__(self) -> None:
        # Timed (latency histograms) only while _latency is set: a slot read otherwise.
        t0 = None if self._latency is None else _native.now_ns()
        if self._block is not None:
            try:
                await self._block.__aenter__()
            except BaseException as exc:
                if t0 is not None:
                    self._block_refused(t0, exc)
                raise
        if t0 is not None:
            self._block_open(t0)

    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Awaitable[None]:
        # Untimed: the leaving coroutine itself, no layer around it.
        if self._latency is None:
            return self._leave(exc_type, exc, tb)
        return self._leave_timed(exc_type, exc, tb)

    async def _leave_timed(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._leave(exc_type, exc, tb)
        except BaseException as raised:  # timed by what the block's user sees
            self._block_exited(raised)
            raise
        self._block_exited(exc)

    async def _leave(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._block is None:
            return
        try:
            await self._block.__aexit__(exc_type, exc, tb)
        except _FsTimeoutError as expired:
            self._count(TIMEOUT)
            if events.is_listening(self):
                events.emit(self, "on_hedge_timeout")
            raise HedgeTimeout(
                f"hedge {self.name!r} block timed out after {self.timeout}s"
            ) from expired.__cause__

    percentile = staticmethod(percentile)

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in zip(self.METRICS, self._counters(), strict=False))
        delay = f"{self.delay!r}"
        if self._percentile is not None:
            delay = f"{self._percentile}({self.delay:.6g}s)"
        return (
            f"<hedge {self._name!r} attempts={self.attempts} delay={delay}"
            f" timeout={self.timeout!r} {counts}>"
        )


if TYPE_CHECKING:  # the methods C calls by name
    _slow_call: type[_native.SlowCall] = Hedge
    _hedge_slow_paths: type[_native.HedgeSlowPaths] = Hedge


hedge = Hedge


class HedgeListener:
    """Base class of hedge listeners: override the events you want (sync or async)."""

    def on_hedge_success(self, hedge: Hedge, result: Any) -> None:
        """A hedged call answered with result."""

    def on_hedge_failure(self, hedge: Hedge, exception: BaseException) -> None:
        """One attempt of a hedged call failed with exception."""

    def on_hedge_all_failed(self, hedge: Hedge) -> None:
        """Every attempt of a hedged call failed (HedgeAllFailed is raised)."""

    def on_hedge_timeout(self, hedge: Hedge) -> None:
        """A hedged call (or block) ran out of its timeout (HedgeTimeout is raised)."""

    def on_hedge_attempt(self, hedge: Hedge, attempt: int) -> None:
        """Attempt number ``attempt`` (2 or more) of a hedged call started, in its own task."""


def register_hedge_listener(listener: object) -> None:
    """Adds a listener (or listener factory) of every hedge, existing or future."""
    events.register_listener("hedge", listener)
