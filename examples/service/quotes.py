"""The quote endpoint's call to the flaky dependency, guarded by every failsafe pattern this
installation has (outermost first):

featuretoggle → ratelimit → fallback → cache → bulkhead → retry → circuit breaker → timeout

Each attempt gets 50 ms; connection errors, timeouts and an open breaker are retried three
times with exponential backoff; when every attempt failed, the last known price (or a default)
answers.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

from dependency import dependency

from failsafe.fallback import fallback
from failsafe.retry import backoffs, retry
from failsafe.timeout import TimeoutError as FsTimeoutError
from failsafe.timeout import timeout

DEFAULT_PRICE = -1.0  # the fallback's answer: "no fresh price"

Decorator = Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]


def installed(pattern: str) -> ModuleType | None:
    """failsafe.<pattern>, or None when this failsafe does not have that pattern."""
    try:
        return importlib.import_module(f"failsafe.{pattern}")
    except ModuleNotFoundError as e:
        if e.name == f"failsafe.{pattern}":
            return None
        raise


def _layers() -> list[Decorator]:
    featuretoggle = installed("featuretoggle")
    ratelimit = installed("ratelimit")
    cache = installed("cache")
    bulkhead = installed("bulkhead")
    circuitbreaker = installed("circuitbreaker")

    retry_on: tuple[type[BaseException], ...] = (ConnectionError, FsTimeoutError)
    if circuitbreaker is not None:
        retry_on += (circuitbreaker.BreakerFailing,)
    layers: list[Decorator | None] = [
        featuretoggle and featuretoggle.featuretoggle(name="quotes_enabled", enabled=True),
        ratelimit
        and getattr(ratelimit, "tokenbucket", None)
        and ratelimit.tokenbucket(5000, 1, name="quote_ratelimit"),
        fallback(DEFAULT_PRICE, on=Exception, name="quote_fallback"),
        cache and cache.cache(maxsize=1000, ttl=0.5, name="quote_cache"),
        bulkhead and bulkhead.bulkhead(200, 1000, name="quote_bulkhead"),
        retry(
            on=retry_on,
            attempts=3,
            backoff=backoffs.expo(min_delay_secs=0.002, max_delay_secs=0.02),
            name="quote_retry",
        ),
        circuitbreaker
        and circuitbreaker.consecutive_breaker(
            failure_threshold=5, recovery_time_secs=0.05, name="quote_breaker"
        ),
        timeout(0.05, name="quote_timeout"),
    ]
    return [layer for layer in layers if layer]


def _guard(fn: Callable[[int], Awaitable[float]]) -> Callable[[int], Awaitable[float]]:
    for layer in reversed(_layers()):  # innermost first
        fn = layer(fn)
    return fn


@_guard
async def guarded_price(item: int) -> float:
    return await dependency.price(item)


async def unguarded_price(item: int) -> float:
    return await dependency.price(item)


def patterns_in_use() -> list[str]:
    """The patterns guarding guarded_price, outermost first."""
    names = []
    layer: Any = guarded_price
    while hasattr(layer, "policy"):
        names.append(f"{layer.policy.PATTERN}:{layer.policy.name}")
        layer = layer.__wrapped__
    return names
