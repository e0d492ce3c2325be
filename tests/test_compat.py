"""failsafe-py 0.0.1's public names for retry, timeout, fallback and events keep working."""

from __future__ import annotations

import asyncio
import importlib

import pytest

NAMES = {
    "failsafe.exceptions": ["FailsafeError"],
    "failsafe.retry": ["retry", "bucket_retry", "RetryListener", "register_retry_listener"],
    "failsafe.retry.exceptions": ["AttemptsExceeded"],
    "failsafe.retry.backoffs": [
        "const",
        "interval",
        "linear",
        "expo",
        "fibo",
        "decorrexp",
        "softexp",
    ],
    "failsafe.retry.jitters": ["full", "equal"],
    "failsafe.timeout": [
        "timeout",
        "TimeoutListener",
        "register_timeout_listener",
        "MaxDurationExceeded",
        "TimeoutError",
    ],
    "failsafe.timeout.exceptions": ["MaxDurationExceeded", "TimeoutError"],
    "failsafe.fallback": ["fallback", "FallbackListener", "register_timeout_listener"],
    "failsafe.events": [
        "EventManager",
        "set_event_manager",
        "ListenerRegistry",
        "ListenerFactoryT",
        "get_default_name",
    ],
    "failsafe.ratelimit.exceptions": ["EmptyBucket", "RateLimitExceeded"],
    "failsafe.ratelimit": [
        "ratelimiter",
        "tokenbucket",
        "TokenBucketLimiter",
        "TokenBucket",
        "RateLimitExceeded",
        "EmptyBucket",
    ],
    "failsafe.circuitbreaker": [
        "consecutive_breaker",
        "BreakerListener",
        "register_breaker_listener",
        "BreakerFailing",
    ],
    "failsafe.circuitbreaker.exceptions": ["BreakerFailing"],
    "failsafe.circuitbreaker.states": [
        "BreakerState",
        "WorkingState",
        "FailingState",
        "RecoveringState",
    ],
    "failsafe.circuitbreaker.context": ["BreakerContext"],
    "failsafe.ratelimit.buckets": ["TokenBucket"],
    "failsafe.failfast": [
        "failfast",
        "FailFastListener",
        "register_failfast_listener",
        "FailFastManager",
        "FailFastOpen",
    ],
    "failsafe.failfast.exceptions": ["FailFastOpen"],
    "failsafe.bulkhead": [
        "bulkhead",
        "BulkheadListener",
        "register_bulkhead_listener",
        "BulkheadFull",
    ],
    "failsafe.bulkhead.exceptions": ["BulkheadFull"],
    "failsafe.cache": ["cache", "CacheListener", "register_cache_listener"],
    "failsafe.cache.exceptions": ["CacheMiss"],
    "failsafe.hedge": [
        "hedge",
        "HedgeListener",
        "register_hedge_listener",
        "HedgeAllFailed",
        "HedgeTimeout",
    ],
    "failsafe.hedge.exceptions": ["HedgeAllFailed", "HedgeTimeout"],
    "failsafe.featuretoggle": [
        "featuretoggle",
        "FeatureToggleListener",
        "register_featuretoggle_listener",
        "FeatureToggleManager",
        "FeatureDisabled",
    ],
    "failsafe.featuretoggle.exceptions": ["FeatureDisabled"],
    "failsafe.integrations.opentelemetry": ["FailsafeOtelInstrumentor"],
}


def test_every_pattern_exception_is_a_failsafe_error() -> None:
    from failsafe.bulkhead import BulkheadFull
    from failsafe.cache.exceptions import CacheMiss
    from failsafe.circuitbreaker import BreakerFailing
    from failsafe.exceptions import FailsafeError
    from failsafe.failfast import FailFastOpen
    from failsafe.featuretoggle import FeatureDisabled
    from failsafe.hedge import HedgeAllFailed, HedgeTimeout
    from failsafe.ratelimit import EmptyBucket, RateLimitExceeded

    for cls in (
        BulkheadFull,
        CacheMiss,
        BreakerFailing,
        FailFastOpen,
        FeatureDisabled,
        HedgeAllFailed,
        HedgeTimeout,
        EmptyBucket,
        RateLimitExceeded,
    ):
        assert issubclass(cls, FailsafeError), cls
        assert cls() is not None  # constructible with no arguments, as before


@pytest.mark.parametrize(("module", "names"), NAMES.items(), ids=list(NAMES))
def test_public_names(module: str, names: list[str]) -> None:
    mod = importlib.import_module(module)
    missing = [n for n in names if not hasattr(mod, n)]
    assert missing == []


def test_exception_hierarchy() -> None:
    from failsafe.exceptions import FailsafeError
    from failsafe.retry.exceptions import AttemptsExceeded
    from failsafe.timeout import MaxDurationExceeded, TimeoutError

    assert MaxDurationExceeded is TimeoutError
    assert issubclass(TimeoutError, FailsafeError)
    assert issubclass(TimeoutError, builtins_timeout_error())
    assert issubclass(AttemptsExceeded, FailsafeError)


def builtins_timeout_error() -> type[BaseException]:
    import builtins

    return builtins.TimeoutError


async def test_seed_readme_timeout_call_shape() -> None:
    """The seed README's `timeout(name=..., seconds=...)` and `TimeoutError as FsTimeoutError`."""
    from failsafe.timeout import TimeoutError as FsTimeoutError
    from failsafe.timeout import timeout

    async with timeout(name="db_write_timeout", seconds=0.3):
        await asyncio.sleep(0)
    with pytest.raises(FsTimeoutError):
        async with timeout(name="db_write_timeout", seconds=0.001):
            await asyncio.sleep(10)


async def test_failsafe_py_call_shapes() -> None:
    from failsafe.fallback import fallback
    from failsafe.retry import AttemptsExceeded, retry
    from failsafe.retry.backoffs import expo
    from failsafe.retry.jitters import full
    from failsafe.timeout import timeout

    @fallback(lambda exc: f"default after {exc.attempts}", on=AttemptsExceeded)
    @retry(on=ValueError, attempts=2, backoff=expo(min_delay_secs=0, jitter=full), name="x")
    @timeout(timeout_secs=5)
    async def f() -> str:
        raise ValueError

    assert await f() == "default after 3"
