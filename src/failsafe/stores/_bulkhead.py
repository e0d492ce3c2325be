"""A concurrency cap shared through a store: ``bulkhead(..., store=, lease=)``.

A permit is a lease: an entry with an expiry (server clock) in a sorted set, renewed every
``lease / 3`` seconds while its call runs, so a process that dies frees its permits after at
most ``lease`` seconds. A call that finds every permit taken queues (FIFO across processes, one
more sorted set ordered by arrival; queued calls renew their place the same way) when there is
room: ``max_capacity`` counts running plus queued calls of every process. A released permit
publishes a wake-up on a channel of the policy; queued calls also poll, as a safety net.
Cancellation releases at once (the release is queued before the CancelledError propagates).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import uuid
import weakref
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, ClassVar, Final, Self, cast

from failsafe import _core, _native, events
from failsafe._types import Decorated
from failsafe.bulkhead.exceptions import BulkheadFull
from failsafe.stats import SharedBulkheadStats
from failsafe.stores._base import Store, StoreUnavailable, check_lease, check_store

__all__ = ["SharedBulkhead"]

FULL, ADMITTED, WAITED, TIMED_OUT = range(4)
_US: Final = 1_000_000
_POLL: Final = 0.25  # seconds between a queued call's polls when no wake-up arrives
_MAX_ORPHANS: Final = 10_000

# KEYS: running set, queue, queue expiries, sequence. ARGV: id, max_concurrency, max_capacity,
# lease_us, may_queue (0|1). Reply: 1 granted, 2 queued (or still queued), 0 full.
_ACQUIRE: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local id = ARGV[1]
local conc = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local lease = tonumber(ARGV[4])
local nowf = string.format('%d', now)
local expiry = string.format('%d', now + lease)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', nowf)
local dead = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', nowf)
if #dead > 0 then
  redis.call('ZREM', KEYS[2], unpack(dead))
  redis.call('ZREM', KEYS[3], unpack(dead))
end
local running = redis.call('ZCARD', KEYS[1])
local rank = redis.call('ZRANK', KEYS[2], id)
local queued = redis.call('ZCARD', KEYS[2])
local ttl = math.ceil(lease / 1000) * 2 + 1000
if rank == false then
  if queued < conc - running then rank = queued
  elseif ARGV[5] == '0' or running + queued >= cap then return 0
  else
    redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), id)
    redis.call('ZADD', KEYS[3], expiry, id)
    for i = 2, 4 do redis.call('PEXPIRE', KEYS[i], ttl) end
    return 2
  end
end
if rank < conc - running then
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZADD', KEYS[1], expiry, id)
  redis.call('PEXPIRE', KEYS[1], ttl)
  return 1
end
redis.call('ZADD', KEYS[3], expiry, id)
return 2
"""

# KEYS: running set, queue, queue expiries. ARGV: channel, id. Wakes the queue when it freed.
_RELEASE: Final = """
local n = redis.call('ZREM', KEYS[1], ARGV[2]) + redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[2])
if n > 0 and redis.call('ZCARD', KEYS[2]) > 0 then redis.call('PUBLISH', ARGV[1], '1') end
return n
"""

# KEYS: running set, queue expiries. ARGV: lease_us, ids... Renews the leases still held.
_RENEW: Final = """
local t = redis.call('TIME')
local expiry = string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2]) + tonumber(ARGV[1]))
local n = 0
for i = 2, #ARGV do
  n = n + redis.call('ZADD', KEYS[1], 'XX', 'CH', expiry, ARGV[i])
  n = n + redis.call('ZADD', KEYS[2], 'XX', 'CH', expiry, ARGV[i])
end
return n
"""

_ids = itertools.count()
_process = f"{uuid.uuid4().hex[:12]}:{os.getpid()}"


class _Permit:
    """One call's hold: a lease in the store, a slot of the local bulkhead, or nothing
    (on_error="allow")."""

    __slots__ = ("id", "kind")

    def __init__(self, kind: str, ident: str = "") -> None:
        self.kind = kind  # "shared" | "local" | "none"
        self.id = ident


class _LoopPart:
    """What a shared bulkhead keeps per event loop: held and queued ids, the renewer task,
    the wake-up subscription."""

    __slots__ = ("held", "renewer", "unsubscribe", "wake")

    def __init__(self) -> None:
        self.held: set[str] = set()
        self.renewer: asyncio.Task[None] | None = None
        self.unsubscribe: Callable[[], None] | None = None
        self.wake: set[asyncio.Event] = set()


class SharedBulkhead(_core.Component, _native.Outcome):
    """A bulkhead whose permits are leases in a store: at most ``max_concurrency`` calls run
    at once across every process using the same store and name."""

    PATTERN: ClassVar[str] = "bulkhead"
    METRICS: ClassVar[tuple[str, ...]] = _native.METRICS["bulkhead"]

    def __new__(cls, *args: Any, **kwargs: Any) -> SharedBulkhead:
        return super().__new__(cls, _core.PATTERNS["bulkhead"])

    def __init__(
        self,
        local: Any,
        *,
        store: Store,
        lease: object,
        name: str | None,
        listeners: Iterable[Any] | None,
        event_manager: Any,
    ) -> None:
        secs = check_lease(lease, "lease", 30.0)
        self._init_component(name, listeners, event_manager)
        self._store: Any = store
        self._local = local  # the same bulkhead in this process: on_error="local"
        self.max_concurrency: int = local.max_concurrency
        self.max_capacity: int = local.max_capacity
        self.max_wait: float | None = local.max_wait
        self.lease: float = secs
        self._lease_us = round(self.lease * _US)
        from failsafe.stores.redis import Script

        self._acquire_script = Script(_ACQUIRE)
        self._release_script = Script(_RELEASE)
        self._renew_script = Script(_RENEW)
        base = self._store.key(self._name)
        self._keys = (f"{base}:run", f"{base}:q", f"{base}:qexp", f"{base}:seq")
        self._channel = f"{base}:free"
        self._parts: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopPart] = (
            weakref.WeakKeyDictionary()
        )
        self._by_task: dict[asyncio.Task[Any], list[_Permit]] = {}
        self._orphans: set[str] = set()  # ids whose release the store did not confirm
        self.running = 0  # calls of this process holding a permit (any kind)
        self.queued = 0  # calls of this process queued in the store

    # -- taking and giving back -------------------------------------------------------------

    def _part(self) -> _LoopPart:
        loop = asyncio.get_running_loop()
        part = self._parts.get(loop)
        if part is None:
            part = self._parts[loop] = _LoopPart()
        return part

    async def _acquire(self) -> _Permit:
        store = self._store
        ident = f"{_process}:{next(_ids)}"
        may_queue = 0 if self.max_wait == 0 or self.max_capacity == self.max_concurrency else 1
        args = (ident, self.max_concurrency, self.max_capacity, self._lease_us, may_queue)
        part = self._part()
        if self._orphans and store._may_ask():
            self._release_orphans()  # in the same pipeline, ahead of this request
        try:
            fut = store._submit(self._acquire_script, self._keys, args)
            # Shielded: a call cancelled while its request is in flight releases what the
            # reply grants, once it arrives (never before: the release could overtake it).
            reply = await asyncio.shield(fut)
        except StoreUnavailable:
            self._forget(ident)
            return await self._fall_back(None)
        except BaseException:
            fut.add_done_callback(
                lambda f: None if f.cancelled() or f.exception() else self._forget(ident)
            )
            raise
        if reply == 0:
            self._full(timed_out=False)
        if reply == 2:
            await self._wait(part, ident, args)
        part.held.add(ident)
        self._renewing(part)
        self._count(ADMITTED)
        self.running += 1
        return _Permit("shared", ident)

    async def _wait(self, part: _LoopPart, ident: str, args: tuple[Any, ...]) -> None:
        """Queued in the store: poll on every wake-up (and every _POLL seconds) until granted,
        max_wait passes (BulkheadFull), or the store fails (the fallback decides)."""
        self._count(WAITED)
        self.queued += 1
        loop = asyncio.get_running_loop()
        deadline = None if self.max_wait is None else loop.time() + self.max_wait
        wake = asyncio.Event()
        part.held.add(ident)  # renewed like a permit, so a dead waiter leaves the queue
        part.wake.add(wake)
        self._renewing(part)
        if part.unsubscribe is None:
            part.unsubscribe = self._store._subscribe(self._channel, functools.partial(_set, part))
        try:
            while True:
                delay = _POLL if deadline is None else min(_POLL, deadline - loop.time())
                if delay <= 0:
                    self._forget(ident)
                    self._full(timed_out=True)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await wake.wait()
                wake.clear()
                try:
                    reply = await self._store._submit(self._acquire_script, self._keys, args)
                except StoreUnavailable:
                    self._forget(ident)
                    remaining = None if deadline is None else max(0.0, deadline - loop.time())
                    raise _FellBack(await self._fall_back(remaining)) from None
                if reply == 1:
                    return
                if reply == 0:  # the queue forgot us (our lease lapsed): full now
                    self._forget(ident)
                    self._full(timed_out=False)
        except (BulkheadFull, _FellBack):
            part.held.discard(ident)
            raise
        except BaseException:
            part.held.discard(ident)
            self._forget(ident)  # cancelled or closed while queued: leave the queue now
            raise
        finally:
            part.wake.discard(wake)
            self.queued -= 1

    def _forget(self, ident: str) -> None:
        """Releases ident in the store, without waiting (it leaves in this turn's pipeline).
        A release the store does not confirm is retried before this process's next request:
        a request that timed out may still have taken a permit when the server caught up."""
        try:
            fut = self._store._submit(self._release_script, self._keys[:3], (self._channel, ident))
        except StoreUnavailable:
            self._orphan(ident)
            return

        def done(f: asyncio.Future[Any]) -> None:
            if not f.cancelled() and f.exception() is not None:
                self._orphan(ident)

        fut.add_done_callback(done)

    def _orphan(self, ident: str) -> None:
        if len(self._orphans) < _MAX_ORPHANS:  # beyond, their leases free them
            self._orphans.add(ident)

    def _release_orphans(self) -> None:
        orphans, self._orphans = self._orphans, set()
        for ident in orphans:
            self._forget(ident)

    def _release(self, permit: _Permit) -> None:
        self.running -= 1
        if permit.kind == "shared":
            for part in self._parts.values():
                part.held.discard(permit.id)
            self._forget(permit.id)
        elif permit.kind == "local":
            self._local._release()

    async def _fall_back(self, max_wait: float | None) -> _Permit:
        store: Store = self._store
        store._fell_back()
        mode = store.on_error
        if mode == "deny":
            self._full(timed_out=False)
        if mode == "allow":
            self._count(ADMITTED)
            self.running += 1
            return _Permit("none")
        try:
            await self._local.__aenter__()
        except BulkheadFull as exc:
            self._full(timed_out=exc.timed_out)
        self._count(ADMITTED)
        self.running += 1
        return _Permit("local")

    def _full(self, *, timed_out: bool) -> None:
        self._count(FULL)
        if timed_out:
            self._count(TIMED_OUT)
        if events.is_listening(self):
            events.emit(self, "on_bulkhead_full")
        how = f"timed out waiting {self.max_wait} s for a permit" if timed_out else "is full"
        raise BulkheadFull(
            f"shared bulkhead {self._name!r} {how} (max_concurrency={self.max_concurrency},"
            f" max_capacity={self.max_capacity})",
            timed_out=timed_out,
        )

    def _renewing(self, part: _LoopPart) -> None:
        if part.renewer is None or part.renewer.done():
            part.renewer = asyncio.get_running_loop().create_task(self._renew(part))

    async def _renew(self, part: _LoopPart) -> None:
        """Renews this loop's leases every lease/3 seconds while it holds or waits for any."""
        while part.held:
            await asyncio.sleep(self.lease / 3)
            if not part.held:
                break
            args = (self._lease_us, *part.held)
            with contextlib.suppress(StoreUnavailable):
                await self._store._submit(self._renew_script, (self._keys[0], self._keys[2]), args)
        if part.unsubscribe is not None and not part.wake:
            part.unsubscribe()
            part.unsubscribe = None

    # -- decorator and block forms ------------------------------------------------------------

    def __call__[**P, T](self, fn: Callable[P, Awaitable[T]]) -> Decorated[P, T, Self]:
        """Decorates an async function: each call holds a permit while it runs."""
        _core.check_async(fn, self.PATTERN)
        acquire, release = self._acquire_any, self._release

        async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
            permit = await acquire()
            try:
                return await fn(*args, **kwargs)
            finally:
                release(permit)

        wrapped = functools.wraps(fn)(guarded)
        wrapped.policy = self  # type: ignore[attr-defined]
        return cast(Decorated[P, T, Self], wrapped)

    async def _acquire_any(self) -> _Permit:
        try:
            return await self._acquire()
        except _FellBack as fb:
            return fb.permit

    async def __aenter__(self) -> None:
        # Timed (latency histograms) only while _latency is set: a slot read otherwise.
        t0 = None if self._latency is None else _native.now_ns()
        try:
            permit = await self._acquire_any()
        except BaseException as exc:
            if t0 is not None:
                self._block_refused(t0, exc)
            raise
        task = asyncio.current_task()
        assert task is not None
        self._by_task.setdefault(task, []).append(permit)
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
        task = asyncio.current_task()
        held = self._by_task.get(task) if task is not None else None
        if not held:
            raise RuntimeError("shared bulkhead __aexit__ without a matching __aenter__")
        permit = held.pop()
        if not held:
            del self._by_task[task]  # type: ignore[arg-type]
        self._release(permit)

    # -- introspection ----------------------------------------------------------------------

    def stats(self) -> SharedBulkheadStats:
        """Counters, then this process's part: its running and queued calls, and the limits."""
        return SharedBulkheadStats(
            **self._stat_values(),
            running=self.running,
            queued=self.queued,
            max_concurrency=self.max_concurrency,
            max_capacity=self.max_capacity,
            max_wait=self.max_wait,
            lease=self.lease,
            store=self._store._metrics.name,
        )


class _FellBack(Exception):  # internal: carries the fallback's permit out of _wait
    def __init__(self, permit: _Permit) -> None:
        super().__init__()
        self.permit = permit


def _set(part: _LoopPart) -> None:
    for event in part.wake:
        event.set()


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # a failed release only means the lease lapses by itself


def shared_bulkhead(
    max_concurrency: int,
    max_capacity: int | None = None,
    *,
    max_wait: float | None = None,
    store: object,
    lease: float | None = None,
    name: str | None = None,
    listeners: Iterable[Any] | None = None,
    event_manager: Any = None,
) -> SharedBulkhead:
    """Validates like the in-process bulkhead (it is built too: the on_error="local" path)."""
    from failsafe.bulkhead import Bulkhead

    checked = check_store(store, name, "bulkhead")
    local = Bulkhead(max_concurrency, max_capacity, max_wait=max_wait)
    return SharedBulkhead(
        local,
        store=checked,
        lease=lease,
        name=name,
        listeners=listeners,
        event_manager=event_manager,
    )
