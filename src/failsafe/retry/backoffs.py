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


def _bad(field: str, rule: str, value: object) -> ValueError:
    return ValueError(f"invalid backoff: bad {field}: {rule}, got {value!r}")


def _real(value: object, param: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"invalid backoff: {param} must be a number, not {type(value).__name__}")
    return float(value)


def _check_spec(
    kind: object, a: object, b: object, c: object, max_delay: object, seq: object
) -> list[float] | None:
    """The checks of ``Backoff(kind, ...)`` built by hand, field by field in the order of the
    C core's (kind, a, b, c, max_delay, seq). The schedules below check their own parameters,
    naming them, and skip these. Returns seq as floats."""
    if isinstance(kind, bool) or not isinstance(kind, int):
        raise TypeError(f"invalid backoff: kind must be an int, not {type(kind).__name__}")
    if not CONST <= kind <= SOFTEXP:
        raise _bad("kind or jitter", f"kind must be in [{CONST}, {SOFTEXP}]", kind)
    fa, fb, fc, fmax = (
        _real(a, "a"),
        _real(b, "b"),
        _real(c, "c"),
        _real(max_delay, "max_delay"),
    )
    delays = None
    if seq is not None:
        if isinstance(seq, (str, bytes)) or not isinstance(seq, Sequence):
            raise TypeError(f"seq must be a sequence of numbers, not {seq!r}")
        delays = [_real(d, f"seq[{i}]") for i, d in enumerate(seq)]
    uses_a = kind != INTERVAL
    if uses_a and kind == SOFTEXP and not (math.isfinite(fa) and fa > 0):
        raise _bad("first delay (a)", "the median must be finite and > 0", a)
    if uses_a and not (math.isfinite(fa) and fa >= 0):
        raise _bad("first delay (a)", "must be finite and >= 0", a)
    least_b = {LINEAR: 0.0, FIBO: 0.0, EXPO: 1.0, DECORREXP: 1.0}.get(kind)
    if least_b is not None and not (math.isfinite(fb) and fb >= least_b):
        raise _bad("growth parameter (b)", f"must be finite and >= {least_b:g}", b)
    if kind == SOFTEXP and not (math.isfinite(fb) and fb > 0):
        raise _bad("growth parameter (b)", "must be finite and > 0", b)
    if kind == SOFTEXP and not (math.isfinite(fc) and fc > 0):
        raise _bad("scaling parameter (c)", "must be finite and > 0", c)
    if math.isnan(fmax) or fmax < 0 or (uses_a and fmax < fa):
        raise _bad("maximum delay", "must be >= 0 and >= the first delay (a)", max_delay)
    if kind == DECORREXP and math.isinf(fmax):
        raise _bad("maximum delay", "decorrexp's must be finite", max_delay)
    if kind == INTERVAL and not delays:
        raise _bad("delay sequence", "interval needs at least one delay", seq)
    if kind == INTERVAL and not all(math.isfinite(d) and d >= 0 for d in delays or ()):
        raise _bad("delay sequence", "every delay must be finite and >= 0", seq)
    return delays


class Backoff(Iterable[float]):
    """A schedule of delays. ``iter(schedule)`` yields a fresh, endless sequence.

    ``Backoff(kind, ...)`` built by hand checks its fields (ValueError ``invalid backoff: bad
    <field>``); the schedules below check their own parameters instead, naming them."""

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
        seq = _check_spec(kind, a, b, c, max_delay, seq)
        self._setup(kind, kind_j, a=a, b=b, c=c, max_delay=max_delay, seq=seq, jitter=jitter)

    def _setup(
        self,
        kind: int,
        kind_j: int | None,
        *,
        a: float = 0.0,
        b: float = 0.0,
        c: float = 0.0,
        max_delay: float = math.inf,
        seq: Sequence[float] | None = None,
        jitter: Callable[[float], float] | None = None,
    ) -> None:
        """The schedule of checked fields (kind_j: jitters.kind_of(jitter), checked)."""
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
        self._setup(CONST, jitters.kind_of(jitter), a=d, jitter=jitter)


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
        self._setup(INTERVAL, jitters.kind_of(jitter), seq=seq, jitter=jitter)


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
        cap = _cap(max_delay_secs, a)
        self._setup(LINEAR, jitters.kind_of(jitter), a=a, b=b, max_delay=cap, jitter=jitter)


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
        cap = _cap(max_delay_secs, a)
        self._setup(EXPO, jitters.kind_of(jitter), a=a, b=b, max_delay=cap, jitter=jitter)


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
        cap = _cap(max_delay_secs, a)
        self._setup(FIBO, jitters.kind_of(jitter), a=a, b=b, max_delay=cap, jitter=jitter)


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
        self._setup(DECORREXP, 0, a=a, b=b, max_delay=cap)


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
        cap = _cap(max_delay_secs, a, "median_delay_secs")
        self._setup(SOFTEXP, 0, a=a, b=b, c=c, max_delay=cap)
