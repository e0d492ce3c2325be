"""Latency histograms (instrument(latency=True)) and trace events (instrument(spans=...)),
read through the real OpenTelemetry SDK's in-memory reader and span exporter."""

from __future__ import annotations

import asyncio
import gc
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from failsafe import _core, _native, events
from failsafe.bulkhead import BulkheadFull, bulkhead
from failsafe.cache import cache
from failsafe.circuitbreaker import BreakerFailing, consecutive_breaker
from failsafe.featuretoggle import FeatureDisabled, featuretoggle
from failsafe.hedge import hedge
from failsafe.integrations.opentelemetry import FailsafeOtelInstrumentor
from failsafe.ratelimit import tokenbucket
from failsafe.retry import retry
from failsafe.testing import FakeClock
from failsafe.timeout import timeout

NS = "test.latency"
MS = 1_000_000
BOUNDS_S = [b / 1e9 for b in _native.LATENCY_BOUNDS_NS]
_ids = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}{next(_ids)}"


def bucket_of(duration_ns: int) -> int:
    """OpenTelemetry's explicit-bucket placement: the first bound >= the value."""
    return next(
        (i for i, b in enumerate(_native.LATENCY_BOUNDS_NS) if duration_ns <= b),
        len(_native.LATENCY_BOUNDS_NS),
    )


class Otel:
    def __init__(self, delta: bool = False) -> None:
        temporality = {SdkHistogram: AggregationTemporality.DELTA} if delta else None
        self.reader = InMemoryMetricReader(preferred_temporality=temporality)
        self.provider = MeterProvider(metric_readers=[self.reader])

    def histograms(self) -> dict[str, dict[str, Any]]:
        """{metric name: {outcome: data point}} of failsafe's duration histograms."""
        out: dict[str, dict[str, Any]] = {}
        data = self.reader.get_metrics_data()
        for rm in data.resource_metrics if data is not None else ():
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if sm.scope.name == "failsafe" and m.name.endswith(".duration"):
                        assert m.unit == "s"
                        out[m.name] = {p.attributes["outcome"]: p for p in m.data.data_points}
        return out


@pytest.fixture
def otel() -> Iterator[Otel]:
    inst = FailsafeOtelInstrumentor()
    inst.uninstrument()
    o = Otel()
    inst.instrument(namespace=NS, meter_provider=o.provider, latency=True)
    yield o
    inst.uninstrument()
    o.provider.shutdown()


class Spans:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("test")

    def finished(self, name: str) -> ReadableSpan:
        (span,) = [s for s in self.exporter.get_finished_spans() if s.name == name]
        return span

    def events(self, name: str) -> list[tuple[str, dict[str, Any]]]:
        return [(e.name, dict(e.attributes or {})) for e in self.finished(name).events]


def trace(mode: str | None) -> Iterator[Spans]:
    inst = FailsafeOtelInstrumentor()
    inst.uninstrument()
    spans = Spans()
    provider = MeterProvider()
    inst.instrument(
        namespace=NS, meter_provider=provider, spans=mode, tracer_provider=spans.provider
    )
    yield spans
    inst.uninstrument()
    provider.shutdown()


@pytest.fixture
def span_events() -> Iterator[Spans]:
    yield from trace("events")


@pytest.fixture
def child_spans() -> Iterator[Spans]:
    yield from trace("spans")


# ------------------------------------------------------------------------------------------
# Histograms


async def test_buckets_and_counts_by_outcome(otel: Otel, clock: FakeClock) -> None:
    name = unique("lat")
    gate = asyncio.Event()

    @consecutive_breaker(failure_threshold=1, recovery_time=60, name=name)
    async def call(kind: str) -> str:
        if kind == "ok":
            clock.advance(0.003)
            return "ok"
        if kind == "slow-fail":
            clock.advance(0.4)
            raise ConnectionError
        await gate.wait()  # until cancelled
        return "never"

    assert await call("ok") == "ok"
    assert await call("ok") == "ok"
    task = asyncio.create_task(call("hang"))
    await asyncio.sleep(0)
    clock.advance(0.25)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(ConnectionError):
        await call("slow-fail")
    with pytest.raises(BreakerFailing):
        await call("ok")  # open: refused without running

    points = otel.histograms()[f"{NS}.{name}.circuitbreaker.duration"]
    assert set(points) == {"success", "failure", "rejected", "cancelled"}
    ok, failed, rejected, cancelled = (
        points[k] for k in ("success", "failure", "rejected", "cancelled")
    )
    assert list(ok.explicit_bounds) == BOUNDS_S
    assert ok.count == 2
    assert ok.bucket_counts[bucket_of(3 * MS)] == 2
    assert ok.sum == pytest.approx(0.006)
    assert ok.min == ok.max == pytest.approx(0.003)
    assert failed.count == 1
    assert failed.bucket_counts[bucket_of(400 * MS)] == 1
    assert rejected.count == 1
    assert rejected.bucket_counts[0] == 1
    assert rejected.max == 0
    # A cancelled call is its own outcome, never a failure.
    assert cancelled.count == 1
    assert cancelled.bucket_counts[bucket_of(250 * MS)] == 1
    for p in points.values():
        assert sum(p.bucket_counts) == p.count
        assert len(p.bucket_counts) == len(BOUNDS_S) + 1


async def test_cancelled_retry_is_not_a_failure(otel: Otel, clock: FakeClock) -> None:
    name = unique("lat")
    started = asyncio.Event()

    @retry(attempts=3, backoff=0, name=name)
    async def call() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(call())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    points = otel.histograms()[f"{NS}.{name}.retry.duration"]
    assert set(points) == {"cancelled"}
    assert points["cancelled"].count == 1


async def test_every_admission_path_is_timed(otel: Otel, clock: FakeClock) -> None:
    # admit 0 (own coroutine: toggle on), a GuardedCall (timeout), a slow path (bulkhead
    # queue), a C refusal (toggle off).
    on, off, t, b = (unique(p) for p in ("on", "off", "t", "b"))

    @featuretoggle(name=on)
    async def enabled() -> int:
        clock.advance(0.001)
        return 1

    disabled = featuretoggle(enabled=False, name=off)(enabled.__wrapped__)

    @timeout(10, name=t)
    async def bounded() -> int:
        clock.advance(0.02)
        return 2

    gate = asyncio.Event()
    bh = bulkhead(1, 2, name=b)

    @bh
    async def held() -> None:
        await gate.wait()
        clock.advance(0.005)

    assert await enabled() == 1
    assert await bounded() == 2
    with pytest.raises(FeatureDisabled):
        await disabled()
    first, second = asyncio.create_task(held()), asyncio.create_task(held())
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(first, second)

    h = otel.histograms()
    assert h[f"{NS}.{on}.featuretoggle.duration"]["success"].bucket_counts[bucket_of(MS)] == 1
    assert h[f"{NS}.{t}.timeout.duration"]["success"].bucket_counts[bucket_of(20 * MS)] == 1
    assert h[f"{NS}.{off}.featuretoggle.duration"]["rejected"].count == 1
    held_ok = h[f"{NS}.{b}.bulkhead.duration"]["success"]
    assert held_ok.count == 2
    assert held_ok.bucket_counts[bucket_of(5 * MS)] == 1  # the first ran 5 ms
    assert held_ok.bucket_counts[bucket_of(10 * MS)] == 1  # the queued one waited for it


async def test_cache_hit_counts_at_once_as_a_success(otel: Otel, clock: FakeClock) -> None:
    name = unique("c")

    @cache(ttl=60, name=name)
    async def call(x: int) -> int:
        clock.advance(0.002)
        return x

    assert await call(1) == 1  # a miss: the function runs 2 ms
    assert await call(1) == 1  # a hit: answered without calling it
    ok = otel.histograms()[f"{NS}.{name}.cache.duration"]["success"]
    assert ok.count == 2
    assert ok.bucket_counts[bucket_of(2 * MS)] == 1
    assert ok.bucket_counts[0] == 1
    assert ok.min == 0


async def test_cancelled_at_each_await_of_each_route_is_never_a_failure(
    otel: Otel, clock: FakeClock
) -> None:
    names = {p: unique(p) for p in ("toggle", "timeout", "retry", "bulkhead", "limit")}
    gate = asyncio.Event()
    failed_once = asyncio.Event()

    async def hang() -> None:
        await gate.wait()

    toggled = featuretoggle(name=names["toggle"])(hang)  # the function's own coroutine
    bounded = timeout(10, name=names["timeout"])(hang)  # a GuardedCall

    @retry(attempts=3, backoff=60, name=names["retry"])
    async def flaky() -> None:
        failed_once.set()
        raise ConnectionError  # then waits out the backoff, where it is cancelled

    bh = bulkhead(1, 2, name=names["bulkhead"])
    held = bh(hang)
    limited = tokenbucket(1, 1, 1, max_wait=600, name=names["limit"])(hang)

    async def cancelled(aw: Any, advance: float) -> None:
        task = asyncio.ensure_future(aw)
        for _ in range(3):
            await asyncio.sleep(0)
        clock.advance(advance)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    await cancelled(toggled(), 0.001)
    await cancelled(bounded(), 0.002)
    await cancelled(flaky(), 0.003)
    assert failed_once.is_set()
    holder = asyncio.create_task(held())  # admitted: holds the only place
    await asyncio.sleep(0)
    await cancelled(held(), 0.004)  # queued behind it: cancelled while waiting (slow path)
    queued = asyncio.create_task(held())
    await asyncio.sleep(0)
    with pytest.raises(BulkheadFull):
        await held()  # the queue is full: refused at once
    limiter_task = asyncio.create_task(limited())  # takes the one token, then waits on gate
    await asyncio.sleep(0)
    await cancelled(limited(), 0.005)  # waits for a token: cancelled in the limiter's wait
    gate.set()
    await holder
    await queued
    await limiter_task

    h = otel.histograms()
    for pattern, key, ms in (
        ("featuretoggle", "toggle", 1),
        ("timeout", "timeout", 2),
        ("retry", "retry", 3),
        ("ratelimit", "limit", 5),
    ):
        points = h[f"{NS}.{names[key]}.{pattern}.duration"]
        assert "failure" not in points
        assert points["cancelled"].count == 1
        assert points["cancelled"].bucket_counts[bucket_of(ms * MS)] == 1
    points = h[f"{NS}.{names['bulkhead']}.bulkhead.duration"]
    assert "failure" not in points
    assert points["rejected"].count == 1
    assert points["rejected"].max == 0
    assert points["success"].count == 2  # the holder, and the queued call once it ran
    assert points["cancelled"].count == 1
    assert points["cancelled"].bucket_counts[bucket_of(4 * MS)] == 1


async def test_closed_or_thrown_into_before_running_is_not_counted_on_any_route(
    otel: Otel, clock: FakeClock
) -> None:
    names = {p: unique(p) for p in ("toggle", "timeout", "bulkhead")}

    async def one() -> int:
        return 1

    toggled = featuretoggle(name=names["toggle"])(one)
    bounded = timeout(10, name=names["timeout"])(one)
    bh = bulkhead(1, 2, name=names["bulkhead"])
    held = bh(one)
    async with bh:  # the place is taken: calls go down the slow path
        for fn in (toggled, bounded, held):
            fn().close()
            with pytest.raises(KeyError):
                fn().throw(KeyError("x"))
    assert await toggled() == await bounded() == await held() == 1
    h = otel.histograms()
    for pattern, key, counted in (
        ("featuretoggle", "toggle", 1),
        ("timeout", "timeout", 1),
        ("bulkhead", "bulkhead", 2),  # the call and the `async with` block
    ):
        assert set(h[f"{NS}.{names[key]}.{pattern}.duration"]) == {"success"}
        assert h[f"{NS}.{names[key]}.{pattern}.duration"]["success"].count == counted


async def test_many_tasks_into_one_histogram_add_up(otel: Otel, clock: FakeClock) -> None:
    name = unique("many")
    gate = asyncio.Event()
    # Three components under one name share its histogram per pattern; each is driven by many
    # tasks at once, a third succeeding, a third failing, a third cancelled while suspended.
    policies = {
        "retry": retry(attempts=0, name=name),
        "featuretoggle": featuretoggle(name=name),
        "bulkhead": bulkhead(10, 1000, name=name),  # most wait in its queue (slow path)
    }
    per_kind = 60

    async def body(kind: int) -> int:
        await asyncio.sleep(0)
        if kind == 1:
            raise ValueError
        if kind == 2:
            await gate.wait()
        return kind

    tasks = []
    for policy in policies.values():
        guarded = policy(body)
        tasks += [asyncio.create_task(guarded(i % 3)) for i in range(3 * per_kind)]
    for _ in range(3):
        await asyncio.sleep(0)
    for i, task in enumerate(tasks):
        if i % 3 == 2:
            task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert sum(isinstance(r, asyncio.CancelledError) for r in results) == 3 * per_kind
    h = otel.histograms()
    for pattern in policies:
        points = h[f"{NS}.{name}.{pattern}.duration"]
        assert {k: p.count for k, p in points.items()} == {
            "success": per_kind,
            "failure": per_kind,
            "cancelled": per_kind,
        }
        for p in points.values():
            assert sum(p.bucket_counts) == p.count


async def test_components_before_and_after_share_one_series(clock: FakeClock) -> None:
    name = unique("lat")
    early = retry(attempts=0, name=name)

    @early
    async def a() -> int:
        clock.advance(0.002)
        return 1

    inst = FailsafeOtelInstrumentor()
    inst.uninstrument()
    o = Otel()
    inst.instrument(namespace=NS, meter_provider=o.provider, latency=True)
    try:
        late = retry(attempts=0, name=name)

        @late
        async def b() -> int:
            clock.advance(0.002)
            return 1

        await a()
        await b()
        del late, b
        gc.collect()  # a component gone keeps its calls in the series
        await a()
        ok = o.histograms()[f"{NS}.{name}.retry.duration"]["success"]
        assert ok.count == 3
        assert ok.bucket_counts[bucket_of(2 * MS)] == 3
    finally:
        inst.uninstrument()
        o.provider.shutdown()


async def test_names_past_the_cap_keep_counting_into_the_overflow(clock: FakeClock) -> None:
    """A histogram in the overflow stays live across collections (it is not folded away as
    if its component were gone), and later names past the cap join it."""
    inst = FailsafeOtelInstrumentor()
    inst.uninstrument()
    o = Otel()
    inst.instrument(namespace=NS, meter_provider=o.provider, latency=True, max_components=0)
    try:
        name = unique("lat")

        @retry(attempts=0, name=name)
        async def call() -> None:
            clock.advance(0.002)

        metric = f"{NS}._overflow.retry.duration"
        before = o.histograms().get(metric, {})  # earlier tests' histograms are there too
        base = before["success"].count if "success" in before else 0
        await call()
        assert o.histograms()[metric]["success"].count == base + 1
        await call()
        await call()
        assert o.histograms()[metric]["success"].count == base + 3
        assert f"{NS}.{name}.retry.duration" not in o.histograms()
        del call
        gc.collect()
        o.histograms()  # the series of the component gone is let go
        for _ in range(20):

            @retry(attempts=0, name=unique("lat"))
            async def again() -> None:
                clock.advance(0.002)

            await again()
            del again
            gc.collect()
        assert o.histograms()[metric]["success"].count == base + 23
    finally:
        inst.uninstrument()
        o.provider.shutdown()


async def test_a_reader_added_to_the_provider_later_gets_the_histograms(
    otel: Otel, clock: FakeClock
) -> None:
    """A reader added after instrument() is hooked at the first collection of the provider's
    readers (its own included) and gets the histograms from the next one on."""
    late = InMemoryMetricReader()
    otel.provider.add_metric_reader(late)
    name = unique("lat")

    @retry(attempts=0, name=name)
    async def call() -> None:
        clock.advance(0.002)

    late.get_metrics_data()  # hooks it
    await call()
    metric = f"{NS}.{name}.retry.duration"
    data = late.get_metrics_data()
    assert data is not None
    found = [
        m
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == metric
    ]
    assert [p.count for p in found[0].data.data_points] == [1]
    assert otel.histograms()[metric]["success"].count == 1


async def test_delta_temporality_gets_what_is_new(clock: FakeClock) -> None:
    name = unique("lat")
    inst = FailsafeOtelInstrumentor()
    inst.uninstrument()
    o = Otel(delta=True)
    inst.instrument(namespace=NS, meter_provider=o.provider, latency=True)
    try:

        @retry(attempts=0, name=name)
        async def call(ms: int) -> None:
            clock.advance(ms / 1000)

        metric = f"{NS}.{name}.retry.duration"
        await call(3)
        await call(3)
        first = o.histograms()[metric]["success"]
        assert first.count == 2
        await call(40)
        second = o.histograms()[metric]["success"]
        assert second.count == 1
        assert second.bucket_counts[bucket_of(40 * MS)] == 1
        assert second.sum == pytest.approx(0.04)
        assert second.start_time_unix_nano == first.time_unix_nano
        assert metric not in o.histograms()  # nothing new: no point
    finally:
        inst.uninstrument()
        o.provider.shutdown()


async def test_off_by_default_no_histograms_and_calls_untimed(clock: FakeClock) -> None:
    name = unique("lat")
    policy = retry(attempts=0, name=name)

    @policy
    async def call() -> int:
        return 1

    def counted() -> int:
        """Calls counted so far into the component's histogram (0 before it has one)."""
        h = _core._latency.get(("retry", name))
        return 0 if h is None else sum(point[1] for point in h.read())

    inst = FailsafeOtelInstrumentor()
    inst.uninstrument()
    o = Otel()
    inst.instrument(namespace=NS, meter_provider=o.provider)
    try:
        assert not inst.latency
        assert not _core.latency_enabled()
        assert kind(call()) != "TimedCall"  # not wrapped: nothing timed
        assert await call() == 1
        assert o.histograms() == {}
        assert counted() == 0
        inst.instrument(namespace=NS, meter_provider=o.provider, latency=True)
        # Timed by the guarded call itself: no second awaitable around it.
        assert kind(call()) == "GuardedCall"
        assert await call() == 1
        assert counted() == 1
        assert inst.latency
        inst.instrument(namespace=NS, meter_provider=o.provider, latency=False)
        assert kind(call()) != "TimedCall"
        assert await call() == 1
        assert counted() == 1
        assert not _core.latency_enabled()
    finally:
        inst.uninstrument()
        o.provider.shutdown()
    assert kind(call()) != "TimedCall"  # uninstrument() stops timing as well
    assert await call() == 1
    assert counted() == 1


def kind(aw: Any) -> str:
    """The type name of a call's awaitable, closed unstarted."""
    aw.close()
    return type(aw).__name__


def test_bad_arguments() -> None:
    inst = FailsafeOtelInstrumentor()
    with pytest.raises(TypeError, match="latency"):
        inst.instrument(namespace=NS, meter_provider=MeterProvider(), latency=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="spans"):
        inst.instrument(namespace=NS, meter_provider=MeterProvider(), spans="all")
    with pytest.raises(TypeError, match="spans"):
        inst.instrument(namespace=NS, meter_provider=MeterProvider(), spans=True)  # type: ignore[arg-type]
    assert not inst.is_instrumented


# ------------------------------------------------------------------------------------------
# The timed call behaves as a coroutine


async def test_timed_call_coroutine_protocol(otel: Otel, clock: FakeClock) -> None:
    name = unique("lat")
    policy = retry(attempts=0, name=name)

    @policy
    async def call(x: int) -> tuple[int, int]:
        await asyncio.sleep(0)
        return (x, x)

    metric = f"{NS}.{name}.retry.duration"
    # A tuple result survives the StopIteration; a second await is refused.
    aw = call(1)
    assert await aw == (1, 1)
    with pytest.raises(RuntimeError):
        await aw
    # Closed or thrown into before it ran: the function never ran, nothing is counted.
    call(2).close()
    unstarted = call(3)
    with pytest.raises(KeyError):
        unstarted.throw(KeyError("x"))
    assert otel.histograms()[metric]["success"].count == 1
    assert "failure" not in otel.histograms()[metric]
    # Closed while suspended: a cancellation.
    running = call(4)
    running.send(None)
    assert running.cr_running is False
    running.close()
    assert otel.histograms()[metric]["cancelled"].count == 1
    # Tasks and gather see a coroutine-like awaitable with the function's name.
    task = asyncio.create_task(call(5))
    assert "call" in repr(task)
    assert await asyncio.gather(task, call(6)) == [(5, 5), (6, 6)]
    assert otel.histograms()[metric]["success"].count == 3


async def test_stacked_policies_each_time_their_own_call(otel: Otel, clock: FakeClock) -> None:
    outer_name, inner_name = unique("outer"), unique("inner")

    @retry(attempts=2, backoff=0, name=outer_name)
    @timeout(5, name=inner_name)
    async def call(state: list[int]) -> int:
        state[0] += 1
        clock.advance(0.001)
        if state[0] < 2:
            raise ConnectionError
        return state[0]

    assert await call([0]) == 2
    h = otel.histograms()
    inner = h[f"{NS}.{inner_name}.timeout.duration"]
    assert inner["failure"].count == 1
    assert inner["success"].count == 1
    outer = h[f"{NS}.{outer_name}.retry.duration"]
    assert set(outer) == {"success"}
    assert outer["success"].bucket_counts[bucket_of(2 * MS)] == 1


# ------------------------------------------------------------------------------------------
# Trace events


async def test_span_events_per_attempt_wait_and_refusal(span_events: Spans, instant: None) -> None:
    r, b, t, h, br = (unique(p) for p in ("r", "b", "t", "h", "br"))
    state = [0]

    @retry(attempts=3, backoff=0.5, name=r)
    async def flaky() -> int:
        state[0] += 1
        if state[0] < 3:
            raise ConnectionError(f"down {state[0]}")
        return state[0]

    gate = asyncio.Event()

    @bulkhead(1, 5, name=b)
    async def held() -> None:
        await gate.wait()

    @tokenbucket(1, 1, 1, max_wait=5, name=t)
    async def limited() -> None:
        pass

    async def never() -> None:
        await asyncio.Event().wait()

    attempts = iter([never, lambda: asyncio.sleep(0, "second")])

    @hedge(attempts=2, delay=0.01, name=h)
    async def hedged() -> Any:
        return await next(attempts)()

    @consecutive_breaker(failure_threshold=1, recovery_time=60, name=br)
    async def broken() -> None:
        raise KeyError

    with span_events.tracer.start_as_current_span("request"):
        assert await flaky() == 3
        first, second = asyncio.create_task(held()), asyncio.create_task(held())
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(first, second)
        await limited()
        await limited()  # waits for its token
        assert await hedged() == "second"
        with pytest.raises(KeyError):
            await broken()
        with pytest.raises(BreakerFailing):
            await broken()

    got = span_events.events("request")
    names = [n for n, _ in got]
    assert names == [
        "failsafe.retry.attempt_failed",
        "failsafe.retry.attempt_failed",
        "failsafe.bulkhead.wait",
        "failsafe.ratelimit.wait",
        "failsafe.hedge.attempt",
        "failsafe.circuitbreaker.rejected",
    ]
    retried = [a for n, a in got if n == "failsafe.retry.attempt_failed"]
    assert [a["failsafe.attempt"] for a in retried] == [1, 2]
    assert retried[0]["exception.type"] == "ConnectionError"
    assert retried[0]["exception.message"] == "down 1"
    assert all(a["failsafe.component"] == r and a["failsafe.delay"] == 0.5 for a in retried)
    wait = dict(got)["failsafe.bulkhead.wait"]
    assert wait["failsafe.component"] == b
    assert wait["failsafe.served"] is True
    assert dict(got)["failsafe.ratelimit.wait"]["failsafe.waited"] > 0
    assert dict(got)["failsafe.hedge.attempt"] == {"failsafe.component": h, "failsafe.attempt": 2}
    assert dict(got)["failsafe.circuitbreaker.rejected"]["failsafe.component"] == br


async def test_child_spans_under_the_current_span(child_spans: Spans, clock: FakeClock) -> None:
    b, tg = unique("b"), unique("tg")
    gate = asyncio.Event()

    @bulkhead(1, 5, name=b)
    async def held() -> None:
        await gate.wait()
        clock.advance(0.01)

    @featuretoggle(enabled=False, name=tg)
    async def off() -> None:
        pass

    with child_spans.tracer.start_as_current_span("request"):
        first, second = asyncio.create_task(held()), asyncio.create_task(held())
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(first, second)
        with pytest.raises(FeatureDisabled):
            await off()

    parent = child_spans.finished("request")
    assert parent.events == ()
    wait = child_spans.finished("failsafe.bulkhead.wait")
    refused = child_spans.finished("failsafe.featuretoggle.rejected")
    for child in (wait, refused):
        assert child.parent is not None
        assert child.parent.span_id == parent.context.span_id
        assert child.context.trace_id == parent.context.trace_id
    assert wait.attributes is not None
    assert wait.attributes["failsafe.waited"] == pytest.approx(0.01)
    assert wait.end_time is not None
    assert wait.start_time is not None
    assert wait.end_time - wait.start_time == pytest.approx(10 * MS, abs=1000)


async def test_spans_off_registers_nothing_and_records_nothing(clock: FakeClock) -> None:
    spans = Spans()
    inst = FailsafeOtelInstrumentor()
    inst.uninstrument()
    provider = MeterProvider()
    inst.instrument(namespace=NS, meter_provider=provider, tracer_provider=spans.provider)
    try:
        assert all(not events.global_listeners(p) for p in ("retry", "bulkhead", "hedge"))
        state = [0]

        @retry(attempts=2, backoff=0, name=unique("r"))
        async def flaky() -> int:
            state[0] += 1
            if state[0] < 2:
                raise ConnectionError
            return 1

        with spans.tracer.start_as_current_span("request"):
            assert await flaky() == 1
        assert spans.finished("request").events == ()
        assert len(spans.exporter.get_finished_spans()) == 1
    finally:
        inst.uninstrument()
        provider.shutdown()


async def test_no_current_span_no_events(span_events: Spans) -> None:
    @featuretoggle(enabled=False, name=unique("tg"))
    async def off() -> None:
        pass

    with pytest.raises(FeatureDisabled):
        await off()
    assert span_events.exporter.get_finished_spans() == ()


async def test_keyed_calls_are_timed_by_their_keys_policy(otel: Otel, clock: FakeClock) -> None:
    """A key's first call goes through Python, the next ones through the C route: each call is
    timed once, into the histogram of its own key's breaker, with its outcome."""
    from failsafe.keyed import keyed

    prefix = unique("kl")
    breakers = keyed(
        lambda h: consecutive_breaker(ConnectionError, failure_threshold=9, name=f"{prefix}.{h}"),
        key=lambda h, fail: h,
    )

    @breakers
    async def call(host: str, fail: bool) -> str:
        clock.advance(0.002)
        if fail:
            raise ConnectionError
        return host

    for _ in range(3):
        assert await call("a", False) == "a"
    with pytest.raises(ConnectionError):
        await call("a", True)
    assert await call("b", False) == "b"
    hist = otel.histograms()
    a = hist[f"{NS}.{prefix}.a.circuitbreaker.duration"]
    b = hist[f"{NS}.{prefix}.b.circuitbreaker.duration"]
    assert a["success"].count == 3
    assert a["success"].sum == pytest.approx(0.006)
    assert a["failure"].count == 1
    assert b["success"].count == 1
    assert set(b) == {"success"}
