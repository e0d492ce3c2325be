"""Latency histograms of `async with` blocks: timed from the entry to the end of the block, by
outcome, as decorated calls are; read through the real OpenTelemetry SDK's in-memory reader."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from failsafe.adaptive import concurrency_limit, throttle
from failsafe.bulkhead import BulkheadFull, bulkhead
from failsafe.circuitbreaker import BreakerFailing, consecutive_breaker
from failsafe.failfast import FailFastOpen, failfast
from failsafe.featuretoggle import FeatureDisabled, featuretoggle
from failsafe.hedge import hedge
from failsafe.integrations.opentelemetry import FailsafeOtelInstrumentor
from failsafe.ratelimit import RateLimitExceeded, tokenbucket
from failsafe.testing import FakeClock
from failsafe.timeout import timeout
from test_otel_latency import MS, NS, Otel, bucket_of, otel, unique

__all__ = ["otel"]  # the fixture, shared with test_otel_latency


# Each block form: (pattern, a policy named name). Every one admits a block while fresh.
FORMS: dict[str, Callable[[str], Any]] = {
    "timeout": lambda name: timeout(10, name=name),
    "circuitbreaker": lambda name: consecutive_breaker(failure_threshold=5, name=name),
    "bulkhead": lambda name: bulkhead(2, name=name),
    "ratelimit": lambda name: tokenbucket(100, 1, name=name),
    "failfast": lambda name: failfast(failure_threshold=5, name=name),
    "featuretoggle": lambda name: featuretoggle(name=name),
    "hedge": lambda name: hedge(attempts=2, delay=1, timeout=10, name=name),
    "concurrency_limit": lambda name: concurrency_limit(name=name),
    "throttle": lambda name: throttle(name=name),
}


@pytest.mark.parametrize("pattern", FORMS)
async def test_block_success_failure_and_cancellation(
    otel: Otel, clock: FakeClock, pattern: str
) -> None:
    name = unique(pattern[:2])
    policy = FORMS[pattern](name)
    async with policy:
        clock.advance(0.003)

    async def fail() -> None:
        async with policy:
            clock.advance(0.4)
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await fail()

    started = asyncio.Event()

    async def hang() -> None:
        async with policy:
            started.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(hang())
    await started.wait()
    clock.advance(0.25)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    points = otel.histograms()[f"{NS}.{name}.{pattern}.duration"]
    assert set(points) == {"success", "failure", "cancelled"}
    assert points["success"].count == 1
    assert points["success"].bucket_counts[bucket_of(3 * MS)] == 1
    assert points["failure"].count == 1
    assert points["failure"].bucket_counts[bucket_of(400 * MS)] == 1
    # Cancelled inside the block: its own outcome, never a failure.
    assert points["cancelled"].count == 1
    assert points["cancelled"].bucket_counts[bucket_of(250 * MS)] == 1


async def test_refused_entries_count_as_rejected_at_once(otel: Otel, clock: FakeClock) -> None:
    refusing = ("timeout", "circuitbreaker", "bulkhead", "ratelimit", "failfast", "featuretoggle")
    names = {p: unique(p[:2]) for p in refusing}
    breaker = consecutive_breaker(
        failure_threshold=1, recovery_time=60, name=names["circuitbreaker"]
    )
    with pytest.raises(ZeroDivisionError):
        async with breaker:
            raise ZeroDivisionError
    full = bulkhead(1, 1, max_wait=0, name=names["bulkhead"])
    limit = tokenbucket(1, 60, name=names["ratelimit"])
    latch = failfast(failure_threshold=1, name=names["failfast"])
    with pytest.raises(FailFastOpen):  # the failure that opens it (counted a failure)
        async with latch:
            raise OSError
    off = featuretoggle(enabled=False, name=names["featuretoggle"])

    async with full, limit:
        with pytest.raises(BulkheadFull):
            async with full:
                pass
        with pytest.raises(RateLimitExceeded):
            async with limit:
                pass
    with pytest.raises(BreakerFailing):
        async with breaker:
            pass
    with pytest.raises(FailFastOpen):
        async with latch:
            pass
    with pytest.raises(FeatureDisabled):
        async with off:
            pass

    h = otel.histograms()
    for pattern, name in names.items():
        if pattern == "timeout":
            continue
        rejected = h[f"{NS}.{name}.{pattern}.duration"]["rejected"]
        assert (pattern, rejected.count, rejected.max) == (pattern, 1, 0)


async def test_fired_timeout_block_is_a_failure(otel: Otel, instant: None) -> None:
    name = unique("t")
    with pytest.raises(TimeoutError):
        async with timeout(0.05, name=name):
            await asyncio.sleep(1)
    points = otel.histograms()[f"{NS}.{name}.timeout.duration"]
    assert set(points) == {"failure"}
    assert points["failure"].count == 1


async def test_queued_entry_counts_its_wait_or_its_cancellation(
    otel: Otel, clock: FakeClock
) -> None:
    name = unique("b")
    bh = bulkhead(1, 3, name=name)
    gate = asyncio.Event()
    entered: list[str] = []

    async def block(label: str, hold: float) -> None:
        async with bh:
            entered.append(label)
            await gate.wait()
            clock.advance(hold)

    first = asyncio.create_task(block("first", 0.005))
    await asyncio.sleep(0)
    queued = asyncio.create_task(block("queued", 0.002))
    dropped = asyncio.create_task(block("dropped", 0.0))
    await asyncio.sleep(0)
    clock.advance(0.1)
    dropped.cancel()  # cancelled while waiting for its place: never entered
    with pytest.raises(asyncio.CancelledError):
        await dropped
    gate.set()
    await asyncio.gather(first, queued)
    assert entered == ["first", "queued"]

    points = otel.histograms()[f"{NS}.{name}.bulkhead.duration"]
    ok = points["success"]
    assert ok.count == 2
    assert ok.min == pytest.approx(0.105)  # first: 100 ms held + 5 ms
    assert ok.max == pytest.approx(0.107)  # queued: its wait for the first, then 2 ms
    assert points["cancelled"].count == 1
    assert points["cancelled"].bucket_counts[bucket_of(100 * MS)] == 1
    assert "failure" not in points


async def test_nested_and_interleaved_blocks_each_count_their_own_time(
    otel: Otel, clock: FakeClock
) -> None:
    name = unique("t")
    t = timeout(10, name=name)
    step = asyncio.Event()

    async def other() -> None:
        async with t:
            await step.wait()
            clock.advance(0.5)

    async with t:
        clock.advance(0.001)
        task = asyncio.create_task(other())
        await asyncio.sleep(0)
        async with t:
            clock.advance(0.02)
        step.set()
        await task  # the other task's block ends inside this one: 500 ms more here

    ok = otel.histograms()[f"{NS}.{name}.timeout.duration"]["success"]
    assert ok.count == 3
    assert ok.min == pytest.approx(0.02)  # inner
    assert ok.max == pytest.approx(0.521)  # outer: 1 + 20 + 500 ms
    assert ok.sum == pytest.approx(0.02 + 0.52 + 0.521)  # the other task's: 20 + 500 ms


@pytest.mark.parametrize("pattern", ["bulkhead", "timeout"])
async def test_blocks_timed_only_while_on(clock: FakeClock, pattern: str) -> None:
    # The timeout keeps a block's timing in its scope, the bulkhead per task: the same rules.
    inst = FailsafeOtelInstrumentor()
    inst.uninstrument()
    o = Otel()
    name = unique("b")
    bh = FORMS[pattern](name)
    try:
        inst.instrument(namespace=NS, meter_provider=o.provider)
        async with bh:
            clock.advance(0.001)
        assert o.histograms() == {}
        inst.instrument(namespace=NS, meter_provider=o.provider, latency=True)
        async with bh:
            inst.uninstrument()  # timing stops with the block open: it ends untimed
            clock.advance(0.5)
        async with bh:  # begun while off
            inst.instrument(namespace=NS, meter_provider=o.provider, latency=True)
            clock.advance(0.5)
        async with bh:
            clock.advance(0.004)
        ok = o.histograms()[f"{NS}.{name}.{pattern}.duration"]["success"]
        assert (ok.count, ok.max) == (1, pytest.approx(0.004))
    finally:
        inst.uninstrument()
        o.provider.shutdown()
