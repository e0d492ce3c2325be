"""Typed statistics: every policy's stats() is a frozen object of its pattern's class, with
typed attributes, that still reads as the mapping stats() returned before."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from typing import Any

import pytest

import failsafe.stats
from failsafe._core import Component
from failsafe.bulkhead import BulkheadStats, bulkhead
from failsafe.cache import CacheStats, cache
from failsafe.circuitbreaker import CircuitBreakerStats, circuitbreaker
from failsafe.events import EventManager
from failsafe.failfast import FailFastStats, failfast
from failsafe.fallback import FallbackStats, fallback
from failsafe.featuretoggle import FeatureToggleStats, featuretoggle
from failsafe.hedge import HedgeStats, hedge
from failsafe.ratelimit import (
    KeyedTokenBucketStats,
    RateLimitExceeded,
    SlidingWindowStats,
    TokenBucketStats,
    slidingwindow,
    tokenbucket,
)
from failsafe.retry import RetryStats, retry
from failsafe.stats import EventManagerStats, PolicyStats, Stats, attribute
from failsafe.timeout import TimeoutStats, timeout

_n = itertools.count()


def unique(prefix: str) -> str:
    return f"stats_{prefix}{next(_n)}"


POLICIES: list[tuple[Callable[[], Component], type[PolicyStats]]] = [
    (lambda: retry(attempts=3, backoff=0, name=unique("retry")), RetryStats),
    (lambda: timeout(1, name=unique("timeout")), TimeoutStats),
    (lambda: fallback(0, name=unique("fallback")), FallbackStats),
    (lambda: circuitbreaker(name=unique("breaker")), CircuitBreakerStats),
    (lambda: failfast(name=unique("failfast")), FailFastStats),
    (lambda: bulkhead(2, name=unique("bulkhead")), BulkheadStats),
    (lambda: tokenbucket(5, 1, name=unique("bucket")), TokenBucketStats),
    (lambda: slidingwindow(5, 1, name=unique("window")), SlidingWindowStats),
    (lambda: tokenbucket(5, 1, key=str, name=unique("keyed")), KeyedTokenBucketStats),
    (lambda: cache(maxsize=4, name=unique("cache")), CacheStats),
    (lambda: hedge(name=unique("hedge")), HedgeStats),
    (lambda: featuretoggle(name=unique("toggle")), FeatureToggleStats),
]
IDS = [cls.__name__ for _, cls in POLICIES]


@pytest.mark.parametrize(("make", "cls"), POLICIES, ids=IDS)
def test_stats_is_the_patterns_frozen_class(
    make: Callable[[], Component], cls: type[PolicyStats]
) -> None:
    policy = make()
    s = policy.stats()
    assert type(s) is cls
    assert s.name == s["name"] == policy.name
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.name = "other"  # type: ignore[misc]
    assert not hasattr(s, "__dict__")  # slots


@pytest.mark.parametrize(("make", "cls"), POLICIES, ids=IDS)
def test_every_counter_reads_as_key_and_attribute(
    make: Callable[[], Component], cls: type[PolicyStats]
) -> None:
    policy = make()
    s = policy.stats()
    counts = dict(zip(policy.METRICS, policy._counters(), strict=False))
    for metric, count in counts.items():
        assert metric in s
        assert s[metric] == getattr(s, attribute(metric)) == count


@pytest.mark.parametrize(("make", "cls"), POLICIES, ids=IDS)
def test_reads_as_the_mapping_it_was(make: Callable[[], Component], cls: type[PolicyStats]) -> None:
    s = make().stats()
    as_dict = dict(s)
    assert list(as_dict) == list(s.keys()) == list(s)
    assert len(s) == len(as_dict)
    assert s == as_dict
    assert as_dict == s
    assert s != {**as_dict, "name": "other"}
    assert s != {**as_dict, "extra": 1}
    assert s == {**s}
    assert list(s.items()) == list(as_dict.items())
    assert "no such key" not in s
    with pytest.raises(KeyError):
        s["no such key"]
    assert s.get("no such key", 7) == 7
    assert (s | {"name": "x"})["name"] == "x"
    assert ({"name": "x"} | s)["name"] == s.name
    with pytest.raises(TypeError):
        hash(s)  # like the dict it replaces, and equal to one


def test_keys_follow_the_field_order_counters_first() -> None:
    s = retry(attempts=3, backoff=0, name=unique("order")).stats()
    assert list(s) == ["name", "attempt", "success", "giveup", "attempts"]


async def test_counts_are_the_calls() -> None:
    limiter = tokenbucket(1, 60, name=unique("counts"))

    @limiter
    async def work() -> int:
        return 1

    await work()
    with pytest.raises(RateLimitExceeded):
        await work()
    s = limiter.stats()
    assert (s.admitted, s.rejected) == (1, 1)
    assert s | {"tokens": 0} == limiter.stats() | {"tokens": 0}  # tokens refill meanwhile
    assert s["rejected"] == 1
    assert s.max_executions == 1
    assert s.per_time_secs == 60
    assert s.bucket_size == 1
    assert s.tokens < 1


async def test_a_snapshot_does_not_follow_the_policy() -> None:
    policy = retry(attempts=2, backoff=0, name=unique("snap"))

    @policy
    async def ok() -> int:
        return 1

    before = policy.stats()
    await ok()
    after = policy.stats()
    assert (before.success, after.success) == (0, 1)
    assert before != after


def test_a_dotted_metric_is_a_key_and_an_underscored_attribute() -> None:
    br = circuitbreaker(name=unique("dots"))
    br.isolate()
    s = br.stats()
    assert s["transition.failing"] == s.transition_failing == 1
    assert "transition_failing" not in s
    assert s.state == "failing"
    assert s.isolated is True
    assert s.retry_after is None


def test_an_unset_optional_figure_is_not_a_key() -> None:
    plain = cache(maxsize=4, name=unique("plain")).stats()
    assert plain.stale_if_error is None
    assert "stale_if_error" not in plain
    assert "stale_if_error" not in dict(plain)
    with pytest.raises(KeyError):
        plain["stale_if_error"]
    stale = cache(maxsize=4, ttl=1, stale_if_error=5, name=unique("stale")).stats()
    assert stale["stale_if_error"] == stale.stale_if_error == 5.0
    assert len(stale) == len(plain) + 1


def test_keyed_limiter_keys_is_a_key_and_keys_stays_the_mapping_method() -> None:
    s = tokenbucket(5, 1, key=str, max_keys=8, name=unique("keyed")).stats()
    assert s["keys"] == s.held_keys == 0
    assert s.max_keys == 8
    assert "keys" in list(s.keys())


def test_event_manager_stats() -> None:
    s = EventManager(max_pending=3).stats()
    assert type(s) is EventManagerStats
    assert s == {"pending": 0, "max_pending": 3, "dropped": 0, "lost": 0}
    assert s.max_pending == 3


def test_every_statistics_class_is_exported_and_frozen() -> None:
    classes = [getattr(failsafe.stats, n) for n in failsafe.stats.__all__]
    for cls in classes:
        if not isinstance(cls, type):
            continue
        assert issubclass(cls, Stats), cls
        params: Any = cls.__dataclass_params__  # type: ignore[attr-defined]
        assert params.frozen, cls
        assert "__slots__" in vars(cls), cls
    assert {c for c in classes if isinstance(c, type)} >= {cls for _, cls in POLICIES}
