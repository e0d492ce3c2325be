"""The adaptive concurrency limit (see failsafe.adaptive)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

from failsafe import _core, _native, events
from failsafe._core import Component, check_int, check_number
from failsafe.adaptive import _priority
from failsafe.adaptive.exceptions import LimitExceeded
from failsafe.events import EventManager
from failsafe.stats import ConcurrencyLimitStats

ADMITTED, REJECTED, WAITED, TIMED_OUT, DROPPED, SHED = range(6)  # C order (adaptive.c)
ALGORITHMS: Final = {"gradient2": 0, "vegas": 1, "aimd": 2}
_MAX_WAIT: Final = 1e9
_MAX_LIMIT: Final = 10**9

Algorithm = Literal["gradient2", "vegas", "aimd"]


def _default_drops() -> tuple[type[BaseException], ...]:
    from failsafe.timeout import TimeoutError as FsTimeoutError

    return (TimeoutError, FsTimeoutError)


class ConcurrencyLimitListener:
    """Base class of concurrency limit listeners: override the events you want."""

    def on_limit_exceeded(self, limit: ConcurrencyLimit) -> Any:
        """A call was refused with LimitExceeded (no room, queue full, timed out or shed)."""


def register_concurrency_limit_listener(listener: object) -> None:
    """Adds a listener (or listener factory) of every concurrency limit, existing or future."""
    events.register_listener("concurrency_limit", listener)


@dataclass(order=True)
class _Waiter:
    sort_key: tuple[int, int]  # (-priority, arrival): the heap's order
    priority: int = field(compare=False)
    tenant: Hashable = field(compare=False)
    future: asyncio.Future[int] = field(compare=False)
    gone: bool = field(default=False, compare=False)


class ConcurrencyLimit(Component, _native.AdaptiveLimit):
    """``concurrency_limit(*, algorithm="gradient2", initial=20, ...)``: an adaptive concurrency
    limit. See the module's docstring and docs/patterns/adaptive.md.

    Metrics (C counters): ``admitted`` (calls given a place), ``rejected`` (every
    LimitExceeded), ``waited`` (calls that entered the queue), ``timed_out`` (queued calls that
    gave up at ``max_wait``), ``dropped`` (calls whose outcome was a drop), ``shed`` (queued
    calls pushed out by calls of higher priority). ``stats()`` adds the limit, the calls in
    flight and queued, and the RTT estimates.
    """

    PATTERN: ClassVar[str] = "concurrency_limit"
    METRICS: ClassVar[tuple[str, ...]] = _native.METRICS["concurrency_limit"]

    def __init__(
        self,
        *,
        algorithm: Algorithm = "gradient2",
        initial: float = 20,
        min_limit: float = 1,
        max_limit: float = 1000,
        queue: int = 0,
        max_wait: float | None = None,
        priority: Callable[..., int] | Any | None = None,
        tenant: Callable[..., Hashable] | Any | None = None,
        drop_on: Any = None,
        smoothing: float | None = None,
        tolerance: float = 1.0,
        queue_size: float = 1,
        long_window: int = 2000,
        alpha: float = 3.0,
        beta: float = 6.0,
        probe_multiplier: int = 30,
        backoff_ratio: float = 0.9,
        timeout: float = 5.0,
        name: str | None = None,
        listeners: Iterable[object] | None = None,
        event_manager: EventManager | None = None,
    ) -> None:
        if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {sorted(ALGORITHMS)}, got {algorithm!r}")
        lo = check_number(min_limit, "min_limit", allow_zero=False, maximum=_MAX_LIMIT)
        if lo < 1:
            raise ValueError(f"min_limit must be >= 1, got {min_limit!r}")
        hi = check_number(max_limit, "max_limit", allow_zero=False, maximum=_MAX_LIMIT)
        if hi < lo:
            raise ValueError(f"max_limit must be >= min_limit ({lo}), got {max_limit!r}")
        first = check_number(initial, "initial", allow_zero=False, maximum=_MAX_LIMIT)
        if not lo <= first <= hi:
            raise ValueError(f"initial must be within [min_limit, max_limit], got {initial!r}")
        self._queue_max = int(check_int(queue, "queue", minimum=0, maximum=2**31 - 1))
        wait = check_number(max_wait, "max_wait", allow_none=True, allow_inf=True)
        self.max_wait: float | None = None if wait is None or wait > _MAX_WAIT else float(wait)
        if smoothing is None:
            smoothing = 1.0 if algorithm == "vegas" else 0.2
        smooth = check_number(smoothing, "smoothing", allow_zero=False, maximum=1)
        tol = check_number(tolerance, "tolerance", maximum=1e9)
        if tol < 1:
            raise ValueError(f"tolerance must be >= 1, got {tolerance!r}")
        qsize = check_number(queue_size, "queue_size", maximum=1e9)
        window = check_int(long_window, "long_window", maximum=2**32 - 1)
        lo_queue = check_number(alpha, "alpha", maximum=1e9)
        if lo_queue < 1:
            raise ValueError(f"alpha must be >= 1, got {alpha!r}")
        hi_queue = check_number(beta, "beta", maximum=1e9)
        if hi_queue < lo_queue:
            raise ValueError(f"beta must be >= alpha ({lo_queue}), got {beta!r}")
        probe = check_int(probe_multiplier, "probe_multiplier", minimum=0, maximum=2**32 - 1)
        backoff = check_number(backoff_ratio, "backoff_ratio", allow_zero=False)
        if backoff >= 1:
            raise ValueError(f"backoff_ratio must be in (0, 1), got {backoff_ratio!r}")
        slow_after = check_number(timeout, "timeout", allow_zero=False, maximum=1e9)
        self._priority = _priority.check_source(priority, "priority")
        self._tenant = _priority.check_source(tenant, "tenant")
        if drop_on is None:
            drop_on = _default_drops()
        types = _core.check_exceptions(drop_on, "drop_on")
        if types is None and not callable(drop_on):
            raise TypeError(f"drop_on must be exception classes or a predicate, not {drop_on!r}")
        self.algorithm: Algorithm = algorithm
        _native.AdaptiveLimit.__init__(
            self,
            ALGORITHMS[algorithm],
            float(first),
            float(lo),
            float(hi),
            float(smooth),
            float(tol),
            float(qsize),
            int(window),
            float(lo_queue),
            float(hi_queue),
            int(probe),
            float(backoff),
            float(slow_after),
            types,
            None if types is not None else drop_on,
        )
        self._waiters: list[_Waiter] = []
        self._arrivals = itertools.count()
        self._tenant_inflight: dict[Hashable, int] = {}
        # `async with`: per task, the (t0_ns, at, tenant) of the places it holds, innermost last.
        self._held: dict[asyncio.Task[Any] | None, list[tuple[int, int, Hashable]]] = {}
        self._slow = 1 if (self._priority is not None or self._tenant is not None) else 0
        self._init_component(name, listeners, event_manager)

    # -- admission -------------------------------------------------------------------------

    def _refuse(self, why: str, *, shed: bool = False, timed_out: bool = False) -> LimitExceeded:
        self._count(REJECTED)
        if events.is_listening(self):
            events.emit(self, "on_limit_exceeded")
        rtt = self.last_rtt
        return LimitExceeded(
            f"concurrency limit {self._name!r} {why} (limit={self.current},"
            f" inflight={self.inflight}, queued={len(self._waiters)})",
            retry_after=rtt if rtt > 0 else None,
            shed=shed,
            timed_out=timed_out,
        )

    def _fair(self, tenant: Hashable) -> bool:
        """Whether tenant holds less than its share of the limit among the tenants now busy."""
        if self._tenant is None:
            return True
        busy = {t for t, n in self._tenant_inflight.items() if n > 0}
        busy |= {w.tenant for w in self._waiters}
        busy.add(tenant)
        share = max(1, math.ceil(self.current / len(busy)))
        return self._tenant_inflight.get(tenant, 0) < share

    async def _acquire(self, priority: int, tenant: Hashable) -> int:
        """A place for a call: the calls in flight it found. Waits in the queue if allowed."""
        if not self._waiters or self._slow:
            at = self._try_take(priority, tenant)
            if at >= 0:
                return at
        if self._queue_max == 0 or self.max_wait == 0:
            raise self._refuse("reached")
        if len(self._waiters) >= self._queue_max:
            lowest = max(self._waiters)  # last in the order: lowest priority, newest
            if lowest.priority >= priority:
                raise self._refuse("reached and its queue is full")
            self._drop_waiter(lowest)
            self._count(SHED)
            if not lowest.future.done():
                lowest.future.set_exception(self._refuse("shed a queued call", shed=True))
        loop = asyncio.get_running_loop()
        waiter = _Waiter((-priority, next(self._arrivals)), priority, tenant, loop.create_future())
        heapq.heappush(self._waiters, waiter)
        self._queued = len(self._waiters)
        self._count(WAITED)
        timer = None
        if self.max_wait is not None:
            timer = loop.call_later(self.max_wait, self._expire, waiter)
        try:
            return await waiter.future
        except BaseException as exc:
            if isinstance(exc, LimitExceeded):
                raise
            self._leave(waiter)  # cancelled: give back the place, or the one granted
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _try_take(self, priority: int, tenant: Hashable) -> int:
        if self._slow and self._waiters:
            # Only a call that would be served before every waiter may pass them.
            best = self._waiters[0]
            if priority <= best.priority or not self._fair(tenant):
                return -1
        elif not self._fair(tenant):
            return -1
        at = self._take()
        if at >= 0 and self._tenant is not None:
            self._tenant_inflight[tenant] = self._tenant_inflight.get(tenant, 0) + 1
        return at

    def _drop_waiter(self, waiter: _Waiter) -> None:
        waiter.gone = True
        self._waiters.remove(waiter)
        heapq.heapify(self._waiters)
        self._queued = len(self._waiters)

    def _leave(self, waiter: _Waiter) -> None:
        fut = waiter.future
        if fut.done() and not fut.cancelled() and fut.exception() is None:
            self._finish_place(waiter.tenant)  # granted, then cancelled: pass the place on
            self._release()
        elif not waiter.gone:
            self._drop_waiter(waiter)

    def _expire(self, waiter: _Waiter) -> None:
        if waiter.gone or waiter.future.done():
            return
        self._drop_waiter(waiter)
        self._count(TIMED_OUT)
        waiter.future.set_exception(
            self._refuse(f"timed out waiting {self.max_wait} s", timed_out=True)
        )

    def _next_waiter(self) -> _Waiter | None:
        if self._tenant is None:
            return self._waiters[0]
        # Highest priority first; among those, the tenant with the fewest calls in flight.
        top = self._waiters[0].priority
        same = [w for w in self._waiters if w.priority == top]
        return min(same, key=lambda w: (self._tenant_inflight.get(w.tenant, 0), w.sort_key))

    def _grant(self) -> None:
        """Hands free places to queued calls (called by C when a place frees up)."""
        while self._waiters and self._has_room():
            waiter = self._next_waiter()
            assert waiter is not None
            self._drop_waiter(waiter)
            if waiter.future.done():  # cancelled while queued, its task not yet run
                continue
            at = self._take()
            if self._tenant is not None:
                t = waiter.tenant
                self._tenant_inflight[t] = self._tenant_inflight.get(t, 0) + 1
            waiter.future.set_result(at)

    def _finish_place(self, tenant: Hashable) -> None:
        if self._tenant is None:
            return
        n = self._tenant_inflight.get(tenant, 0) - 1
        if n > 0:
            self._tenant_inflight[tenant] = n
        else:
            self._tenant_inflight.pop(tenant, None)

    async def _call_slow(
        self, fn: Callable[..., Awaitable[Any]], /, *args: Any, **kwargs: Any
    ) -> Any:
        """A decorated call that found no room, or of a limit with priorities or tenants."""
        priority = _priority.priority_of(self._priority, args, kwargs)
        tenant = _priority.tenant_of(self._tenant, args, kwargs)
        at = await self._acquire(priority, tenant)
        t0 = _native.now_ns()
        error: BaseException | None = None
        try:
            return await fn(*args, **kwargs)
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._finish_place(tenant)
            self._end(t0, at, error)

    # -- async with ------------------------------------------------------------------------

    async def __aenter__(self) -> None:
        # Timed (latency histograms) only while _latency is set: a slot read otherwise.
        t0 = None if self._latency is None else _native.now_ns()
        priority = _priority.priority_of(self._priority, (), {})
        tenant = _priority.tenant_of(self._tenant, (), {})
        try:
            at = await self._acquire(priority, tenant)
        except BaseException as exc:
            if t0 is not None:
                self._block_refused(t0, exc)
            raise
        task = asyncio.current_task()
        self._held.setdefault(task, []).append((_native.now_ns(), at, tenant))
        if t0 is not None:
            self._block_open(t0)

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if self._latency is not None:
            self._block_exited(exc)
        task = asyncio.current_task()
        stack = self._held.get(task)
        if not stack:
            raise RuntimeError("ConcurrencyLimit.__aexit__ without a matching __aenter__")
        t0, at, tenant = stack.pop()
        if not stack:
            del self._held[task]
        self._finish_place(tenant)
        self._end(t0, at, exc)

    # -- introspection ---------------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Calls waiting in the queue now."""
        return len(self._waiters)

    def stats(self) -> ConcurrencyLimitStats:
        """Counters, then the live state: the limit, calls in flight and queued, RTTs."""
        return ConcurrencyLimitStats(
            **self._stat_values(),
            algorithm=self.algorithm,
            limit=self.current,
            limit_estimate=self.limit_estimate,
            inflight=self.inflight,
            queued=len(self._waiters),
            peak_inflight=self.peak_inflight,
            samples=self.samples,
            last_rtt=self.last_rtt,
            long_rtt=self.long_rtt,
            rtt_noload=self.rtt_noload,
        )

    def __repr__(self) -> str:
        return (
            f"<concurrency_limit {self._name!r} {self.algorithm} limit={self.current}"
            f" inflight={self.inflight} queued={len(self._waiters)}>"
        )


if TYPE_CHECKING:  # the methods C calls by name
    _slow_call: type[_native.SlowCall] = ConcurrencyLimit
    _adaptive_grant: type[_native.AdaptiveGrant] = ConcurrencyLimit


concurrency_limit = ConcurrencyLimit
