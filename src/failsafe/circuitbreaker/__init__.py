"""Circuit breaker: stop calling a dependency that keeps failing, and probe it before trusting it
again.

States (``breaker.state``): **working** (closed: calls pass and their outcomes are judged),
**failing** (open: calls are rejected with :class:`BreakerFailing` until the break ends),
**recovering** (half-open: up to ``half_open_max_calls`` probe calls at a time;
``recovery_threshold`` successful probes close the breaker, one failed probe opens it again).

What counts:

* a result is a success; an exception matching ``on`` is a failure;
* any other exception, and a cancellation, changes nothing (a probe slot it held is freed);
* with ``slow_call_duration``, a call that takes at least that long (failsafe's clock, which
  ``failsafe.testing.FakeClock`` drives) is slow: without ``slow_call_rate`` a slow call is a
  failure; with it, slow calls have a ratio threshold of their own (window breakers only). A
  slow probe is a failed probe. (The ``success`` and ``failure`` metrics and events say how a
  call ended: a slow call that returned is a success there, and ``window_slow_calls`` in
  ``stats()`` shows the slow ones.)

When it opens (one mode per breaker):

* consecutive (default): ``failure_threshold`` failures in a row;
* ``failure_rate`` with ``window_calls``: the failure ratio of the last ``window_calls`` calls;
* ``failure_rate`` with ``window_time``: the failure ratio of the calls that ended in the last
  ``window_time`` seconds, kept in ``window_buckets`` buckets (the window slides one bucket at
  a time);

a window is judged once it holds at least ``min_calls`` calls. The break lasts
``recovery_time`` seconds, multiplied by ``recovery_backoff`` for each further opening without
a close in between, up to ``max_recovery_time``. The move from failing to recovering happens
at the first call after the break (``state`` reads "failing" until then). An outcome counts only
in the state it was admitted in: a call still running when the breaker opens changes nothing
when it ends.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Final, Self

from failsafe import _core, _native, events
from failsafe.circuitbreaker._options import NS, BreakerOptions, to_ns
from failsafe.circuitbreaker._options import seconds as check_seconds
from failsafe.circuitbreaker.exceptions import BreakerFailing
from failsafe.stats import CircuitBreakerStats

__all__ = [
    "BreakerFailing",
    "BreakerListener",
    "BreakerState",
    "CircuitBreaker",
    "CircuitBreakerStats",
    "circuitbreaker",
    "consecutive_breaker",
    "register_breaker_listener",
]


# Counter indexes, transition bits, event kinds and modes: the C module defines them.
TRANSITION_WORKING, TRANSITION_RECOVERING, TRANSITION_FAILING, SUCCESS, FAILURE, REJECTED = (
    _core.counter_indexes(
        "circuitbreaker",
        "transition.working",
        "transition.recovering",
        "transition.failing",
        "success",
        "failure",
        "rejected",
    )
)
_TO_WORKING, _TO_RECOVERING, _TO_FAILING = (
    _native.BREAKER_TRANSITIONS[s] for s in ("working", "recovering", "failing")
)
_EV_SUCCESS, _EV_FAILURE, _EV_REJECTED = (
    _native.BREAKER_EVENTS[e] for e in ("success", "failure", "rejected")
)


# Configurations validated already, by the arguments (and their types) that gave them: the
# factory of a keyed registry builds the same breaker for every key, validated once.
_SEEN: dict[tuple[Any, ...], tuple[_native.Breaker, BreakerOptions]] = {}
_SEEN_MAX: Final = 256


class BreakerState(enum.StrEnum):
    """A breaker state; equal to its name (``state == "working"``). ``.name`` and ``.NAME`` are
    "working", "failing" or "recovering", as failsafe-py's state objects had."""

    working = "working"
    recovering = "recovering"
    failing = "failing"

    @property
    def NAME(self) -> str:  # failsafe-py's attribute name
        return self.value


# Indexed by the C state (fs_br_state).
_STATES: Final = tuple(BreakerState(name) for name in _native.BREAKER_STATES)


class BreakerListener:
    """Circuit breaker events. Methods may be sync or async; override the ones you need.

    ``breaker`` is the CircuitBreaker; states are BreakerState members.
    """

    def on_working(
        self, breaker: CircuitBreaker, current_state: BreakerState, next_state: BreakerState
    ) -> Any:
        """The breaker closed (after enough successful probes, or reset())."""

    def on_recovering(
        self, breaker: CircuitBreaker, current_state: BreakerState, next_state: BreakerState
    ) -> Any:
        """The break is over: the breaker admits probe calls."""

    def on_failing(
        self, breaker: CircuitBreaker, current_state: BreakerState, next_state: BreakerState
    ) -> Any:
        """The breaker opened (failures, a failed probe, or isolate())."""

    def on_success(self, breaker: CircuitBreaker, state: BreakerState) -> Any:
        """A call succeeded; state is the breaker's state when it ended (before any transition
        it causes, which is reported after)."""

    def on_failure(
        self, breaker: CircuitBreaker, exception: BaseException, state: BreakerState
    ) -> Any:
        """A call failed with an exception matching ``on``."""

    def on_rejected(self, breaker: CircuitBreaker, state: BreakerState) -> Any:
        """A call was rejected with BreakerFailing."""


def register_breaker_listener(listener: Any) -> None:
    """Adds a listener (or listener factory) of every circuit breaker, existing and future."""
    events.register_listener("circuitbreaker", listener)


class CircuitBreaker(_core.Component, _native.Breaker):
    """A circuit breaker (see the module docstring). Decorate async functions with it (all of
    them share its state), or guard a block with ``async with breaker:``.

    * ``on``: what is a failure: an exception class, a tuple of them, or a sync predicate.
    * ``failure_threshold`` (default 5): consecutive failures that open it (consecutive mode,
      used when ``failure_rate`` is not given).
    * ``failure_rate``: a ratio in (0, 1]; the breaker opens when failures / calls in its
      window reach it. The window is the last ``window_calls`` calls (default 100), or with
      ``window_time`` the calls of the last that many seconds, in ``window_buckets`` buckets
      (default 10). ``min_calls``: calls the window must hold before it is judged (default
      10, at most ``window_calls``).
    * ``slow_call_duration`` (seconds): calls at least that long are slow; slow calls are
      failures, unless ``slow_call_rate`` (a ratio, window breakers) gives them a threshold
      of their own.
    * ``recovery_time`` (seconds, default 30): the break before probing. ``recovery_backoff``
      (>= 1, default 1): multiplies the break at each further opening without a close, up to
      ``max_recovery_time`` (default 10 x recovery_time when backing off).
    * ``recovery_threshold`` (default 3): successful probes that close it;
      ``half_open_max_calls`` (default ``recovery_threshold``): probes at a time.
    * ``store`` (with ``name``): the open state, the break and the probes are shared by every
      process using the same store (:mod:`failsafe.stores`); failures are counted per process.
    * ``retry_after`` (default False): True, or a callable failure -> seconds | None, takes
      the break from the failure itself (see :mod:`failsafe.signals`): a failure asking for a
      delay (a 503 with ``Retry-After: 30``) opens the breaker at once for that long, at most
      ``max_recovery_time``. ``open_for(seconds)`` does the same by hand.

    Methods: ``isolate()`` forces it failing until ``reset()``, which closes it with an empty
    window. ``state`` is the current BreakerState. ``stats()`` has the counters and the
    window's figures.

    ``_holds_state()`` is for keyed registries that evict idle breakers: True when forgetting
    this breaker (and building a fresh one later) would lose information, that is when it is
    not working, is isolated, has failures or slow calls in its window (or run of consecutive
    failures), or has probes in flight. A working breaker with only successes (or nothing) in
    its window may be dropped.

    Metrics: ``transition.working``, ``transition.recovering``, ``transition.failing``,
    ``success``, ``failure``, ``rejected``.
    """

    # Its settings in slots, no instance __dict__ until something else is set: the copies a
    # keyed registry makes per key (_clone) share them by reference.
    __slots__ = (*_core.COMPONENT_SLOTS, "_options", "__dict__")

    PATTERN: ClassVar[str] = "circuitbreaker"
    _WORKING: ClassVar[BreakerState] = BreakerState.working  # on_success's state, read by C
    METRICS: ClassVar[tuple[str, ...]] = _native.METRICS["circuitbreaker"]

    def __new__(cls, *args: Any, store: Any = None, **kw: Any) -> Self:
        # The open state shared through a store: a SharedBreaker.
        where = "failsafe.stores._breaker:SharedBreaker"
        return super().__new__(_core.store_variant(cls, CircuitBreaker, store, where))

    def __init__(
        self,
        *,
        on: Any = Exception,
        failure_threshold: int | None = None,
        failure_rate: float | None = None,
        window_calls: int | None = None,
        window_time: float | None = None,
        window_buckets: int = 10,
        min_calls: int | None = None,
        slow_call_duration: float | None = None,
        slow_call_rate: float | None = None,
        recovery_time: float = 30.0,
        recovery_threshold: int = 3,
        half_open_max_calls: int | None = None,
        recovery_backoff: float = 1.0,
        max_recovery_time: float | None = None,
        name: str | None = None,
        listeners: Iterable[Any] | None = None,
        event_manager: Any = None,
        store: Any = None,
        retry_after: bool | Callable[[BaseException], float | None] = False,
    ) -> None:
        if store is not None:
            raise TypeError("store= is not supported by subclasses of CircuitBreaker")
        self._init_component(name, listeners, event_manager)
        given = (
            on,
            failure_threshold,
            failure_rate,
            window_calls,
            window_time,
            window_buckets,
            min_calls,
            slow_call_duration,
            slow_call_rate,
            recovery_time,
            recovery_threshold,
            half_open_max_calls,
            recovery_backoff,
            max_recovery_time,
            retry_after,
        )
        try:  # the types too: True == 1, but True is no threshold
            seen = _SEEN.get(key := (given, tuple(map(type, given))))
        except TypeError:  # an unhashable argument: checked below, and not kept
            seen = key = None
        if seen is not None:  # validated before: only configured, as that breaker was
            self._adopt(seen[0])
            self._options = seen[1]
            return
        o = BreakerOptions.check(
            on=on,
            failure_threshold=failure_threshold,
            failure_rate=failure_rate,
            window_calls=window_calls,
            window_time=window_time,
            window_buckets=window_buckets,
            min_calls=min_calls,
            slow_call_duration=slow_call_duration,
            slow_call_rate=slow_call_rate,
            recovery_time=recovery_time,
            recovery_threshold=recovery_threshold,
            half_open_max_calls=half_open_max_calls,
            recovery_backoff=recovery_backoff,
            max_recovery_time=max_recovery_time,
            retry_after=retry_after,
        )
        self._configure(**o.configuration())
        self._options = o
        if key is not None:
            if len(_SEEN) >= _SEEN_MAX:
                _SEEN.clear()
            configured = _native.Breaker()
            configured._adopt(self)
            _SEEN[key] = (configured, o)

    def _clone(self) -> Self:
        """A fresh working breaker configured as this one, none of its state: a keyed
        registry's breaker for a new key, made from this one as a template."""
        clone: Self = self._copy()
        return clone

    _clone._copies_only = True  # type: ignore[attr-defined]  # keyed may call _copy itself

    @property
    def _mode(self) -> str:
        return self._options.mode

    @property
    def _recovery_time(self) -> float:
        return self._options.recovery_time

    @property
    def state(self) -> BreakerState:
        """The current state (working, failing or recovering)."""
        return _STATES[self._state()]

    def open_for(self, seconds: float) -> None:
        """Opens the breaker now for ``seconds`` (a break the dependency asked for, e.g. a
        503's ``Retry-After``); a failing breaker's break ends no earlier than that. No effect
        while isolated. After the break it recovers as after any other."""
        self._trip(to_ns(check_seconds(seconds, "seconds")))

    @property
    def recovery_time(self) -> float:
        """The first break's length, in seconds."""
        return self._options.recovery_time

    # failsafe-py's BreakerContext, the first argument of its listeners, held these; the
    # breaker itself is that argument now (failsafe.circuitbreaker.context).

    @property
    def breaker_name(self) -> str:
        """The component name (failsafe-py's ``BreakerContext.breaker_name``)."""
        return self.name

    @property
    def exceptions(self) -> Any:
        """What counts as a failure: the exception classes, or the predicate given as ``on``."""
        o = self._options
        return o.on if o.on is not None else o.on_pred

    @property
    def failure_threshold(self) -> int | None:
        """Consecutive failures that open a consecutive breaker; None for a window breaker."""
        return self._options.failure_threshold

    @property
    def recovery_time_secs(self) -> float:
        """failsafe-py's name of :attr:`recovery_time`."""
        return self._options.recovery_time

    @property
    def recovery_threshold(self) -> int:
        """Successful probes that close the breaker."""
        return self._options.recovery_threshold

    def _events(self, kind: int, exc: BaseException | None, old: int, bits: int) -> None:
        """Called by the C core, only when somebody listens."""
        state = _STATES[old]
        if kind == _EV_SUCCESS:
            events.emit(self, "on_success", (state,))
        elif kind == _EV_FAILURE:
            events.emit(self, "on_failure", (exc, state))
        elif kind == _EV_REJECTED:
            events.emit(self, "on_rejected", (state,))
        for bit, method, target in (
            (_TO_RECOVERING, "on_recovering", BreakerState.recovering),
            (_TO_FAILING, "on_failing", BreakerState.failing),
            (_TO_WORKING, "on_working", BreakerState.working),
        ):
            if bits & bit:
                events.emit(self, method, (state, target))
                state = target

    def _stat_values(self) -> dict[str, Any]:
        state, isolated, consecutive, calls, failures, slow, probes, successes, after, _ = (
            self._snapshot()
        )
        return dict(
            super()._stat_values(),
            state=_STATES[state].value,
            isolated=bool(isolated),
            mode=self._options.mode,
            consecutive_failures=consecutive,
            window_calls=calls,
            window_failures=failures,
            window_slow_calls=slow,
            probes_in_flight=probes,
            probe_successes=successes,
            retry_after=None if after < 0 else after / NS,
        )

    def stats(self) -> CircuitBreakerStats:
        """Counters, state, and the figures of the current period: consecutive failures and
        the window's calls, failures and slow calls (working), probes in flight and probe
        successes (recovering), seconds left of the break (failing, None when isolated)."""
        return CircuitBreakerStats(**self._stat_values())

    def __repr__(self) -> str:
        s = self.stats()
        return (
            f"<circuitbreaker {self._name!r} state={s['state']} mode={self._options.mode}"
            f" success={s['success']} failure={s['failure']} rejected={s['rejected']}>"
        )


_core.show_init_signature(CircuitBreaker)


if TYPE_CHECKING:  # the methods C calls by name
    _breaker_events: type[_native.BreakerEvents] = CircuitBreaker


circuitbreaker = CircuitBreaker  # the factory is the class itself, as for timeout and bulkhead


class _Missing(enum.Enum):
    MISSING = enum.auto()


_MISSING: Final = _Missing.MISSING


def consecutive_breaker(
    exceptions: Any = _MISSING,
    failure_threshold: int = 5,
    recovery_time_secs: float | _Missing = _MISSING,
    recovery_threshold: int = 3,
    listeners: Iterable[Any] | None = None,
    name: str | None = None,
    event_manager: Any = None,
    *,
    on: Any = _MISSING,
    recovery_time: float | _Missing = _MISSING,
    half_open_max_calls: int | None = None,
    slow_call_duration: float | None = None,
    recovery_backoff: float = 1.0,
    max_recovery_time: float | None = None,
    store: Any = None,
) -> CircuitBreaker:
    """failsafe-py's breaker: opens after ``failure_threshold`` consecutive failures (of
    ``exceptions``, also spelled ``on``), rejects for ``recovery_time_secs`` (also spelled
    ``recovery_time``) seconds, then closes after ``recovery_threshold`` successful probes.
    Unlike failsafe-py's, at most ``half_open_max_calls`` probes (default
    ``recovery_threshold``) run at once while recovering."""
    if exceptions is not _MISSING and on is not _MISSING:
        raise TypeError("consecutive_breaker() takes exceptions or on, not both")
    if recovery_time_secs is not _MISSING and recovery_time is not _MISSING:
        raise TypeError("consecutive_breaker() takes recovery_time_secs or recovery_time, not both")
    if on is _MISSING:
        on = Exception if exceptions is _MISSING else exceptions
    seconds: float = 30.0
    if recovery_time_secs is not _MISSING:
        # The options' check of recovery_time, under failsafe-py's name.
        seconds = check_seconds(recovery_time_secs, "recovery_time_secs")
    elif recovery_time is not _MISSING:
        seconds = recovery_time  # checked as recovery_time below
    return CircuitBreaker(
        on=on,
        failure_threshold=failure_threshold,
        recovery_time=seconds,
        recovery_threshold=recovery_threshold,
        half_open_max_calls=half_open_max_calls,
        slow_call_duration=slow_call_duration,
        recovery_backoff=recovery_backoff,
        max_recovery_time=max_recovery_time,
        name=name,
        listeners=listeners,
        event_manager=event_manager,
        store=store,
    )
