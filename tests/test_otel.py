"""failsafe.integrations.opentelemetry: instrument names, values, series, idempotence."""

from __future__ import annotations

import asyncio
import gc
import inspect
import itertools
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader, Sum

from failsafe import _core, _native
from failsafe.fallback import fallback
from failsafe.integrations.opentelemetry import (
    MAX_NAME_LENGTH,
    FailsafeOtelInstrumentor,
    instrument_name,
)
from failsafe.retry import retry
from failsafe.timeout import TimeoutError as FsTimeoutError
from failsafe.timeout import timeout

NS = "test.otel"
CAP = 1_000_000  # every name gets its own instruments, however many earlier tests made
_ids = itertools.count()
OTEL_NAME = re.compile(r"[a-zA-Z][-_./a-zA-Z0-9]{0,254}")


def unique(prefix: str) -> str:
    """A component name no other test uses (the series registry lives for the process)."""
    return f"{prefix}{next(_ids)}"


class Otel:
    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])

    def collect(self) -> dict[str, Any]:
        """{instrument name: the metric data} of failsafe's scope."""
        out: dict[str, Any] = {}
        data = self.reader.get_metrics_data()
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                if sm.scope.name == "failsafe":
                    for m in sm.metrics:
                        out[m.name] = m.data
        return out

    def values(self) -> dict[str, int]:
        return {
            name: sum(p.value for p in data.data_points) for name, data in self.collect().items()
        }


@pytest.fixture
def otel() -> Iterator[Otel]:
    inst = FailsafeOtelInstrumentor()
    inst.uninstrument()
    o = Otel()
    inst.instrument(max_components=CAP, namespace=NS, meter_provider=o.provider)
    yield o
    inst.uninstrument()
    o.provider.shutdown()


async def fail_then_ok(state: list[int]) -> str:
    state[0] += 1
    if state[0] % 2:
        raise ConnectionError
    return "ok"


async def test_names_and_values_after_known_traffic(otel: Otel) -> None:
    n_retry, n_timeout, n_fallback = unique("quotes"), unique("db"), unique("answer")
    state = [0]

    @retry(attempts=2, backoff=0, on=ConnectionError, name=n_retry)
    async def flaky() -> str:
        return await fail_then_ok(state)

    @fallback("default", on=FsTimeoutError, name=n_fallback)
    @timeout(0, name=n_timeout)
    async def hang() -> str:
        await asyncio.sleep(10)
        return "never"

    for _ in range(5):
        assert await flaky() == "ok"
    for _ in range(3):
        assert await hang() == "default"

    values = otel.values()
    assert {
        k: v for k, v in values.items() if n_retry in k or n_timeout in k or n_fallback in k
    } == {
        f"{NS}.{n_retry}.retry.attempt": 5,
        f"{NS}.{n_retry}.retry.success": 5,
        f"{NS}.{n_retry}.retry.giveup": 0,
        f"{NS}.{n_timeout}.timeout.fired": 3,
        f"{NS}.{n_fallback}.fallback.invoked": 3,
    }
    data = otel.collect()[f"{NS}.{n_retry}.retry.attempt"]
    assert isinstance(data, Sum)
    assert data.is_monotonic
    assert data.aggregation_temporality == AggregationTemporality.CUMULATIVE


async def test_one_instrument_per_metric_in_counter_order(otel: Otel) -> None:
    name = unique("order")
    r = retry(attempts=1, name=name)
    names = [n for n in otel.collect() if f".{name}." in n]
    assert names == [f"{NS}.{name}.retry.{m}" for m in r.METRICS]


async def test_values_follow_the_c_counters_of_every_pattern(otel: Otel) -> None:
    name = unique("all")
    policies = [retry(name=name), timeout(1, name=name), fallback(None, name=name)]
    for p in policies:
        for i in range(len(p.METRICS)):
            p._count(i, 10 + i)
    values = otel.values()
    for p in policies:
        for i, metric in enumerate(p.METRICS):
            assert values[f"{NS}.{name}.{p.PATTERN}.{metric}"] == 10 + i == p.stats()[metric]


async def test_components_before_and_after_instrument() -> None:
    inst = FailsafeOtelInstrumentor()
    inst.uninstrument()
    before, after = unique("before"), unique("after")
    t1 = timeout(1, name=before)
    t1._count(0, 4)
    o = Otel()
    inst.instrument(max_components=CAP, namespace=NS, meter_provider=o.provider)
    try:
        t2 = timeout(1, name=after)
        t2._count(0, 7)
        values = o.values()
        assert values[f"{NS}.{before}.timeout.fired"] == 4
        assert values[f"{NS}.{after}.timeout.fired"] == 7
        t1._count(0)
        assert o.values()[f"{NS}.{before}.timeout.fired"] == 5
    finally:
        inst.uninstrument()
        o.provider.shutdown()


async def test_decorated_function_reports_under_its_name(otel: Otel) -> None:
    @retry(attempts=1)
    async def fetch_stock_level() -> int:
        return 1

    await fetch_stock_level()
    name = fetch_stock_level.policy.name  # type: ignore[attr-defined]
    # Cut to 63 characters, with a hash of the full qualified name.
    assert name.startswith("test_decorated_function_reports_under_its_name.fetch_s")
    assert otel.values()[f"{NS}.{name}.retry.success"] >= 1


async def test_anonymous_block_policy_is_not_reported(otel: Otel) -> None:
    before = set(otel.collect())
    for _ in range(3):
        with pytest.raises(FsTimeoutError):
            async with timeout(0):
                await asyncio.sleep(10)
    assert set(otel.collect()) == before


async def test_components_sharing_name_and_pattern_are_one_series(otel: Otel) -> None:
    name = unique("shared")
    a, b = timeout(1, name=name), timeout(2, name=name)
    a._count(0, 2)
    b._count(0, 3)
    r = retry(name=name)  # another pattern: another series
    r._count(1, 9)
    values = otel.values()
    assert values[f"{NS}.{name}.timeout.fired"] == 5
    assert values[f"{NS}.{name}.retry.success"] == 9
    assert sum(1 for n in values if n == f"{NS}.{name}.timeout.fired") == 1


async def test_per_use_named_blocks_sum_up(otel: Otel) -> None:
    name = unique("per_use")
    for _ in range(4):
        with pytest.raises(FsTimeoutError):
            async with timeout(0, name=name):
                await asyncio.sleep(10)
    gc.collect()
    assert otel.values()[f"{NS}.{name}.timeout.fired"] == 4


async def test_collected_component_keeps_its_counts(otel: Otel) -> None:
    name = unique("gone")
    keep = timeout(1, name=name)
    keep._count(0, 1)
    gone = timeout(1, name=name)
    gone._count(0, 5)
    series = _core._series["timeout"][name]
    assert series.live == 2
    assert otel.values()[f"{NS}.{name}.timeout.fired"] == 6
    del gone
    gc.collect()
    assert series.live == 1
    assert otel.values()[f"{NS}.{name}.timeout.fired"] == 6
    keep._count(0, 1)
    assert otel.values()[f"{NS}.{name}.timeout.fired"] == 7


async def test_component_collected_in_a_cycle_keeps_its_counts(otel: Otel) -> None:
    name = unique("cycle")

    @retry(attempts=0, name=name)
    async def f() -> None:
        return None

    await f()
    f.cycle = f  # type: ignore[attr-defined]  # guard -> itself: only the cycle GC frees it
    del f
    gc.collect()
    assert _core._series["retry"][name].live == 0
    assert otel.values()[f"{NS}.{name}.retry.success"] == 1


async def test_series_never_goes_backwards_under_churn(otel: Otel) -> None:
    name = unique("churn")
    key = f"{NS}.{name}.timeout.fired"
    last = 0
    for i in range(50):
        t = timeout(1, name=name)
        t._count(0, i % 3)
        if i % 7 == 0:
            gc.collect()
        now = otel.values()[key]
        assert now >= last
        last = now
        del t
    gc.collect()
    assert otel.values()[key] == sum(i % 3 for i in range(50))


async def test_thousand_concurrent_tasks_counted_exactly(otel: Otel) -> None:
    name = unique("many")

    @retry(attempts=3, backoff=0, on=ConnectionError, name=name)
    async def flaky(state: list[int]) -> str:
        await asyncio.sleep(0)
        return await fail_then_ok(state)

    await asyncio.gather(*(flaky([0]) for _ in range(1000)))
    values = otel.values()
    assert values[f"{NS}.{name}.retry.attempt"] == 1000
    assert values[f"{NS}.{name}.retry.success"] == 1000


async def test_instrumenting_adds_no_listener() -> None:
    from failsafe import events

    inst = FailsafeOtelInstrumentor()
    inst.uninstrument()
    before = {p: events.global_listeners(p) for p in _core.PATTERNS}
    o = Otel()
    inst.instrument(max_components=CAP, namespace=NS, meter_provider=o.provider)
    try:
        assert {p: events.global_listeners(p) for p in _core.PATTERNS} == before
        t = timeout(1, name=unique("quiet"))
        assert t._local_listening == 0
        assert not events.is_listening(t)
    finally:
        inst.uninstrument()
        o.provider.shutdown()


def test_instrumentor_is_one_per_process() -> None:
    assert FailsafeOtelInstrumentor() is FailsafeOtelInstrumentor()


async def test_instrument_is_idempotent(otel: Otel) -> None:
    name = unique("idem")
    t = timeout(1, name=name)
    t._count(0, 3)
    inst = FailsafeOtelInstrumentor()
    assert inst.is_instrumented
    inst.instrument(namespace=NS, meter_provider=otel.provider)  # the same: nothing changes
    inst.instrument(namespace=NS)  # no other meter given: nothing changes
    values = otel.values()
    assert values[f"{NS}.{name}.timeout.fired"] == 3
    assert sum(1 for n in values if n.endswith(f".{name}.timeout.fired")) == 1


async def test_uninstrument_stops_and_reinstrument_resumes() -> None:
    inst = FailsafeOtelInstrumentor()
    inst.uninstrument()
    o = Otel()
    name = unique("un")
    t = timeout(1, name=name)
    key = f"{NS}.{name}.timeout.fired"
    try:
        inst.instrument(max_components=CAP, namespace=NS, meter_provider=o.provider)
        t._count(0, 2)
        assert o.values()[key] == 2
        inst.uninstrument()
        assert not inst.is_instrumented
        inst.uninstrument()  # twice is fine
        t._count(0, 1)
        later = timeout(1, name=unique("un_later"))
        later._count(0)
        assert o.values() == {}
        inst.instrument(max_components=CAP, namespace=NS, meter_provider=o.provider)
        values = o.values()
        assert values[key] == 3  # counting went on; the export resumes where it stands
        assert values[f"{NS}.{later.name}.timeout.fired"] == 1
    finally:
        inst.uninstrument()
        o.provider.shutdown()


async def test_explicit_meter_wins_over_provider() -> None:
    inst = FailsafeOtelInstrumentor()
    inst.uninstrument()
    used, unused = Otel(), Otel()
    name = unique("meter")
    try:
        inst.instrument(
            max_components=CAP,
            namespace=NS,
            meter_provider=unused.provider,
            meter=used.provider.get_meter("my.app"),
        )
        timeout(1, name=name)._count(0)
        assert unused.collect() == {}
        data = used.reader.get_metrics_data()
        assert data is not None
        scopes = {sm.scope.name for rm in data.resource_metrics for sm in rm.scope_metrics}
        assert scopes == {"my.app"}
    finally:
        inst.uninstrument()
        used.provider.shutdown()
        unused.provider.shutdown()


async def test_names_differing_only_in_case_share_one_instrument(otel: Otel) -> None:
    base = unique("Case")
    a, b = timeout(1, name=base), timeout(1, name=base.lower())
    a._count(0, 2)
    b._count(0, 3)
    values = otel.values()
    matching = {
        k: v for k, v in values.items() if k.lower() == f"{NS}.{base}.timeout.fired".lower()
    }
    assert list(matching.values()) == [5]


@pytest.mark.parametrize(
    ("namespace", "error"),
    [
        ("", ValueError),
        ("1abc", ValueError),
        ("has space", ValueError),
        ("ns.é", ValueError),
        ("a" * 129, ValueError),
        (None, TypeError),
        (b"ns", TypeError),
    ],
)
def test_invalid_namespace(namespace: Any, error: type[Exception]) -> None:
    inst = FailsafeOtelInstrumentor()
    was = inst.is_instrumented
    with pytest.raises(error, match="namespace"):
        inst.instrument(max_components=CAP, namespace=namespace, meter_provider=Otel().provider)
    assert inst.is_instrumented == was


@pytest.mark.parametrize("name", ["1x", "a b", "x" * 64, "", "né"])
def test_invalid_component_name_rejected_at_construction(name: str) -> None:
    with pytest.raises(ValueError, match="name"):
        timeout(1, name=name)


def test_longest_names_stay_valid() -> None:
    ns, comp = "n" * 128, "c" * 63
    for pattern in _core.PATTERNS:
        name = instrument_name(ns, comp, pattern, "transition.recovering")
        assert name == f"{ns}.{comp}.{pattern}.transition.recovering"
        assert len(name) <= MAX_NAME_LENGTH
        assert OTEL_NAME.fullmatch(name)


def test_too_long_names_are_shortened_and_stay_distinct() -> None:
    ns, metric = "n" * 128, "m" * 70
    a = instrument_name(ns, "c" * 62 + "a", "circuitbreaker", metric)
    b = instrument_name(ns, "c" * 62 + "b", "circuitbreaker", metric)
    for name in (a, b):
        assert len(name) <= MAX_NAME_LENGTH
        assert OTEL_NAME.fullmatch(name)
        assert name.startswith(f"{ns}.ccc")
        assert name.endswith(f".circuitbreaker.{metric}")
    assert a != b
    assert instrument_name(ns, "c" * 62 + "a", "circuitbreaker", metric) == a  # stable


async def test_long_names_export(otel: Otel) -> None:
    inst = FailsafeOtelInstrumentor()
    inst.uninstrument()
    o = Otel()
    ns = "n" * 128
    name = unique("x" * 55)
    try:
        inst.instrument(max_components=CAP, namespace=ns, meter_provider=o.provider)
        timeout(1, name=name)._count(0, 2)
        assert o.values()[f"{ns}.{name}.timeout.fired"] == 2
    finally:
        inst.uninstrument()
        o.provider.shutdown()


def test_series_attach_rules() -> None:
    s1, s2 = _native.Series(), _native.Series()
    t = timeout(1)
    s1.attach(t)
    s1.attach(t)  # again: nothing
    assert s1.live == 1
    with pytest.raises(ValueError, match="another series"):
        s2.attach(t)
    with pytest.raises(TypeError):
        s1.attach(object())  # type: ignore[arg-type]
    t._count(0, 4)
    assert s1.read()[0] == 4
    del t
    gc.collect()
    assert s1.live == 0
    assert s1.read()[0] == 4


# Patterns built in their own modules: the exported values are the component's own counters,
# one instrument per name in its METRICS. These run once the pattern module is present.


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def _expect_exported(otel: Otel, policy: Any, pattern: str, name: str) -> dict[str, int]:
    values = otel.values()
    stats = policy.stats()
    exported = {m: values[f"{NS}.{name}.{pattern}.{m}"] for m in policy.METRICS}
    assert exported == {m: stats[m] for m in policy.METRICS}
    return exported


async def test_ratelimit_admitted_and_rejected(otel: Otel) -> None:
    mod = pytest.importorskip("failsafe.ratelimit")
    if not hasattr(mod, "tokenbucket"):
        pytest.skip("failsafe.ratelimit has no tokenbucket")
    name = unique("limit")

    @mod.tokenbucket(1, 60, name=name)
    async def call() -> int:
        return 1

    await call()
    with pytest.raises(mod.RateLimitExceeded):
        await call()
    got = await _expect_exported(otel, call.policy, "ratelimit", name)
    assert got["admitted"] == 1
    assert got["rejected"] == 1


async def test_circuitbreaker_failure_and_rejected(otel: Otel) -> None:
    mod = pytest.importorskip("failsafe.circuitbreaker")
    name = unique("breaker")
    breaker = mod.consecutive_breaker(failure_threshold=2, recovery_time_secs=60, name=name)

    @breaker
    async def call() -> None:
        raise ConnectionError

    for _ in range(2):
        with pytest.raises(ConnectionError):
            await call()
    with pytest.raises(mod.BreakerFailing):
        await call()
    got = await _expect_exported(otel, call.policy, "circuitbreaker", name)
    assert got["failure"] == 2
    assert got["rejected"] == 1
    assert got["transition.failing"] == 1


async def test_failfast_rejected(otel: Otel) -> None:
    mod = pytest.importorskip("failsafe.failfast")
    name = unique("ff")

    @mod.failfast(failure_threshold=1, name=name)
    async def call() -> None:
        raise ConnectionError

    with pytest.raises(mod.FailFastOpen):
        await call()
    with pytest.raises(mod.FailFastOpen):
        await call()
    got = await _expect_exported(otel, call.policy, "failfast", name)
    assert got["opened"] == 1
    assert got["rejected"] >= 1


async def test_bulkhead_full(otel: Otel) -> None:
    mod = pytest.importorskip("failsafe.bulkhead")
    name = unique("bh")
    gate = asyncio.Event()

    @mod.bulkhead(1, 1, name=name)
    async def call() -> None:
        await gate.wait()

    first = asyncio.create_task(call())
    await asyncio.sleep(0)
    with pytest.raises(mod.BulkheadFull):
        await call()
    gate.set()
    await first
    got = await _expect_exported(otel, call.policy, "bulkhead", name)
    assert got["full"] == 1


async def test_cache_hit_miss_set(otel: Otel) -> None:
    mod = pytest.importorskip("failsafe.cache")
    name = unique("cache")

    @mod.cache(name=name)
    async def call(x: int) -> int:
        return x

    assert await call(1) == 1
    assert await call(1) == 1
    got = await _expect_exported(otel, call.policy, "cache", name)
    assert (got["miss"], got["hit"], got["set"]) == (1, 1, 1)


async def test_hedge_success(otel: Otel) -> None:
    mod = pytest.importorskip("failsafe.hedge")
    name = unique("hedge")

    @mod.hedge(attempts=2, delay=1.0, name=name)
    async def call() -> int:
        return 1

    assert await call() == 1
    got = await _expect_exported(otel, call.policy, "hedge", name)
    assert got["success"] == 1


async def test_featuretoggle_enabled_disabled(otel: Otel) -> None:
    mod = pytest.importorskip("failsafe.featuretoggle")
    on, off = unique("on"), unique("off")

    @mod.featuretoggle(enabled=True, name=on)
    async def yes() -> int:
        return 1

    @mod.featuretoggle(enabled=False, name=off)
    async def no() -> int:
        return 1

    assert await yes() == 1
    with pytest.raises(mod.FeatureDisabled):
        await no()
    assert (await _expect_exported(otel, yes.policy, "featuretoggle", on))["enabled"] == 1
    assert (await _expect_exported(otel, no.policy, "featuretoggle", off))["disabled"] == 1


def test_instrumentor_does_not_keep_meters_alive() -> None:
    import weakref

    inst = FailsafeOtelInstrumentor()
    inst.uninstrument()
    o = Otel()
    meter = o.provider.get_meter("short.lived")
    timeout(1, name=unique("weak"))
    inst.instrument(max_components=CAP, namespace=NS, meter=meter)
    inst.uninstrument()
    o.provider.shutdown()
    ref = weakref.ref(meter)
    del meter, o
    gc.collect()
    assert ref() is None


def test_failing_series_hook_never_stops_a_component(caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("exporter down")

    _core.on_new_series(broken)
    try:
        name = unique("hooked")
        t = timeout(1, name=name)
        assert t.name == name
    finally:
        _core.off_new_series(broken)
    assert "exporter down" in caplog.text


def test_component_without_c_counters_reports_nothing() -> None:
    class Plain(_core.Component):
        PATTERN = "plain"
        METRICS = ("x",)

        def __init__(self, name: str | None) -> None:
            self._init_component(name, None)

    p = Plain(unique("plain"))
    assert p.name.startswith("plain")
    assert all(pattern != "plain" for _, pattern, _, _ in _core.all_series())


def test_import_without_the_opentelemetry_api_names_the_extra() -> None:
    """Without opentelemetry-api installed, importing the integration says what to install."""
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None  # as if it were not installed\n"
        "try:\n"
        "    import failsafe.integrations.opentelemetry\n"
        "except ModuleNotFoundError as e:\n"
        "    print(e)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert "pip install 'failsafe-py[otel]'" in done.stdout


# ------------------------------------------------------------------------------------------
# Under real use: per-test providers, per-host names, a collection in progress


async def test_each_test_with_its_own_provider_gets_metrics(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A suite that builds a provider per test and instruments in each: the export moves to
    the newest provider (with a warning), instead of staying on the first."""
    inst = FailsafeOtelInstrumentor()
    inst.uninstrument()
    providers = [Otel() for _ in range(3)]
    try:
        for i, o in enumerate(providers):
            inst.instrument(max_components=CAP, namespace=NS, meter_provider=o.provider)
            name = unique("per_test")
            timeout(1, name=name)._count(0, i + 1)
            assert o.values()[f"{NS}.{name}.timeout.fired"] == i + 1
        assert "export moves there" in caplog.text
        assert providers[0].values().get(f"{NS}.{name}.timeout.fired") is None  # moved away
    finally:
        inst.uninstrument()
        for o in providers:
            o.provider.shutdown()


async def test_keyed_breakers_over_many_hosts_keep_series_bounded() -> None:
    """keyed(consecutive_breaker per host) over 3,000 hosts with a cap of 200 names: 200 named
    series plus the overflow, totals exact and monotonic, gone series freed."""
    from failsafe.circuitbreaker import consecutive_breaker
    from failsafe.keyed import keyed

    inst = FailsafeOtelInstrumentor()
    inst.uninstrument()
    o = Otel()
    inst.instrument(namespace="hosts", meter_provider=o.provider, max_components=200)
    prefix = unique("h")
    try:
        breakers = keyed(
            lambda h: consecutive_breaker(ConnectionError, name=f"cb.{prefix}.{h}"),
            key=lambda h: h,
            max_keys=100,
        )

        @breakers
        async def call(host: int) -> int:
            return host

        def successes() -> dict[str, int]:
            return {k: v for k, v in o.values().items() if k.endswith(".circuitbreaker.success")}

        before = successes()  # breakers of earlier tests share the cap and the overflow
        overflow = "hosts._overflow.circuitbreaker.success"
        last = sum(before.values())
        for host in range(3000):
            assert await call(host) == host
            if host % 500 == 499:
                gc.collect()
                total = sum(successes().values())
                assert total >= last
                last = total
        gc.collect()
        after = successes()
        assert sum(after.values()) - sum(before.values()) == 3000  # every call, gone or not
        assert len(after) <= 201  # 200 names and the overflow
        assert sum(1 for k in after if f".cb.{prefix}." in k) <= 200
        assert after[overflow] - before.get(overflow, 0) >= 2800
        # The registry let the gone series go (at most what it keeps before looking again).
        assert len(_core._series["circuitbreaker"]) < 2 * 1024 + 200
        assert successes() == after  # a second collection after the fold: the same
    finally:
        inst.uninstrument()
        o.provider.shutdown()


def test_creating_a_component_never_waits_for_a_collection() -> None:
    """A collection holds the SDK's lock for its whole length (here a slow callback makes it
    last 0.5 s): a component created meanwhile returns at once, and its instruments appear at
    the next collection."""
    import threading
    import time

    inst = FailsafeOtelInstrumentor()
    inst.uninstrument()
    o = Otel()
    collecting = threading.Event()

    def slow(options: Any) -> list[Any]:
        collecting.set()
        time.sleep(0.5)
        return []

    o.provider.get_meter("slow").create_observable_counter("slow", callbacks=[slow])
    inst.instrument(max_components=CAP, namespace=NS, meter_provider=o.provider)
    try:
        collector = threading.Thread(target=o.reader.get_metrics_data)
        collector.start()
        assert collecting.wait(10)
        name = unique("during")
        start = time.perf_counter()
        created = timeout(1, name=name)
        took = time.perf_counter() - start
        collector.join()
        assert took < 0.25, f"creating a component waited {took:.3f} s"
        created._count(0, 2)
        assert inst.flush(10)
        assert o.values()[f"{NS}.{name}.timeout.fired"] == 2
    finally:
        inst.uninstrument()
        o.provider.shutdown()


async def test_dropped_listener_events_are_exported(otel: Otel) -> None:
    from failsafe import events

    gate = asyncio.Event()

    class Slow:
        async def on_success(self, component: Any, counter: Any) -> None:
            await gate.wait()

    manager = events.EventManager(max_pending=1)
    before = otel.values().get(f"{NS}.listener_events.dropped", 0)

    @retry(attempts=1, listeners=[Slow()], event_manager=manager, name=unique("dropping"))
    async def work() -> int:
        return 1

    for _ in range(4):
        await work()
    assert otel.values()[f"{NS}.listener_events.dropped"] - before == 3
    gate.set()
    await manager.wait_for_tasks()


def test_invalid_max_components() -> None:
    inst = FailsafeOtelInstrumentor()
    with pytest.raises(ValueError, match="max_components"):
        inst.instrument(max_components=-1)
    with pytest.raises(TypeError, match="max_components"):
        inst.instrument(max_components=1.5)  # type: ignore[arg-type]
