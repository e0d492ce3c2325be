"""Tasks of async listener methods: the EventManager that keeps them, and the process-wide
counts of listener events not delivered. Separate from events.py, which dispatches events."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

from failsafe._core import check_int
from failsafe.stats import EventManagerStats

logger: Final = logging.getLogger("failsafe")

# Default cap of an EventManager's pending listener tasks.
MAX_PENDING_TASKS: Final = 10_000

# Process-wide counts of listener events not delivered (every EventManager adds to them), for
# exporters: see totals().
_totals = {"dropped": 0, "lost": 0}


def totals() -> dict[str, int]:
    """Listener events not delivered so far, over every EventManager: ``dropped`` (refused
    because a manager had max_pending tasks running) and ``lost`` (their task was cancelled
    or its event loop closed before it ended, e.g. at ``asyncio.run`` shutdown)."""
    return dict(_totals)


class EventManager:
    """Holds a strong reference to each running listener task (the event loop keeps only weak
    ones), so tasks finish instead of vanishing, and lets tests wait for or cancel them.

    Tasks leave the manager when they finish, and when their event loop is closed. At most
    ``max_pending`` tasks are kept: an async listener event arriving while that many are
    running is dropped (counted, and logged once per burst), so a slow listener never grows
    memory without bound. A task cancelled by anybody but :meth:`cancel_tasks` (as
    ``asyncio.run`` does to whatever is left when its main coroutine returns) or left behind by
    a closed loop loses its event: counted, and logged once with how many were lost.
    ``stats()`` gives the counts. One default manager always exists (get_event_manager()); a
    component's own `event_manager=` takes precedence over it.
    """

    def __init__(self, max_pending: int = MAX_PENDING_TASKS) -> None:
        self.max_pending: int = check_int(max_pending, "max_pending")
        self._tasks: set[asyncio.Future[Any]] = set()
        self._cancelling: set[asyncio.Future[Any]] = set()  # by cancel_tasks(): not lost
        self._prune_at = 64  # the size at which tasks of closed loops are looked for
        self.dropped = 0
        self.lost = 0
        self._dropping = False
        self._unreported = 0  # lost, not logged yet
        self._report_loop: asyncio.AbstractEventLoop | None = None  # will log them

    def add(self, task: asyncio.Future[Any]) -> None:
        """Tracks task until it is done (an eager task that already finished is not kept)."""
        if not isinstance(task, asyncio.Future):
            raise TypeError(f"task must be an asyncio Task or Future, not {type(task).__name__}")
        if self._report_loop is not None and self._report_loop.is_closed():
            self._report_lost()  # its loop closed before it could log them
        if not task.done():
            self._tasks.add(task)
            task.add_done_callback(self._done)
            if len(self._tasks) >= self._prune_at:
                self._prune()
                self._prune_at = max(64, 2 * len(self._tasks))

    def has_room(self) -> bool:
        """Whether one more task may start; when not, counts the event as dropped."""
        if len(self._tasks) < self.max_pending:
            self._dropping = False
            return True
        if not self._dropping or self.dropped % 1024 == 0:  # a scan now and then, not per event
            self._prune()
            if len(self._tasks) < self.max_pending:
                return True
        self.dropped += 1
        _totals["dropped"] += 1
        if not self._dropping:
            self._dropping = True
            logger.warning(
                "failsafe: %d async listener tasks are running (max_pending); dropping"
                " listener events until some finish",
                len(self._tasks),
            )
        return False

    def _done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if task in self._cancelling:
            self._cancelling.discard(task)
        elif task.cancelled():
            self._note_lost(1, task.get_loop())

    def _prune(self) -> None:
        """Drops the tasks of closed event loops: they will never run again."""
        stale = {t for t in self._tasks if t.get_loop().is_closed()}
        if stale:
            self._tasks -= stale
            self._cancelling -= stale
            self._note_lost(len(stale), None)

    def _note_lost(self, n: int, loop: asyncio.AbstractEventLoop | None) -> None:
        self.lost += n
        _totals["lost"] += n
        self._unreported += n
        if self._report_loop is not None and not self._report_loop.is_closed():
            return  # a report is due
        if loop is None or loop.is_closed():
            self._report_lost()
            return
        # Once the cancellations in progress are all done (asyncio.run cancels every task at
        # once), one line for all of them.
        self._report_loop = loop
        loop.call_soon(self._report_lost)

    def _report_lost(self) -> None:
        n, self._unreported, self._report_loop = self._unreported, 0, None
        if n:
            logger.warning(
                "failsafe: %d listener event(s) lost: their tasks were cancelled or their event"
                " loop closed before they ended (e.g. at asyncio.run shutdown); await"
                " get_event_manager().wait_for_tasks() before the loop ends to deliver them",
                n,
            )

    @property
    def pending(self) -> int:
        """How many tracked tasks are still running."""
        return len(self._tasks)

    def stats(self) -> EventManagerStats:
        """``pending`` tasks, ``max_pending``, and listener events ``dropped`` (over the cap)
        and ``lost`` (cancelled, or left by a closed loop) so far."""
        return EventManagerStats(
            pending=len(self._tasks),
            max_pending=self.max_pending,
            dropped=self.dropped,
            lost=self.lost,
        )

    def _current(self, exclude: set[asyncio.Future[Any]]) -> set[asyncio.Future[Any]]:
        # Only tasks of the running loop can be awaited here; a task never waits for itself.
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        return {t for t in self._tasks if t.get_loop() is loop and t is not me} - exclude

    async def wait_for_tasks(self) -> int:
        """Waits until every tracked task of the running loop is done, including tasks started
        meanwhile. Listener errors are not raised: they were logged.

        Returns how many tasks it found still running (one that ended before it looked is not
        counted, so the number depends on scheduling; 0 means there was nothing to wait for).
        """
        waited: set[asyncio.Future[Any]] = set()
        while batch := self._current(waited):
            await asyncio.wait(batch)
            waited |= batch
        return len(waited)

    async def cancel_tasks(self) -> int:
        """Cancels the tracked tasks of the running loop and waits for them to end. Returns how
        many were cancelled (not counted as lost)."""
        batch = self._current(set())
        for task in batch:
            self._cancelling.add(task)
            task.cancel()
        if batch:
            await asyncio.wait(batch)
        return len(batch)
