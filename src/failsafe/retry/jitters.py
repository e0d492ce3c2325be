"""Jitters: functions from a delay to a randomised delay, drawn from failsafe's seeded RNG
(``failsafe.testing.seed``). Pass them as ``jitter=`` to a backoff."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from failsafe import _native

__all__ = ["JitterT", "equal", "full"]

JitterT = Callable[[float], float]

FULL: Final = 1
EQUAL: Final = 2


def full(delay: float) -> float:
    """Uniform in [0, delay]: spreads retries the most (AWS "full jitter")."""
    return float(_native.Backoff.apply_jitter(FULL, delay))


def equal(delay: float) -> float:
    """delay/2 plus uniform in [0, delay/2]: keeps at least half the delay."""
    return float(_native.Backoff.apply_jitter(EQUAL, delay))


def kind_of(jitter: object) -> int | None:
    """The C jitter kind of a built-in jitter (0 for none), or None for a custom callable."""
    if jitter is None:
        return 0
    if jitter is full or jitter == "full":
        return FULL
    if jitter is equal or jitter == "equal":
        return EQUAL
    if callable(jitter):
        return None
    raise TypeError(
        f"jitter must be failsafe.retry.jitters.full/equal, a callable or None, not {jitter!r}"
    )
