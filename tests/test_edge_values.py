"""Edge values over every numeric parameter of every factory.

Each parameter is tried with 0, -1, 1, 2**31, 2**63, 2**64 + 1, 2**70, 1e300, inf, -inf, nan
and True. A value is either valid (the policy is built and a guarded call passes, or is refused
by the pattern itself where that is what the value means) or a TypeError/ValueError whose
message names the parameter: never another exception (OverflowError from a conversion, a
silent wrap in C). The parameters are discovered from the signatures, so a new numeric
parameter without a row in the table fails the test bed.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import pytest

from failsafe.adaptive import ConcurrencyLimit, Throttle, concurrency_limit, throttle
from failsafe.bulkhead import bulkhead
from failsafe.cache import Cache, cache
from failsafe.circuitbreaker import circuitbreaker, consecutive_breaker
from failsafe.exceptions import FailsafeError
from failsafe.failfast import FailFast, failfast
from failsafe.featuretoggle import FeatureToggle, featuretoggle
from failsafe.hedge import hedge, percentile
from failsafe.keyed import keyed
from failsafe.ratelimit import TokenBucket, slidingwindow, tokenbucket
from failsafe.retry import Retry, RetryBudget, backoffs, bucket_retry, retry
from failsafe.testing import FakeClock, instant_waits
from failsafe.timeout import timeout

INF = math.inf
NAN = math.nan
I64 = 2**63 - 1
VALUES: tuple[object, ...] = (0, -1, 1, 2**31, 2**63, 2**64 + 1, 2**70, 1e300, INF, -INF, NAN, True)
IDS = ("0", "-1", "1", "2e31", "2e63", "2e64+1", "2e70", "1e300", "inf", "-inf", "nan", "True")

# Outcomes: OK (built, a call passes), NO (built, the pattern refuses the call: what the value
# means), VE / TE (ValueError / TypeError naming the parameter).
OK, NO, VE, TE = "ok", "refused", "ValueError", "TypeError"


def count(lo: int = 1, hi: int = I64) -> Callable[[object], str]:
    """An int in [lo, hi] (hi: what its C field holds)."""

    def expect(v: object) -> str:
        if isinstance(v, bool) or not isinstance(v, int):
            return TE
        return OK if lo <= v <= hi else VE

    return expect


def number(
    *, zero: str = OK, hi: float = INF, inf: str = VE, above: str | None = None
) -> Callable[[object], str]:
    """A real >= 0: zero gives `zero`, inf gives `inf`, a finite value above hi gives `above`
    (default: what inf gives, so a duration with inf = "never" saturates)."""

    def expect(v: object) -> str:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return TE
        if math.isnan(v) or v < 0:
            return VE
        if v == 0:
            return zero
        if math.isinf(v):
            return inf
        if v > hi:
            return inf if above is None else above
        return OK

    return expect


def seconds(hi: float, *, zero: str = VE) -> Callable[[object], str]:
    """A bounded duration: beyond hi (or inf) is a ValueError."""
    return number(zero=zero, hi=hi, inf=VE)


def never(*, zero: str = OK) -> Callable[[object], str]:
    """A wait or deadline where inf means "never": any longer duration saturates to it."""
    return number(zero=zero, inf=OK)


def needs_store(v: object) -> str:
    """A parameter of shared policies only (tests/stores cover its values): without store= any
    value is a ValueError naming it."""
    return VE


def ratio(*, zero: str = VE) -> Callable[[object], str]:
    return number(zero=zero, hi=1, above=VE)


def percent(*, zero: str = OK) -> Callable[[object], str]:
    return number(zero=zero, hi=100, above=VE)


async def _ok() -> int:
    return 1


async def _call(policy: Any) -> None:
    guarded = policy(_ok)
    assert await guarded() == 1


@dataclass
class Factory:
    """A factory, its required arguments, and how to use what it builds."""

    fn: Callable[..., Any]
    base: dict[str, Any] = field(default_factory=dict)
    use: Callable[[Any], Any] = _call
    signature_of: Callable[..., Any] | None = None  # where the parameters are declared
    wrap: Callable[[object], object] = lambda v: v  # a value as the parameter takes it
    context: dict[str, dict[str, Any]] = field(default_factory=dict)  # per parameter


async def _take(schedule: backoffs.Backoff) -> None:
    delays = list(islice(iter(schedule), 40))
    assert all(d >= 0 for d in delays), delays  # never negative, never NaN


async def _with_budget(budget: RetryBudget) -> None:
    await _call(retry(budget=budget))


async def _with_percentile(delay: Any) -> None:
    await _call(hedge(delay=delay))


async def _bucket(b: TokenBucket) -> None:
    await b.take()


def _key(*args: Any, **kwargs: Any) -> int:
    return 88951  # in the first 0.001 % of a rollout: rollout=1 admits it


def _breaker(**kwargs: Any) -> Any:
    return circuitbreaker(**kwargs)


def _keyed(**kwargs: Any) -> Any:
    return keyed(lambda k: bulkhead(1), key=_key, **kwargs)


async def _toggle(policy: Any) -> None:
    guarded = policy(_ok)
    try:
        assert await guarded() == 1
    except FailsafeError:
        raise _Refused from None


class _Refused(Exception):
    pass


FACTORIES: dict[str, Factory] = {
    "retry": Factory(retry, signature_of=Retry),
    "bucket_retry": Factory(bucket_retry),
    "const": Factory(backoffs.const, use=_take),
    "interval": Factory(backoffs.interval, use=_take, wrap=lambda v: [v]),
    "linear": Factory(backoffs.linear, use=_take),
    "expo": Factory(backoffs.expo, use=_take),
    "fibo": Factory(backoffs.fibo, use=_take),
    "decorrexp": Factory(
        backoffs.decorrexp, {"min_delay_secs": 1, "max_delay_secs": 10}, use=_take
    ),
    "softexp": Factory(backoffs.softexp, {"median_delay_secs": 1}, use=_take),
    "timeout": Factory(timeout),
    "circuitbreaker": Factory(
        _breaker,
        signature_of=circuitbreaker,
        context={
            "failure_rate": {},
            "window_calls": {"failure_rate": 0.5},
            "window_time": {"failure_rate": 0.5},
            "window_buckets": {"failure_rate": 0.5},
            "min_calls": {"failure_rate": 0.5, "window_calls": 10**6},
            "max_recovery_time": {"recovery_time": 0},
            "slow_call_rate": {"failure_rate": 0.5, "slow_call_duration": 1},
        },
    ),
    "consecutive_breaker": Factory(
        consecutive_breaker, context={"max_recovery_time": {"recovery_time": 0}}
    ),
    "failfast": Factory(failfast, signature_of=FailFast),
    "bulkhead": Factory(bulkhead, {"max_concurrency": 1}),
    "tokenbucket": Factory(
        tokenbucket,
        {"max_executions": 1, "per_time_secs": 1},
        context={"max_keys": {"key": _key}},
    ),
    "slidingwindow": Factory(slidingwindow, {"max_executions": 1, "per_time_secs": 1}),
    "TokenBucket": Factory(TokenBucket, {"max_executions": 1, "per_time_secs": 1}, use=_bucket),
    "cache": Factory(cache, signature_of=Cache, context={"stale_if_error": {"ttl": 1}}),
    "hedge": Factory(hedge),
    "percentile": Factory(percentile, {"p": 50, "fallback": 0.01}, use=_with_percentile),
    "featuretoggle": Factory(
        featuretoggle, signature_of=FeatureToggle, use=_toggle, context={"rollout": {"key": _key}}
    ),
    "keyed": Factory(_keyed, signature_of=keyed),
    "RetryBudget": Factory(RetryBudget, use=_with_budget),
    "concurrency_limit": Factory(
        concurrency_limit,
        signature_of=ConcurrencyLimit,
        context={"max_limit": {"initial": 1}, "beta": {"alpha": 1}},
    ),
    "throttle": Factory(throttle, signature_of=Throttle),
}

# factory -> parameter -> expectation. Counts are ints bounded by their C field; durations are
# bounded (ValueError beyond) unless the parameter takes inf for "never" (then any longer
# duration means the same).
EXPECT: dict[str, dict[str, Callable[[object], str]]] = {
    "retry": {
        "attempts": count(lo=0),
        "backoff": seconds(INF, zero=OK),
        "max_duration": seconds(9.2e9),
        "max_retry_after": seconds(1e9),
    },
    "bucket_retry": {
        "attempts": count(),
        "backoff": seconds(INF, zero=OK),
        "per_time_secs": seconds(9.2e9),
        "bucket_size": count(),
    },
    "const": {"delay_secs": seconds(INF, zero=OK)},
    "interval": {"delay_secs": seconds(INF, zero=OK)},
    "linear": {
        "min_delay_secs": seconds(INF, zero=OK),
        "additive_secs": seconds(INF, zero=OK),
        "max_delay_secs": never(zero=VE),
    },
    "expo": {
        "min_delay_secs": seconds(INF, zero=OK),
        "base": number(zero=VE),
        "max_delay_secs": never(zero=VE),
    },
    "fibo": {
        "min_delay_secs": seconds(INF, zero=OK),
        "factor_secs": seconds(INF, zero=OK),
        "max_delay_secs": never(zero=VE),
    },
    "decorrexp": {
        "min_delay_secs": seconds(10, zero=OK),
        "max_delay_secs": never(zero=VE),
        "base": number(zero=VE),
    },
    "softexp": {
        "median_delay_secs": seconds(INF),
        "max_delay_secs": never(zero=VE),
        "pfactor": seconds(INF),
        "rp_scaling_factor": seconds(INF),
    },
    "timeout": {"seconds": never(), "timeout_secs": never()},
    "circuitbreaker": {
        "failure_threshold": count(hi=2**31 - 1),
        "failure_rate": ratio(),
        "window_calls": count(hi=10**6),
        "window_time": seconds(1e9),
        "window_buckets": count(hi=1000),
        "min_calls": count(hi=10**6),
        "slow_call_duration": seconds(1e9),
        "slow_call_rate": ratio(),
        "recovery_time": seconds(1e9, zero=OK),
        "recovery_threshold": count(hi=2**31 - 1),
        "half_open_max_calls": count(hi=2**31 - 1),
        "recovery_backoff": number(zero=VE, hi=1e9, above=VE),
        "max_recovery_time": seconds(1e9, zero=OK),
    },
    "consecutive_breaker": {
        "failure_threshold": count(hi=2**31 - 1),
        "recovery_time_secs": seconds(1e9, zero=OK),
        "recovery_threshold": count(hi=2**31 - 1),
        "recovery_time": seconds(1e9, zero=OK),
        "half_open_max_calls": count(hi=2**31 - 1),
        "slow_call_duration": seconds(1e9),
        "recovery_backoff": number(zero=VE, hi=1e9, above=VE),
        "max_recovery_time": seconds(1e9, zero=OK),
    },
    "failfast": {"failure_threshold": count(), "recovery_time": seconds(9.2e9)},
    "bulkhead": {
        "max_concurrency": count(),
        "max_capacity": count(),
        "max_wait": never(),
        "lease": needs_store,
    },
    "tokenbucket": {
        "max_executions": count(),
        "per_time_secs": seconds(2.3e9),
        "bucket_size": count(),
        "max_wait": never(),
        "max_keys": count(hi=2**30),
        "prefetch": needs_store,
    },
    "slidingwindow": {
        "max_executions": count(hi=2**24),
        "per_time_secs": seconds(2.3e9),
        "max_wait": never(),
    },
    "TokenBucket": {
        "max_executions": count(),
        "per_time_secs": seconds(2.3e9),
        "bucket_size": count(),
    },
    "cache": {
        "maxsize": count(hi=2**30),
        "ttl": seconds(4.6e9),
        "stale_if_error": seconds(4.6e9),
        "local_ttl": needs_store,
        "lock_ttl": needs_store,
    },
    "hedge": {
        "attempts": count(hi=1000),
        "delay": seconds(INF, zero=OK),
        "timeout": never(zero=VE),
        "max_hedged_ratio": number(),
    },
    "percentile": {
        "p": percent(zero=VE),
        "fallback": seconds(INF),
        "window": seconds(1e9),
        "min_samples": count(),
    },
    "featuretoggle": {"rollout": percent(zero=NO)},
    "keyed": {"max_keys": count(), "idle_after": seconds(9.2e9)},
    "RetryBudget": {"ratio": number(), "min_per_second": number(), "ttl": seconds(1e9)},
    "concurrency_limit": {
        "initial": number(zero=VE, hi=1000, above=VE),
        "min_limit": number(zero=VE, hi=20, above=VE),
        "max_limit": number(zero=VE, hi=1e9, above=VE),
        "queue": count(lo=0, hi=2**31 - 1),
        "max_wait": never(),
        "smoothing": ratio(),
        "tolerance": number(zero=VE, hi=1e9, above=VE),
        "queue_size": number(hi=1e9, above=VE),
        "long_window": count(hi=2**32 - 1),
        "alpha": number(zero=VE, hi=1e9, above=VE),
        "beta": number(zero=VE, hi=1e9, above=VE),
        "probe_multiplier": count(lo=0, hi=2**32 - 1),
        "backoff_ratio": number(zero=VE, hi=0.5, above=VE),  # in (0, 1)
        "timeout": seconds(1e9),
    },
    "throttle": {
        "k": number(zero=VE, hi=1e6, above=VE),
        "window": seconds(1e9),
        "max_reject": ratio(),
    },
}

_NUMERIC = re.compile(r"\b(int|float|BackoffT)\b")
_NOT_NUMERIC = {"name", "listeners", "event_manager", "key", "key_func", "on", "predicate"}


def _numeric_params(factory: Factory) -> list[str]:
    target = factory.signature_of or factory.fn
    sig = inspect.signature(target)
    if isinstance(target, type) and any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        sig = inspect.signature(target.__init__)
    found = []
    for p in sig.parameters.values():
        if (
            p.name in _NOT_NUMERIC
            or p.name.startswith("_")
            or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ):
            continue
        ann = p.annotation if isinstance(p.annotation, str) else ""
        annotated = "Callable" not in ann and _NUMERIC.search(ann)
        default = p.default
        if annotated or (isinstance(default, (int, float)) and not isinstance(default, bool)):
            found.append(p.name)
    return found


def test_every_numeric_parameter_has_expectations() -> None:
    discovered = {name: _numeric_params(f) for name, f in FACTORIES.items()}
    missing = [f"{n}.{p}" for n, ps in discovered.items() for p in ps if p not in EXPECT[n]]
    stale = [f"{n}.{p}" for n, ps in EXPECT.items() for p in ps if p not in discovered[n]]
    assert not missing, f"numeric parameters without a row in EXPECT: {missing}"
    assert not stale, f"rows in EXPECT for no parameter: {stale}"
    assert all(discovered.values())


def _cases() -> Iterator[Any]:
    for name, params in EXPECT.items():
        for param, expect in params.items():
            for value, vid in zip(VALUES, IDS, strict=True):
                yield pytest.param(name, param, value, expect(value), id=f"{name}-{param}-{vid}")


async def _outcome(name: str, param: str, value: object) -> str:
    factory = FACTORIES[name]
    kwargs = {**factory.base, **factory.context.get(param, {}), param: factory.wrap(value)}
    refused: TypeError | ValueError | None = None
    try:
        built = factory.fn(**kwargs)
    except (TypeError, ValueError) as e:  # any other exception fails the test as it is
        refused = e
    if refused is not None:
        assert param in str(refused), f"{refused!r} does not name {param}"
        return type(refused).__name__
    try:
        await factory.use(built)
    except _Refused:
        return NO
    return OK


@pytest.mark.parametrize(("name", "param", "value", "expected"), list(_cases()))
async def test_edge_value(name: str, param: str, value: object, expected: str) -> None:
    with FakeClock(), instant_waits():
        assert await _outcome(name, param, value) == expected


# -- the reported cases, one by one ------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "param"),
    [
        (lambda: failfast(failure_threshold=2**64 + 1), "failure_threshold"),
        (lambda: failfast(failure_threshold=2**70), "failure_threshold"),
        (lambda: percentile(90, fallback=0.1, min_samples=2**64 + 3), "min_samples"),
        (lambda: hedge(attempts=2**63), "attempts"),
        (lambda: retry(attempts=2**63, backoff=0), "attempts"),
        (lambda: bulkhead(2**64 + 1), "max_concurrency"),
        (lambda: tokenbucket(2**64 + 1, 1), "max_executions"),
        (lambda: keyed(lambda k: bulkhead(1), key=_key, max_keys=2**64 + 1), "max_keys"),
    ],
    ids=["ff-2e64+1", "ff-2e70", "min_samples", "hedge", "retry", "bulkhead", "limit", "keyed"],
)
def test_huge_counts_are_value_errors_never_wrapped(build: Callable[[], Any], param: str) -> None:
    with pytest.raises(ValueError, match=param):
        build()


async def test_a_failfast_threshold_in_range_counts_every_failure() -> None:
    """The largest threshold the C latch holds is kept whole: one failure never opens it."""
    policy = failfast(failure_threshold=2**63 - 1)

    @policy
    async def fail() -> None:
        raise OSError("down")

    for _ in range(3):
        with pytest.raises(OSError, match="down"):
            await fail()
    assert not policy.is_open


@pytest.mark.parametrize(
    ("build", "param"),
    [
        (lambda: tokenbucket(1, 1e300), "per_time_secs"),
        (lambda: cache(ttl=1e300), "ttl"),
        (lambda: cache(ttl=1, stale_if_error=1e300), "stale_if_error"),
        (lambda: retry(max_duration=1e300), "max_duration"),
        (lambda: bucket_retry(per_time_secs=1e300), "per_time_secs"),
        (lambda: keyed(lambda k: bulkhead(1), key=_key, idle_after=1e300), "idle_after"),
        (lambda: failfast(recovery_time=1e300), "recovery_time"),
        (lambda: failfast(recovery_time=2**2000), "recovery_time"),
        (lambda: timeout(-(2**2000)), "seconds"),
    ],
)
def test_bounded_durations_beyond_range_are_value_errors(
    build: Callable[[], Any], param: str
) -> None:
    with pytest.raises(ValueError, match=param):
        build()


async def test_a_wait_beyond_range_waits_as_long_as_inf(clock: FakeClock, instant: None) -> None:
    """max_wait=1e300 means what max_wait=inf means: a refused call waits for its turn."""
    for wait in (1e300, 2**70, 2**2000, INF):
        limiter = tokenbucket(1, 1, max_wait=wait)
        assert limiter.max_wait == INF
        guarded = limiter(_ok)
        assert [await guarded(), await guarded()] == [1, 1]
        assert bulkhead(1, max_wait=wait).max_wait is None


async def test_huge_timeouts_never_expire(clock: FakeClock) -> None:
    for seconds in (2**63, 1e300, 2**2000, INF):

        @timeout(seconds)
        async def nap() -> int:
            await asyncio.sleep(0)
            return 1

        assert await nap() == 1
        assert await hedge(timeout=seconds)(_ok)() == 1


@pytest.mark.parametrize(
    ("configure", "param"),
    [
        (lambda: FailFast()._configure(threshold=2**64 + 1), "threshold"),
        (lambda: FailFast()._configure(threshold=2**70), "threshold"),
        (lambda: hedge()._adapt(0.5, 0.1, 10**9, 2**64 + 3), "min_samples"),
        (lambda: circuitbreaker()._configure(failure_threshold=2**32 + 1), "failure_threshold"),
        (lambda: circuitbreaker()._configure(recovery_threshold=-1), "recovery_threshold"),
    ],
)
def test_the_c_binding_never_wraps_an_int(configure: Callable[[], Any], param: str) -> None:
    """Below the Python validation, the C conversions check their range too ("K" and "I"
    wrapped 2**64 + 1 to 1 silently)."""
    with pytest.raises(ValueError, match=param):
        configure()
