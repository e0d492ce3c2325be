"""Soak of the OpenTelemetry instrumentor: distinct component names created and dropped under
a periodic reader, as keyed per-host policies do.

Each name gets one component (a retry, or a circuit breaker, in turn) that answers one call and
is then dropped. Meanwhile a PeriodicExportingMetricReader collects every --interval seconds,
and a task measures how late the event loop wakes it (a stall). Printed at the end: RSS growth,
the longest collection, the longest loop stall, the series exported, and whether the exported
totals only ever grew and add up to the calls made.

Run: uv run python bench/soak_otel.py [--names 100000] [--interval 0.5] [--max-seconds 900]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)

from failsafe.circuitbreaker import consecutive_breaker
from failsafe.integrations.opentelemetry import FailsafeOtelInstrumentor
from failsafe.retry import retry

NAMESPACE = "soak"
TICK = 0.005  # the stall monitor's sleep


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Figures:
    names: int = 0
    wall_s: float = 0.0
    rss_start_mib: float = 0.0
    rss_end_mib: float = 0.0
    rss_max_mib: float = 0.0
    collections: int = 0
    collection_failures: int = 0
    max_collection_ms: float = 0.0
    max_stall_ms: float = 0.0
    series: int = 0
    series_before: int = 0  # exported before the soak (components alive already)
    monotonic: bool = True
    total_calls: int = 0
    exported_before: int = 0  # what components made before the soak had counted
    exported_total: int = 0
    stopped_early: bool = False
    totals: list[int] = field(default_factory=list)

    @property
    def rss_growth_mib(self) -> float:
        return self.rss_end_mib - self.rss_start_mib


class Exporter(MetricExporter):
    """Keeps, per export, the series count and the sum of every `success` counter."""

    def __init__(self, figures: Figures) -> None:
        super().__init__()
        self.figures = figures
        self.lock = threading.Lock()

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        series = total = 0
        for rm in metrics_data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if not metric.name.startswith(f"{NAMESPACE}."):
                        continue
                    series += 1
                    if metric.name.endswith(".success"):
                        total += sum(int(p.value) for p in metric.data.data_points)
        with self.lock:
            f = self.figures
            if f.totals and total < f.totals[-1]:
                f.monotonic = False
            f.totals.append(total)
            f.series = series
            f.exported_total = total
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


class TimedReader(PeriodicExportingMetricReader):
    """The periodic reader, timing each collection (collect and export)."""

    def __init__(self, exporter: Exporter, interval_s: float, figures: Figures) -> None:
        super().__init__(exporter, export_interval_millis=interval_s * 1000)
        self.figures = figures

    def collect(self, timeout_millis: float = 10_000) -> None:
        start = time.perf_counter()
        try:
            super().collect(timeout_millis=timeout_millis)
        except Exception:
            self.figures.collection_failures += 1
            raise
        finally:
            took = (time.perf_counter() - start) * 1000
            self.figures.collections += 1
            self.figures.max_collection_ms = max(self.figures.max_collection_ms, took)
            self.figures.rss_max_mib = max(self.figures.rss_max_mib, rss_mib())


async def ok() -> int:
    return 1


async def monitor(figures: Figures, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        start = loop.time()
        await asyncio.sleep(TICK)
        figures.max_stall_ms = max(figures.max_stall_ms, (loop.time() - start - TICK) * 1000)


async def workload(
    figures: Figures, names: int, max_seconds: float, yield_every: int, baseline: bool = False
) -> None:
    start = time.perf_counter()
    for i in range(names):
        if baseline:  # the same loop without failsafe: what the machine itself stalls
            assert await ok() == 1
        else:
            policy: Any = (
                consecutive_breaker(ConnectionError, name=f"cb.h{i}")
                if i % 2
                else retry(attempts=1, name=f"r.h{i}")
            )
            assert await policy(ok)() == 1
            del policy
        figures.total_calls += 1
        figures.names = i + 1
        if i % yield_every == yield_every - 1:
            await asyncio.sleep(0)
            if time.perf_counter() - start > max_seconds:
                figures.stopped_early = True
                return


async def soak(
    names: int,
    interval: float,
    max_seconds: float,
    yield_every: int = 10,
    max_components: int | None = None,
    baseline: bool = False,
) -> Figures:
    figures = Figures()
    reader = TimedReader(Exporter(figures), interval, figures)
    provider = MeterProvider(metric_readers=[reader])
    instrumentor = FailsafeOtelInstrumentor()
    instrumentor.uninstrument()
    extra = {} if max_components is None else {"max_components": max_components}
    instrumentor.instrument(namespace=NAMESPACE, meter_provider=provider, **extra)
    flush = getattr(instrumentor, "flush", None)
    if flush is not None:
        flush(60)
    await asyncio.to_thread(reader.collect, 60_000)
    figures.exported_before = figures.exported_total
    figures.series_before = figures.series
    gc.collect()
    figures.rss_start_mib = rss_mib()
    stop = asyncio.Event()
    watcher = asyncio.create_task(monitor(figures, stop))
    start = time.perf_counter()
    try:
        await workload(figures, names, max_seconds, yield_every, baseline)
    finally:
        stop.set()
        await watcher
        figures.wall_s = time.perf_counter() - start
        gc.collect()
        if flush is not None:
            flush(60)
        # Two final collections: the gone series are folded at the first, then exported.
        for _ in range(2):
            await asyncio.to_thread(reader.collect, 60_000)
        figures.rss_end_mib = rss_mib()
        figures.rss_max_mib = max(figures.rss_max_mib, figures.rss_end_mib)
        provider.shutdown()  # its last export still sees the instruments
        instrumentor.uninstrument()
    return figures


def table(f: Figures) -> str:
    rows = [
        (
            "names created and dropped",
            f"{f.names:,}" + (" (stopped early)" if f.stopped_early else ""),
        ),
        ("wall time", f"{f.wall_s:.1f} s"),
        ("RSS growth", f"{f.rss_growth_mib:+.1f} MiB (max {f.rss_max_mib:.0f} MiB)"),
        ("collections (failed)", f"{f.collections} ({f.collection_failures})"),
        ("max collection time", f"{f.max_collection_ms:.0f} ms"),
        ("max event-loop stall", f"{f.max_stall_ms:.1f} ms"),
        ("series exported at the end", f"{f.series:,}"),
        ("totals monotonic", str(f.monotonic)),
        ("exported total / calls", f"{f.exported_total - f.exported_before:,} / {f.total_calls:,}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def positive(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", type=positive(int), default=100_000)
    parser.add_argument("--interval", type=positive(float), default=0.5, help="seconds")
    parser.add_argument("--max-seconds", type=positive(float), default=900.0)
    parser.add_argument("--yield-every", type=positive(int), default=10)
    parser.add_argument("--max-components", type=positive(int), default=None)
    parser.add_argument(
        "--baseline", action="store_true", help="the same loop calling a bare function"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    figures = asyncio.run(
        soak(
            args.names,
            args.interval,
            args.max_seconds,
            args.yield_every,
            args.max_components,
            args.baseline,
        )
    )
    print(table(figures))
    if args.json:
        data = asdict(figures)
        data.pop("totals")
        data["rss_growth_mib"] = figures.rss_growth_mib
        print(json.dumps(data))
    return 0 if figures.monotonic else 1


if __name__ == "__main__":
    sys.exit(main())
