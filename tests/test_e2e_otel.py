"""OpenTelemetry export end to end: a FastAPI app served by uvicorn, driven over HTTP with
httpx, its failsafe counters exported (a) over OTLP/HTTP to a local receiver that decodes the
protobuf and (b) through the Prometheus exporter, scraped over HTTP."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from prometheus_client import start_http_server
from prometheus_client.parser import text_string_to_metric_families

from e2e_server import Receiver, serve
from failsafe.fallback import fallback
from failsafe.integrations.fastapi import install_exception_handlers
from failsafe.integrations.opentelemetry import FailsafeOtelInstrumentor
from failsafe.retry import retry
from failsafe.timeout import TimeoutError as FsTimeoutError
from failsafe.timeout import timeout

REQUESTS = 12
_ids = itertools.count()


def build_app(suffix: str) -> tuple[FastAPI, dict[str, int]]:
    """An app whose traffic gives known counts: each /flaky request fails once and then
    succeeds (retry: one attempt, one success); each /hang request times out at once and
    falls back (timeout fired, fallback invoked); each /limited request times out and is
    answered 504."""
    app = FastAPI()
    install_exception_handlers(app)
    calls = [0]

    @retry(attempts=2, backoff=0, on=ConnectionError, name=f"e2e_retry_{suffix}")
    async def flaky() -> str:
        calls[0] += 1
        if calls[0] % 2:
            raise ConnectionError
        return "ok"

    @fallback("default", on=FsTimeoutError, name=f"e2e_fallback_{suffix}")
    @timeout(0, name=f"e2e_timeout_{suffix}")
    async def hang() -> str:
        await asyncio.sleep(10)
        return "never"

    @timeout(0, name=f"e2e_timeout_{suffix}")  # same name: the same series
    async def unanswered() -> str:
        await asyncio.sleep(10)
        return "never"

    @app.get("/flaky")
    async def flaky_endpoint() -> str:
        return await flaky()

    @app.get("/hang")
    async def hang_endpoint() -> str:
        return await hang()

    @app.get("/unanswered")
    async def unanswered_endpoint() -> str:
        return await unanswered()

    expected = {
        f"e2e_retry_{suffix}.retry.attempt": REQUESTS,
        f"e2e_retry_{suffix}.retry.success": REQUESTS,
        f"e2e_retry_{suffix}.retry.giveup": 0,
        f"e2e_timeout_{suffix}.timeout.fired": 2 * REQUESTS,
        f"e2e_fallback_{suffix}.fallback.invoked": REQUESTS,
    }
    return app, expected


async def drive(client: httpx.AsyncClient) -> None:
    async def one(path: str, status: int) -> None:
        response = await client.get(path)
        assert response.status_code == status, response.text

    await asyncio.gather(
        *(one("/flaky", 200) for _ in range(REQUESTS)),
        *(one("/hang", 200) for _ in range(REQUESTS)),
        *(one("/unanswered", 504) for _ in range(REQUESTS)),
    )


@pytest.fixture
def instrumentor() -> Iterator[FailsafeOtelInstrumentor]:
    inst = FailsafeOtelInstrumentor()
    inst.uninstrument()
    yield inst
    inst.uninstrument()


async def test_otlp_http_export(instrumentor: FailsafeOtelInstrumentor) -> None:
    suffix = f"otlp{next(_ids)}"
    app, expected = build_app(suffix)
    namespace = "failsafe.e2e"
    with Receiver() as receiver:
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=receiver.endpoint, timeout=10),
            export_interval_millis=3_600_000,  # exported on force_flush only
        )
        provider = MeterProvider(
            resource=Resource.create({"service.name": "e2e-otlp"}), metric_readers=[reader]
        )
        try:
            instrumentor.instrument(
                namespace=namespace, meter_provider=provider, max_components=1_000_000
            )
            async with serve(app) as client:
                await drive(client)
            assert await asyncio.to_thread(provider.force_flush, 20_000)
            metrics = receiver.latest()
            for name, value in expected.items():
                m = metrics[f"{namespace}.{name}"]
                assert m.WhichOneof("data") == "sum"
                assert m.sum.is_monotonic
                assert (
                    m.sum.aggregation_temporality
                    == AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
                )
                assert [p.as_int for p in m.sum.data_points] == [value], name
            assert set(receiver.paths) == {"/v1/metrics"}
            assert receiver.resource_attributes()["service.name"] == "e2e-otlp"

            # More traffic, another export: the sums only grow.
            async with serve(app) as client:
                await drive(client)
            assert await asyncio.to_thread(provider.force_flush, 20_000)
            metrics = receiver.latest()
            for name, value in expected.items():
                points = metrics[f"{namespace}.{name}"].sum.data_points
                assert [p.as_int for p in points] == [2 * value], name
        finally:
            instrumentor.uninstrument()
            await asyncio.to_thread(provider.shutdown)


async def test_prometheus_exporter_scraped(instrumentor: FailsafeOtelInstrumentor) -> None:
    suffix = f"prom{next(_ids)}"
    app, expected = build_app(suffix)
    namespace = "failsafe.e2e"
    reader = PrometheusMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    server, thread = start_http_server(0, addr="127.0.0.1")
    try:
        instrumentor.instrument(
            namespace=namespace, meter_provider=provider, max_components=1_000_000
        )
        async with serve(app) as client:
            await drive(client)
        port = server.server_address[1]
        async with httpx.AsyncClient(timeout=30) as scraper:
            response = await scraper.get(f"http://127.0.0.1:{port}/metrics")
        assert response.status_code == 200
        samples: dict[str, float] = {}
        kinds: dict[str, str] = {}
        for family in text_string_to_metric_families(response.text):
            kinds[family.name] = family.type
            for sample in family.samples:
                samples[sample.name] = sample.value
        for name, value in expected.items():
            prom = f"{namespace}.{name}".replace(".", "_")
            assert kinds[prom] == "counter", prom
            assert samples[f"{prom}_total"] == value, prom
    finally:
        instrumentor.uninstrument()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        await asyncio.to_thread(provider.shutdown)
