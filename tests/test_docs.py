"""The API reference covers the API: every public parameter of every factory is on its
pattern's page, with each metric and listener event of the pattern."""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from factories import BY_PATTERN
from failsafe import _core

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = {pattern: DOCS / "patterns" / f"{pattern}.md" for pattern in BY_PATTERN}
CASES = [
    (pattern, factory, name)
    for pattern, factories in BY_PATTERN.items()
    for factory in factories
    for name, p in inspect.signature(factory).parameters.items()
    if p.kind is not inspect.Parameter.POSITIONAL_ONLY and not name.startswith("_")
]


def page(pattern: str) -> str:
    return PAGES[pattern].read_text()


def documented(text: str, name: str) -> bool:
    """name appears as code: `name`, or as a parameter of a signature in code, `f(name=...)`."""
    spans = re.findall(r"`([^`\n]+)`", text)
    pattern = re.compile(rf"[(, ]{re.escape(name)}[=,)]")
    return any(span == name or pattern.search(span) for span in spans)


@pytest.mark.parametrize(
    ("pattern", "factory", "name"),
    CASES,
    ids=[f"{pattern}:{factory.__name__}:{name}" for pattern, factory, name in CASES],
)
def test_parameter_is_on_its_pattern_page(
    pattern: str, factory: Callable[..., Any], name: str
) -> None:
    assert documented(page(pattern), name), f"{factory.__name__}({name}=...) not on {pattern}.md"


def test_every_page_lists_metrics_and_events() -> None:
    import failsafe.adaptive
    import failsafe.bulkhead
    import failsafe.cache
    import failsafe.circuitbreaker
    import failsafe.failfast
    import failsafe.fallback
    import failsafe.featuretoggle
    import failsafe.hedge
    import failsafe.ratelimit
    import failsafe.retry
    import failsafe.timeout

    policies: dict[str, tuple[type[_core.Component], type]] = {
        "retry": (failsafe.retry.Retry, failsafe.retry.RetryListener),
        "timeout": (failsafe.timeout.Timeout, failsafe.timeout.TimeoutListener),
        "fallback": (failsafe.fallback.Fallback, failsafe.fallback.FallbackListener),
        "circuitbreaker": (
            failsafe.circuitbreaker.CircuitBreaker,
            failsafe.circuitbreaker.BreakerListener,
        ),
        "failfast": (failsafe.failfast.FailFast, failsafe.failfast.FailFastListener),
        "bulkhead": (failsafe.bulkhead.Bulkhead, failsafe.bulkhead.BulkheadListener),
        "ratelimit": (
            failsafe.ratelimit.TokenBucketLimiter,
            failsafe.ratelimit.RateLimitListener,
        ),
        "cache": (failsafe.cache.Cache, failsafe.cache.CacheListener),
        "hedge": (failsafe.hedge.Hedge, failsafe.hedge.HedgeListener),
        "featuretoggle": (
            failsafe.featuretoggle.FeatureToggle,
            failsafe.featuretoggle.FeatureToggleListener,
        ),
        "adaptive": (
            failsafe.adaptive.ConcurrencyLimit,
            failsafe.adaptive.ConcurrencyLimitListener,
        ),
        "adaptive ": (failsafe.adaptive.Throttle, failsafe.adaptive.ThrottleListener),
    }
    missing = []
    for pattern, (policy, listener) in policies.items():
        text = page(pattern.strip())
        missing += [(pattern, m) for m in policy.METRICS if f"`{m}`" not in text]
        events = [n for n in vars(listener) if n.startswith("on_")]
        assert events, listener
        missing += [(pattern, e) for e in events if f"`{e}(" not in text]
    assert missing == []


STATS = {
    "retry": ["RetryStats"],
    "timeout": ["TimeoutStats"],
    "fallback": ["FallbackStats"],
    "circuitbreaker": ["CircuitBreakerStats", "SharedBreakerStats"],
    "failfast": ["FailFastStats", "SharedFailFastStats"],
    "bulkhead": ["BulkheadStats", "SharedBulkheadStats"],
    "ratelimit": [
        "TokenBucketStats",
        "SlidingWindowStats",
        "KeyedTokenBucketStats",
        "SharedLimiterStats",
    ],
    "cache": ["CacheStats", "SharedCacheStats"],
    "hedge": ["HedgeStats"],
    "featuretoggle": ["FeatureToggleStats", "SharedFeatureToggleStats"],
    "adaptive": ["ConcurrencyLimitStats", "ThrottleStats"],
    "keyed": ["KeyedStats"],
}


def test_every_page_lists_its_statistics() -> None:
    """Each pattern page names the statistics class of each of its policies, every key of it,
    and shows its reference; every statistics class of a policy is on a page."""
    import failsafe.stats

    missing = []
    for pattern, names in STATS.items():
        text = page(pattern)
        for name in names:
            cls = getattr(failsafe.stats, name)
            keys = [f.metadata.get("key", f.name) for f in dataclasses.fields(cls)]
            missing += [(pattern, name, k) for k in keys if f"`{k}`" not in text]
            if f"`{name}`" not in text or f"::: failsafe.stats.{name}" not in text:
                missing.append((pattern, name, "reference"))
    assert missing == []
    documented_classes = {n for names in STATS.values() for n in names}
    policy_stats = {
        n
        for n in failsafe.stats.__all__
        if issubclass(getattr(failsafe.stats, n), failsafe.stats.PolicyStats)
    }
    assert policy_stats - documented_classes == {
        "PolicyStats",
        "RateLimitStats",  # the base of the limiters' classes
        "StoreStats",  # stores.md
        "RedisStoreStats",
    }


def test_nav_lists_every_page() -> None:
    nav = (DOCS.parent / "mkdocs.yml").read_text()
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    assert [p for p in pages if p not in nav] == []


def test_compat_alias_is_not_documented() -> None:
    # failsafe.fallback's misnamed alias stays out of the docs, but for the migration note.
    for path in DOCS.rglob("*.md"):
        if path.name != "migrating.md":
            assert "fallback.register_timeout_listener" not in path.read_text(), path


BLOCKS = [
    (path, source)
    for path in sorted(DOCS.rglob("*.md"))
    for source in re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)
]


@pytest.mark.parametrize(
    ("path", "source"),
    BLOCKS,
    ids=[f"{p.relative_to(DOCS)}#{i}" for i, (p, _) in enumerate(BLOCKS)],
)
def test_docs_block_runs(path: Path, source: str) -> None:
    """Every Python example of the docs runs as written (definitions only: nothing is called),
    but the migration page's "before", which shows the import that no longer exists."""
    if "from integrations.opentelemetry" in source:
        assert path.name == "migrating.md"
        with pytest.raises(ModuleNotFoundError, match="integrations"):
            exec(compile(source, str(path), "exec"), {})
        return
    namespace: dict[str, Any] = {"__name__": "docs_block"}
    exec(compile(source, str(path), "exec"), namespace)
