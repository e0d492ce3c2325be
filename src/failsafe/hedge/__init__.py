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
import contextvars
import types
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Final, TypeGuard

from failsafe import _native, events
from failsafe import testing as _testing
from failsafe._core import Component, check_int, check_number
from failsafe.events import EventManager
from failsafe.hedge.exceptions import HedgeAllFailed, HedgeTimeout
from failsafe.retry import RetryBudget
from failsafe.timeout.exceptions import TimeoutError as _FsTimeoutError

__all__ = [
    "Hedge",
    "HedgeAllFailed",
    "HedgeListener",
    "HedgeTimeout",
    "Percentile",
    "hedge",
    "percentile",
    "register_hedge_listener",
]

_native._bind(hedge_timeout=HedgeTimeout)

# C counter indexes (hedge.c)
SUCCESS, FAILURE, ALL_FAILED, TIMEOUT, HEDGED = range(5)

# The window (seconds) of the budget that max_hedged_ratio builds
_RATIO_WINDOW = 10.0

# Outcomes of a race
_OPEN, _WON, _ALL_FAILED, _TIMED_OUT, _STOPPED, _RAISED = range(6)


def _ends_the_call(exc: BaseException | None) -> TypeGuard[BaseException]:
    """A BaseException that is neither a failure nor a cancellation (KeyboardInterrupt,
    SystemExit, an application's own): from any attempt, it is the call's answer."""
    return exc is not None and not isinstance(exc, (Exception, asyncio.CancelledError))


async def _await(aw: Awaitable[Any]) -> Any:
    return await aw


async def _announced(coro: Coroutine[Any, Any, Any], policy: Hedge, attempt: int) -> Any:
    # Reported from the attempt's own task, in (a copy of) the caller's context: listeners see
    # the caller's context variables (its current trace span) there.
    events.emit(policy, "on_hedge_attempt", (attempt,))
    return await coro


def _closer(aw: Any) -> Callable[[asyncio.Task[Any]], None]:
    """A done callback closing aw: when its task is cancelled before its first step, the
    awaitable (a guarded call) is never awaited, and closing it closes the coroutine inside
    (no "never awaited" warning). Closing a finished one does nothing."""

    def close(_task: asyncio.Task[Any]) -> None:
        aw.close()

    return close


class _Race:
    """The attempts of one hedged call after its first attempt needed help (the delay passed,
    or it failed), or of a call whose attempts all start at once.

    Attempts after the first run as tasks, reported through done callbacks. While the first
    attempt still runs inline in the caller's task (``inline``), a decision (a win elsewhere, the
    timeout) cancels the caller's task to stop it; the call, seeing the CancelledError come back
    in ``_settle``, takes that cancellation back (``uncancel``) unless somebody else cancelled
    too. Every outcome waits for all attempts to finish before the call answers, except when the
    call is closed (nothing may be awaited then: the attempts are cancelled, and their done
    callbacks collect their outcomes). A BaseException that is not a cancellation, from any
    attempt, ends the call with that exception, overriding any other outcome.
    """

    __slots__ = (
        "_args",
        "_c0",
        "_cancel_requested",
        "_context",
        "_drained",
        "_errors",
        "_fn",
        "_kwargs",
        "_launched",
        "_limit",
        "_loop",
        "_next",
        "_outcome",
        "_policy",
        "_running",
        "_starts",
        "_t0_ns",
        "_task",
        "_tasks",
        "_test_waits",
        "_timer",
        "_value",
        "_waiter",
        "inline",
    )

    def __init__(
        self,
        policy: Hedge,
        task: asyncio.Task[Any] | None,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        t0: float,
        c0: int,
        t0_ns: int = 0,
    ) -> None:
        self._policy = policy
        self._t0_ns = t0_ns  # the first attempt's start (now_ns), when the delay adapts
        # Start times (now_ns) of the later attempts, when the delay adapts.
        self._starts: dict[asyncio.Task[Any], int] | None = (
            {} if policy._percentile is not None else None
        )
        self._task = task
        self._fn = fn
        self._args = args
        self._kwargs = kwargs
        self._c0 = c0
        self._loop = asyncio.get_running_loop()
        get_context = getattr(task, "get_context", None)
        self._context = get_context() if get_context is not None else contextvars.copy_context()
        self._launched = 1  # the first attempt, running inline
        self._limit = policy.attempts  # lowered when the budget refuses an attempt
        self._running: set[asyncio.Task[Any]] = set()
        self._tasks: list[asyncio.Task[Any]] = []
        self._errors: list[BaseException] = []
        self._outcome = _OPEN
        self._value: Any = None
        self._cancel_requested = False
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._next: asyncio.TimerHandle | asyncio.Task[None] | None = None
        # Decided in the caller's context, where instant waits are set or not.
        self._test_waits = _testing.changes_waits()
        self._timer: asyncio.TimerHandle | None = None
        self.inline = True
        timeout = policy.timeout
        if timeout is not None:
            self._timer = self._loop.call_at(t0 + timeout, self._on_timeout)

    # -- called from C -------------------------------------------------------------------

    def _fire(self) -> None:
        """The delay passed and the inline attempt has not answered."""
        self._launch()

    async def _settle(self, result: Any, exc: BaseException | None) -> Any:
        """The inline attempt ended with result or exc: the call's answer, once every attempt
        is over."""
        self.inline = False
        try:
            if self._cancel_requested:
                # Our own cancellation stopped it: taken back, unless another one is pending.
                self._cancel_requested = False
                assert self._task is not None
                pending = self._task.uncancel() > self._c0
                if _ends_the_call(exc):
                    raise exc
                if pending:
                    if isinstance(exc, asyncio.CancelledError):
                        raise exc
                    raise asyncio.CancelledError
            elif exc is None:
                if self._starts is not None and self._t0_ns:
                    self._policy._record(_native.now_ns() - self._t0_ns)
                self._decide(_WON, result)
            elif isinstance(exc, Exception):
                self._failed(exc)
            else:
                raise exc  # cancelled by somebody else, or KeyboardInterrupt and the like
        except GeneratorExit:
            self._stop()
            raise
        except BaseException:
            self._stop()
            await self._drain()
            raise
        return await self._wait()

    def _abandon(self) -> None:
        """The call was closed before its end: nothing may keep running for it."""
        try:
            self.inline = False
            self._stop()
            if self._cancel_requested and self._task is not None and not self._task.done():
                self._cancel_requested = False
                self._task.uncancel()
        except AttributeError:
            pass  # cleared by the GC with its call (a dead cycle): nothing is left to stop

    # -- the race --------------------------------------------------------------------------

    async def _wait(self) -> Any:
        try:
            if self._outcome == _OPEN:
                self._waiter = self._loop.create_future()
                await self._waiter
        except GeneratorExit:
            self._stop()  # closed: awaiting here would ignore the GeneratorExit
            raise
        except BaseException:
            self._stop()
            await self._drain()
            raise
        await self._drain()
        return self._conclude()

    def _launch(self) -> None:
        """Starts the next attempt (every remaining one when delay is 0) and times the one
        after it."""
        if self._next is not None:
            self._next.cancel()
            self._next = None
        policy = self._policy
        budget = policy.budget
        while self._outcome == _OPEN and self._launched < self._limit:
            if self._launched and budget is not None and not budget.try_withdraw():
                self._limit = self._launched  # over the budget: no more attempts
                return
            self._launched += 1
            if self._launched > 1:
                policy._count(HEDGED)
            coro: Any = None
            aw: Any = None
            try:
                coro = self._fn(*self._args, **self._kwargs)
                if type(coro) is not types.CoroutineType:
                    aw, coro = coro, _await(coro)  # a guarded call, a future, any awaitable
                if self._launched > 1 and events.is_listening(policy):
                    coro = _announced(coro, policy, self._launched)
                task = self._loop.create_task(coro, context=self._context.copy())
            except BaseException as exc:
                for obj in (coro, aw):
                    if callable(getattr(obj, "close", None)):
                        obj.close()
                if isinstance(exc, Exception):
                    self._failed(exc)  # the next attempt starts at once
                else:
                    self._abort(exc)
                return
            if callable(getattr(aw, "close", None)):
                task.add_done_callback(_closer(aw))
            self._tasks.append(task)
            if self._starts is not None:
                self._starts[task] = _native.now_ns()
            self._running.add(task)  # until its done callback, even if it finished eagerly
            task.add_done_callback(self._on_done)
            delay = policy.delay
            if delay > 0:
                if self._outcome == _OPEN and self._launched < self._limit:
                    self._launch_later(delay)
                return

    def _launch_later(self, delay: float) -> None:
        if self._test_waits:
            # Waited like every failsafe wait, on the clock latencies are measured on.
            # Due from now, not from when the waiting task first runs.
            delay_ns = delay * 1e9
            if delay_ns >= 2**62:
                # Beyond the core's time range means never: an instant wait must not move a
                # FakeClock to the end of time for the rest of the process.
                return
            due = _native.now_ns() + int(delay_ns)
            self._next = self._loop.create_task(self._launch_at(due), context=self._context.copy())
        else:
            self._next = self._loop.call_later(delay, self._launch)

    async def _launch_at(self, due_ns: int) -> None:
        delay = (due_ns - _native.now_ns()) / 1e9
        await _testing.sleep(max(delay, 0.0))
        self._next = None
        self._launch()

    def _on_done(self, task: asyncio.Task[Any]) -> None:
        self._running.discard(task)
        drained = self._drained
        if not self._running and drained is not None and not drained.done():
            drained.set_result(None)
        if task.cancelled():
            if self._outcome == _OPEN:
                # Cancelled by somebody else: an attempt without an answer, not a failure.
                self._failed(asyncio.CancelledError(), report=False)
            return
        exc = task.exception()  # retrieved in every case: never "never retrieved"
        if _ends_the_call(exc):
            self._abort(exc)
            return
        if self._outcome != _OPEN:
            return
        if exc is None:
            if self._starts is not None:
                self._policy._record(_native.now_ns() - self._starts[task])
            self._decide(_WON, task.result())
        else:
            self._failed(exc)

    def _failed(self, exc: BaseException, *, report: bool = True) -> None:
        self._errors.append(exc)
        policy = self._policy
        if report:
            policy._count(FAILURE)
            if events.is_listening(policy):
                events.emit(policy, "on_hedge_failure", (exc,))
        if self._outcome != _OPEN:
            return
        if self._launched < self._limit:
            self._launch()
        if (
            self._outcome == _OPEN
            and self._launched >= self._limit
            and not self._running
            and not self.inline
        ):
            self._decide(_ALL_FAILED, None)

    def _abort(self, exc: BaseException) -> None:
        """An attempt raised exc, a BaseException that ends the call whatever was decided."""
        if self._outcome == _OPEN:
            self._decide(_RAISED, exc)
        elif self._outcome != _STOPPED and self._outcome != _RAISED:
            # Decided but not yet answered (the losers are being awaited): exc answers instead.
            self._outcome = _RAISED
            self._value = exc

    def _on_timeout(self) -> None:
        self._timer = None
        if self._outcome == _OPEN:
            self._decide(_TIMED_OUT, None)

    def _decide(self, outcome: int, value: Any) -> None:
        self._outcome = outcome
        self._value = value
        self._cancel_timers()
        for task in self._running:
            task.cancel()
        if self.inline:
            # The inline attempt runs in the caller's task: stop it there.
            assert self._task is not None
            self._cancel_requested = True
            self._task.cancel()
        elif self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _stop(self) -> None:
        if self._outcome == _OPEN:
            self._outcome = _STOPPED
        self._cancel_timers()
        for task in self._running:
            task.cancel()

    def _cancel_timers(self) -> None:
        if self._next is not None:
            self._next.cancel()
            self._next = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _drain(self) -> None:
        """Waits until every attempt has finished and been reported (the losers were
        cancelled): a task may be done with its done callback, which may change the outcome,
        still to run."""
        if self._running:
            self._drained = self._loop.create_future()
            await self._drained

    def _conclude(self) -> Any:
        if self._outcome == _RAISED:
            raise self._value
        policy = self._policy
        listening = events.is_listening(policy)
        if self._outcome == _WON:
            policy._count(SUCCESS)
            if listening:
                events.emit(policy, "on_hedge_success", (self._value,))
            return self._value
        if self._outcome == _TIMED_OUT:
            policy._count(TIMEOUT)
            if listening:
                events.emit(policy, "on_hedge_timeout")
            raise HedgeTimeout(f"hedge {policy.name!r} timed out after {policy.timeout}s")
        policy._count(ALL_FAILED)
        if listening:
            events.emit(policy, "on_hedge_all_failed")
        raise HedgeAllFailed(self._errors) from self._errors[-1]


class _BlockTimeout(_native.Timeout):
    """The deadline of ``async with hedge(timeout=...)``; its events are the hedge's."""

    __slots__ = ("_listeners",)

    PATTERN: ClassVar[str] = "hedge.block"  # no registry: reports nothing itself

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self._listeners: tuple[object, ...] = ()


@dataclass(frozen=True, slots=True)
class Percentile:
    """An adaptive hedge delay: see :func:`percentile`."""

    percentile: float
    fallback: float
    window: float
    min_samples: int

    def __str__(self) -> str:
        return f"p{self.percentile:g}"


def percentile(
    p: float, *, fallback: float, window: float = 60.0, min_samples: int = 20
) -> Percentile:
    """A hedge delay that follows the ``p``-th percentile (0 < p <= 100) of the latency of
    successful attempts over the last ``window`` seconds (kept in C: a log histogram, within
    12.5 %), and is ``fallback`` seconds until ``min_samples`` latencies are in the window:
    ``hedge(delay=percentile(95, fallback=0.05))`` hedges the slowest 5 % or so.
    """
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(f"p must be a number, not {type(p).__name__}")
    if not 0 < p <= 100:  # NaN fails too
        raise ValueError(f"p must be in (0, 100], got {p}")
    fb = float(check_number(fallback, "fallback", allow_zero=False))
    w = float(check_number(window, "window", allow_zero=False))
    if not 1e-6 <= w <= 1e9:
        raise ValueError(f"window must be between 1e-06 and 1e9 seconds, got {w}")
    n = check_int(min_samples, "min_samples")
    return Percentile(float(p), fb, w, n)


# Every attempt may run at once (delay 0): more copies of one call than this is a mistake.
_MAX_ATTEMPTS: Final = 1000


def _check_attempts(attempts: object) -> int:
    return int(check_int(attempts, "attempts", maximum=_MAX_ATTEMPTS))


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
    METRICS: ClassVar[tuple[str, ...]] = ("success", "failure", "all_failed", "timeout", "hedged")

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
        attempts = _check_attempts(attempts)
        self._percentile = delay if isinstance(delay, Percentile) else None
        seconds_delay = (
            delay.fallback if isinstance(delay, Percentile) else float(check_number(delay, "delay"))
        )
        checked = check_number(
            timeout, "timeout", allow_zero=False, allow_none=True, allow_inf=True
        )
        seconds = None if checked is None else float(checked)
        if max_hedged_ratio is not None:
            if budget is not None:
                raise TypeError("hedge() takes budget or max_hedged_ratio, not both")
            ratio = float(check_number(max_hedged_ratio, "max_hedged_ratio"))
            budget = RetryBudget(ratio, min_per_second=0.0, ttl=_RATIO_WINDOW)
        elif budget is not None and not isinstance(budget, _native.RetryBudget):
            raise TypeError(f"budget must be a failsafe.retry.RetryBudget, not {budget!r}")
        _native.Hedge.__init__(self, attempts, seconds_delay, seconds, budget)
        if self._percentile is not None:
            pct = self._percentile
            self._adapt(
                pct.percentile / 100, pct.fallback, round(pct.window * 1e9), pct.min_samples
            )
        self._init_component(name, listeners, event_manager)
        self._block = None if seconds is None else _BlockTimeout(seconds)

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
        if self._block is not None:
            await self._block.__aenter__()

    async def __aexit__(
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
