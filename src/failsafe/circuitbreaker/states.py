"""failsafe-py's ``failsafe.circuitbreaker.states``: the breaker's states and what each holds.

:class:`BreakerState` is what ``breaker.state`` returns and what listeners receive
(``BreakerState.working`` / ``.failing`` / ``.recovering``, each equal to its name). failsafe-py's
state objects also carried the figures of their state; :func:`state_of` gives them, as a
:class:`WorkingState`, :class:`FailingState` or :class:`RecoveringState` snapshot::

    snapshot = state_of(breaker)
    if isinstance(snapshot, FailingState):
        print(f"open, retry in {snapshot.retry_after} s")
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import ClassVar, Final

from failsafe.circuitbreaker import BreakerState as BreakerState
from failsafe.circuitbreaker import CircuitBreaker

__all__ = ["BreakerState", "FailingState", "RecoveringState", "WorkingState", "state_of"]

_NS: Final = 1_000_000_000


@dataclass(frozen=True, slots=True)
class _Snapshot:
    STATE: ClassVar[BreakerState]

    @property
    def name(self) -> str:
        """ "working", "failing" or "recovering"."""
        return self.STATE.value

    @property
    def NAME(self) -> str:  # failsafe-py's attribute name
        return self.STATE.value

    @property
    def state(self) -> BreakerState:
        """The state this snapshot is of."""
        return self.STATE


@dataclass(frozen=True, slots=True)
class WorkingState(_Snapshot):
    """Closed: calls pass and their outcomes are judged.

    ``consecutive_exceptions``: failures in a row so far (the consecutive breaker's count);
    ``window_calls`` / ``window_failures`` / ``window_slow_calls``: what a window breaker's
    window holds now.
    """

    STATE: ClassVar[BreakerState] = BreakerState.working
    consecutive_exceptions: int
    window_calls: int
    window_failures: int
    window_slow_calls: int


@dataclass(frozen=True, slots=True)
class FailingState(_Snapshot):
    """Open: calls are rejected with BreakerFailing until the break ends.

    ``retry_after``: seconds until probe calls are admitted (None while isolated);
    ``isolated``: forced open by ``isolate()`` until ``reset()``.
    """

    STATE: ClassVar[BreakerState] = BreakerState.failing
    retry_after: float | None
    isolated: bool

    @property
    def remain(self) -> datetime.timedelta | None:
        """failsafe-py's ``remain``: the rest of the break as a timedelta (None: isolated)."""
        return None if self.retry_after is None else datetime.timedelta(seconds=self.retry_after)


@dataclass(frozen=True, slots=True)
class RecoveringState(_Snapshot):
    """Half-open: probe calls test the dependency.

    ``consecutive_successes``: successful probes so far (``recovery_threshold`` of them close
    the breaker); ``probes_in_flight``: probes running now (at most ``half_open_max_calls``).
    """

    STATE: ClassVar[BreakerState] = BreakerState.recovering
    consecutive_successes: int
    probes_in_flight: int


def state_of(breaker: CircuitBreaker) -> WorkingState | FailingState | RecoveringState:
    """The breaker's current state with its figures (one consistent read of the C core)."""
    state, isolated, consecutive, calls, failures, slow, probes, successes, after, _ = (
        breaker._snapshot()
    )
    # Indexed by the C state (fs_br_state): working, recovering, failing.
    if state == 0:
        return WorkingState(consecutive, calls, failures, slow)
    if state == 1:
        return RecoveringState(successes, probes)
    return FailingState(None if after < 0 else after / _NS, bool(isolated))
