"""Every public factory, by pattern: the names users call to build a policy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from failsafe.adaptive import concurrency_limit, throttle
from failsafe.bulkhead import bulkhead
from failsafe.cache import cache
from failsafe.circuitbreaker import circuitbreaker, consecutive_breaker
from failsafe.failfast import failfast
from failsafe.fallback import fallback
from failsafe.featuretoggle import featuretoggle
from failsafe.hedge import hedge, percentile
from failsafe.keyed import keyed
from failsafe.ratelimit import ratelimiter, slidingwindow, tokenbucket
from failsafe.retry import RetryBudget, backoffs, bucket_retry, retry
from failsafe.timeout import timeout

# pattern (its docs page) -> factories documented there
BY_PATTERN: dict[str, list[Callable[..., Any]]] = {
    "retry": [
        retry,
        bucket_retry,
        RetryBudget,
        backoffs.const,
        backoffs.interval,
        backoffs.linear,
        backoffs.expo,
        backoffs.fibo,
        backoffs.decorrexp,
        backoffs.softexp,
    ],
    "timeout": [timeout],
    "fallback": [fallback],
    "circuitbreaker": [circuitbreaker, consecutive_breaker],
    "failfast": [failfast],
    "bulkhead": [bulkhead],
    "ratelimit": [tokenbucket, slidingwindow, ratelimiter],
    "cache": [cache],
    "hedge": [hedge, percentile],
    "featuretoggle": [featuretoggle],
    "keyed": [keyed],
    "adaptive": [concurrency_limit, throttle],
}
FACTORIES: list[Callable[..., Any]] = [f for fs in BY_PATTERN.values() for f in fs]
