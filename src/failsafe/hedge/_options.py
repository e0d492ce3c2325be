"""A hedge's parameters, checked once.

``hedge(...)`` takes its parameters from one HedgeOptions: each has one default and one check,
naming it (an adaptive delay's through :func:`percentile`, which also re-checks a Percentile
built by hand). The C engine trusts what it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from failsafe import _native
from failsafe._core import NS_PER_S, check_int, check_number
from failsafe.retry import RetryBudget

# Every attempt may run at once (delay 0): more copies of one call than this is a mistake.
MAX_ATTEMPTS: Final = 1000
RATIO_WINDOW: Final = 10.0  # seconds: the window of the budget max_hedged_ratio builds


@dataclass(frozen=True, slots=True)
class Percentile:
    """An adaptive hedge delay: see :func:`percentile`."""

    percentile: float
    fallback: float
    window: float
    min_samples: int

    def __str__(self) -> str:
        return f"p{self.percentile:g}"

    @property
    def window_ns(self) -> int:
        return round(self.window * NS_PER_S)


def percentile(
    p: float, *, fallback: float, window: float = 60.0, min_samples: int = 20
) -> Percentile:
    """A hedge delay that follows the ``p``-th percentile (0 < p <= 100) of the latency of
    successful attempts over the last ``window`` seconds (kept in C: a log histogram, within
    12.5 %), and is ``fallback`` seconds until ``min_samples`` latencies are in the window:
    ``hedge(delay=percentile(95, fallback=0.05))`` hedges the slowest 5 % or so.
    """
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(f"p must be a number, not {type(p).__name__}")
    if not 0 < p <= 100:  # NaN fails too
        raise ValueError(f"p must be in (0, 100], got {p}")
    fb = float(check_number(fallback, "fallback", allow_zero=False))
    w = float(check_number(window, "window", allow_zero=False))
    if not 1e-6 <= w <= 1e9:
        raise ValueError(f"window must be between 1e-06 and 1e9 seconds, got {w}")
    n = check_int(min_samples, "min_samples")
    return Percentile(float(p), fb, w, n)


@dataclass(frozen=True, slots=True)
class HedgeOptions:
    """Checked parameters of one hedge, as the C engine takes them."""

    attempts: int = 2
    delay: float = 0.0  # seconds; an adaptive delay's fallback
    percentile: Percentile | None = None  # an adaptive delay
    timeout: float | None = None  # seconds for the whole call; None: no limit
    budget: RetryBudget | None = None  # max_hedged_ratio builds one

    @classmethod
    def check(
        cls,
        *,
        attempts: object = 2,
        delay: object = 0.0,
        timeout: object = None,
        budget: object = None,
        max_hedged_ratio: object = None,
    ) -> HedgeOptions:
        count = int(check_int(attempts, "attempts", maximum=MAX_ATTEMPTS))
        pct = None
        if isinstance(delay, Percentile):  # checked again: a Percentile may be built by hand
            pct = percentile(
                delay.percentile,
                fallback=delay.fallback,
                window=delay.window,
                min_samples=delay.min_samples,
            )
            seconds_delay = pct.fallback
        else:
            seconds_delay = float(check_number(delay, "delay"))
        checked = check_number(
            timeout, "timeout", allow_zero=False, allow_none=True, allow_inf=True
        )
        if max_hedged_ratio is not None:
            if budget is not None:
                raise TypeError("hedge() takes budget or max_hedged_ratio, not both")
            ratio = float(check_number(max_hedged_ratio, "max_hedged_ratio"))
            budget = RetryBudget(ratio, min_per_second=0.0, ttl=RATIO_WINDOW)
        elif budget is not None and not isinstance(budget, _native.RetryBudget):
            raise TypeError(f"budget must be a failsafe.retry.RetryBudget, not {budget!r}")
        return cls(
            attempts=count,
            delay=seconds_delay,
            percentile=pct,
            timeout=None if checked is None else float(checked),
            budget=budget,  # type: ignore[arg-type]
        )
