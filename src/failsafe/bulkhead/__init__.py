"""Bulkhead: bound how many calls run at once, with a bounded FIFO queue for the rest.

``bulkhead(max_concurrency, max_capacity=None, *, max_wait=None)`` gives a policy usable as a
decorator and as ``async with``, shared by every call and task that uses it:

* at most ``max_concurrency`` calls run at once;
* at most ``max_capacity`` calls are inside (running plus queued); the default is
  ``max_concurrency``: no queue, a call that finds every slot taken is rejected at once (as
  resilience4j's and Polly's bulkheads do by default);
* a call that finds no free slot but room in the queue waits, first come first served; a slot
  freed while calls wait passes straight to the first of them, so a new call never overtakes a
  queued one;
* a full bulkhead raises :class:`BulkheadFull` at once, without calling the function (a
  decorated call is refused when it is made and raises when awaited, so a fallback or retry
  stacked on it sees the refusal as the call's outcome);
* a queued call waits at most ``max_wait`` seconds (``None``: as long as it takes; ``0``: never
  waits), then raises :class:`BulkheadFull` with ``timed_out`` True.

A call that finds a free slot takes it when it is made, in C, and gives it back when it ends,
is closed, or is collected unfinished. A call that must wait queues when it first runs (a
coroutine never awaited takes nothing). Cancellation, while queued or while running, gives back
the place or the slot; a call cancelled just after being handed a slot passes it on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Self, cast

from failsafe import _native, deadline, events
from failsafe._core import Component, counter_indexes, show_init_signature
from failsafe.bulkhead._options import BulkheadOptions
from failsafe.bulkhead.exceptions import BulkheadFull
from failsafe.events import EventManager
from failsafe.stats import BulkheadStats

__all__ = [
    "Bulkhead",
    "BulkheadFull",
    "BulkheadListener",
    "BulkheadStats",
    "bulkhead",
    "register_bulkhead_listener",
]


FULL, ADMITTED, WAITED, TIMED_OUT = counter_indexes(
    "bulkhead", "full", "admitted", "waited", "timed_out"
)


class BulkheadListener:
    """Base class of bulkhead listeners: override the events you want (sync or async)."""

    def on_bulkhead_full(self, bulkhead: Bulkhead) -> Any:
        """A call was refused with BulkheadFull (full, or timed out in the queue)."""

    def on_bulkhead_wait(self, bulkhead: Bulkhead, waited: float, served: bool) -> Any:
        """A call left the queue after ``waited`` seconds: with a slot (``served``), or
        refused when ``max_wait`` ran out."""


def register_bulkhead_listener(listener: object) -> None:
    """Adds a listener (or listener factory) of every bulkhead, existing or future."""
    events.register_listener("bulkhead", listener)


class Bulkhead(Component, _native.Bulkhead):
    """``bulkhead(max_concurrency, max_capacity=None, *, max_wait=None)``: a bulkhead policy.

    ``@policy`` decorates async functions (or methods); ``async with policy:`` guards a block.
    Both share the policy's slots and queue.

    Metrics (C counters): ``full`` (every BulkheadFull raised, timed-out waits included),
    ``admitted`` (calls given a slot), ``waited`` (calls that entered the queue), ``timed_out``
    (queued calls that gave up at ``max_wait``). ``stats()`` adds the live state: ``running``,
    ``queued``, the limits and the peaks.
    """

    PATTERN: ClassVar[str] = "bulkhead"
    METRICS: ClassVar[tuple[str, ...]] = _native.METRICS["bulkhead"]

    def __new__(cls, *args: Any, store: Any = None, lease: float | None = None, **kw: Any) -> Self:
        if store is not None:  # permits shared through a store: a policy of its own
            from failsafe.stores._bulkhead import shared_bulkhead

            # Typed as a Bulkhead: a SharedBulkhead has its interface (decorator, block, stats).
            return cast(Self, shared_bulkhead(*args, store=store, lease=lease, **kw))
        return super().__new__(cls)

    def __init__(
        self,
        max_concurrency: int,
        max_capacity: int | None = None,
        *,
        max_wait: float | None = None,
        name: str | None = None,
        listeners: Iterable[object] | None = None,
        event_manager: EventManager | None = None,
        store: Any = None,
        lease: float | None = None,
    ) -> None:
        if lease is not None:
            raise ValueError("lease= (a permit's lifetime in a store) needs store=")
        o = BulkheadOptions.check(max_concurrency, max_capacity, max_wait=max_wait)
        _native.Bulkhead.__init__(self, o.max_concurrency, o.max_capacity, o.max_wait)
        self._init_component(name, listeners, event_manager)

    # -- slow paths, called by the C guard and __aenter__ ----------------------------------

    async def _acquire_slow(self) -> None:
        """Takes a slot, waiting in the queue for at most max_wait seconds."""
        waiter = self._enqueue()
        if waiter is None:  # a slot freed up before this call first ran
            return
        max_wait = self.max_wait
        since = _native.now_ns()
        timer = None
        # The wait ends at the deadline when that comes first.
        left = deadline.left()
        cut = left is not None and (max_wait is None or left < max_wait)
        wait = left if cut else max_wait
        if wait is not None:
            timer = asyncio.get_running_loop().call_later(wait, self._expire, waiter)
        try:
            served = await waiter.future
        except BaseException:  # cancelled or closed: give back the place, or pass the slot on
            self._abandon(waiter)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if events.is_listening(self):
            events.emit(self, "on_bulkhead_wait", ((_native.now_ns() - since) / 1e9, served))
        if not served:
            if cut:
                raise deadline.DeadlineExceeded(
                    f"bulkhead {self._name!r}: the deadline passed while waiting for a slot"
                )
            self._count(FULL)
            self._count(TIMED_OUT)
            if events.is_listening(self):
                events.emit(self, "on_bulkhead_full")
            raise BulkheadFull(
                f"bulkhead {self._name!r} timed out waiting {max_wait} s for a slot"
                f" (max_concurrency={self.max_concurrency}, max_capacity={self.max_capacity})",
                timed_out=True,
            )

    async def _queued_call(
        self, fn: Callable[..., Awaitable[Any]], /, *args: Any, **kwargs: Any
    ) -> Any:
        """A decorated call that found no free slot: wait for one, run, give it back."""
        await self._acquire_slow()
        try:
            return await fn(*args, **kwargs)
        finally:
            self._release()

    # -- introspection ---------------------------------------------------------------------

    def stats(self) -> BulkheadStats:
        """Counters, then the live state: running and queued calls, limits, peaks."""
        return BulkheadStats(
            **self._stat_values(),
            running=self.running,
            queued=self.queued,
            max_concurrency=self.max_concurrency,
            max_capacity=self.max_capacity,
            max_wait=self.max_wait,
            peak_running=self.peak_running,
            peak_queued=self.peak_queued,
        )

    def __repr__(self) -> str:
        return (
            f"<bulkhead {self._name!r} running={self.running}/{self.max_concurrency}"
            f" queued={self.queued}/{self.max_capacity - self.max_concurrency}"
            f" full={self._counters()[FULL]}>"
        )


# The factory is the class itself (one shared policy per call of bulkhead(...)).
show_init_signature(Bulkhead)  # __new__ routes store= away

bulkhead = Bulkhead


if TYPE_CHECKING:  # the methods C calls by name
    _bulkhead_slow_paths: type[_native.BulkheadSlowPaths] = Bulkhead
