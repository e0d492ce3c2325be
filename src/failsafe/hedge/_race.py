"""The race of one hedged call's attempts once its first attempt needs help: separate from
the policy (hedge/__init__.py), which runs the first attempt inline and starts a race."""

from __future__ import annotations

import asyncio
import contextvars
import types
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeGuard

from failsafe import _native, deadline, events
from failsafe import testing as _testing
from failsafe._core import counter_indexes
from failsafe.hedge.exceptions import HedgeAllFailed, HedgeTimeout

if TYPE_CHECKING:
    from failsafe.hedge import Hedge

# C counter indexes (hedge.c)
# C counter indexes (hedge.c)
SUCCESS, FAILURE, ALL_FAILED, TIMEOUT, HEDGED = counter_indexes(
    "hedge", "success", "failure", "all_failed", "timeout", "hedged"
)

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
            if self._launched and deadline.left(self._context) == 0:
                self._limit = self._launched  # past the deadline: no more attempts
                return
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
