"""Backoff schedules for retry: iterables of delays in seconds.

Each ``iter()`` starts a fresh sequence, so one schedule serves every call of a policy, and
concurrent calls never disturb each other. The math (and the jitter) runs in C.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Final

from failsafe import _native
from failsafe._core import check_number
from failsafe.retry import jitters

__all__ = ["Backoff", "const", "decorrexp", "expo", "fibo", "interval", "linear", "softexp"]

CONST, INTERVAL, LINEAR, EXPO, FIBO, DECORREXP, SOFTEXP = range(7)

# decorrexp needs a finite cap; "no cap" (None) means one day, longer than any sane retry wait.
_DECORR_NO_CAP: Final = 86_400.0


def _cap(max_delay_secs: float | None, minimum: float, min_param: str = "min_delay_secs") -> float:
    if max_delay_secs is None:
        return math.inf
    value = float(check_number(max_delay_secs, "max_delay_secs", allow_inf=True))
    if value < minimum:
        raise ValueError(f"max_delay_secs ({value}) must be >= {min_param} ({minimum})")
    return value


class Backoff(Iterable[float]):
    """A schedule of delays. ``iter(schedule)`` yields a fresh, endless sequence."""

    def __init__(
        self,
        kind: int,
        *,
        a: float = 0.0,
        b: float = 0.0,
        c: float = 0.0,
        max_delay: float = math.inf,
        seq: Sequence[float] | None = None,
        jitter: Callable[[float], float] | None = None,
    ) -> None:
        kind_j = jitters.kind_of(jitter)
        self._custom_jitter = jitter if kind_j is None else None
        self._spec = _native.Backoff(kind, kind_j or 0, a, b, c, max_delay, seq)
        self._zero = (kind == CONST and a == 0) or (
            kind == INTERVAL and seq is not None and all(d == 0 for d in seq)
        )
        self._shared: Iterator[float] | None = None

    def _is_zero(self) -> bool:
        """Whether every delay is 0."""
        return self._custom_jitter is None and self._zero

    def __iter__(self) -> Iterator[float]:
        it: Iterator[float] = iter(self._spec)
        custom = self._custom_jitter
        if custom is None:
            return it
        return (_checked_delay(custom(d)) for d in it)

    def __next__(self) -> float:
        # Direct next() on the schedule object walks one shared sequence (retry never does this).
        if self._shared is None:
            self._shared = iter(self)
        return next(self._shared)

    def delays(self, n: int) -> list[float]:
        """The first n delays of a fresh sequence."""
        it = iter(self)
        return [next(it) for _ in range(n)]


def _checked_delay(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"a backoff delay must be a number, got {value!r}")
    if math.isnan(value) or value < 0 or math.isinf(value):
        raise ValueError(f"a backoff delay must be finite and >= 0, got {value!r}")
    return float(value)


class const(Backoff):
    """The same delay every time."""

    def __init__(self, delay_secs: float, *, jitter: Callable[[float], float] | None = None):
        d = float(check_number(delay_secs, "delay_secs"))
        super().__init__(CONST, a=d, jitter=jitter)


class interval(Backoff):
    """Cycles through the given delays: d0, d1, ..., dn, d0, ..."""

    def __init__(
        self, delay_secs: Sequence[float], *, jitter: Callable[[float], float] | None = None
    ):
        if isinstance(delay_secs, (str, bytes)) or not isinstance(delay_secs, Sequence):
            raise TypeError(f"delay_secs must be a sequence of numbers, not {delay_secs!r}")
        if not delay_secs:
            raise ValueError("delay_secs must not be empty")
        seq = [float(check_number(d, f"delay_secs[{i}]")) for i, d in enumerate(delay_secs)]
        super().__init__(INTERVAL, seq=seq, jitter=jitter)


class linear(Backoff):
    """min_delay_secs + additive_secs * k, capped at max_delay_secs."""

    def __init__(
        self,
        *,
        min_delay_secs: float = 1,
        additive_secs: float = 1.0,
        max_delay_secs: float | None = None,
        jitter: Callable[[float], float] | None = None,
    ):
        a = float(check_number(min_delay_secs, "min_delay_secs"))
        b = float(check_number(additive_secs, "additive_secs"))
        super().__init__(LINEAR, a=a, b=b, max_delay=_cap(max_delay_secs, a), jitter=jitter)


class expo(Backoff):
    """min_delay_secs * base ** k, capped at max_delay_secs."""

    def __init__(
        self,
        *,
        min_delay_secs: float = 1,
        base: float = 2,
        max_delay_secs: float | None = None,
        jitter: Callable[[float], float] | None = None,
    ):
        a = float(check_number(min_delay_secs, "min_delay_secs"))
        b = float(check_number(base, "base"))
        if b < 1:
            raise ValueError(f"base must be >= 1, got {base}")
        super().__init__(EXPO, a=a, b=b, max_delay=_cap(max_delay_secs, a), jitter=jitter)


class fibo(Backoff):
    """Fibonacci growth: a, a + factor, then the sum of the previous two; capped."""

    def __init__(
        self,
        *,
        min_delay_secs: float = 1,
        factor_secs: float = 1,
        max_delay_secs: float | None = None,
        jitter: Callable[[float], float] | None = None,
    ):
        a = float(check_number(min_delay_secs, "min_delay_secs"))
        b = float(check_number(factor_secs, "factor_secs"))
        super().__init__(FIBO, a=a, b=b, max_delay=_cap(max_delay_secs, a), jitter=jitter)


class decorrexp(Backoff):
    """AWS "decorrelated jitter": next = uniform(min, min(previous * base, max))."""

    def __init__(self, min_delay_secs: float, max_delay_secs: float | None, base: float = 3):
        a = float(check_number(min_delay_secs, "min_delay_secs"))
        b = float(check_number(base, "base"))
        if b < 1:
            raise ValueError(f"base must be >= 1, got {base}")
        cap = _cap(max_delay_secs, a)
        if math.isinf(cap):
            cap = max(_DECORR_NO_CAP, a)
        super().__init__(DECORREXP, a=a, b=b, max_delay=cap)


class softexp(Backoff):
    """Smooth exponential growth with jitter around a median delay (Polly's V2 jitter)."""

    def __init__(
        self,
        *,
        median_delay_secs: float,
        max_delay_secs: float | None = None,
        pfactor: float = 4.0,
        rp_scaling_factor: float = 1 / 1.4,
    ):
        a = float(check_number(median_delay_secs, "median_delay_secs", allow_zero=False))
        b = float(check_number(pfactor, "pfactor", allow_zero=False))
        c = float(check_number(rp_scaling_factor, "rp_scaling_factor", allow_zero=False))
        super().__init__(
            SOFTEXP, a=a, b=b, c=c, max_delay=_cap(max_delay_secs, a, "median_delay_secs")
        )
