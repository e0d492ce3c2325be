"""Rate limiting: an exact token bucket (GCRA), a sliding-window log, per-key limits.

``tokenbucket(max_executions, per_time_secs, bucket_size=None)`` admits ``max_executions`` calls
per ``per_time_secs`` seconds with bursts of up to ``bucket_size`` (default
``max_executions``): over any interval of length t it never admits more than
``rate * t + bucket_size``, with integer nanoseconds (no drift, no fractional tokens).
``slidingwindow(max_executions, per_time_secs)`` admits at most ``max_executions`` calls in any
window of ``per_time_secs`` seconds, exactly (a log of the last admissions).

A refused call raises :class:`RateLimitExceeded` (``retry_after_seconds``, ``retry_after_ms``)
when it is awaited, so a fallback or retry around it sees it as any failure. With
``max_wait=s`` a call that would be refused waits instead, when its turn comes within ``s``
seconds: it reserves the next free place at once (first come, first served) and sleeps until
then; a cancelled waiter gives its place back when nobody reserved after it. With
``key=callable`` each key (``key(*args, **kwargs)``) gets its own bucket, in a bounded C table
(``max_keys``) that only forgets keys whose bucket is full again.

An admitted call costs one check in C and runs the function's own coroutine. The token is
taken when the decorated function is called (when its coroutine is made), not when it is
awaited.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Iterable
from types import TracebackType
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Final,
    Protocol,
    Self,
    overload,
    runtime_checkable,
)

from failsafe import _core, _native, deadline, events
from failsafe import testing as _testing
from failsafe.ratelimit._options import DEFAULT_MAX_KEYS, MAX_NS, NS, LimitOptions
from failsafe.ratelimit.buckets import TokenBucket
from failsafe.ratelimit.exceptions import EmptyBucket, RateLimitExceeded
from failsafe.stats import (
    KeyedTokenBucketStats,
    RateLimitStats,
    SlidingWindowStats,
    TokenBucketStats,
)

if TYPE_CHECKING:
    from failsafe.stores._base import Store
    from failsafe.stores._ratelimit import SharedLimiter

__all__ = [
    "EmptyBucket",
    "KeyedTokenBucketLimiter",
    "KeyedTokenBucketStats",
    "RateLimitExceeded",
    "RateLimitListener",
    "RateLimitStats",
    "RateLimiter",
    "SlidingWindowLimiter",
    "SlidingWindowStats",
    "TokenBucket",
    "TokenBucketLimiter",
    "TokenBucketStats",
    "ratelimiter",
    "register_ratelimit_listener",
    "slidingwindow",
    "tokenbucket",
]


ADMITTED, REJECTED = _core.counter_indexes("ratelimit", "admitted", "rejected")
_NS: Final = NS
_MAX_NS: Final = MAX_NS
_I64_MAX: Final = 2**63 - 1


class RateLimitListener:
    """Rate-limit events. Methods may be sync or async; override the ones you need."""

    def on_rate_limited(self, limiter: Any, retry_after: float) -> Any:
        """A call was refused; the limit admits again in ``retry_after`` seconds."""

    def on_rate_limit_wait(self, limiter: Any, waited: float) -> Any:
        """A call waited ``waited`` seconds for its token (``max_wait``) and goes on."""


def register_ratelimit_listener(listener: Any) -> None:
    """Adds a listener to every rate limiter, existing and future."""
    events.register_listener("ratelimit", listener)


class _Limiter(_core.Component, _native.Limiter):
    """What every limiter adds in Python: validation, the decorator and ``async with`` forms,
    ``acquire()``, the waiting slow path and stats. The C base decides every call."""

    PATTERN: ClassVar[str] = "ratelimit"
    METRICS: ClassVar[tuple[str, ...]] = _native.METRICS["ratelimit"]

    max_executions: int
    per_time_secs: float
    max_wait: float

    def _setup(
        self,
        max_executions: object,
        per_time_secs: object,
        bucket_size: object,
        *,
        sliding: bool,
        max_wait: object,
        key: object,
        max_keys: object,
        name: str | None,
        listeners: Iterable[Any] | None,
        event_manager: Any,
    ) -> None:
        self._init_component(name, listeners, event_manager)
        self._apply(
            LimitOptions.check(
                max_executions,
                per_time_secs,
                bucket_size,
                sliding=sliding,
                max_wait=max_wait,
                key=key,
                max_keys=max_keys,
            )
        )

    def _apply(self, options: LimitOptions) -> None:
        self._configure(**options.configuration())
        self.max_executions = options.max_executions
        self.per_time_secs = options.per_time_secs
        self.bucket_size = options.bucket_size
        self.max_wait = options.max_wait

    @classmethod
    def _of(cls, options: LimitOptions) -> Self:
        """An anonymous limiter of checked options (a shared limiter's in-process fallback)."""
        limiter = cls.__new__(cls)
        limiter._init_component(None, None)
        limiter._apply(options)
        return limiter

    # -- decorator and block forms ---------------------------------------------------------

    async def acquire(self, key: Any = None) -> None:
        """Takes a token: at once, or after waiting for a reserved place (up to ``max_wait``);
        raises :class:`RateLimitExceeded` when refused. ``key`` only for a keyed limiter."""
        ticket = self._acquire(key)
        if ticket is not None:
            await self._sleep_until(ticket, key)

    # -- waiting slow path (called by the C base) ------------------------------------------

    async def _sleep_until(self, ticket: tuple[int, int, int], key: Any) -> None:
        due, a, b = ticket
        since = _native.now_ns()
        try:
            # Measured when the waiter runs: with instant waits, earlier waiters have already
            # moved the fake clock.
            delay = (due - since) / _NS
            if delay > 0:
                left = deadline.left()
                if left is not None and delay >= left:
                    # The place comes at or after the deadline: not worth waiting for.
                    raise deadline.DeadlineExceeded(
                        f"limiter {self._name!r}: the next place is {delay:.3g} s away,"
                        f" {left:.3g} s left before the deadline"
                    )
                await _testing.sleep(delay)
        except BaseException:
            # Cancelled (or closed) while waiting: the place goes back if it is the latest.
            self._give_back(a, b, key)
            raise
        self._count(ADMITTED)
        if events.is_listening(self):
            events.emit(self, "on_rate_limit_wait", ((_native.now_ns() - since) / _NS,))

    async def _waiting(
        self,
        due: int,
        a: int,
        b: int,
        key: Any,
        fn: Callable[..., Awaitable[Any]],
        /,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        await self._sleep_until((due, a, b), key)
        return await fn(*args, **kwargs)

    def retry_after(self, key: Any = None) -> float:
        """Seconds until a call would be admitted without waiting (0.0: now)."""
        return self._retry_after(key)

    def _pause_for(self, seconds: object, key: Any) -> bool:
        wait_ns = min(_MAX_NS, round(float(_core.check_number(seconds, "seconds")) * _NS))
        # Saturated: failsafe's time may already be far on (a FakeClock left it there).
        return bool(self._pause(min(_native.now_ns() + wait_ns, _I64_MAX), key))

    def reset(self) -> None:
        """Forgets every admission: a full bucket (or empty window), no keys."""
        self._reset()

    def _stat_values(self) -> dict[str, Any]:
        return {
            **super()._stat_values(),
            "max_executions": self.max_executions,
            "per_time_secs": self.per_time_secs,
        }

    def stats(self) -> RateLimitStats:
        return RateLimitStats(**self._stat_values())


if TYPE_CHECKING:  # the methods C calls by name
    _limiter_slow_paths: type[_native.LimiterSlowPaths] = _Limiter


class TokenBucketLimiter(_Limiter):
    """A token bucket shared by every call: ``max_executions`` per ``per_time_secs`` seconds,
    bursts of ``bucket_size`` (default ``max_executions``). Exact GCRA in C."""

    DECORATOR: ClassVar[str | None] = "tokenbucket"

    def __init__(
        self,
        max_executions: int,
        per_time_secs: float,
        bucket_size: int | None = None,
        *,
        max_wait: float = 0,
        name: str | None = None,
        listeners: Iterable[Any] | None = None,
        event_manager: Any = None,
    ) -> None:
        self._setup(
            max_executions,
            per_time_secs,
            bucket_size,
            sliding=False,
            max_wait=max_wait,
            key=None,
            max_keys=None,
            name=name,
            listeners=listeners,
            event_manager=event_manager,
        )

    def pause(self, seconds: float) -> None:
        """Admits nothing for ``seconds`` (a wait the dependency asked for, e.g. a 429's
        ``Retry-After``), then refills from empty at its rate. Waiting callers keep their
        places; a pause never shortens a wait already longer."""
        self._pause_for(seconds, None)

    @property
    def bucket(self) -> TokenBucket:
        """This limiter's bucket (failsafe-py's ``TokenBucket`` interface)."""
        return TokenBucket._of(self)

    def stats(self) -> TokenBucketStats:
        return TokenBucketStats(
            **self._stat_values(), bucket_size=self.bucket_size, tokens=self._tokens()
        )


class SlidingWindowLimiter(_Limiter):
    """At most ``max_executions`` calls in any window of ``per_time_secs`` seconds, exactly:
    a C log of the last ``max_executions`` admission times (8 bytes each)."""

    DECORATOR: ClassVar[str | None] = "slidingwindow"

    def __init__(
        self,
        max_executions: int,
        per_time_secs: float,
        *,
        max_wait: float = 0,
        name: str | None = None,
        listeners: Iterable[Any] | None = None,
        event_manager: Any = None,
    ) -> None:
        self._setup(
            max_executions,
            per_time_secs,
            None,
            sliding=True,
            max_wait=max_wait,
            key=None,
            max_keys=None,
            name=name,
            listeners=listeners,
            event_manager=event_manager,
        )

    def pause(self, seconds: float) -> None:
        """Admits nothing for ``seconds``; the whole limit is available again after."""
        self._pause_for(seconds, None)

    def stats(self) -> SlidingWindowStats:
        return SlidingWindowStats(**self._stat_values(), available=int(self._tokens()))


class KeyedTokenBucketLimiter(_Limiter, _native.KeyedLimiter):
    """One token bucket per key, ``key(*args, **kwargs)`` of each call, in a bounded C table.

    At most ``max_keys`` keys are held (32 bytes each in C, allocated up front, plus the
    key objects). A key whose bucket is full again is forgotten when its place is needed; a
    key still limited never is. When all ``max_keys`` keys are limited, calls with a new key are
    refused (RateLimitExceeded, retry_after = when the first held key refills): the bound on memory
    never weakens the limit of a key.
    """

    DECORATOR: ClassVar[str | None] = "tokenbucket"

    def __init__(
        self,
        max_executions: int,
        per_time_secs: float,
        bucket_size: int | None = None,
        *,
        key: Callable[..., Any],
        max_keys: int = DEFAULT_MAX_KEYS,
        max_wait: float = 0,
        name: str | None = None,
        listeners: Iterable[Any] | None = None,
        event_manager: Any = None,
    ) -> None:
        if key is None:
            raise TypeError("key must be a callable (*args, **kwargs) -> key, not None")
        self._setup(
            max_executions,
            per_time_secs,
            bucket_size,
            sliding=False,
            max_wait=max_wait,
            key=key,
            max_keys=max_keys,
            name=name,
            listeners=listeners,
            event_manager=event_manager,
        )

    def pause(self, key: Any, seconds: float) -> bool:
        """Admits no call of ``key`` for ``seconds`` (one 429 with ``Retry-After`` pauses
        that host for every caller), then refills its bucket from empty at the rate. A paused
        key is limited, so it is never forgotten before the pause ends. Returns False when
        every place holds a limited key (the table has no room: a new key is refused then
        anyway)."""
        return self._pause_for(seconds, key)

    def stats(self) -> KeyedTokenBucketStats:
        held, limited, max_keys, _ = self._key_stats()
        return KeyedTokenBucketStats(
            **self._stat_values(),
            bucket_size=self.bucket_size,
            held_keys=held,
            limited_keys=limited,
            max_keys=max_keys,
        )


RateLimiter = TokenBucketLimiter | SlidingWindowLimiter | KeyedTokenBucketLimiter


@overload
def tokenbucket(
    max_executions: int,
    per_time_secs: float,
    bucket_size: int | None = ...,
    *,
    max_wait: float = ...,
    key: None = ...,
    max_keys: int = ...,
    name: str | None = ...,
    listeners: Iterable[Any] | None = ...,
    event_manager: Any = ...,
    store: None = ...,
    prefetch: None = ...,
) -> TokenBucketLimiter: ...
@overload
def tokenbucket(
    max_executions: int,
    per_time_secs: float,
    bucket_size: int | None = ...,
    *,
    max_wait: float = ...,
    key: Callable[..., Any],
    max_keys: int = ...,
    name: str | None = ...,
    listeners: Iterable[Any] | None = ...,
    event_manager: Any = ...,
    store: None = ...,
    prefetch: None = ...,
) -> KeyedTokenBucketLimiter: ...
@overload
def tokenbucket(
    max_executions: int,
    per_time_secs: float,
    bucket_size: int | None = ...,
    *,
    max_wait: float = ...,
    key: Callable[..., Any] | None = ...,
    max_keys: int = ...,
    name: str | None = ...,
    listeners: Iterable[Any] | None = ...,
    event_manager: Any = ...,
    store: Store,
    prefetch: int | None = ...,
) -> SharedLimiter: ...
def tokenbucket(
    max_executions: int,
    per_time_secs: float,
    bucket_size: int | None = None,
    *,
    max_wait: float = 0,
    key: Callable[..., Any] | None = None,
    max_keys: int = DEFAULT_MAX_KEYS,
    name: str | None = None,
    listeners: Iterable[Any] | None = None,
    event_manager: Any = None,
    store: Any = None,
    prefetch: int | None = None,
) -> TokenBucketLimiter | KeyedTokenBucketLimiter | SharedLimiter:
    """A token-bucket rate limit, as a decorator and an ``async with`` block.

    ``max_wait`` (seconds, default 0): how long a call may wait for its turn instead of being
    refused. ``key``: a callable of the call's arguments giving the key that has its own
    bucket (``max_keys`` keys at most, see :class:`KeyedTokenBucketLimiter`). ``store``: a
    :mod:`failsafe.stores` store holding the bucket for every process (needs ``name=``; see
    :class:`failsafe.stores._ratelimit.SharedLimiter`); ``prefetch``: tokens one round trip
    to the store may take for this process.
    """
    if store is not None or prefetch is not None:
        return _shared(
            max_executions, per_time_secs, bucket_size, store=store, sliding=False,
            max_wait=max_wait, key=key, max_keys=max_keys, prefetch=prefetch, name=name,
            listeners=listeners, event_manager=event_manager,
        )  # fmt: skip
    if key is not None:
        return KeyedTokenBucketLimiter(
            max_executions,
            per_time_secs,
            bucket_size,
            key=key,
            max_keys=max_keys,
            max_wait=max_wait,
            name=name,
            listeners=listeners,
            event_manager=event_manager,
        )
    return TokenBucketLimiter(
        max_executions,
        per_time_secs,
        bucket_size,
        max_wait=max_wait,
        name=name,
        listeners=listeners,
        event_manager=event_manager,
    )


@overload
def slidingwindow(
    max_executions: int,
    per_time_secs: float,
    *,
    max_wait: float = ...,
    name: str | None = ...,
    listeners: Iterable[Any] | None = ...,
    event_manager: Any = ...,
    store: None = ...,
) -> SlidingWindowLimiter: ...
@overload
def slidingwindow(
    max_executions: int,
    per_time_secs: float,
    *,
    max_wait: float = ...,
    name: str | None = ...,
    listeners: Iterable[Any] | None = ...,
    event_manager: Any = ...,
    store: Store,
) -> SharedLimiter: ...
def slidingwindow(
    max_executions: int,
    per_time_secs: float,
    *,
    max_wait: float = 0,
    name: str | None = None,
    listeners: Iterable[Any] | None = None,
    event_manager: Any = None,
    store: Any = None,
) -> SlidingWindowLimiter | SharedLimiter:
    """At most ``max_executions`` calls in any window of ``per_time_secs`` seconds (exact),
    as a decorator and an ``async with`` block; ``max_wait`` and ``store`` as for
    :func:`tokenbucket`."""
    if store is not None:
        return _shared(
            max_executions, per_time_secs, None, store=store, sliding=True, max_wait=max_wait,
            key=None, max_keys=0, prefetch=None, name=name, listeners=listeners,
            event_manager=event_manager,
        )  # fmt: skip
    return SlidingWindowLimiter(
        max_executions,
        per_time_secs,
        max_wait=max_wait,
        name=name,
        listeners=listeners,
        event_manager=event_manager,
    )


def _shared(*args: Any, **kwargs: Any) -> SharedLimiter:
    from failsafe.stores._ratelimit import shared_limiter  # the store's own slow path

    return shared_limiter(*args, **kwargs)


@runtime_checkable
class _Acquirable(Protocol):
    def acquire(self) -> Awaitable[Any]: ...


class _AcquireFirst:
    """``ratelimiter(obj)`` for any object with ``async acquire()``: awaits it before each call
    or block."""

    __slots__ = ("_limiter",)

    def __init__(self, limiter: _Acquirable) -> None:
        self._limiter = limiter

    def __call__[**P, T](
        self, fn: Callable[P, Awaitable[T]]
    ) -> Callable[P, Coroutine[Any, Any, T]]:
        _core.check_async(fn, "ratelimiter")
        limiter = self._limiter

        async def limited(*args: P.args, **kwargs: P.kwargs) -> T:
            await limiter.acquire()
            return await fn(*args, **kwargs)

        import functools

        return functools.wraps(fn)(limited)

    async def __aenter__(self) -> None:
        await self._limiter.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


@overload
def ratelimiter[L: _Limiter](limiter: L) -> L: ...
@overload
def ratelimiter(limiter: _Acquirable) -> _AcquireFirst: ...
def ratelimiter(limiter: Any) -> Any:
    """A decorator and ``async with`` block around ``limiter``: a failsafe limiter itself
    (its C fast path), or any object with ``async acquire()`` awaited before each call."""
    if isinstance(limiter, _Limiter):
        return limiter
    if not isinstance(limiter, _Acquirable) or not callable(limiter.acquire):
        raise TypeError(f"limiter must have an async acquire() method, not {limiter!r}")
    return _AcquireFirst(limiter)
