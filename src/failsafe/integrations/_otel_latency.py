"""Latency histograms of failsafe components, exported to the OpenTelemetry SDK's readers.

Calls are counted in C into fixed buckets (``_native.LATENCY_BOUNDS_NS``), so the histograms
reach OpenTelemetry already aggregated: each reader's collection gets one explicit-bucket
``Histogram`` metric per (component name, pattern), named
``{namespace}.{component}.{pattern}.duration`` (unit ``s``), with one point per outcome
(attribute ``outcome``: success, failure, rejected, cancelled) that has counts. OpenTelemetry's
API has no asynchronous histogram, so they enter as a metric producer's data would (as the
specification's MetricProducer does): added to what each reader of the meter's provider
collects, in the reader's temporality, and not subject to views. Nothing runs per call.
The SDK has no public hook for such data (docs/latency.md says why), so each reader's private
``_collect`` is wrapped, once per reader.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any, Final

from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from failsafe import __version__, _core, _native
from failsafe.integrations.opentelemetry import NameCap, instrument_name

logger: Final = logging.getLogger("failsafe")

BOUNDS_S: Final = tuple(ns / 1e9 for ns in _native.LATENCY_BOUNDS_NS)
OUTCOMES: Final = _native.LATENCY_OUTCOMES
_EMPTY: Final = (0,) * (len(BOUNDS_S) + 1)

# One outcome's cumulative state: bucket counts, count, sum (ns), min (ns), max (ns).
Point = tuple[tuple[int, ...], int, int, int, int]


def _add(a: Point, b: Point) -> Point:
    if not b[1]:
        return a
    if not a[1]:
        return b
    counts = tuple(x + y for x, y in zip(a[0], b[0], strict=True))
    return (counts, a[1] + b[1], a[2] + b[2], min(a[3], b[3]), max(a[4], b[4]))


_ZERO: Final[Point] = (_EMPTY, 0, 0, 0, 0)


class _Group:
    """The histograms exported under one component name (or the overflow) and pattern."""

    __slots__ = ("base", "histograms", "metric", "name", "pattern")

    def __init__(self, metric: str, name: str, pattern: str) -> None:
        self.metric = metric
        self.name = name
        self.pattern = pattern
        # (name of the components reporting into it, histogram)
        self.histograms: list[tuple[str, _native.Latency]] = []
        self.base: list[Point] = [_ZERO] * len(OUTCOMES)  # counts of histograms let go

    def read(self, seen: set[int]) -> list[Point]:
        total = list(self.base)
        for item in tuple(self.histograms):
            name, h = item
            points = h.read()
            for i, p in enumerate(points):
                total[i] = _add(total[i], p)
            if not _core.is_current_latency(name, self.pattern, h):
                # No component reports into it any more: its counts stay as numbers, and its
                # id may be another histogram's once it is freed.
                for i, p in enumerate(points):
                    self.base[i] = _add(self.base[i], p)
                self.histograms.remove(item)
                seen.discard(id(h))
        return total


class _Reader:
    """What one reader was last given (delta temporality subtracts it)."""

    __slots__ = ("delta", "last", "last_ns")

    def __init__(self, delta: bool, start_ns: int) -> None:
        self.delta = delta
        self.last: dict[tuple[str, int], Point] = {}
        self.last_ns = start_ns


def _temporality(reader: Any) -> AggregationTemporality:
    table = getattr(reader, "_instrument_class_temporality", None) or {}
    for cls, temporality in table.items():
        if getattr(cls, "__name__", "").lstrip("_") == "Histogram":
            return temporality  # type: ignore[no-any-return]
    return AggregationTemporality.CUMULATIVE


class LatencyExport:
    """Latency histograms added to the collections of every reader of one meter's provider."""

    def __init__(self, meter: Meter, namespace: str, max_components: int) -> None:
        self.meter = weakref.ref(meter)
        self.namespace = namespace
        self.active = False
        self.start_ns = time.time_ns()
        self.lock = threading.Lock()
        self.names: NameCap[_Group] = NameCap(max_components)
        self.scope = InstrumentationScope("failsafe", __version__)
        self.readers: weakref.WeakKeyDictionary[Any, _Reader] = weakref.WeakKeyDictionary()

    def add(self, name: str, pattern: str, h: _native.Latency) -> None:
        with self.lock:
            group, _ = self.names.place(h, name, pattern, lambda part: self._group(part, pattern))
            if group is not None:
                group.histograms.append((name, h))

    def _group(self, name: str, pattern: str) -> _Group:
        return _Group(instrument_name(self.namespace, name, pattern, "duration"), name, pattern)

    def hook_readers(self) -> None:
        """Adds the histograms to the collections of the meter's readers not hooked yet
        (SDK meters only: another meter has no readers to reach)."""
        meter = self.meter()
        storages = getattr(getattr(meter, "_measurement_consumer", None), "_reader_storages", None)
        for reader in list(storages or ()):
            if reader in self.readers:
                continue
            collect = getattr(reader, "_collect", None)
            if collect is None:
                continue
            state = _Reader(_temporality(reader) is AggregationTemporality.DELTA, self.start_ns)
            self.readers[reader] = state
            reader._collect = self._collector(collect, state)

    def _collector(self, collect: Any, state: _Reader) -> Any:
        export = weakref.ref(self)

        def collect_with_latency(reader: Any, *args: Any, **kwargs: Any) -> Any:
            data = collect(reader, *args, **kwargs)
            me = export()
            if me is None or not me.active:
                return data
            try:
                return me.extend(data, state)
            except Exception:  # never lose the reader's own metrics
                logger.exception("failsafe: exporting latency histograms failed")
                return data

        return collect_with_latency

    def metrics(self, state: _Reader) -> list[Metric]:
        now = time.time_ns()
        start = state.last_ns if state.delta else self.start_ns
        temporality = (
            AggregationTemporality.DELTA if state.delta else AggregationTemporality.CUMULATIVE
        )
        out: list[Metric] = []
        for group in list(self.names.groups.values()):
            points = []
            for i, p in enumerate(group.read(self.names.seen)):
                if state.delta:
                    p = _delta(p, state.last.get((group.metric, i), _ZERO), state, group, i)
                if p[1]:
                    points.append(_point(p, OUTCOMES[i], start, now))
            if points:
                out.append(
                    Metric(
                        name=group.metric,
                        description=f"failsafe {group.pattern} call duration by outcome",
                        unit="s",
                        data=Histogram(data_points=points, aggregation_temporality=temporality),
                    )
                )
        state.last_ns = now
        return out

    def extend(self, data: MetricsData | None, state: _Reader) -> MetricsData | None:
        extra = self.metrics(state)
        if not extra:
            return data
        if data is None or not data.resource_metrics:
            return MetricsData(
                resource_metrics=[
                    ResourceMetrics(
                        resource=self._resource(),
                        scope_metrics=[ScopeMetrics(self.scope, extra, "")],
                        schema_url="",
                    )
                ]
            )
        first, *rest = data.resource_metrics
        scopes = list(first.scope_metrics)
        for i, sm in enumerate(scopes):
            if sm.scope.name == self.scope.name and sm.scope.version == self.scope.version:
                scopes[i] = ScopeMetrics(sm.scope, [*sm.metrics, *extra], sm.schema_url)
                break
        else:
            scopes.append(ScopeMetrics(self.scope, extra, ""))
        merged = ResourceMetrics(first.resource, scopes, first.schema_url)
        return MetricsData(resource_metrics=[merged, *rest])

    def _provider_config(self) -> Any:
        consumer = getattr(self.meter(), "_measurement_consumer", None)
        return getattr(consumer, "_sdk_config", None)

    def _resource(self) -> Resource:
        resource = getattr(self._provider_config(), "resource", None)
        return resource if isinstance(resource, Resource) else Resource.get_empty()


def _delta(p: Point, last: Point, state: _Reader, group: _Group, i: int) -> Point:
    state.last[(group.metric, i)] = p
    n = p[1] - last[1]
    if n <= 0:
        return _ZERO
    counts = tuple(a - b for a, b in zip(p[0], last[0], strict=True))
    # The interval's extremes are known to the bucket: its first and last non-empty buckets,
    # narrowed by the all-time extremes.
    first = next(b for b, c in enumerate(counts) if c)
    last_b = max(b for b, c in enumerate(counts) if c)
    bounds = _native.LATENCY_BOUNDS_NS
    lo = bounds[first - 1] if first else 0
    hi = bounds[last_b] if last_b < len(bounds) else p[4]
    return (counts, n, p[2] - last[2], max(lo, p[3]), min(hi, p[4]))


def _point(p: Point, outcome: str, start_ns: int, now_ns: int) -> HistogramDataPoint:
    return HistogramDataPoint(
        attributes={"outcome": outcome},
        start_time_unix_nano=start_ns,
        time_unix_nano=now_ns,
        count=p[1],
        sum=p[2] / 1e9,
        bucket_counts=p[0],
        explicit_bounds=BOUNDS_S,
        min=p[3] / 1e9,
        max=p[4] / 1e9,
    )
