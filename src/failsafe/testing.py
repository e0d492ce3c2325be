"""Helpers that make tests of code using failsafe deterministic and fast.

* FakeClock: virtual monotonic time for the C core (breaker windows, budgets, rate limits…).
  It does not touch the event loop's clock: loop timers (timeouts) still use real time.
* instant_waits(): failsafe's own waits (retry backoff, hedge delays) return at once; with a
  FakeClock installed they advance it by the delay instead, so time still "passes".
* seed(): makes the jitter of backoffs repeatable.

Every wait failsafe makes goes through sleep() in this module, which is what the switch acts on.
"""

from __future__ import annotations

import asyncio
import math
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Final, Self

from failsafe import _native

__all__ = ["FakeClock", "instant_waits", "is_instant", "seed", "sleep"]

_NS_PER_S: Final = 1_000_000_000
_MAX_NS: Final = 2**63 - 1  # the C core keeps time in int64 nanoseconds

_clock: FakeClock | None = None  # the installed FakeClock, if any
_instant = False


def _check_ns(value: object, param: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{param} must be an int, not {type(value).__name__}")
    if not 0 <= value <= _MAX_NS:
        raise ValueError(f"{param} must be between 0 and 2**63 - 1, got {value}")
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
    uninstall() (e.g. from a pytest fixture). One FakeClock can be installed at a time; time
    never goes backwards, as the core requires of a monotonic clock.
    """

    def __init__(self, start_ns: int = 0) -> None:
        self._now_ns = _check_ns(start_ns, "start_ns")

    @property
    def now_ns(self) -> int:
        """Current virtual time in nanoseconds."""
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
            _native._set_clock(ns)

    def install(self) -> Self:
        """Makes the C core read this clock. Installing it again does nothing."""
        global _clock
        if _clock is not None and _clock is not self:
            raise RuntimeError("another FakeClock is installed; uninstall it first")
        _native._set_clock(self._now_ns)
        _clock = self
        return self

    def uninstall(self) -> None:
        """Gives the C core its real clock back (no-op if this clock is not installed)."""
        global _clock
        if _clock is self:
            _native._set_clock(None)
            _clock = None

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
        global _instant
        _instant = self._previous


def instant_waits(enabled: bool = True) -> AbstractContextManager[None]:
    """Makes failsafe's waits instant (or real again with False), for the whole process.

    Takes effect at once, like stamina's set_testing(); used as `with instant_waits():` it
    also restores the previous setting on exit.
    """
    global _instant
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, not {type(enabled).__name__}")
    previous, _instant = _instant, enabled
    return _Switch(previous)


def is_instant() -> bool:
    """Whether failsafe's waits are instant (see instant_waits())."""
    return _instant


async def sleep(delay: float) -> None:
    """Waits delay seconds: the one wait every failsafe pattern uses (retry backoff, hedge
    delays), so instant_waits() and FakeClock act on all of them.

    When waits are instant it only lets the event loop turn once (other tasks still run, and a
    cancellation still lands here), after advancing the installed FakeClock by delay.
    """
    if not _instant:
        await asyncio.sleep(delay)
        return
    if _clock is not None and delay > 0:
        _clock.advance(delay)
    await asyncio.sleep(0)


def seed(n: int) -> None:
    """Seeds the C core's jitter RNG, so backoff jitter repeats from run to run."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, not {type(n).__name__}")
    if not 0 <= n < 2**64:
        raise ValueError(f"n must be between 0 and 2**64 - 1, got {n}")
    _native.seed(n)
