"""Cache: reuse the results of an async function, with an LRU + TTL index in C.

``@cache(maxsize=..., ttl=...)`` guards one async function. A call whose key is stored
returns at once without calling the function (no coroutine is created). A miss calls it once:
concurrent calls with the same key share that one call (single-flight) and its outcome,
value or exception. Exceptions are never stored. With ``stale_if_error=seconds``, an entry
past its ``ttl`` stays that much longer as a fallback: the next call refreshes it, and if that
call fails with an ``Exception`` the old value answers (and stays for the next try).
``invalidate(*args, **kwargs)`` and ``clear()`` forget entries; a call in flight when its key
is invalidated still answers its callers but does not store its result.

Keys: ``key_func(*args, **kwargs)`` when given, else the call's arguments, compared as
failsafe-py's ``(args, frozenset(kwargs.items()))`` would be: ``f(1)`` and ``f(x=1)`` are
different keys, as are ``f(1)`` and ``f((1,))``; keyword order does not matter; equal values
are one key (``f(1)``, ``f(1.0)`` and ``f(True)`` share an entry, as in ``functools``' caches).
Listeners receive the key in that form. Every argument must be hashable, else the call raises
``TypeError`` naming the argument.

Methods: the key includes ``self``, so an entry keeps its instance alive until it is evicted,
expires or is invalidated (``Class.method.invalidate(instance, ...)``). Bound ``maxsize`` or
``ttl`` when instances come and go.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Final, Self, cast, overload

from failsafe import _core, _native, events
from failsafe._types import CachedFunction
from failsafe.cache._options import CacheOptions
from failsafe.cache.exceptions import CacheMiss, CacheUnavailable
from failsafe.stats import CacheStats

__all__ = [
    "Cache",
    "CacheListener",
    "CacheMiss",
    "CacheStats",
    "CacheUnavailable",
    "cache",
    "register_cache_listener",
]

HIT, MISS, SET, EVICT, EXPIRED, SHARED, STALE = _core.counter_indexes(
    "cache", "hit", "miss", "set", "evict", "expired", "shared", "stale"
)
_PROBE_HIT: Final[int] = _native.CACHE_PROBE["hit"]
_PROBE_IN_FLIGHT: Final[int] = _native.CACHE_PROBE["in_flight"]
_SETTLE_VALUE: Final[int] = _native.CACHE_SETTLE["value"]
_SETTLE_ERROR: Final[int] = _native.CACHE_SETTLE["error"]


def _is_method(fn: Callable[..., Any]) -> bool:
    try:
        first = next(iter(inspect.signature(fn).parameters), None)
    except (TypeError, ValueError):  # no signature to read
        return False
    return first == "self"


def _method_invalidate(policy: Cache, fn: Callable[..., Any], guard: Any) -> Callable[..., bool]:
    """invalidate() of a cached method: the key holds the instance, which ``obj.method`` cannot
    hand to ``invalidate`` (a bound method looks its attributes up on the function), so a call
    without the instance first is refused instead of silently forgetting nothing."""
    name = fn.__name__

    def invalidate(*args: Any, **kwargs: Any) -> bool:
        if not args or getattr(type(args[0]), name, None) is not guard:
            raise TypeError(
                f"{fn.__qualname__}.invalidate takes the instance first, as the call's key"
                f" holds it: type(obj).{name}.invalidate(obj, ...); obj.{name}.invalidate(...)"
                " cannot see obj"
            )
        result: bool = policy.invalidate(*args, **kwargs)
        return result

    return invalidate


class _Retry:
    """What a waiter receives when the call it waited for was cancelled: try again."""

    __slots__ = ()


_RETRY: Final = _Retry()


class CacheListener:
    """Cache events. Methods may be sync or async; override the ones you need."""

    def on_cache_hit(self, cache: Cache, key: Any, value: Any) -> Any:
        """A call was answered from the cache."""

    def on_cache_miss(self, cache: Cache, key: Any) -> Any:
        """A call found nothing stored and calls the function."""

    def on_cache_set(self, cache: Cache, key: Any, value: Any) -> Any:
        """A result was stored."""


def register_cache_listener(listener: Any) -> None:
    """Adds a listener to every cache component, existing and future."""
    events.register_listener("cache", listener)


def _resolve(fut: asyncio.Future[Any], outcome: Any, how: int) -> None:
    if fut.done():  # a waiter cancelled meanwhile
        return
    if how == _SETTLE_ERROR:
        fut.set_exception(outcome)
    else:
        fut.set_result(outcome if how == _SETTLE_VALUE else _RETRY)


class Cache(_core.Component, _native.Cache):
    """A cache policy guarding one async function (see the module's documentation).

    Metrics: ``hit`` (answered from the cache), ``miss`` (the function was called), ``set``
    (a result stored), ``evict`` (dropped for room, least recently used first), ``expired``
    (dropped after ``ttl``, or after ``ttl + stale_if_error``), ``shared`` (a concurrent miss
    answered by the call in flight), ``stale`` (a failed refresh answered with the stale value).
    """

    PATTERN: ClassVar[str] = "cache"
    METRICS: ClassVar[tuple[str, ...]] = _native.METRICS["cache"]
    _options: CacheOptions

    def __new__(cls, *args: Any, store: Any = None, **kwargs: Any) -> Self:
        if store is not None:  # entries shared through a store: a policy of its own
            from failsafe.stores._cache import shared_cache

            # Typed as a Cache: a SharedCache has its interface (decorator, invalidate, clear).
            return cast(Self, shared_cache(store=store, **kwargs))
        return super().__new__(cls)

    def __init__(
        self,
        *,
        maxsize: int | None = None,
        ttl: float | None = None,
        key_func: Callable[..., Any] | None = None,
        stale_if_error: float | None = None,
        name: str | None = None,
        listeners: Iterable[Any] | None = None,
        event_manager: Any = None,
        store: Any = None,
        local_ttl: float | None = None,
        lock_ttl: float | None = None,
        serializer: str = "json",
        secret: str | bytes | None = None,
    ) -> None:
        if (
            local_ttl is not None
            or lock_ttl is not None
            or serializer != "json"
            or secret is not None
        ):
            raise ValueError("local_ttl, lock_ttl, serializer and secret need store=")
        self._init_component(name, listeners, event_manager)
        self._apply(
            CacheOptions.check(
                maxsize=maxsize, ttl=ttl, key_func=key_func, stale_if_error=stale_if_error
            )
        )

    def _apply(self, options: CacheOptions) -> None:
        self._options = options
        self._fn: Callable[..., Any] | None = None
        self._configure(*options.configuration())

    @classmethod
    def _of(cls, options: CacheOptions, name: str) -> Self:
        """A cache of checked options (the layers of a cache shared through a store)."""
        layer = cls.__new__(cls)
        layer._init_component(name, None)
        layer._apply(options)
        return layer

    @property
    def maxsize(self) -> int | None:
        return self._options.maxsize

    @property
    def ttl(self) -> float | None:
        return self._options.ttl

    @property
    def stale_if_error(self) -> float | None:
        return self._options.stale_if_error

    def __len__(self) -> int:
        """Entries stored now (expired ones are dropped first)."""
        return self._size()

    def __bool__(self) -> bool:
        return True  # a policy, even an empty one, is never "nothing"

    # -- decorator -------------------------------------------------------------------------

    def __call__[**P, T](self, fn: Callable[P, Awaitable[T]]) -> CachedFunction[P, T, Self]:
        _core.check_async(fn, "cache")
        if self._fn is not None:
            raise TypeError(
                f"this cache already guards {self._fn!r}: its keys are that function's"
                " arguments; make one cache(...) per function"
            )
        self._fn = fn
        self._adopt_name(fn)
        guard: Any = _core.make_guard(fn, self)
        guard.invalidate = (
            _method_invalidate(self, fn, guard) if _is_method(fn) else self.invalidate
        )
        guard.clear = self.clear
        typed: CachedFunction[P, T, Self] = guard
        return typed

    # -- slow path, called by the C guard when a call of the same key is in flight ---------

    async def _call_slow(
        self, fn: Callable[..., Awaitable[Any]], /, *args: Any, **kwargs: Any
    ) -> Any:
        loop = asyncio.get_running_loop()
        while True:
            state, found = self._probe(*args, **kwargs)
            if state == _PROBE_HIT:
                return found
            if state != _PROBE_IN_FLIGHT:
                # The call we would have waited for ended without a result: lead one.
                return await _native.Guard(fn, self)(*args, **kwargs)
            waiter: asyncio.Future[Any] = loop.create_future()
            if not found.join(waiter):  # it ended meanwhile, in another thread: look again
                continue
            try:
                value = await waiter
            except BaseException:
                if not waiter.done() or waiter.cancelled():  # this caller was cancelled
                    found.leave(waiter)
                    raise
                self._count(SHARED)  # the leader's error, shared
                raise
            if value is not _RETRY:
                self._count(SHARED)
                return value

    def _settle(self, waiters: list[asyncio.Future[Any]], outcome: Any, how: int) -> None:
        """Hands the leader's outcome to the callers that waited for it."""
        running = asyncio._get_running_loop()
        for fut in waiters:
            loop = fut.get_loop()
            if loop is running:
                _resolve(fut, outcome, how)
                continue
            # A waiter on another thread's loop; if that loop is closed, nobody waits there.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, fut, outcome, how)

    def _holds_state(self) -> bool:
        """For keyed registries: a call in flight has callers waiting on it (a new cache for
        the key would start a second one)."""
        return bool(self._in_flight())

    def stats(self) -> CacheStats:
        return CacheStats(
            **self._stat_values(),
            size=self._size(),
            in_flight=self._in_flight(),
            maxsize=self._options.maxsize,
            ttl=self._options.ttl,
            stale_if_error=self._options.stale_if_error,
        )


if TYPE_CHECKING:  # the methods C calls by name
    _slow_call: type[_native.SlowCall] = Cache
    _cache_settle: type[_native.CacheSettle] = Cache


@overload
def cache[**P, T](fn: Callable[P, Awaitable[T]], /) -> CachedFunction[P, T, Cache]: ...
@overload
def cache(
    fn: None = None,
    /,
    *,
    maxsize: int | None = ...,
    ttl: float | None = ...,
    key_func: Callable[..., Any] | None = ...,
    stale_if_error: float | None = ...,
    name: str | None = ...,
    listeners: Iterable[Any] | None = ...,
    event_manager: Any = ...,
    store: Any = ...,
    local_ttl: float | None = ...,
    lock_ttl: float | None = ...,
    serializer: str = ...,
    secret: str | bytes | None = ...,
) -> Cache: ...
def cache(
    fn: Callable[..., Awaitable[Any]] | None = None,
    /,
    *,
    maxsize: int | None = None,
    ttl: float | None = None,
    key_func: Callable[..., Any] | None = None,
    stale_if_error: float | None = None,
    name: str | None = None,
    listeners: Iterable[Any] | None = None,
    event_manager: Any = None,
    store: Any = None,
    local_ttl: float | None = None,
    lock_ttl: float | None = None,
    serializer: str = "json",
    secret: str | bytes | None = None,
) -> Cache | CachedFunction[..., Any, Cache]:
    """A cache policy: ``@cache(maxsize=1024, ttl=60)`` on an async function (bare ``@cache``:
    unbounded, no expiry).

    ``maxsize`` bounds the entries (least recently used evicted first; None: unbounded),
    ``ttl`` (seconds) bounds their age from when they were stored (None: forever),
    ``key_func(*args, **kwargs)`` makes the key (default: the arguments);
    ``stale_if_error`` (seconds) keeps entries that long past their ttl, to answer with the
    old value when the call refreshing one fails with an Exception. The decorated
    function gets ``invalidate(*args, **kwargs)`` and ``clear()``; its ``policy`` attribute
    is this Cache (``stats()``, ``len()``).

    ``store=`` (with ``name=``) shares the entries across processes through a store
    (:mod:`failsafe.stores._cache`): ``local_ttl`` (seconds) keeps an in-process layer in front,
    ``lock_ttl`` (seconds, default 10) bounds how long a computing process holds a key's lock,
    ``serializer`` is ``"json"`` (default) or ``"pickle"``, which needs ``secret`` (values are
    signed with HMAC-SHA256 and never unpickled unless the signature checks).
    """
    policy = Cache(
        maxsize=maxsize,
        ttl=ttl,
        key_func=key_func,
        stale_if_error=stale_if_error,
        name=name,
        listeners=listeners,
        event_manager=event_manager,
        store=store,
        local_ttl=local_ttl,
        lock_ttl=lock_ttl,
        serializer=serializer,
        secret=secret,
    )
    return policy if fn is None else policy(fn)
