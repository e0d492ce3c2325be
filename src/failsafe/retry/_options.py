"""A retry policy's and a retry budget's parameters, checked once.

Retry (``retry(...)``, and ``bucket_retry(...)`` with its token bucket) takes its parameters
from one RetryOptions, and RetryBudget (shared by retry and hedge policies, and built by
hedge's max_hedged_ratio) from one BudgetOptions: each parameter has one default and one check,
naming it. The C engines trust what they are given.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from failsafe import _core, _native, signals
from failsafe.retry import backoffs


@dataclass(frozen=True, slots=True)
class BudgetOptions:
    """Checked parameters of one retry budget."""

    ratio: float = 0.2  # retries per call
    min_per_second: float = 10.0  # retries always allowed
    ttl: float = 10.0  # seconds: the window both are measured over

    @classmethod
    def check(
        cls, ratio: object = 0.2, *, min_per_second: object = 10.0, ttl: object = 10.0
    ) -> BudgetOptions:
        r = float(_core.check_number(ratio, "ratio"))
        m = float(_core.check_number(min_per_second, "min_per_second"))
        t = float(_core.check_number(ttl, "ttl", allow_zero=False))
        if not 1e-8 <= t <= 1e9:  # the C window needs 10 slots of >= 1 ns
            raise ValueError(f"ttl must be between 1e-08 and 1e9 seconds, got {t}")
        if not math.isfinite(m * t):
            raise ValueError(f"min_per_second * ttl must be finite, got {m} * {t}")
        return cls(r, m, t)


BackoffT = float | int | Iterable[float] | Callable[[int], float]


def schedule_factory(backoff: object) -> Callable[[], Iterator[float]]:
    """Checks ``backoff`` once; returns a factory of fresh per-call delay iterators."""
    if isinstance(backoff, bool):
        raise TypeError("backoff must be a number, a sequence, a schedule or a callable, not bool")
    if isinstance(backoff, (int, float)):
        schedule: backoffs.Backoff = backoffs.const(_core.check_number(backoff, "backoff"))
        return schedule.__iter__
    if isinstance(backoff, backoffs.Backoff):
        return backoff.__iter__
    if isinstance(backoff, (list, tuple)):
        try:
            return backoffs.interval(backoff).__iter__
        except (TypeError, ValueError) as e:
            raise type(e)(f"backoff: {e}") from None
    if isinstance(backoff, (str, bytes)):
        raise TypeError(f"backoff must be a number, a sequence or a schedule, not {backoff!r}")
    if isinstance(backoff, Iterator):
        raise TypeError(
            "backoff must not be a one-shot iterator or generator: all calls would share and "
            "exhaust it; pass a re-iterable (list, failsafe.retry.backoffs.*) or a callable "
            "attempt -> delay"
        )
    if isinstance(backoff, Iterable):
        iterable = backoff
        return lambda: (backoffs._checked_delay(d) for d in iterable)
    if callable(backoff):
        fn = backoff

        def per_attempt() -> Iterator[float]:
            k = 0
            while True:
                k += 1
                yield backoffs._checked_delay(fn(k))

        return per_attempt
    raise TypeError(
        f"backoff must be a number, a sequence, a failsafe.retry.backoffs schedule, an iterable"
        f" or a callable attempt -> delay, not {backoff!r}"
    )


@dataclass(frozen=True, slots=True)
class RetryOptions:
    """Checked parameters of one retry policy (bucket_retry's bucket included)."""

    new_schedule: Callable[[], Iterator[float]]  # fresh delays per call, from backoff
    backoff: object = 0.5  # as given (checked): retry reads whether every delay is 0
    on: tuple[type[BaseException], ...] | None = (Exception,)
    on_pred: Callable[[BaseException], Any] | None = None  # on= given as a predicate
    attempts: int | None = 3  # retries (calls = attempts + 1); None: until success
    if_result: Callable[[Any], bool] | None = None
    max_duration_ns: int | None = None
    budget: Any = None  # a RetryBudget shared with other policies
    bucket: Any = None  # bucket_retry's TokenBucket, this policy's own
    retry_after: Callable[[BaseException], float | None] | None = None  # the delay reader
    max_retry_after: float | None = None  # seconds

    @classmethod
    def check(
        cls,
        *,
        on: object = Exception,
        attempts: object = 3,
        backoff: object = 0.5,
        if_result: object = None,
        max_duration: object = None,
        budget: object = None,
        retry_after: object = True,
        max_retry_after: object = None,
        bucket: tuple[object, object] | None = None,
    ) -> RetryOptions:
        """``bucket``: bucket_retry's (per_time_secs, bucket_size), refilling ``attempts``
        tokens (then at least 1) per ``per_time_secs``."""
        token_bucket = None
        if bucket is None:
            retries = None
        else:  # at least one retry: the bucket refills that many per period
            retries = int(_core.check_int(attempts, "attempts"))
            token_bucket = _token_bucket(retries, *bucket)
        types = _core.check_exceptions(on)
        if bucket is None:
            retries = _core.check_int(attempts, "attempts", minimum=0, allow_none=True)
        new_schedule = schedule_factory(backoff)
        if if_result is not None and not callable(if_result):
            raise TypeError(f"if_result must be a callable predicate, not {if_result!r}")
        if if_result is not None and inspect.iscoroutinefunction(if_result):
            raise TypeError("if_result must be a sync predicate, not an async function")
        max_duration_ns = None
        if max_duration is not None:
            max_duration_ns = _core.check_ns(max_duration, "max_duration")
        if budget is not None and not isinstance(budget, _native.RetryBudget):
            raise TypeError(f"budget must be a failsafe.retry.RetryBudget, not {budget!r}")
        reader = signals.check_retry_after(retry_after)
        return cls(
            on=types,
            on_pred=None if types is not None else on,  # type: ignore[arg-type]
            attempts=retries,
            backoff=backoff,
            new_schedule=new_schedule,
            if_result=if_result,
            max_duration_ns=max_duration_ns,
            budget=budget,
            bucket=token_bucket,
            retry_after=reader,
            max_retry_after=signals.check_max_retry_after(max_retry_after, reader),
        )


def _token_bucket(count: int, per_time_secs: object, bucket_size: object) -> Any:
    period_ns = _core.check_ns(per_time_secs, "per_time_secs")
    size = _core.check_int(bucket_size, "bucket_size")
    interval_ns = max(1, period_ns // count)
    if interval_ns * size > 2**63 - 1:  # the C bucket keeps int64 nanoseconds
        raise ValueError(
            f"per_time_secs ({per_time_secs}) / attempts ({count}) * bucket_size ({size})"
            " is too large"
        )
    return _native.TokenBucket(interval_ns, size)
