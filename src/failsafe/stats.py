"""Statistics objects: what each policy's (and store's) ``stats()`` returns.

Each is a frozen snapshot with typed attributes (``policy.stats().rejected``), and also a
read-only mapping of the same values (``s["rejected"]``, ``dict(s)``, ``s.keys()``, ``in``,
``s == {...}``), which is how ``stats()`` was read before it was typed. A counter keeps its
metric name as its key (``"transition.working"``) and reads as an attribute with ``_`` for
``.``; an optional figure that is not set (``None``) is not a key.

One module defines them all (each pattern's package re-exports its own), so that the
patterns' modules hold behaviour only.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final

__all__ = [
    "BulkheadStats",
    "CacheStats",
    "CircuitBreakerStats",
    "ConcurrencyLimitStats",
    "EventManagerStats",
    "FailFastStats",
    "FallbackStats",
    "FeatureToggleStats",
    "HedgeStats",
    "KeyedStats",
    "KeyedTokenBucketStats",
    "PolicyStats",
    "RateLimitStats",
    "RedisStoreStats",
    "RetryStats",
    "SharedBreakerStats",
    "SharedBulkheadStats",
    "SharedCacheStats",
    "SharedFailFastStats",
    "SharedFeatureToggleStats",
    "SharedLimiterStats",
    "SlidingWindowStats",
    "Stats",
    "StoreStats",
    "ThrottleStats",
    "TimeoutStats",
    "TokenBucketStats",
]

_OPTIONAL: Final = {"optional": True}  # metadata: a None value is not a key


def _key(name: str) -> dict[str, str]:
    """Metadata of a field whose key differs from its attribute (a dotted metric name)."""
    return {"key": name}


@functools.cache
def _layout(cls: type) -> dict[str, tuple[str, bool]]:
    """key -> (attribute, optional), in field order, per statistics class."""
    return {
        f.metadata.get("key", f.name): (f.name, bool(f.metadata.get("optional")))
        for f in fields(cls)
    }


def attribute(metric: str) -> str:
    """The attribute under which a statistics object holds the counter of a metric."""
    return metric.replace(".", "_")


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Stats(Mapping[str, Any]):
    """Base of every statistics object: a frozen snapshot, readable as a mapping.

    Equal to any mapping with the same keys and values (a dict included), and unhashable,
    like the dict that ``stats()`` returned before.
    """

    def __getitem__(self, key: str) -> Any:
        try:
            attr, optional = _layout(type(self))[key]
        except (KeyError, TypeError):
            raise KeyError(key) from None
        value = getattr(self, attr)
        if optional and value is None:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        for key, (attr, optional) in _layout(type(self)).items():
            if not (optional and getattr(self, attr) is None):
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __or__(self, other: Mapping[str, Any]) -> dict[str, Any]:
        return {**self, **other}

    def __ror__(self, other: Mapping[str, Any]) -> dict[str, Any]:
        return {**other, **self}


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class PolicyStats(Stats):
    """Base of a policy's statistics: its name, then its counters and state."""

    name: str


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class RetryStats(PolicyStats):
    """Counters of a retry policy and its ``attempts`` (None: unbounded)."""

    attempt: int
    success: int
    giveup: int
    attempts: int | None


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class TimeoutStats(PolicyStats):
    """Counters of a timeout policy."""

    fired: int


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class FallbackStats(PolicyStats):
    """Counters of a fallback policy."""

    invoked: int


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class CircuitBreakerStats(PolicyStats):
    """Counters, state, and the figures of the current period: consecutive failures and the
    window's calls, failures and slow calls (working), probes in flight and probe successes
    (recovering), seconds left of the break (failing; None when isolated or not failing)."""

    transition_working: int = field(metadata=_key("transition.working"))
    transition_recovering: int = field(metadata=_key("transition.recovering"))
    transition_failing: int = field(metadata=_key("transition.failing"))
    success: int
    failure: int
    rejected: int
    state: str
    isolated: bool
    mode: str
    consecutive_failures: int
    window_calls: int
    window_failures: int
    window_slow_calls: int
    probes_in_flight: int
    probe_successes: int
    retry_after: float | None


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class SharedBreakerStats(CircuitBreakerStats):
    """A breaker shared through a store: also the shared state this process last read."""

    shared_state: str


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class FailFastStats(PolicyStats):
    """Counters of a fail-fast policy, its state (``"open"``/``"closed"``) and its
    consecutive failures."""

    opened: int
    closed: int
    rejected: int
    state: str
    failures: int


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class SharedFailFastStats(FailFastStats):
    """A fail-fast latch shared through a store: also the shared state last read."""

    shared_state: str


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class BulkheadStats(PolicyStats):
    """Counters, then the live state: running and queued calls, limits, peaks."""

    full: int
    admitted: int
    waited: int
    timed_out: int
    running: int
    queued: int
    max_concurrency: int
    max_capacity: int
    max_wait: float | None
    peak_running: int
    peak_queued: int


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class SharedBulkheadStats(PolicyStats):
    """Counters, then this process's part of a bulkhead shared through a store: its running
    and queued calls, the limits, the permits' lease and the store's name."""

    full: int
    admitted: int
    waited: int
    timed_out: int
    running: int
    queued: int
    max_concurrency: int
    max_capacity: int
    max_wait: float | None
    lease: float
    store: str


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class RateLimitStats(PolicyStats):
    """Counters of a rate limiter and its rate."""

    admitted: int
    rejected: int
    max_executions: int
    per_time_secs: float


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class TokenBucketStats(RateLimitStats):
    """A token bucket: also its size and the tokens it holds now."""

    bucket_size: int
    tokens: float


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class SlidingWindowStats(RateLimitStats):
    """A sliding window: also how many calls it would admit now."""

    available: int


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class KeyedTokenBucketStats(RateLimitStats):
    """A token bucket per key: also the bucket size, the keys held (key ``"keys"``: the
    attribute is ``held_keys``, as ``keys()`` is the mapping's), those still limited, and the
    most keys held."""

    bucket_size: int
    held_keys: int = field(metadata=_key("keys"))
    limited_keys: int
    max_keys: int


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class KeyedStats(PolicyStats):
    """A keyed registry: policies made, forgotten to make room (``evicted``) or for being idle
    (``expired``), new keys refused (every place held), the keys held (key ``"keys"``, as for
    ``KeyedTokenBucketStats``) and ``max_keys``. ``evicted`` growing with ``created`` means the
    live keys outnumber ``max_keys``: every such call forgets a policy and makes another."""

    created: int
    evicted: int
    expired: int
    refused: int
    held_keys: int = field(metadata=_key("keys"))
    max_keys: int


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class SharedLimiterStats(RateLimitStats):
    """A limiter shared through a store: also its bucket size, the tokens taken per round
    trip, the keys refused locally until their retry time, and the store's name."""

    bucket_size: int
    prefetch: int
    refused_keys: int
    store: str


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class CacheStats(PolicyStats):
    """Counters, then the entries held, the calls in flight, and the settings
    (``stale_if_error`` only when set)."""

    hit: int
    miss: int
    set: int
    evict: int
    expired: int
    shared: int
    stale: int
    size: int
    in_flight: int
    maxsize: int | None
    ttl: float | None
    stale_if_error: float | None = field(default=None, metadata=_OPTIONAL)


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class SharedCacheStats(PolicyStats):
    """Counters of a cache shared through a store, its settings, the entries held in this
    process and the store's name."""

    hit: int
    miss: int
    set: int
    shared: int
    rejected: int
    fallback: int
    ttl: float | None
    local_ttl: float | None
    lock_ttl: float
    serializer: Any
    local_size: int
    store: str


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class HedgeStats(PolicyStats):
    """Counters of a hedge policy."""

    success: int
    failure: int
    all_failed: int
    timeout: int
    hedged: int


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class FeatureToggleStats(PolicyStats):
    """Counters of a feature toggle and its state (``"enabled"``/``"disabled"``)."""

    enabled: int
    disabled: int
    state: str


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class SharedFeatureToggleStats(FeatureToggleStats):
    """A toggle shared through a store: also whether the stored state was read yet and
    whether the store answers."""

    loaded: bool
    store_up: bool


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class StoreStats(PolicyStats):
    """Counters of a store (round trips, decisions, errors, fallbacks, times its breaker
    opened), whether it answers, seconds until it is asked again, and its settings."""

    round_trips: int
    decisions: int
    errors: int
    fallbacks: int
    opened: int
    up: bool
    retry_in: float
    on_error: str
    op_timeout: float


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class RedisStoreStats(StoreStats):
    """A Redis store: also its key prefix and the event loops it holds connections for."""

    prefix: str
    loops: int


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class EventManagerStats(Stats):
    """``pending`` listener tasks, ``max_pending``, and listener events ``dropped`` (over the
    cap) and ``lost`` (cancelled, or left by a closed loop) so far."""

    pending: int
    max_pending: int
    dropped: int
    lost: int


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class ConcurrencyLimitStats(PolicyStats):
    """Counters of an adaptive concurrency limit, then the limit, the calls in flight and
    queued, and the RTT estimates (seconds)."""

    admitted: int
    rejected: int
    waited: int
    timed_out: int
    dropped: int
    shed: int
    algorithm: str
    limit: int
    limit_estimate: float
    inflight: int
    queued: int
    peak_inflight: int
    samples: int
    last_rtt: float
    long_rtt: float
    rtt_noload: float


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class ThrottleStats(PolicyStats):
    """Counters of a client-side throttle, then its window: requests, accepts and the
    refusal probability now."""

    sent: int
    throttled: int
    accepted: int
    not_accepted: int
    requests: int
    accepts: int
    probability: float
    k: float
    window: float
    max_reject: float
