# ruff: noqa: E501  (the specified code is kept verbatim)
"""The code of the README failsafe was specified by (its telemetry module and FastAPI service),
kept here verbatim, runs: the service answers its orders endpoint.

One line needs the choice the seed itself offers: its import of the instrumentor reads
``from integrations.opentelemetry import ...  # or: from failsafe.integrations.opentelemetry ...``.
failsafe-py installs a single top-level name, ``failsafe`` (a generic ``integrations`` package in
site-packages would clash with users' own), so the published package satisfies the second
spelling, which the test takes from the comment of that very line.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http.metric_exporter")

TELEMETRY = r"""# service/src/telemetry.py
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import set_meter_provider

from integrations.opentelemetry import FailsafeOtelInstrumentor  # or: from failsafe.integrations.opentelemetry ...

def setup_otel(service_name: str) -> MeterProvider:
    resource = Resource.create({"service.name": service_name})
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint="http://localhost:4318/v1/metrics", timeout=5)
    )
    provider = MeterProvider(resource=resource, metric_readers=[reader])
    set_meter_provider(provider)

    FailsafeOtelInstrumentor().instrument(
        namespace="failsafe.service",
        meter_provider=provider,
    )
    return provider
"""

MAIN = r"""# service/src/main.py
import asyncio
from fastapi import FastAPI, HTTPException

from telemetry import setup_otel

from failsafe.retry import retry
from failsafe.failfast import failfast, FailFastOpen
from failsafe.featuretoggle import featuretoggle, FeatureDisabled
from failsafe.hedge import hedge, HedgeTimeout
from failsafe.timeout import timeout, TimeoutError as FsTimeoutError
# add bulkhead/circuitbreaker/fallback imports as needed

setup_otel("failsafe-service")
app = FastAPI()

@hedge(name="price_quote", attempts=3, delay=0.03, timeout=0.25)
@retry(name="price_quote", attempts=3)  # backoff args per your retry API
async def fetch_price(venue: str) -> float:
    await asyncio.sleep(0.1)
    return 123.45

@featuretoggle(name="beta_orders", enabled=True)
@failfast(name="orders_write_guard", failure_threshold=1)
async def create_order_impl(payload: dict) -> dict:
    async with timeout(name="db_write_timeout", seconds=0.3):
        await asyncio.sleep(0.05)
    price = await fetch_price(payload["venue"])
    return {"ok": True, "price": price}

@app.post("/orders")
async def create_order(payload: dict):
    try:
        return await create_order_impl(payload)
    except FeatureDisabled:
        raise HTTPException(status_code=403, detail="feature disabled")
    except FailFastOpen:
        raise HTTPException(status_code=503, detail="fail-fast open")
    except HedgeTimeout:
        raise HTTPException(status_code=504, detail="pricing timed out")
    except FsTimeoutError:
        raise HTTPException(status_code=504, detail="db timeout")
"""


def as_installed(source: str) -> str:
    """The seed's telemetry module with its import line resolved to the spelling its own comment
    offers, the one the installed package provides."""
    (line,) = [x for x in source.splitlines() if x.startswith("from integrations.")]
    code, _, alternative = line.partition("  # or: ")
    offered = alternative.split()  # ["from", "failsafe.integrations.opentelemetry", "..."]
    assert offered[0] == "from", line
    assert offered[2] == "...", line
    module = code.split()[1]
    assert offered[1] == f"failsafe.{module}", line
    return source.replace(line, code.replace(f"from {module} ", f"from {offered[1]} ", 1))


def test_the_seed_import_has_one_installed_spelling() -> None:
    # Only the failsafe name is installed; the seed's other spelling is not shadowed by one.
    assert importlib.util.find_spec("integrations") is None
    resolved = as_installed(TELEMETRY)
    assert "from failsafe.integrations.opentelemetry import FailsafeOtelInstrumentor" in resolved
    changed = [
        (a, b) for a, b in zip(TELEMETRY.splitlines(), resolved.splitlines(), strict=True) if a != b
    ]
    assert len(changed) == 1  # the import line only


async def test_the_specified_service_runs(tmp_path: Path) -> None:
    from opentelemetry import metrics

    (tmp_path / "telemetry.py").write_text(as_installed(TELEMETRY))
    sys.path.insert(0, str(tmp_path))
    saved_provider = getattr(metrics, "_METER_PROVIDER", None)
    try:
        module = types.ModuleType("seed_main")
        exec(compile(MAIN, "seed_main.py", "exec"), module.__dict__)
        transport = httpx.ASGITransport(app=module.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://seed") as client:
            response = await client.post("/orders", json={"venue": "XNYS"})
        assert response.status_code == 200, response.text
        assert response.json() == {"ok": True, "price": 123.45}
        counts = module.fetch_price.policy.stats()
        assert counts["success"] == 1
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("telemetry", None)
        provider = metrics.get_meter_provider()
        shutdown = getattr(provider, "shutdown", None)
        if shutdown is not None:
            shutdown(timeout_millis=1000)
        from failsafe.integrations.opentelemetry import FailsafeOtelInstrumentor

        FailsafeOtelInstrumentor().uninstrument()
        metrics._METER_PROVIDER = saved_provider  # type: ignore[attr-defined]
