"""Rate limits shared through a store: ``tokenbucket(..., store=)`` and
``slidingwindow(..., store=)``.

Each decision is one Lua script on the server's clock (``TIME``, microseconds), so the limit
is exact across processes and hosts whatever their clocks say; the limit's parameters travel
with each decision (a deploy that changes them takes effect at the next call). A key refused
until some time is refused locally until then, with no round trip. With ``prefetch=k`` one round
trip takes up to k tokens for this process (the bound grows by k per process).

These policies are Python objects on a slow path of their own: the in-process limiters (no
``store=``) keep their C fast path untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, ClassVar, Final, Self, cast

from failsafe import _core, _native, events
from failsafe._types import Decorated
from failsafe.ratelimit._options import LimitOptions
from failsafe.ratelimit.exceptions import RateLimitExceeded
from failsafe.stats import SharedLimiterStats
from failsafe.stores._base import Store, StoreUnavailable, check_store

__all__ = ["SharedLimiter"]

ADMITTED, REJECTED = 0, 1
_US: Final = 1_000_000
_NS_PER_US: Final = 1000
_MAX_LOCAL: Final = 10_000  # keys remembered locally (refusals, prefetched tokens)

# GCRA over one theoretical arrival time (TAT, microseconds of the server's clock).
# ARGV: interval_us, burst, max_wait_us, want (tokens wanted when free: prefetch), count of
# requests decided in order. Reply per request: admitted 0|1, wait_us (admitted: sleep before
# running; refused: retry after), tokens taken, the TAT it set.
_GCRA: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local first = tat
local out = {}
for i = 1, tonumber(ARGV[5]) do
  local avail = math.floor((now + burst * interval - tat) / interval)
  local n = 1
  local wait = 0
  local ok = 1
  if avail >= 1 then
    if want < avail then n = want else n = avail end
  else
    wait = tat + interval - burst * interval - now
    if wait > max_wait then ok = 0 end
  end
  if ok == 1 then
    tat = tat + n * interval
    out[#out + 1] = 1; out[#out + 1] = wait; out[#out + 1] = n; out[#out + 1] = tat
  else
    out[#out + 1] = 0; out[#out + 1] = wait; out[#out + 1] = 0; out[#out + 1] = 0
  end
end
if tat ~= first then
  redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
end
return out
"""

# A cancelled waiter's reservation goes back when nobody reserved after it.
# ARGV: the TAT its reservation set, interval_us.
_GCRA_GIVE_BACK: Final = """
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat ~= nil and tat == tonumber(ARGV[1]) then
  local pttl = redis.call('PTTL', KEYS[1])
  local back = string.format('%d', tat - tonumber(ARGV[2]))
  if pttl > 0 then redis.call('SET', KEYS[1], back, 'PX', pttl) end
  return 1
end
return 0
"""

# Exact sliding window: a sorted set of admission times (microseconds), reservations included.
# KEYS: the set, its sequence counter. ARGV: limit, window_us, max_wait_us, count of requests.
# Reply per request: admitted 0|1, wait_us, 1, its member.
_SLIDING: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now - window))
local out = {}
local latest = now
for i = 1, tonumber(ARGV[4]) do
  local c = redis.call('ZCARD', KEYS[1])
  local at = now
  if c >= limit then
    local e = redis.call('ZRANGE', KEYS[1], c - limit, c - limit, 'WITHSCORES')
    at = tonumber(e[2]) + window
  end
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  if last[2] ~= nil and tonumber(last[2]) > at then at = tonumber(last[2]) end
  local wait = at - now
  if wait > max_wait then
    out[#out + 1] = 0; out[#out + 1] = wait; out[#out + 1] = 0; out[#out + 1] = 0
  else
    local seq = redis.call('INCR', KEYS[2])
    redis.call('ZADD', KEYS[1], string.format('%d', at), seq)
    out[#out + 1] = 1; out[#out + 1] = wait; out[#out + 1] = 1; out[#out + 1] = seq
  end
end
local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if newest[2] ~= nil and tonumber(newest[2]) > latest then latest = tonumber(newest[2]) end
local ttl = math.ceil((latest + window - now) / 1000) + 1
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return out
"""

_SLIDING_GIVE_BACK: Final = """
return redis.call('ZREM', KEYS[1], ARGV[1])
"""


class SharedLimiter(_core.Component, _native.Outcome):
    """A rate limit kept in a store, exact across processes (made by ``tokenbucket`` and
    ``slidingwindow`` given ``store=``): a decorator, an ``async with`` block and
    ``acquire(key)``. Refusals raise :class:`RateLimitExceeded` with ``retry_after_seconds``."""

    PATTERN: ClassVar[str] = "ratelimit"
    METRICS: ClassVar[tuple[str, ...]] = _native.METRICS["ratelimit"]

    def __new__(cls, *args: Any, **kwargs: Any) -> SharedLimiter:
        return super().__new__(cls, _core.PATTERNS["ratelimit"])

    def __init__(
        self,
        options: LimitOptions,
        *,
        store: Store,
        prefetch: int,
        name: str | None,
        listeners: Iterable[Any] | None,
        event_manager: Any,
    ) -> None:
        from failsafe import ratelimit

        self._init_component(name, listeners, event_manager)
        self._store: Any = store
        # The same limit in this process: on_error="local".
        local: Any
        if options.sliding:
            local = ratelimit.SlidingWindowLimiter._of(options)
        elif options.key is not None:
            local = ratelimit.KeyedTokenBucketLimiter._of(options)
        else:
            local = ratelimit.TokenBucketLimiter._of(options)
        self._local = local
        sliding = self._sliding = options.sliding
        self._key_fn = options.key
        self.prefetch: int = prefetch
        self.max_executions: int = options.max_executions
        self.per_time_secs: float = options.per_time_secs
        self.bucket_size: int = options.bucket_size
        wait = options.max_wait
        self.max_wait: float = wait
        self._max_wait_us = 2**52 if math.isinf(wait) else round(wait * _US)
        window_us = max(1, round(self.per_time_secs * _US))
        self._window_us = window_us
        # Rounded up, as in C: never faster than max_executions per per_time_secs.
        self._interval_us = -(-window_us // self.max_executions)
        self._script: Any
        self._give_back: Any
        from failsafe.stores.redis import Script  # scripts are Redis's today

        self._script = Script(_SLIDING if sliding else _GCRA, width=4)
        self._give_back = Script(_SLIDING_GIVE_BACK if sliding else _GCRA_GIVE_BACK)
        self._refused: dict[Any, tuple[int, int]] = {}  # key -> (until_ns, retry_at_ns)
        self._stash: dict[Any, int] = {}  # key -> prefetched tokens

    # -- decisions --------------------------------------------------------------------------

    def _keys(self, key: Any) -> tuple[str, ...]:
        base = self._store.key(self._name) if key is None else self._store.key(self._name, "k", key)
        return (base, f"{base}:seq") if self._sliding else (base,)

    def _args(self) -> tuple[int, ...]:
        if self._sliding:
            return (self.max_executions, self._window_us, self._max_wait_us)
        return (self._interval_us, self.bucket_size, self._max_wait_us, self.prefetch)

    async def acquire(self, key: Any = None) -> None:
        """Takes a token (waiting up to ``max_wait`` for a reserved turn), or raises
        :class:`RateLimitExceeded`. ``key`` only for a keyed limiter."""
        refused = self._refused.get(key)
        if refused is not None:
            now = _native.now_ns()
            if now < refused[0]:
                self._refuse((refused[1] - now) / 1e9)
            del self._refused[key]
        stash = self._stash.get(key)
        if stash:
            self._stash[key] = stash - 1
            self._count(ADMITTED)
            return
        store = self._store
        keys = self._keys(key)
        try:
            reply = await store._submit(self._script, keys, self._args())
        except StoreUnavailable:
            await self._fall_back(key)
            return
        ok, wait_us, taken, mark = (int(x) for x in reply)
        if not ok:
            now = _native.now_ns()
            # Refused for sure until the wait comes within max_wait again.
            until = now + (wait_us - min(wait_us, self._max_wait_us)) * _NS_PER_US
            if until > now:
                if len(self._refused) >= _MAX_LOCAL:
                    self._refused.clear()
                self._refused[key] = (until, now + wait_us * _NS_PER_US)
            self._refuse(wait_us / _US)
        if taken > 1:
            if len(self._stash) >= _MAX_LOCAL:
                self._stash.clear()  # forgetting tokens only ever admits less
            self._stash[key] = self._stash.get(key, 0) + taken - 1
        if wait_us > 0:
            try:
                await asyncio.sleep(wait_us / _US)
            except BaseException:
                self._return_turn(keys, mark)
                raise
        self._count(ADMITTED)

    def _return_turn(self, keys: tuple[str, ...], mark: int) -> None:
        args = (mark,) if self._sliding else (mark, self._interval_us)
        with_key = keys[:1]
        with contextlib.suppress(StoreUnavailable):
            self._store._submit(self._give_back, with_key, args).add_done_callback(_consume)

    def _refuse(self, retry_after: float | None) -> None:
        self._count(REJECTED)
        if events.is_listening(self):
            events.emit(self, "on_rate_limited", (retry_after,))
        raise RateLimitExceeded(
            f"rate limit {self._name!r} exceeded", retry_after=retry_after
        ) from None

    async def _fall_back(self, key: Any) -> None:
        store: Store = self._store
        store._fell_back()
        mode = store.on_error
        if mode == "allow":
            self._count(ADMITTED)
            return
        if mode == "deny":
            self._refuse(store._retry_in() or None)
        try:
            if self._key_fn is not None:
                await self._local.acquire(key)
            else:
                await self._local.acquire()
        except RateLimitExceeded as exc:
            self._refuse(exc.retry_after_seconds)
        self._count(ADMITTED)

    # -- decorator and block forms ------------------------------------------------------------

    def __call__[**P, T](self, fn: Callable[P, Awaitable[T]]) -> Decorated[P, T, Self]:
        """Decorates an async function: each call takes a token first (when awaited)."""
        _core.check_async(fn, self.PATTERN)
        key_fn = self._key_fn
        acquire = self.acquire

        if key_fn is None:

            async def limited(*args: P.args, **kwargs: P.kwargs) -> T:
                await acquire()
                return await fn(*args, **kwargs)

        else:

            async def limited(*args: P.args, **kwargs: P.kwargs) -> T:
                await acquire(key_fn(*args, **kwargs))
                return await fn(*args, **kwargs)

        wrapped = functools.wraps(fn)(limited)
        wrapped.policy = self  # type: ignore[attr-defined]
        return cast(Decorated[P, T, Self], wrapped)

    async def __aenter__(self) -> None:
        if self._key_fn is not None:
            raise TypeError("a keyed limiter needs its key: use `await limiter.acquire(key)`")
        # Timed (latency histograms) only while _latency is set: a slot read otherwise.
        t0 = None if self._latency is None else _native.now_ns()
        try:
            await self.acquire()
        except BaseException as exc:
            if t0 is not None:
                self._block_refused(t0, exc)
            raise
        if t0 is not None:
            self._block_open(t0)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._latency is not None:
            self._block_exited(exc)

    # -- introspection ----------------------------------------------------------------------

    def retry_after(self, key: Any = None) -> float:
        """Seconds until this process would ask the store again for key (0.0: now); the store
        alone knows the shared state."""
        refused = self._refused.get(key)
        if refused is None:
            return 0.0
        return max(0.0, (refused[0] - _native.now_ns()) / 1e9)

    def stats(self) -> SharedLimiterStats:
        return SharedLimiterStats(
            **self._stat_values(),
            max_executions=self.max_executions,
            per_time_secs=self.per_time_secs,
            bucket_size=self.bucket_size,
            prefetch=self.prefetch,
            refused_keys=len(self._refused),
            store=self._store._metrics.name,
        )


def _consume(fut: asyncio.Future[Any]) -> None:
    # A give-back is best effort: its failure only means a token is not returned.
    if not fut.cancelled():
        fut.exception()


def shared_limiter(
    max_executions: int,
    per_time_secs: float,
    bucket_size: int | None,
    *,
    store: object,
    sliding: bool,
    max_wait: float,
    key: Callable[..., Any] | None,
    max_keys: int,
    prefetch: int | None,
    name: str | None,
    listeners: Iterable[Any] | None,
    event_manager: Any,
) -> SharedLimiter:
    """Checks each parameter once, as the in-process limiter does (it is built too, from the
    same options: the on_error="local" path)."""
    if store is None:
        raise ValueError("prefetch= (tokens per round trip to a store) needs store=")
    checked = check_store(store, name, "slidingwindow" if sliding else "tokenbucket")
    options = LimitOptions.check(
        max_executions,
        per_time_secs,
        bucket_size,
        sliding=sliding,
        max_wait=max_wait,
        key=key,
        max_keys=max_keys,
    )
    if prefetch is not None:
        prefetch = _core.check_number(prefetch, "prefetch", allow_zero=False, integer=True)
        if sliding:
            raise ValueError("prefetch is for tokenbucket only (a sliding window logs times)")
    return SharedLimiter(
        options,
        store=checked,
        prefetch=1 if prefetch is None else int(prefetch),
        name=name,
        listeners=listeners,
        event_manager=event_manager,
    )
