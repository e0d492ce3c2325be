"""The code of the README failsafe was specified by (its telemetry module and FastAPI service),
kept here verbatim, runs as written: the service answers its orders endpoint."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http.metric_exporter")

TELEMETRY = '# service/src/telemetry.py\nfrom opentelemetry.sdk.resources import Resource\nfrom opentelemetry.sdk.metrics import MeterProvider\nfrom opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader\nfrom opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter\nfrom opentelemetry.metrics import set_meter_provider\n\nfrom integrations.opentelemetry import FailsafeOtelInstrumentor  # or: from failsafe.integrations.opentelemetry ...\n\ndef setup_otel(service_name: str) -> MeterProvider:\n    resource = Resource.create({"service.name": service_name})\n    reader = PeriodicExportingMetricReader(\n        OTLPMetricExporter(endpoint="http://localhost:4318/v1/metrics", timeout=5)\n    )\n    provider = MeterProvider(resource=resource, metric_readers=[reader])\n    set_meter_provider(provider)\n\n    FailsafeOtelInstrumentor().instrument(\n        namespace="failsafe.service",\n        meter_provider=provider,\n    )\n    return provider\n'

MAIN = '# service/src/main.py\nimport asyncio\nfrom fastapi import FastAPI, HTTPException\n\nfrom telemetry import setup_otel\n\nfrom failsafe.retry import retry\nfrom failsafe.failfast import failfast, FailFastOpen\nfrom failsafe.featuretoggle import featuretoggle, FeatureDisabled\nfrom failsafe.hedge import hedge, HedgeTimeout\nfrom failsafe.timeout import timeout, TimeoutError as FsTimeoutError\n# add bulkhead/circuitbreaker/fallback imports as needed\n\nsetup_otel("failsafe-service")\napp = FastAPI()\n\n@hedge(name="price_quote", attempts=3, delay=0.03, timeout=0.25)\n@retry(name="price_quote", attempts=3)  # backoff args per your retry API\nasync def fetch_price(venue: str) -> float:\n    await asyncio.sleep(0.1)\n    return 123.45\n\n@featuretoggle(name="beta_orders", enabled=True)\n@failfast(name="orders_write_guard", failure_threshold=1)\nasync def create_order_impl(payload: dict) -> dict:\n    async with timeout(name="db_write_timeout", seconds=0.3):\n        await asyncio.sleep(0.05)\n    price = await fetch_price(payload["venue"])\n    return {"ok": True, "price": price}\n\n@app.post("/orders")\nasync def create_order(payload: dict):\n    try:\n        return await create_order_impl(payload)\n    except FeatureDisabled:\n        raise HTTPException(status_code=403, detail="feature disabled")\n    except FailFastOpen:\n        raise HTTPException(status_code=503, detail="fail-fast open")\n    except HedgeTimeout:\n        raise HTTPException(status_code=504, detail="pricing timed out")\n    except FsTimeoutError:\n        raise HTTPException(status_code=504, detail="db timeout")\n'


async def test_the_specified_service_runs_as_written(tmp_path: Path) -> None:
    from opentelemetry import metrics

    (tmp_path / "telemetry.py").write_text(TELEMETRY)
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
