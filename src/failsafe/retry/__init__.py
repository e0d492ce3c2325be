"""Retry: call again when an attempt fails.

``@retry(...)`` guards an async function; ``async for attempt in retry(...): with attempt:``
guards a block. The first attempt runs through the C guard; a failure hands over to the
Python slow path below, which waits (``failsafe.testing.sleep``) and calls again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Final, overload

from failsafe import _core, _native, deadline, events, signals
from failsafe import testing as _testing
from failsafe._types import Decorated
from failsafe.ratelimit.exceptions import EmptyBucket
from failsafe.retry import backoffs, jitters
from failsafe.retry._options import BackoffT, BudgetOptions, RetryOptions
from failsafe.retry.exceptions import _NO_RESULT, AttemptsExceeded
from failsafe.stats import RetryStats

__all__ = [
    "AttemptsExceeded",
    "Retry",
    "RetryBudget",
    "RetryCounter",
    "RetryListener",
    "RetryStats",
    "backoffs",
    "bucket_retry",
    "jitters",
    "register_retry_listener",
    "retry",
]

ATTEMPT, SUCCESS, GIVEUP = _core.counter_indexes("retry", "attempt", "success", "giveup")
_YIELD_EVERY: Final = _native.YIELD_EVERY  # zero-delay retries between loop turns


def _is_zero_backoff(backoff: object) -> bool:
    """Whether every delay of the schedule is 0 (so re-attempts may run at once, in C)."""
    if isinstance(backoff, bool):
        return False
    if isinstance(backoff, (int, float)):
        return backoff == 0
    if isinstance(backoff, (list, tuple)):
        return bool(backoff) and all(
            isinstance(d, (int, float)) and not isinstance(d, bool) and d == 0 for d in backoff
        )
    if isinstance(backoff, backoffs.Backoff):
        return backoff._is_zero()
    return False


class RetryCounter:
    """Where a call stands: ``current_attempt`` failures so far (0 on a first-try success)."""

    __slots__ = ("current_attempt", "max_attempts")

    def __init__(self, current_attempt: int, max_attempts: int | None) -> None:
        self.current_attempt = current_attempt
        self.max_attempts = max_attempts

    def __repr__(self) -> str:
        return (
            f"RetryCounter(current_attempt={self.current_attempt},"
            f" max_attempts={self.max_attempts})"
        )


class RetryListener:
    """Retry events. Methods may be sync or async; override the ones you need."""

    def on_retry(
        self, retry: Retry, exception: BaseException | None, counter: RetryCounter, delay: float
    ) -> Any:
        """An attempt failed and another follows after ``delay`` seconds."""

    def on_attempts_exceeded(self, retry: Retry) -> Any:
        """The call gave up."""

    def on_success(self, retry: Retry, counter: RetryCounter) -> Any:
        """An attempt succeeded."""


def register_retry_listener(listener: Any) -> None:
    """Adds a listener to every retry component, existing and future."""
    events.register_listener("retry", listener)


class RetryBudget(_native.RetryBudget):
    """A retry budget shared by policies: retries stay below ``ratio`` of calls, plus
    ``min_per_second`` retries always allowed, measured over the last ``ttl`` seconds."""

    _options: BudgetOptions

    def __new__(
        cls, ratio: float = 0.2, *, min_per_second: float = 10.0, ttl: float = 10.0
    ) -> RetryBudget:
        o = BudgetOptions.check(ratio, min_per_second=min_per_second, ttl=ttl)
        self = super().__new__(cls, o.ratio, o.min_per_second, o.ttl)
        self._options = o
        return self

    def __repr__(self) -> str:
        o = self._options
        return (
            f"RetryBudget(ratio={o.ratio}, min_per_second={o.min_per_second}, ttl={o.ttl},"
            f" available={self.available():.1f})"
        )


class Retry(_core.Component, _native.Retry):
    """A retry policy. Decorate with it, or iterate it for the block form."""

    PATTERN: ClassVar[str] = "retry"
    METRICS: ClassVar[tuple[str, ...]] = _native.METRICS["retry"]

    def __new__(cls, *args: Any, **kwargs: Any) -> Retry:
        return super().__new__(cls)

    def __init__(
        self,
        *,
        on: Any = Exception,
        attempts: int | None = 3,
        backoff: BackoffT = 0.5,
        if_result: Callable[[Any], bool] | None = None,
        max_duration: float | None = None,
        budget: RetryBudget | None = None,
        name: str | None = None,
        listeners: Iterable[Any] | None = None,
        event_manager: Any = None,
        retry_after: bool | signals.RetryAfterFn = True,
        max_retry_after: float | None = None,
        _bucket: tuple[object, object] | None = None,  # bucket_retry's (per_time_secs, size)
    ) -> None:
        self._init_component(name, listeners, event_manager)
        self._apply(
            RetryOptions.check(
                on=on,
                attempts=attempts,
                backoff=backoff,
                if_result=if_result,
                max_duration=max_duration,
                budget=budget,
                retry_after=retry_after,
                max_retry_after=max_retry_after,
                bucket=_bucket,
            )
        )

    def _apply(self, o: RetryOptions) -> None:
        # Read by the slow paths as attributes: one lookup each.
        self._on_types = o.on
        self._on_pred = o.on_pred
        self._attempts = o.attempts
        self._new_schedule = o.new_schedule
        self._if_result = o.if_result
        self._max_duration_ns = o.max_duration_ns
        self._budget = o.budget
        self._bucket = o.bucket
        self._retry_after = o.retry_after
        self._max_retry_after = o.max_retry_after
        # Retries with no wait and nothing to consult (budget, bucket, deadline, a user's
        # retry_after) run in C; C hands an exception that may carry a delay to Python.
        immediate = None
        if (
            _is_zero_backoff(o.backoff)
            and o.budget is None
            and o.bucket is None
            and o.max_duration_ns is None
            and o.retry_after in (None, signals.retry_after_of)
        ):
            immediate = -1 if o.attempts is None else o.attempts
        self._configure(
            on=o.on,
            on_pred=o.on_pred,
            budget=o.budget,
            handoff_results=o.if_result is not None,
            needs_t0=o.max_duration_ns is not None,
            immediate=immediate,
            signal_check=None if o.retry_after is None else signals._carries_signal,
        )

    # -- decorator -------------------------------------------------------------------------

    # -- slow paths, called by the C guard -------------------------------------------------

    def _first_success(self, failures: int) -> None:
        events.emit(self, "on_success", (RetryCounter(failures, self._attempts),))

    def _on_error(
        self,
        exc: BaseException,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        t0: int,
        failures: int,
    ) -> Coroutine[Any, Any, Any]:
        # Returns the loop's coroutine itself: the C guard drives it, no extra frame.
        return self._retry_loop(fn, args, kwargs, t0, exc, _NO_RESULT, failures)

    async def _on_result(
        self,
        result: Any,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        t0: int,
        failures: int,
    ) -> Any:
        if not self._rejects(result):
            self._succeeded(failures)
            return result
        return await self._retry_loop(fn, args, kwargs, t0, None, result, failures + 1)

    def _rejects(self, result: Any) -> bool:
        return self._if_result is not None and bool(self._if_result(result))

    def _matches(self, exc: BaseException) -> bool:
        if not isinstance(exc, Exception):
            return False
        if self._on_types is not None:
            return isinstance(exc, self._on_types)
        return bool(self._on_pred(exc)) if self._on_pred is not None else False

    def _succeeded(self, failures: int) -> None:
        self._count(SUCCESS)
        if events.is_listening(self):
            events.emit(self, "on_success", (RetryCounter(failures, self._attempts),))

    def _next_delay(
        self,
        failures: int,
        schedule: Iterator[float],
        t0: int,
        last_ns: int,
        exc: BaseException | None,
        result: Any,
    ) -> float:
        """After ``failures`` failed attempts: the wait before the next one (counted and
        reported), or raises the give-up from ``exc``."""
        reason, retry_after, asked = "", 0.0, 0.0
        delay = None
        if self._attempts is None or failures <= self._attempts:
            delay = next(schedule, None)  # None: a finite user iterable ran out
        if delay is not None and exc is not None and self._retry_after is not None:
            # The server's wait, when it asks for one longer than the backoff.
            asked = signals.read_delay(self._retry_after, exc, self._max_retry_after)
            delay = max(delay, asked)
        if delay is None:
            reason = "attempts"
        elif (left := deadline.left()) is not None and delay >= left:
            # The next attempt would start at or after the deadline: give up now.
            raise self._past_deadline(failures, exc, delay, asked, left)
        elif self._max_duration_ns is not None and (
            # Never start an attempt that cannot finish: assume it lasts as long as the last one.
            # In float: a schedule's delay may be any size, up to inf.
            _native.now_ns() + delay * 1e9 + last_ns - t0 > self._max_duration_ns
        ):
            # Waiting what the server asked would outlast max_duration: give up now.
            reason = "retry_after" if asked and asked >= delay else "max_duration"
            retry_after = asked
        elif self._budget is not None and not self._budget.try_withdraw():
            reason = "budget"
        elif self._bucket is not None and (retry_after := self._bucket.try_take()):
            reason = "bucket"
        if reason:
            raise self._give_up(failures, reason, exc, result, retry_after) from exc
        assert delay is not None
        self._count(ATTEMPT)
        if events.is_listening(self):
            events.emit(self, "on_retry", (exc, RetryCounter(failures, self._attempts), delay))
        return delay

    def _past_deadline(
        self, failures: int, exc: BaseException | None, delay: float, asked: float, left: float
    ) -> BaseException:
        self._count(GIVEUP)
        if events.is_listening(self):
            events.emit(self, "on_attempts_exceeded", ())
        if isinstance(exc, deadline.DeadlineExceeded):
            return exc  # the deadline already fired inside the attempt: one error, not two
        why = f"the server asked to wait {asked:g} s" if asked and asked >= delay else ""
        wait = why or (f"the next would start in {delay:g} s" if delay else "no time for one more")
        err = deadline.DeadlineExceeded(
            f"retry {self._name!r} gave up after {failures} attempt(s): {left:.3g} s left"
            f" before the deadline, {wait}"
        )
        err.__cause__ = exc
        return err

    def _give_up(
        self,
        failures: int,
        reason: str,
        exc: BaseException | None,
        result: Any,
        retry_after: float = 0.0,
    ) -> Exception:
        self._count(GIVEUP)
        if events.is_listening(self):
            events.emit(self, "on_attempts_exceeded", ())
        if reason == "bucket":  # bucket_retry: failsafe-py's EmptyBucket, from the last error
            return EmptyBucket(retry_after_seconds=retry_after)
        return AttemptsExceeded(
            failures, exc, reason=reason, last_result=result, retry_after=retry_after or None
        )

    async def _retry_loop(
        self,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        t0: int,
        exc: BaseException | None,
        result: Any,
        failures: int = 1,
    ) -> Any:
        """Retries after the failure of attempt number ``failures`` (earlier ones may have been
        retried at once in C, which counted them)."""
        # Retries made at once in C (failures > 1) used a schedule of zeros: none to skip.
        schedule = self._new_schedule()
        # Attempt durations matter only to max_duration (t0 is measured only for it).
        timed = self._max_duration_ns is not None
        last_ns = _native.now_ns() - t0 if timed else 0
        while True:
            delay = self._next_delay(failures, schedule, t0, last_ns, exc, result)
            if delay > 0 or failures % _YIELD_EVERY == 0:
                # A zero delay costs no loop turn, except now and then, so that a runaway
                # retry of a function that never suspends stays cancellable.
                await _testing.sleep(delay)
            start = _native.now_ns() if timed else 0
            try:
                result = await fn(*args, **kwargs)
            except Exception as e:
                if not self._matches(e):
                    raise
                exc, result = e, _NO_RESULT
            else:
                if not self._rejects(result):
                    self._succeeded(failures)
                    return result
                exc = None
            if timed:
                last_ns = _native.now_ns() - start
            failures += 1

    # -- block form --------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Attempt]:
        return _Attempts(self)

    if not TYPE_CHECKING:  # at run time only: to type checkers a retry has no `async with`

        def __aenter__(self):
            raise TypeError(
                "a retry has no async with form (a block cannot be run again by a context"
                " manager): use `async for attempt in retry(...): with attempt: ...`"
            )

        def __aexit__(self, exc_type, exc, tb):  # pragma: no cover - __aenter__ raised
            return None

    def _holds_state(self) -> bool:
        """For keyed registries: bucket_retry's bucket lacks tokens taken by recent retries (a
        shared ``budget`` lives outside the policy and is not forgotten with it)."""
        return self._bucket is not None and bool(self._bucket._holds_state())

    def stats(self) -> RetryStats:
        return RetryStats(**self._stat_values(), attempts=self._attempts)


if TYPE_CHECKING:  # the methods C calls by name
    _slow_paths: type[_native.RetrySlowPaths] = Retry


class Attempt:
    """One attempt of the block form. ``with attempt:`` suppresses an exception the policy
    retries on (the loop then waits and yields the next attempt) and lets any other through."""

    __slots__ = ("_exc", "_ok", "_policy", "number")

    def __init__(self, number: int, policy: Retry) -> None:
        self.number = number
        self._policy = policy
        self._ok = False
        self._exc: BaseException | None = None

    def __enter__(self) -> Attempt:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if e is None:
            # Counted here, not at the next __anext__: `return` inside `with attempt:` ends
            # the loop without one.
            if not self._ok:
                self._ok = True
                self._policy._succeeded(self.number - 1)
            return False
        if not self._policy._matches(e):
            return False
        self._exc = e
        return True


class _Attempts(AsyncIterator[Attempt]):
    __slots__ = ("_current", "_failures", "_policy", "_schedule", "_start", "_t0")

    def __init__(self, policy: Retry) -> None:
        self._policy = policy
        self._schedule = policy._new_schedule()
        self._failures = 0
        self._current: Attempt | None = None
        self._t0 = _native.now_ns()
        self._start = self._t0
        if policy._budget is not None:
            policy._budget.deposit()

    def __aiter__(self) -> _Attempts:
        return self

    async def __anext__(self) -> Attempt:
        p = self._policy
        cur = self._current
        if cur is not None:
            if cur._exc is None:  # a success was counted when its block exited
                raise StopAsyncIteration
            self._failures += 1
            last_ns = _native.now_ns() - self._start
            delay = p._next_delay(
                self._failures, self._schedule, self._t0, last_ns, cur._exc, _NO_RESULT
            )
            await _testing.sleep(delay)
        self._start = _native.now_ns()
        self._current = Attempt(self._failures + 1, p)
        return self._current


@overload
def retry[**P, T](fn: Callable[P, Awaitable[T]], /) -> Decorated[P, T, Retry]: ...
@overload
def retry(
    fn: None = None,
    /,
    *,
    on: Any = ...,
    attempts: int | None = ...,
    backoff: BackoffT = ...,
    if_result: Callable[[Any], bool] | None = ...,
    max_duration: float | None = ...,
    budget: RetryBudget | None = ...,
    name: str | None = ...,
    listeners: Iterable[Any] | None = ...,
    event_manager: Any = ...,
    retry_after: bool | signals.RetryAfterFn = ...,
    max_retry_after: float | None = ...,
) -> Retry: ...
def retry(
    fn: Callable[..., Awaitable[Any]] | None = None,
    /,
    *,
    on: Any = Exception,
    attempts: int | None = 3,
    backoff: BackoffT = 0.5,
    if_result: Callable[[Any], bool] | None = None,
    max_duration: float | None = None,
    budget: RetryBudget | None = None,
    name: str | None = None,
    listeners: Iterable[Any] | None = None,
    event_manager: Any = None,
    retry_after: bool | signals.RetryAfterFn = True,
    max_retry_after: float | None = None,
) -> Retry | Decorated[..., Any, Retry]:
    """A retry policy: ``@retry(attempts=3, backoff=expo(...))`` (bare ``@retry``: defaults).

    ``attempts`` counts retries (calls = attempts + 1; None retries until success), ``on`` is
    an exception class, a tuple of them or a predicate; ``if_result`` retries on a result;
    ``max_duration`` (seconds) bounds the whole call; ``budget`` shares a RetryBudget.
    ``retry_after`` (default True) waits at least the delay a failure asks for (see
    :mod:`failsafe.signals`; a callable exc -> seconds | None reads it instead, False ignores
    it), at most ``max_retry_after`` seconds; a wait that would outlast ``max_duration`` gives
    up at once (``AttemptsExceeded.reason == "retry_after"``).
    """
    policy = Retry(
        on=on,
        attempts=attempts,
        backoff=backoff,
        if_result=if_result,
        max_duration=max_duration,
        budget=budget,
        name=name,
        listeners=listeners,
        event_manager=event_manager,
        retry_after=retry_after,
        max_retry_after=max_retry_after,
    )
    return policy if fn is None else policy(fn)


def bucket_retry(
    *,
    on: Any = Exception,
    attempts: int = 3,
    backoff: BackoffT = 0.5,
    name: str | None = None,
    per_time_secs: float = 1,
    bucket_size: int = 3,
    listeners: Iterable[Any] | None = None,
    event_manager: Any = None,
) -> Retry:
    """A retry whose re-attempts also draw tokens from a bucket refilling ``attempts`` tokens
    per ``per_time_secs`` (burst ``bucket_size``), shared by all calls of the policy. With no
    token left the call ends with ``EmptyBucket`` (from the last error) instead of retrying."""
    return Retry(
        on=on,
        attempts=attempts,
        backoff=backoff,
        name=name,
        listeners=listeners,
        event_manager=event_manager,
        _bucket=(per_time_secs, bucket_size),
    )
