"""A circuit breaker's parameters, checked once.

Every breaker (consecutive, count window, time window, and the one shared through a store, a
subclass) takes its parameters from one BreakerOptions: each has one default and one check,
naming it. The C breaker trusts what it is given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from failsafe import _core, _native

NS: Final = 1_000_000_000
MAX_SECONDS: Final = 1e9  # about 31 years: every duration fits the core's int64 nanoseconds
MAX_WINDOW_CALLS: Final = 1_000_000
MAX_BUCKETS: Final = 1_000
MAX_COUNT: Final = 2**31 - 1


def seconds(value: object, param: str, *, allow_zero: bool = True) -> float:
    """A duration of at most MAX_SECONDS, naming param."""
    checked = float(_core.check_number(value, param, allow_zero=allow_zero))
    if checked > MAX_SECONDS:
        raise ValueError(f"{param} must be at most {MAX_SECONDS:g} seconds, got {checked}")
    return checked


def to_ns(secs: float) -> int:
    return round(secs * NS)


def _count(value: object, param: str, *, maximum: int = MAX_COUNT) -> int:
    return int(_core.check_int(value, param, maximum=maximum))


def _ratio(value: object, param: str) -> float:
    checked = float(_core.check_number(value, param, allow_zero=False))
    if checked > 1:
        raise ValueError(f"{param} is a ratio in (0, 1], got {checked}")
    return checked


@dataclass(frozen=True, slots=True)
class BreakerOptions:
    """Checked parameters of one breaker, and the units the C breaker takes."""

    mode: str = "consecutive"  # a key of _native.BREAKER_MODES
    on: tuple[type[BaseException], ...] | None = (Exception,)
    on_pred: Callable[[BaseException], Any] | None = None  # on= given as a predicate
    failure_threshold: int | None = 5  # consecutive failures; None for a window breaker
    failure_rate: float | None = None  # a window breaker's ratio
    window_size: int = 0  # calls (count window) or buckets (time window); 0: consecutive
    window_ns: int = 0  # a time window's length
    min_calls: int = 0  # calls a window holds before it is judged
    slow_ns: int = 0  # 0: no slow-call detection
    slow_rate: float | None = None  # None: a slow call is a failure
    recovery_time: float = 30.0  # seconds: the first break
    recovery_threshold: int = 3  # successful probes that close it
    half_open_max_calls: int = 3  # probes at a time
    recovery_growth: float = 1.0  # recovery_backoff
    max_recovery_time: float = 30.0  # seconds: the longest break
    retry_after: Callable[[BaseException], float | None] | None = None  # the break reader

    @classmethod
    def check(
        cls,
        *,
        on: object = Exception,
        failure_threshold: object = None,
        failure_rate: object = None,
        window_calls: object = None,
        window_time: object = None,
        window_buckets: object = 10,
        min_calls: object = None,
        slow_call_duration: object = None,
        slow_call_rate: object = None,
        recovery_time: object = 30.0,
        recovery_threshold: object = 3,
        half_open_max_calls: object = None,
        recovery_backoff: object = 1.0,
        max_recovery_time: object = None,
        retry_after: object = False,
    ) -> BreakerOptions:
        types = _core.check_exceptions(on)
        threshold: int | None = None
        rate: float | None = None
        size = window_ns = least = 0
        if failure_rate is None:
            for param, value in (
                ("window_calls", window_calls),
                ("window_time", window_time),
                ("min_calls", min_calls),
                ("slow_call_rate", slow_call_rate),
            ):
                if value is not None:
                    raise ValueError(f"{param} needs failure_rate (a window breaker)")
            threshold = _count(
                5 if failure_threshold is None else failure_threshold, "failure_threshold"
            )
            mode = "consecutive"
        else:
            if failure_threshold is not None:
                raise ValueError(
                    "failure_threshold counts consecutive failures; a failure_rate breaker"
                    " opens on its window's ratio (use min_calls for the minimum throughput)"
                )
            rate = _ratio(failure_rate, "failure_rate")
            if window_time is not None:
                if window_calls is not None:
                    raise ValueError("window_calls and window_time exclude each other")
                size = _count(window_buckets, "window_buckets", maximum=MAX_BUCKETS)
                window_ns = to_ns(seconds(window_time, "window_time", allow_zero=False))
                if window_ns < size:
                    raise ValueError(
                        f"window_time must last at least window_buckets ({size}) nanoseconds"
                    )
                least = 10 if min_calls is None else _count(min_calls, "min_calls")
                mode = "time_window"
            else:
                size = _count(
                    100 if window_calls is None else window_calls,
                    "window_calls",
                    maximum=MAX_WINDOW_CALLS,
                )
                least = min(10, size) if min_calls is None else _count(min_calls, "min_calls")
                if least > size:
                    raise ValueError(
                        f"min_calls ({least}) must not exceed window_calls ({size}):"
                        " the window would never be judged"
                    )
                # window_buckets is a time window's; checked all the same, as given.
                _count(window_buckets, "window_buckets", maximum=MAX_BUCKETS)
                mode = "count_window"

        slow_ns = 0
        if slow_call_duration is not None:
            slow_ns = max(
                1, to_ns(seconds(slow_call_duration, "slow_call_duration", allow_zero=False))
            )
        slow_rate = None
        if slow_call_rate is not None:
            if slow_call_duration is None:
                raise ValueError("slow_call_rate needs slow_call_duration")
            slow_rate = _ratio(slow_call_rate, "slow_call_rate")

        recovery = seconds(recovery_time, "recovery_time")
        threshold_ok = _count(recovery_threshold, "recovery_threshold")
        probes = (
            threshold_ok
            if half_open_max_calls is None
            else _count(half_open_max_calls, "half_open_max_calls")
        )
        growth = float(_core.check_number(recovery_backoff, "recovery_backoff"))
        if not 1 <= growth <= 1e9:
            raise ValueError(f"recovery_backoff must be between 1 and 1e9, got {growth}")
        if max_recovery_time is None:
            cap = recovery * 10 if growth > 1 else recovery
        else:
            cap = seconds(max_recovery_time, "max_recovery_time")
            if cap < recovery:
                raise ValueError(f"max_recovery_time ({cap}) must be >= recovery_time ({recovery})")
        # Imported here: failsafe.signals reads this package's exception.
        from failsafe import signals

        return cls(
            mode=mode,
            on=types,
            on_pred=None if types is not None else on,  # type: ignore[arg-type]
            failure_threshold=threshold,
            failure_rate=rate,
            window_size=size,
            window_ns=window_ns,
            min_calls=least,
            slow_ns=slow_ns,
            slow_rate=slow_rate,
            recovery_time=recovery,
            recovery_threshold=threshold_ok,
            half_open_max_calls=probes,
            recovery_growth=growth,
            max_recovery_time=cap,
            retry_after=signals.check_retry_after(retry_after),
        )

    def configuration(self) -> dict[str, Any]:
        """The keyword arguments of the C breaker's _configure."""
        kwargs: dict[str, Any] = {
            "mode": _native.BREAKER_MODES[self.mode],
            "on": self.on,
            "on_pred": self.on_pred,
            "recovery_ns": to_ns(self.recovery_time),
            "recovery_threshold": self.recovery_threshold,
            "half_open_max_calls": self.half_open_max_calls,
            "recovery_growth": self.recovery_growth,
            "max_recovery_ns": min(to_ns(self.max_recovery_time), to_ns(MAX_SECONDS * 10)),
        }
        if self.failure_threshold is not None:
            kwargs["failure_threshold"] = self.failure_threshold
        else:
            kwargs.update(
                failure_rate=self.failure_rate,
                window_size=self.window_size,
                min_calls=self.min_calls,
            )
            if self.mode == "time_window":
                kwargs["window_ns"] = self.window_ns
        if self.slow_ns:
            kwargs["slow_ns"] = self.slow_ns
        if self.slow_rate is not None:
            kwargs["slow_rate"] = self.slow_rate
        if self.retry_after is not None:
            kwargs["signal"] = _break_reader(self.retry_after, self.max_recovery_time)
        return kwargs


def _break_reader(
    reader: Callable[[BaseException], float | None], cap: float
) -> Callable[[BaseException], int | None]:
    """The C core's view of a retry_after reader: a failure -> the break it asks for, in ns
    (at most max_recovery_time), or None."""
    from failsafe import signals

    def break_ns(exc: BaseException) -> int | None:
        delay = signals.read_delay(reader, exc, cap)
        return to_ns(delay) if delay > 0 else None

    return break_ns
