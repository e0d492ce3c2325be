"""Helpers that make tests of code using failsafe deterministic and fast.

* FakeClock: virtual monotonic time for the C core (breaker windows, budgets, rate limits,
  hedge latencies…), and for failsafe's own waits (retry backoff, hedge delays, rate limiter
  waits), which end when the clock has been moved far enough. It does not touch the event
  loop's clock: loop timers (timeouts) still use real time. Time as policies see it never goes
  backwards, across installs and uninstalls (see FakeClock).
* instant_waits(): failsafe's own waits return at once; with a FakeClock installed they
  advance it by the delay instead, so time still "passes". Per task (a context variable).
* seed(): makes the jitter of backoffs repeatable.
* simulate(): a failsafe stack against a simulated dependency, on virtual time
  (failsafe.simulation).

Every wait failsafe makes goes through sleep() in this module, which is what both act on.
"""

from __future__ import annotations

import asyncio
import math
from contextlib import AbstractContextManager
from contextvars import ContextVar
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

from failsafe import _native

if TYPE_CHECKING:
    from failsafe.simulation import Report, Stack

__all__ = [
    "FakeClock",
    "changes_waits",
    "instant_waits",
    "is_instant",
    "seed",
    "simulate",
    "sleep",
]

_NS_PER_S: Final = 1_000_000_000
# The C core keeps time in int64 nanoseconds and adds periods of up to ~2**61 ns to it: a fake
# time is kept below 2**62 (146 years) so that no deadline it computes can overflow.
_MAX_NS: Final = 2**62

_clock: FakeClock | None = None  # the installed FakeClock, if any
# Whether waits are instant, per task (see instant_waits()).
_instant: Final[ContextVar[bool]] = ContextVar("failsafe_instant_waits", default=False)
# Set once instant waits are first enabled: the C core then looks at _instant too.
_instant_used = False


def _check_ns(value: object, param: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{param} must be an int, not {type(value).__name__}")
    if not 0 <= value <= _MAX_NS:
        raise ValueError(f"{param} must be between 0 and 2**62, got {value}")
    return value


def _seconds_to_ns(value: object, param: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{param} must be a number, not {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{param} must be finite, got {value}")
    if value < 0:
        raise ValueError(f"{param} must be >= 0, got {value}")
    return _check_ns(round(value * _NS_PER_S), param)


class FakeClock:
    """Virtual monotonic time for the C core, moved only by advance(), set() and instant waits.

    Use it as a context manager (`with FakeClock() as clock:`) or call install() and
    uninstall() (e.g. from a pytest fixture). One FakeClock can be installed at a time.

    Time as policies see it never goes backwards, so policies that already hold state (a
    module-level limiter, a breaker opened earlier) behave the same across installs:

    * the clock reads from start_ns (0 by default) in its own terms, and the core sees that
      reading shifted forward by a constant (its *anchor*) when failsafe's time was already
      later at install: a FakeClock() installed an hour into the process reads 0 while
      policies see one hour, and advancing it by 1 s moves both by 1 s. Durations, windows and
      ``retry_after`` are what policies compare, and they are the same in both terms;
    * uninstalling it gives the core the real clock back, shifted forward if the fake clock
      ran ahead of it, so it resumes from the fake time (a `FakeClock(start_ns=10**18)` block
      leaves failsafe's clock at 10**18 ns and counting).
    """

    def __init__(self, start_ns: int = 0) -> None:
        self._now_ns = _check_ns(start_ns, "start_ns")
        self._anchor_ns = 0  # added to the reading for the core; only ever raised

    @property
    def now_ns(self) -> int:
        """Current virtual time in nanoseconds (the clock's own reading)."""
        return self._now_ns

    def now(self) -> float:
        """Current virtual time in seconds."""
        return self._now_ns / _NS_PER_S

    @property
    def installed(self) -> bool:
        return _clock is self

    def advance(self, seconds: float) -> None:
        """Moves time forward by seconds (>= 0)."""
        self.advance_ns(_seconds_to_ns(seconds, "seconds"))

    def advance_ns(self, ns: int) -> None:
        """Moves time forward by ns nanoseconds (>= 0)."""
        self.set_ns(self._now_ns + _check_ns(ns, "ns"))

    def set(self, seconds: float) -> None:
        """Sets the time to seconds, which must not be earlier than now."""
        self.set_ns(_seconds_to_ns(seconds, "seconds"))

    def set_ns(self, ns: int) -> None:
        """Sets the time to ns nanoseconds, which must not be earlier than now."""
        ns = _check_ns(ns, "ns")
        if ns < self._now_ns:
            raise ValueError(f"a monotonic clock cannot go back: {ns} < now_ns {self._now_ns}")
        self._now_ns = ns
        if _clock is self:
            _native._set_clock(self._core_ns())
            _wake_sleepers()

    def _core_ns(self) -> int:
        return min(self._now_ns + self._anchor_ns, _MAX_NS)

    def install(self) -> Self:
        """Makes the C core read this clock. Installing it again does nothing."""
        global _clock
        if _clock is self:
            return self
        if _clock is not None:
            raise RuntimeError("another FakeClock is installed; uninstall it first")
        # Anchored so that the core's time does not go back from where it is now.
        self._anchor_ns = max(self._anchor_ns, _native.now_ns() - self._now_ns)
        _native._set_clock(self._core_ns())
        _clock = self
        return self

    def uninstall(self) -> None:
        """Gives the C core its real clock back, resuming from this clock's time if that is
        later (no-op if this clock is not installed)."""
        global _clock
        if _clock is self:
            _native._set_clock(None)
            _clock = None
            _wake_sleepers()

    def __enter__(self) -> Self:
        return self.install()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.uninstall()

    def __repr__(self) -> str:
        state = "installed" if self.installed else "not installed"
        return f"<FakeClock now={self.now()}s {state}>"


class _Switch(AbstractContextManager[None]):
    """Returned by instant_waits(): the switch is already set; `with` restores it on exit."""

    def __init__(self, previous: bool) -> None:
        self._previous = previous

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _instant.set(self._previous)


def instant_waits(enabled: bool = True) -> AbstractContextManager[None]:
    """Makes failsafe's waits instant (or real again with False) in the current context.

    The switch is a context variable: it holds for the calling task (or thread) and for the
    tasks it starts afterwards, and tasks that enter and leave `with instant_waits():` in any
    interleaving each restore their own previous setting. Called from sync code before the
    event loop starts (or from a pytest fixture), it covers every task of that loop. It takes
    effect at once, like stamina's set_testing(); `with` restores the previous setting on exit.
    """
    global _instant_used
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, not {type(enabled).__name__}")
    previous = _instant.get()
    _instant.set(enabled)
    if enabled and not _instant_used:
        _instant_used = True
        _native._set_instant_var(_instant)  # from now on hedged calls look at it
    return _Switch(previous)


def changes_waits() -> bool:
    """Whether a FakeClock is installed or waits are instant in the current context: failsafe's
    waits are then not plain loop timers (hedged calls wait through sleep())."""
    return _clock is not None or _instant.get()


def is_instant() -> bool:
    """Whether failsafe's waits are instant in the current context (see instant_waits())."""
    return _instant.get()


# Tasks waiting on the installed FakeClock: future -> the core time (ns) it waits for.
_sleepers: dict[asyncio.Future[None], int] = {}


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _wake_sleepers() -> None:
    """Wakes the waits that are due (every one when the fake clock is gone): each checks the
    time again in its own loop."""
    if not _sleepers:
        return
    now = _native.now_ns()
    gone = _clock is None
    for fut, due in list(_sleepers.items()):
        if gone or due <= now:
            del _sleepers[fut]
            loop = fut.get_loop()
            if loop.is_closed():
                continue
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                _wake(fut)
            else:  # advanced from another thread or loop
                loop.call_soon_threadsafe(_wake, fut)


async def sleep(delay: float) -> None:
    """Waits delay seconds: the one wait every failsafe pattern uses (retry backoff, hedge
    delays, rate limiter waits), so instant_waits() and FakeClock act on all of them.

    * Waits instant (instant_waits()): it only lets the event loop turn once (other tasks still
      run, and a cancellation still lands here), after advancing the installed FakeClock by
      delay.
    * A FakeClock installed: the wait is on that clock, the one policies measure time on; it
      ends once the clock has been moved delay seconds on (advance(), set(), or another task's
      instant wait), or continues in real time if the clock is uninstalled meanwhile.
    * Otherwise: asyncio.sleep(delay).
    """
    if _instant.get():
        if _clock is not None and delay > 0:
            _clock.advance(delay)
        await asyncio.sleep(0)
        return
    if _clock is None or not delay > 0:
        await asyncio.sleep(delay)
        return
    due = min(_native.now_ns() + math.ceil(delay * _NS_PER_S), _MAX_NS)
    loop = asyncio.get_running_loop()
    while _clock is not None:
        if _native.now_ns() >= due:
            return
        fut: asyncio.Future[None] = loop.create_future()
        _sleepers[fut] = due
        try:
            await fut
        finally:
            _sleepers.pop(fut, None)
    remaining = (due - _native.now_ns()) / _NS_PER_S
    if remaining > 0:
        await asyncio.sleep(remaining)


def seed(n: int) -> None:
    """Seeds the C core's jitter RNG, so backoff jitter repeats from run to run."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, not {type(n).__name__}")
    if not 0 <= n < 2**64:
        raise ValueError(f"n must be between 0 and 2**64 - 1, got {n}")
    _native.seed(n)


def simulate(stack: Stack | None = None, **kwargs: Any) -> Report:
    """Runs a failsafe stack against a simulated dependency on virtual time: see
    :func:`failsafe.simulation.simulate` for the parameters and :class:`Report` for what
    comes back."""
    from failsafe.simulation import simulate as run

    return run(stack, **kwargs)
